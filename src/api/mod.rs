//! HTTP surfaces of the server: the OpenAI-compatible API, the chaos API, the live
//! event stream, metrics and health, and the state they share with the Leptos
//! pages and server functions.

pub(crate) mod admin;
pub(crate) mod audit;
mod bodies;
mod cache;
mod chaos;
mod clients;
mod cors;
mod error;
pub(crate) mod history;
mod keys;
mod live;
mod openai;
mod origin;
mod params;
mod unmatched;

use crate::gateway::Gateway;
use crate::store::Store;
use axum::{
    extract::{FromRef, State},
    routing::{any, delete, get, post, put},
    Json, Router,
};
use leptos::prelude::LeptosOptions;
use serde_json::json;
use std::sync::Arc;
use tokio::sync::watch;

/// Shared state of every handler (and, through Leptos context, of server
/// functions): a handle, since axum clones the state for every request, and a
/// clone of the parts themselves (the site options alone are a dozen strings)
/// was a visible share of a request's CPU.
#[derive(Clone)]
pub struct AppState(Arc<AppParts>);

impl AppState {
    /// The state of a server assembled from `parts`.
    pub fn new(parts: AppParts) -> Self {
        Self(Arc::new(parts))
    }
}

impl std::ops::Deref for AppState {
    type Target = AppParts;

    fn deref(&self) -> &AppParts {
        &self.0
    }
}

/// What the handlers share.
pub struct AppParts {
    /// Site options for rendering pages and serving the WASM bundle.
    pub leptos_options: LeptosOptions,
    /// The gateway core.
    pub gateway: Arc<Gateway>,
    /// The database, for the audit read API.
    pub store: Store,
    /// The token the admin endpoints require.
    pub admin_token: Arc<str>,
    /// The one-time code of the board link printed at start-up.
    pub login_code: Arc<admin::LoginCode>,
    /// Whether the admin cookie is `Secure` (the server is reached over https).
    pub secure_cookies: bool,
    /// Client keys of `/v1`.
    pub clients: Arc<crate::clients::Clients>,
    /// Whether customer text is stored redacted.
    pub redact: bool,
    /// What each provider's model costs, for the audit's cost report.
    pub prices: Arc<std::collections::BTreeMap<String, crate::shared::audit::Price>>,
    /// The demo's synthetic customer traffic.
    pub traffic: Arc<crate::traffic::Traffic>,
    /// The link to the other replicas, when there are any.
    pub cluster: Option<Arc<crate::cluster::Cluster>>,
    /// Whether the database answered its last check.
    pub store_up: Arc<std::sync::atomic::AtomicBool>,
    /// The limits on conversation bodies and the budget the large ones share.
    pub bodies: Arc<BodyLimits>,
    /// Turns `true` when the server shuts down, so long-lived connections (the
    /// event websocket) close instead of holding the shutdown up.
    pub shutdown: watch::Receiver<bool>,
}

impl FromRef<AppState> for LeptosOptions {
    fn from_ref(state: &AppState) -> Self {
        state.leptos_options.clone()
    }
}

pub use bodies::{body_deadline, BodyLimits};
pub use cors::{ApiOrigins, WithCors};
pub use origin::same_origin_only;

/// The routes that are not Leptos pages.
pub fn routes() -> Router<AppState> {
    Router::new()
        .route("/healthz", get(healthz))
        .route("/metrics", get(live::metrics))
        .route("/ws/events", get(live::events))
        .route("/v1/models", get(openai::models))
        .route("/v1/models/{*model}", get(openai::model))
        .route("/v1/chat/completions", post(openai::chat_completions))
        .route("/v1/responses", post(openai::responses))
        .route(
            "/v1/responses/{*id}",
            get(openai::response_by_id).delete(openai::delete_response),
        )
        .route("/v1/{*rest}", any(unmatched::unknown_v1))
        .route("/api/providers", get(chaos::providers))
        .route("/api/chaos", delete(chaos::heal_all))
        .route(
            "/api/chaos/{provider}",
            put(chaos::inject).delete(chaos::heal),
        )
        .route("/api/audit/requests", get(audit::requests))
        .route("/api/audit/requests/{id}", get(audit::request))
        .route("/api/audit/transitions", get(audit::transitions))
        .route("/api/audit/usage", get(audit::usage))
        .route("/api/audit/incident", get(history::incident_api))
        .route("/api/audit/costs", get(audit::costs))
        .route("/api/audit/export", get(audit::export))
        .route("/api/tickets/{id}", get(audit::ticket))
        .route("/api/tickets/{id}/resolve", post(audit::resolve_ticket))
        .route("/api/clients", get(clients::list).post(clients::create))
        .route("/api/clients/{name}", delete(clients::remove))
        .route("/api/tickets", get(audit::tickets))
        .route("/chaos/login", get(admin::login_link).post(admin::login))
        .route("/api/cache", get(cache::list).delete(cache::clear))
        .route("/api/cache/{id}", delete(cache::remove))
        // Set on every route above: a wrong method costs the right ones nothing.
        .method_not_allowed_fallback(unmatched::method_not_allowed)
}

/// Ready once the server accepts connections: the state only exists after the
/// store is open and every provider is configured. Always 200 while customers
/// get answers: a database or Redis outage is `"degraded"`, with what is down,
/// since the replica still answers (the audit waits in its queue; breakers and
/// faults go local).
async fn healthz(State(state): State<AppState>) -> Json<serde_json::Value> {
    use std::sync::atomic::Ordering::Relaxed;
    let providers: Vec<_> = state
        .gateway
        .cascade()
        .providers()
        .map(|p| json!({"name": p.name(), "protocol": p.protocol().as_str(), "model": p.model()}))
        .collect();
    let store_up = state.store_up.load(Relaxed);
    let redis_up = state.cluster.as_ref().map(|c| c.is_up());
    let mut down = Vec::new();
    if !store_up {
        down.push("database");
    }
    if redis_up == Some(false) {
        down.push("redis");
    }
    let status = if down.is_empty() { "ok" } else { "degraded" };
    let mut body = json!({
        "status": status,
        "providers": providers,
        "store": {"engine": state.store.db().engine().label(), "up": store_up},
    });
    if let Some(cluster) = &state.cluster {
        use crate::gateway::peers::Peers;
        body["cluster"] = json!({"replica": cluster.replica(), "redis_up": cluster.is_up()});
    }
    if !down.is_empty() {
        body["down"] = json!(down);
    }
    Json(body)
}
