//! The audit writer: the request path only enqueues; one task writes.
//!
//! Records go through one bounded channel to one writer task, which batches
//! them into multi-row INSERTs inside a transaction, flushed when a batch is
//! full or the flush interval has passed. One writer means SQLite never sees two
//! writers, so "database is locked" cannot happen; WAL lets readers run beside it.
//!
//! A full queue never fails a request and never drops a record: the overflow is
//! counted, logged, and the record is handed to a background task that waits
//! for room. On shutdown the queue is drained before the writer stops.

use super::{RequestRecord, StoreError};
use crate::shared::{ChatTurn, FaultChangedBy, FaultSpec, Transition};
use sqlx::{QueryBuilder, Sqlite, SqlitePool};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;
use tokio::sync::{mpsc, oneshot};
use tokio::task::JoinHandle;

/// SQLite allows 32 766 bound parameters per statement; rows per INSERT stay well below.
const ROWS_PER_STATEMENT: usize = 400;

/// One thing the audit keeps.
#[derive(Clone, Debug)]
pub enum AuditRecord {
    /// A finished request and its attempts.
    Request(Box<RequestRecord>),
    /// A breaker changed state.
    Transition(Transition),
    /// A fault was set or healed.
    Fault(FaultRecord),
    /// One turn of a chat-page conversation.
    Message(MessageRecord),
}

/// A fault set or healed.
#[derive(Clone, Debug)]
pub struct FaultRecord {
    /// Unix time in milliseconds.
    pub at_ms: i64,
    /// Provider name.
    pub provider: String,
    /// The fault set, or `None` when healed.
    pub spec: Option<FaultSpec>,
    /// Who changed it.
    pub by: FaultChangedBy,
}

/// One turn of a chat-page conversation.
#[derive(Clone, Debug)]
pub struct MessageRecord {
    /// Unix time in milliseconds.
    pub at_ms: i64,
    /// The browser's conversation id.
    pub conversation_id: String,
    /// The request this turn belongs to.
    pub request_id: String,
    /// The turn (text already redacted when configured).
    pub turn: ChatTurn,
}

enum Command {
    Record(AuditRecord),
    /// Delete requests older than `older_than_ms` and beyond the newest `max_rows`.
    Prune {
        older_than_ms: i64,
        max_rows: i64,
    },
    /// Write everything queued before this, then acknowledge.
    Flush(oneshot::Sender<()>),
}

/// Counters the writer exposes on `/metrics`.
#[derive(Default, Debug)]
pub struct AuditCounters {
    /// Records that found the queue full (handed to a waiting task, not dropped).
    pub overflow: AtomicU64,
    /// Records written.
    pub written: AtomicU64,
    /// Batches that failed to write and were retried.
    pub retries: AtomicU64,
    /// Overflowed records still waiting for room in the queue.
    pub waiting: AtomicU64,
}

/// Handle to the writer; cheap to clone.
#[derive(Clone)]
pub struct AuditWriter {
    /// The queue.
    tx: mpsc::Sender<Command>,
    /// Overflow and throughput counters.
    counters: Arc<AuditCounters>,
}

/// Settings of the writer.
#[derive(Clone, Copy, Debug)]
pub struct AuditSettings {
    /// Queue capacity in records.
    pub queue: usize,
    /// Most records per batch.
    pub batch: usize,
    /// Longest a record waits for its batch to fill.
    pub flush_interval: Duration,
}

impl AuditWriter {
    /// Starts the writer task on `pool`.
    pub fn start(pool: SqlitePool, settings: AuditSettings) -> (Self, JoinHandle<()>) {
        let (tx, rx) = mpsc::channel(settings.queue.max(1));
        let counters = Arc::new(AuditCounters::default());
        let task = tokio::spawn(run(pool, rx, settings, counters.clone()));
        (Self { tx, counters }, task)
    }

    /// The writer's counters.
    pub fn counters(&self) -> &Arc<AuditCounters> {
        &self.counters
    }

    /// Queues a record without waiting.
    pub fn enqueue(&self, record: AuditRecord) {
        match self.tx.try_send(Command::Record(record)) {
            Ok(()) => {}
            Err(mpsc::error::TrySendError::Full(command)) => {
                let overflow = self.counters.overflow.fetch_add(1, Ordering::Relaxed) + 1;
                tracing::warn!(
                    overflow,
                    "audit queue full: record handed to a waiting task"
                );
                let tx = self.tx.clone();
                let counters = self.counters.clone();
                counters.waiting.fetch_add(1, Ordering::AcqRel);
                tokio::spawn(async move {
                    if tx.send(command).await.is_err() {
                        tracing::error!(
                            "audit writer stopped before an overflowed record was written"
                        );
                    }
                    counters.waiting.fetch_sub(1, Ordering::AcqRel);
                });
            }
            Err(mpsc::error::TrySendError::Closed(_)) => {
                tracing::error!("audit writer stopped: record not written");
            }
        }
    }

    /// Asks the writer to apply retention between batches: it is the only writer,
    /// so pruning never contends with audit inserts.
    pub fn prune(&self, older_than_ms: i64, max_rows: i64) {
        let _ = self.tx.try_send(Command::Prune {
            older_than_ms,
            max_rows,
        });
    }

    /// Waits until everything queued so far is written, overflowed records included.
    pub async fn flush(&self) {
        // Overflowed records reach the queue late; the flush must come after them.
        while self.counters.waiting.load(Ordering::Acquire) > 0 {
            tokio::time::sleep(Duration::from_millis(1)).await;
        }
        let (ack, done) = oneshot::channel();
        if self.tx.send(Command::Flush(ack)).await.is_ok() {
            let _ = done.await;
        }
    }
}

async fn run(
    pool: SqlitePool,
    mut rx: mpsc::Receiver<Command>,
    settings: AuditSettings,
    counters: Arc<AuditCounters>,
) {
    let mut batch: Vec<AuditRecord> = Vec::with_capacity(settings.batch);
    let mut acks: Vec<oneshot::Sender<()>> = Vec::new();
    while let Some(first) = rx.recv().await {
        let deadline = tokio::time::Instant::now() + settings.flush_interval;
        let mut next = Some(first);
        loop {
            match next.take() {
                Some(Command::Record(record)) => batch.push(record),
                Some(Command::Flush(ack)) => {
                    acks.push(ack);
                    break;
                }
                Some(Command::Prune {
                    older_than_ms,
                    max_rows,
                }) => {
                    if !batch.is_empty() {
                        write_with_retry(&pool, &batch, &counters).await;
                        counters
                            .written
                            .fetch_add(batch.len() as u64, Ordering::Relaxed);
                        batch.clear();
                    }
                    prune(&pool, older_than_ms, max_rows).await;
                    break;
                }
                None => {}
            }
            if batch.len() >= settings.batch {
                break;
            }
            match tokio::time::timeout_at(deadline, rx.recv()).await {
                Ok(Some(command)) => next = Some(command),
                Ok(None) | Err(_) => break,
            }
        }
        if !batch.is_empty() {
            write_with_retry(&pool, &batch, &counters).await;
            counters
                .written
                .fetch_add(batch.len() as u64, Ordering::Relaxed);
            batch.clear();
        }
        for ack in acks.drain(..) {
            let _ = ack.send(());
        }
    }
}

/// Writes a batch, retrying with backoff: a record is only given up on after
/// the database failed for a long while, and that is logged loudly.
async fn write_with_retry(pool: &SqlitePool, batch: &[AuditRecord], counters: &AuditCounters) {
    let mut delay = Duration::from_millis(20);
    for attempt in 1..=8 {
        match write_batch(pool, batch).await {
            Ok(()) => return,
            Err(err) => {
                counters.retries.fetch_add(1, Ordering::Relaxed);
                tracing::warn!(attempt, error = %err, rows = batch.len(), "audit batch failed; retrying");
                tokio::time::sleep(delay).await;
                delay = (delay * 2).min(Duration::from_secs(2));
            }
        }
    }
    tracing::error!(
        rows = batch.len(),
        "audit batch could not be written after 8 attempts"
    );
}

/// Rows deleted per statement: small, so a prune never holds the write lock long.
const PRUNE_BATCH: i64 = 500;

async fn prune(pool: &SqlitePool, older_than_ms: i64, max_rows: i64) {
    let result: Result<u64, sqlx::Error> = async {
        let mut deleted = 0;
        loop {
            let total: i64 = sqlx::query_scalar("SELECT COUNT(*) FROM requests").fetch_one(pool).await?;
            let over = (total - max_rows).max(0);
            // Oldest first: everything past the age limit, then whatever exceeds the row cap.
            let done = sqlx::query(
                "DELETE FROM requests WHERE rowid IN (SELECT rowid FROM requests \
                 WHERE created_at_ms < ? OR rowid IN (SELECT rowid FROM requests ORDER BY rowid LIMIT ?) \
                 ORDER BY rowid LIMIT ?)",
            )
            .bind(older_than_ms)
            .bind(over.min(PRUNE_BATCH))
            .bind(PRUNE_BATCH)
            .execute(pool)
            .await?
            .rows_affected();
            deleted += done;
            if done < PRUNE_BATCH as u64 {
                return Ok(deleted);
            }
            tokio::task::yield_now().await;
        }
    }
    .await;
    match result {
        Ok(0) => {}
        Ok(deleted) => tracing::info!(deleted, "audit retention pruned old requests"),
        Err(err) => tracing::warn!(error = %err, "audit retention failed"),
    }
}

/// Writes one batch in one transaction with multi-row INSERTs per table.
async fn write_batch(pool: &SqlitePool, batch: &[AuditRecord]) -> Result<(), StoreError> {
    // One pass sorts records into rows per table, so each INSERT below binds its
    // own typed rows instead of matching the enum again.
    let mut requests = Vec::new();
    let mut transitions = Vec::new();
    let mut faults = Vec::new();
    let mut messages = Vec::new();
    for record in batch {
        match record {
            AuditRecord::Request(r) => requests.push(r.as_ref()),
            AuditRecord::Transition(t) => transitions.push(t),
            AuditRecord::Fault(f) => faults.push(f),
            AuditRecord::Message(m) => messages.push(m),
        }
    }
    let mut tx = pool.begin().await?;
    for chunk in requests.chunks(ROWS_PER_STATEMENT / 8) {
        let mut q: QueryBuilder<Sqlite> = QueryBuilder::new(
            "INSERT OR IGNORE INTO requests (id, created_at_ms, surface, stream, served_by, status, \
             latency_ms, overhead_ms, question_chars, answer_chars, conversation_id, cache_similarity) ",
        );
        q.push_values(chunk, |mut row, r| {
            row.push_bind(&r.id)
                .push_bind(r.created_at_ms)
                .push_bind(r.surface)
                .push_bind(r.stream)
                .push_bind(&r.served_by)
                .push_bind(r.status)
                .push_bind(r.latency_ms as i64)
                .push_bind(r.overhead_ms)
                .push_bind(r.question_chars as i64)
                .push_bind(r.answer_chars as i64)
                .push_bind(&r.conversation_id)
                .push_bind(r.cache_similarity);
        });
        q.build().execute(&mut *tx).await?;
    }
    let attempts: Vec<_> = requests
        .iter()
        .flat_map(|r| {
            r.attempts
                .iter()
                .enumerate()
                .map(move |(seq, a)| (r.id.as_str(), seq, a))
        })
        .collect();
    for chunk in attempts.chunks(ROWS_PER_STATEMENT / 7) {
        let mut q: QueryBuilder<Sqlite> = QueryBuilder::new(
            "INSERT OR IGNORE INTO attempts (request_id, seq, provider, outcome, http_status, latency_ms, breaker_before) ",
        );
        q.push_values(chunk, |mut row, (id, seq, a)| {
            row.push_bind(*id)
                .push_bind(*seq as i64)
                .push_bind(&a.provider)
                .push_bind(a.outcome)
                .push_bind(a.status.map(i64::from))
                .push_bind(a.latency_ms as i64)
                .push_bind(a.breaker);
        });
        q.build().execute(&mut *tx).await?;
    }
    for chunk in transitions.chunks(ROWS_PER_STATEMENT / 5) {
        let mut q: QueryBuilder<Sqlite> = QueryBuilder::new(
            "INSERT INTO breaker_transitions (at_ms, provider, from_state, to_state, reason) ",
        );
        q.push_values(chunk, |mut row, t| {
            row.push_bind(t.at_ms)
                .push_bind(&t.provider)
                .push_bind(t.from)
                .push_bind(t.to)
                .push_bind(&t.reason);
        });
        q.build().execute(&mut *tx).await?;
    }
    for chunk in faults.chunks(ROWS_PER_STATEMENT / 6) {
        let mut q: QueryBuilder<Sqlite> = QueryBuilder::new(
            "INSERT INTO fault_changes (at_ms, provider, action, kind, spec_json, changed_by) ",
        );
        q.push_values(chunk, |mut row, f| {
            row.push_bind(f.at_ms)
                .push_bind(&f.provider)
                .push_bind(if f.spec.is_some() { "set" } else { "healed" })
                .push_bind(f.spec.as_ref().map(|s| s.kind.name()))
                .push_bind(f.spec.as_ref().and_then(|s| serde_json::to_string(s).ok()))
                .push_bind(f.by);
        });
        q.build().execute(&mut *tx).await?;
    }
    for chunk in messages.chunks(ROWS_PER_STATEMENT / 5) {
        let mut q: QueryBuilder<Sqlite> = QueryBuilder::new(
            "INSERT INTO messages (at_ms, conversation_id, request_id, role, content) ",
        );
        q.push_values(chunk, |mut row, m| {
            row.push_bind(m.at_ms)
                .push_bind(&m.conversation_id)
                .push_bind(&m.request_id)
                .push_bind(m.turn.role)
                .push_bind(&m.turn.content);
        });
        q.build().execute(&mut *tx).await?;
    }
    tx.commit().await?;
    Ok(())
}
