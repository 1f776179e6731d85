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
    id: String,
    /// Unix seconds.
    created: u64,
    /// The model that answers (changes on a restart).
    model: String,
    /// Its `system_fingerprint`.
    fingerprint: Option<String>,
    /// Whether the caller asked for the usage chunk.
    include_usage: bool,
    /// A text chunk's JSON around its text: everything before the escaped text
    /// and everything after it, serialised once per model. A stream is mostly
    /// text chunks, and serialising each whole (id, model and fingerprint
    /// escaped again every time) was the largest part of relaying one.
    text_frame: (String, String),
}

/// Stands in for the text while a text chunk's frame is cut out of a whole
/// chunk; escaped as `"\u0000"`, and the last string of the chunk.
const TEXT_MARK: &str = "\0";

impl ChunkWriter {
    /// The writer of stream `id`, answered by `model`.
    pub fn new(
        id: String,
        created: u64,
        (model, fingerprint): (String, Option<String>),
        include_usage: bool,
    ) -> Self {
        let mut writer = Self {
            id,
            created,
            model,
            fingerprint,
            include_usage,
            text_frame: (String::new(), String::new()),
        };
        writer.frame_text();
        writer
    }

    /// The model now answering (a restart's).
    pub fn set_model(&mut self, model: String) {
        self.model = model;
        self.frame_text();
    }

    fn frame_text(&mut self) {
        let whole = self.text_chunk(TEXT_MARK);
        // The text is the chunk's last string, so the last mark is the text's.
        let at = whole
            .rfind("\"\\u0000\"")
            .expect("the mark is in the chunk");
        self.text_frame = (
            whole[..at].to_string(),
            whole[at + "\"\\u0000\"".len()..].to_string(),
        );
    }

    /// Appends the chunk carrying `text` to `out`: the same JSON as the typed
    /// chunk, with only the text escaped now.
    pub fn text_into(&self, out: &mut Vec<u8>, text: &str) {
        out.extend_from_slice(self.text_frame.0.as_bytes());
        serde_json::to_writer(&mut *out, text).expect("a string always serialises");
        out.extend_from_slice(self.text_frame.1.as_bytes());
    }

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

    /// A piece of text, serialised whole (what [`Self::text_into`] reproduces).
    fn text_chunk(&self, text: &str) -> String {
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
        ChunkWriter::new(
            "chatcmpl-1".into(),
            7,
            ("gpt-4o".into(), Some("fp_x".into())),
            include_usage,
        )
    }

    #[test]
    fn a_framed_text_chunk_is_the_typed_chunk_byte_for_byte() {
        let texts = [
            "",
            "hi",
            "say \"hi\"\n",
            "\u{0}",
            "é ✓ 🦀",
            "\\u0000\"",
            "</script>",
        ];
        for include_usage in [false, true] {
            let mut w = writer(include_usage);
            for model in ["gpt-4o", "m\"\u{0}odel"] {
                w.set_model(model.into());
                for text in texts {
                    let mut framed = Vec::new();
                    w.text_into(&mut framed, text);
                    assert_eq!(String::from_utf8(framed).unwrap(), w.text_chunk(text));
                }
            }
        }
        assert_eq!(
            parsed(&w_text(&writer(false), "a\"b"))["choices"][0]["delta"]["content"],
            "a\"b"
        );
    }

    fn w_text(w: &ChunkWriter, text: &str) -> String {
        let mut out = Vec::new();
        w.text_into(&mut out, text);
        String::from_utf8(out).unwrap()
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
        assert_eq!(parsed(&w_text(&w, "hi"))["usage"], Value::Null);
        assert!(parsed(&w_text(&w, "hi"))
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
