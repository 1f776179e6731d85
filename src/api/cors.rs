//! Browsers on other sites calling `/v1`, as they call OpenAI's API (the SDKs'
//! `dangerouslyAllowBrowser`): the preflight is answered, and the response lets
//! the page read the answer and the gateway's headers.
//!
//! Which pages may read answers depends on what a request must carry:
//! - while `/v1` needs a client key, any page: a key is the whole authority, it
//!   is sent as a header (never a cookie), so a page can spend only a key it
//!   already holds;
//! - while it needs none (the demo), only the origins the operator lists
//!   (`server.api_origins`, and `server.public_url`). Otherwise any site a
//!   visitor opens could read answers from a gateway on their machine or
//!   network, and spend its providers' credit.
//!
//! The admin surfaces never take part: they refuse other sites outright (the
//! `origin` module).
//!
//! Only a request that names an `Origin` and asks for `/v1` goes through the
//! CORS layer; the rest (every server-side SDK, the pages) skip it. As a layer
//! of the router's `/v1` routes it was cloned, called and dropped for every
//! request, with or without an `Origin`: about 17,000 instructions, 8% of a
//! whole non-streamed request.

use crate::clients::Clients;
use axum::extract::Request;
use axum::http::{header, request::Parts, HeaderName, HeaderValue, Method};
use axum::response::Response;
use axum::Router;
use futures::future::Either;
use std::convert::Infallible;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Duration;
use tower::{Layer, Service};
use tower_http::cors::{AllowHeaders, AllowOrigin, Cors, CorsLayer};

/// How long a browser may reuse a preflight: the ten minutes most browsers
/// allow at most; whether an answer may be read is still decided per request.
const PREFLIGHT_MAX_AGE: Duration = Duration::from_secs(600);

/// The response headers a page may read: the request id, who served and what
/// it cost, the ticket, and what a refused request should wait.
const EXPOSED: [&str; 14] = [
    "x-request-id",
    "x-chaosai-served-by",
    "x-chaosai-overhead-ms",
    "x-chaosai-tenant",
    "x-chaosai-cache",
    "x-chaosai-cache-similarity",
    "x-chaosai-ticket",
    "x-chaosai-usage",
    "x-chaosai-on-break",
    "retry-after",
    "x-ratelimit-limit-requests",
    "x-ratelimit-limit-tokens",
    "x-ratelimit-remaining-requests",
    "x-ratelimit-remaining-tokens",
];

/// The origins that may read `/v1` answers while no key is required.
#[derive(Clone, Debug, Default)]
pub struct ApiOrigins {
    /// Every origin (`*` was listed).
    any: bool,
    /// `scheme://host[:port]`, without a trailing slash.
    listed: Vec<String>,
}

impl ApiOrigins {
    /// From the configured list; `*` admits every origin.
    pub fn new<'a>(origins: impl IntoIterator<Item = &'a str>) -> Self {
        let mut this = Self::default();
        for origin in origins {
            match origin.trim().trim_end_matches('/') {
                "*" => this.any = true,
                "" => {}
                origin => this.listed.push(origin.to_string()),
            }
        }
        this
    }

    fn admits(&self, origin: &HeaderValue) -> bool {
        self.any
            || origin
                .to_str()
                .is_ok_and(|o| self.listed.iter().any(|l| l.eq_ignore_ascii_case(o)))
    }
}

/// The whole app, with CORS on `/v1`.
#[derive(Clone)]
pub struct WithCors {
    /// Every route.
    app: Router,
    /// The same routes behind the CORS layer; shared, since the server clones
    /// its service for every request.
    cors: Arc<Cors<Router>>,
}

impl WithCors {
    /// `app`, whose `/v1` answers pages may read as [`cors_layer`] allows.
    pub fn new(app: Router, clients: Arc<Clients>, origins: ApiOrigins) -> Self {
        let cors = Arc::new(cors_layer(clients, origins).layer(app.clone()));
        Self { app, cors }
    }
}

/// Whether `request` is one a browser may send from another site to `/v1`.
fn is_cross_site_api(request: &Request) -> bool {
    let path = request.uri().path();
    (path == "/v1" || path.starts_with("/v1/")) && request.headers().contains_key(header::ORIGIN)
}

impl Service<Request> for WithCors {
    type Response = Response;
    type Error = Infallible;
    type Future =
        Either<<Router as Service<Request>>::Future, <Cors<Router> as Service<Request>>::Future>;

    fn poll_ready(&mut self, _: &mut Context<'_>) -> Poll<Result<(), Infallible>> {
        // A router is always ready, and so is the CORS layer over it.
        Poll::Ready(Ok(()))
    }

    fn call(&mut self, request: Request) -> Self::Future {
        if is_cross_site_api(&request) {
            Either::Right(Cors::clone(&self.cors).call(request))
        } else {
            Either::Left(self.app.call(request))
        }
    }
}

/// The CORS layer of `/v1`.
fn cors_layer(clients: Arc<Clients>, origins: ApiOrigins) -> CorsLayer {
    let origin = AllowOrigin::predicate(move |origin: &HeaderValue, _: &Parts| {
        !clients.is_open() || origins.admits(origin)
    });
    CorsLayer::new()
        .allow_origin(origin)
        .allow_methods([Method::GET, Method::POST])
        // The SDKs send their own headers (`x-stainless-*`, `openai-beta`, …);
        // none of them grants anything, and the key is checked as always.
        .allow_headers(AllowHeaders::mirror_request())
        .expose_headers(EXPOSED.map(HeaderName::from_static))
        .max_age(PREFLIGHT_MAX_AGE)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn listed_origins_match_whole_and_without_a_trailing_slash() {
        let origins = ApiOrigins::new(["https://Shop.example/", " http://localhost:5173 "]);
        let admits = |o: &'static str| origins.admits(&HeaderValue::from_static(o));
        assert!(admits("https://shop.example"));
        assert!(admits("http://localhost:5173"));
        assert!(!admits("https://shop.example.evil.test"));
        assert!(!admits("http://shop.example"));
        assert!(!admits("null"));
        assert!(ApiOrigins::new(["*"]).admits(&HeaderValue::from_static("https://any.test")));
        assert!(!ApiOrigins::new([""]).admits(&HeaderValue::from_static("https://any.test")));
    }
}
