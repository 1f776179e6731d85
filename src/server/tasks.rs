//! The server's background work, each a loop that ends with the shutdown signal:
//! healing faults whose time is up, probing OPEN providers, applying the audit's
//! retention, keeping the cache's hit counts and expiry current, and taking the
//! client keys other replicas made or revoked.

use super::settings::Retention;
use crate::cache::SemanticCache;
use crate::clock::SharedClock;
use crate::gateway::Gateway;
use crate::store::audit::AuditWriter;
use std::sync::Arc;
use std::time::Duration;
use tokio::sync::watch;

/// How often fault expiry is checked: a fault heals within this of its time.
const EXPIRY_TICK: Duration = Duration::from_millis(250);

/// How often the cache persists hit counts and drops expired entries.
const CACHE_TICK: Duration = Duration::from_secs(5);

/// How often the client keys are read again from the store: a key made or
/// revoked through another replica is in force here within this.
const CLIENT_SYNC_TICK: Duration = Duration::from_secs(2);

/// Runs `work` every `every` until shutdown, then `last` once.
fn every<W, L>(every: Duration, mut shutdown: watch::Receiver<bool>, mut work: W, last: L)
where
    W: FnMut() -> futures::future::BoxFuture<'static, ()> + Send + 'static,
    L: FnOnce() -> futures::future::BoxFuture<'static, ()> + Send + 'static,
{
    tokio::spawn(async move {
        let mut tick = tokio::time::interval(every);
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            tokio::select! {
                _ = tick.tick() => work().await,
                _ = shutdown.changed() => break,
            }
        }
        last().await;
    });
}

/// Heals faults whose time is up (fault control announces each), until shutdown.
pub fn spawn_fault_expiry(gateway: Arc<Gateway>, shutdown: watch::Receiver<bool>) {
    every(
        EXPIRY_TICK,
        shutdown,
        move || {
            gateway.faults().expire();
            Box::pin(async {})
        },
        || Box::pin(async {}),
    );
}

/// Asks the audit writer to apply retention periodically, until shutdown.
pub fn spawn_retention(
    audit: AuditWriter,
    retention: Retention,
    clock: SharedClock,
    shutdown: watch::Receiver<bool>,
) {
    every(
        retention.every,
        shutdown,
        move || {
            let cutoff = clock.unix_ms() - retention.keep.as_millis() as i64;
            audit.prune(cutoff, retention.max_rows, retention.max_response_bytes);
            Box::pin(async {})
        },
        || Box::pin(async {}),
    );
}

/// Persists hit counts and drops expired cache entries, until shutdown (and
/// once more on the way out, so no count is lost).
pub fn spawn_cache_maintenance(cache: Arc<SemanticCache>, shutdown: watch::Receiver<bool>) {
    let last = cache.clone();
    every(
        CACHE_TICK,
        shutdown,
        move || {
            let cache = cache.clone();
            Box::pin(async move { cache.maintain().await })
        },
        move || Box::pin(async move { last.maintain().await }),
    );
}

/// How often OPEN providers are checked for a due background probe: a
/// recovered provider is found within this of its cool-down.
const PROBE_TICK: Duration = Duration::from_millis(250);

/// Probes OPEN providers in the background when their cool-down is over, so no
/// customer's question is spent finding out whether a provider is back.
pub fn spawn_probes(gateway: Arc<Gateway>, shutdown: watch::Receiver<bool>) {
    every(
        PROBE_TICK,
        shutdown,
        move || {
            gateway.probe_due();
            Box::pin(async {})
        },
        || Box::pin(async {}),
    );
}

/// How often the database is asked whether it is there, for `/healthz` and
/// `/metrics` (which read the answer instead of waiting for one).
const STORE_TICK: Duration = Duration::from_secs(2);

/// Longest wait for the database's answer: past it, it counts as down.
const STORE_PING: Duration = Duration::from_millis(1_000);

/// Keeps `up` saying whether the database answers, logging only changes.
pub fn spawn_store_watch(
    store: crate::store::Store,
    up: Arc<std::sync::atomic::AtomicBool>,
    shutdown: watch::Receiver<bool>,
) {
    use std::sync::atomic::Ordering::Relaxed;
    every(
        STORE_TICK,
        shutdown,
        move || {
            let (store, up) = (store.clone(), up.clone());
            Box::pin(async move {
                let answered = tokio::time::timeout(STORE_PING, store.db().ping())
                    .await
                    .unwrap_or(false);
                if up.swap(answered, Relaxed) != answered {
                    let engine = store.db().engine().label();
                    if answered {
                        tracing::info!(engine, "database reachable again");
                    } else {
                        tracing::warn!(
                            engine,
                            "database unreachable: audit records wait in the queue and are retried"
                        );
                    }
                }
            })
        },
        || Box::pin(async {}),
    );
}

/// Takes the client keys made or revoked through other replicas (they share
/// the store), until shutdown. A revoked key must not go on working here, and a
/// replica that had no key must not stay open once another has one. An
/// unreachable store changes nothing: the keys in force stay.
pub fn spawn_client_sync(
    clients: Arc<crate::clients::Clients>,
    store: crate::store::Store,
    shutdown: watch::Receiver<bool>,
) {
    every(
        CLIENT_SYNC_TICK,
        shutdown,
        move || {
            let (clients, store) = (clients.clone(), store.clone());
            Box::pin(async move {
                let _changing = clients.changing().await;
                match tokio::time::timeout(CLIENT_SYNC_TICK, store.clients()).await {
                    Ok(Ok(stored)) => {
                        if clients.sync(&stored) {
                            tracing::info!(
                                clients = clients.count(),
                                "client keys changed through another replica"
                            );
                        }
                    }
                    Ok(Err(err)) => {
                        tracing::debug!(error = %err, "client keys not read; those in force stay")
                    }
                    Err(_) => tracing::debug!("client keys not read in time; those in force stay"),
                }
            })
        },
        || Box::pin(async {}),
    );
}
