//! A hostile provider on raw TCP, where an HTTP library would hide the fault:
//! nonsense `Retry-After`, error bodies and answers that never end, an SSE line
//! without an end, a stream that sends forever after its first token. It speaks
//! the OpenAI protocol's framing and writes as fast as the gateway reads.
#![allow(dead_code)]

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};

/// What the provider does to every request.
#[derive(Clone, Debug)]
pub enum Attack {
    /// 429 with this `Retry-After` value.
    RetryAfter(String),
    /// 500 with an error body that never ends.
    EndlessErrorBody,
    /// 200 with a JSON answer that never ends.
    EndlessAnswer,
    /// 200 SSE whose first line never ends.
    EndlessLine,
    /// 200 SSE: one real token, then pings (valid events, no text) forever.
    PingsForever,
    /// 200 SSE: 4 KiB text tokens, one a millisecond, forever.
    EndlessTokens,
}

/// A hostile provider on a loopback port.
#[derive(Clone)]
pub struct Hostile {
    /// Base URL for an OpenAI-protocol adapter.
    pub base_url: String,
    attack: Arc<Mutex<Attack>>,
    /// Bytes written to the gateway, all connections together.
    pub sent: Arc<AtomicU64>,
    /// Requests received.
    pub requests: Arc<AtomicU64>,
    /// Connections open right now.
    pub open: Arc<AtomicU64>,
}

impl Hostile {
    /// Starts it with `attack`.
    pub async fn start(attack: Attack) -> Self {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let base_url = format!("http://{}/v1", listener.local_addr().unwrap());
        let hostile = Self {
            base_url,
            attack: Arc::new(Mutex::new(attack)),
            sent: Arc::default(),
            requests: Arc::default(),
            open: Arc::default(),
        };
        let h = hostile.clone();
        tokio::spawn(async move {
            while let Ok((stream, _)) = listener.accept().await {
                let h = h.clone();
                tokio::spawn(async move {
                    h.open.fetch_add(1, Ordering::SeqCst);
                    h.serve(stream).await;
                    h.open.fetch_sub(1, Ordering::SeqCst);
                });
            }
        });
        hostile
    }

    /// Changes the attack for the requests to come.
    pub fn set(&self, attack: Attack) {
        *self.attack.lock().unwrap() = attack;
    }

    /// Bytes sent so far, in MiB.
    pub fn sent_mib(&self) -> f64 {
        self.sent.load(Ordering::Relaxed) as f64 / (1 << 20) as f64
    }

    async fn serve(&self, mut stream: TcpStream) {
        // Read the request head and its body (the gateway sends a content-length).
        let mut buf = Vec::new();
        let mut chunk = [0u8; 8192];
        loop {
            let Ok(n) = stream.read(&mut chunk).await else {
                return;
            };
            if n == 0 {
                return;
            }
            buf.extend_from_slice(&chunk[..n]);
            if let Some(end) = buf.windows(4).position(|w| w == b"\r\n\r\n") {
                let head = String::from_utf8_lossy(&buf[..end]).to_lowercase();
                let length: usize = head
                    .lines()
                    .find_map(|l| l.strip_prefix("content-length:"))
                    .and_then(|v| v.trim().parse().ok())
                    .unwrap_or(0);
                if buf.len() >= end + 4 + length {
                    break;
                }
            }
        }
        self.requests.fetch_add(1, Ordering::Relaxed);
        let attack = self.attack.lock().unwrap().clone();
        match attack {
            Attack::RetryAfter(value) => {
                let body =
                    r#"{"error":{"message":"slow down","type":"rate_limit_exceeded","code":null}}"#;
                let response = format!(
                    "HTTP/1.1 429 Too Many Requests\r\nretry-after: {value}\r\ncontent-type: application/json\r\ncontent-length: {}\r\nconnection: close\r\n\r\n{body}",
                    body.len()
                );
                let _ = self.write(&mut stream, response.as_bytes()).await;
            }
            Attack::EndlessErrorBody => {
                let head = "HTTP/1.1 500 Internal Server Error\r\ncontent-type: application/json\r\nconnection: close\r\n\r\n{\"error\":{\"message\":\"";
                self.forever(&mut stream, head, b"x").await;
            }
            Attack::EndlessAnswer => {
                let head = "HTTP/1.1 200 OK\r\ncontent-type: application/json\r\nconnection: close\r\n\r\n{\"choices\":[{\"index\":0,\"message\":{\"role\":\"assistant\",\"content\":\"";
                self.forever(&mut stream, head, b"a").await;
            }
            Attack::EndlessLine => {
                let head = "HTTP/1.1 200 OK\r\ncontent-type: text/event-stream\r\nconnection: close\r\n\r\ndata: ";
                self.forever(&mut stream, head, b"y").await;
            }
            Attack::PingsForever => {
                let head = "HTTP/1.1 200 OK\r\ncontent-type: text/event-stream\r\nconnection: close\r\n\r\n\
                            data: {\"choices\":[{\"index\":0,\"delta\":{\"content\":\"Hello\"}}]}\n\n";
                if self.write(&mut stream, head.as_bytes()).await.is_err() {
                    return;
                }
                // Valid, empty events, quickly enough that no stall limit ever fires.
                loop {
                    let ping = b"data: {\"choices\":[]}\n\n";
                    if self.write(&mut stream, ping).await.is_err() {
                        return;
                    }
                    tokio::time::sleep(Duration::from_millis(20)).await;
                }
            }
            Attack::EndlessTokens => {
                let head = "HTTP/1.1 200 OK\r\ncontent-type: text/event-stream\r\nconnection: close\r\n\r\n";
                if self.write(&mut stream, head.as_bytes()).await.is_err() {
                    return;
                }
                let token = format!(
                    "data: {{\"choices\":[{{\"index\":0,\"delta\":{{\"content\":\"{}\"}}}}]}}\n\n",
                    "z".repeat(4096)
                );
                loop {
                    if self.write(&mut stream, token.as_bytes()).await.is_err() {
                        return;
                    }
                    tokio::time::sleep(Duration::from_millis(1)).await;
                }
            }
        }
    }

    /// Writes `head`, then `filler` repeated in 64 KiB writes until the peer goes.
    async fn forever(&self, stream: &mut TcpStream, head: &str, filler: &[u8]) {
        if self.write(stream, head.as_bytes()).await.is_err() {
            return;
        }
        let block = filler.repeat(64 * 1024 / filler.len());
        while self.write(stream, &block).await.is_ok() {}
    }

    async fn write(&self, stream: &mut TcpStream, bytes: &[u8]) -> std::io::Result<()> {
        stream.write_all(bytes).await?;
        self.sent.fetch_add(bytes.len() as u64, Ordering::Relaxed);
        Ok(())
    }
}
