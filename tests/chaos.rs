//! Breakers, faults on the wire, the last resort and the live event stream,
//! driven through the whole server over real HTTP.

mod support;

use chaosai::config::Config;
use futures::StreamExt;
use serde_json::{json, Value};
use std::time::{Duration, Instant};
use support::app::{streamed_text, TestServer};
use tokio_tungstenite::tungstenite::Message;

/// Short limits so breakers and timeouts act within a test's patience.
fn fast(config: &mut Config) {
    config.gateway.first_byte_timeout_ms = 400;
    config.gateway.first_token_timeout_ms = 400;
    config.gateway.stall_timeout_ms = 400;
    config.gateway.attempt_timeout_ms = 2_000;
    config.gateway.deadline_ms = 6_000;
    for provider in &mut config.providers {
        provider.open_for_ms = 400;
        provider.max_open_for_ms = 2_000;
    }
}

async fn start() -> TestServer {
    TestServer::start_with(fast).await
}

fn served_by(res: &reqwest::Response) -> String {
    res.headers()["x-chaosai-served-by"]
        .to_str()
        .unwrap()
        .to_string()
}

type Socket =
    tokio_tungstenite::WebSocketStream<tokio_tungstenite::MaybeTlsStream<tokio::net::TcpStream>>;

async fn connect(s: &TestServer) -> Socket {
    use tokio_tungstenite::tungstenite::client::IntoClientRequest;
    let mut request = format!("ws://{}/ws/events", s.server.addr)
        .into_client_request()
        .unwrap();
    request
        .headers_mut()
        .insert("authorization", "Bearer test-admin-token".parse().unwrap());
    tokio_tungstenite::connect_async(request).await.unwrap().0
}

async fn next_event(ws: &mut Socket) -> Value {
    loop {
        let message = tokio::time::timeout(Duration::from_secs(5), ws.next())
            .await
            .expect("an event within 5 s")
            .expect("socket open")
            .expect("valid frame");
        if let Message::Text(text) = message {
            return serde_json::from_str(text.as_str()).unwrap();
        }
    }
}

/// Breaker transitions received until `count` of them arrived, as (provider, from, to).
async fn transitions(ws: &mut Socket, count: usize) -> Vec<(String, String, String)> {
    let mut seen = Vec::new();
    while seen.len() < count {
        let event = next_event(ws).await;
        if event["type"] == "breaker_transition" {
            seen.push((
                event["provider"].as_str().unwrap().to_string(),
                event["from"].as_str().unwrap().to_string(),
                event["to"].as_str().unwrap().to_string(),
            ));
        }
    }
    seen
}

#[tokio::test]
async fn an_outage_opens_the_breaker_and_healing_closes_it_again() {
    // A cool-down long enough that the OPEN phase below does not probe.
    let s = TestServer::start_with(|c| {
        fast(c);
        c.providers[0].open_for_ms = 2_000;
    })
    .await;
    let mut ws = connect(&s).await;
    let snapshot = next_event(&mut ws).await;
    assert_eq!(snapshot["type"], "snapshot");
    let states: Vec<&str> = snapshot["providers"]
        .as_array()
        .unwrap()
        .iter()
        .map(|p| p["state"].as_str().unwrap())
        .collect();
    assert_eq!(states, vec!["closed", "closed", "closed"]);

    s.inject("claude", json!({"kind": "outage"})).await;
    // The first requests fall over to the secondary and succeed, streaming included.
    for stream in [false, true, false] {
        let res = s.chat("chaosai", "Where is my order?", stream).await;
        assert_eq!(res.status(), 200);
        assert_eq!(served_by(&res), "gpt");
        if stream {
            let (text, done) = streamed_text(&res.text().await.unwrap());
            assert!(done && text.contains("Account → Orders"), "{text}");
        }
    }
    assert_eq!(
        s.metric(r#"chaosai_attempts_total{outcome="server_error",provider="claude"}"#)
            .await,
        3.0
    );
    let claude = s.provider("claude").await;
    assert_eq!(claude["state"], "open");
    assert_eq!(claude["fault"]["spec"]["kind"], "outage");

    // While OPEN, requests skip the primary: its attempt count stops growing.
    // (The first request's failure was retried once at once, so the third
    // failure came with the second request, and the third already skipped it.)
    for _ in 0..3 {
        let res = s.chat("chaosai", "Where is my order?", false).await;
        assert_eq!(served_by(&res), "gpt");
    }
    assert_eq!(
        s.metric(r#"chaosai_attempts_total{outcome="server_error",provider="claude"}"#)
            .await,
        3.0
    );
    assert_eq!(
        s.metric(r#"chaosai_attempts_total{outcome="skipped_open",provider="claude"}"#)
            .await,
        4.0
    );
    assert_eq!(
        s.metric(r#"chaosai_breaker_state{provider="claude"}"#)
            .await,
        2.0
    );

    // Heal; after the cool-down a background probe (no customer) closes it.
    let res = s
        .admin(reqwest::Method::DELETE, "/api/chaos/claude")
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), 200);
    let before = s
        .metric(r#"chaosai_requests_total{route="claude",status="ok"}"#)
        .await;
    s.clock.advance(Duration::from_millis(2_000));
    let seen = transitions(&mut ws, 3).await;
    assert_eq!(s.provider("claude").await["state"], "closed");
    assert_eq!(
        s.metric(r#"chaosai_probes_total{outcome="ok",provider="claude"}"#)
            .await,
        1.0
    );
    assert_eq!(
        s.metric(r#"chaosai_requests_total{route="claude",status="ok"}"#)
            .await,
        before,
        "no customer request was the probe"
    );
    let res = s.chat("chaosai", "Where is my order?", false).await;
    assert_eq!(served_by(&res), "claude");
    let claude = |from: &str, to: &str| ("claude".to_string(), from.to_string(), to.to_string());
    assert_eq!(
        seen,
        vec![
            claude("closed", "open"),
            claude("open", "half_open"),
            claude("half_open", "closed")
        ]
    );
}

#[tokio::test]
async fn a_latency_storm_costs_one_attempt_timeout_until_the_breaker_opens() {
    let s = start().await;
    s.inject(
        "claude",
        json!({"kind": "latency", "delay_ms": 5000, "jitter_ms": 100}),
    )
    .await;
    for _ in 0..3 {
        let started = Instant::now();
        let res = s.chat("chaosai", "Can I get a refund?", true).await;
        assert_eq!(served_by(&res), "gpt");
        assert!(streamed_text(&res.text().await.unwrap()).1);
        // The first-byte limit (400 ms) plus the secondary's own answer.
        assert!(
            started.elapsed() < Duration::from_millis(1_200),
            "{:?}",
            started.elapsed()
        );
    }
    assert_eq!(
        s.metric(r#"chaosai_attempts_total{outcome="timeout",provider="claude"}"#)
            .await,
        3.0
    );
    // Breaker open: the storm no longer costs anything.
    let started = Instant::now();
    let res = s.chat("chaosai", "Can I get a refund?", false).await;
    assert_eq!(served_by(&res), "gpt");
    assert!(
        started.elapsed() < Duration::from_millis(800),
        "{:?}",
        started.elapsed()
    );
    assert_eq!(
        s.metric(r#"chaosai_attempts_total{outcome="skipped_open",provider="claude"}"#)
            .await,
        1.0
    );
}

#[tokio::test]
async fn a_rate_limit_falls_over_and_its_retry_after_outlasts_the_cool_down() {
    let s = start().await;
    s.inject("claude", json!({"kind": "rate_limit", "retry_after_s": 5}))
        .await;
    for _ in 0..3 {
        assert_eq!(
            served_by(&s.chat("chaosai", "How much is shipping?", false).await),
            "gpt"
        );
    }
    assert_eq!(
        s.metric(r#"chaosai_attempts_total{outcome="rate_limited",provider="claude"}"#)
            .await,
        3.0
    );
    assert_eq!(s.provider("claude").await["state"], "open");
    // The cool-down alone (400 ms) is over, but the provider asked for 5 s.
    s.clock.advance(Duration::from_millis(600));
    s.chat("chaosai", "How much is shipping?", false).await;
    assert_eq!(s.provider("claude").await["state"], "open");
    assert_eq!(
        s.metric(r#"chaosai_attempts_total{outcome="rate_limited",provider="claude"}"#)
            .await,
        3.0
    );
}

#[tokio::test]
async fn flaky_hang_and_malformed_faults_fall_over() {
    let s = start().await;
    // Flaky at 100%: every call fails with a 500.
    s.inject("claude", json!({"kind": "flaky", "error_rate": 1.0}))
        .await;
    assert_eq!(
        served_by(&s.chat("chaosai", "refund please", false).await),
        "gpt"
    );
    // A lone 500 from a healthy provider is retried once at once.
    assert_eq!(
        s.metric(r#"chaosai_attempts_total{outcome="server_error",provider="claude"}"#)
            .await,
        2.0
    );
    // Flaky at 0%: no call fails.
    s.inject("claude", json!({"kind": "flaky", "error_rate": 0.0}))
        .await;
    assert_eq!(
        served_by(&s.chat("chaosai", "refund please", false).await),
        "claude"
    );

    // A hanging provider is ended by the first-byte limit.
    s.inject("claude", json!({"kind": "hang"})).await;
    let started = Instant::now();
    let res = s.chat("chaosai", "refund please", true).await;
    assert_eq!(served_by(&res), "gpt");
    assert!(
        started.elapsed() < Duration::from_millis(1_000),
        "{:?}",
        started.elapsed()
    );
    assert!(streamed_text(&res.text().await.unwrap()).1);

    // Malformed bodies, whole and streamed.
    s.inject("gpt", json!({"kind": "malformed"})).await;
    for stream in [false, true] {
        let res = s.chat("chaosai", "refund please", stream).await;
        assert_eq!(served_by(&res), "llama");
    }
    assert_eq!(
        s.metric(r#"chaosai_attempts_total{outcome="malformed",provider="gpt"}"#)
            .await,
        2.0
    );
}

#[tokio::test]
async fn a_stream_reset_after_some_tokens_is_continued_by_a_provider_that_can_prefill() {
    let s = TestServer::start_with(|c| {
        fast(c);
        // The simulated OpenAI server continues a trailing assistant turn.
        c.providers[1].continuation = Some(chaosai::shared::ContinuationStyle::Prefill);
    })
    .await;
    let question = "I want to return an item";
    let (whole, _) = streamed_text(
        &s.chat("chaosai", question, true)
            .await
            .text()
            .await
            .unwrap(),
    );
    s.inject("claude", json!({"kind": "reset", "after_bytes": 900}))
        .await;
    let res = s.chat("chaosai", question, true).await;
    // The first tokens came from claude before its connection dropped.
    assert_eq!(served_by(&res), "claude");
    let (text, done) = streamed_text(&res.text().await.unwrap());
    assert!(done, "a spliced answer ends normally");
    assert_eq!(text, whole, "the customer sees one uninterrupted reply");

    assert_eq!(s.request_rows(2).await, 2);
    let (id, status): (String, String) =
        chaosai::with_db!(s.server.store.db(), pool => sqlx::query_as("SELECT id, status FROM requests WHERE status != 'ok'")
            .fetch_one(pool)
            .await)
            .unwrap();
    assert_eq!(status, "spliced");
    let attempts: Vec<(String, String)> =
        chaosai::with_db!(s.server.store.db(), pool => sqlx::query_as("SELECT provider, outcome FROM attempts WHERE request_id = $1 ORDER BY seq")
            .bind(&id)
            .fetch_all(pool)
            .await)
            .unwrap();
    let attempts: Vec<(&str, &str)> = attempts
        .iter()
        .map(|(p, o)| (p.as_str(), o.as_str()))
        .collect();
    assert_eq!(
        attempts,
        vec![("claude", "ok"), ("claude", "stream_broken"), ("gpt", "ok")]
    );
}

#[tokio::test]
async fn a_broken_stream_that_cannot_be_continued_ends_with_an_error_event() {
    let s = start().await;
    s.inject("claude", json!({"kind": "reset", "after_bytes": 900}))
        .await;
    // Pinned to claude: no other provider may continue the answer.
    let res = s.chat("claude", "I want to return an item", true).await;
    assert_eq!(res.status(), 200);
    let body = res.text().await.unwrap();
    let (text, done) = streamed_text(&body);
    assert!(!text.is_empty(), "some tokens arrived first");
    assert!(!done, "a cut stream never ends with [DONE]");
    let last: Value = serde_json::from_str(support::app::sse_data(&body).last().unwrap()).unwrap();
    assert_eq!(last["error"]["code"], "stream_interrupted");
}

#[tokio::test]
async fn a_total_blackout_still_answers_with_the_last_resort_and_a_ticket() {
    let s = TestServer::start_with(|c| {
        fast(c);
        c.gateway.deadline_ms = 1_500;
    })
    .await;
    for provider in ["claude", "gpt", "llama"] {
        s.inject(provider, json!({"kind": "outage", "duration_s": 60}))
            .await;
    }
    // A question the knowledge base knows: its answer, clearly marked.
    let res = s
        .chat("chaosai", "How do I reset my password?", false)
        .await;
    assert_eq!(res.status(), 200);
    assert_eq!(served_by(&res), "last-resort");
    let body: Value = res.json().await.unwrap();
    let text = body["choices"][0]["message"]["content"].as_str().unwrap();
    assert!(text.starts_with("Our assistants are unavailable"), "{text}");
    assert!(text.contains("reset link"));

    // Anything else: an apology with a ticket, stored for a human agent.
    let res = s
        .chat("chaosai", "My blender makes a strange noise", true)
        .await;
    assert_eq!(res.status(), 200);
    assert_eq!(served_by(&res), "last-resort");
    let ticket = res.headers()["x-chaosai-ticket"]
        .to_str()
        .unwrap()
        .to_string();
    let (text, done) = streamed_text(&res.text().await.unwrap());
    assert!(done && text.contains(&ticket), "{text}");
    let (question, failure): (String, String) =
        chaosai::with_db!(s.server.store.db(), pool => sqlx::query_as("SELECT question, failure_json FROM tickets WHERE id = $1")
            .bind(&ticket)
            .fetch_one(pool)
            .await)
            .unwrap();
    assert_eq!(question, "My blender makes a strange noise");
    assert!(failure.contains("server_error"), "{failure}");

    // Every provider hanging: the last resort still answers within the deadline.
    for provider in ["claude", "gpt", "llama"] {
        s.inject(provider, json!({"kind": "hang"})).await;
    }
    // Past every cool-down, so each hanging provider is really tried.
    s.clock.advance(Duration::from_millis(450));
    let started = Instant::now();
    let res = s.chat("chaosai", "Where is my order?", false).await;
    assert_eq!(res.status(), 200);
    assert_eq!(served_by(&res), "last-resort");
    assert!(
        started.elapsed() < Duration::from_millis(1_500 + 300),
        "{:?}",
        started.elapsed()
    );
}

#[tokio::test]
async fn faults_with_a_duration_heal_by_themselves() {
    let s = start().await;
    s.inject("gpt", json!({"kind": "outage", "duration_s": 1}))
        .await;
    let fault = &s.provider("gpt").await["fault"];
    assert_eq!(fault["remaining_ms"], 1_000);
    s.clock.advance(Duration::from_millis(999));
    s.inject("claude", json!({"kind": "outage"})).await;
    let mut ws = connect(&s).await;
    s.clock.advance(Duration::from_millis(1));
    // The expiry task heals it and says so: wait for that event, not for a guess.
    loop {
        let event = next_event(&mut ws).await;
        if event["type"] == "fault_changed" {
            assert_eq!(event["provider"], "gpt");
            assert_eq!(event["by"], "expiry");
            assert!(event["fault"].is_null());
            break;
        }
    }
    assert!(s.provider("gpt").await["fault"].is_null());
    assert_eq!(
        s.provider("claude").await["fault"]["spec"]["kind"],
        "outage"
    );
    assert_eq!(
        s.metric(r#"chaosai_faults_active{provider="gpt"}"#).await,
        0.0
    );
}

#[tokio::test]
async fn the_chaos_api_requires_the_token_and_validates_specs() {
    let s = start().await;
    let outage = json!({"kind": "outage"});
    // No token, wrong token.
    let res = s
        .client
        .put(s.url("/api/chaos/claude"))
        .json(&outage)
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), 401);
    let error: Value = res.json().await.unwrap();
    assert!(error["error"]["message"]
        .as_str()
        .unwrap()
        .contains("admin token"));
    let res = s
        .client
        .get(s.url("/api/providers"))
        .bearer_auth("nope")
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), 401);
    let res = s.client.delete(s.url("/api/chaos")).send().await.unwrap();
    assert_eq!(res.status(), 401);
    // Unknown provider.
    let res = s
        .admin(reqwest::Method::PUT, "/api/chaos/bard")
        .json(&outage)
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), 404);
    // Invalid specs name the field.
    for (spec, field) in [
        (json!({"kind": "flaky", "error_rate": 2.0}), "error_rate"),
        (json!({"kind": "flaky"}), "error_rate"),
        (
            json!({"kind": "latency", "delay_ms": 100, "jitter_ms": 500}),
            "jitter_ms",
        ),
        (json!({"kind": "outage", "duration_s": 0}), "duration_s"),
        (json!({"kind": "meteor"}), "meteor"),
        // A typo on a kind without fields is refused too, not a fault that never heals.
        (json!({"kind": "outage", "duration": 30}), "duration"),
        (
            json!({"kind": "hang", "duration_ms": 30_000}),
            "duration_ms",
        ),
        (
            json!({"kind": "latency", "delay_ms": 100, "delay": 5}),
            "delay",
        ),
    ] {
        let res = s
            .admin(reqwest::Method::PUT, "/api/chaos/claude")
            .json(&spec)
            .send()
            .await
            .unwrap();
        assert_eq!(res.status(), 422, "{spec}");
        let error: Value = res.json().await.unwrap();
        let message = error["error"]["message"].as_str().unwrap();
        assert!(message.contains(field), "{message:?} should name {field}");
    }
    let res = s
        .admin(reqwest::Method::PUT, "/api/chaos/claude")
        .header("content-type", "application/json")
        .body("{oops")
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), 422);
    assert!(
        s.provider("claude").await["fault"].is_null(),
        "nothing was injected"
    );
    // Customer endpoints never need the token.
    assert_eq!(s.chat("chaosai", "refund?", false).await.status(), 200);
    // Healing reports what it healed.
    s.inject("llama", json!({"kind": "hang"})).await;
    let healed: Value = s
        .admin(reqwest::Method::DELETE, "/api/chaos")
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(healed["healed"], json!(["llama"]));
}

#[tokio::test]
async fn metrics_describe_routes_attempts_breakers_and_faults() {
    let s = start().await;
    s.chat("chaosai", "refund?", false).await;
    s.inject("gpt", json!({"kind": "outage"})).await;
    let text = s.metrics_text().await;
    for family in [
        "chaosai_requests_total",
        "chaosai_request_duration_seconds_bucket",
        "chaosai_attempts_total",
        "chaosai_attempt_duration_seconds_bucket",
        "chaosai_breaker_state",
        "chaosai_faults_active",
    ] {
        assert!(text.contains(family), "missing {family}");
    }
    assert_eq!(
        s.metric(r#"chaosai_requests_total{route="claude",status="ok"}"#)
            .await,
        1.0
    );
    assert_eq!(
        s.metric(r#"chaosai_faults_active{provider="gpt"}"#).await,
        1.0
    );
}

#[tokio::test]
async fn a_slow_websocket_client_lags_and_resyncs_without_slowing_the_gateway() {
    let s = start().await;
    let mut ws = connect(&s).await;
    assert_eq!(next_event(&mut ws).await["type"], "snapshot");
    // The client reads nothing while far more events are published than the bus
    // holds; publishing must not wait for it.
    let started = Instant::now();
    for i in 0..20_000i64 {
        s.server
            .gateway
            .events()
            .publish(chaosai::shared::GatewayEvent::RequestTrace(
                chaosai::shared::Trace {
                    id: format!("flood-{i}"),
                    served_by: Some("gpt".into()),
                    attempts: vec![],
                    latency_ms: 1,
                    status: chaosai::shared::RequestStatus::Ok,
                    at_ms: i,
                    replica: None,
                },
            ));
    }
    assert!(
        started.elapsed() < Duration::from_secs(1),
        "publishing waited: {:?}",
        started.elapsed()
    );
    // Reading again: events were skipped, and the client was told to start over
    // from a fresh snapshot instead of silently missing them.
    let (mut traces, mut snapshots) = (0, 0);
    loop {
        let event = next_event(&mut ws).await;
        match event["type"].as_str().unwrap() {
            "snapshot" => snapshots += 1,
            "request_trace" => {
                traces += 1;
                if event["at_ms"] == 19_999 {
                    break;
                }
            }
            _ => {}
        }
    }
    assert!(
        traces < 20_000,
        "the slow client lagged ({traces} of 20000 delivered)"
    );
    assert!(snapshots >= 1, "and resynced from a snapshot");
}
