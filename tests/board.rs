//! The board and the audit page as the server renders them, before any WASM
//! runs: every provider with its state, the last minutes' history, the request
//! list, a request opened; and the audit API behind the page (incident
//! timeline, costs, tickets, export), against the whole server.

mod support;

use serde_json::{json, Value};
use support::app::TestServer;

/// The HTML without the comment markers hydration places between text nodes,
/// so text reads as a browser shows it.
fn visible(html: &str) -> String {
    let mut out = String::with_capacity(html.len());
    let mut rest = html;
    while let Some(start) = rest.find("<!") {
        out.push_str(&rest[..start]);
        let after = &rest[start..];
        let end = if after.starts_with("<!--") {
            after.find("-->").map(|e| e + 3)
        } else if after.starts_with("<!DOCTYPE") || after.starts_with("<!doctype") {
            None
        } else {
            after.find('>').map(|e| e + 1)
        };
        match end {
            Some(end) => rest = &after[end..],
            None => {
                out.push_str("<!");
                rest = &after[2..];
            }
        }
    }
    out.push_str(rest);
    out
}

/// The page at `path` as a browser holding the admin cookie gets it.
async fn page(s: &TestServer, path: &str) -> String {
    let res = s
        .client
        .get(s.url(path))
        .header("cookie", "chaosai_admin=test-admin-token")
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), 200, "{path}");
    visible(&res.text().await.unwrap())
}

/// The HTML of one provider card.
fn card<'a>(html: &'a str, provider: &str) -> &'a str {
    let start = html
        .find(&format!("data-provider=\"{provider}\""))
        .unwrap_or_else(|| panic!("no card for {provider}"));
    let end = html[start..].find("</article>").unwrap();
    &html[start..start + end]
}

async fn outage_then_answers(s: &TestServer) -> Vec<String> {
    s.inject("claude", json!({"kind": "outage"})).await;
    let mut ids = Vec::new();
    for n in 0..4 {
        let res = s
            .chat("chaosai", &format!("Where is my parcel {n}?"), false)
            .await;
        assert_eq!(res.status(), 200);
        ids.push(res.headers()["x-request-id"].to_str().unwrap().to_string());
    }
    s.request_rows(4).await;
    s.rows("SELECT COUNT(*) FROM breaker_transitions", |n| n >= 1)
        .await;
    ids
}

#[tokio::test]
async fn the_board_renders_every_provider_and_its_state_without_wasm() {
    let s = TestServer::start().await;
    let html = page(&s, "/chaos").await;
    for provider in ["claude", "gpt", "llama"] {
        let card = card(&html, provider);
        assert!(card.contains("data-state=\"closed\""), "{provider}: {card}");
        assert!(
            card.contains("CLOSED"),
            "{provider}: the state is a word too"
        );
        assert!(
            card.contains("Errors (1 min)"),
            "{provider}: health is rendered"
        );
    }
    assert!(html.contains("The last hour"));

    // Mid-outage, a reload shows the outage: the OPEN breaker and why, the
    // fault, the answers since, the transition.
    outage_then_answers(&s).await;
    let html = page(&s, "/chaos").await;
    let claude = card(&html, "claude");
    assert!(
        claude.contains("data-state=\"open\"") && claude.contains("OPEN"),
        "{claude}"
    );
    assert!(
        claude.contains("consecutive failures"),
        "why it is OPEN: {claude}"
    );
    assert!(claude.contains("Outage 503"), "its fault: {claude}");
    assert!(claude.contains("100% of 3"), "its last minute: {claude}");
    let gpt = card(&html, "gpt");
    assert!(gpt.contains("0% of 4"), "{gpt}");
    assert!(html.contains("CLOSED → OPEN"), "the transition timeline");
    assert!(
        html.contains(r#"<dd class="answered">4</dd>"#),
        "the counters count the window's answers"
    );
    assert!(
        html.contains("fault injected (outage)"),
        "the incident timeline"
    );

    // Without the admin cookie: the login form, and nothing of the above.
    let anonymous = s.client.get(s.url("/chaos")).send().await.unwrap();
    let anonymous = anonymous.text().await.unwrap();
    assert!(anonymous.contains("Admin token") && !anonymous.contains("data-provider"));
}

#[tokio::test]
async fn the_audit_page_filters_pages_and_opens_a_request_on_the_server() {
    let s = TestServer::start().await;
    let ids = outage_then_answers(&s).await;
    let html = page(&s, "/audit").await;
    for id in &ids {
        assert!(
            html.contains(&format!("data-id=\"{id}\"")),
            "every request listed"
        );
    }
    assert!(
        html.contains("claude server error → gpt ok")
            || html.contains("claude skipped open → gpt ok")
    );
    // Filtered to requests that attempted claude with its breaker closed (the first three).
    let filtered = page(
        &s,
        "/audit?provider=claude&status=ok&route=gpt&last_minutes=60",
    )
    .await;
    assert_eq!(
        filtered.matches("<tr data-id=").count(),
        4,
        "claude is attempted (or skipped) every time"
    );
    let none = page(&s, "/audit?route=cache").await;
    assert_eq!(none.matches("<tr data-id=").count(), 0);
    // One request opened: its attempts and the breaker state each met.
    let opened = page(&s, &format!("/audit?request={}", ids[0])).await;
    assert!(opened.contains("The request opened"));
    assert!(
        opened.contains(r#"<tr data-outcome="server_error">"#),
        "{opened}"
    );
    assert!(opened.contains("CLOSED"), "the breaker before the attempt");
    // The cost of the range, by provider and by tenant.
    assert!(opened.contains(r#"data-key="gpt""#) && opened.contains(r#"data-key="default""#));
}

#[tokio::test]
async fn the_incident_api_costs_tickets_and_export_answer_a_support_lead() {
    let s = TestServer::start().await;
    outage_then_answers(&s).await;
    s.heal_all().await;
    // Every provider down: the last resort opens tickets.
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
    s.request_rows(5).await;
    s.rows("SELECT COUNT(*) FROM fault_changes", |n| n >= 5)
        .await;

    let get = |path: String| {
        let s = &s;
        async move {
            let res = s.admin(reqwest::Method::GET, &path).send().await.unwrap();
            assert_eq!(res.status(), 200, "{path}");
            res
        }
    };
    let incident: Value = get("/api/audit/incident".into())
        .await
        .json()
        .await
        .unwrap();
    let routes: Vec<String> = incident["buckets"]
        .as_array()
        .unwrap()
        .iter()
        .flat_map(|b| {
            b["by_route"]
                .as_object()
                .unwrap()
                .keys()
                .cloned()
                .collect::<Vec<_>>()
        })
        .collect();
    assert!(routes.contains(&"gpt".to_string()) && routes.contains(&"last-resort".to_string()));
    assert!(incident["transitions"]
        .as_array()
        .unwrap()
        .iter()
        .any(|t| t["to"] == "open"));
    let faults = incident["faults"].as_array().unwrap();
    assert!(faults.iter().any(|f| f["action"] == "healed"), "{faults:?}");

    let costs: Value = get("/api/audit/costs".into()).await.json().await.unwrap();
    let gpt = costs["by_provider"]
        .as_array()
        .unwrap()
        .iter()
        .find(|r| r["key"] == "gpt")
        .unwrap()
        .clone();
    let expected = (gpt["prompt_tokens"].as_f64().unwrap() * 0.15
        + gpt["completion_tokens"].as_f64().unwrap() * 0.60)
        / 1e6;
    assert!(
        (gpt["cost_usd"].as_f64().unwrap() - expected).abs() < 1e-12,
        "{gpt}"
    );
    assert_eq!(costs["by_tenant"][0]["key"], "default");

    let resolve = |id: String| {
        let s = &s;
        async move {
            s.admin(reqwest::Method::POST, &format!("/api/tickets/{id}/resolve"))
                .send()
                .await
                .unwrap()
                .status()
        }
    };
    assert_eq!(resolve(ticket.clone()).await, 204);
    assert_eq!(
        resolve(ticket.clone()).await,
        404,
        "only an open ticket resolves"
    );
    let tickets: Value = get("/api/tickets".into()).await.json().await.unwrap();
    assert_eq!(tickets["items"][0]["status"], "resolved");

    let csv = get("/api/audit/export?format=csv&route=gpt".into()).await;
    assert!(csv.headers()["content-type"]
        .to_str()
        .unwrap()
        .starts_with("text/csv"));
    let csv = csv.text().await.unwrap();
    let lines: Vec<&str> = csv.lines().collect();
    assert!(lines[0].starts_with("id,created_at_ms,surface"));
    assert_eq!(
        lines.len(),
        1 + 4,
        "the header and the four answers gpt served:\n{csv}"
    );
    assert!(
        lines[1].contains(",gpt,ok,") && lines[1].contains("claude:"),
        "{}",
        lines[1]
    );
    let jsonl = get("/api/audit/export?format=jsonl".into())
        .await
        .text()
        .await
        .unwrap();
    let rows: Vec<Value> = jsonl
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    assert_eq!(rows.len(), 5);
    assert!(rows.iter().all(|r| r["attempts"].is_array()));
    let bad = s
        .admin(reqwest::Method::GET, "/api/audit/export?format=xls")
        .send()
        .await
        .unwrap();
    assert_eq!(bad.status(), 400);
    let anonymous = s
        .client
        .get(s.url("/api/audit/export"))
        .send()
        .await
        .unwrap();
    assert_eq!(anonymous.status(), 401, "admin only");
}

#[tokio::test]
async fn an_export_streams_every_page_of_a_large_filter() {
    let s = TestServer::start().await;
    let pool = s.server.store.db().as_sqlite().expect("sqlite");
    // More rows than three export pages, written straight into the store; dated
    // now, so the retention task does not prune them mid-export.
    let now_ms = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_millis() as i64;
    let mut tx = pool.begin().await.unwrap();
    for i in 0..1_234 {
        sqlx::query(
            "INSERT INTO requests (id, created_at_ms, surface, stream, served_by, status, latency_ms, \
             overhead_ms, question_chars, answer_chars, tenant) VALUES (?, ?, 'api', 0, 'gpt', 'ok', 5, 0.1, 3, 3, ?)",
        )
        .bind(format!("bulk-{i:05}"))
        .bind(now_ms - 60_000 + i as i64)
        .bind(if i % 2 == 0 { "even" } else { "odd" })
        .execute(&mut *tx)
        .await
        .unwrap();
    }
    tx.commit().await.unwrap();
    let csv = s
        .admin(
            reqwest::Method::GET,
            "/api/audit/export?format=csv&tenant=odd",
        )
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    let ids: Vec<&str> = csv
        .lines()
        .skip(1)
        .map(|l| l.split(',').next().unwrap())
        .collect();
    assert_eq!(ids.len(), 617);
    assert_eq!(ids[0], "bulk-01233", "newest first");
    assert_eq!(*ids.last().unwrap(), "bulk-00001");
    let mut sorted = ids.clone();
    sorted.sort();
    sorted.dedup();
    assert_eq!(sorted.len(), 617, "no row twice across pages");
}
