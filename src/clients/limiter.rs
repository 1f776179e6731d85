//! Per-client rate limits as token buckets: a pure state machine on an injected
//! clock. Requests are taken one at a time at admission; tokens are known only
//! once the answer is counted, so they are charged afterwards and a client that
//! overspent waits until its bucket is back above zero.

use std::time::{Duration, Instant};

crate::spelled! {
    /// Which limit a client ran into.
    pub enum Limit {
        /// Requests per minute.
        Requests => "requests",
        /// Tokens per minute.
        Tokens => "tokens",
    }
}

/// A refused admission: which limit, and when to try again.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Limited {
    /// The limit reached.
    pub limit: Limit,
    /// Its size, per minute.
    pub per_minute: u32,
    /// Time until a request would be admitted.
    pub retry_after: Duration,
}

/// A bucket that refills `per_minute` units a minute, up to `per_minute`.
#[derive(Clone, Copy, Debug)]
struct Bucket {
    per_minute: u32,
    level: f64,
    at: Instant,
}

impl Bucket {
    fn new(per_minute: u32, now: Instant) -> Self {
        Self {
            per_minute,
            level: f64::from(per_minute),
            at: now,
        }
    }

    fn rate_per_sec(&self) -> f64 {
        f64::from(self.per_minute) / 60.0
    }

    fn refill(&mut self, now: Instant) {
        let elapsed = now.saturating_duration_since(self.at).as_secs_f64();
        self.level = (self.level + elapsed * self.rate_per_sec()).min(f64::from(self.per_minute));
        self.at = now;
    }

    /// Time until the level reaches `wanted`.
    fn wait_for(&self, wanted: f64) -> Duration {
        let missing = (wanted - self.level).max(0.0);
        Duration::from_secs_f64(missing / self.rate_per_sec())
    }
}

/// One client's limits; `None` for a limit it does not have.
#[derive(Clone, Debug)]
pub struct Limiter {
    requests: Option<Bucket>,
    tokens: Option<Bucket>,
    /// What this replica spent since it last told the others.
    unshared: Spent,
}

/// Requests admitted and tokens charged.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct Spent {
    /// Requests admitted.
    pub requests: u64,
    /// Tokens charged.
    pub tokens: u64,
}

impl Limiter {
    /// Full buckets for `rpm` requests and `tpm` tokens a minute.
    pub fn new(rpm: Option<u32>, tpm: Option<u32>, now: Instant) -> Self {
        Self {
            requests: rpm.filter(|&n| n > 0).map(|n| Bucket::new(n, now)),
            tokens: tpm.filter(|&n| n > 0).map(|n| Bucket::new(n, now)),
            unshared: Spent::default(),
        }
    }

    /// Admits one request, or says which limit refuses it and for how long.
    pub fn admit(&mut self, now: Instant) -> Result<(), Limited> {
        if let Some(tokens) = &mut self.tokens {
            tokens.refill(now);
            // Spent tokens are charged afterwards, so any positive balance admits.
            if tokens.level <= 0.0 {
                return Err(Limited {
                    limit: Limit::Tokens,
                    per_minute: tokens.per_minute,
                    retry_after: tokens.wait_for(1.0).max(Duration::from_millis(1)),
                });
            }
        }
        if let Some(requests) = &mut self.requests {
            requests.refill(now);
            if requests.level < 1.0 {
                return Err(Limited {
                    limit: Limit::Requests,
                    per_minute: requests.per_minute,
                    retry_after: requests.wait_for(1.0).max(Duration::from_millis(1)),
                });
            }
            requests.level -= 1.0;
        }
        self.unshared.requests = self.unshared.requests.saturating_add(1);
        Ok(())
    }

    /// Charges tokens an answer spent.
    pub fn charge(&mut self, now: Instant, tokens: u64) {
        if let Some(bucket) = &mut self.tokens {
            bucket.refill(now);
            // A debt of more than a few minutes' worth says nothing more.
            let floor = -10.0 * f64::from(bucket.per_minute);
            bucket.level = (bucket.level - tokens as f64).max(floor);
        }
        self.unshared.tokens = self.unshared.tokens.saturating_add(tokens);
    }

    /// Takes in what the client spent through other replicas: their requests
    /// and tokens come off these buckets, so its limits hold across the cluster
    /// rather than once per replica. Bounded below like a charge, so a burst
    /// elsewhere costs at most a minute's wait here.
    pub fn absorb(&mut self, now: Instant, spent: Spent) {
        for (bucket, amount) in [
            (&mut self.requests, spent.requests),
            (&mut self.tokens, spent.tokens),
        ] {
            if let Some(bucket) = bucket {
                bucket.refill(now);
                let floor = -f64::from(bucket.per_minute);
                bucket.level = (bucket.level - amount as f64).max(floor);
            }
        }
    }

    /// What this replica spent since the last call, for the other replicas.
    pub fn take_unshared(&mut self) -> Spent {
        std::mem::take(&mut self.unshared)
    }

    /// What is left of each limit now: (requests, tokens), `None` where unlimited.
    pub fn remaining(&mut self, now: Instant) -> (Option<u64>, Option<u64>) {
        let left = |bucket: &mut Option<Bucket>| {
            bucket.as_mut().map(|b| {
                b.refill(now);
                b.level.max(0.0) as u64
            })
        };
        (left(&mut self.requests), left(&mut self.tokens))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn requests_per_minute_refill_steadily() {
        let start = Instant::now();
        let mut limiter = Limiter::new(Some(2), None, start);
        assert!(limiter.admit(start).is_ok());
        assert!(limiter.admit(start).is_ok());
        let refused = limiter.admit(start).unwrap_err();
        assert_eq!(refused.limit, Limit::Requests);
        assert_eq!(refused.retry_after, Duration::from_secs(30));
        assert!(limiter.admit(start + Duration::from_secs(29)).is_err());
        assert!(limiter.admit(start + Duration::from_secs(30)).is_ok());
    }

    #[test]
    fn tokens_are_charged_after_the_answer_and_overspending_waits() {
        let start = Instant::now();
        let mut limiter = Limiter::new(None, Some(600), start);
        assert!(limiter.admit(start).is_ok());
        limiter.charge(start, 900);
        let refused = limiter.admit(start).unwrap_err();
        assert_eq!(refused.limit, Limit::Tokens);
        // 300 in debt at 10 a second: 30 s to get back above zero.
        assert!(refused.retry_after > Duration::from_secs(30));
        assert!(refused.retry_after < Duration::from_millis(30_200));
        assert!(limiter.admit(start + Duration::from_secs(31)).is_ok());
        assert_eq!(
            limiter.remaining(start + Duration::from_secs(31)),
            (None, Some(10))
        );
    }

    #[test]
    fn no_limit_admits_everything() {
        let start = Instant::now();
        let mut limiter = Limiter::new(None, None, start);
        for _ in 0..10_000 {
            assert!(limiter.admit(start).is_ok());
        }
        limiter.charge(start, u64::MAX);
        assert!(limiter.admit(start).is_ok());
    }

    #[test]
    fn spending_elsewhere_comes_off_these_buckets_and_local_spending_is_taken_once() {
        let start = Instant::now();
        let mut limiter = Limiter::new(Some(4), Some(1_000), start);
        assert!(limiter.admit(start).is_ok());
        limiter.charge(start, 300);
        assert_eq!(
            limiter.take_unshared(),
            Spent {
                requests: 1,
                tokens: 300
            }
        );
        assert_eq!(limiter.take_unshared(), Spent::default(), "taken once");
        // Three requests elsewhere: the fourth of the minute was the local one.
        limiter.absorb(
            start,
            Spent {
                requests: 3,
                tokens: 0,
            },
        );
        assert_eq!(limiter.admit(start).unwrap_err().limit, Limit::Requests);
        assert_eq!(
            limiter.take_unshared(),
            Spent::default(),
            "absorbed is not ours"
        );
        // A flood elsewhere costs at most a minute's wait, not an endless debt.
        limiter.absorb(
            start,
            Spent {
                requests: u64::MAX,
                tokens: u64::MAX,
            },
        );
        let later = start + Duration::from_secs(75);
        assert!(limiter.admit(later).is_ok());
    }
}
