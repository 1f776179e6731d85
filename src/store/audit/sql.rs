//! The audit's SQL: one batch of records in one transaction, multi-row INSERTs
//! of fixed sizes per table, and retention over every table in small deletes.

use super::AuditRecord;
use crate::store::{nul_free, Db, Engine};
use std::fmt::Write;
use std::sync::OnceLock;

/// Rows per INSERT. A batch goes out in statements of these sizes, largest
/// first, so each table has three SQL texts in all and every one of them stays
/// prepared in each connection's statement cache: statements sized to each
/// batch had SQLite parse and plan a new text almost every batch, which cost
/// as much as the inserts. 32 rows of the widest table bind 512 parameters,
/// far below both engines' limits.
const STATEMENT_ROWS: [usize; 3] = [32, 8, 1];

/// `rows` cut into statements of [`STATEMENT_ROWS`] sizes.
fn statements<T>(mut rows: &[T]) -> impl Iterator<Item = &[T]> {
    std::iter::from_fn(move || {
        let size = STATEMENT_ROWS.into_iter().find(|&n| n <= rows.len())?;
        let (head, tail) = rows.split_at(size);
        rows = tail;
        Some(head)
    })
}

/// One table's INSERT, its text built once per engine and statement size.
struct Insert {
    /// `table (column, …)`.
    into: &'static str,
    columns: usize,
    /// What follows the values (a conflict clause).
    suffix: &'static str,
    /// SQLite's texts, then PostgreSQL's.
    texts: OnceLock<[[String; STATEMENT_ROWS.len()]; 2]>,
}

impl Insert {
    const fn new(into: &'static str, columns: usize, suffix: &'static str) -> Self {
        Self {
            into,
            columns,
            suffix,
            texts: OnceLock::new(),
        }
    }

    /// The statement for `rows` rows (one of [`STATEMENT_ROWS`]) on `engine`.
    /// PostgreSQL numbers its placeholders (`$1…`, row after row). SQLite gets
    /// anonymous `?`s, bound in order: for numbered ones sqlx asks SQLite for
    /// every parameter's name, a walk of the statement's whole parameter list,
    /// which made binding a 32-row INSERT quadratic and dearer than running it.
    fn sql(&self, engine: Engine, rows: usize) -> &str {
        let texts = self.texts.get_or_init(|| {
            [Engine::Sqlite, Engine::Postgres].map(|engine| {
                STATEMENT_ROWS.map(|n| {
                    let mut sql = format!("INSERT INTO {} VALUES ", self.into);
                    for row in 0..n {
                        sql.push_str(if row == 0 { "(" } else { ", (" });
                        for column in 0..self.columns {
                            if column > 0 {
                                sql.push_str(", ");
                            }
                            match engine {
                                Engine::Sqlite => sql.push('?'),
                                Engine::Postgres => {
                                    let _ = write!(sql, "${}", row * self.columns + column + 1);
                                }
                            }
                        }
                        sql.push(')');
                    }
                    sql.push_str(self.suffix);
                    sql
                })
            })
        });
        let at = STATEMENT_ROWS
            .iter()
            .position(|&n| n == rows)
            .expect("statements() cuts only these sizes");
        let engine = match engine {
            Engine::Sqlite => 0,
            Engine::Postgres => 1,
        };
        &texts[engine][at]
    }
}

// A request (and its attempts) written again after a retried batch is already there.
static REQUESTS: Insert = Insert::new(
    "requests (id, created_at_ms, surface, stream, served_by, status, latency_ms, overhead_ms, \
     question_chars, answer_chars, conversation_id, cache_similarity, tenant, prompt_tokens, \
     completion_tokens, usage_source)",
    16,
    " ON CONFLICT DO NOTHING",
);
static ATTEMPTS: Insert = Insert::new(
    "attempts (request_id, seq, provider, outcome, http_status, latency_ms, breaker_before, \
     prompt_tokens, completion_tokens)",
    9,
    " ON CONFLICT DO NOTHING",
);
static TRANSITIONS: Insert = Insert::new(
    "breaker_transitions (at_ms, provider, from_state, to_state, reason)",
    5,
    "",
);
static FAULTS: Insert = Insert::new(
    "fault_changes (at_ms, provider, action, kind, spec_json, changed_by)",
    6,
    "",
);
static MESSAGES: Insert = Insert::new(
    "messages (at_ms, conversation_id, request_id, role, content)",
    5,
    "",
);
static TICKETS: Insert = Insert::new(
    "tickets (id, created_at_ms, request_id, question, conversation_json, failure_json, \
     conversation_id)",
    7,
    "",
);

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
    ("responses", "created_at_ms"),
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

/// Kept responses deleted at a time when the table is over its size: each
/// may be megabytes.
const PRUNE_RESPONSES: i64 = 20;

/// Deletes the oldest kept responses until the rest hold at most `max_bytes`.
/// Returns rows deleted.
pub(super) async fn prune_responses(db: &Db, max_bytes: i64) -> Result<u64, sqlx::Error> {
    let mut deleted = 0;
    loop {
        let total: i64 = crate::with_db!(db, pool => sqlx::query_scalar(
            "SELECT CAST(COALESCE(SUM(bytes), 0) AS BIGINT) FROM responses",
        )
        .fetch_one(pool)
        .await)?;
        if total <= max_bytes {
            return Ok(deleted);
        }
        // The oldest rows that must go for the rest to fit, and no more.
        let done = crate::with_db!(db, pool => sqlx::query(
            "DELETE FROM responses WHERE rowid IN (SELECT rowid FROM \
             (SELECT rowid, SUM(bytes) OVER (ORDER BY rowid) - bytes AS before FROM responses) AS r \
             WHERE before < $1 ORDER BY rowid LIMIT $2)",
        )
        .bind(total - max_bytes)
        .bind(PRUNE_RESPONSES)
        .execute(pool)
        .await
        .map(|done| done.rows_affected()))?;
        deleted += done;
        if done == 0 {
            return Ok(deleted);
        }
        tokio::task::yield_now().await;
    }
}

/// Writes records in one transaction with multi-row INSERTs per table, in
/// statements of fixed sizes.
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
    let engine = db.engine();
    crate::with_db!(db, pool => {
    let mut tx = pool.begin().await?;
    for chunk in statements(&requests) {
        let mut q = sqlx::query(REQUESTS.sql(engine, chunk.len()));
        for r in chunk {
            q = q
                .bind(&r.id)
                .bind(r.created_at_ms)
                .bind(r.surface)
                .bind(r.stream)
                .bind(&r.served_by)
                .bind(r.status)
                .bind(r.latency_ms as i64)
                .bind(r.overhead_ms)
                .bind(r.question_chars as i64)
                .bind(r.answer_chars as i64)
                .bind(r.conversation_id.as_deref().map(nul_free))
                .bind(r.cache_similarity)
                .bind(nul_free(&r.tenant))
                .bind(saturating_i64(r.usage.prompt_tokens))
                .bind(saturating_i64(r.usage.completion_tokens))
                .bind(r.usage_source);
        }
        q.execute(&mut *tx).await?;
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
    for chunk in statements(&attempts) {
        let mut q = sqlx::query(ATTEMPTS.sql(engine, chunk.len()));
        for (id, seq, a) in chunk {
            q = q
                .bind(*id)
                .bind(*seq as i64)
                .bind(&a.provider)
                .bind(a.outcome)
                .bind(a.status.map(i64::from))
                .bind(a.latency_ms as i64)
                .bind(a.breaker)
                .bind(a.usage.map(|u| saturating_i64(u.prompt_tokens)))
                .bind(a.usage.map(|u| saturating_i64(u.completion_tokens)));
        }
        q.execute(&mut *tx).await?;
    }
    for chunk in statements(&transitions) {
        let mut q = sqlx::query(TRANSITIONS.sql(engine, chunk.len()));
        for t in chunk {
            q = q
                .bind(t.at_ms)
                .bind(&t.provider)
                .bind(t.from)
                .bind(t.to)
                .bind(nul_free(&t.reason));
        }
        q.execute(&mut *tx).await?;
    }
    for chunk in statements(&faults) {
        let mut q = sqlx::query(FAULTS.sql(engine, chunk.len()));
        for f in chunk {
            q = q
                .bind(f.at_ms)
                .bind(&f.provider)
                .bind(if f.spec.is_some() { "set" } else { "healed" })
                .bind(f.spec.as_ref().map(|s| s.kind.name()))
                .bind(f.spec.as_ref().and_then(|s| serde_json::to_string(s).ok()))
                .bind(f.by);
        }
        q.execute(&mut *tx).await?;
    }
    for chunk in statements(&messages) {
        let mut q = sqlx::query(MESSAGES.sql(engine, chunk.len()));
        for m in chunk {
            q = q
                .bind(m.at_ms)
                .bind(nul_free(&m.conversation_id))
                .bind(&m.request_id)
                .bind(m.turn.role)
                .bind(nul_free(&m.turn.content));
        }
        q.execute(&mut *tx).await?;
    }
    for chunk in statements(&tickets) {
        let mut q = sqlx::query(TICKETS.sql(engine, chunk.len()));
        for t in chunk {
            q = q
                .bind(&t.id)
                .bind(t.created_at_ms)
                .bind(&t.request_id)
                .bind(nul_free(&t.question))
                .bind(&t.conversation_json)
                .bind(&t.failure_json)
                .bind(t.conversation_id.as_deref().map(nul_free));
        }
        q.execute(&mut *tx).await?;
    }
    tx.commit().await
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_batch_is_cut_into_the_three_statement_sizes_and_loses_no_row() {
        for n in 0..200usize {
            let rows: Vec<usize> = (0..n).collect();
            let cut: Vec<&[usize]> = statements(&rows).collect();
            assert!(cut.iter().all(|c| STATEMENT_ROWS.contains(&c.len())));
            assert_eq!(cut.concat(), rows, "{n} rows in order, none lost");
        }
        let sizes: Vec<usize> = statements(&[0u8; 45]).map(<[u8]>::len).collect();
        assert_eq!(sizes, [32, 8, 1, 1, 1, 1, 1]);
    }

    #[test]
    fn postgres_numbers_placeholders_row_after_row_and_sqlite_binds_in_order() {
        let insert = Insert::new("t (a, b)", 2, " ON CONFLICT DO NOTHING");
        assert_eq!(
            insert.sql(Engine::Postgres, 1),
            "INSERT INTO t (a, b) VALUES ($1, $2) ON CONFLICT DO NOTHING"
        );
        let eight = insert.sql(Engine::Postgres, 8);
        assert!(eight.starts_with("INSERT INTO t (a, b) VALUES ($1, $2), ($3, $4), "));
        assert!(eight.ends_with("($15, $16) ON CONFLICT DO NOTHING"));
        assert_eq!(insert.sql(Engine::Postgres, 32).matches('$').count(), 64);
        assert_eq!(
            insert.sql(Engine::Sqlite, 8),
            format!(
                "INSERT INTO t (a, b) VALUES (?, ?){} ON CONFLICT DO NOTHING",
                ", (?, ?)".repeat(7)
            )
        );
    }
}
