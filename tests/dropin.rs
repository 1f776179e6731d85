//! `/v1/chat/completions` as the bots support teams run call it: a tool-call
//! round trip through the cascade on both protocols, usage in both delivery
//! modes and for every route, JSON answers, and every common parameter either
//! honoured or refused with the parameter named. Against the whole server and
//! its simulated providers, over real HTTP.

mod support;

use serde_json::{json, Value};
use support::app::{api_error, read_stream, screenshot, TestServer, PIXEL_PNG};

/// An order-status tool as a support bot offers it.
fn order_tool() -> Value {
    json!({"type": "function", "function": {
        "name": "get_order_status",
        "description": "Looks up the status of a customer's order by its number",
        "parameters": {"type": "object", "properties": {"order_id": {"type": "string",
            "description": "The order number"}}, "required": ["order_id"]}}})
}

async fn post(s: &TestServer, body: &Value) -> reqwest::Response {
    s.client
        .post(s.url("/v1/chat/completions"))
        .json(body)
        .send()
        .await
        .unwrap()
}

/// The answer's tool calls and text, whole or streamed, as a client sees them.
struct Turn {
    text: String,
    calls: Vec<(String, String, String)>,
    finish: String,
    usage: Value,
    id: String,
    headers: reqwest::header::HeaderMap,
}

async fn turn(s: &TestServer, mut body: Value, stream: bool) -> Turn {
    body["stream"] = json!(stream);
    if stream {
        body["stream_options"] = json!({"include_usage": true});
    }
    let res = post(s, &body).await;
    assert_eq!(res.status(), 200);
    let headers = res.headers().clone();
    let id = headers["x-request-id"].to_str().unwrap().to_string();
    if stream {
        let r = read_stream(&res.text().await.unwrap());
        assert!(r.done && !r.error, "{r:?}");
        return Turn {
            text: r.text,
            calls: r
                .tool_calls
                .into_iter()
                .map(|c| (c.id, c.name, c.arguments))
                .collect(),
            finish: r.finish_reason.unwrap(),
            usage: r.usage.expect("a usage chunk"),
            id,
            headers,
        };
    }
    let body: Value = res.json().await.unwrap();
    let message = &body["choices"][0]["message"];
    Turn {
        text: message["content"].as_str().unwrap_or_default().to_string(),
        calls: message["tool_calls"]
            .as_array()
            .into_iter()
            .flatten()
            .map(|c| {
                assert_eq!(c["type"], "function");
                (
                    c["id"].as_str().unwrap().to_string(),
                    c["function"]["name"].as_str().unwrap().to_string(),
                    c["function"]["arguments"].as_str().unwrap().to_string(),
                )
            })
            .collect(),
        finish: body["choices"][0]["finish_reason"]
            .as_str()
            .unwrap()
            .to_string(),
        usage: body["usage"].clone(),
        id,
        headers,
    }
}

#[tokio::test]
async fn a_tool_round_trip_works_on_both_protocols_and_across_them() {
    let s = TestServer::start().await;
    // The call comes from one protocol, the result goes to the other: the
    // conversation is translated both ways.
    for (caller, answerer, id_prefix) in [("claude", "gpt", "toolu_"), ("gpt", "claude", "call_")] {
        for stream in [false, true] {
            let case = format!("{caller} → {answerer}, stream {stream}");
            let question = json!({"role": "user", "content": "Where is my order 12345?"});
            let first = turn(
                &s,
                json!({"model": caller, "tools": [order_tool()], "messages": [question]}),
                stream,
            )
            .await;
            assert_eq!(first.finish, "tool_calls", "{case}");
            assert_eq!(first.calls.len(), 1, "{case}");
            let (call_id, name, arguments) = first.calls[0].clone();
            assert!(call_id.starts_with(id_prefix), "{case}: {call_id}");
            assert_eq!(name, "get_order_status");
            let arguments: Value = serde_json::from_str(&arguments).unwrap();
            assert_eq!(arguments, json!({"order_id": "12345"}), "{case}");
            assert!(
                first.usage["completion_tokens"].as_u64().unwrap() > 0,
                "{case}"
            );

            let mut calling = json!({"role": "assistant", "content": null, "tool_calls": [
                {"id": call_id, "type": "function",
                 "function": {"name": name, "arguments": arguments.to_string()}}]});
            if !first.text.is_empty() {
                calling["content"] = json!(first.text);
            }
            let result = json!({"role": "tool", "tool_call_id": call_id,
                "content": "{\"order_id\":\"12345\",\"status\":\"shipped\",\"eta\":\"Friday\"}"});
            let second = turn(
                &s,
                json!({"model": answerer, "tools": [order_tool()],
                    "messages": [question, calling, result]}),
                stream,
            )
            .await;
            assert_eq!(second.finish, "stop", "{case}");
            assert!(second.calls.is_empty(), "{case}");
            assert!(
                second.text.contains("status shipped") && second.text.contains("Friday"),
                "{case}: the answer comes from the tool's result: {}",
                second.text
            );
        }
    }
}

#[tokio::test]
async fn a_tool_call_through_the_cascade_is_the_breakers_success_and_is_never_cached() {
    let s = TestServer::start_with(|c| c.cache.enabled = true).await;
    let body = json!({"model": "chaosai", "tools": [order_tool()],
        "tool_choice": "required", "parallel_tool_calls": true,
        "messages": [{"role": "user", "content": "Where are orders 1111 and 2222?"}]});
    for _ in 0..2 {
        let answer = turn(&s, body.clone(), true).await;
        assert_eq!(answer.headers["x-chaosai-served-by"], "claude");
        assert_eq!(answer.calls.len(), 2, "parallel calls, one per order");
        assert!(answer.calls[1].2.contains("2222"));
        let (status, attempts) = s.audited(&answer.id).await;
        assert_eq!(status, "ok");
        assert_eq!(attempts, vec![("claude".to_string(), "ok".to_string())]);
    }
    assert_eq!(s.metric("chaosai_cache_hits_total").await, 0.0);
    let (entries,): (i64,) = chaosai::with_db!(s.server.store.db(), pool => sqlx::query_as("SELECT COUNT(*) FROM cache_entries")
        .fetch_one(pool)
        .await)
        .unwrap();
    assert_eq!(entries, 0, "a tool call is never stored");
}

#[tokio::test]
async fn usage_is_true_in_both_modes_and_says_who_counted_it() {
    let s = TestServer::start_with(|c| c.cache.enabled = true).await;
    const RESET: &str = "How do I reset my password?";
    let question =
        |model: &str| json!({"model": model, "messages": [{"role": "user", "content": RESET}]});
    for (stream, asked) in [
        (false, "Can I get a refund?"),
        (true, "How much is shipping?"),
    ] {
        for model in ["claude", "gpt"] {
            let mut body = question(model);
            // A different topic per round (and the model scopes the cache), so
            // none of these is a cache hit.
            body["messages"][0]["content"] = json!(asked);
            let answer = turn(&s, body, stream).await;
            let usage = &answer.usage;
            let (prompt, completion) = (
                usage["prompt_tokens"].as_i64().unwrap(),
                usage["completion_tokens"].as_i64().unwrap(),
            );
            assert!(prompt > 5 && completion > 10, "{model}: {usage}");
            assert_eq!(usage["total_tokens"].as_i64().unwrap(), prompt + completion);
            if !stream {
                assert_eq!(answer.headers["x-chaosai-usage"], "provider");
            }
            let recorded = s.audited_usage(&answer.id).await;
            assert_eq!(
                recorded,
                (prompt, completion, Some("provider".into())),
                "{model}"
            );
        }
    }
    // A cache hit costs no prompt and says so; its completion is the answer's size.
    let first = turn(&s, question("chaosai"), false).await;
    // The answer is stored off the request path; the four answers above are
    // stored too, so wait for this question's own row.
    s.rows(
        &format!("SELECT COUNT(*) FROM cache_entries WHERE question = '{RESET}'"),
        |n| n == 1,
    )
    .await;
    let hit = turn(&s, question("chaosai"), false).await;
    assert_eq!(hit.headers["x-chaosai-served-by"], "cache");
    assert_eq!(hit.headers["x-chaosai-usage"], "cache");
    assert_eq!(hit.usage["prompt_tokens"], 0);
    let hit_completion = hit.usage["completion_tokens"].as_u64().unwrap();
    assert_eq!(
        hit_completion,
        (hit.text.chars().count() as u64).div_ceil(4)
    );
    assert!(first.usage["prompt_tokens"].as_u64().unwrap() > 0);
    // The last resort: every provider down.
    for provider in ["claude", "gpt", "llama"] {
        s.inject(provider, json!({"kind": "outage"})).await;
    }
    let mut body = question("chaosai");
    body["messages"][0]["content"] = json!("Where is my parcel, it is late?");
    let resort = turn(&s, body, true).await;
    assert_eq!(resort.headers["x-chaosai-served-by"], "last-resort");
    assert_eq!(resort.headers["x-chaosai-usage"], "last_resort");
    assert_eq!(resort.usage["prompt_tokens"], 0);
    assert!(resort.usage["completion_tokens"].as_u64().unwrap() > 0);

    // Cost by provider and by tenant, from the audit.
    s.request_rows(7).await;
    let by_provider: Value = s.admin_json("/api/audit/usage?by=provider&since=0").await;
    let rows = by_provider["rows"].as_array().unwrap();
    let row = |key: &str| rows.iter().find(|r| r["key"] == key).cloned();
    // Two pinned questions and the first cascade one; failed attempts cost nothing.
    assert_eq!(row("claude").unwrap()["requests"], 3, "{by_provider}");
    assert!(row("gpt").unwrap()["total_tokens"].as_i64().unwrap() > 0);
    assert_eq!(row("cache").unwrap()["prompt_tokens"], 0);
    assert!(row("last-resort").is_some(), "{by_provider}");
    let by_tenant: Value = s.admin_json("/api/audit/usage?by=tenant").await;
    let total: i64 = rows
        .iter()
        .map(|r| r["total_tokens"].as_i64().unwrap())
        .sum();
    assert_eq!(by_tenant["rows"][0]["key"], "default");
    assert_eq!(
        by_tenant["rows"][0]["total_tokens"], total,
        "both views add up"
    );
    let bad = s
        .admin(reqwest::Method::GET, "/api/audit/usage?by=weekday")
        .send()
        .await
        .unwrap();
    support::assert_invalid(bad, "by").await;
}

#[tokio::test]
async fn json_answers_are_valid_json_on_both_protocols() {
    let s = TestServer::start().await;
    for model in ["claude", "gpt"] {
        for stream in [false, true] {
            let body = json!({"model": model,
                "response_format": {"type": "json_schema", "json_schema": {"name": "reply",
                    "schema": {"type": "object", "properties": {"answer": {"type": "string"},
                        "needs_agent": {"type": "boolean"}}, "required": ["answer", "needs_agent"]}}},
                "messages": [{"role": "user", "content": "How do I reset my password? Reply in JSON."}]});
            let answer = turn(&s, body, stream).await;
            let parsed: Value = serde_json::from_str(&answer.text)
                .unwrap_or_else(|e| panic!("{model}: not JSON ({e}): {}", answer.text));
            assert!(
                parsed["answer"].as_str().unwrap().contains("reset link"),
                "{model}: {parsed}"
            );
            assert!(parsed["needs_agent"].is_boolean());
            assert_eq!(
                answer.finish, "stop",
                "{model}: a JSON answer is not a tool call"
            );
            assert!(answer.calls.is_empty());
        }
        let body = json!({"model": model, "response_format": {"type": "json_object"},
            "messages": [{"role": "user", "content": "Where is my order? Answer in JSON."}]});
        let answer = turn(&s, body, false).await;
        assert!(serde_json::from_str::<Value>(&answer.text)
            .unwrap()
            .is_object());
    }
}

#[tokio::test]
async fn parameters_reach_the_providers_and_a_stop_sequence_cuts_the_answer() {
    let s = TestServer::start().await;
    for model in ["claude", "gpt"] {
        let body = json!({"model": model, "stop": ["spam"], "top_p": 0.5, "seed": 7,
            "user": "customer-42", "max_completion_tokens": 200,
            "messages": [{"role": "user", "content": "How do I reset my password?"}]});
        let answer = turn(&s, body, true).await;
        assert!(
            answer.text.contains("reset link"),
            "{model}: {}",
            answer.text
        );
        assert!(
            !answer.text.contains("spam"),
            "{model}: cut at the stop sequence"
        );
        assert!(
            answer.text.trim_end().ends_with("check your"),
            "{model}: {}",
            answer.text
        );
        assert_eq!(answer.finish, "stop");
        let capped = json!({"model": model, "max_tokens": 3,
            "messages": [{"role": "user", "content": "How do I reset my password?"}]});
        let answer = turn(&s, capped, false).await;
        assert_eq!(answer.finish, "length", "{model}");
        assert_eq!(answer.usage["completion_tokens"], 3, "{model}");
    }
    // Anthropic cannot sample above temperature 1: such a request passes it by…
    let hot = json!({"model": "chaosai", "temperature": 1.5,
        "messages": [{"role": "user", "content": "How do I reset my password?"}]});
    let answer = turn(&s, hot.clone(), false).await;
    assert_eq!(answer.headers["x-chaosai-served-by"], "gpt");
    let (_, attempts) = s.audited(&answer.id).await;
    assert_eq!(
        attempts[0],
        ("claude".to_string(), "unsupported".to_string())
    );
    // …and pinned to it, is refused with the parameter named, not silently changed.
    let mut pinned = hot;
    pinned["model"] = json!("claude");
    let res = post(&s, &pinned).await;
    assert_eq!(res.status(), 400);
    let error: Value = res.json().await.unwrap();
    assert_eq!(error["error"]["param"], "temperature", "{error}");
}

#[tokio::test]
async fn every_parameter_is_validated_with_the_right_param_in_the_error() {
    let s = TestServer::start().await;
    let user = json!({"role": "user", "content": "Where is my order 12345?"});
    let with = |extra: Value| {
        let mut body = json!({"model": "chaosai", "messages": [user.clone()]});
        for (k, v) in extra.as_object().unwrap() {
            body[k] = v.clone();
        }
        body
    };
    let cases = [
        (with(json!({"temperature": 2.5})), "temperature"),
        (with(json!({"temperature": "warm"})), "temperature"),
        (with(json!({"top_p": 1.2})), "top_p"),
        (with(json!({"presence_penalty": -3})), "presence_penalty"),
        (with(json!({"frequency_penalty": 9})), "frequency_penalty"),
        (with(json!({"stop": ["a", "b", "c", "d", "e"]})), "stop"),
        (with(json!({"stop": 12})), "stop"),
        (with(json!({"seed": "x"})), "seed"),
        (with(json!({"max_tokens": 0})), "max_tokens"),
        (
            with(json!({"max_completion_tokens": -5})),
            "max_completion_tokens",
        ),
        (with(json!({"n": 3})), "n"),
        (with(json!({"logprobs": true})), "logprobs"),
        (with(json!({"logit_bias": {"1": 5}})), "logit_bias"),
        (with(json!({"functions": [{"name": "f"}]})), "functions"),
        (with(json!({"user": 7})), "user"),
        (
            with(json!({"response_format": {"type": "yaml"}})),
            "response_format.type",
        ),
        (
            with(
                json!({"response_format": {"type": "json_schema", "json_schema": {"name": "bad name", "schema": {}}}}),
            ),
            "response_format.json_schema.name",
        ),
        (
            with(
                json!({"tools": [{"type": "function", "function": {"name": "no spaces allowed"}}]}),
            ),
            "tools[0].function.name",
        ),
        (
            with(
                json!({"tools": [order_tool()], "tool_choice": {"type": "function", "function": {"name": "refund"}}}),
            ),
            "tool_choice",
        ),
        (with(json!({"tool_choice": "required"})), "tool_choice"),
        (
            with(json!({"stream_options": {"include_usage": true}})),
            "stream_options",
        ),
        (
            json!({"model": "chaosai", "messages": [user.clone(),
                {"role": "tool", "tool_call_id": "call_nobody", "content": "x"}]}),
            "messages[1].tool_call_id",
        ),
        (
            json!({"model": "chaosai", "messages": [{"role": "user", "content": [
                {"type": "text", "text": "What does this recording say?"},
                {"type": "input_audio", "input_audio": {"data": "UklGRg==", "format": "wav"}}]}]}),
            "messages[0].content[1]",
        ),
    ];
    for (body, param) in cases {
        let res = post(&s, &body).await;
        assert_eq!(res.status(), 400, "{param}: {body}");
        let error: Value = res.json().await.unwrap();
        assert_eq!(error["error"]["param"], param, "{error}");
        assert_eq!(error["error"]["type"], "invalid_request_error");
        assert!(!error["error"]["message"].as_str().unwrap().is_empty());
    }
    // A limit too large is told the range, not that it is not positive.
    let res = post(&s, &with(json!({"max_tokens": 1_000_000_000_000u64}))).await;
    assert_eq!(res.status(), 400);
    let error: Value = res.json().await.unwrap();
    assert_eq!(error["error"]["param"], "max_tokens");
    let message = error["error"]["message"].as_str().unwrap();
    assert!(message.contains("from 1 to 4294967295"), "{message}");
    // Harmless extras and unknown fields are accepted, as OpenAI-compatible servers do.
    let res = post(
        &s,
        &with(
            json!({"n": 1, "store": false, "metadata": {"ticket": "9"}, "logprobs": false,
            "service_tier": "auto", "some_new_field": {"x": 1}}),
        ),
    )
    .await;
    assert_eq!(res.status(), 200);
    let body: Value = res.json().await.unwrap();
    assert!(body["created"].as_u64().unwrap() > 1_700_000_000);
    assert_eq!(body["object"], "chat.completion");
    assert!(body["id"].as_str().unwrap().starts_with("chatcmpl-"));
}

#[tokio::test]
async fn the_answer_names_the_model_that_really_answered_and_its_fingerprint() {
    let s = TestServer::start().await;
    let ask = json!({"model": "gpt", "messages": [{"role": "user", "content": "How do I reset my password?"}]});
    let body: Value = post(&s, &ask).await.json().await.unwrap();
    // The configured model id, as the provider reported it back.
    assert_eq!(body["model"], "gpt-4o-mini");
    assert_eq!(body["system_fingerprint"], "fp_chaosai_sim");
    let mut streamed = ask.clone();
    streamed["stream"] = json!(true);
    let r = read_stream(&post(&s, &streamed).await.text().await.unwrap());
    assert!(r.chunks.iter().all(|c| c["model"] == "gpt-4o-mini"));
    assert!(r
        .chunks
        .iter()
        .all(|c| c["system_fingerprint"] == "fp_chaosai_sim"));
    assert!(r.usage.is_none(), "no usage chunk unless asked for");
    assert!(r.chunks.iter().all(|c| c.get("usage").is_none()));
}

#[tokio::test]
async fn the_cache_answers_only_where_the_same_request_would_have_produced_it() {
    let s = TestServer::start_with(|c| c.cache.enabled = true).await;
    let question = "How do I reset my password?";
    let ask = |extra: Value| {
        let mut body =
            json!({"model": "chaosai", "messages": [{"role": "user", "content": question}]});
        for (k, v) in extra.as_object().unwrap() {
            body[k] = v.clone();
        }
        body
    };
    // An answer cut short by its size is never stored…
    let cut = turn(&s, ask(json!({"max_tokens": 4})), false).await;
    assert_eq!(cut.finish, "length");
    // …nor one cut by a stop sequence, nor one sampled or shaped differently.
    for extra in [
        json!({"stop": ["spam"]}),
        json!({"seed": 1}),
        json!({"temperature": 0.2}),
        json!({"response_format": {"type": "json_object"}}),
    ] {
        let answer = turn(&s, ask(extra.clone()), false).await;
        assert_ne!(answer.headers["x-chaosai-served-by"], "cache", "{extra}");
    }
    let (entries,): (i64,) = chaosai::with_db!(s.server.store.db(), pool => sqlx::query_as("SELECT COUNT(*) FROM cache_entries")
        .fetch_one(pool)
        .await)
        .unwrap();
    assert_eq!(entries, 0, "none of those answers was stored");
    // A plain request is stored, and then serves plain repeats only.
    turn(&s, ask(json!({})), false).await;
    s.rows("SELECT COUNT(*) FROM cache_entries", |n| n == 1)
        .await;
    assert_eq!(
        turn(&s, ask(json!({})), false).await.headers["x-chaosai-served-by"],
        "cache"
    );
    for extra in [
        json!({"seed": 1}),
        json!({"top_p": 0.3}),
        json!({"stop": "spam"}),
        json!({"max_tokens": 4}),
        json!({"tools": [order_tool()]}),
    ] {
        let answer = turn(&s, ask(extra.clone()), false).await;
        assert_ne!(answer.headers["x-chaosai-served-by"], "cache", "{extra}");
    }
    // A conversation carrying a tool's result never reads the cache.
    let body = json!({"model": "chaosai", "messages": [
        {"role": "user", "content": "Where is my order 12345?"},
        {"role": "assistant", "content": null, "tool_calls": [{"id": "call_1", "type": "function",
            "function": {"name": "get_order_status", "arguments": "{\"order_id\":\"12345\"}"}}]},
        {"role": "tool", "tool_call_id": "call_1", "content": "shipped"},
        {"role": "user", "content": question}]});
    assert_ne!(
        turn(&s, body, false).await.headers["x-chaosai-served-by"],
        "cache"
    );
}

/// The customer's question with a picture shown after its first sentence.
fn with_picture(first: &str, rest: &str, url: &str) -> Value {
    json!({"role": "user", "content": [
        {"type": "text", "text": first},
        {"type": "image_url", "image_url": {"url": url}},
        {"type": "text", "text": rest}]})
}

#[tokio::test]
async fn a_customers_picture_reaches_the_models_that_can_look_and_passes_the_others_by() {
    // Llama, a text-only model, first in the cascade.
    let s = TestServer::start_with(|c| {
        c.cache.enabled = true;
        c.providers.rotate_right(1);
    })
    .await;
    assert_eq!(s.providers().await[0]["name"], "llama");
    let png = format!("data:image/png;base64,{PIXEL_PNG}");
    let question = with_picture("Can I get a refund?", " Here is the damage.", &png);
    // Both protocols, whole and streamed: the simulated models check the image
    // as the real APIs do (Anthropic: the bytes must be the declared type) and
    // say what they saw.
    for model in ["claude", "gpt"] {
        for stream in [false, true] {
            let answer = turn(&s, json!({"model": model, "messages": [question]}), stream).await;
            assert!(
                answer
                    .text
                    .starts_with("I looked at the picture you sent (a PNG)."),
                "{model}, stream {stream}: {}",
                answer.text
            );
            assert!(answer.text.contains("refund"), "{}", answer.text);
            // The provider charged for the picture, not only for the words.
            assert!(
                answer.usage["prompt_tokens"].as_u64().unwrap() > 765,
                "{}",
                answer.usage
            );
        }
    }
    // Through the cascade the text-only model is passed by without being asked.
    let answer = turn(
        &s,
        json!({"model": "chaosai", "messages": [question]}),
        false,
    )
    .await;
    assert_eq!(answer.headers["x-chaosai-served-by"], "claude");
    let (status, attempts) = s.audited(&answer.id).await;
    assert_eq!(status, "ok");
    assert_eq!(
        attempts,
        vec![
            ("llama".to_string(), "unsupported".to_string()),
            ("claude".to_string(), "ok".to_string())
        ]
    );
    // Several pictures, a linked one among them, keep their order.
    let linked = json!({"model": "claude", "messages": [{"role": "user", "content": [
        {"type": "image_url", "image_url": {"url": "https://shop.example/parcel.jpg", "detail": "low"}},
        {"type": "text", "text": "Is this damage covered?"},
        {"type": "image_url", "image_url": {"url": png}}]}]});
    let answer = turn(&s, linked, true).await;
    assert!(
        answer.text.starts_with(
            "I looked at the 2 pictures you sent (one linked from https://shop.example/parcel.jpg, a PNG)."
        ),
        "{}",
        answer.text
    );
    // A picture without a word is a question too.
    let wordless = json!({"model": "gpt", "messages": [{"role": "user", "content": [
        {"type": "image_url", "image_url": {"url": png}}]}]});
    let answer = turn(&s, wordless, false).await;
    assert!(
        answer
            .text
            .starts_with("I looked at the picture you sent (a PNG)."),
        "{}",
        answer.text
    );
    // Asked of the text-only model alone: a 400 that names what it cannot take.
    let res = post(&s, &json!({"model": "llama", "messages": [question]})).await;
    let err = api_error(res, 400).await;
    assert_eq!(err["param"], "image_url");
    assert!(err["message"].as_str().unwrap().contains("llama"), "{err}");
    // A question about a picture is never answered from, nor stored in, the
    // cache: the same words about another picture ask something else.
    assert_eq!(s.metric("chaosai_cache_hits_total").await, 0.0);
    let (entries,): (i64,) = chaosai::with_db!(s.server.store.db(), pool => sqlx::query_as("SELECT COUNT(*) FROM cache_entries")
        .fetch_one(pool)
        .await)
        .unwrap();
    assert_eq!(entries, 0);
    let words = json!({"role": "user", "content": "Can I get a refund? Here is the damage."});
    turn(&s, json!({"model": "chaosai", "messages": [words]}), false).await;
    s.rows("SELECT COUNT(*) FROM cache_entries", |n| n == 1)
        .await;
    let again = turn(
        &s,
        json!({"model": "chaosai", "messages": [question]}),
        false,
    )
    .await;
    assert_eq!(again.headers["x-chaosai-served-by"], "claude");
    assert!(
        again.text.starts_with("I looked at the picture"),
        "{}",
        again.text
    );
}

#[tokio::test]
async fn a_screenshot_sent_inline_is_answered_with_the_shipped_limits() {
    // Nothing configured: the shipped limits take a 3 MB screenshot (4 MB of
    // base64), which is more than the rest of the server's 64 KiB, through the
    // fault proxy to both protocols' providers.
    let s = TestServer::start().await;
    let shot = screenshot(3 << 20);
    assert!(shot.len() > 4_000_000);
    let question = with_picture(
        "My order page shows an error.",
        " What does it mean?",
        &shot,
    );
    for (model, stream) in [("claude", false), ("gpt", true), ("chaosai", false)] {
        let answer = turn(&s, json!({"model": model, "messages": [question]}), stream).await;
        assert!(
            answer
                .text
                .starts_with("I looked at the picture you sent (a PNG)."),
            "{model}: {}",
            answer.text
        );
    }
}

#[tokio::test]
async fn a_picture_no_provider_would_take_is_refused_naming_the_part() {
    let s = TestServer::start().await;
    let not_an_image = "data:image/png;base64,aGVsbG8gd29ybGQ=";
    for (content, param, expected) in [
        (
            json!([{"type": "image_url", "image_url": {"url": not_an_image}}]),
            "messages[0].content[0].image_url.url",
            "not a PNG, JPEG, GIF or WebP image",
        ),
        (
            json!([{"type": "text", "text": "hi"}, {"type": "image_url", "image_url": {"url": "file:///etc/passwd"}}]),
            "messages[0].content[1].image_url.url",
            "http(s) address or a data URL",
        ),
    ] {
        let res = post(
            &s,
            &json!({"model": "chaosai", "messages": [{"role": "user", "content": content}]}),
        )
        .await;
        let err = api_error(res, 400).await;
        assert_eq!(err["param"], param, "{err}");
        assert!(err["message"].as_str().unwrap().contains(expected), "{err}");
    }
}

#[tokio::test]
async fn effort_and_verbosity_reach_a_model_that_takes_them_and_the_others_go_without() {
    // gpt as GPT-5 mini, which reasons and takes `verbosity` (and refuses
    // `max_tokens`); llama (Llama 3.1) takes neither, and its simulation refuses
    // each as OpenAI and Groq do: two rewrites within its first attempt.
    let s = TestServer::start_with(|c| {
        c.cache.enabled = true;
        c.providers[1].model = "gpt-5-mini".into();
    })
    .await;
    let ask = |model: &str, effort: &str| {
        json!({"model": model, "reasoning_effort": effort, "verbosity": "low",
            "messages": [{"role": "user", "content": "How do I reset my password?"}]})
    };
    for (model, served_by) in [
        ("gpt", "gpt"),
        ("llama", "llama"),
        ("claude", "claude"),
        ("chaosai", "claude"),
    ] {
        for stream in [false, true] {
            let answer = turn(&s, ask(model, "low"), stream).await;
            assert_eq!(answer.headers["x-chaosai-served-by"], served_by, "{model}");
            assert!(
                answer.text.contains("reset link"),
                "{model}: {}",
                answer.text
            );
            let (status, attempts) = s.audited(&answer.id).await;
            assert_eq!(status, "ok");
            assert_eq!(
                attempts,
                vec![(served_by.to_string(), "ok".to_string())],
                "{model}"
            );
        }
    }
    // A level nobody offers is the caller's mistake.
    let res = post(&s, &ask("chaosai", "extreme")).await;
    let err = api_error(res, 400).await;
    assert_eq!(err["param"], "reasoning_effort");
    let mut terse = ask("chaosai", "low");
    terse["verbosity"] = json!("terse");
    let err = api_error(post(&s, &terse).await, 400).await;
    assert_eq!(err["param"], "verbosity");
    // How hard a model thought, and how much it said, are part of the
    // request: no cached answer.
    let (entries,): (i64,) = chaosai::with_db!(s.server.store.db(), pool => sqlx::query_as("SELECT COUNT(*) FROM cache_entries")
        .fetch_one(pool)
        .await)
        .unwrap();
    assert_eq!(entries, 0);
}

/// A Responses API call's answer as a client sees it, whole or rebuilt from
/// its stream's events (checking the order a stream helper relies on).
struct Answered {
    response: Value,
    events: Vec<String>,
    headers: reqwest::header::HeaderMap,
}

async fn respond(s: &TestServer, mut body: Value, stream: bool) -> Answered {
    body["stream"] = json!(stream);
    let res = s
        .client
        .post(s.url("/v1/responses"))
        .json(&body)
        .send()
        .await
        .unwrap();
    if res.status() != 200 {
        panic!("{}: {}", res.status(), res.text().await.unwrap());
    }
    let headers = res.headers().clone();
    if !stream {
        return Answered {
            response: res.json().await.unwrap(),
            events: Vec::new(),
            headers,
        };
    }
    assert_eq!(headers["content-type"], "text/event-stream");
    let text = res.text().await.unwrap();
    let mut events = Vec::new();
    let mut last = Value::Null;
    let mut texts: Vec<String> = Vec::new();
    for (n, frame) in text.split_terminator("\n\n").enumerate() {
        let (name, data) = frame.split_once('\n').unwrap();
        let name = name.strip_prefix("event: ").unwrap().to_string();
        let data: Value = serde_json::from_str(data.strip_prefix("data: ").unwrap()).unwrap();
        assert_eq!(data["type"], name.as_str());
        assert_eq!(data["sequence_number"], n as u64, "numbered in order");
        match name.as_str() {
            "response.output_item.added" => texts.push(String::new()),
            "response.output_text.delta" => {
                let index = data["output_index"].as_u64().unwrap() as usize;
                texts[index].push_str(data["delta"].as_str().unwrap());
            }
            "response.completed" | "response.incomplete" | "response.failed" => {
                last = data["response"].clone()
            }
            _ => {}
        }
        events.push(name);
    }
    assert_eq!(events[0], "response.created");
    // What the deltas built is what the last event says was answered.
    for (index, item) in last["output"].as_array().unwrap().iter().enumerate() {
        if item["type"] == "message" && last["status"] != "failed" {
            assert_eq!(item["content"][0]["text"], texts[index].as_str());
        }
    }
    Answered {
        response: last,
        events,
        headers,
    }
}

/// The text of a response's message items.
fn output_text(response: &Value) -> String {
    response["output"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|item| item["type"] == "message")
        .flat_map(|item| item["content"].as_array().unwrap())
        .filter_map(|part| part["text"].as_str())
        .collect()
}

#[tokio::test]
async fn the_responses_api_answers_through_the_same_cascade_whole_and_streamed() {
    let s = TestServer::start().await;
    for stream in [false, true] {
        let answer = respond(
            &s,
            json!({"model": "chaosai", "instructions": "Be brief.",
                "input": "How do I reset my password?", "store": false}),
            stream,
        )
        .await;
        let response = &answer.response;
        assert_eq!(response["object"], "response");
        assert_eq!(response["status"], "completed", "{response}");
        assert!(response["id"].as_str().unwrap().starts_with("resp_"));
        assert_eq!(response["instructions"], "Be brief.");
        assert_eq!(response["output"][0]["type"], "message");
        assert_eq!(response["output"][0]["role"], "assistant");
        assert!(output_text(response).contains("reset link"), "{response}");
        let usage = &response["usage"];
        assert!(usage["output_tokens"].as_u64().unwrap() > 10);
        assert_eq!(
            usage["total_tokens"].as_u64().unwrap(),
            usage["input_tokens"].as_u64().unwrap() + usage["output_tokens"].as_u64().unwrap()
        );
        assert_eq!(answer.headers["x-chaosai-served-by"], "claude");
        // The request is on record under the id the headers name.
        let id = answer.headers["x-request-id"].to_str().unwrap();
        let (status, attempts) = s.audited(id).await;
        assert_eq!(status, "ok");
        assert_eq!(attempts, vec![("claude".to_string(), "ok".to_string())]);
        if stream {
            assert_eq!(answer.events.last().unwrap(), "response.completed");
        }
    }
    // A response never made is neither read back nor gone on from.
    let res = s
        .client
        .get(s.url("/v1/responses/resp_123"))
        .send()
        .await
        .unwrap();
    let err = api_error(res, 404).await;
    assert!(
        err["message"].as_str().unwrap().contains("resp_123"),
        "{err}"
    );
    let res = s
        .client
        .post(s.url("/v1/responses"))
        .json(&json!({"model": "chaosai", "input": "hi", "previous_response_id": "resp_123"}))
        .send()
        .await
        .unwrap();
    assert_eq!(api_error(res, 400).await["param"], "previous_response_id");
    // The gateway's own checks name the item the caller sent, not a chat message.
    let res = s
        .client
        .post(s.url("/v1/responses"))
        .json(
            &json!({"model": "chaosai", "instructions": "Be brief.", "input": [
            {"role": "user", "content": "Where is my order?"},
            {"type": "function_call_output", "call_id": "call_nobody", "output": "shipped"}]}),
        )
        .send()
        .await
        .unwrap();
    let err = api_error(res, 400).await;
    assert_eq!(err["param"], "input[1].tool_call_id", "{err}");
    assert!(
        !err["message"].as_str().unwrap().contains("messages"),
        "{err}"
    );
}

#[tokio::test]
async fn a_responses_tool_round_trip_works_on_both_protocols() {
    let s = TestServer::start().await;
    let tool = json!({"type": "function", "name": "get_order_status",
        "description": "Looks up the status of a customer's order by its number",
        "parameters": {"type": "object", "properties": {"order_id": {"type": "string"}},
            "required": ["order_id"]}});
    for model in ["claude", "gpt"] {
        for stream in [false, true] {
            let case = format!("{model}, stream {stream}");
            let question = json!({"role": "user", "content": "Where is my order 12345?"});
            let first = respond(
                &s,
                json!({"model": model, "tools": [tool], "input": [question]}),
                stream,
            )
            .await;
            let calls: Vec<&Value> = first.response["output"]
                .as_array()
                .unwrap()
                .iter()
                .filter(|item| item["type"] == "function_call")
                .collect();
            assert_eq!(calls.len(), 1, "{case}: {}", first.response);
            let call = calls[0];
            assert_eq!(call["name"], "get_order_status");
            assert_eq!(call["status"], "completed");
            let arguments: Value =
                serde_json::from_str(call["arguments"].as_str().unwrap()).unwrap();
            assert_eq!(arguments, json!({"order_id": "12345"}), "{case}");
            // The output goes back as input, as the SDKs' examples do, with the result.
            let mut input = vec![question];
            input.extend(first.response["output"].as_array().unwrap().iter().cloned());
            input.push(
                json!({"type": "function_call_output", "call_id": call["call_id"],
                "output": "{\"status\":\"shipped\",\"eta\":\"Friday\"}"}),
            );
            let second = respond(
                &s,
                json!({"model": model, "tools": [tool], "input": input}),
                stream,
            )
            .await;
            let text = output_text(&second.response);
            assert!(
                text.contains("status shipped") && text.contains("Friday"),
                "{case}: the answer comes from the tool's result: {text}"
            );
        }
    }
}

#[tokio::test]
async fn a_kept_response_is_gone_on_from_read_back_and_forgotten_by_its_tenant_only() {
    let s = TestServer::start().await;
    let tool = json!({"type": "function", "name": "get_order_status",
        "description": "Looks up the status of a customer's order by its number",
        "parameters": {"type": "object", "properties": {"order_id": {"type": "string"}},
            "required": ["order_id"]}});
    let function_call = |response: &Value| {
        response["output"]
            .as_array()
            .unwrap()
            .iter()
            .find(|item| item["type"] == "function_call")
            .cloned()
            .unwrap_or_else(|| panic!("a call in {response}"))
    };
    // Across protocols, whole and streamed: each request sends only what is
    // new, and the kept conversation goes to the provider before it. Without
    // it the tool's result would answer no call, which both providers refuse.
    let mut kept = Vec::new();
    for (first_model, next_model, stream) in [("claude", "gpt", false), ("gpt", "claude", true)] {
        let case = format!("{first_model} then {next_model}, stream {stream}");
        let first = respond(
            &s,
            json!({"model": first_model, "tools": [tool], "input": "Where is my order 12345?"}),
            stream,
        )
        .await;
        assert_eq!(first.response["store"], true, "{case}");
        let call = function_call(&first.response);
        // Sent the moment the first is done: it was kept before it was done.
        let second = respond(
            &s,
            json!({"model": next_model, "tools": [tool],
                "previous_response_id": first.response["id"],
                "input": [{"type": "function_call_output", "call_id": call["call_id"],
                    "output": "{\"status\":\"shipped\",\"eta\":\"Friday\"}"}]}),
            stream,
        )
        .await;
        let text = output_text(&second.response);
        assert!(
            text.contains("status shipped") && text.contains("Friday"),
            "{case}: {text}"
        );
        assert_eq!(
            second.response["previous_response_id"], first.response["id"],
            "{case}"
        );
        // A third goes on from the second: the whole chain is carried.
        let third = respond(
            &s,
            json!({"model": first_model, "tools": [tool],
                "previous_response_id": second.response["id"],
                "input": "Thanks! Can I still change the delivery address?"}),
            stream,
        )
        .await;
        assert_eq!(third.response["status"], "completed", "{case}");
        // Read back, the response is the one that was sent.
        let id = second.response["id"].as_str().unwrap().to_string();
        let res = s
            .client
            .get(s.url(&format!("/v1/responses/{id}")))
            .send()
            .await
            .unwrap();
        assert_eq!(res.status(), 200);
        let read: Value = res.json().await.unwrap();
        assert_eq!(read, second.response, "{case}");
        kept.push(id);
    }
    let post = |body: Value, tenant: Option<&str>| {
        let mut request = s.client.post(s.url("/v1/responses")).json(&body);
        if let Some(tenant) = tenant {
            request = request.header("x-chaosai-tenant", tenant);
        }
        request.send()
    };
    let not_kept = |res: reqwest::Response| async move {
        let err = api_error(res, 400).await;
        assert_eq!(err["code"], "previous_response_not_found", "{err}");
        assert_eq!(err["param"], "previous_response_id");
    };
    // Another tenant can neither go on from it nor read it.
    let go_on = json!({"model": "claude", "input": "And?", "previous_response_id": kept[0]});
    not_kept(post(go_on.clone(), Some("another-shop")).await.unwrap()).await;
    let res = s
        .client
        .get(s.url(&format!("/v1/responses/{}", kept[0])))
        .header("x-chaosai-tenant", "another-shop")
        .send()
        .await
        .unwrap();
    api_error(res, 404).await;
    // `store: false` keeps nothing.
    let unkept = respond(
        &s,
        json!({"model": "claude", "input": "hi", "store": false}),
        false,
    )
    .await;
    assert_eq!(unkept.response["store"], false);
    let body =
        json!({"model": "claude", "input": "And?", "previous_response_id": unkept.response["id"]});
    not_kept(post(body, None).await.unwrap()).await;
    // Deleted, it is gone.
    let url = s.url(&format!("/v1/responses/{}", kept[0]));
    let res = s.client.delete(&url).send().await.unwrap();
    assert_eq!(res.status(), 200);
    let deleted: Value = res.json().await.unwrap();
    assert_eq!(
        deleted,
        json!({"id": kept[0], "object": "response", "deleted": true})
    );
    api_error(s.client.get(&url).send().await.unwrap(), 404).await;
    api_error(s.client.delete(&url).send().await.unwrap(), 404).await;
    not_kept(post(go_on, None).await.unwrap()).await;
    // What is not kept is not served either, and says so.
    let url = s.url(&format!("/v1/responses/{}/input_items", kept[1]));
    let err = api_error(s.client.get(&url).send().await.unwrap(), 404).await;
    assert!(
        err["message"]
            .as_str()
            .unwrap()
            .contains("input_items is not served"),
        "{err}"
    );
}

#[tokio::test]
async fn while_the_audit_redacts_customer_text_no_response_is_kept() {
    let s = TestServer::start_with(|c| c.audit.redact_text = true).await;
    let answer = respond(
        &s,
        json!({"model": "claude", "input": "Where is my order?"}),
        false,
    )
    .await;
    assert_eq!(answer.response["store"], false);
    let res = s
        .client
        .post(s.url("/v1/responses"))
        .json(&json!({"model": "claude", "input": "And?", "previous_response_id": answer.response["id"]}))
        .send()
        .await
        .unwrap();
    let err = api_error(res, 400).await;
    assert_eq!(err["param"], "previous_response_id");
    assert!(
        err["message"].as_str().unwrap().contains("redacts"),
        "{err}"
    );
    s.rows("SELECT COUNT(*) FROM responses", |n| n == 0).await;
}

#[tokio::test]
async fn a_broken_responses_stream_ends_failed_never_completed() {
    let s = TestServer::start().await;
    s.inject("claude", json!({"kind": "reset", "after_bytes": 900}))
        .await;
    let answer = respond(
        &s,
        json!({"model": "claude", "input": "I want to return an item"}),
        true,
    )
    .await;
    assert_eq!(
        answer.events.last().unwrap(),
        "response.failed",
        "{:?}",
        answer.events
    );
    assert!(!answer.events.iter().any(|e| e == "response.completed"));
    assert_eq!(answer.response["status"], "failed");
    assert!(answer.response["error"]["message"]
        .as_str()
        .unwrap()
        .contains("interrupted"));
    // Some text had reached the caller before the break.
    assert!(answer
        .events
        .iter()
        .any(|e| e == "response.output_text.delta"));
}

#[tokio::test]
async fn a_wrong_url_or_method_gets_a_json_error_naming_it() {
    let s = TestServer::start().await;
    // A typo in the path: a 404 in the API's shape, not the site's HTML page.
    let res = s
        .client
        .post(s.url("/v1/chat/completion"))
        .json(&json!({"model": "chaosai", "messages": [{"role": "user", "content": "hi"}]}))
        .send()
        .await
        .unwrap();
    let error = api_error(res, 404).await;
    assert_eq!(error["code"], "unknown_url");
    let message = error["message"].as_str().unwrap();
    assert!(message.contains("POST /v1/chat/completion"), "{message}");
    // A long path is named, not echoed whole.
    let long = format!("/v1/{}", "x".repeat(5_000));
    let res = s.client.get(s.url(&long)).send().await.unwrap();
    assert_eq!(res.status(), 404);
    let body: Value = res.json().await.unwrap();
    let message = body["error"]["message"].as_str().unwrap();
    assert!(
        message.len() < 500 && message.contains("/v1/xxx"),
        "{message}"
    );
    // A wrong method: a 405 with `Allow` and a body that says so.
    for (method, path, allowed) in [
        (reqwest::Method::GET, "/v1/chat/completions", "POST"),
        (reqwest::Method::DELETE, "/v1/models", "GET"),
    ] {
        let res = s
            .client
            .request(method.clone(), s.url(path))
            .send()
            .await
            .unwrap();
        assert_eq!(res.status(), 405, "{method} {path}");
        let allow = res.headers()["allow"].to_str().unwrap().to_string();
        assert!(allow.contains(allowed), "{allow}");
        let body: Value = res.json().await.unwrap();
        assert_eq!(body["error"]["code"], "method_not_allowed");
        assert_eq!(body["error"]["type"], "invalid_request_error");
        assert!(
            body["error"]["message"].as_str().unwrap().contains(path),
            "{body}"
        );
    }
    // A compressed body is named as such (415), not reported as broken JSON.
    let res = s
        .client
        .post(s.url("/v1/chat/completions"))
        .header("content-type", "application/json")
        .header("content-encoding", "gzip")
        .body(vec![0x1f, 0x8b, 0x08, 0x00, 0x00])
        .send()
        .await
        .unwrap();
    let error = api_error(res, 415).await;
    assert_eq!(error["code"], "unsupported_content_encoding");
    assert!(
        error["message"].as_str().unwrap().contains("gzip"),
        "{error}"
    );
}
