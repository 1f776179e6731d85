//! Reference proxies: processes that only carry requests, so the gateway's
//! figures can be read against what one more process on the path costs on this
//! machine whatever it does.
//!
//! - [`Nginx`]: nginx (Debian's), one process, a keep-alive upstream and
//!   unbuffered responses: what a C proxy built for this costs.
//! - [`Relay`]: this bench binary run again as a bare relay on the gateway's own
//!   HTTP stack (axum's server, reqwest's client, the same runtime): what that
//!   stack costs with nothing of the gateway between its two sides.

use std::net::SocketAddr;
use std::process::{Child, Command, Stdio};
use std::time::Duration;

/// The environment variable that turns a bench binary into a [`Relay`]: the
/// upstream origin (`http://127.0.0.1:PORT`) and the address to listen on,
/// separated by a space.
const RELAY_ENV: &str = "CHAOSAI_BENCH_RELAY";

/// Waits up to 2 s for something to listen on `port`.
async fn wait_for(port: u16) {
    for _ in 0..200 {
        if tokio::net::TcpStream::connect(("127.0.0.1", port))
            .await
            .is_ok()
        {
            return;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    panic!("nothing listens on port {port}");
}

/// A running reference proxy: a child process on a loopback port.
pub struct Proxy {
    /// The process.
    child: Child,
    /// Where it listens.
    pub port: u16,
}

impl Proxy {
    /// `url` with its origin replaced by this proxy's.
    pub fn url_for(&self, url: &str) -> String {
        let path = url
            .strip_prefix("http://")
            .and_then(|rest| rest.find('/').map(|at| &rest[at..]))
            .unwrap_or("/");
        format!("http://127.0.0.1:{}{path}", self.port)
    }

    /// The process's CPU time so far, in seconds.
    pub fn cpu_seconds(&self) -> f64 {
        super::binary::cpu_seconds(self.child.id())
    }
}

impl Drop for Proxy {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// nginx as a reference proxy.
pub struct Nginx;

impl Nginx {
    /// nginx on a free port in front of `ports` (least connections between
    /// them), its files under `dir`: one process (no master), so one PID holds
    /// all its CPU time, and responses relayed unbuffered as they arrive.
    pub async fn start(dir: &std::path::Path, ports: &[u16]) -> Proxy {
        let port = super::free_port();
        let root = dir.join(format!("nginx-{port}"));
        std::fs::create_dir_all(&root).unwrap();
        let servers: String = ports
            .iter()
            .map(|p| format!("server 127.0.0.1:{p} max_fails=0;\n"))
            .collect();
        let conf = format!(
            "worker_processes 1; master_process off; daemon off;\n\
             pid {root}/nginx.pid; error_log {root}/error.log warn;\n\
             events {{ worker_connections 4096; }}\n\
             http {{ access_log off; client_body_temp_path {root}/b; proxy_temp_path {root}/p;\n\
               fastcgi_temp_path {root}/f; uwsgi_temp_path {root}/u; scgi_temp_path {root}/s;\n\
               upstream g {{ least_conn; {servers} keepalive 64; }}\n\
               server {{ listen 127.0.0.1:{port};\n\
                 location / {{ proxy_pass http://g; proxy_http_version 1.1;\n\
                   proxy_set_header Connection \"\"; proxy_buffering off; }} }} }}\n",
            root = root.display()
        );
        let path = root.join("nginx.conf");
        std::fs::write(&path, conf).unwrap();
        let child = Command::new("nginx")
            .arg("-c")
            .arg(&path)
            .arg("-p")
            .arg(&root)
            .stderr(Stdio::null())
            .spawn()
            .expect("nginx (`make bench` installs Debian's nginx-light)");
        wait_for(port).await;
        Proxy { child, port }
    }
}

/// The gateway's HTTP stack as a bare relay.
pub struct Relay;

impl Relay {
    /// This bench binary again, relaying every POST to `upstream` (an origin,
    /// `http://127.0.0.1:PORT`) on a free port.
    pub async fn start(upstream: &str) -> Proxy {
        let port = super::free_port();
        let child = Command::new(std::env::current_exe().unwrap())
            .env(RELAY_ENV, format!("{upstream} 127.0.0.1:{port}"))
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("the bench binary starts again as a relay");
        wait_for(port).await;
        Proxy { child, port }
    }

    /// Runs the relay and never returns when this process was started as one
    /// (by [`Relay::start`]); returns at once otherwise. Call it first thing.
    pub async fn serve_if_asked() {
        let Ok(asked) = std::env::var(RELAY_ENV) else {
            return;
        };
        let (upstream, addr) = asked.split_once(' ').expect("origin and address");
        let addr: SocketAddr = addr.parse().expect("a socket address");
        serve(upstream.to_string(), addr).await;
        std::process::exit(0);
    }
}

/// What the relay's handler needs.
struct RelayState {
    upstream: String,
    client: reqwest::Client,
}

/// Relays every request to `upstream` under the same path: the body read
/// whole, as the gateway does, the response streamed back as it arrives, with
/// its status and content type; nothing parsed, nothing else kept.
async fn serve(upstream: String, addr: SocketAddr) {
    use axum::{
        body::{Body, Bytes},
        extract::State,
        http::{header::CONTENT_TYPE, HeaderMap, StatusCode, Uri},
        response::{IntoResponse, Response},
        serve::ListenerExt,
    };
    use std::sync::Arc;

    async fn forward(
        State(state): State<Arc<RelayState>>,
        uri: Uri,
        headers: HeaderMap,
        body: Bytes,
    ) -> Response {
        let mut request = state
            .client
            .post(format!("{}{}", state.upstream, uri.path()))
            .body(body);
        if let Some(kind) = headers.get(CONTENT_TYPE) {
            request = request.header(CONTENT_TYPE, kind.clone());
        }
        match request.send().await {
            Ok(upstream) => {
                let status = upstream.status();
                let kind = upstream.headers().get(CONTENT_TYPE).cloned();
                let mut response = Response::new(Body::from_stream(upstream.bytes_stream()));
                *response.status_mut() = status;
                if let Some(kind) = kind {
                    response.headers_mut().insert(CONTENT_TYPE, kind);
                }
                response
            }
            Err(_) => StatusCode::BAD_GATEWAY.into_response(),
        }
    }

    let state = Arc::new(RelayState {
        upstream,
        client: reqwest::Client::builder()
            .pool_idle_timeout(Duration::from_secs(60))
            .redirect(reqwest::redirect::Policy::none())
            .build()
            .unwrap(),
    });
    let app = axum::Router::new()
        .fallback(axum::routing::post(forward))
        .with_state(state);
    // As the gateway does: a relayed stream must not wait for Nagle's algorithm.
    let listener = tokio::net::TcpListener::bind(addr)
        .await
        .unwrap()
        .tap_io(|tcp| {
            let _ = tcp.set_nodelay(true);
        });
    axum::serve(listener, app).await.unwrap();
}
