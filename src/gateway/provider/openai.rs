//! OpenAI Chat Completions: `POST {base}/chat/completions`, SSE `data:` chunks ending
//! with `data: [DONE]`, errors as `{"error":{"message","type","code"}}`.
//! Groq, Ollama and vLLM speak the same protocol under another base URL.

use super::sse::{Flow, SseDecoder};
use super::wire::Target;
use super::{
    Completion, FinishReason, Piece, PieceStream, Provider, ProviderError, ProviderRequest,
    ProviderTarget, WireFault,
};
use crate::shared::{ContinuationStyle, Protocol, Role};
use async_trait::async_trait;
use serde::{Deserialize, Serialize};

/// An adapter for any OpenAI-compatible Chat Completions endpoint.
pub struct OpenAiProvider {
    /// Name, model, endpoint, key, pool and limits.
    target: Target,
    /// How this server continues a partial answer, if it can.
    continuation: ContinuationStyle,
}

#[derive(Serialize)]
struct WireRequest<'a> {
    model: &'a str,
    messages: Vec<WireMessage<'a>>,
    max_tokens: u32,
    #[serde(skip_serializing_if = "Option::is_none")]
    temperature: Option<f32>,
    stream: bool,
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
    content: &'a str,
    /// DeepSeek and Mistral: this trailing assistant message is a prefix to continue.
    #[serde(skip_serializing_if = "Option::is_none")]
    prefix: Option<bool>,
}

#[derive(Deserialize)]
struct WireResponse {
    choices: Vec<WireChoice>,
}

#[derive(Deserialize)]
struct WireChoice {
    message: WireAnswer,
    finish_reason: Option<String>,
}

#[derive(Deserialize)]
struct WireAnswer {
    content: Option<String>,
}

#[derive(Deserialize)]
struct WireChunk {
    choices: Vec<WireChunkChoice>,
}

#[derive(Deserialize)]
struct WireChunkChoice {
    #[serde(default)]
    delta: WireDelta,
    #[serde(default)]
    finish_reason: Option<String>,
}

#[derive(Deserialize, Default)]
struct WireDelta {
    content: Option<String>,
}

#[derive(Deserialize)]
struct WireError {
    error: WireErrorBody,
}

#[derive(Deserialize)]
struct WireErrorBody {
    message: String,
    #[serde(default, rename = "type")]
    kind: Option<String>,
    /// A string in OpenAI's API; some compatible servers send a number.
    #[serde(default)]
    code: Option<serde_json::Value>,
}

fn error_fault(body: &str) -> Option<WireFault> {
    let error = serde_json::from_str::<WireError>(body).ok()?.error;
    Some(WireFault {
        message: error.message,
        kind: error.kind,
        code: error.code.and_then(|c| match c {
            serde_json::Value::String(s) => Some(s),
            serde_json::Value::Null => None,
            other => Some(other.to_string()),
        }),
    })
}

/// OpenAI's finish reasons; an unknown one is read as a plain stop.
fn finish_reason(reason: &str) -> FinishReason {
    reason.parse().unwrap_or(FinishReason::Stop)
}

impl OpenAiProvider {
    /// Creates the adapter for `target`, whose base URL is e.g. `https://api.openai.com/v1`.
    pub fn new(target: ProviderTarget, client: reqwest::Client) -> Self {
        let continuation = target.continuation;
        Self {
            target: Target::new(target, "/chat/completions", client),
            continuation,
        }
    }

    fn request(&self, request: &ProviderRequest, stream: bool) -> reqwest::RequestBuilder {
        let mut messages = Vec::with_capacity(request.turns.len() + 2);
        if !request.system.is_empty() {
            messages.push(WireMessage {
                role: "system",
                content: &request.system,
                prefix: None,
            });
        }
        messages.extend(request.turns.iter().map(|turn| WireMessage {
            role: turn.role.as_str(),
            content: &turn.content,
            prefix: None,
        }));
        // A partial answer goes last, as the assistant's own, in the server's
        // dialect; the server's answer is then only what follows it.
        let continues = request.continuation.is_some();
        if let Some(partial) = &request.continuation {
            messages.push(WireMessage {
                role: Role::Assistant.as_str(),
                content: partial,
                prefix: (self.continuation == ContinuationStyle::Prefix).then_some(true),
            });
        }
        let vllm = continues && self.continuation == ContinuationStyle::ContinueFinalMessage;
        let body = WireRequest {
            model: &self.target.model,
            messages,
            max_tokens: request.max_tokens,
            temperature: request.temperature,
            stream,
            continue_final_message: vllm.then_some(true),
            add_generation_prompt: vllm.then_some(false),
        };
        let builder = self
            .target
            .client
            .post(self.target.endpoint.url())
            .json(&body);
        match &self.target.api_key {
            Some(key) => builder.bearer_auth(key.expose()),
            None => builder,
        }
    }
}

struct ChunkDecoder;

impl SseDecoder for ChunkDecoder {
    fn decode(
        &mut self,
        event: &super::sse::Event,
        out: &mut Vec<Piece>,
    ) -> Result<Flow, ProviderError> {
        let data = event.data.trim();
        if data == "[DONE]" {
            return Ok(Flow::End);
        }
        if data.is_empty() {
            return Ok(Flow::Continue);
        }
        // Providers report failures inside a 200 stream as an `error` object.
        if let Some(fault) = error_fault(data) {
            return Err(ProviderError::Server {
                status: 500,
                message: fault.message,
            });
        }
        let chunk: WireChunk = serde_json::from_str(data)
            .map_err(|err| ProviderError::Malformed(format!("bad chunk: {err}")))?;
        for choice in chunk.choices {
            if let Some(text) = choice.delta.content {
                out.push(Piece::Text(text));
            }
            if let Some(reason) = choice.finish_reason {
                out.push(Piece::Finish(finish_reason(&reason)));
            }
        }
        Ok(Flow::Continue)
    }
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
        let body: WireResponse = self
            .target
            .fetch_json(self.request(request, false), error_fault)
            .await?;
        let choice = body
            .choices
            .into_iter()
            .next()
            .ok_or_else(|| ProviderError::Malformed("no choices in response".into()))?;
        Ok(Completion {
            text: choice.message.content.unwrap_or_default(),
            finish_reason: choice
                .finish_reason
                .as_deref()
                .map_or(FinishReason::Stop, finish_reason),
        })
    }

    async fn stream(&self, request: &ProviderRequest) -> Result<PieceStream, ProviderError> {
        self.target
            .open_stream(self.request(request, true), error_fault, ChunkDecoder)
            .await
    }
}
