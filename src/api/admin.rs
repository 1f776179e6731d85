//! Who may use the admin surfaces (the chaos, audit and cache APIs, the board's
//! server functions, the event websocket): whoever presents the admin token, as
//! `Authorization: Bearer …`, `x-admin-token: …`, or the cookie the board login sets.

use super::{error::ApiError, AppState};
use axum::{
    extract::{rejection::FormRejection, FromRequestParts, Query, State},
    http::{header, request::Parts, HeaderMap},
    response::{IntoResponse, Redirect, Response},
    Form,
};
use std::collections::HashMap;
use std::sync::Mutex;
use std::time::{Duration, Instant};

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

/// How long the admin cookie lasts.
const COOKIE_MAX_AGE_S: u64 = 12 * 3600;

/// How long the one-time board link printed at start-up stays valid.
const LINK_LIFETIME: Duration = Duration::from_secs(3600);

/// The one-time code of the board link printed at start-up: the link never
/// carries the token itself, and works once.
pub struct LoginCode {
    code: Mutex<Option<(String, Instant)>>,
}

impl LoginCode {
    /// A fresh code, valid for an hour or one use.
    pub fn new() -> Self {
        Self {
            code: Mutex::new(Some((
                uuid::Uuid::new_v4().simple().to_string(),
                Instant::now() + LINK_LIFETIME,
            ))),
        }
    }

    /// The code, while it is unused and valid.
    pub fn peek(&self) -> Option<String> {
        let code = self.code.lock().unwrap_or_else(|e| e.into_inner());
        code.as_ref()
            .filter(|(_, until)| Instant::now() < *until)
            .map(|(c, _)| c.clone())
    }

    /// Uses the code: `true` once for the right, unexpired code.
    fn redeem(&self, offered: &str) -> bool {
        let mut code = self.code.lock().unwrap_or_else(|e| e.into_inner());
        let valid = code
            .as_ref()
            .is_some_and(|(c, until)| same(c, offered) && Instant::now() < *until);
        if valid {
            *code = None;
        }
        valid
    }
}

impl Default for LoginCode {
    fn default() -> Self {
        Self::new()
    }
}

/// The response that logs a browser in: the admin cookie, and on to the board.
fn logged_in(state: &AppState) -> Response {
    let secure = if state.secure_cookies { "; Secure" } else { "" };
    let cookie = format!(
        "{COOKIE}={}; Path=/; HttpOnly; SameSite=Strict; Max-Age={COOKIE_MAX_AGE_S}{secure}",
        state.admin_token
    );
    ([(header::SET_COOKIE, cookie)], Redirect::to("/chaos")).into_response()
}

/// `GET /chaos/login?code=…`: the one-time link printed at start-up. A token in
/// the URL is refused: URLs end up in histories and access logs.
pub async fn login_link(
    State(state): State<AppState>,
    Query(query): Query<HashMap<String, String>>,
) -> Response {
    if query.contains_key("token") {
        return ApiError::invalid(
            Some("token"),
            "the admin token is never sent in a URL: POST it to /chaos/login as the form field `token`",
        )
        .into_response();
    }
    match query.get("code") {
        Some(code) if state.login_code.redeem(code) => logged_in(&state),
        _ => Redirect::to("/chaos?login=expired").into_response(),
    }
}

/// The board's login form.
#[derive(serde::Deserialize)]
pub struct LoginForm {
    token: String,
}

/// `POST /chaos/login` with the form field `token`.
pub async fn login(
    State(state): State<AppState>,
    form: Result<Form<LoginForm>, FormRejection>,
) -> Response {
    match form {
        Ok(Form(form)) if same(form.token.trim(), &state.admin_token) => logged_in(&state),
        Ok(_) => Redirect::to("/chaos?login=failed").into_response(),
        Err(rejection) => ApiError::invalid(Some("token"), rejection.body_text()).into_response(),
    }
}
