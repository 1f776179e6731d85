//! The one trait every provider adapter implements, and the vocabulary of failures.
//!
//! An adapter owns its protocol: it encodes the request, decodes the answer and its
//! SSE events, and classifies what went wrong into a [`ProviderError`]. It never
//! decides what happens next; that is the cascade's job.

//!
//! - `request` and `answer`: what is asked of a provider and what comes back.
//! - `error`: the classified failures.
//! - `openai`, `anthropic`: one adapter per protocol, each encoding in its
//!   `mod.rs` and decoding (answers, stream events, errors) in its `decode.rs`.
//! - `wire`, `sse`, `endpoint`: sending, reading within limits, and where to.

mod answer;
mod anthropic;
mod endpoint;
mod error;
mod openai;
mod request;
mod sse;
mod wire;

pub use answer::{
    Completion, FinishReason, Piece, PieceStream, ServedModel, ToolCallDelta, MAX_TOOL_CALLS,
};
pub use anthropic::AnthropicProvider;
pub use endpoint::Endpoint;
pub(crate) use error::retry_after;
pub use error::{ProviderError, TimeoutKind, WireFault};
pub use openai::OpenAiProvider;
pub use request::{
    Options, ProviderRequest, ReasoningEffort, ResponseFormat, Sampling, Tool, ToolChoice,
    Verbosity,
};
pub use wire::WireLimits;

use crate::config::Secret;
use crate::shared::{ContinuationStyle, Protocol};
use async_trait::async_trait;
use std::sync::Arc;

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
    /// How the provider continues a partial answer, if it can.
    pub continuation: ContinuationStyle,
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
    /// How it continues a partial answer; `None` means it is never asked to.
    fn continuation(&self) -> ContinuationStyle;
    /// The request parameter it cannot honour (and that may not be dropped),
    /// if any: the cascade then passes it by.
    fn cannot_honour(&self, _request: &ProviderRequest) -> Option<&'static str> {
        None
    }
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
