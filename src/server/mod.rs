//! Assembles a running server: store, providers (real or simulated), the fault
//! proxy, gateway, routes, and graceful shutdown. `main.rs` and the integration
//! tests both start the product through [`start`], so tests exercise what ships.
//!
//! - `settings`: configuration turned into the core's settings, once.
//! - `tasks`: the background work (fault expiry, probes, retention, cache upkeep).
//! - `listen`: the accept loop, with the limits slow or greedy clients need.

mod listen;
mod outbound;
mod settings;
mod tasks;

use crate::api::{self, AppParts, AppState};
use crate::cache::{Embedder, SemanticCache};
use crate::chaos::{FaultPlan, FaultProxy, Upstream};
use crate::clock::{self, SharedClock};
use crate::cluster::Cluster;
use crate::config::{Config, Secret, SimulateMode};
use crate::gateway::cascade::{Cascade, CascadeEntry, Timeouts};
use crate::gateway::events::EventBus;
use crate::gateway::faults::FaultControl;
use crate::gateway::metrics::{Metrics, Mirrored};
use crate::gateway::peers::Peers;
use crate::gateway::prompt::PromptTemplate;
use crate::gateway::provider::{self, Endpoint, ProviderTarget};
use crate::gateway::{Gateway, GatewayParts};
use crate::store::audit::AuditWriter;
use crate::store::{Store, StoreError};
use axum::{extract::DefaultBodyLimit, Router};
use leptos::prelude::LeptosOptions;
use leptos_axum::{generate_route_list, LeptosRoutes};
use std::collections::HashMap;
use std::sync::atomic::Ordering::Relaxed;
use std::{net::SocketAddr, sync::Arc, time::Duration};
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

/// A server accepting connections.
pub struct RunningServer {
    /// The bound address (useful when the config asked for port 0).
    pub addr: SocketAddr,
    /// The token the admin endpoints require (generated when not configured).
    pub admin_token: Secret,
    /// Whether the token was generated (and may be printed), not configured.
    pub token_generated: bool,
    /// The one-time code of the board link.
    login_code: Arc<crate::api::admin::LoginCode>,
    /// The gateway, for tests that inspect it.
    pub gateway: Arc<Gateway>,
    /// The store, for tests that inspect rows.
    pub store: Store,
    /// The audit writer, flushed on shutdown.
    pub audit: Option<AuditWriter>,
    /// The synthetic traffic, stopped on shutdown.
    traffic: Arc<crate::traffic::Traffic>,
    /// Fires the graceful shutdown.
    shutdown: watch::Sender<bool>,
    /// Fires when the grace period is over: answers still running end now.
    ending: watch::Sender<bool>,
    /// The serving task.
    task: JoinHandle<()>,
    /// How long in-flight answers may take after shutdown starts.
    grace: Duration,
}

impl RunningServer {
    /// Shuts down in order: stop accepting connections and asking synthetic
    /// questions; let in-flight answers finish within the grace period; then end
    /// those still running with their error ending (their rows written) and the
    /// synthetic questions in flight; last, write every queued audit record.
    /// Returns `false` if the grace period ran out.
    pub async fn shutdown(self) -> bool {
        let _ = self.shutdown.send(true);
        self.traffic.stop();
        let mut task = self.task;
        let finished = tokio::time::timeout(self.grace, &mut task).await.is_ok();
        if !finished {
            tracing::warn!(
                grace_ms = self.grace.as_millis() as u64,
                "grace period over: ending the answers still running"
            );
            let _ = self.ending.send(true);
            // A moment for the error endings to reach their clients.
            if tokio::time::timeout(ENDING_FLUSH, &mut task).await.is_err() {
                task.abort();
            }
        }
        self.traffic.abort_in_flight();
        // Every answered request is in the queue by now: write it all before exiting.
        if let Some(audit) = &self.audit {
            audit.flush().await;
        }
        finished
    }

    /// The one-time board link (`/chaos/login?code=…`), while unused.
    pub fn board_link(&self) -> Option<String> {
        self.login_code
            .peek()
            .map(|code| format!("http://{}/chaos/login?code={code}", self.addr))
    }

    /// Waits until the server stops by itself (it does not, unless shut down).
    pub async fn wait(&mut self) {
        let _ = (&mut self.task).await;
    }
}

/// After the grace period, how long ended answers get to reach their clients.
const ENDING_FLUSH: Duration = Duration::from_secs(1);

/// A random admin token for a server started without one.
fn generate_token() -> Secret {
    Secret::new(uuid::Uuid::new_v4().simple().to_string())
}

/// The providers' adapters: simulated where no key is given (or simulation is
/// forced), each reachable directly or through the fault proxy.
async fn build_cascade(
    config: &Config,
    plan: &Arc<FaultPlan>,
    events: Arc<EventBus>,
    metrics: Arc<Metrics>,
    clock: SharedClock,
) -> Result<Cascade, StartError> {
    // Redirects are not followed: an LLM API does not redirect, and following one
    // would carry the provider's key (`x-api-key` is not a header reqwest strips)
    // to whatever host the redirect names. A 3xx fails over like any failure.
    let client = outbound::client(
        reqwest::Client::builder()
            .connect_timeout(Duration::from_millis(config.gateway.connect_timeout_ms))
            .pool_idle_timeout(Duration::from_secs(60))
            .redirect(reqwest::redirect::Policy::none()),
    )?
    .build()?;
    let mut bases = Vec::new();
    let mut upstreams = HashMap::new();
    for provider in &config.providers {
        let simulated =
            config.gateway.simulate == SimulateMode::Always || provider.api_key.is_none();
        let base_url = if simulated {
            crate::sim::start(provider.protocol, &config.sim)
                .await?
                .base_url
        } else {
            provider.base_url.clone()
        };
        tracing::info!(provider = %provider.name, %base_url, simulated, "provider ready");
        upstreams.insert(
            provider.name.clone(),
            Upstream {
                base_url: base_url.clone(),
                protocol: provider.protocol,
            },
        );
        bases.push((base_url, simulated));
    }
    // The proxy forwards with its own client: it must not share the adapters'
    // timeouts, since it stands in for the provider, not for the gateway. Its own
    // limits only keep an upstream that never answers from holding a task and a
    // socket forever (the adapter gives up much earlier and drops the request).
    let proxy_client = outbound::client(
        reqwest::Client::builder()
            .connect_timeout(Duration::from_millis(config.gateway.connect_timeout_ms))
            .read_timeout(Duration::from_millis(
                config.gateway.attempt_timeout_ms.max(1_000),
            ))
            .redirect(reqwest::redirect::Policy::none()),
    )?
    .build()?;
    let proxy = FaultProxy::start(plan.clone(), upstreams, proxy_client).await?;
    let entries = config
        .providers
        .iter()
        .zip(bases)
        .map(|(provider, (base_url, simulated))| {
            let target = ProviderTarget {
                name: provider.name.clone(),
                model: provider.model.clone(),
                base: Endpoint::switched(
                    base_url,
                    proxy.base_for(&provider.name),
                    plan.route_flag(&provider.name),
                ),
                api_key: provider.api_key.clone().filter(|_| !simulated),
                limits: settings::wire_limits(&config.gateway, provider),
                continuation: provider.continuation(),
            };
            let template = provider
                .system_template
                .clone()
                .unwrap_or_else(|| config.gateway.system_prompt.clone());
            CascadeEntry {
                provider: provider::build(provider.protocol, target, client.clone()),
                template: PromptTemplate::new(template),
                max_tokens: provider.max_tokens,
                breaker: provider.into(),
                simulated,
                retries: provider.retries,
                first_token: provider.first_token_timeout_ms.map(Duration::from_millis),
                attempt: provider.attempt_timeout_ms.map(Duration::from_millis),
                images: provider.images,
            }
        })
        .collect();
    Ok(Cascade::new(
        entries,
        Timeouts::from(&config.gateway),
        events,
        metrics,
        clock,
    ))
}

/// Opens the semantic cache, loading the embedding model off the executor. A
/// missing model or runtime is one clear warning and an exact-match cache, never
/// a failed start.
async fn open_cache(
    config: &Config,
    store: &Store,
    clock: SharedClock,
) -> Result<SemanticCache, StartError> {
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
    Ok(SemanticCache::open(store.db().clone(), (&config.cache).into(), embedder, clock).await?)
}

/// The cluster link, when `[cluster] redis_url` is set. A URL the Redis client
/// refuses is one error line and a replica that runs alone: safe, since every
/// state it would share it also keeps itself.
fn join_cluster(config: &Config) -> Option<Arc<Cluster>> {
    let url = config.cluster.redis_url.as_deref()?;
    let replica = config.cluster.replica.clone().unwrap_or_else(|| {
        let host = std::env::var("HOSTNAME").unwrap_or_else(|_| "replica".into());
        match config.server.addr.port() {
            0 => format!("{host}-{}", std::process::id()),
            port => format!("{host}:{port}"),
        }
    });
    match Cluster::new(url, replica.clone()) {
        Ok(cluster) => {
            tracing::info!(%replica, redis = %crate::store::redacted(url), "replica of a cluster");
            Some(cluster)
        }
        Err(err) => {
            tracing::error!(error = %err, "not joining the cluster: running alone");
            None
        }
    }
}

/// Mirrors the health of the cluster link and of the store onto `/metrics`.
fn mirror_links(
    metrics: &Metrics,
    cluster: Option<&Arc<Cluster>>,
    store_up: &Arc<std::sync::atomic::AtomicBool>,
    audit: Option<&AuditWriter>,
) {
    let up = store_up.clone();
    let mut mirrored = Mirrored::default().gauge(
        "chaosai_store_up",
        "Whether the database answered its last check (1) or not (0)",
        Box::new(move || f64::from(u8::from(up.load(Relaxed)))),
    );
    if let Some(audit) = audit.cloned() {
        mirrored = mirrored.gauge(
            "chaosai_audit_backlog",
            "Audit records waiting to be written (queue and overflow list)",
            Box::new(move || audit.backlog() as f64),
        );
    }
    if let Some(cluster) = cluster {
        let link = cluster.clone();
        mirrored = mirrored.gauge(
            "chaosai_cluster_redis_up",
            "Whether Redis answered the replica's last command (1) or not (0)",
            Box::new(move || f64::from(u8::from(link.is_up()))),
        );
        type Field = fn(&crate::cluster::ClusterCounters) -> &std::sync::atomic::AtomicU64;
        let counts: [(&str, &str, Field); 3] = [
            ("sent", "Messages sent to the other replicas", |c| &c.sent),
            (
                "received",
                "Messages received from the other replicas",
                |c| &c.received,
            ),
            (
                "dropped",
                "Messages dropped: outbox full or Redis down",
                |c| &c.dropped,
            ),
        ];
        for (result, help, field) in counts {
            let cluster = cluster.clone();
            mirrored = mirrored.counter(
                &format!("chaosai_cluster_messages_{result}_total"),
                help,
                &[],
                Box::new(move || field(cluster.counters()).load(Relaxed)),
            );
        }
    }
    metrics.mirror(mirrored);
}

/// Mirrors the large bodies' budget onto `/metrics`: how much is free, and how
/// many bodies were refused for want of it.
fn mirror_bodies(metrics: &Metrics, bodies: &Arc<api::BodyLimits>) {
    let (free, refused) = (bodies.clone(), bodies.clone());
    metrics.mirror(
        Mirrored::default()
            .gauge(
                "chaosai_request_body_budget_free_bytes",
                "Bytes of the budget large conversation bodies share that no request holds",
                Box::new(move || free.available() as f64),
            )
            .counter(
                "chaosai_request_bodies_refused_total",
                "Large request bodies refused with a 503 for want of budget",
                &[],
                Box::new(move || refused.refused()),
            ),
    );
}

/// Mirrors the audit writer's and the cache's own counts onto `/metrics`.
fn mirror_counts(
    metrics: &Metrics,
    audit: Option<&AuditWriter>,
    cache: Option<&Arc<SemanticCache>>,
) {
    if let Some(audit) = audit {
        type Field = fn(&crate::store::audit::AuditCounters) -> &std::sync::atomic::AtomicU64;
        let counts: [(&str, &str, Field); 6] = [
            (
                "chaosai_audit_overflow_total",
                "Audit records that found the queue full (kept on the overflow list)",
                |c| &c.overflow,
            ),
            (
                "chaosai_audit_written_total",
                "Audit records committed",
                |c| &c.written,
            ),
            (
                "chaosai_audit_retries_total",
                "Audit writes retried after a database error",
                |c| &c.retries,
            ),
            (
                "chaosai_audit_rejected_total",
                "Audit rows the database refused for good (set aside, logged)",
                |c| &c.rejected,
            ),
            (
                "chaosai_audit_dropped_total",
                "Audit records dropped: queue and overflow list full (logged)",
                |c| &c.dropped,
            ),
            (
                "chaosai_audit_restarts_total",
                "Times the audit writer died and was restarted",
                |c| &c.restarts,
            ),
        ];
        let mut mirrored = Mirrored::default();
        for (name, help, field) in counts {
            let counters = audit.counters().clone();
            mirrored = mirrored.counter(
                name,
                help,
                &[],
                Box::new(move || field(&counters).load(Relaxed)),
            );
        }
        metrics.mirror(mirrored);
    }
    if let Some(cache) = cache {
        let counts = |result: &'static str| {
            let cache = cache.clone();
            move || {
                let c = cache.counters();
                match result {
                    "hit" => c.hits.load(Relaxed),
                    "miss" => c.misses.load(Relaxed),
                    "refused" => c.refused.load(Relaxed),
                    "stored" => c.stored.load(Relaxed),
                    "bypassed_busy" => c.bypassed_busy.load(Relaxed),
                    _ => c.not_stored.load(Relaxed),
                }
            }
        };
        let mut mirrored = Mirrored::default();
        for result in ["hit", "miss", "refused", "bypassed_busy"] {
            mirrored = mirrored.counter(
                "chaosai_cache_lookups_total",
                "Cache lookups by result",
                &[("result", result)],
                Box::new(counts(result)),
            );
        }
        for result in ["stored", "not_stored"] {
            mirrored = mirrored.counter(
                "chaosai_cache_stores_total",
                "Answers offered to the cache, by whether they were stored",
                &[("result", result)],
                Box::new(counts(result)),
            );
        }
        let (entries, ratio) = (cache.clone(), cache.clone());
        metrics.mirror(
            mirrored
                .gauge(
                    "chaosai_cache_entries",
                    "Entries in the semantic cache",
                    Box::new(move || entries.len() as f64),
                )
                .gauge(
                    "chaosai_cache_hit_ratio",
                    "Share of lookups answered from the cache",
                    Box::new(move || ratio.hit_ratio()),
                ),
        );
    }
}

/// Starts the whole product on `config.server.addr`.
pub async fn start(
    config: Config,
    leptos_options: LeptosOptions,
) -> Result<RunningServer, StartError> {
    start_with_clock(config, leptos_options, clock::system()).await
}

/// Starts the whole product with `clock` as the time policy reads (tests step a
/// manual clock instead of sleeping).
pub async fn start_with_clock(
    config: Config,
    leptos_options: LeptosOptions,
    clock: SharedClock,
) -> Result<RunningServer, StartError> {
    let store = Store::open(&config.database.url).await?;
    tracing::info!(engine = store.db().engine().label(), url = %crate::store::redacted(&config.database.url), "store open");
    let cluster = join_cluster(&config);
    let peers = cluster.clone().map(|c| c as Arc<dyn Peers>);
    let audit = config
        .audit
        .enabled
        .then(|| AuditWriter::start(store.db().clone(), (&config.audit).into()).0);
    let names: Vec<&str> = config.providers.iter().map(|p| p.name.as_str()).collect();
    let plan = Arc::new(FaultPlan::new(names.iter().copied()));
    let events = Arc::new(EventBus::with_audit(audit.clone()).with_peers(peers.clone()));
    let metrics = Arc::new(Metrics::new(names.iter().copied()));
    let cascade = build_cascade(
        &config,
        &plan,
        events.clone(),
        metrics.clone(),
        clock.clone(),
    )
    .await?
    .with_peers(peers);
    let cache = if config.cache.enabled {
        Some(Arc::new(open_cache(&config, &store, clock.clone()).await?))
    } else {
        None
    };
    mirror_counts(&metrics, audit.as_ref(), cache.as_ref());
    let store_up = Arc::new(std::sync::atomic::AtomicBool::new(true));
    mirror_links(&metrics, cluster.as_ref(), &store_up, audit.as_ref());
    let bodies = Arc::new(api::BodyLimits::new(
        config.server.body_limit_bytes,
        config.server.conversation_body_limit_bytes,
        config.server.body_budget_bytes,
    ));
    mirror_bodies(&metrics, &bodies);
    let (ending, ending_signal) = watch::channel(false);
    let gateway = Arc::new(Gateway::new(GatewayParts {
        cascade,
        faults: FaultControl::new(plan, events.clone(), metrics.clone(), clock.clone()),
        store: Some(store.clone()),
        audit: audit.clone(),
        redact: config.audit.redact_text,
        cache: cache.clone(),
        events,
        metrics,
        clock: clock.clone(),
        ending: ending_signal,
        limits: (&config.server).into(),
    }));
    let token_generated = config.server.admin_token.is_none();
    let admin_token = config
        .server
        .admin_token
        .clone()
        .unwrap_or_else(generate_token);
    let (shutdown, shutdown_signal) = watch::channel(false);
    tasks::spawn_fault_expiry(gateway.clone(), shutdown_signal.clone());
    tasks::spawn_probes(gateway.clone(), shutdown_signal.clone());
    tasks::spawn_store_watch(store.clone(), store_up.clone(), shutdown_signal.clone());
    if let Some(cluster) = &cluster {
        cluster.run(gateway.clone(), shutdown_signal.clone()).await;
    }
    if let Some(audit) = &audit {
        tasks::spawn_retention(
            audit.clone(),
            (&config.audit).into(),
            clock.clone(),
            shutdown_signal.clone(),
        );
    }
    if let Some(cache) = &cache {
        tasks::spawn_cache_maintenance(cache.clone(), shutdown_signal.clone());
    }
    let traffic = Arc::new(crate::traffic::Traffic::default());
    let login_code = Arc::new(crate::api::admin::LoginCode::new());
    // Keys of the config file first: a database row cannot shadow one.
    let client_specs = config
        .clients
        .iter()
        .map(crate::clients::ClientSpec::from)
        .chain(store.clients().await?)
        .collect::<Vec<_>>();
    let clients = Arc::new(crate::clients::Clients::new(client_specs, clock.clone()));
    if !clients.is_open() {
        tracing::info!(clients = clients.count(), "/v1 requires a client key");
    }
    tasks::spawn_client_sync(clients.clone(), store.clone(), shutdown_signal.clone());
    if let Some(cluster) = &cluster {
        cluster.share_limits(clients.clone(), shutdown_signal.clone());
    }
    let prices = config
        .providers
        .iter()
        .filter_map(|p| Some((p.name.clone(), p.price()?)))
        .collect();
    let state = AppState::new(AppParts {
        cluster: cluster.clone(),
        store_up,
        redact: config.audit.redact_text,
        clients: clients.clone(),
        prices: Arc::new(prices),
        store: store.clone(),
        traffic: traffic.clone(),
        leptos_options: leptos_options.clone(),
        gateway: gateway.clone(),
        admin_token: admin_token.expose().into(),
        login_code: login_code.clone(),
        secure_cookies: config
            .server
            .public_url
            .as_deref()
            .is_some_and(|u| u.starts_with("https://")),
        bodies,
        shutdown: shutdown_signal.clone(),
    });
    let allowed_origins: Arc<[String]> = config.server.public_url.iter().cloned().collect();
    let app = router(
        state,
        config.server.body_limit_bytes,
        Duration::from_millis(config.server.body_timeout_ms),
    )
    .layer(axum::middleware::from_fn(move |request, next| {
        crate::api::same_origin_only(allowed_origins.clone(), request, next)
    }));
    let api_origins = crate::api::ApiOrigins::new(
        config
            .server
            .api_origins
            .iter()
            .chain(&config.server.public_url)
            .map(String::as_str),
    );
    let app = crate::api::WithCors::new(app, clients, api_origins);
    let listener = tokio::net::TcpListener::bind(config.server.addr).await?;
    let addr = listener.local_addr()?;
    let limits = listen::ConnectionLimits {
        header_read: Duration::from_millis(config.server.header_timeout_ms.max(100)),
        max_connections: config.server.max_connections,
    };
    let task = tokio::spawn(listen::serve(
        listener,
        app,
        limits,
        Default::default(),
        shutdown_signal,
    ));
    Ok(RunningServer {
        addr,
        admin_token,
        token_generated,
        login_code,
        gateway,
        store,
        audit,
        traffic,
        shutdown,
        ending,
        task,
        grace: Duration::from_millis(config.server.shutdown_grace_ms),
    })
}

/// The full router: API routes, Leptos pages and server functions, static files.
fn router(state: AppState, body_limit: usize, body_timeout: Duration) -> Router {
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
        // A body not whole this long after its head is cut off (a 408 on /v1).
        .layer(tower::util::MapRequestLayer::new(move |request| {
            api::body_deadline(request, body_timeout)
        }))
        .layer(CatchPanicLayer::new())
        .layer(TraceLayer::new_for_http())
        .with_state(state)
}
