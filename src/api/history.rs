//! The recent past as the board and the audit page read it: the board's seed
//! (live breaker and fault state plus the last minutes from the audit trail) and
//! the incident timeline of a period. `GET /api/audit/incident?from&to` serves the
//! latter to API callers too.

use super::{admin::Admin, error::ApiError, params::Params, AppState};
use crate::shared::audit::{AttemptRow, RequestRow};
use crate::shared::history::{BoardSeed, IncidentTimeline};
use crate::shared::{AttemptSummary, Trace, Usage};
use crate::store::queries::RequestFilter;
use crate::store::StoreError;
use axum::{
    extract::{rejection::QueryRejection, Query, State},
    Json,
};
use std::collections::HashMap;

/// How far back the board's counters look.
pub const BOARD_WINDOW_MS: i64 = 10 * 60_000;
/// How far back each provider's health looks, with room for the sparkline.
const HEALTH_HISTORY_MS: i64 = 2 * 60_000;
/// Requests in the board's live path.
const TRACES: i64 = 25;
/// The incident timeline's longest period.
const MAX_INCIDENT_MS: i64 = 7 * 24 * 3_600_000;

fn attempt(row: &AttemptRow) -> AttemptSummary {
    AttemptSummary {
        provider: row.provider.clone(),
        outcome: row.outcome,
        status: row.http_status.and_then(|s| u16::try_from(s).ok()),
        latency_ms: row.latency_ms.max(0) as u64,
        breaker: row.breaker_before,
        usage: row
            .prompt_tokens
            .zip(row.completion_tokens)
            .map(|(p, c)| Usage {
                prompt_tokens: p.max(0) as u64,
                completion_tokens: c.max(0) as u64,
            }),
    }
}

/// A stored request as the live path shows it.
pub fn trace(row: &RequestRow) -> Trace {
    Trace {
        id: row.id.clone(),
        served_by: row.served_by.clone(),
        attempts: row.attempts.iter().flatten().map(attempt).collect(),
        latency_ms: row.latency_ms.max(0) as u64,
        status: row.status,
        at_ms: row.created_at_ms + row.latency_ms,
        replica: None,
    }
}

/// Everything the board starts from, now.
pub async fn board_seed(state: &AppState) -> Result<BoardSeed, StoreError> {
    let now_ms = state.gateway.clock().unix_ms();
    let store = &state.store;
    let latest = store
        .requests(&RequestFilter {
            limit: TRACES,
            with_attempts: true,
            ..RequestFilter::default()
        })
        .await?;
    Ok(BoardSeed {
        now_ms,
        window_ms: BOARD_WINDOW_MS,
        providers: state.gateway.statuses(),
        traffic: state.traffic.status(),
        requests: store.request_points(now_ms - BOARD_WINDOW_MS).await?,
        attempts: store.attempt_points(now_ms - HEALTH_HISTORY_MS).await?,
        traces: latest.items.iter().map(trace).collect(),
        transitions: store
            .transitions(None, 30)
            .await?
            .items
            .into_iter()
            .map(Into::into)
            .collect(),
        last_success_ms: store.last_successes(now_ms - 24 * 3_600_000).await?,
    })
}

/// The incident timeline from `from_ms` to `to_ms`, in one-minute buckets (wider
/// for long periods, so at most about 240 buckets).
pub async fn incident(
    state: &AppState,
    from_ms: i64,
    to_ms: i64,
) -> Result<IncidentTimeline, StoreError> {
    let span = (to_ms - from_ms).max(60_000);
    let bucket_ms = ((span / 240).max(60_000) + 59_999) / 60_000 * 60_000;
    let store = &state.store;
    Ok(IncidentTimeline {
        from_ms,
        to_ms,
        bucket_ms,
        buckets: store.route_buckets(from_ms, to_ms, bucket_ms).await?,
        transitions: store.transitions_between(from_ms, to_ms).await?,
        faults: store.fault_changes(from_ms, to_ms).await?,
    })
}

/// A period from `from` and `to` (Unix ms), by default the last hour.
pub fn period(params: &Params, now_ms: i64) -> Result<(i64, i64), ApiError> {
    let to = params.parsed::<i64>("to")?.unwrap_or(now_ms);
    let from = params.parsed::<i64>("from")?.unwrap_or(to - 3_600_000);
    if from >= to {
        return Err(ApiError::invalid(Some("from"), "from must be before to"));
    }
    if to - from > MAX_INCIDENT_MS {
        return Err(ApiError::invalid(
            Some("from"),
            "the period may span at most 7 days",
        ));
    }
    Ok((from, to))
}

/// `GET /api/audit/incident?from&to`: answers by route, transitions and fault
/// changes on one time axis.
pub async fn incident_api(
    _: Admin,
    State(state): State<AppState>,
    query: Result<Query<HashMap<String, String>>, QueryRejection>,
) -> Result<Json<IncidentTimeline>, ApiError> {
    let params = Params::new(query, &["from", "to"])?;
    let (from, to) = period(&params, state.gateway.clock().unix_ms())?;
    Ok(Json(incident(&state, from, to).await?))
}
