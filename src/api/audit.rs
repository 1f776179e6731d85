//! The audit read API (admin token): requests with their attempts, breaker
//! transitions and tickets, newest first, paged by cursor; and what the answers
//! cost, by provider or by tenant.

use super::{admin::Admin, error::ApiError, params::Params, AppState};
use crate::shared::audit::{Page, RequestRow, TicketRow, TransitionRow, UsageBy, UsageRow};
use crate::shared::{RequestStatus, Route};
use crate::store::queries::RequestFilter;
use axum::{
    extract::{rejection::QueryRejection, Path, Query, State},
    Json,
};
use serde::Serialize;
use std::collections::HashMap;

type QueryMap = Result<Query<HashMap<String, String>>, QueryRejection>;

/// `GET /api/audit/requests?limit&before&route&provider&status`.
pub async fn requests(
    _: Admin,
    State(state): State<AppState>,
    query: QueryMap,
) -> Result<Json<Page<RequestRow>>, ApiError> {
    let params = Params::new(query, &["limit", "before", "route", "provider", "status"])?;
    let filter = RequestFilter {
        route: params.text("route")?.map(Route::from),
        provider: params.text("provider")?.map(str::to_string),
        status: params.parsed::<RequestStatus>("status")?,
        before: params.before()?,
        limit: params.limit()?,
        with_attempts: false,
    };
    Ok(Json(state.store.requests(&filter).await?))
}

/// `GET /api/audit/requests/{id}`: one request with its attempts.
pub async fn request(
    _: Admin,
    State(state): State<AppState>,
    Path(id): Path<String>,
) -> Result<Json<RequestRow>, ApiError> {
    match state.store.request(&id).await? {
        Some(row) => Ok(Json(row)),
        None => Err(ApiError::not_found(format!("no request {id:?}"))),
    }
}

/// `GET /api/audit/transitions?limit&before`.
pub async fn transitions(
    _: Admin,
    State(state): State<AppState>,
    query: QueryMap,
) -> Result<Json<Page<TransitionRow>>, ApiError> {
    let params = Params::new(query, &["limit", "before"])?;
    Ok(Json(
        state
            .store
            .transitions(params.before()?, params.limit()?)
            .await?,
    ))
}

/// `GET /api/tickets?limit&before`.
pub async fn tickets(
    _: Admin,
    State(state): State<AppState>,
    query: QueryMap,
) -> Result<Json<Page<TicketRow>>, ApiError> {
    let params = Params::new(query, &["limit", "before"])?;
    Ok(Json(
        state
            .store
            .tickets(params.before()?, params.limit()?)
            .await?,
    ))
}

/// Tokens spent over a period, grouped as asked.
#[derive(Serialize)]
pub struct UsageReport {
    /// How the rows are grouped.
    by: UsageBy,
    /// The period's start (Unix ms).
    since_ms: i64,
    /// One row per provider or tenant, the costliest first.
    rows: Vec<UsageRow>,
}

/// `GET /api/audit/usage?by=provider|tenant&since=<unix ms>`.
pub async fn usage(
    _: Admin,
    State(state): State<AppState>,
    query: QueryMap,
) -> Result<Json<UsageReport>, ApiError> {
    let params = Params::new(query, &["by", "since"])?;
    let by = params.parsed::<UsageBy>("by")?.unwrap_or(UsageBy::Provider);
    let since_ms = match params.parsed::<i64>("since")? {
        Some(ms) if ms < 0 => {
            return Err(ApiError::invalid(
                Some("since"),
                "since must be a Unix time in milliseconds",
            ))
        }
        since => since.unwrap_or(0),
    };
    let rows = state.store.usage(by, since_ms).await?;
    Ok(Json(UsageReport { by, since_ms, rows }))
}
