//! Reading what an OpenAI-compatible server sends: a whole `chat.completion`, the
//! `chat.completion.chunk`s of a stream (text, `delta.tool_calls` fragments, the
//! finish reason, and the usage chunk with empty `choices` that
//! `stream_options.include_usage` asks for), and error bodies.

use super::super::sse::{Borrowed, Envelope, Event, Flow, SseDecoder};
use super::super::{
    Completion, FinishReason, Piece, ProviderError, ServedModel, ToolCallDelta, WireFault,
    MAX_TOOL_CALLS,
};
use crate::shared::{ToolCall, Usage};
use serde::Deserialize;
use serde_json::Value;

#[derive(Deserialize)]
pub(super) struct WireResponse {
    #[serde(default)]
    model: Option<String>,
    #[serde(default)]
    system_fingerprint: Option<String>,
    choices: Vec<WireChoice>,
    #[serde(default)]
    usage: Option<WireUsage>,
}

#[derive(Deserialize)]
struct WireChoice {
    message: WireAnswer,
    finish_reason: Option<String>,
}

#[derive(Deserialize)]
struct WireAnswer {
    #[serde(default)]
    content: Option<String>,
    /// A model's refusal arrives here instead of in `content`.
    #[serde(default)]
    refusal: Option<String>,
    #[serde(default)]
    tool_calls: Option<Vec<WireToolCall>>,
}

#[derive(Deserialize)]
struct WireToolCall {
    id: String,
    function: WireFunction,
}

#[derive(Deserialize)]
struct WireFunction {
    name: String,
    /// A JSON text in OpenAI's API; some compatible servers send the object itself.
    #[serde(default)]
    arguments: Value,
}

#[derive(Deserialize, Clone, Copy)]
struct WireUsage {
    #[serde(default)]
    prompt_tokens: u64,
    #[serde(default)]
    completion_tokens: u64,
}

impl From<WireUsage> for Usage {
    fn from(usage: WireUsage) -> Self {
        Usage {
            prompt_tokens: usage.prompt_tokens,
            completion_tokens: usage.completion_tokens,
        }
    }
}

#[derive(Deserialize)]
struct WireChunk<'a> {
    #[serde(default, borrow)]
    model: Option<Borrowed<'a>>,
    #[serde(default, borrow)]
    system_fingerprint: Option<Borrowed<'a>>,
    #[serde(default, borrow)]
    choices: Vec<WireChunkChoice<'a>>,
    #[serde(default)]
    usage: Option<WireUsage>,
    /// Providers report failures inside a 200 stream as an `error` object. Read
    /// with the chunk, in the same pass: parsing every chunk a second time as a
    /// possible error had cost more than the chunk itself.
    #[serde(default)]
    error: Option<Value>,
    /// OpenAI's stream obfuscation: random characters that pad every chunk to
    /// hide its size. Meaningless, but read so that its place is known and the
    /// chunks' envelope still repeats.
    #[serde(default, borrow)]
    obfuscation: Padding<'a>,
}

/// A value the chunk's meaning does not depend on: borrowed when it is a string
/// without escapes, else dropped, whatever it is.
#[derive(Default)]
struct Padding<'a>(Option<&'a str>);

impl<'de: 'a, 'a> Deserialize<'de> for Padding<'a> {
    fn deserialize<D: serde::Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        use serde::de::{IgnoredAny, MapAccess, SeqAccess, Visitor};
        struct Any;
        impl<'de> Visitor<'de> for Any {
            type Value = Option<&'de str>;
            fn expecting(&self, f: &mut std::fmt::Formatter) -> std::fmt::Result {
                f.write_str("any value")
            }
            fn visit_borrowed_str<E>(self, text: &'de str) -> Result<Self::Value, E> {
                Ok(Some(text))
            }
            fn visit_str<E>(self, _: &str) -> Result<Self::Value, E> {
                Ok(None)
            }
            fn visit_bool<E>(self, _: bool) -> Result<Self::Value, E> {
                Ok(None)
            }
            fn visit_i64<E>(self, _: i64) -> Result<Self::Value, E> {
                Ok(None)
            }
            fn visit_u64<E>(self, _: u64) -> Result<Self::Value, E> {
                Ok(None)
            }
            fn visit_f64<E>(self, _: f64) -> Result<Self::Value, E> {
                Ok(None)
            }
            fn visit_unit<E>(self) -> Result<Self::Value, E> {
                Ok(None)
            }
            fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<Self::Value, A::Error> {
                while seq.next_element::<IgnoredAny>()?.is_some() {}
                Ok(None)
            }
            fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<Self::Value, A::Error> {
                while map.next_entry::<IgnoredAny, IgnoredAny>()?.is_some() {}
                Ok(None)
            }
        }
        deserializer.deserialize_any(Any).map(Padding)
    }
}

#[derive(Deserialize)]
struct WireChunkChoice<'a> {
    #[serde(default)]
    index: u32,
    #[serde(default, borrow)]
    delta: WireDelta<'a>,
    #[serde(default, borrow)]
    finish_reason: Option<Borrowed<'a>>,
}

#[derive(Deserialize, Default)]
struct WireDelta<'a> {
    #[serde(default, borrow)]
    content: Option<Borrowed<'a>>,
    #[serde(default, borrow)]
    refusal: Option<Borrowed<'a>>,
    #[serde(default)]
    tool_calls: Option<Vec<WireToolCallDelta>>,
}

#[derive(Deserialize)]
struct WireToolCallDelta {
    /// Left out by some compatible servers; see [`CallOrder`].
    #[serde(default)]
    index: Option<u32>,
    #[serde(default)]
    id: Option<String>,
    #[serde(default)]
    function: Option<WireFunctionDelta>,
}

#[derive(Deserialize)]
struct WireFunctionDelta {
    #[serde(default)]
    name: Option<String>,
    /// A piece of JSON text, as OpenAI sends it; some compatible servers send a
    /// call's whole arguments as a JSON object instead.
    #[serde(default)]
    arguments: Option<Value>,
}

#[derive(Deserialize)]
struct WireError {
    error: WireErrorBody,
}

#[derive(Deserialize)]
struct WireErrorBody {
    message: String,
    #[serde(default, rename = "type")]
    kind: Option<String>,
    /// A string in OpenAI's API; some compatible servers send a number.
    #[serde(default)]
    code: Option<Value>,
}

/// The fault an error body describes, if it is OpenAI's error shape.
pub(super) fn error_fault(body: &str) -> Option<WireFault> {
    Some(fault(serde_json::from_str::<WireError>(body).ok()?.error))
}

fn fault(error: WireErrorBody) -> WireFault {
    WireFault {
        message: error.message,
        kind: error.kind,
        code: error.code.and_then(|c| match c {
            Value::String(s) => Some(s),
            Value::Null => None,
            other => Some(other.to_string()),
        }),
    }
}

/// OpenAI's finish reasons; an unknown one is read as a plain stop.
fn finish_reason(reason: &str) -> FinishReason {
    match reason {
        // The deprecated `functions` API's name for the same thing.
        "function_call" => FinishReason::ToolCalls,
        reason => reason.parse().unwrap_or(FinishReason::Stop),
    }
}

fn arguments_text(arguments: Value) -> String {
    match arguments {
        Value::String(text) => text,
        Value::Null => "{}".into(),
        other => other.to_string(),
    }
}

fn served(model: Option<String>, fingerprint: Option<String>) -> Option<ServedModel> {
    model.filter(|m| !m.is_empty()).map(|model| ServedModel {
        model,
        fingerprint: fingerprint.filter(|f| !f.is_empty()),
    })
}

impl WireResponse {
    /// The completion this response holds.
    pub(super) fn into_completion(self) -> Result<Completion, ProviderError> {
        let choice = self
            .choices
            .into_iter()
            .next()
            .ok_or_else(|| ProviderError::Malformed("no choices in response".into()))?;
        let calls = choice.message.tool_calls.unwrap_or_default();
        if calls.len() > MAX_TOOL_CALLS as usize {
            return Err(ProviderError::Malformed(format!(
                "{} tool calls in one answer; at most {MAX_TOOL_CALLS} are read",
                calls.len()
            )));
        }
        let tool_calls: Vec<ToolCall> = calls
            .into_iter()
            .map(|call| ToolCall {
                id: call.id,
                name: call.function.name,
                arguments: arguments_text(call.function.arguments),
            })
            .collect();
        let finish_reason = match choice.finish_reason.as_deref() {
            Some(reason) => finish_reason(reason),
            // Some compatible servers omit it beside tool calls.
            None if !tool_calls.is_empty() => FinishReason::ToolCalls,
            None => FinishReason::Stop,
        };
        Ok(Completion {
            served: served(self.model, self.system_fingerprint),
            text: choice
                .message
                .content
                .or(choice.message.refusal)
                .unwrap_or_default(),
            tool_calls,
            finish_reason,
            usage: self.usage.map(Usage::from),
        })
    }
}

/// Decodes a stream's chunks; remembers whether the serving model was named yet.
#[derive(Default)]
pub(super) struct ChunkDecoder {
    named: bool,
    /// Which call a fragment without an index belongs to.
    calls: CallOrder,
    /// The envelope of the last chunk that carried only text, once the model is
    /// named (the one piece of state a chunk's meaning depends on).
    envelope: Envelope,
}

/// The tool calls a stream has opened so far. OpenAI numbers every fragment
/// with its call's `index`; some compatible servers leave it out (sending each
/// call whole, or its first fragment with an `id` and the rest without). A
/// fragment without one then opens the next call when it carries a new id, and
/// otherwise continues the call opened last.
#[derive(Default)]
struct CallOrder {
    /// Calls opened: one past the highest index seen.
    opened: u32,
    /// The id of the call opened last.
    last_id: Option<String>,
}

impl CallOrder {
    fn index_of(&mut self, index: Option<u32>, id: Option<&str>) -> u32 {
        let index = match index {
            Some(index) => index,
            None if id.is_some() && id != self.last_id.as_deref() => self.opened,
            None => self.opened.saturating_sub(1),
        };
        self.opened = self.opened.max(index.saturating_add(1));
        if let Some(id) = id {
            self.last_id = Some(id.to_string());
        }
        index
    }
}

impl SseDecoder for ChunkDecoder {
    fn decode(&mut self, event: &Event, out: &mut Vec<Piece>) -> Result<Flow, ProviderError> {
        let data = event.data.trim();
        if data == "[DONE]" {
            return Ok(Flow::End);
        }
        if data.is_empty() {
            return Ok(Flow::Continue);
        }
        if let Some(text) = self.envelope.text(data) {
            out.push(Piece::Text(text));
            return Ok(Flow::Continue);
        }
        let was_named = self.named;
        let pieces_before = out.len();
        // The text, when it was borrowed from the chunk, for learning its envelope.
        let mut borrowed_text = None;
        let chunk: WireChunk = serde_json::from_str(data)
            .map_err(|err| ProviderError::Malformed(format!("bad chunk: {err}")))?;
        // An `error` object in OpenAI's error shape is the provider's failure.
        if let Some(error) = chunk
            .error
            .and_then(|e| serde_json::from_value::<WireErrorBody>(e).ok())
        {
            return Err(ProviderError::Server {
                status: 500,
                message: fault(error).message,
            });
        }
        let padding = chunk.obfuscation.0;
        if !self.named {
            let owned = |s: Option<Borrowed>| s.map(|s| s.0.into_owned());
            if let Some(model) = served(owned(chunk.model), owned(chunk.system_fingerprint)) {
                self.named = true;
                out.push(Piece::Served(model));
            }
        }
        // Only the first choice is ever asked for (`n` is 1).
        for choice in chunk.choices.into_iter().filter(|c| c.index == 0) {
            let delta = choice.delta;
            if let Some(text) = delta.content.or(delta.refusal) {
                borrowed_text = text.slice();
                out.push(Piece::Text(text.0.into_owned()));
            }
            for call in delta.tool_calls.unwrap_or_default() {
                let index = self.calls.index_of(call.index, call.id.as_deref());
                if index >= MAX_TOOL_CALLS {
                    return Err(ProviderError::Malformed(format!(
                        "tool call index {index} is beyond {MAX_TOOL_CALLS}"
                    )));
                }
                let function = call.function.unwrap_or(WireFunctionDelta {
                    name: None,
                    arguments: None,
                });
                out.push(Piece::ToolCall(ToolCallDelta {
                    index,
                    id: call.id,
                    name: function.name,
                    arguments: match function.arguments {
                        None | Some(Value::Null) => String::new(),
                        Some(arguments) => arguments_text(arguments),
                    },
                }));
            }
            if let Some(reason) = choice.finish_reason {
                out.push(Piece::Finish(finish_reason(&reason.0)));
            }
        }
        if let Some(usage) = chunk.usage {
            out.push(Piece::Usage(usage.into()));
        }
        // A chunk that meant one text and nothing else, read in the state the
        // following chunks are read in, is the envelope they will likely repeat.
        if let (true, [Piece::Text(_)], Some(text)) =
            (was_named, &out[pieces_before..], borrowed_text)
        {
            self.envelope.learn(data, text, padding);
        }
        Ok(Flow::Continue)
    }
}

#[cfg(test)]
mod tests {
    use super::super::super::sse::testing::{json_string, per_event};
    use super::*;
    use proptest::prelude::*;

    /// Each chunk's pieces (or failure); with `whole`, each parsed whole.
    fn per_chunk(chunks: &[String], whole: bool) -> Vec<Result<Vec<Piece>, String>> {
        per_event(ChunkDecoder::default(), chunks, |decoder| {
            if whole {
                decoder.envelope.forget();
            }
        })
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(300))]

        #[test]
        fn chunks_read_through_their_envelope_mean_what_they_mean_parsed_whole(
            specs in proptest::collection::vec(
                (0..3usize, json_string(), 0..4usize, 0..4usize, json_string(), "[a-zA-Z0-9]{0,12}"),
                1..24,
            )
        ) {
            let chunks: Vec<String> = specs
                .iter()
                .map(|(id, middle, extra, pad, odd_padding, padding)| {
                    let extra = ["", r#","finish_reason":"stop""#, r#","finish_reason":null"#, r#","refusal":"no""#][*extra];
                    // OpenAI's stream obfuscation, as it comes and as it should not.
                    let pad = match pad {
                        0 => String::new(),
                        1 => format!(r#","obfuscation":"{padding}""#),
                        2 => format!(r#","obfuscation":{odd_padding}"#),
                        _ => r#","obfuscation":{"n":[1,"x"]}"#.to_string(),
                    };
                    format!(
                        r#"{{"id":"c{id}","object":"chat.completion.chunk","model":"m","choices":[{{"index":0,"delta":{{"content":{middle}}},"logprobs":null{extra}}}]{pad}}}"#
                    )
                })
                .collect();
            prop_assert_eq!(per_chunk(&chunks, false), per_chunk(&chunks, true));
        }
    }

    #[test]
    fn a_text_chunk_teaches_the_envelope_the_next_ones_are_read_through() {
        // As OpenAI streams them: padded to hide the text's length.
        let chunk = |text: &str| {
            format!(
                r#"{{"id":"c1","model":"m","choices":[{{"index":0,"delta":{{"content":{}}},"finish_reason":null}}],"obfuscation":"{}"}}"#,
                serde_json::to_string(text).unwrap(),
                "Zq9".repeat(8 - text.len().min(8)),
            )
        };
        let mut decoder = ChunkDecoder::default();
        let mut out = Vec::new();
        for text in ["", "Hello", " world"] {
            let event = Event {
                event: String::new(),
                data: chunk(text),
            };
            decoder.decode(&event, &mut out).unwrap();
        }
        // The first chunk named the model, the second taught the envelope.
        assert_eq!(
            decoder.envelope.text(&chunk("next")).as_deref(),
            Some("next")
        );
        assert_eq!(
            out[1..],
            [
                Piece::Text(String::new()),
                Piece::Text("Hello".into()),
                Piece::Text(" world".into())
            ]
        );
    }

    fn decode_all(chunks: &[&str]) -> Result<Vec<Piece>, ProviderError> {
        let mut decoder = ChunkDecoder::default();
        let mut out = Vec::new();
        for data in chunks {
            let event = Event {
                event: String::new(),
                data: (*data).to_string(),
            };
            decoder.decode(&event, &mut out)?;
        }
        Ok(out)
    }

    #[test]
    fn an_error_object_inside_a_stream_is_the_providers_failure() {
        let err = decode_all(&[
            r#"{"choices":[{"index":0,"delta":{"content":"Hel"}}]}"#,
            r#"{"error":{"message":"overloaded","type":"server_error","code":529}}"#,
        ])
        .unwrap_err();
        assert!(
            matches!(&err, ProviderError::Server { status: 500, message } if message == "overloaded"),
            "{err:?}"
        );
        // Not OpenAI's error shape: the chunk is read for what it carries.
        let pieces = decode_all(&[
            r#"{"error":null,"choices":[{"index":0,"delta":{"content":"a"}}]}"#,
            r#"{"error":"none","choices":[{"index":0,"delta":{"content":"b"}}]}"#,
        ])
        .unwrap();
        let texts: Vec<_> = pieces
            .iter()
            .filter_map(|p| match p {
                Piece::Text(t) => Some(t.as_str()),
                _ => None,
            })
            .collect();
        assert_eq!(texts, ["a", "b"]);
    }

    #[test]
    fn escaped_text_and_the_served_model_survive_borrowing() {
        let pieces = decode_all(&[
            r#"{"model":"gpt-4o","system_fingerprint":"fp_1","choices":[{"index":0,"delta":{"content":"say \"hi\"\n\u00e9"}}]}"#,
            r#"{"model":"gpt-4o","choices":[{"index":0,"delta":{"content":"plain"},"finish_reason":"length"}]}"#,
        ])
        .unwrap();
        assert!(
            matches!(&pieces[0], Piece::Served(s) if s.model == "gpt-4o" && s.fingerprint.as_deref() == Some("fp_1"))
        );
        assert!(matches!(&pieces[1], Piece::Text(t) if t == "say \"hi\"\n\u{e9}"));
        assert!(matches!(&pieces[2], Piece::Text(t) if t == "plain"));
        assert!(matches!(pieces[3], Piece::Finish(FinishReason::Length)));
        assert_eq!(pieces.len(), 4, "the model is named once");
    }

    #[test]
    fn tool_call_fragments_keep_their_index_id_name_and_argument_pieces() {
        let pieces = decode_all(&[
            r#"{"model":"gpt-4o-2024-08-06","system_fingerprint":"fp_1","choices":[{"index":0,"delta":{"role":"assistant","content":null,"tool_calls":[{"index":0,"id":"call_a","type":"function","function":{"name":"order_status","arguments":""}}]}}]}"#,
            r#"{"choices":[{"index":0,"delta":{"tool_calls":[{"index":0,"function":{"arguments":"{\"order"}}]}}]}"#,
            r#"{"choices":[{"index":0,"delta":{"tool_calls":[{"index":1,"id":"call_b","function":{"name":"refund","arguments":"{}"}}]}}]}"#,
            r#"{"choices":[{"index":0,"delta":{},"finish_reason":"tool_calls"}],"usage":null}"#,
            r#"{"choices":[],"usage":{"prompt_tokens":12,"completion_tokens":9,"total_tokens":21}}"#,
        ])
        .unwrap();
        assert_eq!(
            pieces[0],
            Piece::Served(ServedModel {
                model: "gpt-4o-2024-08-06".into(),
                fingerprint: Some("fp_1".into())
            })
        );
        assert_eq!(
            pieces[1],
            Piece::ToolCall(ToolCallDelta {
                index: 0,
                id: Some("call_a".into()),
                name: Some("order_status".into()),
                arguments: String::new(),
            })
        );
        assert_eq!(
            pieces[2],
            Piece::ToolCall(ToolCallDelta {
                index: 0,
                id: None,
                name: None,
                arguments: "{\"order".into(),
            })
        );
        assert!(matches!(&pieces[3], Piece::ToolCall(d) if d.index == 1));
        assert_eq!(pieces[4], Piece::Finish(FinishReason::ToolCalls));
        assert_eq!(
            pieces[5],
            Piece::Usage(Usage {
                prompt_tokens: 12,
                completion_tokens: 9
            })
        );
    }

    #[test]
    fn tool_call_fragments_without_an_index_are_numbered_by_their_ids() {
        let pieces = decode_all(&[
            // Each call whole, as some compatible servers send them (one with
            // its arguments as an object).
            r#"{"choices":[{"index":0,"delta":{"tool_calls":[{"id":"a","type":"function","function":{"name":"order_status","arguments":{"id":1}}}]}}]}"#,
            r#"{"choices":[{"index":0,"delta":{"tool_calls":[{"id":"b","type":"function","function":{"name":"refund","arguments":""}}]}}]}"#,
            // The rest of the second, without its id.
            r#"{"choices":[{"index":0,"delta":{"tool_calls":[{"function":{"arguments":"{}"}}]}}]}"#,
            r#"{"choices":[{"index":0,"delta":{},"finish_reason":"tool_calls"}]}"#,
        ])
        .unwrap();
        let fragments: Vec<ToolCallDelta> = pieces
            .into_iter()
            .filter_map(|p| match p {
                Piece::ToolCall(d) => Some(d),
                _ => None,
            })
            .collect();
        let indexes: Vec<u32> = fragments.iter().map(|d| d.index).collect();
        assert_eq!(indexes, [0, 1, 1]);
        let calls = ToolCallDelta::assemble(&fragments).unwrap();
        assert_eq!(calls.len(), 2);
        assert_eq!(calls[0].arguments, r#"{"id":1}"#);
        assert_eq!(
            (calls[1].name.as_str(), calls[1].arguments.as_str()),
            ("refund", "{}")
        );
    }

    #[test]
    fn a_hostile_tool_call_index_is_malformed() {
        let err = decode_all(&[
            r#"{"choices":[{"index":0,"delta":{"tool_calls":[{"index":4000000000,"function":{"arguments":"x"}}]}}]}"#,
        ])
        .unwrap_err();
        assert!(matches!(err, ProviderError::Malformed(_)), "{err:?}");
    }

    #[test]
    fn a_whole_answer_with_tool_calls_and_usage() {
        let body: WireResponse = serde_json::from_str(
            r#"{"id":"x","model":"gpt-4o-mini","choices":[{"index":0,"message":{"role":"assistant","content":null,
            "tool_calls":[{"id":"call_1","type":"function","function":{"name":"order_status","arguments":"{\"order_id\":\"1234\"}"}}]},
            "finish_reason":"tool_calls"}],"usage":{"prompt_tokens":50,"completion_tokens":20,"total_tokens":70}}"#,
        )
        .unwrap();
        let completion = body.into_completion().unwrap();
        assert_eq!(completion.finish_reason, FinishReason::ToolCalls);
        assert_eq!(completion.tool_calls[0].arguments, r#"{"order_id":"1234"}"#);
        assert_eq!(completion.usage.unwrap().total(), 70);
        assert_eq!(completion.served.unwrap().model, "gpt-4o-mini");
        assert_eq!(completion.text, "");
    }
}
