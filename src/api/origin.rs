//! No control from another site: the admin surfaces (the chaos, audit and cache
//! APIs, the board's server functions, the event websocket, the board login)
//! refuse any request a browser says came from another origin, whatever its
//! content type and whatever credentials it carries. The admin cookie is
//! `SameSite=Strict` already; this holds even where a browser would send it.
//!
//! A browser request says where it came from in `Sec-Fetch-Site` (modern
//! browsers) and `Origin` (every cross-origin request, and same-origin POSTs);
//! tools such as curl send neither and are judged by their token alone.

use super::error::ApiError;
use axum::{
    extract::Request,
    http::{header, HeaderMap, StatusCode},
    middleware::Next,
    response::{IntoResponse, Response},
};

/// Paths that change or reveal the gateway's state for an operator.
const ADMIN_PATHS: &[&str] = &[
    "/api/providers",
    "/api/chaos",
    "/api/audit",
    "/api/tickets",
    "/api/clients",
    "/api/cache",
    "/api/board/",
    "/ws/events",
    "/chaos/login",
];

/// Whether `path` is an admin surface.
fn is_admin(path: &str) -> bool {
    ADMIN_PATHS.iter().any(|prefix| path.starts_with(prefix))
}

/// Why a request is refused as coming from another site, if it is.
fn foreign(headers: &HeaderMap, allowed: &[String]) -> Option<String> {
    let get = |name: &str| headers.get(name).and_then(|v| v.to_str().ok());
    match get("sec-fetch-site") {
        None | Some("same-origin") | Some("none") => {}
        Some(other) => return Some(format!("Sec-Fetch-Site: {other}")),
    }
    let origin = get("origin")?;
    if allowed.iter().any(|a| a.trim_end_matches('/') == origin) {
        return None;
    }
    let host = headers.get(header::HOST).and_then(|v| v.to_str().ok());
    let origin_host = origin
        .strip_prefix("http://")
        .or_else(|| origin.strip_prefix("https://"));
    match (origin_host, host) {
        (Some(origin_host), Some(host)) if origin_host == host => None,
        _ => Some(format!("Origin: {origin}")),
    }
}

/// The guard, as an axum middleware; `allowed` lists extra origins (the public
/// address behind a proxy) that may reach the admin surfaces.
pub async fn same_origin_only(
    allowed: std::sync::Arc<[String]>,
    request: Request,
    next: Next,
) -> Response {
    if is_admin(request.uri().path()) {
        if let Some(why) = foreign(request.headers(), &allowed) {
            tracing::warn!(path = %request.uri().path(), %why, "cross-site request to an admin surface refused");
            return ApiError {
                status: StatusCode::FORBIDDEN,
                kind: "permission_error",
                code: Some("cross_site_request"),
                param: None,
                message: format!("admin surfaces accept requests from this site only ({why})"),
                headers: None,
            }
            .into_response();
        }
    }
    next.run(request).await
}

#[cfg(test)]
mod tests {
    use super::*;

    fn headers(pairs: &[(&'static str, &str)]) -> HeaderMap {
        let mut map = HeaderMap::new();
        for (k, v) in pairs {
            map.insert(*k, v.parse().unwrap());
        }
        map
    }

    #[test]
    fn only_this_sites_pages_and_tools_without_an_origin_pass() {
        let here = ("host", "127.0.0.1:3000");
        assert_eq!(foreign(&headers(&[here]), &[]), None, "curl");
        assert_eq!(
            foreign(
                &headers(&[
                    here,
                    ("origin", "http://127.0.0.1:3000"),
                    ("sec-fetch-site", "same-origin")
                ]),
                &[]
            ),
            None
        );
        assert!(foreign(&headers(&[here, ("origin", "https://evil.example")]), &[]).is_some());
        assert!(foreign(&headers(&[here, ("sec-fetch-site", "cross-site")]), &[]).is_some());
        assert!(foreign(&headers(&[here, ("sec-fetch-site", "same-site")]), &[]).is_some());
        assert!(foreign(&headers(&[here, ("origin", "null")]), &[]).is_some());
        let proxy = vec!["https://support.example.com".to_string()];
        assert_eq!(
            foreign(
                &headers(&[here, ("origin", "https://support.example.com")]),
                &proxy
            ),
            None
        );
        assert!(
            is_admin("/api/board/fault") && is_admin("/api/chaos/gpt") && !is_admin("/api/ask")
        );
        assert!(!is_admin("/v1/chat/completions"));
    }
}
