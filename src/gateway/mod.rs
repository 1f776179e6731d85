//! The gateway core: one customer question in, one answer out, always.
//!
//! [`Gateway`] validates a conversation, runs it through the [`Cascade`] of
//! providers behind their breakers, falls back to the [`last_resort`] when none
//! can answer, splices a broken stream onto the next provider, and keeps the audit
//! row, the metrics and the live trace of every request. It knows nothing of HTTP
//! servers or the UI: the OpenAI-compatible API and the chat page's server
//! function both call it.

pub mod breaker;
pub mod cascade;
pub mod events;
pub mod last_resort;
pub mod metrics;
pub mod prompt;
pub mod provider;

use crate::cache::{semantic, SemanticCache};
use crate::knowledge;
use crate::shared::{AttemptSummary, ChatEvent, ChatTurn, GatewayEvent, Role};
use crate::store::audit::{AuditRecord, AuditWriter};
use crate::store::{RequestRecord, Store, Ticket};
use cascade::{Cascade, CascadeError, CascadeRequest};
use events::{now_ms, EventBus};
use futures::{stream::BoxStream, StreamExt};
use metrics::Metrics;
use std::sync::Arc;
use std::time::{Duration, Instant};

/// The route name of answers from the last resort.
pub const LAST_RESORT: &str = "last-resort";

/// The route name of answers from the semantic cache.
pub const CACHE: &str = "cache";

/// Where a question's answer lives in the cache.
#[derive(Clone, Debug)]
struct CacheKey {
    scope: String,
    question: String,
}

/// What stored customer text becomes when redaction is on.
pub const REDACTED: &str = "[redacted]";

/// The limits that apply to attempts and to whole requests.
#[derive(Clone, Copy, Debug)]
pub struct Timeouts {
    /// From sending a request to a provider to its response head.
    pub first_byte: Duration,
    /// From the response head to the first content token of a stream.
    pub first_token: Duration,
    /// Longest silence between two chunks.
    pub stall: Duration,
    /// One whole attempt (a non-streamed answer, or a stream up to its first token).
    pub attempt: Duration,
    /// One whole request across all attempts.
    pub deadline: Duration,
}

/// Which surface a request came through; kept in the audit.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Surface {
    /// The customer chat page.
    Chat,
    /// The OpenAI-compatible API.
    Api,
    /// The built-in synthetic traffic of demos.
    Traffic,
}

impl Surface {
    fn as_str(self) -> &'static str {
        match self {
            Surface::Chat => "chat",
            Surface::Api => "api",
            Surface::Traffic => "traffic",
        }
    }
}

/// A question for the gateway: a whole conversation, the customer's turn last.
#[derive(Clone, Debug)]
pub struct GatewayRequest {
    /// Every turn, system turns included, oldest first.
    pub turns: Vec<ChatTurn>,
    /// A provider's name to pin the request to it; `None` runs the cascade.
    pub pinned: Option<String>,
    /// Caller's answer size limit.
    pub max_tokens: Option<u32>,
    /// Caller's sampling temperature.
    pub temperature: Option<f32>,
    /// Where the request came from.
    pub surface: Surface,
    /// The chat page's conversation id; its turns are kept for the chat history.
    pub conversation_id: Option<String>,
    /// Who is asking (a tenant); cached answers never cross tenants.
    pub tenant: String,
    /// Whether the cache may answer (and store the answer).
    pub use_cache: bool,
}

/// Why the gateway returned no answer: only ever the caller's own mistake.
#[derive(Debug, thiserror::Error)]
pub enum GatewayError {
    /// The conversation itself is unusable; the message names the problem.
    #[error("{0}")]
    BadRequest(String),
    /// The caller pinned a model that no provider serves.
    #[error("unknown model {0:?}")]
    UnknownModel(String),
    /// A provider judged the request invalid; no other provider would accept it either.
    #[error("{provider} rejected the request: {message}")]
    Rejected {
        /// Who rejected it.
        provider: String,
        /// The provider's status, passed on to the caller.
        status: u16,
        /// The provider's reason.
        message: String,
    },
}

/// A whole answer.
#[derive(Debug)]
pub struct Completed {
    /// The request's id.
    pub id: String,
    /// Who served it: a provider or [`LAST_RESORT`].
    pub served_by: String,
    /// The answer's text.
    pub text: String,
    /// Why the provider stopped.
    pub finish_reason: String,
    /// Every attempt, the serving one last.
    pub attempts: Vec<AttemptSummary>,
    /// Time spent in the gateway itself, excluding waits on providers.
    pub overhead: Duration,
    /// The ticket the last resort opened, if it did.
    pub ticket: Option<String>,
    /// Similarity of the cache entry that answered, if the cache did.
    pub cache_similarity: Option<f64>,
}

/// A streamed answer whose first token is ready.
pub struct Streaming {
    /// The request's id.
    pub id: String,
    /// Who is serving it: a provider or [`LAST_RESORT`].
    pub served_by: String,
    /// Gateway time up to the first token, excluding waits on providers.
    pub overhead: Duration,
    /// The ticket the last resort opened, if it did.
    pub ticket: Option<String>,
    /// Similarity of the cache entry that answered, if the cache did.
    pub cache_similarity: Option<f64>,
    /// `Delta` events, then exactly one `Done` or `Failed`.
    pub events: BoxStream<'static, ChatEvent>,
}

/// The gateway: a cascade of providers, the last resort, and the record of every request.
pub struct Gateway {
    /// Providers, their breakers and their policy.
    cascade: Arc<Cascade>,
    /// Where tickets go; `None` in tests that do not need them.
    store: Option<Store>,
    /// Where request rows and chat messages go, batched and off the request path.
    audit: Option<AuditWriter>,
    /// Store "[redacted]" instead of customer text.
    redact: bool,
    /// Layer 0; `None` when disabled.
    cache: Option<Arc<SemanticCache>>,
    /// Live events (transitions, request traces).
    events: Arc<EventBus>,
    /// Prometheus metrics.
    metrics: Arc<Metrics>,
}

impl Gateway {
    /// Creates a gateway over `cascade`, sharing its event bus and metrics.
    pub fn new(
        cascade: Cascade,
        store: Option<Store>,
        events: Arc<EventBus>,
        metrics: Arc<Metrics>,
    ) -> Self {
        Self {
            cascade: Arc::new(cascade),
            store,
            audit: None,
            redact: false,
            cache: None,
            events,
            metrics,
        }
    }

    /// Audits requests (and chat messages, redacted if asked) through `audit`.
    pub fn with_audit(mut self, audit: Option<AuditWriter>, redact: bool) -> Self {
        self.audit = audit;
        self.redact = redact;
        self
    }

    /// Answers from (and stores into) `cache`.
    pub fn with_cache(mut self, cache: Option<Arc<SemanticCache>>) -> Self {
        self.cache = cache;
        self
    }

    /// The cache, for its admin API and metrics.
    pub fn cache(&self) -> Option<&Arc<SemanticCache>> {
        self.cache.as_ref()
    }

    /// Customer text as it may be stored.
    fn storable(&self, text: &str) -> String {
        if self.redact {
            REDACTED.to_string()
        } else {
            text.to_string()
        }
    }

    /// The cascade, for listing providers and breakers.
    pub fn cascade(&self) -> &Cascade {
        &self.cascade
    }

    /// The live event bus.
    pub fn events(&self) -> &EventBus {
        &self.events
    }

    /// The metrics registry.
    pub fn metrics(&self) -> &Metrics {
        &self.metrics
    }

    /// Whether `name` is a configured provider.
    pub fn has_provider(&self, name: &str) -> bool {
        self.cascade.providers().any(|p| p.name() == name)
    }

    /// Answers in one piece: from the cache, a provider, or the last resort.
    pub async fn complete(&self, request: GatewayRequest) -> Result<Completed, GatewayError> {
        let (cascade_request, mut recorder) = self.prepare(&request, false)?;
        let key = self.cache_key(&request, &cascade_request);
        if let Some(hit) = self.cache_lookup(key.as_ref()).await {
            recorder.record.cache_similarity = Some(f64::from(hit.similarity));
            return Ok(self.answered_locally(recorder, CACHE, hit.answer, Vec::new(), None));
        }
        match self.cascade.complete(&cascade_request).await {
            Ok(answer) => {
                let overhead = recorder
                    .started
                    .elapsed()
                    .saturating_sub(answer.provider_wait);
                recorder.record.served_by = Some(answer.served_by.clone());
                recorder.record.attempts = answer.attempts.clone();
                recorder.record.answer_chars = answer.value.text.chars().count();
                recorder.keep_answer(&answer.value.text);
                recorder.record.overhead_ms = overhead.as_secs_f64() * 1000.0;
                recorder.finish("ok");
                if let Some(key) = key {
                    self.remember_later(key, answer.value.text.clone());
                }
                Ok(Completed {
                    id: recorder.record.id.clone(),
                    served_by: answer.served_by,
                    text: answer.value.text,
                    finish_reason: answer.value.finish_reason,
                    attempts: answer.attempts,
                    overhead,
                    ticket: None,
                    cache_similarity: None,
                })
            }
            Err(CascadeError::Exhausted { attempts }) => {
                let (text, ticket) = self
                    .last_resort(&cascade_request, &attempts, &mut recorder)
                    .await;
                Ok(self.answered_locally(recorder, LAST_RESORT, text, attempts, ticket))
            }
            Err(err) => Err(recorder.reject(err)),
        }
    }

    /// A whole answer that no provider produced (the cache or the last resort).
    fn answered_locally(
        &self,
        mut recorder: Recorder,
        route: &str,
        text: String,
        attempts: Vec<AttemptSummary>,
        ticket: Option<String>,
    ) -> Completed {
        let overhead = recorder
            .started
            .elapsed()
            .saturating_sub(provider_time(&attempts));
        recorder.record.attempts = attempts.clone();
        recorder.record.answer_chars = text.chars().count();
        recorder.keep_answer(&text);
        recorder.record.served_by = Some(route.into());
        recorder.record.overhead_ms = overhead.as_secs_f64() * 1000.0;
        recorder.finish("ok");
        Completed {
            id: recorder.record.id.clone(),
            served_by: route.into(),
            text,
            finish_reason: "stop".into(),
            attempts,
            overhead,
            ticket,
            cache_similarity: recorder.record.cache_similarity,
        }
    }

    /// Answers as a stream. Returns once the answer's first token is ready (from
    /// the cache, a provider, or the last resort), so the caller can name the
    /// route before sending anything.
    pub async fn stream(&self, request: GatewayRequest) -> Result<Streaming, GatewayError> {
        let (cascade_request, mut recorder) = self.prepare(&request, true)?;
        let deadline = recorder.started + self.cascade.timeouts().deadline;
        let key = self.cache_key(&request, &cascade_request);
        if let Some(hit) = self.cache_lookup(key.as_ref()).await {
            recorder.record.cache_similarity = Some(f64::from(hit.similarity));
            return Ok(self.streamed_locally(
                recorder,
                cascade_request,
                deadline,
                CACHE,
                hit.answer,
                Vec::new(),
                None,
            ));
        }
        match self.cascade.stream(&cascade_request).await {
            Ok(answer) => {
                let overhead = recorder
                    .started
                    .elapsed()
                    .saturating_sub(answer.provider_wait);
                recorder.record.served_by = Some(answer.served_by.clone());
                recorder.record.attempts = answer.attempts;
                recorder.record.overhead_ms = overhead.as_secs_f64() * 1000.0;
                let id = recorder.record.id.clone();
                let (first, rest) = answer.value;
                let mut tail = Tail::new(
                    self.cascade.clone(),
                    cascade_request,
                    deadline,
                    &answer.served_by,
                    first,
                    rest,
                    recorder,
                );
                tail.remember = key.and_then(|key| Some((self.cache.clone()?, key)));
                Ok(Streaming {
                    id,
                    served_by: answer.served_by,
                    overhead,
                    ticket: None,
                    cache_similarity: None,
                    events: futures::stream::unfold(tail, Tail::next).boxed(),
                })
            }
            Err(CascadeError::Exhausted { attempts }) => {
                let (text, ticket) = self
                    .last_resort(&cascade_request, &attempts, &mut recorder)
                    .await;
                Ok(self.streamed_locally(
                    recorder,
                    cascade_request,
                    deadline,
                    LAST_RESORT,
                    text,
                    attempts,
                    ticket,
                ))
            }
            Err(err) => Err(recorder.reject(err)),
        }
    }

    /// A streamed answer that no provider produces (the cache or the last resort),
    /// in the same shape as a provider's.
    #[allow(clippy::too_many_arguments)]
    fn streamed_locally(
        &self,
        mut recorder: Recorder,
        request: CascadeRequest,
        deadline: Instant,
        route: &str,
        text: String,
        attempts: Vec<AttemptSummary>,
        ticket: Option<String>,
    ) -> Streaming {
        let overhead = recorder
            .started
            .elapsed()
            .saturating_sub(provider_time(&attempts));
        recorder.record.attempts = attempts;
        recorder.record.served_by = Some(route.into());
        recorder.record.overhead_ms = overhead.as_secs_f64() * 1000.0;
        let id = recorder.record.id.clone();
        let cache_similarity = recorder.record.cache_similarity;
        let mut tokens = knowledge::tokens(&text).into_iter();
        let first = tokens.next().unwrap_or_default();
        let rest = futures::stream::iter(tokens.map(Ok).collect::<Vec<_>>()).boxed();
        let tail = Tail::new(
            self.cascade.clone(),
            request,
            deadline,
            route,
            first,
            rest,
            recorder,
        );
        Streaming {
            id,
            served_by: route.into(),
            overhead,
            ticket,
            cache_similarity,
            events: futures::stream::unfold(tail, Tail::next).boxed(),
        }
    }

    /// Where a request's answer would live in the cache, if it may use the cache.
    fn cache_key(
        &self,
        request: &GatewayRequest,
        cascade_request: &CascadeRequest,
    ) -> Option<CacheKey> {
        self.cache.as_ref()?;
        if !request.use_cache {
            return None;
        }
        let (question, before) = cascade_request.turns.split_last()?;
        Some(CacheKey {
            scope: semantic::scope(
                &request.tenant,
                request.pinned.as_deref().unwrap_or("chaosai"),
                &cascade_request.caller_system,
                before,
            ),
            question: question.content.clone(),
        })
    }

    async fn cache_lookup(&self, key: Option<&CacheKey>) -> Option<crate::cache::Hit> {
        let (cache, key) = (self.cache.as_ref()?, key?);
        cache.lookup(&key.scope, &key.question).await
    }

    /// Stores a provider's completed answer after the customer has it.
    fn remember_later(&self, key: CacheKey, answer: String) {
        if let Some(cache) = self.cache.clone() {
            tokio::spawn(async move { cache.remember(&key.scope, &key.question, &answer).await });
        }
    }

    /// The last resort's reply; opens and stores a ticket when it apologises.
    async fn last_resort(
        &self,
        request: &CascadeRequest,
        attempts: &[AttemptSummary],
        recorder: &mut Recorder,
    ) -> (String, Option<String>) {
        let question = request
            .turns
            .last()
            .map(|t| t.content.as_str())
            .unwrap_or_default();
        let reply = last_resort::reply(question);
        tracing::warn!(request_id = %recorder.record.id, ticket = ?reply.ticket_id(), "every provider failed: last resort");
        if let (Some(ticket_id), Some(store)) = (reply.ticket_id(), &self.store) {
            let ticket = Ticket {
                id: ticket_id.to_string(),
                created_at_ms: recorder.record.created_at_ms,
                request_id: recorder.record.id.clone(),
                question: self.storable(question),
                conversation_json: if self.redact {
                    "[]".into()
                } else {
                    serde_json::to_string(&request.turns).unwrap_or_default()
                },
                failure_json: serde_json::to_string(attempts).unwrap_or_default(),
            };
            if let Err(err) = store.insert_ticket(&ticket).await {
                // The customer still gets the reply; the failure is loud in the logs.
                tracing::error!(ticket = %ticket.id, error = %err, "could not store ticket");
            }
        }
        let ticket = reply.ticket_id().map(str::to_string);
        (reply.text().to_string(), ticket)
    }

    fn prepare(
        &self,
        request: &GatewayRequest,
        stream: bool,
    ) -> Result<(CascadeRequest, Recorder), GatewayError> {
        let cascade_request = validate(request)?;
        if let Some(name) = &request.pinned {
            if !self.has_provider(name) {
                return Err(GatewayError::UnknownModel(name.clone()));
            }
        }
        let question_chars = cascade_request
            .turns
            .last()
            .map_or(0, |t| t.content.chars().count());
        let transcript = request.conversation_id.as_ref().map(|id| Transcript {
            conversation_id: id.clone(),
            question: self.storable(
                cascade_request
                    .turns
                    .last()
                    .map_or("", |t| t.content.as_str()),
            ),
            answer: String::new(),
            redact: self.redact,
        });
        let recorder = Recorder {
            audit: self.audit.clone(),
            transcript,
            events: self.events.clone(),
            metrics: self.metrics.clone(),
            started: Instant::now(),
            finished: false,
            record: RequestRecord {
                id: format!("chatcmpl-{}", uuid::Uuid::new_v4().simple()),
                created_at_ms: now_ms() as i64,
                surface: request.surface.as_str(),
                stream,
                served_by: None,
                status: "ok",
                latency_ms: 0,
                overhead_ms: 0.0,
                question_chars,
                answer_chars: 0,
                attempts: Vec::new(),
                conversation_id: request.conversation_id.clone(),
                cache_similarity: None,
            },
        };
        Ok((cascade_request, recorder))
    }
}

fn provider_time(attempts: &[AttemptSummary]) -> Duration {
    Duration::from_millis(attempts.iter().map(|a| a.latency_ms).sum())
}

/// Checks a conversation and splits off the caller's system text.
fn validate(request: &GatewayRequest) -> Result<CascadeRequest, GatewayError> {
    if request.turns.is_empty() {
        return Err(GatewayError::BadRequest(
            "messages must not be empty".into(),
        ));
    }
    let mut caller_system = Vec::new();
    let mut turns = Vec::with_capacity(request.turns.len());
    for (index, turn) in request.turns.iter().enumerate() {
        if turn.content.trim().is_empty() && turn.role != Role::Assistant {
            return Err(GatewayError::BadRequest(format!(
                "messages[{index}].content must not be empty"
            )));
        }
        match turn.role {
            Role::System => caller_system.push(turn.content.trim()),
            _ => turns.push(turn.clone()),
        }
    }
    match turns.last() {
        Some(last) if last.role == Role::User => {}
        _ => {
            return Err(GatewayError::BadRequest(
                "the last message must come from the user".into(),
            ))
        }
    }
    if request.max_tokens == Some(0) {
        return Err(GatewayError::BadRequest(
            "max_tokens must be at least 1".into(),
        ));
    }
    if let Some(t) = request.temperature {
        if !(0.0..=2.0).contains(&t) {
            return Err(GatewayError::BadRequest(
                "temperature must be between 0 and 2".into(),
            ));
        }
    }
    Ok(CascadeRequest {
        caller_system: caller_system.join("\n"),
        turns,
        max_tokens: request.max_tokens,
        temperature: request.temperature,
        pinned: request.pinned.clone(),
        ..Default::default()
    })
}

/// The chat-page turns of one request, kept for the conversation history.
struct Transcript {
    conversation_id: String,
    question: String,
    answer: String,
    redact: bool,
}

/// Keeps the audit row of one request and writes it exactly once: when the answer
/// ends, or, if the caller goes away first, when it is dropped. Finishing also
/// counts the request and publishes its trace.
struct Recorder {
    audit: Option<AuditWriter>,
    transcript: Option<Transcript>,
    events: Arc<EventBus>,
    metrics: Arc<Metrics>,
    started: Instant,
    finished: bool,
    record: RequestRecord,
}

impl Recorder {
    fn keep_answer(&mut self, text: &str) {
        if let Some(t) = &mut self.transcript {
            t.answer = text.to_string();
        }
    }

    fn finish(&mut self, status: &'static str) {
        if std::mem::replace(&mut self.finished, true) {
            return;
        }
        self.record.status = status;
        self.record.latency_ms = self.started.elapsed().as_millis() as u64;
        let route = self
            .record
            .served_by
            .clone()
            .unwrap_or_else(|| "none".into());
        self.metrics
            .requests
            .with_label_values(&[&route, status])
            .inc();
        self.metrics
            .request_seconds
            .with_label_values(&[&route])
            .observe(self.started.elapsed().as_secs_f64());
        self.events.publish(GatewayEvent::RequestTrace {
            id: self.record.id.clone(),
            served_by: route,
            attempts: self.record.attempts.clone(),
            latency_ms: self.record.latency_ms,
            status: status.to_string(),
            at_ms: now_ms(),
        });
        let Some(audit) = &self.audit else { return };
        if let Some(t) = self.transcript.take() {
            let at_ms = self.record.created_at_ms;
            let answer = if t.redact {
                REDACTED.to_string()
            } else {
                t.answer
            };
            for turn in [ChatTurn::user(t.question), ChatTurn::assistant(answer)] {
                audit.enqueue(AuditRecord::Message {
                    at_ms,
                    conversation_id: t.conversation_id.clone(),
                    request_id: self.record.id.clone(),
                    turn,
                });
            }
        }
        audit.enqueue(AuditRecord::Request(Box::new(self.record.clone())));
    }

    fn reject(mut self, err: CascadeError) -> GatewayError {
        self.record.attempts = err.attempts().to_vec();
        self.finish("invalid_request");
        match err {
            CascadeError::InvalidRequest {
                provider,
                status,
                message,
                ..
            } => GatewayError::Rejected {
                provider,
                status,
                message,
            },
            CascadeError::UnknownProvider(name) => GatewayError::UnknownModel(name),
            CascadeError::Exhausted { .. } => {
                GatewayError::BadRequest("no provider could answer".into())
            }
        }
    }
}

impl Drop for Recorder {
    fn drop(&mut self) {
        self.finish("client_disconnected");
    }
}

/// The rest of a streamed answer, turned into chat events. When the serving
/// provider breaks after tokens were sent, the next provider is asked to continue
/// the text already sent, so the customer sees one uninterrupted reply.
struct Tail {
    cascade: Arc<Cascade>,
    request: CascadeRequest,
    deadline: Instant,
    /// Providers that served parts of this answer, in order.
    served: Vec<String>,
    /// Everything sent to the customer so far.
    sent: String,
    first: Option<String>,
    rest: provider::DeltaStream,
    recorder: Recorder,
    done: bool,
    /// Where to store the answer once it completed whole from one provider.
    remember: Option<(Arc<SemanticCache>, CacheKey)>,
}

impl Tail {
    fn new(
        cascade: Arc<Cascade>,
        request: CascadeRequest,
        deadline: Instant,
        served_by: &str,
        first: String,
        rest: provider::DeltaStream,
        recorder: Recorder,
    ) -> Self {
        Self {
            cascade,
            request,
            deadline,
            served: vec![served_by.to_string()],
            sent: String::new(),
            first: Some(first),
            rest,
            recorder,
            done: false,
            remember: None,
        }
    }

    fn delta(&mut self, text: String) -> ChatEvent {
        self.sent.push_str(&text);
        if let Some(t) = &mut self.recorder.transcript {
            t.answer.push_str(&text);
        }
        self.recorder.record.answer_chars += text.chars().count();
        ChatEvent::Delta { text }
    }

    /// Asks the next provider to continue the answer; returns its first token.
    async fn splice(&mut self, err: &provider::ProviderError) -> Result<String, ()> {
        let broken = self.served.last().cloned().unwrap_or_default();
        self.cascade.report_broken(&broken, err);
        self.recorder.record.attempts.push(AttemptSummary {
            provider: broken.clone(),
            outcome: "stream_broken".into(),
            status: None,
            latency_ms: self.recorder.started.elapsed().as_millis() as u64,
            breaker: None,
        });
        if self.request.pinned.is_some() || broken == LAST_RESORT {
            return Err(());
        }
        let mut request = self.request.clone();
        request.continuation = Some(self.sent.clone());
        request.skip = self.served.clone();
        request.deadline = Some(self.deadline);
        match self.cascade.stream(&request).await {
            Ok(answer) => {
                tracing::info!(request_id = %self.recorder.record.id, from = %broken, to = %answer.served_by, "stream spliced");
                self.recorder.record.attempts.extend(answer.attempts);
                self.served.push(answer.served_by);
                let (first, rest) = answer.value;
                self.rest = rest;
                Ok(first)
            }
            Err(err) => {
                self.recorder
                    .record
                    .attempts
                    .extend(err.attempts().iter().cloned());
                Err(())
            }
        }
    }

    async fn next(mut self) -> Option<(ChatEvent, Self)> {
        if self.done {
            return None;
        }
        if let Some(first) = self.first.take() {
            let event = self.delta(first);
            return Some((event, self));
        }
        let event = match self.rest.next().await {
            Some(Ok(text)) => self.delta(text),
            None => {
                self.done = true;
                let status = if self.served.len() > 1 {
                    "spliced"
                } else {
                    "ok"
                };
                // Only an answer one provider completed whole is worth sharing.
                if let Some((cache, key)) = self.remember.take().filter(|_| status == "ok") {
                    let answer = self.sent.clone();
                    tokio::spawn(async move {
                        cache.remember(&key.scope, &key.question, &answer).await
                    });
                }
                self.recorder.finish(status);
                ChatEvent::Done {
                    served_by: self.served.join(" → "),
                    elapsed_ms: self.recorder.record.latency_ms,
                    attempts: self.recorder.record.attempts.clone(),
                }
            }
            Some(Err(err)) => {
                tracing::warn!(request_id = %self.recorder.record.id, error = %err, "stream broke after tokens were sent");
                match self.splice(&err).await {
                    Ok(first) => self.delta(first),
                    Err(()) => {
                        self.done = true;
                        self.recorder.finish("stream_failed");
                        ChatEvent::Failed {
                            message: "The answer was interrupted and could not be completed; \
                                      what you see is incomplete."
                                .into(),
                        }
                    }
                }
            }
        };
        Some((event, self))
    }
}
