//! Reading a Responses API request (`POST /v1/responses`) into the gateway's
//! terms: `input` (a string, or message, function-call and function-call-output
//! items) and `instructions` become the conversation; flat function tools,
//! `text.format`, `reasoning.effort` and `text.verbosity` become the same
//! options a Chat Completions request has. `previous_response_id` names a kept
//! response whose conversation goes before `input`; what needs state this
//! gateway does not keep (`conversation`, stored prompts, `background`) is
//! refused by name.

use super::super::super::error::ApiError;
use super::super::decode::{
    field, function_tools, invalid, number, object_and_model, tool_choice_of,
};
use super::super::{image, CASCADE_MODEL};
use crate::gateway::provider::{
    Options, ReasoningEffort, ResponseFormat, Sampling, Tool, ToolChoice, Verbosity,
};
use crate::gateway::GatewayRequest;
use crate::shared::{ChatTurn, Role, Surface, ToolCall};
use serde_json::{Map, Value};

/// A decoded Responses request.
pub(in crate::api::openai) struct ResponsesRequest {
    /// Whether the answer is streamed as semantic events.
    pub stream: bool,
    /// The request in the gateway's terms.
    pub gateway: GatewayRequest,
    /// The request's fields a response object repeats (`instructions`,
    /// `tools`, `temperature`, …), as the caller sent them.
    pub echo: Map<String, Value>,
    /// Where each turn came from.
    pub origins: Origins,
    /// The kept response this one goes on from.
    pub previous: Option<String>,
    /// Whether the caller wants the response kept (`store`, true by default).
    pub store: bool,
}

impl ResponsesRequest {
    /// The conversation a kept response carries: every turn but the caller's
    /// `instructions`, which OpenAI does not carry to the next response (a
    /// system or developer message in `input` is carried).
    pub fn carried(&self) -> &[crate::shared::ChatTurn] {
        let instructions = self.origins.0.first().is_some_and(|o| o == "instructions");
        &self.gateway.turns[usize::from(instructions)..]
    }

    /// Puts `history` (a kept response's conversation) before the caller's
    /// input, after its instructions, as what `previous_response_id` names.
    pub fn go_on_from(&mut self, history: Vec<crate::shared::ChatTurn>) {
        let turns = &mut self.gateway.turns;
        let at = turns.iter().take_while(|t| t.role == Role::System).count();
        let count = history.len();
        turns.splice(at..at, history);
        self.origins.0.splice(
            at..at,
            std::iter::repeat_n("previous_response_id".to_string(), count),
        );
    }
}

/// Where each turn came from (`instructions`, `input[3]`), so that the
/// gateway's own checks, which name a chat request's `messages[k]`, name what
/// this caller sent.
#[derive(Default)]
pub(in crate::api::openai) struct Origins(Vec<String>);

impl Origins {
    /// `err` in this request's terms: `messages[k]` becomes the item turn `k`
    /// came from, `messages` `input`.
    pub fn renamed(&self, err: ApiError) -> ApiError {
        let Some(param) = err.param.as_deref() else {
            return err;
        };
        let Some(rest) = param.strip_prefix("messages") else {
            return err;
        };
        let (from, origin, tail) = match rest
            .strip_prefix('[')
            .and_then(|r| r.split_once(']'))
            .and_then(|(k, tail)| Some((k, self.0.get(k.parse::<usize>().ok()?)?, tail)))
        {
            Some((k, origin, tail)) => (format!("messages[{k}]"), origin.clone(), tail),
            None => ("messages".to_string(), "input".to_string(), rest),
        };
        let param = format!("{origin}{tail}");
        ApiError {
            message: err.message.replace(&from, &origin),
            param: Some(param),
            ..err
        }
    }
}

/// Fields a response object repeats from its request.
const ECHOED: &[&str] = &[
    "instructions",
    "max_output_tokens",
    "metadata",
    "parallel_tool_calls",
    "reasoning",
    "temperature",
    "text",
    "tool_choice",
    "tools",
    "top_p",
    "user",
];

/// Fields that need state this gateway does not keep, or work it does not do.
const REFUSED: &[(&str, &str)] = &[
    (
        "conversation",
        "conversation is not supported: this gateway keeps no conversations; send the whole conversation in input",
    ),
    (
        "prompt",
        "stored prompts are not supported; send instructions and input",
    ),
];

/// A message item's content: its text and, from a customer, its images.
fn message_content(
    content: &Value,
    at: &str,
    role: Role,
) -> Result<(String, Vec<crate::shared::Image>), ApiError> {
    let param = format!("{at}.content");
    let parts = match content {
        Value::String(text) => return Ok((text.clone(), Vec::new())),
        Value::Array(parts) => parts,
        _ => {
            return Err(invalid(
                &param,
                format!("{param} must be a string or an array of content parts"),
            ))
        }
    };
    let mut text = String::new();
    let mut images = Vec::new();
    for (n, part) in parts.iter().enumerate() {
        let part_param = format!("{param}[{n}]");
        let kind = part.get("type").and_then(Value::as_str);
        match kind {
            Some("input_text" | "output_text") => match part.get("text") {
                Some(Value::String(t)) => text.push_str(t),
                _ => {
                    return Err(invalid(
                        &format!("{part_param}.text"),
                        format!("{part_param}.text must be a string"),
                    ))
                }
            },
            Some("refusal") => match part.get("refusal") {
                Some(Value::String(t)) => text.push_str(t),
                _ => {
                    return Err(invalid(
                        &format!("{part_param}.refusal"),
                        format!("{part_param}.refusal must be a string"),
                    ))
                }
            },
            Some("input_image") if role != Role::User => {
                return Err(invalid(
                    &part_param,
                    format!(
                        "{part_param}: input_image parts are only allowed in user messages, not {}",
                        role.as_str()
                    ),
                ))
            }
            Some("input_image") => images.push(image::image(
                (part.get("image_url"), &format!("{part_param}.image_url")),
                (part.get("detail"), &format!("{part_param}.detail")),
                text.len(),
            )?),
            _ => {
                return Err(invalid(
                    &format!("{part_param}.type"),
                    format!(
                        "{part_param}.type must be input_text, output_text, refusal or input_image; {} parts are not supported",
                        kind.unwrap_or("untyped")
                    ),
                ))
            }
        }
    }
    Ok((text, images))
}

/// A string field of an item, required.
fn text_of<'a>(item: &'a Value, at: &str, name: &str) -> Result<&'a str, ApiError> {
    item.get(name).and_then(Value::as_str).ok_or_else(|| {
        let param = format!("{at}.{name}");
        invalid(&param, format!("{param} must be a string"))
    })
}

/// The conversation in `input`, after the caller's `instructions`, with where
/// each turn came from.
fn turns(body: &Map<String, Value>) -> Result<(Vec<ChatTurn>, Vec<String>), ApiError> {
    let mut turns = Vec::new();
    let mut origins = Vec::new();
    if let Some(instructions) = field(body, "instructions", "a string", Value::as_str)? {
        turns.push(ChatTurn::new(Role::System, instructions));
        origins.push("instructions".to_string());
    }
    let items = match body.get("input") {
        Some(Value::String(text)) => {
            turns.push(ChatTurn::user(text.as_str()));
            origins.push("input".to_string());
            return Ok((turns, origins));
        }
        Some(Value::Array(items)) if !items.is_empty() => items,
        Some(Value::Array(_)) => return Err(invalid("input", "input must not be empty")),
        None | Some(Value::Null) => return Err(invalid("input", "input is required")),
        Some(_) => {
            return Err(invalid(
                "input",
                "input must be a string or an array of items",
            ))
        }
    };
    for (i, item) in items.iter().enumerate() {
        let at = format!("input[{i}]");
        let kind = item.get("type").and_then(Value::as_str);
        match kind {
            None | Some("message") => {
                let role = match item.get("role").and_then(Value::as_str) {
                    Some("user") => Role::User,
                    Some("assistant") => Role::Assistant,
                    Some("system" | "developer") => Role::System,
                    _ => {
                        return Err(invalid(
                            &format!("{at}.role"),
                            format!("{at}.role must be user, assistant, system or developer"),
                        ))
                    }
                };
                let content = item.get("content").ok_or_else(|| {
                    invalid(
                        &format!("{at}.content"),
                        format!("{at}.content is required"),
                    )
                })?;
                let (text, images) = message_content(content, &at, role)?;
                let mut turn = ChatTurn::new(role, text);
                turn.images = images;
                turns.push(turn);
            }
            Some("function_call") => {
                let call = ToolCall {
                    id: text_of(item, &at, "call_id")?.to_string(),
                    name: text_of(item, &at, "name")?.to_string(),
                    arguments: text_of(item, &at, "arguments")?.to_string(),
                };
                // A model's calls follow its message, if it said anything: in
                // Chat Completions terms one assistant turn.
                match turns.last_mut() {
                    Some(last) if last.role == Role::Assistant => last.tool_calls.push(call),
                    _ => {
                        let mut turn = ChatTurn::assistant("");
                        turn.tool_calls.push(call);
                        turns.push(turn);
                    }
                }
            }
            Some("function_call_output") => {
                let output = match item.get("output") {
                    Some(Value::String(output)) => output.clone(),
                    Some(parts @ Value::Array(_)) => {
                        message_content(parts, &at, Role::Tool)?.0
                    }
                    _ => {
                        return Err(invalid(
                            &format!("{at}.output"),
                            format!("{at}.output must be a string"),
                        ))
                    }
                };
                let mut turn = ChatTurn::new(Role::Tool, output);
                turn.tool_call_id = Some(text_of(item, &at, "call_id")?.to_string());
                turns.push(turn);
            }
            // A reasoning model's own thoughts, handed back with its output:
            // no provider of the cascade could use another model's.
            Some("reasoning") => {}
            Some(other) => {
                return Err(invalid(
                    &format!("{at}.type"),
                    format!("{at}.type {other:?} is not supported: items are messages, function_call and function_call_output"),
                ))
            }
        }
        // Every turn the item added came from it.
        origins.resize(turns.len(), at);
    }
    Ok((turns, origins))
}

/// The Responses API's tools: each function is the tool object itself.
fn tools(body: &Map<String, Value>) -> Result<Vec<Tool>, ApiError> {
    function_tools(body, |tool, at| Ok((tool.clone(), at.to_string())))
}

fn tool_choice(body: &Map<String, Value>) -> Result<Option<ToolChoice>, ApiError> {
    const WHAT: &str = "\"auto\", \"none\", \"required\" or {\"type\": \"function\", \"name\": …}";
    tool_choice_of(body, WHAT, |choice| choice.get("name")?.as_str())
}

/// `text`: the answer's form (`format`) and length (`verbosity`).
fn text_options(
    body: &Map<String, Value>,
) -> Result<(ResponseFormat, Option<Verbosity>), ApiError> {
    let Some(text) = field(body, "text", "an object", Value::as_object)? else {
        return Ok((ResponseFormat::Text, None));
    };
    let verbosity = field(text, "verbosity", "\"low\", \"medium\" or \"high\"", |v| {
        v.as_str()?.parse::<Verbosity>().ok()
    })
    .map_err(|_| {
        invalid(
            "text.verbosity",
            "text.verbosity must be \"low\", \"medium\" or \"high\"",
        )
    })?;
    let Some(format) = text.get("format").filter(|f| !f.is_null()) else {
        return Ok((ResponseFormat::Text, verbosity));
    };
    let format = match format.get("type").and_then(Value::as_str) {
        Some("text") => ResponseFormat::Text,
        Some("json_object") => ResponseFormat::JsonObject,
        Some("json_schema") => ResponseFormat::JsonSchema {
            name: format
                .get("name")
                .and_then(Value::as_str)
                .ok_or_else(|| invalid("text.format.name", "text.format.name must be a string"))?
                .to_string(),
            schema: format
                .get("schema")
                .cloned()
                .unwrap_or_else(|| serde_json::json!({"type": "object"})),
            strict: format.get("strict").and_then(Value::as_bool),
        },
        _ => {
            return Err(invalid(
                "text.format.type",
                "text.format.type must be \"text\", \"json_object\" or \"json_schema\"",
            ))
        }
    };
    Ok((format, verbosity))
}

fn reasoning_effort(body: &Map<String, Value>) -> Result<Option<ReasoningEffort>, ApiError> {
    let Some(reasoning) = field(body, "reasoning", "an object", Value::as_object)? else {
        return Ok(None);
    };
    field(reasoning, "effort", "", |v| v.as_str()?.parse().ok()).map_err(|_| {
        invalid(
            "reasoning.effort",
            "reasoning.effort must be \"none\", \"minimal\", \"low\", \"medium\", \"high\", \"xhigh\" or \"max\"",
        )
    })
}

/// Decodes a request body; every error names the field at fault.
pub(in crate::api::openai) fn decode(body: &[u8]) -> Result<ResponsesRequest, ApiError> {
    let (body, model) = object_and_model(body)?;
    for (name, message) in REFUSED {
        if body.get(*name).is_some_and(|v| !v.is_null()) {
            return Err(invalid(name, *message));
        }
    }
    if field(&body, "background", "a boolean", Value::as_bool)? == Some(true) {
        return Err(invalid(
            "background",
            "background responses are not supported: this gateway keeps no responses to poll",
        ));
    }
    let previous = field(&body, "previous_response_id", "a response id", |v| {
        v.as_str().filter(|id| !id.is_empty() && id.len() <= MAX_ID)
    })?
    .map(str::to_string);
    let store = field(&body, "store", "a boolean", Value::as_bool)?.unwrap_or(true);
    let (turns, origins) = turns(&body)?;
    image::refuse_too_many(&turns, "input")?;
    let stream = field(&body, "stream", "a boolean", Value::as_bool)?.unwrap_or(false);
    let (response_format, verbosity) = text_options(&body)?;
    let user = match field(&body, "user", "a string", Value::as_str)? {
        Some(user) => Some(user),
        None => field(&body, "safety_identifier", "a string", Value::as_str)?,
    };
    let options = Options {
        sampling: Sampling {
            temperature: number(&body, "temperature")?,
            top_p: number(&body, "top_p")?,
            user: user.map(str::to_string),
            ..Sampling::default()
        },
        tools: tools(&body)?,
        tool_choice: tool_choice(&body)?,
        parallel_tool_calls: field(&body, "parallel_tool_calls", "a boolean", Value::as_bool)?,
        response_format,
        reasoning_effort: reasoning_effort(&body)?,
        verbosity,
    };
    let max_tokens = field(
        &body,
        "max_output_tokens",
        "an integer from 1 to 4294967295",
        |v| {
            v.as_u64()
                .and_then(|n| u32::try_from(n).ok())
                .filter(|&n| n >= 1)
        },
    )?;
    let echo = ECHOED
        .iter()
        .filter_map(|name| Some((name.to_string(), body.get(*name)?.clone())))
        .collect();
    let pinned = (model != CASCADE_MODEL).then(|| model.clone());
    Ok(ResponsesRequest {
        stream,
        gateway: GatewayRequest {
            pinned,
            max_tokens,
            options,
            ..GatewayRequest::conversation(Surface::Api, turns)
        },
        echo,
        origins: Origins(origins),
        previous,
        store,
    })
}

/// Longest response id taken: ours are 37 characters.
const MAX_ID: usize = 256;

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn decoded(body: Value) -> ResponsesRequest {
        decode(body.to_string().as_bytes()).ok().unwrap()
    }

    fn refused(body: Value) -> ApiError {
        decode(body.to_string().as_bytes()).err().unwrap()
    }

    #[test]
    fn input_items_become_the_conversation_a_chat_request_would_hold() {
        let request = decoded(json!({"model": "chaosai", "instructions": "Be brief.",
            "input": [
                {"role": "user", "content": "Where is my order 12345?"},
                {"type": "reasoning", "id": "rs_1", "summary": []},
                {"type": "message", "role": "assistant", "content": [{"type": "output_text", "text": "Checking."}]},
                {"type": "function_call", "call_id": "call_1", "name": "get_order_status", "arguments": "{\"order_id\":\"12345\"}"},
                {"type": "function_call", "call_id": "call_2", "name": "get_order_status", "arguments": "{}"},
                {"type": "function_call_output", "call_id": "call_1", "output": "shipped"},
                {"type": "function_call_output", "call_id": "call_2", "output": [{"type": "input_text", "text": "packed"}]},
                {"role": "user", "content": [{"type": "input_text", "text": "And this? "},
                    {"type": "input_image", "image_url": "https://shop.example/a.png", "detail": "low"}]}],
            "tools": [{"type": "function", "name": "get_order_status", "parameters": {"type": "object"}}],
            "tool_choice": {"type": "function", "name": "get_order_status"},
            "text": {"format": {"type": "json_schema", "name": "answer", "schema": {"type": "object"}}, "verbosity": "low"},
            "reasoning": {"effort": "low", "summary": "auto"},
            "max_output_tokens": 300, "temperature": 0.3, "store": false, "stream": true}));
        assert!(request.stream);
        let turns = &request.gateway.turns;
        let roles: Vec<Role> = turns.iter().map(|t| t.role).collect();
        assert_eq!(
            roles,
            [
                Role::System,
                Role::User,
                Role::Assistant,
                Role::Tool,
                Role::Tool,
                Role::User
            ]
        );
        assert_eq!(turns[2].content, "Checking.");
        assert_eq!(
            turns[2].tool_calls.len(),
            2,
            "the calls join the message they follow"
        );
        assert_eq!(turns[4].content, "packed");
        assert_eq!(turns[4].tool_call_id.as_deref(), Some("call_2"));
        assert_eq!(turns[5].images.len(), 1);
        assert_eq!(turns[5].images[0].at, "And this? ".len());
        let options = &request.gateway.options;
        assert_eq!(options.tools[0].name, "get_order_status");
        assert_eq!(
            options.tool_choice,
            Some(ToolChoice::Function("get_order_status".into()))
        );
        assert!(matches!(
            options.response_format,
            ResponseFormat::JsonSchema { .. }
        ));
        assert_eq!(options.verbosity, Some(Verbosity::Low));
        assert_eq!(options.reasoning_effort, Some(ReasoningEffort::Low));
        assert_eq!(request.gateway.max_tokens, Some(300));
        assert_eq!(request.echo["instructions"], "Be brief.");
        assert!(
            !request.echo.contains_key("input"),
            "the input is not repeated"
        );
        // The gateway's checks name a chat request's messages; the caller hears
        // of the item the turn came from.
        let err = request.origins.renamed(ApiError::invalid(
            Some("messages[3].tool_call_id"),
            "messages[3].tool_call_id answers no call",
        ));
        assert_eq!(err.param.as_deref(), Some("input[5].tool_call_id"));
        assert_eq!(err.message, "input[5].tool_call_id answers no call");
        let err = request
            .origins
            .renamed(ApiError::invalid(Some("messages"), "too many messages"));
        assert_eq!(err.param.as_deref(), Some("input"));
        // A string input is one customer turn.
        let plain = decoded(json!({"model": "gpt", "input": "hi"}));
        assert_eq!(plain.gateway.turns, vec![ChatTurn::user("hi")]);
        assert_eq!(plain.gateway.pinned.as_deref(), Some("gpt"));
    }

    #[test]
    fn a_kept_conversation_goes_after_the_instructions_and_before_the_input() {
        let mut request = decoded(json!({"model": "chaosai", "instructions": "Be brief.",
            "previous_response_id": "resp_1", "input": [
                {"type": "function_call_output", "call_id": "call_1", "output": "shipped"}]}));
        assert_eq!(request.previous.as_deref(), Some("resp_1"));
        assert!(request.store, "kept unless the caller says otherwise");
        let mut call = ChatTurn::new(Role::Assistant, "");
        call.tool_calls = vec![ToolCall {
            id: "call_1".into(),
            name: "order_status".into(),
            arguments: "{}".into(),
        }];
        request.go_on_from(vec![ChatTurn::user("Where is my order?"), call.clone()]);
        let roles: Vec<Role> = request.gateway.turns.iter().map(|t| t.role).collect();
        assert_eq!(
            roles,
            vec![Role::System, Role::User, Role::Assistant, Role::Tool]
        );
        assert_eq!(request.gateway.turns[2], call);
        // An error about a kept turn names where it came from.
        let err = request
            .origins
            .renamed(ApiError::invalid(Some("messages[1].content"), "bad"));
        assert_eq!(err.param.as_deref(), Some("previous_response_id.content"));
        let err = request
            .origins
            .renamed(ApiError::invalid(Some("messages[3].tool_call_id"), "bad"));
        assert_eq!(err.param.as_deref(), Some("input[0].tool_call_id"));
        // Instructions are not carried to the next response; a developer
        // message in the input is.
        let carried = decoded(
            json!({"model": "chaosai", "instructions": "Be brief.", "input": [
            {"role": "developer", "content": "Answer in French."},
            {"role": "user", "content": "Bonjour"}]}),
        );
        let roles: Vec<Role> = carried.carried().iter().map(|t| t.role).collect();
        assert_eq!(roles, vec![Role::System, Role::User]);
        assert_eq!(carried.carried()[0].content, "Answer in French.");
        let unkept = decoded(json!({"model": "chaosai", "input": "hi", "store": false}));
        assert!(!unkept.store && unkept.previous.is_none());
    }

    #[test]
    fn what_needs_stored_state_or_is_malformed_is_refused_naming_it() {
        for (body, param) in [
            (json!({"input": "hi"}), "model"),
            (json!({"model": "chaosai"}), "input"),
            (json!({"model": "chaosai", "input": []}), "input"),
            (
                json!({"model": "chaosai", "input": "hi", "previous_response_id": 7}),
                "previous_response_id",
            ),
            (
                json!({"model": "chaosai", "input": "hi", "previous_response_id": ""}),
                "previous_response_id",
            ),
            (
                json!({"model": "chaosai", "input": "hi", "store": "yes"}),
                "store",
            ),
            (
                json!({"model": "chaosai", "input": "hi", "conversation": "conv_1"}),
                "conversation",
            ),
            (
                json!({"model": "chaosai", "input": "hi", "background": true}),
                "background",
            ),
            (
                json!({"model": "chaosai", "input": [{"type": "item_reference", "id": "msg_1"}]}),
                "input[0].type",
            ),
            (
                json!({"model": "chaosai", "input": [{"role": "critic", "content": "x"}]}),
                "input[0].role",
            ),
            (
                json!({"model": "chaosai", "input": [{"role": "user", "content": [{"type": "input_file", "file_id": "f"}]}]}),
                "input[0].content[0].type",
            ),
            (
                json!({"model": "chaosai", "input": [{"role": "assistant", "content": [{"type": "input_image", "image_url": "https://a.example/x.png"}]}]}),
                "input[0].content[0]",
            ),
            (
                json!({"model": "chaosai", "input": [{"role": "user", "content": [{"type": "input_image", "image_url": "ftp://a.example/x.png"}]}]}),
                "input[0].content[0].image_url",
            ),
            (
                json!({"model": "chaosai", "input": [{"type": "function_call", "call_id": "c", "name": "f"}]}),
                "input[0].arguments",
            ),
            (
                json!({"model": "chaosai", "input": "hi", "tools": [{"type": "web_search"}]}),
                "tools[0].type",
            ),
            (
                json!({"model": "chaosai", "input": "hi", "text": {"format": {"type": "xml"}}}),
                "text.format.type",
            ),
            (
                json!({"model": "chaosai", "input": "hi", "text": {"verbosity": "terse"}}),
                "text.verbosity",
            ),
            (
                json!({"model": "chaosai", "input": "hi", "reasoning": {"effort": "extreme"}}),
                "reasoning.effort",
            ),
            (
                json!({"model": "chaosai", "input": "hi", "max_output_tokens": 0}),
                "max_output_tokens",
            ),
        ] {
            let err = refused(body.clone());
            assert_eq!(err.param.as_deref(), Some(param), "{body}: {}", err.message);
        }
    }
}
