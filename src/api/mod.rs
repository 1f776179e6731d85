//! HTTP surfaces of the server: the OpenAI-compatible API, the chaos API, the live
//! event stream, metrics and health, and the state they share with the Leptos
//! pages and server functions.

pub mod audit;
pub mod cache;
pub mod chaos;
pub mod error;
pub mod live;
pub mod openai;

use crate::chaos::FaultPlan;
use crate::gateway::Gateway;
use crate::shared::ProviderStatus;
use crate::store::{audit::AuditWriter, Store};
use axum::{
    extract::{FromRef, State},
    routing::{delete, get, post, put},
    Json, Router,
};
use leptos::prelude::LeptosOptions;
use serde_json::json;
use std::{collections::HashSet, sync::Arc, time::Instant};
use tokio::sync::watch;

/// Shared state of every handler (and, through Leptos context, of server functions).
#[derive(Clone)]
pub struct AppState {
    /// Site options for rendering pages and serving the WASM bundle.
    pub leptos_options: LeptosOptions,
    /// The gateway core.
    pub gateway: Arc<Gateway>,
    /// The database, for the audit read API.
    pub store: Store,
    /// The audit writer, for its counters on `/metrics`.
    pub audit: Option<AuditWriter>,
    /// Faults injected through the chaos API.
    pub faults: Arc<FaultPlan>,
    /// The token the admin endpoints require.
    pub admin_token: Arc<str>,
    /// The demo's synthetic customer traffic.
    pub traffic: Arc<crate::traffic::Traffic>,
    /// Providers that are built-in simulations (for status views).
    pub simulated: Arc<HashSet<String>>,
    /// Turns `true` when the server shuts down, so long-lived connections (the
    /// event websocket) close instead of holding the shutdown up.
    pub shutdown: watch::Receiver<bool>,
}

impl FromRef<AppState> for LeptosOptions {
    fn from_ref(state: &AppState) -> Self {
        state.leptos_options.clone()
    }
}

impl AppState {
    /// Every provider's breaker and fault, in cascade order.
    pub fn provider_statuses(&self) -> Vec<ProviderStatus> {
        let now = Instant::now();
        self.gateway
            .cascade()
            .breakers()
            .into_iter()
            .map(|b| {
                let name = b.provider.name();
                ProviderStatus {
                    name: name.to_string(),
                    protocol: b.provider.protocol().as_str().to_string(),
                    model: b.provider.model().to_string(),
                    priority: b.priority,
                    simulated: self.simulated.contains(name),
                    state: b.state,
                    consecutive_failures: b.consecutive_failures,
                    in_state_ms: now.saturating_duration_since(b.since).as_millis() as u64,
                    fault: self.faults.status(name, now),
                }
            })
            .collect()
    }
}

/// The routes that are not Leptos pages.
pub fn routes() -> Router<AppState> {
    Router::new()
        .route("/healthz", get(healthz))
        .route("/metrics", get(live::metrics))
        .route("/ws/events", get(live::events))
        .route("/v1/models", get(openai::models))
        .route("/v1/chat/completions", post(openai::chat_completions))
        .route("/api/providers", get(chaos::providers))
        .route("/api/chaos", delete(chaos::heal_all))
        .route(
            "/api/chaos/{provider}",
            put(chaos::inject).delete(chaos::heal),
        )
        .route("/api/audit/requests", get(audit::requests))
        .route("/api/audit/requests/{id}", get(audit::request))
        .route("/api/audit/transitions", get(audit::transitions))
        .route("/api/tickets", get(audit::tickets))
        .route("/chaos/login", get(chaos::login))
        .route("/api/cache", get(cache::list).delete(cache::clear))
        .route("/api/cache/{id}", delete(cache::remove))
}

/// Ready once the server accepts connections: the state only exists after the
/// store is open and every provider is configured.
async fn healthz(State(state): State<AppState>) -> Json<serde_json::Value> {
    let providers: Vec<_> = state
        .gateway
        .cascade()
        .providers()
        .map(|p| json!({"name": p.name(), "protocol": p.protocol().as_str(), "model": p.model()}))
        .collect();
    Json(json!({"status": "ok", "providers": providers}))
}
