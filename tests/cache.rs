//! Layer 0: the semantic cache through the whole server, its guards, scopes,
//! persistence, degraded mode and admin API.

mod support;

use chaosai::cache::{CacheSettings, Embedder, SemanticCache};
use chaosai::clock::ManualClock;
use chaosai::config::{Config, EmbedderConfig};
use serde_json::{json, Value};
use std::sync::Arc;
use std::time::Duration;
use support::app::{streamed_text, TestServer};

fn cached(config: &mut Config) {
    config.cache.enabled = true;
}

fn served_by(res: &reqwest::Response) -> String {
    res.headers()["x-chaosai-served-by"]
        .to_str()
        .unwrap()
        .to_string()
}

/// The cache admin API's answer, once `ready` holds for its stats (answers are
/// stored after the reply, off the request path).
async fn wait_cache(s: &TestServer, ready: impl Fn(&Value) -> bool) -> Value {
    support::eventually(|| async {
        let body: Value = s.admin_json("/api/cache").await;
        ready(&body["stats"]).then_some(body)
    })
    .await
}

/// The cache's stats once `ready` holds for them.
async fn wait_stats(s: &TestServer, ready: impl Fn(&Value) -> bool) -> Value {
    wait_cache(s, ready).await["stats"].clone()
}

/// Waits until the cache holds `n` entries.
async fn entries(s: &TestServer, n: u64) -> Value {
    wait_cache(s, |stats| stats["entries"].as_u64() >= Some(n)).await
}

#[tokio::test]
async fn a_similar_question_is_answered_from_the_cache_in_the_providers_shape() {
    let s = TestServer::start_with(cached).await;
    let first = s
        .chat("chaosai", "How do I reset my password?", false)
        .await;
    assert_eq!(served_by(&first), "claude");
    let answer: Value = first.json().await.unwrap();
    assert_eq!(entries(&s, 1).await["stats"]["semantic"], true);

    let res = s
        .chat(
            "chaosai",
            "I forgot my password, how can I change it?",
            false,
        )
        .await;
    assert_eq!(served_by(&res), "cache");
    let similarity: f64 = res.headers()["x-chaosai-cache-similarity"]
        .to_str()
        .unwrap()
        .parse()
        .unwrap();
    assert!((0.85..1.0).contains(&similarity), "{similarity}");
    let hit: Value = res.json().await.unwrap();
    assert_eq!(
        hit["choices"][0]["message"],
        answer["choices"][0]["message"]
    );
    assert_eq!(hit["object"], "chat.completion");

    // Streamed: the same SSE shape as a provider's answer.
    let res = s
        .chat(
            "chaosai",
            "I forgot my password, how can I change it?",
            true,
        )
        .await;
    assert_eq!(served_by(&res), "cache");
    let (text, done) = streamed_text(&res.text().await.unwrap());
    assert!(done);
    assert_eq!(
        text,
        answer["choices"][0]["message"]["content"].as_str().unwrap()
    );

    // The audit records the route and the similarity.
    assert_eq!(s.request_rows(3).await, 3);
    let similarities: Vec<Option<f64>> =
        chaosai::with_db!(s.server.store.db(), pool => sqlx::query_scalar("SELECT cache_similarity FROM requests WHERE served_by = 'cache'")
            .fetch_all(pool)
            .await)
            .unwrap();
    assert_eq!(similarities.len(), 2);
    assert!(similarities.iter().all(|s| s.is_some_and(|s| s >= 0.85)));
    assert_eq!(
        s.metric(r#"chaosai_cache_lookups_total{result="hit"}"#)
            .await,
        2.0
    );
    assert_eq!(s.metric("chaosai_cache_entries").await, 1.0);
    // One miss (the first question), two hits.
    let ratio = s.metric("chaosai_cache_hit_ratio").await;
    assert!((ratio - 2.0 / 3.0).abs() < 0.001, "{ratio}");
}

#[tokio::test]
async fn near_misses_go_to_a_provider() {
    let s = TestServer::start_with(cached).await;
    s.chat("chaosai", "How do I cancel my order?", false).await;
    s.chat("chaosai", "Can I return an item after 30 days?", false)
        .await;
    entries(&s, 2).await;
    for question in [
        "How do I cancel my subscription?",
        "Can I return an item after 60 days?",
        "Where is the nearest store?",
    ] {
        let res = s.chat("chaosai", question, false).await;
        assert_eq!(served_by(&res), "claude", "{question}");
    }
    assert!(
        s.metric(r#"chaosai_cache_lookups_total{result="refused"}"#)
            .await
            >= 1.0
    );
}

#[tokio::test]
async fn answers_never_cross_scopes() {
    let s = TestServer::start_with(cached).await;
    s.chat("chaosai", "How much is shipping?", false).await;
    entries(&s, 1).await;
    assert_eq!(
        served_by(&s.chat("chaosai", "How much is shipping?", false).await),
        "cache"
    );
    // Another tenant.
    let res = s
        .client
        .post(s.url("/v1/chat/completions"))
        .header("x-chaosai-tenant", "other-shop")
        .json(&support::app::ask(
            "chaosai",
            "How much is shipping?",
            false,
        ))
        .send()
        .await
        .unwrap();
    assert_eq!(served_by(&res), "claude");
    // Another system prompt.
    let other_system = json!({"model": "chaosai", "messages": [
        {"role": "system", "content": "You sell furniture."},
        {"role": "user", "content": "How much is shipping?"}]});
    let res = s
        .client
        .post(s.url("/v1/chat/completions"))
        .json(&other_system)
        .send()
        .await
        .unwrap();
    assert_eq!(served_by(&res), "claude");
    // The same last message inside another conversation.
    let follow_up = json!({"model": "chaosai", "messages": [
        {"role": "system", "content": "Answer in English."},
        {"role": "user", "content": "I live in Norway."},
        {"role": "assistant", "content": "Thanks!"},
        {"role": "user", "content": "How much is shipping?"}]});
    let res = s
        .client
        .post(s.url("/v1/chat/completions"))
        .json(&follow_up)
        .send()
        .await
        .unwrap();
    assert_eq!(served_by(&res), "claude");
    // Another model.
    assert_eq!(
        served_by(&s.chat("gpt", "How much is shipping?", false).await),
        "gpt"
    );
    // And the bypass header.
    let res = s
        .client
        .post(s.url("/v1/chat/completions"))
        .header("x-chaosai-cache", "bypass")
        .json(&support::app::ask(
            "chaosai",
            "How much is shipping?",
            false,
        ))
        .send()
        .await
        .unwrap();
    assert_eq!(served_by(&res), "claude");
}

#[tokio::test]
async fn personal_data_cut_streams_and_fallbacks_are_never_cached() {
    let s = TestServer::start_with(|c| {
        cached(c);
        c.gateway.first_byte_timeout_ms = 400;
    })
    .await;
    // Personal data in the question.
    s.chat(
        "chaosai",
        "I am jane@example.com, where is my order?",
        false,
    )
    .await;
    // A stream cut with nobody to continue it (pinned).
    s.inject("claude", json!({"kind": "reset", "after_bytes": 900}))
        .await;
    s.chat("claude", "I want to return an item", true)
        .await
        .text()
        .await
        .unwrap();
    // A stream spliced across providers.
    s.chat("chaosai", "I want to return an item", true)
        .await
        .text()
        .await
        .unwrap();
    // The last resort.
    for provider in ["claude", "gpt", "llama"] {
        s.inject(provider, json!({"kind": "outage"})).await;
    }
    assert_eq!(
        served_by(&s.chat("chaosai", "My blender is broken", false).await),
        "last-resort"
    );
    // The personal-data refusal is decided off the request path: wait for it.
    let stats = wait_stats(&s, |stats| stats["not_stored"].as_u64() >= Some(1)).await;
    assert_eq!(stats["entries"], 0, "nothing was cached: {stats}");
    assert_eq!(stats["stored"], 0, "{stats}");
}

/// Lookups that wait together share a model run; each paraphrase still scores
/// exactly what it scores alone. With a model that quantises a whole run with
/// one scale, a paraphrase's similarity moved with its company.
#[tokio::test]
async fn a_paraphrase_scores_the_same_alone_and_in_a_shared_run() {
    let pairs = [
        (
            "How do I reset my password?",
            "I forgot my password, how can I change it?",
        ),
        ("Where is my order?", "Where is my order right now?"),
        (
            "How long does a refund take?",
            "How many days does it take to get a refund?",
        ),
        ("How much is shipping?", "How much does shipping cost?"),
        ("Do you ship internationally?", "Do you ship abroad?"),
        (
            "How do I return an item?",
            "What is the process to return an item?",
        ),
    ];
    let s = TestServer::start_with(cached).await;
    for (cached, _) in pairs {
        s.chat("chaosai", cached, false).await;
    }
    entries(&s, pairs.len() as u64).await;
    let similarity = |res: &reqwest::Response| {
        assert_eq!(served_by(res), "cache");
        res.headers()["x-chaosai-cache-similarity"]
            .to_str()
            .unwrap()
            .to_string()
    };
    let mut alone = Vec::new();
    for (_, asked) in pairs {
        alone.push(similarity(&s.chat("chaosai", asked, false).await));
    }
    let counters = s
        .server
        .gateway
        .cache()
        .unwrap()
        .embedding_counters()
        .unwrap();
    let mut shared = false;
    for _ in 0..5 {
        let runs = counters
            .model_runs
            .load(std::sync::atomic::Ordering::Relaxed);
        let together = pairs
            .iter()
            .map(|(_, asked)| s.chat("chaosai", asked, false));
        for (res, alone) in futures::future::join_all(together).await.iter().zip(&alone) {
            assert_eq!(&similarity(res), alone);
        }
        let ran = counters
            .model_runs
            .load(std::sync::atomic::Ordering::Relaxed)
            - runs;
        shared |= ran < pairs.len() as u64;
    }
    assert!(shared, "six lookups at once never shared a model run");
}

#[tokio::test]
async fn without_the_model_the_cache_still_answers_exact_repeats() {
    let s = TestServer::start_with(|c| {
        cached(c);
        c.embedder.model = "/nonexistent/model.onnx".into();
    })
    .await;
    s.chat("chaosai", "How much is shipping?", false).await;
    let stats = entries(&s, 1).await["stats"].clone();
    assert_eq!(stats["semantic"], false);
    let res = s.chat("chaosai", "  how much is SHIPPING ", false).await;
    assert_eq!(served_by(&res), "cache");
    assert_eq!(res.headers()["x-chaosai-cache-similarity"], "1.0000");
    assert_eq!(
        served_by(&s.chat("chaosai", "What does shipping cost?", false).await),
        "claude"
    );
}

#[tokio::test]
async fn the_cache_admin_api_lists_searches_deletes_and_clears() {
    let s = TestServer::start_with(cached).await;
    for q in [
        "How much is shipping?",
        "How do I reset my password?",
        "Can I get a refund?",
    ] {
        s.chat("chaosai", q, false).await;
    }
    let body = entries(&s, 3).await;
    assert_eq!(body["entries"].as_array().unwrap().len(), 3);
    let found: Value = s.admin_json("/api/cache?q=password").await;
    let found = found["entries"].as_array().unwrap().clone();
    assert_eq!(found.len(), 1);
    let id = found[0]["id"].as_i64().unwrap();
    let res = s
        .admin(reqwest::Method::DELETE, &format!("/api/cache/{id}"))
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), 200);
    let res = s
        .admin(reqwest::Method::DELETE, &format!("/api/cache/{id}"))
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), 404);
    assert_eq!(
        served_by(
            &s.chat("chaosai", "How do I reset my password?", false)
                .await
        ),
        "claude"
    );
    // An entry in the table this replica does not hold (another replica stored
    // it) is still deleted there, or it would come back at the next start.
    chaosai::with_db!(s.server.store.db(), pool => sqlx::query(
        "INSERT INTO cache_entries (id, scope, question, normalized, answer, created_at_ms) \
         VALUES (900, 's', 'q', 'q', 'a', 0)",
    )
    .execute(pool)
    .await
    .map(|done| done.rows_affected()))
    .unwrap();
    let res = s
        .admin(reqwest::Method::DELETE, "/api/cache/900")
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), 200);
    let left: i64 = chaosai::with_db!(s.server.store.db(), pool => sqlx::query_scalar(
        "SELECT COUNT(*) FROM cache_entries WHERE id = 900",
    )
    .fetch_one(pool)
    .await)
    .unwrap();
    assert_eq!(left, 0);
    let res = s
        .admin(reqwest::Method::GET, "/api/cache?limit=0")
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), 400);
    let res = s
        .admin(reqwest::Method::DELETE, "/api/cache/abc")
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), 400);
    assert_eq!(
        s.client
            .get(s.url("/api/cache"))
            .send()
            .await
            .unwrap()
            .status(),
        401
    );
    let cleared: Value = s
        .admin(reqwest::Method::DELETE, "/api/cache")
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert!(cleared["cleared"].as_u64().unwrap() >= 2);
    assert_eq!(
        served_by(&s.chat("chaosai", "How much is shipping?", false).await),
        "claude"
    );
}

async fn open(
    dir: &std::path::Path,
    settings: CacheSettings,
    clock: Arc<ManualClock>,
) -> SemanticCache {
    let store =
        chaosai::store::Store::open(&format!("sqlite://{}", dir.join("cache.db").display()))
            .await
            .unwrap();
    let embedder = Embedder::load(&EmbedderConfig::default()).expect("run `make models`");
    SemanticCache::open(
        store.db().clone(),
        settings,
        Some(Arc::new(embedder)),
        clock,
    )
    .await
    .unwrap()
}

const SETTINGS: CacheSettings = CacheSettings {
    threshold: 0.85,
    ttl: Duration::from_secs(3600),
    max_entries: 100,
    max_embeddings: 16,
};

#[tokio::test]
async fn entries_persist_and_the_index_is_rebuilt_at_start_up() {
    let dir = tempfile::tempdir().unwrap();
    {
        let cache = open(dir.path(), SETTINGS, ManualClock::new()).await;
        cache
            .remember("s", "How do I reset my password?", "Use the reset link.")
            .await;
        assert_eq!(cache.len(), 1);
    }
    let cache = open(dir.path(), SETTINGS, ManualClock::new()).await;
    let hit = cache
        .lookup("s", "I forgot my password, how can I change it?")
        .await
        .expect("a hit after restart");
    assert_eq!(hit.answer, "Use the reset link.");
    assert!(hit.similarity >= 0.85);
    assert!(cache
        .lookup("other-scope", "How do I reset my password?")
        .await
        .is_none());
}

#[tokio::test]
async fn entries_expire_and_the_least_recently_hit_are_evicted() {
    let dir = tempfile::tempdir().unwrap();
    let clock = ManualClock::new();
    let cache = open(
        dir.path(),
        CacheSettings {
            max_entries: 2,
            ..SETTINGS
        },
        clock.clone(),
    )
    .await;
    cache.remember("s", "How much is shipping?", "a").await;
    cache
        .remember("s", "How do I reset my password?", "b")
        .await;
    // Hit the first later, so the second is the least recently used.
    clock.advance(Duration::from_millis(5));
    assert!(cache.lookup("s", "How much is shipping?").await.is_some());
    cache.remember("s", "Can I get a refund?", "c").await;
    assert_eq!(cache.len(), 2);
    assert!(
        cache
            .lookup("s", "How do I reset my password?")
            .await
            .is_none(),
        "evicted"
    );
    assert!(
        cache.lookup("s", "How much is shipping?").await.is_some(),
        "kept"
    );

    let dir = tempfile::tempdir().unwrap();
    let clock = ManualClock::new();
    let short = open(
        dir.path(),
        CacheSettings {
            ttl: Duration::from_secs(60),
            ..SETTINGS
        },
        clock.clone(),
    )
    .await;
    short.remember("s", "How much is shipping?", "a").await;
    clock.advance(Duration::from_secs(59));
    assert!(short.lookup("s", "How much is shipping?").await.is_some());
    clock.advance(Duration::from_secs(1));
    assert!(
        short.lookup("s", "How much is shipping?").await.is_none(),
        "expired"
    );
    short.maintain().await;
    assert_eq!(short.len(), 0);
}
