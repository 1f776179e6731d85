//! The checks a request must pass before any provider sees it, each naming the
//! parameter at fault the way OpenAI names it (`messages[2].tool_call_id`,
//! `tools[0].function.name`, `top_p`), so a bot's developer can fix the call.

use super::cascade::CascadeRequest;
use super::provider::{Options, ResponseFormat, ToolChoice, MAX_TOOL_CALLS};
use super::request::{GatewayError, GatewayRequest, RequestLimits};
use crate::shared::Role;
use std::collections::HashSet;

/// Most tools one request may offer, as OpenAI allows.
const MAX_TOOLS: usize = 128;
/// Most stop sequences, as OpenAI allows.
const MAX_STOPS: usize = 4;
/// Longest stop sequence, in characters.
const MAX_STOP_CHARS: usize = 256;
/// Longest `user` identifier, in characters.
const MAX_USER_CHARS: usize = 256;

fn bad(param: impl Into<String>, message: impl Into<String>) -> GatewayError {
    GatewayError::bad(param, message)
}

/// A function or schema name as both protocols accept it: `[a-zA-Z0-9_-]{1,64}`.
fn valid_name(name: &str) -> bool {
    (1..=64).contains(&name.len())
        && name
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'_' || b == b'-')
}

fn in_range(param: &str, value: Option<f32>, low: f32, high: f32) -> Result<(), GatewayError> {
    match value {
        Some(v) if !(low..=high).contains(&v) => Err(bad(
            param,
            format!("{param} must be between {low} and {high}; got {v}"),
        )),
        _ => Ok(()),
    }
}

/// Checks a conversation (and that a pinned model is one `known` to the
/// cascade) and splits off the caller's system text.
pub(super) fn validate(
    request: &GatewayRequest,
    limits: RequestLimits,
    known: impl Fn(&str) -> bool,
) -> Result<CascadeRequest, GatewayError> {
    if let Some(name) = &request.pinned {
        if !known(name) {
            return Err(GatewayError::UnknownModel(name.clone()));
        }
    }
    if request.turns.is_empty() {
        return Err(bad("messages", "messages must not be empty"));
    }
    if request.turns.len() > limits.max_messages {
        return Err(bad(
            "messages",
            format!(
                "messages holds {} messages; at most {} are allowed",
                request.turns.len(),
                limits.max_messages
            ),
        ));
    }
    let mut caller_system = Vec::new();
    let mut turns = Vec::with_capacity(request.turns.len());
    // Tool calls made so far that no result answered yet.
    let mut called: HashSet<&str> = HashSet::new();
    for (index, turn) in request.turns.iter().enumerate() {
        let param = format!("messages[{index}].content");
        let chars = turn.content.chars().count()
            + turn
                .tool_calls
                .iter()
                .map(|c| c.arguments.chars().count())
                .sum::<usize>();
        if chars > limits.max_message_chars {
            return Err(bad(
                param.clone(),
                format!(
                    "{param} has {chars} characters; at most {} are allowed",
                    limits.max_message_chars
                ),
            ));
        }
        // A customer may show a picture without a word.
        let may_be_empty =
            matches!(turn.role, Role::Assistant | Role::Tool) || !turn.images.is_empty();
        if turn.content.trim().is_empty() && !may_be_empty {
            return Err(bad(param.clone(), format!("{param} must not be empty")));
        }
        if turn.tool_calls.len() > MAX_TOOL_CALLS as usize {
            return Err(bad(
                format!("messages[{index}].tool_calls"),
                format!("at most {MAX_TOOL_CALLS} tool calls per message"),
            ));
        }
        for (n, call) in turn.tool_calls.iter().enumerate() {
            if call.id.is_empty() || call.id.len() > 256 {
                return Err(bad(
                    format!("messages[{index}].tool_calls[{n}].id"),
                    "a tool call id must be 1-256 characters",
                ));
            }
            if !valid_name(&call.name) {
                return Err(bad(
                    format!("messages[{index}].tool_calls[{n}].function.name"),
                    "a function name must be 1-64 letters, digits, _ or -",
                ));
            }
            called.insert(&call.id);
        }
        if turn.role == Role::Tool {
            let param = format!("messages[{index}].tool_call_id");
            match turn.tool_call_id.as_deref() {
                None => return Err(bad(param.clone(), format!("{param} is required"))),
                Some(id) if !called.contains(id) => {
                    return Err(bad(
                        param,
                        format!("a tool message must answer a tool call of an earlier assistant message; none has the id {id:?}"),
                    ))
                }
                Some(_) => {}
            }
        }
        match turn.role {
            Role::System => caller_system.push(turn.content.trim()),
            _ => turns.push(turn.clone()),
        }
    }
    match turns.last() {
        Some(last) if matches!(last.role, Role::User | Role::Tool) => {}
        _ => {
            return Err(bad(
                "messages",
                "the last message must come from the user or be a tool's result",
            ))
        }
    }
    if request.max_tokens == Some(0) {
        return Err(bad("max_tokens", "max_tokens must be at least 1"));
    }
    let options = options(&request.options)?;
    Ok(CascadeRequest {
        caller_system: caller_system.join("\n"),
        turns,
        max_tokens: request.max_tokens,
        options,
        pinned: request.pinned.clone(),
        ..Default::default()
    })
}

/// Checks sampling, tools and the answer's form; drops what is meaningless
/// without tools (`tool_choice: "none"`, `parallel_tool_calls`).
fn options(options: &Options) -> Result<Options, GatewayError> {
    let sampling = &options.sampling;
    in_range("temperature", sampling.temperature, 0.0, 2.0)?;
    in_range("top_p", sampling.top_p, 0.0, 1.0)?;
    in_range("presence_penalty", sampling.presence_penalty, -2.0, 2.0)?;
    in_range("frequency_penalty", sampling.frequency_penalty, -2.0, 2.0)?;
    if sampling.stop.len() > MAX_STOPS {
        return Err(bad(
            "stop",
            format!("stop holds at most {MAX_STOPS} sequences"),
        ));
    }
    if sampling
        .stop
        .iter()
        .any(|s| s.is_empty() || s.chars().count() > MAX_STOP_CHARS)
    {
        return Err(bad(
            "stop",
            format!("each stop sequence must be 1-{MAX_STOP_CHARS} characters"),
        ));
    }
    if sampling
        .user
        .as_ref()
        .is_some_and(|u| u.chars().count() > MAX_USER_CHARS)
    {
        return Err(bad(
            "user",
            format!("user must be at most {MAX_USER_CHARS} characters"),
        ));
    }
    if options.tools.len() > MAX_TOOLS {
        return Err(bad(
            "tools",
            format!("at most {MAX_TOOLS} tools are allowed"),
        ));
    }
    let mut names = HashSet::new();
    for (index, tool) in options.tools.iter().enumerate() {
        let param = format!("tools[{index}].function.name");
        if !valid_name(&tool.name) {
            return Err(bad(
                param,
                "a function name must be 1-64 letters, digits, _ or -",
            ));
        }
        if !names.insert(tool.name.as_str()) {
            return Err(bad(param, format!("two tools are named {:?}", tool.name)));
        }
        if !tool.parameters.is_object() {
            return Err(bad(
                format!("tools[{index}].function.parameters"),
                "parameters must be a JSON schema object",
            ));
        }
    }
    let mut checked = options.clone();
    match &options.tool_choice {
        Some(ToolChoice::Function(name)) if !names.contains(name.as_str()) => {
            return Err(bad(
                "tool_choice",
                format!("tool_choice names {name:?}, which is not one of the tools"),
            ))
        }
        Some(ToolChoice::Required) if options.tools.is_empty() => {
            return Err(bad(
                "tool_choice",
                "tool_choice \"required\" needs at least one tool",
            ))
        }
        Some(_) if options.tools.is_empty() => checked.tool_choice = None,
        _ => {}
    }
    if options.tools.is_empty() {
        checked.parallel_tool_calls = None;
    }
    if let ResponseFormat::JsonSchema { name, schema, .. } = &options.response_format {
        if !valid_name(name) {
            return Err(bad(
                "response_format.json_schema.name",
                "a schema name must be 1-64 letters, digits, _ or -",
            ));
        }
        if !schema.is_object() {
            return Err(bad(
                "response_format.json_schema.schema",
                "schema must be a JSON schema object",
            ));
        }
    }
    Ok(checked)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::gateway::provider::Tool;
    use crate::shared::{ChatTurn, Surface, ToolCall};
    use serde_json::json;

    fn param_of(request: &GatewayRequest) -> String {
        match validate(request, RequestLimits::default(), |_| true) {
            Err(GatewayError::BadRequest { param, .. }) => param,
            other => panic!("expected a bad request, got {other:?}"),
        }
    }

    fn order_tool() -> Tool {
        Tool {
            name: "order_status".into(),
            description: None,
            parameters: json!({"type": "object"}),
        }
    }

    #[test]
    fn each_bad_request_names_its_parameter() {
        let mut request = GatewayRequest::question(Surface::Api, "hi");
        request.options.sampling.temperature = Some(3.0);
        assert_eq!(param_of(&request), "temperature");
        request.options.sampling.temperature = None;
        request.options.sampling.top_p = Some(1.5);
        assert_eq!(param_of(&request), "top_p");
        request.options.sampling.top_p = None;
        request.options.sampling.presence_penalty = Some(-3.0);
        assert_eq!(param_of(&request), "presence_penalty");
        request.options.sampling.presence_penalty = None;
        request.options.sampling.frequency_penalty = Some(2.5);
        assert_eq!(param_of(&request), "frequency_penalty");
        request.options.sampling.frequency_penalty = None;
        request.options.sampling.stop = vec!["a".into(); 5];
        assert_eq!(param_of(&request), "stop");
        request.options.sampling.stop = vec![String::new()];
        assert_eq!(param_of(&request), "stop");
        request.options.sampling.stop.clear();
        request.options.sampling.user = Some("u".repeat(300));
        assert_eq!(param_of(&request), "user");
        request.options.sampling.user = None;
        request.max_tokens = Some(0);
        assert_eq!(param_of(&request), "max_tokens");
        request.max_tokens = None;
        request.turns.push(ChatTurn::user("  "));
        assert_eq!(param_of(&request), "messages[1].content");
        request.turns[1] = ChatTurn::assistant("hello");
        assert_eq!(param_of(&request), "messages");
    }

    #[test]
    fn tools_and_tool_choice_are_checked_against_each_other() {
        let mut request = GatewayRequest::question(Surface::Api, "hi");
        request.options.tools = vec![order_tool(), order_tool()];
        assert_eq!(param_of(&request), "tools[1].function.name");
        request.options.tools = vec![Tool {
            name: "has space".into(),
            ..order_tool()
        }];
        assert_eq!(param_of(&request), "tools[0].function.name");
        request.options.tools = vec![Tool {
            parameters: json!("nope"),
            ..order_tool()
        }];
        assert_eq!(param_of(&request), "tools[0].function.parameters");
        request.options.tools = vec![order_tool()];
        request.options.tool_choice = Some(ToolChoice::Function("refund".into()));
        assert_eq!(param_of(&request), "tool_choice");
        request.options.tools.clear();
        request.options.tool_choice = Some(ToolChoice::Required);
        assert_eq!(param_of(&request), "tool_choice");
        // Meaningless without tools, and harmless to drop.
        request.options.tool_choice = Some(ToolChoice::None);
        request.options.parallel_tool_calls = Some(true);
        let checked = validate(&request, RequestLimits::default(), |_| true).unwrap();
        assert_eq!(checked.options.tool_choice, None);
        assert_eq!(checked.options.parallel_tool_calls, None);
    }

    #[test]
    fn a_tool_result_must_answer_an_earlier_call() {
        let mut request = GatewayRequest::question(Surface::Api, "Where is order 1234?");
        let mut result = ChatTurn::new(Role::Tool, "shipped");
        result.tool_call_id = Some("call_1".into());
        request.turns.push(result.clone());
        assert_eq!(param_of(&request), "messages[1].tool_call_id");
        let mut calling = ChatTurn::assistant("");
        calling.tool_calls = vec![ToolCall {
            id: "call_1".into(),
            name: "order_status".into(),
            arguments: "{}".into(),
        }];
        request.turns.insert(1, calling);
        let checked = validate(&request, RequestLimits::default(), |_| true).unwrap();
        assert_eq!(
            checked.turns.len(),
            3,
            "a tool result may end the conversation"
        );
        request.turns[2].tool_call_id = None;
        assert_eq!(param_of(&request), "messages[2].tool_call_id");
    }

    #[test]
    fn a_conversation_beyond_the_limits_names_the_limit() {
        let limits = RequestLimits {
            max_messages: 3,
            max_message_chars: 10,
        };
        let mut request = GatewayRequest::question(Surface::Api, "x".repeat(11));
        match validate(&request, limits, |_| true) {
            Err(GatewayError::BadRequest { param, message }) => {
                assert_eq!(param, "messages[0].content");
                assert!(message.contains("at most 10"), "{message}");
            }
            other => panic!("{other:?}"),
        }
        request.turns = vec![ChatTurn::user("hi"); 4];
        match validate(&request, limits, |_| true) {
            Err(GatewayError::BadRequest { param, message }) => {
                assert_eq!(param, "messages");
                assert!(message.contains("at most 3"), "{message}");
            }
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn system_turns_become_the_callers_system_text() {
        let mut request = GatewayRequest::question(Surface::Chat, "hi");
        request
            .turns
            .insert(0, ChatTurn::new(Role::System, " Reply in French. "));
        let cascade = validate(&request, RequestLimits::default(), |_| true).unwrap();
        request.pinned = Some("nobody".into());
        assert!(matches!(
            validate(&request, RequestLimits::default(), |name| name == "gpt"),
            Err(GatewayError::UnknownModel(_))
        ));
        assert_eq!(cascade.caller_system, "Reply in French.");
        assert_eq!(cascade.turns, vec![ChatTurn::user("hi")]);
    }
}
