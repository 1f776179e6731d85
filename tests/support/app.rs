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

    /// An admin request with the test token.
    pub fn admin(&self, method: reqwest::Method, path: &str) -> reqwest::RequestBuilder {
        self.client
            .request(method, self.url(path))
            .bearer_auth("test-admin-token")
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
        let pool = self.server.store.pool();
        super::eventually(|| async {
            let count = sqlx::query_scalar::<_, i64>(sql)
                .fetch_one(pool)
                .await
                .unwrap();
            done(count).then_some(count)
        })
        .await
    }
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
