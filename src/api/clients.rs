//! The client-key admin API (admin token): list the clients, make one (its key
//! is shown once, in the answer, and kept only as a hash), remove one.

use super::{admin::Admin, error::ApiError, params::PathText, AppState};
use crate::clients::{hash_key, new_key, ClientError, ClientSpec, ClientStatus, KeyOrigin};
use axum::{
    body::Bytes,
    extract::{rejection::BytesRejection, State},
    http::StatusCode,
    response::{IntoResponse, Response},
    Json,
};
use serde::Deserialize;
use serde_json::json;

/// A client to make.
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct NewClient {
    name: String,
    tenant: String,
    #[serde(default)]
    rpm: Option<u32>,
    #[serde(default)]
    tpm: Option<u32>,
}

fn conflict(err: ClientError) -> ApiError {
    let mut error = ApiError::invalid(Some("name"), err.to_string());
    error.status = match err {
        ClientError::Unknown(_) => StatusCode::NOT_FOUND,
        ClientError::Duplicate(_) | ClientError::FromConfig(_) => StatusCode::CONFLICT,
    };
    error
}

/// `GET /api/clients`: every client, without its key, with what is left of
/// its limits now (`remaining_requests`, `remaining_tokens`; with replicas,
/// what this one knows the cluster spent).
pub async fn list(_: Admin, State(state): State<AppState>) -> Json<Vec<ClientStatus>> {
    Json(state.clients.list_remaining())
}

/// `POST /api/clients` `{name, tenant, rpm?, tpm?}`: makes a client; the answer
/// carries its key, the only time it is ever shown.
pub async fn create(
    _: Admin,
    State(state): State<AppState>,
    body: Result<Bytes, BytesRejection>,
) -> Result<Response, ApiError> {
    let new: NewClient = serde_json::from_slice(&body?)
        .map_err(|err| ApiError::invalid(None, format!("invalid client: {err}")))?;
    let valid = |text: &str| {
        !text.is_empty()
            && text.len() <= 128
            && text
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || b"-_.".contains(&b))
    };
    for (field, value) in [("name", &new.name), ("tenant", &new.tenant)] {
        if !valid(value) {
            return Err(ApiError::invalid(
                Some(field),
                format!("{field} must be 1-128 letters, digits, '-', '_' or '.'"),
            ));
        }
    }
    for (field, value) in [("rpm", new.rpm), ("tpm", new.tpm)] {
        if value == Some(0) {
            return Err(ApiError::invalid(
                Some(field),
                format!("{field} must be at least 1; leave it out for no limit"),
            ));
        }
    }
    let key = new_key();
    let spec = ClientSpec {
        name: new.name,
        tenant: new.tenant,
        key_sha256: hash_key(&key),
        rpm: new.rpm,
        tpm: new.tpm,
        origin: KeyOrigin::Admin,
    };
    let _changing = state.clients.changing().await;
    state.clients.add(spec.clone()).map_err(conflict)?;
    if let Err(err) = state
        .store
        .insert_client(&spec, crate::clock::unix_ms_now())
        .await
    {
        // A key that would not survive a restart is not handed out.
        let _ = state.clients.remove(&spec.name);
        return Err(err.into());
    }
    tracing::info!(client = %spec.name, tenant = %spec.tenant, "client key made");
    let mut body = serde_json::to_value(&spec).unwrap_or_default();
    body["key"] = json!(key);
    Ok((StatusCode::CREATED, Json(body)).into_response())
}

/// `DELETE /api/clients/{name}`: removes a client made through this API.
pub async fn remove(
    _: Admin,
    State(state): State<AppState>,
    PathText(name): PathText,
) -> Result<StatusCode, ApiError> {
    let _changing = state.clients.changing().await;
    let spec = state.clients.remove(&name).map_err(conflict)?;
    if let Err(err) = state.store.delete_client(&spec.name).await {
        // Kept in the database, it would come back at the next start.
        let _ = state.clients.add(spec);
        return Err(err.into());
    }
    tracing::info!(client = %name, "client key removed");
    Ok(StatusCode::NO_CONTENT)
}
