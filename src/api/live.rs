//! The live surfaces: the event websocket and Prometheus metrics.

use super::{chaos::Admin, AppState};
use crate::shared::GatewayEvent;
use axum::{
    extract::{
        ws::{Message, WebSocket, WebSocketUpgrade},
        State,
    },
    http::header,
    response::{IntoResponse, Response},
};
use tokio::sync::broadcast::error::RecvError;

/// `GET /metrics`: Prometheus text format.
pub async fn metrics(State(state): State<AppState>) -> Response {
    use std::fmt::Write;
    use std::sync::atomic::Ordering::Relaxed;
    let mut text = state.gateway.metrics().render();
    if let Some(audit) = &state.audit {
        let c = audit.counters();
        for (name, help, value) in [
            (
                "chaosai_audit_overflow_total",
                "Audit records that found the queue full (kept, not dropped)",
                &c.overflow,
            ),
            (
                "chaosai_audit_written_total",
                "Audit records written",
                &c.written,
            ),
            (
                "chaosai_audit_retries_total",
                "Audit batches retried after a database error",
                &c.retries,
            ),
        ] {
            let _ = write!(
                text,
                "# HELP {name} {help}\n# TYPE {name} counter\n{name} {}\n",
                value.load(Relaxed)
            );
        }
    }
    if let Some(cache) = state.gateway.cache() {
        let c = cache.counters();
        let _ = write!(
            text,
            "# HELP chaosai_cache_entries Entries in the semantic cache\n# TYPE chaosai_cache_entries gauge\n\
             chaosai_cache_entries {}\n\
             # HELP chaosai_cache_lookups_total Cache lookups by result\n# TYPE chaosai_cache_lookups_total counter\n\
             chaosai_cache_lookups_total{{result=\"hit\"}} {}\n\
             chaosai_cache_lookups_total{{result=\"miss\"}} {}\n\
             chaosai_cache_lookups_total{{result=\"refused\"}} {}\n\
             # HELP chaosai_cache_hit_ratio Share of lookups answered from the cache\n# TYPE chaosai_cache_hit_ratio gauge\n\
             chaosai_cache_hit_ratio {:.4}\n",
            cache.len(),
            c.hits.load(Relaxed),
            c.misses.load(Relaxed),
            c.refused.load(Relaxed),
            cache.hit_ratio()
        );
    }
    ([(header::CONTENT_TYPE, "text/plain; version=0.0.4")], text).into_response()
}

/// `GET /ws/events` (admin): a snapshot of every provider, then every event as
/// JSON, and a fresh snapshot every second so durations and counts stay current.
pub async fn events(_: Admin, ws: WebSocketUpgrade, State(state): State<AppState>) -> Response {
    ws.on_upgrade(move |socket| forward(socket, state))
}

fn snapshot(state: &AppState) -> Message {
    let event = GatewayEvent::Snapshot {
        providers: state.provider_statuses(),
        traffic: state.traffic.running(),
    };
    Message::Text(serde_json::to_string(&event).unwrap_or_default().into())
}

async fn forward(mut socket: WebSocket, state: AppState) {
    // Subscribe before the snapshot, so nothing between the two is missed.
    let mut events = state.gateway.events().subscribe();
    let mut shutdown = state.shutdown.clone();
    if socket.send(snapshot(&state)).await.is_err() {
        return;
    }
    let mut refresh = tokio::time::interval(std::time::Duration::from_secs(1));
    refresh.tick().await;
    loop {
        let message = tokio::select! {
            _ = refresh.tick() => snapshot(&state),
            event = events.recv() => match event {
                Ok(event) => Message::Text(serde_json::to_string(&event).unwrap_or_default().into()),
                // A slow client skipped events: it starts over from the current state.
                Err(RecvError::Lagged(_)) => snapshot(&state),
                Err(RecvError::Closed) => break,
            },
            incoming = socket.recv() => match incoming {
                Some(Ok(Message::Close(_))) | None | Some(Err(_)) => break,
                Some(Ok(_)) => continue,
            },
            _ = shutdown.changed() => break,
        };
        if socket.send(message).await.is_err() {
            break;
        }
    }
    let _ = socket.send(Message::Close(None)).await;
}
