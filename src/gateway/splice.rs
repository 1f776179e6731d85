//! The rest of an answer once its first piece is ready: a small state machine that
//! turns provider pieces into answer events, ends the request's record exactly
//! once, and stores an answer that ended whole in the cache. When the serving
//! provider breaks after text was sent, the next provider is asked to continue
//! the text already sent, so the customer sees one uninterrupted reply; when none
//! can, the answer ends with an explicit failure, never as if it were whole.

use super::answer::AnswerEvent;
use super::cache_key::PendingStore;
use super::cascade::{Cascade, CascadeRequest, Delivery, Opened};
use super::provider::{FinishReason, Piece, PieceStream, ProviderError};
use super::recorder::Recorder;
use crate::shared::{AttemptOutcome, AttemptSummary, RequestStatus, Route};
use futures::{stream::BoxStream, StreamExt};
use std::collections::VecDeque;
use std::sync::Arc;
use std::time::Instant;

/// What the customer is told when a broken answer cannot be completed.
const INTERRUPTED: &str =
    "The answer was interrupted and could not be completed; what you see is incomplete.";

/// Where an answer's pieces come from.
pub(super) struct Source {
    /// Who serves it.
    pub route: Route,
    /// The pieces ready now.
    pub head: Vec<Piece>,
    /// The pieces still to come.
    pub rest: PieceStream,
}

impl Source {
    /// An answer a provider has started.
    pub fn provider(route: Route, opened: Opened) -> Self {
        Self {
            route,
            head: opened.head,
            rest: opened.rest,
        }
    }

    /// A whole answer the gateway has itself (the cache, the last resort): one
    /// piece for a whole delivery, token by token for a stream, so it looks like
    /// any provider's answer.
    pub fn local(route: Route, text: String, delivery: Delivery) -> Self {
        let mut head: Vec<Piece> = match delivery {
            Delivery::Whole => vec![Piece::Text(text)],
            Delivery::Streamed => crate::knowledge::tokens(&text)
                .into_iter()
                .map(Piece::Text)
                .collect(),
        };
        head.push(Piece::Finish(FinishReason::Stop));
        Self {
            route,
            head,
            rest: futures::stream::empty().boxed(),
        }
    }
}

/// The answer in flight.
pub(super) struct Tail {
    /// Where a splice finds the next provider.
    cascade: Arc<Cascade>,
    /// The request, to ask the next provider with.
    request: CascadeRequest,
    /// The request's overall deadline, which a splice must keep too.
    deadline: Instant,
    /// Whether a broken answer may be continued elsewhere (not a pinned model).
    may_splice: bool,
    /// Who served parts of this answer, in order.
    served: Vec<Route>,
    /// Everything sent to the customer so far.
    sent: String,
    /// Pieces ready to hand out.
    head: VecDeque<Piece>,
    /// The current source's pieces still to come.
    rest: PieceStream,
    /// The finish reason the current source gave.
    finish_reason: Option<FinishReason>,
    /// The request's record, ended when the answer ends.
    recorder: Recorder,
    /// Stores the answer if it ends whole from one source.
    pending_store: Option<PendingStore>,
    /// Set once the final event is out.
    done: bool,
}

impl Tail {
    /// The rest of `source`'s answer to `request`.
    pub fn new(
        cascade: Arc<Cascade>,
        request: CascadeRequest,
        deadline: Instant,
        source: Source,
        recorder: Recorder,
        pending_store: Option<PendingStore>,
    ) -> Self {
        let may_splice = request.pinned.is_none() && source.route.provider_name().is_some();
        Self {
            cascade,
            request,
            deadline,
            may_splice,
            served: vec![source.route],
            sent: String::new(),
            head: source.head.into(),
            rest: source.rest,
            finish_reason: None,
            recorder,
            pending_store,
            done: false,
        }
    }

    /// The answer as events.
    pub fn into_events(self) -> BoxStream<'static, AnswerEvent> {
        futures::stream::unfold(self, Tail::next).boxed()
    }

    async fn next(mut self) -> Option<(AnswerEvent, Self)> {
        if self.done {
            return None;
        }
        loop {
            let piece = match self.head.pop_front() {
                Some(piece) => Some(Ok(piece)),
                None => self.rest.next().await,
            };
            let event = match piece {
                Some(Ok(Piece::Text(text))) => {
                    self.sent.push_str(&text);
                    self.recorder.answered(&text);
                    AnswerEvent::Text(text)
                }
                Some(Ok(Piece::Finish(reason))) => {
                    self.finish_reason = Some(reason);
                    continue;
                }
                None => self.end(),
                Some(Err(err)) => {
                    tracing::warn!(request_id = %self.recorder.id(), error = %err, "stream broke after tokens were sent");
                    if self.splice(&err).await {
                        continue;
                    }
                    self.done = true;
                    self.recorder.finish(RequestStatus::StreamFailed);
                    AnswerEvent::Failed {
                        message: INTERRUPTED.into(),
                    }
                }
            };
            return Some((event, self));
        }
    }

    /// The answer ended as its source said it would.
    fn end(&mut self) -> AnswerEvent {
        self.done = true;
        let status = if self.served.len() > 1 {
            RequestStatus::Spliced
        } else {
            RequestStatus::Ok
        };
        // Only an answer one source completed whole is worth sharing.
        if let Some(pending) = self.pending_store.take() {
            if status == RequestStatus::Ok {
                pending.store(self.sent.clone());
            }
        }
        self.recorder.finish(status);
        AnswerEvent::Done {
            finish_reason: self.finish_reason.unwrap_or(FinishReason::Stop),
            served_by: self
                .served
                .iter()
                .map(Route::as_str)
                .collect::<Vec<_>>()
                .join(" → "),
            elapsed_ms: self.recorder.elapsed().as_millis() as u64,
            attempts: self.recorder.attempts().to_vec(),
        }
    }

    /// Asks the next provider to continue the answer; `true` once one has started.
    async fn splice(&mut self, err: &ProviderError) -> bool {
        let broken = self
            .served
            .last()
            .and_then(Route::provider_name)
            .unwrap_or_default()
            .to_string();
        self.cascade.report_broken(&broken, err);
        self.recorder.add_attempts([AttemptSummary {
            provider: broken.clone(),
            outcome: AttemptOutcome::StreamBroken,
            status: None,
            latency_ms: self.recorder.elapsed().as_millis() as u64,
            breaker: None,
        }]);
        if !self.may_splice {
            return false;
        }
        let mut request = self.request.clone();
        request.continuation = Some(self.sent.clone());
        request.skip = self
            .served
            .iter()
            .filter_map(|r| r.provider_name().map(str::to_string))
            .collect();
        request.deadline = Some(self.deadline);
        match self.cascade.open(&request, Delivery::Streamed).await {
            Ok(served) => {
                tracing::info!(request_id = %self.recorder.id(), from = %broken, to = %served.provider.name(), "stream spliced");
                self.recorder.add_attempts(served.attempts);
                self.served.push(Route::provider(served.provider.name()));
                self.head = served.answer.head.into();
                self.rest = served.answer.rest;
                self.finish_reason = None;
                true
            }
            Err(err) => {
                self.recorder.add_attempts(err.attempts().iter().cloned());
                false
            }
        }
    }
}
