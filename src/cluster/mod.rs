//! Replicas that share live state through Redis: breakers, faults, the boards'
//! events and new cache entries.
//!
//! The gateway core talks to its peers through [`Peers`]; [`Cluster`] is that
//! trait over Redis. Nothing on the request path waits for Redis:
//!
//! - what this replica learns is queued (bounded; dropped and counted when
//!   full) and a publisher task sends it, pipelined, on one channel;
//! - a subscriber task receives what the others learn and applies it to the
//!   local breakers, fault plan, event bus and cache, so skipping an OPEN
//!   provider stays a local read;
//! - the shared consecutive-failure count lives in a Redis counter that only a
//!   failure (or the first success after one) touches;
//! - one background probe per provider across the cluster: a `SET NX PX` lease
//!   that expires, so a replica dying mid-probe cannot wedge its breaker;
//! - the faults in force are also kept in a hash, for replicas that join later.
//!
//! Redis down: every replica goes on with its own breakers and faults (the
//! local state machines never stopped running), logs it once, and rejoins by
//! itself when Redis answers again.

mod message;

pub use message::{ClientSpent, Envelope, Message, SharedFault};

use crate::cache::Removed;
use crate::gateway::breaker::Remote;
use crate::gateway::peers::Peers;
use crate::gateway::Gateway;
use crate::shared::GatewayEvent;
use futures::future::BoxFuture;
use futures::StreamExt;
use redis::aio::{ConnectionManager, ConnectionManagerConfig};
use std::sync::atomic::{AtomicU64, AtomicU8, Ordering};
use std::sync::Arc;
use std::time::Duration;
use tokio::sync::{mpsc, watch};

/// The channel every replica publishes on and subscribes to.
const CHANNEL: &str = "chaosai:cluster";
/// The hash of faults in force, by provider.
const FAULTS: &str = "chaosai:faults";
/// Messages waiting to be sent; beyond this they are dropped (and counted).
const OUTBOX: usize = 8_192;
/// Messages sent in one pipelined round trip.
const BATCH: usize = 256;
/// Longest wait for one Redis command: past it, Redis counts as down.
const COMMAND_TIMEOUT: Duration = Duration::from_millis(500);
/// A shared failure count older than this is forgotten (no failure since).
const FAILURES_TTL_MS: u64 = 60_000;
/// Largest publication a replica reads: a full batch of traces is well under
/// it; anything larger is not one of ours and is dropped unread.
const MAX_ENVELOPE_BYTES: usize = 4 * 1024 * 1024;
/// How often what clients spent here goes to the others: a client can
/// overshoot its limit by what it spends on the other replicas in this time.
const SHARE_SPENT: Duration = Duration::from_millis(500);
/// Waits between attempts to subscribe again while Redis is down.
const RESUBSCRIBE: Duration = Duration::from_millis(250);

/// Link states.
const UNKNOWN: u8 = 0;
const UP: u8 = 1;
const DOWN: u8 = 2;

/// Why the cluster could not be set up.
#[derive(Debug, thiserror::Error)]
pub enum ClusterError {
    /// The Redis URL is not one the client accepts.
    #[error("invalid Redis URL {url}: {source}")]
    Url {
        /// The URL, password removed.
        url: String,
        /// The client's reason.
        source: redis::RedisError,
    },
}

/// What this replica queues for the others.
enum Outgoing {
    Failed(String),
    Recovered(String),
    Opened(String, Duration),
    Closed(String),
    ProbeDone(String),
    Event(Box<GatewayEvent>),
    CacheStored(i64),
    CacheRemoved(Removed),
    Spent(Vec<ClientSpent>),
}

/// Counts of the cluster link, for `/metrics`.
#[derive(Debug, Default)]
pub struct ClusterCounters {
    /// Messages sent to the other replicas.
    pub sent: AtomicU64,
    /// Messages received from them and applied.
    pub received: AtomicU64,
    /// Messages dropped: the outbox was full or Redis was down.
    pub dropped: AtomicU64,
}

/// This replica's link to the others.
pub struct Cluster {
    replica: String,
    url: String,
    client: redis::Client,
    connection: ConnectionManager,
    outbox: mpsc::Sender<Outgoing>,
    inbox: std::sync::Mutex<Option<mpsc::Receiver<Outgoing>>>,
    /// Whether Redis answered last time it was asked: [`UNKNOWN`] until it
    /// was first asked, so the first answer is logged either way.
    link: AtomicU8,
    counters: ClusterCounters,
    /// The client keys whose spending is shared, once [`Cluster::share_limits`] ran.
    clients: std::sync::OnceLock<Arc<crate::clients::Clients>>,
}

impl Cluster {
    /// A link through the Redis at `url`, as `replica`. Connects lazily: an
    /// unreachable Redis is reported by [`Cluster::run`] and retried, never fatal.
    pub fn new(url: &str, replica: String) -> Result<Arc<Self>, ClusterError> {
        let invalid = |source| ClusterError::Url {
            url: crate::store::redacted(url),
            source,
        };
        let client = redis::Client::open(url).map_err(invalid)?;
        let config = ConnectionManagerConfig::new()
            .set_connection_timeout(Some(COMMAND_TIMEOUT))
            .set_response_timeout(Some(COMMAND_TIMEOUT))
            .set_number_of_retries(1)
            .set_max_delay(Duration::from_secs(1));
        let connection = client
            .get_connection_manager_lazy(config)
            .map_err(invalid)?;
        let (outbox, inbox) = mpsc::channel(OUTBOX);
        Ok(Arc::new(Self {
            replica,
            url: crate::store::redacted(url),
            client,
            connection,
            outbox,
            inbox: std::sync::Mutex::new(Some(inbox)),
            link: AtomicU8::new(UNKNOWN),
            counters: ClusterCounters::default(),
            clients: std::sync::OnceLock::new(),
        }))
    }

    /// Whether Redis answered the last time it was asked.
    pub fn is_up(&self) -> bool {
        self.link.load(Ordering::Relaxed) == UP
    }

    /// The link's counts.
    pub fn counters(&self) -> &ClusterCounters {
        &self.counters
    }

    /// Puts the cluster's faults in force, then starts the publisher and the
    /// subscriber for `gateway` (once; a second call does nothing). They stop
    /// when `shutdown` turns true.
    pub async fn run(self: &Arc<Self>, gateway: Arc<Gateway>, shutdown: watch::Receiver<bool>) {
        let Some(inbox) = self.inbox.lock().unwrap_or_else(|e| e.into_inner()).take() else {
            return;
        };
        // Before the first request: a replica that joins during an injected
        // outage must not answer from the provider the others are failing.
        // Bounded by the command timeout; the subscriber reads the table again
        // once subscribed, for faults set in between.
        self.adopt_faults(&gateway).await;
        if let Some(cache) = gateway.cache() {
            let me = Arc::downgrade(self);
            cache.on_stored(move |id| {
                if let Some(me) = me.upgrade() {
                    me.queue(Outgoing::CacheStored(id));
                }
            });
            let me = Arc::downgrade(self);
            cache.on_removed(move |removed| {
                if let Some(me) = me.upgrade() {
                    me.queue(Outgoing::CacheRemoved(removed));
                }
            });
        }
        tokio::spawn(
            self.clone()
                .publish(inbox, gateway.clone(), shutdown.clone()),
        );
        tokio::spawn(self.clone().subscribe(gateway, shutdown));
    }

    /// Shares what `clients` spend here with the other replicas, and takes in
    /// what they spend there, so a client's rate limits hold across the
    /// cluster instead of once per replica (once; a second call does nothing).
    /// Stops when `shutdown` turns true.
    pub fn share_limits(
        self: &Arc<Self>,
        clients: Arc<crate::clients::Clients>,
        mut shutdown: watch::Receiver<bool>,
    ) {
        if self.clients.set(clients.clone()).is_err() {
            return;
        }
        let me = self.clone();
        tokio::spawn(async move {
            let mut tick = tokio::time::interval(SHARE_SPENT);
            tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
            loop {
                tokio::select! {
                    _ = tick.tick() => {}
                    _ = shutdown.changed() => return,
                }
                let spent: Vec<ClientSpent> = clients
                    .take_spent()
                    .into_iter()
                    .map(|(client, spent)| ClientSpent { client, spent })
                    .collect();
                if !spent.is_empty() {
                    me.queue(Outgoing::Spent(spent));
                }
            }
        });
    }

    fn queue(&self, outgoing: Outgoing) {
        if self.outbox.try_send(outgoing).is_err() {
            self.counters.dropped.fetch_add(1, Ordering::Relaxed);
        }
    }

    /// Records whether Redis answered, logging only changes.
    fn link(&self, up: bool) {
        let now = if up { UP } else { DOWN };
        if self.link.swap(now, Ordering::Relaxed) != now {
            if up {
                tracing::info!(redis = %self.url, "Redis reachable: sharing breakers, faults and events with the other replicas");
            } else {
                tracing::warn!(redis = %self.url, "Redis unreachable: this replica goes on with its own breakers and faults until it returns");
            }
        }
    }

    /// Sends what is queued, a batch per round trip.
    async fn publish(
        self: Arc<Self>,
        mut inbox: mpsc::Receiver<Outgoing>,
        gateway: Arc<Gateway>,
        mut shutdown: watch::Receiver<bool>,
    ) {
        let mut batch = Vec::with_capacity(BATCH);
        loop {
            tokio::select! {
                n = inbox.recv_many(&mut batch, BATCH) => if n == 0 { return },
                _ = shutdown.changed() => return,
            }
            let sent = batch.len() as u64;
            match self.send(std::mem::take(&mut batch), &gateway).await {
                Ok(()) => {
                    self.counters.sent.fetch_add(sent, Ordering::Relaxed);
                    self.link(true);
                }
                Err(err) => {
                    tracing::debug!(error = %err, "cluster messages not sent");
                    self.counters.dropped.fetch_add(sent, Ordering::Relaxed);
                    self.link(false);
                }
            }
        }
    }

    async fn send(&self, batch: Vec<Outgoing>, gateway: &Gateway) -> redis::RedisResult<()> {
        let mut connection = self.connection.clone();
        // Failure counts first: their new values go out in the same batch.
        let failed: Vec<String> = batch
            .iter()
            .filter_map(|o| match o {
                Outgoing::Failed(p) => Some(p.clone()),
                _ => None,
            })
            .collect();
        let mut counts = Vec::new();
        if !failed.is_empty() {
            let mut pipe = redis::pipe();
            for provider in &failed {
                let key = failures_key(provider);
                pipe.incr(&key, 1)
                    .pexpire(&key, FAILURES_TTL_MS as i64)
                    .ignore();
            }
            counts = pipe.query_async::<Vec<i64>>(&mut connection).await?;
        }
        let mut counts = failed.iter().zip(counts);
        let mut pipe = redis::pipe();
        let mut messages = Vec::with_capacity(batch.len());
        for outgoing in batch {
            let message = match outgoing {
                Outgoing::Failed(provider) => {
                    let Some((_, count)) = counts.next() else {
                        continue;
                    };
                    let count = u32::try_from(count.max(0)).unwrap_or(u32::MAX);
                    // Our own view takes in the others' failures too.
                    gateway
                        .cascade()
                        .follow(&provider, &Remote::Failures(count), &self.replica);
                    Message::Failures { provider, count }
                }
                Outgoing::Recovered(provider) => {
                    pipe.del(failures_key(&provider)).ignore();
                    Message::Failures { provider, count: 0 }
                }
                Outgoing::Opened(provider, retry_in) => Message::Opened {
                    provider,
                    retry_in_ms: retry_in.as_millis() as u64,
                },
                Outgoing::Closed(provider) => {
                    pipe.del(failures_key(&provider)).ignore();
                    Message::Closed { provider }
                }
                Outgoing::ProbeDone(provider) => {
                    // Only our own lease: one that expired and was taken by
                    // another replica stays theirs.
                    pipe.cmd("EVAL")
                        .arg(RELEASE)
                        .arg(1)
                        .arg(lease_key(&provider))
                        .arg(&self.replica)
                        .ignore();
                    continue;
                }
                Outgoing::Event(event) => {
                    if let GatewayEvent::FaultChanged {
                        provider,
                        fault,
                        at_ms,
                        ..
                    } = event.as_ref()
                    {
                        share_fault(&mut pipe, provider, fault.as_ref(), *at_ms);
                    }
                    Message::Event { event: *event }
                }
                Outgoing::CacheStored(id) => Message::CacheStored { id },
                Outgoing::CacheRemoved(removed) => Message::CacheRemoved {
                    id: match removed {
                        Removed::Entry(id) => Some(id),
                        Removed::All => None,
                    },
                },
                Outgoing::Spent(clients) => Message::Spent { clients },
            };
            messages.push(message);
        }
        if !messages.is_empty() {
            let envelope = Envelope {
                from: self.replica.clone(),
                messages,
            };
            if let Ok(text) = serde_json::to_string(&envelope) {
                pipe.publish(CHANNEL, text).ignore();
            }
        }
        pipe.query_async::<()>(&mut connection).await
    }

    /// Receives what the other replicas say, resubscribing whenever the
    /// connection is lost.
    async fn subscribe(
        self: Arc<Self>,
        gateway: Arc<Gateway>,
        mut shutdown: watch::Receiver<bool>,
    ) {
        loop {
            let joined = async {
                let mut pubsub = self.client.get_async_pubsub().await?;
                pubsub.subscribe(CHANNEL).await?;
                redis::RedisResult::Ok(pubsub)
            };
            let joined = tokio::time::timeout(COMMAND_TIMEOUT * 2, joined).await;
            match joined {
                Ok(Ok(pubsub)) => {
                    self.link(true);
                    self.adopt_faults(&gateway).await;
                    let mut messages = pubsub.into_on_message();
                    loop {
                        tokio::select! {
                            message = messages.next() => match message {
                                Some(message) => self.receive(&message, &gateway),
                                None => break,
                            },
                            _ = shutdown.changed() => return,
                        }
                    }
                    self.link(false);
                }
                Ok(Err(_)) | Err(_) => self.link(false),
            }
            tokio::select! {
                _ = tokio::time::sleep(RESUBSCRIBE) => {}
                _ = shutdown.changed() => return,
            }
        }
    }

    /// Puts in force the faults the cluster has (joining, or rejoining after
    /// Redis was down).
    async fn adopt_faults(&self, gateway: &Gateway) {
        let mut connection = self.connection.clone();
        let mut command = redis::cmd("HGETALL");
        command.arg(FAULTS);
        let rows = command.query_async::<Vec<(String, String)>>(&mut connection);
        let Ok(Ok(rows)) = tokio::time::timeout(COMMAND_TIMEOUT, rows).await else {
            return;
        };
        let now_ms = gateway.clock().unix_ms();
        for (provider, text) in rows {
            let Ok(shared) = serde_json::from_str::<SharedFault>(&text) else {
                continue;
            };
            if let Some(spec) = shared.remaining(now_ms) {
                gateway.faults().follow(&provider, Some(spec));
            }
        }
    }

    fn receive(&self, message: &redis::Msg, gateway: &Arc<Gateway>) {
        let payload = message.get_payload_bytes();
        if payload.len() > MAX_ENVELOPE_BYTES {
            self.counters.dropped.fetch_add(1, Ordering::Relaxed);
            tracing::warn!(bytes = payload.len(), "oversized cluster message dropped");
            return;
        }
        let Ok(envelope) = serde_json::from_slice::<Envelope>(payload) else {
            tracing::debug!("unreadable cluster message ignored");
            return;
        };
        // A replica sends at most one batch per publication.
        if envelope.from == self.replica || envelope.messages.len() > BATCH {
            return;
        }
        let from = envelope.from.as_str();
        for message in envelope.messages {
            self.counters.received.fetch_add(1, Ordering::Relaxed);
            self.apply(message, from, gateway);
        }
    }

    /// Applies one message of replica `from` here.
    fn apply(&self, message: Message, from: &str, gateway: &Arc<Gateway>) {
        let cascade = gateway.cascade();
        match message {
            Message::Failures { provider, count } => {
                cascade.follow(&provider, &Remote::Failures(count), from);
            }
            Message::Opened {
                provider,
                retry_in_ms,
            } => {
                let retry_in = Duration::from_millis(retry_in_ms);
                cascade.follow(&provider, &Remote::Opened { retry_in }, from);
            }
            Message::Closed { provider } => {
                cascade.follow(&provider, &Remote::Closed, from);
            }
            Message::Event { event } => {
                if let GatewayEvent::FaultChanged {
                    provider, fault, ..
                } = &event
                {
                    gateway.faults().follow(provider, fault.clone());
                }
                gateway.events().publish_remote(event);
            }
            Message::CacheStored { id } => {
                if let Some(cache) = gateway.cache().cloned() {
                    tokio::spawn(async move { cache.adopt(id).await });
                }
            }
            Message::CacheRemoved { id } => {
                if let Some(cache) = gateway.cache() {
                    cache.forget(id.map_or(Removed::All, Removed::Entry));
                }
            }
            Message::Spent { clients } => {
                if let Some(local) = self.clients.get() {
                    local.absorb(clients.iter().map(|c| (c.client.as_str(), c.spent)));
                }
            }
            Message::Unknown => {}
        }
    }
}

/// Deletes a lease only if its holder is `ARGV[1]`.
const RELEASE: &str =
    "if redis.call('GET', KEYS[1]) == ARGV[1] then return redis.call('DEL', KEYS[1]) end return 0";

fn lease_key(provider: &str) -> String {
    format!("chaosai:probe:{provider}")
}

fn failures_key(provider: &str) -> String {
    format!("chaosai:failures:{provider}")
}

/// Keeps the shared fault table in step with a fault change.
fn share_fault(
    pipe: &mut redis::Pipeline,
    provider: &str,
    fault: Option<&crate::shared::FaultSpec>,
    at_ms: i64,
) {
    match fault {
        Some(spec) => {
            let shared = SharedFault {
                spec: spec.clone(),
                until_ms: spec.duration_s.map(|s| at_ms + s as i64 * 1000),
            };
            if let Ok(text) = serde_json::to_string(&shared) {
                pipe.hset(FAULTS, provider, text).ignore();
            }
        }
        None => {
            pipe.hdel(FAULTS, provider).ignore();
        }
    }
}

impl Peers for Cluster {
    fn replica(&self) -> &str {
        &self.replica
    }

    fn failed(&self, provider: &str) {
        self.queue(Outgoing::Failed(provider.to_string()));
    }

    fn recovered(&self, provider: &str) {
        self.queue(Outgoing::Recovered(provider.to_string()));
    }

    fn opened(&self, provider: &str, retry_in: Duration) {
        self.queue(Outgoing::Opened(provider.to_string(), retry_in));
    }

    fn closed(&self, provider: &str) {
        self.queue(Outgoing::Closed(provider.to_string()));
    }

    fn probe_lease<'a>(&'a self, provider: &'a str, lease: Duration) -> BoxFuture<'a, bool> {
        Box::pin(async move {
            let mut connection = self.connection.clone();
            let mut command = redis::cmd("SET");
            command
                .arg(lease_key(provider))
                .arg(&self.replica)
                .arg("NX")
                .arg("PX")
                .arg(lease.as_millis() as u64);
            let taken = command.query_async::<Option<String>>(&mut connection);
            match tokio::time::timeout(COMMAND_TIMEOUT, taken).await {
                Ok(Ok(taken)) => {
                    self.link(true);
                    taken.is_some()
                }
                // Nobody to share the probe with: probe for ourselves.
                Ok(Err(_)) | Err(_) => {
                    self.link(false);
                    true
                }
            }
        })
    }

    fn probe_done(&self, provider: &str) {
        self.queue(Outgoing::ProbeDone(provider.to_string()));
    }

    fn forward(&self, event: &GatewayEvent) {
        self.queue(Outgoing::Event(Box::new(event.clone())));
    }
}
