//! Test doubles that speak raw HTTP on loopback, so a test can make a provider
//! fail exactly as a real one does: a slow first byte, a stream cut after some
//! events, a connection reset. (Mock-server crates answer whole responses only.)
#![allow(dead_code)]

pub mod app;
pub mod binary;
pub mod engines;
pub mod hostile;
pub mod upstream;

use std::sync::{Arc, Mutex};
use std::time::Duration;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};

/// How a scripted response ends after its last part.
#[derive(Clone, Copy, Debug)]
pub enum End {
    /// Close the connection cleanly (FIN).
    Close,
    /// Drop the connection with a TCP reset (RST).
    Reset,
}

/// One scripted response, replayed for every request.
#[derive(Clone, Debug)]
pub struct Script {
    /// Pause before anything is written (a slow first byte).
    pub delay: Duration,
    /// Status line and headers, without the blank line.
    pub head: Option<String>,
    /// Body parts, each written after its pause.
    pub parts: Vec<(Duration, String)>,
    /// How the connection ends.
    pub end: End,
}

impl Script {
    /// A whole response with a status, content type and body.
    pub fn respond(status: u16, content_type: &str, body: &str) -> Self {
        Self::with_headers(status, &[("content-type", content_type)], body)
    }

    /// A whole response with extra headers.
    pub fn with_headers(status: u16, headers: &[(&str, &str)], body: &str) -> Self {
        let mut head = format!(
            "HTTP/1.1 {status} Scripted\r\nconnection: close\r\ncontent-length: {}",
            body.len()
        );
        for (k, v) in headers {
            head.push_str(&format!("\r\n{k}: {v}"));
        }
        Self {
            delay: Duration::ZERO,
            head: Some(head),
            parts: vec![(Duration::ZERO, body.to_string())],
            end: End::Close,
        }
    }

    /// An SSE response whose body is `events` (each already framed), ending with `end`.
    /// The body is delimited by the connection's close, so a cut is only visible
    /// to a client that checks for the protocol's end marker.
    pub fn sse(events: Vec<String>, pause: Duration, end: End) -> Self {
        Self {
            delay: Duration::ZERO,
            head: Some(
                "HTTP/1.1 200 OK\r\ncontent-type: text/event-stream\r\nconnection: close".into(),
            ),
            parts: events.into_iter().map(|e| (pause, e)).collect(),
            end,
        }
    }

    /// Accepts the request and resets the connection without answering.
    pub fn reset() -> Self {
        Self {
            delay: Duration::ZERO,
            head: None,
            parts: vec![],
            end: End::Reset,
        }
    }

    /// Delays the whole response.
    pub fn delayed(mut self, delay: Duration) -> Self {
        self.delay = delay;
        self
    }
}

/// A request the scripted server received.
#[derive(Clone, Debug)]
pub struct Received {
    /// Request line, e.g. `POST /v1/messages HTTP/1.1`.
    pub line: String,
    /// Header lines, lower-cased names.
    pub headers: Vec<(String, String)>,
    /// The JSON body.
    pub body: serde_json::Value,
}

impl Received {
    /// The value of a header.
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(k, _)| k == name)
            .map(|(_, v)| v.as_str())
    }
}

/// A scripted HTTP server on a loopback port.
#[derive(Clone)]
pub struct ScriptedServer {
    /// `http://127.0.0.1:PORT`.
    pub url: String,
    /// Every request received, in order.
    pub received: Arc<Mutex<Vec<Received>>>,
}

impl ScriptedServer {
    /// Starts a server replaying `script` to every request.
    pub async fn start(script: Script) -> Self {
        Self::sequence(vec![script]).await
    }

    /// Starts a server answering the n-th request with the n-th script, and every
    /// request after the last with the last.
    pub async fn sequence(scripts: Vec<Script>) -> Self {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let url = format!("http://{}", listener.local_addr().unwrap());
        let received = Arc::new(Mutex::new(Vec::new()));
        let log = received.clone();
        let served = Arc::new(std::sync::atomic::AtomicUsize::new(0));
        tokio::spawn(async move {
            while let Ok((stream, _)) = listener.accept().await {
                let n = served.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
                let script = scripts[n.min(scripts.len() - 1)].clone();
                let log = log.clone();
                tokio::spawn(async move { handle(stream, script, log).await });
            }
        });
        Self { url, received }
    }

    /// How many requests arrived.
    pub fn hits(&self) -> usize {
        self.received.lock().unwrap().len()
    }

    /// The JSON bodies of the requests that arrived, in order.
    pub fn bodies(&self) -> Vec<serde_json::Value> {
        let received = self.received.lock().unwrap();
        received.iter().map(|r| r.body.clone()).collect()
    }
}

async fn read_request(stream: &mut TcpStream) -> Option<Received> {
    let mut buf = Vec::new();
    let mut chunk = [0u8; 4096];
    let head_end = loop {
        let n = stream.read(&mut chunk).await.ok()?;
        if n == 0 {
            return None;
        }
        buf.extend_from_slice(&chunk[..n]);
        if let Some(pos) = buf.windows(4).position(|w| w == b"\r\n\r\n") {
            break pos;
        }
    };
    let head = String::from_utf8_lossy(&buf[..head_end]).to_string();
    let mut lines = head.split("\r\n");
    let line = lines.next()?.to_string();
    let headers: Vec<(String, String)> = lines
        .filter_map(|l| l.split_once(':'))
        .map(|(k, v)| (k.trim().to_lowercase(), v.trim().to_string()))
        .collect();
    let length: usize = headers
        .iter()
        .find(|(k, _)| k == "content-length")
        .and_then(|(_, v)| v.parse().ok())
        .unwrap_or(0);
    let mut body = buf[head_end + 4..].to_vec();
    while body.len() < length {
        let n = stream.read(&mut chunk).await.ok()?;
        if n == 0 {
            break;
        }
        body.extend_from_slice(&chunk[..n]);
    }
    Some(Received {
        line,
        headers,
        body: serde_json::from_slice(&body).unwrap_or(serde_json::Value::Null),
    })
}

async fn handle(mut stream: TcpStream, script: Script, log: Arc<Mutex<Vec<Received>>>) {
    let Some(request) = read_request(&mut stream).await else {
        return;
    };
    log.lock().unwrap().push(request);
    tokio::time::sleep(script.delay).await;
    if let Some(head) = &script.head {
        if stream
            .write_all(format!("{head}\r\n\r\n").as_bytes())
            .await
            .is_err()
        {
            return;
        }
        let _ = stream.flush().await;
    }
    for (pause, part) in &script.parts {
        tokio::time::sleep(*pause).await;
        if stream.write_all(part.as_bytes()).await.is_err() {
            return;
        }
        let _ = stream.flush().await;
    }
    match script.end {
        End::Close => {
            let _ = stream.shutdown().await;
        }
        End::Reset => {
            // A zero linger turns close into a TCP reset.
            let _ = socket2::SockRef::from(&stream).set_linger(Some(Duration::ZERO));
            drop(stream);
        }
    }
}

/// OpenAI's 400 for a value a reasoning model does not take (`temperature`).
pub fn unsupported_temperature() -> Script {
    Script::respond(
        400,
        "application/json",
        &serde_json::json!({"error": {
            "message": "Unsupported value: 'temperature' does not support 0.2 with this model. Only the default (1) value is supported.",
            "type": "invalid_request_error", "param": "temperature", "code": "unsupported_value"}})
        .to_string(),
    )
}

/// One SSE event, framed.
pub fn sse_event(event: Option<&str>, data: &str) -> String {
    match event {
        Some(name) => format!("event: {name}\ndata: {data}\n\n"),
        None => format!("data: {data}\n\n"),
    }
}

/// Polls `probe` until it yields a value: the way a test waits for an effect
/// that happens off the request path (an audit row, a cache entry), instead of
/// sleeping for a guessed time. Fails the test after 10 s.
pub async fn eventually<T, F, Fut>(mut probe: F) -> T
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = Option<T>>,
{
    let deadline = std::time::Instant::now() + Duration::from_secs(10);
    loop {
        if let Some(value) = probe().await {
            return value;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "the awaited condition did not hold within 10 s"
        );
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
}

/// Asserts that `res` is a 400 whose JSON error names `param`.
pub async fn assert_invalid(res: reqwest::Response, param: &str) {
    assert_eq!(res.status(), 400, "expected a 400 naming {param}");
    let body: serde_json::Value = res.json().await.unwrap();
    assert_eq!(body["error"]["param"], param, "{body}");
}
