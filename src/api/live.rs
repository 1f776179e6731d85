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
use std::time::Duration;
use tokio::sync::broadcast::error::RecvError;

/// `GET /metrics`: Prometheus text format.
pub async fn metrics(State(state): State<AppState>) -> Response {
    (
        [(header::CONTENT_TYPE, "text/plain; version=0.0.4")],
        state.gateway.metrics().render(),
    )
        .into_response()
}

/// The board sends nothing but pings and closes: incoming frames stay small.
const MAX_INCOMING: usize = 4 * 1024;

/// Unsent outgoing bytes a socket may hold before it counts as too slow.
const MAX_UNSENT: usize = 256 * 1024;

/// A send that takes longer than this means the client is not reading: it is
/// dropped rather than buffered for.
const SEND_TIMEOUT: Duration = Duration::from_secs(5);

/// `GET /ws/events` (admin): a snapshot of every provider, then every event as
/// JSON, and a fresh snapshot every second so durations and counts stay current.
pub async fn events(_: Admin, ws: WebSocketUpgrade, State(state): State<AppState>) -> Response {
    ws.max_message_size(MAX_INCOMING)
        .max_frame_size(MAX_INCOMING)
        .write_buffer_size(0)
        .max_write_buffer_size(MAX_UNSENT)
        .on_upgrade(move |socket| forward(socket, state))
}

/// Sends within the timeout; `false` if the client is gone or too slow.
async fn send(socket: &mut WebSocket, message: Message) -> bool {
    matches!(
        tokio::time::timeout(SEND_TIMEOUT, socket.send(message)).await,
        Ok(Ok(()))
    )
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
    if !send(&mut socket, snapshot(&state)).await {
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
        if !send(&mut socket, message).await {
            break;
        }
    }
    let _ = send(&mut socket, Message::Close(None)).await;
}
