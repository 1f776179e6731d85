//! Reading what the Messages API sends: a whole `message` (text and `tool_use`
//! blocks, `stop_reason`, `usage`), the events of a stream (`message_start` with
//! the input tokens, `content_block_start` naming a tool call,
//! `content_block_delta` with `text_delta` or `input_json_delta`, `message_delta`
//! with the stop reason and output tokens), and error bodies. Tool calls come out
//! in OpenAI's shape: numbered in order, their input as JSON text.

use super::super::sse::{Borrowed, Envelope, Event, Flow, SseDecoder};
use super::super::{
    Completion, FinishReason, Piece, ProviderError, ServedModel, ToolCallDelta, WireFault,
    MAX_TOOL_CALLS,
};
use crate::shared::{ToolCall, Usage};
use serde::Deserialize;
use serde_json::Value;

/// Most content blocks one answer may open; a provider opening more is malformed.
const MAX_BLOCKS: usize = 256;

#[derive(Deserialize)]
pub(super) struct WireResponse {
    #[serde(default)]
    model: Option<String>,
    content: Vec<WireBlock>,
    stop_reason: Option<String>,
    #[serde(default)]
    usage: Option<WireUsage>,
}

#[derive(Deserialize)]
struct WireBlock {
    #[serde(rename = "type")]
    kind: String,
    #[serde(default)]
    text: String,
    #[serde(default)]
    id: String,
    #[serde(default)]
    name: String,
    #[serde(default)]
    input: Value,
}

#[derive(Deserialize, Default, Clone, Copy)]
struct WireUsage {
    #[serde(default)]
    input_tokens: Option<u64>,
    #[serde(default)]
    output_tokens: Option<u64>,
    /// Prompt tokens written to or read from Anthropic's prompt cache count as
    /// prompt tokens too; they are reported apart from `input_tokens`.
    #[serde(default)]
    cache_creation_input_tokens: Option<u64>,
    #[serde(default)]
    cache_read_input_tokens: Option<u64>,
}

impl WireUsage {
    fn prompt(&self) -> Option<u64> {
        let parts = [
            self.input_tokens,
            self.cache_creation_input_tokens,
            self.cache_read_input_tokens,
        ];
        parts
            .iter()
            .any(Option::is_some)
            .then(|| parts.iter().flatten().sum())
    }
}

#[derive(Deserialize)]
struct WireEvent<'a> {
    #[serde(rename = "type", borrow)]
    kind: Borrowed<'a>,
    #[serde(default)]
    message: Option<WireStartMessage>,
    #[serde(default)]
    index: Option<u32>,
    #[serde(default)]
    content_block: Option<WireBlock>,
    #[serde(default, borrow)]
    delta: Option<WireEventDelta<'a>>,
    #[serde(default)]
    usage: Option<WireUsage>,
    #[serde(default)]
    error: Option<WireErrorBody>,
}

#[derive(Deserialize)]
struct WireStartMessage {
    #[serde(default)]
    model: Option<String>,
    #[serde(default)]
    usage: Option<WireUsage>,
}

#[derive(Deserialize)]
struct WireEventDelta<'a> {
    #[serde(default, borrow)]
    text: Option<Borrowed<'a>>,
    #[serde(default)]
    partial_json: Option<String>,
    #[serde(default)]
    stop_reason: Option<String>,
}

#[derive(Deserialize)]
struct WireError {
    error: WireErrorBody,
}

#[derive(Deserialize)]
struct WireErrorBody {
    #[serde(rename = "type", default)]
    kind: String,
    message: String,
}

/// The fault an error body describes, if it is Anthropic's error shape.
/// Anthropic has no error codes; the one refusal that is about the model, not
/// the request, gets OpenAI's code for it, so that it is classified alike.
pub(super) fn error_fault(body: &str) -> Option<WireFault> {
    let error = serde_json::from_str::<WireError>(body).ok()?.error;
    Some(WireFault {
        code: refuses_temperature_with_top_p(&error.message)
            .then(|| "unsupported_parameter".to_string()),
        message: error.message,
        kind: Some(error.kind).filter(|k| !k.is_empty()),
    })
}

/// Whether `message` is the refusal of Claude models since Sonnet 4.5 to take
/// `temperature` and `top_p` together ("`temperature` and `top_p` cannot both
/// be specified for this model"), which older models and other providers take.
pub(super) fn refuses_temperature_with_top_p(message: &str) -> bool {
    message.contains("temperature") && message.contains("top_p") && message.contains("both")
}

/// Anthropic's stop reasons in OpenAI's vocabulary. The forced tool of a JSON
/// answer stops with `tool_use`, but for the caller the answer simply ended. An
/// answer the context window cut short is cut as surely as one `max_tokens` cut:
/// read as a plain stop, it would pass for whole.
fn finish_reason(stop_reason: Option<&str>, json_answer: bool) -> FinishReason {
    match stop_reason {
        Some("max_tokens" | "model_context_window_exceeded") => FinishReason::Length,
        Some("tool_use") if json_answer => FinishReason::Stop,
        Some("tool_use") => FinishReason::ToolCalls,
        Some("refusal") => FinishReason::ContentFilter,
        _ => FinishReason::Stop,
    }
}

fn input_text(input: &Value) -> String {
    match input {
        Value::Null => "{}".into(),
        input => input.to_string(),
    }
}

impl WireResponse {
    /// The completion this message holds; `json_tool` names the forced tool whose
    /// input is the answer, when a JSON answer was asked for.
    pub(super) fn into_completion(
        self,
        json_tool: Option<String>,
    ) -> Result<Completion, ProviderError> {
        let mut text = String::new();
        let mut tool_calls = Vec::new();
        for block in self.content {
            match block.kind.as_str() {
                "text" => text.push_str(&block.text),
                "tool_use" if json_tool.as_deref() == Some(block.name.as_str()) => {
                    text.push_str(&input_text(&block.input));
                }
                "tool_use" => tool_calls.push(ToolCall {
                    id: block.id,
                    name: block.name,
                    arguments: input_text(&block.input),
                }),
                _ => {}
            }
        }
        if tool_calls.len() > MAX_TOOL_CALLS as usize {
            return Err(ProviderError::Malformed(format!(
                "{} tool calls in one answer; at most {MAX_TOOL_CALLS} are read",
                tool_calls.len()
            )));
        }
        let usage = self.usage.unwrap_or_default();
        Ok(Completion {
            served: self
                .model
                .filter(|m| !m.is_empty())
                .map(|model| ServedModel {
                    model,
                    fingerprint: None,
                }),
            text,
            tool_calls,
            finish_reason: finish_reason(self.stop_reason.as_deref(), json_tool.is_some()),
            usage: usage.prompt().map(|prompt_tokens| Usage {
                prompt_tokens,
                completion_tokens: usage.output_tokens.unwrap_or_default(),
            }),
        })
    }
}

/// What a content block of a stream carries.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Block {
    /// Answer text.
    Text,
    /// The forced tool's input: the JSON answer, as text.
    JsonAnswer,
    /// A tool call, numbered as OpenAI numbers them.
    Call(u32),
}

/// Decodes a stream's events; keeps which block is which and the input tokens
/// `message_start` reported, for the usage `message_delta` completes.
pub(super) struct EventDecoder {
    json_tool: Option<String>,
    blocks: Vec<(u32, Block)>,
    calls: u32,
    prompt_tokens: Option<u64>,
    /// The envelope of the last text delta: what a repeated one means depends
    /// only on which blocks are open, so it is forgotten when one opens.
    envelope: Envelope,
}

impl EventDecoder {
    /// A decoder for one answer; `json_tool` as for [`WireResponse::into_completion`].
    pub fn new(json_tool: Option<String>) -> Self {
        Self {
            json_tool,
            blocks: Vec::new(),
            calls: 0,
            prompt_tokens: None,
            envelope: Envelope::default(),
        }
    }

    fn block(&self, index: Option<u32>) -> Result<Block, ProviderError> {
        let index = index.unwrap_or_default();
        self.blocks
            .iter()
            .find(|(i, _)| *i == index)
            .map(|(_, block)| *block)
            // Some servers send deltas without a start for a lone text block.
            .or((self.blocks.is_empty()).then_some(Block::Text))
            .ok_or_else(|| ProviderError::Malformed(format!("delta for unopened block {index}")))
    }

    fn open(
        &mut self,
        index: Option<u32>,
        block: WireBlock,
        out: &mut Vec<Piece>,
    ) -> Result<(), ProviderError> {
        if self.blocks.len() >= MAX_BLOCKS {
            return Err(ProviderError::Malformed(format!(
                "more than {MAX_BLOCKS} content blocks"
            )));
        }
        let kind = match block.kind.as_str() {
            "tool_use" if self.json_tool.as_deref() == Some(block.name.as_str()) => {
                Block::JsonAnswer
            }
            "tool_use" => {
                if self.calls >= MAX_TOOL_CALLS {
                    return Err(ProviderError::Malformed(format!(
                        "more than {MAX_TOOL_CALLS} tool calls"
                    )));
                }
                let ordinal = self.calls;
                self.calls += 1;
                out.push(Piece::ToolCall(ToolCallDelta {
                    index: ordinal,
                    id: Some(block.id),
                    name: Some(block.name),
                    arguments: String::new(),
                }));
                Block::Call(ordinal)
            }
            _ => Block::Text,
        };
        self.blocks.push((index.unwrap_or_default(), kind));
        self.envelope.forget();
        Ok(())
    }
}

impl SseDecoder for EventDecoder {
    fn decode(&mut self, event: &Event, out: &mut Vec<Piece>) -> Result<Flow, ProviderError> {
        if event.data.trim().is_empty() {
            return Ok(Flow::Continue);
        }
        if let Some(text) = self.envelope.text(&event.data) {
            out.push(Piece::Text(text));
            return Ok(Flow::Continue);
        }
        let parsed: WireEvent = serde_json::from_str(&event.data)
            .map_err(|err| ProviderError::Malformed(format!("bad {} event: {err}", event.event)))?;
        match parsed.kind.0.as_ref() {
            "message_start" => {
                if let Some(message) = parsed.message {
                    self.prompt_tokens = message.usage.and_then(|u| u.prompt());
                    if let Some(model) = message.model.filter(|m| !m.is_empty()) {
                        out.push(Piece::Served(ServedModel {
                            model,
                            fingerprint: None,
                        }));
                    }
                }
            }
            "content_block_start" => {
                if let Some(block) = parsed.content_block {
                    self.open(parsed.index, block, out)?;
                }
            }
            "content_block_delta" => {
                let Some(delta) = parsed.delta else {
                    return Ok(Flow::Continue);
                };
                match (self.block(parsed.index)?, delta.text, delta.partial_json) {
                    (Block::Text, Some(text), _) => {
                        // A text delta means only its text: the next ones likely
                        // repeat its envelope.
                        if let Some(slice) = text.slice() {
                            self.envelope.learn(&event.data, slice, None);
                        }
                        out.push(Piece::Text(text.0.into_owned()));
                    }
                    (Block::JsonAnswer, _, Some(json)) => out.push(Piece::Text(json)),
                    (Block::Call(index), _, Some(json)) => {
                        out.push(Piece::ToolCall(ToolCallDelta {
                            index,
                            id: None,
                            name: None,
                            arguments: json,
                        }))
                    }
                    _ => {}
                }
            }
            "message_delta" => {
                if let Some(reason) = parsed.delta.and_then(|d| d.stop_reason) {
                    out.push(Piece::Finish(finish_reason(
                        Some(&reason),
                        self.json_tool.is_some(),
                    )));
                }
                if let Some(usage) = parsed.usage {
                    // Newer servers repeat the input tokens here; they are final.
                    let prompt = usage.prompt().or(self.prompt_tokens);
                    if let (Some(prompt_tokens), Some(completion_tokens)) =
                        (prompt, usage.output_tokens)
                    {
                        out.push(Piece::Usage(Usage {
                            prompt_tokens,
                            completion_tokens,
                        }));
                    }
                }
            }
            "message_stop" => return Ok(Flow::End),
            "error" => {
                let error = parsed.error.unwrap_or(WireErrorBody {
                    kind: "api_error".into(),
                    message: "error event without details".into(),
                });
                let status = if error.kind == "overloaded_error" {
                    529
                } else {
                    500
                };
                return Err(ProviderError::Server {
                    status,
                    message: error.message,
                });
            }
            _ => {}
        }
        Ok(Flow::Continue)
    }
}

#[cfg(test)]
mod tests {
    use super::super::super::sse::testing::{json_string, per_event};
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn every_documented_stop_reason_says_whether_the_answer_was_cut() {
        for (reason, finish) in [
            ("end_turn", FinishReason::Stop),
            ("stop_sequence", FinishReason::Stop),
            ("pause_turn", FinishReason::Stop),
            ("max_tokens", FinishReason::Length),
            ("model_context_window_exceeded", FinishReason::Length),
            ("tool_use", FinishReason::ToolCalls),
            ("refusal", FinishReason::ContentFilter),
        ] {
            assert_eq!(finish_reason(Some(reason), false), finish, "{reason}");
        }
        assert_eq!(finish_reason(Some("tool_use"), true), FinishReason::Stop);
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(300))]

        #[test]
        fn deltas_read_through_their_envelope_mean_what_they_mean_parsed_whole(
            specs in proptest::collection::vec((0..5usize, 0..3u32, json_string()), 1..24)
        ) {
            // Blocks of every kind open at any index, between deltas of either kind.
            let events: Vec<String> = specs
                .iter()
                .map(|(kind, index, string)| match kind {
                    0 => format!(r#"{{"type":"content_block_start","index":{index},"content_block":{{"type":"text","text":""}}}}"#),
                    1 => format!(r#"{{"type":"content_block_start","index":{index},"content_block":{{"type":"tool_use","id":"t{index}","name":"{}","input":{{}}}}}}"#, if *index == 2 { "answer" } else { "lookup" }),
                    2 => format!(r#"{{"type":"content_block_delta","index":{index},"delta":{{"type":"input_json_delta","partial_json":{string}}}}}"#),
                    3 => r#"{"type":"ping"}"#.to_string(),
                    _ => format!(r#"{{"type":"content_block_delta","index":{index},"delta":{{"type":"text_delta","text":{string}}}}}"#),
                })
                .collect();
            let decoder = || EventDecoder::new(Some("answer".into()));
            prop_assert_eq!(
                per_event(decoder(), &events, |_| {}),
                per_event(decoder(), &events, |d| d.envelope.forget())
            );
        }
    }

    fn decode_all(decoder: &mut EventDecoder, events: &[&str]) -> Vec<Piece> {
        let mut out = Vec::new();
        for data in events {
            let event = Event {
                event: String::new(),
                data: (*data).to_string(),
            };
            decoder.decode(&event, &mut out).unwrap();
        }
        out
    }

    #[test]
    fn streamed_tool_use_becomes_openai_tool_call_fragments() {
        let mut decoder = EventDecoder::new(None);
        let pieces = decode_all(
            &mut decoder,
            &[
                r#"{"type":"message_start","message":{"model":"claude-sonnet-4","usage":{"input_tokens":30,"cache_read_input_tokens":5,"output_tokens":1}}}"#,
                r#"{"type":"content_block_start","index":0,"content_block":{"type":"text","text":""}}"#,
                r#"{"type":"content_block_delta","index":0,"delta":{"type":"text_delta","text":"Checking."}}"#,
                r#"{"type":"content_block_start","index":1,"content_block":{"type":"tool_use","id":"toolu_1","name":"order_status","input":{}}}"#,
                r#"{"type":"content_block_delta","index":1,"delta":{"type":"input_json_delta","partial_json":"{\"order_id\": "}}"#,
                r#"{"type":"content_block_delta","index":1,"delta":{"type":"input_json_delta","partial_json":"\"1234\"}"}}"#,
                r#"{"type":"content_block_start","index":2,"content_block":{"type":"tool_use","id":"toolu_2","name":"refund","input":{}}}"#,
                r#"{"type":"message_delta","delta":{"stop_reason":"tool_use"},"usage":{"output_tokens":40}}"#,
            ],
        );
        assert_eq!(
            pieces[0],
            Piece::Served(ServedModel {
                model: "claude-sonnet-4".into(),
                fingerprint: None
            })
        );
        assert_eq!(pieces[1], Piece::Text("Checking.".into()));
        assert_eq!(
            pieces[2],
            Piece::ToolCall(ToolCallDelta {
                index: 0,
                id: Some("toolu_1".into()),
                name: Some("order_status".into()),
                arguments: String::new()
            })
        );
        assert!(
            matches!(&pieces[3], Piece::ToolCall(d) if d.index == 0 && d.arguments == "{\"order_id\": ")
        );
        assert!(
            matches!(&pieces[5], Piece::ToolCall(d) if d.index == 1 && d.id.as_deref() == Some("toolu_2"))
        );
        assert_eq!(pieces[6], Piece::Finish(FinishReason::ToolCalls));
        assert_eq!(
            pieces[7],
            Piece::Usage(Usage {
                prompt_tokens: 35,
                completion_tokens: 40
            })
        );
    }

    #[test]
    fn the_forced_json_tool_streams_as_answer_text() {
        let mut decoder = EventDecoder::new(Some("json_answer".into()));
        let pieces = decode_all(
            &mut decoder,
            &[
                r#"{"type":"content_block_start","index":0,"content_block":{"type":"tool_use","id":"t","name":"json_answer","input":{}}}"#,
                r#"{"type":"content_block_delta","index":0,"delta":{"type":"input_json_delta","partial_json":"{\"a\":1}"}}"#,
                r#"{"type":"message_delta","delta":{"stop_reason":"tool_use"},"usage":{"output_tokens":4}}"#,
            ],
        );
        assert_eq!(pieces[0], Piece::Text("{\"a\":1}".into()));
        assert_eq!(pieces[1], Piece::Finish(FinishReason::Stop));
    }

    #[test]
    fn a_delta_for_a_block_never_opened_is_malformed() {
        let mut decoder = EventDecoder::new(None);
        decode_all(
            &mut decoder,
            &[
                r#"{"type":"content_block_start","index":0,"content_block":{"type":"text","text":""}}"#,
            ],
        );
        let event = Event {
            event: String::new(),
            data: r#"{"type":"content_block_delta","index":7,"delta":{"type":"text_delta","text":"x"}}"#
                .into(),
        };
        let err = decoder.decode(&event, &mut Vec::new()).unwrap_err();
        assert!(matches!(err, ProviderError::Malformed(_)));
    }

    #[test]
    fn a_whole_message_with_tool_use_and_cached_prompt_tokens() {
        let body: WireResponse = serde_json::from_str(
            r#"{"model":"claude-x","content":[{"type":"text","text":"One moment."},
            {"type":"tool_use","id":"toolu_9","name":"order_status","input":{"order_id":"77"}}],
            "stop_reason":"tool_use","usage":{"input_tokens":10,"cache_creation_input_tokens":2,"output_tokens":8}}"#,
        )
        .unwrap();
        let completion = body.into_completion(None).unwrap();
        assert_eq!(completion.text, "One moment.");
        assert_eq!(completion.tool_calls[0].arguments, r#"{"order_id":"77"}"#);
        assert_eq!(completion.finish_reason, FinishReason::ToolCalls);
        assert_eq!(
            completion.usage,
            Some(Usage {
                prompt_tokens: 12,
                completion_tokens: 8
            })
        );
    }
}
