//! Who is calling `/v1`: the client whose key is presented as
//! `Authorization: Bearer …`, when any key exists; nobody in particular when
//! none does (the demo). Refusals are in OpenAI's shape, so SDKs raise their
//! usual `AuthenticationError` and `RateLimitError`.

use super::{error::ApiError, AppState};
use crate::clients::{Client, Limited};
use crate::gateway::DEFAULT_TENANT;
use axum::{
    extract::FromRequestParts,
    http::{header, request::Parts, HeaderMap, HeaderName, HeaderValue, StatusCode},
};
use std::sync::Arc;

/// The caller of a `/v1` request.
pub struct Caller(Option<Arc<Client>>);

impl Caller {
    /// The tenant its requests belong to.
    pub fn tenant(&self) -> &str {
        self.0.as_ref().map_or(DEFAULT_TENANT, |c| c.tenant())
    }

    /// Whether the tenant came from a key (then no header may name another).
    pub fn keyed(&self) -> bool {
        self.0.is_some()
    }

    /// Admits one request under the client's limits; a refusal is a 429 with
    /// `Retry-After`, counted on `/metrics`. `prompt_estimate` is charged if the
    /// caller leaves before its answer is counted.
    pub fn admit(&self, state: &AppState, prompt_estimate: u64) -> Result<Charge, ApiError> {
        let Some(client) = &self.0 else {
            return Ok(Charge(None));
        };
        client.admit().map_err(|limited| {
            state
                .gateway
                .metrics()
                .rate_limited(client.name(), limited.limit.as_str());
            rate_limited(client, limited)
        })?;
        Ok(Charge(Some((client.clone(), prompt_estimate))))
    }
}

/// The tokens of an admitted request, to be charged to its client once counted
/// (or, if the caller goes away first, its prompt's estimate).
pub struct Charge(Option<(Arc<Client>, u64)>);

impl Charge {
    /// Charges what the answer spent.
    pub fn settle(mut self, tokens: u64) {
        if let Some((client, _)) = self.0.take() {
            client.charge(tokens);
        }
    }
}

impl Drop for Charge {
    fn drop(&mut self) {
        if let Some((client, estimate)) = self.0.take() {
            client.charge(estimate);
        }
    }
}

fn unauthorized(message: &str) -> ApiError {
    let mut headers = HeaderMap::new();
    headers.insert(header::WWW_AUTHENTICATE, HeaderValue::from_static("Bearer"));
    ApiError {
        status: StatusCode::UNAUTHORIZED,
        kind: "invalid_request_error",
        code: Some("invalid_api_key"),
        param: None,
        message: message.to_string(),
        headers: Some(Box::new(headers)),
    }
}

fn rate_limited(client: &Client, limited: Limited) -> ApiError {
    let seconds = limited.retry_after.as_secs_f64().ceil().max(1.0) as u64;
    let unit = limited.limit.as_str();
    let mut headers = HeaderMap::new();
    headers.insert(header::RETRY_AFTER, HeaderValue::from(seconds));
    if let Ok(name) = HeaderName::try_from(format!("x-ratelimit-limit-{unit}")) {
        headers.insert(name, HeaderValue::from(limited.per_minute));
    }
    let (requests, tokens) = client.remaining();
    let remaining = match limited.limit {
        crate::clients::Limit::Requests => requests,
        crate::clients::Limit::Tokens => tokens,
    };
    if let (Ok(name), Some(left)) = (
        HeaderName::try_from(format!("x-ratelimit-remaining-{unit}")),
        remaining,
    ) {
        headers.insert(name, HeaderValue::from(left));
    }
    ApiError {
        status: StatusCode::TOO_MANY_REQUESTS,
        kind: unit,
        code: Some("rate_limit_exceeded"),
        param: None,
        message: format!(
            "Rate limit reached for {} on {unit} per minute: limit {}. Please try again in {seconds}s.",
            client.name(),
            limited.per_minute
        ),
        headers: Some(Box::new(headers)),
    }
}

impl FromRequestParts<AppState> for Caller {
    type Rejection = ApiError;

    async fn from_request_parts(
        parts: &mut Parts,
        state: &AppState,
    ) -> Result<Self, Self::Rejection> {
        if state.clients.is_open() {
            return Ok(Caller(None));
        }
        let presented = parts
            .headers
            .get(header::AUTHORIZATION)
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.strip_prefix("Bearer "))
            .map(str::trim)
            .filter(|k| !k.is_empty());
        let Some(key) = presented else {
            return Err(unauthorized(
                "You didn't provide an API key. Send it as Authorization: Bearer <key>.",
            ));
        };
        state
            .clients
            .find(key)
            .map(|client| Caller(Some(client)))
            .ok_or_else(|| unauthorized("Incorrect API key provided."))
    }
}
