//! Replicas sharing one PostgreSQL and one Redis, both real servers of the
//! test's own: breakers, faults, the boards' events, the cache and the audit
//! are one across the cluster; Redis going away leaves every replica answering.

mod support;

use chaosai::config::{Config, ProviderConfig, SimulateMode};
use chaosai::shared::Protocol;
use futures::StreamExt;
use serde_json::{json, Value};
use std::time::Duration;
use support::app::TestServer;
use support::engines::{Postgres, Redis};
use support::upstream::{Mode, Upstream};

/// A replica named `name` over the shared engines, its cascade edited by `edit`.
async fn replica(
    name: &str,
    pg: &Postgres,
    redis: &Redis,
    edit: impl FnOnce(&mut Config),
) -> TestServer {
    let (db, url, name) = (pg.url.clone(), redis.url.clone(), name.to_string());
    let s = TestServer::start_with(move |c| {
        c.database.url = db;
        c.cluster.redis_url = Some(url);
        c.cluster.replica = Some(name);
        c.sim.chunk_delay_min_ms = 0;
        c.sim.chunk_delay_max_ms = 0;
        edit(c);
    })
    .await;
    linked(&s, true).await;
    s
}

/// The cascade alpha (`primary`) then beta (`backup`), both scripted upstreams.
fn over(primary: &Upstream, backup: &Upstream) -> impl FnOnce(&mut Config) {
    let providers: Vec<ProviderConfig> = [("alpha", primary), ("beta", backup)]
        .into_iter()
        .map(|(name, upstream)| {
            let mut p = ProviderConfig::new(
                name,
                Protocol::OpenAi,
                &format!("{name}-model"),
                &upstream.base_url,
            );
            p.api_key = Some("test-key".into());
            p.open_for_ms = 2_000;
            p.max_open_for_ms = 4_000;
            p
        })
        .collect();
    move |c: &mut Config| {
        c.gateway.simulate = SimulateMode::Auto;
        c.gateway.first_byte_timeout_ms = 1_000;
        c.providers = providers;
    }
}

/// The replica's `/healthz` body, `None` while it does not answer.
async fn health(s: &TestServer) -> Option<Value> {
    s.client
        .get(s.url("/healthz"))
        .send()
        .await
        .ok()?
        .json()
        .await
        .ok()
}

/// Waits until the replica's `/healthz` body satisfies `ready`, and returns it.
async fn health_until(s: &TestServer, ready: impl Fn(&Value) -> bool) -> Value {
    support::eventually(|| async { health(s).await.filter(|h| ready(h)) }).await
}

/// Waits until the replica's `/healthz` says Redis is (or is not) reachable.
async fn linked(s: &TestServer, up: bool) -> Value {
    health_until(s, |h| h["cluster"]["redis_up"] == up).await
}

fn served_by(res: &reqwest::Response) -> String {
    res.headers()["x-chaosai-served-by"]
        .to_str()
        .unwrap()
        .to_string()
}

async fn ask(s: &TestServer, question: &str) -> (String, String) {
    let res = s.chat("chaosai", question, false).await;
    assert_eq!(res.status(), 200);
    let by = served_by(&res);
    let body: Value = res.json().await.unwrap();
    (by, body["id"].as_str().unwrap().to_string())
}

/// Waits until `s` shows `provider`'s breaker in `state`.
async fn breaker(s: &TestServer, provider: &str, state: &str) {
    support::eventually(|| async { (s.provider(provider).await["state"] == state).then_some(()) })
        .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_outage_found_through_one_replica_is_skipped_by_the_other_and_probed_once() {
    let (pg, redis) = (Postgres::start().await, Redis::start().await);
    let primary = Upstream::start(Protocol::OpenAi, Mode::Down).await;
    let backup = Upstream::start(Protocol::OpenAi, Mode::Whole).await;
    let a = replica("a", &pg, &redis, over(&primary, &backup)).await;
    let b = replica("b", &pg, &redis, over(&primary, &backup)).await;

    // Failures through A alone: A's and B's breakers open.
    for i in 0..3 {
        assert_eq!(ask(&a, &format!("order {i}?")).await.0, "beta");
    }
    breaker(&a, "alpha", "open").await;
    breaker(&b, "alpha", "open").await;
    let asked = primary.customer_requests();
    assert_eq!(asked, 3);

    // B skips alpha without calling it.
    let (by, id) = ask(&b, "where is my parcel?").await;
    assert_eq!(by, "beta");
    assert_eq!(primary.customer_requests(), asked, "B never called alpha");
    let (_, attempts) = b.audited(&id).await;
    assert_eq!(
        attempts,
        vec![
            ("alpha".to_string(), "skipped_open".to_string()),
            ("beta".to_string(), "ok".to_string())
        ]
    );

    // Recovered, its cool-down over on both: one probe across the cluster
    // closes both breakers.
    primary.recover();
    a.clock.advance(Duration::from_secs(3));
    b.clock.advance(Duration::from_secs(3));
    breaker(&a, "alpha", "closed").await;
    breaker(&b, "alpha", "closed").await;
    assert_eq!(primary.probes(), 1, "one probe for the whole cluster");
    assert_eq!(ask(&b, "and now?").await.0, "alpha");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_fault_set_through_one_replica_is_in_force_on_all_and_expires_everywhere() {
    let (pg, redis) = (Postgres::start().await, Redis::start().await);
    let primary = Upstream::start(Protocol::OpenAi, Mode::Whole).await;
    let backup = Upstream::start(Protocol::OpenAi, Mode::Whole).await;
    let a = replica("a", &pg, &redis, over(&primary, &backup)).await;
    let b = replica("b", &pg, &redis, over(&primary, &backup)).await;

    b.inject("alpha", json!({"kind": "outage", "duration_s": 5}))
        .await;
    support::eventually(|| async { (!a.provider("alpha").await["fault"].is_null()).then_some(()) })
        .await;
    // A's own traffic meets the fault B set.
    let (by, id) = ask(&a, "refund please").await;
    assert_eq!(by, "beta");
    let (_, attempts) = a.audited(&id).await;
    assert_eq!(
        attempts[0],
        ("alpha".to_string(), "server_error".to_string())
    );

    // A replica that joins later has the fault in force before it serves.
    let c = replica("c", &pg, &redis, over(&primary, &backup)).await;
    assert!(!c.provider("alpha").await["fault"].is_null());

    // Its time up, it heals on every replica.
    for s in [&a, &b, &c] {
        s.clock.advance(Duration::from_secs(5));
    }
    for s in [&a, &b, &c] {
        support::eventually(|| async {
            (s.metric(r#"chaosai_faults_active{provider="alpha"}"#).await == 0.0).then_some(())
        })
        .await;
        assert!(s.provider("alpha").await["fault"].is_null());
    }
    let (by, id) = ask(&a, "refund now?").await;
    assert_eq!(by, "alpha", "{:?}", a.audited(&id).await);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_board_on_one_replica_sees_the_others_transitions_and_traces() {
    let (pg, redis) = (Postgres::start().await, Redis::start().await);
    let primary = Upstream::start(Protocol::OpenAi, Mode::Down).await;
    let backup = Upstream::start(Protocol::OpenAi, Mode::Whole).await;
    let a = replica("a", &pg, &redis, over(&primary, &backup)).await;
    let b = replica("b", &pg, &redis, over(&primary, &backup)).await;
    use tokio_tungstenite::tungstenite::client::IntoClientRequest;
    let mut request = format!("ws://{}/ws/events", a.server.addr)
        .into_client_request()
        .unwrap();
    request
        .headers_mut()
        .insert("authorization", "Bearer test-admin-token".parse().unwrap());
    let mut ws = tokio_tungstenite::connect_async(request).await.unwrap().0;

    let mut ids = Vec::new();
    for i in 0..3 {
        ids.push(ask(&b, &format!("question {i}")).await.1);
    }
    let (mut traces, mut transition) = (Vec::new(), None);
    while traces.len() < 3 || transition.is_none() {
        let frame = tokio::time::timeout(Duration::from_secs(5), ws.next())
            .await
            .expect("an event within 5 s")
            .unwrap()
            .unwrap();
        let Ok(text) = frame.into_text() else {
            continue;
        };
        let event: Value = serde_json::from_str(text.as_str()).unwrap();
        match event["type"].as_str() {
            Some("request_trace") if event["replica"] == "b" => {
                traces.push(event["id"].as_str().unwrap().to_string())
            }
            Some("breaker_transition") if event["replica"] == "b" => {
                transition = Some(event.clone())
            }
            _ => {}
        }
    }
    traces.sort();
    ids.sort();
    assert_eq!(traces, ids, "B's traces on A's board");
    let transition = transition.unwrap();
    assert_eq!(
        (&transition["provider"], &transition["to"]),
        (&json!("alpha"), &json!("open"))
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_answer_cached_through_one_replica_is_a_paraphrase_hit_on_the_other() {
    let (pg, redis) = (Postgres::start().await, Redis::start().await);
    let cached = |c: &mut Config| c.cache.enabled = true;
    let a = replica("a", &pg, &redis, cached).await;
    let b = replica("b", &pg, &redis, cached).await;
    let first = a
        .chat("chaosai", "How do I reset my password?", false)
        .await;
    assert_eq!(served_by(&first), "claude");
    support::eventually(|| async {
        let body = b.admin_json("/api/cache").await;
        (body["stats"]["entries"].as_u64() >= Some(1)).then_some(())
    })
    .await;
    let res = b
        .chat(
            "chaosai",
            "I forgot my password, how can I change it?",
            false,
        )
        .await;
    assert_eq!(served_by(&res), "cache", "A's answer, found by B");

    // A replica that starts later loads the shared entries into its index.
    let c = replica("c", &pg, &redis, cached).await;
    let res = c
        .chat(
            "chaosai",
            "I forgot my password, how do I change it?",
            false,
        )
        .await;
    assert_eq!(served_by(&res), "cache");
}

/// How many entries a replica's cache holds.
async fn cache_entries(s: &TestServer) -> u64 {
    s.admin_json("/api/cache").await["stats"]["entries"]
        .as_u64()
        .unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_answer_an_admin_removes_through_one_replica_is_gone_from_every_replica() {
    let (pg, redis) = (Postgres::start().await, Redis::start().await);
    let cached = |c: &mut Config| c.cache.enabled = true;
    let a = replica("a", &pg, &redis, cached).await;
    let b = replica("b", &pg, &redis, cached).await;
    for question in ["How do I reset my password?", "Where is my order?"] {
        assert_eq!(
            served_by(&a.chat("chaosai", question, false).await),
            "claude"
        );
    }
    support::eventually(|| async { (cache_entries(&b).await == 2).then_some(()) }).await;

    // An admin finds a wrong answer and removes it through A: B must not serve it.
    let listed = a.admin_json("/api/cache?q=password").await;
    let id = listed["entries"][0]["id"].as_i64().unwrap();
    let removed = a
        .admin(reqwest::Method::DELETE, &format!("/api/cache/{id}"))
        .send()
        .await
        .unwrap();
    assert!(removed.status().is_success(), "{}", removed.status());
    support::eventually(|| async { (cache_entries(&b).await == 1).then_some(()) }).await;
    let res = b
        .chat("chaosai", "How do I reset my password?", false)
        .await;
    assert_eq!(
        served_by(&res),
        "claude",
        "asked again, not served the removed answer"
    );

    // Clearing through B empties A too (once B's new answer is stored, which
    // happens after it is sent, and A has it as well).
    for s in [&a, &b] {
        support::eventually(|| async { (cache_entries(s).await == 2).then_some(()) }).await;
    }
    let cleared = b
        .admin(reqwest::Method::DELETE, "/api/cache")
        .send()
        .await
        .unwrap();
    assert!(cleared.status().is_success(), "{}", cleared.status());
    support::eventually(|| async { (cache_entries(&a).await == 0).then_some(()) }).await;
    let res = a.chat("chaosai", "Where is my order?", false).await;
    assert_eq!(served_by(&res), "claude");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn requests_through_every_replica_are_all_audited_in_postgres() {
    let (pg, redis) = (Postgres::start().await, Redis::start().await);
    let a = replica("a", &pg, &redis, |_| {}).await;
    let b = replica("b", &pg, &redis, |_| {}).await;
    let mut ids = Vec::new();
    for i in 0..40 {
        let s = if i % 2 == 0 { &a } else { &b };
        ids.push(ask(s, &format!("my order {i}?")).await.1);
    }
    a.request_rows(40).await;
    let db = a.server.store.db();
    assert_eq!(db.engine(), chaosai::store::Engine::Postgres);
    let stored: Vec<String> =
        chaosai::with_db!(db, pool => sqlx::query_scalar("SELECT id FROM requests")
        .fetch_all(pool)
        .await)
        .unwrap();
    for id in &ids {
        assert!(stored.contains(id), "{id} has its row");
    }
    // Both replicas read the one audit.
    let page = b.admin_json("/api/audit/requests?limit=100").await;
    assert_eq!(page["items"].as_array().unwrap().len(), 40);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_response_kept_through_one_replica_is_gone_on_from_through_the_other() {
    let (pg, redis) = (Postgres::start().await, Redis::start().await);
    let a = replica("a", &pg, &redis, |_| {}).await;
    let b = replica("b", &pg, &redis, |_| {}).await;
    let tool = json!({"type": "function", "name": "get_order_status",
        "description": "Looks up the status of a customer's order by its number",
        "parameters": {"type": "object", "properties": {"order_id": {"type": "string"}},
            "required": ["order_id"]}});
    let respond = |s: &TestServer, body: Value| {
        let request = s.client.post(s.url("/v1/responses")).json(&body);
        async move {
            let res = request.send().await.unwrap();
            assert_eq!(res.status(), 200);
            res.json::<Value>().await.unwrap()
        }
    };
    let first = respond(
        &a,
        json!({"model": "claude", "tools": [tool], "input": "Where is my order 12345?"}),
    )
    .await;
    let call = first["output"]
        .as_array()
        .unwrap()
        .iter()
        .find(|item| item["type"] == "function_call")
        .cloned()
        .unwrap();
    // The bot's next request lands on the other replica, with only the result.
    let second = respond(
        &b,
        json!({"model": "claude", "tools": [tool], "previous_response_id": first["id"],
            "input": [{"type": "function_call_output", "call_id": call["call_id"],
                "output": "{\"status\":\"shipped\"}"}]}),
    )
    .await;
    let text = second["output"][0]["content"][0]["text"].as_str().unwrap();
    assert!(text.contains("status shipped"), "{text}");
    let res = a
        .client
        .get(a.url(&format!("/v1/responses/{}", second["id"].as_str().unwrap())))
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), 200);
    assert_eq!(res.json::<Value>().await.unwrap(), second);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn with_postgres_down_responses_are_answered_and_naming_a_kept_one_is_a_503() {
    let (mut pg, redis) = (Postgres::start().await, Redis::start().await);
    let a = replica("a", &pg, &redis, |_| {}).await;
    let post = |body: Value| a.client.post(a.url("/v1/responses")).json(&body).send();
    let res = post(json!({"model": "claude", "input": "Where is my order?"}))
        .await
        .unwrap();
    assert_eq!(res.status(), 200);
    let kept: Value = res.json().await.unwrap();
    pg.stop();
    health_until(&a, |h| h["status"] == "degraded").await;
    // The customer is answered: keeping the response gives up, it does not
    // hold the answer back (3 s at most; the margin is for a busy machine).
    for stream in [false, true] {
        let started = std::time::Instant::now();
        let res =
            post(json!({"model": "claude", "input": "Can I get a refund?", "stream": stream}))
                .await
                .unwrap();
        assert_eq!(res.status(), 200);
        let body = res.text().await.unwrap();
        assert!(body.contains("refund"), "{body}");
        assert!(
            started.elapsed() < Duration::from_secs(8),
            "answered after {:?}",
            started.elapsed()
        );
    }
    // Naming a kept response is a 503 the SDKs retry, not a 500.
    let res = post(json!({"model": "claude", "input": "And?", "previous_response_id": kept["id"]}))
        .await
        .unwrap();
    assert_eq!(res.status(), 503);
    assert_eq!(res.headers()["retry-after"], "1");
    let error: Value = res.json().await.unwrap();
    assert_eq!(error["error"]["code"], "store_unavailable", "{error}");
    // Back, the kept response is found again.
    pg.restart().await;
    support::eventually(|| async {
        let res =
            post(json!({"model": "claude", "input": "And?", "previous_response_id": kept["id"]}))
                .await
                .unwrap();
        (res.status() == 200).then_some(())
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn redis_stopped_mid_traffic_leaves_every_answer_whole_and_sharing_resumes() {
    let (pg, mut redis) = (Postgres::start().await, Redis::start().await);
    let primary = Upstream::start(Protocol::OpenAi, Mode::Whole).await;
    let backup = Upstream::start(Protocol::OpenAi, Mode::Whole).await;
    let a = replica("a", &pg, &redis, over(&primary, &backup)).await;
    let b = replica("b", &pg, &redis, over(&primary, &backup)).await;

    // Traffic through both replicas from before Redis stops until it is back.
    let (stop, stopped) = tokio::sync::watch::channel(false);
    let answered = std::sync::Arc::new(std::sync::atomic::AtomicUsize::new(0));
    let traffic = |s: &TestServer, from: usize| {
        let (client, url) = (s.client.clone(), s.url("/v1/chat/completions"));
        let (stopped, answered) = (stopped.clone(), answered.clone());
        tokio::spawn(async move {
            let mut statuses = Vec::new();
            for i in from..from + 5_000 {
                if *stopped.borrow() {
                    break;
                }
                let res = client
                    .post(&url)
                    .json(&support::app::ask("chaosai", &format!("q{i}"), i % 3 == 0))
                    .send()
                    .await
                    .unwrap();
                statuses.push(res.status().as_u16());
                let _ = res.bytes().await;
                answered.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
            }
            statuses
        })
    };
    let (ta, tb) = (traffic(&a, 0), traffic(&b, 10_000));
    redis.stop();
    for s in [&a, &b] {
        let health = linked(s, false).await;
        assert_eq!(health["status"], "degraded");
        assert_eq!(health["down"], json!(["redis"]));
    }
    assert!(
        a.metric("chaosai_cluster_redis_up").await == 0.0,
        "/metrics shows the link down"
    );
    // A good many answers while Redis is away.
    let before = answered.load(std::sync::atomic::Ordering::Relaxed);
    support::eventually(|| async {
        (answered.load(std::sync::atomic::Ordering::Relaxed) >= before + 40).then_some(())
    })
    .await;
    redis.restart().await;
    linked(&a, true).await;
    linked(&b, true).await;
    stop.send(true).unwrap();
    let statuses: Vec<u16> = [ta.await.unwrap(), tb.await.unwrap()].concat();
    assert!(statuses.len() > 40, "traffic ran: {}", statuses.len());
    assert!(statuses.iter().all(|s| *s == 200), "{statuses:?}");

    // Without Redis, a replica's own failures still open its own breaker.
    redis.stop();
    linked(&a, false).await;
    primary.set_mode(Mode::Down);
    for i in 0..3 {
        assert_eq!(ask(&a, &format!("alone {i}")).await.0, "beta");
    }
    breaker(&a, "alpha", "open").await;
    assert_eq!(
        b.provider("alpha").await["state"],
        "closed",
        "B did not hear"
    );

    // Redis back: both rejoin by themselves, and the breakers share again.
    redis.restart().await;
    linked(&a, true).await;
    linked(&b, true).await;
    primary.recover();
    a.clock.advance(Duration::from_secs(3));
    breaker(&a, "alpha", "closed").await;
    primary.set_mode(Mode::Down);
    for i in 0..3 {
        assert_eq!(ask(&a, &format!("together {i}")).await.0, "beta");
    }
    breaker(&b, "alpha", "open").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kill_minus_nine_of_one_replica_loses_at_most_its_last_flush_interval() {
    use std::process::Stdio;
    use std::sync::{Arc, Mutex};
    use std::time::Instant;
    use support::binary::Binary;
    let (pg, redis) = (Postgres::start().await, Redis::start().await);
    let env = |name: &str| {
        vec![
            ("CHAOSAI_DATABASE_URL", pg.url.clone()),
            ("CHAOSAI_REDIS_URL", redis.url.clone()),
            ("CHAOSAI_REPLICA", name.to_string()),
            ("CHAOSAI_SIM_CHUNK_DELAY_MS", "0".to_string()),
        ]
    };
    let a = Binary::start(&env("a"), Stdio::null()).await;
    let b = Binary::start(&env("b"), Stdio::null()).await;
    // (replica, request id, when its answer was read whole)
    let answered: Arc<Mutex<Vec<(usize, String, Instant)>>> = Arc::default();
    let (stop, stopped) = tokio::sync::watch::channel(false);
    let mut workers = Vec::new();
    for w in 0..8usize {
        let urls = [a.base.clone(), b.base.clone()];
        let (answered, stopped) = (answered.clone(), stopped.clone());
        workers.push(tokio::spawn(async move {
            let client = reqwest::Client::new();
            for i in 0..5_000usize {
                if *stopped.borrow() {
                    break;
                }
                let replica = (w + i) % 2;
                let Ok(res) = client
                    .post(format!("{}/v1/chat/completions", urls[replica]))
                    .json(&support::app::ask("chaosai", "refund?", false))
                    .send()
                    .await
                else {
                    continue;
                };
                let id = res
                    .headers()
                    .get("x-request-id")
                    .map(|v| v.to_str().unwrap().to_string());
                if let (Some(id), Ok(_)) = (id, res.bytes().await) {
                    answered.lock().unwrap().push((replica, id, Instant::now()));
                }
            }
        }));
    }
    support::eventually(|| async {
        let answered = answered.lock().unwrap();
        let oldest = answered.first().map(|(_, _, at)| at.elapsed());
        (answered.len() > 200 && oldest > Some(Duration::from_millis(600))).then_some(())
    })
    .await;
    a.kill();
    let killed_at = Instant::now();
    // B goes on answering alone for a while, then stops cleanly (it flushes).
    let after_kill = answered.lock().unwrap().len();
    support::eventually(|| async {
        (answered.lock().unwrap().len() > after_kill + 50).then_some(())
    })
    .await;
    stop.send(true).unwrap();
    for worker in workers {
        worker.await.unwrap();
    }
    assert!(b.stop().success());

    let pool = sqlx::PgPool::connect(&pg.url).await.unwrap();
    let stored: std::collections::HashSet<String> = sqlx::query_scalar("SELECT id FROM requests")
        .fetch_all(&pool)
        .await
        .unwrap()
        .into_iter()
        .collect();
    let answered = answered.lock().unwrap().clone();
    // The flush interval is 50 ms; anything A answered well before the kill,
    // and everything B answered, is there.
    let window = Duration::from_millis(500);
    let missing: Vec<_> = answered
        .iter()
        .filter(|(replica, id, at)| {
            (*replica == 1 || killed_at.duration_since(*at) > window) && !stored.contains(id)
        })
        .collect();
    assert!(
        missing.is_empty(),
        "{} of {} answered requests have no row: {:?}",
        missing.len(),
        answered.len(),
        &missing[..missing.len().min(5)]
    );
    assert!(answered.iter().any(|(r, _, _)| *r == 0) && answered.iter().any(|(r, _, _)| *r == 1));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn postgres_down_leaves_answers_flowing_and_the_audit_catches_up_when_it_returns() {
    let (mut pg, redis) = (Postgres::start().await, Redis::start().await);
    let a = replica("a", &pg, &redis, |_| {}).await;
    let mut ids = Vec::new();
    for i in 0..5 {
        ids.push(ask(&a, &format!("before {i}")).await.1);
    }
    a.request_rows(5).await;
    pg.stop();
    let health = health_until(&a, |h| h["status"] == "degraded").await;
    assert_eq!(health["down"], json!(["database"]));
    assert_eq!(a.metric("chaosai_store_up").await, 0.0);
    // Customers are answered all along; their records wait in the queue.
    for i in 0..30 {
        ids.push(ask(&a, &format!("during {i}")).await.1);
    }
    // The writer is retrying them.
    support::eventually(|| async {
        (a.metric("chaosai_audit_retries_total").await > 0.0).then_some(())
    })
    .await;
    pg.restart().await;
    // Nothing lost: every request has its row once the database is back.
    let deadline = std::time::Instant::now() + Duration::from_secs(30);
    loop {
        let stored: Vec<String> = chaosai::with_db!(a.server.store.db(), pool => sqlx::query_scalar("SELECT id FROM requests")
            .fetch_all(pool)
            .await)
        .unwrap_or_default();
        if ids.iter().all(|id| stored.contains(id)) {
            break;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "rows missing after the outage: {} of {} stored; {}",
            ids.iter().filter(|id| stored.contains(id)).count(),
            ids.len(),
            a.metrics_text()
                .await
                .lines()
                .filter(|l| l.starts_with("chaosai_audit") || l.starts_with("chaosai_store"))
                .collect::<Vec<_>>()
                .join("; ")
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    linked(&a, true).await;
    health_until(&a, |h| h["status"] == "ok").await;
}

#[tokio::test]
async fn a_replica_whose_redis_is_unreachable_starts_alone_and_says_so() {
    let pg = Postgres::start().await;
    let nobody = format!("redis://127.0.0.1:{}", support::binary::free_port());
    let s = TestServer::start_with(|c| {
        c.database.url = pg.url.clone();
        c.cluster.redis_url = Some(nobody);
        c.cluster.replica = Some("lonely".into());
    })
    .await;
    let linked_down = linked(&s, false).await;
    assert_eq!(linked_down["status"], "degraded");
    assert_eq!(linked_down["cluster"]["replica"], "lonely");
    assert_eq!(ask(&s, "still there?").await.0, "claude");
    // A URL the Redis client refuses: the replica runs alone, no cluster at all.
    let s = TestServer::start_with(|c| {
        c.database.url = pg.url.clone();
        c.cluster.redis_url = Some("not a url".into());
    })
    .await;
    let health = health(&s).await.unwrap();
    assert_eq!(health["status"], "ok");
    assert!(health["cluster"].is_null());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_real_binaries_share_an_outage_and_one_probe_closes_both() {
    use std::process::Stdio;
    use support::binary::{Binary, TOKEN};
    let (pg, redis) = (Postgres::start().await, Redis::start().await);
    let primary = Upstream::start(Protocol::Anthropic, Mode::Down).await;
    let backup = Upstream::start(Protocol::OpenAi, Mode::Whole).await;
    let dir = tempfile::tempdir().unwrap();
    let config = dir.path().join("cluster.toml");
    std::fs::write(
        &config,
        include_str!("../config/chaosai.toml")
            .replace("https://api.anthropic.com", &primary.base_url)
            .replace("https://api.openai.com/v1", &backup.base_url)
            .replace("https://api.groq.com/openai/v1", &backup.base_url)
            .replace("ANTHROPIC_API_KEY", "CHAOSAI_TEST_KEY")
            .replace("OPENAI_API_KEY", "CHAOSAI_TEST_KEY")
            .replace("GROQ_API_KEY", "CHAOSAI_TEST_KEY"),
    )
    .unwrap();
    let env = |name: &str| {
        vec![
            ("CHAOSAI_CONFIG", config.display().to_string()),
            ("CHAOSAI_TEST_KEY", "sk-test".to_string()),
            ("CHAOSAI_SIMULATE", "auto".to_string()),
            ("CHAOSAI_CACHE", "off".to_string()),
            ("CHAOSAI_BREAKER_OPEN_FOR_MS", "300".to_string()),
            ("CHAOSAI_DATABASE_URL", pg.url.clone()),
            ("CHAOSAI_REDIS_URL", redis.url.clone()),
            ("CHAOSAI_REPLICA", name.to_string()),
        ]
    };
    let a = Binary::start(&env("a"), Stdio::null()).await;
    let b = Binary::start(&env("b"), Stdio::null()).await;
    let client = reqwest::Client::new();
    let state = |base: String| {
        let client = client.clone();
        async move {
            let providers: Value = client
                .get(format!("{base}/api/providers"))
                .bearer_auth(TOKEN)
                .send()
                .await
                .unwrap()
                .json()
                .await
                .unwrap();
            providers[0]["state"].as_str().unwrap().to_string()
        }
    };
    for base in [&a.base, &b.base] {
        support::eventually(|| async {
            let health: Value = client
                .get(format!("{base}/healthz"))
                .send()
                .await
                .ok()?
                .json()
                .await
                .ok()?;
            (health["cluster"]["redis_up"] == true).then_some(())
        })
        .await;
    }
    for i in 0..3 {
        let res = client
            .post(format!("{}/v1/chat/completions", a.base))
            .json(&support::app::ask("chaosai", &format!("order {i}?"), false))
            .send()
            .await
            .unwrap();
        assert_eq!(res.headers()["x-chaosai-served-by"], "gpt");
    }
    support::eventually(|| async { (state(b.base.clone()).await == "open").then_some(()) }).await;
    let asked = primary.customer_requests();
    let res = client
        .post(format!("{}/v1/chat/completions", b.base))
        .json(&support::app::ask("chaosai", "and my refund?", false))
        .send()
        .await
        .unwrap();
    assert_eq!(res.headers()["x-chaosai-served-by"], "gpt");
    assert_eq!(primary.customer_requests(), asked, "B never called claude");

    // Its cool-down is 300 ms: a failed probe or two, then one success closes both.
    let failed_probes = primary.probes();
    primary.recover();
    for base in [&a.base, &b.base] {
        support::eventually(|| async { (state(base.clone()).await == "closed").then_some(()) })
            .await;
    }
    assert_eq!(
        primary.probes(),
        failed_probes + 1,
        "one successful probe for both"
    );
}

/// The status `s` gives a question asked with `key` (or none).
async fn status_with(s: &TestServer, key: Option<&str>) -> u16 {
    let mut request = s
        .client
        .post(s.url("/v1/chat/completions"))
        .json(&json!({"model": "chaosai", "messages": [{"role": "user", "content": "Where is my order?"}]}));
    if let Some(key) = key {
        request = request.bearer_auth(key);
    }
    request.send().await.unwrap().status().as_u16()
}

/// Waits until `s` gives `expected` to a question asked with `key`.
async fn until_status(s: &TestServer, key: Option<&str>, expected: u16) {
    support::eventually(|| async { (status_with(s, key).await == expected).then_some(()) }).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_key_made_or_revoked_through_one_replica_is_in_force_on_the_other() {
    let pg = support::engines::Postgres::start().await;
    let on_pg = |url: String| move |c: &mut Config| c.database.url = url;
    let a = TestServer::start_with(on_pg(pg.url.clone())).await;
    let b = TestServer::start_with(on_pg(pg.url.clone())).await;
    assert_eq!(status_with(&b, None).await, 200, "no key yet: open");

    let bot = a
        .make_client(json!({"name": "bot", "tenant": "shop"}))
        .await;
    let keeper = a
        .make_client(json!({"name": "keeper", "tenant": "shop"}))
        .await;
    // The other replica takes the keys, and stops answering without one.
    until_status(&b, None, 401).await;
    until_status(&b, Some(&bot), 200).await;
    assert_eq!(status_with(&b, Some(&keeper)).await, 200);

    // Revoked through the first, the key stops working on the second too.
    let revoked = a
        .admin(reqwest::Method::DELETE, "/api/clients/bot")
        .send()
        .await
        .unwrap();
    assert_eq!(revoked.status(), 204);
    assert_eq!(status_with(&a, Some(&bot)).await, 401);
    until_status(&b, Some(&bot), 401).await;
    assert_eq!(status_with(&b, Some(&keeper)).await, 200);
    let listed = b.admin_json("/api/clients").await;
    assert_eq!(listed.as_array().map(Vec::len), Some(1), "{listed}");
}

/// What `s` says is left of `client`'s requests per minute.
async fn remaining_requests(s: &TestServer, client: &str) -> Option<u64> {
    let listed = s.admin_json("/api/clients").await;
    listed.as_array()?.iter().find(|c| c["name"] == client)?["remaining_requests"].as_u64()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_clients_rate_limit_holds_across_replicas_not_once_per_replica() {
    let (pg, redis) = (Postgres::start().await, Redis::start().await);
    let a = replica("a", &pg, &redis, |_| {}).await;
    let b = replica("b", &pg, &redis, |_| {}).await;
    let key = a
        .make_client(json!({"name": "bot", "tenant": "shop", "rpm": 4}))
        .await;
    support::eventually(|| async {
        (remaining_requests(&b, "bot").await == Some(4)).then_some(())
    })
    .await;
    // The whole minute's allowance, spent through the first replica.
    for _ in 0..4 {
        assert_eq!(status_with(&a, Some(&key)).await, 200);
    }
    assert_eq!(status_with(&a, Some(&key)).await, 429);
    // The second learns of it (without being asked anything) and refuses too,
    // instead of granting the client another 4.
    support::eventually(|| async {
        (remaining_requests(&b, "bot").await == Some(0)).then_some(())
    })
    .await;
    assert_eq!(status_with(&b, Some(&key)).await, 429);
}
