//! The whole server on an ephemeral port, with a temporary SQLite file and
//! simulated providers, driven over real HTTP.

mod support;

use chaosai::config::SimulateMode;
use serde_json::{json, Value};
use support::app::{api_error, ask, sse_data, TestServer};
use support::{Script, ScriptedServer};

#[tokio::test]
async fn health_and_models() {
    let s = TestServer::start().await;
    let client = reqwest::Client::new();
    let health = client
        .get(format!("{}/healthz", s.base))
        .send()
        .await
        .unwrap();
    assert_eq!(health.status(), 200);
    let models: Value = client
        .get(format!("{}/v1/models", s.base))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    let ids: Vec<&str> = models["data"]
        .as_array()
        .unwrap()
        .iter()
        .map(|m| m["id"].as_str().unwrap())
        .collect();
    assert_eq!(ids, vec!["chaosai", "claude", "gpt", "llama"]);
    // The SDKs' `models.retrieve`: one model's object, or OpenAI's 404.
    let one = client
        .get(format!("{}/v1/models/gpt", s.base))
        .send()
        .await
        .unwrap();
    assert_eq!(one.status(), 200);
    let one: Value = one.json().await.unwrap();
    assert_eq!(one["id"], "gpt");
    assert_eq!(one["object"], "model");
    assert_eq!(one, models["data"][2], "the same object the list holds");
    for (id, named) in [
        ("gpt-9", "gpt-9".to_string()),
        (&"m".repeat(5_000), "m".repeat(200)),
    ] {
        let res = client
            .get(format!("{}/v1/models/{id}", s.base))
            .send()
            .await
            .unwrap();
        let error = api_error(res, 404).await;
        assert_eq!(error["code"], "model_not_found");
        let message = error["message"].as_str().unwrap();
        // A long name is named, not echoed whole.
        assert!(message.contains(&named) && message.len() < 500, "{message}");
    }
}

#[tokio::test]
async fn non_streamed_completion_through_the_cascade() {
    let s = TestServer::start().await;
    let res = reqwest::Client::new()
        .post(format!("{}/v1/chat/completions", s.base))
        .json(&ask("chaosai", "How do I reset my password?", false))
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), 200);
    assert_eq!(res.headers()["x-chaosai-served-by"], "claude");
    let overhead: f64 = res.headers()["x-chaosai-overhead-ms"]
        .to_str()
        .unwrap()
        .parse()
        .unwrap();
    assert!((0.0..50.0).contains(&overhead), "overhead {overhead}");
    let body: Value = res.json().await.unwrap();
    assert_eq!(body["object"], "chat.completion");
    // The model that really answered; the header names the provider.
    assert_eq!(body["model"], "claude-sonnet-4-5");
    assert_eq!(body["choices"][0]["message"]["role"], "assistant");
    assert!(body["choices"][0]["message"]["content"]
        .as_str()
        .unwrap()
        .contains("reset link"));

    assert_eq!(s.request_rows(1).await, 1);
    let (served_by, status): (String, String) =
        chaosai::with_db!(s.server.store.db(), pool => sqlx::query_as("SELECT served_by, status FROM requests")
            .fetch_one(pool)
            .await)
            .unwrap();
    assert_eq!((served_by.as_str(), status.as_str()), ("claude", "ok"));
}

#[tokio::test]
async fn streamed_completion_arrives_in_chunks_and_ends_with_done() {
    let s = TestServer::start().await;
    let res = reqwest::Client::new()
        .post(format!("{}/v1/chat/completions", s.base))
        .json(&ask("chaosai", "Where is my order?", true))
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), 200);
    assert_eq!(res.headers()["content-type"], "text/event-stream");
    assert_eq!(res.headers()["x-chaosai-served-by"], "claude");
    let data = sse_data(&res.text().await.unwrap());
    assert_eq!(data.last().unwrap(), "[DONE]");
    let chunks: Vec<Value> = data[..data.len() - 1]
        .iter()
        .map(|d| serde_json::from_str(d).unwrap())
        .collect();
    assert_eq!(chunks[0]["choices"][0]["delta"]["role"], "assistant");
    let text: String = chunks
        .iter()
        .filter_map(|c| c["choices"][0]["delta"]["content"].as_str())
        .collect();
    assert!(text.contains("Account → Orders"), "{text}");
    let content_chunks = chunks
        .iter()
        .filter(|c| {
            c["choices"][0]["delta"]["content"]
                .as_str()
                .is_some_and(|t| !t.is_empty())
        })
        .count();
    assert!(content_chunks > 5, "only {content_chunks} content chunks");
    assert_eq!(
        chunks.last().unwrap()["choices"][0]["finish_reason"],
        "stop"
    );
    assert!(chunks
        .iter()
        .all(|c| c["object"] == "chat.completion.chunk"));
}

#[tokio::test]
async fn a_provider_name_pins_that_provider() {
    let s = TestServer::start().await;
    for (model, stream) in [("gpt", false), ("llama", true)] {
        let res = reqwest::Client::new()
            .post(format!("{}/v1/chat/completions", s.base))
            .json(&ask(model, "Can I get a refund?", stream))
            .send()
            .await
            .unwrap();
        assert_eq!(res.status(), 200);
        assert_eq!(res.headers()["x-chaosai-served-by"], model);
    }
}

#[tokio::test]
async fn a_real_key_reaches_the_configured_url_and_failure_falls_over() {
    // "claude" has a key, so it goes to its base URL (here a provider that is down);
    // the simulated "gpt" answers instead.
    let down = ScriptedServer::start(Script::respond(
        529,
        "application/json",
        r#"{"type":"error","error":{"type":"overloaded_error","message":"Overloaded"}}"#,
    ))
    .await;
    let url = down.url.clone();
    let s = TestServer::start_with(move |c| {
        c.gateway.simulate = SimulateMode::Auto;
        c.providers[0].base_url = url;
        c.providers[0].api_key = Some("sk-ant-test".into());
    })
    .await;
    let res = reqwest::Client::new()
        .post(format!("{}/v1/chat/completions", s.base))
        .json(&ask("chaosai", "How much is shipping?", true))
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), 200);
    assert_eq!(res.headers()["x-chaosai-served-by"], "gpt");
    assert!(sse_data(&res.text().await.unwrap()).last().unwrap() == "[DONE]");
    assert_eq!(down.hits(), 1);
    assert_eq!(
        down.received.lock().unwrap()[0].header("x-api-key"),
        Some("sk-ant-test")
    );

    assert_eq!(s.request_rows(1).await, 1);
    let attempts: Vec<(String, String, Option<i64>)> =
        chaosai::with_db!(s.server.store.db(), pool => sqlx::query_as("SELECT provider, outcome, http_status FROM attempts ORDER BY seq")
            .fetch_all(pool)
            .await)
            .unwrap();
    assert_eq!(
        attempts,
        vec![
            ("claude".into(), "server_error".into(), Some(529)),
            ("gpt".into(), "ok".into(), Some(200))
        ]
    );
}

#[tokio::test]
async fn bad_input_gets_a_json_4xx_naming_the_problem() {
    let s = TestServer::start().await;
    let client = reqwest::Client::new();
    let url = format!("{}/v1/chat/completions", s.base);
    let cases: Vec<(Vec<u8>, u16, &str)> = vec![
        (b"{not json".to_vec(), 400, "not valid JSON"),
        (
            json!({"model": "chaosai"}).to_string().into_bytes(),
            400,
            "messages is required",
        ),
        (
            json!({"model": "chaosai", "messages": []})
                .to_string()
                .into_bytes(),
            400,
            "messages must not be empty",
        ),
        (
            json!({"model": "chaosai", "messages": [{"role": "wizard", "content": "hi"}]})
                .to_string()
                .into_bytes(),
            400,
            "unknown role \"wizard\"",
        ),
        (
            json!({"model": "chaosai", "messages": [{"role": "user", "content": "  "}]})
                .to_string()
                .into_bytes(),
            400,
            "messages[0].content must not be empty",
        ),
        (
            json!({"model": "chaosai", "messages": [{"role": "assistant", "content": "hi"}]})
                .to_string()
                .into_bytes(),
            400,
            "last message must come from the user",
        ),
        (
            ask("gpt-99", "hi", false).to_string().into_bytes(),
            404,
            "gpt-99",
        ),
    ];
    for (body, status, needle) in cases {
        let res = client
            .post(&url)
            .header("content-type", "application/json")
            .body(body)
            .send()
            .await
            .unwrap();
        assert_eq!(
            res.status().as_u16(),
            status,
            "expected {status} for {needle}"
        );
        let error: Value = res.json().await.unwrap();
        let message = error["error"]["message"].as_str().unwrap();
        assert!(
            message.contains(needle),
            "{message:?} should mention {needle:?}"
        );
        assert!(error["error"]["type"].is_string());
    }
    // Each error names the parameter at fault.
    let mut hot = ask("chaosai", "hi", false);
    hot["temperature"] = json!(3.5);
    let mut none = ask("chaosai", "hi", false);
    none["max_tokens"] = json!(0);
    let mut blank = ask("chaosai", "hi", false);
    blank["messages"][1]["content"] = json!(" ");
    for (body, param) in [
        (hot, "temperature"),
        (none, "max_tokens"),
        (blank, "messages[1].content"),
        (ask("gpt-99", "hi", false), "model"),
    ] {
        let res = client.post(&url).json(&body).send().await.unwrap();
        assert!(res.status().is_client_error());
        let error: Value = res.json().await.unwrap();
        assert_eq!(error["error"]["param"], param, "{error}");
    }
    // The server is still fine afterwards.
    let res = client
        .post(&url)
        .json(&ask("chaosai", "refund?", false))
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), 200);
}

#[tokio::test]
async fn the_chat_server_function_refuses_pictures_it_cannot_check() {
    let s = TestServer::start().await;
    // Images in the page's own turn shape skip /v1's checks: a file URL that a
    // provider would be asked to fetch, with an offset past the text.
    let res = s
        .client
        .post(s.url("/api/ask"))
        .json(&json!({"turns": [{"role": "user", "content": "look",
            "images": [{"source": {"kind": "url", "url": "file:///etc/passwd"}, "at": 99}]}]}))
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), 400);
    let body = res.text().await.unwrap();
    assert!(body.contains("takes text only"), "{body}");
    s.server.audit.as_ref().unwrap().flush().await;
    let (requests,): (i64,) = chaosai::with_db!(s.server.store.db(), pool => sqlx::query_as("SELECT COUNT(*) FROM requests")
        .fetch_one(pool)
        .await)
        .unwrap();
    assert_eq!(requests, 0, "no provider was asked");
}

#[tokio::test]
async fn the_chat_server_function_streams_newline_delimited_events() {
    let s = TestServer::start().await;
    let events = s
        .chat_events(
            None,
            json!([
                {"role": "user", "content": "I forgot my password"},
                {"role": "assistant", "content": "Let me help."},
                {"role": "user", "content": "what now?"}
            ]),
        )
        .await;
    assert_eq!(events[0]["type"], "started");
    assert_eq!(events[0]["served_by"], "claude");
    let conversation = events[0]["conversation_id"].as_str().unwrap().to_string();
    let deltas = events.iter().filter(|e| e["type"] == "delta").count();
    assert!(deltas > 5);
    let done = events.last().unwrap();
    assert_eq!(done["type"], "done");
    assert_eq!(done["attempts"][0]["provider"], "claude");
    let text: String = events.iter().filter_map(|e| e["text"].as_str()).collect();
    assert!(
        text.starts_with("Following up on your earlier question"),
        "history reached the provider: {text}"
    );

    // The turn is kept for the chat history under the conversation it was given.
    s.request_rows(1).await;
    let turns: Vec<(String, String)> =
        chaosai::with_db!(s.server.store.db(), pool => sqlx::query_as("SELECT role, content FROM messages WHERE conversation_id = ? ORDER BY id")
            .bind(&conversation)
            .fetch_all(pool)
            .await)
            .unwrap();
    assert_eq!(turns.len(), 2);
    assert_eq!(turns[0], ("user".to_string(), "what now?".to_string()));
    assert_eq!(turns[1], ("assistant".to_string(), text));
}

#[tokio::test]
async fn graceful_shutdown_lets_in_flight_streams_finish() {
    let s = TestServer::start_with(|c| {
        // Slow enough that the stream is still running when shutdown starts.
        c.sim.chunk_delay_min_ms = 15;
        c.sim.chunk_delay_max_ms = 15;
    })
    .await;
    let mut res = reqwest::Client::new()
        .post(format!("{}/v1/chat/completions", s.base))
        .json(&ask("chaosai", "Where is my order?", true))
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), 200);
    // The answer is under way: its first bytes have arrived.
    let mut body = String::from_utf8(res.chunk().await.unwrap().unwrap().to_vec()).unwrap();
    let rest = tokio::spawn(async move {
        while let Some(chunk) = res.chunk().await.unwrap() {
            body.push_str(std::str::from_utf8(&chunk).unwrap());
        }
        body
    });
    let base = s.base.clone();
    let stopped = tokio::spawn(s.server.shutdown());
    // New connections are refused while the in-flight answer finishes.
    support::eventually(|| async {
        reqwest::get(format!("{base}/healthz"))
            .await
            .is_err()
            .then_some(())
    })
    .await;
    assert!(!rest.is_finished(), "the answer was still streaming");
    let data = sse_data(&rest.await.unwrap());
    assert_eq!(
        data.last().unwrap(),
        "[DONE]",
        "the in-flight stream completed"
    );
    assert!(
        stopped.await.unwrap(),
        "shutdown finished within the grace period"
    );
}
