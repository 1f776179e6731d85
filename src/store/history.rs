//! Read queries behind the board's first paint and the incident timeline: the
//! requests and attempts of the last minutes as points, each provider's last
//! success, and an hour of answers by route beside the transitions and fault
//! changes. Each is one bounded query on an indexed time column.

use super::{Store, StoreError};
use crate::shared::history::{AttemptPoint, FaultChangeRow, RequestPoint, RouteBucket};
use crate::shared::{AttemptOutcome, RequestStatus, Route};
use std::collections::BTreeMap;

/// Most points one history query returns.
pub const MAX_POINTS: i64 = 5_000;

#[derive(sqlx::FromRow)]
struct RequestPointRow {
    id: String,
    at_ms: i64,
    served_by: Option<Route>,
    status: RequestStatus,
    latency_ms: i64,
}

#[derive(sqlx::FromRow)]
struct AttemptPointRow {
    at_ms: i64,
    provider: String,
    outcome: AttemptOutcome,
    latency_ms: i64,
}

#[derive(sqlx::FromRow)]
struct BucketRow {
    at_ms: i64,
    route: String,
    answers: i64,
    failed: i64,
}

impl Store {
    /// Requests that ended since `since_ms`, oldest first, at most the newest
    /// [`MAX_POINTS`].
    pub async fn request_points(&self, since_ms: i64) -> Result<Vec<RequestPoint>, StoreError> {
        let mut rows: Vec<RequestPointRow> = crate::with_db!(self.db(), pool => sqlx::query_as(
            "SELECT id, created_at_ms + latency_ms AS at_ms, served_by, status, latency_ms \
             FROM requests WHERE created_at_ms >= $1 ORDER BY created_at_ms DESC LIMIT $2",
        )
        .bind(since_ms)
        .bind(MAX_POINTS)
        .fetch_all(pool)
        .await)?;
        rows.reverse();
        Ok(rows
            .into_iter()
            .map(|r| RequestPoint {
                id: r.id,
                at_ms: r.at_ms,
                served_by: r.served_by,
                status: r.status,
                latency_ms: r.latency_ms.max(0) as u64,
            })
            .collect())
    }

    /// Attempts of requests since `since_ms`, oldest first, at most the newest
    /// [`MAX_POINTS`].
    pub async fn attempt_points(&self, since_ms: i64) -> Result<Vec<AttemptPoint>, StoreError> {
        let mut rows: Vec<AttemptPointRow> = crate::with_db!(self.db(), pool => sqlx::query_as(
            "SELECT r.created_at_ms + r.latency_ms AS at_ms, a.provider, a.outcome, a.latency_ms \
             FROM requests r JOIN attempts a ON a.request_id = r.id \
             WHERE r.created_at_ms >= $1 ORDER BY r.created_at_ms DESC, a.seq DESC LIMIT $2",
        )
        .bind(since_ms)
        .bind(MAX_POINTS)
        .fetch_all(pool)
        .await)?;
        rows.reverse();
        Ok(rows
            .into_iter()
            .map(|r| AttemptPoint {
                at_ms: r.at_ms,
                provider: r.provider,
                outcome: r.outcome,
                latency_ms: r.latency_ms.max(0) as u64,
            })
            .collect())
    }

    /// Each provider's last successful attempt since `since_ms` (Unix ms).
    pub async fn last_successes(&self, since_ms: i64) -> Result<BTreeMap<String, i64>, StoreError> {
        let rows: Vec<(String, i64)> = crate::with_db!(self.db(), pool => sqlx::query_as(
            "SELECT a.provider, MAX(r.created_at_ms + r.latency_ms) FROM requests r \
             JOIN attempts a ON a.request_id = r.id \
             WHERE r.created_at_ms >= $1 AND a.outcome = 'ok' GROUP BY a.provider",
        )
        .bind(since_ms)
        .fetch_all(pool)
        .await)?;
        Ok(rows.into_iter().collect())
    }

    /// Answers between `from_ms` and `to_ms` by route, in buckets of `bucket_ms`.
    pub async fn route_buckets(
        &self,
        from_ms: i64,
        to_ms: i64,
        bucket_ms: i64,
    ) -> Result<Vec<RouteBucket>, StoreError> {
        let bucket_ms = bucket_ms.max(1);
        let rows: Vec<BucketRow> = crate::with_db!(self.db(), pool => sqlx::query_as(
            "SELECT (created_at_ms / $1) * $1 AS at_ms, COALESCE(served_by, 'none') AS route, \
             COUNT(*) AS answers, CAST(SUM(CASE WHEN status = 'stream_failed' THEN 1 ELSE 0 END) AS BIGINT) AS failed \
             FROM requests WHERE created_at_ms >= $2 AND created_at_ms <= $3 \
             GROUP BY 1, 2 ORDER BY 1",
        )
        .bind(bucket_ms)
        .bind(from_ms)
        .bind(to_ms)
        .fetch_all(pool)
        .await)?;
        let mut buckets: Vec<RouteBucket> = Vec::new();
        for row in rows {
            if buckets.last().is_none_or(|b| b.at_ms != row.at_ms) {
                buckets.push(RouteBucket {
                    at_ms: row.at_ms,
                    ..RouteBucket::default()
                });
            }
            let bucket = buckets.last_mut().expect("pushed above");
            bucket.by_route.insert(row.route, row.answers.max(0) as u64);
            bucket.failed += row.failed.max(0) as u64;
        }
        Ok(buckets)
    }

    /// Fault changes between `from_ms` and `to_ms`, oldest first (at most 1,000).
    pub async fn fault_changes(
        &self,
        from_ms: i64,
        to_ms: i64,
    ) -> Result<Vec<FaultChangeRow>, StoreError> {
        Ok(crate::with_db!(self.db(), pool => sqlx::query_as(
            "SELECT at_ms, provider, action, kind, changed_by FROM fault_changes \
             WHERE at_ms >= $1 AND at_ms <= $2 ORDER BY id LIMIT 1000",
        )
        .bind(from_ms)
        .bind(to_ms)
        .fetch_all(pool)
        .await)?)
    }

    /// Breaker transitions between `from_ms` and `to_ms`, oldest first (at most 1,000).
    pub async fn transitions_between(
        &self,
        from_ms: i64,
        to_ms: i64,
    ) -> Result<Vec<crate::shared::Transition>, StoreError> {
        let rows: Vec<crate::shared::audit::TransitionRow> = crate::with_db!(self.db(), pool => sqlx::query_as(
            "SELECT id, at_ms, provider, from_state, to_state, reason FROM breaker_transitions \
             WHERE at_ms >= $1 AND at_ms <= $2 ORDER BY id LIMIT 1000",
        )
        .bind(from_ms)
        .bind(to_ms)
        .fetch_all(pool)
        .await)?;
        Ok(rows.into_iter().map(Into::into).collect())
    }
}
