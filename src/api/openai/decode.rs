//! Reading a Chat Completions request body the way OpenAI reads it: every field
//! the bots send is either used, dropped where dropping changes nothing, or
//! refused with a 400 naming it. Unknown fields are ignored, as OpenAI-compatible
//! servers commonly do; known ones that would change the answer are never
//! silently ignored.

use super::super::error::ApiError;
use super::{image, CASCADE_MODEL};
use crate::gateway::provider::{
    Options, ReasoningEffort, ResponseFormat, Sampling, Tool, ToolChoice, Verbosity,
};
use crate::gateway::GatewayRequest;
use crate::shared::{ChatTurn, Image, Role, Surface, ToolCall};
use serde_json::{Map, Value};

/// A decoded chat completion request.
pub(super) struct ApiRequest {
    /// Whether the answer is streamed.
    pub stream: bool,
    /// Whether a stream ends with a usage chunk (`stream_options.include_usage`).
    pub include_usage: bool,
    /// The request in the gateway's terms.
    pub gateway: GatewayRequest,
}

/// Fields that would change the answer in ways this gateway does not
/// implement: refused, never ignored.
const REFUSED: &[(&str, &str)] = &[
    ("functions", "functions is deprecated; send tools instead"),
    (
        "function_call",
        "function_call is deprecated; send tool_choice instead",
    ),
    (
        "audio",
        "audio output is not supported; this gateway answers in text",
    ),
    (
        "web_search_options",
        "web search is not supported by this gateway",
    ),
];

pub(super) fn invalid(param: &str, message: impl Into<String>) -> ApiError {
    ApiError::invalid(Some(param), message)
}

/// Reads one optional field as `T` with `read`; `null` is absent.
pub(super) fn field<'a, T>(
    body: &'a Map<String, Value>,
    name: &str,
    what: &str,
    read: impl FnOnce(&'a Value) -> Option<T>,
) -> Result<Option<T>, ApiError> {
    match body.get(name) {
        None | Some(Value::Null) => Ok(None),
        Some(value) => read(value)
            .map(Some)
            .ok_or_else(|| invalid(name, format!("{name} must be {what}"))),
    }
}

pub(super) fn number(body: &Map<String, Value>, name: &str) -> Result<Option<f32>, ApiError> {
    field(body, name, "a number", |v| v.as_f64().map(|n| n as f32))
}

/// A turn's text and, from a customer, the images shown with it.
fn content_parts(
    content: &Value,
    index: usize,
    role: Role,
) -> Result<(String, Vec<Image>), ApiError> {
    let param = format!("messages[{index}].content");
    match content {
        Value::String(s) => Ok((s.clone(), Vec::new())),
        Value::Array(parts) => {
            let mut text = String::new();
            let mut images = Vec::new();
            for (n, part) in parts.iter().enumerate() {
                let part_param = format!("{param}[{n}]");
                match part.get("type").and_then(Value::as_str) {
                    Some("text") | Some("refusal") => {
                        let key = if part.get("text").is_some() { "text" } else { "refusal" };
                        match part.get(key) {
                            Some(Value::String(t)) => text.push_str(t),
                            _ => {
                                return Err(invalid(
                                    &part_param,
                                    format!("{part_param}.{key} must be a string"),
                                ))
                            }
                        }
                    }
                    // As OpenAI has it: only the customer shows pictures.
                    Some("image_url") if role != Role::User => {
                        return Err(invalid(
                            &part_param,
                            format!("{part_param}: image_url parts are only allowed in user messages, not {}", role.as_str()),
                        ))
                    }
                    Some("image_url") => images.push(image::read(part, &part_param, text.len())?),
                    Some(kind @ ("input_audio" | "file")) => {
                        return Err(invalid(
                            &part_param,
                            format!("{part_param}: {kind} parts are not supported; this gateway's providers are asked in text and images only"),
                        ))
                    }
                    _ => {
                        return Err(invalid(
                            &part_param,
                            format!("{part_param} must be a text part ({{\"type\": \"text\", \"text\": …}}) or an image_url part"),
                        ))
                    }
                }
            }
            Ok((text, images))
        }
        _ => Err(invalid(
            &param,
            format!("{param} must be a string or an array of content parts"),
        )),
    }
}

fn tool_calls(message: &Value, index: usize) -> Result<Vec<ToolCall>, ApiError> {
    let param = format!("messages[{index}].tool_calls");
    let calls = match message.get("tool_calls") {
        None | Some(Value::Null) => return Ok(Vec::new()),
        Some(Value::Array(calls)) => calls,
        Some(_) => return Err(invalid(&param, format!("{param} must be an array"))),
    };
    calls
        .iter()
        .enumerate()
        .map(|(n, call)| {
            let at = format!("{param}[{n}]");
            let id = call.get("id").and_then(Value::as_str);
            let function = call.get("function");
            let name = function.and_then(|f| f.get("name")).and_then(Value::as_str);
            let arguments = function.and_then(|f| f.get("arguments"));
            match (id, name, arguments) {
                (None, _, _) => Err(invalid(
                    &format!("{at}.id"),
                    format!("{at}.id must be a string"),
                )),
                (_, None, _) => Err(invalid(
                    &format!("{at}.function.name"),
                    format!("{at}.function.name must be a string"),
                )),
                (Some(id), Some(name), Some(Value::String(arguments))) => Ok(ToolCall {
                    id: id.to_string(),
                    name: name.to_string(),
                    arguments: arguments.clone(),
                }),
                _ => Err(invalid(
                    &format!("{at}.function.arguments"),
                    format!("{at}.function.arguments must be a JSON text (a string)"),
                )),
            }
        })
        .collect()
}

fn turn(message: &Value, index: usize) -> Result<ChatTurn, ApiError> {
    let param = format!("messages[{index}].role");
    let role = match message.get("role").and_then(Value::as_str) {
        Some("system") | Some("developer") => Role::System,
        Some("user") => Role::User,
        Some("assistant") => Role::Assistant,
        Some("tool") => Role::Tool,
        Some(other) => {
            return Err(invalid(
                &param,
                format!("{param}: unknown role {other:?}; expected system, developer, user, assistant or tool"),
            ))
        }
        None => return Err(invalid(&param, format!("{param} is required"))),
    };
    let (content, images) = match message.get("content") {
        // An assistant turn that only calls tools has no content.
        None | Some(Value::Null) if role == Role::Assistant => (String::new(), Vec::new()),
        None | Some(Value::Null) => {
            let param = format!("messages[{index}].content");
            return Err(invalid(&param, format!("{param} is required")));
        }
        Some(content) => content_parts(content, index, role)?,
    };
    let mut turn = ChatTurn::new(role, content);
    turn.images = images;
    turn.tool_calls = tool_calls(message, index)?;
    if !turn.tool_calls.is_empty() && role != Role::Assistant {
        let param = format!("messages[{index}].tool_calls");
        return Err(invalid(
            &param,
            format!("{param}: only assistant messages call tools"),
        ));
    }
    if role == Role::Tool {
        let param = format!("messages[{index}].tool_call_id");
        turn.tool_call_id = Some(
            message
                .get("tool_call_id")
                .and_then(Value::as_str)
                .ok_or_else(|| invalid(&param, format!("{param} is required for a tool message")))?
                .to_string(),
        );
    }
    Ok(turn)
}

/// A function tool from the object that holds its `name`, `description` and
/// `parameters` (`tools[i].function` in Chat Completions, `tools[i]` itself in
/// the Responses API); `at` names that object in errors.
pub(super) fn function_tool(spec: &Value, at: &str) -> Result<Tool, ApiError> {
    let name = spec
        .get("name")
        .and_then(Value::as_str)
        .ok_or_else(|| invalid(&format!("{at}.name"), format!("{at}.name must be a string")))?;
    let description = match spec.get("description") {
        None | Some(Value::Null) => None,
        Some(Value::String(d)) => Some(d.clone()),
        Some(_) => {
            return Err(invalid(
                &format!("{at}.description"),
                format!("{at}.description must be a string"),
            ))
        }
    };
    Ok(Tool {
        name: name.to_string(),
        description,
        // A function without parameters takes none.
        parameters: match spec.get("parameters") {
            None | Some(Value::Null) => serde_json::json!({"type": "object", "properties": {}}),
            Some(parameters) => parameters.clone(),
        },
    })
}

/// The `tools` list: function tools only, each read from the object `spec`
/// finds in it (named `at` in errors).
pub(super) fn function_tools(
    body: &Map<String, Value>,
    spec: impl Fn(&Value, &str) -> Result<(Value, String), ApiError>,
) -> Result<Vec<Tool>, ApiError> {
    let Some(list) = field(body, "tools", "an array", Value::as_array)? else {
        return Ok(Vec::new());
    };
    list.iter()
        .enumerate()
        .map(|(index, tool)| {
            let at = format!("tools[{index}]");
            if tool.get("type").and_then(Value::as_str) != Some("function") {
                return Err(invalid(
                    &format!("{at}.type"),
                    format!("{at}.type must be \"function\"; other tool types (built-in web search, file search, …) are not supported"),
                ));
            }
            let (spec, at) = spec(tool, &at)?;
            function_tool(&spec, &at)
        })
        .collect()
}

/// Chat Completions' tools: each function under `function`.
fn tools(body: &Map<String, Value>) -> Result<Vec<Tool>, ApiError> {
    function_tools(body, |tool, at| {
        let function = tool
            .get("function")
            .filter(|f| f.is_object())
            .ok_or_else(|| {
                invalid(
                    &format!("{at}.function"),
                    format!("{at}.function must be an object"),
                )
            })?;
        Ok((function.clone(), format!("{at}.function")))
    })
}

/// `tool_choice`: a mode, or the function `named` finds in the object form
/// (`what` spells the forms out in the error).
pub(super) fn tool_choice_of(
    body: &Map<String, Value>,
    what: &str,
    named: impl Fn(&Map<String, Value>) -> Option<&str>,
) -> Result<Option<ToolChoice>, ApiError> {
    field(body, "tool_choice", what, |value| match value {
        Value::String(s) => match s.as_str() {
            "auto" => Some(ToolChoice::Auto),
            "none" => Some(ToolChoice::None),
            "required" => Some(ToolChoice::Required),
            _ => None,
        },
        Value::Object(choice) if choice.get("type").and_then(Value::as_str) == Some("function") => {
            named(choice).map(|name| ToolChoice::Function(name.to_string()))
        }
        _ => None,
    })
}

fn tool_choice(body: &Map<String, Value>) -> Result<Option<ToolChoice>, ApiError> {
    const WHAT: &str =
        "\"auto\", \"none\", \"required\" or {\"type\": \"function\", \"function\": {\"name\": …}}";
    tool_choice_of(body, WHAT, |choice| {
        choice.get("function")?.get("name")?.as_str()
    })
}

fn response_format(body: &Map<String, Value>) -> Result<ResponseFormat, ApiError> {
    let Some(format) = field(body, "response_format", "an object", Value::as_object)? else {
        return Ok(ResponseFormat::Text);
    };
    match format.get("type").and_then(Value::as_str) {
        Some("text") => Ok(ResponseFormat::Text),
        Some("json_object") => Ok(ResponseFormat::JsonObject),
        Some("json_schema") => {
            let spec = format
                .get("json_schema")
                .and_then(Value::as_object)
                .ok_or_else(|| {
                    invalid(
                        "response_format.json_schema",
                        "response_format.json_schema must be an object",
                    )
                })?;
            let name = spec.get("name").and_then(Value::as_str).ok_or_else(|| {
                invalid(
                    "response_format.json_schema.name",
                    "response_format.json_schema.name must be a string",
                )
            })?;
            Ok(ResponseFormat::JsonSchema {
                name: name.to_string(),
                schema: spec
                    .get("schema")
                    .cloned()
                    .unwrap_or_else(|| serde_json::json!({"type": "object"})),
                strict: spec.get("strict").and_then(Value::as_bool),
            })
        }
        _ => Err(invalid(
            "response_format.type",
            "response_format.type must be \"text\", \"json_object\" or \"json_schema\"",
        )),
    }
}

fn stop(body: &Map<String, Value>) -> Result<Vec<String>, ApiError> {
    let stops = field(
        body,
        "stop",
        "a string or an array of strings",
        |value| match value {
            Value::String(s) => Some(vec![s.clone()]),
            Value::Array(items) => items
                .iter()
                .map(|i| i.as_str().map(str::to_string))
                .collect(),
            _ => None,
        },
    )?;
    Ok(stops.unwrap_or_default())
}

/// Refuses what this gateway does not do but would change the answer.
fn refuse_unsupported(body: &Map<String, Value>) -> Result<(), ApiError> {
    for (name, message) in REFUSED {
        if body.get(*name).is_some_and(|v| !v.is_null()) {
            return Err(invalid(name, *message));
        }
    }
    if let Some(n) = field(body, "n", "a positive integer", Value::as_u64)? {
        if n != 1 {
            return Err(invalid(
                "n",
                "n must be 1: this gateway returns one choice (ask again for another)",
            ));
        }
    }
    if field(body, "logprobs", "a boolean", Value::as_bool)? == Some(true) {
        return Err(invalid(
            "logprobs",
            "logprobs are not supported: not every provider of the cascade can return them",
        ));
    }
    if field(
        body,
        "top_logprobs",
        "an integer from 0 to 20",
        Value::as_u64,
    )?
    .is_some_and(|n| n > 0)
    {
        return Err(invalid(
            "top_logprobs",
            "top_logprobs needs logprobs, which are not supported",
        ));
    }
    if field(body, "logit_bias", "an object", Value::as_object)?.is_some_and(|m| !m.is_empty()) {
        return Err(invalid(
            "logit_bias",
            "logit_bias is not supported: token ids differ between the cascade's providers",
        ));
    }
    if let Some(modalities) = field(body, "modalities", "an array", Value::as_array)? {
        if modalities.iter().any(|m| m.as_str() != Some("text")) {
            return Err(invalid("modalities", "only the text modality is supported"));
        }
    }
    Ok(())
}

fn max_tokens(body: &Map<String, Value>) -> Result<Option<u32>, ApiError> {
    // Zero is refused here, not by the core's check, so that the error names
    // the field the client sent.
    let read = |name: &str| {
        field(body, name, "an integer from 1 to 4294967295", |v| {
            v.as_u64()
                .and_then(|n| u32::try_from(n).ok())
                .filter(|&n| n >= 1)
        })
    };
    let newer = read("max_completion_tokens")?;
    let older = read("max_tokens")?;
    match (newer, older) {
        (Some(a), Some(b)) if a != b => Err(invalid(
            "max_tokens",
            "max_tokens and max_completion_tokens disagree; send one",
        )),
        (a, b) => Ok(a.or(b)),
    }
}

/// A request body's JSON object and the model it names, which both OpenAI
/// surfaces require.
pub(super) fn object_and_model(body: &[u8]) -> Result<(Map<String, Value>, String), ApiError> {
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
        None | Some(Value::Null) => return Err(invalid("model", "model is required")),
        _ => return Err(invalid("model", "model must be a non-empty string")),
    };
    Ok((body, model))
}

/// Decodes a request body; every error names the field at fault.
pub(super) fn decode(body: &[u8]) -> Result<ApiRequest, ApiError> {
    let (body, model) = object_and_model(body)?;
    let messages = match body.get("messages") {
        Some(Value::Array(m)) if !m.is_empty() => m,
        Some(Value::Array(_)) => return Err(invalid("messages", "messages must not be empty")),
        None | Some(Value::Null) => return Err(invalid("messages", "messages is required")),
        _ => return Err(invalid("messages", "messages must be an array")),
    };
    let turns = messages
        .iter()
        .enumerate()
        .map(|(index, message)| turn(message, index))
        .collect::<Result<Vec<_>, _>>()?;
    image::refuse_too_many(&turns, "messages")?;
    refuse_unsupported(&body)?;
    let stream = field(&body, "stream", "a boolean", Value::as_bool)?.unwrap_or(false);
    let include_usage = match field(&body, "stream_options", "an object", Value::as_object)? {
        None => false,
        Some(_) if !stream => {
            return Err(invalid(
                "stream_options",
                "stream_options is only allowed when stream is true",
            ))
        }
        Some(options) => match options.get("include_usage") {
            None | Some(Value::Null) => false,
            Some(Value::Bool(b)) => *b,
            Some(_) => {
                return Err(invalid(
                    "stream_options.include_usage",
                    "stream_options.include_usage must be a boolean",
                ))
            }
        },
    };
    let options = Options {
        sampling: Sampling {
            temperature: number(&body, "temperature")?,
            top_p: number(&body, "top_p")?,
            stop: stop(&body)?,
            seed: field(&body, "seed", "an integer", Value::as_i64)?,
            presence_penalty: number(&body, "presence_penalty")?,
            frequency_penalty: number(&body, "frequency_penalty")?,
            user: field(&body, "user", "a string", |v| {
                v.as_str().map(str::to_string)
            })?,
        },
        tools: tools(&body)?,
        tool_choice: tool_choice(&body)?,
        parallel_tool_calls: field(&body, "parallel_tool_calls", "a boolean", Value::as_bool)?,
        response_format: response_format(&body)?,
        reasoning_effort: field(
            &body,
            "reasoning_effort",
            "\"none\", \"minimal\", \"low\", \"medium\", \"high\", \"xhigh\" or \"max\"",
            |v| v.as_str()?.parse::<ReasoningEffort>().ok(),
        )?,
        verbosity: field(&body, "verbosity", "\"low\", \"medium\" or \"high\"", |v| {
            v.as_str()?.parse::<Verbosity>().ok()
        })?,
    };
    let pinned = (model != CASCADE_MODEL).then(|| model.clone());
    Ok(ApiRequest {
        stream,
        include_usage,
        gateway: GatewayRequest {
            pinned,
            max_tokens: max_tokens(&body)?,
            options,
            ..GatewayRequest::conversation(Surface::Api, turns)
        },
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::shared::TurnPart;
    use serde_json::json;

    fn param_of(body: Value) -> Option<String> {
        match decode(body.to_string().as_bytes()) {
            Ok(_) => None,
            Err(err) => err.param,
        }
    }

    fn with(extra: Value) -> Value {
        let mut body = json!({"model": "chaosai", "messages": [{"role": "user", "content": "hi"}]});
        for (k, v) in extra.as_object().unwrap() {
            body[k] = v.clone();
        }
        body
    }

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
            message_of(r#"{"model":"chaosai","messages":[{"role":"robot","content":"x"}]}"#)
                .contains("unknown role \"robot\"")
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
    fn every_parameter_of_the_wrong_type_is_named() {
        for (name, value) in [
            ("temperature", json!("hot")),
            ("top_p", json!([])),
            ("seed", json!(1.5)),
            ("presence_penalty", json!("x")),
            ("frequency_penalty", json!(true)),
            ("user", json!(5)),
            ("stop", json!(5)),
            ("stream", json!("yes")),
            ("max_tokens", json!(-1)),
            ("max_completion_tokens", json!("many")),
            ("max_completion_tokens", json!(0)),
            ("tools", json!({})),
            ("tool_choice", json!("sometimes")),
            ("parallel_tool_calls", json!("no")),
            ("response_format", json!("json")),
            ("n", json!(2)),
            ("logprobs", json!(true)),
            ("top_logprobs", json!(3)),
            ("logit_bias", json!({"50256": -100})),
            ("functions", json!([])),
            ("function_call", json!("auto")),
            ("modalities", json!(["text", "audio"])),
            ("reasoning_effort", json!("extreme")),
            ("reasoning_effort", json!(2)),
            ("verbosity", json!("terse")),
        ] {
            assert_eq!(
                param_of(with(json!({ name: value }))).as_deref(),
                Some(name),
                "{name}"
            );
        }
        assert_eq!(
            param_of(with(json!({"stream_options": {"include_usage": true}}))).as_deref(),
            Some("stream_options")
        );
        assert_eq!(
            param_of(with(json!({"response_format": {"type": "xml"}}))).as_deref(),
            Some("response_format.type")
        );
        assert_eq!(
            param_of(with(json!({"tools": [{"type": "code_interpreter"}]}))).as_deref(),
            Some("tools[0].type")
        );
        assert_eq!(
            param_of(with(json!({"max_tokens": 10, "max_completion_tokens": 20}))).as_deref(),
            Some("max_tokens")
        );
        // Harmless or default values pass; unknown fields are ignored.
        assert_eq!(
            param_of(with(
                json!({"n": 1, "logprobs": false, "logit_bias": {}, "store": true,
                "metadata": {"a": "b"}, "some_future_field": 1})
            )),
            None
        );
    }

    #[test]
    fn image_parts_keep_their_place_in_the_customers_text() {
        let body = json!({"model": "chaosai", "messages": [{"role": "user", "content": [
            {"type": "text", "text": "what is this? "},
            {"type": "image_url", "image_url": {"url": "https://shop.example/a.png", "detail": "high"}},
            {"type": "text", "text": "It came with my parcel."}]}]});
        let request = decode(body.to_string().as_bytes()).ok().unwrap();
        let turn = &request.gateway.turns[0];
        assert_eq!(turn.content, "what is this? It came with my parcel.");
        assert_eq!(turn.images.len(), 1);
        assert_eq!(turn.images[0].at, "what is this? ".len());
        let parts: Vec<_> = turn.parts().collect();
        assert_eq!(parts.len(), 3);
        assert_eq!(parts[0], TurnPart::Text("what is this? "));
        assert_eq!(parts[1], TurnPart::Image(&turn.images[0]));
        assert_eq!(parts[2], TurnPart::Text("It came with my parcel."));
    }

    #[test]
    fn images_outside_a_customer_turn_or_beyond_the_limit_are_refused() {
        let image =
            json!({"type": "image_url", "image_url": {"url": "https://shop.example/a.png"}});
        for role in ["system", "assistant", "tool"] {
            let body = json!({"model": "chaosai", "messages": [
                {"role": role, "content": [image.clone()], "tool_call_id": "call_1"},
                {"role": "user", "content": "hi"}]});
            let err = decode(body.to_string().as_bytes()).err().unwrap();
            assert_eq!(err.param.as_deref(), Some("messages[0].content[0]"));
            assert!(
                err.message.contains("only allowed in user messages"),
                "{}",
                err.message
            );
        }
        let many = vec![image.clone(); image::MAX_IMAGES + 1];
        let body = json!({"model": "chaosai", "messages": [{"role": "user", "content": many}]});
        let err = decode(body.to_string().as_bytes()).err().unwrap();
        assert_eq!(err.param.as_deref(), Some("messages"));
        assert!(err.message.contains("at most 100"), "{}", err.message);
        let audio = json!({"model": "chaosai", "messages": [{"role": "user", "content": [
            {"type": "input_audio", "input_audio": {"data": "", "format": "wav"}}]}]});
        let err = decode(audio.to_string().as_bytes()).err().unwrap();
        assert_eq!(err.param.as_deref(), Some("messages[0].content[0]"));
        assert!(
            err.message.contains("input_audio parts are not supported"),
            "{}",
            err.message
        );
    }

    #[test]
    fn a_tool_round_trip_decodes_into_turns() {
        let body = json!({"model": "chaosai", "tools": [{"type": "function", "function": {
                "name": "order_status", "parameters": {"type": "object"}}}],
            "tool_choice": {"type": "function", "function": {"name": "order_status"}},
            "stream": true, "stream_options": {"include_usage": true},
            "stop": "END", "seed": 42,
            "response_format": {"type": "json_schema", "json_schema": {"name": "x", "schema": {"type": "object"}, "strict": true}},
            "messages": [
                {"role": "user", "content": "Where is order 1234?"},
                {"role": "assistant", "content": null, "tool_calls": [{"id": "call_1", "type": "function",
                    "function": {"name": "order_status", "arguments": "{\"order_id\":\"1234\"}"}}]},
                {"role": "tool", "tool_call_id": "call_1", "content": "{\"status\":\"shipped\"}"}]});
        let decoded = decode(body.to_string().as_bytes()).unwrap();
        assert!(decoded.stream && decoded.include_usage);
        let turns = &decoded.gateway.turns;
        assert_eq!(turns[1].tool_calls[0].arguments, "{\"order_id\":\"1234\"}");
        assert_eq!(turns[2].role, Role::Tool);
        assert_eq!(turns[2].tool_call_id.as_deref(), Some("call_1"));
        let options = &decoded.gateway.options;
        assert_eq!(
            options.tool_choice,
            Some(ToolChoice::Function("order_status".into()))
        );
        assert_eq!(options.sampling.stop, vec!["END".to_string()]);
        assert_eq!(options.sampling.seed, Some(42));
        assert!(matches!(
            options.response_format,
            ResponseFormat::JsonSchema {
                strict: Some(true),
                ..
            }
        ));
        let missing_id =
            json!({"model": "chaosai", "messages": [{"role": "tool", "content": "x"}]});
        assert_eq!(
            param_of(missing_id).as_deref(),
            Some("messages[0].tool_call_id")
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
                n in proptest::option::of(0u64..4),
            ) {
                let messages: Vec<_> = roles
                    .iter()
                    .zip(texts.iter().chain(std::iter::repeat(&String::new())))
                    .map(|(role, text)| json!({"role": role, "content": text, "tool_call_id": "c"}))
                    .collect();
                let body = json!({"model": model, "messages": messages, "stream": stream,
                    "temperature": temperature, "n": n});
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
