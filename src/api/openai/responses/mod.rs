//! `POST /v1/responses`: OpenAI's Responses API on the same gateway, for bots
//! written against it (the Agents SDK's default). A response is kept unless
//! the caller says `store: false`, so the next request may send only what is
//! new with `previous_response_id`; `GET` and `DELETE /v1/responses/{id}` read
//! and forget one. What needs other state (`conversation`, stored prompts,
//! `background`) is refused by name.
//!
//! The answer is the gateway's, so failover, the cache, the last resort, the
//! audit and the breakers are the same as for a chat completion. A stream is
//! OpenAI's semantic events; one that breaks and cannot be continued ends with
//! `response.failed`, never `response.completed`, so a cut answer is not taken
//! as whole.
//!
//! - `decode`: the request, into the gateway's terms.
//! - `encode`: the response object and the stream's events.
//! - `keep`: kept responses, written before the caller learns they are done.

mod decode;
mod encode;
mod keep;

use super::super::bodies::ConversationBody;
use super::super::keys::Caller;
use super::super::{error::ApiError, AppState};
use super::{admit, answer_headers, event_stream, unix_now, ON_BREAK};
use crate::gateway::AnswerEvent;
use axum::{
    body::Bytes,
    extract::{FromRequestParts, Path as AxumPath, State},
    http::request::Parts,
    http::HeaderMap,
    response::{IntoResponse, Response},
    Json,
};
use encode::{Envelope, EventWriter, Status};
use futures::StreamExt;
use serde_json::{json, Value};
use std::convert::Infallible;

/// Most events written as one frame.
const FRAME_EVENTS: usize = 64;

/// The response's id, from the request's: one id names the request in the
/// audit and the response the caller holds.
fn response_id(request_id: &str) -> String {
    format!("resp_{}", request_id.trim_start_matches("chatcmpl-"))
}

/// `POST /v1/responses`.
pub async fn responses(
    State(state): State<AppState>,
    caller: Caller,
    headers: HeaderMap,
    body: ConversationBody,
) -> Result<Response, ApiError> {
    body.answer(|bytes| response(state, caller, headers, bytes))
        .await
}

async fn response(
    state: AppState,
    caller: Caller,
    headers: HeaderMap,
    body: Bytes,
) -> Result<Response, ApiError> {
    // A restart marker exists only in Chat Completions' stream.
    if headers.get(&ON_BREAK).is_some_and(|v| v != "error") {
        return Err(ApiError::invalid(
            Some("x-chaosai-on-break"),
            "x-chaosai-on-break: restart is only for /v1/chat/completions; a broken response ends with response.failed",
        ));
    }
    let mut request = decode::decode(&body)?;
    // Megabytes with pictures: the decoded request holds what is needed of it.
    drop(body);
    let charge = admit(&state, &caller, &headers, &mut request.gateway)?;
    let tenant = request.gateway.tenant.clone();
    if let Some(previous) = &request.previous {
        let history = keep::history(&state, previous, &tenant).await?;
        request.go_on_from(history);
    }
    let keeper = keep::Keeper::new(&state, request.store, &tenant, request.carried());
    request
        .echo
        .insert("store".into(), Value::Bool(keeper.is_some()));
    request.echo.insert(
        "previous_response_id".into(),
        request.previous.clone().map_or(Value::Null, Value::String),
    );
    let created_at = unix_now();
    let origins = std::mem::take(&mut request.origins);
    if !request.stream {
        let answer = state
            .gateway
            .complete(request.gateway)
            .await
            .map_err(|err| origins.renamed(err.into()))?;
        let (usage, usage_source) = answer.usage;
        charge.settle(usage.total());
        let envelope = Envelope {
            id: response_id(&answer.id),
            created_at,
            model: answer.model.clone(),
            echo: request.echo,
        };
        let output = envelope.output(&answer.text, &answer.tool_calls);
        let body = envelope.response(Status::of(answer.finish_reason), output, Some(usage), None);
        if let Some(keeper) = keeper {
            keeper.keep(&answer.text, &answer.tool_calls, &body).await;
        }
        let mut response = Json(body).into_response();
        response
            .headers_mut()
            .extend(answer_headers(&answer, Some(usage_source)));
        return Ok(response);
    }

    let streaming = state
        .gateway
        .stream(request.gateway)
        .await
        .map_err(|err| origins.renamed(err.into()))?;
    let headers = answer_headers(&streaming, None);
    let mut writer = EventWriter::new(Envelope {
        id: response_id(&streaming.id),
        created_at,
        model: streaming.model.clone(),
        echo: request.echo,
    });
    let mut opening = Vec::new();
    writer.opening(&mut opening);
    let stream = Stream {
        batches: streaming.events.ready_chunks(FRAME_EVENTS),
        writer,
        charge: Some(charge),
        keeper,
    };
    // Events that are ready together become one frame, one write; the frame
    // that completes the response waits until the response is kept.
    let frames = futures::stream::unfold(stream, |mut stream| async move {
        let batch = stream.batches.next().await?;
        let frame = stream.frame(batch).await;
        Some((Ok::<_, Infallible>(Bytes::from(frame)), stream))
    });
    Ok(event_stream(headers, opening, frames))
}

/// A streamed response being written.
struct Stream<S> {
    batches: S,
    writer: EventWriter,
    charge: Option<super::super::keys::Charge>,
    keeper: Option<keep::Keeper>,
}

impl<S> Stream<S> {
    /// The events of `batch`, as one frame.
    async fn frame(&mut self, batch: Vec<AnswerEvent>) -> Vec<u8> {
        let mut frame = Vec::with_capacity(batch.len() * 256);
        let mut done = None;
        for event in batch {
            match event {
                AnswerEvent::Text(text) => self.writer.text(&mut frame, &text),
                AnswerEvent::ToolCall(fragment) => self.writer.call(&mut frame, &fragment),
                // Refused above: a restart is never asked of this stream.
                AnswerEvent::Restarted { model, .. } => self.writer.set_model(model),
                AnswerEvent::Done {
                    finish_reason,
                    usage,
                    ..
                } => {
                    if let Some(charge) = self.charge.take() {
                        charge.settle(usage.total());
                    }
                    done = Some(self.writer.finish(&mut frame, finish_reason, usage));
                }
                AnswerEvent::Failed { message } => self.writer.failed(&mut frame, &message),
            }
        }
        if let Some(response) = done {
            if let Some(keeper) = self.keeper.take() {
                let (text, calls) = self.writer.answer();
                keeper.keep(&text, &calls, &response).await;
            }
        }
        frame
    }
}

/// `GET /v1/responses/{id}`: a kept response as it was sent.
pub async fn response_by_id(
    State(state): State<AppState>,
    kept: KeptId,
) -> Result<Response, ApiError> {
    Ok(Json(keep::find(&state, &kept.id, &kept.tenant).await?).into_response())
}

/// `DELETE /v1/responses/{id}`: forgets a kept response.
pub async fn delete_response(
    State(state): State<AppState>,
    kept: KeptId,
) -> Result<Response, ApiError> {
    keep::forget(&state, &kept.id, &kept.tenant).await?;
    Ok(Json(json!({"id": kept.id, "object": "response", "deleted": true})).into_response())
}

/// The kept response a request names, and the tenant asking: its key's, or
/// (without keys) the one its `x-chaosai-tenant` names, as when it was made.
pub struct KeptId {
    id: String,
    tenant: String,
}

impl FromRequestParts<AppState> for KeptId {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, state: &AppState) -> Result<Self, ApiError> {
        let caller = Caller::from_request_parts(parts, state).await?;
        let AxumPath(id) = AxumPath::<String>::from_request_parts(parts, state)
            .await
            .map_err(|err| ApiError::not_found(err.body_text()))?;
        Ok(Self {
            id,
            tenant: super::tenant_of(&parts.headers, &caller)?,
        })
    }
}
