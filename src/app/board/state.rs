//! What the board shows: seeded with the last minutes (the gateway's live state
//! and the audit trail), then folded from the live events. The counters, the
//! chart and each provider's health are computed over sliding windows of the
//! points kept here, so a reload mid-demo shows what the presenter was pointing
//! at. Pure and compiled for both targets, so it is unit-tested natively.

use crate::shared::history::{AttemptPoint, BoardSeed, RequestPoint};
use crate::shared::{
    AttemptOutcome, BreakerState, GatewayEvent, ProviderStatus, RequestStatus, Route, Trace,
    TrafficStatus, Transition,
};
use std::collections::{BTreeMap, VecDeque};

/// Requests kept in the live request path.
const TRACES: usize = 25;
/// Transitions kept in the timeline.
const TRANSITIONS: usize = 30;
/// Points in the latency chart.
const POINTS: usize = 60;
/// Most request points kept for the counters' window.
pub const MAX_REQUESTS: usize = 5_000;
/// Most attempt points kept for the providers' health.
const MAX_ATTEMPTS: usize = 5_000;
/// How far back each provider's health looks.
pub const HEALTH_WINDOW_MS: i64 = 60_000;
/// Buckets of a provider's sparkline over the health window.
pub const SPARK_BUCKETS: usize = 12;
/// The counters' window when the seed names none.
pub const DEFAULT_WINDOW_MS: i64 = 10 * 60_000;

/// The customer-facing numbers over the window.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct Counters {
    /// Answers in the window.
    pub answered: u64,
    /// Answers by route.
    pub by_route: BTreeMap<String, u64>,
    /// Answers that reached the customer broken.
    pub customer_errors: u64,
}

impl Counters {
    /// Answers served by `route`.
    pub fn route(&self, route: &Route) -> u64 {
        self.by_route.get(route.as_str()).copied().unwrap_or(0)
    }

    /// Share of answers served from the cache.
    pub fn cache_ratio(&self) -> f64 {
        if self.answered == 0 {
            0.0
        } else {
            self.route(&Route::Cache) as f64 / self.answered as f64
        }
    }
}

/// One provider's last minute.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct Health {
    /// Attempts that reached it.
    pub attempts: u64,
    /// Of those, the ones it failed.
    pub errors: u64,
    /// Median latency of its successful attempts.
    pub p50_ms: Option<u64>,
    /// 95th percentile of the same.
    pub p95_ms: Option<u64>,
    /// Median latency per bucket, oldest first (`None`: no success in it).
    pub spark: Vec<Option<u64>>,
    /// Failed attempts per bucket, oldest first.
    pub spark_errors: Vec<u64>,
    /// Its last successful attempt (Unix ms).
    pub last_success_ms: Option<i64>,
}

impl Health {
    /// Failed share of the attempts, 0 without any.
    pub fn error_rate(&self) -> f64 {
        if self.attempts == 0 {
            0.0
        } else {
            self.errors as f64 / self.attempts as f64
        }
    }
}

/// Whether an attempt reached the provider at all.
fn reached(outcome: AttemptOutcome) -> bool {
    !matches!(
        outcome,
        AttemptOutcome::SkippedOpen | AttemptOutcome::CannotContinue | AttemptOutcome::Unsupported
    )
}

/// Whether an attempt that reached the provider counts as its failure (the
/// caller's own invalid or too-large request does not).
fn failed(outcome: AttemptOutcome) -> bool {
    !matches!(
        outcome,
        AttemptOutcome::Ok | AttemptOutcome::InvalidRequest | AttemptOutcome::TooLarge
    )
}

fn percentile(sorted: &[u64], p: f64) -> Option<u64> {
    if sorted.is_empty() {
        return None;
    }
    let rank = ((sorted.len() as f64 - 1.0) * p).round() as usize;
    sorted.get(rank).copied()
}

/// Everything on the board.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct BoardState {
    /// Providers in cascade order, from the latest snapshot.
    pub providers: Vec<ProviderStatus>,
    /// Clock (Unix ms) when the latest snapshot arrived, to age its durations.
    pub snapshot_at_ms: f64,
    /// Whether synthetic traffic runs.
    pub traffic: TrafficStatus,
    /// Recent requests, newest first.
    pub traces: Vec<Trace>,
    /// Recent transitions, newest first.
    pub transitions: Vec<Transition>,
    /// How far back the counters look.
    pub window_ms: i64,
    /// Requests of the window, oldest first.
    requests: VecDeque<RequestPoint>,
    /// Attempts of the health window, oldest first.
    attempts: VecDeque<AttemptPoint>,
    /// Each provider's last success (Unix ms).
    last_success_ms: BTreeMap<String, i64>,
}

impl BoardState {
    /// The board as the server saw it: live state and the last minutes.
    pub fn from_seed(seed: BoardSeed) -> Self {
        let mut state = BoardState {
            providers: seed.providers,
            snapshot_at_ms: seed.now_ms as f64,
            traffic: seed.traffic,
            traces: seed.traces,
            transitions: seed.transitions,
            window_ms: if seed.window_ms > 0 {
                seed.window_ms
            } else {
                DEFAULT_WINDOW_MS
            },
            requests: seed.requests.into(),
            attempts: seed.attempts.into(),
            last_success_ms: seed.last_success_ms,
        };
        state.traces.truncate(TRACES);
        state.transitions.truncate(TRANSITIONS);
        state.bound();
        state
    }

    /// Takes a fresh seed after a (re)connect: the past is the server's; events
    /// that arrived live after the seed was read are kept on top of it.
    pub fn reseed(&mut self, seed: BoardSeed) {
        let cutoff = seed.now_ms;
        let newer_traces: Vec<Trace> = self
            .traces
            .iter()
            .filter(|t| t.at_ms > cutoff)
            .cloned()
            .collect();
        let newer_transitions: Vec<Transition> = self
            .transitions
            .iter()
            .filter(|t| t.at_ms > cutoff)
            .cloned()
            .collect();
        *self = BoardState::from_seed(seed);
        for trace in newer_traces.into_iter().rev() {
            self.trace(trace);
        }
        for transition in newer_transitions.into_iter().rev() {
            if !self.transitions.contains(&transition) {
                self.transitions.insert(0, transition);
            }
        }
        self.transitions.truncate(TRANSITIONS);
    }

    fn bound(&mut self) {
        while self.requests.len() > MAX_REQUESTS {
            self.requests.pop_front();
        }
        while self.attempts.len() > MAX_ATTEMPTS {
            self.attempts.pop_front();
        }
    }

    /// Folds one event in; `now_ms` is the clock (Unix ms).
    pub fn apply(&mut self, event: GatewayEvent, now_ms: f64) {
        match event {
            GatewayEvent::Snapshot { providers, traffic } => {
                self.providers = providers;
                self.traffic = traffic;
                self.snapshot_at_ms = now_ms;
            }
            GatewayEvent::BreakerTransition(transition) => {
                if let Some(p) = self
                    .providers
                    .iter_mut()
                    .find(|p| p.name == transition.provider)
                {
                    p.state = transition.to;
                }
                self.transitions.insert(0, transition);
                self.transitions.truncate(TRANSITIONS);
            }
            GatewayEvent::RequestTrace(trace) => self.trace(trace),
            GatewayEvent::FaultChanged {
                provider, fault, ..
            } => {
                if let Some(p) = self.providers.iter_mut().find(|p| p.name == provider) {
                    p.fault = fault.map(|spec| crate::shared::ActiveFault {
                        remaining_ms: spec.duration_s.map(|s| s * 1000),
                        spec,
                    });
                }
            }
        }
    }

    fn trace(&mut self, trace: Trace) {
        // A request in the seed may come again live: it counts once.
        if self
            .requests
            .iter()
            .rev()
            .take(500)
            .any(|r| r.id == trace.id)
        {
            return;
        }
        self.requests.push_back(RequestPoint::from(&trace));
        for attempt in &trace.attempts {
            if attempt.outcome == AttemptOutcome::Ok {
                self.last_success_ms
                    .insert(attempt.provider.clone(), trace.at_ms);
            }
            self.attempts.push_back(AttemptPoint {
                at_ms: trace.at_ms,
                provider: attempt.provider.clone(),
                outcome: attempt.outcome,
                latency_ms: attempt.latency_ms,
            });
        }
        // The health window is short: what fell out of it goes.
        let horizon = trace.at_ms - 2 * HEALTH_WINDOW_MS;
        while self.attempts.front().is_some_and(|a| a.at_ms < horizon) {
            self.attempts.pop_front();
        }
        let horizon = trace.at_ms - self.window_ms;
        while self.requests.front().is_some_and(|r| r.at_ms < horizon) {
            self.requests.pop_front();
        }
        self.bound();
        self.traces.insert(0, trace);
        self.traces.truncate(TRACES);
    }

    /// The counters over the window ending at `now_ms`.
    pub fn counters(&self, now_ms: f64) -> Counters {
        let from = now_ms as i64 - self.window_ms;
        let mut counters = Counters::default();
        for r in self.requests.iter().filter(|r| r.at_ms >= from) {
            counters.answered += 1;
            let route = r.served_by.as_ref().map_or("none", Route::as_str);
            *counters.by_route.entry(route.to_string()).or_default() += 1;
            if r.status == RequestStatus::StreamFailed {
                counters.customer_errors += 1;
            }
        }
        counters
    }

    /// Latencies of the latest requests, oldest first, for the chart.
    pub fn latencies(&self) -> Vec<u64> {
        let skip = self.requests.len().saturating_sub(POINTS);
        self.requests
            .iter()
            .skip(skip)
            .map(|r| r.latency_ms)
            .collect()
    }

    /// `provider`'s last minute before `now_ms`.
    pub fn health(&self, provider: &str, now_ms: f64) -> Health {
        let now = now_ms as i64;
        let from = now - HEALTH_WINDOW_MS;
        let bucket = HEALTH_WINDOW_MS / SPARK_BUCKETS as i64;
        let mut health = Health {
            spark_errors: vec![0; SPARK_BUCKETS],
            last_success_ms: self.last_success_ms.get(provider).copied(),
            ..Health::default()
        };
        let mut ok = Vec::new();
        let mut per_bucket: Vec<Vec<u64>> = vec![Vec::new(); SPARK_BUCKETS];
        for a in self
            .attempts
            .iter()
            // No upper bound: a point stamped a little after the viewer's clock
            // (another machine's clock) still belongs to the last minute.
            .filter(|a| a.provider == provider && a.at_ms >= from)
            .filter(|a| reached(a.outcome))
        {
            health.attempts += 1;
            let slot = (((a.at_ms - from).max(0) / bucket) as usize).min(SPARK_BUCKETS - 1);
            if failed(a.outcome) {
                health.errors += 1;
                health.spark_errors[slot] += 1;
            } else if a.outcome == AttemptOutcome::Ok {
                ok.push(a.latency_ms);
                per_bucket[slot].push(a.latency_ms);
            }
        }
        ok.sort_unstable();
        health.p50_ms = percentile(&ok, 0.5);
        health.p95_ms = percentile(&ok, 0.95);
        health.spark = per_bucket
            .into_iter()
            .map(|mut b| {
                b.sort_unstable();
                percentile(&b, 0.5)
            })
            .collect();
        health
    }

    /// Why `provider` is OPEN: the reason of its latest transition to OPEN.
    pub fn open_reason(&self, provider: &str) -> Option<&str> {
        let open = self
            .providers
            .iter()
            .any(|p| p.name == provider && p.state == BreakerState::Open);
        if !open {
            return None;
        }
        self.transitions
            .iter()
            .find(|t| t.provider == provider && t.to == BreakerState::Open)
            .map(|t| t.reason.as_str())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::shared::{AttemptSummary, Protocol};

    fn provider(name: &str) -> ProviderStatus {
        ProviderStatus {
            name: name.into(),
            protocol: Protocol::OpenAi,
            model: "m".into(),
            priority: 0,
            simulated: true,
            state: BreakerState::Closed,
            consecutive_failures: 0,
            in_state_ms: 0,
            retry_in_ms: None,
            fault: None,
        }
    }

    fn attempt(provider: &str, outcome: AttemptOutcome, latency_ms: u64) -> AttemptSummary {
        AttemptSummary {
            provider: provider.into(),
            outcome,
            status: None,
            latency_ms,
            breaker: None,
            usage: None,
        }
    }

    fn trace(id: &str, at_ms: i64, served_by: &str, status: RequestStatus) -> GatewayEvent {
        GatewayEvent::RequestTrace(Trace {
            id: id.into(),
            served_by: Some(Route::from(served_by)),
            attempts: vec![attempt(served_by, AttemptOutcome::Ok, 40)],
            latency_ms: 40,
            status,
            at_ms,
            replica: None,
        })
    }

    fn seed(now_ms: i64) -> BoardSeed {
        BoardSeed {
            now_ms,
            window_ms: 600_000,
            providers: vec![provider("claude"), provider("gpt")],
            traffic: TrafficStatus::default(),
            requests: Vec::new(),
            attempts: Vec::new(),
            traces: Vec::new(),
            transitions: Vec::new(),
            last_success_ms: BTreeMap::new(),
        }
    }

    #[test]
    fn events_fold_into_what_the_board_shows() {
        let mut board = BoardState::from_seed(seed(1_000));
        board.apply(
            GatewayEvent::BreakerTransition(Transition {
                provider: "claude".into(),
                from: BreakerState::Closed,
                to: BreakerState::Open,
                reason: "3 consecutive failures".into(),
                at_ms: 5,
                replica: None,
            }),
            1_100.0,
        );
        board.apply(trace("a", 1_200, "gpt", RequestStatus::Ok), 1_200.0);
        board.apply(trace("b", 1_300, "last-resort", RequestStatus::Ok), 1_300.0);
        board.apply(
            trace("c", 1_400, "gpt", RequestStatus::StreamFailed),
            1_400.0,
        );
        // The same request again (seen in history and live) counts once.
        board.apply(
            trace("c", 1_400, "gpt", RequestStatus::StreamFailed),
            1_400.0,
        );
        let counters = board.counters(1_500.0);
        assert_eq!(board.providers[0].state, BreakerState::Open);
        assert_eq!(board.open_reason("claude"), Some("3 consecutive failures"));
        assert_eq!(board.open_reason("gpt"), None);
        assert_eq!(counters.answered, 3);
        assert_eq!(counters.route(&Route::from("gpt")), 2);
        assert_eq!(counters.route(&Route::LastResort), 1);
        assert_eq!(counters.customer_errors, 1);
        assert_eq!(board.traces[0].id, "c", "newest first");
    }

    #[test]
    fn a_seed_carries_the_last_minutes_and_the_window_slides() {
        let mut start = seed(700_000);
        start.requests = (0..10)
            .map(|i| RequestPoint {
                id: format!("r{i}"),
                // One a minute, from 9 minutes ago to now.
                at_ms: 700_000 - (9 - i) * 60_000,
                served_by: Some(Route::from(if i < 5 { "claude" } else { "gpt" })),
                status: RequestStatus::Ok,
                latency_ms: 10 * i as u64,
            })
            .collect();
        let board = BoardState::from_seed(start);
        assert_eq!(board.counters(700_000.0).answered, 10);
        // Four minutes later the four oldest fell out of the ten-minute window.
        let later = board.counters(700_000.0 + 4.0 * 60_000.0 + 1.0);
        assert_eq!(later.answered, 6, "{later:?}");
        assert_eq!(later.route(&Route::from("claude")), 1);
        assert_eq!(board.latencies().len(), 10);
        assert_eq!(*board.latencies().last().unwrap(), 90);
    }

    #[test]
    fn health_counts_the_last_minute_of_real_attempts() {
        let mut board = BoardState::from_seed(seed(0));
        let at = 100_000;
        for (i, outcome) in [
            AttemptOutcome::Ok,
            AttemptOutcome::Ok,
            AttemptOutcome::ServerError,
            AttemptOutcome::Timeout,
            AttemptOutcome::SkippedOpen,
            AttemptOutcome::InvalidRequest,
        ]
        .into_iter()
        .enumerate()
        {
            board.apply(
                GatewayEvent::RequestTrace(Trace {
                    id: format!("r{i}"),
                    served_by: Some(Route::from("gpt")),
                    attempts: vec![attempt("claude", outcome, 100 * (i as u64 + 1))],
                    latency_ms: 10,
                    status: RequestStatus::Ok,
                    at_ms: at + i as i64 * 1_000,
                    replica: None,
                }),
                0.0,
            );
        }
        let health = board.health("claude", (at + 10_000) as f64);
        assert_eq!(health.attempts, 5, "a skipped attempt never reached it");
        assert_eq!(
            health.errors, 2,
            "the caller's invalid request is not its failure"
        );
        assert!((health.error_rate() - 0.4).abs() < 1e-9);
        assert_eq!(health.p50_ms, Some(200));
        assert_eq!(health.last_success_ms, Some(at + 1_000));
        assert_eq!(health.spark.len(), SPARK_BUCKETS);
        assert_eq!(health.spark_errors.iter().sum::<u64>(), 2);
        // A minute later, nothing of it is left in the window.
        let later = board.health("claude", (at + 70_000) as f64);
        assert_eq!(later.attempts, 0);
        assert_eq!(
            later.last_success_ms,
            Some(at + 1_000),
            "the last success stays known"
        );
    }

    #[test]
    fn a_reseed_keeps_what_arrived_live_after_the_seed_was_read() {
        let mut board = BoardState::from_seed(seed(1_000));
        board.apply(trace("live-before", 900, "gpt", RequestStatus::Ok), 900.0);
        board.apply(
            trace("live-after", 2_500, "gpt", RequestStatus::Ok),
            2_500.0,
        );
        let mut fresh = seed(2_000);
        fresh.requests = vec![RequestPoint {
            id: "live-before".into(),
            at_ms: 900,
            served_by: Some(Route::from("gpt")),
            status: RequestStatus::Ok,
            latency_ms: 40,
        }];
        board.reseed(fresh);
        let counters = board.counters(2_600.0);
        assert_eq!(
            counters.answered, 2,
            "one from the seed, one newer than it, none twice"
        );
        assert_eq!(board.traces[0].id, "live-after");
    }

    #[test]
    fn lists_stay_bounded() {
        let mut board = BoardState::from_seed(seed(0));
        for i in 0..(MAX_REQUESTS + 500) {
            board.apply(
                trace(&format!("r{i}"), i as i64, "gpt", RequestStatus::Ok),
                0.0,
            );
        }
        assert_eq!(board.traces.len(), TRACES);
        assert_eq!(board.latencies().len(), POINTS);
        assert_eq!(board.requests.len(), MAX_REQUESTS);
        assert!(board.attempts.len() <= MAX_ATTEMPTS);
    }
}
