//! The audit read API (admin token): requests with their attempts, breaker
//! transitions and tickets, newest first, paged by cursor.

use super::{chaos::Admin, error::ApiError, AppState};
use crate::store::queries::{Page, RequestFilter, RequestRow, TicketRow, TransitionRow};
use axum::{
    extract::{rejection::QueryRejection, Path, Query, State},
    Json,
};
use std::collections::HashMap;

/// Largest page a caller may ask for.
const MAX_LIMIT: i64 = 500;

/// Query parameters, checked one by one so an error names the parameter.
struct Params(HashMap<String, String>);

impl Params {
    fn new(
        query: Result<Query<HashMap<String, String>>, QueryRejection>,
        allowed: &[&str],
    ) -> Result<Self, ApiError> {
        let Query(map) =
            query.map_err(|e| ApiError::invalid(None, format!("invalid query string: {e}")))?;
        if let Some(unknown) = map.keys().find(|k| !allowed.contains(&k.as_str())) {
            return Err(ApiError::invalid(
                Some(unknown),
                format!(
                    "unknown parameter {unknown:?}; expected one of {}",
                    allowed.join(", ")
                ),
            ));
        }
        Ok(Self(map))
    }

    fn text(&self, name: &str) -> Result<Option<String>, ApiError> {
        match self.0.get(name) {
            Some(v) if v.trim().is_empty() => Err(ApiError::invalid(
                Some(name),
                format!("{name} must not be empty"),
            )),
            v => Ok(v.cloned()),
        }
    }

    fn limit(&self) -> Result<i64, ApiError> {
        match self.0.get("limit") {
            None => Ok(50),
            Some(v) => v
                .parse::<i64>()
                .ok()
                .filter(|n| (1..=MAX_LIMIT).contains(n))
                .ok_or_else(|| {
                    ApiError::invalid(
                        Some("limit"),
                        format!("limit must be a whole number from 1 to {MAX_LIMIT}"),
                    )
                }),
        }
    }

    fn before(&self) -> Result<Option<i64>, ApiError> {
        self.0
            .get("before")
            .map(|v| {
                v.parse::<i64>().ok().filter(|n| *n > 0).ok_or_else(|| {
                    ApiError::invalid(
                        Some("before"),
                        "before must be a cursor from a previous page",
                    )
                })
            })
            .transpose()
    }
}

fn storage(err: crate::store::StoreError) -> ApiError {
    tracing::error!(error = %err, "audit query failed");
    ApiError {
        status: axum::http::StatusCode::INTERNAL_SERVER_ERROR,
        kind: "server_error",
        code: None,
        param: None,
        message: "the audit store could not be read".into(),
    }
}

/// `GET /api/audit/requests?limit&before&route&provider&status`.
pub async fn requests(
    _: Admin,
    State(state): State<AppState>,
    query: Result<Query<HashMap<String, String>>, QueryRejection>,
) -> Result<Json<Page<RequestRow>>, ApiError> {
    let params = Params::new(query, &["limit", "before", "route", "provider", "status"])?;
    let filter = RequestFilter {
        route: params.text("route")?,
        provider: params.text("provider")?,
        status: params.text("status")?,
        before: params.before()?,
        limit: params.limit()?,
    };
    state
        .store
        .requests(&filter)
        .await
        .map(Json)
        .map_err(storage)
}

/// `GET /api/audit/requests/{id}`: one request with its attempts.
pub async fn request(
    _: Admin,
    State(state): State<AppState>,
    Path(id): Path<String>,
) -> Result<Json<RequestRow>, ApiError> {
    match state.store.request(&id).await.map_err(storage)? {
        Some(row) => Ok(Json(row)),
        None => Err(ApiError::not_found(format!("no request {id:?}"))),
    }
}

/// `GET /api/audit/transitions?limit&before`.
pub async fn transitions(
    _: Admin,
    State(state): State<AppState>,
    query: Result<Query<HashMap<String, String>>, QueryRejection>,
) -> Result<Json<Page<TransitionRow>>, ApiError> {
    let params = Params::new(query, &["limit", "before"])?;
    state
        .store
        .transitions(params.before()?, params.limit()?)
        .await
        .map(Json)
        .map_err(storage)
}

/// `GET /api/tickets?limit&before`.
pub async fn tickets(
    _: Admin,
    State(state): State<AppState>,
    query: Result<Query<HashMap<String, String>>, QueryRejection>,
) -> Result<Json<Page<TicketRow>>, ApiError> {
    let params = Params::new(query, &["limit", "before"])?;
    state
        .store
        .tickets(params.before()?, params.limit()?)
        .await
        .map(Json)
        .map_err(storage)
}
