//! The circuit breaker: a pure state machine, one per provider.
//!
//! CLOSED counts consecutive failures and opens at the threshold. OPEN rejects
//! every call without I/O until its cool-down ends; then exactly one call is
//! admitted as a HALF-OPEN probe while the others keep skipping. A successful
//! probe closes the breaker; a failed one re-opens it with a doubled (capped)
//! cool-down. A 429's Retry-After, when longer than the cool-down, wins.
//!
//! The clock is passed in (`now`), so tests step time without sleeping.

use crate::shared::{AttemptOutcome, BreakerState};
use std::time::{Duration, Instant};

/// Thresholds of one provider's breaker.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct BreakerConfig {
    /// Consecutive failures that open the breaker.
    pub failure_threshold: u32,
    /// First cool-down before a probe.
    pub open_for: Duration,
    /// Ceiling of the doubled cool-down after failed probes.
    pub max_open_for: Duration,
}

impl Default for BreakerConfig {
    fn default() -> Self {
        Self {
            failure_threshold: 3,
            open_for: Duration::from_secs(10),
            max_open_for: Duration::from_secs(120),
        }
    }
}

/// A change of state, with why it happened; every one becomes an event.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Transition {
    /// State before.
    pub from: BreakerState,
    /// State after.
    pub to: BreakerState,
    /// Human-readable cause ("3 consecutive failures: server_error", "probe succeeded", …).
    pub reason: String,
}

/// What the breaker lets a caller do.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Admission {
    /// A normal call while CLOSED.
    Call,
    /// The single HALF-OPEN probe; its outcome decides the state.
    Probe,
    /// Skip this provider without any I/O.
    Reject,
}

/// One provider's breaker.
#[derive(Clone, Debug)]
pub struct Breaker {
    /// Thresholds.
    config: BreakerConfig,
    /// Current state.
    state: BreakerState,
    /// Failures since the last success (CLOSED), kept for display in other states.
    consecutive_failures: u32,
    /// When the current state began.
    since: Instant,
    /// While OPEN: when a probe may be admitted.
    open_until: Instant,
    /// The cool-down used for the last opening, doubled after a failed probe.
    current_open_for: Duration,
    /// While HALF-OPEN: whether the probe's slot is taken.
    probe_in_flight: bool,
}

impl Breaker {
    /// A closed breaker.
    pub fn new(config: BreakerConfig, now: Instant) -> Self {
        Self {
            config,
            state: BreakerState::Closed,
            consecutive_failures: 0,
            since: now,
            open_until: now,
            current_open_for: config.open_for,
            probe_in_flight: false,
        }
    }

    /// Current state.
    pub fn state(&self) -> BreakerState {
        self.state
    }

    /// Consecutive failures counted so far.
    pub fn consecutive_failures(&self) -> u32 {
        self.consecutive_failures
    }

    /// When the current state began.
    pub fn since(&self) -> Instant {
        self.since
    }

    /// While OPEN, the time left before a probe is allowed.
    pub fn retry_in(&self, now: Instant) -> Option<Duration> {
        (self.state == BreakerState::Open).then(|| self.open_until.saturating_duration_since(now))
    }

    fn move_to(&mut self, to: BreakerState, now: Instant, reason: String) -> Transition {
        let from = std::mem::replace(&mut self.state, to);
        self.since = now;
        Transition { from, to, reason }
    }

    /// Asks to call the provider now. An OPEN breaker whose cool-down has ended
    /// turns HALF-OPEN and admits this call as the probe.
    pub fn admit(&mut self, now: Instant) -> (Admission, Option<Transition>) {
        match self.state {
            BreakerState::Closed => (Admission::Call, None),
            BreakerState::Open if now >= self.open_until => {
                self.probe_in_flight = true;
                let t = self.move_to(
                    BreakerState::HalfOpen,
                    now,
                    "cool-down over: probing".into(),
                );
                (Admission::Probe, Some(t))
            }
            BreakerState::Open => (Admission::Reject, None),
            BreakerState::HalfOpen if !self.probe_in_flight => {
                self.probe_in_flight = true;
                (Admission::Probe, None)
            }
            BreakerState::HalfOpen => (Admission::Reject, None),
        }
    }

    /// Records a success of an admitted call.
    pub fn on_success(&mut self, admission: Admission, now: Instant) -> Option<Transition> {
        self.consecutive_failures = 0;
        if admission == Admission::Probe && self.state == BreakerState::HalfOpen {
            self.probe_in_flight = false;
            self.current_open_for = self.config.open_for;
            return Some(self.move_to(BreakerState::Closed, now, "probe succeeded".into()));
        }
        None
    }

    /// Records a failure that counts against the provider's health. `retry_after`
    /// is what a 429 asked for.
    pub fn on_failure(
        &mut self,
        admission: Admission,
        kind: AttemptOutcome,
        retry_after: Option<Duration>,
        now: Instant,
    ) -> Option<Transition> {
        self.consecutive_failures = self.consecutive_failures.saturating_add(1);
        match self.state {
            BreakerState::HalfOpen if admission == Admission::Probe => {
                self.probe_in_flight = false;
                self.current_open_for = (self.current_open_for * 2).min(self.config.max_open_for);
                let cool_down =
                    retry_after.map_or(self.current_open_for, |r| r.max(self.current_open_for));
                self.open_until = now + cool_down;
                Some(self.move_to(
                    BreakerState::Open,
                    now,
                    format!(
                        "probe failed: {kind}; next probe in {}s",
                        cool_down.as_secs()
                    ),
                ))
            }
            BreakerState::Closed if self.consecutive_failures >= self.config.failure_threshold => {
                self.current_open_for = self.config.open_for;
                let cool_down =
                    retry_after.map_or(self.current_open_for, |r| r.max(self.current_open_for));
                self.open_until = now + cool_down;
                Some(self.move_to(
                    BreakerState::Open,
                    now,
                    format!(
                        "{} consecutive failures (last: {kind}); probe in {}s",
                        self.consecutive_failures,
                        cool_down.as_secs()
                    ),
                ))
            }
            _ => None,
        }
    }

    /// Returns an admitted call that ended without a verdict on the provider's
    /// health (the customer left, or the request was the caller's own error).
    /// A probe's slot is freed so the next call can probe.
    pub fn on_abandon(&mut self, admission: Admission) {
        if admission == Admission::Probe {
            self.probe_in_flight = false;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use BreakerState::*;

    fn breaker(now: Instant) -> Breaker {
        Breaker::new(
            BreakerConfig {
                failure_threshold: 3,
                open_for: Duration::from_secs(10),
                max_open_for: Duration::from_secs(30),
            },
            now,
        )
    }

    fn fail(b: &mut Breaker, now: Instant) -> Option<Transition> {
        let (admission, _) = b.admit(now);
        assert_ne!(admission, Admission::Reject);
        b.on_failure(admission, AttemptOutcome::ServerError, None, now)
    }

    #[test]
    fn opens_after_the_threshold_of_consecutive_failures() {
        let t0 = Instant::now();
        let mut b = breaker(t0);
        assert!(fail(&mut b, t0).is_none());
        assert!(fail(&mut b, t0).is_none());
        let t = fail(&mut b, t0).expect("third failure opens");
        assert_eq!((t.from, t.to), (Closed, Open));
        assert!(t.reason.contains("3 consecutive failures"), "{}", t.reason);
        assert_eq!(b.admit(t0 + Duration::from_secs(9)).0, Admission::Reject);
    }

    #[test]
    fn a_success_resets_the_count() {
        let t0 = Instant::now();
        let mut b = breaker(t0);
        fail(&mut b, t0);
        fail(&mut b, t0);
        let (a, _) = b.admit(t0);
        assert!(b.on_success(a, t0).is_none());
        assert!(fail(&mut b, t0).is_none());
        assert!(fail(&mut b, t0).is_none());
        assert_eq!(b.state(), Closed);
    }

    #[test]
    fn after_the_cool_down_exactly_one_probe_is_admitted() {
        let t0 = Instant::now();
        let mut b = breaker(t0);
        (0..3).for_each(|_| {
            fail(&mut b, t0);
        });
        let t1 = t0 + Duration::from_secs(10);
        let (probe, transition) = b.admit(t1);
        assert_eq!(probe, Admission::Probe);
        assert_eq!(transition.map(|t| (t.from, t.to)), Some((Open, HalfOpen)));
        // Concurrent callers meanwhile skip the provider.
        for _ in 0..5 {
            assert_eq!(b.admit(t1).0, Admission::Reject);
        }
        let closed = b.on_success(probe, t1).expect("probe success closes");
        assert_eq!((closed.from, closed.to), (HalfOpen, Closed));
        assert_eq!(b.admit(t1).0, Admission::Call);
    }

    #[test]
    fn a_failed_probe_reopens_with_doubled_capped_backoff() {
        let t0 = Instant::now();
        let mut b = breaker(t0);
        (0..3).for_each(|_| {
            fail(&mut b, t0);
        });
        let mut now = t0 + Duration::from_secs(10);
        for expected in [20, 30, 30] {
            let (probe, _) = b.admit(now);
            assert_eq!(probe, Admission::Probe);
            let t = b
                .on_failure(probe, AttemptOutcome::Timeout, None, now)
                .unwrap();
            assert_eq!((t.from, t.to), (HalfOpen, Open));
            assert_eq!(b.retry_in(now), Some(Duration::from_secs(expected)));
            assert_eq!(
                b.admit(now + Duration::from_secs(expected - 1)).0,
                Admission::Reject
            );
            now += Duration::from_secs(expected);
        }
        // A success after all resets the cool-down to its base.
        let (probe, _) = b.admit(now);
        b.on_success(probe, now);
        (0..3).for_each(|_| {
            fail(&mut b, now);
        });
        assert_eq!(b.retry_in(now), Some(Duration::from_secs(10)));
    }

    #[test]
    fn a_longer_retry_after_wins() {
        let t0 = Instant::now();
        let mut b = breaker(t0);
        for _ in 0..3 {
            let (a, _) = b.admit(t0);
            b.on_failure(
                a,
                AttemptOutcome::RateLimited,
                Some(Duration::from_secs(45)),
                t0,
            );
        }
        assert_eq!(b.state(), Open);
        assert_eq!(b.retry_in(t0), Some(Duration::from_secs(45)));
        assert_eq!(b.admit(t0 + Duration::from_secs(44)).0, Admission::Reject);
        assert_eq!(b.admit(t0 + Duration::from_secs(45)).0, Admission::Probe);
        // A shorter one does not shorten the cool-down.
        let mut b = breaker(t0);
        for _ in 0..3 {
            let (a, _) = b.admit(t0);
            b.on_failure(
                a,
                AttemptOutcome::RateLimited,
                Some(Duration::from_secs(2)),
                t0,
            );
        }
        assert_eq!(b.retry_in(t0), Some(Duration::from_secs(10)));
    }

    #[test]
    fn an_abandoned_probe_frees_the_slot() {
        let t0 = Instant::now();
        let mut b = breaker(t0);
        (0..3).for_each(|_| {
            fail(&mut b, t0);
        });
        let t1 = t0 + Duration::from_secs(10);
        let (probe, _) = b.admit(t1);
        assert_eq!(b.admit(t1).0, Admission::Reject);
        b.on_abandon(probe);
        assert_eq!(b.state(), HalfOpen);
        assert_eq!(b.admit(t1).0, Admission::Probe, "the next caller probes");
    }
}
