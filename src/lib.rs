//! ChaosAI keeps customer-support chats answered when LLM providers fail.
//!
//! One crate builds both halves of the product: the server (feature `ssr`) and the
//! hydrated browser UI (feature `hydrate`, compiled to WASM by cargo-leptos).
//!
//! # Layout
//!
//! - [`shared`]: the types that cross the wire (chat turns, streamed chat events,
//!   attempt summaries). Compiled for both targets so each is defined once.
//! - [`app`]: Leptos components (the shell, the customer chat) and the `#[server]`
//!   functions that are the seam between the browser and the gateway.
//! - `config` (server): one typed [`Config`](config::Config) loaded from TOML with
//!   `CHAOSAI_*` environment overrides; nothing else reads the environment.
//! - `gateway` (server): the product's core and its policy. [`Gateway`](gateway::Gateway)
//!   runs a request through the [`Cascade`](gateway::cascade::Cascade) of providers
//!   in priority order, each behind its [`Breaker`](gateway::breaker::Breaker), with
//!   per-attempt timeouts and an overall deadline, splices broken streams, falls back
//!   to the last resort, and publishes events and metrics. It knows nothing of HTTP
//!   servers or the UI.
//! - `gateway::provider` (server): the [`Provider`](gateway::provider::Provider)
//!   trait and one adapter per wire protocol (OpenAI Chat Completions, which also
//!   covers Groq, Ollama and vLLM, and Anthropic Messages). Adapters own encoding,
//!   decoding, SSE parsing and the classification of failures; they never route.
//! - `sim` (server): simulated providers, real HTTP servers on loopback that speak
//!   the OpenAI and Anthropic protocols and answer from a built-in support knowledge
//!   base, so the whole real path runs without API keys.
//! - `store` (server): the SQLite pool (sqlx), its migrations, the batched
//!   [`AuditWriter`](store::audit::AuditWriter) and the audit read queries.
//! - `cache` (server): the local embedding model (ONNX Runtime through `ort`), the
//!   groundwork of the layer-0 semantic cache.
//! - `api` (server): the HTTP surfaces: the OpenAI-compatible `/v1/*`, the chaos and
//!   audit APIs, `/ws/events`, `/metrics`, `/healthz`, and the state they share.
//! - `chaos` (server): the [`FaultPlan`](chaos::FaultPlan) of injected faults and the
//!   loopback fault proxy that breaks provider exchanges on the wire.
//! - `knowledge` (server): the built-in support knowledge base the simulated providers
//!   and the last resort answer from.
//! - `traffic` (server): synthetic customer questions for demos.
//! - `server` (server): assembles configuration, providers, store and router into a
//!   running server with graceful shutdown; used by `main.rs` and the integration tests.

#![forbid(unsafe_code)]
// Release WASM builds keep Leptos's full view types (debug builds erase them);
// the board's view nests deeper than the default limit allows.
#![recursion_limit = "256"]

pub mod app;
pub mod shared;

#[cfg(feature = "ssr")]
pub mod api;
#[cfg(feature = "ssr")]
pub mod cache;
#[cfg(feature = "ssr")]
pub mod chaos;
#[cfg(feature = "ssr")]
pub mod clock;
#[cfg(feature = "ssr")]
pub mod config;
#[cfg(feature = "ssr")]
pub mod gateway;
#[cfg(feature = "ssr")]
pub mod knowledge;
#[cfg(feature = "ssr")]
pub mod server;
#[cfg(feature = "ssr")]
pub mod sim;
#[cfg(feature = "ssr")]
pub mod store;
#[cfg(feature = "ssr")]
pub mod traffic;

/// Browser entry point: hydrates the server-rendered page.
#[cfg(feature = "hydrate")]
#[wasm_bindgen::prelude::wasm_bindgen]
pub fn hydrate() {
    console_error_panic_hook::set_once();
    leptos::mount::hydrate_body(app::App);
    // Lets browser tests wait for interactivity instead of guessing with sleeps.
    if let Some(window) = web_sys::window() {
        let _ = js_sys::Reflect::set(&window, &"__chaosai_hydrated".into(), &true.into());
    }
}
