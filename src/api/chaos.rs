//! The chaos API: inject and heal faults per provider, read provider status.
//! Every endpoint requires the admin token; customer endpoints never do.

use super::{error::ApiError, AppState};
use crate::gateway::events::now_ms;
use crate::shared::{FaultSpec, GatewayEvent, ProviderStatus};
use axum::{
    body::Bytes,
    extract::{rejection::BytesRejection, FromRequestParts, Path, State},
    http::{header, request::Parts, HeaderMap, StatusCode},
    response::{IntoResponse, Redirect, Response},
    Json,
};
use serde_json::{json, Value};
use std::time::Instant;

/// Proof that the caller presented the admin token: `Authorization: Bearer …`,
/// `x-admin-token: …`, or the `chaosai_admin` cookie the board link sets.
pub struct Admin;

/// The admin cookie the board link sets.
pub const COOKIE: &str = "chaosai_admin";

fn presented(headers: &HeaderMap) -> Option<String> {
    let header = |name: &str| headers.get(name).and_then(|v| v.to_str().ok());
    if let Some(token) = header("authorization").and_then(|v| v.strip_prefix("Bearer ")) {
        return Some(token.trim().to_string());
    }
    if let Some(token) = header("x-admin-token") {
        return Some(token.trim().to_string());
    }
    header("cookie").and_then(|cookies| {
        cookies
            .split(';')
            .filter_map(|c| c.trim().split_once('='))
            .find(|(k, _)| *k == COOKIE)
            .map(|(_, v)| v.to_string())
    })
}

/// Compares without an early exit, so response timing does not reveal the token.
fn same(a: &str, b: &str) -> bool {
    a.len() == b.len()
        && a.bytes()
            .zip(b.bytes())
            .fold(0u8, |acc, (x, y)| acc | (x ^ y))
            == 0
}

/// Whether `headers` carry the admin token (header or cookie).
pub fn is_admin(headers: &HeaderMap, token: &str) -> bool {
    presented(headers).is_some_and(|t| same(&t, token))
}

impl FromRequestParts<AppState> for Admin {
    type Rejection = ApiError;

    async fn from_request_parts(
        parts: &mut Parts,
        state: &AppState,
    ) -> Result<Self, Self::Rejection> {
        match presented(&parts.headers) {
            Some(token) if same(&token, &state.admin_token) => Ok(Admin),
            Some(_) => Err(ApiError::unauthorized("the admin token is wrong")),
            None => Err(ApiError::unauthorized(
                "an admin token is required (Authorization: Bearer <CHAOSAI_ADMIN_TOKEN>)",
            )),
        }
    }
}

fn known(state: &AppState, provider: &str) -> Result<(), ApiError> {
    if state.faults.knows(provider) {
        Ok(())
    } else {
        Err(ApiError::not_found(format!(
            "unknown provider {provider:?}"
        )))
    }
}

fn fault_changed(state: &AppState, provider: &str, fault: Option<FaultSpec>) {
    state
        .gateway
        .metrics()
        .faults_active
        .with_label_values(&[provider])
        .set(i64::from(fault.is_some()));
    tracing::info!(provider, fault = ?fault, "fault changed by admin");
    state.gateway.events().publish(GatewayEvent::FaultChanged {
        provider: provider.to_string(),
        fault,
        by: "admin".into(),
        at_ms: now_ms(),
    });
}

/// Injects (`Some`) or heals (`None`) a fault on a known provider, announcing the
/// change; shared by this API and the board. Returns whether anything changed.
pub fn apply_fault(state: &AppState, provider: &str, spec: Option<FaultSpec>) -> bool {
    let changed = match &spec {
        Some(spec) => state.faults.set(provider, spec.clone(), Instant::now()),
        None => state.faults.heal(provider),
    };
    if changed {
        fault_changed(state, provider, spec);
    }
    changed
}

/// `GET /chaos/login?token=…`: the link printed at start-up. Sets the admin
/// cookie and opens the board.
pub async fn login(
    State(state): State<AppState>,
    axum::extract::Query(query): axum::extract::Query<std::collections::HashMap<String, String>>,
) -> Response {
    match query.get("token") {
        Some(token) if same(token, &state.admin_token) => {
            let cookie = format!("{COOKIE}={token}; Path=/; HttpOnly; SameSite=Strict");
            ([(header::SET_COOKIE, cookie)], Redirect::to("/chaos")).into_response()
        }
        Some(_) => ApiError::unauthorized("the admin token is wrong").into_response(),
        None => ApiError::invalid(
            Some("token"),
            "token is required: /chaos/login?token=<admin token>",
        )
        .into_response(),
    }
}

/// `GET /api/providers`: every provider's breaker and fault, in cascade order.
pub async fn providers(_: Admin, State(state): State<AppState>) -> Json<Vec<ProviderStatus>> {
    Json(state.provider_statuses())
}

/// `PUT /api/chaos/{provider}` with a JSON [`FaultSpec`].
pub async fn inject(
    _: Admin,
    State(state): State<AppState>,
    Path(provider): Path<String>,
    body: Result<Bytes, BytesRejection>,
) -> Result<Json<Value>, ApiError> {
    known(&state, &provider)?;
    let body = body?;
    let spec: FaultSpec = serde_json::from_slice(&body)
        .map_err(|err| ApiError::unprocessable(None, format!("invalid fault spec: {err}")))?;
    spec.validate().map_err(|(field, message)| {
        ApiError::unprocessable(Some(field), format!("{field} {message}"))
    })?;
    apply_fault(&state, &provider, Some(spec.clone()));
    Ok(Json(json!({"provider": provider, "fault": spec})))
}

/// `DELETE /api/chaos/{provider}`: heals one provider.
pub async fn heal(
    _: Admin,
    State(state): State<AppState>,
    Path(provider): Path<String>,
) -> Result<Json<Value>, ApiError> {
    known(&state, &provider)?;
    let had = apply_fault(&state, &provider, None);
    Ok(Json(json!({"provider": provider, "healed": had})))
}

/// `DELETE /api/chaos`: heals every provider.
pub async fn heal_all(_: Admin, State(state): State<AppState>) -> (StatusCode, Json<Value>) {
    let healed = state.faults.heal_all();
    for provider in &healed {
        fault_changed(&state, provider, None);
    }
    (StatusCode::OK, Json(json!({"healed": healed})))
}
