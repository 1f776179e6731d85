//! What the simulated model says, whatever protocol carries it: an answer from the
//! knowledge base; a call of an offered tool whose name or description fits the
//! question, with arguments taken from it (one call per order number when it
//! names several and parallel calls are allowed); an answer from the results of
//! its calls; a JSON answer in the shape a schema asks for.

use super::{OfferedTool, SimRequest, ToolUse};
use crate::knowledge;
use crate::shared::{ChatTurn, Image, ImageSource, ImageType, Role, ToolCall};
use serde_json::{json, Map, Value};

/// Most calls made at once.
const MAX_PARALLEL: usize = 4;

/// The model's reply to a request.
pub(super) enum Reply {
    /// Text, as tokens.
    Text {
        /// The answer's tokens (a word with its leading space).
        tokens: Vec<String>,
        /// Cut at `max_tokens`.
        truncated: bool,
        /// Cut where a stop sequence would appear.
        stopped: bool,
    },
    /// Calls of the caller's tools.
    Calls(Vec<ToolCall>),
}

/// Lower-case words of at least three letters.
fn words(text: &str) -> Vec<String> {
    text.split(|c: char| !c.is_alphanumeric())
        .filter(|w| w.len() >= 3 && !w.chars().all(|c| c.is_ascii_digit()))
        .map(str::to_lowercase)
        .collect()
}

/// Order numbers and other references: runs of three or more digits.
fn numbers(text: &str) -> Vec<String> {
    let mut found: Vec<String> = text
        .split(|c: char| !c.is_ascii_digit())
        .filter(|n| n.len() >= 3)
        .map(str::to_string)
        .collect();
    found.dedup();
    found
}

/// How well a tool fits a question: words of its name and description that the
/// question uses (a stem match counts: "orders" fits "order").
fn fit(tool: &OfferedTool, question: &[String]) -> usize {
    let mut own = words(&tool.name.replace(['_', '-'], " "));
    own.extend(words(&tool.description));
    own.sort();
    own.dedup();
    own.iter()
        .filter(|w| w.len() >= 4 && !STOPWORDS.contains(&w.as_str()))
        .filter(|w| {
            question
                .iter()
                .any(|q| q.starts_with(w.as_str()) || w.starts_with(q.as_str()) && q.len() >= 4)
        })
        .count()
}

/// Words too common to say that a tool fits.
const STOPWORDS: &[&str] = &[
    "this",
    "that",
    "with",
    "from",
    "what",
    "when",
    "your",
    "about",
    "tool",
    "function",
    "returns",
    "given",
    "look",
    "lookup",
    "information",
    "details",
    "customer",
];

fn is_reference(name: &str, property: &Value) -> bool {
    let text = format!(
        "{name} {}",
        property
            .get("description")
            .and_then(Value::as_str)
            .unwrap_or_default()
    )
    .to_lowercase();
    ["id", "number", "order", "ref", "tracking"]
        .iter()
        .any(|k| {
            text.split(|c: char| !c.is_alphanumeric()).any(|w| w == *k)
                || name.to_lowercase().contains(k)
        })
}

/// A value of `schema`'s type for what the model has: `reference` for
/// reference-like fields, `answer` for text.
fn value_for(name: &str, schema: &Value, reference: Option<&str>, answer: &str) -> Option<Value> {
    let kind = schema
        .get("type")
        .and_then(Value::as_str)
        .unwrap_or("string");
    if let (true, Some(reference)) = (is_reference(name, schema), reference) {
        return match kind {
            "integer" | "number" => reference.parse::<i64>().ok().map(Value::from),
            _ => Some(json!(reference)),
        };
    }
    if let Some(options) = schema.get("enum").and_then(Value::as_array) {
        return options.first().cloned();
    }
    Some(match kind {
        "integer" | "number" => json!(0),
        "boolean" => json!(false),
        "array" => json!([]),
        "object" => fill(schema, reference, answer, true)?,
        "null" => Value::Null,
        _ => json!(answer),
    })
}

/// An object for `schema`: every property the model can fill; `None` if a
/// required one cannot be (when not `forced` to call anyway).
fn fill(schema: &Value, reference: Option<&str>, answer: &str, forced: bool) -> Option<Value> {
    let properties = schema.get("properties").and_then(Value::as_object);
    // A bare object schema (Anthropic's JSON technique for `json_object`) gets
    // the answer itself.
    if properties.is_none() && forced {
        return Some(json!({"answer": answer}));
    }
    let required: Vec<&str> = schema
        .get("required")
        .and_then(Value::as_array)
        .map(|r| r.iter().filter_map(Value::as_str).collect())
        .unwrap_or_default();
    let mut object = Map::new();
    for (name, property) in properties.into_iter().flatten() {
        let referenced = is_reference(name, property) && reference.is_some();
        let needed = required.contains(&name.as_str());
        if referenced || (needed && forced) {
            object.insert(name.clone(), value_for(name, property, reference, answer)?);
        } else if needed {
            return None;
        }
    }
    Some(Value::Object(object))
}

/// A JSON answer following `schema` (an object with an `answer` when it names no
/// properties), holding `answer`.
pub(super) fn json_answer(schema: &Value, answer: &str) -> String {
    let has_properties = schema
        .get("properties")
        .and_then(Value::as_object)
        .is_some_and(|p| !p.is_empty());
    if !has_properties {
        return json!({"answer": answer}).to_string();
    }
    // Every property, required or not: a model asked for JSON fills the shape.
    let mut schema = schema.clone();
    if let Some(names) = schema["properties"]
        .as_object()
        .map(|p| p.keys().cloned().collect::<Vec<_>>())
    {
        schema["required"] = json!(names);
    }
    fill(&schema, None, answer, true)
        .unwrap_or_else(|| json!({"answer": answer}))
        .to_string()
}

/// The calls the model makes for `question`, if it makes any.
fn calls(request: &SimRequest, question: &str, new_id: &dyn Fn() -> String) -> Vec<ToolCall> {
    let asked = words(question);
    let chosen = match &request.tool_use {
        ToolUse::Never => return Vec::new(),
        ToolUse::Named(name) => request.tools.iter().find(|t| &t.name == name),
        ToolUse::Required => request
            .tools
            .iter()
            .max_by_key(|t| fit(t, &asked))
            .or(request.tools.first()),
        ToolUse::Auto => request
            .tools
            .iter()
            .filter(|t| fit(t, &asked) > 0)
            .max_by_key(|t| fit(t, &asked)),
    };
    let Some(tool) = chosen else {
        return Vec::new();
    };
    let forced = request.tool_use != ToolUse::Auto;
    let answer = knowledge::answer(&request.turns);
    let references = numbers(question);
    let mut each: Vec<Option<&str>> = references.iter().map(|n| Some(n.as_str())).collect();
    if each.is_empty() {
        each.push(None);
    }
    if !request.parallel {
        each.truncate(1);
    }
    each.truncate(MAX_PARALLEL);
    each.into_iter()
        .filter_map(|reference| fill(&tool.parameters, reference, &answer, forced))
        .map(|arguments| ToolCall {
            id: new_id(),
            name: tool.name.clone(),
            arguments: arguments.to_string(),
        })
        .collect()
}

/// What the results of the model's calls say, as a support agent would put it.
fn from_results(results: &[&ChatTurn]) -> String {
    let parts: Vec<String> = results
        .iter()
        .map(
            |result| match serde_json::from_str::<Value>(&result.content) {
                Ok(Value::Object(fields)) => fields
                    .iter()
                    .map(|(k, v)| match v {
                        Value::String(s) => format!("{} {s}", k.replace('_', " ")),
                        other => format!("{} {other}", k.replace('_', " ")),
                    })
                    .collect::<Vec<_>>()
                    .join(", "),
                _ => result.content.trim().to_string(),
            },
        )
        .collect();
    format!("Here is what I found: {}.", parts.join("; "))
}

/// The answer to a conversation. One that ends with a partial assistant answer
/// (a prefill) gets the rest of that answer, as a model that continues its own
/// turn would.
fn answer_text(turns: &[ChatTurn]) -> String {
    if let [rest @ .., last] = turns {
        if last.role == Role::Assistant {
            let full = full_answer(rest);
            return match full.strip_prefix(last.content.trim_end()) {
                Some(remainder) => remainder.to_string(),
                None => full,
            };
        }
    }
    full_answer(turns)
}

/// The whole answer to `turns`: what the model saw in the pictures of the
/// question, if it showed any, then the knowledge base's answer.
fn full_answer(turns: &[ChatTurn]) -> String {
    let answer = knowledge::answer(turns);
    let question = turns.iter().rev().find(|t| t.role == Role::User);
    match question.map(|q| q.images.as_slice()) {
        Some(images) if !images.is_empty() => format!("{} {answer}", looked_at(images)),
        _ => answer,
    }
}

/// What a model that looked at `images` says of them first (the tests read it
/// to know what reached the provider).
pub(super) fn looked_at(images: &[Image]) -> String {
    let kinds: Vec<String> = images
        .iter()
        .map(|image| match &image.source {
            ImageSource::Data { media_type, .. } => match media_type {
                ImageType::Png => "a PNG".to_string(),
                ImageType::Jpeg => "a JPEG".to_string(),
                ImageType::Gif => "a GIF".to_string(),
                ImageType::Webp => "a WebP".to_string(),
            },
            ImageSource::Url { url } => format!("one linked from {url}"),
        })
        .collect();
    let what = match images.len() {
        1 => "picture".to_string(),
        n => format!("{n} pictures"),
    };
    format!("I looked at the {what} you sent ({}).", kinds.join(", "))
}

/// The model's reply to `request`; `new_id` names each tool call.
pub(super) fn reply(request: &SimRequest, new_id: &dyn Fn() -> String) -> Reply {
    let results: Vec<&ChatTurn> = request
        .turns
        .iter()
        .rev()
        .take_while(|t| t.role == Role::Tool)
        .collect();
    let mut text = if !results.is_empty() {
        let mut results = results;
        results.reverse();
        from_results(&results)
    } else {
        let last = request.turns.last();
        if let Some(question) = last.filter(|t| t.role == Role::User && !request.tools.is_empty()) {
            let calls = calls(request, &question.content, new_id);
            if !calls.is_empty() {
                return Reply::Calls(calls);
            }
        }
        answer_text(&request.turns)
    };
    if let Some(schema) = &request.json {
        text = json_answer(schema, &text);
    }
    let mut stopped = false;
    if let Some(at) = request
        .stop
        .iter()
        .filter_map(|s| text.find(s.as_str()))
        .min()
    {
        text.truncate(at);
        stopped = true;
    }
    let mut tokens = knowledge::tokens(&text);
    let truncated = tokens.len() > request.max_tokens;
    tokens.truncate(request.max_tokens);
    Reply::Text {
        tokens,
        truncated,
        stopped,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn request(question: &str, tools: Vec<OfferedTool>, tool_use: ToolUse) -> SimRequest {
        SimRequest {
            model: "m".into(),
            system: String::new(),
            turns: vec![ChatTurn::user(question)],
            max_tokens: 1000,
            stream: false,
            tools,
            tool_use,
            parallel: true,
            json: None,
            stop: Vec::new(),
        }
    }

    fn order_tool() -> OfferedTool {
        OfferedTool {
            name: "get_order_status".into(),
            description: "Looks up the status of a customer's order by its number".into(),
            parameters: json!({"type": "object", "properties": {"order_id": {"type": "string"}},
                "required": ["order_id"]}),
        }
    }

    fn refund_tool() -> OfferedTool {
        OfferedTool {
            name: "issue_refund".into(),
            description: "Refunds a payment".into(),
            parameters: json!({"type": "object", "properties": {"amount": {"type": "number"}},
                "required": ["amount"]}),
        }
    }

    fn ids() -> impl Fn() -> String {
        let n = std::sync::atomic::AtomicUsize::new(0);
        move || {
            format!(
                "call_{}",
                n.fetch_add(1, std::sync::atomic::Ordering::Relaxed)
            )
        }
    }

    #[test]
    fn a_fitting_tool_is_called_with_the_order_number() {
        let request = request(
            "Where is my order 12345?",
            vec![refund_tool(), order_tool()],
            ToolUse::Auto,
        );
        let Reply::Calls(calls) = reply(&request, &ids()) else {
            panic!("expected a call");
        };
        assert_eq!(calls.len(), 1);
        assert_eq!(calls[0].name, "get_order_status");
        assert_eq!(calls[0].arguments, r#"{"order_id":"12345"}"#);
    }

    #[test]
    fn two_order_numbers_make_parallel_calls_unless_forbidden() {
        let mut request = request(
            "Where are orders 1111 and 2222?",
            vec![order_tool()],
            ToolUse::Auto,
        );
        let Reply::Calls(calls) = reply(&request, &ids()) else {
            panic!("expected calls");
        };
        assert_eq!(calls.len(), 2);
        assert_ne!(calls[0].id, calls[1].id);
        assert!(calls[1].arguments.contains("2222"));
        request.parallel = false;
        let Reply::Calls(calls) = reply(&request, &ids()) else {
            panic!("expected a call");
        };
        assert_eq!(calls.len(), 1);
    }

    #[test]
    fn no_fitting_tool_or_none_allowed_means_an_answer() {
        let unrelated = request(
            "How do I reset my password?",
            vec![order_tool()],
            ToolUse::Auto,
        );
        assert!(matches!(reply(&unrelated, &ids()), Reply::Text { .. }));
        let never = request(
            "Where is my order 12345?",
            vec![order_tool()],
            ToolUse::Never,
        );
        assert!(matches!(reply(&never, &ids()), Reply::Text { .. }));
        // A refund tool needs an amount the question does not give.
        let unfillable = request("I want a refund", vec![refund_tool()], ToolUse::Auto);
        assert!(matches!(reply(&unfillable, &ids()), Reply::Text { .. }));
        let forced = request(
            "I want a refund",
            vec![refund_tool()],
            ToolUse::Named("issue_refund".into()),
        );
        let Reply::Calls(calls) = reply(&forced, &ids()) else {
            panic!("a named tool is always called");
        };
        assert_eq!(calls[0].arguments, r#"{"amount":0}"#);
    }

    #[test]
    fn the_answer_comes_from_the_tools_result() {
        let mut request = request(
            "Where is my order 12345?",
            vec![order_tool()],
            ToolUse::Auto,
        );
        let mut calling = ChatTurn::assistant("");
        calling.tool_calls = vec![ToolCall {
            id: "call_1".into(),
            name: "get_order_status".into(),
            arguments: r#"{"order_id":"12345"}"#.into(),
        }];
        let mut result = ChatTurn::new(
            Role::Tool,
            r#"{"order_id":"12345","status":"shipped","eta":"Friday"}"#,
        );
        result.tool_call_id = Some("call_1".into());
        request.turns.extend([calling, result]);
        let Reply::Text { tokens, .. } = reply(&request, &ids()) else {
            panic!("expected an answer");
        };
        let text = tokens.concat();
        assert!(
            text.contains("status shipped") && text.contains("eta Friday"),
            "{text}"
        );
    }

    #[test]
    fn json_answers_follow_the_schema_and_stop_sequences_cut() {
        let schema = json!({"type": "object", "properties": {"reply": {"type": "string"}, "urgent": {"type": "boolean"}}});
        let parsed: Value = serde_json::from_str(&json_answer(&schema, "Hello")).unwrap();
        assert_eq!(parsed, json!({"reply": "Hello", "urgent": false}));
        let plain: Value =
            serde_json::from_str(&json_answer(&json!({"type": "object"}), "Hi")).unwrap();
        assert_eq!(plain, json!({"answer": "Hi"}));
        let mut stopped = request("How do I reset my password?", Vec::new(), ToolUse::Auto);
        stopped.stop = vec!["spam".into()];
        let Reply::Text {
            tokens, stopped, ..
        } = reply(&stopped, &ids())
        else {
            panic!()
        };
        assert!(stopped);
        assert!(!tokens.concat().contains("spam"));
    }
}
