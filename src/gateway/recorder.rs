//! The record of one request: its audit row (and the chat page's turns), its
//! metrics and its live trace, kept while the answer runs and written exactly
//! once, when it ends or, if the caller goes away first, when it is dropped.

use super::events::EventBus;
use super::metrics::Metrics;
use crate::clock::SharedClock;
use crate::shared::{
    AttemptOutcome, AttemptSummary, ChatTurn, GatewayEvent, RequestStatus, Route, Surface, Trace,
    Usage, UsageSource,
};
use crate::store::audit::{AuditRecord, AuditWriter, MessageRecord};
use crate::store::RequestRecord;
use std::sync::Arc;
use std::time::{Duration, Instant};

/// What stored customer text becomes when redaction is on.
pub const REDACTED: &str = "[redacted]";

/// Where a request's record goes.
#[derive(Clone)]
pub(super) struct RecordSinks {
    /// Request rows and chat messages, batched and off the request path.
    pub audit: Option<AuditWriter>,
    /// Live traces.
    pub events: Arc<EventBus>,
    /// Request counts and latency.
    pub metrics: Arc<Metrics>,
    /// Timestamps.
    pub clock: SharedClock,
    /// Store `[redacted]` instead of customer text.
    pub redact: bool,
}

impl RecordSinks {
    /// Customer text as it may be stored.
    pub fn storable(&self, text: &str) -> String {
        if self.redact {
            REDACTED.to_string()
        } else {
            text.to_string()
        }
    }
}

/// The chat-page turns of one request, kept for the conversation history.
struct Transcript {
    conversation_id: String,
    question: String,
    answer: String,
}

/// Keeps the record of one request and writes it exactly once.
pub(super) struct Recorder {
    sinks: RecordSinks,
    transcript: Option<Transcript>,
    started: Instant,
    finished: bool,
    record: RequestRecord,
    /// Rows closed but not yet queued: if the answer's task is dropped while it
    /// waits for room, they are queued on the way out, never lost.
    unsent: Vec<AuditRecord>,
}

impl Recorder {
    /// Starts the record of `tenant`'s request from `surface` asking `question`.
    pub fn start(
        sinks: RecordSinks,
        (surface, stream): (Surface, bool),
        question: &str,
        conversation_id: Option<String>,
        tenant: &str,
    ) -> Self {
        // API callers keep their own transcripts; their conversation id only
        // groups their requests and tickets.
        let transcript = conversation_id
            .clone()
            .filter(|_| surface == Surface::Chat)
            .map(|id| Transcript {
                conversation_id: id,
                question: sinks.storable(question),
                answer: String::new(),
            });
        let record = RequestRecord {
            // Time-ordered (UUIDv7): each audit insert lands at the end of the id
            // indexes instead of on a random page, which kept the writer rewriting
            // several pages a request.
            id: format!("chatcmpl-{}", uuid::Uuid::now_v7().simple()),
            created_at_ms: sinks.clock.unix_ms(),
            surface,
            stream,
            served_by: None,
            status: RequestStatus::Ok,
            latency_ms: 0,
            overhead_ms: 0.0,
            question_chars: question.chars().count(),
            answer_chars: 0,
            attempts: Vec::new(),
            conversation_id,
            cache_similarity: None,
            tenant: tenant.to_string(),
            usage: Usage::default(),
            usage_source: None,
        };
        Self {
            sinks,
            transcript,
            started: Instant::now(),
            finished: false,
            record,
            unsent: Vec::new(),
        }
    }

    /// The request's id.
    pub fn id(&self) -> &str {
        &self.record.id
    }

    /// When the request arrived (Unix ms).
    pub fn created_at_ms(&self) -> i64 {
        self.record.created_at_ms
    }

    /// Time since the request arrived.
    pub fn elapsed(&self) -> Duration {
        self.started.elapsed()
    }

    /// Names who serves the answer, with the attempts so far and the gateway's own
    /// time up to now (everything but `provider_wait`).
    pub fn serving(
        &mut self,
        route: Route,
        attempts: Vec<AttemptSummary>,
        provider_wait: Duration,
    ) -> Duration {
        let overhead = self.started.elapsed().saturating_sub(provider_wait);
        self.record.served_by = Some(route);
        self.record.attempts = attempts;
        self.record.overhead_ms = overhead.as_secs_f64() * 1000.0;
        overhead
    }

    /// Records the similarity of the cache entry that answered.
    pub fn cache_hit(&mut self, similarity: f32) {
        self.record.cache_similarity = Some(f64::from(similarity));
    }

    /// The similarity of the cache entry that answered, if one did.
    pub fn cache_similarity(&self) -> Option<f64> {
        self.record.cache_similarity
    }

    /// Appends text sent to the customer, `chars` characters long.
    pub fn answered(&mut self, text: &str, chars: usize) {
        self.record.answer_chars += chars;
        if let Some(t) = &mut self.transcript {
            t.answer.push_str(text);
        }
    }

    /// Forgets the text sent so far: the answer starts over.
    pub fn restarted(&mut self, route: Route) {
        self.record.answer_chars = 0;
        self.record.served_by = Some(route);
        if let Some(t) = &mut self.transcript {
            t.answer.clear();
        }
    }

    /// Records what the provider that served (the last of its successful
    /// attempts) cost.
    pub fn attempt_usage(&mut self, provider: &str, usage: Usage) {
        if let Some(attempt) = self
            .record
            .attempts
            .iter_mut()
            .rev()
            .find(|a| a.provider == provider && a.outcome == AttemptOutcome::Ok)
        {
            attempt.usage = Some(usage);
        }
    }

    /// Records what the whole answer cost, and who counted it.
    pub fn usage(&mut self, usage: Usage, source: UsageSource) {
        self.record.usage = usage;
        self.record.usage_source = Some(source);
    }

    /// Every attempt so far.
    pub fn attempts(&self) -> &[AttemptSummary] {
        &self.record.attempts
    }

    /// Adds attempts made after the answer started (a splice).
    pub fn add_attempts(&mut self, attempts: impl IntoIterator<Item = AttemptSummary>) {
        self.record.attempts.extend(attempts);
    }

    /// Ends the record: counts the request, publishes its trace, and writes its
    /// rows, waiting for room in the audit queue (backpressure) if it is full.
    /// Only the first ending counts.
    pub async fn finish(&mut self, status: RequestStatus) {
        let (Some(audit), Some(rows)) = (self.sinks.audit.clone(), self.close(status)) else {
            return;
        };
        self.unsent = rows;
        while let Some(row) = self.unsent.first().cloned() {
            audit.write(row).await;
            self.unsent.remove(0);
        }
    }

    /// Counts the request and publishes its trace; returns its audit rows, or
    /// `None` if it was already closed.
    fn close(&mut self, status: RequestStatus) -> Option<Vec<AuditRecord>> {
        if std::mem::replace(&mut self.finished, true) {
            return None;
        }
        let latency = self.started.elapsed();
        self.record.status = status;
        self.record.latency_ms = latency.as_millis() as u64;
        let sinks = &self.sinks;
        sinks
            .metrics
            .request(self.record.served_by.as_ref(), status, latency);
        sinks
            .metrics
            .tokens(self.record.served_by.as_ref(), self.record.usage);
        sinks.events.publish(GatewayEvent::RequestTrace(Trace {
            id: self.record.id.clone(),
            served_by: self.record.served_by.clone(),
            attempts: self.record.attempts.clone(),
            latency_ms: self.record.latency_ms,
            status,
            at_ms: sinks.clock.unix_ms(),
            replica: None,
        }));
        sinks.audit.as_ref()?;
        let mut rows = Vec::with_capacity(3);
        if let Some(t) = self.transcript.take() {
            let answer = sinks.storable(&t.answer);
            for turn in [ChatTurn::user(t.question), ChatTurn::assistant(answer)] {
                rows.push(AuditRecord::Message(MessageRecord {
                    at_ms: self.record.created_at_ms,
                    conversation_id: t.conversation_id.clone(),
                    request_id: self.record.id.clone(),
                    turn,
                }));
            }
        }
        rows.push(AuditRecord::Request(Box::new(self.record.clone())));
        Some(rows)
    }

    /// Ends the record of a request the cascade refused, with its attempts.
    pub async fn rejected(mut self, attempts: &[AttemptSummary]) {
        self.record.attempts = attempts.to_vec();
        self.finish(RequestStatus::InvalidRequest).await;
    }
}

impl Drop for Recorder {
    /// The caller went away before the answer ended: the record is still kept,
    /// queued without waiting (a drop cannot wait).
    fn drop(&mut self) {
        let Some(audit) = self.sinks.audit.clone() else {
            return;
        };
        let mut rows = std::mem::take(&mut self.unsent);
        rows.extend(
            self.close(RequestStatus::ClientDisconnected)
                .into_iter()
                .flatten(),
        );
        for row in rows {
            audit.enqueue(row);
        }
    }
}
