//! The chaos API: inject and heal faults per provider, read provider status.
//! Every endpoint requires the admin token; customer endpoints never do. Each
//! change goes through the gateway's fault control, as the board's buttons do.

use super::{
    admin::Admin,
    error::{echoed, ApiError},
    AppState,
};
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
    let spec = parse_spec(&body?)?;
    faults.set(&provider, spec.clone(), FaultChangedBy::Admin)?;
    Ok(Json(json!({"provider": provider, "fault": spec})))
}

/// Reads a fault spec, refusing any field its kind does not have. serde cannot
/// deny unknown fields through the spec's flattened kind, and a kind without
/// fields (`outage`, `hang`, `malformed`) took any: `"duration": 30` (for
/// `duration_s`) set an outage that never healed, on stage.
fn parse_spec(body: &[u8]) -> Result<FaultSpec, ApiError> {
    let invalid = |message: String| ApiError::unprocessable(None, message);
    let value: Value = serde_json::from_slice(body)
        .map_err(|err| invalid(format!("invalid fault spec: {err}")))?;
    let spec: FaultSpec = serde_json::from_value(value.clone())
        .map_err(|err| invalid(format!("invalid fault spec: {err}")))?;
    // Every field of a kind is serialised, so its serialised form lists them.
    let kind = serde_json::to_value(&spec.kind).unwrap_or_default();
    let known = |field: &str| field == "duration_s" || kind.get(field).is_some();
    if let Some(field) = value
        .as_object()
        .and_then(|fields| fields.keys().find(|field| !known(field)))
    {
        let mut expected: Vec<&str> = kind
            .as_object()
            .map(|fields| fields.keys().map(String::as_str).collect())
            .unwrap_or_default();
        expected.push("duration_s");
        let field = echoed(field);
        return Err(ApiError::unprocessable(
            Some(&field),
            format!(
                "invalid fault spec: unknown field `{field}`; a {} fault takes {}",
                kind["kind"].as_str().unwrap_or("this"),
                expected.join(", ")
            ),
        ));
    }
    Ok(spec)
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
