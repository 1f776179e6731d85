//! Anthropic Messages: `POST {base}/v1/messages` with `x-api-key` and
//! `anthropic-version`, the system prompt as a top-level field, SSE events
//! `message_start` … `content_block_delta` … `message_stop`, errors as
//! `{"type":"error","error":{"type","message"}}` (status 529 when overloaded).
//!
//! OpenAI's vocabulary is translated both ways: tools become `tools` with an
//! `input_schema`, an assistant's tool calls `tool_use` blocks, a `tool` turn a
//! `tool_result` block in a user turn; `stop` becomes `stop_sequences` and `user`
//! `metadata.user_id`. A JSON `response_format` uses Anthropic's documented
//! technique: one forced tool whose input schema is the wanted JSON, whose input
//! then is the answer. `seed` and the penalties have no Anthropic equivalent and
//! only ever nudge sampling, so they are dropped; a temperature above Anthropic's
//! maximum of 1 is not, and such a request passes this provider by.

mod decode;

use super::wire::{parse_json, KeyHeader, Target};
use super::{
    Completion, PieceStream, Provider, ProviderError, ProviderRequest, ProviderTarget,
    ResponseFormat, ToolChoice,
};
use crate::shared::{ChatTurn, ContinuationStyle, Image, ImageSource, Protocol, Role, TurnPart};
use async_trait::async_trait;
use serde::Serialize;
use serde_json::{json, Value};
use std::sync::atomic::{AtomicBool, Ordering};

/// The API version this adapter speaks.
const API_VERSION: &str = "2023-06-01";
/// How Anthropic takes the key.
const API_KEY: KeyHeader = KeyHeader::Named("x-api-key");

/// Anthropic's highest temperature.
const MAX_TEMPERATURE: f32 = 1.0;

/// The forced tool's name for a `json_object` answer.
const JSON_TOOL: &str = "json_answer";

/// An adapter for the Anthropic Messages API.
pub struct AnthropicProvider {
    /// Name, model, endpoint, key, pool and limits.
    target: Target,
    /// `prefill` unless configured off.
    continuation: ContinuationStyle,
    /// The model refused `temperature` with `top_p` once: later requests with
    /// both pass it by without I/O, as one above its maximum temperature does.
    refuses_both_samplings: AtomicBool,
}

#[derive(Serialize)]
struct WireRequest<'a> {
    model: &'a str,
    #[serde(skip_serializing_if = "str::is_empty")]
    system: &'a str,
    messages: Vec<WireMessage>,
    max_tokens: u32,
    #[serde(skip_serializing_if = "Option::is_none")]
    temperature: Option<f32>,
    #[serde(skip_serializing_if = "Option::is_none")]
    top_p: Option<f32>,
    #[serde(skip_serializing_if = "<[_]>::is_empty")]
    stop_sequences: &'a [String],
    #[serde(skip_serializing_if = "Option::is_none")]
    metadata: Option<Value>,
    #[serde(skip_serializing_if = "Vec::is_empty")]
    tools: Vec<Value>,
    #[serde(skip_serializing_if = "Option::is_none")]
    tool_choice: Option<Value>,
    stream: bool,
}

#[derive(Serialize)]
struct WireMessage {
    role: &'static str,
    content: Vec<Value>,
}

/// Anthropic's tool-use ids are `[a-zA-Z0-9_-]+`; ids another provider made may not be.
fn tool_use_id(id: &str) -> String {
    let id: String = id
        .chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() || c == '_' || c == '-' {
                c
            } else {
                '_'
            }
        })
        .collect();
    if id.is_empty() {
        "toolu_".into()
    } else {
        id
    }
}

/// An image as Anthropic takes it: its bytes with their type, or its address.
/// Anthropic has no `detail`; it looks at the picture as it is.
fn image_block(image: &Image) -> Value {
    let source = match &image.source {
        ImageSource::Data { media_type, base64 } => {
            json!({"type": "base64", "media_type": media_type.as_str(), "data": base64})
        }
        ImageSource::Url { url } => json!({"type": "url", "url": url}),
    };
    json!({"type": "image", "source": source})
}

/// A turn's content blocks.
fn blocks(turn: &ChatTurn) -> Vec<Value> {
    let mut blocks = Vec::with_capacity(1 + turn.tool_calls.len());
    if turn.role == Role::Tool {
        blocks.push(json!({"type": "tool_result",
            "tool_use_id": tool_use_id(turn.tool_call_id.as_deref().unwrap_or_default()),
            "content": turn.content}));
        return blocks;
    }
    // Anthropic refuses empty and whitespace-only text blocks; an assistant
    // turn may be calls only.
    if turn.images.is_empty() {
        if !turn.content.trim().is_empty() {
            blocks.push(json!({"type": "text", "text": turn.content}));
        }
    } else {
        blocks.extend(turn.parts().filter_map(|part| match part {
            TurnPart::Text(text) if text.trim().is_empty() => None,
            TurnPart::Text(text) => Some(json!({"type": "text", "text": text})),
            TurnPart::Image(image) => Some(image_block(image)),
        }));
    }
    for call in &turn.tool_calls {
        let input = serde_json::from_str::<Value>(&call.arguments)
            .ok()
            .filter(Value::is_object)
            .unwrap_or_else(|| json!({}));
        blocks.push(json!({"type": "tool_use", "id": tool_use_id(&call.id),
            "name": call.name, "input": input}));
    }
    blocks
}

/// The conversation as Anthropic wants it: user and assistant turns only (a tool
/// result is the user's), consecutive turns of one side merged into one message.
fn messages(request: &ProviderRequest) -> Vec<WireMessage> {
    let mut messages: Vec<WireMessage> = Vec::with_capacity(request.turns.len() + 1);
    for turn in request.turns.iter().filter(|t| t.role != Role::System) {
        let role = if turn.role == Role::Assistant {
            "assistant"
        } else {
            "user"
        };
        let content = blocks(turn);
        // An assistant turn with nothing in it (a bot's record of an empty
        // reply) says nothing, and Anthropic refuses a message without content.
        if content.is_empty() {
            continue;
        }
        match messages.last_mut() {
            Some(last) if last.role == role => last.content.extend(content),
            _ => messages.push(WireMessage { role, content }),
        }
    }
    // Prefill: a trailing assistant message is continued by the model. The API
    // rejects trailing whitespace there, so the continuation starts with it.
    if let Some(partial) = &request.continuation {
        messages.push(WireMessage {
            role: "assistant",
            content: vec![json!({"type": "text", "text": partial.trim_end()})],
        });
    }
    messages
}

/// A tool's JSON schema as Anthropic takes it: OpenAI accepts a schema that
/// leaves out its root `"type": "object"` (`"parameters": {}`), Anthropic
/// refuses the tool without it.
fn input_schema(schema: &Value) -> Value {
    match schema {
        Value::Object(fields) if !fields.contains_key("type") => {
            let mut fields = fields.clone();
            fields.insert("type".into(), json!("object"));
            Value::Object(fields)
        }
        schema => schema.clone(),
    }
}

/// The forced tool that carries a JSON answer, if one is wanted.
fn json_tool(format: &ResponseFormat) -> Option<(String, Value)> {
    match format {
        ResponseFormat::Text => None,
        ResponseFormat::JsonObject => Some((JSON_TOOL.into(), json!({"type": "object"}))),
        ResponseFormat::JsonSchema { name, schema, .. } => Some((name.clone(), schema.clone())),
    }
}

fn tool_choice(request: &ProviderRequest) -> Option<Value> {
    let mut choice = match &request.options.tool_choice {
        None if request.options.parallel_tool_calls == Some(false) => json!({"type": "auto"}),
        None => return None,
        Some(ToolChoice::Auto) => json!({"type": "auto"}),
        Some(ToolChoice::None) => return Some(json!({"type": "none"})),
        Some(ToolChoice::Required) => json!({"type": "any"}),
        Some(ToolChoice::Function(name)) => json!({"type": "tool", "name": name}),
    };
    if request.options.parallel_tool_calls == Some(false) {
        choice["disable_parallel_tool_use"] = json!(true);
    }
    Some(choice)
}

impl AnthropicProvider {
    /// Creates the adapter for `target`, whose base URL is e.g. `https://api.anthropic.com`.
    pub fn new(target: ProviderTarget, client: reqwest::Client) -> Self {
        let continuation = target.continuation;
        Self {
            target: Target::new(target, "/v1/messages", client, API_KEY),
            continuation,
            refuses_both_samplings: AtomicBool::new(false),
        }
    }

    /// Remembers the model's refusal of `temperature` with `top_p`, so that the
    /// next request with both is passed by without asking.
    fn learn<T>(&self, result: Result<T, ProviderError>) -> Result<T, ProviderError> {
        if let Err(ProviderError::Unsupported { message, .. }) = &result {
            if decode::refuses_temperature_with_top_p(message)
                && !self.refuses_both_samplings.swap(true, Ordering::Relaxed)
            {
                tracing::warn!(
                    provider = %self.target.name,
                    "the model takes temperature or top_p, not both: requests with both go to the next provider from now on"
                );
            }
        }
        result
    }

    fn request(&self, request: &ProviderRequest, stream: bool) -> reqwest::RequestBuilder {
        let sampling = &request.options.sampling;
        let json_tool = json_tool(&request.options.response_format);
        let (tools, tool_choice) = match &json_tool {
            Some((name, schema)) => (
                vec![
                    json!({"name": name, "description": "Give the answer as this JSON.",
                    "input_schema": input_schema(schema)}),
                ],
                Some(json!({"type": "tool", "name": name})),
            ),
            None => (
                request
                    .options
                    .tools
                    .iter()
                    .map(|tool| {
                        let mut spec =
                            json!({"name": tool.name, "input_schema": input_schema(&tool.parameters)});
                        if let Some(description) = &tool.description {
                            spec["description"] = json!(description);
                        }
                        spec
                    })
                    .collect(),
                tool_choice(request),
            ),
        };
        let body = WireRequest {
            model: &self.target.model,
            system: &request.system,
            messages: messages(request),
            max_tokens: request.max_tokens,
            temperature: sampling.temperature,
            top_p: sampling.top_p,
            stop_sequences: &sampling.stop,
            metadata: sampling.user.as_ref().map(|user| json!({"user_id": user})),
            // `tool_choice` is refused without tools.
            tool_choice: tool_choice.filter(|_| !tools.is_empty()),
            tools,
            stream,
        };
        self.target
            .post(API_KEY)
            .header("anthropic-version", API_VERSION)
            .json(&body)
    }
}

/// A whole Messages answer; `tool` names the tool that carries a JSON answer.
fn whole(bytes: &[u8], tool: Option<String>) -> Result<Completion, ProviderError> {
    parse_json::<decode::WireResponse>(bytes)?.into_completion(tool)
}

#[async_trait]
impl Provider for AnthropicProvider {
    fn name(&self) -> &str {
        &self.target.name
    }

    fn model(&self) -> &str {
        &self.target.model
    }

    fn protocol(&self) -> Protocol {
        Protocol::Anthropic
    }

    fn continuation(&self) -> ContinuationStyle {
        self.continuation
    }

    fn cannot_honour(&self, request: &ProviderRequest) -> Option<&'static str> {
        let sampling = &request.options.sampling;
        if sampling.temperature.is_some_and(|t| t > MAX_TEMPERATURE) {
            return Some("temperature");
        }
        if sampling.temperature.is_some()
            && sampling.top_p.is_some()
            && self.refuses_both_samplings.load(Ordering::Relaxed)
        {
            return Some("top_p");
        }
        // Anthropic refuses a whitespace-only stop sequence ("\n" is a common
        // one); dropped, it would not stop the answer where the caller asked.
        if sampling.stop.iter().any(|stop| stop.trim().is_empty()) {
            return Some("stop");
        }
        let json = request.options.response_format != ResponseFormat::Text;
        // The JSON technique takes the tools over; and a JSON answer lives in a
        // tool's input, which a prefill cannot continue.
        if json && (!request.options.tools.is_empty() || request.continuation.is_some()) {
            return Some("response_format");
        }
        None
    }

    async fn complete(&self, request: &ProviderRequest) -> Result<Completion, ProviderError> {
        let tool = json_tool(&request.options.response_format).map(|(name, _)| name);
        let result = self
            .target
            .fetch_whole(
                self.request(request, false),
                decode::error_fault,
                decode::EventDecoder::new(tool.clone()),
                |bytes| whole(bytes, tool),
            )
            .await;
        self.learn(result)
    }

    async fn stream(&self, request: &ProviderRequest) -> Result<PieceStream, ProviderError> {
        let tool = json_tool(&request.options.response_format).map(|(name, _)| name);
        let decoder = decode::EventDecoder::new(tool.clone());
        let result = self
            .target
            .open_stream(
                self.request(request, true),
                decode::error_fault,
                decoder,
                |bytes| whole(bytes, tool),
            )
            .await;
        self.learn(result)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::gateway::provider::{Endpoint, Options, Tool, WireLimits};
    use crate::shared::ToolCall;
    use std::time::Duration;

    fn adapter() -> AnthropicProvider {
        AnthropicProvider::new(
            ProviderTarget {
                name: "claude".into(),
                model: "claude-sonnet".into(),
                base: Endpoint::direct("http://127.0.0.1:9"),
                api_key: None,
                limits: WireLimits::with_timeouts(Duration::from_secs(1), Duration::from_secs(1)),
                continuation: ContinuationStyle::Prefill,
            },
            reqwest::Client::new(),
        )
    }

    fn body_of(request: &ProviderRequest) -> Value {
        let built = adapter().request(request, true).build().unwrap();
        serde_json::from_slice(built.body().unwrap().as_bytes().unwrap()).unwrap()
    }

    fn request() -> ProviderRequest {
        ProviderRequest {
            system: "Be brief.".into(),
            turns: vec![ChatTurn::user("Where is order 1234?")],
            max_tokens: 100,
            options: Options {
                tools: vec![Tool {
                    name: "order_status".into(),
                    description: Some("Looks an order up".into()),
                    parameters: json!({"type": "object", "properties": {"order_id": {"type": "string"}}}),
                }],
                ..Options::default()
            },
            continuation: None,
        }
    }

    #[test]
    fn tool_turns_become_tool_use_and_tool_result_blocks() {
        let mut request = request();
        let mut calling = ChatTurn::assistant("Let me check.");
        calling.tool_calls = vec![
            ToolCall {
                id: "call.1".into(),
                name: "order_status".into(),
                arguments: r#"{"order_id":"1234"}"#.into(),
            },
            ToolCall {
                id: "call_2".into(),
                name: "order_status".into(),
                arguments: r#"{"order_id":"99"}"#.into(),
            },
        ];
        let mut first = ChatTurn::new(Role::Tool, "shipped");
        first.tool_call_id = Some("call.1".into());
        let mut second = ChatTurn::new(Role::Tool, "packed");
        second.tool_call_id = Some("call_2".into());
        request.turns.extend([calling, first, second]);
        request.options.sampling.stop = vec!["END".into()];
        request.options.sampling.user = Some("u-1".into());
        request.options.sampling.seed = Some(3);
        request.options.tool_choice = Some(ToolChoice::Required);
        request.options.parallel_tool_calls = Some(false);
        let body = body_of(&request);
        let messages = body["messages"].as_array().unwrap();
        assert_eq!(messages.len(), 3, "both results merge into one user turn");
        assert_eq!(
            messages[1]["content"][0],
            json!({"type": "text", "text": "Let me check."})
        );
        assert_eq!(
            messages[1]["content"][1],
            json!({"type": "tool_use", "id": "call_1", "name": "order_status",
                "input": {"order_id": "1234"}})
        );
        assert_eq!(messages[2]["role"], "user");
        assert_eq!(messages[2]["content"][0]["type"], "tool_result");
        assert_eq!(messages[2]["content"][0]["tool_use_id"], "call_1");
        assert_eq!(messages[2]["content"][1]["tool_use_id"], "call_2");
        assert_eq!(body["tools"][0]["input_schema"]["type"], "object");
        assert_eq!(
            body["tool_choice"],
            json!({"type": "any", "disable_parallel_tool_use": true})
        );
        assert_eq!(body["stop_sequences"], json!(["END"]));
        assert_eq!(body["metadata"], json!({"user_id": "u-1"}));
        assert!(body.get("seed").is_none());
    }

    #[test]
    fn images_become_image_blocks_in_the_order_they_were_shown() {
        let mut request = request();
        let mut turn = ChatTurn::user("What is this?  It came today.");
        turn.images = vec![
            Image {
                source: ImageSource::Url {
                    url: "https://shop.example/a.jpg".into(),
                },
                detail: Some(crate::shared::ImageDetail::High),
                at: "What is this?".len(),
            },
            Image {
                source: ImageSource::Data {
                    media_type: crate::shared::ImageType::Webp,
                    base64: "UklGRg==".into(),
                },
                detail: None,
                at: "What is this?  ".len(),
            },
        ];
        request.turns = vec![turn];
        let body = body_of(&request);
        // The whitespace between the two images is no block: Anthropic refuses those.
        assert_eq!(
            body["messages"][0]["content"],
            json!([
                {"type": "text", "text": "What is this?"},
                {"type": "image", "source": {"type": "url", "url": "https://shop.example/a.jpg"}},
                {"type": "image", "source": {"type": "base64", "media_type": "image/webp", "data": "UklGRg=="}},
                {"type": "text", "text": "It came today."},
            ])
        );
    }

    #[test]
    fn a_json_answer_is_one_forced_tool() {
        let mut request = request();
        request.options.tools.clear();
        request.options.response_format = ResponseFormat::JsonSchema {
            name: "order".into(),
            schema: json!({"type": "object", "properties": {"status": {"type": "string"}}}),
            strict: None,
        };
        let body = body_of(&request);
        assert_eq!(body["tools"][0]["name"], "order");
        assert_eq!(
            body["tool_choice"],
            json!({"type": "tool", "name": "order"})
        );
        assert_eq!(adapter().cannot_honour(&request), None);
        request.continuation = Some("{\"sta".into());
        assert_eq!(adapter().cannot_honour(&request), Some("response_format"));
    }

    #[test]
    fn a_temperature_above_one_is_not_silently_changed() {
        let mut request = request();
        request.options.sampling.temperature = Some(1.5);
        assert_eq!(adapter().cannot_honour(&request), Some("temperature"));
        request.options.sampling.temperature = Some(1.0);
        assert_eq!(adapter().cannot_honour(&request), None);
    }
}
