//! The cascade: providers in priority order behind their circuit breakers, with
//! per-attempt limits and one overall deadline.
//!
//! The cascade owns policy only. It asks adapters for answers and reads their
//! classified errors; it never sees a provider's JSON. An OPEN breaker skips its
//! provider without any I/O. A failure that another provider could fix moves on
//! to the next provider; an invalid request goes back to the caller. A stream is
//! held back until its first content token, so a failover before it is invisible
//! to the customer.
//!
//! In a cluster, each breaker also tells the other replicas what it learns and
//! follows what they learn ([`Cascade::follow`]); a background probe first asks
//! for the cluster's one probe lease.

use super::breaker::{Admission, Breaker, BreakerConfig, Remote, Transition};
use super::events::EventBus;
use super::metrics::Metrics;
use super::peers::Peers;
use super::prompt::PromptTemplate;
use super::provider::{
    FinishReason, Options, Piece, PieceStream, Provider, ProviderError, ProviderRequest,
    TimeoutKind, ToolCallDelta,
};
use crate::clock::SharedClock;
use crate::shared::{
    AttemptOutcome, AttemptSummary, BreakerState, ChatTurn, ContinuationStyle, GatewayEvent,
    ProbeMode, Transition as Announced,
};
use futures::StreamExt;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, Instant};

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
    /// One whole request across all attempts, up to its first token.
    pub deadline: Duration,
    /// One whole streamed answer, from the request to its last token.
    pub answer: Duration,
}

/// Whether an answer that ended without a content piece is still an answer:
/// when the provider's content filter stopped it (a safety decision is the
/// caller's to see, never routed around, as a refused request is not), or when
/// it continues a broken answer and the provider said it stopped (the broken
/// answer was already complete; there is nothing to add).
fn whole_without_content(request: &ProviderRequest, pieces: &[Piece]) -> bool {
    pieces.iter().any(|piece| match piece {
        Piece::Finish(FinishReason::ContentFilter) => true,
        Piece::Finish(_) => request.continuation.is_some(),
        _ => false,
    })
}

/// How the caller wants the answer: the provider is asked the same way.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Delivery {
    /// One response with the whole answer.
    Whole,
    /// Server-sent events, token by token.
    Streamed,
}

/// One provider of the cascade with the policy that belongs to it.
pub struct CascadeEntry {
    /// The adapter.
    pub provider: Arc<dyn Provider>,
    /// The system prompt template for its model.
    pub template: PromptTemplate,
    /// Default answer size when the caller does not ask for one.
    pub max_tokens: u32,
    /// Its breaker's thresholds.
    pub breaker: BreakerConfig,
    /// Whether it is a built-in simulation (status views say so).
    pub simulated: bool,
    /// Immediate retries after one transient failure.
    pub retries: u32,
    /// Its own first-token limit, in place of the cascade's (a reasoning model).
    pub first_token: Option<Duration>,
    /// Its own attempt limit, in place of the cascade's.
    pub attempt: Option<Duration>,
    /// Whether its model can look at images; a question with images passes a
    /// text-only one by.
    pub images: bool,
}

/// A request as the cascade sees it.
#[derive(Clone, Debug, Default)]
pub struct CascadeRequest {
    /// The caller's own system text (already joined), slotted into each template.
    pub caller_system: String,
    /// The conversation without system turns; the last turn is the customer's.
    pub turns: Vec<ChatTurn>,
    /// Caller's answer size limit, capped by each provider's configured maximum.
    pub max_tokens: Option<u32>,
    /// Sampling, tools and the answer's form.
    pub options: Options,
    /// Only this provider may serve (the caller named it as the model).
    pub pinned: Option<String>,
    /// Text already sent to the customer, for a provider to continue.
    pub continuation: Option<String>,
    /// Providers not to try (one that just broke mid-stream).
    pub skip: Vec<String>,
    /// The request's overall deadline, when it started earlier than this call.
    pub deadline: Option<Instant>,
}

/// Why the cascade produced no answer.
#[derive(Debug, thiserror::Error)]
pub enum CascadeError {
    /// A provider said the request itself is invalid; no other provider is tried.
    #[error("the request was rejected by {provider}: {message}")]
    InvalidRequest {
        /// Who rejected it.
        provider: String,
        /// HTTP status to pass on.
        status: u16,
        /// The provider's reason.
        message: String,
        /// Attempts made.
        attempts: Vec<AttemptSummary>,
    },
    /// Every provider refused the request as too large for it: the caller's
    /// conversation does not fit any window.
    #[error("the request is too large for every provider (last: {provider}): {message}")]
    TooLarge {
        /// The last provider that refused it.
        provider: String,
        /// HTTP status to pass on.
        status: u16,
        /// The provider's reason.
        message: String,
        /// Attempts made.
        attempts: Vec<AttemptSummary>,
    },
    /// Every provider failed, was skipped, or the deadline ran out.
    #[error("no provider could answer")]
    Exhausted {
        /// Attempts made, in order.
        attempts: Vec<AttemptSummary>,
    },
    /// The caller pinned a provider that is not configured.
    #[error("unknown provider {0:?}")]
    UnknownProvider(String),
    /// No provider it could go to can honour a parameter of the request.
    #[error("no provider can honour {param} (tried {providers})")]
    Unsupported {
        /// The parameter.
        param: &'static str,
        /// Who was asked, comma-separated.
        providers: String,
        /// Attempts made (each `unsupported`).
        attempts: Vec<AttemptSummary>,
    },
}

impl CascadeError {
    /// The attempts made before the cascade gave up.
    pub fn attempts(&self) -> &[AttemptSummary] {
        match self {
            CascadeError::InvalidRequest { attempts, .. }
            | CascadeError::TooLarge { attempts, .. }
            | CascadeError::Unsupported { attempts, .. }
            | CascadeError::Exhausted { attempts } => attempts,
            CascadeError::UnknownProvider(_) => &[],
        }
    }
}

/// An answer a provider has started: everything up to its first content piece
/// (the whole answer, when it was asked for whole), and the rest to come.
pub struct Opened {
    /// The pieces received so far; the last is the first content.
    pub head: Vec<Piece>,
    /// The pieces still to come (empty for a whole answer).
    pub rest: PieceStream,
}

/// What a successful run of the cascade produced.
pub struct Served {
    /// The provider's answer, started.
    pub answer: Opened,
    /// The provider that serves it.
    pub provider: Arc<dyn Provider>,
    /// Every attempt made, the serving one last.
    pub attempts: Vec<AttemptSummary>,
    /// Time spent waiting on providers, to tell the gateway's own overhead apart.
    pub provider_wait: Duration,
}

impl std::fmt::Debug for Served {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Served")
            .field("provider", &self.provider.name())
            .field("head", &self.answer.head)
            .field("attempts", &self.attempts)
            .finish_non_exhaustive()
    }
}

/// A breaker as status views show it.
#[derive(Clone)]
pub struct BreakerView {
    /// The provider.
    pub provider: Arc<dyn Provider>,
    /// Its position in the cascade, 0 first.
    pub priority: usize,
    /// Whether it is a built-in simulation.
    pub simulated: bool,
    /// Breaker state.
    pub state: BreakerState,
    /// Consecutive failures counted.
    pub consecutive_failures: u32,
    /// Time in the current state.
    pub in_state: Duration,
    /// While OPEN: time before a probe may go.
    pub retry_in: Option<Duration>,
}

struct Slot {
    entry: CascadeEntry,
    breaker: Mutex<Breaker>,
    /// Whether a background probe (or the wait for its lease) is under way.
    probing: AtomicBool,
}

impl Slot {
    fn name(&self) -> &str {
        self.entry.provider.name()
    }

    fn breaker(&self) -> MutexGuard<'_, Breaker> {
        // The breaker's state stays consistent even if a holder panicked.
        self.breaker.lock().unwrap_or_else(|e| e.into_inner())
    }
}

/// Providers in priority order, their breakers, and the limits that apply.
pub struct Cascade {
    /// Priority order: the first slot is tried first.
    slots: Vec<Slot>,
    /// Per-attempt and overall limits.
    timeouts: Timeouts,
    /// Where breaker transitions are announced.
    events: Arc<EventBus>,
    /// Where attempts and transitions are counted.
    metrics: Arc<Metrics>,
    /// The time breakers decide by.
    clock: SharedClock,
    /// The other replicas, when there are any.
    peers: Option<Arc<dyn Peers>>,
}

/// How much longer than one attempt a probe's lease lasts: a replica that dies
/// mid-probe holds it no longer than this past the attempt's own limit.
const LEASE_MARGIN: Duration = Duration::from_secs(1);

/// The right to call one provider once, as its breaker granted it. Dropped
/// without a verdict (the customer left, the call was cancelled), it hands the
/// slot back, so a cancelled half-open probe can never wedge the breaker.
struct Permit<'a> {
    cascade: &'a Cascade,
    slot: &'a Slot,
    admission: Admission,
    settled: bool,
}

impl Permit<'_> {
    fn success(mut self) {
        self.settled = true;
        let (counted, transition) = {
            let mut breaker = self.slot.breaker();
            let counted = breaker.consecutive_failures() > 0;
            (
                counted,
                breaker.on_success(self.admission, self.cascade.clock.now()),
            )
        };
        if let (true, Some(peers)) = (counted && transition.is_none(), &self.cascade.peers) {
            peers.recovered(self.slot.name());
        }
        self.cascade.announce(self.slot, transition);
    }

    fn failure(mut self, err: &ProviderError) {
        self.settled = true;
        self.cascade.failed(self.slot, self.admission, err);
    }
}

impl Drop for Permit<'_> {
    fn drop(&mut self) {
        if !self.settled {
            self.slot.breaker().on_abandon(self.admission);
        }
    }
}

impl Cascade {
    /// Creates a cascade over `entries` in the given priority order, every breaker CLOSED.
    pub fn new(
        entries: Vec<CascadeEntry>,
        timeouts: Timeouts,
        events: Arc<EventBus>,
        metrics: Arc<Metrics>,
        clock: SharedClock,
    ) -> Self {
        let now = clock.now();
        let slots = entries
            .into_iter()
            .map(|entry| Slot {
                breaker: Mutex::new(Breaker::new(entry.breaker, now)),
                probing: AtomicBool::new(false),
                entry,
            })
            .collect();
        Self {
            slots,
            timeouts,
            events,
            metrics,
            clock,
            peers: None,
        }
    }

    /// The same cascade, its breakers shared with other replicas.
    pub fn with_peers(mut self, peers: Option<Arc<dyn Peers>>) -> Self {
        self.peers = peers;
        self
    }

    /// Takes in what `from`'s breaker of `provider` learned; `false` when no such
    /// provider is configured here.
    pub fn follow(&self, provider: &str, remote: &Remote, from: &str) -> bool {
        let Some(slot) = self.slots.iter().find(|s| s.name() == provider) else {
            return false;
        };
        let transition = slot.breaker().follow(remote, from, self.clock.now());
        self.announce_as(slot, transition, false);
        true
    }

    /// The providers in priority order.
    pub fn providers(&self) -> impl Iterator<Item = &Arc<dyn Provider>> {
        self.slots.iter().map(|s| &s.entry.provider)
    }

    /// The provider called `name`, if it is configured.
    pub fn provider(&self, name: &str) -> Option<&Arc<dyn Provider>> {
        self.providers().find(|p| p.name() == name)
    }

    /// The limits in force.
    pub fn timeouts(&self) -> Timeouts {
        self.timeouts
    }

    /// How long one attempt on `slot`'s provider may take.
    fn attempt_limit(&self, slot: &Slot) -> Duration {
        slot.entry.attempt.unwrap_or(self.timeouts.attempt)
    }

    /// Every breaker's state, in priority order.
    pub fn breakers(&self) -> Vec<BreakerView> {
        let now = self.clock.now();
        self.slots
            .iter()
            .enumerate()
            .map(|(priority, slot)| {
                let breaker = slot.breaker();
                BreakerView {
                    provider: slot.entry.provider.clone(),
                    priority,
                    simulated: slot.entry.simulated,
                    state: breaker.state(),
                    consecutive_failures: breaker.consecutive_failures(),
                    in_state: now.saturating_duration_since(breaker.since()),
                    retry_in: breaker.retry_in(now),
                }
            })
            .collect()
    }

    fn announce(&self, slot: &Slot, transition: Option<Transition>) {
        self.announce_as(slot, transition, true);
    }

    /// Announces a transition; one that this replica decided (`ours`) also
    /// reaches the other replicas' breakers.
    fn announce_as(&self, slot: &Slot, transition: Option<Transition>, ours: bool) {
        let Some(t) = transition else { return };
        let provider = slot.name();
        if let (true, Some(peers)) = (ours, &self.peers) {
            match t.to {
                BreakerState::Open => {
                    let retry_in = slot.breaker().retry_in(self.clock.now());
                    peers.opened(provider, retry_in.unwrap_or_default());
                }
                BreakerState::Closed => peers.closed(provider),
                BreakerState::HalfOpen => {}
            }
        }
        tracing::info!(provider, from = t.from.label(), to = t.to.label(), reason = %t.reason, "breaker transition");
        self.metrics.breaker(provider, t.to);
        self.events
            .publish(GatewayEvent::BreakerTransition(Announced {
                provider: provider.to_string(),
                from: t.from,
                to: t.to,
                reason: t.reason,
                at_ms: self.clock.unix_ms(),
                replica: None,
            }));
    }

    /// Records a failure of an admitted call; one while CLOSED also counts
    /// toward the cluster's shared count.
    fn failed(&self, slot: &Slot, admission: Admission, err: &ProviderError) {
        let (counted, transition) = {
            let mut breaker = slot.breaker();
            let counted = breaker.state() == BreakerState::Closed;
            (
                counted,
                breaker.on_failure(
                    admission,
                    err.outcome(),
                    err.retry_after(),
                    self.clock.now(),
                ),
            )
        };
        if let (true, Some(peers)) = (counted, &self.peers) {
            peers.failed(slot.name());
        }
        self.announce(slot, transition);
    }

    /// Records that a stream broke after its first token: it counts against the
    /// provider even though the first token already counted as a success.
    pub fn report_broken(&self, provider: &str, err: &ProviderError) {
        self.metrics
            .attempt(provider, AttemptOutcome::StreamBroken, None);
        if let Some(slot) = self.slots.iter().find(|s| s.name() == provider) {
            self.failed(slot, Admission::Call, err);
        }
    }

    fn candidates(&self, request: &CascadeRequest) -> Result<Vec<&Slot>, CascadeError> {
        if let Some(name) = &request.pinned {
            return self
                .slots
                .iter()
                .find(|s| s.name() == name)
                .map(|s| vec![s])
                .ok_or_else(|| CascadeError::UnknownProvider(name.clone()));
        }
        Ok(self
            .slots
            .iter()
            .filter(|s| !request.skip.iter().any(|n| n == s.name()))
            .collect())
    }

    fn provider_request(entry: &CascadeEntry, request: &CascadeRequest) -> ProviderRequest {
        ProviderRequest {
            system: entry.template.render(&request.caller_system),
            turns: request.turns.clone(),
            max_tokens: request
                .max_tokens
                .map_or(entry.max_tokens, |m| m.min(entry.max_tokens)),
            options: request.options.clone(),
            continuation: request.continuation.clone(),
        }
    }

    /// Asks one provider for its answer, as `delivery` says. A stream is held
    /// back until its first content piece, so that failing before it is
    /// invisible to the customer; that piece is also when it counts as a success.
    async fn call(
        &self,
        entry: &CascadeEntry,
        request: &ProviderRequest,
        delivery: Delivery,
    ) -> Result<Opened, ProviderError> {
        let provider = &entry.provider;
        match delivery {
            Delivery::Whole => {
                let completion = provider.complete(request).await?;
                // Judged as a stream that ended before its first content piece:
                // an answer with neither text nor a tool call (`content: null`, a
                // reasoning model that spent its tokens thinking) would show the
                // customer nothing, so the next provider is asked instead.
                let pieces = completion.into_pieces();
                if !whole_without_content(request, &pieces) && !pieces.iter().any(Piece::is_content)
                {
                    return Err(ProviderError::Malformed("empty answer".into()));
                }
                Ok(Opened {
                    head: pieces,
                    rest: futures::stream::empty().boxed(),
                })
            }
            Delivery::Streamed => {
                let mut rest = provider.stream(request).await?;
                let mut head = Vec::new();
                let limit = entry.first_token.unwrap_or(self.timeouts.first_token);
                let first_token = tokio::time::timeout(limit, async {
                    loop {
                        match rest.next().await {
                            None if whole_without_content(request, &head) => {
                                rest = futures::stream::empty().boxed();
                                return Ok(());
                            }
                            None => return Err(ProviderError::Malformed("empty answer".into())),
                            Some(Err(err)) => return Err(err),
                            Some(Ok(piece)) => {
                                let content = piece.is_content();
                                head.push(piece);
                                if content {
                                    return Ok(());
                                }
                            }
                        }
                    }
                })
                .await;
                match first_token {
                    Err(_) => Err(ProviderError::Timeout(TimeoutKind::FirstToken)),
                    Ok(Err(err)) => Err(err),
                    Ok(Ok(())) if matches!(head.last(), Some(Piece::ToolCall(_))) => {
                        // A tool call is useless to the caller until its arguments
                        // are whole, so the answer is held back to its end: a cut in
                        // the middle of the arguments is then an ordinary failed
                        // attempt, and the next provider gets the same tools. (The
                        // attempt's own limit still bounds the wait.)
                        while let Some(piece) = rest.next().await {
                            head.push(piece?);
                        }
                        let fragments: Vec<ToolCallDelta> = head
                            .iter()
                            .filter_map(|piece| match piece {
                                Piece::ToolCall(fragment) => Some(fragment.clone()),
                                _ => None,
                            })
                            .collect();
                        ToolCallDelta::assemble(&fragments)?;
                        Ok(Opened {
                            head,
                            rest: futures::stream::empty().boxed(),
                        })
                    }
                    Ok(Ok(())) => Ok(Opened { head, rest }),
                }
            }
        }
    }

    /// Tries providers in order until one starts an answer. A request that
    /// continues a broken answer goes only to providers that can truly continue
    /// it; the others are recorded as `cannot_continue`, without any I/O.
    pub async fn open(
        &self,
        request: &CascadeRequest,
        delivery: Delivery,
    ) -> Result<Served, CascadeError> {
        let deadline = request
            .deadline
            .unwrap_or_else(|| Instant::now() + self.timeouts.deadline);
        let continues = request.continuation.is_some();
        let mut run = Run {
            attempts: Vec::new(),
            provider_wait: Duration::ZERO,
            too_large: None,
            refused_by_all: true,
            unsupported: None,
            refused: None,
        };
        for slot in self.candidates(request)? {
            let name = slot.name();
            if continues && slot.entry.provider.continuation() == ContinuationStyle::None {
                run.record(
                    name,
                    AttemptOutcome::CannotContinue,
                    None,
                    Duration::ZERO,
                    None,
                );
                continue;
            }
            // A text-only model is passed by before its request is built.
            let blind = !slot.entry.images && request.turns.iter().any(|t| !t.images.is_empty());
            let honoured = if blind {
                Err("image_url")
            } else {
                let built = Self::provider_request(&slot.entry, request);
                match slot.entry.provider.cannot_honour(&built) {
                    Some(param) => Err(param),
                    None => Ok(built),
                }
            };
            let provider_request = match honoured {
                Ok(built) => built,
                Err(param) => {
                    run.record(
                        name,
                        AttemptOutcome::Unsupported,
                        None,
                        Duration::ZERO,
                        None,
                    );
                    run.unsupported.get_or_insert(param);
                    continue;
                }
            };
            let mut retries_left = slot.entry.retries;
            loop {
                let Some(left) = deadline
                    .checked_duration_since(Instant::now())
                    .filter(|d| !d.is_zero())
                else {
                    run.refused_by_all = false;
                    return Err(run.give_up());
                };
                let (before, failures_before, (admission, transition)) = {
                    let mut breaker = slot.breaker();
                    (
                        breaker.state(),
                        breaker.consecutive_failures(),
                        breaker.admit(self.clock.now()),
                    )
                };
                self.announce(slot, transition);
                if admission == Admission::Reject {
                    self.metrics
                        .attempt(name, AttemptOutcome::SkippedOpen, None);
                    run.record(
                        name,
                        AttemptOutcome::SkippedOpen,
                        None,
                        Duration::ZERO,
                        Some(before),
                    );
                    run.refused_by_all = false;
                    break;
                }
                let permit = Permit {
                    cascade: self,
                    slot,
                    admission,
                    settled: false,
                };
                let started = Instant::now();
                let result = tokio::time::timeout(
                    left.min(self.attempt_limit(slot)),
                    self.call(&slot.entry, &provider_request, delivery),
                )
                .await
                .unwrap_or(Err(ProviderError::Timeout(TimeoutKind::Total)));
                let elapsed = started.elapsed();
                let (outcome, status) = match &result {
                    Ok(_) => (AttemptOutcome::Ok, Some(200)),
                    Err(err) => (err.outcome(), err.status()),
                };
                self.metrics.attempt(name, outcome, Some(elapsed));
                run.record(name, outcome, status, elapsed, Some(before));
                let err = match result {
                    Ok(answer) => {
                        permit.success();
                        return Ok(Served {
                            answer,
                            provider: slot.entry.provider.clone(),
                            attempts: run.attempts,
                            provider_wait: run.provider_wait,
                        });
                    }
                    Err(err) => err,
                };
                match err {
                    // A provider that refuses the prefill cannot continue; another may.
                    ProviderError::InvalidRequest { .. } if continues => {
                        drop(permit);
                        run.refused_by_all = false;
                    }
                    // The caller's error says nothing about the provider's health,
                    // and no other provider would accept it either.
                    ProviderError::InvalidRequest { status, message } => {
                        drop(permit);
                        return Err(CascadeError::InvalidRequest {
                            provider: name.to_string(),
                            status,
                            message,
                            attempts: run.attempts,
                        });
                    }
                    // Too large for this window; a larger one may take it.
                    ProviderError::TooLarge { status, message } => {
                        drop(permit);
                        run.too_large = Some((name.to_string(), status, message));
                    }
                    // This provider's model does not take what the request
                    // carries; one whose model does may serve it.
                    ProviderError::Unsupported { status, message } => {
                        drop(permit);
                        run.refused
                            .get_or_insert((name.to_string(), status, message));
                    }
                    err => {
                        tracing::warn!(provider = name, kind = %err.outcome(), error = %err, "attempt failed");
                        run.refused_by_all = false;
                        let transient = err.is_transient();
                        permit.failure(&err);
                        // One quick retry for a lone hiccup of a healthy provider,
                        // never for one that has been failing.
                        if transient
                            && retries_left > 0
                            && before == BreakerState::Closed
                            && failures_before == 0
                        {
                            retries_left -= 1;
                            continue;
                        }
                    }
                }
                break;
            }
        }
        Err(run.give_up())
    }

    /// Starts a probe of every OPEN provider whose background probe is due: a
    /// one-token completion on its real protocol, through its endpoint (so an
    /// injected fault is seen as a customer would see it). Each probe runs on its
    /// own task, so a hanging provider delays no other's. Customers never probe
    /// such providers; the breaker closes as soon as a probe succeeds.
    pub fn probe_due(self: &Arc<Self>) -> Vec<tokio::task::JoinHandle<()>> {
        if let Some(peers) = &self.peers {
            return self.probe_due_leased(peers.clone());
        }
        let now = self.clock.now();
        let mut started = Vec::new();
        for index in 0..self.slots.len() {
            let slot = &self.slots[index];
            let begun = {
                let mut breaker = slot.breaker();
                if breaker.probe_mode() != ProbeMode::Background {
                    continue;
                }
                breaker.begin_probe(now)
            };
            let Some((admission, transition)) = begun else {
                continue;
            };
            self.announce(slot, transition);
            let cascade = self.clone();
            started.push(tokio::spawn(async move {
                cascade.probe(&cascade.slots[index], admission).await
            }));
        }
        started
    }

    /// [`probe_due`](Self::probe_due) in a cluster: a due probe first takes the
    /// cluster's lease for its provider, so one replica probes while the others
    /// keep skipping it and follow the probe's verdict.
    fn probe_due_leased(
        self: &Arc<Self>,
        peers: Arc<dyn Peers>,
    ) -> Vec<tokio::task::JoinHandle<()>> {
        let now = self.clock.now();
        let mut started = Vec::new();
        for index in 0..self.slots.len() {
            let slot = &self.slots[index];
            let due = {
                let breaker = slot.breaker();
                breaker.probe_mode() == ProbeMode::Background && breaker.probe_due(now)
            };
            if !due || slot.probing.swap(true, Ordering::AcqRel) {
                continue;
            }
            let (cascade, peers) = (self.clone(), peers.clone());
            started.push(tokio::spawn(async move {
                let slot = &cascade.slots[index];
                let lease = cascade.attempt_limit(slot) + LEASE_MARGIN;
                if peers.probe_lease(slot.name(), lease).await {
                    let begun = slot.breaker().begin_probe(cascade.clock.now());
                    if let Some((admission, transition)) = begun {
                        cascade.announce(slot, transition);
                        cascade.probe(slot, admission).await;
                    }
                    peers.probe_done(slot.name());
                }
                slot.probing.store(false, Ordering::Release);
            }));
        }
        started
    }

    async fn probe(&self, slot: &Slot, admission: Admission) {
        let permit = Permit {
            cascade: self,
            slot,
            admission,
            settled: false,
        };
        let request = ProviderRequest {
            system: String::new(),
            turns: vec![ChatTurn::user("ping")],
            max_tokens: 1,
            options: Options::default(),
            continuation: None,
        };
        let result = tokio::time::timeout(
            self.attempt_limit(slot),
            slot.entry.provider.complete(&request),
        )
        .await
        .unwrap_or(Err(ProviderError::Timeout(TimeoutKind::Total)));
        let outcome = match &result {
            Ok(_) => AttemptOutcome::Ok,
            Err(err) => err.outcome(),
        };
        self.metrics.probe(slot.name(), outcome);
        match result {
            // An answer, or a refusal of the probe itself: the provider is up.
            Ok(_) => permit.success(),
            Err(err) if !err.counts_against_provider() => permit.success(),
            Err(err) => permit.failure(&err),
        }
    }
}

/// The attempts of one run of the cascade, and what it learned.
struct Run {
    attempts: Vec<AttemptSummary>,
    provider_wait: Duration,
    /// The last refusal as too large, if any.
    too_large: Option<(String, u16, String)>,
    /// Whether every provider tried refused as too large (none skipped or failed).
    refused_by_all: bool,
    /// The parameter a provider could not honour, if one could not.
    unsupported: Option<&'static str>,
    /// The first provider that said its model does not take the request as it is.
    refused: Option<(String, u16, String)>,
}

impl Run {
    fn record(
        &mut self,
        provider: &str,
        outcome: AttemptOutcome,
        status: Option<u16>,
        elapsed: Duration,
        breaker: Option<BreakerState>,
    ) {
        self.provider_wait += elapsed;
        self.attempts.push(AttemptSummary {
            provider: provider.to_string(),
            outcome,
            status,
            latency_ms: elapsed.as_millis() as u64,
            breaker,
            usage: None,
        });
    }

    /// Why nobody answered: nobody could honour the request, it is too large
    /// for every window, or the cascade is exhausted.
    fn give_up(self) -> CascadeError {
        let all_unsupported = !self.attempts.is_empty()
            && self
                .attempts
                .iter()
                .all(|a| a.outcome == AttemptOutcome::Unsupported);
        // Every provider said its model does not take the request as it is:
        // the caller hears it from the first, as it would from that provider.
        if all_unsupported && self.unsupported.is_none() {
            if let Some((provider, status, message)) = self.refused {
                return CascadeError::InvalidRequest {
                    provider,
                    status,
                    message,
                    attempts: self.attempts,
                };
            }
        }
        if let (Some(param), true) = (self.unsupported, all_unsupported) {
            let providers = self
                .attempts
                .iter()
                .map(|a| a.provider.as_str())
                .collect::<Vec<_>>()
                .join(", ");
            return CascadeError::Unsupported {
                param,
                providers,
                attempts: self.attempts,
            };
        }
        match self.too_large {
            Some((provider, status, message)) if self.refused_by_all => CascadeError::TooLarge {
                provider,
                status,
                message,
                attempts: self.attempts,
            },
            _ => CascadeError::Exhausted {
                attempts: self.attempts,
            },
        }
    }
}
