//! `POST /v1/responses`: OpenAI's Responses API on the same gateway, for bots
//! written against it (the Agents SDK's default). Stateless: the request
//! carries the whole conversation in `input`, as with Chat Completions; what
//! needs a stored response is refused by name, and `GET /v1/responses/{id}`
//! says none is kept.
//!
//! The answer is the gateway's, so failover, the cache, the last resort, the
//! audit and the breakers are the same as for a chat completion. A stream is
//! OpenAI's semantic events; one that breaks and cannot be continued ends with
//! `response.failed`, never `response.completed`, so a cut answer is not taken
//! as whole.
//!
//! - `decode`: the request, into the gateway's terms.
//! - `encode`: the response object and the stream's events.

mod decode;
mod encode;

use super::super::bodies::ConversationBody;
use super::super::keys::Caller;
use super::super::{error::ApiError, AppState};
use super::{admit, answer_headers, event_stream, refuse_encoded, unix_now, ON_BREAK};
use crate::gateway::AnswerEvent;
use axum::{
    body::Bytes,
    extract::{Path as AxumPath, State},
    http::{HeaderMap, StatusCode},
    response::{IntoResponse, Response},
    Json,
};
use encode::{Envelope, EventWriter, Status};
use futures::StreamExt;
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
    let ConversationBody { bytes, hold } = body;
    let answer = response(state, caller, headers, bytes).await?;
    Ok(hold.until_sent(answer))
}

async fn response(
    state: AppState,
    caller: Caller,
    headers: HeaderMap,
    body: Bytes,
) -> Result<Response, ApiError> {
    refuse_encoded(&headers)?;
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
    let mut charge = Some(charge);
    // Events that are ready together become one frame, one write.
    let frames = streaming
        .events
        .ready_chunks(FRAME_EVENTS)
        .map(move |batch| {
            let mut frame = Vec::with_capacity(batch.len() * 256);
            for event in batch {
                match event {
                    AnswerEvent::Text(text) => writer.text(&mut frame, &text),
                    AnswerEvent::ToolCall(fragment) => writer.call(&mut frame, &fragment),
                    // Refused above: a restart is never asked of this stream.
                    AnswerEvent::Restarted { model, .. } => writer.set_model(model),
                    AnswerEvent::Done {
                        finish_reason,
                        usage,
                        ..
                    } => {
                        if let Some(charge) = charge.take() {
                            charge.settle(usage.total());
                        }
                        writer.finish(&mut frame, finish_reason, usage);
                    }
                    AnswerEvent::Failed { message } => writer.failed(&mut frame, &message),
                }
            }
            Ok::<_, Infallible>(Bytes::from(frame))
        });
    Ok(event_stream(headers, opening, frames))
}

/// `GET /v1/responses/{id}` (and its `input_items`): no response is kept, so
/// none can be read back; OpenAI's 404, saying why.
pub async fn response_by_id(
    _caller: Caller,
    AxumPath(id): AxumPath<String>,
) -> Result<Response, ApiError> {
    let id = id.split('/').next().unwrap_or_default();
    Err(ApiError {
        status: StatusCode::NOT_FOUND,
        kind: "invalid_request_error",
        code: None,
        param: None,
        message: format!(
            "No response with id '{id}' is kept: this gateway stores no responses (store is ignored); keep the output you received"
        ),
        headers: None,
    })
}
