//! ChaosAI keeps customer-support chats answered when LLM providers fail.
//!
//! One crate builds both halves of the product: the server (feature `ssr`) and the
//! hydrated browser UI (feature `hydrate`, compiled to WASM by `scripts/site.sh`).
//!
//! # Layout
//!
//! From the bottom up; a module imports only modules listed below it.
//!
//! - `clock` (server): the injected time policy reads (breakers, fault expiry, cache
//!   TTL, timestamps), so tests step a manual clock instead of sleeping.
//! - [`shared`]: the types that cross the wire (chat turns and events, the live
//!   events, the audit rows) and the names of outcomes, each with one spelling.
//! - `config` (server): one typed [`Config`](config::Config) loaded from TOML with
//!   `CHAOSAI_*` environment overrides; a leaf that imports nothing of the core.
//! - `clients` (server): client keys of `/v1` (hashed), their tenants and their
//!   requests- and tokens-per-minute limits.
//! - `cache` (server): layer 0, the semantic cache: local embeddings (ONNX Runtime),
//!   an HNSW index, the guards that keep a wrong answer out, persistence, TTL.
//! - `store` (server): the database (SQLite embedded, or PostgreSQL shared by
//!   replicas; one sqlx code path for both), migrations per engine, the batched
//!   [`AuditWriter`](store::audit::AuditWriter) and the audit read queries.
//! - `chaos` (server): the `FaultPlan` of injected faults and the
//!   loopback fault proxy that breaks provider exchanges on the wire.
//! - `knowledge` (server): the built-in support knowledge base the simulated
//!   providers and the last resort answer from.
//! - `gateway` (server): the core and its policy, one concept a file. Its
//!   [`Gateway::answer`](gateway::Gateway::answer) is the one path of every question:
//!   validation, cache, the [`Cascade`](gateway::cascade::Cascade) of providers behind
//!   their breakers, the last resort, the splice of broken streams, and the record of
//!   the request. `gateway::provider` holds one adapter per wire protocol (OpenAI
//!   Chat Completions, which also covers Groq, Ollama and vLLM; Anthropic Messages):
//!   adapters own encoding, decoding, SSE and the classification of failures; the
//!   cascade owns policy. The gateway knows nothing of HTTP servers or the UI.
//! - `sim` (server): simulated providers, real HTTP servers on loopback that speak
//!   the OpenAI and Anthropic protocols, so the whole real path runs without keys.
//! - `traffic` (server): synthetic customer questions for demos.
//! - `cluster` (server): replicas sharing breakers, faults, the boards' events and
//!   new cache entries through Redis, behind the core's `gateway::peers::Peers`;
//!   nothing on the request path waits for it, and each replica goes on alone
//!   while Redis is down.
//! - `api` (server): the HTTP surfaces: the OpenAI-compatible `/v1/*`, the chaos,
//!   audit and cache admin APIs, `/ws/events`, `/metrics`, `/healthz`.
//! - [`app`]: Leptos components (the chat, the chaos board, the audit page) and the
//!   `#[server]` functions that are the seam between the browser and the gateway.
//! - `server` (server): assembles configuration, providers, store, gateway and
//!   router into a running server with graceful shutdown; `settings` turns the
//!   configuration into the core's settings, once.
//!
//! # The path of one request
//!
//! `POST /v1/chat/completions` → `api/bodies.rs` (the body, under its limit and
//! the large bodies' shared budget) → `api/openai/` (decode, errors in OpenAI's shape)
//! → `gateway/mod.rs` `Gateway::answer` → `gateway/request.rs` (validate)
//! → `gateway/cache_key.rs` → `cache/semantic.rs` (lookup) → on a miss
//! `gateway/cascade.rs` (breaker from `gateway/breaker.rs`, attempt limits)
//! → `gateway/provider/openai/` or `anthropic/` over `gateway/provider/sse/` (the
//! SSE parser; the envelope that reads a repeated chunk as its text alone)
//! → back in `gateway/mod.rs`, `gateway/splice.rs` streams the rest (continuing a
//! broken stream elsewhere) and ends `gateway/recorder.rs` (metrics, live trace,
//! audit row through `store/audit.rs`) → `api/openai/` encodes the answer whole
//! or as SSE chunks. `POST /v1/responses` takes the same path from
//! `api/openai/responses/` (its own decode and events, the same gateway request,
//! a kept response's conversation put before its input by `keep.rs` through
//! `store/responses.rs`).
//! The chat page's `ask` server function (`app/chat.rs`) and the synthetic traffic
//! (`traffic.rs`) enter at `Gateway::answer` too.

#![forbid(unsafe_code)]
// Release WASM builds keep Leptos's full view types (debug builds erase them);
// the board's view nests deeper than the default limit allows.
#![recursion_limit = "256"]

pub mod app;
pub mod shared;

#[cfg(feature = "ssr")]
mod api;
#[cfg(feature = "ssr")]
pub mod cache;
#[cfg(feature = "ssr")]
mod chaos;
#[cfg(feature = "ssr")]
pub mod clients;
#[cfg(feature = "ssr")]
pub mod clock;
#[cfg(feature = "ssr")]
pub mod cluster;
#[cfg(feature = "ssr")]
pub mod config;
#[cfg(feature = "ssr")]
pub mod gateway;
#[cfg(feature = "ssr")]
mod knowledge;
#[cfg(feature = "ssr")]
pub mod server;
#[cfg(feature = "ssr")]
pub mod sim;
#[cfg(feature = "ssr")]
pub mod store;
#[cfg(feature = "ssr")]
mod traffic;

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
