//! Assembles a running server: store, providers (real or simulated), the fault
//! proxy, gateway, routes, and graceful shutdown. `main.rs` and the integration
//! tests both start the product through [`start`], so tests exercise what ships.

use crate::api::{self, AppState};
use crate::cache::{CacheSettings, Embedder, SemanticCache};
use crate::chaos::{FaultPlan, FaultProxy, Upstream};
use crate::config::{Config, SimulateMode};
use crate::gateway::cascade::{Cascade, CascadeEntry};
use crate::gateway::events::{now_ms, EventBus};
use crate::gateway::metrics::Metrics;
use crate::gateway::prompt::PromptTemplate;
use crate::gateway::provider::{self, Endpoint, WireLimits};
use crate::gateway::Gateway;
use crate::shared::GatewayEvent;
use crate::store::audit::{AuditSettings, AuditWriter};
use crate::store::{Store, StoreError};
use axum::{extract::DefaultBodyLimit, serve::ListenerExt, Router};
use leptos::prelude::LeptosOptions;
use leptos_axum::{generate_route_list, LeptosRoutes};
use std::collections::{HashMap, HashSet};
use std::{net::SocketAddr, sync::Arc, time::Duration, time::Instant};
use tokio::{sync::watch, task::JoinHandle};
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
    /// The cache's entries could not be loaded.
    #[error(transparent)]
    Cache(#[from] crate::cache::semantic::CacheError),
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
    /// The token the admin endpoints require (generated when not configured).
    pub admin_token: String,
    /// The gateway, for tests that inspect it.
    pub gateway: Arc<Gateway>,
    /// The store, for tests that inspect rows.
    pub store: Store,
    /// The audit writer, flushed on shutdown.
    pub audit: Option<AuditWriter>,
    /// Fires the graceful shutdown.
    shutdown: watch::Sender<bool>,
    /// The serving task.
    task: JoinHandle<()>,
    /// How long in-flight answers may take after shutdown starts.
    grace: Duration,
}

impl RunningServer {
    /// Stops accepting connections, lets in-flight answers finish within the grace
    /// period, writes every queued audit record, then returns. Returns `false` if
    /// the grace period ran out.
    pub async fn shutdown(self) -> bool {
        let _ = self.shutdown.send(true);
        let mut task = self.task;
        let finished = match tokio::time::timeout(self.grace, &mut task).await {
            Ok(_) => true,
            Err(_) => {
                tracing::warn!(
                    grace_ms = self.grace.as_millis() as u64,
                    "in-flight answers cut off after the grace period"
                );
                task.abort();
                false
            }
        };
        // Every answered request is in the queue by now: write it all before exiting.
        if let Some(audit) = &self.audit {
            audit.flush().await;
        }
        finished
    }

    /// Waits until the server stops by itself (it does not, unless shut down).
    pub async fn wait(&mut self) {
        let _ = (&mut self.task).await;
    }
}

/// A random admin token for a server started without one.
fn generate_token() -> String {
    uuid::Uuid::new_v4().simple().to_string()
}

/// The providers' adapters: simulated where no key is given (or simulation is
/// forced), each reachable directly or through the fault proxy.
async fn build_cascade(
    config: &Config,
    plan: &Arc<FaultPlan>,
    events: Arc<EventBus>,
    metrics: Arc<Metrics>,
) -> Result<(Cascade, Vec<ProviderRoute>), StartError> {
    let client = reqwest::Client::builder()
        .connect_timeout(Duration::from_millis(config.gateway.connect_timeout_ms))
        .pool_idle_timeout(Duration::from_secs(60))
        .build()?;
    let timeouts = config.gateway.timeouts();
    let limits = WireLimits {
        first_byte: timeouts.first_byte,
        stall: timeouts.stall,
    };
    let mut routes = Vec::new();
    let mut upstreams = HashMap::new();
    for provider_config in &config.providers {
        let simulated =
            config.gateway.simulate == SimulateMode::Always || provider_config.api_key.is_none();
        let base_url = if simulated {
            crate::sim::start(provider_config.protocol, &config.sim)
                .await?
                .base_url
        } else {
            provider_config.base_url.clone()
        };
        tracing::info!(provider = %provider_config.name, %base_url, simulated, "provider ready");
        upstreams.insert(
            provider_config.name.clone(),
            Upstream {
                base_url: base_url.clone(),
                protocol: provider_config.protocol,
            },
        );
        routes.push(ProviderRoute {
            name: provider_config.name.clone(),
            base_url,
            simulated,
        });
    }
    // The proxy forwards with its own client: it must not share the adapters'
    // timeouts, since it stands in for the provider, not for the gateway.
    let proxy = FaultProxy::start(plan.clone(), upstreams, reqwest::Client::new()).await?;
    let mut entries = Vec::new();
    for (provider_config, route) in config.providers.iter().zip(&routes) {
        let mut provider_config = provider_config.clone();
        if route.simulated {
            provider_config.api_key = None;
        }
        let endpoint = Endpoint::switched(
            route.base_url.clone(),
            proxy.base_for(&provider_config.name),
            plan.route_flag(&provider_config.name),
        );
        let template = provider_config
            .system_template
            .clone()
            .unwrap_or_else(|| config.gateway.system_prompt.clone());
        entries.push(CascadeEntry {
            provider: provider::build(&provider_config, endpoint, client.clone(), limits),
            template: PromptTemplate::new(template),
            max_tokens: provider_config.max_tokens,
            breaker: provider_config.breaker(),
        });
    }
    Ok((Cascade::new(entries, timeouts, events, metrics), routes))
}

/// Heals faults whose time is up and announces it, until shutdown.
fn spawn_fault_expiry(
    plan: Arc<FaultPlan>,
    gateway: Arc<Gateway>,
    mut shutdown: watch::Receiver<bool>,
) {
    tokio::spawn(async move {
        let mut tick = tokio::time::interval(Duration::from_millis(250));
        loop {
            tokio::select! {
                _ = tick.tick() => {}
                _ = shutdown.changed() => return,
            }
            for provider in plan.expire(Instant::now()) {
                tracing::info!(%provider, "fault healed by itself");
                gateway
                    .metrics()
                    .faults_active
                    .with_label_values(&[&provider])
                    .set(0);
                gateway.events().publish(GatewayEvent::FaultChanged {
                    provider,
                    fault: None,
                    by: "expiry".into(),
                    at_ms: now_ms(),
                });
            }
        }
    });
}

/// Opens the semantic cache, loading the embedding model off the executor. A
/// missing model or runtime is one clear warning and an exact-match cache, never
/// a failed start.
async fn open_cache(config: &Config, store: &Store) -> Result<SemanticCache, StartError> {
    let embedder_config = config.embedder.clone();
    let embedder = match tokio::task::spawn_blocking(move || Embedder::load(&embedder_config)).await
    {
        Ok(Ok(embedder)) => {
            tracing::info!(model = %config.embedder.model, "embedding model loaded");
            Some(Arc::new(embedder))
        }
        Ok(Err(err)) => {
            tracing::warn!(error = %err, "semantic cache disabled: falling back to exact-match caching");
            None
        }
        Err(err) => {
            tracing::warn!(error = %err, "embedding model failed to load: falling back to exact-match caching");
            None
        }
    };
    let settings = CacheSettings {
        threshold: config.cache.threshold,
        ttl: Duration::from_secs(config.cache.ttl_hours * 3600),
        max_entries: config.cache.max_entries.max(1),
    };
    Ok(SemanticCache::open(store.pool().clone(), settings, embedder).await?)
}

/// Persists hit counts and drops expired cache entries, until shutdown.
fn spawn_cache_maintenance(cache: Arc<SemanticCache>, mut shutdown: watch::Receiver<bool>) {
    tokio::spawn(async move {
        let mut tick = tokio::time::interval(Duration::from_secs(5));
        loop {
            tokio::select! {
                _ = tick.tick() => cache.maintain().await,
                _ = shutdown.changed() => {
                    cache.maintain().await;
                    return;
                }
            }
        }
    });
}

/// Applies the audit's retention periodically, until shutdown.
fn spawn_retention(audit: AuditWriter, config: &Config, mut shutdown: watch::Receiver<bool>) {
    let every = Duration::from_secs(config.audit.prune_interval_s.max(1));
    let keep_ms = (config.audit.retention_days * 86_400_000) as i64;
    let max_rows = config.audit.max_rows.max(0);
    tokio::spawn(async move {
        let mut tick = tokio::time::interval(every);
        loop {
            tokio::select! {
                _ = tick.tick() => audit.prune(now_ms() as i64 - keep_ms, max_rows),
                _ = shutdown.changed() => return,
            }
        }
    });
}

/// Starts the whole product on `config.server.addr`.
pub async fn start(
    config: Config,
    leptos_options: LeptosOptions,
) -> Result<RunningServer, StartError> {
    let store = Store::open(&config.database.url).await?;
    let audit = config.audit.enabled.then(|| {
        let settings = AuditSettings {
            queue: config.audit.queue,
            batch: config.audit.batch.max(1),
            flush_interval: Duration::from_millis(config.audit.flush_interval_ms),
        };
        AuditWriter::start(store.pool().clone(), settings).0
    });
    let names: Vec<&str> = config.providers.iter().map(|p| p.name.as_str()).collect();
    let plan = Arc::new(FaultPlan::new(names.iter().copied()));
    let events = Arc::new(EventBus::with_audit(audit.clone()));
    let metrics = Arc::new(Metrics::new(names.iter().copied()));
    let (cascade, providers) =
        build_cascade(&config, &plan, events.clone(), metrics.clone()).await?;
    let cache = if config.cache.enabled {
        Some(Arc::new(open_cache(&config, &store).await?))
    } else {
        None
    };
    let gateway = Arc::new(
        Gateway::new(cascade, Some(store.clone()), events, metrics)
            .with_audit(audit.clone(), config.audit.redact_text)
            .with_cache(cache.clone()),
    );
    let admin_token = config
        .server
        .admin_token
        .clone()
        .unwrap_or_else(generate_token);
    let (shutdown, shutdown_signal) = watch::channel(false);
    spawn_fault_expiry(plan.clone(), gateway.clone(), shutdown_signal.clone());
    if let Some(audit) = &audit {
        spawn_retention(audit.clone(), &config, shutdown_signal.clone());
    }
    if let Some(cache) = &cache {
        spawn_cache_maintenance(cache.clone(), shutdown_signal.clone());
    }
    let state = AppState {
        store: store.clone(),
        audit: audit.clone(),
        traffic: Arc::new(crate::traffic::Traffic::default()),
        leptos_options: leptos_options.clone(),
        gateway: gateway.clone(),
        faults: plan,
        admin_token: admin_token.clone().into(),
        simulated: Arc::new(
            providers
                .iter()
                .filter(|p| p.simulated)
                .map(|p| p.name.clone())
                .collect::<HashSet<_>>(),
        ),
        shutdown: shutdown_signal.clone(),
    };
    let app = router(state, config.server.body_limit_bytes);
    let listener = tokio::net::TcpListener::bind(config.server.addr).await?;
    let addr = listener.local_addr()?;
    let mut signal = shutdown_signal;
    let task = tokio::spawn(async move {
        // Streams are many small writes: without TCP_NODELAY, Nagle's algorithm
        // and delayed ACKs hold tokens back for ~40 ms.
        let listener = listener.tap_io(|tcp| {
            let _ = tcp.set_nodelay(true);
        });
        let serve = axum::serve(listener, app).with_graceful_shutdown(async move {
            let _ = signal.wait_for(|stop| *stop).await;
        });
        if let Err(err) = serve.await {
            tracing::error!(error = %err, "server stopped with an error");
        }
    });
    Ok(RunningServer {
        addr,
        providers,
        admin_token,
        gateway,
        store,
        audit,
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
