//! Simulated providers: real HTTP servers on loopback that speak the Anthropic
//! Messages and OpenAI Chat Completions protocols, answer from a built-in support
//! knowledge base and pace their tokens like a real model.
//!
//! They let the whole real path (HTTP, SSE, error bodies, timeouts) run without
//! API keys. Each simulated provider validates requests as strictly as the real
//! API would, so an adapter bug shows up here first.

use crate::config::{Protocol, SimConfig};
use crate::knowledge;
use crate::shared::{ChatTurn, Role};
use axum::{
    extract::State,
    http::{HeaderMap, StatusCode},
    response::{sse::Event, IntoResponse, Response, Sse},
    routing::post,
    serve::ListenerExt,
    Json, Router,
};
use futures::StreamExt;
use rand::Rng;
use serde_json::{json, Value};
use std::{convert::Infallible, net::SocketAddr, sync::Arc, time::Duration};

/// Token pacing of a simulated model.
#[derive(Clone, Copy, Debug)]
struct Pacing {
    min: Duration,
    max: Duration,
}

impl Pacing {
    fn next_delay(&self) -> Duration {
        if self.max <= self.min {
            return self.min;
        }
        rand::thread_rng().gen_range(self.min..=self.max)
    }
}

struct SimState {
    protocol: Protocol,
    pacing: Pacing,
}

/// A running simulated provider.
#[derive(Clone, Debug)]
pub struct SimServer {
    /// Where it listens.
    pub addr: SocketAddr,
    /// Base URL to configure an adapter with.
    pub base_url: String,
}

/// Starts a simulated provider for `protocol` on a free loopback port. It runs
/// until the runtime that started it ends.
pub async fn start(protocol: Protocol, config: &SimConfig) -> std::io::Result<SimServer> {
    let listener = tokio::net::TcpListener::bind(("127.0.0.1", 0)).await?;
    let addr = listener.local_addr()?;
    let state = Arc::new(SimState {
        protocol,
        pacing: Pacing {
            min: Duration::from_millis(config.chunk_delay_min_ms),
            max: Duration::from_millis(config.chunk_delay_max_ms),
        },
    });
    let (router, base_url) = match protocol {
        Protocol::Anthropic => (
            Router::new().route("/v1/messages", post(anthropic_messages)),
            format!("http://{addr}"),
        ),
        Protocol::OpenAi => (
            Router::new().route("/v1/chat/completions", post(openai_completions)),
            format!("http://{addr}/v1"),
        ),
    };
    let app = router.with_state(state);
    // Token-by-token streams need TCP_NODELAY, as a real provider's servers set it.
    let listener = listener.tap_io(|tcp| {
        let _ = tcp.set_nodelay(true);
    });
    tokio::spawn(async move {
        if let Err(err) = axum::serve(listener, app).await {
            tracing::error!(error = %err, "simulated provider stopped");
        }
    });
    Ok(SimServer { addr, base_url })
}

/// A request both protocols share once decoded.
struct SimRequest {
    model: String,
    turns: Vec<ChatTurn>,
    max_tokens: usize,
    stream: bool,
}

fn text_of(content: &Value) -> Option<String> {
    match content {
        Value::String(s) => Some(s.clone()),
        Value::Array(parts) => parts
            .iter()
            .map(|p| p.get("text").and_then(Value::as_str).map(str::to_string))
            .collect::<Option<Vec<_>>>()
            .map(|v| v.concat()),
        _ => None,
    }
}

/// Decodes the fields both protocols share; `Err` carries the message the real API would give.
fn decode(
    body: &Value,
    allow_system_role: bool,
    max_tokens_required: bool,
) -> Result<SimRequest, String> {
    let model = body
        .get("model")
        .and_then(Value::as_str)
        .ok_or("model: field required")?
        .to_string();
    let max_tokens = match body.get("max_tokens").and_then(Value::as_u64) {
        Some(0) => return Err("max_tokens: must be at least 1".into()),
        Some(n) => n as usize,
        None if max_tokens_required => return Err("max_tokens: field required".into()),
        None => usize::MAX,
    };
    let messages = body
        .get("messages")
        .and_then(Value::as_array)
        .ok_or("messages: field required")?;
    if messages.is_empty() {
        return Err("messages: at least one message is required".into());
    }
    let mut turns = Vec::new();
    for (i, m) in messages.iter().enumerate() {
        let role = match m.get("role").and_then(Value::as_str) {
            Some("user") => Role::User,
            Some("assistant") => Role::Assistant,
            Some("system") | Some("developer") if allow_system_role => Role::System,
            other => return Err(format!("messages.{i}.role: unexpected role {other:?}")),
        };
        let content = m
            .get("content")
            .and_then(text_of)
            .ok_or_else(|| format!("messages.{i}.content: field required"))?;
        turns.push(ChatTurn { role, content });
    }
    Ok(SimRequest {
        model,
        turns,
        max_tokens,
        stream: body.get("stream").and_then(Value::as_bool).unwrap_or(false),
    })
}

/// The answer to a conversation. A conversation that ends with a partial
/// assistant answer (a prefill) gets the rest of that answer, as a model that
/// continues its own turn would.
fn answer_text(turns: &[ChatTurn]) -> String {
    if let [rest @ .., last] = turns {
        if last.role == Role::Assistant {
            let full = knowledge::answer(rest);
            return match full.strip_prefix(last.content.trim_end()) {
                Some(remainder) => remainder.to_string(),
                None => full,
            };
        }
    }
    knowledge::answer(turns)
}

fn answer_tokens(request: &SimRequest) -> (Vec<String>, bool) {
    let mut tokens = knowledge::tokens(&answer_text(&request.turns));
    let truncated = tokens.len() > request.max_tokens;
    tokens.truncate(request.max_tokens);
    (tokens, truncated)
}

/// A non-streamed answer takes about as long as generating it, capped so demos stay brisk.
async fn think(pacing: Pacing, tokens: usize) {
    let total = (0..tokens).map(|_| pacing.next_delay()).sum::<Duration>();
    if !total.is_zero() {
        tokio::time::sleep(total.min(Duration::from_secs(2))).await;
    }
}

/// Paces `events` with the model's token delay.
fn paced(
    pacing: Pacing,
    events: Vec<Event>,
) -> Sse<impl futures::Stream<Item = Result<Event, Infallible>>> {
    let stream = futures::stream::iter(events).then(move |event| async move {
        // A zero delay skips the timer: tokio rounds any sleep up to its 1 ms tick,
        // which would make "pacing off" pace at 1 ms a chunk.
        let delay = pacing.next_delay();
        if !delay.is_zero() {
            tokio::time::sleep(delay).await;
        }
        Ok(event)
    });
    Sse::new(stream)
}

fn anthropic_error(status: StatusCode, kind: &str, message: &str) -> Response {
    (
        status,
        Json(json!({"type": "error", "error": {"type": kind, "message": message}})),
    )
        .into_response()
}

async fn anthropic_messages(
    State(state): State<Arc<SimState>>,
    headers: HeaderMap,
    body: axum::body::Bytes,
) -> Response {
    debug_assert_eq!(state.protocol, Protocol::Anthropic);
    if !headers.contains_key("anthropic-version") {
        return anthropic_error(
            StatusCode::BAD_REQUEST,
            "invalid_request_error",
            "anthropic-version: header is required",
        );
    }
    let request = match serde_json::from_slice::<Value>(&body)
        .map_err(|e| format!("invalid JSON body: {e}"))
        .and_then(|body| decode(&body, false, true))
    {
        Ok(request) => request,
        Err(message) => {
            return anthropic_error(StatusCode::BAD_REQUEST, "invalid_request_error", &message)
        }
    };
    let id = format!("msg_{}", uuid::Uuid::new_v4().simple());
    let (tokens, truncated) = answer_tokens(&request);
    let stop_reason = if truncated { "max_tokens" } else { "end_turn" };
    let input_tokens: usize = request
        .turns
        .iter()
        .map(|t| knowledge::tokens(&t.content).len())
        .sum();
    if !request.stream {
        think(state.pacing, tokens.len()).await;
        return Json(json!({
            "id": id, "type": "message", "role": "assistant", "model": request.model,
            "content": [{"type": "text", "text": tokens.concat()}],
            "stop_reason": stop_reason, "stop_sequence": null,
            "usage": {"input_tokens": input_tokens, "output_tokens": tokens.len()}
        }))
        .into_response();
    }
    let event = |name: &str, data: Value| Event::default().event(name).data(data.to_string());
    let mut events = vec![
        event(
            "message_start",
            json!({"type": "message_start", "message": {
            "id": id, "type": "message", "role": "assistant", "model": request.model,
            "content": [], "stop_reason": null, "stop_sequence": null,
            "usage": {"input_tokens": input_tokens, "output_tokens": 1}}}),
        ),
        event(
            "content_block_start",
            json!({"type": "content_block_start", "index": 0,
            "content_block": {"type": "text", "text": ""}}),
        ),
        event("ping", json!({"type": "ping"})),
    ];
    let count = tokens.len();
    events.extend(tokens.into_iter().map(|text| {
        event(
            "content_block_delta",
            json!({"type": "content_block_delta", "index": 0,
            "delta": {"type": "text_delta", "text": text}}),
        )
    }));
    events.push(event(
        "content_block_stop",
        json!({"type": "content_block_stop", "index": 0}),
    ));
    events.push(event(
        "message_delta",
        json!({"type": "message_delta",
        "delta": {"stop_reason": stop_reason, "stop_sequence": null},
        "usage": {"output_tokens": count}}),
    ));
    events.push(event("message_stop", json!({"type": "message_stop"})));
    paced(state.pacing, events).into_response()
}

fn openai_error(status: StatusCode, message: &str, param: Option<&str>) -> Response {
    (
        status,
        Json(
            json!({"error": {"message": message, "type": "invalid_request_error",
            "param": param, "code": null}}),
        ),
    )
        .into_response()
}

async fn openai_completions(
    State(state): State<Arc<SimState>>,
    body: axum::body::Bytes,
) -> Response {
    debug_assert_eq!(state.protocol, Protocol::OpenAi);
    let request = match serde_json::from_slice::<Value>(&body)
        .map_err(|e| format!("We could not parse the JSON body of your request: {e}"))
        .and_then(|body| decode(&body, true, false))
    {
        Ok(request) => request,
        Err(message) => return openai_error(StatusCode::BAD_REQUEST, &message, None),
    };
    let id = format!("chatcmpl-{}", uuid::Uuid::new_v4().simple());
    let created = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_secs());
    let (tokens, truncated) = answer_tokens(&request);
    let finish_reason = if truncated { "length" } else { "stop" };
    if !request.stream {
        think(state.pacing, tokens.len()).await;
        return Json(json!({
            "id": id, "object": "chat.completion", "created": created, "model": request.model,
            "choices": [{"index": 0, "message": {"role": "assistant", "content": tokens.concat()},
                "finish_reason": finish_reason}],
            "usage": {"prompt_tokens": 0, "completion_tokens": tokens.len(), "total_tokens": tokens.len()}
        }))
        .into_response();
    }
    let chunk = |delta: Value, finish: Option<&str>| {
        Event::default().data(
            json!({"id": id, "object": "chat.completion.chunk", "created": created,
                "model": request.model,
                "choices": [{"index": 0, "delta": delta, "finish_reason": finish}]})
            .to_string(),
        )
    };
    let mut events = vec![chunk(json!({"role": "assistant", "content": ""}), None)];
    events.extend(
        tokens
            .into_iter()
            .map(|text| chunk(json!({"content": text}), None)),
    );
    events.push(chunk(json!({}), Some(finish_reason)));
    events.push(Event::default().data("[DONE]"));
    paced(state.pacing, events).into_response()
}
