//! Requests no API route takes, answered in the API's error shape: an SDK or a
//! script that calls a wrong URL or uses a wrong method gets JSON naming the
//! problem, not an empty 405 or the site's HTML page.

use super::error::ApiError;
use axum::http::{Method, Uri};

/// What the OpenAI-compatible surface serves, for the message of a wrong URL.
const SERVED: &str = "POST /v1/chat/completions and GET /v1/models";

/// Most characters of a path an error echoes: a URL can be long.
const MAX_ECHOED: usize = 200;

/// `uri`'s path as an error names it, cut at [`MAX_ECHOED`] characters.
fn echoed(uri: &Uri) -> String {
    let path = uri.path();
    match path.char_indices().nth(MAX_ECHOED) {
        Some((cut, _)) => format!("{}…", &path[..cut]),
        None => path.to_string(),
    }
}

/// A path under `/v1` that no route takes: a 404 that names it.
pub async fn unknown_v1(method: Method, uri: Uri) -> ApiError {
    let mut error = ApiError::not_found(format!(
        "no endpoint {method} {}: this gateway serves {SERVED}",
        echoed(&uri)
    ));
    error.code = Some("unknown_url");
    error
}

/// A method an API route does not take: a 405 that names it (axum adds the
/// `Allow` header with the methods the route takes).
pub async fn method_not_allowed(method: Method, uri: Uri) -> ApiError {
    ApiError::method_not_allowed(format!(
        "{} does not take {method}; the Allow header lists the methods it takes",
        echoed(&uri)
    ))
}
