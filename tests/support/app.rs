//! The whole ChaosAI server on an ephemeral port, with a temporary SQLite file
//! and simulated providers, plus small helpers to talk to it.

use chaosai::clock::ManualClock;
use chaosai::config::{Config, SimulateMode};
use leptos::prelude::LeptosOptions;
use serde_json::{json, Value};
use std::sync::Arc;

/// A running server and the folder holding its database.
pub struct TestServer {
    /// The server.
    pub server: chaosai::server::RunningServer,
    /// `http://127.0.0.1:PORT`.
    pub base: String,
    /// An HTTP client.
    pub client: reqwest::Client,
    /// The time the server's policy reads (breakers, fault expiry, cache TTL):
    /// tests step it instead of sleeping.
    pub clock: Arc<ManualClock>,
    /// Keeps the database folder alive as long as the server.
    _dir: tempfile::TempDir,
}

/// The shipped configuration, made fast and offline for tests.
pub fn config(db: &std::path::Path) -> Config {
    let mut config = Config::from_toml(include_str!("../../config/chaosai.toml"), "test").unwrap();
    config.server.addr = "127.0.0.1:0".parse().unwrap();
    config.server.shutdown_grace_ms = 5_000;
    config.server.admin_token = Some(chaosai::config::Secret::new("test-admin-token"));
    config.database.url = format!("sqlite://{}", db.display());
    config.gateway.simulate = SimulateMode::Always;
    // Most suites ask the same questions again and expect a provider to answer;
    // the cache's own suite turns it on.
    config.cache.enabled = false;
    config.sim.chunk_delay_min_ms = 2;
    config.sim.chunk_delay_max_ms = 4;
    config
}

impl TestServer {
    /// Starts a server with the test configuration, edited by `edit`.
    pub async fn start_with(edit: impl FnOnce(&mut Config)) -> Self {
        let dir = tempfile::tempdir().unwrap();
        let mut config = config(&dir.path().join("chaosai.db"));
        edit(&mut config);
        let options = LeptosOptions::builder().output_name("chaosai").build();
        let clock = ManualClock::new();
        let server = chaosai::server::start_with_clock(config, options, clock.clone())
            .await
            .unwrap();
        let base = format!("http://{}", server.addr);
        TestServer {
            server,
            base,
            client: reqwest::Client::new(),
            clock,
            _dir: dir,
        }
    }

    /// Starts a server with the test configuration.
    pub async fn start() -> Self {
        Self::start_with(|_| {}).await
    }

    /// A full URL for `path`.
    pub fn url(&self, path: &str) -> String {
        format!("{}{path}", self.base)
    }

    /// Posts a chat completion.
    pub async fn chat(&self, model: &str, question: &str, stream: bool) -> reqwest::Response {
        self.client
            .post(self.url("/v1/chat/completions"))
            .json(&ask(model, question, stream))
            .send()
            .await
            .unwrap()
    }

    /// One chat-page turn through the `ask` server function, in `conversation`
    /// (a new one when `None`): its newline-delimited events, read to the end.
    pub async fn chat_events(&self, conversation: Option<&str>, turns: Value) -> Vec<Value> {
        let res = self
            .client
            .post(self.url("/api/ask"))
            .json(&json!({"conversation_id": conversation, "turns": turns}))
            .send()
            .await
            .unwrap();
        assert_eq!(res.status(), 200);
        res.text()
            .await
            .unwrap()
            .lines()
            .map(|l| serde_json::from_str(l).unwrap())
            .collect()
    }

    /// An admin request with the test token.
    pub fn admin(&self, method: reqwest::Method, path: &str) -> reqwest::RequestBuilder {
        self.client
            .request(method, self.url(path))
            .bearer_auth("test-admin-token")
    }

    /// An admin `GET` of `path`, as JSON (expected to succeed).
    pub async fn admin_json(&self, path: &str) -> Value {
        let res = self.admin(reqwest::Method::GET, path).send().await.unwrap();
        assert!(res.status().is_success(), "GET {path}: {}", res.status());
        res.json().await.unwrap()
    }

    /// Makes a client through the admin API (`{name, tenant, rpm?, tpm?}`) and
    /// returns its key, shown this once.
    pub async fn make_client(&self, client: Value) -> String {
        let made = self
            .admin(reqwest::Method::POST, "/api/clients")
            .json(&client)
            .send()
            .await
            .unwrap();
        assert_eq!(made.status(), 201, "{client}");
        made.json::<Value>().await.unwrap()["key"]
            .as_str()
            .unwrap()
            .to_string()
    }

    /// Injects a fault (JSON spec) into a provider.
    pub async fn inject(&self, provider: &str, spec: Value) {
        let res = self
            .admin(reqwest::Method::PUT, &format!("/api/chaos/{provider}"))
            .json(&spec)
            .send()
            .await
            .unwrap();
        assert_eq!(res.status(), 200, "{}", res.text().await.unwrap());
    }

    /// Heals every provider.
    pub async fn heal_all(&self) {
        let res = self
            .admin(reqwest::Method::DELETE, "/api/chaos")
            .send()
            .await
            .unwrap();
        assert_eq!(res.status(), 200);
    }

    /// Every provider's status.
    pub async fn providers(&self) -> Vec<Value> {
        self.admin(reqwest::Method::GET, "/api/providers")
            .send()
            .await
            .unwrap()
            .json()
            .await
            .unwrap()
    }

    /// One provider's status.
    pub async fn provider(&self, name: &str) -> Value {
        self.providers()
            .await
            .into_iter()
            .find(|p| p["name"] == name)
            .unwrap()
    }

    /// The whole `/metrics` text.
    pub async fn metrics_text(&self) -> String {
        let res = self.client.get(self.url("/metrics")).send().await.unwrap();
        res.text().await.unwrap()
    }

    /// The value of one sample in `/metrics`, e.g. `chaosai_attempts_total{outcome="ok",provider="gpt"}`.
    pub async fn metric(&self, sample: &str) -> f64 {
        self.metrics_text()
            .await
            .lines()
            .find_map(|l| l.strip_prefix(sample).and_then(|v| v.trim().parse().ok()))
            .unwrap_or(0.0)
    }

    /// Waits until the audit holds `expected` request rows (they are written off
    /// the request path), returning the count seen.
    pub async fn request_rows(&self, expected: i64) -> i64 {
        self.rows("SELECT COUNT(*) FROM requests", |n| n >= expected)
            .await
    }

    /// Waits until the count `sql` returns satisfies `done`, and returns it.
    pub async fn rows(&self, sql: &str, done: impl Fn(i64) -> bool) -> i64 {
        let db = self.server.store.db();
        super::eventually(|| async {
            let count = chaosai::with_db!(db, pool => sqlx::query_scalar::<_, i64>(sql)
                .fetch_one(pool)
                .await)
            .unwrap();
            done(count).then_some(count)
        })
        .await
    }
}

/// The `error` object of an API error response, once its status is `status`.
pub async fn api_error(res: reqwest::Response, status: u16) -> Value {
    assert_eq!(res.status(), status, "{}", res.url());
    let mut body: Value = res.json().await.unwrap();
    body["error"].take()
}

/// A chat completion request body.
pub fn ask(model: &str, question: &str, stream: bool) -> Value {
    json!({"model": model, "stream": stream, "messages": [
        {"role": "system", "content": "Answer in English."},
        {"role": "user", "content": question}
    ]})
}

/// Parses an SSE body into its `data:` payloads.
pub fn sse_data(body: &str) -> Vec<String> {
    body.split("\n\n")
        .filter_map(|event| {
            event
                .lines()
                .find_map(|l| l.strip_prefix("data: ").or_else(|| l.strip_prefix("data:")))
        })
        .map(|d| d.trim().to_string())
        .collect()
}

/// The text of a streamed completion, and whether it ended with `[DONE]`.
pub fn streamed_text(body: &str) -> (String, bool) {
    let data = sse_data(body);
    let done = data.last().is_some_and(|d| d == "[DONE]");
    let text = data
        .iter()
        .filter_map(|d| serde_json::from_str::<Value>(d).ok())
        .filter_map(|c| {
            c["choices"][0]["delta"]["content"]
                .as_str()
                .map(str::to_string)
        })
        .collect();
    (text, done)
}

/// A tool call as a client assembles it from a stream's fragments.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct StreamedCall {
    /// The call's id.
    pub id: String,
    /// The function's name.
    pub name: String,
    /// Its arguments, every fragment joined.
    pub arguments: String,
}

/// What an OpenAI SDK makes of a streamed completion.
#[derive(Debug, Default)]
pub struct Streamed {
    /// The text (a restart marker drops what came before it).
    pub text: String,
    /// The tool calls, by index.
    pub tool_calls: Vec<StreamedCall>,
    /// The finish reason, if a chunk gave one.
    pub finish_reason: Option<String>,
    /// The usage chunk's usage.
    pub usage: Option<Value>,
    /// The usage chunk's `chaosai.usage_source`.
    pub usage_source: Option<String>,
    /// Whether the stream ended with `[DONE]`.
    pub done: bool,
    /// Whether an error event came.
    pub error: bool,
    /// Every JSON chunk, in order.
    pub chunks: Vec<Value>,
}

/// Reads a streamed completion as a client does: text deltas, tool-call
/// fragments by index (the first names the call), the finish, the usage chunk.
pub fn read_stream(body: &str) -> Streamed {
    let mut out = Streamed::default();
    for data in sse_data(body) {
        if data == "[DONE]" {
            out.done = true;
            continue;
        }
        let chunk: Value = serde_json::from_str(&data).unwrap();
        if chunk.get("error").is_some() {
            out.error = true;
        }
        if chunk["chaosai"]["restarted"] == true {
            out.text.clear();
            out.tool_calls.clear();
        }
        if let Some(usage) = chunk.get("usage").filter(|u| !u.is_null()) {
            out.usage = Some(usage.clone());
            out.usage_source = chunk["chaosai"]["usage_source"]
                .as_str()
                .map(str::to_string);
        }
        if let Some(choice) = chunk["choices"].get(0) {
            let delta = &choice["delta"];
            if let Some(text) = delta["content"].as_str() {
                out.text.push_str(text);
            }
            for call in delta["tool_calls"].as_array().into_iter().flatten() {
                let index = call["index"].as_u64().unwrap() as usize;
                if out.tool_calls.len() <= index {
                    out.tool_calls.resize(index + 1, StreamedCall::default());
                }
                let entry = &mut out.tool_calls[index];
                if let Some(id) = call["id"].as_str() {
                    entry.id = id.to_string();
                }
                if let Some(name) = call["function"]["name"].as_str() {
                    entry.name = name.to_string();
                }
                if let Some(piece) = call["function"]["arguments"].as_str() {
                    entry.arguments.push_str(piece);
                }
            }
            if let Some(reason) = choice["finish_reason"].as_str() {
                out.finish_reason = Some(reason.to_string());
            }
        }
        out.chunks.push(chunk);
    }
    out
}

impl TestServer {
    /// The audit row of a request once it is written: its status and its
    /// attempts as (provider, outcome).
    pub async fn audited(&self, id: &str) -> (String, Vec<(String, String)>) {
        self.rows(
            &format!("SELECT COUNT(*) FROM requests WHERE id = '{id}'"),
            |n| n == 1,
        )
        .await;
        let db = self.server.store.db();
        let status: String = chaosai::with_db!(db, pool => sqlx::query_scalar("SELECT status FROM requests WHERE id = $1")
            .bind(id)
            .fetch_one(pool)
            .await)
            .unwrap();
        let attempts: Vec<(String, String)> = chaosai::with_db!(db, pool => sqlx::query_as(
            "SELECT provider, outcome FROM attempts WHERE request_id = $1 ORDER BY seq",
        )
        .bind(id)
        .fetch_all(pool)
        .await)
        .unwrap();
        (status, attempts)
    }

    /// A request's recorded usage once it is written: (prompt, completion, source).
    pub async fn audited_usage(&self, id: &str) -> (i64, i64, Option<String>) {
        self.audited(id).await;
        chaosai::with_db!(self.server.store.db(), pool => sqlx::query_as(
            "SELECT prompt_tokens, completion_tokens, usage_source FROM requests WHERE id = ?",
        )
        .bind(id)
        .fetch_one(pool)
        .await)
        .unwrap()
    }
}

/// A 1×1 PNG, as a support widget sends a screenshot: base64 in a data URL.
pub const PIXEL_PNG: &str = "iVBORw0KGgoAAAANSUhEUgAAAAEAAAABCAYAAAAfFcSJAAAADUlEQVR4nGP4z8DwHwAFAAH/iZk9HQAAAABJRU5ErkJggg==";

/// A screenshot-sized PNG as a data URL: `raw` bytes, a real PNG's first.
pub fn screenshot(raw: usize) -> String {
    use base64::Engine;
    let engine = base64::engine::general_purpose::STANDARD;
    let mut bytes = engine.decode(PIXEL_PNG).unwrap();
    bytes.extend((0..raw - bytes.len()).map(|i| (i * 7919 % 251) as u8));
    format!("data:image/png;base64,{}", engine.encode(bytes))
}
