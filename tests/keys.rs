//! Per-client keys on `/v1`: a key is required once any exists, the tenant comes
//! from the key (so two clients never share a cache), and the rate limits refuse
//! with OpenAI's 429 and recover as the clock moves. The clock is the server's
//! manual one: nothing here sleeps.

mod support;

use chaosai::clients::hash_key;
use chaosai::config::ClientConfig;
use serde_json::{json, Value};
use std::time::Duration;
use support::app::{api_error, ask, TestServer};

const ACME: &str = "sk-acme-0123456789abcdef";
const BETA: &str = "sk-beta-0123456789abcdef";
const THRIFTY: &str = "sk-thrifty-0123456789ab";

fn client(name: &str, key: &str, rpm: Option<u32>, tpm: Option<u32>) -> ClientConfig {
    ClientConfig {
        name: name.into(),
        tenant: format!("{name}-shop"),
        key_sha256: hash_key(key),
        rpm,
        tpm,
    }
}

async fn keyed() -> TestServer {
    TestServer::start_with(|c| {
        c.cache.enabled = true;
        c.clients = vec![
            client("acme", ACME, Some(3), None),
            client("beta", BETA, None, None),
            client("thrifty", THRIFTY, None, Some(60)),
        ];
    })
    .await
}

async fn chat(s: &TestServer, key: Option<&str>, question: &str) -> reqwest::Response {
    chat_from(s, None, key, question).await
}

/// A question asked with `key` (or none), by a page at `origin` (or a server).
async fn chat_from(
    s: &TestServer,
    origin: Option<&str>,
    key: Option<&str>,
    question: &str,
) -> reqwest::Response {
    let mut request = s
        .client
        .post(s.url("/v1/chat/completions"))
        .json(&ask("chaosai", question, false));
    if let Some(origin) = origin {
        request = request.header("origin", origin);
    }
    if let Some(key) = key {
        request = request.bearer_auth(key);
    }
    request.send().await.unwrap()
}

#[tokio::test]
async fn a_missing_or_wrong_key_is_a_401_in_openais_shape() {
    let s = keyed().await;
    for key in [None, Some("sk-not-a-key"), Some("")] {
        let res = chat(&s, key, "How do I reset my password?").await;
        assert_eq!(res.status(), 401, "{key:?}");
        assert_eq!(res.headers()["www-authenticate"], "Bearer");
        let body: Value = res.json().await.unwrap();
        assert_eq!(body["error"]["code"], "invalid_api_key");
        assert_eq!(body["error"]["type"], "invalid_request_error");
    }
    let models = s.client.get(s.url("/v1/models")).send().await.unwrap();
    assert_eq!(models.status(), 401, "the model list needs a key too");
    let res = chat(&s, Some(BETA), "How do I reset my password?").await;
    assert_eq!(res.status(), 200);
}

#[tokio::test]
async fn the_tenant_comes_from_the_key_so_clients_never_share_a_cache() {
    let s = keyed().await;
    let question = "How do I reset my password?";
    let first = chat(&s, Some(BETA), question).await;
    assert_eq!(first.headers()["x-chaosai-served-by"], "claude");
    // The answer is stored off the request path.
    s.rows("SELECT COUNT(*) FROM cache_entries", |n| n >= 1)
        .await;
    let again = chat(&s, Some(BETA), question).await;
    assert_eq!(again.headers()["x-chaosai-served-by"], "cache");
    // Another client asking the same is answered by a provider, not beta's cache.
    let other = chat(&s, Some(ACME), question).await;
    assert_eq!(other.headers()["x-chaosai-served-by"], "claude");
    // No header can claim another tenant.
    let claim = s
        .client
        .post(s.url("/v1/chat/completions"))
        .bearer_auth(ACME)
        .header("x-chaosai-tenant", "beta-shop")
        .json(&ask("chaosai", question, false))
        .send()
        .await
        .unwrap();
    assert_eq!(api_error(claim, 400).await["param"], "x-chaosai-tenant");
    let id = other.headers()["x-request-id"]
        .to_str()
        .unwrap()
        .to_string();
    s.audited(&id).await;
    let tenant: String = chaosai::with_db!(s.server.store.db(), pool => sqlx::query_scalar("SELECT tenant FROM requests WHERE id = ?")
        .bind(&id)
        .fetch_one(pool)
        .await)
        .unwrap();
    assert_eq!(tenant, "acme-shop");
}

#[tokio::test]
async fn requests_per_minute_refuse_with_retry_after_and_recover() {
    let s = keyed().await;
    for n in 0..3 {
        let res = chat(
            &s,
            Some(ACME),
            &format!("Question {n}: where is my parcel?"),
        )
        .await;
        assert_eq!(res.status(), 200, "request {n} is within the limit");
    }
    let refused = chat(&s, Some(ACME), "One more: where is my parcel?").await;
    assert_eq!(refused.status(), 429);
    assert_eq!(refused.headers()["retry-after"], "20");
    assert_eq!(refused.headers()["x-ratelimit-limit-requests"], "3");
    let body: Value = refused.json().await.unwrap();
    assert_eq!(body["error"]["code"], "rate_limit_exceeded");
    assert_eq!(body["error"]["type"], "requests");
    assert_eq!(
        s.metric(r#"chaosai_client_rate_limited_total{client="acme",limit="requests"}"#)
            .await,
        1.0
    );
    // Other clients are not held back by acme's limit.
    assert_eq!(
        chat(&s, Some(BETA), "Where is my parcel?").await.status(),
        200
    );
    s.clock.advance(Duration::from_secs(19));
    assert_eq!(chat(&s, Some(ACME), "Still waiting?").await.status(), 429);
    s.clock.advance(Duration::from_secs(1));
    assert_eq!(
        chat(&s, Some(ACME), "Where is my parcel now?")
            .await
            .status(),
        200
    );
}

#[tokio::test]
async fn tokens_per_minute_are_charged_with_the_answers_true_usage() {
    let s = keyed().await;
    let first = chat(&s, Some(THRIFTY), "How do I reset my password?").await;
    assert_eq!(first.status(), 200);
    let body: Value = first.json().await.unwrap();
    let spent = body["usage"]["total_tokens"].as_u64().unwrap();
    assert!(
        spent > 60,
        "one answer spends more than the minute's 60 tokens: {spent}"
    );
    let refused = chat(&s, Some(THRIFTY), "And my email?").await;
    assert_eq!(refused.status(), 429);
    let wait: u64 = refused.headers()["retry-after"]
        .to_str()
        .unwrap()
        .parse()
        .unwrap();
    let body: Value = refused.json().await.unwrap();
    assert_eq!(body["error"]["type"], "tokens");
    // At one token a second, the debt takes as many seconds as it is large.
    assert_eq!(wait, spent - 60 + 1, "retry-after {wait} for {spent} spent");
    s.clock.advance(Duration::from_secs(wait));
    assert_eq!(chat(&s, Some(THRIFTY), "And my email?").await.status(), 200);
}

#[tokio::test]
async fn keys_made_through_the_admin_api_work_at_once_and_survive_only_as_hashes() {
    let s = keyed().await;
    let key = s
        .make_client(json!({"name": "gamma", "tenant": "gamma-shop", "rpm": 100}))
        .await;
    assert!(key.starts_with("sk-chaosai-"));
    assert_eq!(
        chat(&s, Some(&key), "Where is my parcel?").await.status(),
        200
    );
    let stored: String = chaosai::with_db!(s.server.store.db(), pool => sqlx::query_scalar("SELECT key_sha256 FROM clients WHERE name = 'gamma'")
        .fetch_one(pool)
        .await)
        .unwrap();
    assert_eq!(stored, hash_key(&key));
    let listed: Value = s.admin_json("/api/clients").await;
    assert!(listed.to_string().contains("gamma-shop"));
    assert!(
        !listed.to_string().contains(&key),
        "a key is never shown again"
    );
    // A config key cannot be removed here; gamma can, and its key stops working.
    let config = s
        .admin(reqwest::Method::DELETE, "/api/clients/acme")
        .send()
        .await
        .unwrap();
    assert_eq!(config.status(), 409);
    let removed = s
        .admin(reqwest::Method::DELETE, "/api/clients/gamma")
        .send()
        .await
        .unwrap();
    assert_eq!(removed.status(), 204);
    assert_eq!(
        chat(&s, Some(&key), "Where is my parcel?").await.status(),
        401
    );
    let bad = s
        .admin(reqwest::Method::POST, "/api/clients")
        .json(&json!({"name": "has space", "tenant": "t"}))
        .send()
        .await
        .unwrap();
    support::assert_invalid(bad, "name").await;
}

#[tokio::test]
async fn without_keys_v1_is_open_and_single_tenant() {
    let s = TestServer::start().await;
    let res = chat(&s, None, "How do I reset my password?").await;
    assert_eq!(res.status(), 200);
    let id = res.headers()["x-request-id"].to_str().unwrap().to_string();
    s.audited(&id).await;
    let tenant: String = chaosai::with_db!(s.server.store.db(), pool => sqlx::query_scalar("SELECT tenant FROM requests WHERE id = ?")
        .bind(&id)
        .fetch_one(pool)
        .await)
        .unwrap();
    assert_eq!(tenant, "default");
}

/// A browser's preflight for `path` from a page at `origin`, as Chromium sends
/// it for the OpenAI SDK.
async fn preflight(s: &TestServer, path: &str, origin: &str) -> reqwest::Response {
    s.client
        .request(reqwest::Method::OPTIONS, s.url(path))
        .header("origin", origin)
        .header("access-control-request-method", "POST")
        .header(
            "access-control-request-headers",
            "authorization,content-type,x-stainless-os",
        )
        .send()
        .await
        .unwrap()
}

/// The `Access-Control-Allow-Origin` a response carries, if any.
fn allowed_origin(res: &reqwest::Response) -> Option<String> {
    res.headers()
        .get("access-control-allow-origin")
        .map(|v| v.to_str().unwrap().to_string())
}

#[tokio::test]
async fn without_keys_only_listed_sites_may_read_v1_from_a_browser() {
    let s = TestServer::start_with(|c| c.server.api_origins = vec!["https://shop.example".into()])
        .await;
    let ok = preflight(&s, "/v1/chat/completions", "https://shop.example").await;
    assert!(ok.status().is_success(), "{}", ok.status());
    assert_eq!(allowed_origin(&ok).as_deref(), Some("https://shop.example"));
    let methods = ok.headers()["access-control-allow-methods"]
        .to_str()
        .unwrap();
    assert!(methods.contains("POST"), "{methods}");
    let headers = ok.headers()["access-control-allow-headers"]
        .to_str()
        .unwrap();
    assert!(
        headers.contains("authorization") && headers.contains("x-stainless-os"),
        "{headers}"
    );
    assert_eq!(ok.headers()["access-control-max-age"], "600");
    // Any other site is not told it may read: the browser stops the request.
    let foreign = preflight(&s, "/v1/chat/completions", "https://evil.example").await;
    assert_eq!(allowed_origin(&foreign), None);

    // The answer itself, read by the listed page: its headers are exposed.
    let res = chat_from(
        &s,
        Some("https://shop.example"),
        None,
        "How do I reset my password?",
    )
    .await;
    assert_eq!(res.status(), 200);
    assert_eq!(
        allowed_origin(&res).as_deref(),
        Some("https://shop.example")
    );
    let exposed = res.headers()["access-control-expose-headers"]
        .to_str()
        .unwrap();
    for name in ["x-request-id", "x-chaosai-served-by", "retry-after"] {
        assert!(exposed.contains(name), "{name} in {exposed}");
    }
    let vary = res.headers()["vary"].to_str().unwrap().to_ascii_lowercase();
    assert!(vary.contains("origin"), "{vary}");
}

#[tokio::test]
async fn with_keys_any_site_may_call_v1_with_a_key_but_never_the_admin_surfaces() {
    let s = keyed().await;
    let ok = preflight(&s, "/v1/chat/completions", "https://any.example").await;
    assert_eq!(allowed_origin(&ok).as_deref(), Some("https://any.example"));
    // A refusal is readable too, so the page's SDK raises AuthenticationError
    // rather than an opaque network error.
    let refused = chat_from(&s, Some("https://any.example"), None, "hi").await;
    assert_eq!(refused.status(), 401);
    assert_eq!(
        allowed_origin(&refused).as_deref(),
        Some("https://any.example")
    );
    let answered = chat_from(
        &s,
        Some("https://any.example"),
        Some(BETA),
        "How do I reset my password?",
    )
    .await;
    assert_eq!(answered.status(), 200);
    assert_eq!(
        allowed_origin(&answered).as_deref(),
        Some("https://any.example")
    );
    // The operator's surfaces grant no other site anything.
    for path in ["/api/chaos/claude", "/api/clients"] {
        let admin = preflight(&s, path, "https://any.example").await;
        assert_eq!(allowed_origin(&admin), None, "{path}");
    }
}
