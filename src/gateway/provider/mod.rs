//! The one trait every provider adapter implements, and the vocabulary of failures.
//!
//! An adapter owns its protocol: it encodes the request, decodes the answer and its
//! SSE events, and classifies what went wrong into a [`ProviderError`]. It never
//! decides what happens next; that is the cascade's job.

mod anthropic;
mod endpoint;
mod openai;
mod sse;

pub use anthropic::AnthropicProvider;
pub use endpoint::Endpoint;
pub use openai::OpenAiProvider;
pub use sse::WireLimits;

use crate::config::Secret;
use crate::shared::{AttemptOutcome, Protocol};
use async_trait::async_trait;
use futures::stream::BoxStream;
use std::sync::Arc;
use std::time::Duration;

/// What an adapter needs to reach its provider, and nothing more.
#[derive(Clone, Debug)]
pub struct ProviderTarget {
    /// Configured name, reported in routes and attempts.
    pub name: String,
    /// Model id sent in every request.
    pub model: String,
    /// The provider's base URL, direct or through the fault proxy.
    pub base: Endpoint,
    /// The API key; absent for simulated or keyless local servers (Ollama, vLLM).
    pub api_key: Option<Secret>,
    /// Limits only the adapter can enforce, since only it sees the bytes arrive.
    pub limits: WireLimits,
}

/// What the cascade asks of a provider: the conversation with its system prompt already rendered.
#[derive(Clone, Debug)]
pub struct ProviderRequest {
    /// The rendered system prompt for this provider's model.
    pub system: String,
    /// The conversation without system turns, oldest first; the last turn is the customer's.
    pub turns: Vec<crate::shared::ChatTurn>,
    /// Largest answer to ask for, in tokens.
    pub max_tokens: u32,
    /// Sampling temperature, when the caller set one.
    pub temperature: Option<f32>,
    /// The start of the answer already sent to the customer by a provider that
    /// broke mid-stream; this provider is asked to continue it, not to repeat it.
    pub continuation: Option<String>,
}

/// What an OpenAI-protocol model is told after the partial answer it must
/// continue; that protocol has no assistant prefill, unlike Anthropic's.
pub const CONTINUE_PROMPT: &str =
    "Your previous answer was cut off. Continue it exactly where it stopped, \
without repeating anything and without any preamble.";

crate::spelled! {
    /// Why a provider stopped, in OpenAI's vocabulary (each adapter maps its own).
    pub enum FinishReason {
        /// The answer is complete.
        Stop => "stop",
        /// The answer hit the token limit.
        Length => "length",
        /// The model called tools instead of answering.
        ToolCalls => "tool_calls",
        /// A content filter stopped the answer.
        ContentFilter => "content_filter",
    }
}

/// A complete (non-streamed) answer.
#[derive(Clone, Debug, PartialEq)]
pub struct Completion {
    /// The answer's text.
    pub text: String,
    /// Why the provider stopped.
    pub finish_reason: FinishReason,
}

impl Completion {
    /// The completion as the pieces a stream of it would carry.
    pub fn into_pieces(self) -> Vec<Piece> {
        vec![Piece::Text(self.text), Piece::Finish(self.finish_reason)]
    }
}

/// One piece of an answer as it arrives.
#[derive(Clone, Debug, PartialEq)]
pub enum Piece {
    /// Text to append to the answer (never empty in a stream).
    Text(String),
    /// The provider said why it stopped.
    Finish(FinishReason),
}

/// A streamed answer: pieces in order, ending with `None` only after the
/// provider's explicit end-of-stream marker. A stream that stops without that
/// marker yields a [`ProviderError::Malformed`] or [`ProviderError::Connection`]
/// as its last item, so a cut stream is never mistaken for a whole answer.
pub type PieceStream = BoxStream<'static, Result<Piece, ProviderError>>;

/// Which limit a timed-out attempt ran into.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum TimeoutKind {
    /// Establishing the connection.
    Connect,
    /// Waiting for the response head.
    FirstByte,
    /// Waiting for the first content token of a stream.
    FirstToken,
    /// Silence between two chunks of a stream.
    Stall,
    /// The whole attempt, or the request's overall deadline.
    Total,
}

/// Why a provider call failed, as classified by its adapter.
#[derive(Clone, Debug, PartialEq, thiserror::Error)]
pub enum ProviderError {
    /// 5xx or Anthropic's 529 "overloaded": the provider is unwell; try another.
    #[error("provider error {status}: {message}")]
    Server {
        /// HTTP status.
        status: u16,
        /// The provider's message.
        message: String,
    },
    /// 429: too many requests; `retry_after` is what the provider asked for.
    #[error("rate limited (retry after {retry_after:?}): {message}")]
    RateLimited {
        /// Parsed `Retry-After` (or `retry-after-ms`), when given.
        retry_after: Option<Duration>,
        /// The provider's message.
        message: String,
    },
    /// A limit ran out before the provider answered.
    #[error("timed out ({0:?})")]
    Timeout(TimeoutKind),
    /// The connection could not be made, or broke.
    #[error("connection error: {0}")]
    Connection(String),
    /// The provider answered something that is not its protocol (bad JSON, broken SSE,
    /// a stream that ends without its end marker).
    #[error("malformed response: {0}")]
    Malformed(String),
    /// The provider refused our credentials or does not know the model: a configuration
    /// problem of this provider alone, so another provider may still serve.
    #[error("provider rejected the gateway ({status}): {message}")]
    Misconfigured {
        /// HTTP status (401, 403, 404).
        status: u16,
        /// The provider's message.
        message: String,
    },
    /// The request itself is invalid (400, 413, 422): no provider could serve it,
    /// so it goes back to the caller instead of falling through.
    #[error("invalid request ({status}): {message}")]
    InvalidRequest {
        /// HTTP status.
        status: u16,
        /// The provider's message.
        message: String,
    },
}

impl ProviderError {
    /// Whether another provider may succeed where this one failed.
    pub fn falls_through(&self) -> bool {
        !matches!(self, ProviderError::InvalidRequest { .. })
    }

    /// The HTTP status behind the failure, when the provider answered with one.
    pub fn status(&self) -> Option<u16> {
        match self {
            ProviderError::Server { status, .. }
            | ProviderError::Misconfigured { status, .. }
            | ProviderError::InvalidRequest { status, .. } => Some(*status),
            ProviderError::RateLimited { .. } => Some(429),
            _ => None,
        }
    }

    /// How long the provider asked callers to wait (a 429's Retry-After).
    pub fn retry_after(&self) -> Option<Duration> {
        match self {
            ProviderError::RateLimited { retry_after, .. } => *retry_after,
            _ => None,
        }
    }

    /// The kind of failure as attempts record it (audit rows, UI, metrics labels).
    pub fn outcome(&self) -> AttemptOutcome {
        match self {
            ProviderError::Server { .. } => AttemptOutcome::ServerError,
            ProviderError::RateLimited { .. } => AttemptOutcome::RateLimited,
            ProviderError::Timeout(_) => AttemptOutcome::Timeout,
            ProviderError::Connection(_) => AttemptOutcome::ConnectionError,
            ProviderError::Malformed(_) => AttemptOutcome::Malformed,
            ProviderError::Misconfigured { .. } => AttemptOutcome::Misconfigured,
            ProviderError::InvalidRequest { .. } => AttemptOutcome::InvalidRequest,
        }
    }

    /// Classifies an HTTP error status with the message the adapter extracted from its body.
    pub fn from_status(status: u16, message: String, retry_after: Option<Duration>) -> Self {
        match status {
            429 => ProviderError::RateLimited {
                retry_after,
                message,
            },
            401 | 403 | 404 => ProviderError::Misconfigured { status, message },
            400..=499 => ProviderError::InvalidRequest { status, message },
            _ => ProviderError::Server { status, message },
        }
    }

    /// Classifies a transport error from reqwest.
    pub fn from_transport(err: &reqwest::Error) -> Self {
        if err.is_timeout() {
            ProviderError::Timeout(if err.is_connect() {
                TimeoutKind::Connect
            } else {
                TimeoutKind::Total
            })
        } else if err.is_decode() {
            ProviderError::Malformed(err.to_string())
        } else {
            // Include the source chain: "error sending request" alone says nothing.
            let mut message = err.to_string();
            let mut source = std::error::Error::source(err);
            while let Some(inner) = source {
                message.push_str(": ");
                message.push_str(&inner.to_string());
                source = inner.source();
            }
            ProviderError::Connection(message)
        }
    }
}

/// One provider of the cascade, whatever protocol it speaks.
#[async_trait]
pub trait Provider: Send + Sync {
    /// The provider's configured name.
    fn name(&self) -> &str;
    /// The model id sent to the provider.
    fn model(&self) -> &str;
    /// The protocol it speaks.
    fn protocol(&self) -> Protocol;
    /// Asks for a whole answer in one response.
    async fn complete(&self, request: &ProviderRequest) -> Result<Completion, ProviderError>;
    /// Asks for a streamed answer. Returns once the response head arrived and was
    /// accepted; the pieces follow on the returned stream.
    async fn stream(&self, request: &ProviderRequest) -> Result<PieceStream, ProviderError>;
}

/// Parses a `Retry-After` header given in seconds (the form LLM APIs use), or
/// OpenAI's `retry-after-ms`.
pub(crate) fn retry_after(headers: &reqwest::header::HeaderMap) -> Option<Duration> {
    let get = |name: &str| headers.get(name).and_then(|v| v.to_str().ok());
    if let Some(ms) = get("retry-after-ms").and_then(|v| v.trim().parse::<f64>().ok()) {
        return Some(Duration::from_secs_f64(ms.max(0.0) / 1000.0));
    }
    get("retry-after")
        .and_then(|v| v.trim().parse::<f64>().ok())
        .map(|secs| Duration::from_secs_f64(secs.max(0.0)))
}

/// Builds the adapter that speaks `protocol` to `target`.
pub fn build(
    protocol: Protocol,
    target: ProviderTarget,
    client: reqwest::Client,
) -> Arc<dyn Provider> {
    match protocol {
        Protocol::OpenAi => Arc::new(OpenAiProvider::new(target, client)),
        Protocol::Anthropic => Arc::new(AnthropicProvider::new(target, client)),
    }
}
