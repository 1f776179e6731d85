//! The cache admin API (admin token): list and search entries, delete one, clear all.

use super::{
    admin::Admin,
    error::ApiError,
    params::{Params, PathText},
    AppState,
};
use crate::cache::SemanticCache;
use axum::{
    extract::{rejection::QueryRejection, Query, State},
    Json,
};
use serde_json::{json, Value};
use std::collections::HashMap;
use std::sync::atomic::Ordering::Relaxed;
use std::sync::Arc;

fn cache(state: &AppState) -> Result<&Arc<SemanticCache>, ApiError> {
    state
        .gateway
        .cache()
        .ok_or_else(|| ApiError::not_found("the cache is disabled (cache.enabled = false)"))
}

/// `GET /api/cache?q&limit`: entries, newest first, and the cache's numbers.
pub async fn list(
    _: Admin,
    State(state): State<AppState>,
    query: Result<Query<HashMap<String, String>>, QueryRejection>,
) -> Result<Json<Value>, ApiError> {
    let cache = cache(&state)?;
    let params = Params::new(query, &["q", "limit"])?;
    let limit = params.limit()? as usize;
    let c = cache.counters();
    Ok(Json(json!({
        "entries": cache.list(params.text("q")?, limit),
        "stats": {
            "entries": cache.len(),
            "semantic": cache.semantic(),
            "hits": c.hits.load(Relaxed),
            "misses": c.misses.load(Relaxed),
            "refused": c.refused.load(Relaxed),
            "stored": c.stored.load(Relaxed),
            "not_stored": c.not_stored.load(Relaxed),
            "bypassed_busy": c.bypassed_busy.load(Relaxed),
        }
    })))
}

/// `DELETE /api/cache/{id}`.
pub async fn remove(
    _: Admin,
    State(state): State<AppState>,
    PathText(id): PathText,
) -> Result<Json<Value>, ApiError> {
    let cache = cache(&state)?;
    let id: i64 = id
        .parse()
        .map_err(|_| ApiError::invalid(Some("id"), "id must be a cache entry's number"))?;
    if cache.remove(id).await {
        Ok(Json(json!({"deleted": id})))
    } else {
        Err(ApiError::not_found(format!("no cache entry {id}")))
    }
}

/// `DELETE /api/cache`: removes every entry.
pub async fn clear(_: Admin, State(state): State<AppState>) -> Result<Json<Value>, ApiError> {
    let cleared = cache(&state)?.clear().await;
    Ok(Json(json!({"cleared": cleared})))
}
