//! OpenAI Chat Completions: `POST {base}/chat/completions`, SSE `data:` chunks ending
//! with `data: [DONE]`, errors as `{"error":{"message","type","code"}}`.
//! Groq, Ollama and vLLM speak the same protocol under another base URL.
//!
//! The gateway's request is OpenAI's own vocabulary, so encoding is mostly
//! naming; `decode` reads answers, chunks (tool-call fragments, the usage chunk)
//! and error bodies.

mod decode;
mod dialect;

use super::wire::{parse_json, KeyHeader, Target};
use super::{
    Completion, PieceStream, Provider, ProviderError, ProviderRequest, ProviderTarget,
    ReasoningEffort, ResponseFormat, ToolChoice, Verbosity,
};
use crate::shared::{ChatTurn, ContinuationStyle, Protocol, Role, TurnPart};
use async_trait::async_trait;
use dialect::{Carried, Dialect, Wording};
use serde::Serialize;
use serde_json::{json, Value};

/// An adapter for any OpenAI-compatible Chat Completions endpoint.
pub struct OpenAiProvider {
    /// Name, model, endpoint, key, pool and limits.
    target: Target,
    /// How this server continues a partial answer, if it can.
    continuation: ContinuationStyle,
    /// What this server turned out not to take of a request's first wording.
    dialect: Dialect,
}

#[derive(Serialize)]
struct WireRequest<'a> {
    model: &'a str,
    messages: Vec<WireMessage<'a>>,
    #[serde(skip_serializing_if = "Option::is_none")]
    max_tokens: Option<u32>,
    /// OpenAI's reasoning models take the cap only under this name.
    #[serde(skip_serializing_if = "Option::is_none")]
    max_completion_tokens: Option<u32>,
    #[serde(skip_serializing_if = "Option::is_none")]
    temperature: Option<f32>,
    #[serde(skip_serializing_if = "Option::is_none")]
    top_p: Option<f32>,
    #[serde(skip_serializing_if = "<[_]>::is_empty")]
    stop: &'a [String],
    #[serde(skip_serializing_if = "Option::is_none")]
    seed: Option<i64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    presence_penalty: Option<f32>,
    #[serde(skip_serializing_if = "Option::is_none")]
    frequency_penalty: Option<f32>,
    #[serde(skip_serializing_if = "Option::is_none")]
    user: Option<&'a str>,
    #[serde(skip_serializing_if = "Vec::is_empty")]
    tools: Vec<Value>,
    #[serde(skip_serializing_if = "Option::is_none")]
    tool_choice: Option<Value>,
    #[serde(skip_serializing_if = "Option::is_none")]
    parallel_tool_calls: Option<bool>,
    #[serde(skip_serializing_if = "Option::is_none")]
    response_format: Option<Value>,
    #[serde(skip_serializing_if = "Option::is_none")]
    reasoning_effort: Option<&'static str>,
    #[serde(skip_serializing_if = "Option::is_none")]
    verbosity: Option<&'static str>,
    stream: bool,
    /// The usage arrives as a last chunk with empty `choices`.
    #[serde(skip_serializing_if = "Option::is_none")]
    stream_options: Option<Value>,
    /// vLLM: continue the trailing assistant message instead of starting a new one.
    #[serde(skip_serializing_if = "Option::is_none")]
    continue_final_message: Option<bool>,
    /// vLLM: with `continue_final_message`, no new assistant turn is opened.
    #[serde(skip_serializing_if = "Option::is_none")]
    add_generation_prompt: Option<bool>,
}

#[derive(Serialize)]
struct WireMessage<'a> {
    role: &'static str,
    /// `null` for an assistant turn that only calls tools, as OpenAI sends it.
    content: Option<WireContent<'a>>,
    #[serde(skip_serializing_if = "Vec::is_empty")]
    tool_calls: Vec<Value>,
    #[serde(skip_serializing_if = "Option::is_none")]
    tool_call_id: Option<&'a str>,
    /// DeepSeek and Mistral: this trailing assistant message is a prefix to continue.
    #[serde(skip_serializing_if = "Option::is_none")]
    prefix: Option<bool>,
}

/// A message's content: its text, or, when the customer showed images, its
/// parts in the order they were shown.
#[derive(Serialize)]
#[serde(untagged)]
enum WireContent<'a> {
    Text(&'a str),
    Parts(Vec<Value>),
}

impl<'a> WireContent<'a> {
    fn of(turn: &'a ChatTurn) -> Self {
        if turn.images.is_empty() {
            return WireContent::Text(&turn.content);
        }
        WireContent::Parts(
            turn.parts()
                .map(|part| match part {
                    TurnPart::Text(text) => json!({"type": "text", "text": text}),
                    TurnPart::Image(image) => {
                        let mut spec = json!({"url": image.url()});
                        if let Some(detail) = image.detail {
                            spec["detail"] = json!(detail.as_str());
                        }
                        json!({"type": "image_url", "image_url": spec})
                    }
                })
                .collect(),
        )
    }
}

fn tool_choice(choice: &ToolChoice) -> Value {
    match choice {
        ToolChoice::Auto => json!("auto"),
        ToolChoice::None => json!("none"),
        ToolChoice::Required => json!("required"),
        ToolChoice::Function(name) => json!({"type": "function", "function": {"name": name}}),
    }
}

fn response_format(format: &ResponseFormat) -> Option<Value> {
    match format {
        ResponseFormat::Text => None,
        ResponseFormat::JsonObject => Some(json!({"type": "json_object"})),
        ResponseFormat::JsonSchema {
            name,
            schema,
            strict,
        } => {
            let mut spec = json!({"name": name, "schema": schema});
            if let Some(strict) = strict {
                spec["strict"] = json!(strict);
            }
            Some(json!({"type": "json_schema", "json_schema": spec}))
        }
    }
}

impl OpenAiProvider {
    /// Creates the adapter for `target`, whose base URL is e.g. `https://api.openai.com/v1`.
    pub fn new(target: ProviderTarget, client: reqwest::Client) -> Self {
        let continuation = target.continuation;
        Self {
            target: Target::new(target, "/chat/completions", client, KeyHeader::Bearer),
            continuation,
            dialect: Dialect::default(),
        }
    }

    /// Sends with `send` in the wording learned so far, and once more in a new
    /// one for each refusal of the wording alone (at most once per adaptation).
    async fn worded<T, F, Fut>(&self, carried: Carried, send: F) -> Result<T, ProviderError>
    where
        F: Fn(Wording) -> Fut,
        Fut: std::future::Future<Output = Result<T, ProviderError>>,
    {
        loop {
            let wording = self.dialect.wording();
            match send(wording).await {
                Err(err) if self.dialect.learn(wording, carried, &err) => tracing::warn!(
                    provider = %self.target.name,
                    error = %err,
                    "the server refused the request's wording; asking again rewritten, as from now on"
                ),
                result => return result,
            }
        }
    }

    fn messages<'a>(&self, request: &'a ProviderRequest) -> Vec<WireMessage<'a>> {
        let mut messages = Vec::with_capacity(request.turns.len() + 2);
        if !request.system.is_empty() {
            messages.push(WireMessage {
                role: "system",
                content: Some(WireContent::Text(&request.system)),
                tool_calls: Vec::new(),
                tool_call_id: None,
                prefix: None,
            });
        }
        messages.extend(request.turns.iter().map(|turn| {
            let calls_only = turn.content.is_empty() && !turn.tool_calls.is_empty();
            WireMessage {
                role: turn.role.as_str(),
                content: (!calls_only).then(|| WireContent::of(turn)),
                tool_calls: turn
                    .tool_calls
                    .iter()
                    .map(|call| {
                        json!({"id": call.id, "type": "function",
                            "function": {"name": call.name, "arguments": call.arguments}})
                    })
                    .collect(),
                tool_call_id: turn.tool_call_id.as_deref(),
                prefix: None,
            }
        }));
        // A partial answer goes last, as the assistant's own, in the server's
        // dialect; the server's answer is then only what follows it.
        if let Some(partial) = &request.continuation {
            messages.push(WireMessage {
                role: Role::Assistant.as_str(),
                content: Some(WireContent::Text(partial)),
                tool_calls: Vec::new(),
                tool_call_id: None,
                prefix: (self.continuation == ContinuationStyle::Prefix).then_some(true),
            });
        }
        messages
    }

    fn request(
        &self,
        request: &ProviderRequest,
        stream: bool,
        wording: Wording,
    ) -> reqwest::RequestBuilder {
        let vllm = request.continuation.is_some()
            && self.continuation == ContinuationStyle::ContinueFinalMessage;
        let sampling = &request.options.sampling;
        let has_tools = !request.options.tools.is_empty();
        let body = WireRequest {
            model: &self.target.model,
            messages: self.messages(request),
            max_tokens: (!wording.completion_tokens).then_some(request.max_tokens),
            max_completion_tokens: wording.completion_tokens.then_some(request.max_tokens),
            temperature: sampling.temperature,
            top_p: sampling.top_p,
            stop: &sampling.stop,
            seed: sampling.seed,
            presence_penalty: sampling.presence_penalty,
            frequency_penalty: sampling.frequency_penalty,
            user: sampling.user.as_deref(),
            tools: request
                .options
                .tools
                .iter()
                .map(|tool| {
                    let mut function = json!({"name": tool.name, "parameters": tool.parameters});
                    if let Some(description) = &tool.description {
                        function["description"] = json!(description);
                    }
                    json!({"type": "function", "function": function})
                })
                .collect(),
            tool_choice: request.options.tool_choice.as_ref().map(tool_choice),
            // OpenAI refuses `parallel_tool_calls` without tools.
            parallel_tool_calls: request.options.parallel_tool_calls.filter(|_| has_tools),
            response_format: response_format(&request.options.response_format),
            reasoning_effort: request
                .options
                .reasoning_effort
                .filter(|_| !wording.no_reasoning_effort)
                .map(ReasoningEffort::as_str),
            verbosity: request
                .options
                .verbosity
                .filter(|_| !wording.no_verbosity)
                .map(Verbosity::as_str),
            stream,
            stream_options: (stream && !wording.no_stream_options)
                .then(|| json!({"include_usage": true})),
            continue_final_message: vllm.then_some(true),
            add_generation_prompt: vllm.then_some(false),
        };
        self.target.post(KeyHeader::Bearer).json(&body)
    }
}

/// A whole Chat Completions answer.
fn whole(bytes: &[u8]) -> Result<Completion, ProviderError> {
    parse_json::<decode::WireResponse>(bytes)?.into_completion()
}

#[async_trait]
impl Provider for OpenAiProvider {
    fn name(&self) -> &str {
        &self.target.name
    }

    fn model(&self) -> &str {
        &self.target.model
    }

    fn protocol(&self) -> Protocol {
        Protocol::OpenAi
    }

    fn continuation(&self) -> ContinuationStyle {
        self.continuation
    }

    async fn complete(&self, request: &ProviderRequest) -> Result<Completion, ProviderError> {
        self.worded(Carried::of(request, false), |wording| {
            self.target.fetch_whole(
                self.request(request, false, wording),
                decode::error_fault,
                decode::ChunkDecoder::default(),
                whole,
            )
        })
        .await
    }

    async fn stream(&self, request: &ProviderRequest) -> Result<PieceStream, ProviderError> {
        self.worded(Carried::of(request, true), |wording| {
            self.target.open_stream(
                self.request(request, true, wording),
                decode::error_fault,
                decode::ChunkDecoder::default(),
                whole,
            )
        })
        .await
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::gateway::provider::{Endpoint, Options, Sampling, Tool, WireLimits};
    use crate::shared::{ChatTurn, Image, ImageDetail, ImageSource, ImageType, ToolCall};
    use std::time::Duration;

    fn adapter() -> OpenAiProvider {
        OpenAiProvider::new(
            ProviderTarget {
                name: "gpt".into(),
                model: "gpt-4o".into(),
                base: Endpoint::direct("http://127.0.0.1:9/v1"),
                api_key: None,
                limits: WireLimits::with_timeouts(Duration::from_secs(1), Duration::from_secs(1)),
                continuation: ContinuationStyle::None,
            },
            reqwest::Client::new(),
        )
    }

    fn body_of(request: &ProviderRequest, stream: bool) -> Value {
        let built = adapter()
            .request(request, stream, Wording::default())
            .build()
            .unwrap();
        serde_json::from_slice(built.body().unwrap().as_bytes().unwrap()).unwrap()
    }

    fn request() -> ProviderRequest {
        ProviderRequest {
            system: "Be brief.".into(),
            turns: vec![ChatTurn::user("Where is order 1234?")],
            max_tokens: 100,
            options: Options::default(),
            continuation: None,
        }
    }

    #[test]
    fn a_plain_request_sends_only_what_was_asked() {
        let body = body_of(&request(), false);
        let keys: Vec<&str> = body
            .as_object()
            .unwrap()
            .keys()
            .map(String::as_str)
            .collect();
        assert_eq!(keys, ["max_tokens", "messages", "model", "stream"]);
        assert_eq!(
            body["messages"][0],
            json!({"role": "system", "content": "Be brief."})
        );
    }

    #[test]
    fn tools_parameters_and_tool_turns_go_out_in_openais_shape() {
        let mut request = request();
        request.options.sampling = Sampling {
            temperature: Some(0.2),
            top_p: Some(0.9),
            stop: vec!["END".into()],
            seed: Some(7),
            presence_penalty: Some(0.5),
            frequency_penalty: Some(-0.5),
            user: Some("u-1".into()),
        };
        request.options.tools = vec![Tool {
            name: "order_status".into(),
            description: None,
            parameters: json!({"type": "object"}),
        }];
        request.options.tool_choice = Some(ToolChoice::Function("order_status".into()));
        request.options.parallel_tool_calls = Some(false);
        request.options.response_format = ResponseFormat::JsonObject;
        let mut calling = ChatTurn::assistant("");
        calling.tool_calls = vec![ToolCall {
            id: "call_1".into(),
            name: "order_status".into(),
            arguments: r#"{"order_id":"1234"}"#.into(),
        }];
        let mut result = ChatTurn::new(Role::Tool, r#"{"status":"shipped"}"#);
        result.tool_call_id = Some("call_1".into());
        request.turns.extend([calling, result]);
        let body = body_of(&request, true);
        assert_eq!(body["top_p"], json!(0.9));
        assert_eq!(body["stop"], json!(["END"]));
        assert_eq!(body["seed"], 7);
        assert_eq!(body["user"], "u-1");
        assert_eq!(body["tools"][0]["function"]["name"], "order_status");
        assert_eq!(
            body["tool_choice"],
            json!({"type": "function", "function": {"name": "order_status"}})
        );
        assert_eq!(body["parallel_tool_calls"], false);
        assert_eq!(body["response_format"], json!({"type": "json_object"}));
        assert_eq!(body["stream_options"], json!({"include_usage": true}));
        assert_eq!(body["messages"][2]["content"], Value::Null);
        assert_eq!(body["messages"][2]["tool_calls"][0]["id"], "call_1");
        assert_eq!(body["messages"][3]["role"], "tool");
        assert_eq!(body["messages"][3]["tool_call_id"], "call_1");
    }

    #[test]
    fn images_go_out_as_parts_in_the_order_they_were_shown() {
        let mut request = request();
        let mut turn = ChatTurn::user("What is this? It came today.");
        turn.images = vec![
            Image {
                source: ImageSource::Data {
                    media_type: ImageType::Png,
                    base64: "iVBORw0KGgo=".into(),
                },
                detail: Some(ImageDetail::Low),
                at: 0,
            },
            Image {
                source: ImageSource::Url {
                    url: "https://shop.example/a.jpg".into(),
                },
                detail: None,
                at: "What is this? ".len(),
            },
        ];
        request.turns = vec![turn];
        let body = body_of(&request, false);
        assert_eq!(
            body["messages"][1]["content"],
            json!([
                {"type": "image_url", "image_url": {"url": "data:image/png;base64,iVBORw0KGgo=", "detail": "low"}},
                {"type": "text", "text": "What is this? "},
                {"type": "image_url", "image_url": {"url": "https://shop.example/a.jpg"}},
                {"type": "text", "text": "It came today."},
            ])
        );
        // The system turn and a text-only turn stay plain strings.
        assert_eq!(body["messages"][0]["content"], "Be brief.");
    }
}
