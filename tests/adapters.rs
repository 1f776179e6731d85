//! The adapter conformance suite: every protocol adapter faces the same failures
//! on the wire and must classify them the same way. Adding a provider means adding
//! one `Wire` description to `wires()`.

mod support;

use chaosai::config::{Protocol, Secret};
use chaosai::gateway::provider::{
    self, Endpoint, FinishReason, Piece, Provider, ProviderError, ProviderRequest, ProviderTarget,
    TimeoutKind, WireLimits, CONTINUE_PROMPT,
};
use chaosai::shared::ChatTurn;
use futures::StreamExt;
use std::sync::Arc;
use std::time::Duration;
use support::{sse_event, End, Script, ScriptedServer};

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
    /// An error body with this message.
    error: fn(&str) -> String,
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
    }
}

fn wires() -> Vec<Wire> {
    vec![openai(), anthropic()]
}

const LIMITS: WireLimits = WireLimits {
    first_byte: Duration::from_millis(300),
    stall: Duration::from_millis(300),
};

fn adapter(wire: &Wire, server: &ScriptedServer) -> Arc<dyn Provider> {
    let target = ProviderTarget {
        name: "under-test".into(),
        model: "test-model".into(),
        base: Endpoint::direct(format!("{}{}", server.url, wire.base_suffix)),
        api_key: Some(Secret::new("secret-key")),
        limits: LIMITS,
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
        temperature: Some(0.2),
        continuation: None,
    }
}

/// Collects a stream: the deltas, and the error that ended it, if any.
async fn drain(adapter: &Arc<dyn Provider>) -> (Vec<String>, Option<ProviderError>) {
    let mut stream = match adapter.stream(&request()).await {
        Ok(stream) => stream,
        Err(err) => return (vec![], Some(err)),
    };
    let mut deltas = Vec::new();
    while let Some(item) = stream.next().await {
        match item {
            Ok(Piece::Text(text)) => deltas.push(text),
            Ok(Piece::Finish(_)) => {}
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
        assert_eq!(messages.last().unwrap()["content"], "The last one.");
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
async fn rate_limits_carry_their_retry_after() {
    for wire in wires() {
        let script = Script::with_headers(
            429,
            &[("content-type", "application/json"), ("retry-after", "7")],
            &(wire.error)("slow down"),
        );
        let server = ScriptedServer::start(script).await;
        let err = adapter(&wire, &server)
            .complete(&request())
            .await
            .unwrap_err();
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
        let err = adapter(&wire, &server)
            .complete(&request())
            .await
            .unwrap_err();
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
        let err = adapter(&wire, &server)
            .complete(&request())
            .await
            .unwrap_err();
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
        let err = adapter(&wire, &server)
            .complete(&request())
            .await
            .unwrap_err();
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
        let err = adapter(&wire, &server)
            .complete(&request())
            .await
            .unwrap_err();
        assert!(
            matches!(err, ProviderError::Connection(_)),
            "{:?}: {err:?}",
            wire.protocol
        );
    }
}

#[tokio::test]
async fn a_continuation_asks_the_model_to_go_on_from_the_partial_answer() {
    for wire in wires() {
        let server = ScriptedServer::start(Script::respond(
            200,
            "application/json",
            &(wire.answer)(" is on its way."),
        ))
        .await;
        let mut continued = request();
        continued.continuation = Some("Your order ".into());
        let completion = adapter(&wire, &server).complete(&continued).await.unwrap();
        assert_eq!(completion.text, " is on its way.");
        let body = server.received.lock().unwrap()[0].body.clone();
        let messages = body["messages"].as_array().unwrap();
        match wire.protocol {
            // Anthropic continues a trailing assistant message (prefill), which
            // must not end in whitespace.
            Protocol::Anthropic => {
                let last = messages.last().unwrap();
                assert_eq!(last["role"], "assistant");
                assert_eq!(last["content"], "Your order");
            }
            // OpenAI has no prefill: the partial answer, then an instruction.
            Protocol::OpenAi => {
                let n = messages.len();
                assert_eq!(messages[n - 2]["role"], "assistant");
                assert_eq!(messages[n - 2]["content"], "Your order ");
                assert_eq!(messages[n - 1]["role"], "user");
                assert_eq!(messages[n - 1]["content"], CONTINUE_PROMPT);
            }
        }
    }
}
