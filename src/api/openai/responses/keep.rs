//! Keeping responses for `previous_response_id`, and reading them back.
//!
//! A kept response is the whole conversation up to its answer (the caller's
//! instructions left out: OpenAI does not carry them to the next response)
//! and the response object as it was sent. It is written before the caller
//! learns the response is done (the whole answer returned, or a stream's
//! `response.completed`), so a caller that goes on at once finds it. Only the
//! tenant that made it can read, continue or delete it. While the audit keeps
//! customer text redacted, nothing is kept. A database that does not answer
//! holds no answer up for longer than [`STORE_WAIT`]: the caller gets its
//! answer unkept, or a 503 it may retry when it names a kept one.

use super::super::super::{error::ApiError, AppState};
use crate::shared::{ChatTurn, Role, ToolCall};
use crate::store::{Store, StoredResponse};
use axum::http::{header, HeaderMap, HeaderValue, StatusCode};
use serde_json::Value;
use std::future::Future;
use std::time::Duration;

/// Longest a kept response's write or read may take.
const STORE_WAIT: Duration = Duration::from_secs(3);

/// Why nothing is kept while customer text is redacted.
const REDACTED: &str =
    "this gateway keeps no responses while its audit redacts customer text; send the whole conversation in input";

/// What is needed to keep one response once its answer is whole.
pub(super) struct Keeper {
    store: Store,
    tenant: String,
    /// The conversation the answer follows, without the caller's instructions.
    turns: Vec<ChatTurn>,
}

impl Keeper {
    /// A keeper for the conversation `turns`, or none when the caller asked
    /// for nothing to be kept or the audit redacts customer text.
    pub fn new(state: &AppState, store: bool, tenant: &str, turns: &[ChatTurn]) -> Option<Self> {
        (store && !state.redact).then(|| Self {
            store: state.store.clone(),
            tenant: tenant.to_string(),
            turns: turns.to_vec(),
        })
    }

    /// Keeps `response`, the answer being `text` and `calls`; whether it was
    /// kept (a database that fails is logged: the caller has its answer).
    pub async fn keep(self, text: &str, calls: &[ToolCall], response: &Value) -> bool {
        let mut turns = self.turns;
        let mut answer = ChatTurn::new(Role::Assistant, text);
        answer.tool_calls = calls.to_vec();
        turns.push(answer);
        let id = response["id"].as_str().unwrap_or_default().to_string();
        let row = StoredResponse {
            id: id.clone(),
            tenant: self.tenant,
            created_at_ms: crate::clock::unix_ms_now(),
            conversation_json: serde_json::to_string(&turns).unwrap_or_default(),
            response_json: response.to_string(),
        };
        match tokio::time::timeout(STORE_WAIT, self.store.insert_response(&row)).await {
            Ok(Ok(())) => true,
            Ok(Err(err)) => {
                tracing::warn!(error = %err, response = %id, "a response could not be kept");
                false
            }
            Err(_) => {
                tracing::warn!(response = %id, "a response could not be kept: the database did not answer");
                false
            }
        }
    }
}

/// The conversation of kept response `id`, for the request that goes on from it.
pub(super) async fn history(
    state: &AppState,
    id: &str,
    tenant: &str,
) -> Result<Vec<ChatTurn>, ApiError> {
    let param = Some("previous_response_id");
    if state.redact {
        return Err(ApiError::invalid(param, REDACTED));
    }
    let kept = within(state.store.response(id, tenant)).await?;
    let turns = kept.and_then(|k| serde_json::from_str(&k.conversation_json).ok());
    turns.ok_or_else(|| ApiError {
        code: Some("previous_response_not_found"),
        ..ApiError::invalid(
            param,
            format!(
                "Previous response with id '{}' not found.",
                super::super::super::error::echoed(id)
            ),
        )
    })
}

/// Kept response `id` as it was sent, or a 404.
pub(super) async fn find(state: &AppState, id: &str, tenant: &str) -> Result<Value, ApiError> {
    if let Some((id, part)) = id.split_once('/') {
        return Err(ApiError::not_found(format!(
            "/v1/responses/{{id}}/{} is not served; GET /v1/responses/{} returns the response and its output",
            super::super::super::error::echoed(part),
            super::super::super::error::echoed(id)
        )));
    }
    let kept = within(state.store.response(id, tenant)).await?;
    kept.and_then(|k| serde_json::from_str(&k.response_json).ok())
        .ok_or_else(|| not_found(id))
}

/// Forgets kept response `id`, or a 404.
pub(super) async fn forget(state: &AppState, id: &str, tenant: &str) -> Result<(), ApiError> {
    if within(state.store.delete_response(id, tenant)).await? {
        Ok(())
    } else {
        Err(not_found(id))
    }
}

/// `read`'s result, or the 503 (with `Retry-After`) saying kept responses
/// cannot be reached now: a caller may retry, or send its whole conversation.
async fn within<T>(
    read: impl Future<Output = Result<T, crate::store::StoreError>>,
) -> Result<T, ApiError> {
    let why = match tokio::time::timeout(STORE_WAIT, read).await {
        Ok(Ok(value)) => return Ok(value),
        Ok(Err(err)) => err.to_string(),
        Err(_) => "the database did not answer".to_string(),
    };
    tracing::warn!(error = %why, "kept responses could not be read");
    let mut headers = HeaderMap::new();
    headers.insert(header::RETRY_AFTER, HeaderValue::from_static("1"));
    Err(ApiError {
        status: StatusCode::SERVICE_UNAVAILABLE,
        kind: "server_error",
        code: Some("store_unavailable"),
        param: None,
        message: "kept responses cannot be reached now; retry shortly, or send the whole conversation in input".into(),
        headers: Some(Box::new(headers)),
    })
}

fn not_found(id: &str) -> ApiError {
    ApiError::not_found(format!(
        "No response with id '{}' is kept (responses are kept for the audit's retention; store: false keeps none).",
        super::super::super::error::echoed(id)
    ))
}
