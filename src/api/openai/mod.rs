//! The OpenAI-compatible surface: `POST /v1/chat/completions` and
//! `POST /v1/responses` (streamed or not) and `GET /v1/models`, so existing SDKs
//! use the gateway unchanged: tools,
//! usage, sampling parameters, JSON answers and errors in OpenAI's shapes.
//!
//! `model: "chaosai"` runs the cascade; a provider's name pins that provider.
//!
//! - `decode`: the request body, every field used, dropped harmlessly or refused.
//! - `encode`: the completion and its stream's chunks.
//! - `image`: an image part, checked so that no provider refuses it later.
//! - `responses`: `POST /v1/responses`, the Responses API on the same gateway.

mod decode;
mod encode;
mod image;
mod responses;

pub use responses::{delete_response, response_by_id, responses};

use super::bodies::ConversationBody;
use super::keys::Caller;
use super::{error::ApiError, AppState};
use crate::gateway::{AnswerEvent, OnBreak};
use crate::shared::{ChatTurn, Route, UsageSource};
use axum::{
    body::{Body, Bytes},
    extract::{Path as AxumPath, State},
    http::{header, HeaderMap, HeaderName, HeaderValue},
    response::{IntoResponse, Response},
    Json,
};
use encode::{ChunkWriter, CompletionBody};
use futures::StreamExt;
use serde_json::{json, Value};
use std::{convert::Infallible, time::Duration};

/// The model name that runs the whole cascade.
pub const CASCADE_MODEL: &str = "chaosai";

/// Names the route that served a response.
pub const SERVED_BY: HeaderName = HeaderName::from_static("x-chaosai-served-by");
/// Time spent in the gateway itself, excluding waits on providers.
pub const OVERHEAD_MS: HeaderName = HeaderName::from_static("x-chaosai-overhead-ms");
/// The request's id, also the completion's `id`.
pub const REQUEST_ID: HeaderName = HeaderName::from_static("x-request-id");
/// The tenant a request belongs to; cached answers never cross tenants.
pub const TENANT: HeaderName = HeaderName::from_static("x-chaosai-tenant");
/// `bypass` skips the cache for one request.
pub const CACHE_CONTROL: HeaderName = HeaderName::from_static("x-chaosai-cache");
/// `restart`: a stream that breaks and cannot be continued starts over on
/// another provider, behind a chunk marked `"chaosai": {"restarted": true}`;
/// `error` (the default): it ends with an explicit error event.
pub const ON_BREAK: HeaderName = HeaderName::from_static("x-chaosai-on-break");
/// The similarity of the cache entry that answered.
pub const SIMILARITY: HeaderName = HeaderName::from_static("x-chaosai-cache-similarity");

/// The caller's name for the conversation a request belongs to (its own
/// customer's chat): during an outage, a customer who writes again in it keeps
/// the ticket the last resort opened, as on the chat page.
pub const CONVERSATION: HeaderName = HeaderName::from_static("x-chaosai-conversation");

/// The ticket the last resort opened for a human agent.
pub const TICKET: HeaderName = HeaderName::from_static("x-chaosai-ticket");
/// Who counted the answer's `usage`: `provider`, `estimated`, `cache` or
/// `last_resort` (for a stream, known up front only for the last two; the usage
/// chunk says it for every stream).
pub const USAGE: HeaderName = HeaderName::from_static("x-chaosai-usage");

/// Every model a request can name: the cascade, then each provider that can be
/// pinned, as OpenAI's model objects.
fn model_objects(state: &AppState) -> Vec<Value> {
    let mut data =
        vec![json!({"id": CASCADE_MODEL, "object": "model", "created": 0, "owned_by": "chaosai"})];
    data.extend(state.gateway.cascade().providers().map(|p| {
        json!({"id": p.name(), "object": "model", "created": 0,
            "owned_by": p.protocol().as_str(), "upstream_model": p.model()})
    }));
    data
}

/// `GET /v1/models`: the cascade plus every provider that can be pinned.
pub async fn models(State(state): State<AppState>, _caller: Caller) -> Json<Value> {
    Json(json!({"object": "list", "data": model_objects(&state)}))
}

/// `GET /v1/models/{model}` (the SDKs' `models.retrieve`, which some bots call at
/// start-up to check their configured model): that model's object, or OpenAI's
/// 404 `model_not_found`.
pub async fn model(
    State(state): State<AppState>,
    _caller: Caller,
    AxumPath(id): AxumPath<String>,
) -> Result<Json<Value>, ApiError> {
    model_objects(&state)
        .into_iter()
        .find(|m| m["id"] == id.as_str())
        .map(Json)
        .ok_or_else(|| crate::gateway::GatewayError::UnknownModel(id).into())
}

fn route_headers(
    headers: &mut HeaderMap,
    id: &str,
    served_by: &Route,
    overhead: Duration,
    (ticket, similarity): (Option<&str>, Option<f64>),
    usage: Option<UsageSource>,
) {
    let overhead_ms = format!("{:.3}", overhead.as_secs_f64() * 1000.0);
    let pairs = [
        (SERVED_BY, served_by.as_str()),
        (REQUEST_ID, id),
        (OVERHEAD_MS, overhead_ms.as_str()),
    ];
    let similarity = similarity.map(|s| format!("{s:.4}"));
    let optional = [
        ticket.map(|t| (TICKET, t)),
        similarity.as_deref().map(|s| (SIMILARITY, s)),
        usage.map(|u| (USAGE, u.as_str())),
    ];
    for (name, value) in pairs.into_iter().chain(optional.into_iter().flatten()) {
        if let Ok(value) = HeaderValue::from_str(value) {
            headers.insert(name, value);
        }
    }
}

fn unix_now() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_secs())
}

/// Most events written as one frame.
const FRAME_EVENTS: usize = 64;

/// Appends one server-sent event carrying `data` (compact JSON or `[DONE]`: one
/// line, so a single `data:` field holds it).
fn sse_data(frame: &mut Vec<u8>, data: &str) {
    frame.extend_from_slice(b"data: ");
    frame.extend_from_slice(data.as_bytes());
    frame.extend_from_slice(b"\n\n");
}

/// An answer, whole or streamed, as far as its route headers are concerned.
trait Routed {
    /// Its id, route, own time, ticket and cache similarity.
    fn route(&self) -> (&str, &Route, Duration, Option<&str>, Option<f64>);
}

/// Both answer types name their route in fields of the same names.
macro_rules! routed {
    ($($answer:ty),+) => {$(
        impl Routed for $answer {
            fn route(&self) -> (&str, &Route, Duration, Option<&str>, Option<f64>) {
                let ticket = self.ticket.as_deref();
                (&self.id, &self.served_by, self.overhead, ticket, self.cache_similarity)
            }
        }
    )+};
}

routed!(crate::gateway::Completed, crate::gateway::Answer);

/// The headers that name `answer`'s route and, when known, who counted its
/// usage (a stream's is known up front only for a local answer).
fn answer_headers(answer: &impl Routed, usage: Option<UsageSource>) -> HeaderMap {
    let (id, served_by, overhead, ticket, similarity) = answer.route();
    let mut headers = HeaderMap::new();
    route_headers(
        &mut headers,
        id,
        served_by,
        overhead,
        (ticket, similarity),
        usage.or_else(|| known_usage(served_by)),
    );
    headers
}

/// A `text/event-stream` response with the answer's `headers`: `opening`
/// (written as soon as the answer has started), then `frames`.
fn event_stream<S>(headers: HeaderMap, opening: Vec<u8>, frames: S) -> Response
where
    S: futures::Stream<Item = Result<Bytes, Infallible>> + Send + 'static,
{
    let stream = futures::stream::once(async move { Ok::<_, Infallible>(Bytes::from(opening)) })
        .chain(frames);
    let mut response = (
        [
            (
                header::CONTENT_TYPE,
                HeaderValue::from_static("text/event-stream"),
            ),
            (header::CACHE_CONTROL, HeaderValue::from_static("no-cache")),
        ],
        Body::from_stream(stream),
    )
        .into_response();
    response.headers_mut().extend(headers);
    response
}

/// The usage source a stream can name before its end: only a local answer's.
fn known_usage(route: &Route) -> Option<UsageSource> {
    match route {
        Route::Cache => Some(UsageSource::Cache),
        Route::LastResort => Some(UsageSource::LastResort),
        Route::Provider(_) => None,
    }
}

fn header_choice<'a>(headers: &'a HeaderMap, name: &HeaderName) -> Option<&'a str> {
    headers.get(name).map(|v| v.to_str().unwrap_or_default())
}

/// The tenant a request belongs to: its key's, or (without keys) the one
/// `x-chaosai-tenant` names, else the default.
fn tenant_of(headers: &HeaderMap, caller: &Caller) -> Result<String, ApiError> {
    let Some(tenant) = headers.get(&TENANT) else {
        return Ok(caller.tenant().to_string());
    };
    let tenant = tenant
        .to_str()
        .ok()
        .map(str::trim)
        .filter(|t| !t.is_empty() && t.len() <= 128)
        .ok_or_else(|| {
            ApiError::invalid(
                Some("x-chaosai-tenant"),
                "x-chaosai-tenant must be 1-128 visible characters",
            )
        })?;
    if caller.keyed() && tenant != caller.tenant() {
        return Err(ApiError::invalid(
            Some("x-chaosai-tenant"),
            "the tenant comes from your API key; x-chaosai-tenant may not name another",
        ));
    }
    Ok(tenant.to_string())
}

/// Applies ChaosAI's own request headers: the tenant (only without keys; with
/// keys it comes from the key), the cache bypass, what a broken stream becomes.
fn apply_headers(
    request: &mut crate::gateway::GatewayRequest,
    headers: &HeaderMap,
    caller: &Caller,
) -> Result<(), ApiError> {
    request.tenant = tenant_of(headers, caller)?;
    if let Some(conversation) = headers.get(&CONVERSATION) {
        let conversation = conversation
            .to_str()
            .ok()
            .filter(|c| {
                !c.is_empty()
                    && c.len() <= 128
                    && c.bytes()
                        .all(|b| b.is_ascii_alphanumeric() || b"-_.:".contains(&b))
            })
            .ok_or_else(|| {
                ApiError::invalid(
                    Some("x-chaosai-conversation"),
                    "x-chaosai-conversation must be 1-128 letters, digits, '-', '_', '.' or ':'",
                )
            })?;
        // Within the tenant: one client can never name another's conversation.
        request.conversation_id = Some(format!("api:{}:{conversation}", request.tenant));
    }
    match header_choice(headers, &CACHE_CONTROL) {
        None => {}
        Some("bypass") => request.use_cache = false,
        Some(_) => {
            return Err(ApiError::invalid(
                Some("x-chaosai-cache"),
                "x-chaosai-cache must be \"bypass\" when given",
            ))
        }
    }
    request.on_break = match header_choice(headers, &ON_BREAK) {
        None | Some("error") => OnBreak::Fail,
        Some("restart") => OnBreak::Restart,
        Some(_) => {
            return Err(ApiError::invalid(
                Some("x-chaosai-on-break"),
                "x-chaosai-on-break must be \"restart\" or \"error\"",
            ))
        }
    };
    Ok(())
}

/// Applies the caller's headers to `request` and admits it under the caller's
/// limits, charged the prompt's estimate until the answer says what it cost.
fn admit(
    state: &AppState,
    caller: &Caller,
    headers: &HeaderMap,
    request: &mut crate::gateway::GatewayRequest,
) -> Result<super::keys::Charge, ApiError> {
    apply_headers(request, headers, caller)?;
    let prompt_estimate: u64 = request.turns.iter().map(ChatTurn::estimated_tokens).sum();
    caller.admit(state, prompt_estimate)
}

/// `POST /v1/chat/completions`.
pub async fn chat_completions(
    State(state): State<AppState>,
    caller: Caller,
    headers: HeaderMap,
    body: ConversationBody,
) -> Result<Response, ApiError> {
    body.answer(|bytes| chat_completion(state, caller, headers, bytes))
        .await
}

async fn chat_completion(
    state: AppState,
    caller: Caller,
    headers: HeaderMap,
    body: Bytes,
) -> Result<Response, ApiError> {
    let mut request = decode::decode(&body)?;
    // Megabytes with pictures: the decoded request holds what is needed of it.
    drop(body);
    let charge = admit(&state, &caller, &headers, &mut request.gateway)?;
    let created = unix_now();
    if !request.stream {
        let answer = state.gateway.complete(request.gateway).await?;
        let (usage, usage_source) = answer.usage;
        charge.settle(usage.total());
        let body = CompletionBody {
            id: &answer.id,
            created,
            model: &answer.model,
            fingerprint: answer.fingerprint.as_deref(),
            text: &answer.text,
            tool_calls: &answer.tool_calls,
            finish_reason: answer.finish_reason,
            usage,
        }
        .to_json();
        let mut response = (
            [(
                header::CONTENT_TYPE,
                HeaderValue::from_static("application/json"),
            )],
            body,
        )
            .into_response();
        response
            .headers_mut()
            .extend(answer_headers(&answer, Some(usage_source)));
        return Ok(response);
    }

    let streaming = state.gateway.stream(request.gateway).await?;
    let headers = answer_headers(&streaming, None);
    let mut writer = ChunkWriter::new(
        streaming.id.clone(),
        created,
        (streaming.model.clone(), streaming.fingerprint.clone()),
        request.include_usage,
    );
    let mut opening = Vec::new();
    sse_data(&mut opening, &writer.opening());
    let mut charge = Some(charge);
    // Events that are ready together (a provider's read brings several) become
    // one frame, so the client gets them in one write.
    let frames = streaming.events.ready_chunks(FRAME_EVENTS).map(move |batch| {
        let mut frame = Vec::with_capacity(batch.len() * 256);
        for answer_event in batch {
            match answer_event {
                AnswerEvent::Text(text) => {
                    frame.extend_from_slice(b"data: ");
                    writer.text_into(&mut frame, &text);
                    frame.extend_from_slice(b"\n\n");
                }
                AnswerEvent::ToolCall(fragment) => {
                    sse_data(&mut frame, &writer.tool_call(&fragment))
                }
                // Only callers that asked for restarts get one; the marker tells them
                // to drop the text they have and take what follows instead.
                AnswerEvent::Restarted { served_by, model } => {
                    writer.set_model(model);
                    sse_data(&mut frame, &writer.restarted(served_by.as_str()));
                }
                AnswerEvent::Done {
                    finish_reason,
                    usage,
                    usage_source,
                    ..
                } => {
                    if let Some(charge) = charge.take() {
                        charge.settle(usage.total());
                    }
                    sse_data(&mut frame, &writer.finish(finish_reason));
                    if let Some(chunk) = writer.usage(usage, usage_source) {
                        sse_data(&mut frame, &chunk);
                    }
                    sse_data(&mut frame, "[DONE]");
                }
                // An explicit error event and no [DONE]: SDKs raise instead of taking a cut answer as whole.
                AnswerEvent::Failed { message } => sse_data(
                    &mut frame,
                    &json!({"error": {"message": message, "type": "server_error", "code": "stream_interrupted"}})
                        .to_string(),
                ),
            }
        }
        Ok::<_, Infallible>(Bytes::from(frame))
    });
    Ok(event_stream(headers, opening, frames))
}
