//! What the gateway hands back: an answer that has started, whoever serves it,
//! as a stream of events; and the same answer collected whole. Both API shapes
//! and the chat page are thin ends of this one type.

use super::provider::{FinishReason, ToolCallDelta};
use crate::shared::{AttemptSummary, Route, ToolCall, Usage, UsageSource};
use futures::{stream::BoxStream, StreamExt};
use std::time::Duration;
use tokio::sync::mpsc;

/// Batches of events read ahead of a slow reader before it counts as not reading.
const READ_AHEAD: usize = 8;

/// Most events handed over at once: the events a provider's read brought in
/// together travel together, so the client gets them in one write, not one
/// write and one thread hand-off per event.
const MAX_BATCH: usize = 32;

/// One event of an answer.
#[derive(Clone, Debug, PartialEq)]
pub enum AnswerEvent {
    /// The next piece of the answer's text.
    Text(String),
    /// A fragment of a tool call. A call's fragments are only ever sent once the
    /// provider has finished the answer, so a call cut short is never passed on.
    ToolCall(ToolCallDelta),
    /// The answer broke and is starting over: everything sent so far must be
    /// replaced by the text that follows.
    Restarted {
        /// Who serves the new answer.
        served_by: Route,
        /// Its model.
        model: String,
    },
    /// The answer is complete.
    Done {
        /// Why the answer ended.
        finish_reason: FinishReason,
        /// Everyone who served a part of it, in order (`claude → gpt` after a splice).
        served_by: String,
        /// Time from the question reaching the gateway to the last piece.
        elapsed_ms: u64,
        /// Every provider attempt the request made, in order.
        attempts: Vec<AttemptSummary>,
        /// What the answer cost.
        usage: Usage,
        /// Who counted it.
        usage_source: UsageSource,
    },
    /// The answer broke and could not be completed: what was sent is not whole.
    Failed {
        /// A message fit to show the customer.
        message: String,
    },
}

/// An answer whose first piece is ready, so its route can be named before
/// anything is sent.
pub struct Answer {
    /// The request's id.
    pub id: String,
    /// Who serves it.
    pub served_by: Route,
    /// The model that serves it (as the provider named it when it did, else the
    /// configured model id; or what the gateway itself answered with:
    /// `chaosai-cache`, `chaosai-last-resort`).
    pub model: String,
    /// OpenAI's `system_fingerprint` of the serving model, when it sent one.
    pub fingerprint: Option<String>,
    /// Time spent in the gateway itself up to this point, excluding waits on providers.
    pub overhead: Duration,
    /// The ticket the last resort opened, if it did.
    pub ticket: Option<String>,
    /// Similarity of the cache entry that answered, if the cache did.
    pub cache_similarity: Option<f64>,
    /// `Text` events, then exactly one `Done` or `Failed`.
    pub events: BoxStream<'static, AnswerEvent>,
}

/// An answer collected whole.
#[derive(Debug)]
pub struct Completed {
    /// The request's id.
    pub id: String,
    /// Who served it.
    pub served_by: Route,
    /// The model that served it.
    pub model: String,
    /// OpenAI's `system_fingerprint`, when the provider sent one.
    pub fingerprint: Option<String>,
    /// The answer's text.
    pub text: String,
    /// The tools the model called.
    pub tool_calls: Vec<ToolCall>,
    /// Why it ended; `None` if it broke (never for a whole answer from one source).
    pub finish_reason: Option<FinishReason>,
    /// What it cost, and who counted it.
    pub usage: (Usage, UsageSource),
    /// Every attempt, the serving one last.
    pub attempts: Vec<AttemptSummary>,
    /// Time spent in the gateway itself, excluding waits on providers.
    pub overhead: Duration,
    /// The ticket the last resort opened, if it did.
    pub ticket: Option<String>,
    /// Similarity of the cache entry that answered, if the cache did.
    pub cache_similarity: Option<f64>,
}

/// Collects, after `first`, the events that are ready now. A provider's read
/// often holds many pieces, but the HTTP client hands its body over one chunk at
/// a time from its own task; yielding to it (at most twice in a row without a new
/// event) gathers them, so they cross to the reader and the client's socket in
/// one hand-off and one write instead of one each. Costs microseconds, never a wait.
async fn gather(
    first: AnswerEvent,
    events: &mut futures::stream::Fuse<BoxStream<'static, AnswerEvent>>,
) -> Vec<AnswerEvent> {
    let mut batch = vec![first];
    let mut idle = 0;
    while batch.len() < MAX_BATCH && idle < 2 {
        match futures::poll!(events.next()) {
            std::task::Poll::Ready(Some(event)) => {
                batch.push(event);
                idle = 0;
            }
            std::task::Poll::Ready(None) => break,
            std::task::Poll::Pending => {
                tokio::task::yield_now().await;
                idle += 1;
            }
        }
    }
    batch
}

impl Answer {
    /// The same answer for a reader that may stop reading (a client whose socket
    /// is full): if it takes no event for `within`, the answer is abandoned, so the
    /// provider's connection is released instead of held as long as the client
    /// likes. The record then ends as a disconnected client's.
    pub fn abandon_if_unread(mut self, within: Duration) -> Self {
        let (tx, mut rx) = mpsc::channel::<Vec<AnswerEvent>>(READ_AHEAD);
        let events = std::mem::replace(&mut self.events, futures::stream::empty().boxed());
        let mut events = events.fuse();
        tokio::spawn(async move {
            while let Some(first) = events.next().await {
                let batch = gather(first, &mut events).await;
                // Dropping `events` here ends the provider's stream and the record.
                if tx.send_timeout(batch, within).await.is_err() {
                    return;
                }
            }
        });
        self.events = futures::stream::poll_fn(move |cx| rx.poll_recv(cx))
            .flat_map(futures::stream::iter)
            .boxed();
        self
    }

    /// Reads the answer to its end.
    pub async fn collect(self) -> Completed {
        let mut text = String::new();
        let mut fragments = Vec::new();
        let mut finish_reason = None;
        let mut attempts = Vec::new();
        let mut usage = (Usage::default(), UsageSource::Estimated);
        let mut events = self.events;
        while let Some(event) = events.next().await {
            match event {
                AnswerEvent::Text(piece) => text.push_str(&piece),
                AnswerEvent::ToolCall(fragment) => fragments.push(fragment),
                AnswerEvent::Restarted { .. } => {
                    text.clear();
                    fragments.clear();
                }
                AnswerEvent::Done {
                    finish_reason: reason,
                    attempts: all,
                    usage: cost,
                    usage_source,
                    ..
                } => {
                    finish_reason = Some(reason);
                    attempts = all;
                    usage = (cost, usage_source);
                }
                AnswerEvent::Failed { .. } => {}
            }
        }
        Completed {
            id: self.id,
            served_by: self.served_by,
            model: self.model,
            fingerprint: self.fingerprint,
            text,
            // The fragments were checked whole before they were sent.
            tool_calls: ToolCallDelta::assemble(&fragments).unwrap_or_default(),
            finish_reason,
            usage,
            attempts,
            overhead: self.overhead,
            ticket: self.ticket,
            cache_similarity: self.cache_similarity,
        }
    }
}
