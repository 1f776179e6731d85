//! Read queries behind the audit API and the audit page: newest first, paged by
//! cursor, each list in one query.

use super::{nul_free, Store, StoreError};
use crate::shared::audit::{
    AttemptRow, Page, RequestRow, TicketDetail, TicketRow, TransitionRow, UsageBy, UsageRow,
};
use crate::shared::{ChatTurn, RequestStatus, Role, Route, Usage};
use sqlx::QueryBuilder;

/// Filters of the request list.
#[derive(Clone, Debug, Default)]
pub struct RequestFilter {
    /// Only requests served by this route (a provider, the cache, the last resort).
    pub route: Option<Route>,
    /// Only requests that attempted this provider.
    pub provider: Option<String>,
    /// Only requests that ended with this status.
    pub status: Option<RequestStatus>,
    /// Only requests of this tenant.
    pub tenant: Option<String>,
    /// Only requests that arrived at or after this time (Unix ms).
    pub from_ms: Option<i64>,
    /// Only requests that arrived before this time (Unix ms).
    pub to_ms: Option<i64>,
    /// Only rows older than this cursor (a previous page's `next_cursor`).
    pub before: Option<i64>,
    /// Page size.
    pub limit: i64,
    /// Whether each row comes with its attempts.
    pub with_attempts: bool,
}

fn page<T>(mut items: Vec<T>, limit: i64, cursor: impl Fn(&T) -> i64) -> Page<T> {
    let more = items.len() as i64 > limit;
    items.truncate(limit as usize);
    let next_cursor = if more { items.last().map(cursor) } else { None };
    Page { items, next_cursor }
}

const REQUEST_COLUMNS: &str =
    "SELECT rowid AS cursor, id, created_at_ms, surface, stream, served_by, status, \
     latency_ms, overhead_ms, question_chars, conversation_id, cache_similarity, tenant, \
     prompt_tokens, completion_tokens, usage_source FROM requests r";

/// The attempt columns of the joined request list, renamed so they cannot
/// collide with the request's own.
const ATTEMPT_COLUMNS: &str = "a.seq AS a_seq, a.provider AS a_provider, a.outcome AS a_outcome, \
     a.http_status AS a_http_status, a.latency_ms AS a_latency_ms, a.breaker_before AS a_breaker_before, \
     a.prompt_tokens AS a_prompt_tokens, a.completion_tokens AS a_completion_tokens";

/// The attempt of one joined row, if the row has one (a LEFT JOIN gives a
/// request without attempts one row of NULLs). A macro, not a function, so it
/// works on either engine's row type without spelling out sqlx's decode bounds.
macro_rules! joined_attempt {
    ($row:expr) => {{
        use sqlx::Row;
        let row = $row;
        match row.try_get::<Option<i64>, _>("a_seq")? {
            None => None,
            Some(seq) => Some(AttemptRow {
                seq,
                provider: row.try_get("a_provider")?,
                outcome: row.try_get("a_outcome")?,
                http_status: row.try_get("a_http_status")?,
                latency_ms: row.try_get("a_latency_ms")?,
                breaker_before: row.try_get("a_breaker_before")?,
                prompt_tokens: row.try_get("a_prompt_tokens")?,
                completion_tokens: row.try_get("a_completion_tokens")?,
            }),
        }
    }};
}

impl Store {
    /// Requests, newest first, filtered and paged; with their attempts if asked,
    /// in the same query (never one query per row).
    pub async fn requests(&self, filter: &RequestFilter) -> Result<Page<RequestRow>, StoreError> {
        crate::with_db!(self.db(), pool => {
            use sqlx::FromRow;
            let mut q = QueryBuilder::new("");
            if filter.with_attempts {
                q.push(format_args!("SELECT r.*, {ATTEMPT_COLUMNS} FROM ("));
            }
            q.push(REQUEST_COLUMNS).push(" WHERE 1 = 1");
            if let Some(before) = filter.before {
                q.push(" AND r.rowid < ").push_bind(before);
            }
            // The filter's texts may come from a browser: held to what the
            // columns can hold, a NUL finds nothing instead of failing the query.
            if let Some(route) = &filter.route {
                q.push(" AND r.served_by = ")
                    .push_bind(nul_free(route.as_str()).into_owned());
            }
            if let Some(status) = filter.status {
                q.push(" AND r.status = ").push_bind(status);
            }
            if let Some(tenant) = &filter.tenant {
                q.push(" AND r.tenant = ")
                    .push_bind(nul_free(tenant).into_owned());
            }
            if let Some(from) = filter.from_ms {
                q.push(" AND r.created_at_ms >= ").push_bind(from);
            }
            if let Some(to) = filter.to_ms {
                q.push(" AND r.created_at_ms < ").push_bind(to);
            }
            if let Some(provider) = &filter.provider {
                q.push(
                    " AND EXISTS (SELECT 1 FROM attempts a WHERE a.request_id = r.id AND a.provider = ",
                )
                .push_bind(nul_free(provider).into_owned())
                .push(")");
            }
            q.push(" ORDER BY r.rowid DESC LIMIT ")
                .push_bind(filter.limit + 1);
            if filter.with_attempts {
                q.push(") r LEFT JOIN attempts a ON a.request_id = r.id ORDER BY r.cursor DESC, a.seq");
            }
            let rows = q.build().fetch_all(pool).await?;
            let mut items: Vec<RequestRow> = Vec::new();
            for row in &rows {
                let cursor: i64 = sqlx::Row::try_get(row, "cursor")?;
                if items.last().is_none_or(|last| last.cursor != cursor) {
                    let mut request = RequestRow::from_row(row)?;
                    request.attempts = filter.with_attempts.then(Vec::new);
                    items.push(request);
                }
                if !filter.with_attempts {
                    continue;
                }
                if let (Some(attempt), Some(last)) = (joined_attempt!(row), items.last_mut()) {
                    last.attempts.get_or_insert_with(Vec::new).push(attempt);
                }
            }
            Ok(page(items, filter.limit, |r| r.cursor))
        })
    }

    /// One request with its attempts.
    pub async fn request(&self, id: &str) -> Result<Option<RequestRow>, StoreError> {
        let id = nul_free(id);
        let id = id.as_ref();
        let row: Option<RequestRow> = crate::with_db!(self.db(), pool => sqlx::query_as(&format!("{REQUEST_COLUMNS} WHERE r.id = $1"))
            .bind(id)
            .fetch_optional(pool)
            .await)?;
        let Some(mut request) = row else {
            return Ok(None);
        };
        request.attempts = Some(
            crate::with_db!(self.db(), pool => sqlx::query_as::<_, AttemptRow>(
                "SELECT seq, provider, outcome, http_status, latency_ms, breaker_before, \
                 prompt_tokens, completion_tokens FROM attempts WHERE request_id = $1 ORDER BY seq",
            )
            .bind(id)
            .fetch_all(pool)
            .await)?,
        );
        Ok(Some(request))
    }

    /// Breaker transitions, newest first.
    pub async fn transitions(
        &self,
        before: Option<i64>,
        limit: i64,
    ) -> Result<Page<TransitionRow>, StoreError> {
        let rows = crate::with_db!(self.db(), pool => sqlx::query_as::<_, TransitionRow>(
            "SELECT id, at_ms, provider, from_state, to_state, reason FROM breaker_transitions \
             WHERE id < $1 ORDER BY id DESC LIMIT $2",
        )
        .bind(before.unwrap_or(i64::MAX))
        .bind(limit + 1)
        .fetch_all(pool)
        .await)?;
        Ok(page(rows, limit, |r| r.id))
    }

    /// Tickets, newest first.
    pub async fn tickets(
        &self,
        before: Option<i64>,
        limit: i64,
    ) -> Result<Page<TicketRow>, StoreError> {
        let rows = crate::with_db!(self.db(), pool => sqlx::query_as::<_, TicketRow>(
            "SELECT rowid AS cursor, id, created_at_ms, request_id, question, status, resolved_at_ms \
             FROM tickets WHERE rowid < $1 ORDER BY rowid DESC LIMIT $2",
        )
        .bind(before.unwrap_or(i64::MAX))
        .bind(limit + 1)
        .fetch_all(pool)
        .await)?;
        Ok(page(rows, limit, |r| r.cursor))
    }

    /// One ticket with its conversation and the attempts that failed before it.
    /// A record whose JSON no longer reads shows empty lists, not an error: the
    /// ticket itself is still the agent's to handle.
    pub async fn ticket(&self, id: &str) -> Result<Option<TicketDetail>, StoreError> {
        #[derive(sqlx::FromRow)]
        struct Row {
            #[sqlx(flatten)]
            ticket: TicketRow,
            conversation_json: String,
            failure_json: String,
        }
        let row: Option<Row> = crate::with_db!(self.db(), pool => sqlx::query_as(
            "SELECT rowid AS cursor, id, created_at_ms, request_id, question, status, resolved_at_ms, \
             conversation_json, failure_json FROM tickets WHERE id = $1",
        )
        .bind(nul_free(id))
        .fetch_optional(pool)
        .await)?;
        Ok(row.map(|row| TicketDetail {
            ticket: row.ticket,
            conversation: serde_json::from_str(&row.conversation_json).unwrap_or_default(),
            attempts: serde_json::from_str(&row.failure_json).unwrap_or_default(),
        }))
    }

    /// Tokens spent since `since_ms` (Unix ms), by provider or by tenant, the
    /// costliest first. By provider, each attempt counts what it produced (a
    /// broken stream's part included), and the cache and the last resort appear
    /// under their own names; by tenant, each request counts its whole answer.
    pub async fn usage(&self, by: UsageBy, since_ms: i64) -> Result<Vec<UsageRow>, StoreError> {
        let sql = match by {
            UsageBy::Provider => {
                "SELECT key, COUNT(*) AS requests, CAST(SUM(p) AS BIGINT) AS prompt_tokens, \
                 CAST(SUM(c) AS BIGINT) AS completion_tokens, CAST(SUM(p + c) AS BIGINT) AS total_tokens FROM ( \
                   SELECT a.provider AS key, a.prompt_tokens AS p, a.completion_tokens AS c \
                   FROM attempts a JOIN requests r ON r.id = a.request_id \
                   WHERE r.created_at_ms >= $1 AND a.prompt_tokens IS NOT NULL \
                   UNION ALL \
                   SELECT served_by, prompt_tokens, completion_tokens FROM requests \
                   WHERE created_at_ms >= $1 AND served_by IN ('cache', 'last-resort') \
                 ) u GROUP BY key ORDER BY total_tokens DESC, key"
            }
            UsageBy::Tenant => {
                "SELECT tenant AS key, COUNT(*) AS requests, CAST(SUM(prompt_tokens) AS BIGINT) AS prompt_tokens, \
                 CAST(SUM(completion_tokens) AS BIGINT) AS completion_tokens, \
                 CAST(SUM(prompt_tokens + completion_tokens) AS BIGINT) AS total_tokens \
                 FROM requests WHERE created_at_ms >= $1 GROUP BY tenant \
                 ORDER BY total_tokens DESC, key"
            }
        };
        Ok(
            crate::with_db!(self.db(), pool => sqlx::query_as::<_, UsageRow>(sql)
            .bind(since_ms)
            .fetch_all(pool)
            .await)?,
        )
    }

    /// A chat conversation's turns, oldest first (at most 200).
    pub async fn conversation(&self, id: &str) -> Result<Vec<ChatTurn>, StoreError> {
        let rows: Vec<(Role, String)> = crate::with_db!(self.db(), pool => sqlx::query_as(
            "SELECT role, content FROM messages WHERE conversation_id = $1 ORDER BY id LIMIT 200",
        )
        .bind(id)
        .fetch_all(pool)
        .await)?;
        Ok(rows
            .into_iter()
            .map(|(role, content)| ChatTurn::new(role, content))
            .collect())
    }

    /// The newest ticket still open that the last resort opened in conversation `id`.
    pub async fn open_ticket_of(&self, id: &str) -> Result<Option<String>, StoreError> {
        let ticket = crate::with_db!(self.db(), pool => sqlx::query_scalar(
            "SELECT id FROM tickets WHERE conversation_id = $1 AND status = 'open' \
             ORDER BY created_at_ms DESC LIMIT 1",
        )
        .bind(nul_free(id))
        .fetch_optional(pool)
        .await)?;
        Ok(ticket)
    }

    /// Replaces an open ticket's conversation with the newer `conversation_json`
    /// (the customer wrote again before an agent answered); `false` if the
    /// ticket is no longer open.
    pub async fn update_ticket_conversation(
        &self,
        id: &str,
        conversation_json: &str,
    ) -> Result<bool, StoreError> {
        let done = crate::with_db!(self.db(), pool => sqlx::query(
            "UPDATE tickets SET conversation_json = $1 WHERE id = $2 AND status = 'open'",
        )
        .bind(conversation_json)
        .bind(id)
        .execute(pool)
        .await.map(|done| done.rows_affected()))?;
        Ok(done == 1)
    }

    /// Marks a ticket resolved at `at_ms`; `false` if there is no such open ticket.
    pub async fn resolve_ticket(&self, id: &str, at_ms: i64) -> Result<bool, StoreError> {
        let done = crate::with_db!(self.db(), pool => sqlx::query(
            "UPDATE tickets SET status = 'resolved', resolved_at_ms = $1 \
             WHERE id = $2 AND status = 'open'",
        )
        .bind(at_ms)
        .bind(id)
        .execute(pool)
        .await.map(|done| done.rows_affected()))?;
        Ok(done == 1)
    }

    /// Tokens spent between `from_ms` and `to_ms` per (tenant, provider): each
    /// attempt's own tokens, and the cache's and last resort's under their names.
    pub async fn spend(
        &self,
        from_ms: i64,
        to_ms: i64,
    ) -> Result<Vec<(String, String, Usage)>, StoreError> {
        let rows: Vec<(String, String, i64, i64)> = crate::with_db!(self.db(), pool => sqlx::query_as(
            "SELECT tenant, provider, CAST(SUM(p) AS BIGINT), CAST(SUM(c) AS BIGINT) FROM ( \
               SELECT r.tenant AS tenant, a.provider AS provider, a.prompt_tokens AS p, \
                 a.completion_tokens AS c \
               FROM requests r JOIN attempts a ON a.request_id = r.id \
               WHERE r.created_at_ms >= $1 AND r.created_at_ms <= $2 AND a.prompt_tokens IS NOT NULL \
               UNION ALL \
               SELECT tenant, served_by, prompt_tokens, completion_tokens FROM requests \
               WHERE created_at_ms >= $1 AND created_at_ms <= $2 \
                 AND served_by IN ('cache', 'last-resort') \
             ) u GROUP BY tenant, provider ORDER BY tenant, provider",
        )
        .bind(from_ms)
        .bind(to_ms)
        .fetch_all(pool)
        .await)?;
        Ok(rows
            .into_iter()
            .map(|(tenant, provider, p, c)| {
                let usage = Usage {
                    prompt_tokens: p.max(0) as u64,
                    completion_tokens: c.max(0) as u64,
                };
                (tenant, provider, usage)
            })
            .collect())
    }
}
