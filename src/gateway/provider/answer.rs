//! What a provider gives back, in the gateway's terms: a whole completion, or a
//! stream of pieces (text, tool-call fragments, usage, the finish reason).

use super::ProviderError;
use crate::shared::{ToolCall, Usage};
use futures::stream::BoxStream;
use futures::StreamExt;

crate::spelled! {
    /// Why a provider stopped, in OpenAI's vocabulary (each adapter maps its own).
    pub enum FinishReason {
        /// The answer is complete.
        Stop => "stop",
        /// The answer hit the token limit.
        Length => "length",
        /// The model called tools instead of answering.
        ToolCalls => "tool_calls",
        /// A content filter stopped the answer.
        ContentFilter => "content_filter",
    }
}

/// Most tool calls one answer may carry; a provider naming more is malformed
/// (OpenAI allows 128 tools, and a model calls a handful).
pub const MAX_TOOL_CALLS: u32 = 128;

/// A fragment of a tool call as it streams: the first names the call (its id and
/// function), the following carry pieces of its JSON arguments.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ToolCallDelta {
    /// Which call of this answer, 0 first.
    pub index: u32,
    /// The call's id (on its first fragment).
    pub id: Option<String>,
    /// The function's name (on its first fragment).
    pub name: Option<String>,
    /// A piece of the arguments' JSON text.
    pub arguments: String,
}

/// Which model really answered, as the provider names it (`gpt-4o-2024-08-06`
/// for a request that asked for `gpt-4o`).
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct ServedModel {
    /// The model id the provider reported.
    pub model: String,
    /// OpenAI's `system_fingerprint`, when it sent one.
    pub fingerprint: Option<String>,
}

impl ToolCallDelta {
    /// The calls a stream's fragments make up, in the order they were opened:
    /// each call's first fragment must name its id and function, later ones add
    /// to its arguments. Fragments that do not add up to whole calls (a call
    /// never named, more calls than allowed) are a malformed answer.
    pub fn assemble(deltas: &[ToolCallDelta]) -> Result<Vec<ToolCall>, ProviderError> {
        let mut calls: Vec<(u32, ToolCall)> = Vec::new();
        for delta in deltas {
            let position = match calls.iter().position(|(index, _)| *index == delta.index) {
                Some(position) => position,
                None => {
                    if calls.len() >= MAX_TOOL_CALLS as usize {
                        return Err(ProviderError::Malformed(format!(
                            "more than {MAX_TOOL_CALLS} tool calls"
                        )));
                    }
                    calls.push((
                        delta.index,
                        ToolCall {
                            id: String::new(),
                            name: String::new(),
                            arguments: String::new(),
                        },
                    ));
                    calls.len() - 1
                }
            };
            let call = &mut calls[position].1;
            if let Some(id) = delta.id.as_ref().filter(|id| !id.is_empty()) {
                call.id.clone_from(id);
            }
            if let Some(name) = delta.name.as_ref().filter(|n| !n.is_empty()) {
                call.name.clone_from(name);
            }
            call.arguments.push_str(&delta.arguments);
        }
        calls
            .into_iter()
            .map(|(index, call)| {
                if call.id.is_empty() || call.name.is_empty() {
                    Err(ProviderError::Malformed(format!(
                        "tool call {index} has no id or no function name"
                    )))
                } else {
                    Ok(call)
                }
            })
            .collect()
    }
}

/// A complete (non-streamed) answer.
#[derive(Clone, Debug, PartialEq)]
pub struct Completion {
    /// Who answered, when the provider said.
    pub served: Option<ServedModel>,
    /// The answer's text.
    pub text: String,
    /// The tools the model called.
    pub tool_calls: Vec<ToolCall>,
    /// Why the provider stopped.
    pub finish_reason: FinishReason,
    /// What it cost, when the provider said.
    pub usage: Option<Usage>,
}

impl Completion {
    /// The whole answer a stream of pieces makes, read to its end; a stream
    /// that breaks, or whose tool calls do not assemble, is no answer.
    pub async fn gather(mut pieces: PieceStream) -> Result<Completion, ProviderError> {
        let mut completion = Completion {
            served: None,
            text: String::new(),
            tool_calls: Vec::new(),
            finish_reason: FinishReason::Stop,
            usage: None,
        };
        let mut fragments = Vec::new();
        while let Some(piece) = pieces.next().await {
            match piece? {
                Piece::Served(served) => completion.served = Some(served),
                Piece::Text(text) => completion.text.push_str(&text),
                Piece::ToolCall(fragment) => fragments.push(fragment),
                Piece::Usage(usage) => completion.usage = Some(usage),
                Piece::Finish(reason) => completion.finish_reason = reason,
            }
        }
        completion.tool_calls = ToolCallDelta::assemble(&fragments)?;
        Ok(completion)
    }

    /// The completion as the pieces a stream of it would carry: empty text is
    /// no piece, as in a stream, so an answer with neither text nor a tool call
    /// has no content piece and fails as a stream that never started.
    pub fn into_pieces(self) -> Vec<Piece> {
        let mut pieces = Vec::with_capacity(4 + self.tool_calls.len());
        if let Some(served) = self.served {
            pieces.push(Piece::Served(served));
        }
        if !self.text.is_empty() {
            pieces.push(Piece::Text(self.text));
        }
        for (index, call) in self.tool_calls.into_iter().enumerate() {
            pieces.push(Piece::ToolCall(ToolCallDelta {
                index: index as u32,
                id: Some(call.id),
                name: Some(call.name),
                arguments: call.arguments,
            }));
        }
        if let Some(usage) = self.usage {
            pieces.push(Piece::Usage(usage));
        }
        pieces.push(Piece::Finish(self.finish_reason));
        pieces
    }
}

/// One piece of an answer as it arrives.
#[derive(Clone, Debug, PartialEq)]
pub enum Piece {
    /// The model that answers (sent once, before the content).
    Served(ServedModel),
    /// Text to append to the answer (never empty in a stream).
    Text(String),
    /// A fragment of a tool call.
    ToolCall(ToolCallDelta),
    /// What the answer cost, as the provider reported it.
    Usage(Usage),
    /// The provider said why it stopped.
    Finish(FinishReason),
}

impl Piece {
    /// Whether it is part of the answer itself (text or a tool call), which is
    /// what makes a stream count as started (and a tool call counts as an answer).
    pub fn is_content(&self) -> bool {
        matches!(self, Piece::Text(_) | Piece::ToolCall(_))
    }
}

/// A streamed answer: pieces in order, ending with `None` only after the
/// provider's explicit end-of-stream marker. A stream that stops without that
/// marker yields a [`ProviderError::Malformed`] or [`ProviderError::Connection`]
/// as its last item, so a cut stream is never mistaken for a whole answer.
pub type PieceStream = BoxStream<'static, Result<Piece, ProviderError>>;

#[cfg(test)]
mod tests {
    use super::*;

    fn fragment(
        index: u32,
        id: Option<&str>,
        name: Option<&str>,
        arguments: &str,
    ) -> ToolCallDelta {
        ToolCallDelta {
            index,
            id: id.map(str::to_string),
            name: name.map(str::to_string),
            arguments: arguments.to_string(),
        }
    }

    #[test]
    fn fragments_of_parallel_calls_assemble_in_the_order_they_opened() {
        let calls = ToolCallDelta::assemble(&[
            fragment(0, Some("call_a"), Some("order_status"), ""),
            fragment(1, Some("call_b"), Some("refund"), "{\"amount\""),
            fragment(0, None, None, "{\"order_id\":"),
            fragment(0, None, None, "\"1234\"}"),
            fragment(1, None, None, ":5}"),
        ])
        .unwrap();
        assert_eq!(calls.len(), 2);
        assert_eq!(calls[0].id, "call_a");
        assert_eq!(calls[0].arguments, r#"{"order_id":"1234"}"#);
        assert_eq!(calls[1].name, "refund");
        assert_eq!(calls[1].arguments, r#"{"amount":5}"#);
    }

    #[test]
    fn a_call_never_named_is_malformed() {
        let err = ToolCallDelta::assemble(&[fragment(0, None, None, "{}")]).unwrap_err();
        assert!(matches!(err, ProviderError::Malformed(_)));
    }
}
