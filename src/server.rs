//! Assembles a running server: store, providers (real or simulated), gateway,
//! routes, and graceful shutdown. `main.rs` and the integration tests both start
//! the product through [`start`], so tests exercise exactly what ships.

use crate::api::{self, AppState};
use crate::config::{Config, SimulateMode};
use crate::gateway::cascade::{Cascade, CascadeEntry};
use crate::gateway::prompt::PromptTemplate;
use crate::gateway::provider::{self, WireLimits};
use crate::gateway::Gateway;
use crate::store::{Store, StoreError};
use axum::{extract::DefaultBodyLimit, Router};
use leptos::prelude::LeptosOptions;
use leptos_axum::{generate_route_list, LeptosRoutes};
use std::{net::SocketAddr, sync::Arc, time::Duration};
use tokio::{sync::oneshot, task::JoinHandle};
use tower_http::{catch_panic::CatchPanicLayer, trace::TraceLayer};

/// Why a server could not start.
#[derive(Debug, thiserror::Error)]
pub enum StartError {
    /// The database could not be opened or migrated.
    #[error(transparent)]
    Store(#[from] StoreError),
    /// A socket could not be bound.
    #[error("cannot listen: {0}")]
    Io(#[from] std::io::Error),
    /// The HTTP client could not be built.
    #[error("cannot build the HTTP client: {0}")]
    Client(#[from] reqwest::Error),
}

/// Where each provider is reached, for the start-up banner.
#[derive(Clone, Debug)]
pub struct ProviderRoute {
    /// Provider name.
    pub name: String,
    /// Base URL in use.
    pub base_url: String,
    /// Whether it is a built-in simulation.
    pub simulated: bool,
}

/// A server accepting connections.
pub struct RunningServer {
    /// The bound address (useful when the config asked for port 0).
    pub addr: SocketAddr,
    /// Where each provider is reached.
    pub providers: Vec<ProviderRoute>,
    /// The gateway, for tests that inspect it.
    pub gateway: Arc<Gateway>,
    /// The store, for tests that inspect rows.
    pub store: Store,
    /// Fires the graceful shutdown.
    shutdown: oneshot::Sender<()>,
    /// The serving task.
    task: JoinHandle<()>,
    /// How long in-flight answers may take after shutdown starts.
    grace: Duration,
}

impl RunningServer {
    /// Stops accepting connections, lets in-flight answers finish within the grace
    /// period, then returns. Returns `false` if the grace period ran out.
    pub async fn shutdown(self) -> bool {
        let _ = self.shutdown.send(());
        let mut task = self.task;
        match tokio::time::timeout(self.grace, &mut task).await {
            Ok(_) => true,
            Err(_) => {
                tracing::warn!(
                    grace_ms = self.grace.as_millis() as u64,
                    "in-flight answers cut off after the grace period"
                );
                task.abort();
                false
            }
        }
    }

    /// Waits until the server stops by itself (it does not, unless shut down).
    pub async fn wait(&mut self) {
        let _ = (&mut self.task).await;
    }
}

/// Builds the gateway: one adapter per configured provider, simulated where no key
/// is given (or when simulation is forced).
async fn build_gateway(
    config: &Config,
    store: Store,
) -> Result<(Gateway, Vec<ProviderRoute>), StartError> {
    let client = reqwest::Client::builder()
        .connect_timeout(Duration::from_millis(config.gateway.connect_timeout_ms))
        .pool_idle_timeout(Duration::from_secs(60))
        .build()?;
    let timeouts = config.gateway.timeouts();
    let limits = WireLimits {
        first_byte: timeouts.first_byte,
        stall: timeouts.stall,
    };
    let mut entries = Vec::new();
    let mut routes = Vec::new();
    for provider_config in &config.providers {
        let mut provider_config = provider_config.clone();
        let simulated =
            config.gateway.simulate == SimulateMode::Always || provider_config.api_key.is_none();
        let base_url = if simulated {
            provider_config.api_key = None;
            crate::sim::start(provider_config.protocol, &config.sim)
                .await?
                .base_url
        } else {
            provider_config.base_url.clone()
        };
        tracing::info!(provider = %provider_config.name, %base_url, simulated, "provider ready");
        routes.push(ProviderRoute {
            name: provider_config.name.clone(),
            base_url: base_url.clone(),
            simulated,
        });
        let template = provider_config
            .system_template
            .clone()
            .unwrap_or_else(|| config.gateway.system_prompt.clone());
        entries.push(CascadeEntry {
            provider: provider::build(&provider_config, &base_url, client.clone(), limits),
            template: PromptTemplate::new(template),
            max_tokens: provider_config.max_tokens,
        });
    }
    Ok((
        Gateway::new(Cascade::new(entries, timeouts), Some(store)),
        routes,
    ))
}

/// Starts the whole product on `config.server.addr`.
pub async fn start(
    config: Config,
    leptos_options: LeptosOptions,
) -> Result<RunningServer, StartError> {
    let store = Store::open(&config.database.url).await?;
    let (gateway, providers) = build_gateway(&config, store.clone()).await?;
    let gateway = Arc::new(gateway);
    let state = AppState {
        leptos_options: leptos_options.clone(),
        gateway: gateway.clone(),
    };
    let app = router(state, config.server.body_limit_bytes);
    let listener = tokio::net::TcpListener::bind(config.server.addr).await?;
    let addr = listener.local_addr()?;
    let (shutdown, signal) = oneshot::channel::<()>();
    let task = tokio::spawn(async move {
        let serve = axum::serve(listener, app).with_graceful_shutdown(async move {
            let _ = signal.await;
        });
        if let Err(err) = serve.await {
            tracing::error!(error = %err, "server stopped with an error");
        }
    });
    Ok(RunningServer {
        addr,
        providers,
        gateway,
        store,
        shutdown,
        task,
        grace: Duration::from_millis(config.server.shutdown_grace_ms),
    })
}

/// The full router: API routes, Leptos pages and server functions, static files.
fn router(state: AppState, body_limit: usize) -> Router {
    let leptos_options = state.leptos_options.clone();
    let routes = generate_route_list(crate::app::App);
    Router::new()
        .merge(api::routes())
        .leptos_routes(&state, routes, {
            let options = leptos_options.clone();
            move || crate::app::shell(options.clone())
        })
        .fallback(leptos_axum::file_and_error_handler::<AppState, _>(
            crate::app::shell,
        ))
        .layer(DefaultBodyLimit::max(body_limit))
        .layer(CatchPanicLayer::new())
        .layer(TraceLayer::new_for_http())
        .with_state(state)
}
