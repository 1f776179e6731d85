//! Audit writer throughput: records queued as fast as possible, written in
//! batched multi-row transactions to a real SQLite file. Prints rows per second.

use chaosai::shared::{AttemptOutcome, AttemptSummary, RequestStatus, Surface, Usage, UsageSource};
use chaosai::store::audit::{AuditRecord, AuditSettings, AuditWriter};
use chaosai::store::{RequestRecord, Store};
use std::time::{Duration, Instant};

fn record(i: usize) -> AuditRecord {
    let attempt = |provider: &str, outcome: AttemptOutcome| AttemptSummary {
        provider: provider.into(),
        outcome,
        status: Some(200),
        latency_ms: 12,
        breaker: None,
        usage: (outcome == AttemptOutcome::Ok).then_some(Usage {
            prompt_tokens: 40,
            completion_tokens: 70,
        }),
    };
    AuditRecord::Request(Box::new(RequestRecord {
        id: format!("bench-{i}"),
        created_at_ms: i as i64,
        surface: Surface::Api,
        stream: false,
        served_by: Some("gpt".into()),
        status: RequestStatus::Ok,
        latency_ms: 40,
        overhead_ms: 0.3,
        question_chars: 30,
        answer_chars: 300,
        attempts: vec![
            attempt("claude", AttemptOutcome::ServerError),
            attempt("gpt", AttemptOutcome::Ok),
        ],
        conversation_id: None,
        cache_similarity: None,
        tenant: "default".into(),
        usage: Usage {
            prompt_tokens: 40,
            completion_tokens: 70,
        },
        usage_source: Some(UsageSource::Provider),
    }))
}

#[tokio::main]
async fn main() {
    let requests: usize = std::env::var("CHAOSAI_BENCH_AUDIT_REQUESTS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(100_000);
    let dir = tempfile::tempdir().unwrap();
    let store = Store::open(&format!(
        "sqlite://{}",
        dir.path().join("audit.db").display()
    ))
    .await
    .unwrap();
    let settings = AuditSettings {
        queue: 10_000,
        batch: 512,
        flush_interval: Duration::from_millis(50),
    };
    let (writer, _task) = AuditWriter::start(store.db().clone(), settings);
    let started = Instant::now();
    let mut enqueue_worst = Duration::ZERO;
    // As a finishing request does: `write` waits (briefly) for room. `enqueue`,
    // the path of a request whose caller went away, cannot wait; fed 100,000
    // records in a tight loop it overflows the bounded queue and drops, by design.
    for i in 0..requests {
        let t = Instant::now();
        writer.write(record(i)).await;
        enqueue_worst = enqueue_worst.max(t.elapsed());
    }
    writer.flush().await;
    let elapsed = started.elapsed();
    let rows = requests * 3; // one request row and two attempt rows each
    let overflow = writer
        .counters()
        .overflow
        .load(std::sync::atomic::Ordering::Relaxed);
    println!("| audit writer | value |\n|---|---|");
    println!("| requests written | {requests} ({rows} rows) |");
    println!("| elapsed | {:.2} s |", elapsed.as_secs_f64());
    println!(
        "| throughput | {:.0} rows/s ({:.0} requests/s) |",
        rows as f64 / elapsed.as_secs_f64(),
        requests as f64 / elapsed.as_secs_f64()
    );
    println!(
        "| worst wait for room in the queue | {:.1} µs |",
        enqueue_worst.as_secs_f64() * 1e6
    );
    let dropped = writer
        .counters()
        .dropped
        .load(std::sync::atomic::Ordering::Relaxed);
    println!("| queue-full handoffs (kept, not dropped) | {overflow} |");
    println!("| dropped | {dropped} |");
    let stored: i64 =
        chaosai::with_db!(store.db(), pool => sqlx::query_scalar("SELECT COUNT(*) FROM attempts")
        .fetch_one(pool)
        .await)
        .unwrap();
    assert_eq!(stored as usize, requests * 2, "every attempt row written");
}
