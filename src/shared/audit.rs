//! The audit trail as its readers see it: the rows the audit API returns and the
//! audit page renders, read from the store in one query each.

use super::{AttemptOutcome, BreakerState, RequestStatus, Route, Surface, Transition, UsageSource};
use serde::{Deserialize, Serialize};

/// One request as the audit shows it.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[cfg_attr(feature = "ssr", derive(sqlx::FromRow))]
pub struct RequestRow {
    /// Cursor position of this row.
    pub cursor: i64,
    /// Request id.
    pub id: String,
    /// Unix time in milliseconds.
    pub created_at_ms: i64,
    /// Where it came from.
    pub surface: Surface,
    /// Whether it was streamed.
    pub stream: bool,
    /// Who served it, if anyone did.
    pub served_by: Option<Route>,
    /// How it ended.
    pub status: RequestStatus,
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
    /// Whose request it was.
    pub tenant: String,
    /// Prompt tokens of the answer.
    pub prompt_tokens: i64,
    /// Completion tokens of the answer.
    pub completion_tokens: i64,
    /// Who counted them; absent when nothing answered.
    pub usage_source: Option<UsageSource>,
    /// Its attempts, in order, when they were asked for.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[cfg_attr(feature = "ssr", sqlx(skip))]
    pub attempts: Option<Vec<AttemptRow>>,
}

/// One attempt of a request.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[cfg_attr(feature = "ssr", derive(sqlx::FromRow))]
pub struct AttemptRow {
    /// Order within the request.
    pub seq: i64,
    /// Provider name.
    pub provider: String,
    /// How it ended.
    pub outcome: AttemptOutcome,
    /// HTTP status, when the provider answered.
    pub http_status: Option<i64>,
    /// Latency in milliseconds.
    pub latency_ms: i64,
    /// Breaker state before the attempt.
    pub breaker_before: Option<BreakerState>,
    /// Prompt tokens it cost, when it produced an answer (or part of one).
    pub prompt_tokens: Option<i64>,
    /// Completion tokens it cost.
    pub completion_tokens: Option<i64>,
}

/// A breaker transition as the audit keeps it, with its cursor.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[cfg_attr(feature = "ssr", derive(sqlx::FromRow))]
pub struct TransitionRow {
    /// Cursor position.
    pub id: i64,
    /// Unix time in milliseconds.
    pub at_ms: i64,
    /// Provider.
    pub provider: String,
    /// State before.
    pub from_state: BreakerState,
    /// State after.
    pub to_state: BreakerState,
    /// Why.
    pub reason: String,
}

impl From<TransitionRow> for Transition {
    fn from(row: TransitionRow) -> Self {
        Transition {
            provider: row.provider,
            from: row.from_state,
            to: row.to_state,
            reason: row.reason,
            at_ms: row.at_ms,
        }
    }
}

/// A ticket for a human agent.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[cfg_attr(feature = "ssr", derive(sqlx::FromRow))]
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
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Page<T> {
    /// The rows, newest first.
    pub items: Vec<T>,
    /// Pass as `before` for the next page; `None` on the last page.
    pub next_cursor: Option<i64>,
}

crate::spelled! {
    /// How usage is grouped.
    pub enum UsageBy {
        /// Per provider attempt (and the cache and the last resort).
        Provider => "provider",
        /// Per request's tenant.
        Tenant => "tenant",
    }
}

/// What one provider or tenant cost over a period, as `GET /api/audit/usage` reports it.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[cfg_attr(feature = "ssr", derive(sqlx::FromRow))]
pub struct UsageRow {
    /// The provider (or `cache`, `last-resort`) or the tenant.
    pub key: String,
    /// Requests (by tenant) or attempts that produced tokens (by provider).
    pub requests: i64,
    /// Prompt tokens.
    pub prompt_tokens: i64,
    /// Completion tokens.
    pub completion_tokens: i64,
    /// Both.
    pub total_tokens: i64,
}
