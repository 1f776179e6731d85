//! A scripted provider speaking the real OpenAI or Anthropic wire format, that
//! fails the way real providers fail: a stream that finishes without its final
//! marker, one cut, stalled or garbled after N tokens, a refusal of a trailing
//! assistant message (or a true continuation of it), a conversation too long for
//! its window, an outage that ends when the test says so.
#![allow(dead_code)]

use axum::{
    body::{Body, Bytes},
    extract::State,
    http::StatusCode,
    response::{IntoResponse, Response},
    routing::post,
    Json, Router,
};
use chaosai::shared::Protocol;
use futures::StreamExt;
use serde_json::{json, Value};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

/// The canned answer every scripted provider gives: sixty words.
pub const CANNED: &str = "Thanks for reaching out about your order. It left our warehouse \
yesterday and is now with the carrier, who expects to deliver it within two to three \
business days. You can follow every step under Account, then Orders, where the tracking \
link appears as soon as the carrier scans the parcel. If nothing moves for three days, \
reply here and we will investigate.";

/// The canned answer in the tokens a stream sends: each word with its leading space.
pub fn tokens(text: &str) -> Vec<String> {
    let mut out = Vec::new();
    for (i, word) in text.split(' ').enumerate() {
        out.push(if i == 0 {
            word.to_string()
        } else {
            format!(" {word}")
        });
    }
    out
}

/// Words in a text, to compare what a customer got with the whole answer.
pub fn words(text: &str) -> usize {
    text.split_whitespace().count()
}

/// How the provider answers.
#[derive(Clone, Copy, Debug, PartialEq)]
pub enum Mode {
    /// The whole answer, properly ended.
    Whole,
    /// The whole answer and its finish reason, then the connection closes
    /// without the final marker (`[DONE]`, `message_stop`).
    NoFinalMarker,
    /// `n` tokens, then the connection is dropped.
    CutAfter(usize),
    /// `n` tokens, then silence (the connection stays open).
    StallAfter(usize),
    /// `n` tokens, then an event whose JSON is broken.
    MalformedAt(usize),
    /// 400: the conversation is too long for this model's window.
    TooLong,
    /// 503 until [`Upstream::recover`].
    Down,
    /// A call of `order_status` for order 1234 ([`TOOL_ARGUMENTS`]), its
    /// arguments streamed a few characters a chunk, properly ended.
    ToolCall,
    /// The same call cut (the connection dropped) after `n` pieces of its arguments.
    ToolCallCutAfter(usize),
    /// A sentence of text, then the call cut after `n` pieces of its arguments.
    TextThenToolCallCutAfter(usize),
}

/// The arguments of the scripted tool call.
pub const TOOL_ARGUMENTS: &str = r#"{"order_id":"1234"}"#;

/// The sentence a provider says before its scripted tool call.
pub const PREAMBLE: &str = "Let me check that order.";

/// What the provider does with a trailing assistant message (a prefill).
#[derive(Clone, Copy, Debug, PartialEq)]
pub enum Prefill {
    /// Continues it: answers with the rest of the canned answer after it.
    Continue,
    /// Refuses it with a 400, as many OpenAI-compatible servers do.
    Reject,
}

struct Shared {
    protocol: Protocol,
    mode: Mutex<Mode>,
    prefill: Mutex<Prefill>,
    healthy: AtomicBool,
    requests: Mutex<Vec<Value>>,
}

/// A scripted provider on a loopback port.
#[derive(Clone)]
pub struct Upstream {
    /// The base URL an adapter of its protocol is configured with.
    pub base_url: String,
    shared: Arc<Shared>,
}

impl Upstream {
    /// Starts one speaking `protocol`, answering as `mode` says.
    pub async fn start(protocol: Protocol, mode: Mode) -> Self {
        let shared = Arc::new(Shared {
            protocol,
            mode: Mutex::new(mode),
            prefill: Mutex::new(Prefill::Continue),
            healthy: AtomicBool::new(mode != Mode::Down),
            requests: Mutex::new(Vec::new()),
        });
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let (path, base_url) = match protocol {
            Protocol::OpenAi => ("/v1/chat/completions", format!("http://{addr}/v1")),
            Protocol::Anthropic => ("/v1/messages", format!("http://{addr}")),
        };
        let app = Router::new()
            .route(path, post(answer))
            .with_state(shared.clone());
        tokio::spawn(async move {
            let _ = axum::serve(listener, app).await;
        });
        Self { base_url, shared }
    }

    /// Changes how it answers from now on.
    pub fn set_mode(&self, mode: Mode) {
        *self.shared.mode.lock().unwrap() = mode;
        self.shared
            .healthy
            .store(mode != Mode::Down, Ordering::SeqCst);
    }

    /// Changes what it does with a prefill.
    pub fn set_prefill(&self, prefill: Prefill) {
        *self.shared.prefill.lock().unwrap() = prefill;
    }

    /// Ends an outage: it answers whole from now on.
    pub fn recover(&self) {
        self.set_mode(Mode::Whole);
    }

    /// Every request body received, in order.
    pub fn requests(&self) -> Vec<Value> {
        self.shared.requests.lock().unwrap().clone()
    }

    /// Requests that were customers' (not the gateway's one-token probes).
    pub fn customer_requests(&self) -> usize {
        self.requests()
            .iter()
            .filter(|r| r["max_tokens"] != 1)
            .count()
    }

    /// Requests that were the gateway's background probes.
    pub fn probes(&self) -> usize {
        self.requests().len() - self.customer_requests()
    }
}

fn error(
    protocol: Protocol,
    status: StatusCode,
    kind: &str,
    code: Option<&str>,
    message: &str,
) -> Response {
    let body = match protocol {
        Protocol::OpenAi => {
            json!({"error": {"message": message, "type": kind, "param": null, "code": code}})
        }
        Protocol::Anthropic => {
            json!({"type": "error", "error": {"type": kind, "message": message}})
        }
    };
    (status, Json(body)).into_response()
}

async fn answer(State(shared): State<Arc<Shared>>, body: Bytes) -> Response {
    let request: Value = serde_json::from_slice(&body).unwrap_or(Value::Null);
    shared.requests.lock().unwrap().push(request.clone());
    let protocol = shared.protocol;
    let mode = *shared.mode.lock().unwrap();
    if !shared.healthy.load(Ordering::SeqCst) {
        return error(
            protocol,
            StatusCode::SERVICE_UNAVAILABLE,
            "server_error",
            None,
            "Service unavailable",
        );
    }
    if mode == Mode::TooLong {
        return match protocol {
            Protocol::OpenAi => error(
                protocol,
                StatusCode::BAD_REQUEST,
                "invalid_request_error",
                Some("context_length_exceeded"),
                "This model's maximum context length is 8192 tokens. However, your messages resulted in 9001 tokens.",
            ),
            Protocol::Anthropic => error(
                protocol,
                StatusCode::BAD_REQUEST,
                "invalid_request_error",
                None,
                "prompt is too long: 208310 tokens > 200000 maximum",
            ),
        };
    }
    // A probe is answered with one token.
    if request["max_tokens"] == 1 {
        return whole(protocol, "pong");
    }
    let messages = request["messages"].as_array().cloned().unwrap_or_default();
    let prefill = messages
        .last()
        .filter(|m| m["role"] == "assistant")
        .and_then(|m| match &m["content"] {
            Value::String(text) => Some(text.clone()),
            // Anthropic's content blocks.
            Value::Array(blocks) => Some(
                blocks
                    .iter()
                    .filter_map(|b| b["text"].as_str())
                    .collect::<String>(),
            ),
            _ => None,
        });
    let text = match prefill {
        None => CANNED.to_string(),
        Some(_) if *shared.prefill.lock().unwrap() == Prefill::Reject => {
            return error(
                protocol,
                StatusCode::BAD_REQUEST,
                "invalid_request_error",
                None,
                "Invalid 'messages': the last message must come from the user.",
            )
        }
        // A true continuation: only what follows the prefill.
        Some(partial) => match CANNED.strip_prefix(partial.as_str()) {
            Some(rest) => rest.to_string(),
            None => {
                return error(
                    protocol,
                    StatusCode::BAD_REQUEST,
                    "invalid_request_error",
                    None,
                    "the prefill is not the start of an answer this model would give",
                )
            }
        },
    };
    if let Mode::ToolCall | Mode::ToolCallCutAfter(_) | Mode::TextThenToolCallCutAfter(_) = mode {
        if request["stream"] != true {
            return whole_tool_call(protocol);
        }
        return tool_stream(protocol, mode);
    }
    if request["stream"] != true {
        return whole(protocol, &text);
    }
    stream(protocol, mode, tokens(&text))
}

/// The scripted call's id in `protocol`'s spelling.
pub fn tool_call_id(protocol: Protocol) -> &'static str {
    match protocol {
        Protocol::OpenAi => "call_up1",
        Protocol::Anthropic => "toolu_up1",
    }
}

fn whole_tool_call(protocol: Protocol) -> Response {
    let id = tool_call_id(protocol);
    let body = match protocol {
        Protocol::OpenAi => json!({"id": "u", "object": "chat.completion", "choices": [
            {"index": 0, "message": {"role": "assistant", "content": null, "tool_calls": [
                {"id": id, "type": "function", "function": {"name": "order_status", "arguments": TOOL_ARGUMENTS}}]},
             "finish_reason": "tool_calls"}],
            "usage": {"prompt_tokens": 30, "completion_tokens": 12, "total_tokens": 42}}),
        Protocol::Anthropic => json!({"id": "m", "type": "message", "role": "assistant",
            "content": [{"type": "tool_use", "id": id, "name": "order_status",
                "input": serde_json::from_str::<Value>(TOOL_ARGUMENTS).unwrap()}],
            "stop_reason": "tool_use", "usage": {"input_tokens": 30, "output_tokens": 12}}),
    };
    Json(body).into_response()
}

fn tool_stream(protocol: Protocol, mode: Mode) -> Response {
    let id = tool_call_id(protocol);
    let pieces: Vec<String> = TOOL_ARGUMENTS
        .chars()
        .collect::<Vec<_>>()
        .chunks(3)
        .map(|c| c.iter().collect())
        .collect();
    let (cut, preamble) = match mode {
        Mode::ToolCallCutAfter(n) => (Some(n), false),
        Mode::TextThenToolCallCutAfter(n) => (Some(n), true),
        _ => (None, false),
    };
    let mut parts = Vec::new();
    let call_index = usize::from(preamble);
    match protocol {
        Protocol::OpenAi => {
            let chunk = |delta: Value, finish: Option<&str>| {
                event(
                    protocol,
                    "",
                    json!({"id": "u", "object": "chat.completion.chunk",
                    "choices": [{"index": 0, "delta": delta, "finish_reason": finish}]}),
                )
            };
            parts.push(chunk(json!({"role": "assistant", "content": null}), None));
            if preamble {
                parts.extend(tokens(PREAMBLE).iter().map(|t| delta(protocol, t)));
            }
            parts.push(chunk(
                json!({"tool_calls": [{"index": 0, "id": id, "type": "function",
                "function": {"name": "order_status", "arguments": ""}}]}),
                None,
            ));
            for piece in pieces.iter().take(cut.unwrap_or(usize::MAX)) {
                parts.push(chunk(
                    json!({"tool_calls": [{"index": 0, "function": {"arguments": piece}}]}),
                    None,
                ));
            }
            if cut.is_none() {
                parts.push(chunk(json!({}), Some("tool_calls")));
                parts.push(event(
                    protocol,
                    "",
                    json!({"choices": [],
                    "usage": {"prompt_tokens": 30, "completion_tokens": 12, "total_tokens": 42}}),
                ));
                parts.push("data: [DONE]\n\n".to_string());
            }
        }
        Protocol::Anthropic => {
            parts.push(event(protocol, "message_start", json!({"type": "message_start",
                "message": {"id": "m", "content": [], "usage": {"input_tokens": 30, "output_tokens": 1}}})));
            if preamble {
                parts.push(event(
                    protocol,
                    "content_block_start",
                    json!({"type": "content_block_start",
                    "index": 0, "content_block": {"type": "text", "text": ""}}),
                ));
                parts.extend(tokens(PREAMBLE).iter().map(|t| delta(protocol, t)));
                parts.push(event(
                    protocol,
                    "content_block_stop",
                    json!({"type": "content_block_stop", "index": 0}),
                ));
            }
            parts.push(event(protocol, "content_block_start", json!({"type": "content_block_start",
                "index": call_index, "content_block": {"type": "tool_use", "id": id, "name": "order_status", "input": {}}})));
            for piece in pieces.iter().take(cut.unwrap_or(usize::MAX)) {
                parts.push(event(protocol, "content_block_delta", json!({"type": "content_block_delta",
                    "index": call_index, "delta": {"type": "input_json_delta", "partial_json": piece}})));
            }
            if cut.is_none() {
                parts.push(event(
                    protocol,
                    "content_block_stop",
                    json!({"type": "content_block_stop", "index": call_index}),
                ));
                parts.push(event(
                    protocol,
                    "message_delta",
                    json!({"type": "message_delta",
                    "delta": {"stop_reason": "tool_use"}, "usage": {"output_tokens": 12}}),
                ));
                parts.push(event(
                    protocol,
                    "message_stop",
                    json!({"type": "message_stop"}),
                ));
            }
        }
    }
    let head = futures::stream::iter(parts)
        .then(|part| async move {
            tokio::time::sleep(Duration::from_millis(2)).await;
            Ok::<_, std::io::Error>(Bytes::from(part))
        })
        .chain(futures::stream::once(async {
            tokio::time::sleep(Duration::from_millis(30)).await;
            Ok(Bytes::new())
        }));
    let body = match cut {
        None => Body::from_stream(head),
        Some(_) => Body::from_stream(head.chain(futures::stream::once(async {
            Err(std::io::Error::new(
                std::io::ErrorKind::ConnectionReset,
                "cut",
            ))
        }))),
    };
    Response::builder()
        .header("content-type", "text/event-stream")
        .body(body)
        .unwrap()
}

fn whole(protocol: Protocol, text: &str) -> Response {
    let body = match protocol {
        Protocol::OpenAi => json!({"id": "u", "object": "chat.completion", "choices": [
            {"index": 0, "message": {"role": "assistant", "content": text}, "finish_reason": "stop"}]}),
        Protocol::Anthropic => json!({"id": "m", "type": "message", "role": "assistant",
            "content": [{"type": "text", "text": text}], "stop_reason": "end_turn"}),
    };
    Json(body).into_response()
}

/// One SSE event as it goes on the wire.
fn event(protocol: Protocol, name: &str, data: Value) -> String {
    match protocol {
        Protocol::OpenAi => format!("data: {data}\n\n"),
        Protocol::Anthropic => format!("event: {name}\ndata: {data}\n\n"),
    }
}

fn delta(protocol: Protocol, text: &str) -> String {
    match protocol {
        Protocol::OpenAi => event(
            protocol,
            "",
            json!({"id": "u", "object": "chat.completion.chunk",
                "choices": [{"index": 0, "delta": {"content": text}, "finish_reason": null}]}),
        ),
        Protocol::Anthropic => event(
            protocol,
            "content_block_delta",
            json!({"type": "content_block_delta", "index": 0,
                "delta": {"type": "text_delta", "text": text}}),
        ),
    }
}

fn stream(protocol: Protocol, mode: Mode, tokens: Vec<String>) -> Response {
    let mut parts: Vec<String> = Vec::new();
    if protocol == Protocol::Anthropic {
        parts.push(event(
            protocol,
            "message_start",
            json!({"type": "message_start", "message": {"id": "m", "content": []}}),
        ));
        parts.push(event(
            protocol,
            "content_block_start",
            json!({"type": "content_block_start", "index": 0,
                "content_block": {"type": "text", "text": ""}}),
        ));
    }
    let (sent, tail) = match mode {
        Mode::CutAfter(n) | Mode::StallAfter(n) | Mode::MalformedAt(n) => {
            (n.min(tokens.len()), mode)
        }
        _ => (tokens.len(), mode),
    };
    parts.extend(tokens[..sent].iter().map(|t| delta(protocol, t)));
    enum End {
        Close,
        Reset,
        Stall,
    }
    let end = match tail {
        Mode::CutAfter(_) => End::Reset,
        Mode::StallAfter(_) => End::Stall,
        Mode::MalformedAt(_) => {
            parts.push("data: {\"choices\": [{\"delta\": {\"content\": \"oops\n\n".to_string());
            End::Close
        }
        Mode::NoFinalMarker => {
            parts.push(finish(protocol));
            End::Close
        }
        _ => {
            parts.push(finish(protocol));
            parts.push(match protocol {
                Protocol::OpenAi => "data: [DONE]\n\n".to_string(),
                Protocol::Anthropic => {
                    event(protocol, "message_stop", json!({"type": "message_stop"}))
                }
            });
            End::Close
        }
    };
    // Paced like a model, and a pause before the end: a reset discards what the
    // client has not read yet, and a cut is only a mid-stream cut if the tokens
    // before it arrived first.
    let head = futures::stream::iter(parts)
        .then(|part| async move {
            tokio::time::sleep(Duration::from_millis(2)).await;
            Ok::<_, std::io::Error>(Bytes::from(part))
        })
        .chain(futures::stream::once(async {
            tokio::time::sleep(Duration::from_millis(30)).await;
            Ok(Bytes::new())
        }));
    let body = match end {
        End::Close => Body::from_stream(head),
        End::Reset => Body::from_stream(head.chain(futures::stream::once(async {
            Err(std::io::Error::new(
                std::io::ErrorKind::ConnectionReset,
                "cut",
            ))
        }))),
        End::Stall => Body::from_stream(head.chain(futures::stream::pending())),
    };
    Response::builder()
        .header("content-type", "text/event-stream")
        .body(body)
        .unwrap()
}

/// The events that say the answer is complete, without the final marker.
fn finish(protocol: Protocol) -> String {
    match protocol {
        Protocol::OpenAi => event(
            protocol,
            "",
            json!({"id": "u", "object": "chat.completion.chunk",
                "choices": [{"index": 0, "delta": {}, "finish_reason": "stop"}]}),
        ),
        Protocol::Anthropic => {
            event(
                protocol,
                "content_block_stop",
                json!({"type": "content_block_stop", "index": 0}),
            ) + &event(
                protocol,
                "message_delta",
                json!({"type": "message_delta", "delta": {"stop_reason": "end_turn"}}),
            )
        }
    }
}
