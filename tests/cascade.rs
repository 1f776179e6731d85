//! Cascade policy against real HTTP: failover before the first token, no fallback
//! for a request no provider could serve, limits that bound a hanging provider.

mod support;

use chaosai::clock::{self, ManualClock, SharedClock};
use chaosai::config::{Protocol, SimConfig};
use chaosai::gateway::breaker::BreakerConfig;
use chaosai::gateway::cascade::{
    Cascade, CascadeEntry, CascadeError, CascadeRequest, Delivery, Served, Timeouts,
};
use chaosai::gateway::events::EventBus;
use chaosai::gateway::metrics::Metrics;
use chaosai::gateway::prompt::PromptTemplate;
use chaosai::gateway::provider::{self, Endpoint, FinishReason, Piece, ProviderTarget, WireLimits};
use chaosai::shared::{
    AttemptOutcome, BreakerState, ChatTurn, ContinuationStyle, GatewayEvent, ProbeMode, Role,
    Transition,
};
use futures::StreamExt;
use std::sync::Arc;
use std::time::{Duration, Instant};
use support::{sse_event, unsupported_temperature, End, Script, ScriptedServer};

const TIMEOUTS: Timeouts = Timeouts {
    first_byte: Duration::from_millis(400),
    first_token: Duration::from_millis(400),
    stall: Duration::from_millis(400),
    attempt: Duration::from_secs(3),
    deadline: Duration::from_secs(6),
    answer: Duration::from_secs(30),
};

fn entry(name: &str, protocol: Protocol, base_url: &str) -> CascadeEntry {
    let target = ProviderTarget {
        name: name.into(),
        model: format!("{name}-model"),
        base: Endpoint::direct(base_url),
        api_key: None,
        limits: WireLimits::with_timeouts(TIMEOUTS.first_byte, TIMEOUTS.stall),
        continuation: ContinuationStyle::default_for(protocol),
    };
    CascadeEntry {
        provider: provider::build(protocol, target, reqwest::Client::new()),
        template: PromptTemplate::new("You are a support assistant. {system}"),
        max_tokens: 256,
        breaker: BreakerConfig {
            failure_threshold: 3,
            open_for: Duration::from_millis(300),
            max_open_for: Duration::from_secs(2),
            // Most of these tests watch a customer request probe; see
            // `background_probes_close_the_breaker_without_a_customer`.
            probe: ProbeMode::Request,
        },
        simulated: false,
        retries: 0,
        first_token: None,
        attempt: None,
        images: true,
    }
}

/// A cascade over `entries` with its own event bus and the system clock.
fn cascade(entries: Vec<CascadeEntry>) -> Cascade {
    cascade_with(entries, Arc::new(EventBus::default()), clock::system())
}

fn cascade_with(entries: Vec<CascadeEntry>, events: Arc<EventBus>, clock: SharedClock) -> Cascade {
    Cascade::new(entries, TIMEOUTS, events, Arc::new(Metrics::new([])), clock)
}

/// The served provider's name.
fn served_by(served: &Served) -> &str {
    served.provider.name()
}

/// The text of a whole answer.
fn whole_text(served: &Served) -> String {
    served
        .answer
        .head
        .iter()
        .filter_map(|p| match p {
            Piece::Text(t) => Some(t.as_str()),
            _ => None,
        })
        .collect()
}

async fn simulated(protocol: Protocol) -> String {
    let pacing = SimConfig {
        chunk_delay_min_ms: 1,
        chunk_delay_max_ms: 3,
    };
    chaosai::sim::start(protocol, &pacing)
        .await
        .unwrap()
        .base_url
}

fn question() -> CascadeRequest {
    CascadeRequest {
        turns: vec![ChatTurn::user("How do I reset my password?")],
        ..Default::default()
    }
}

#[tokio::test]
async fn a_failing_primary_falls_over_to_the_secondary() {
    let primary = ScriptedServer::start(Script::respond(
        503,
        "application/json",
        r#"{"type":"error","error":{"type":"api_error","message":"down"}}"#,
    ))
    .await;
    let cascade = cascade(vec![
        entry("claude", Protocol::Anthropic, &primary.url),
        entry("gpt", Protocol::OpenAi, &simulated(Protocol::OpenAi).await),
    ]);
    let answer = cascade.open(&question(), Delivery::Whole).await.unwrap();
    assert_eq!(served_by(&answer), "gpt");
    let text = whole_text(&answer);
    assert!(text.contains("reset link"), "{text}");
    let outcomes: Vec<_> = answer
        .attempts
        .iter()
        .map(|a| (a.provider.as_str(), a.outcome.as_str(), a.status))
        .collect();
    assert_eq!(
        outcomes,
        vec![
            ("claude", "server_error", Some(503)),
            ("gpt", "ok", Some(200))
        ]
    );
    assert_eq!(primary.hits(), 1);
}

#[tokio::test]
async fn a_stream_failing_before_its_first_token_falls_over_invisibly() {
    // The primary accepts the stream, then breaks before any content.
    let events = vec![
        sse_event(
            Some("message_start"),
            r#"{"type":"message_start","message":{"id":"m","content":[]}}"#,
        ),
        sse_event(
            Some("error"),
            r#"{"type":"error","error":{"type":"overloaded_error","message":"overloaded"}}"#,
        ),
    ];
    let primary = ScriptedServer::start(Script::sse(events, Duration::ZERO, End::Close)).await;
    let cascade = cascade(vec![
        entry("claude", Protocol::Anthropic, &primary.url),
        entry("gpt", Protocol::OpenAi, &simulated(Protocol::OpenAi).await),
    ]);
    let answer = cascade.open(&question(), Delivery::Streamed).await.unwrap();
    assert_eq!(served_by(&answer), "gpt");
    assert_eq!(answer.attempts[0].outcome, AttemptOutcome::ServerError);
    assert_eq!(answer.attempts[0].status, Some(529));
    let first = whole_text(&answer);
    let rest: Vec<String> = answer
        .answer
        .rest
        .filter_map(|p| async move {
            match p.unwrap() {
                Piece::Text(t) => Some(t),
                _ => None,
            }
        })
        .collect()
        .await;
    let text = format!("{first}{}", rest.concat());
    assert!(text.contains("reset link"), "{text}");
    assert!(
        !rest.is_empty(),
        "the answer streams in more than one piece"
    );
}

#[tokio::test]
async fn a_hanging_primary_costs_one_attempt_limit() {
    let primary = ScriptedServer::start(
        Script::respond(200, "application/json", "{}").delayed(Duration::from_secs(30)),
    )
    .await;
    let cascade = cascade(vec![
        entry("gpt", Protocol::OpenAi, &format!("{}/v1", primary.url)),
        entry(
            "claude",
            Protocol::Anthropic,
            &simulated(Protocol::Anthropic).await,
        ),
    ]);
    let started = Instant::now();
    let answer = cascade.open(&question(), Delivery::Streamed).await.unwrap();
    assert_eq!(served_by(&answer), "claude");
    assert_eq!(answer.attempts[0].outcome, AttemptOutcome::Timeout);
    assert!(
        started.elapsed() < TIMEOUTS.first_byte + Duration::from_millis(600),
        "{:?}",
        started.elapsed()
    );
}

#[tokio::test]
async fn an_invalid_request_is_not_retried_elsewhere() {
    let primary = ScriptedServer::start(Script::respond(
        400,
        "application/json",
        r#"{"error":{"message":"messages: too long","type":"invalid_request_error"}}"#,
    ))
    .await;
    let secondary = ScriptedServer::start(Script::respond(200, "application/json", "{}")).await;
    let cascade = cascade(vec![
        entry("gpt", Protocol::OpenAi, &format!("{}/v1", primary.url)),
        entry("llama", Protocol::OpenAi, &format!("{}/v1", secondary.url)),
    ]);
    for streamed in [false, true] {
        let err = if streamed {
            cascade
                .open(&question(), Delivery::Streamed)
                .await
                .err()
                .unwrap()
        } else {
            cascade
                .open(&question(), Delivery::Whole)
                .await
                .err()
                .unwrap()
        };
        match err {
            CascadeError::InvalidRequest {
                provider,
                status,
                message,
                attempts,
            } => {
                assert_eq!(provider, "gpt");
                assert_eq!(status, 400);
                assert!(message.contains("too long"));
                assert_eq!(attempts.len(), 1);
            }
            other => panic!("expected InvalidRequest, got {other:?}"),
        }
    }
    assert_eq!(
        secondary.hits(),
        0,
        "no fallback for the caller's own error"
    );
}

#[tokio::test]
async fn every_provider_failing_exhausts_the_cascade_with_all_attempts() {
    let down = ScriptedServer::start(Script::reset()).await;
    let cascade = cascade(vec![
        entry("gpt", Protocol::OpenAi, &format!("{}/v1", down.url)),
        entry("claude", Protocol::Anthropic, &down.url),
    ]);
    match cascade.open(&question(), Delivery::Whole).await {
        Err(CascadeError::Exhausted { attempts }) => {
            assert_eq!(attempts.len(), 2);
            assert!(
                attempts
                    .iter()
                    .all(|a| a.outcome == AttemptOutcome::ConnectionError),
                "{attempts:?}"
            );
        }
        other => panic!("expected Exhausted, got {other:?}"),
    }
}

#[tokio::test]
async fn a_pinned_provider_is_the_only_one_tried() {
    let cascade = cascade(vec![
        entry(
            "claude",
            Protocol::Anthropic,
            &simulated(Protocol::Anthropic).await,
        ),
        entry("gpt", Protocol::OpenAi, &simulated(Protocol::OpenAi).await),
    ]);
    let mut request = question();
    request.pinned = Some("gpt".into());
    let answer = cascade.open(&request, Delivery::Whole).await.unwrap();
    assert_eq!(served_by(&answer), "gpt");
    assert_eq!(answer.attempts.len(), 1);
    request.pinned = Some("nope".into());
    assert!(matches!(
        cascade.open(&request, Delivery::Whole).await,
        Err(CascadeError::UnknownProvider(_))
    ));
}

#[tokio::test]
async fn an_open_breaker_skips_its_provider_without_any_io_until_the_probe() {
    let primary = ScriptedServer::start(Script::respond(
        503,
        "application/json",
        r#"{"error":{"message":"down","type":"server_error"}}"#,
    ))
    .await;
    let events = Arc::new(EventBus::default());
    let mut transitions = events.subscribe();
    let clock = ManualClock::new();
    let cascade = cascade_with(
        vec![
            entry("gpt", Protocol::OpenAi, &format!("{}/v1", primary.url)),
            entry(
                "claude",
                Protocol::Anthropic,
                &simulated(Protocol::Anthropic).await,
            ),
        ],
        events.clone(),
        clock.clone(),
    );
    for _ in 0..3 {
        let served = cascade.open(&question(), Delivery::Whole).await.unwrap();
        assert_eq!(served_by(&served), "claude");
    }
    assert_eq!(primary.hits(), 3);
    let answer = cascade.open(&question(), Delivery::Whole).await.unwrap();
    assert_eq!(answer.attempts[0].outcome, AttemptOutcome::SkippedOpen);
    assert_eq!(primary.hits(), 3, "no request reaches an OPEN provider");
    let Ok(GatewayEvent::BreakerTransition(Transition {
        provider,
        from,
        to,
        reason,
        ..
    })) = transitions.try_recv()
    else {
        panic!("the opening is an event")
    };
    assert_eq!(
        (provider.as_str(), from, to),
        ("gpt", BreakerState::Closed, BreakerState::Open)
    );
    assert!(reason.contains("3 consecutive failures"), "{reason}");

    // Just before the cool-down ends, still no I/O.
    clock.advance(Duration::from_millis(299));
    cascade.open(&question(), Delivery::Whole).await.unwrap();
    assert_eq!(primary.hits(), 3);
    // After the cool-down, one probe goes through; it fails and re-opens.
    clock.advance(Duration::from_millis(1));
    cascade.open(&question(), Delivery::Whole).await.unwrap();
    assert_eq!(primary.hits(), 4);
    let states: Vec<_> = std::iter::from_fn(|| transitions.try_recv().ok())
        .filter_map(|e| match e {
            GatewayEvent::BreakerTransition(t) => Some((t.from, t.to)),
            _ => None,
        })
        .collect();
    assert_eq!(
        states,
        vec![
            (BreakerState::Open, BreakerState::HalfOpen),
            (BreakerState::HalfOpen, BreakerState::Open)
        ]
    );
}

fn openai_error(status: u16, code: &str, message: &str) -> Script {
    Script::respond(
        status,
        "application/json",
        &serde_json::json!({"error": {"message": message, "type": "server_error", "code": code}})
            .to_string(),
    )
}

fn openai_answer(text: &str) -> Script {
    Script::respond(
        200,
        "application/json",
        &serde_json::json!({"choices": [{"index": 0, "message": {"role": "assistant", "content": text},
            "finish_reason": "stop"}]})
        .to_string(),
    )
}

#[tokio::test]
async fn an_answer_without_text_or_a_tool_call_falls_over_whole_or_streamed() {
    let backup = ScriptedServer::start(openai_answer("backup")).await;
    let anthropic_empty = Script::respond(
        200,
        "application/json",
        &serde_json::json!({"type": "message", "role": "assistant", "content": [],
            "stop_reason": "end_turn", "usage": {"input_tokens": 5, "output_tokens": 0}})
        .to_string(),
    );
    let openai_null = Script::respond(
        200,
        "application/json",
        &serde_json::json!({"choices": [{"index": 0, "message": {"role": "assistant", "content": null},
            "finish_reason": "stop"}]})
        .to_string(),
    );
    let openai_thought_only = Script::respond(
        200,
        "application/json",
        &serde_json::json!({"choices": [{"index": 0, "message": {"role": "assistant", "content": ""},
            "finish_reason": "length"}], "usage": {"prompt_tokens": 5, "completion_tokens": 256,
            "total_tokens": 261, "completion_tokens_details": {"reasoning_tokens": 256}}})
        .to_string(),
    );
    for (protocol, script) in [
        (Protocol::Anthropic, anthropic_empty),
        (Protocol::OpenAi, openai_null),
        (Protocol::OpenAi, openai_thought_only),
    ] {
        let empty = ScriptedServer::start(script).await;
        let base = match protocol {
            Protocol::OpenAi => format!("{}/v1", empty.url),
            Protocol::Anthropic => empty.url.clone(),
        };
        let cascade = cascade(vec![
            entry("empty", protocol, &base),
            entry("llama", Protocol::OpenAi, &format!("{}/v1", backup.url)),
        ]);
        // A server that answers a stream request whole takes the same path.
        for delivery in [Delivery::Whole, Delivery::Streamed] {
            let served = cascade.open(&question(), delivery).await.unwrap();
            assert_eq!(served_by(&served), "llama", "{protocol:?} {delivery:?}");
            assert_eq!(whole_text(&served), "backup");
            let outcomes: Vec<_> = served.attempts.iter().map(|a| a.outcome).collect();
            assert_eq!(
                outcomes,
                vec![AttemptOutcome::Malformed, AttemptOutcome::Ok],
                "{protocol:?} {delivery:?}"
            );
        }
    }

    // An answer the provider's content filter emptied is its safety decision,
    // which the caller sees rather than a provider that might decide otherwise.
    let filtered = ScriptedServer::start(Script::respond(
        200,
        "application/json",
        &serde_json::json!({"choices": [{"index": 0, "message": {"role": "assistant", "content": null},
            "finish_reason": "content_filter"}]})
        .to_string(),
    ))
    .await;
    let cascade = cascade(vec![
        entry("gpt", Protocol::OpenAi, &format!("{}/v1", filtered.url)),
        entry("llama", Protocol::OpenAi, &format!("{}/v1", backup.url)),
    ]);
    for delivery in [Delivery::Whole, Delivery::Streamed] {
        let served = cascade.open(&question(), delivery).await.unwrap();
        assert_eq!(served_by(&served), "gpt", "{delivery:?}");
        assert!(
            served
                .answer
                .head
                .contains(&Piece::Finish(FinishReason::ContentFilter)),
            "{delivery:?}"
        );
        assert_eq!(served.attempts.len(), 1);
    }
}

#[tokio::test]
async fn a_model_that_does_not_take_a_value_passes_to_the_next_and_all_refusing_is_a_400() {
    let refusal = unsupported_temperature();
    let reasoning = ScriptedServer::start(refusal.clone()).await;
    let backup = ScriptedServer::start(openai_answer("backup")).await;
    let cascade = cascade(vec![
        entry(
            "o-model",
            Protocol::OpenAi,
            &format!("{}/v1", reasoning.url),
        ),
        entry("llama", Protocol::OpenAi, &format!("{}/v1", backup.url)),
    ]);
    let served = cascade.open(&question(), Delivery::Whole).await.unwrap();
    assert_eq!(served_by(&served), "llama");
    let outcomes: Vec<_> = served.attempts.iter().map(|a| a.outcome).collect();
    assert_eq!(
        outcomes,
        vec![AttemptOutcome::Unsupported, AttemptOutcome::Ok]
    );

    let other = ScriptedServer::start(refusal).await;
    let cascade = self::cascade(vec![
        entry(
            "o-model",
            Protocol::OpenAi,
            &format!("{}/v1", reasoning.url),
        ),
        entry("o-other", Protocol::OpenAi, &format!("{}/v1", other.url)),
    ]);
    for _ in 0..4 {
        match cascade.open(&question(), Delivery::Whole).await {
            Err(CascadeError::InvalidRequest {
                provider,
                status,
                message,
                attempts,
            }) => {
                assert_eq!((provider.as_str(), status), ("o-model", 400));
                assert!(message.contains("temperature"), "{message}");
                assert_eq!(attempts.len(), 2);
            }
            Err(other) => panic!("{other:?}"),
            Ok(served) => panic!("served by {}", served_by(&served)),
        }
    }
    // Refusals say nothing of the providers' health: no breaker opened.
    assert_eq!(other.hits(), 4);
}

#[tokio::test]
async fn a_whitespace_stop_sequence_passes_anthropic_by_for_a_provider_that_takes_it() {
    // Anthropic refuses a stop sequence of whitespace alone, "\n" included.
    let claude = simulated(Protocol::Anthropic).await;
    let gpt = simulated(Protocol::OpenAi).await;
    let cascade = cascade(vec![
        entry("claude", Protocol::Anthropic, &claude),
        entry("gpt", Protocol::OpenAi, &gpt),
    ]);
    let mut request = question();
    request.options.sampling.stop = vec!["\n".into()];
    let served = cascade.open(&request, Delivery::Whole).await.unwrap();
    assert_eq!(served_by(&served), "gpt");
    assert_eq!(served.attempts[0].outcome, AttemptOutcome::Unsupported);
    assert_eq!(served.attempts[0].latency_ms, 0, "no I/O");
    // A stop sequence with something in it is Claude's to honour.
    request.options.sampling.stop = vec!["\nCustomer:".into()];
    let served = cascade.open(&request, Delivery::Whole).await.unwrap();
    assert_eq!(served_by(&served), "claude");
}

#[tokio::test]
async fn a_tool_schema_without_its_root_type_reaches_anthropic_as_an_object() {
    // OpenAI takes `"parameters": {}`; Anthropic refuses a schema without a type.
    let claude = simulated(Protocol::Anthropic).await;
    let cascade = cascade(vec![entry("claude", Protocol::Anthropic, &claude)]);
    let mut request = question();
    request.options.tools = vec![provider::Tool {
        name: "reset_password".into(),
        description: Some("Sends a password reset link".into()),
        parameters: serde_json::json!({}),
    }];
    let served = cascade.open(&request, Delivery::Whole).await.unwrap();
    assert_eq!(served_by(&served), "claude");
}

#[tokio::test]
async fn a_claude_that_refuses_temperature_with_top_p_is_passed_by_and_then_skipped() {
    let claude = ScriptedServer::start(Script::respond(
        400,
        "application/json",
        r#"{"type":"error","error":{"type":"invalid_request_error","message":"`temperature` and `top_p` cannot both be specified for this model. Please use only one."}}"#,
    ))
    .await;
    let backup = ScriptedServer::start(openai_answer("backup")).await;
    let cascade = cascade(vec![
        entry("claude", Protocol::Anthropic, &claude.url),
        entry("gpt", Protocol::OpenAi, &format!("{}/v1", backup.url)),
    ]);
    let mut both = question();
    both.options.sampling.temperature = Some(0.2);
    both.options.sampling.top_p = Some(0.9);
    for round in 0..2 {
        let served = cascade.open(&both, Delivery::Streamed).await.unwrap();
        assert_eq!(served_by(&served), "gpt", "round {round}");
        assert_eq!(served.attempts[0].outcome, AttemptOutcome::Unsupported);
    }
    assert_eq!(claude.hits(), 1, "learned once, then passed by without I/O");
    // One of the two is still Claude's to serve.
    let mut one = question();
    one.options.sampling.temperature = Some(0.2);
    let _ = cascade.open(&one, Delivery::Whole).await;
    assert_eq!(claude.hits(), 2);
}

#[tokio::test]
async fn an_empty_assistant_turn_in_the_history_reaches_anthropic_as_nothing() {
    // Anthropic refuses a message without content and a whitespace-only text
    // block; a bot's history may hold an empty reply all the same.
    let claude = simulated(Protocol::Anthropic).await;
    let cascade = cascade(vec![entry("claude", Protocol::Anthropic, &claude)]);
    let mut request = question();
    request.turns = vec![
        ChatTurn::user("Hi"),
        ChatTurn::new(Role::Assistant, String::new()),
        ChatTurn::user("Are you there?"),
        ChatTurn::new(Role::Assistant, " \n".to_string()),
        ChatTurn::user("Where is my order?"),
    ];
    let served = cascade.open(&request, Delivery::Whole).await.unwrap();
    assert_eq!(served_by(&served), "claude");
    assert_eq!(served.attempts[0].outcome, AttemptOutcome::Ok);
}

#[tokio::test]
async fn a_provider_with_its_own_first_token_limit_may_think_longer() {
    // A reasoning model: the head at once, the first token after 900 ms, when
    // the cascade's first-token limit is 400 ms.
    let mut thinking = Script::sse(
        vec![
            sse_event(
                None,
                r#"{"choices":[{"index":0,"delta":{"role":"assistant"}}]}"#,
            ),
            sse_event(
                None,
                r#"{"choices":[{"index":0,"delta":{"content":"Thought it over."}}]}"#,
            ),
            sse_event(
                None,
                r#"{"choices":[{"index":0,"delta":{},"finish_reason":"stop"}]}"#,
            ),
            sse_event(None, "[DONE]"),
        ],
        Duration::ZERO,
        End::Close,
    );
    thinking.parts[1].0 = Duration::from_millis(900);
    let thinker = ScriptedServer::start(thinking).await;
    let backup = ScriptedServer::start(openai_answer("backup")).await;
    let cascade_with = |first_token: Option<Duration>| {
        let url = format!("{}/v1", thinker.url);
        let mut patient = entry("o-model", Protocol::OpenAi, &url);
        if let Some(limit) = first_token {
            // As the server builds it from `first_token_timeout_ms`: the
            // cascade's limit and the reader's patience before the first token.
            patient.first_token = Some(limit);
            patient.provider = provider::build(
                Protocol::OpenAi,
                ProviderTarget {
                    name: "o-model".into(),
                    model: "o-model-model".into(),
                    base: Endpoint::direct(url),
                    api_key: None,
                    limits: WireLimits {
                        first_token: limit,
                        ..WireLimits::with_timeouts(TIMEOUTS.first_byte, TIMEOUTS.stall)
                    },
                    continuation: ContinuationStyle::None,
                },
                reqwest::Client::new(),
            );
        }
        cascade(vec![
            patient,
            entry("llama", Protocol::OpenAi, &format!("{}/v1", backup.url)),
        ])
    };
    let served = cascade_with(None)
        .open(&question(), Delivery::Streamed)
        .await
        .unwrap();
    assert_eq!(served_by(&served), "llama");
    assert_eq!(served.attempts[0].outcome, AttemptOutcome::Timeout);

    let served = cascade_with(Some(Duration::from_secs(3)))
        .open(&question(), Delivery::Streamed)
        .await
        .unwrap();
    assert_eq!(served_by(&served), "o-model");
    assert_eq!(whole_text(&served), "Thought it over.");
}

#[tokio::test]
async fn one_transient_failure_of_a_healthy_provider_is_retried_at_once() {
    let flaky = ScriptedServer::sequence(vec![
        openai_error(503, "busy", "busy"),
        openai_answer("fine"),
    ])
    .await;
    let backup = ScriptedServer::start(openai_answer("backup")).await;
    let mut first = entry("gpt", Protocol::OpenAi, &format!("{}/v1", flaky.url));
    first.retries = 1;
    let cascade = cascade(vec![
        first,
        entry("llama", Protocol::OpenAi, &format!("{}/v1", backup.url)),
    ]);
    let served = cascade.open(&question(), Delivery::Whole).await.unwrap();
    assert_eq!(served_by(&served), "gpt");
    assert_eq!(whole_text(&served), "fine");
    let outcomes: Vec<_> = served.attempts.iter().map(|a| a.outcome).collect();
    assert_eq!(
        outcomes,
        vec![AttemptOutcome::ServerError, AttemptOutcome::Ok]
    );
    assert_eq!((flaky.hits(), backup.hits()), (2, 0));

    // A provider that keeps failing is not retried: the next one serves.
    let down = ScriptedServer::start(openai_error(503, "busy", "down")).await;
    let mut first = entry("gpt", Protocol::OpenAi, &format!("{}/v1", down.url));
    first.retries = 1;
    let cascade = self::cascade(vec![
        first,
        entry("llama", Protocol::OpenAi, &format!("{}/v1", backup.url)),
    ]);
    for expected_hits in [2, 3] {
        let served = cascade.open(&question(), Delivery::Whole).await.unwrap();
        assert_eq!(served_by(&served), "llama");
        assert_eq!(
            down.hits(),
            expected_hits,
            "one retry, then none while it keeps failing"
        );
    }
    // And a request the provider refuses is never retried.
    let refusing = ScriptedServer::start(openai_error(400, "bad", "bad field")).await;
    let mut only = entry("gpt", Protocol::OpenAi, &format!("{}/v1", refusing.url));
    only.retries = 3;
    let cascade = self::cascade(vec![only]);
    assert!(matches!(
        cascade.open(&question(), Delivery::Whole).await,
        Err(CascadeError::InvalidRequest { .. })
    ));
    assert_eq!(refusing.hits(), 1);
}

#[tokio::test]
async fn a_conversation_too_long_for_one_window_goes_to_the_next_and_spares_the_breaker() {
    let small = ScriptedServer::start(openai_error(
        400,
        "context_length_exceeded",
        "This model's maximum context length is 8192 tokens.",
    ))
    .await;
    let large = ScriptedServer::start(openai_answer("answered by the larger window")).await;
    let cascade = cascade(vec![
        entry("gpt", Protocol::OpenAi, &format!("{}/v1", small.url)),
        entry("llama", Protocol::OpenAi, &format!("{}/v1", large.url)),
    ]);
    for _ in 0..4 {
        let served = cascade.open(&question(), Delivery::Whole).await.unwrap();
        assert_eq!(served_by(&served), "llama");
        assert_eq!(served.attempts[0].outcome, AttemptOutcome::TooLarge);
    }
    let gpt = &cascade.breakers()[0];
    assert_eq!(
        (gpt.state, gpt.consecutive_failures),
        (BreakerState::Closed, 0)
    );

    // Too large for every window: the caller's own error, with the provider's words.
    let cascade = self::cascade(vec![
        entry("gpt", Protocol::OpenAi, &format!("{}/v1", small.url)),
        entry("llama", Protocol::OpenAi, &format!("{}/v1", small.url)),
    ]);
    match cascade.open(&question(), Delivery::Streamed).await {
        Err(CascadeError::TooLarge {
            status,
            message,
            attempts,
            ..
        }) => {
            assert_eq!(status, 400);
            assert!(message.contains("maximum context length"));
            assert_eq!(attempts.len(), 2);
        }
        other => panic!("expected TooLarge, got {other:?}"),
    }
}

#[tokio::test]
async fn a_continuation_is_asked_only_of_providers_that_can_continue() {
    let none = ScriptedServer::start(openai_answer("should never be asked")).await;
    let capable = ScriptedServer::start(openai_answer(" rest of it.")).await;
    let mut prefill = entry("llama", Protocol::OpenAi, &format!("{}/v1", capable.url));
    prefill.provider = provider::build(
        Protocol::OpenAi,
        ProviderTarget {
            name: "llama".into(),
            model: "llama-model".into(),
            base: Endpoint::direct(format!("{}/v1", capable.url)),
            api_key: None,
            limits: WireLimits::with_timeouts(TIMEOUTS.first_byte, TIMEOUTS.stall),
            continuation: ContinuationStyle::Prefill,
        },
        reqwest::Client::new(),
    );
    let cascade = cascade(vec![
        entry("gpt", Protocol::OpenAi, &format!("{}/v1", none.url)),
        prefill,
    ]);
    let mut request = question();
    request.continuation = Some("The first part".into());
    let served = cascade.open(&request, Delivery::Whole).await.unwrap();
    assert_eq!(served_by(&served), "llama");
    assert_eq!(served.attempts[0].outcome, AttemptOutcome::CannotContinue);
    assert_eq!(served.attempts[0].latency_ms, 0);
    assert_eq!(
        none.hits(),
        0,
        "no I/O towards a provider that cannot continue"
    );
    let body = capable.received.lock().unwrap()[0].body.clone();
    assert_eq!(
        body["messages"].as_array().unwrap().last().unwrap()["content"],
        "The first part"
    );
}

#[tokio::test]
async fn a_continuation_with_nothing_to_add_ends_the_answer_instead_of_failing() {
    // The break came after the last word: the provider asked to continue says
    // it stopped and adds nothing, which is a whole answer, not an empty one.
    let done = ScriptedServer::start(openai_answer("")).await;
    let backup = ScriptedServer::start(openai_answer(" never asked")).await;
    let prefill = |name: &str, url: &str| {
        let mut entry = entry(name, Protocol::OpenAi, &format!("{url}/v1"));
        entry.provider = provider::build(
            Protocol::OpenAi,
            ProviderTarget {
                name: name.into(),
                model: format!("{name}-model"),
                base: Endpoint::direct(format!("{url}/v1")),
                api_key: None,
                limits: WireLimits::with_timeouts(TIMEOUTS.first_byte, TIMEOUTS.stall),
                continuation: ContinuationStyle::Prefill,
            },
            reqwest::Client::new(),
        );
        entry
    };
    let cascade = cascade(vec![
        prefill("llama", &done.url),
        prefill("mistral", &backup.url),
    ]);
    let mut request = question();
    request.continuation = Some("Your order ships tomorrow.".into());
    for delivery in [Delivery::Whole, Delivery::Streamed] {
        let served = cascade.open(&request, delivery).await.unwrap();
        assert_eq!(served_by(&served), "llama", "{delivery:?}");
        assert_eq!(whole_text(&served), "", "{delivery:?}");
        assert_eq!(served.attempts.len(), 1, "{delivery:?}");
        assert_eq!(served.attempts[0].outcome, AttemptOutcome::Ok);
    }
    assert_eq!(backup.hits(), 0);
}

#[tokio::test]
async fn background_probes_close_the_breaker_without_a_customer() {
    let flaky = ScriptedServer::sequence(vec![
        openai_error(503, "busy", "down"),
        openai_error(503, "busy", "down"),
        openai_error(503, "busy", "down"),
        // The first background probe fails too; the second finds it back.
        openai_error(503, "busy", "down"),
        openai_answer("pong"),
    ])
    .await;
    let backup = simulated(Protocol::Anthropic).await;
    let mut first = entry("gpt", Protocol::OpenAi, &format!("{}/v1", flaky.url));
    first.breaker.probe = ProbeMode::Background;
    let clock = ManualClock::new();
    let cascade = Arc::new(cascade_with(
        vec![first, entry("claude", Protocol::Anthropic, &backup)],
        Arc::new(EventBus::default()),
        clock.clone(),
    ));
    for _ in 0..3 {
        cascade.open(&question(), Delivery::Whole).await.unwrap();
    }
    assert_eq!(cascade.breakers()[0].state, BreakerState::Open);
    // Long past the cool-down, customers still never reach it.
    clock.advance(Duration::from_secs(5));
    for _ in 0..3 {
        let served = cascade.open(&question(), Delivery::Whole).await.unwrap();
        assert_eq!(served_by(&served), "claude");
    }
    assert_eq!(flaky.hits(), 3);
    // The prober's first probe fails: OPEN again, with a doubled cool-down.
    for probe in cascade.probe_due() {
        probe.await.unwrap();
    }
    assert_eq!(flaky.hits(), 4);
    assert_eq!(cascade.breakers()[0].state, BreakerState::Open);
    assert!(cascade.probe_due().is_empty(), "not due again yet");
    clock.advance(Duration::from_millis(600));
    for probe in cascade.probe_due() {
        probe.await.unwrap();
    }
    assert_eq!(cascade.breakers()[0].state, BreakerState::Closed);
    let probe = flaky.received.lock().unwrap()[4].body.clone();
    assert_eq!(probe["max_tokens"], 1, "a probe is one token");
    let served = cascade.open(&question(), Delivery::Whole).await.unwrap();
    assert_eq!(served_by(&served), "gpt");
}

/// The `data:` payloads of a simulated OpenAI stream asked with `stream_options`.
async fn simulated_chunks(stream_options: serde_json::Value) -> Vec<serde_json::Value> {
    let base = simulated(Protocol::OpenAi).await;
    let body = reqwest::Client::new()
        .post(format!("{base}/chat/completions"))
        .json(&serde_json::json!({
            "model": "gpt-4o-mini",
            "stream": true,
            "stream_options": stream_options,
            "messages": [{"role": "user", "content": "How do I reset my password?"}],
        }))
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    support::app::sse_data(&body)
        .iter()
        .filter(|data| *data != "[DONE]")
        .map(|data| serde_json::from_str(data).unwrap())
        .collect()
}

#[tokio::test]
async fn the_simulated_openai_pads_its_chunks_as_openai_does_unless_asked_not_to() {
    let padded = simulated_chunks(serde_json::json!({"include_usage": true})).await;
    let deltas: Vec<_> = padded
        .iter()
        .filter(|c| !c["choices"].as_array().unwrap().is_empty())
        .collect();
    assert!(deltas.len() > 3, "{padded:?}");
    let paddings: std::collections::HashSet<_> = deltas
        .iter()
        .map(|c| c["obfuscation"].as_str().expect("every delta is padded"))
        .collect();
    assert!(paddings.len() > 1, "random, not one constant: {paddings:?}");
    let plain = simulated_chunks(serde_json::json!({"include_obfuscation": false})).await;
    assert!(
        plain.iter().all(|c| c.get("obfuscation").is_none()),
        "{plain:?}"
    );

    // The gateway reads the padded stream (through its envelope) to the same answer.
    let cascade = cascade(vec![entry(
        "gpt",
        Protocol::OpenAi,
        &simulated(Protocol::OpenAi).await,
    )]);
    let served = cascade.open(&question(), Delivery::Streamed).await.unwrap();
    let mut text = whole_text(&served);
    let mut rest = served.answer.rest;
    while let Some(piece) = rest.next().await {
        if let Piece::Text(t) = piece.unwrap() {
            text.push_str(&t);
        }
    }
    let sent: String = deltas
        .iter()
        .filter_map(|c| c["choices"][0]["delta"]["content"].as_str())
        .collect();
    assert_eq!(text, sent);
}
