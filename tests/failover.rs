//! Failover that never garbles an answer, through the whole server against
//! scripted providers that fail as real ones do. Every case checks the exact text
//! the customer receives (the canned answer, never longer), how the stream ended,
//! the route and the audit row, and prints one row of the table in the notes.

mod support;

use chaosai::config::{Config, ProviderConfig, SimulateMode};
use chaosai::shared::{ContinuationStyle, Protocol};
use serde_json::{json, Value};
use std::time::{Duration, Instant};
use support::app::{sse_data, TestServer};
use support::upstream::{self, words, Mode, Prefill, Upstream, CANNED};

/// One provider of a test cascade.
struct Slot<'a> {
    name: &'static str,
    upstream: &'a Upstream,
    protocol: Protocol,
    continuation: ContinuationStyle,
}

fn slot<'a>(
    name: &'static str,
    upstream: &'a Upstream,
    continuation: ContinuationStyle,
) -> Slot<'a> {
    Slot {
        name,
        protocol: if upstream.base_url.ends_with("/v1") {
            Protocol::OpenAi
        } else {
            Protocol::Anthropic
        },
        upstream,
        continuation,
    }
}

/// The whole server over `slots`, in order, with short limits.
async fn gateway(slots: &[Slot<'_>], edit: impl FnOnce(&mut Config)) -> TestServer {
    let providers: Vec<ProviderConfig> = slots
        .iter()
        .map(|s| {
            let mut p = ProviderConfig::new(
                s.name,
                s.protocol,
                &format!("{}-model", s.name),
                &s.upstream.base_url,
            );
            p.api_key = Some("test-key".into());
            p.continuation = Some(s.continuation);
            p.open_for_ms = 1_000;
            p.max_open_for_ms = 4_000;
            p
        })
        .collect();
    TestServer::start_with(move |c| {
        c.gateway.simulate = SimulateMode::Auto;
        c.gateway.first_byte_timeout_ms = 1_000;
        c.gateway.first_token_timeout_ms = 1_000;
        c.gateway.stall_timeout_ms = 400;
        c.providers = providers;
        edit(c);
    })
    .await
}

/// What a streaming API client ends up with.
struct Received {
    /// The text, with a restart marker honoured (the text before it dropped).
    text: String,
    /// Whether the stream ended with `[DONE]`.
    done: bool,
    /// Whether an explicit error event came instead.
    error: bool,
    /// Whether a restart marker came.
    restarted: bool,
    served_by: String,
    model: String,
    id: String,
    took: Duration,
}

async fn ask(s: &TestServer, restart: bool) -> Received {
    let started = Instant::now();
    let mut request = s.client.post(s.url("/v1/chat/completions")).json(&json!({
        "model": "chaosai", "stream": true,
        "messages": [{"role": "user", "content": "Where is my order?"}]
    }));
    if restart {
        request = request.header("x-chaosai-on-break", "restart");
    }
    let res = request.send().await.unwrap();
    assert_eq!(res.status(), 200);
    let served_by = res.headers()["x-chaosai-served-by"]
        .to_str()
        .unwrap()
        .to_string();
    let id = res.headers()["x-request-id"].to_str().unwrap().to_string();
    let body = res.text().await.unwrap();
    let mut received = Received {
        text: String::new(),
        done: false,
        error: false,
        restarted: false,
        served_by,
        model: String::new(),
        id,
        took: started.elapsed(),
    };
    for data in sse_data(&body) {
        if data == "[DONE]" {
            received.done = true;
            continue;
        }
        let chunk: Value = serde_json::from_str(&data).unwrap();
        if chunk.get("error").is_some() {
            received.error = true;
            continue;
        }
        if chunk["chaosai"]["restarted"] == true {
            received.restarted = true;
            received.text.clear();
        }
        received.model = chunk["model"].as_str().unwrap_or_default().to_string();
        if let Some(t) = chunk["choices"][0]["delta"]["content"].as_str() {
            received.text.push_str(t);
        }
    }
    received
}

fn pairs(list: &[(&str, &str)]) -> Vec<(String, String)> {
    list.iter()
        .map(|(a, b)| (a.to_string(), b.to_string()))
        .collect()
}

/// One row of the table the notes report.
fn report(case: &str, r: &Received, status: &str, attempts: &[(String, String)]) {
    let hops: Vec<String> = attempts.iter().map(|(p, o)| format!("{p} {o}")).collect();
    eprintln!(
        "| {case} | {}/{} words{} | {} ms | {status} | {} |",
        words(&r.text),
        words(CANNED),
        if r.done { "" } else { ", error event" },
        r.took.as_millis(),
        hops.join(" → ")
    );
}

#[tokio::test]
async fn a_stream_that_finishes_without_its_final_marker_is_whole_on_both_protocols() {
    for protocol in [Protocol::OpenAi, Protocol::Anthropic] {
        let primary = Upstream::start(protocol, Mode::NoFinalMarker).await;
        let backup = Upstream::start(Protocol::OpenAi, Mode::Whole).await;
        let s = gateway(
            &[
                slot("alpha", &primary, ContinuationStyle::default_for(protocol)),
                slot("beta", &backup, ContinuationStyle::Prefill),
            ],
            |_| {},
        )
        .await;
        let r = ask(&s, false).await;
        assert_eq!(r.text, CANNED, "{protocol:?}: once, never doubled");
        assert!(r.done && !r.error);
        assert_eq!(
            (r.served_by.as_str(), r.model.as_str()),
            ("alpha", "alpha-model")
        );
        assert_eq!(
            backup.requests().len(),
            0,
            "nobody was asked to continue a whole answer"
        );
        let (status, attempts) = s.audited(&r.id).await;
        assert_eq!(status, "ok");
        assert_eq!(attempts, pairs(&[("alpha", "ok")]));
        report(
            &format!("finish reason, no final marker ({protocol})"),
            &r,
            &status,
            &attempts,
        );
    }
}

#[tokio::test]
async fn a_cut_stall_or_garbled_stream_is_continued_for_real_by_a_provider_that_can() {
    for (case, mode) in [
        ("cut after 12 tokens", Mode::CutAfter(12)),
        ("stall after 12 tokens", Mode::StallAfter(12)),
        ("malformed chunk at token 12", Mode::MalformedAt(12)),
    ] {
        let primary = Upstream::start(Protocol::OpenAi, mode).await;
        let incapable = Upstream::start(Protocol::OpenAi, Mode::Whole).await;
        let prefill = Upstream::start(Protocol::Anthropic, Mode::Whole).await;
        let s = gateway(
            &[
                slot("alpha", &primary, ContinuationStyle::None),
                slot("beta", &incapable, ContinuationStyle::None),
                slot("gamma", &prefill, ContinuationStyle::Prefill),
            ],
            |_| {},
        )
        .await;
        let r = ask(&s, false).await;
        assert_eq!(r.text, CANNED, "{case}: one uninterrupted reply");
        assert!(r.done && !r.error, "{case}");
        assert_eq!(
            incapable.requests().len(),
            0,
            "{case}: never asked to continue"
        );
        // The continuing provider got the text already sent as its own turn.
        let asked = &prefill.requests()[0];
        let last = asked["messages"]
            .as_array()
            .unwrap()
            .last()
            .unwrap()
            .clone();
        assert_eq!(last["role"], "assistant");
        let prefilled = last["content"][0]["text"].as_str().unwrap();
        assert!(
            prefilled.len() > 20 && CANNED.starts_with(prefilled),
            "{prefilled:?}"
        );
        let (status, attempts) = s.audited(&r.id).await;
        assert_eq!(status, "spliced", "{case}");
        assert_eq!(
            attempts,
            pairs(&[
                ("alpha", "ok"),
                ("alpha", "stream_broken"),
                ("beta", "cannot_continue"),
                ("gamma", "ok")
            ]),
            "{case}"
        );
        report(
            &format!("{case}, a prefill-capable provider next"),
            &r,
            &status,
            &attempts,
        );
    }
}

#[tokio::test]
async fn a_break_nobody_can_continue_is_an_explicit_error_or_a_marked_restart() {
    let primary = Upstream::start(Protocol::OpenAi, Mode::CutAfter(12)).await;
    let backup = Upstream::start(Protocol::OpenAi, Mode::Whole).await;
    let s = gateway(
        &[
            slot("alpha", &primary, ContinuationStyle::None),
            slot("beta", &backup, ContinuationStyle::None),
        ],
        |_| {},
    )
    .await;
    // Without the header: what was sent, then the error event, no [DONE].
    let r = ask(&s, false).await;
    assert!(
        CANNED.starts_with(&r.text) && r.text.len() < CANNED.len(),
        "{}",
        r.text
    );
    assert!(r.error && !r.done);
    let (status, attempts) = s.audited(&r.id).await;
    assert_eq!(status, "stream_failed");
    assert_eq!(
        attempts,
        pairs(&[
            ("alpha", "ok"),
            ("alpha", "stream_broken"),
            ("beta", "cannot_continue")
        ])
    );
    assert_eq!(backup.requests().len(), 0);
    report(
        "cut, nobody can continue (API default)",
        &r,
        &status,
        &attempts,
    );

    // With `x-chaosai-on-break: restart`: a marked restart, then the whole answer.
    let r = ask(&s, true).await;
    assert!(r.restarted && r.done && !r.error);
    assert_eq!(
        r.text, CANNED,
        "the restarted answer replaces the partial one"
    );
    assert_eq!(r.model, "beta-model");
    let (status, attempts) = s.audited(&r.id).await;
    assert_eq!(status, "restarted");
    assert_eq!(
        attempts.last().unwrap(),
        &("beta".to_string(), "ok".to_string())
    );
    // The restart asked afresh: no partial answer was sent along.
    let asked = backup.requests().last().unwrap().clone();
    assert_eq!(
        asked["messages"].as_array().unwrap().last().unwrap()["role"],
        "user"
    );
    report(
        "cut, nobody can continue, restart asked for",
        &r,
        &status,
        &attempts,
    );
}

#[tokio::test]
async fn a_provider_that_rejects_the_prefill_never_yields_a_success_made_of_pieces() {
    let primary = Upstream::start(Protocol::OpenAi, Mode::CutAfter(12)).await;
    let rejecting = Upstream::start(Protocol::OpenAi, Mode::Whole).await;
    rejecting.set_prefill(Prefill::Reject);
    let s = gateway(
        &[
            slot("alpha", &primary, ContinuationStyle::None),
            slot("beta", &rejecting, ContinuationStyle::Prefill),
        ],
        |_| {},
    )
    .await;
    let r = ask(&s, false).await;
    assert!(r.error && !r.done);
    assert!(CANNED.starts_with(&r.text) && r.text.len() < CANNED.len());
    let (status, attempts) = s.audited(&r.id).await;
    // The original failure stays the story; the 400 is one more attempt.
    assert_eq!(status, "stream_failed");
    assert_eq!(
        attempts,
        pairs(&[
            ("alpha", "ok"),
            ("alpha", "stream_broken"),
            ("beta", "invalid_request")
        ])
    );
    report(
        "cut, next rejects the prefill (400)",
        &r,
        &status,
        &attempts,
    );
    // The rejected prefill says nothing about beta's health.
    let beta = s.provider("beta").await;
    assert_eq!(
        (
            beta["state"].as_str(),
            beta["consecutive_failures"].as_u64()
        ),
        (Some("closed"), Some(0))
    );
}

#[tokio::test]
async fn a_conversation_too_long_for_one_window_is_answered_by_the_next() {
    let small = Upstream::start(Protocol::OpenAi, Mode::TooLong).await;
    let large = Upstream::start(Protocol::Anthropic, Mode::Whole).await;
    let s = gateway(
        &[
            slot("alpha", &small, ContinuationStyle::None),
            slot("gamma", &large, ContinuationStyle::Prefill),
        ],
        |_| {},
    )
    .await;
    for _ in 0..4 {
        let r = ask(&s, false).await;
        assert_eq!(r.text, CANNED);
        assert_eq!(r.served_by, "gamma");
        let (status, attempts) = s.audited(&r.id).await;
        assert_eq!(status, "ok");
        assert_eq!(attempts, pairs(&[("alpha", "too_large"), ("gamma", "ok")]));
    }
    let alpha = s.provider("alpha").await;
    assert_eq!(alpha["state"], "closed", "a small window is not an outage");
    assert_eq!(alpha["consecutive_failures"], 0);

    // Too long for every window: the caller's 400, with the provider's words.
    large.set_mode(Mode::TooLong);
    let res = s
        .client
        .post(s.url("/v1/chat/completions"))
        .json(&json!({"model": "chaosai", "messages": [{"role": "user", "content": "Where is my order?"}]}))
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), 400);
    let error: Value = res.json().await.unwrap();
    assert!(
        error["error"]["message"]
            .as_str()
            .unwrap()
            .contains("prompt is too long"),
        "{error}"
    );
}

/// Steps the clock by `by`, then waits until alpha has no probe due or in flight
/// (OPEN with time left, or CLOSED): the prober has acted on the new time.
async fn step(s: &TestServer, by: Duration) {
    s.clock.advance(by);
    support::eventually(|| async {
        let alpha = s.provider("alpha").await;
        let settled = alpha["state"] == "closed"
            || (alpha["state"] == "open" && alpha["retry_in_ms"].as_u64() > Some(0));
        settled.then_some(())
    })
    .await
}

#[tokio::test]
async fn a_provider_back_from_a_minute_long_outage_serves_within_fifteen_seconds() {
    let primary = Upstream::start(Protocol::OpenAi, Mode::Down).await;
    let backup = Upstream::start(Protocol::OpenAi, Mode::Whole).await;
    let s = gateway(
        &[
            slot("alpha", &primary, ContinuationStyle::None),
            slot("beta", &backup, ContinuationStyle::None),
        ],
        |c| {
            // The shipped cool-downs, not the short ones of the other tests.
            for p in &mut c.providers {
                p.open_for_ms = 4_000;
                p.max_open_for_ms = 12_000;
            }
        },
    )
    .await;
    let whole = |s: &TestServer| {
        let request = s.client.post(s.url("/v1/chat/completions")).json(&json!({
            "model": "chaosai", "messages": [{"role": "user", "content": "Where is my order?"}]
        }));
        async move {
            let res = request.send().await.unwrap();
            assert_eq!(res.status(), 200);
            res.headers()["x-chaosai-served-by"]
                .to_str()
                .unwrap()
                .to_string()
        }
    };
    // Down for 60 s, a customer every 4 s. The prober probes whatever the
    // stepped clock says is due; after each step, wait until no probe is due or
    // in flight (OPEN with time left, or CLOSED).
    for _ in 0..15 {
        assert_eq!(whole(&s).await, "beta");
        step(&s, Duration::from_secs(4)).await;
    }
    let spent = primary.customer_requests();
    assert!(
        spent <= 3,
        "{spent} customer requests spent on a provider that was down"
    );
    assert!(
        primary.probes() >= 3,
        "the outage was probed in the background"
    );
    primary.recover();
    let mut waited = Duration::ZERO;
    loop {
        if s.provider("alpha").await["state"] == "closed" {
            break;
        }
        assert!(
            waited < Duration::from_secs(15),
            "not back within 15 s of recovering"
        );
        step(&s, Duration::from_secs(1)).await;
        waited += Duration::from_secs(1);
    }
    assert_eq!(whole(&s).await, "alpha");
    eprintln!(
        "| outage of 60 s, a customer every 4 s | back {} s after recovery | {} customer requests and {} probes sent to it while down |",
        waited.as_secs(),
        spent,
        primary.probes() - 1
    );
}

/// A streamed question that offers the order-status tool.
async fn ask_with_tool(s: &TestServer, restart: bool) -> (support::app::Streamed, String) {
    let mut request = s.client.post(s.url("/v1/chat/completions")).json(&json!({
        "model": "chaosai", "stream": true, "stream_options": {"include_usage": true},
        "tools": [{"type": "function", "function": {"name": "order_status",
            "description": "Looks up an order by its number",
            "parameters": {"type": "object", "properties": {"order_id": {"type": "string"}}}}}],
        "messages": [{"role": "user", "content": "Where is my order 1234?"}]
    }));
    if restart {
        request = request.header("x-chaosai-on-break", "restart");
    }
    let res = request.send().await.unwrap();
    assert_eq!(res.status(), 200);
    let id = res.headers()["x-request-id"].to_str().unwrap().to_string();
    (support::app::read_stream(&res.text().await.unwrap()), id)
}

#[tokio::test]
async fn a_stream_cut_inside_a_tool_calls_arguments_is_retried_whole_on_the_next_provider() {
    for (first, second) in [
        (Protocol::OpenAi, Protocol::Anthropic),
        (Protocol::Anthropic, Protocol::OpenAi),
    ] {
        let cut = Upstream::start(first, Mode::ToolCallCutAfter(2)).await;
        let whole = Upstream::start(second, Mode::ToolCall).await;
        let s = gateway(
            &[
                slot("alpha", &cut, ContinuationStyle::None),
                slot("beta", &whole, ContinuationStyle::None),
            ],
            |_| {},
        )
        .await;
        let (r, id) = ask_with_tool(&s, false).await;
        let case = format!("{first:?} cut, {second:?} next");
        assert!(r.done && !r.error, "{case}: {r:?}");
        assert_eq!(r.text, "", "{case}: no text around the call");
        // Only the whole call from the next provider, never the cut one's fragments.
        assert_eq!(r.tool_calls.len(), 1, "{case}: {:?}", r.tool_calls);
        assert_eq!(r.tool_calls[0].id, upstream::tool_call_id(second), "{case}");
        assert_eq!(r.tool_calls[0].name, "order_status");
        assert_eq!(
            r.tool_calls[0].arguments,
            upstream::TOOL_ARGUMENTS,
            "{case}"
        );
        assert_eq!(r.finish_reason.as_deref(), Some("tool_calls"));
        // The next provider was asked with the same tool, in its own protocol.
        let asked = &whole.requests()[0];
        let tool_name = match second {
            Protocol::OpenAi => &asked["tools"][0]["function"]["name"],
            Protocol::Anthropic => &asked["tools"][0]["name"],
        };
        assert_eq!(tool_name, "order_status", "{case}");
        // The usage is the serving provider's own.
        assert_eq!(r.usage.as_ref().unwrap()["total_tokens"], 42, "{case}");
        let (status, attempts) = s.audited(&id).await;
        assert_eq!(status, "ok", "{case}");
        // A dropped connection reads as a reset or as a body that ended early.
        assert!(
            ["connection_error", "malformed"].contains(&attempts[0].1.as_str()),
            "{case}: {attempts:?}"
        );
        assert_eq!(attempts[0].0, "alpha");
        assert_eq!(attempts[1..], pairs(&[("beta", "ok")]), "{case}");
        // The cut counts against the provider that cut.
        assert_eq!(
            s.provider("alpha").await["consecutive_failures"],
            1,
            "{case}"
        );
    }
}

#[tokio::test]
async fn a_tool_call_cut_after_text_was_sent_ends_in_the_error_event_or_restarts() {
    let cut = Upstream::start(Protocol::OpenAi, Mode::TextThenToolCallCutAfter(3)).await;
    let whole = Upstream::start(Protocol::Anthropic, Mode::ToolCall).await;
    let s = gateway(
        &[
            slot("alpha", &cut, ContinuationStyle::None),
            slot("beta", &whole, ContinuationStyle::None),
        ],
        |_| {},
    )
    .await;
    // By default: what was sent stays, the broken call is never passed on, and
    // the stream ends with the explicit error event.
    let (r, id) = ask_with_tool(&s, false).await;
    assert_eq!(r.text, upstream::PREAMBLE);
    assert!(
        r.tool_calls.is_empty(),
        "a cut call is never sent: {:?}",
        r.tool_calls
    );
    assert!(r.error && !r.done, "{r:?}");
    let (status, attempts) = s.audited(&id).await;
    assert_eq!(status, "stream_failed");
    assert_eq!(
        attempts[..2],
        pairs(&[("alpha", "ok"), ("alpha", "stream_broken")])
    );
    // A caller that can replace what it has gets the whole call from the next provider.
    let (r, id) = ask_with_tool(&s, true).await;
    assert!(r.done && !r.error, "{r:?}");
    assert_eq!(
        r.text, "",
        "the restart drops the text of the broken answer"
    );
    assert_eq!(r.tool_calls.len(), 1);
    assert_eq!(
        r.tool_calls[0].id,
        upstream::tool_call_id(Protocol::Anthropic)
    );
    assert_eq!(r.tool_calls[0].arguments, upstream::TOOL_ARGUMENTS);
    let (status, _) = s.audited(&id).await;
    assert_eq!(status, "restarted");
}
