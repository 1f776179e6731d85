//! Simulated providers: real HTTP servers on loopback that speak the Anthropic
//! Messages and OpenAI Chat Completions protocols, answer from a built-in support
//! knowledge base and pace their tokens like a real model.
//!
//! They let the whole real path (HTTP, SSE, tool calls, usage, error bodies,
//! timeouts) run without API keys. Each validates requests as strictly as the
//! real API would, so an adapter bug shows up here first.
//!
//! - `model`: what the simulated model answers: text from the knowledge base, a
//!   call of an offered tool that fits the question, an answer from a tool's
//!   result, JSON in a wanted shape.
//! - `openai`, `anthropic`: each protocol's decoding, answers, streams and errors.

mod anthropic;
mod model;
mod openai;

use crate::config::{Protocol, SimConfig};
use crate::shared::{ChatTurn, ImageType};
use axum::{
    extract::DefaultBodyLimit,
    response::{sse::Event, Sse},
    routing::post,
    serve::ListenerExt,
    Router,
};
use futures::StreamExt;
use rand::Rng;
use serde_json::Value;
use std::{convert::Infallible, net::SocketAddr, sync::Arc, time::Duration};

/// Largest request body a simulated provider takes: the Messages API's
/// documented 32 MB (OpenAI takes as much), not axum's 2 MB default, which a
/// conversation with a few screenshots passes.
pub const REQUEST_LIMIT_BYTES: usize = 32 << 20;

/// Token pacing of a simulated model.
#[derive(Clone, Copy, Debug)]
struct Pacing {
    min: Duration,
    max: Duration,
}

impl Pacing {
    fn next_delay(&self) -> Duration {
        if self.max <= self.min {
            return self.min;
        }
        rand::thread_rng().gen_range(self.min..=self.max)
    }
}

/// What every handler of one simulated provider shares.
struct SimState {
    pacing: Pacing,
}

/// A running simulated provider.
#[derive(Clone, Debug)]
pub struct SimServer {
    /// Where it listens.
    pub addr: SocketAddr,
    /// Base URL to configure an adapter with.
    pub base_url: String,
}

/// Starts a simulated provider for `protocol` on a free loopback port. It runs
/// until the runtime that started it ends.
pub async fn start(protocol: Protocol, config: &SimConfig) -> std::io::Result<SimServer> {
    let listener = tokio::net::TcpListener::bind(("127.0.0.1", 0)).await?;
    let addr = listener.local_addr()?;
    let state = Arc::new(SimState {
        pacing: Pacing {
            min: Duration::from_millis(config.chunk_delay_min_ms),
            max: Duration::from_millis(config.chunk_delay_max_ms),
        },
    });
    let (router, base_url) = match protocol {
        Protocol::Anthropic => (
            Router::new().route("/v1/messages", post(anthropic::messages)),
            format!("http://{addr}"),
        ),
        Protocol::OpenAi => (
            Router::new().route("/v1/chat/completions", post(openai::completions)),
            format!("http://{addr}/v1"),
        ),
    };
    let app = router
        .layer(DefaultBodyLimit::max(REQUEST_LIMIT_BYTES))
        .with_state(state);
    // Token-by-token streams need TCP_NODELAY, as a real provider's servers set it.
    let listener = listener.tap_io(|tcp| {
        let _ = tcp.set_nodelay(true);
    });
    tokio::spawn(async move {
        if let Err(err) = axum::serve(listener, app).await {
            tracing::error!(error = %err, "simulated provider stopped");
        }
    });
    Ok(SimServer { addr, base_url })
}

/// A tool the caller offered, in either protocol's terms.
#[derive(Clone, Debug)]
struct OfferedTool {
    name: String,
    description: String,
    /// Its arguments' JSON schema.
    parameters: Value,
}

/// Whether and which tool the model must call.
#[derive(Clone, Debug, PartialEq, Eq)]
enum ToolUse {
    /// As it sees fit.
    Auto,
    /// Never.
    Never,
    /// Some tool.
    Required,
    /// This one.
    Named(String),
}

/// A request both protocols share once decoded.
struct SimRequest {
    model: String,
    /// The system prompt (for the prompt's token count).
    system: String,
    turns: Vec<ChatTurn>,
    max_tokens: usize,
    stream: bool,
    tools: Vec<OfferedTool>,
    tool_use: ToolUse,
    /// Whether several tools may be called at once.
    parallel: bool,
    /// The JSON schema the answer must follow (OpenAI's `response_format`).
    json: Option<Value>,
    /// Texts that end the answer where they would appear.
    stop: Vec<String>,
}

impl SimRequest {
    /// The prompt's size in the model's tokens (words, as `knowledge::tokens`
    /// cuts them, and what a real model charges for each image).
    fn prompt_tokens(&self) -> usize {
        let words = |text: &str| crate::knowledge::tokens(text).len();
        words(&self.system)
            + self
                .turns
                .iter()
                .map(|t| {
                    words(&t.content)
                        + t.tool_calls
                            .iter()
                            .map(|c| words(&c.arguments))
                            .sum::<usize>()
                        + t.images
                            .iter()
                            .map(|i| i.estimated_tokens() as usize)
                            .sum::<usize>()
                })
                .sum::<usize>()
    }
}

/// A non-streamed answer takes about as long as generating it, capped so demos stay brisk.
async fn think(pacing: Pacing, tokens: usize) {
    let total = (0..tokens).map(|_| pacing.next_delay()).sum::<Duration>();
    if !total.is_zero() {
        tokio::time::sleep(total.min(Duration::from_secs(2))).await;
    }
}

/// Paces `events` with the model's token delay.
fn paced(
    pacing: Pacing,
    events: Vec<Event>,
) -> Sse<impl futures::Stream<Item = Result<Event, Infallible>>> {
    let stream = futures::stream::iter(events).then(move |event| async move {
        // A zero delay skips the timer: tokio rounds any sleep up to its 1 ms tick,
        // which would make "pacing off" pace at 1 ms a chunk.
        let delay = pacing.next_delay();
        if !delay.is_zero() {
            tokio::time::sleep(delay).await;
        }
        Ok(event)
    });
    Sse::new(stream)
}

/// Text pieces of a tool call's arguments as a model streams them: a few
/// characters at a time.
fn argument_pieces(arguments: &str) -> Vec<String> {
    let chars: Vec<char> = arguments.chars().collect();
    chars.chunks(6).map(|c| c.iter().collect()).collect()
}

/// The format of an inline image's `base64`, if it decodes to one a model
/// reads (a real provider checks the bytes).
fn inline_image(base64: &str) -> Option<ImageType> {
    use base64::Engine;
    let bytes = base64::engine::general_purpose::STANDARD
        .decode(base64)
        .ok()?;
    ImageType::sniff(&bytes)
}

/// Whether `url` is one a provider would fetch an image from.
fn fetchable(url: &str) -> bool {
    reqwest::Url::parse(url)
        .is_ok_and(|u| matches!(u.scheme(), "http" | "https") && u.host_str().is_some())
}

/// A fresh id with `prefix`, as each protocol spells its ids.
fn fresh_id(prefix: &str) -> String {
    format!(
        "{prefix}{}",
        &uuid::Uuid::new_v4().simple().to_string()[..24]
    )
}
