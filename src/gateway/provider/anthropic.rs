//! Anthropic Messages: `POST {base}/v1/messages` with `x-api-key` and
//! `anthropic-version`, the system prompt as a top-level field, SSE events
//! `message_start` … `content_block_delta` … `message_stop`, errors as
//! `{"type":"error","error":{"type","message"}}` (status 529 when overloaded).

use super::sse::{Flow, SseDecoder};
use super::wire::Target;
use super::{
    Completion, FinishReason, Piece, PieceStream, Provider, ProviderError, ProviderRequest,
    ProviderTarget, WireFault,
};
use crate::shared::{ContinuationStyle, Protocol, Role};
use async_trait::async_trait;
use serde::{Deserialize, Serialize};

/// The API version this adapter speaks.
const API_VERSION: &str = "2023-06-01";

/// An adapter for the Anthropic Messages API.
pub struct AnthropicProvider {
    /// Name, model, endpoint, key, pool and limits.
    target: Target,
    /// `prefill` unless configured off.
    continuation: ContinuationStyle,
}

#[derive(Serialize)]
struct WireRequest<'a> {
    model: &'a str,
    #[serde(skip_serializing_if = "str::is_empty")]
    system: &'a str,
    messages: Vec<WireMessage<'a>>,
    max_tokens: u32,
    #[serde(skip_serializing_if = "Option::is_none")]
    temperature: Option<f32>,
    stream: bool,
}

#[derive(Serialize)]
struct WireMessage<'a> {
    role: &'static str,
    content: &'a str,
}

#[derive(Deserialize)]
struct WireResponse {
    content: Vec<WireBlock>,
    stop_reason: Option<String>,
}

#[derive(Deserialize)]
struct WireBlock {
    #[serde(rename = "type")]
    kind: String,
    #[serde(default)]
    text: String,
}

#[derive(Deserialize)]
struct WireEvent {
    #[serde(rename = "type")]
    kind: String,
    #[serde(default)]
    delta: Option<WireEventDelta>,
    #[serde(default)]
    error: Option<WireErrorBody>,
}

#[derive(Deserialize)]
struct WireEventDelta {
    #[serde(default)]
    text: Option<String>,
    #[serde(default)]
    stop_reason: Option<String>,
}

#[derive(Deserialize)]
struct WireError {
    error: WireErrorBody,
}

#[derive(Deserialize)]
struct WireErrorBody {
    #[serde(rename = "type", default)]
    kind: String,
    message: String,
}

fn error_fault(body: &str) -> Option<WireFault> {
    let error = serde_json::from_str::<WireError>(body).ok()?.error;
    Some(WireFault {
        message: error.message,
        code: None,
        kind: Some(error.kind).filter(|k| !k.is_empty()),
    })
}

/// Anthropic's stop reasons in OpenAI's vocabulary.
fn finish_reason(stop_reason: Option<&str>) -> FinishReason {
    match stop_reason {
        Some("max_tokens") => FinishReason::Length,
        Some("tool_use") => FinishReason::ToolCalls,
        Some("refusal") => FinishReason::ContentFilter,
        _ => FinishReason::Stop,
    }
}

impl AnthropicProvider {
    /// Creates the adapter for `target`, whose base URL is e.g. `https://api.anthropic.com`.
    pub fn new(target: ProviderTarget, client: reqwest::Client) -> Self {
        let continuation = target.continuation;
        Self {
            target: Target::new(target, "/v1/messages", client),
            continuation,
        }
    }

    fn request(&self, request: &ProviderRequest, stream: bool) -> reqwest::RequestBuilder {
        // Anthropic has no system role inside `messages`; system text travels in `system`.
        let mut messages: Vec<WireMessage> = request
            .turns
            .iter()
            .filter(|turn| turn.role != Role::System)
            .map(|turn| WireMessage {
                role: if turn.role == Role::Assistant {
                    "assistant"
                } else {
                    "user"
                },
                content: &turn.content,
            })
            .collect();
        // Prefill: a trailing assistant message is continued by the model. The API
        // rejects trailing whitespace there, so the continuation starts with it.
        if let Some(partial) = &request.continuation {
            messages.push(WireMessage {
                role: "assistant",
                content: partial.trim_end(),
            });
        }
        let body = WireRequest {
            model: &self.target.model,
            system: &request.system,
            messages,
            max_tokens: request.max_tokens,
            temperature: request.temperature,
            stream,
        };
        let builder = self
            .target
            .client
            .post(self.target.endpoint.url())
            .header("anthropic-version", API_VERSION)
            .json(&body);
        match &self.target.api_key {
            Some(key) => builder.header("x-api-key", key.expose()),
            None => builder,
        }
    }
}

struct EventDecoder;

impl SseDecoder for EventDecoder {
    fn decode(
        &mut self,
        event: &super::sse::Event,
        out: &mut Vec<Piece>,
    ) -> Result<Flow, ProviderError> {
        if event.data.trim().is_empty() {
            return Ok(Flow::Continue);
        }
        let parsed: WireEvent = serde_json::from_str(&event.data)
            .map_err(|err| ProviderError::Malformed(format!("bad {} event: {err}", event.event)))?;
        match parsed.kind.as_str() {
            "content_block_delta" => {
                if let Some(text) = parsed.delta.and_then(|d| d.text) {
                    out.push(Piece::Text(text));
                }
                Ok(Flow::Continue)
            }
            "message_delta" => {
                if let Some(reason) = parsed.delta.and_then(|d| d.stop_reason) {
                    out.push(Piece::Finish(finish_reason(Some(&reason))));
                }
                Ok(Flow::Continue)
            }
            "message_stop" => Ok(Flow::End),
            "error" => {
                let error = parsed.error.unwrap_or(WireErrorBody {
                    kind: "api_error".into(),
                    message: "error event without details".into(),
                });
                let status = if error.kind == "overloaded_error" {
                    529
                } else {
                    500
                };
                Err(ProviderError::Server {
                    status,
                    message: error.message,
                })
            }
            _ => Ok(Flow::Continue),
        }
    }
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

    async fn complete(&self, request: &ProviderRequest) -> Result<Completion, ProviderError> {
        let body: WireResponse = self
            .target
            .fetch_json(self.request(request, false), error_fault)
            .await?;
        let text = body
            .content
            .into_iter()
            .filter(|block| block.kind == "text")
            .map(|block| block.text)
            .collect();
        Ok(Completion {
            text,
            finish_reason: finish_reason(body.stop_reason.as_deref()),
        })
    }

    async fn stream(&self, request: &ProviderRequest) -> Result<PieceStream, ProviderError> {
        self.target
            .open_stream(self.request(request, true), error_fault, EventDecoder)
            .await
    }
}
