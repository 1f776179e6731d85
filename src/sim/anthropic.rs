//! The simulated Anthropic Messages endpoint: `tools` with `input_schema`,
//! `tool_choice` (`auto`, `any`, `tool`, `none`, `disable_parallel_tool_use`),
//! `tool_use` and `tool_result` blocks checked for pairing as the real API checks
//! them, `stop_sequences`; streams `content_block_*` events with `text_delta` and
//! `input_json_delta`; `usage` with `input_tokens` and `output_tokens`.

use super::model::{reply, Reply};
use super::{argument_pieces, fresh_id, paced, think, OfferedTool, SimRequest, SimState, ToolUse};
use crate::shared::{ChatTurn, Image, ImageSource, ImageType, Role, ToolCall};
use axum::{
    extract::State,
    http::{HeaderMap, StatusCode},
    response::{sse::Event, IntoResponse, Response},
    Json,
};
use serde_json::{json, Value};
use std::sync::Arc;

/// What a non-forced call says before it calls, as Claude does.
const PREAMBLE: &str = "Let me look that up for you.";

fn error(message: &str) -> Response {
    (
        StatusCode::BAD_REQUEST,
        Json(json!({"type": "error", "error": {"type": "invalid_request_error", "message": message}})),
    )
        .into_response()
}

fn blocks_text(content: &Value) -> Option<String> {
    match content {
        Value::String(s) => Some(s.clone()),
        Value::Array(blocks) => Some(
            blocks
                .iter()
                .filter(|b| b["type"] == "text")
                .filter_map(|b| b["text"].as_str())
                .collect(),
        ),
        _ => None,
    }
}

/// An image block's source, checked as Anthropic checks it: one of four
/// formats, the bytes of the format declared, or an http(s) address.
fn image(source: &Value, at: usize) -> Result<Image, String> {
    let source = match source["type"].as_str() {
        Some("base64") => {
            let declared = source["media_type"]
                .as_str()
                .and_then(|t| t.parse::<ImageType>().ok())
                .ok_or("media_type: Input should be 'image/jpeg', 'image/png', 'image/gif' or 'image/webp'")?;
            let data = source["data"].as_str().ok_or("data: Field required")?;
            match super::inline_image(data) {
                Some(found) if found == declared => {}
                _ => {
                    return Err(format!(
                        "Image does not match the provided media type {declared}"
                    ))
                }
            }
            ImageSource::Data {
                media_type: declared,
                base64: data.to_string(),
            }
        }
        Some("url") => match source["url"].as_str() {
            Some(url) if super::fetchable(url) => ImageSource::Url {
                url: url.to_string(),
            },
            _ => return Err("url: Input should be a valid URL".into()),
        },
        other => return Err(format!("type: Input tag {other:?} found using 'type' does not match any of the expected tags: 'base64', 'url'")),
    };
    Ok(Image {
        source,
        detail: None,
        at,
    })
}

/// The conversation as turns; tool results become `tool` turns. Checks that
/// every `tool_use` is answered by a `tool_result` in the next message and that
/// every result answers a call of the message before.
fn turns(messages: &[Value]) -> Result<Vec<ChatTurn>, String> {
    let mut turns: Vec<ChatTurn> = Vec::new();
    let mut open_calls: Vec<String> = Vec::new();
    for (i, m) in messages.iter().enumerate() {
        let role = match m["role"].as_str() {
            Some("user") => Role::User,
            Some("assistant") => Role::Assistant,
            other => {
                return Err(format!(
                    "messages.{i}.role: Input should be 'user' or 'assistant', got {other:?}"
                ))
            }
        };
        let content = &m["content"];
        if content.is_null() {
            return Err(format!("messages.{i}.content: Field required"));
        }
        let blocks: Vec<Value> = match content {
            Value::String(s) => vec![json!({"type": "text", "text": s})],
            Value::Array(b) => b.clone(),
            _ => {
                return Err(format!(
                    "messages.{i}.content: Input should be a valid list"
                ))
            }
        };
        if blocks.is_empty() && !(role == Role::Assistant && i + 1 == messages.len()) {
            return Err(format!(
                "messages.{i}: all messages must have non-empty content except for the optional final assistant message"
            ));
        }
        let mut answered = Vec::new();
        let mut turn = ChatTurn::new(role, String::new());
        for (n, block) in blocks.iter().enumerate() {
            match (role, block["type"].as_str()) {
                (_, Some("text")) => {
                    let text = block["text"].as_str().unwrap_or_default();
                    if text.is_empty() {
                        return Err(format!(
                            "messages.{i}.content.{n}.text: text content blocks must be non-empty"
                        ));
                    }
                    if text.trim().is_empty() {
                        return Err(
                            "messages: text content blocks must contain non-whitespace text".into(),
                        );
                    }
                    turn.content.push_str(text);
                }
                (Role::User, Some("image")) => {
                    let image = image(&block["source"], turn.content.len())
                        .map_err(|why| format!("messages.{i}.content.{n}.image.source: {why}"))?;
                    turn.images.push(image);
                }
                (Role::Assistant, Some("tool_use")) => {
                    let id = block["id"].as_str().unwrap_or_default();
                    let valid_id = !id.is_empty()
                        && id
                            .bytes()
                            .all(|b| b.is_ascii_alphanumeric() || b == b'_' || b == b'-');
                    if !valid_id || !block["input"].is_object() {
                        return Err(format!("messages.{i}.content.{n}: invalid tool_use block"));
                    }
                    turn.tool_calls.push(ToolCall {
                        id: id.into(),
                        name: block["name"].as_str().unwrap_or_default().into(),
                        arguments: block["input"].to_string(),
                    });
                }
                (Role::User, Some("tool_result")) => {
                    let id = block["tool_use_id"]
                        .as_str()
                        .unwrap_or_default()
                        .to_string();
                    if !open_calls.contains(&id) {
                        return Err(format!(
                            "messages.{i}.content.{n}: unexpected `tool_use_id` found in `tool_result` blocks: {id}. Each `tool_result` block must have a corresponding `tool_use` block in the previous message."
                        ));
                    }
                    let mut result = ChatTurn::new(
                        Role::Tool,
                        blocks_text(&block["content"]).unwrap_or_default(),
                    );
                    result.tool_call_id = Some(id.clone());
                    answered.push(id);
                    turns.push(result);
                }
                (_, kind) => {
                    return Err(format!(
                        "messages.{i}.content.{n}: unexpected block type {kind:?}"
                    ))
                }
            }
        }
        if let Some(missing) = open_calls.iter().find(|id| !answered.contains(id)) {
            return Err(format!(
                "messages.{i}: `tool_use` ids were found without `tool_result` blocks immediately after: {missing}"
            ));
        }
        open_calls = turn.tool_calls.iter().map(|c| c.id.clone()).collect();
        if !turn.content.is_empty() || !turn.tool_calls.is_empty() || !turn.images.is_empty() {
            turns.push(turn);
        }
    }
    Ok(turns)
}

fn decode(body: &Value) -> Result<SimRequest, String> {
    let model = body["model"]
        .as_str()
        .ok_or("model: Field required")?
        .to_string();
    let max_tokens = match body["max_tokens"].as_u64() {
        Some(0) => return Err("max_tokens: must be at least 1".into()),
        Some(n) => n as usize,
        None => return Err("max_tokens: Field required".into()),
    };
    if body["temperature"]
        .as_f64()
        .is_some_and(|t| !(0.0..=1.0).contains(&t))
    {
        return Err("temperature: Input should be less than or equal to 1".into());
    }
    let stops = body["stop_sequences"].as_array().into_iter().flatten();
    if stops
        .filter_map(Value::as_str)
        .any(|stop| stop.trim().is_empty())
    {
        return Err("stop_sequences: each stop sequence must contain non-whitespace".into());
    }
    let messages = body["messages"]
        .as_array()
        .filter(|m| !m.is_empty())
        .ok_or("messages: at least one message is required")?;
    let tools: Vec<OfferedTool> = body["tools"]
        .as_array()
        .into_iter()
        .flatten()
        .map(|t| OfferedTool {
            name: t["name"].as_str().unwrap_or_default().into(),
            description: t["description"].as_str().unwrap_or_default().into(),
            parameters: t["input_schema"].clone(),
        })
        .collect();
    if tools
        .iter()
        .any(|t| !t.parameters.is_object() || t.name.is_empty())
    {
        return Err("tools: each tool needs a name and an input_schema".into());
    }
    if let Some(i) = tools
        .iter()
        .position(|t| t.parameters["type"].as_str() != Some("object"))
    {
        return Err(format!(
            "tools.{i}.custom.input_schema.type: Field required"
        ));
    }
    let choice = &body["tool_choice"];
    if !choice.is_null() && tools.is_empty() {
        return Err("tool_choice: may only be specified while providing tools".into());
    }
    let tool_use = match choice["type"].as_str() {
        None | Some("auto") => ToolUse::Auto,
        Some("any") => ToolUse::Required,
        Some("none") => ToolUse::Never,
        Some("tool") => match choice["name"].as_str() {
            Some(name) if tools.iter().any(|t| t.name == name) => ToolUse::Named(name.into()),
            _ => return Err("tool_choice.name: no tool of that name".into()),
        },
        Some(other) => return Err(format!("tool_choice.type: unexpected {other:?}")),
    };
    Ok(SimRequest {
        model,
        system: blocks_text(&body["system"]).unwrap_or_default(),
        turns: turns(messages)?,
        max_tokens,
        stream: body["stream"].as_bool().unwrap_or(false),
        tools,
        tool_use,
        parallel: choice["disable_parallel_tool_use"].as_bool() != Some(true),
        json: None,
        stop: body["stop_sequences"]
            .as_array()
            .into_iter()
            .flatten()
            .filter_map(Value::as_str)
            .map(str::to_string)
            .collect(),
    })
}

/// `POST /v1/messages`.
pub(super) async fn messages(
    State(state): State<Arc<SimState>>,
    headers: HeaderMap,
    body: axum::body::Bytes,
) -> Response {
    if !headers.contains_key("anthropic-version") {
        return error("anthropic-version: header is required");
    }
    let request = match serde_json::from_slice::<Value>(&body)
        .map_err(|e| format!("invalid JSON body: {e}"))
        .and_then(|body| decode(&body))
    {
        Ok(request) => request,
        Err(message) => return error(&message),
    };
    let id = format!("msg_{}", uuid::Uuid::new_v4().simple());
    let input_tokens = request.prompt_tokens();
    let reply = reply(&request, &|| fresh_id("toolu_"));
    // Claude says what it is about to do unless it was made to call.
    let preamble = matches!(reply, Reply::Calls(_)) && request.tool_use == ToolUse::Auto;
    let (stop_reason, output_tokens) = match &reply {
        Reply::Text {
            tokens,
            truncated,
            stopped,
        } => (
            if *truncated {
                "max_tokens"
            } else if *stopped {
                "stop_sequence"
            } else {
                "end_turn"
            },
            tokens.len(),
        ),
        Reply::Calls(calls) => (
            "tool_use",
            calls
                .iter()
                .map(|c| argument_pieces(&c.arguments).len())
                .sum::<usize>()
                + if preamble {
                    crate::knowledge::tokens(PREAMBLE).len()
                } else {
                    0
                },
        ),
    };
    let stop_sequence = (stop_reason == "stop_sequence")
        .then(|| request.stop.first().cloned())
        .flatten();
    let usage = json!({"input_tokens": input_tokens, "output_tokens": output_tokens});
    if !request.stream {
        think(state.pacing, output_tokens).await;
        let content: Vec<Value> = match &reply {
            Reply::Text { tokens, .. } => vec![json!({"type": "text", "text": tokens.concat()})],
            Reply::Calls(calls) => preamble
                .then(|| json!({"type": "text", "text": PREAMBLE}))
                .into_iter()
                .chain(calls.iter().map(|c| {
                    json!({"type": "tool_use", "id": c.id, "name": c.name,
                        "input": serde_json::from_str::<Value>(&c.arguments).unwrap_or_default()})
                }))
                .collect(),
        };
        return Json(json!({
            "id": id, "type": "message", "role": "assistant", "model": request.model,
            "content": content, "stop_reason": stop_reason, "stop_sequence": stop_sequence,
            "usage": usage,
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
        event("ping", json!({"type": "ping"})),
    ];
    let text_block = |index: usize, tokens: Vec<String>, events: &mut Vec<Event>| {
        events.push(event(
            "content_block_start",
            json!({"type": "content_block_start", "index": index,
                "content_block": {"type": "text", "text": ""}}),
        ));
        events.extend(tokens.into_iter().map(|text| {
            event(
                "content_block_delta",
                json!({"type": "content_block_delta", "index": index,
                    "delta": {"type": "text_delta", "text": text}}),
            )
        }));
        events.push(event(
            "content_block_stop",
            json!({"type": "content_block_stop", "index": index}),
        ));
    };
    match reply {
        Reply::Text { tokens, .. } => text_block(0, tokens, &mut events),
        Reply::Calls(calls) => {
            let first = usize::from(preamble);
            if preamble {
                text_block(0, crate::knowledge::tokens(PREAMBLE), &mut events);
            }
            for (n, call) in calls.iter().enumerate() {
                let index = first + n;
                events.push(event(
                    "content_block_start",
                    json!({"type": "content_block_start", "index": index,
                        "content_block": {"type": "tool_use", "id": call.id, "name": call.name, "input": {}}}),
                ));
                events.extend(argument_pieces(&call.arguments).into_iter().map(|piece| {
                    event(
                        "content_block_delta",
                        json!({"type": "content_block_delta", "index": index,
                            "delta": {"type": "input_json_delta", "partial_json": piece}}),
                    )
                }));
                events.push(event(
                    "content_block_stop",
                    json!({"type": "content_block_stop", "index": index}),
                ));
            }
        }
    }
    events.push(event(
        "message_delta",
        json!({"type": "message_delta",
        "delta": {"stop_reason": stop_reason, "stop_sequence": stop_sequence},
        "usage": {"output_tokens": output_tokens}}),
    ));
    events.push(event("message_stop", json!({"type": "message_stop"})));
    paced(state.pacing, events).into_response()
}
