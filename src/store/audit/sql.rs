//! The audit's SQL: one batch of records in one transaction, multi-row INSERTs
//! per table, and retention over every table in small deletes.

use super::AuditRecord;
use crate::store::Db;
use sqlx::QueryBuilder;

/// SQLite allows 32 766 bound parameters per statement and PostgreSQL 65 535;
/// rows per INSERT stay well below both.
const ROWS_PER_STATEMENT: usize = 400;

/// A count as SQLite stores it; a provider reporting more than `i64::MAX` tokens
/// is not worth an error.
fn saturating_i64(n: u64) -> i64 {
    i64::try_from(n).unwrap_or(i64::MAX)
}

/// Rows deleted per statement: small, so a prune never holds the write lock long.
const PRUNE_BATCH: i64 = 500;

/// Whether a write failed because of the rows themselves (a constraint, a value
/// the database refuses), as opposed to the database being unavailable or busy:
/// only such rows are set aside; for anything else the writer waits and retries.
pub(super) fn is_bad_row(err: &sqlx::Error) -> bool {
    let sqlx::Error::Database(db) = err else {
        return matches!(
            err,
            sqlx::Error::Encode(_) | sqlx::Error::TypeNotFound { .. }
        );
    };
    let code = db.code().unwrap_or_default();
    if let Ok(sqlite) = code.parse::<u32>() {
        // SQLite primary codes (the low byte of an extended code): TOOBIG,
        // CONSTRAINT, MISMATCH, RANGE.
        return matches!(sqlite & 0xff, 18 | 19 | 20 | 25);
    }
    // PostgreSQL SQLSTATE classes: data exception, integrity constraint violation.
    code.starts_with("22") || code.starts_with("23")
}

/// The tables retention keeps in check, with the column that dates their rows.
const DATED_TABLES: &[(&str, &str)] = &[
    ("requests", "created_at_ms"),
    ("messages", "at_ms"),
    ("tickets", "created_at_ms"),
    ("breaker_transitions", "at_ms"),
    ("fault_changes", "at_ms"),
];

/// Deletes, in every audited table, rows older than `older_than_ms` and the
/// oldest beyond `max_rows`, a few hundred at a time. Attempts go with their
/// request (a foreign key with `ON DELETE CASCADE`). Returns rows deleted.
pub(super) async fn prune(db: &Db, older_than_ms: i64, max_rows: i64) -> Result<u64, sqlx::Error> {
    let mut deleted = 0;
    for (table, dated) in DATED_TABLES {
        loop {
            let total: i64 = crate::with_db!(db, pool => sqlx::query_scalar(&format!("SELECT COUNT(*) FROM {table}"))
                .fetch_one(pool)
                .await)?;
            let over = (total - max_rows).max(0);
            // Oldest first: everything past the age limit, then whatever exceeds the cap.
            let done = crate::with_db!(db, pool => sqlx::query(&format!(
                "DELETE FROM {table} WHERE rowid IN (SELECT rowid FROM {table} \
                 WHERE {dated} < $1 OR rowid IN (SELECT rowid FROM {table} ORDER BY rowid LIMIT $2) \
                 ORDER BY rowid LIMIT $3)"
            ))
            .bind(older_than_ms)
            .bind(over.min(PRUNE_BATCH))
            .bind(PRUNE_BATCH)
            .execute(pool)
            .await
            .map(|done| done.rows_affected()))?;
            deleted += done;
            if done < PRUNE_BATCH as u64 {
                break;
            }
            tokio::task::yield_now().await;
        }
    }
    Ok(deleted)
}

/// Writes records in one transaction with multi-row INSERTs per table.
pub(super) async fn write_batch(db: &Db, batch: &[&AuditRecord]) -> Result<(), sqlx::Error> {
    // One pass sorts records into rows per table, so each INSERT below binds its
    // own typed rows instead of matching the enum again.
    let mut requests = Vec::new();
    let mut transitions = Vec::new();
    let mut faults = Vec::new();
    let mut messages = Vec::new();
    let mut tickets = Vec::new();
    for record in batch {
        match record {
            AuditRecord::Request(r) => requests.push(r.as_ref()),
            AuditRecord::Transition(t) => transitions.push(t),
            AuditRecord::Fault(f) => faults.push(f),
            AuditRecord::Message(m) => messages.push(m),
            AuditRecord::Ticket(t) => tickets.push(t),
        }
    }
    crate::with_db!(db, pool => {
    let mut tx = pool.begin().await?;
    for chunk in requests.chunks(ROWS_PER_STATEMENT / 16) {
        let mut q: QueryBuilder<_> = QueryBuilder::new(
            "INSERT INTO requests (id, created_at_ms, surface, stream, served_by, status, \
             latency_ms, overhead_ms, question_chars, answer_chars, conversation_id, cache_similarity, \
             tenant, prompt_tokens, completion_tokens, usage_source) ",
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
                .push_bind(r.cache_similarity)
                .push_bind(&r.tenant)
                .push_bind(saturating_i64(r.usage.prompt_tokens))
                .push_bind(saturating_i64(r.usage.completion_tokens))
                .push_bind(r.usage_source);
        });
        // A request written again after a retried batch is already there.
        q.push(" ON CONFLICT DO NOTHING");
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
    for chunk in attempts.chunks(ROWS_PER_STATEMENT / 9) {
        let mut q: QueryBuilder<_> = QueryBuilder::new(
            "INSERT INTO attempts (request_id, seq, provider, outcome, http_status, latency_ms, \
             breaker_before, prompt_tokens, completion_tokens) ",
        );
        q.push_values(chunk, |mut row, (id, seq, a)| {
            row.push_bind(*id)
                .push_bind(*seq as i64)
                .push_bind(&a.provider)
                .push_bind(a.outcome)
                .push_bind(a.status.map(i64::from))
                .push_bind(a.latency_ms as i64)
                .push_bind(a.breaker)
                .push_bind(a.usage.map(|u| saturating_i64(u.prompt_tokens)))
                .push_bind(a.usage.map(|u| saturating_i64(u.completion_tokens)));
        });
        // A request written again after a retried batch is already there.
        q.push(" ON CONFLICT DO NOTHING");
        q.build().execute(&mut *tx).await?;
    }
    for chunk in transitions.chunks(ROWS_PER_STATEMENT / 5) {
        let mut q: QueryBuilder<_> = QueryBuilder::new(
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
        let mut q: QueryBuilder<_> = QueryBuilder::new(
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
        let mut q: QueryBuilder<_> = QueryBuilder::new(
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
    for chunk in tickets.chunks(ROWS_PER_STATEMENT / 6) {
        let mut q: QueryBuilder<_> = QueryBuilder::new(
            "INSERT INTO tickets (id, created_at_ms, request_id, question, conversation_json, failure_json) ",
        );
        q.push_values(chunk, |mut row, t| {
            row.push_bind(&t.id)
                .push_bind(t.created_at_ms)
                .push_bind(&t.request_id)
                .push_bind(&t.question)
                .push_bind(&t.conversation_json)
                .push_bind(&t.failure_json);
        });
        q.build().execute(&mut *tx).await?;
    }
    tx.commit().await
    })
}
