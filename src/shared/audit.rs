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
            replica: None,
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
    /// Open until an agent resolves it.
    pub status: TicketStatus,
    /// When it was resolved (Unix ms).
    pub resolved_at_ms: Option<i64>,
}

crate::spelled! {
    /// Where a ticket stands.
    pub enum TicketStatus {
        /// Waiting for a human agent.
        Open => "open",
        /// An agent handled it.
        Resolved => "resolved",
    }
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

/// What a provider's model costs, in US dollars per million tokens.
#[derive(Clone, Copy, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct Price {
    /// Per million prompt tokens.
    pub input_per_mtok: f64,
    /// Per million completion tokens.
    pub output_per_mtok: f64,
}

impl Price {
    /// What `usage` costs at this price.
    pub fn of(&self, usage: &crate::shared::Usage) -> f64 {
        (usage.prompt_tokens as f64 * self.input_per_mtok
            + usage.completion_tokens as f64 * self.output_per_mtok)
            / 1_000_000.0
    }
}

/// The tokens and cost of one provider or tenant over a period.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct CostRow {
    /// The provider (`cache`, `last-resort` included) or the tenant.
    pub key: String,
    /// Prompt tokens.
    pub prompt_tokens: u64,
    /// Completion tokens.
    pub completion_tokens: u64,
    /// US dollars at the configured prices; `None` when a provider it used has
    /// no price configured (the cache and the last resort cost nothing).
    pub cost_usd: Option<f64>,
}

/// Cost by provider and by tenant over a period.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct CostReport {
    /// Start (Unix ms).
    pub from_ms: i64,
    /// End (Unix ms).
    pub to_ms: i64,
    /// By provider, the costliest first.
    pub by_provider: Vec<CostRow>,
    /// By tenant, the costliest first.
    pub by_tenant: Vec<CostRow>,
}

impl CostReport {
    /// The report for `spend` (tenant, provider, tokens) at `prices` (by provider).
    pub fn from_spend(
        (from_ms, to_ms): (i64, i64),
        spend: &[(String, String, crate::shared::Usage)],
        prices: &std::collections::BTreeMap<String, Price>,
    ) -> Self {
        use std::collections::BTreeMap;
        let price = |provider: &str| -> Option<Price> {
            if Route::is_reserved(provider) {
                Some(Price::default())
            } else {
                prices.get(provider).copied()
            }
        };
        let mut by_provider: BTreeMap<&str, CostRow> = BTreeMap::new();
        let mut by_tenant: BTreeMap<&str, CostRow> = BTreeMap::new();
        for (tenant, provider, usage) in spend {
            let cost = price(provider).map(|p| p.of(usage));
            for (map, key) in [(&mut by_provider, provider), (&mut by_tenant, tenant)] {
                let row = map.entry(key.as_str()).or_insert_with(|| CostRow {
                    key: key.clone(),
                    cost_usd: Some(0.0),
                    ..CostRow::default()
                });
                row.prompt_tokens += usage.prompt_tokens;
                row.completion_tokens += usage.completion_tokens;
                row.cost_usd = match (row.cost_usd, cost) {
                    (Some(a), Some(b)) => Some(a + b),
                    _ => None,
                };
            }
        }
        let sorted = |map: BTreeMap<&str, CostRow>| {
            let mut rows: Vec<CostRow> = map.into_values().collect();
            rows.sort_by(|a, b| {
                let total = |r: &CostRow| r.prompt_tokens + r.completion_tokens;
                b.cost_usd
                    .unwrap_or(f64::MAX)
                    .total_cmp(&a.cost_usd.unwrap_or(f64::MAX))
                    .then(total(b).cmp(&total(a)))
            });
            rows
        };
        CostReport {
            from_ms,
            to_ms,
            by_provider: sorted(by_provider),
            by_tenant: sorted(by_tenant),
        }
    }
}

/// What the audit page is filtered to; the same names as the audit API's query.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct AuditQuery {
    /// Only the last this many minutes.
    pub last_minutes: Option<i64>,
    /// Only requests served by this route.
    pub route: Option<String>,
    /// Only requests that ended so.
    pub status: Option<RequestStatus>,
    /// Only requests that attempted this provider.
    pub provider: Option<String>,
    /// Only this tenant's requests.
    pub tenant: Option<String>,
    /// The page below this cursor.
    pub before: Option<i64>,
}

/// Percent-encodes a query value (everything but RFC 3986's unreserved characters).
fn encode(value: &str) -> String {
    value
        .bytes()
        .map(|b| match b {
            b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b'-' | b'_' | b'.' | b'~' => {
                (b as char).to_string()
            }
            b => format!("%{b:02X}"),
        })
        .collect()
}

impl AuditQuery {
    /// The filter as query parameters (`last_minutes=60&route=gpt`), `before` left out.
    pub fn filter_params(&self) -> String {
        let pairs = [
            ("last_minutes", self.last_minutes.map(|m| m.to_string())),
            ("route", self.route.clone()),
            ("status", self.status.map(|s| s.as_str().to_string())),
            ("provider", self.provider.clone()),
            ("tenant", self.tenant.clone()),
        ];
        pairs
            .into_iter()
            .filter_map(|(k, v)| v.map(|v| format!("{k}={}", encode(&v))))
            .collect::<Vec<_>>()
            .join("&")
    }
}

/// One ticket as an agent opens it: what the customer said, up to their latest
/// message, and what every provider answered before the last resort took over.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct TicketDetail {
    /// The ticket.
    pub ticket: TicketRow,
    /// The conversation, as of the customer's latest message while the ticket
    /// was open (empty when customer text is stored redacted).
    pub conversation: Vec<crate::shared::ChatTurn>,
    /// The attempts of the request that opened it.
    pub attempts: Vec<crate::shared::AttemptSummary>,
}

/// One request as the audit page opens it.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct RequestDetail {
    /// The request with its attempts.
    pub request: RequestRow,
    /// Its chat conversation's turns, when it came from the chat page.
    pub messages: Vec<crate::shared::ChatTurn>,
    /// Whether customer text is stored redacted.
    pub redacted: bool,
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::shared::Usage;

    fn usage(p: u64, c: u64) -> Usage {
        Usage {
            prompt_tokens: p,
            completion_tokens: c,
        }
    }

    #[test]
    fn a_query_becomes_the_audit_apis_parameters() {
        let query = AuditQuery {
            last_minutes: Some(60),
            route: Some("last-resort".into()),
            status: Some(RequestStatus::StreamFailed),
            tenant: Some("acme & co".into()),
            before: Some(5),
            ..AuditQuery::default()
        };
        assert_eq!(
            query.filter_params(),
            "last_minutes=60&route=last-resort&status=stream_failed&tenant=acme%20%26%20co"
        );
    }

    #[test]
    fn costs_add_up_by_provider_and_by_tenant() {
        let prices = [
            (
                "claude".to_string(),
                Price {
                    input_per_mtok: 3.0,
                    output_per_mtok: 15.0,
                },
            ),
            (
                "gpt".to_string(),
                Price {
                    input_per_mtok: 0.15,
                    output_per_mtok: 0.6,
                },
            ),
        ]
        .into_iter()
        .collect();
        let spend = vec![
            (
                "acme".to_string(),
                "claude".to_string(),
                usage(1_000_000, 100_000),
            ),
            ("acme".to_string(), "cache".to_string(), usage(0, 50_000)),
            (
                "beta".to_string(),
                "gpt".to_string(),
                usage(2_000_000, 1_000_000),
            ),
            ("beta".to_string(), "llama".to_string(), usage(10, 10)),
        ];
        let report = CostReport::from_spend((0, 1), &spend, &prices);
        let claude = report
            .by_provider
            .iter()
            .find(|r| r.key == "claude")
            .unwrap();
        assert!((claude.cost_usd.unwrap() - 4.5).abs() < 1e-9);
        let cache = report
            .by_provider
            .iter()
            .find(|r| r.key == "cache")
            .unwrap();
        assert_eq!(cache.cost_usd, Some(0.0));
        let acme = report.by_tenant.iter().find(|r| r.key == "acme").unwrap();
        assert!((acme.cost_usd.unwrap() - 4.5).abs() < 1e-9);
        assert_eq!(acme.completion_tokens, 150_000);
        // An unpriced provider makes its tenant's cost unknown, not smaller.
        let beta = report.by_tenant.iter().find(|r| r.key == "beta").unwrap();
        assert_eq!(beta.cost_usd, None);
        assert_eq!(
            report.by_provider[0].key, "llama",
            "unknown cost sorts first"
        );
    }
}
