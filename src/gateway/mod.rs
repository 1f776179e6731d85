//! The gateway core: one customer question in, one answer out, always.
//!
//! [`Gateway::answer`] is the one path every question takes, whoever asks (the
//! OpenAI-compatible API, the chat page, the synthetic traffic) and however the
//! answer is delivered (whole or streamed):
//!
//! 1. `request`, `validate`: check the conversation and its options, refuse an
//!    unknown model;
//! 2. `cache_key`: look the question up in layer 0;
//! 3. [`cascade`]: otherwise ask the providers in order, each behind its
//!    [`breaker`], through its [`provider`] adapter;
//! 4. `last_resort`: when none can answer, the knowledge base or a ticket;
//! 5. `splice`: stream the rest, continuing a broken stream elsewhere, and end
//!    the `recorder`'s audit row, metrics and live trace exactly once.
//!
//! It knows nothing of HTTP servers or the UI.

mod answer;
mod bounds;
pub mod breaker;
mod cache_key;
pub mod cascade;
pub mod events;
pub mod faults;
mod last_resort;
pub mod metrics;
pub mod peers;
pub mod prompt;
pub mod provider;
mod recorder;
mod request;
mod splice;
mod validate;

pub use answer::{Answer, AnswerEvent, Completed};
pub use cascade::Delivery;
pub use request::{GatewayError, GatewayRequest, OnBreak, RequestLimits, DEFAULT_TENANT};

use crate::cache::SemanticCache;
use crate::clock::SharedClock;
use crate::shared::{ProviderStatus, Route};
use crate::store::{audit::AuditWriter, Store};
use cache_key::AnswerCache;
use cascade::{Cascade, CascadeError};
use events::EventBus;
use faults::FaultControl;
use last_resort::{LastResort, TicketContext};
use metrics::Metrics;
use recorder::{RecordSinks, Recorder};
use splice::{Source, Tail};
use std::sync::Arc;
use std::time::{Duration, Instant};

/// Everything a gateway is assembled from.
pub struct GatewayParts {
    /// Providers, their breakers and their policy.
    pub cascade: Cascade,
    /// Injected faults.
    pub faults: FaultControl,
    /// Where tickets go; `None` in tests that do not need them.
    pub store: Option<Store>,
    /// Where request rows and chat messages go, batched and off the request path.
    pub audit: Option<AuditWriter>,
    /// Store `[redacted]` instead of customer text.
    pub redact: bool,
    /// Layer 0; `None` when disabled.
    pub cache: Option<Arc<SemanticCache>>,
    /// Live events (transitions, request traces).
    pub events: Arc<EventBus>,
    /// Prometheus metrics.
    pub metrics: Arc<Metrics>,
    /// The time policy reads.
    pub clock: SharedClock,
    /// Turns true when the server's grace period is over: answers still
    /// streaming end with their explicit error ending, and their rows are written.
    pub ending: tokio::sync::watch::Receiver<bool>,
    /// How big a conversation may be.
    pub limits: RequestLimits,
}

/// The gateway: a cascade of providers, the cache, the last resort, and the
/// record of every request.
pub struct Gateway {
    /// Providers, their breakers and their policy.
    cascade: Arc<Cascade>,
    /// Injected faults.
    faults: FaultControl,
    /// Layer 0.
    cache: AnswerCache,
    /// When no provider can answer.
    last_resort: LastResort,
    /// Where each request's record goes.
    sinks: RecordSinks,
    /// The end of the grace period at shutdown.
    ending: tokio::sync::watch::Receiver<bool>,
    /// How big a conversation may be.
    limits: RequestLimits,
}

impl Gateway {
    /// Assembles a gateway.
    pub fn new(parts: GatewayParts) -> Self {
        Self {
            cascade: Arc::new(parts.cascade),
            faults: parts.faults,
            cache: AnswerCache::new(parts.cache),
            last_resort: LastResort {
                audit: parts.audit.clone(),
                store: parts.store,
                redact: parts.redact,
            },
            sinks: RecordSinks {
                audit: parts.audit,
                events: parts.events,
                metrics: parts.metrics,
                clock: parts.clock,
                redact: parts.redact,
            },
            ending: parts.ending,
            limits: parts.limits,
        }
    }

    /// Starts the background probes that are due (the probe task calls this).
    pub fn probe_due(&self) {
        self.cascade.probe_due();
    }

    /// The cascade, for listing providers.
    pub fn cascade(&self) -> &Cascade {
        &self.cascade
    }

    /// Fault control, for the chaos API, the board and the expiry task.
    pub fn faults(&self) -> &FaultControl {
        &self.faults
    }

    /// The cache, for its admin API.
    pub fn cache(&self) -> Option<&Arc<SemanticCache>> {
        self.cache.inner()
    }

    /// The time its records are stamped with.
    pub fn clock(&self) -> &SharedClock {
        &self.sinks.clock
    }

    /// The live event bus.
    pub fn events(&self) -> &EventBus {
        &self.sinks.events
    }

    /// The metrics registry.
    pub fn metrics(&self) -> &Metrics {
        &self.sinks.metrics
    }

    /// Every provider's breaker and fault, in cascade order.
    pub fn statuses(&self) -> Vec<ProviderStatus> {
        self.cascade
            .breakers()
            .into_iter()
            .map(|b| {
                let name = b.provider.name();
                ProviderStatus {
                    name: name.to_string(),
                    protocol: b.provider.protocol(),
                    model: b.provider.model().to_string(),
                    priority: b.priority,
                    simulated: b.simulated,
                    state: b.state,
                    consecutive_failures: b.consecutive_failures,
                    in_state_ms: b.in_state.as_millis() as u64,
                    retry_in_ms: b.retry_in.map(|d| d.as_millis() as u64),
                    fault: self.faults.status(name),
                }
            })
            .collect()
    }

    /// Answers in one piece: the collected [`answer`](Self::answer).
    pub async fn complete(&self, request: GatewayRequest) -> Result<Completed, GatewayError> {
        Ok(self.answer(request, Delivery::Whole).await?.collect().await)
    }

    /// Answers as a stream; returns once the first piece is ready. A reader that
    /// stops reading for longer than the stall limit loses the answer, so it
    /// never holds a provider's connection open.
    pub async fn stream(&self, request: GatewayRequest) -> Result<Answer, GatewayError> {
        let stall = self.cascade.timeouts().stall;
        Ok(self
            .answer(request, Delivery::Streamed)
            .await?
            .abandon_if_unread(stall))
    }

    /// The one path of every question: cache, cascade or last resort, then the
    /// rest of the answer. Returns once the answer's first piece is ready (the
    /// whole answer, for [`Delivery::Whole`]), so the caller can name the route
    /// before sending anything.
    pub async fn answer(
        &self,
        request: GatewayRequest,
        delivery: Delivery,
    ) -> Result<Answer, GatewayError> {
        let started = Instant::now();
        let mut cascade_request = validate::validate(&request, self.limits, |name| {
            self.cascade.provider(name).is_some()
        })?;
        // The cache lookup counts toward the deadline, as everything else does.
        let timeouts = self.cascade.timeouts();
        cascade_request.deadline = Some(started + timeouts.deadline);
        let question = cascade_request
            .turns
            .last()
            .map_or("", |t| t.content.as_str());
        let mut recorder = Recorder::start(
            self.sinks.clone(),
            (request.surface, delivery == Delivery::Streamed),
            question,
            request.conversation_id.clone(),
            &request.tenant,
        );
        let key = self.cache.key(&request, &cascade_request);
        let hit = match &key {
            Some(key) => self.cache.lookup(key).await,
            None => None,
        };
        let mut ticket = None;
        let (source, attempts, provider_wait) = if let Some(hit) = hit {
            recorder.cache_hit(hit.similarity);
            let source = Source::local(Route::Cache, hit.answer, delivery);
            (source, Vec::new(), Duration::ZERO)
        } else {
            match self.cascade.open(&cascade_request, delivery).await {
                Ok(served) => {
                    let route = Route::provider(served.provider.name());
                    let source = Source::provider(route, served.provider.model(), served.answer);
                    (source, served.attempts, served.provider_wait)
                }
                Err(CascadeError::Exhausted { attempts }) => {
                    let reply = self
                        .last_resort
                        .answer(TicketContext {
                            request_id: recorder.id(),
                            created_at_ms: recorder.created_at_ms(),
                            turns: &cascade_request.turns,
                            attempts: &attempts,
                            conversation_id: request.conversation_id.as_deref(),
                        })
                        .await;
                    ticket = reply.ticket_id().map(str::to_string);
                    let source =
                        Source::local(Route::LastResort, reply.text().to_string(), delivery);
                    let waited = attempts.iter().map(|a| a.latency_ms).sum();
                    (source, attempts, Duration::from_millis(waited))
                }
                Err(err) => {
                    recorder.rejected(err.attempts()).await;
                    return Err(GatewayError::from_cascade(err));
                }
            }
        };
        let served_by = source.route.clone();
        let model = source.model.clone();
        let fingerprint = source.fingerprint.clone();
        let overhead = recorder.serving(served_by.clone(), attempts, provider_wait);
        let pending_store = match (&served_by, key) {
            (Route::Provider(_), Some(key)) => self.cache.pending(key),
            _ => None,
        };
        let id = recorder.id().to_string();
        let cache_similarity = recorder.cache_similarity();
        let tail = Tail::new(
            self.cascade.clone(),
            (cascade_request, request.on_break, started + timeouts.answer),
            source,
            (recorder, self.ending.clone()),
            pending_store,
        );
        Ok(Answer {
            id,
            served_by,
            model,
            fingerprint,
            overhead,
            ticket,
            cache_similarity,
            events: tail.into_events(),
        })
    }
}
