//! Who may use the admin surfaces (the chaos, audit and cache APIs, the board's
//! server functions, the event websocket): whoever presents the admin token, as
//! `Authorization: Bearer …`, `x-admin-token: …`, or the cookie the board login sets.

use super::{error::ApiError, AppState};
use axum::{
    extract::{FromRequestParts, Query, State},
    http::{header, request::Parts, HeaderMap},
    response::{IntoResponse, Redirect, Response},
};
use std::collections::HashMap;

/// Proof that the caller presented the admin token.
pub struct Admin;

/// The admin cookie the board link sets.
pub const COOKIE: &str = "chaosai_admin";

fn presented(headers: &HeaderMap) -> Option<String> {
    let header = |name: &str| headers.get(name).and_then(|v| v.to_str().ok());
    if let Some(token) = header("authorization").and_then(|v| v.strip_prefix("Bearer ")) {
        return Some(token.trim().to_string());
    }
    if let Some(token) = header("x-admin-token") {
        return Some(token.trim().to_string());
    }
    header("cookie").and_then(|cookies| {
        cookies
            .split(';')
            .filter_map(|c| c.trim().split_once('='))
            .find(|(k, _)| *k == COOKIE)
            .map(|(_, v)| v.to_string())
    })
}

/// Compares without an early exit, so response timing does not reveal the token.
fn same(a: &str, b: &str) -> bool {
    a.len() == b.len()
        && a.bytes()
            .zip(b.bytes())
            .fold(0u8, |acc, (x, y)| acc | (x ^ y))
            == 0
}

/// Checks `headers` for the admin token.
pub fn check(headers: &HeaderMap, token: &str) -> Result<Admin, ApiError> {
    match presented(headers) {
        Some(t) if same(&t, token) => Ok(Admin),
        Some(_) => Err(ApiError::unauthorized("the admin token is wrong")),
        None => Err(ApiError::unauthorized(
            "an admin token is required (Authorization: Bearer <CHAOSAI_ADMIN_TOKEN>)",
        )),
    }
}

impl FromRequestParts<AppState> for Admin {
    type Rejection = ApiError;

    async fn from_request_parts(
        parts: &mut Parts,
        state: &AppState,
    ) -> Result<Self, Self::Rejection> {
        check(&parts.headers, &state.admin_token)
    }
}

/// `GET /chaos/login?token=…`: the link printed at start-up. Sets the admin
/// cookie and opens the board.
pub async fn login(
    State(state): State<AppState>,
    Query(query): Query<HashMap<String, String>>,
) -> Response {
    match query.get("token") {
        Some(token) if same(token, &state.admin_token) => {
            let cookie = format!("{COOKIE}={token}; Path=/; HttpOnly; SameSite=Strict");
            ([(header::SET_COOKIE, cookie)], Redirect::to("/chaos")).into_response()
        }
        Some(_) => ApiError::unauthorized("the admin token is wrong").into_response(),
        None => ApiError::invalid(
            Some("token"),
            "token is required: /chaos/login?token=<admin token>",
        )
        .into_response(),
    }
}
