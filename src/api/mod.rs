//! HTTP surfaces of the server: the OpenAI-compatible API, health, and the router
//! that mounts them beside the Leptos pages and server functions.

pub mod error;
pub mod openai;

use crate::gateway::Gateway;
use axum::{extract::FromRef, routing::get, Json, Router};
use leptos::prelude::LeptosOptions;
use serde_json::json;
use std::sync::Arc;

/// Shared state of every handler (and, through Leptos context, of server functions).
#[derive(Clone)]
pub struct AppState {
    /// Site options for rendering pages and serving the WASM bundle.
    pub leptos_options: LeptosOptions,
    /// The gateway core.
    pub gateway: Arc<Gateway>,
}

impl FromRef<AppState> for LeptosOptions {
    fn from_ref(state: &AppState) -> Self {
        state.leptos_options.clone()
    }
}

/// The routes that are not Leptos pages.
pub fn routes() -> Router<AppState> {
    Router::new()
        .route("/healthz", get(healthz))
        .route("/v1/models", get(openai::models))
        .route(
            "/v1/chat/completions",
            axum::routing::post(openai::chat_completions),
        )
}

/// Ready once the server accepts connections: the state only exists after the
/// store is open and every provider is configured.
async fn healthz(
    axum::extract::State(state): axum::extract::State<AppState>,
) -> Json<serde_json::Value> {
    let providers: Vec<_> = state
        .gateway
        .cascade()
        .providers()
        .map(|p| json!({"name": p.name(), "protocol": p.protocol().as_str(), "model": p.model()}))
        .collect();
    Json(json!({"status": "ok", "providers": providers}))
}
