//! The audit trail under load: nothing lost, never "database is locked", a clean
//! database after kill -9, and the read API.

mod support;

use chaosai::config::Config;
use serde_json::{json, Value};
use std::collections::HashSet;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};
use support::app::{ask, TestServer};
use support::binary::{free_port, Binary};

/// Instant simulated providers and short breaker cool-downs.
fn busy(config: &mut Config) {
    config.sim.chunk_delay_min_ms = 0;
    config.sim.chunk_delay_max_ms = 0;
    config.gateway.first_byte_timeout_ms = 1_000;
    for provider in &mut config.providers {
        provider.open_for_ms = 300;
    }
}

async fn count(s: &TestServer, sql: &str) -> i64 {
    chaosai::with_db!(s.server.store.db(), pool => sqlx::query_scalar::<_, i64>(sql)
        .fetch_one(pool)
        .await)
    .unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn five_thousand_requests_at_64_concurrent_clients_are_all_audited() {
    let s = TestServer::start_with(busy).await;
    s.inject("claude", json!({"kind": "outage"})).await;
    s.inject("gpt", json!({"kind": "flaky", "error_rate": 0.3}))
        .await;
    const TOTAL: usize = 5_000;
    const CLIENTS: usize = 64;
    let url = s.url("/v1/chat/completions");
    let next = Arc::new(std::sync::atomic::AtomicUsize::new(0));
    let mut workers = Vec::new();
    for _ in 0..CLIENTS {
        let (client, url, next) = (s.client.clone(), url.clone(), next.clone());
        workers.push(tokio::spawn(async move {
            let mut statuses = Vec::new();
            while next.fetch_add(1, std::sync::atomic::Ordering::Relaxed) < TOTAL {
                let res = client
                    .post(&url)
                    .json(&ask("chaosai", "Where is my order?", false))
                    .send()
                    .await
                    .unwrap();
                statuses.push(res.status().as_u16());
                res.bytes().await.unwrap();
            }
            statuses
        }));
    }
    let mut answered = 0;
    for worker in workers {
        for status in worker.await.unwrap() {
            assert_eq!(status, 200);
            answered += 1;
        }
    }
    assert_eq!(answered, TOTAL);
    s.server.audit.as_ref().unwrap().flush().await;
    assert_eq!(
        count(&s, "SELECT COUNT(*) FROM requests").await,
        TOTAL as i64
    );
    // Attempts are consistent with the routes: the serving provider's attempt is
    // there and ok, every request has attempts, and last-resort answers have no ok attempt.
    let inconsistent = count(
        &s,
        "SELECT COUNT(*) FROM requests r WHERE \
           (r.served_by != 'last-resort' AND NOT EXISTS (SELECT 1 FROM attempts a \
              WHERE a.request_id = r.id AND a.provider = r.served_by AND a.outcome = 'ok')) \
        OR NOT EXISTS (SELECT 1 FROM attempts a WHERE a.request_id = r.id) \
        OR (r.served_by = 'last-resort' AND EXISTS (SELECT 1 FROM attempts a \
              WHERE a.request_id = r.id AND a.outcome = 'ok'))",
    )
    .await;
    assert_eq!(inconsistent, 0);
    assert!(
        count(
            &s,
            "SELECT COUNT(*) FROM attempts WHERE provider = 'claude' AND outcome = 'skipped_open'"
        )
        .await
            > 0
    );
    assert!(
        count(
            &s,
            "SELECT COUNT(*) FROM breaker_transitions WHERE provider = 'claude'"
        )
        .await
            > 0
    );
    assert_eq!(count(&s, "SELECT COUNT(*) FROM fault_changes").await, 2);
    assert_eq!(
        s.metric("chaosai_audit_overflow_total").await,
        0.0,
        "no overflow"
    );
    assert_eq!(
        s.metric("chaosai_audit_retries_total").await,
        0.0,
        "no database error, locked or otherwise"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn graceful_shutdown_under_load_keeps_every_answered_request() {
    let s = TestServer::start_with(busy).await;
    let store = s.server.store.clone();
    let answered = Arc::new(Mutex::new(Vec::<String>::new()));
    let mut workers = Vec::new();
    for _ in 0..32 {
        let (client, url, answered) = (
            s.client.clone(),
            s.url("/v1/chat/completions"),
            answered.clone(),
        );
        workers.push(tokio::spawn(async move {
            loop {
                let Ok(res) = client
                    .post(&url)
                    .json(&ask("chaosai", "refund?", false))
                    .send()
                    .await
                else {
                    return;
                };
                if res.status() != 200 {
                    return;
                }
                let id = res.headers()["x-request-id"].to_str().unwrap().to_string();
                if res.bytes().await.is_ok() {
                    answered.lock().unwrap().push(id);
                }
            }
        }));
    }
    // Shut down mid-load, once a good number of answers went out.
    support::eventually(|| async { (answered.lock().unwrap().len() > 100).then_some(()) }).await;
    let TestServer { server, .. } = s;
    assert!(server.shutdown().await);
    for worker in workers {
        let _ = worker.await;
    }
    let answered = answered.lock().unwrap().clone();
    assert!(answered.len() > 50, "load ran: {} answers", answered.len());
    let stored: HashSet<String> =
        chaosai::with_db!(store.db(), pool => sqlx::query_scalar("SELECT id FROM requests")
        .fetch_all(pool)
        .await)
        .unwrap()
        .into_iter()
        .collect();
    let missing: Vec<_> = answered.iter().filter(|id| !stored.contains(*id)).collect();
    assert!(
        missing.is_empty(),
        "{} answered requests have no row",
        missing.len()
    );
}

/// The binary on `port` over the database at `db`, answering instantly.
async fn binary(port: u16, db: &str) -> Binary {
    Binary::start_on(
        port,
        &[
            ("CHAOSAI_DATABASE_URL", db.to_string()),
            ("CHAOSAI_SIM_CHUNK_DELAY_MS", "0".to_string()),
        ],
        std::process::Stdio::null(),
    )
    .await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kill_minus_nine_under_load_leaves_a_database_that_opens_and_serves() {
    let dir = tempfile::tempdir().unwrap();
    let db = format!("sqlite://{}", dir.path().join("crash.db").display());
    let first = binary(free_port(), &db).await;
    let (port, base) = (first.port, first.base.clone());
    let client = reqwest::Client::new();

    let answered = Arc::new(Mutex::new(Vec::<(String, Instant)>::new()));
    let mut workers = Vec::new();
    for _ in 0..16 {
        let (client, url, answered) = (
            client.clone(),
            format!("{base}/v1/chat/completions"),
            answered.clone(),
        );
        workers.push(tokio::spawn(async move {
            while let Ok(res) = client
                .post(&url)
                .json(&ask("chaosai", "refund?", false))
                .send()
                .await
            {
                let id = res
                    .headers()
                    .get("x-request-id")
                    .map(|v| v.to_str().unwrap().to_string());
                if let (Some(id), Ok(_)) = (id, res.bytes().await) {
                    answered.lock().unwrap().push((id, Instant::now()));
                }
            }
        }));
    }
    // Kill mid-load, once answers older than the window checked below went out.
    support::eventually(|| async {
        let answered = answered.lock().unwrap();
        let oldest = answered.first().map(|(_, at)| at.elapsed());
        (answered.len() > 200 && oldest > Some(Duration::from_millis(600))).then_some(())
    })
    .await;
    first.kill();
    let killed_at = Instant::now();
    for worker in workers {
        let _ = worker.await;
    }

    // Restart on the same file.
    let second = binary(port, &db).await;
    let pool = sqlx::SqlitePool::connect(&db).await.unwrap();
    let integrity: String = sqlx::query_scalar("PRAGMA integrity_check")
        .fetch_one(&pool)
        .await
        .unwrap();
    assert_eq!(integrity, "ok");
    let migrations: i64 =
        sqlx::query_scalar("SELECT COUNT(*) FROM _sqlx_migrations WHERE success = 1")
            .fetch_one(&pool)
            .await
            .unwrap();
    let files = std::fs::read_dir(concat!(env!("CARGO_MANIFEST_DIR"), "/migrations/sqlite"))
        .unwrap()
        .count() as i64;
    assert_eq!(
        migrations, files,
        "every migration applied once, none re-run"
    );
    // At most the last flush interval (50 ms) is lost: anything answered well before the kill is there.
    let stored: HashSet<String> = sqlx::query_scalar("SELECT id FROM requests")
        .fetch_all(&pool)
        .await
        .unwrap()
        .into_iter()
        .collect();
    let answered = answered.lock().unwrap().clone();
    assert!(answered.len() > 50, "load ran: {} answers", answered.len());
    let old_enough: Vec<_> = answered
        .iter()
        .filter(|(_, at)| killed_at.duration_since(*at) > Duration::from_millis(500))
        .collect();
    assert!(!old_enough.is_empty());
    assert!(
        old_enough.iter().all(|(id, _)| stored.contains(id)),
        "answers older than the flush interval survive kill -9"
    );
    // And it serves again.
    let res = client
        .post(format!("{base}/v1/chat/completions"))
        .json(&ask("chaosai", "refund?", false))
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), 200);
    // SIGTERM: graceful shutdown, exit status 0.
    let status = second.stop();
    assert!(status.success(), "exit status {status:?}");
}

#[tokio::test]
async fn the_audit_api_pages_filters_and_names_bad_parameters() {
    let s = TestServer::start_with(busy).await;
    for _ in 0..2 {
        s.chat("chaosai", "refund?", false).await;
    }
    s.inject("claude", json!({"kind": "outage"})).await;
    for _ in 0..4 {
        s.chat("chaosai", "refund?", false).await;
    }
    s.server.audit.as_ref().unwrap().flush().await;
    let get = |path: String| {
        let req = s.admin(reqwest::Method::GET, &path);
        async move {
            let res = req.send().await.unwrap();
            (res.status().as_u16(), res.json::<Value>().await.unwrap())
        }
    };
    // Newest first, paged by cursor without overlap.
    let (status, first) = get("/api/audit/requests?limit=4".into()).await;
    assert_eq!(status, 200);
    let items = first["items"].as_array().unwrap();
    assert_eq!(items.len(), 4);
    assert!(items
        .windows(2)
        .all(|w| w[0]["cursor"].as_i64() > w[1]["cursor"].as_i64()));
    let cursor = first["next_cursor"].as_i64().unwrap();
    let (_, second) = get(format!("/api/audit/requests?limit=4&before={cursor}")).await;
    assert_eq!(second["items"].as_array().unwrap().len(), 2);
    assert!(second["next_cursor"].is_null());
    // Filters.
    let (_, by_route) = get("/api/audit/requests?route=gpt".into()).await;
    assert_eq!(by_route["items"].as_array().unwrap().len(), 4);
    let (_, by_provider) = get("/api/audit/requests?provider=claude&status=ok".into()).await;
    // Every request touched claude: 2 served by it, 3 failed on it, 1 skipped it while OPEN.
    assert_eq!(by_provider["items"].as_array().unwrap().len(), 6);
    // One request with its attempts and the breaker state before each.
    let id = by_route["items"][0]["id"].as_str().unwrap();
    let (status, detail) = get(format!("/api/audit/requests/{id}")).await;
    assert_eq!(status, 200);
    let attempts = detail["attempts"].as_array().unwrap();
    assert_eq!(attempts[0]["provider"], "claude");
    assert_eq!(attempts[0]["outcome"], "skipped_open");
    assert_eq!(attempts[0]["breaker_before"], "open");
    assert_eq!(attempts[1]["provider"], "gpt");
    // Transitions and tickets.
    let (_, transitions) = get("/api/audit/transitions".into()).await;
    assert_eq!(transitions["items"][0]["provider"], "claude");
    assert_eq!(transitions["items"][0]["to_state"], "open");
    let (status, tickets) = get("/api/tickets".into()).await;
    assert_eq!(status, 200);
    assert!(tickets["items"].as_array().unwrap().is_empty());
    // Bad parameters name the parameter.
    for (query, param) in [
        ("limit=0", "limit"),
        ("limit=abc", "limit"),
        ("limit=100000", "limit"),
        ("before=-3", "before"),
        ("route=", "route"),
        ("colour=blue", "colour"),
    ] {
        let (status, error) = get(format!("/api/audit/requests?{query}")).await;
        assert_eq!(status, 400, "{query}");
        assert_eq!(error["error"]["param"], param, "{query}");
        assert!(error["error"]["message"].as_str().unwrap().contains(param));
    }
    let (status, _) = get("/api/audit/requests/nope".into()).await;
    assert_eq!(status, 404);
    let res = s
        .client
        .get(s.url("/api/audit/requests"))
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), 401);
}

#[tokio::test]
async fn redaction_keeps_metadata_but_not_customer_text() {
    let s = TestServer::start_with(|c| {
        busy(c);
        c.audit.redact_text = true;
    })
    .await;
    let res = s
        .client
        .post(s.url("/api/ask"))
        .json(&json!({"turns": [{"role": "user", "content": "my card 4111 was charged twice"}]}))
        .send()
        .await
        .unwrap();
    assert!(res.text().await.unwrap().contains("\"done\""));
    for provider in ["claude", "gpt", "llama"] {
        s.inject(provider, json!({"kind": "outage"})).await;
    }
    let res = s
        .chat("chaosai", "my blender at 12 Elm Street is broken", false)
        .await;
    assert_eq!(res.headers()["x-chaosai-served-by"], "last-resort");
    s.server.audit.as_ref().unwrap().flush().await;
    let contents: Vec<String> = chaosai::with_db!(s.server.store.db(), pool => sqlx::query_scalar("SELECT content FROM messages")
        .fetch_all(pool)
        .await)
        .unwrap();
    assert_eq!(contents, vec!["[redacted]", "[redacted]"]);
    let question: String = chaosai::with_db!(s.server.store.db(), pool => sqlx::query_scalar("SELECT question FROM tickets")
        .fetch_one(pool)
        .await)
        .unwrap();
    assert_eq!(question, "[redacted]");
    assert_eq!(
        count(&s, "SELECT COUNT(*) FROM requests WHERE question_chars > 0").await,
        2,
        "metadata stays"
    );
}

#[tokio::test]
async fn retention_prunes_the_oldest_rows_beyond_the_cap() {
    let s = TestServer::start_with(|c| {
        busy(c);
        c.audit.max_rows = 30;
        c.audit.prune_interval_s = 1;
    })
    .await;
    let mut ids = Vec::new();
    for _ in 0..80 {
        let res = s.chat("chaosai", "refund?", false).await;
        ids.push(res.headers()["x-request-id"].to_str().unwrap().to_string());
    }
    // Every row is written before retention is waited for: otherwise a prune
    // between batches can bring the count to 30 while the last rows are still
    // queued, and the newest row on disk is an earlier request.
    s.server.audit.as_ref().unwrap().flush().await;
    // Retention runs every second inside the writer: wait for it to have run.
    let rows = s.rows("SELECT COUNT(*) FROM requests", |n| n <= 30).await;
    assert_eq!(rows, 30);
    let newest: String = chaosai::with_db!(s.server.store.db(), pool => sqlx::query_scalar("SELECT id FROM requests ORDER BY rowid DESC LIMIT 1")
        .fetch_one(pool)
        .await)
        .unwrap();
    assert_eq!(&newest, ids.last().unwrap(), "the newest rows are kept");
    assert_eq!(
        count(
            &s,
            "SELECT COUNT(*) FROM attempts WHERE request_id NOT IN (SELECT id FROM requests)"
        )
        .await,
        0,
        "attempts go with their request"
    );
}

fn request_record(i: i64) -> chaosai::store::audit::AuditRecord {
    chaosai::store::audit::AuditRecord::Request(Box::new(chaosai::store::RequestRecord {
        id: format!("r{i}"),
        created_at_ms: i,
        surface: chaosai::shared::Surface::Api,
        stream: false,
        served_by: Some("gpt".into()),
        status: chaosai::shared::RequestStatus::Ok,
        latency_ms: 1,
        overhead_ms: 0.1,
        question_chars: 1,
        answer_chars: 1,
        attempts: vec![],
        conversation_id: None,
        cache_similarity: None,
        tenant: "default".into(),
        usage: chaosai::shared::Usage::default(),
        usage_source: None,
    }))
}

async fn writer_on(
    dir: &std::path::Path,
    queue: usize,
) -> (chaosai::store::Store, chaosai::store::audit::AuditWriter) {
    use chaosai::store::audit::{AuditSettings, AuditWriter};
    let store = chaosai::store::Store::open(&format!("sqlite://{}", dir.join("a.db").display()))
        .await
        .unwrap();
    let settings = AuditSettings {
        queue,
        batch: 64,
        flush_interval: Duration::from_millis(5),
    };
    let (writer, _task) = AuditWriter::start(store.db().clone(), settings);
    (store, writer)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_hundred_thousand_records_against_a_queue_of_a_hundred_all_arrive_in_bounded_memory() {
    use std::sync::atomic::{AtomicUsize, Ordering::Relaxed};
    let dir = tempfile::tempdir().unwrap();
    let (store, writer) = writer_on(dir.path(), 100).await;
    // Whatever waits to be written, sampled all along: the queue and the
    // overflow list, never the records themselves piling up in tasks.
    let peak = Arc::new(AtomicUsize::new(0));
    let sampler = {
        let (writer, peak) = (writer.clone(), peak.clone());
        tokio::spawn(async move {
            loop {
                peak.fetch_max(writer.backlog(), Relaxed);
                tokio::task::yield_now().await;
            }
        })
    };
    const TOTAL: i64 = 100_000;
    let producers: Vec<_> = (0..8)
        .map(|p| {
            let writer = writer.clone();
            tokio::spawn(async move {
                for i in (p..TOTAL).step_by(8) {
                    // The request path's way: wait for room (backpressure).
                    writer.write(request_record(i)).await;
                }
            })
        })
        .collect();
    for producer in producers {
        producer.await.unwrap();
    }
    writer.flush().await;
    sampler.abort();
    let rows: i64 =
        chaosai::with_db!(store.db(), pool => sqlx::query_scalar("SELECT COUNT(*) FROM requests")
        .fetch_one(pool)
        .await)
        .unwrap();
    assert_eq!(rows, TOTAL, "every record arrived");
    let c = writer.counters();
    assert_eq!(
        c.written.load(Relaxed),
        TOTAL as u64,
        "written counts committed rows"
    );
    assert_eq!(c.dropped.load(Relaxed), 0);
    // At most the queue plus the overflow list (the same size) waits at any time.
    assert!(
        peak.load(Relaxed) <= 200,
        "peak backlog {}",
        peak.load(Relaxed)
    );
}

#[tokio::test]
async fn code_that_cannot_wait_overflows_into_a_bounded_list_and_drops_only_beyond_it_loudly() {
    use std::sync::atomic::Ordering::Relaxed;
    let dir = tempfile::tempdir().unwrap();
    let (store, writer) = writer_on(dir.path(), 4).await;
    // 1,000 records at once from code that cannot wait (a drop handler).
    for i in 0..1_000 {
        writer.enqueue(request_record(i));
    }
    writer.flush().await;
    let rows: i64 =
        chaosai::with_db!(store.db(), pool => sqlx::query_scalar("SELECT COUNT(*) FROM requests")
        .fetch_one(pool)
        .await)
        .unwrap();
    let c = writer.counters();
    assert!(c.overflow.load(Relaxed) > 0, "the queue did overflow");
    assert!(
        rows >= 8,
        "the queue and the overflow list were kept: {rows}"
    );
    // Nothing vanished unaccounted: each record was written or counted as dropped.
    assert_eq!(rows as u64 + c.dropped.load(Relaxed), 1_000);
    assert_eq!(c.written.load(Relaxed), rows as u64);
}

#[tokio::test]
async fn a_lone_record_is_written_when_the_flush_interval_ends_and_a_full_batch_at_once() {
    use chaosai::store::audit::{AuditRecord, AuditSettings, AuditWriter};
    use chaosai::store::Store;
    use std::sync::atomic::Ordering::Relaxed;
    let dir = tempfile::tempdir().unwrap();
    let store = Store::open(&format!("sqlite://{}", dir.path().join("t.db").display()))
        .await
        .unwrap();
    let settings = AuditSettings {
        queue: 64,
        batch: 8,
        flush_interval: Duration::from_millis(50),
    };
    let (writer, _task) = AuditWriter::start(store.db().clone(), settings);
    let fault = |i: i64| {
        AuditRecord::Fault(chaosai::store::audit::FaultRecord {
            at_ms: i,
            provider: "gpt".into(),
            spec: None,
            by: chaosai::shared::FaultChangedBy::Admin,
        })
    };
    // Time stands still from here: only `advance` moves the writer's clock.
    tokio::time::pause();
    writer.enqueue(fault(0));
    tokio::time::advance(Duration::from_millis(49)).await;
    // Give a writer that did not wait ample real time to have written.
    let wall = std::time::Instant::now();
    while wall.elapsed() < Duration::from_millis(200) {
        tokio::task::yield_now().await;
    }
    assert_eq!(
        writer.counters().written.load(Relaxed),
        0,
        "a lone record waits for the interval"
    );
    tokio::time::advance(Duration::from_millis(1)).await;
    support::eventually(|| async { (writer.counters().written.load(Relaxed) == 1).then_some(()) })
        .await;
    // A full batch does not wait for the interval at all: it is written while
    // the (paused) clock does not move. Yielding, unlike sleeping, never lets
    // tokio advance it.
    let before = tokio::time::Instant::now();
    for i in 1..=8 {
        writer.enqueue(fault(i));
    }
    let wall = std::time::Instant::now();
    while writer.counters().written.load(Relaxed) < 9 {
        assert!(
            wall.elapsed() < Duration::from_secs(10),
            "the batch was never written"
        );
        tokio::task::yield_now().await;
    }
    assert_eq!(tokio::time::Instant::now(), before, "no time passed");
    // A flush does not wait for the interval either: the writer, asleep until
    // its batch's interval ends (it does not wait on the queue, so that a lone
    // record never wakes it), is woken for the flush. Yielding keeps the paused
    // clock where it is, so a writer that slept on would never flush.
    writer.enqueue(fault(9));
    let flushed = tokio::spawn({
        let writer = writer.clone();
        async move { writer.flush().await }
    });
    let wall = std::time::Instant::now();
    while !flushed.is_finished() {
        assert!(
            wall.elapsed() < Duration::from_secs(10),
            "the flush waited for the interval"
        );
        tokio::task::yield_now().await;
    }
    assert_eq!(writer.counters().written.load(Relaxed), 10);
    assert_eq!(tokio::time::Instant::now(), before, "no time passed");
}

/// Makes the database itself refuse some rows, as a constraint would: the
/// request `poison`, and every ticket when `tickets` is set.
async fn refuse_rows(pool: &sqlx::SqlitePool, tickets: bool) {
    sqlx::query(
        "CREATE TRIGGER refuse_poison BEFORE INSERT ON requests WHEN NEW.id = 'poison' \
         BEGIN SELECT RAISE(ABORT, 'this row is refused'); END",
    )
    .execute(pool)
    .await
    .unwrap();
    if tickets {
        sqlx::query(
            "CREATE TRIGGER refuse_tickets BEFORE INSERT ON tickets \
             BEGIN SELECT RAISE(ABORT, 'tickets are refused'); END",
        )
        .execute(pool)
        .await
        .unwrap();
    }
}

#[tokio::test]
async fn one_bad_row_never_takes_its_batch_with_it() {
    use std::sync::atomic::Ordering::Relaxed;
    let dir = tempfile::tempdir().unwrap();
    let (store, writer) = writer_on(dir.path(), 100).await;
    refuse_rows(store.db().as_sqlite().expect("sqlite"), false).await;
    for i in 0..20 {
        writer.write(request_record(i)).await;
        if i == 10 {
            let chaosai::store::audit::AuditRecord::Request(mut poison) = request_record(0) else {
                unreachable!()
            };
            poison.id = "poison".into();
            writer
                .write(chaosai::store::audit::AuditRecord::Request(poison))
                .await;
        }
    }
    writer.flush().await;
    let rows: i64 =
        chaosai::with_db!(store.db(), pool => sqlx::query_scalar("SELECT COUNT(*) FROM requests")
        .fetch_one(pool)
        .await)
        .unwrap();
    assert_eq!(rows, 20, "every good row of the batch was committed");
    let c = writer.counters();
    assert_eq!(
        c.rejected.load(Relaxed),
        1,
        "only the bad row was set aside"
    );
    assert_eq!(
        c.written.load(Relaxed),
        rows as u64,
        "written counts what is in the table"
    );
}

#[tokio::test]
async fn a_writer_that_dies_is_restarted_and_its_records_still_arrive() {
    use std::sync::atomic::Ordering::Relaxed;
    let dir = tempfile::tempdir().unwrap();
    let (store, writer) = writer_on(dir.path(), 100).await;
    for i in 0..50 {
        writer.write(request_record(i)).await;
    }
    writer.crash_writer().await;
    for i in 50..100 {
        writer.write(request_record(i)).await;
    }
    writer.flush().await;
    let rows: i64 =
        chaosai::with_db!(store.db(), pool => sqlx::query_scalar("SELECT COUNT(*) FROM requests")
        .fetch_one(pool)
        .await)
        .unwrap();
    assert_eq!(rows, 100);
    assert_eq!(
        writer.counters().restarts.load(Relaxed),
        1,
        "the death was counted"
    );
}

#[tokio::test]
async fn a_ticket_number_is_shown_only_once_the_ticket_is_stored() {
    // Durable: the number is given, and the row is there when the reply is.
    let s = TestServer::start_with(busy).await;
    for provider in ["claude", "gpt", "llama"] {
        s.inject(provider, json!({"kind": "outage"})).await;
    }
    let res = s
        .chat("chaosai", "My blender makes a strange noise", false)
        .await;
    let ticket = res.headers()["x-chaosai-ticket"]
        .to_str()
        .unwrap()
        .to_string();
    let stored: i64 = chaosai::with_db!(s.server.store.db(), pool => sqlx::query_scalar("SELECT COUNT(*) FROM tickets WHERE id = ?")
        .bind(&ticket)
        .fetch_one(pool)
        .await)
        .unwrap();
    assert_eq!(stored, 1, "committed before the customer saw its number");

    // Not durable (the database refuses tickets): no number that leads nowhere.
    let s = TestServer::start_with(busy).await;
    refuse_rows(s.server.store.db().as_sqlite().expect("sqlite"), true).await;
    for provider in ["claude", "gpt", "llama"] {
        s.inject(provider, json!({"kind": "outage"})).await;
    }
    let res = s
        .chat("chaosai", "My blender makes a strange noise", false)
        .await;
    assert_eq!(res.status(), 200);
    assert!(res.headers().get("x-chaosai-ticket").is_none());
    let body: Value = res.json().await.unwrap();
    let text = body["choices"][0]["message"]["content"].as_str().unwrap();
    assert!(!text.contains("T-"), "{text}");
    assert!(text.contains("could not open a ticket"), "{text}");
}

/// One chat-page turn: the conversation id it ran under and the reply's text.
async fn chat_turn(s: &TestServer, conversation: Option<&str>, turns: Value) -> (String, String) {
    let events = s.chat_events(conversation, turns).await;
    let id = events[0]["conversation_id"].as_str().unwrap().to_string();
    let text = events.iter().filter_map(|e| e["text"].as_str()).collect();
    (id, text)
}

/// The ticket number a reply names.
fn ticket_in(text: &str) -> String {
    let at = text
        .find("T-")
        .unwrap_or_else(|| panic!("no ticket in {text:?}"));
    text[at..at + 10].to_string()
}

#[tokio::test]
async fn a_customer_who_writes_again_during_an_outage_keeps_one_ticket() {
    let s = TestServer::start_with(busy).await;
    for provider in ["claude", "gpt", "llama"] {
        s.inject(provider, json!({"kind": "outage"})).await;
    }
    let question = |q: &str| json!({"role": "user", "content": q});
    let (conversation, first) = chat_turn(
        &s,
        None,
        json!([question("My blender makes a strange noise")]),
    )
    .await;
    let ticket = ticket_in(&first);
    // The turn is on record (the audit writes it off the request path).
    s.rows(
        "SELECT COUNT(*) FROM messages WHERE role = 'assistant'",
        |n| n >= 1,
    )
    .await;

    // Writing again in the same conversation: the same ticket, said to be open.
    let again = json!([
        question("My blender makes a strange noise"),
        {"role": "assistant", "content": first},
        question("Hello? Is anyone there?")
    ]);
    let (_, second) = chat_turn(&s, Some(&conversation), again.clone()).await;
    assert_eq!(ticket_in(&second), ticket, "{second}");
    assert!(second.contains("still open"), "{second}");
    assert_eq!(count(&s, "SELECT COUNT(*) FROM tickets").await, 1);
    // The agent who opens the ticket reads the conversation as it is now, and
    // what every provider answered before the last resort.
    let opened = s.admin_json(&format!("/api/tickets/{ticket}")).await;
    assert_eq!(opened["ticket"]["id"], ticket.as_str());
    assert_eq!(
        opened["ticket"]["question"], "My blender makes a strange noise",
        "the list still shows what opened it"
    );
    let said: Vec<&str> = opened["conversation"]
        .as_array()
        .unwrap()
        .iter()
        .map(|turn| turn["content"].as_str().unwrap())
        .collect();
    assert_eq!(said.first(), Some(&"My blender makes a strange noise"));
    assert_eq!(said.last(), Some(&"Hello? Is anyone there?"), "{opened}");
    let attempts = opened["attempts"].as_array().unwrap();
    let mut failed: Vec<&str> = attempts
        .iter()
        .map(|a| a["provider"].as_str().unwrap())
        .collect();
    failed.dedup();
    assert_eq!(failed, ["claude", "gpt", "llama"], "{opened}");
    assert!(attempts.iter().all(|a| a["status"] == 503), "{opened}");
    let missing = s
        .admin(reqwest::Method::GET, "/api/tickets/T-NOSUCH00")
        .send()
        .await
        .unwrap();
    support::app::api_error(missing, 404).await;
    // A long id is quoted cut short, as every error quotes what a caller sent.
    let long = s
        .admin(
            reqwest::Method::GET,
            &format!("/api/tickets/{}", "T".repeat(5_000)),
        )
        .send()
        .await
        .unwrap();
    let error = support::app::api_error(long, 404).await;
    let message = error["message"].as_str().unwrap();
    assert!(
        message.chars().count() < 300,
        "{} characters",
        message.len()
    );

    // Another conversation is another customer: its own ticket.
    let (_, other) = chat_turn(&s, None, json!([question("My kettle leaks")])).await;
    assert_ne!(ticket_in(&other), ticket);
    assert_eq!(count(&s, "SELECT COUNT(*) FROM tickets").await, 2);

    // Once an agent has resolved it, a new message opens a new ticket.
    let resolved = s
        .admin(
            reqwest::Method::POST,
            &format!("/api/tickets/{ticket}/resolve"),
        )
        .send()
        .await
        .unwrap();
    assert!(resolved.status().is_success(), "{}", resolved.status());
    let (_, third) = chat_turn(&s, Some(&conversation), again).await;
    assert_ne!(ticket_in(&third), ticket, "{third}");
    assert!(!third.contains("still open"), "{third}");
    assert_eq!(count(&s, "SELECT COUNT(*) FROM tickets").await, 3);
}

/// An API caller's question during an outage, in `conversation` of `tenant`:
/// the status and the ticket it names.
async fn api_turn(
    s: &TestServer,
    tenant: &str,
    conversation: &str,
    question: &str,
) -> (u16, Option<String>) {
    let res = s
        .client
        .post(s.url("/v1/chat/completions"))
        .header("x-chaosai-tenant", tenant)
        .header("x-chaosai-conversation", conversation)
        .json(&ask("chaosai", question, false))
        .send()
        .await
        .unwrap();
    let status = res.status().as_u16();
    let ticket = res
        .headers()
        .get("x-chaosai-ticket")
        .map(|v| v.to_str().unwrap().to_string());
    (status, ticket)
}

#[tokio::test]
async fn an_api_caller_naming_its_conversation_keeps_one_ticket_too() {
    let s = TestServer::start_with(busy).await;
    for provider in ["claude", "gpt", "llama"] {
        s.inject(provider, json!({"kind": "outage"})).await;
    }
    let (status, first) = api_turn(&s, "shop", "chat-42", "My blender makes a strange noise").await;
    assert_eq!(status, 200);
    let first = first.expect("a ticket");
    let (_, again) = api_turn(&s, "shop", "chat-42", "Hello? Is anyone there?").await;
    assert_eq!(again.as_deref(), Some(first.as_str()), "the same ticket");
    // The ticket shows the caller's latest message, though no transcript is kept.
    let opened = s.admin_json(&format!("/api/tickets/{first}")).await;
    let last = opened["conversation"].as_array().unwrap().last().cloned();
    assert_eq!(
        last.unwrap()["content"],
        "Hello? Is anyone there?",
        "{opened}"
    );
    // Another conversation, or the same name in another tenant: another customer.
    let (_, other) = api_turn(&s, "shop", "chat-43", "My kettle leaks").await;
    let (_, elsewhere) = api_turn(&s, "other-shop", "chat-42", "My kettle leaks").await;
    let (other, elsewhere) = (other.unwrap(), elsewhere.unwrap());
    assert!(other != first && elsewhere != first && other != elsewhere);
    assert_eq!(count(&s, "SELECT COUNT(*) FROM tickets").await, 3);
    // The requests are grouped under the conversation; the API's text is not
    // kept as a chat transcript.
    s.rows(
        "SELECT COUNT(*) FROM requests WHERE conversation_id = 'api:shop:chat-42'",
        |n| n == 2,
    )
    .await;
    assert_eq!(count(&s, "SELECT COUNT(*) FROM messages").await, 0);
    // A name that is not one is refused, naming the header.
    let (status, _) = api_turn(&s, "shop", "no spaces please", "hi").await;
    assert_eq!(status, 400);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn cache_writes_tickets_and_audit_at_once_never_lock_the_database() {
    let s = TestServer::start_with(|c| {
        busy(c);
        c.cache.enabled = true;
    })
    .await;
    // Half the traffic opens tickets (every provider down for these questions'
    // pinned model), half is answered and cached, all of it audited.
    s.inject("llama", json!({"kind": "outage"})).await;
    let mut workers = Vec::new();
    for w in 0..16 {
        let (client, url) = (s.client.clone(), s.url("/v1/chat/completions"));
        workers.push(tokio::spawn(async move {
            for i in 0..25 {
                let body = if (w + i) % 2 == 0 {
                    ask(
                        "llama",
                        &format!("My blender makes noise number {w}-{i}"),
                        false,
                    )
                } else {
                    ask(
                        "chaosai",
                        &format!("Question {w} {i}: how much is shipping?"),
                        false,
                    )
                };
                let res = client.post(&url).json(&body).send().await.unwrap();
                assert_eq!(res.status(), 200);
                res.bytes().await.unwrap();
            }
        }));
    }
    for w in workers {
        w.await.unwrap();
    }
    s.server.audit.as_ref().unwrap().flush().await;
    assert_eq!(count(&s, "SELECT COUNT(*) FROM requests").await, 400);
    assert!(count(&s, "SELECT COUNT(*) FROM tickets").await > 0);
    assert_eq!(
        s.metric("chaosai_audit_retries_total").await,
        0.0,
        "no database error, locked or otherwise"
    );
    assert_eq!(s.metric("chaosai_audit_rejected_total").await, 0.0);
}

#[tokio::test]
async fn retention_reaches_every_table() {
    let s = TestServer::start_with(|c| {
        busy(c);
        c.audit.retention_days = 1;
        c.audit.prune_interval_s = 1;
    })
    .await;
    let pool = s.server.store.db().as_sqlite().expect("sqlite");
    let old = chaosai::clock::unix_ms_now() - 3 * 86_400_000;
    for sql in [
        "INSERT INTO requests (id, created_at_ms, surface, stream, status, latency_ms, overhead_ms, question_chars, answer_chars) VALUES ('old', ?, 'api', 0, 'ok', 1, 0, 1, 1)",
        "INSERT INTO messages (at_ms, conversation_id, request_id, role, content) VALUES (?, 'c', 'old', 'user', 'hi')",
        "INSERT INTO tickets (id, created_at_ms, request_id, question, conversation_json, failure_json) VALUES ('T-OLD', ?, 'old', 'q', '[]', '[]')",
        "INSERT INTO breaker_transitions (at_ms, provider, from_state, to_state, reason) VALUES (?, 'gpt', 'closed', 'open', 'r')",
        "INSERT INTO fault_changes (at_ms, provider, action, changed_by) VALUES (?, 'gpt', 'set', 'admin')",
        "INSERT INTO responses (id, tenant, created_at_ms, conversation_json, response_json, bytes) VALUES ('resp_old', 'default', ?, '[]', '{}', 4)",
    ] {
        sqlx::query(sql).bind(old).execute(pool).await.unwrap();
    }
    s.chat("chaosai", "refund?", false).await;
    for table in [
        "messages",
        "tickets",
        "breaker_transitions",
        "fault_changes",
        "responses",
    ] {
        s.rows(&format!("SELECT COUNT(*) FROM {table}"), |n| n == 0)
            .await;
    }
    s.rows("SELECT COUNT(*) FROM requests WHERE id = 'old'", |n| n == 0)
        .await;
    // The fresh row is written and stays.
    s.rows("SELECT COUNT(*) FROM requests WHERE id != 'old'", |n| {
        n == 1
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_stream_still_running_at_sigterm_ends_with_its_error_and_keeps_its_row() {
    let dir = tempfile::tempdir().unwrap();
    let db = format!("sqlite://{}", dir.path().join("term.db").display());
    let server = Binary::start(
        &[
            ("CHAOSAI_DATABASE_URL", db.clone()),
            // Slow enough that the answer is still streaming when the grace ends.
            ("CHAOSAI_SIM_CHUNK_DELAY_MS", "150".to_string()),
            ("CHAOSAI_SHUTDOWN_GRACE_MS", "300".to_string()),
            ("CHAOSAI_CACHE", "off".to_string()),
        ],
        std::process::Stdio::null(),
    )
    .await;
    let mut res = reqwest::Client::new()
        .post(format!("{}/v1/chat/completions", server.base))
        .json(&ask("chaosai", "Where is my order?", true))
        .send()
        .await
        .unwrap();
    let id = res.headers()["x-request-id"].to_str().unwrap().to_string();
    let mut body = String::from_utf8(res.chunk().await.unwrap().unwrap().to_vec()).unwrap();
    let status = tokio::task::spawn_blocking(move || server.stop());
    while let Ok(Some(chunk)) = res.chunk().await {
        body.push_str(std::str::from_utf8(&chunk).unwrap());
    }
    assert!(status.await.unwrap().success(), "exit 0 after SIGTERM");
    let data = support::app::sse_data(&body);
    assert_ne!(
        data.last().map(String::as_str),
        Some("[DONE]"),
        "not taken as whole"
    );
    let last: Value = serde_json::from_str(data.last().unwrap()).unwrap();
    assert_eq!(last["error"]["code"], "stream_interrupted", "{last}");
    let pool = sqlx::SqlitePool::connect(&db).await.unwrap();
    let status: String = sqlx::query_scalar("SELECT status FROM requests WHERE id = ?")
        .bind(&id)
        .fetch_one(&pool)
        .await
        .unwrap();
    assert_eq!(
        status, "stream_failed",
        "the interrupted stream has its row"
    );
}
