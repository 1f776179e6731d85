//! A Responses API answer: the response object (whole, and as the streamed
//! lifecycle events carry it) and the semantic events of a stream, in the
//! order OpenAI sends them and the SDKs' stream helpers rebuild a response from.

use crate::gateway::provider::{FinishReason, ToolCallDelta};
use crate::shared::{ToolCall, Usage};
use serde::Serialize;
use serde_json::{json, Map, Value};

/// How a response ended.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(super) enum Status {
    /// Still being written (the lifecycle events before the end).
    InProgress,
    /// Whole.
    Completed,
    /// Cut short: by the size asked for, or by a content filter.
    Incomplete(&'static str),
    /// Broken, and not whole.
    Failed,
}

impl Status {
    /// The status a finish reason gives.
    pub fn of(finish: Option<FinishReason>) -> Self {
        match finish {
            Some(FinishReason::Length) => Status::Incomplete("max_output_tokens"),
            Some(FinishReason::ContentFilter) => Status::Incomplete("content_filter"),
            Some(_) => Status::Completed,
            None => Status::Failed,
        }
    }

    fn as_str(self) -> &'static str {
        match self {
            Status::InProgress => "in_progress",
            Status::Completed => "completed",
            Status::Incomplete(_) => "incomplete",
            Status::Failed => "failed",
        }
    }
}

/// What every form of one response shares.
pub(super) struct Envelope {
    /// `resp_…`.
    pub id: String,
    /// Unix seconds.
    pub created_at: u64,
    /// The model that answers.
    pub model: String,
    /// The request's fields a response repeats.
    pub echo: Map<String, Value>,
}

/// The ids of a response's output items, derived from the response's own.
fn item_id(prefix: &str, response_id: &str, index: usize) -> String {
    let own = response_id.trim_start_matches("resp_");
    format!("{prefix}_{own}{index}")
}

/// A message output item.
fn message_item(id: &str, text: &str, status: &str) -> Value {
    let content = if status == "in_progress" {
        json!([])
    } else {
        json!([{"type": "output_text", "text": text, "annotations": []}])
    };
    json!({"type": "message", "id": id, "status": status, "role": "assistant", "content": content})
}

/// A function-call output item.
fn call_item(id: &str, call: &ToolCall, status: &str) -> Value {
    json!({"type": "function_call", "id": id, "call_id": call.id, "name": call.name,
        "arguments": call.arguments, "status": status})
}

fn usage_object(usage: Usage) -> Value {
    json!({"input_tokens": usage.prompt_tokens,
        "input_tokens_details": {"cached_tokens": 0},
        "output_tokens": usage.completion_tokens,
        "output_tokens_details": {"reasoning_tokens": 0},
        "total_tokens": usage.total()})
}

impl Envelope {
    /// The response object with `output` and, once known, its usage.
    pub fn response(
        &self,
        status: Status,
        output: Vec<Value>,
        usage: Option<Usage>,
        error: Option<&str>,
    ) -> Value {
        let mut response = json!({
            "id": self.id, "object": "response", "created_at": self.created_at,
            "status": status.as_str(), "error": null, "incomplete_details": null,
            "model": self.model, "output": output, "usage": usage.map(usage_object),
            "instructions": null, "max_output_tokens": null, "metadata": {},
            "parallel_tool_calls": true, "temperature": null, "top_p": null,
            "tool_choice": "auto", "tools": [], "text": {"format": {"type": "text"}},
            "store": false,
        });
        for (name, value) in &self.echo {
            response[name] = value.clone();
        }
        if let Status::Incomplete(reason) = status {
            response["incomplete_details"] = json!({"reason": reason});
        }
        if let Some(message) = error {
            response["error"] = json!({"code": "server_error", "message": message});
        }
        response
    }

    /// A whole answer's output items: its message (always, unless it only
    /// calls tools), then its calls.
    pub fn output(&self, text: &str, calls: &[ToolCall]) -> Vec<Value> {
        let mut output = Vec::with_capacity(1 + calls.len());
        if !text.is_empty() || calls.is_empty() {
            output.push(message_item(
                &item_id("msg", &self.id, 0),
                text,
                "completed",
            ));
        }
        for (n, call) in calls.iter().enumerate() {
            output.push(call_item(
                &item_id("fc", &self.id, n + 1),
                call,
                "completed",
            ));
        }
        output
    }
}

/// One streamed text delta, serialised without building a JSON tree.
#[derive(Serialize)]
struct TextDelta<'a> {
    #[serde(rename = "type")]
    kind: &'static str,
    item_id: &'a str,
    output_index: usize,
    content_index: usize,
    delta: &'a str,
    logprobs: [(); 0],
    sequence_number: u64,
}

/// An output item being streamed.
enum Item {
    /// The message, with its text so far.
    Message { id: String, text: String },
    /// A call, by the fragments' index, with its arguments so far.
    Call {
        id: String,
        index: u32,
        call: ToolCall,
    },
}

/// Writes a stream's events, numbering them, and keeps the response they
/// build so its last event can carry it whole.
pub(super) struct EventWriter {
    envelope: Envelope,
    sequence: u64,
    output: Vec<Item>,
}

impl EventWriter {
    /// The writer of the response `envelope` describes.
    pub fn new(envelope: Envelope) -> Self {
        Self {
            envelope,
            sequence: 0,
            output: Vec::new(),
        }
    }

    fn event(&mut self, out: &mut Vec<u8>, kind: &str, mut data: Value) {
        data["type"] = json!(kind);
        data["sequence_number"] = json!(self.sequence);
        self.sequence += 1;
        out.extend_from_slice(b"event: ");
        out.extend_from_slice(kind.as_bytes());
        out.extend_from_slice(b"\ndata: ");
        out.extend_from_slice(data.to_string().as_bytes());
        out.extend_from_slice(b"\n\n");
    }

    /// `response.created` and `response.in_progress`.
    pub fn opening(&mut self, out: &mut Vec<u8>) {
        let response = self
            .envelope
            .response(Status::InProgress, Vec::new(), None, None);
        self.event(out, "response.created", json!({"response": response}));
        let response = self
            .envelope
            .response(Status::InProgress, Vec::new(), None, None);
        self.event(out, "response.in_progress", json!({"response": response}));
    }

    /// The model answers anew (a restart): the answer's model changes.
    pub fn set_model(&mut self, model: String) {
        self.envelope.model = model;
    }

    /// A piece of the answer's text; the message item opens with the first.
    pub fn text(&mut self, out: &mut Vec<u8>, piece: &str) {
        let index = match self
            .output
            .iter()
            .position(|i| matches!(i, Item::Message { .. }))
        {
            Some(index) => index,
            None => {
                let id = item_id("msg", &self.envelope.id, self.output.len());
                let index = self.output.len();
                self.event(
                    out,
                    "response.output_item.added",
                    json!({"output_index": index, "item": message_item(&id, "", "in_progress")}),
                );
                self.event(
                    out,
                    "response.content_part.added",
                    json!({"item_id": id, "output_index": index, "content_index": 0,
                        "part": {"type": "output_text", "text": "", "annotations": []}}),
                );
                self.output.push(Item::Message {
                    id,
                    text: String::new(),
                });
                index
            }
        };
        let Item::Message { id, text } = &mut self.output[index] else {
            return;
        };
        text.push_str(piece);
        let delta = TextDelta {
            kind: "response.output_text.delta",
            item_id: id,
            output_index: index,
            content_index: 0,
            delta: piece,
            logprobs: [],
            sequence_number: self.sequence,
        };
        self.sequence += 1;
        out.extend_from_slice(b"event: response.output_text.delta\ndata: ");
        serde_json::to_writer(&mut *out, &delta).expect("a delta always serialises");
        out.extend_from_slice(b"\n\n");
    }

    /// A fragment of a tool call (only ever sent once the calls are whole).
    pub fn call(&mut self, out: &mut Vec<u8>, fragment: &ToolCallDelta) {
        let found = self
            .output
            .iter()
            .position(|i| matches!(i, Item::Call { index, .. } if *index == fragment.index));
        let at = match found {
            Some(at) => at,
            None => {
                let at = self.output.len();
                let id = item_id("fc", &self.envelope.id, at);
                let call = ToolCall {
                    id: fragment.id.clone().unwrap_or_default(),
                    name: fragment.name.clone().unwrap_or_default(),
                    arguments: String::new(),
                };
                self.event(
                    out,
                    "response.output_item.added",
                    json!({"output_index": at, "item": call_item(&id, &call, "in_progress")}),
                );
                self.output.push(Item::Call {
                    id,
                    index: fragment.index,
                    call,
                });
                at
            }
        };
        let Item::Call { id, call, .. } = &mut self.output[at] else {
            return;
        };
        call.arguments.push_str(&fragment.arguments);
        let data = json!({"item_id": id, "output_index": at, "delta": fragment.arguments});
        self.event(out, "response.function_call_arguments.delta", data);
    }

    /// The answer so far: its text and its calls.
    pub fn answer(&self) -> (String, Vec<ToolCall>) {
        let mut text = String::new();
        let mut calls = Vec::new();
        for item in &self.output {
            match item {
                Item::Message { text: said, .. } => text.push_str(said),
                Item::Call { call, .. } => calls.push(call.clone()),
            }
        }
        (text, calls)
    }

    /// Every open item's closing events, then the response's last event.
    pub fn finish(&mut self, out: &mut Vec<u8>, finish: FinishReason, usage: Usage) -> Value {
        let status = Status::of(Some(finish));
        let done = self.close_items(out);
        let response = self.envelope.response(status, done, Some(usage), None);
        let kind = match status {
            Status::Incomplete(_) => "response.incomplete",
            _ => "response.completed",
        };
        self.event(out, kind, json!({"response": response.clone()}));
        response
    }

    /// The response's end when the answer broke: `response.failed`, never a
    /// completed response, so a cut answer is not taken as whole.
    pub fn failed(&mut self, out: &mut Vec<u8>, message: &str) {
        let output = self.items("incomplete");
        let response = self
            .envelope
            .response(Status::Failed, output, None, Some(message));
        self.event(out, "response.failed", json!({"response": response}));
    }

    /// The items as they stand, each with `status`.
    fn items(&self, status: &str) -> Vec<Value> {
        self.output
            .iter()
            .map(|item| match item {
                Item::Message { id, text } => message_item(id, text, status),
                Item::Call { id, call, .. } => call_item(id, call, status),
            })
            .collect()
    }

    fn close_items(&mut self, out: &mut Vec<u8>) -> Vec<Value> {
        // An answer that said nothing and called nothing still has its message.
        if self.output.is_empty() {
            self.text(out, "");
        }
        let done = self.items("completed");
        for (index, item) in done.iter().enumerate() {
            match &self.output[index] {
                Item::Message { id, text } => {
                    let (id, text) = (id.clone(), text.clone());
                    self.event(
                        out,
                        "response.output_text.done",
                        json!({"item_id": id, "output_index": index, "content_index": 0,
                            "text": text, "logprobs": []}),
                    );
                    self.event(
                        out,
                        "response.content_part.done",
                        json!({"item_id": id, "output_index": index, "content_index": 0,
                            "part": {"type": "output_text", "text": text, "annotations": []}}),
                    );
                }
                Item::Call { id, call, .. } => {
                    let data = json!({"item_id": id, "output_index": index,
                        "name": call.name, "arguments": call.arguments});
                    self.event(out, "response.function_call_arguments.done", data);
                }
            }
            self.event(
                out,
                "response.output_item.done",
                json!({"output_index": index, "item": item}),
            );
        }
        done
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn envelope() -> Envelope {
        let mut echo = Map::new();
        echo.insert("instructions".into(), json!("Be brief."));
        Envelope {
            id: "resp_abc".into(),
            created_at: 7,
            model: "gpt-4o-mini".into(),
            echo,
        }
    }

    /// The events of `bytes` as (type, data), checking each is framed as one
    /// SSE event whose name is its data's `type`, numbered in order.
    fn events(bytes: &[u8]) -> Vec<(String, Value)> {
        let text = std::str::from_utf8(bytes).unwrap();
        text.split_terminator("\n\n")
            .enumerate()
            .map(|(n, frame)| {
                let (name, data) = frame.split_once('\n').unwrap();
                let name = name.strip_prefix("event: ").unwrap().to_string();
                let data: Value =
                    serde_json::from_str(data.strip_prefix("data: ").unwrap()).unwrap();
                assert_eq!(data["type"], name.as_str());
                assert_eq!(data["sequence_number"], n as u64);
                (name, data)
            })
            .collect()
    }

    #[test]
    fn a_streamed_answer_opens_fills_and_closes_each_item_in_order() {
        let mut writer = EventWriter::new(envelope());
        let mut out = Vec::new();
        writer.opening(&mut out);
        writer.text(&mut out, "Let me ");
        writer.text(&mut out, "check.");
        for fragment in [
            ToolCallDelta {
                index: 0,
                id: Some("call_1".into()),
                name: Some("get_order_status".into()),
                arguments: "{\"order_id\":".into(),
            },
            ToolCallDelta {
                index: 0,
                id: None,
                name: None,
                arguments: "\"1\"}".into(),
            },
        ] {
            writer.call(&mut out, &fragment);
        }
        let last = writer.finish(
            &mut out,
            FinishReason::ToolCalls,
            Usage {
                prompt_tokens: 10,
                completion_tokens: 5,
            },
        );
        let events = events(&out);
        let names: Vec<&str> = events.iter().map(|(n, _)| n.as_str()).collect();
        assert_eq!(
            names,
            [
                "response.created",
                "response.in_progress",
                "response.output_item.added",
                "response.content_part.added",
                "response.output_text.delta",
                "response.output_text.delta",
                "response.output_item.added",
                "response.function_call_arguments.delta",
                "response.function_call_arguments.delta",
                "response.output_text.done",
                "response.content_part.done",
                "response.output_item.done",
                "response.function_call_arguments.done",
                "response.output_item.done",
                "response.completed",
            ]
        );
        assert_eq!(events[0].1["response"]["status"], "in_progress");
        assert_eq!(events[0].1["response"]["instructions"], "Be brief.");
        assert_eq!(events[4].1["item_id"], events[2].1["item"]["id"]);
        assert_eq!(events[9].1["text"], "Let me check.");
        assert_eq!(events[12].1["arguments"], "{\"order_id\":\"1\"}");
        assert_eq!(events[13].1["output_index"], 1);
        assert_eq!(last["status"], "completed");
        assert_eq!(last["output"][1]["call_id"], "call_1");
        assert_eq!(last["usage"]["total_tokens"], 15);
        assert_eq!(events[14].1["response"], last);
    }

    #[test]
    fn a_cut_answer_is_incomplete_and_a_broken_one_failed() {
        let mut writer = EventWriter::new(envelope());
        let mut out = Vec::new();
        writer.opening(&mut out);
        writer.text(&mut out, "Half");
        let last = writer.finish(&mut out, FinishReason::Length, Usage::default());
        assert_eq!(last["status"], "incomplete");
        assert_eq!(last["incomplete_details"]["reason"], "max_output_tokens");
        assert_eq!(events(&out).last().unwrap().0, "response.incomplete");

        let mut writer = EventWriter::new(envelope());
        let mut out = Vec::new();
        writer.opening(&mut out);
        writer.text(&mut out, "Half");
        writer.failed(&mut out, "interrupted");
        let events = events(&out);
        let (name, data) = events.last().unwrap();
        assert_eq!(name, "response.failed");
        assert_eq!(data["response"]["status"], "failed");
        assert_eq!(data["response"]["error"]["message"], "interrupted");
        assert_eq!(data["response"]["output"][0]["status"], "incomplete");
        assert!(!events.iter().any(|(n, _)| n == "response.completed"));
    }
}
