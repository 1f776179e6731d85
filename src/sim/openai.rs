//! The simulated OpenAI Chat Completions endpoint: `tools`, `tool_choice`,
//! `parallel_tool_calls`, `response_format`, `stop`, `stream_options`; tool calls
//! as `message.tool_calls` or streamed `delta.tool_calls` fragments; `usage`, in a
//! last chunk with empty `choices` when asked for; every chunk padded with random
//! characters in `obfuscation` unless `stream_options.include_obfuscation` is
//! false, as OpenAI's are; errors in OpenAI's shape.

use super::model::{reply, Reply};
use super::{argument_pieces, fresh_id, paced, think, OfferedTool, SimRequest, SimState, ToolUse};
use crate::shared::{ChatTurn, Image, ImageDetail, ImageSource, ImageType, Role, ToolCall};
use axum::{
    extract::State,
    http::StatusCode,
    response::{sse::Event, IntoResponse, Response},
    Json,
};
use serde_json::{json, Value};
use std::collections::HashSet;
use std::sync::Arc;

fn error(message: &str, param: Option<&str>) -> Response {
    // OpenAI's code for a parameter the model does not take, beside its words.
    let code = message
        .starts_with("Unsupported parameter")
        .then_some("unsupported_parameter");
    (
        StatusCode::BAD_REQUEST,
        Json(
            json!({"error": {"message": message, "type": "invalid_request_error",
            "param": param, "code": code}}),
        ),
    )
        .into_response()
}

/// Whether `model` reasons before it answers, and so takes `reasoning_effort`
/// and refuses `max_tokens` for `max_completion_tokens`: OpenAI's o-series and
/// GPT-5 family.
fn reasons(model: &str) -> bool {
    model.starts_with('o') || model.starts_with("gpt-5")
}

/// Whether `model` can look at images: the text-only models a cascade may
/// hold (Groq's Llama 3) refuse image parts, as the real ones do.
fn sees_images(model: &str) -> bool {
    !model.starts_with("llama-3") && !model.starts_with("gpt-3.5")
}

/// A message's text and images; an error names what the real API would refuse.
fn content_of(content: &Value, sees_images: bool) -> Result<(String, Vec<Image>), String> {
    match content {
        Value::String(s) => Ok((s.clone(), Vec::new())),
        Value::Array(parts) => {
            let mut text = String::new();
            let mut images = Vec::new();
            for part in parts {
                match part.get("type").and_then(Value::as_str) {
                    Some("text") => text.push_str(
                        part.get("text")
                            .and_then(Value::as_str)
                            .ok_or("Missing required parameter: 'text'.")?,
                    ),
                    Some("image_url") if !sees_images => {
                        return Err(
                            "Invalid content type. image_url is only supported by certain models."
                                .into(),
                        )
                    }
                    Some("image_url") => images.push(image(part, text.len())?),
                    other => {
                        return Err(format!(
                        "Invalid value: {other:?}. Supported values are: 'text' and 'image_url'."
                    ))
                    }
                }
            }
            Ok((text, images))
        }
        _ => Err("Invalid type for content: expected a string or an array".into()),
    }
}

/// An `image_url` part, checked as OpenAI checks it before its model looks.
fn image(part: &Value, at: usize) -> Result<Image, String> {
    let url = part["image_url"]["url"]
        .as_str()
        .ok_or("Missing required parameter: 'image_url.url'.")?;
    let detail = match part["image_url"].get("detail") {
        None | Some(Value::Null) => None,
        Some(d) => Some(
            d.as_str()
                .and_then(|d| d.parse::<ImageDetail>().ok())
                .ok_or("Invalid value for 'detail': expected 'auto', 'low' or 'high'.")?,
        ),
    };
    let source = if let Some(data) = url.strip_prefix("data:") {
        let (head, base64) = data.split_once(',').ok_or("Invalid image URL.")?;
        let declared = head.strip_suffix(";base64").ok_or("Invalid image URL.")?;
        let media_type = declared
            .parse::<ImageType>()
            .ok()
            .and_then(|_| super::inline_image(base64))
            .ok_or("You uploaded an unsupported image. Please make sure your image is valid and of one of the following formats: ['png', 'jpeg', 'gif', 'webp'].")?;
        ImageSource::Data {
            media_type,
            base64: base64.to_string(),
        }
    } else if super::fetchable(url) {
        ImageSource::Url {
            url: url.to_string(),
        }
    } else {
        return Err("Invalid image URL: expected a valid URL or a base64 data URL.".into());
    };
    Ok(Image { source, detail, at })
}

fn turns(
    messages: &[Value],
    sees_images: bool,
) -> Result<(String, Vec<ChatTurn>), (String, String)> {
    let mut system = String::new();
    let mut turns = Vec::new();
    let mut called = HashSet::new();
    for (i, m) in messages.iter().enumerate() {
        let at = |field: &str| format!("messages[{i}].{field}");
        let role = match m.get("role").and_then(Value::as_str) {
            Some("system") | Some("developer") => Role::System,
            Some("user") => Role::User,
            Some("assistant") => Role::Assistant,
            Some("tool") => Role::Tool,
            other => return Err((format!("Invalid value for 'role': {other:?}"), at("role"))),
        };
        let (content, images) = match m.get("content") {
            None | Some(Value::Null) if role == Role::Assistant => (String::new(), Vec::new()),
            None | Some(Value::Null) => {
                return Err((
                    format!("Missing required parameter: '{}'.", at("content")),
                    at("content"),
                ))
            }
            Some(content) => content_of(content, sees_images).map_err(|e| (e, at("content")))?,
        };
        if !images.is_empty() && role != Role::User {
            return Err((
                format!("Image URLs are only allowed for messages with role 'user', but this message with role '{}' contains an image URL.", role.as_str()),
                at("content"),
            ));
        }
        let mut turn = ChatTurn::new(role, content);
        turn.images = images;
        for call in m
            .get("tool_calls")
            .and_then(Value::as_array)
            .into_iter()
            .flatten()
        {
            let function = &call["function"];
            let (Some(id), Some(name), Some(arguments)) = (
                call["id"].as_str(),
                function["name"].as_str(),
                function["arguments"].as_str(),
            ) else {
                return Err(("Invalid tool call".into(), at("tool_calls")));
            };
            called.insert(id.to_string());
            turn.tool_calls.push(ToolCall {
                id: id.into(),
                name: name.into(),
                arguments: arguments.into(),
            });
        }
        if role == Role::Tool {
            let id = m
                .get("tool_call_id")
                .and_then(Value::as_str)
                .unwrap_or_default();
            if !called.contains(id) {
                return Err((
                    "Invalid parameter: messages with role 'tool' must be a response to a preceeding message with 'tool_calls'.".into(),
                    at("role"),
                ));
            }
            turn.tool_call_id = Some(id.to_string());
        }
        if role == Role::System {
            system.push_str(&turn.content);
        } else {
            turns.push(turn);
        }
    }
    Ok((system, turns))
}

fn decode(body: &Value) -> Result<(SimRequest, StreamOptions), (String, String)> {
    let model = body
        .get("model")
        .and_then(Value::as_str)
        .ok_or((
            "you must provide a model parameter".to_string(),
            "model".to_string(),
        ))?
        .to_string();
    let messages = body
        .get("messages")
        .and_then(Value::as_array)
        .filter(|m| !m.is_empty())
        .ok_or((
            "'messages' must contain at least one message".to_string(),
            "messages".to_string(),
        ))?;
    let (system, turns) = turns(messages, sees_images(&model))?;
    let tools: Vec<OfferedTool> = body
        .get("tools")
        .and_then(Value::as_array)
        .into_iter()
        .flatten()
        .map(|t| OfferedTool {
            name: t["function"]["name"]
                .as_str()
                .unwrap_or_default()
                .to_string(),
            description: t["function"]["description"]
                .as_str()
                .unwrap_or_default()
                .to_string(),
            parameters: t["function"]["parameters"].clone(),
        })
        .collect();
    if body.get("parallel_tool_calls").is_some() && tools.is_empty() {
        return Err((
            "Invalid value for 'parallel_tool_calls': only allowed when 'tools' are specified."
                .into(),
            "parallel_tool_calls".into(),
        ));
    }
    let tool_use = match body.get("tool_choice") {
        None => ToolUse::Auto,
        Some(_) if tools.is_empty() => {
            return Err((
                "Invalid value for 'tool_choice': 'tool_choice' is only allowed when 'tools' are specified.".into(),
                "tool_choice".into(),
            ))
        }
        Some(Value::String(s)) if s == "none" => ToolUse::Never,
        Some(Value::String(s)) if s == "required" => ToolUse::Required,
        Some(Value::String(s)) if s == "auto" => ToolUse::Auto,
        Some(choice) => match choice["function"]["name"].as_str() {
            Some(name) if tools.iter().any(|t| t.name == name) => ToolUse::Named(name.into()),
            _ => return Err(("Invalid value for 'tool_choice'.".into(), "tool_choice".into())),
        },
    };
    let json = match body["response_format"]["type"].as_str() {
        Some("json_object") => Some(json!({"type": "object"})),
        Some("json_schema") => Some(body["response_format"]["json_schema"]["schema"].clone()),
        _ => None,
    };
    let stop = match body.get("stop") {
        Some(Value::String(s)) => vec![s.clone()],
        Some(Value::Array(items)) => items
            .iter()
            .filter_map(Value::as_str)
            .map(str::to_string)
            .collect(),
        _ => Vec::new(),
    };
    let given = |name: &str| body.get(name).filter(|v| !v.is_null());
    if given("reasoning_effort").is_some() && !reasons(&model) {
        return Err((
            "Unsupported parameter: 'reasoning_effort' is not supported with this model.".into(),
            "reasoning_effort".into(),
        ));
    }
    // GPT-5's `verbosity`; earlier models refuse it.
    if given("verbosity").is_some() && !model.starts_with("gpt-5") {
        return Err((
            "Unsupported parameter: 'verbosity' is not supported with this model.".into(),
            "verbosity".into(),
        ));
    }
    if reasons(&model) && given("max_tokens").is_some() {
        return Err((
            "Unsupported parameter: 'max_tokens' is not supported with this model. Use 'max_completion_tokens' instead.".into(),
            "max_tokens".into(),
        ));
    }
    let cap = given("max_completion_tokens").or(given("max_tokens"));
    let max_tokens = match cap.and_then(Value::as_u64) {
        Some(0) => return Err(("max_tokens must be at least 1".into(), "max_tokens".into())),
        Some(n) => n as usize,
        None => usize::MAX,
    };
    let stream = body.get("stream").and_then(Value::as_bool).unwrap_or(false);
    if body.get("stream_options").is_some() && !stream {
        return Err((
            "The 'stream_options' parameter is only allowed when 'stream' is enabled.".into(),
            "stream_options".into(),
        ));
    }
    let options = StreamOptions {
        include_usage: body["stream_options"]["include_usage"].as_bool() == Some(true),
        // On unless turned off, as OpenAI does.
        include_obfuscation: body["stream_options"]["include_obfuscation"].as_bool() != Some(false),
    };
    Ok((
        SimRequest {
            model,
            system,
            turns,
            max_tokens,
            stream,
            tools,
            tool_use,
            parallel: body.get("parallel_tool_calls").and_then(Value::as_bool) != Some(false),
            json,
            stop,
        },
        options,
    ))
}

/// What `stream_options` asked of a stream.
struct StreamOptions {
    /// A last chunk with the usage (and `"usage": null` on the others).
    include_usage: bool,
    /// OpenAI's stream obfuscation: every chunk padded with random characters in
    /// an `obfuscation` field, so its size does not give the text's away.
    include_obfuscation: bool,
}

/// Random characters that bring a chunk carrying `text` to a common size.
fn padding(text: &str) -> String {
    let id = uuid::Uuid::new_v4().simple().to_string();
    id[..(16 - text.len().min(15)).min(id.len())].to_string()
}

fn usage(prompt: usize, completion: usize) -> Value {
    json!({"prompt_tokens": prompt, "completion_tokens": completion, "total_tokens": prompt + completion})
}

/// `POST /v1/chat/completions`.
pub(super) async fn completions(
    State(state): State<Arc<SimState>>,
    body: axum::body::Bytes,
) -> Response {
    let parsed = match serde_json::from_slice::<Value>(&body) {
        Ok(body) => decode(&body),
        Err(e) => Err((
            format!("We could not parse the JSON body of your request: {e}"),
            String::new(),
        )),
    };
    let (request, options) = match parsed {
        Ok(decoded) => decoded,
        Err((message, param)) => {
            return error(
                &message,
                Some(&param).filter(|p| !p.is_empty()).map(|p| p.as_str()),
            )
        }
    };
    let id = format!("chatcmpl-{}", uuid::Uuid::new_v4().simple());
    let created = crate::clock::unix_ms_now() / 1000;
    let prompt_tokens = request.prompt_tokens();
    let reply = reply(&request, &|| fresh_id("call_"));
    let fingerprint = "fp_chaosai_sim";
    if !request.stream {
        let (message, finish, completion) = match &reply {
            Reply::Text {
                tokens, truncated, ..
            } => (
                json!({"role": "assistant", "content": tokens.concat(), "refusal": null}),
                if *truncated { "length" } else { "stop" },
                tokens.len(),
            ),
            Reply::Calls(calls) => (
                json!({"role": "assistant", "content": null, "refusal": null,
                    "tool_calls": calls.iter().map(|c| json!({"id": c.id, "type": "function",
                        "function": {"name": c.name, "arguments": c.arguments}})).collect::<Vec<_>>()}),
                "tool_calls",
                calls
                    .iter()
                    .map(|c| argument_pieces(&c.arguments).len())
                    .sum(),
            ),
        };
        think(state.pacing, completion).await;
        return Json(json!({
            "id": id, "object": "chat.completion", "created": created, "model": request.model,
            "system_fingerprint": fingerprint,
            "choices": [{"index": 0, "message": message, "logprobs": null, "finish_reason": finish}],
            "usage": usage(prompt_tokens, completion),
        }))
        .into_response();
    }
    let chunk = |delta: Value, finish: Option<&str>| {
        let padding = options
            .include_obfuscation
            .then(|| padding(delta["content"].as_str().unwrap_or_default()));
        let mut chunk = json!({"id": id, "object": "chat.completion.chunk", "created": created,
            "model": request.model, "system_fingerprint": fingerprint,
            "choices": [{"index": 0, "delta": delta, "logprobs": null, "finish_reason": finish}]});
        if options.include_usage {
            chunk["usage"] = Value::Null;
        }
        if let Some(padding) = padding {
            chunk["obfuscation"] = Value::String(padding);
        }
        Event::default().data(chunk.to_string())
    };
    let mut events = Vec::new();
    let (finish, completion) = match reply {
        Reply::Text {
            tokens, truncated, ..
        } => {
            events.push(chunk(
                json!({"role": "assistant", "content": "", "refusal": null}),
                None,
            ));
            let count = tokens.len();
            events.extend(
                tokens
                    .into_iter()
                    .map(|text| chunk(json!({"content": text}), None)),
            );
            (if truncated { "length" } else { "stop" }, count)
        }
        Reply::Calls(calls) => {
            let mut count = 0;
            for (index, call) in calls.iter().enumerate() {
                let opening = json!({"index": index, "id": call.id, "type": "function",
                    "function": {"name": call.name, "arguments": ""}});
                let delta = if index == 0 {
                    json!({"role": "assistant", "content": null, "tool_calls": [opening]})
                } else {
                    json!({"tool_calls": [opening]})
                };
                events.push(chunk(delta, None));
                for piece in argument_pieces(&call.arguments) {
                    count += 1;
                    events.push(chunk(
                        json!({"tool_calls": [{"index": index, "function": {"arguments": piece}}]}),
                        None,
                    ));
                }
            }
            ("tool_calls", count)
        }
    };
    events.push(chunk(json!({}), Some(finish)));
    if options.include_usage {
        events.push(
            Event::default().data(
                json!({"id": id, "object": "chat.completion.chunk", "created": created,
                "model": request.model, "system_fingerprint": fingerprint, "choices": [],
                "usage": usage(prompt_tokens, completion)})
                .to_string(),
            ),
        );
    }
    events.push(Event::default().data("[DONE]"));
    paced(state.pacing, events).into_response()
}
