//! Writing answers in OpenAI's shapes: a `chat.completion`, and the
//! `chat.completion.chunk`s of a stream (the opening role chunk, text deltas,
//! `delta.tool_calls` fragments, the finish chunk, and with
//! `stream_options.include_usage` a `"usage": null` on every chunk and a last
//! chunk with empty `choices` and the usage). Typed and borrowed, so a chunk is
//! one serialisation and no intermediate JSON tree.

use crate::gateway::provider::{FinishReason, ToolCallDelta};
use crate::shared::{ToolCall, Usage, UsageSource};
use serde::Serialize;

/// `usage` as OpenAI writes it.
#[derive(Serialize, Clone, Copy)]
pub(super) struct WireUsage {
    prompt_tokens: u64,
    completion_tokens: u64,
    total_tokens: u64,
}

impl From<Usage> for WireUsage {
    fn from(usage: Usage) -> Self {
        Self {
            prompt_tokens: usage.prompt_tokens,
            completion_tokens: usage.completion_tokens,
            total_tokens: usage.total(),
        }
    }
}

#[derive(Serialize)]
struct WireFunction<'a> {
    name: &'a str,
    arguments: &'a str,
}

#[derive(Serialize)]
struct WireToolCall<'a> {
    id: &'a str,
    #[serde(rename = "type")]
    kind: &'static str,
    function: WireFunction<'a>,
}

#[derive(Serialize)]
struct WireMessage<'a> {
    role: &'static str,
    /// `null` when the model only called tools, as OpenAI sends it.
    content: Option<&'a str>,
    #[serde(skip_serializing_if = "Vec::is_empty")]
    tool_calls: Vec<WireToolCall<'a>>,
    refusal: Option<&'a str>,
}

#[derive(Serialize)]
struct WireChoice<'a> {
    index: u32,
    message: WireMessage<'a>,
    logprobs: Option<()>,
    finish_reason: Option<&'static str>,
}

#[derive(Serialize)]
struct WireCompletion<'a> {
    id: &'a str,
    object: &'static str,
    created: u64,
    model: &'a str,
    #[serde(skip_serializing_if = "Option::is_none")]
    system_fingerprint: Option<&'a str>,
    choices: [WireChoice<'a>; 1],
    usage: WireUsage,
}

/// A whole answer, as `POST /v1/chat/completions` returns it.
pub(super) struct CompletionBody<'a> {
    /// The completion's id.
    pub id: &'a str,
    /// Unix seconds.
    pub created: u64,
    /// The model that answered.
    pub model: &'a str,
    /// Its `system_fingerprint`.
    pub fingerprint: Option<&'a str>,
    /// The text.
    pub text: &'a str,
    /// The tool calls.
    pub tool_calls: &'a [ToolCall],
    /// Why it ended.
    pub finish_reason: Option<FinishReason>,
    /// What it cost.
    pub usage: Usage,
}

impl CompletionBody<'_> {
    /// The JSON body.
    pub fn to_json(&self) -> Vec<u8> {
        let body = WireCompletion {
            id: self.id,
            object: "chat.completion",
            created: self.created,
            model: self.model,
            system_fingerprint: self.fingerprint,
            choices: [WireChoice {
                index: 0,
                message: WireMessage {
                    role: "assistant",
                    content: (!self.text.is_empty() || self.tool_calls.is_empty())
                        .then_some(self.text),
                    tool_calls: self
                        .tool_calls
                        .iter()
                        .map(|call| WireToolCall {
                            id: &call.id,
                            kind: "function",
                            function: WireFunction {
                                name: &call.name,
                                arguments: &call.arguments,
                            },
                        })
                        .collect(),
                    refusal: None,
                },
                logprobs: None,
                finish_reason: self.finish_reason.map(FinishReason::as_str),
            }],
            usage: self.usage.into(),
        };
        serde_json::to_vec(&body).expect("a completion always serialises")
    }
}

#[derive(Serialize)]
struct WireFunctionDelta<'a> {
    #[serde(skip_serializing_if = "Option::is_none")]
    name: Option<&'a str>,
    arguments: &'a str,
}

#[derive(Serialize)]
struct WireToolCallDelta<'a> {
    index: u32,
    #[serde(skip_serializing_if = "Option::is_none")]
    id: Option<&'a str>,
    #[serde(rename = "type", skip_serializing_if = "Option::is_none")]
    kind: Option<&'static str>,
    function: WireFunctionDelta<'a>,
}

#[derive(Serialize, Default)]
struct WireDelta<'a> {
    #[serde(skip_serializing_if = "Option::is_none")]
    role: Option<&'static str>,
    #[serde(skip_serializing_if = "Option::is_none")]
    content: Option<&'a str>,
    #[serde(skip_serializing_if = "Option::is_none")]
    tool_calls: Option<[WireToolCallDelta<'a>; 1]>,
}

#[derive(Serialize)]
struct WireChunkChoice<'a> {
    index: u32,
    delta: WireDelta<'a>,
    logprobs: Option<()>,
    finish_reason: Option<&'static str>,
}

/// ChaosAI's own mark on a chunk: a restart, or who counted the usage.
#[derive(Serialize)]
struct WireMark<'a> {
    #[serde(skip_serializing_if = "std::ops::Not::not")]
    restarted: bool,
    #[serde(skip_serializing_if = "Option::is_none")]
    served_by: Option<&'a str>,
    #[serde(skip_serializing_if = "Option::is_none")]
    usage_source: Option<&'static str>,
}

#[derive(Serialize)]
struct WireChunk<'a> {
    id: &'a str,
    object: &'static str,
    created: u64,
    model: &'a str,
    #[serde(skip_serializing_if = "Option::is_none")]
    system_fingerprint: Option<&'a str>,
    choices: Vec<WireChunkChoice<'a>>,
    /// Absent without `include_usage`; `null` on every chunk but the last with it.
    #[serde(skip_serializing_if = "Option::is_none")]
    usage: Option<Option<WireUsage>>,
    #[serde(skip_serializing_if = "Option::is_none")]
    chaosai: Option<WireMark<'a>>,
}

/// Writes one stream's chunks; holds what every chunk repeats.
pub(super) struct ChunkWriter {
    /// The completion's id.
    pub id: String,
    /// Unix seconds.
    pub created: u64,
    /// The model that answers (changes on a restart).
    pub model: String,
    /// Its `system_fingerprint`.
    pub fingerprint: Option<String>,
    /// Whether the caller asked for the usage chunk.
    pub include_usage: bool,
}

impl ChunkWriter {
    fn chunk<'a>(
        &'a self,
        choice: Option<WireChunkChoice<'a>>,
        mark: Option<WireMark<'a>>,
    ) -> String {
        let chunk = WireChunk {
            id: &self.id,
            object: "chat.completion.chunk",
            created: self.created,
            model: &self.model,
            system_fingerprint: self.fingerprint.as_deref(),
            choices: choice.into_iter().collect(),
            usage: self.include_usage.then_some(None),
            chaosai: mark,
        };
        serde_json::to_string(&chunk).expect("a chunk always serialises")
    }

    fn delta<'a>(
        &'a self,
        delta: WireDelta<'a>,
        finish: Option<FinishReason>,
    ) -> WireChunkChoice<'a> {
        WireChunkChoice {
            index: 0,
            delta,
            logprobs: None,
            finish_reason: finish.map(FinishReason::as_str),
        }
    }

    /// The first chunk: the assistant's role.
    pub fn opening(&self) -> String {
        let delta = WireDelta {
            role: Some("assistant"),
            content: Some(""),
            ..WireDelta::default()
        };
        self.chunk(Some(self.delta(delta, None)), None)
    }

    /// A piece of text.
    pub fn text(&self, text: &str) -> String {
        let delta = WireDelta {
            content: Some(text),
            ..WireDelta::default()
        };
        self.chunk(Some(self.delta(delta, None)), None)
    }

    /// A fragment of a tool call; its first names the call's id and function.
    pub fn tool_call(&self, fragment: &ToolCallDelta) -> String {
        let delta = WireDelta {
            tool_calls: Some([WireToolCallDelta {
                index: fragment.index,
                id: fragment.id.as_deref(),
                kind: fragment.id.as_ref().map(|_| "function"),
                function: WireFunctionDelta {
                    name: fragment.name.as_deref(),
                    arguments: &fragment.arguments,
                },
            }]),
            ..WireDelta::default()
        };
        self.chunk(Some(self.delta(delta, None)), None)
    }

    /// The marker that tells the caller to replace what it has with what follows.
    pub fn restarted(&self, served_by: &str) -> String {
        let delta = WireDelta {
            role: Some("assistant"),
            content: Some(""),
            ..WireDelta::default()
        };
        let mark = WireMark {
            restarted: true,
            served_by: Some(served_by),
            usage_source: None,
        };
        self.chunk(Some(self.delta(delta, None)), Some(mark))
    }

    /// The finish chunk.
    pub fn finish(&self, reason: FinishReason) -> String {
        self.chunk(Some(self.delta(WireDelta::default(), Some(reason))), None)
    }

    /// The usage chunk (empty `choices`), when the caller asked for it.
    pub fn usage(&self, usage: Usage, source: UsageSource) -> Option<String> {
        if !self.include_usage {
            return None;
        }
        let chunk = WireChunk {
            id: &self.id,
            object: "chat.completion.chunk",
            created: self.created,
            model: &self.model,
            system_fingerprint: self.fingerprint.as_deref(),
            choices: Vec::new(),
            usage: Some(Some(usage.into())),
            chaosai: Some(WireMark {
                restarted: false,
                served_by: None,
                usage_source: Some(source.as_str()),
            }),
        };
        Some(serde_json::to_string(&chunk).expect("a chunk always serialises"))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::{json, Value};

    fn writer(include_usage: bool) -> ChunkWriter {
        ChunkWriter {
            id: "chatcmpl-1".into(),
            created: 7,
            model: "gpt-4o".into(),
            fingerprint: Some("fp_x".into()),
            include_usage,
        }
    }

    fn parsed(text: &str) -> Value {
        serde_json::from_str(text).unwrap()
    }

    #[test]
    fn a_tool_call_streams_as_openai_streams_it() {
        let w = writer(false);
        let first = parsed(&w.tool_call(&ToolCallDelta {
            index: 0,
            id: Some("call_1".into()),
            name: Some("order_status".into()),
            arguments: String::new(),
        }));
        assert_eq!(
            first["choices"][0]["delta"],
            json!({"tool_calls": [{"index": 0, "id": "call_1", "type": "function",
                "function": {"name": "order_status", "arguments": ""}}]})
        );
        assert!(first.get("usage").is_none());
        let next = parsed(&w.tool_call(&ToolCallDelta {
            index: 0,
            id: None,
            name: None,
            arguments: "{\"a\"".into(),
        }));
        assert_eq!(
            next["choices"][0]["delta"],
            json!({"tool_calls": [{"index": 0, "function": {"arguments": "{\"a\""}}]})
        );
        assert_eq!(next["system_fingerprint"], "fp_x");
    }

    #[test]
    fn with_include_usage_every_chunk_has_null_usage_and_the_last_has_it() {
        let w = writer(true);
        assert_eq!(parsed(&w.text("hi"))["usage"], Value::Null);
        assert!(parsed(&w.text("hi"))
            .as_object()
            .unwrap()
            .contains_key("usage"));
        let last = parsed(
            &w.usage(
                Usage {
                    prompt_tokens: 3,
                    completion_tokens: 4,
                },
                UsageSource::Provider,
            )
            .unwrap(),
        );
        assert_eq!(last["choices"], json!([]));
        assert_eq!(
            last["usage"],
            json!({"prompt_tokens": 3, "completion_tokens": 4, "total_tokens": 7})
        );
        assert_eq!(last["chaosai"]["usage_source"], "provider");
        assert!(writer(false)
            .usage(Usage::default(), UsageSource::Cache)
            .is_none());
    }

    #[test]
    fn a_tool_call_answer_has_null_content() {
        let calls = [ToolCall {
            id: "call_1".into(),
            name: "order_status".into(),
            arguments: "{}".into(),
        }];
        let body = parsed(
            std::str::from_utf8(
                &CompletionBody {
                    id: "x",
                    created: 1,
                    model: "m",
                    fingerprint: None,
                    text: "",
                    tool_calls: &calls,
                    finish_reason: Some(FinishReason::ToolCalls),
                    usage: Usage::default(),
                }
                .to_json(),
            )
            .unwrap(),
        );
        let message = &body["choices"][0]["message"];
        assert_eq!(message["content"], Value::Null);
        assert_eq!(message["tool_calls"][0]["type"], "function");
        assert_eq!(body["choices"][0]["finish_reason"], "tool_calls");
        assert!(body.get("system_fingerprint").is_none());
    }
}
