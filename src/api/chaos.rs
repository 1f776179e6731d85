//! The chaos API: inject and heal faults per provider, read provider status.
//! Every endpoint requires the admin token; customer endpoints never do. Each
//! change goes through the gateway's fault control, as the board's buttons do.

use super::{admin::Admin, error::ApiError, AppState};
use crate::shared::{FaultChangedBy, FaultSpec, ProviderStatus};
use axum::{
    body::Bytes,
    extract::{rejection::BytesRejection, Path, State},
    Json,
};
use serde_json::{json, Value};

/// `GET /api/providers`: every provider's breaker and fault, in cascade order.
pub async fn providers(_: Admin, State(state): State<AppState>) -> Json<Vec<ProviderStatus>> {
    Json(state.gateway.statuses())
}

/// `PUT /api/chaos/{provider}` with a JSON [`FaultSpec`].
pub async fn inject(
    _: Admin,
    State(state): State<AppState>,
    Path(provider): Path<String>,
    body: Result<Bytes, BytesRejection>,
) -> Result<Json<Value>, ApiError> {
    let faults = state.gateway.faults();
    // An unknown provider is a 404 before the body is judged.
    faults.known(&provider)?;
    let spec: FaultSpec = serde_json::from_slice(&body?)
        .map_err(|err| ApiError::unprocessable(None, format!("invalid fault spec: {err}")))?;
    faults.set(&provider, spec.clone(), FaultChangedBy::Admin)?;
    Ok(Json(json!({"provider": provider, "fault": spec})))
}

/// `DELETE /api/chaos/{provider}`: heals one provider.
pub async fn heal(
    _: Admin,
    State(state): State<AppState>,
    Path(provider): Path<String>,
) -> Result<Json<Value>, ApiError> {
    let had = state
        .gateway
        .faults()
        .heal(&provider, FaultChangedBy::Admin)?;
    Ok(Json(json!({"provider": provider, "healed": had})))
}

/// `DELETE /api/chaos`: heals every provider.
pub async fn heal_all(_: Admin, State(state): State<AppState>) -> Json<Value> {
    let healed = state.gateway.faults().heal_all(FaultChangedBy::Admin);
    Json(json!({"healed": healed}))
}
