//! Read queries behind the audit API: newest first, paged by cursor.

use super::{Store, StoreError};
use serde::Serialize;
use sqlx::Row;

/// Filters of the request list.
#[derive(Clone, Debug, Default)]
pub struct RequestFilter {
    /// Only requests served by this route (a provider, `last-resort`).
    pub route: Option<String>,
    /// Only requests that attempted this provider.
    pub provider: Option<String>,
    /// Only requests that ended with this status.
    pub status: Option<String>,
    /// Only rows older than this cursor (a previous page's `next_cursor`).
    pub before: Option<i64>,
    /// Page size.
    pub limit: i64,
}

/// One request as the audit shows it.
#[derive(Clone, Debug, Serialize)]
pub struct RequestRow {
    /// Cursor position of this row.
    pub cursor: i64,
    /// Request id.
    pub id: String,
    /// Unix time in milliseconds.
    pub created_at_ms: i64,
    /// `chat` or `api`.
    pub surface: String,
    /// Whether it was streamed.
    pub stream: bool,
    /// Who served it.
    pub served_by: Option<String>,
    /// How it ended.
    pub status: String,
    /// Total time in milliseconds.
    pub latency_ms: i64,
    /// Gateway overhead in milliseconds.
    pub overhead_ms: f64,
    /// Size of the question in characters.
    pub question_chars: i64,
    /// The chat conversation it belongs to.
    pub conversation_id: Option<String>,
    /// Similarity of a cache hit.
    pub cache_similarity: Option<f64>,
    /// Its attempts, in order (filled for the detail view).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub attempts: Option<Vec<AttemptRow>>,
}

/// One attempt of a request.
#[derive(Clone, Debug, Serialize, sqlx::FromRow)]
pub struct AttemptRow {
    /// Order within the request.
    pub seq: i64,
    /// Provider name.
    pub provider: String,
    /// Outcome (`ok`, `server_error`, `skipped_open`, …).
    pub outcome: String,
    /// HTTP status, when the provider answered.
    pub http_status: Option<i64>,
    /// Latency in milliseconds.
    pub latency_ms: i64,
    /// Breaker state before the attempt.
    pub breaker_before: Option<String>,
}

/// A breaker transition.
#[derive(Clone, Debug, Serialize, sqlx::FromRow)]
pub struct TransitionRow {
    /// Cursor position.
    pub id: i64,
    /// Unix time in milliseconds.
    pub at_ms: i64,
    /// Provider.
    pub provider: String,
    /// State before.
    pub from_state: String,
    /// State after.
    pub to_state: String,
    /// Why.
    pub reason: String,
}

/// A ticket for a human agent.
#[derive(Clone, Debug, Serialize, sqlx::FromRow)]
pub struct TicketRow {
    /// Cursor position.
    pub cursor: i64,
    /// Ticket id.
    pub id: String,
    /// Unix time in milliseconds.
    pub created_at_ms: i64,
    /// The request that opened it.
    pub request_id: String,
    /// The customer's question.
    pub question: String,
    /// `open` until an agent handles it.
    pub status: String,
}

/// A page of rows and the cursor of the next page.
#[derive(Clone, Debug, Serialize)]
pub struct Page<T> {
    /// The rows, newest first.
    pub items: Vec<T>,
    /// Pass as `before` for the next page; `None` on the last page.
    pub next_cursor: Option<i64>,
}

fn page<T>(mut items: Vec<T>, limit: i64, cursor: impl Fn(&T) -> i64) -> Page<T> {
    let more = items.len() as i64 > limit;
    items.truncate(limit as usize);
    let next_cursor = if more { items.last().map(cursor) } else { None };
    Page { items, next_cursor }
}

fn request_row(row: &sqlx::sqlite::SqliteRow) -> Result<RequestRow, sqlx::Error> {
    Ok(RequestRow {
        cursor: row.try_get("cursor")?,
        id: row.try_get("id")?,
        created_at_ms: row.try_get("created_at_ms")?,
        surface: row.try_get("surface")?,
        stream: row.try_get("stream")?,
        served_by: row.try_get("served_by")?,
        status: row.try_get("status")?,
        latency_ms: row.try_get("latency_ms")?,
        overhead_ms: row.try_get("overhead_ms")?,
        question_chars: row.try_get("question_chars")?,
        conversation_id: row.try_get("conversation_id")?,
        cache_similarity: row.try_get("cache_similarity")?,
        attempts: None,
    })
}

const REQUEST_COLUMNS: &str =
    "SELECT rowid AS cursor, id, created_at_ms, surface, stream, served_by, status, \
     latency_ms, overhead_ms, question_chars, conversation_id, cache_similarity FROM requests r";

impl Store {
    /// Requests, newest first, filtered and paged.
    pub async fn requests(&self, filter: &RequestFilter) -> Result<Page<RequestRow>, StoreError> {
        let mut q = sqlx::QueryBuilder::<sqlx::Sqlite>::new(REQUEST_COLUMNS);
        q.push(" WHERE 1 = 1");
        if let Some(before) = filter.before {
            q.push(" AND r.rowid < ").push_bind(before);
        }
        if let Some(route) = &filter.route {
            q.push(" AND r.served_by = ").push_bind(route);
        }
        if let Some(status) = &filter.status {
            q.push(" AND r.status = ").push_bind(status);
        }
        if let Some(provider) = &filter.provider {
            q.push(
                " AND EXISTS (SELECT 1 FROM attempts a WHERE a.request_id = r.id AND a.provider = ",
            )
            .push_bind(provider)
            .push(")");
        }
        q.push(" ORDER BY r.rowid DESC LIMIT ")
            .push_bind(filter.limit + 1);
        let rows = q.build().fetch_all(self.pool()).await?;
        let items = rows
            .iter()
            .map(request_row)
            .collect::<Result<Vec<_>, _>>()?;
        Ok(page(items, filter.limit, |r| r.cursor))
    }

    /// One request with its attempts.
    pub async fn request(&self, id: &str) -> Result<Option<RequestRow>, StoreError> {
        let row = sqlx::query(&format!("{REQUEST_COLUMNS} WHERE r.id = ?"))
            .bind(id)
            .fetch_optional(self.pool())
            .await?;
        let Some(row) = row else { return Ok(None) };
        let mut request = request_row(&row)?;
        request.attempts = Some(
            sqlx::query_as::<_, AttemptRow>(
                "SELECT seq, provider, outcome, http_status, latency_ms, breaker_before \
                 FROM attempts WHERE request_id = ? ORDER BY seq",
            )
            .bind(id)
            .fetch_all(self.pool())
            .await?,
        );
        Ok(Some(request))
    }

    /// Breaker transitions, newest first.
    pub async fn transitions(
        &self,
        before: Option<i64>,
        limit: i64,
    ) -> Result<Page<TransitionRow>, StoreError> {
        let rows = sqlx::query_as::<_, TransitionRow>(
            "SELECT id, at_ms, provider, from_state, to_state, reason FROM breaker_transitions \
             WHERE id < ? ORDER BY id DESC LIMIT ?",
        )
        .bind(before.unwrap_or(i64::MAX))
        .bind(limit + 1)
        .fetch_all(self.pool())
        .await?;
        Ok(page(rows, limit, |r| r.id))
    }

    /// Tickets, newest first.
    pub async fn tickets(
        &self,
        before: Option<i64>,
        limit: i64,
    ) -> Result<Page<TicketRow>, StoreError> {
        let rows = sqlx::query_as::<_, TicketRow>(
            "SELECT rowid AS cursor, id, created_at_ms, request_id, question, status FROM tickets \
             WHERE rowid < ? ORDER BY rowid DESC LIMIT ?",
        )
        .bind(before.unwrap_or(i64::MAX))
        .bind(limit + 1)
        .fetch_all(self.pool())
        .await?;
        Ok(page(rows, limit, |r| r.cursor))
    }
}
