//! Serving HTTP under the limits a hostile client makes necessary, which
//! `axum::serve` does not set: headers must arrive within a time (which also
//! closes idle keep-alive connections), at most so many connections are open at
//! once (beyond that a new one is closed at once rather than left to queue), and
//! a graceful shutdown stops accepting and lets in-flight exchanges finish.

use crate::api::WithCors;
use axum::{body::Body, extract::Request};
use hyper::body::Incoming;
use hyper_util::rt::{TokioExecutor, TokioIo, TokioTimer};
use hyper_util::server::conn::auto::Builder;
use hyper_util::service::TowerToHyperService;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;
use tokio::net::TcpListener;
use tokio::sync::{watch, Semaphore};
use tower::ServiceExt;

/// Most bytes of a request head (request line and headers), on either protocol.
/// hyper's defaults (about 400 KB of buffer for HTTP/1, 16 MiB of header list for
/// HTTP/2) let every connection under the cap hold that much; with this bound the
/// cap costs at most `max_connections` × 32 KiB of heads, and a larger head gets a
/// 431. Browsers' cookies and SDKs' headers come to a few KiB.
const MAX_HEAD_BYTES: usize = 32 << 10;

/// What a connection may cost the server.
#[derive(Clone, Copy, Debug)]
pub struct ConnectionLimits {
    /// A request's headers (and the next request on a kept-alive connection)
    /// must arrive within this, or the connection is closed.
    pub header_read: Duration,
    /// Connections served at once.
    pub max_connections: usize,
}

/// Counts of what the listener refused, for the logs and the tests.
#[derive(Debug, Default)]
pub struct ListenCounters {
    /// Connections closed at once because the cap was reached.
    pub refused: AtomicU64,
}

/// Serves `app` on `listener` until `shutdown` turns true, then lets in-flight
/// exchanges finish (the caller bounds how long it waits for that).
pub async fn serve(
    listener: TcpListener,
    app: WithCors,
    limits: ConnectionLimits,
    counters: Arc<ListenCounters>,
    mut shutdown: watch::Receiver<bool>,
) {
    let permits = Arc::new(Semaphore::new(limits.max_connections.max(1)));
    // Every connection task holds a receiver; all are gone when `closed` resolves.
    let (open_tx, open_rx) = watch::channel(());
    loop {
        let accepted = tokio::select! {
            accepted = listener.accept() => accepted,
            _ = shutdown.wait_for(|stop| *stop) => break,
        };
        let stream = match accepted {
            Ok((stream, _)) => stream,
            Err(err) => {
                // Out of file descriptors, typically: back off instead of spinning.
                tracing::warn!(error = %err, "accept failed");
                tokio::time::sleep(Duration::from_millis(50)).await;
                continue;
            }
        };
        let Ok(permit) = permits.clone().try_acquire_owned() else {
            let refused = counters.refused.fetch_add(1, Ordering::Relaxed) + 1;
            if refused.is_power_of_two() {
                tracing::warn!(
                    refused,
                    max = limits.max_connections,
                    "connection cap reached: closing new connections"
                );
            }
            drop(stream);
            continue;
        };
        // Streams are many small writes: without TCP_NODELAY, Nagle's algorithm
        // and delayed ACKs hold tokens back for ~40 ms.
        let _ = stream.set_nodelay(true);
        let service = TowerToHyperService::new(
            app.clone()
                .map_request(|request: Request<Incoming>| request.map(Body::new)),
        );
        let mut stop = shutdown.clone();
        let open = open_rx.clone();
        tokio::spawn(async move {
            let mut builder = Builder::new(TokioExecutor::new());
            builder
                .http1()
                .timer(TokioTimer::new())
                .header_read_timeout(limits.header_read)
                .max_buf_size(MAX_HEAD_BYTES);
            builder
                .http2()
                .timer(TokioTimer::new())
                .keep_alive_interval(Some(Duration::from_secs(30)))
                .keep_alive_timeout(Duration::from_secs(10))
                .max_header_list_size(MAX_HEAD_BYTES as u32)
                // HTTP/2 websockets need the CONNECT protocol.
                .enable_connect_protocol();
            let connection = builder.serve_connection_with_upgrades(TokioIo::new(stream), service);
            tokio::pin!(connection);
            let mut stopping = false;
            loop {
                tokio::select! {
                    result = connection.as_mut() => {
                        if let Err(err) = result {
                            tracing::debug!(error = %err, "connection ended with an error");
                        }
                        break;
                    }
                    _ = stop.wait_for(|stop| *stop), if !stopping => {
                        stopping = true;
                        connection.as_mut().graceful_shutdown();
                    }
                }
            }
            drop(permit);
            drop(open);
        });
    }
    drop(open_rx);
    drop(listener);
    open_tx.closed().await;
}
