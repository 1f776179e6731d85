//! The time the product's policy reads: breaker cool-downs, fault expiry, cache TTL
//! and the timestamps of events and audit rows.
//!
//! It is passed in (an `Arc<dyn Clock>`) rather than read from the OS, so tests
//! step it with [`ManualClock::advance`] instead of sleeping. Timeouts on the wire
//! (first byte, stall, deadline) stay on tokio's real timers: they bound real I/O.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

/// A source of monotonic and wall-clock time.
pub trait Clock: Send + Sync + 'static {
    /// Monotonic time, for durations and deadlines of policy (cool-downs, expiry).
    fn now(&self) -> Instant;
    /// Unix time in milliseconds, for timestamps that outlive the process.
    fn unix_ms(&self) -> i64;
}

/// The shared handle every component holds.
pub type SharedClock = Arc<dyn Clock>;

/// The operating system's clocks.
#[derive(Clone, Copy, Debug, Default)]
pub struct SystemClock;

impl Clock for SystemClock {
    fn now(&self) -> Instant {
        Instant::now()
    }

    fn unix_ms(&self) -> i64 {
        unix_ms_now()
    }
}

/// The system clock as a shared handle.
pub fn system() -> SharedClock {
    Arc::new(SystemClock)
}

/// Unix time in milliseconds from the operating system.
pub fn unix_ms_now() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as i64)
}

/// A clock that moves only when told to: both its monotonic and its wall time
/// advance together, by exactly the amount asked.
#[derive(Debug)]
pub struct ManualClock {
    /// Monotonic origin.
    start: Instant,
    /// Wall time at the origin.
    unix_start_ms: i64,
    /// Nanoseconds advanced since the origin.
    offset_ns: AtomicU64,
}

impl Default for ManualClock {
    fn default() -> Self {
        Self {
            start: Instant::now(),
            unix_start_ms: unix_ms_now(),
            offset_ns: AtomicU64::new(0),
        }
    }
}

impl ManualClock {
    /// A manual clock starting at the present moment.
    pub fn new() -> Arc<Self> {
        Arc::new(Self::default())
    }

    /// Moves time forward by `by`.
    pub fn advance(&self, by: Duration) {
        self.offset_ns
            .fetch_add(by.as_nanos() as u64, Ordering::AcqRel);
    }

    fn offset(&self) -> Duration {
        Duration::from_nanos(self.offset_ns.load(Ordering::Acquire))
    }
}

impl Clock for ManualClock {
    fn now(&self) -> Instant {
        self.start + self.offset()
    }

    fn unix_ms(&self) -> i64 {
        self.unix_start_ms + self.offset().as_millis() as i64
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_manual_clock_moves_both_times_together() {
        let clock = ManualClock::new();
        let (t0, u0) = (clock.now(), clock.unix_ms());
        clock.advance(Duration::from_millis(1_500));
        assert_eq!(clock.now() - t0, Duration::from_millis(1_500));
        assert_eq!(clock.unix_ms() - u0, 1_500);
    }
}
