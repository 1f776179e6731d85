//! Requests no API route takes, answered in the API's error shape: an SDK or a
//! script that calls a wrong URL or uses a wrong method gets JSON naming the
//! problem, not an empty 405 or the site's HTML page.

use super::error::{echoed, ApiError};
use axum::http::{Method, Uri};

/// What the OpenAI-compatible surface serves, for the message of a wrong URL.
const SERVED: &str =
    "POST /v1/chat/completions, POST /v1/responses, GET /v1/models and GET /v1/models/{model}";

/// A path under `/v1` that no route takes: a 404 that names it.
pub async fn unknown_v1(method: Method, uri: Uri) -> ApiError {
    let mut error = ApiError::not_found(format!(
        "no endpoint {method} {}: this gateway serves {SERVED}",
        echoed(uri.path())
    ));
    error.code = Some("unknown_url");
    error
}

/// A method an API route does not take: a 405 that names it (axum adds the
/// `Allow` header with the methods the route takes).
pub async fn method_not_allowed(method: Method, uri: Uri) -> ApiError {
    ApiError::method_not_allowed(format!(
        "{} does not take {method}; the Allow header lists the methods it takes",
        echoed(uri.path())
    ))
}
