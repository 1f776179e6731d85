//! The fault proxy: a loopback HTTP server in front of the providers that have a
//! fault in force. `/{provider}/{path}` is forwarded to `{provider base}/{path}`,
//! broken on the way exactly as the provider's fault says.

use super::FaultPlan;
use crate::config::Protocol;
use crate::shared::FaultKind;
use axum::{
    body::{Body, Bytes},
    extract::{DefaultBodyLimit, Path, State},
    http::{HeaderMap, HeaderValue, Method, StatusCode},
    response::{IntoResponse, Response},
    routing::any,
    serve::ListenerExt,
    Router,
};
use futures::StreamExt;
use rand::Rng;
use serde_json::json;
use std::{collections::HashMap, net::SocketAddr, sync::Arc, time::Duration, time::Instant};

/// Where the proxy forwards one provider's requests.
#[derive(Clone, Debug)]
pub struct Upstream {
    /// The provider's real (or simulated) base URL.
    pub base_url: String,
    /// Its protocol, to write its own error bodies.
    pub protocol: Protocol,
}

struct ProxyState {
    plan: Arc<FaultPlan>,
    upstreams: HashMap<String, Upstream>,
    client: reqwest::Client,
}

/// A running fault proxy.
pub struct FaultProxy {
    /// Where it listens.
    pub addr: SocketAddr,
}

impl FaultProxy {
    /// Starts the proxy on a free loopback port; it runs until the runtime ends.
    pub async fn start(
        plan: Arc<FaultPlan>,
        upstreams: HashMap<String, Upstream>,
        client: reqwest::Client,
    ) -> std::io::Result<Self> {
        let listener = tokio::net::TcpListener::bind(("127.0.0.1", 0)).await?;
        let addr = listener.local_addr()?;
        let state = Arc::new(ProxyState {
            plan,
            upstreams,
            client,
        });
        let app = Router::new()
            .route("/{provider}/{*rest}", any(forward))
            // Whatever a provider would take passes the proxy too.
            .layer(DefaultBodyLimit::max(crate::sim::REQUEST_LIMIT_BYTES))
            .with_state(state);
        // Relayed streams must not wait for Nagle's algorithm either.
        let listener = listener.tap_io(|tcp| {
            let _ = tcp.set_nodelay(true);
        });
        tokio::spawn(async move {
            if let Err(err) = axum::serve(listener, app).await {
                tracing::error!(error = %err, "fault proxy stopped");
            }
        });
        Ok(Self { addr })
    }

    /// The base URL that routes through the proxy to `provider`.
    pub fn base_for(&self, provider: &str) -> String {
        format!("http://{}/{provider}", self.addr)
    }
}

/// An error response in the provider's own format.
fn provider_error(protocol: Protocol, status: StatusCode, kind: &str, message: &str) -> Response {
    let body = match protocol {
        Protocol::Anthropic => {
            json!({"type": "error", "error": {"type": kind, "message": message}})
        }
        Protocol::OpenAi => {
            json!({"error": {"message": message, "type": kind, "param": null, "code": null}})
        }
    };
    (status, axum::Json(body)).into_response()
}

/// A 200 whose body is not the protocol: broken JSON, or an SSE event cut inside its JSON.
fn malformed(protocol: Protocol, stream: bool) -> Response {
    if !stream {
        return (
            [("content-type", "application/json")],
            r#"{"id":"chaos","choices":[{"message":{"content":"Your ord"#,
        )
            .into_response();
    }
    let body = match protocol {
        Protocol::Anthropic => "event: message_start\ndata: {\"type\":\"message_start\",\"message\":{\"id\":\"chaos\"}}\n\n\
                                event: content_block_delta\ndata: {\"type\":\"content_block_delta\",\"delta\":{\"text\":\"Your ord\n\n",
        Protocol::OpenAi => "data: {\"id\":\"chaos\",\"choices\":[{\"index\":0,\"delta\":{\"content\":\"Your ord\n\n",
    };
    ([("content-type", "text/event-stream")], body).into_response()
}

async fn forward(
    State(state): State<Arc<ProxyState>>,
    Path((provider, rest)): Path<(String, String)>,
    method: Method,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    let Some(upstream) = state.upstreams.get(&provider) else {
        return (StatusCode::NOT_FOUND, "unknown provider").into_response();
    };
    let protocol = upstream.protocol;
    let fault = state
        .plan
        .current(&provider, Instant::now())
        .map(|f| f.kind);
    let wants_stream = serde_json::from_slice::<serde_json::Value>(&body)
        .ok()
        .and_then(|v| v.get("stream").and_then(|s| s.as_bool()))
        .unwrap_or(false);
    let mut cut_after = None;
    match fault {
        Some(FaultKind::Outage) => {
            let kind = if protocol == Protocol::Anthropic {
                "api_error"
            } else {
                "server_error"
            };
            return provider_error(
                protocol,
                StatusCode::SERVICE_UNAVAILABLE,
                kind,
                "Service unavailable (injected outage)",
            );
        }
        Some(FaultKind::RateLimit { retry_after_s }) => {
            let kind = if protocol == Protocol::Anthropic {
                "rate_limit_error"
            } else {
                "rate_limit_exceeded"
            };
            let mut response = provider_error(
                protocol,
                StatusCode::TOO_MANY_REQUESTS,
                kind,
                "Rate limit reached (injected)",
            );
            if let Ok(value) = HeaderValue::from_str(&retry_after_s.to_string()) {
                response.headers_mut().insert("retry-after", value);
            }
            return response;
        }
        Some(FaultKind::Flaky { error_rate })
            if rand::thread_rng().gen_bool(error_rate.clamp(0.0, 1.0)) =>
        {
            let kind = if protocol == Protocol::Anthropic {
                "api_error"
            } else {
                "server_error"
            };
            return provider_error(
                protocol,
                StatusCode::INTERNAL_SERVER_ERROR,
                kind,
                "Internal error (injected flakiness)",
            );
        }
        Some(FaultKind::Hang) => {
            // Never answer; the caller's timeout ends the exchange and drops this future.
            std::future::pending::<()>().await;
        }
        Some(FaultKind::Malformed) => return malformed(protocol, wants_stream),
        Some(FaultKind::Latency {
            delay_ms,
            jitter_ms,
        }) => {
            let jitter = if jitter_ms > 0 {
                rand::thread_rng().gen_range(0..=2 * jitter_ms) as i64 - jitter_ms as i64
            } else {
                0
            };
            let delay = (delay_ms as i64 + jitter).max(0) as u64;
            tokio::time::sleep(Duration::from_millis(delay)).await;
        }
        Some(FaultKind::Reset { after_bytes }) => cut_after = Some(after_bytes as usize),
        Some(FaultKind::Flaky { .. }) | None => {}
    }

    let url = format!("{}/{rest}", upstream.base_url.trim_end_matches('/'));
    let mut request = state.client.request(method, url).body(body);
    for (name, value) in &headers {
        if !matches!(
            name.as_str(),
            "host" | "content-length" | "connection" | "transfer-encoding"
        ) {
            request = request.header(name, value);
        }
    }
    let response = match request.send().await {
        Ok(response) => response,
        Err(err) => {
            return provider_error(
                protocol,
                StatusCode::BAD_GATEWAY,
                "api_error",
                &format!("upstream unreachable: {err}"),
            )
        }
    };
    let mut out = Response::builder().status(response.status().as_u16());
    for (name, value) in response.headers() {
        if !matches!(
            name.as_str(),
            "content-length" | "connection" | "transfer-encoding"
        ) {
            out = out.header(name, value);
        }
    }
    let body = response.bytes_stream();
    let body = match cut_after {
        None => Body::from_stream(body),
        Some(limit) => {
            // Pass `limit` bytes, then fail the body: the server aborts the
            // connection and the client sees a stream that broke mid-way.
            let mut passed = 0usize;
            Body::from_stream(body.map(move |chunk| {
                let chunk = chunk.map_err(std::io::Error::other)?;
                if passed >= limit {
                    return Err(std::io::Error::new(
                        std::io::ErrorKind::ConnectionReset,
                        "injected reset",
                    ));
                }
                let keep = (limit - passed).min(chunk.len());
                passed += keep;
                Ok(chunk.slice(..keep))
            }))
        }
    };
    out.body(body)
        .unwrap_or_else(|_| StatusCode::BAD_GATEWAY.into_response())
}
