//! The adapter conformance suite: every protocol adapter faces the same failures
//! on the wire and must classify them the same way. Adding a provider means adding
//! one `Wire` description to `wires()`.

mod support;

use chaosai::config::{Protocol, Secret};
use chaosai::gateway::provider::{
    self, Endpoint, FinishReason, Options, Piece, Provider, ProviderError, ProviderRequest,
    ProviderTarget, ReasoningEffort, Sampling, TimeoutKind, Tool, ToolCallDelta, ToolChoice,
    WireLimits,
};
use chaosai::shared::ContinuationStyle;
use chaosai::shared::{AttemptOutcome, ChatTurn};
use futures::StreamExt;
use std::sync::Arc;
use std::time::Duration;
use support::{sse_event, unsupported_temperature, End, Script, ScriptedServer};

/// What a protocol looks like on the wire, for scripting its test servers.
struct Wire {
    protocol: Protocol,
    /// Path the adapter must post to (relative to the scripted server's root).
    path: &'static str,
    /// Suffix of the base URL the adapter is configured with.
    base_suffix: &'static str,
    /// A whole answer whose text is the argument.
    answer: fn(&str) -> String,
    /// SSE events carrying these deltas, without the end marker.
    deltas: fn(&[&str]) -> Vec<String>,
    /// The protocol's end-of-stream events.
    end: fn() -> Vec<String>,
    /// The events that say why the answer stopped, without the protocol's final
    /// marker (`[DONE]`, `message_stop`): some servers close right after them.
    finish_only: fn() -> Vec<String>,
    /// A 400 saying the conversation does not fit the model's window.
    too_long: fn() -> String,
    /// An error body with this message.
    error: fn(&str) -> String,
    /// A whole answer that calls these tools, reporting 21 prompt and 9 completion tokens.
    tool_answer: fn(&[Call]) -> String,
    /// A stream that calls these tools, each call's arguments cut into pieces of
    /// `piece` characters, ending with the usage (21 and 9 tokens) unless `cut`.
    tool_stream: fn(&[Call], usize, bool) -> Vec<String>,
}

/// A tool call as a test scripts it.
struct Call {
    id: &'static str,
    name: &'static str,
    arguments: &'static str,
}

const CALLS: &[Call] = &[
    Call {
        id: "call_a1",
        name: "order_status",
        arguments: r#"{"order_id":"1111"}"#,
    },
    Call {
        id: "call_b2",
        name: "order_status",
        arguments: r#"{"order_id":"2222"}"#,
    },
];

/// A message's text, whether its content is a string or text blocks.
fn text_of(content: &serde_json::Value) -> String {
    match content {
        serde_json::Value::String(s) => s.clone(),
        serde_json::Value::Array(blocks) => blocks
            .iter()
            .filter(|b| b["type"] == "text")
            .filter_map(|b| b["text"].as_str())
            .collect(),
        other => panic!("content is neither text nor blocks: {other}"),
    }
}

fn pieces(text: &str, size: usize) -> Vec<String> {
    let chars: Vec<char> = text.chars().collect();
    chars.chunks(size).map(|c| c.iter().collect()).collect()
}

fn openai() -> Wire {
    Wire {
        protocol: Protocol::OpenAi,
        path: "/v1/chat/completions",
        base_suffix: "/v1",
        answer: |text| {
            serde_json::json!({"id": "x", "object": "chat.completion", "choices": [
                {"index": 0, "message": {"role": "assistant", "content": text}, "finish_reason": "stop"}]})
            .to_string()
        },
        deltas: |parts| {
            let mut events = vec![sse_event(
                None,
                r#"{"choices":[{"index":0,"delta":{"role":"assistant"}}]}"#,
            )];
            events.extend(parts.iter().map(|p| {
                sse_event(
                    None,
                    &serde_json::json!({"choices": [{"index": 0, "delta": {"content": p}}]})
                        .to_string(),
                )
            }));
            events
        },
        end: || {
            vec![
                sse_event(
                    None,
                    r#"{"choices":[{"index":0,"delta":{},"finish_reason":"stop"}]}"#,
                ),
                sse_event(None, "[DONE]"),
            ]
        },
        error: |message| {
            serde_json::json!({"error": {"message": message, "type": "server_error", "code": null}})
                .to_string()
        },
        // The last chunk carries both the last text and the finish reason.
        finish_only: || {
            vec![sse_event(
                None,
                r#"{"choices":[{"index":0,"delta":{"content":"!"},"finish_reason":"stop"}]}"#,
            )]
        },
        too_long: || {
            serde_json::json!({"error": {"message": "This model's maximum context length is 8192 tokens. However, your messages resulted in 9000 tokens.",
                "type": "invalid_request_error", "param": "messages", "code": "context_length_exceeded"}})
            .to_string()
        },
        tool_answer: |calls| {
            let calls: Vec<_> = calls
                .iter()
                .map(|c| {
                    serde_json::json!({"id": c.id, "type": "function",
                    "function": {"name": c.name, "arguments": c.arguments}})
                })
                .collect();
            serde_json::json!({"id": "x", "object": "chat.completion", "model": "test-model-0613",
                "choices": [{"index": 0, "message": {"role": "assistant", "content": null, "tool_calls": calls},
                    "finish_reason": "tool_calls"}],
                "usage": {"prompt_tokens": 21, "completion_tokens": 9, "total_tokens": 30}})
            .to_string()
        },
        tool_stream: |calls, size, cut| {
            let chunk = |delta: serde_json::Value, finish: Option<&str>| {
                sse_event(
                    None,
                    &serde_json::json!({"model": "test-model-0613", "choices": [{"index": 0,
                        "delta": delta, "finish_reason": finish}], "usage": null})
                    .to_string(),
                )
            };
            let mut events = vec![chunk(
                serde_json::json!({"role": "assistant", "content": null}),
                None,
            )];
            for (index, call) in calls.iter().enumerate() {
                events.push(chunk(
                    serde_json::json!({"tool_calls": [{"index": index, "id": call.id, "type": "function",
                        "function": {"name": call.name, "arguments": ""}}]}),
                    None,
                ));
                for piece in pieces(call.arguments, size) {
                    events.push(chunk(
                        serde_json::json!({"tool_calls": [{"index": index, "function": {"arguments": piece}}]}),
                        None,
                    ));
                }
            }
            if cut {
                events.truncate(events.len() - 2);
                return events;
            }
            events.push(chunk(serde_json::json!({}), Some("tool_calls")));
            events.push(sse_event(
                None,
                r#"{"choices":[],"usage":{"prompt_tokens":21,"completion_tokens":9,"total_tokens":30}}"#,
            ));
            events.push(sse_event(None, "[DONE]"));
            events
        },
    }
}

fn anthropic() -> Wire {
    Wire {
        protocol: Protocol::Anthropic,
        path: "/v1/messages",
        base_suffix: "",
        answer: |text| {
            serde_json::json!({"id": "msg", "type": "message", "role": "assistant",
                "content": [{"type": "text", "text": text}], "stop_reason": "end_turn"})
            .to_string()
        },
        deltas: |parts| {
            let mut events = vec![
                sse_event(
                    Some("message_start"),
                    r#"{"type":"message_start","message":{"id":"msg","content":[]}}"#,
                ),
                sse_event(
                    Some("content_block_start"),
                    r#"{"type":"content_block_start","index":0,"content_block":{"type":"text","text":""}}"#,
                ),
                sse_event(Some("ping"), r#"{"type":"ping"}"#),
            ];
            events.extend(parts.iter().map(|p| {
                sse_event(
                    Some("content_block_delta"),
                    &serde_json::json!({"type": "content_block_delta", "index": 0,
                        "delta": {"type": "text_delta", "text": p}})
                    .to_string(),
                )
            }));
            events
        },
        end: || {
            vec![
                sse_event(
                    Some("content_block_stop"),
                    r#"{"type":"content_block_stop","index":0}"#,
                ),
                sse_event(
                    Some("message_delta"),
                    r#"{"type":"message_delta","delta":{"stop_reason":"end_turn"}}"#,
                ),
                sse_event(Some("message_stop"), r#"{"type":"message_stop"}"#),
            ]
        },
        error: |message| {
            serde_json::json!({"type": "error", "error": {"type": "overloaded_error", "message": message}}).to_string()
        },
        finish_only: || {
            vec![
                sse_event(
                    Some("content_block_delta"),
                    r#"{"type":"content_block_delta","index":0,"delta":{"type":"text_delta","text":"!"}}"#,
                ),
                sse_event(
                    Some("message_delta"),
                    r#"{"type":"message_delta","delta":{"stop_reason":"end_turn"}}"#,
                ),
            ]
        },
        too_long: || {
            serde_json::json!({"type": "error", "error": {"type": "invalid_request_error",
                "message": "prompt is too long: 208310 tokens > 200000 maximum"}})
            .to_string()
        },
        tool_answer: |calls| {
            let blocks: Vec<_> = calls
                .iter()
                .map(|c| {
                    serde_json::json!({"type": "tool_use", "id": c.id, "name": c.name,
                    "input": serde_json::from_str::<serde_json::Value>(c.arguments).unwrap()})
                })
                .collect();
            serde_json::json!({"id": "msg", "type": "message", "role": "assistant", "model": "test-model-0613",
                "content": blocks, "stop_reason": "tool_use",
                "usage": {"input_tokens": 21, "output_tokens": 9}})
            .to_string()
        },
        tool_stream: |calls, size, cut| {
            let event =
                |name: &str, data: serde_json::Value| sse_event(Some(name), &data.to_string());
            let mut events = vec![event(
                "message_start",
                serde_json::json!({"type": "message_start", "message": {"id": "msg", "model": "test-model-0613",
                    "content": [], "usage": {"input_tokens": 21, "output_tokens": 1}}}),
            )];
            for (index, call) in calls.iter().enumerate() {
                events.push(event(
                    "content_block_start",
                    serde_json::json!({"type": "content_block_start", "index": index,
                        "content_block": {"type": "tool_use", "id": call.id, "name": call.name, "input": {}}}),
                ));
                for piece in pieces(call.arguments, size) {
                    events.push(event(
                        "content_block_delta",
                        serde_json::json!({"type": "content_block_delta", "index": index,
                            "delta": {"type": "input_json_delta", "partial_json": piece}}),
                    ));
                }
                events.push(event(
                    "content_block_stop",
                    serde_json::json!({"type": "content_block_stop", "index": index}),
                ));
            }
            if cut {
                events.truncate(events.len() - 3);
                return events;
            }
            events.push(event(
                "message_delta",
                serde_json::json!({"type": "message_delta", "delta": {"stop_reason": "tool_use"},
                    "usage": {"output_tokens": 9}}),
            ));
            events.push(event(
                "message_stop",
                serde_json::json!({"type": "message_stop"}),
            ));
            events
        },
    }
}

fn wires() -> Vec<Wire> {
    vec![openai(), anthropic()]
}

const LIMITS: WireLimits =
    WireLimits::with_timeouts(Duration::from_millis(300), Duration::from_millis(300));

fn adapter(wire: &Wire, server: &ScriptedServer) -> Arc<dyn Provider> {
    adapter_continuing(wire, server, ContinuationStyle::default_for(wire.protocol))
}

fn adapter_continuing(
    wire: &Wire,
    server: &ScriptedServer,
    continuation: ContinuationStyle,
) -> Arc<dyn Provider> {
    let target = ProviderTarget {
        name: "under-test".into(),
        model: "test-model".into(),
        base: Endpoint::direct(format!("{}{}", server.url, wire.base_suffix)),
        api_key: Some(Secret::new("secret-key")),
        limits: LIMITS,
        continuation,
    };
    provider::build(wire.protocol, target, reqwest::Client::new())
}

fn request() -> ProviderRequest {
    ProviderRequest {
        system: "Be kind.".into(),
        turns: vec![
            ChatTurn::user("Where is my order?"),
            ChatTurn::assistant("Which order?"),
            ChatTurn::user("The last one."),
        ],
        max_tokens: 64,
        options: Options {
            sampling: Sampling {
                temperature: Some(0.2),
                ..Sampling::default()
            },
            ..Options::default()
        },
        continuation: None,
    }
}

/// The plain request with an order-status tool any call must use.
fn tool_request() -> ProviderRequest {
    let mut request = request();
    request.options.tools = vec![Tool {
        name: "order_status".into(),
        description: Some("Looks an order up".into()),
        parameters: serde_json::json!({"type": "object", "properties": {"order_id": {"type": "string"}}}),
    }];
    request.options.tool_choice = Some(ToolChoice::Required);
    request
}

/// Everything a stream yields, the error that ended it last.
async fn pieces_of(
    adapter: &Arc<dyn Provider>,
    request: &ProviderRequest,
) -> Vec<Result<Piece, ProviderError>> {
    match adapter.stream(request).await {
        Ok(stream) => stream.collect().await,
        Err(err) => vec![Err(err)],
    }
}

/// Collects a stream: the deltas, and the error that ended it, if any.
/// The error a whole request to `server` ends in.
async fn whole_error(wire: &Wire, server: &ScriptedServer) -> ProviderError {
    adapter(wire, server)
        .complete(&request())
        .await
        .unwrap_err()
}

async fn drain(adapter: &Arc<dyn Provider>) -> (Vec<String>, Option<ProviderError>) {
    let mut stream = match adapter.stream(&request()).await {
        Ok(stream) => stream,
        Err(err) => return (vec![], Some(err)),
    };
    let mut deltas = Vec::new();
    while let Some(item) = stream.next().await {
        match item {
            Ok(Piece::Text(text)) => deltas.push(text),
            Ok(_) => {}
            Err(err) => return (deltas, Some(err)),
        }
    }
    (deltas, None)
}

#[tokio::test]
async fn non_streamed_answers_and_the_wire_request() {
    for wire in wires() {
        let server = ScriptedServer::start(Script::respond(
            200,
            "application/json",
            &(wire.answer)("Hello there"),
        ))
        .await;
        let completion = adapter(&wire, &server).complete(&request()).await.unwrap();
        assert_eq!(completion.text, "Hello there", "{:?}", wire.protocol);
        assert_eq!(completion.finish_reason, FinishReason::Stop);

        let received = server.received.lock().unwrap()[0].clone();
        assert_eq!(received.line, format!("POST {} HTTP/1.1", wire.path));
        assert_eq!(received.body["model"], "test-model");
        assert_eq!(received.body["stream"], false);
        assert_eq!(received.body["max_tokens"], 64);
        let messages = received.body["messages"].as_array().unwrap();
        match wire.protocol {
            Protocol::OpenAi => {
                assert_eq!(received.header("authorization"), Some("Bearer secret-key"));
                assert_eq!(messages[0]["role"], "system");
                assert_eq!(messages[0]["content"], "Be kind.");
                assert_eq!(messages.len(), 4);
            }
            Protocol::Anthropic => {
                assert_eq!(received.header("x-api-key"), Some("secret-key"));
                assert!(received.header("anthropic-version").is_some());
                assert_eq!(received.body["system"], "Be kind.");
                assert_eq!(messages.len(), 3);
                assert_eq!(messages[0]["role"], "user");
            }
        }
        assert_eq!(
            text_of(&messages.last().unwrap()["content"]),
            "The last one."
        );
    }
}

#[tokio::test]
async fn streamed_answers_arrive_in_pieces_and_end_cleanly() {
    for wire in wires() {
        let mut events = (wire.deltas)(&["Hel", "lo", " there"]);
        events.extend((wire.end)());
        let server =
            ScriptedServer::start(Script::sse(events, Duration::from_millis(5), End::Close)).await;
        let (deltas, error) = drain(&adapter(&wire, &server)).await;
        assert_eq!(deltas, vec!["Hel", "lo", " there"], "{:?}", wire.protocol);
        assert!(error.is_none(), "{:?}: {error:?}", wire.protocol);
        assert_eq!(server.received.lock().unwrap()[0].body["stream"], true);
    }
}

#[tokio::test]
async fn a_server_that_ignores_stream_and_answers_whole_is_served_and_its_json_error_classified() {
    for wire in wires() {
        // Some compatible servers and proxies ignore `stream: true`.
        let server = ScriptedServer::start(Script::respond(
            200,
            "application/json; charset=utf-8",
            &(wire.answer)("Hello there"),
        ))
        .await;
        let pieces: Vec<Piece> = pieces_of(&adapter(&wire, &server), &request())
            .await
            .into_iter()
            .map(|p| p.unwrap_or_else(|e| panic!("{:?}: {e:?}", wire.protocol)))
            .collect();
        let texts: Vec<&Piece> = pieces.iter().filter(|p| p.is_content()).collect();
        assert_eq!(
            texts,
            vec![&Piece::Text("Hello there".into())],
            "{:?}",
            wire.protocol
        );
        assert!(
            pieces.contains(&Piece::Finish(FinishReason::Stop)),
            "{:?}: the whole answer says why it stopped: {pieces:?}",
            wire.protocol
        );
        assert_eq!(server.received.lock().unwrap()[0].body["stream"], true);

        // An error object with a success status: the provider's message, as a
        // server error (retryable, counted against its health), not "malformed".
        let server = ScriptedServer::start(Script::respond(
            200,
            "application/json",
            &(wire.error)("the backend is restarting"),
        ))
        .await;
        let (deltas, error) = drain(&adapter(&wire, &server)).await;
        assert!(deltas.is_empty());
        match error {
            Some(ProviderError::Server { message, .. }) => {
                assert!(message.contains("restarting"), "{message}")
            }
            other => panic!("{:?}: {other:?}", wire.protocol),
        }
    }
}

#[tokio::test]
async fn server_errors_and_overload_are_retryable_with_the_providers_message() {
    for wire in wires() {
        for status in [500, 503, 529] {
            let server = ScriptedServer::start(Script::respond(
                status,
                "application/json",
                &(wire.error)("busy now"),
            ))
            .await;
            let adapter = adapter(&wire, &server);
            for err in [
                adapter.complete(&request()).await.unwrap_err(),
                drain(&adapter).await.1.unwrap(),
            ] {
                assert_eq!(
                    err,
                    ProviderError::Server {
                        status,
                        message: "busy now".into()
                    },
                    "{:?}",
                    wire.protocol
                );
                assert!(err.falls_through());
            }
        }
    }
}

#[tokio::test]
async fn a_server_refusing_only_the_wording_is_asked_again_rewritten_and_remembers() {
    let wire = openai();
    // OpenAI's reasoning models refuse `max_tokens`, in these words and code.
    let refusal = serde_json::json!({"error": {
        "message": "Unsupported parameter: 'max_tokens' is not supported with this model. Use 'max_completion_tokens' instead.",
        "type": "invalid_request_error", "param": "max_tokens", "code": "unsupported_parameter"}})
    .to_string();
    let server = ScriptedServer::sequence(vec![
        Script::respond(400, "application/json", &refusal),
        Script::respond(200, "application/json", &(wire.answer)("thought it over")),
    ])
    .await;
    let adapter = adapter(&wire, &server);
    let answer = adapter.complete(&request()).await.unwrap();
    assert_eq!(answer.text, "thought it over");
    adapter.complete(&request()).await.unwrap();
    let bodies = server.bodies();
    assert_eq!(bodies.len(), 3, "one refusal, then each request once");
    assert!(bodies[0].get("max_tokens").is_some());
    for body in &bodies[1..] {
        assert!(body.get("max_tokens").is_none(), "{body}");
        assert_eq!(body["max_completion_tokens"], bodies[0]["max_tokens"]);
    }

    // Groq refused `stream_options` in these words: streams go on without it.
    let refusal = serde_json::json!({"error": {
        "message": "property 'stream_options' is unsupported, did you mean 'stream'?",
        "type": "invalid_request_error"}})
    .to_string();
    let mut events = (wire.deltas)(&["Hel", "lo"]);
    events.extend((wire.end)());
    let server = ScriptedServer::sequence(vec![
        Script::respond(400, "application/json", &refusal),
        Script::sse(events, Duration::from_millis(1), End::Close),
    ])
    .await;
    let adapter = self::adapter(&wire, &server);
    let (deltas, error) = drain(&adapter).await;
    assert_eq!(deltas, vec!["Hel", "lo"]);
    assert!(error.is_none(), "{error:?}");
    let bodies = server.bodies();
    assert_eq!(bodies.len(), 2);
    assert!(bodies[0].get("stream_options").is_some());
    assert!(bodies[1].get("stream_options").is_none());
    assert_eq!(bodies[1]["stream"], true);

    // A model that does not reason refuses `reasoning_effort`, a hint it can
    // go without: asked again without it, and from then on.
    let refusal = serde_json::json!({"error": {
        "message": "Unsupported parameter: 'reasoning_effort' is not supported with this model.",
        "type": "invalid_request_error", "param": "reasoning_effort", "code": "unsupported_parameter"}})
    .to_string();
    let server = ScriptedServer::sequence(vec![
        Script::respond(400, "application/json", &refusal),
        Script::respond(
            200,
            "application/json",
            &(wire.answer)("no thinking needed"),
        ),
    ])
    .await;
    let adapter = self::adapter(&wire, &server);
    let mut effortful = request();
    effortful.options.reasoning_effort = Some(ReasoningEffort::Low);
    let answer = adapter.complete(&effortful).await.unwrap();
    assert_eq!(answer.text, "no thinking needed");
    adapter.complete(&effortful).await.unwrap();
    let bodies = server.bodies();
    assert_eq!(bodies.len(), 3, "one refusal, then each request once");
    assert_eq!(bodies[0]["reasoning_effort"], "low");
    for body in &bodies[1..] {
        assert!(body.get("reasoning_effort").is_none(), "{body}");
    }

    // Any other 400 is the caller's, and goes back once, unretried.
    let server = ScriptedServer::start(Script::respond(
        400,
        "application/json",
        &(wire.error)("max_tokens is too large"),
    ))
    .await;
    let err = whole_error(&wire, &server).await;
    assert!(
        matches!(err, ProviderError::InvalidRequest { .. }),
        "{err:?}"
    );
    assert_eq!(server.hits(), 1);
}

#[tokio::test]
async fn a_model_that_does_not_take_a_value_is_unsupported_not_the_callers_mistake() {
    let wire = openai();
    let server = ScriptedServer::start(unsupported_temperature()).await;
    let err = whole_error(&wire, &server).await;
    assert!(
        matches!(err, ProviderError::Unsupported { status: 400, .. }),
        "{err:?}"
    );
    assert!(err.falls_through());
    assert!(!err.counts_against_provider());
    assert_eq!(err.outcome(), AttemptOutcome::Unsupported);
}

#[tokio::test]
async fn a_server_that_streams_a_whole_request_anyway_is_read_to_its_end() {
    for wire in wires() {
        let mut events = (wire.deltas)(&["Your order ", "ships today."]);
        events.extend((wire.end)());
        let server =
            ScriptedServer::start(Script::sse(events, Duration::from_millis(1), End::Close)).await;
        let answer = adapter(&wire, &server).complete(&request()).await.unwrap();
        assert_eq!(
            answer.text, "Your order ships today.",
            "{:?}",
            wire.protocol
        );
        assert_eq!(answer.finish_reason, FinishReason::Stop);
        assert_eq!(server.bodies()[0]["stream"], false);

        // Cut before its end, it is no answer at all.
        let events = (wire.deltas)(&["Your order ", "ships"]);
        let server =
            ScriptedServer::start(Script::sse(events, Duration::from_millis(1), End::Close)).await;
        let err = whole_error(&wire, &server).await;
        assert!(
            matches!(
                err,
                ProviderError::Malformed(_) | ProviderError::Connection(_)
            ),
            "{:?}: {err:?}",
            wire.protocol
        );
    }
}

#[tokio::test]
async fn rate_limits_carry_their_retry_after() {
    for wire in wires() {
        let script = Script::with_headers(
            429,
            &[("content-type", "application/json"), ("retry-after", "7")],
            &(wire.error)("slow down"),
        );
        let server = ScriptedServer::start(script).await;
        let err = whole_error(&wire, &server).await;
        assert_eq!(
            err,
            ProviderError::RateLimited {
                retry_after: Some(Duration::from_secs(7)),
                message: "slow down".into()
            },
            "{:?}",
            wire.protocol
        );
    }
}

#[tokio::test]
async fn client_errors_do_not_fall_through_but_credential_errors_do() {
    for wire in wires() {
        let server = ScriptedServer::start(Script::respond(
            400,
            "application/json",
            &(wire.error)("bad field"),
        ))
        .await;
        let err = whole_error(&wire, &server).await;
        assert_eq!(
            err,
            ProviderError::InvalidRequest {
                status: 400,
                message: "bad field".into()
            }
        );
        assert!(!err.falls_through());

        let server = ScriptedServer::start(Script::respond(
            401,
            "application/json",
            &(wire.error)("bad key"),
        ))
        .await;
        let err = whole_error(&wire, &server).await;
        assert!(
            matches!(err, ProviderError::Misconfigured { status: 401, .. }),
            "{err:?}"
        );
        assert!(err.falls_through());
    }
}

#[tokio::test]
async fn a_slow_first_byte_times_out() {
    for wire in wires() {
        let script = Script::respond(200, "application/json", &(wire.answer)("late"))
            .delayed(Duration::from_secs(3));
        let server = ScriptedServer::start(script).await;
        let adapter = adapter(&wire, &server);
        let started = std::time::Instant::now();
        assert_eq!(
            adapter.complete(&request()).await.unwrap_err(),
            ProviderError::Timeout(TimeoutKind::FirstByte)
        );
        assert_eq!(
            drain(&adapter).await.1,
            Some(ProviderError::Timeout(TimeoutKind::FirstByte))
        );
        assert!(
            started.elapsed() < Duration::from_secs(2),
            "{:?}",
            started.elapsed()
        );
    }
}

#[tokio::test]
async fn a_whole_answer_may_take_its_writing_time_to_begin_but_a_stream_may_not() {
    // A provider sends a whole answer's head once the answer is written, which
    // takes real models seconds: only a stream is held to the first-byte limit.
    let limits = WireLimits {
        whole_answer: Duration::from_secs(5),
        ..LIMITS
    };
    for wire in wires() {
        let script = Script::respond(200, "application/json", &(wire.answer)("written"))
            .delayed(Duration::from_millis(900));
        let server = ScriptedServer::start(script).await;
        let target = ProviderTarget {
            name: "under-test".into(),
            model: "test-model".into(),
            base: Endpoint::direct(format!("{}{}", server.url, wire.base_suffix)),
            api_key: Some(Secret::new("secret-key")),
            limits,
            continuation: ContinuationStyle::default_for(wire.protocol),
        };
        let adapter = provider::build(wire.protocol, target, reqwest::Client::new());
        let answer = adapter.complete(&request()).await.unwrap();
        assert_eq!(answer.text, "written", "{:?}", wire.protocol);
        assert_eq!(
            drain(&adapter).await.1,
            Some(ProviderError::Timeout(TimeoutKind::FirstByte)),
            "{:?}",
            wire.protocol
        );
    }
}

#[tokio::test]
async fn a_stream_that_stalls_times_out() {
    for wire in wires() {
        let mut events = (wire.deltas)(&["one"]);
        events.push(String::new());
        let mut script = Script::sse(events, Duration::ZERO, End::Close);
        // The last (empty) part comes long after the stall limit.
        script.parts.last_mut().unwrap().0 = Duration::from_secs(3);
        let server = ScriptedServer::start(script).await;
        let (deltas, error) = drain(&adapter(&wire, &server)).await;
        assert_eq!(deltas, vec!["one"]);
        assert_eq!(
            error,
            Some(ProviderError::Timeout(TimeoutKind::Stall)),
            "{:?}",
            wire.protocol
        );
    }
}

#[tokio::test]
async fn malformed_bodies_and_events_are_classified() {
    for wire in wires() {
        let server =
            ScriptedServer::start(Script::respond(200, "application/json", r#"{"choices": ["#))
                .await;
        let err = whole_error(&wire, &server).await;
        assert!(
            matches!(err, ProviderError::Malformed(_)),
            "{:?}: {err:?}",
            wire.protocol
        );

        let mut events = (wire.deltas)(&["fine"]);
        events.push(sse_event(Some("content_block_delta"), "{not json"));
        events.extend((wire.end)());
        let server = ScriptedServer::start(Script::sse(events, Duration::ZERO, End::Close)).await;
        let (deltas, error) = drain(&adapter(&wire, &server)).await;
        assert_eq!(deltas, vec!["fine"]);
        assert!(
            matches!(error, Some(ProviderError::Malformed(_))),
            "{:?}: {error:?}",
            wire.protocol
        );
    }
}

#[tokio::test]
async fn a_stream_cut_in_the_middle_is_never_a_whole_answer() {
    for wire in wires() {
        // Deltas, then a clean close without the protocol's end marker.
        let events = (wire.deltas)(&["Your order", " is on"]);
        let server =
            ScriptedServer::start(Script::sse(events, Duration::from_millis(5), End::Close)).await;
        let (deltas, error) = drain(&adapter(&wire, &server)).await;
        assert_eq!(deltas, vec!["Your order", " is on"]);
        assert!(
            matches!(error, Some(ProviderError::Malformed(_))),
            "{:?}: {error:?}",
            wire.protocol
        );
    }
}

#[tokio::test]
async fn connection_resets_are_connection_errors() {
    for wire in wires() {
        let server = ScriptedServer::start(Script::reset()).await;
        let adapter_under_test = adapter(&wire, &server);
        let err = adapter_under_test.complete(&request()).await.unwrap_err();
        assert!(
            matches!(err, ProviderError::Connection(_)),
            "{:?}: {err:?}",
            wire.protocol
        );

        // A reset in the middle of a stream.
        let events = (wire.deltas)(&["partial"]);
        let server =
            ScriptedServer::start(Script::sse(events, Duration::from_millis(5), End::Reset)).await;
        let (deltas, error) = drain(&adapter(&wire, &server)).await;
        assert_eq!(deltas, vec!["partial"]);
        assert!(
            matches!(
                error,
                Some(ProviderError::Connection(_)) | Some(ProviderError::Malformed(_))
            ),
            "{:?}: {error:?}",
            wire.protocol
        );
        assert!(error.unwrap().falls_through());
    }
}

#[tokio::test]
async fn nothing_listening_is_a_connection_error() {
    for wire in wires() {
        let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let url = format!("http://{}", listener.local_addr().unwrap());
        drop(listener);
        let server = ScriptedServer {
            url,
            received: Default::default(),
        };
        let err = whole_error(&wire, &server).await;
        assert!(
            matches!(err, ProviderError::Connection(_)),
            "{:?}: {err:?}",
            wire.protocol
        );
    }
}

#[tokio::test]
async fn a_continuation_is_a_true_prefill_in_each_servers_dialect() {
    let cases = [
        (anthropic(), ContinuationStyle::Prefill),
        (openai(), ContinuationStyle::Prefill),
        (openai(), ContinuationStyle::Prefix),
        (openai(), ContinuationStyle::ContinueFinalMessage),
    ];
    for (wire, style) in cases {
        let server = ScriptedServer::start(Script::respond(
            200,
            "application/json",
            &(wire.answer)(" is on its way."),
        ))
        .await;
        let mut continued = request();
        continued.continuation = Some("Your order ".into());
        let adapter = adapter_continuing(&wire, &server, style);
        assert_eq!(adapter.continuation(), style);
        let completion = adapter.complete(&continued).await.unwrap();
        assert_eq!(completion.text, " is on its way.");
        let body = server.received.lock().unwrap()[0].body.clone();
        let messages = body["messages"].as_array().unwrap();
        let last = messages.last().unwrap();
        // The partial answer is the last turn, the assistant's own: never
        // followed by an instruction to "continue" that a model may ignore.
        assert_eq!(last["role"], "assistant", "{style:?}");
        match (wire.protocol, style) {
            // Anthropic rejects trailing whitespace in a prefill.
            (Protocol::Anthropic, _) => assert_eq!(text_of(&last["content"]), "Your order"),
            (Protocol::OpenAi, _) => assert_eq!(text_of(&last["content"]), "Your order "),
        }
        assert_eq!(
            last.get("prefix").is_some(),
            style == ContinuationStyle::Prefix
        );
        let vllm = style == ContinuationStyle::ContinueFinalMessage;
        assert_eq!(body.get("continue_final_message").is_some(), vllm);
        if vllm {
            assert_eq!(body["add_generation_prompt"], false);
        }
    }
}

#[tokio::test]
async fn a_stream_that_says_why_it_stopped_is_whole_without_its_final_marker() {
    for wire in wires() {
        let mut events = (wire.deltas)(&["Hel", "lo"]);
        events.extend((wire.finish_only)());
        // The server closes right after the finish reason.
        let server = ScriptedServer::start(Script::sse(events, Duration::ZERO, End::Close)).await;
        let mut stream = adapter(&wire, &server).stream(&request()).await.unwrap();
        let mut pieces = Vec::new();
        while let Some(piece) = stream.next().await {
            pieces.push(piece.unwrap_or_else(|e| panic!("{:?}: {e}", wire.protocol)));
        }
        assert_eq!(
            pieces,
            vec![
                Piece::Text("Hel".into()),
                Piece::Text("lo".into()),
                Piece::Text("!".into()),
                Piece::Finish(FinishReason::Stop)
            ],
            "{:?}",
            wire.protocol
        );

        // The same, with a reset instead of a clean close after the finish reason.
        let mut events = (wire.deltas)(&["Hi"]);
        events.extend((wire.finish_only)());
        let server = ScriptedServer::start(Script::sse(events, Duration::ZERO, End::Reset)).await;
        let (deltas, error) = drain(&adapter(&wire, &server)).await;
        assert_eq!(deltas, vec!["Hi", "!"]);
        assert!(error.is_none(), "{:?}: {error:?}", wire.protocol);
    }
}

#[tokio::test]
async fn a_context_window_refusal_is_too_large_and_falls_through() {
    for wire in wires() {
        let server =
            ScriptedServer::start(Script::respond(400, "application/json", &(wire.too_long)()))
                .await;
        let adapter = adapter(&wire, &server);
        for err in [
            adapter.complete(&request()).await.unwrap_err(),
            drain(&adapter).await.1.unwrap(),
        ] {
            assert!(
                matches!(err, ProviderError::TooLarge { status: 400, .. }),
                "{:?}: {err:?}",
                wire.protocol
            );
            assert!(err.falls_through() && !err.counts_against_provider());
        }
    }
}

#[tokio::test]
async fn a_nonsensical_retry_after_is_no_retry_after() {
    for wire in wires() {
        for value in ["inf", "NaN", "-5", "99999999999999999999"] {
            let script = Script::with_headers(
                429,
                &[("content-type", "application/json"), ("retry-after", value)],
                &(wire.error)("slow down"),
            );
            let server = ScriptedServer::start(script).await;
            let err = whole_error(&wire, &server).await;
            let ProviderError::RateLimited { retry_after, .. } = err else {
                panic!("{err:?}")
            };
            assert!(
                retry_after.is_none_or(|r| r <= Duration::from_secs(86_400)),
                "{value}: {retry_after:?}"
            );
        }
    }
}

#[tokio::test]
async fn parallel_tool_calls_come_back_whole_with_usage_and_the_tools_go_out_translated() {
    for wire in wires() {
        let server = ScriptedServer::start(Script::respond(
            200,
            "application/json",
            &(wire.tool_answer)(CALLS),
        ))
        .await;
        let completion = adapter(&wire, &server)
            .complete(&tool_request())
            .await
            .unwrap();
        let who = wire.protocol;
        assert_eq!(completion.finish_reason, FinishReason::ToolCalls, "{who:?}");
        assert_eq!(completion.tool_calls.len(), 2, "{who:?}");
        assert_eq!(completion.tool_calls[0].id, "call_a1");
        assert_eq!(completion.tool_calls[1].name, "order_status");
        let args: serde_json::Value =
            serde_json::from_str(&completion.tool_calls[1].arguments).unwrap();
        assert_eq!(args["order_id"], "2222", "{who:?}");
        let usage = completion.usage.expect("usage reported");
        assert_eq!(
            (usage.prompt_tokens, usage.completion_tokens),
            (21, 9),
            "{who:?}"
        );
        assert_eq!(completion.served.unwrap().model, "test-model-0613");

        let body = &server.received.lock().unwrap()[0].body;
        match wire.protocol {
            Protocol::OpenAi => {
                assert_eq!(body["tools"][0]["type"], "function");
                assert_eq!(body["tools"][0]["function"]["name"], "order_status");
                assert_eq!(body["tool_choice"], "required");
            }
            Protocol::Anthropic => {
                assert_eq!(body["tools"][0]["name"], "order_status");
                assert_eq!(body["tools"][0]["input_schema"]["type"], "object");
                assert_eq!(body["tool_choice"]["type"], "any");
            }
        }
    }
}

#[tokio::test]
async fn streamed_tool_arguments_split_across_many_chunks_assemble_into_whole_calls() {
    for wire in wires() {
        for size in [1, 4] {
            let server = ScriptedServer::start(Script::sse(
                (wire.tool_stream)(CALLS, size, false),
                Duration::ZERO,
                End::Close,
            ))
            .await;
            let items = pieces_of(&adapter(&wire, &server), &tool_request()).await;
            let who = (wire.protocol, size);
            let mut fragments = Vec::new();
            let mut usage = None;
            let mut finish = None;
            for item in items {
                match item.unwrap_or_else(|err| panic!("{who:?}: {err}")) {
                    Piece::ToolCall(fragment) => fragments.push(fragment),
                    Piece::Usage(u) => usage = Some(u),
                    Piece::Finish(reason) => finish = Some(reason),
                    Piece::Text(text) => panic!("{who:?}: unexpected text {text:?}"),
                    Piece::Served(_) => {}
                }
            }
            assert!(
                fragments.len() > 2 * 19 / size,
                "{who:?}: {} fragments",
                fragments.len()
            );
            let calls = ToolCallDelta::assemble(&fragments).unwrap();
            assert_eq!(calls.len(), 2, "{who:?}");
            for (call, expected) in calls.iter().zip(CALLS) {
                assert_eq!(
                    (call.id.as_str(), call.arguments.as_str()),
                    (expected.id, expected.arguments),
                    "{who:?}"
                );
            }
            assert_eq!(finish, Some(FinishReason::ToolCalls), "{who:?}");
            let usage = usage.expect("usage");
            assert_eq!(
                (usage.prompt_tokens, usage.completion_tokens),
                (21, 9),
                "{who:?}"
            );
        }
    }
}

#[tokio::test]
async fn a_stream_cut_inside_tool_arguments_ends_in_an_error_not_a_call() {
    for wire in wires() {
        let server = ScriptedServer::start(Script::sse(
            (wire.tool_stream)(CALLS, 3, true),
            Duration::ZERO,
            End::Close,
        ))
        .await;
        let items = pieces_of(&adapter(&wire, &server), &tool_request()).await;
        assert!(
            matches!(items.last(), Some(Err(_))),
            "{:?}: a cut tool call must end in an error: {:?}",
            wire.protocol,
            items.last()
        );
        assert!(!items.iter().any(|i| matches!(i, Ok(Piece::Finish(_)))));
    }
}
