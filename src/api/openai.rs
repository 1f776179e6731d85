//! The OpenAI-compatible surface: `POST /v1/chat/completions` (streamed or not)
//! and `GET /v1/models`, so existing SDKs use the gateway unchanged.
//!
//! `model: "chaosai"` runs the cascade; a provider's name pins that provider.

use super::{error::ApiError, AppState};
use crate::gateway::{AnswerEvent, GatewayRequest, OnBreak, DEFAULT_TENANT};
use crate::shared::{ChatTurn, Role, Route, Surface};
use axum::{
    body::Bytes,
    extract::{rejection::BytesRejection, State},
    http::{HeaderMap, HeaderName, HeaderValue},
    response::{sse::Event, IntoResponse, Response, Sse},
    Json,
};
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

/// The ticket the last resort opened for a human agent.
pub const TICKET: HeaderName = HeaderName::from_static("x-chaosai-ticket");

/// `GET /v1/models`: the cascade plus every provider that can be pinned.
pub async fn models(State(state): State<AppState>) -> Json<Value> {
    let mut data =
        vec![json!({"id": CASCADE_MODEL, "object": "model", "created": 0, "owned_by": "chaosai"})];
    data.extend(state.gateway.cascade().providers().map(|p| {
        json!({"id": p.name(), "object": "model", "created": 0,
            "owned_by": p.protocol().as_str(), "upstream_model": p.model()})
    }));
    Json(json!({"object": "list", "data": data}))
}

/// A decoded chat completion request.
struct ApiRequest {
    stream: bool,
    gateway: GatewayRequest,
}

fn content_text(content: &Value, index: usize) -> Result<String, ApiError> {
    let param = format!("messages[{index}].content");
    match content {
        Value::String(s) => Ok(s.clone()),
        Value::Array(parts) => {
            let mut text = String::new();
            for part in parts {
                match (part.get("type").and_then(Value::as_str), part.get("text")) {
                    (Some("text"), Some(Value::String(t))) => text.push_str(t),
                    _ => {
                        return Err(ApiError::invalid(
                            Some(&param),
                            format!("{param}: only text parts are supported"),
                        ))
                    }
                }
            }
            Ok(text)
        }
        Value::Null => Err(ApiError::invalid(
            Some(&param),
            format!("{param} is required"),
        )),
        _ => Err(ApiError::invalid(
            Some(&param),
            format!("{param} must be a string or an array of text parts"),
        )),
    }
}

fn decode(body: &[u8]) -> Result<ApiRequest, ApiError> {
    let body: Value = serde_json::from_slice(body)
        .map_err(|err| ApiError::invalid(None, format!("request body is not valid JSON: {err}")))?;
    let Value::Object(body) = body else {
        return Err(ApiError::invalid(
            None,
            "request body must be a JSON object",
        ));
    };
    let model = match body.get("model") {
        Some(Value::String(m)) if !m.trim().is_empty() => m.trim().to_string(),
        None | Some(Value::Null) => {
            return Err(ApiError::invalid(Some("model"), "model is required"))
        }
        _ => {
            return Err(ApiError::invalid(
                Some("model"),
                "model must be a non-empty string",
            ))
        }
    };
    let messages = match body.get("messages") {
        Some(Value::Array(m)) if !m.is_empty() => m,
        Some(Value::Array(_)) => {
            return Err(ApiError::invalid(
                Some("messages"),
                "messages must not be empty",
            ))
        }
        None | Some(Value::Null) => {
            return Err(ApiError::invalid(Some("messages"), "messages is required"))
        }
        _ => {
            return Err(ApiError::invalid(
                Some("messages"),
                "messages must be an array",
            ))
        }
    };
    let mut turns = Vec::with_capacity(messages.len());
    for (index, message) in messages.iter().enumerate() {
        let param = format!("messages[{index}].role");
        let role = match message.get("role").and_then(Value::as_str) {
            Some("system") | Some("developer") => Role::System,
            Some("user") => Role::User,
            Some("assistant") => Role::Assistant,
            Some(other) => {
                return Err(ApiError::invalid(
                    Some(&param),
                    format!("{param}: unknown role {other:?}; expected system, developer, user or assistant"),
                ))
            }
            None => return Err(ApiError::invalid(Some(&param), format!("{param} is required"))),
        };
        let content = content_text(message.get("content").unwrap_or(&Value::Null), index)?;
        turns.push(ChatTurn { role, content });
    }
    let stream = match body.get("stream") {
        None | Some(Value::Null) => false,
        Some(Value::Bool(b)) => *b,
        _ => {
            return Err(ApiError::invalid(
                Some("stream"),
                "stream must be a boolean",
            ))
        }
    };
    let max_tokens = match body
        .get("max_completion_tokens")
        .or_else(|| body.get("max_tokens"))
    {
        None | Some(Value::Null) => None,
        Some(v) => Some(
            v.as_u64()
                .and_then(|n| u32::try_from(n).ok())
                .ok_or_else(|| {
                    ApiError::invalid(Some("max_tokens"), "max_tokens must be a positive integer")
                })?,
        ),
    };
    let temperature =
        match body.get("temperature") {
            None | Some(Value::Null) => None,
            Some(v) => Some(v.as_f64().ok_or_else(|| {
                ApiError::invalid(Some("temperature"), "temperature must be a number")
            })? as f32),
        };
    let pinned = (model != CASCADE_MODEL).then(|| model.clone());
    Ok(ApiRequest {
        stream,
        gateway: GatewayRequest {
            turns,
            pinned,
            max_tokens,
            temperature,
            surface: Surface::Api,
            conversation_id: None,
            tenant: DEFAULT_TENANT.into(),
            use_cache: true,
            on_break: OnBreak::Fail,
        },
    })
}

fn route_headers(
    headers: &mut HeaderMap,
    id: &str,
    served_by: &Route,
    overhead: Duration,
    ticket: Option<&str>,
    similarity: Option<f64>,
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

/// `POST /v1/chat/completions`.
pub async fn chat_completions(
    State(state): State<AppState>,
    headers: HeaderMap,
    body: Result<Bytes, BytesRejection>,
) -> Result<Response, ApiError> {
    let mut request = decode(&body?)?;
    if let Some(tenant) = headers.get(&TENANT) {
        let tenant = tenant
            .to_str()
            .ok()
            .map(str::trim)
            .filter(|t| !t.is_empty() && t.len() <= 128);
        request.gateway.tenant = tenant
            .ok_or_else(|| {
                ApiError::invalid(
                    Some("x-chaosai-tenant"),
                    "x-chaosai-tenant must be 1-128 visible characters",
                )
            })?
            .to_string();
    }
    match headers
        .get(&CACHE_CONTROL)
        .map(|v| v.to_str().unwrap_or_default())
    {
        None => {}
        Some("bypass") => request.gateway.use_cache = false,
        Some(_) => {
            return Err(ApiError::invalid(
                Some("x-chaosai-cache"),
                "x-chaosai-cache must be \"bypass\" when given",
            ))
        }
    }
    request.gateway.on_break = match headers
        .get(&ON_BREAK)
        .map(|v| v.to_str().unwrap_or_default())
    {
        None | Some("error") => OnBreak::Fail,
        Some("restart") => OnBreak::Restart,
        Some(_) => {
            return Err(ApiError::invalid(
                Some("x-chaosai-on-break"),
                "x-chaosai-on-break must be \"restart\" or \"error\"",
            ))
        }
    };
    let created = unix_now();
    if !request.stream {
        let answer = state.gateway.complete(request.gateway).await?;
        let body = json!({
            "id": answer.id, "object": "chat.completion", "created": created, "model": answer.model,
            "choices": [{"index": 0, "message": {"role": "assistant", "content": answer.text},
                "finish_reason": answer.finish_reason.map(|r| r.as_str())}],
            "usage": {"prompt_tokens": 0, "completion_tokens": 0, "total_tokens": 0},
        });
        let mut response = Json(body).into_response();
        route_headers(
            response.headers_mut(),
            &answer.id,
            &answer.served_by,
            answer.overhead,
            answer.ticket.as_deref(),
            answer.cache_similarity,
        );
        return Ok(response);
    }

    let streaming = state.gateway.stream(request.gateway).await?;
    let id = streaming.id.clone();
    let mut model = streaming.model.clone();
    let chunk = move |model: &str, delta: Value, finish: Option<&str>| {
        json!({"id": id, "object": "chat.completion.chunk", "created": created, "model": model,
            "choices": [{"index": 0, "delta": delta, "finish_reason": finish}]})
    };
    let event = |value: Value| Event::default().data(value.to_string());
    let opening = event(chunk(
        &model,
        json!({"role": "assistant", "content": ""}),
        None,
    ));
    let events = streaming.events.flat_map(move |answer_event| {
        let out: Vec<Event> = match answer_event {
            AnswerEvent::Text(text) => vec![event(chunk(&model, json!({"content": text}), None))],
            // Only callers that asked for restarts get one; the marker tells them
            // to drop the text they have and take what follows instead.
            AnswerEvent::Restarted { served_by, model: new } => {
                model = new;
                let mut marker = chunk(&model, json!({"role": "assistant", "content": ""}), None);
                marker["chaosai"] = json!({"restarted": true, "served_by": served_by});
                vec![event(marker)]
            }
            AnswerEvent::Done { finish_reason, .. } => vec![
                event(chunk(&model, json!({}), Some(finish_reason.as_str()))),
                Event::default().data("[DONE]"),
            ],
            // An explicit error event and no [DONE]: SDKs raise instead of taking a cut answer as whole.
            AnswerEvent::Failed { message } => vec![Event::default().data(
                json!({"error": {"message": message, "type": "server_error", "code": "stream_interrupted"}})
                    .to_string(),
            )],
        };
        futures::stream::iter(out.into_iter().map(Ok::<_, Infallible>))
    });
    let stream = futures::stream::once(async move { Ok::<_, Infallible>(opening) }).chain(events);
    let mut response = Sse::new(stream).into_response();
    route_headers(
        response.headers_mut(),
        &streaming.id,
        &streaming.served_by,
        streaming.overhead,
        streaming.ticket.as_deref(),
        streaming.cache_similarity,
    );
    Ok(response)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn message_of(body: &str) -> String {
        match decode(body.as_bytes()) {
            Ok(_) => "ok".into(),
            Err(err) => err.message,
        }
    }

    #[test]
    fn names_the_problem_in_bad_requests() {
        assert!(message_of("{not json").contains("not valid JSON"));
        assert!(
            message_of(r#"{"messages":[{"role":"user","content":"hi"}]}"#)
                .contains("model is required")
        );
        assert!(message_of(r#"{"model":"chaosai"}"#).contains("messages is required"));
        assert!(message_of(r#"{"model":"chaosai","messages":[]}"#).contains("must not be empty"));
        assert!(
            message_of(r#"{"model":"chaosai","messages":[{"role":"tool","content":"x"}]}"#)
                .contains("unknown role \"tool\"")
        );
        assert!(
            message_of(r#"{"model":"chaosai","messages":[{"role":"user","content":5}]}"#)
                .contains("messages[0].content")
        );
        assert_eq!(
            message_of(
                r#"{"model":"chaosai","messages":[{"role":"user","content":[{"type":"text","text":"hi"}]}]}"#
            ),
            "ok"
        );
    }

    #[test]
    fn the_cascade_model_pins_nothing() {
        let request = decode(
            br#"{"model":"chaosai","messages":[{"role":"user","content":"hi"}],"stream":true}"#,
        )
        .unwrap();
        assert!(request.stream);
        assert!(request.gateway.pinned.is_none());
        let pinned =
            decode(br#"{"model":"gpt","messages":[{"role":"user","content":"hi"}]}"#).unwrap();
        assert_eq!(pinned.gateway.pinned.as_deref(), Some("gpt"));
    }

    mod properties {
        use super::super::decode;
        use proptest::prelude::*;
        use serde_json::json;

        proptest! {
            #![proptest_config(ProptestConfig::with_cases(300))]

            #[test]
            fn arbitrary_bytes_get_an_answer_or_an_error_never_a_panic(
                body in proptest::collection::vec(any::<u8>(), 0..400)
            ) {
                let _ = decode(&body);
            }

            #[test]
            fn arbitrary_json_gets_an_answer_or_an_error_naming_the_problem(
                model in proptest::option::of("[a-z]{0,8}"),
                roles in proptest::collection::vec("(user|assistant|system|developer|tool|x)", 0..5),
                texts in proptest::collection::vec(".{0,30}", 0..5),
                stream in proptest::option::of(any::<bool>()),
                temperature in proptest::option::of(-5.0f64..5.0),
            ) {
                let messages: Vec<_> = roles
                    .iter()
                    .zip(texts.iter().chain(std::iter::repeat(&String::new())))
                    .map(|(role, text)| json!({"role": role, "content": text}))
                    .collect();
                let body = json!({"model": model, "messages": messages, "stream": stream,
                    "temperature": temperature});
                if let Err(err) = decode(body.to_string().as_bytes()) {
                    prop_assert!(!err.message.is_empty());
                }
            }

            #[test]
            fn valid_requests_round_trip_into_the_gateways_request(
                texts in proptest::collection::vec("[^\\x00]{1,40}", 1..6),
                stream in any::<bool>(),
            ) {
                let messages: Vec<_> = texts
                    .iter()
                    .enumerate()
                    .map(|(i, t)| json!({"role": if i % 2 == 0 { "user" } else { "assistant" }, "content": t}))
                    .collect();
                let body = json!({"model": "chaosai", "messages": messages, "stream": stream});
                let decoded = decode(body.to_string().as_bytes()).unwrap();
                prop_assert_eq!(decoded.stream, stream);
                let contents: Vec<&str> =
                    decoded.gateway.turns.iter().map(|t| t.content.as_str()).collect();
                let expected: Vec<&str> = texts.iter().map(String::as_str).collect();
                prop_assert_eq!(contents, expected);
            }
        }
    }
}
