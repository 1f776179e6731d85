//! The rest of an answer once its first piece is ready: a small state machine that
//! turns provider pieces into answer events, ends the request's record exactly
//! once, and stores an answer that ended whole in the cache.
//!
//! When the serving provider breaks after text was sent (a cut, a stall, a
//! malformed chunk), the answer is never glued together from pieces:
//! 1. a provider that can truly continue a partial answer (a prefill) is asked
//!    to, and only its continuation is streamed on (`spliced`);
//! 2. otherwise, if the caller can replace what it has ([`OnBreak::Restart`]), the
//!    answer starts over on another provider behind a `Restarted` event
//!    (`restarted`);
//! 3. otherwise it ends with an explicit failure (`stream_failed`).
//!
//! Tool-call fragments are held until their source has finished the answer and
//! the calls add up, so a call is only ever passed on whole. Each source's usage
//! is the provider's own report or, failing that, the gateway's estimate.

use super::answer::AnswerEvent;
use super::bounds::{Bounded, Bounds};
use super::cache_key::PendingStore;
use super::cascade::{Cascade, CascadeRequest, Delivery, Opened};
use super::provider::{
    FinishReason, Piece, PieceStream, ProviderError, ServedModel, TimeoutKind, ToolCallDelta,
};
use super::recorder::Recorder;
use super::request::OnBreak;
use crate::shared::{AttemptOutcome, AttemptSummary, RequestStatus, Route, Usage, UsageSource};
use futures::{stream::BoxStream, StreamExt};
use std::collections::VecDeque;
use std::sync::Arc;
use std::time::Instant;

/// What the customer is told when a broken answer cannot be completed.
const INTERRUPTED: &str =
    "The answer was interrupted and could not be completed; what you see is incomplete.";

/// What the customer is told when the server stops before the answer ends.
const SHUTTING_DOWN: &str =
    "The service is restarting, so this answer was cut short; what you see is incomplete.";

/// The model the gateway names when the cache answered.
const CACHE_MODEL: &str = "chaosai-cache";
/// The model the gateway names when the last resort answered.
const LAST_RESORT_MODEL: &str = "chaosai-last-resort";

/// Where an answer's pieces come from.
pub(super) struct Source {
    /// Who serves it.
    pub route: Route,
    /// The model that produces it.
    pub model: String,
    /// Its `system_fingerprint`, when the provider sent one.
    pub fingerprint: Option<String>,
    /// The pieces ready now.
    pub head: Vec<Piece>,
    /// The pieces still to come.
    pub rest: PieceStream,
}

impl Source {
    /// An answer a provider has started.
    pub fn provider(route: Route, model: &str, opened: Opened) -> Self {
        let served = served_model(&opened.head);
        Self {
            route,
            model: served.map_or_else(|| model.to_string(), |s| s.model.clone()),
            fingerprint: served.and_then(|s| s.fingerprint.clone()),
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
        let model = match route {
            Route::Cache => CACHE_MODEL,
            _ => LAST_RESORT_MODEL,
        };
        Self {
            route,
            model: model.to_string(),
            fingerprint: None,
            head,
            rest: futures::stream::empty().boxed(),
        }
    }
}

/// The model a provider said answers, if its first pieces named one.
fn served_model(head: &[Piece]) -> Option<&ServedModel> {
    head.iter().find_map(|piece| match piece {
        Piece::Served(served) => Some(served),
        _ => None,
    })
}

/// What the current source of an answer has cost so far.
#[derive(Default)]
struct SourceCost {
    /// The provider's own report, if it sent one.
    reported: Option<Usage>,
    /// Characters it produced (text and tool-call arguments), for an estimate.
    chars: usize,
}

/// The usage of a whole answer, summed over its sources.
struct Bill {
    /// The estimate of the prompt, for sources that report none.
    prompt_estimate: u64,
    /// The sources that ended so far.
    total: Usage,
    /// Who counted them.
    source: Option<UsageSource>,
    /// The current source.
    current: SourceCost,
}

impl Bill {
    /// Ends the current source's count: its report, else the estimate, charged
    /// as `kind` says (a local answer sent no prompt anywhere).
    fn close(&mut self, route: &Route) -> Usage {
        let current = std::mem::take(&mut self.current);
        let completion = (current.chars as u64).div_ceil(4);
        let (usage, kind) = match (route, current.reported) {
            (Route::Cache, _) => (
                Usage {
                    prompt_tokens: 0,
                    completion_tokens: completion,
                },
                UsageSource::Cache,
            ),
            (Route::LastResort, _) => (
                Usage {
                    prompt_tokens: 0,
                    completion_tokens: completion,
                },
                UsageSource::LastResort,
            ),
            (Route::Provider(_), Some(reported)) => (reported, UsageSource::Provider),
            (Route::Provider(_), None) => (
                Usage {
                    prompt_tokens: self.prompt_estimate,
                    completion_tokens: completion,
                },
                UsageSource::Estimated,
            ),
        };
        self.total = self.total.plus(usage);
        self.source = Some(self.source.map_or(kind, |s| s.and(kind)));
        usage
    }
}

/// The answer in flight.
pub(super) struct Tail {
    /// Where a splice finds the next provider.
    cascade: Arc<Cascade>,
    /// The request, to ask the next provider with.
    request: CascadeRequest,
    /// When the whole answer must be over: a provider that keeps sending cannot
    /// hold the stream open beyond it, and a splice must keep it too.
    answer_deadline: Instant,
    /// Whether a broken answer may be continued elsewhere (not a pinned model).
    may_splice: bool,
    /// What a break that cannot be continued becomes.
    on_break: OnBreak,
    /// Whether the answer already started over once.
    restarted: bool,
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
    /// The current source's tool-call fragments, held until it finishes.
    fragments: Vec<ToolCallDelta>,
    /// Events ready to hand out before anything else (a finished answer's
    /// tool calls and its `Done`).
    queued: VecDeque<AnswerEvent>,
    /// What the answer cost so far.
    bill: Bill,
    /// Whether the cost is on the record.
    settled: bool,
    /// The request's record, ended when the answer ends.
    recorder: Recorder,
    /// The answer's deadline and the server's grace period.
    bounds: Bounds,
    /// Stores the answer if it ends whole from one source.
    pending_store: Option<PendingStore>,
    /// Set once the final event is out.
    done: bool,
}

impl Tail {
    /// The rest of `source`'s answer to `request`.
    pub fn new(
        cascade: Arc<Cascade>,
        (request, on_break, answer_deadline): (CascadeRequest, OnBreak, Instant),
        source: Source,
        (recorder, ending): (Recorder, tokio::sync::watch::Receiver<bool>),
        pending_store: Option<PendingStore>,
    ) -> Self {
        let may_splice = request.pinned.is_none() && source.route.provider_name().is_some();
        let prompt_chars: usize = request.caller_system.chars().count()
            + request
                .turns
                .iter()
                .map(|t| {
                    t.content.chars().count()
                        + t.tool_calls
                            .iter()
                            .map(|c| c.arguments.len())
                            .sum::<usize>()
                })
                .sum::<usize>();
        let image_tokens: u64 = request
            .turns
            .iter()
            .flat_map(|t| &t.images)
            .map(crate::shared::Image::estimated_tokens)
            .sum();
        Self {
            cascade,
            request,
            answer_deadline,
            may_splice,
            on_break,
            restarted: false,
            served: vec![source.route],
            sent: String::new(),
            head: source.head.into(),
            rest: source.rest,
            finish_reason: None,
            fragments: Vec::new(),
            queued: VecDeque::new(),
            bill: Bill {
                prompt_estimate: (prompt_chars as u64).div_ceil(4) + image_tokens,
                total: Usage::default(),
                source: None,
                current: SourceCost::default(),
            },
            settled: false,
            recorder,
            bounds: Bounds::new(tokio::time::Instant::from_std(answer_deadline), ending),
            pending_store,
            done: false,
        }
    }

    /// The answer as events. The state lives in a box: moved by value into and
    /// out of every step, the whole `Tail` was copied several times per chunk.
    pub fn into_events(self) -> BoxStream<'static, AnswerEvent> {
        futures::stream::unfold(Box::new(self), |mut tail| async move {
            let event = tail.next().await?;
            Some((event, tail))
        })
        .boxed()
    }

    async fn next(&mut self) -> Option<AnswerEvent> {
        if let Some(event) = self.queued.pop_front() {
            return Some(event);
        }
        if self.done {
            return None;
        }
        loop {
            let piece = match self.head.pop_front() {
                Some(piece) => Some(Ok(piece)),
                None => {
                    let next = match self.bounds.next(&mut self.rest).await {
                        Bounded::Next(next) => Some(next),
                        Bounded::PastDeadline => {
                            Some(Some(Err(ProviderError::Timeout(TimeoutKind::Total))))
                        }
                        Bounded::Ending => None,
                    };
                    let Some(next) = next else {
                        self.done = true;
                        self.settle();
                        self.recorder.finish(RequestStatus::StreamFailed).await;
                        return Some(AnswerEvent::Failed {
                            message: SHUTTING_DOWN.into(),
                        });
                    };
                    next
                }
            };
            // A source whose tool calls do not add up has broken like any other.
            let piece = match piece {
                None => match ToolCallDelta::assemble(&self.fragments) {
                    Ok(_) => None,
                    Err(err) => Some(Err(err)),
                },
                piece => piece,
            };
            let event = match piece {
                Some(Ok(Piece::Text(text))) => {
                    self.sent.push_str(&text);
                    // Counted once, for the bill and the record both.
                    let chars = text.chars().count();
                    self.bill.current.chars += chars;
                    self.recorder.answered(&text, chars);
                    AnswerEvent::Text(text)
                }
                Some(Ok(Piece::ToolCall(fragment))) => {
                    self.bill.current.chars += fragment.arguments.chars().count();
                    self.fragments.push(fragment);
                    continue;
                }
                Some(Ok(Piece::Usage(usage))) => {
                    self.bill.current.reported = Some(usage);
                    continue;
                }
                Some(Ok(Piece::Served(_))) => continue,
                Some(Ok(Piece::Finish(reason))) => {
                    self.finish_reason = Some(reason);
                    continue;
                }
                None => self.end().await,
                Some(Err(err)) => {
                    tracing::warn!(request_id = %self.recorder.id(), error = %err, "stream broke after tokens were sent");
                    match self.recover(&err).await {
                        Recovery::Continued => continue,
                        Recovery::Restarted(event) => event,
                        Recovery::Lost => {
                            self.done = true;
                            self.settle();
                            self.recorder.finish(RequestStatus::StreamFailed).await;
                            AnswerEvent::Failed {
                                message: INTERRUPTED.into(),
                            }
                        }
                    }
                }
            };
            return Some(event);
        }
    }

    /// The answer ended as its source said it would: its tool calls (if any)
    /// go out, then `Done` (queued behind the first of them).
    async fn end(&mut self) -> AnswerEvent {
        self.done = true;
        let status = if self.restarted {
            RequestStatus::Restarted
        } else if self.served.len() > 1 {
            RequestStatus::Spliced
        } else {
            RequestStatus::Ok
        };
        self.close_source();
        self.settle();
        let usage_source = self.bill.source.unwrap_or(UsageSource::Estimated);
        let finish_reason = self.finish_reason.unwrap_or(FinishReason::Stop);
        // Only an answer one source completed whole, as plain text that ended of
        // itself, is worth sharing: a cut (`length`, a stop sequence is caught by
        // the options) or a tool call would be wrong for the next asker.
        if let Some(pending) = self.pending_store.take() {
            if status == RequestStatus::Ok
                && finish_reason == FinishReason::Stop
                && self.fragments.is_empty()
            {
                pending.store(self.sent.clone());
            }
        }
        self.recorder.finish(status).await;
        self.queued.extend(
            std::mem::take(&mut self.fragments)
                .into_iter()
                .map(AnswerEvent::ToolCall),
        );
        self.queued.push_back(AnswerEvent::Done {
            finish_reason,
            served_by: self
                .served
                .iter()
                .map(Route::as_str)
                .collect::<Vec<_>>()
                .join(" → "),
            elapsed_ms: self.recorder.elapsed().as_millis() as u64,
            attempts: self.recorder.attempts().to_vec(),
            usage: self.bill.total,
            usage_source,
        });
        self.queued.pop_front().expect("Done was just queued")
    }

    /// Ends the current source's count and puts it on its attempt.
    fn close_source(&mut self) {
        let Some(route) = self.served.last().cloned() else {
            return;
        };
        let usage = self.bill.close(&route);
        if let Some(provider) = route.provider_name() {
            self.recorder.attempt_usage(provider, usage);
        }
    }

    /// Puts the answer's cost on its record, once, however it ended: what a
    /// source produced before a shutdown or a disconnect was paid for too.
    fn settle(&mut self) {
        if std::mem::replace(&mut self.settled, true) {
            return;
        }
        if self.bill.current.chars > 0 || self.bill.current.reported.is_some() {
            self.close_source();
        }
        let source = self.bill.source.unwrap_or(UsageSource::Estimated);
        self.recorder.usage(self.bill.total, source);
    }

    /// What follows a break: a true continuation, a restart, or nothing.
    async fn recover(&mut self, err: &ProviderError) -> Recovery {
        let broken = self
            .served
            .last()
            .and_then(Route::provider_name)
            .unwrap_or_default()
            .to_string();
        self.cascade.report_broken(&broken, err);
        // What the broken source produced was paid for; its calls were never sent.
        let usage = self.bill.close(&Route::provider(&broken));
        self.fragments.clear();
        self.recorder.add_attempts([AttemptSummary {
            provider: broken.clone(),
            outcome: AttemptOutcome::StreamBroken,
            status: None,
            latency_ms: self.recorder.elapsed().as_millis() as u64,
            breaker: None,
            usage: Some(usage),
        }]);
        if !self.may_splice {
            return Recovery::Lost;
        }
        let mut request = self.request.clone();
        request.skip = self
            .served
            .iter()
            .filter_map(|r| r.provider_name().map(str::to_string))
            .collect();
        // A continuation gets the usual time to its first token, within the
        // answer's own budget.
        let budget = Instant::now() + self.cascade.timeouts().deadline;
        request.deadline = Some(budget.min(self.answer_deadline));

        // 1. Only a provider that can truly continue is asked to.
        request.continuation = Some(self.sent.clone());
        match self.cascade.open(&request, Delivery::Streamed).await {
            Ok(served) => {
                tracing::info!(request_id = %self.recorder.id(), from = %broken, to = %served.provider.name(), "stream continued");
                self.recorder.add_attempts(served.attempts);
                self.served.push(Route::provider(served.provider.name()));
                self.take(served.answer);
                return Recovery::Continued;
            }
            Err(err) => self.recorder.add_attempts(err.attempts().iter().cloned()),
        }

        // 2. Start over, if the caller can replace what it has.
        if self.on_break != OnBreak::Restart || self.restarted {
            return Recovery::Lost;
        }
        request.continuation = None;
        match self.cascade.open(&request, Delivery::Streamed).await {
            Ok(served) => {
                tracing::info!(request_id = %self.recorder.id(), from = %broken, to = %served.provider.name(), "answer restarted");
                let route = Route::provider(served.provider.name());
                self.recorder.add_attempts(served.attempts);
                self.recorder.restarted(route.clone());
                self.restarted = true;
                self.sent.clear();
                self.served = vec![route.clone()];
                let model = served_model(&served.answer.head)
                    .map_or_else(|| served.provider.model().to_string(), |s| s.model.clone());
                self.take(served.answer);
                Recovery::Restarted(AnswerEvent::Restarted {
                    served_by: route,
                    model,
                })
            }
            Err(err) => {
                self.recorder.add_attempts(err.attempts().iter().cloned());
                Recovery::Lost
            }
        }
    }

    /// Makes `answer` the source of what follows.
    fn take(&mut self, answer: Opened) {
        self.head = answer.head.into();
        self.rest = answer.rest;
        self.finish_reason = None;
    }
}

impl Drop for Tail {
    /// The caller went away mid-answer: the record (written as the recorder
    /// drops, right after) still carries what was spent.
    fn drop(&mut self) {
        self.settle();
    }
}

/// What a break became.
enum Recovery {
    /// Another provider continues the text already sent.
    Continued,
    /// The answer starts over; this event tells the caller.
    Restarted(AnswerEvent),
    /// Nobody could do either.
    Lost,
}
