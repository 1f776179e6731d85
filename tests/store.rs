//! The store's whole surface, run once on SQLite and once on a real PostgreSQL:
//! the same audit writer, read queries, history, keys, tickets and retention,
//! so neither engine drifts from the other.

mod support;

use chaosai::shared::audit::UsageBy;
use chaosai::shared::{
    AttemptOutcome, AttemptSummary, BreakerState, ChatTurn, FaultChangedBy, FaultKind, FaultSpec,
    RequestStatus, Route, Surface, Transition, Usage, UsageSource,
};
use chaosai::store::audit::{AuditRecord, AuditSettings, AuditWriter, FaultRecord, MessageRecord};
use chaosai::store::queries::RequestFilter;
use chaosai::store::{Engine, RequestRecord, Store, StoredResponse, Ticket};
use std::time::Duration;
use support::engines::Postgres;

fn attempt(provider: &str, outcome: AttemptOutcome, tokens: Option<u64>) -> AttemptSummary {
    AttemptSummary {
        provider: provider.into(),
        outcome,
        status: (outcome != AttemptOutcome::Ok).then_some(503),
        latency_ms: 12,
        breaker: Some(BreakerState::Closed),
        usage: tokens.map(|t| Usage {
            prompt_tokens: t,
            completion_tokens: 2 * t,
        }),
    }
}

fn request(i: i64, tenant: &str, served_by: &str, attempts: Vec<AttemptSummary>) -> RequestRecord {
    RequestRecord {
        id: format!("req-{i:03}"),
        created_at_ms: 1_000_000 + i * 1_000,
        surface: Surface::Api,
        stream: i % 2 == 0,
        served_by: Some(Route::from(served_by)),
        status: RequestStatus::Ok,
        latency_ms: 40,
        overhead_ms: 0.25,
        question_chars: 20,
        answer_chars: 80,
        attempts,
        conversation_id: Some("conv-1".into()),
        cache_similarity: (served_by == "cache").then_some(0.93),
        tenant: tenant.into(),
        usage: Usage {
            prompt_tokens: 10,
            completion_tokens: 20,
        },
        usage_source: Some(UsageSource::Provider),
    }
}

/// Everything the store does, asserted the same way whatever the engine.
async fn exercise(url: &str, engine: Engine) {
    let store = Store::open(url).await.unwrap();
    assert_eq!(store.db().engine(), engine);
    // Opening again finds every migration applied.
    Store::open(url).await.unwrap();
    let (writer, _task) = AuditWriter::start(
        store.db().clone(),
        AuditSettings {
            queue: 64,
            batch: 16,
            flush_interval: Duration::from_millis(5),
        },
    );
    for i in 0..30 {
        let (served_by, attempts) = match i % 3 {
            0 => ("gpt", vec![attempt("gpt", AttemptOutcome::Ok, Some(10))]),
            1 => (
                "gpt",
                vec![
                    attempt("claude", AttemptOutcome::ServerError, None),
                    attempt("gpt", AttemptOutcome::Ok, Some(10)),
                ],
            ),
            _ => ("cache", vec![]),
        };
        let tenant = if i < 20 { "acme" } else { "globex" };
        writer
            .write(AuditRecord::Request(Box::new(request(
                i, tenant, served_by, attempts,
            ))))
            .await;
    }
    // A retried batch writes a request again: it is there once.
    writer
        .write(AuditRecord::Request(Box::new(request(
            0,
            "acme",
            "gpt",
            vec![],
        ))))
        .await;
    writer
        .write(AuditRecord::Transition(Transition {
            provider: "claude".into(),
            from: BreakerState::Closed,
            to: BreakerState::Open,
            reason: "3 consecutive failures".into(),
            at_ms: 1_005_000,
            replica: None,
        }))
        .await;
    writer
        .write(AuditRecord::Fault(FaultRecord {
            at_ms: 1_004_000,
            provider: "claude".into(),
            spec: Some(FaultSpec {
                kind: FaultKind::Outage,
                duration_s: Some(30),
            }),
            by: FaultChangedBy::Admin,
        }))
        .await;
    for (n, turn) in [
        ChatTurn::user("where is it?"),
        ChatTurn::assistant("on its way"),
    ]
    .into_iter()
    .enumerate()
    {
        writer
            .write(AuditRecord::Message(MessageRecord {
                at_ms: 1_000_000 + n as i64,
                conversation_id: "conv-1".into(),
                request_id: "req-000".into(),
                turn,
            }))
            .await;
    }
    writer.flush().await;
    assert_eq!(
        writer
            .counters()
            .rejected
            .load(std::sync::atomic::Ordering::Relaxed),
        0
    );

    // Paged newest first, filtered, with attempts in the same query.
    let mut filter = RequestFilter {
        limit: 7,
        with_attempts: true,
        ..RequestFilter::default()
    };
    let mut seen = Vec::new();
    loop {
        let page = store.requests(&filter).await.unwrap();
        seen.extend(
            page.items
                .iter()
                .map(|r| (r.id.clone(), r.attempts.clone().unwrap().len())),
        );
        match page.next_cursor {
            Some(cursor) => filter.before = Some(cursor),
            None => break,
        }
    }
    assert_eq!(seen.len(), 30, "each request once");
    assert_eq!(seen[0], ("req-029".to_string(), 0), "the cache answered it");
    assert_eq!(seen[1], ("req-028".to_string(), 2));
    assert_eq!(seen[29], ("req-000".to_string(), 1));
    let by_provider = store
        .requests(&RequestFilter {
            provider: Some("claude".into()),
            tenant: Some("acme".into()),
            limit: 100,
            ..RequestFilter::default()
        })
        .await
        .unwrap();
    assert_eq!(
        by_provider.items.len(),
        7,
        "acme's requests that tried claude"
    );
    let cached = store
        .requests(&RequestFilter {
            route: Some(Route::Cache),
            status: Some(RequestStatus::Ok),
            from_ms: Some(1_010_000),
            to_ms: Some(1_020_000),
            limit: 100,
            ..RequestFilter::default()
        })
        .await
        .unwrap();
    assert_eq!(
        cached
            .items
            .iter()
            .map(|r| r.id.as_str())
            .collect::<Vec<_>>(),
        ["req-017", "req-014", "req-011"]
    );
    let one = store.request("req-001").await.unwrap().unwrap();
    assert!(!one.stream);
    assert_eq!(one.overhead_ms, 0.25);
    assert_eq!(
        one.attempts.as_ref().unwrap()[0].outcome,
        AttemptOutcome::ServerError
    );
    assert_eq!(one.attempts.as_ref().unwrap()[0].http_status, Some(503));
    assert_eq!(
        store
            .request("req-002")
            .await
            .unwrap()
            .unwrap()
            .cache_similarity,
        Some(0.93)
    );
    assert!(store.request("nobody").await.unwrap().is_none());

    // Usage and spend: summed as integers on both engines.
    let by_tenant = store.usage(UsageBy::Tenant, 0).await.unwrap();
    assert_eq!(
        by_tenant
            .iter()
            .map(|u| (u.key.as_str(), u.requests, u.total_tokens))
            .collect::<Vec<_>>(),
        [("acme", 20, 600), ("globex", 10, 300)]
    );
    let by_provider = store.usage(UsageBy::Provider, 0).await.unwrap();
    let gpt = by_provider.iter().find(|u| u.key == "gpt").unwrap();
    assert_eq!(
        (gpt.requests, gpt.prompt_tokens, gpt.completion_tokens),
        (20, 200, 400)
    );
    let cache = by_provider.iter().find(|u| u.key == "cache").unwrap();
    assert_eq!(cache.requests, 10);
    let spend = store.spend(0, i64::MAX).await.unwrap();
    assert!(spend
        .iter()
        .any(|(t, p, u)| t == "globex" && p == "gpt" && u.prompt_tokens == 60));

    // Transitions, faults, conversations, history.
    let transitions = store.transitions(None, 10).await.unwrap();
    assert_eq!(transitions.items.len(), 1);
    assert_eq!(transitions.items[0].to_state, BreakerState::Open);
    assert_eq!(
        store.transitions_between(0, i64::MAX).await.unwrap().len(),
        1
    );
    assert_eq!(store.fault_changes(0, i64::MAX).await.unwrap().len(), 1);
    let turns = store.conversation("conv-1").await.unwrap();
    assert_eq!(turns.len(), 2);
    assert_eq!(turns[1].content, "on its way");
    assert_eq!(store.request_points(0).await.unwrap().len(), 30);
    assert_eq!(store.attempt_points(0).await.unwrap().len(), 30);
    assert_eq!(
        store.last_successes(0).await.unwrap().get("gpt"),
        Some(&(1_000_000 + 28_000 + 40))
    );
    let buckets = store.route_buckets(0, i64::MAX, 10_000).await.unwrap();
    assert_eq!(buckets.len(), 3);
    assert_eq!(buckets[0].by_route.get("gpt"), Some(&7));
    assert_eq!(buckets[0].by_route.get("cache"), Some(&3));

    // Tickets: stored, listed, resolved once.
    for n in 0..3 {
        store
            .insert_ticket(&Ticket {
                id: format!("T-{n}"),
                created_at_ms: 1_000_000 + n,
                request_id: "req-000".into(),
                question: "help".into(),
                conversation_json: "[]".into(),
                failure_json: "[]".into(),
                conversation_id: Some(format!("conv-{}", n % 2)),
            })
            .await
            .unwrap();
    }
    let tickets = store.tickets(None, 2).await.unwrap();
    assert_eq!(tickets.items[0].id, "T-2");
    let rest = store.tickets(tickets.next_cursor, 2).await.unwrap();
    assert_eq!(rest.items.len(), 1);
    assert!(store.resolve_ticket("T-1", 2_000_000).await.unwrap());
    assert!(!store.resolve_ticket("T-1", 2_000_001).await.unwrap());
    // A conversation's newest open ticket; a resolved one is not found.
    assert_eq!(
        store.open_ticket_of("conv-0").await.unwrap().as_deref(),
        Some("T-2")
    );
    assert_eq!(store.open_ticket_of("conv-1").await.unwrap(), None);
    assert_eq!(store.open_ticket_of("conv-9").await.unwrap(), None);

    // Client keys.
    let spec = chaosai::clients::ClientSpec {
        name: "bot".into(),
        tenant: "acme".into(),
        key_sha256: "ab".repeat(32),
        rpm: Some(60),
        tpm: None,
        origin: chaosai::clients::KeyOrigin::Admin,
    };
    store.insert_client(&spec, 1).await.unwrap();
    let clients = store.clients().await.unwrap();
    assert_eq!(clients.len(), 1);
    assert_eq!((clients[0].rpm, clients[0].tpm), (Some(60), None));
    store.delete_client("bot").await.unwrap();
    assert!(store.clients().await.unwrap().is_empty());

    // Kept responses: only their tenant reads or deletes them.
    let kept = |id: &str, at: i64| StoredResponse {
        id: id.into(),
        tenant: "acme".into(),
        created_at_ms: at,
        conversation_json: serde_json::to_string(&[ChatTurn::user("Where is my order?")]).unwrap(),
        response_json: format!("{{\"id\": \"{id}\"}}"),
    };
    store
        .insert_response(&kept("resp_old", 1_000_000))
        .await
        .unwrap();
    store
        .insert_response(&kept("resp_new", 1_020_000))
        .await
        .unwrap();
    let read = store.response("resp_new", "acme").await.unwrap().unwrap();
    assert_eq!(
        read.conversation_json,
        kept("resp_new", 0).conversation_json
    );
    assert!(store
        .response("resp_new", "globex")
        .await
        .unwrap()
        .is_none());
    assert!(!store.delete_response("resp_new", "globex").await.unwrap());
    assert!(store.delete_response("resp_new", "acme").await.unwrap());
    assert!(store.response("resp_new", "acme").await.unwrap().is_none());

    // Retention: everything before 1 015 000 goes, attempts with their request.
    writer.prune(1_015_000, 1_000_000, 1 << 30);
    writer.flush().await;
    support::eventually(|| async {
        let left = store
            .requests(&RequestFilter {
                limit: 100,
                ..RequestFilter::default()
            })
            .await
            .unwrap();
        (left.items.len() == 15).then_some(())
    })
    .await;
    let orphans: i64 = chaosai::with_db!(store.db(), pool => sqlx::query_scalar(
        "SELECT COUNT(*) FROM attempts a WHERE NOT EXISTS (SELECT 1 FROM requests r WHERE r.id = a.request_id)",
    )
    .fetch_one(pool)
    .await)
    .unwrap();
    assert_eq!(orphans, 0);
    // Kept responses beyond their size go oldest first, and only as many as
    // must: three of 100 bytes each, held to 250, keep the newest two.
    let sized = |id: &str| StoredResponse {
        conversation_json: "[]".into(),
        response_json: format!(
            "{{\"id\": \"{id}\", \"padding\": \"{}\"}}",
            "x".repeat(98 - 25 - id.len())
        ),
        ..kept(id, 2_000_000)
    };
    for id in ["resp_s1", "resp_s2", "resp_s3"] {
        let row = sized(id);
        assert_eq!(row.conversation_json.len() + row.response_json.len(), 100);
        store.insert_response(&row).await.unwrap();
    }
    writer.prune(0, 1_000_000, 250);
    support::eventually(|| async {
        store
            .response("resp_s1", "acme")
            .await
            .unwrap()
            .is_none()
            .then_some(())
    })
    .await;
    for id in ["resp_s2", "resp_s3"] {
        assert!(
            store.response(id, "acme").await.unwrap().is_some(),
            "{id} stays"
        );
    }
    // Retention reaches kept responses too.
    support::eventually(|| async {
        store
            .response("resp_old", "acme")
            .await
            .unwrap()
            .is_none()
            .then_some(())
    })
    .await;
}

#[tokio::test]
async fn the_store_on_sqlite() {
    let dir = tempfile::tempdir().unwrap();
    exercise(
        &format!("sqlite://{}", dir.path().join("s.db").display()),
        Engine::Sqlite,
    )
    .await;
}

#[tokio::test]
async fn the_store_on_postgres() {
    let pg = Postgres::start().await;
    exercise(&pg.url, Engine::Postgres).await;
}

#[tokio::test]
async fn an_unreachable_or_unknown_database_is_one_error_naming_it() {
    let port = support::binary::free_port();
    let url = format!("postgres://chaosai:secret@127.0.0.1:{port}/chaosai");
    let err = Store::open(&url)
        .await
        .err()
        .expect("nobody listens there")
        .to_string();
    assert!(err.contains("cannot connect to postgres"), "{err}");
    assert!(err.contains(&format!("127.0.0.1:{port}")), "{err}");
    assert!(
        !err.contains("secret"),
        "the password stays out of logs: {err}"
    );
    let err = Store::open("mysql://somewhere/db")
        .await
        .err()
        .unwrap()
        .to_string();
    assert!(err.contains("neither sqlite"), "{err}");
}

/// PostgreSQL's `text` cannot hold U+0000, which JSON (and so any customer or
/// provider) may send: such a row was refused and set aside, losing a request's
/// record, its chat turns, the cache entry and the ticket (whose number the
/// customer was then not given).
#[tokio::test]
async fn a_nul_character_from_an_admin_is_refused_by_name_or_finds_nothing_never_a_postgres_error()
{
    let pg = Postgres::start().await;
    let url = pg.url.clone();
    let s = support::app::TestServer::start_with(move |c| c.database.url = url).await;
    use reqwest::Method;
    for (method, path, param) in [
        (Method::GET, "/api/audit/requests/chatcmpl-x%00y", "id"),
        (Method::POST, "/api/tickets/T-x%00/resolve", "id"),
        (Method::DELETE, "/api/cache/1%00", "id"),
        (Method::DELETE, "/api/clients/bot%00", "name"),
        (Method::GET, "/api/audit/requests?tenant=acme%00", "tenant"),
        (
            Method::GET,
            "/api/audit/export?format=csv&tenant=acme%00",
            "tenant",
        ),
    ] {
        let res = s.admin(method.clone(), path).send().await.unwrap();
        let error = support::app::api_error(res, 400).await;
        assert_eq!(error["param"], param, "{method} {path}: {error}");
        assert!(
            error["message"].as_str().unwrap().contains("NUL"),
            "{method} {path}: {error}"
        );
    }
    // The same lookups without the NUL reach the database and find nothing.
    let res = s
        .admin(Method::GET, "/api/audit/requests/chatcmpl-xy")
        .send()
        .await
        .unwrap();
    support::app::api_error(res, 404).await;
    let page = s.admin_json("/api/audit/requests?tenant=acme").await;
    assert_eq!(page["items"], serde_json::json!([]));

    // The board's own server functions take JSON, where a NUL needs no
    // escaping in the URL: it finds nothing rather than failing the query.
    let res = s
        .admin(Method::POST, "/api/board/audit-request")
        .json(&serde_json::json!({"id": "chatcmpl-x\u{0}y"}))
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), 200);
    assert_eq!(
        res.json::<serde_json::Value>().await.unwrap(),
        serde_json::Value::Null
    );
    let res = s
        .admin(Method::POST, "/api/board/audit-requests")
        .json(&serde_json::json!({"query": {"tenant": "acme\u{0}", "provider": "gpt\u{0}", "route": "x\u{0}"}}))
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), 200);
    let page: serde_json::Value = res.json().await.unwrap();
    assert_eq!(page["items"], serde_json::json!([]), "{page}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn text_with_nul_characters_is_stored_on_postgres_like_any_other() {
    let pg = Postgres::start().await;
    let url = pg.url.clone();
    let s = support::app::TestServer::start_with(move |c| {
        c.database.url = url;
        c.cache.enabled = true;
    })
    .await;
    let res = s
        .client
        .post(s.url("/v1/chat/completions"))
        .json(&serde_json::json!({"model": "chaosai", "messages": [
            {"role": "user", "content": "Where is\u{0} my order?"}
        ]}))
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), 200);
    let id = res.headers()["x-request-id"].to_str().unwrap().to_string();
    s.rows(
        &format!("SELECT COUNT(*) FROM requests WHERE id = '{id}'"),
        |n| n == 1,
    )
    .await;
    s.rows("SELECT COUNT(*) FROM cache_entries", |n| n == 1)
        .await;

    // During an outage, the chat page's turns and the ticket, quoting the question.
    for provider in ["claude", "gpt", "llama"] {
        s.inject(provider, serde_json::json!({"kind": "outage"}))
            .await;
    }
    let events = s
        .chat_events(
            None,
            serde_json::json!([{"role": "user", "content": "My blender\u{0} makes a strange noise"}]),
        )
        .await;
    let reply: String = events.iter().filter_map(|e| e["text"].as_str()).collect();
    assert!(reply.contains("ticket T-"), "{reply}");
    s.rows("SELECT COUNT(*) FROM messages", |n| n == 2).await;
    let question: String = chaosai::with_db!(s.server.store.db(), pool => sqlx::query_scalar(
        "SELECT question FROM tickets",
    )
    .fetch_one(pool)
    .await)
    .unwrap();
    assert_eq!(question, "My blender\u{FFFD} makes a strange noise");
    // The agent opens it on PostgreSQL too, the conversation as the customer wrote it.
    let at = reply.find("T-").unwrap();
    let opened = s
        .admin_json(&format!("/api/tickets/{}", &reply[at..at + 10]))
        .await;
    assert_eq!(
        opened["conversation"][0]["content"], "My blender\u{0} makes a strange noise",
        "{opened}"
    );
    let metrics = s.metrics_text().await;
    assert!(
        metrics.contains("chaosai_audit_rejected_total 0"),
        "no row set aside"
    );
}
