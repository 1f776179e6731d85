//! The live surfaces: the event websocket and Prometheus metrics.

use super::{admin::Admin, AppState};
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
    (
        [(header::CONTENT_TYPE, "text/plain; version=0.0.4")],
        state.gateway.metrics().render(),
    )
        .into_response()
}

/// `GET /ws/events` (admin): a snapshot of every provider, then every event as
/// JSON, and a fresh snapshot every second so durations and counts stay current.
pub async fn events(_: Admin, ws: WebSocketUpgrade, State(state): State<AppState>) -> Response {
    ws.on_upgrade(move |socket| forward(socket, state))
}

fn snapshot(state: &AppState) -> Message {
    let event = GatewayEvent::Snapshot {
        providers: state.gateway.statuses(),
        traffic: state.traffic.status(),
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
