//! The circuit breaker: a pure state machine, one per provider.
//!
//! CLOSED counts consecutive failures and opens at the threshold. OPEN rejects
//! every call without I/O until its cool-down ends; then exactly one probe goes,
//! HALF-OPEN, while every other call keeps skipping. The probe is the gateway's
//! own cheap request ([`ProbeMode::Background`], the default) or the first
//! customer request ([`ProbeMode::Request`]). A successful probe closes the
//! breaker; a failed one re-opens it with a doubled cool-down. A 429's
//! Retry-After, when longer than the cool-down, wins; nothing parks a provider
//! longer than `max_open_for`, so a recovered provider is found within it.
//!
//! A provider that fails again soon after it closed re-opens with the doubled
//! cool-down rather than the base one, so a flapping provider cannot flip the
//! breaker faster than its cool-down.
//!
//! Replicas share what their breakers learn ([`Breaker::follow`]): the shared
//! consecutive-failure count, an opening and its cool-down, a probe's success.
//! Following is silent about its source; the caller names the replica in the
//! transition's reason.
//!
//! The clock is passed in (`now`), so tests step time without sleeping.

use crate::shared::{AttemptOutcome, BreakerState, ProbeMode};
use std::time::{Duration, Instant};

/// Thresholds of one provider's breaker.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct BreakerConfig {
    /// Consecutive failures that open the breaker.
    pub failure_threshold: u32,
    /// First cool-down before a probe.
    pub open_for: Duration,
    /// Ceiling of the doubled cool-down, and of any Retry-After.
    pub max_open_for: Duration,
    /// Who probes an OPEN provider.
    pub probe: ProbeMode,
}

impl Default for BreakerConfig {
    fn default() -> Self {
        Self {
            failure_threshold: 3,
            open_for: Duration::from_secs(4),
            max_open_for: Duration::from_secs(12),
            probe: ProbeMode::Background,
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

/// What another replica's breaker of the same provider learned.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Remote {
    /// The provider's consecutive failures across the cluster (0: it answered).
    Failures(u32),
    /// It opened there, with this long before a probe may go.
    Opened {
        /// The cool-down it chose.
        retry_in: Duration,
    },
    /// A probe there succeeded: the provider is back.
    Closed,
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
    /// When a probe last closed the breaker, to tell a flapping provider.
    recovered_at: Option<Instant>,
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
            recovered_at: None,
        }
    }

    /// Who probes this breaker.
    pub fn probe_mode(&self) -> ProbeMode {
        self.config.probe
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

    /// Asks to call the provider now for a customer. With customer probes, an
    /// OPEN breaker whose cool-down has ended turns HALF-OPEN and admits this
    /// call as the probe; with background probes, customers never probe.
    pub fn admit(&mut self, now: Instant) -> (Admission, Option<Transition>) {
        match (self.state, self.config.probe) {
            (BreakerState::Closed, _) => (Admission::Call, None),
            (_, ProbeMode::Background) => (Admission::Reject, None),
            (_, ProbeMode::Request) => match self.begin_probe(now) {
                Some((admission, transition)) => (admission, transition),
                None => (Admission::Reject, None),
            },
        }
    }

    /// Whether an OPEN breaker's cool-down is over and its probe slot is free.
    pub fn probe_due(&self, now: Instant) -> bool {
        match self.state {
            BreakerState::Closed => false,
            BreakerState::Open => now >= self.open_until,
            BreakerState::HalfOpen => !self.probe_in_flight,
        }
    }

    /// Takes the probe's slot, when one is due: the single call whose outcome
    /// decides between CLOSED and OPEN.
    pub fn begin_probe(&mut self, now: Instant) -> Option<(Admission, Option<Transition>)> {
        if !self.probe_due(now) {
            return None;
        }
        self.probe_in_flight = true;
        let transition = (self.state == BreakerState::Open).then(|| {
            let how = match self.config.probe {
                ProbeMode::Background => "probing in the background",
                ProbeMode::Request => "the next request probes",
            };
            self.move_to(
                BreakerState::HalfOpen,
                now,
                format!("cool-down over: {how}"),
            )
        });
        Some((Admission::Probe, transition))
    }

    /// Records a success of an admitted call.
    pub fn on_success(&mut self, admission: Admission, now: Instant) -> Option<Transition> {
        self.consecutive_failures = 0;
        if admission == Admission::Probe && self.state == BreakerState::HalfOpen {
            self.probe_in_flight = false;
            self.recovered_at = Some(now);
            return Some(self.move_to(BreakerState::Closed, now, "probe succeeded".into()));
        }
        None
    }

    /// The cool-down of an opening now, and why: doubled after a failed probe or
    /// when the provider failed again soon after it recovered, a longer
    /// Retry-After winning, nothing beyond `max_open_for`.
    fn cool_down(&mut self, doubled: bool, retry_after: Option<Duration>) -> Duration {
        let max = self.config.max_open_for.max(self.config.open_for);
        self.current_open_for = if doubled {
            (self.current_open_for * 2).min(max)
        } else {
            self.config.open_for
        };
        retry_after
            .map_or(self.current_open_for, |r| r.max(self.current_open_for))
            .min(max)
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
                let cool_down = self.cool_down(true, retry_after);
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
                // A provider that fails again within the longest cool-down of
                // its recovery is flapping: it gets no fresh, short cool-down.
                let flapping = self
                    .recovered_at
                    .is_some_and(|at| now.saturating_duration_since(at) < self.config.max_open_for);
                let cool_down = self.cool_down(flapping, retry_after);
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
    /// Takes in what another replica learned, `from` naming it in the reason of
    /// any transition. A shared failure count at the threshold opens a CLOSED
    /// breaker as its own failures would; an opening elsewhere opens it for the
    /// same cool-down (or extends an opening here); a probe's success elsewhere
    /// closes it, unless a probe of its own is in flight and will decide.
    pub fn follow(&mut self, remote: &Remote, from: &str, now: Instant) -> Option<Transition> {
        match (*remote).clone() {
            Remote::Failures(count) => {
                if self.state != BreakerState::Closed {
                    return None;
                }
                // A count that went back to 0 is a success elsewhere; otherwise the
                // larger view wins (a failure here may not have reached Redis yet).
                self.consecutive_failures = if count == 0 {
                    0
                } else {
                    self.consecutive_failures.max(count)
                };
                if self.consecutive_failures < self.config.failure_threshold {
                    return None;
                }
                let cool_down = self.cool_down(false, None);
                self.open_until = now + cool_down;
                Some(self.move_to(
                    BreakerState::Open,
                    now,
                    format!(
                        "{} consecutive failures across replicas (last on {from}); probe in {}s",
                        self.consecutive_failures,
                        cool_down.as_secs()
                    ),
                ))
            }
            Remote::Opened { retry_in } => {
                let retry_in = retry_in.min(self.config.max_open_for.max(self.config.open_for));
                let until = now + retry_in;
                match self.state {
                    BreakerState::Open => {
                        self.open_until = self.open_until.max(until);
                        None
                    }
                    BreakerState::HalfOpen if self.probe_in_flight => None,
                    BreakerState::Closed | BreakerState::HalfOpen => {
                        self.open_until = until;
                        self.current_open_for = self.current_open_for.max(retry_in);
                        Some(self.move_to(
                            BreakerState::Open,
                            now,
                            format!("opened on {from}; probe in {}s", retry_in.as_secs()),
                        ))
                    }
                }
            }
            Remote::Closed => {
                if self.state == BreakerState::Closed || self.probe_in_flight {
                    return None;
                }
                self.consecutive_failures = 0;
                self.recovered_at = Some(now);
                Some(self.move_to(
                    BreakerState::Closed,
                    now,
                    format!("probe on {from} succeeded"),
                ))
            }
        }
    }

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
                probe: ProbeMode::Request,
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
        // A success, then a long healthy spell: the next opening is back at base.
        let (probe, _) = b.admit(now);
        b.on_success(probe, now);
        let later = now + Duration::from_secs(31);
        (0..3).for_each(|_| {
            fail(&mut b, later);
        });
        assert_eq!(b.retry_in(later), Some(Duration::from_secs(10)));
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
                Some(Duration::from_secs(25)),
                t0,
            );
        }
        assert_eq!(b.state(), Open);
        assert_eq!(b.retry_in(t0), Some(Duration::from_secs(25)));
        assert_eq!(b.admit(t0 + Duration::from_secs(24)).0, Admission::Reject);
        assert_eq!(b.admit(t0 + Duration::from_secs(25)).0, Admission::Probe);
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

    #[test]
    fn no_retry_after_parks_a_provider_beyond_the_ceiling() {
        let t0 = Instant::now();
        for asked in [31, 3_600, 365 * 86_400, u64::MAX / 4] {
            let mut b = breaker(t0);
            for _ in 0..3 {
                let (a, _) = b.admit(t0);
                b.on_failure(
                    a,
                    AttemptOutcome::RateLimited,
                    Some(Duration::from_secs(asked)),
                    t0,
                );
            }
            assert_eq!(
                b.retry_in(t0),
                Some(Duration::from_secs(30)),
                "asked {asked}"
            );
        }
    }

    fn background(now: Instant) -> Breaker {
        Breaker::new(
            BreakerConfig {
                probe: ProbeMode::Background,
                ..BreakerConfig::default()
            },
            now,
        )
    }

    #[test]
    fn with_background_probes_no_customer_is_ever_the_probe() {
        let t0 = Instant::now();
        let mut b = background(t0);
        (0..3).for_each(|_| {
            fail(&mut b, t0);
        });
        let due = t0 + Duration::from_secs(4);
        assert!(!b.probe_due(due - Duration::from_millis(1)));
        assert!(b.probe_due(due));
        // Customers keep skipping, cool-down or not.
        assert_eq!(b.admit(due).0, Admission::Reject);
        let (probe, transition) = b.begin_probe(due).expect("the probe is due");
        assert_eq!(transition.map(|t| (t.from, t.to)), Some((Open, HalfOpen)));
        assert!(b.begin_probe(due).is_none(), "one probe at a time");
        assert_eq!(b.admit(due).0, Admission::Reject);
        let closed = b.on_success(probe, due).expect("closes");
        assert_eq!((closed.from, closed.to), (HalfOpen, Closed));
        assert_eq!(b.admit(due).0, Admission::Call);
    }

    #[test]
    fn a_provider_down_for_a_minute_is_found_within_the_ceiling_of_recovering() {
        let t0 = Instant::now();
        let mut b = background(t0);
        (0..3).for_each(|_| {
            fail(&mut b, t0);
        });
        // Down until t0 + 60 s; the prober probes whenever one is due.
        let recovered = t0 + Duration::from_secs(60);
        let mut now = t0;
        let mut probes = 0;
        while b.state() != Closed {
            now += Duration::from_millis(250);
            if let Some((probe, _)) = b.begin_probe(now) {
                probes += 1;
                if now >= recovered {
                    b.on_success(probe, now);
                } else {
                    b.on_failure(probe, AttemptOutcome::ServerError, None, now);
                }
            }
        }
        assert!(
            now - recovered <= Duration::from_secs(12),
            "closed {:?} after recovering",
            now - recovered
        );
        assert!(probes <= 8, "{probes} probes in a minute");
    }

    #[test]
    fn a_flapping_provider_cannot_flip_the_breaker_faster_than_its_cool_down() {
        let t0 = Instant::now();
        let mut b = background(t0);
        let mut now = t0;
        let mut openings = Vec::new();
        // Up for 2 s, down for 2 s, for two minutes; three requests a second.
        while now < t0 + Duration::from_secs(120) {
            now += Duration::from_millis(333);
            let up = (now - t0).as_secs() % 4 < 2;
            let (admission, _) = match b.begin_probe(now) {
                Some(probe) => probe,
                None => b.admit(now),
            };
            if admission == Admission::Reject {
                continue;
            }
            let t = if up {
                b.on_success(admission, now)
            } else {
                b.on_failure(admission, AttemptOutcome::ServerError, None, now)
            };
            if t.is_some_and(|t| t.to == Open) {
                openings.push(now);
            }
        }
        // Each opening follows the last by at least its cool-down, and the
        // cool-down grows to the ceiling: the breaker settles instead of
        // flipping every few seconds.
        let gaps: Vec<Duration> = openings.windows(2).map(|w| w[1] - w[0]).collect();
        assert!(
            gaps.iter().skip(2).all(|g| *g >= Duration::from_secs(12)),
            "{gaps:?}"
        );
        assert!(openings.len() <= 12, "{} openings", openings.len());
    }

    #[test]
    fn a_shared_count_at_the_threshold_opens_and_a_zero_resets() {
        let t0 = Instant::now();
        let mut b = breaker(t0);
        fail(&mut b, t0);
        assert!(b.follow(&Remote::Failures(2), "b", t0).is_none());
        assert_eq!(b.consecutive_failures(), 2);
        assert!(b.follow(&Remote::Failures(0), "b", t0).is_none());
        assert_eq!(b.consecutive_failures(), 0, "a success elsewhere resets");
        let t = b.follow(&Remote::Failures(3), "b", t0).expect("opens");
        assert_eq!((t.from, t.to), (Closed, Open));
        assert!(
            t.reason.contains("across replicas (last on b)"),
            "{}",
            t.reason
        );
        assert_eq!(b.retry_in(t0), Some(Duration::from_secs(10)));
    }

    #[test]
    fn an_opening_elsewhere_opens_here_for_its_cool_down_and_a_probe_there_closes() {
        let t0 = Instant::now();
        let mut b = breaker(t0);
        let opened = Remote::Opened {
            retry_in: Duration::from_secs(20),
        };
        let t = b.follow(&opened, "a", t0).expect("opens");
        assert!(t.reason.contains("opened on a"), "{}", t.reason);
        assert_eq!(b.admit(t0 + Duration::from_secs(19)).0, Admission::Reject);
        // Already OPEN: a later opening elsewhere only extends the cool-down.
        let later = Remote::Opened {
            retry_in: Duration::from_secs(25),
        };
        assert!(b
            .follow(&later, "a", t0 + Duration::from_secs(10))
            .is_none());
        assert_eq!(
            b.retry_in(t0 + Duration::from_secs(10)),
            Some(Duration::from_secs(25))
        );
        let closed = b
            .follow(&Remote::Closed, "a", t0 + Duration::from_secs(11))
            .expect("closes");
        assert_eq!((closed.from, closed.to), (Open, Closed));
        assert_eq!(b.admit(t0 + Duration::from_secs(11)).0, Admission::Call);
        // A cool-down from elsewhere is capped like one of our own.
        let huge = Remote::Opened {
            retry_in: Duration::from_secs(3_600),
        };
        b.follow(&huge, "a", t0);
        assert_eq!(b.retry_in(t0), Some(Duration::from_secs(30)));
    }

    #[test]
    fn a_probe_in_flight_here_decides_whatever_another_replica_says() {
        let t0 = Instant::now();
        let mut b = breaker(t0);
        (0..3).for_each(|_| {
            fail(&mut b, t0);
        });
        let t1 = t0 + Duration::from_secs(10);
        let (probe, _) = b.admit(t1);
        assert_eq!(probe, Admission::Probe);
        assert!(b.follow(&Remote::Closed, "a", t1).is_none());
        let opened = Remote::Opened {
            retry_in: Duration::from_secs(20),
        };
        assert!(b.follow(&opened, "a", t1).is_none());
        assert_eq!(b.state(), HalfOpen);
        assert!(b.on_success(probe, t1).is_some());
    }
}
