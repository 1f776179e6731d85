//! Prometheus metrics of one gateway, rendered by `GET /metrics`.
//!
//! Each gateway owns its registry (rather than a process-global recorder), so
//! several servers in one test process keep separate counts. Everything is
//! changed through methods; counts kept elsewhere (the audit writer's, the
//! cache's) are mirrored onto the registry when it is gathered.

use crate::shared::{AttemptOutcome, BreakerState, RequestStatus, Route, Usage};
use prometheus::core::{Collector, Desc};
use prometheus::proto::MetricFamily;
use prometheus::{
    Encoder, Gauge, HistogramOpts, HistogramVec, IntCounter, IntCounterVec, IntGaugeVec, Opts,
    Registry, TextEncoder,
};
use std::time::Duration;

/// Latency buckets in seconds: sub-millisecond cache hits up to a whole deadline.
const BUCKETS: &[f64] = &[
    0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0,
];

/// The gateway's metrics.
pub struct Metrics {
    /// Everything below is registered here.
    registry: Registry,
    /// Requests by route (provider, `cache`, `last-resort`) and final status.
    requests: IntCounterVec,
    /// Request latency by route.
    request_seconds: HistogramVec,
    /// Provider attempts by provider and outcome.
    attempts: IntCounterVec,
    /// Attempt latency by provider.
    attempt_seconds: HistogramVec,
    /// Breaker state per provider: 0 closed, 1 half-open, 2 open.
    breaker_state: IntGaugeVec,
    /// Breaker transitions by provider and target state.
    breaker_transitions: IntCounterVec,
    /// 1 while a fault is injected into the provider.
    faults_active: IntGaugeVec,
    /// Background probes of OPEN providers by outcome.
    probes: IntCounterVec,
    /// Tokens spent by route and kind (`prompt`, `completion`).
    tokens: IntCounterVec,
    /// Requests a client's rate limit refused, by client and limit.
    rate_limited: IntCounterVec,
}

/// A count kept elsewhere, read when the registry is gathered.
pub type Reading = Box<dyn Fn() -> u64 + Send + Sync>;

/// A value kept elsewhere, read when the registry is gathered.
pub type GaugeReading = Box<dyn Fn() -> f64 + Send + Sync>;

/// Mirrors counts kept outside the registry into registered metrics on every
/// gather. Counters only ever grow, so each is brought up to its source.
struct Mirror {
    counters: Vec<(IntCounter, Reading)>,
    gauges: Vec<(Gauge, GaugeReading)>,
    descs: Vec<Desc>,
}

impl Collector for Mirror {
    fn desc(&self) -> Vec<&Desc> {
        self.descs.iter().collect()
    }

    fn collect(&self) -> Vec<MetricFamily> {
        let mut families = Vec::new();
        for (counter, read) in &self.counters {
            counter.inc_by(read().saturating_sub(counter.get()));
            families.extend(counter.collect());
        }
        for (gauge, read) in &self.gauges {
            gauge.set(read());
            families.extend(gauge.collect());
        }
        families
    }
}

/// Counts and values that another component keeps, to mirror onto `/metrics`.
#[derive(Default)]
pub struct Mirrored {
    counters: Vec<(IntCounter, Reading)>,
    gauges: Vec<(Gauge, GaugeReading)>,
}

impl Mirrored {
    /// A counter named `name`, with constant labels, read from `read`.
    pub fn counter(
        mut self,
        name: &str,
        help: &str,
        labels: &[(&str, &str)],
        read: Reading,
    ) -> Self {
        let opts = labels
            .iter()
            .fold(Opts::new(name, help), |o, (k, v)| o.const_label(*k, *v));
        self.counters
            .push((IntCounter::with_opts(opts).expect("valid metric"), read));
        self
    }

    /// A gauge named `name`, read from `read`.
    pub fn gauge(mut self, name: &str, help: &str, read: GaugeReading) -> Self {
        self.gauges
            .push((Gauge::new(name, help).expect("valid metric"), read));
        self
    }
}

impl Metrics {
    /// Registers every metric, with a breaker gauge per provider starting CLOSED.
    pub fn new<'a>(providers: impl IntoIterator<Item = &'a str>) -> Self {
        let registry = Registry::new();
        let counter = |name: &str, help: &str, labels: &[&str]| {
            let c = IntCounterVec::new(Opts::new(name, help), labels).expect("valid metric");
            registry
                .register(Box::new(c.clone()))
                .expect("unique metric");
            c
        };
        let gauge = |name: &str, help: &str, labels: &[&str]| {
            let g = IntGaugeVec::new(Opts::new(name, help), labels).expect("valid metric");
            registry
                .register(Box::new(g.clone()))
                .expect("unique metric");
            g
        };
        let histogram = |name: &str, help: &str, labels: &[&str]| {
            let h = HistogramVec::new(
                HistogramOpts::new(name, help).buckets(BUCKETS.to_vec()),
                labels,
            )
            .expect("valid metric");
            registry
                .register(Box::new(h.clone()))
                .expect("unique metric");
            h
        };
        let metrics = Self {
            requests: counter(
                "chaosai_requests_total",
                "Requests by serving route and status",
                &["route", "status"],
            ),
            request_seconds: histogram(
                "chaosai_request_duration_seconds",
                "Request latency by route",
                &["route"],
            ),
            attempts: counter(
                "chaosai_attempts_total",
                "Provider attempts by outcome",
                &["provider", "outcome"],
            ),
            attempt_seconds: histogram(
                "chaosai_attempt_duration_seconds",
                "Attempt latency by provider",
                &["provider"],
            ),
            breaker_state: gauge(
                "chaosai_breaker_state",
                "Breaker state: 0 closed, 1 half-open, 2 open",
                &["provider"],
            ),
            breaker_transitions: counter(
                "chaosai_breaker_transitions_total",
                "Breaker transitions by target state",
                &["provider", "to"],
            ),
            faults_active: gauge(
                "chaosai_faults_active",
                "1 while a fault is injected",
                &["provider"],
            ),
            probes: counter(
                "chaosai_probes_total",
                "Background probes of OPEN providers by outcome",
                &["provider", "outcome"],
            ),
            tokens: counter(
                "chaosai_tokens_total",
                "Tokens spent by serving route and kind",
                &["route", "kind"],
            ),
            rate_limited: counter(
                "chaosai_client_rate_limited_total",
                "Requests refused by a client's rate limit",
                &["client", "limit"],
            ),
            registry,
        };
        for name in providers {
            metrics.breaker_state.with_label_values(&[name]).set(0);
            metrics.faults_active.with_label_values(&[name]).set(0);
        }
        metrics
    }

    /// Counts a finished request and its latency.
    pub fn request(&self, route: Option<&Route>, status: RequestStatus, latency: Duration) {
        let route = route.map_or("none", Route::as_str);
        self.requests
            .with_label_values(&[route, status.as_str()])
            .inc();
        self.request_seconds
            .with_label_values(&[route])
            .observe(latency.as_secs_f64());
    }

    /// Counts one provider attempt; `elapsed` is its latency when it made I/O.
    pub fn attempt(&self, provider: &str, outcome: AttemptOutcome, elapsed: Option<Duration>) {
        self.attempts
            .with_label_values(&[provider, outcome.as_str()])
            .inc();
        if let Some(elapsed) = elapsed {
            self.attempt_seconds
                .with_label_values(&[provider])
                .observe(elapsed.as_secs_f64());
        }
    }

    /// Counts the tokens a finished request spent.
    pub fn tokens(&self, route: Option<&Route>, usage: Usage) {
        let route = route.map_or("none", Route::as_str);
        self.tokens
            .with_label_values(&[route, "prompt"])
            .inc_by(usage.prompt_tokens);
        self.tokens
            .with_label_values(&[route, "completion"])
            .inc_by(usage.completion_tokens);
    }

    /// Counts a request that `client`'s `limit` refused.
    pub fn rate_limited(&self, client: &str, limit: &str) {
        self.rate_limited.with_label_values(&[client, limit]).inc();
    }

    /// Counts one background probe.
    pub fn probe(&self, provider: &str, outcome: AttemptOutcome) {
        self.probes
            .with_label_values(&[provider, outcome.as_str()])
            .inc();
    }

    /// Records a breaker's new state.
    pub fn breaker(&self, provider: &str, to: BreakerState) {
        self.breaker_state
            .with_label_values(&[provider])
            .set(i64::from(to.level()));
        self.breaker_transitions
            .with_label_values(&[provider, to.as_str()])
            .inc();
    }

    /// Records whether a fault is in force on `provider`.
    pub fn fault_active(&self, provider: &str, active: bool) {
        self.faults_active
            .with_label_values(&[provider])
            .set(i64::from(active));
    }

    /// Mirrors counts another component keeps (the audit writer, the cache).
    pub fn mirror(&self, mirrored: Mirrored) {
        let descs = mirrored
            .counters
            .iter()
            .flat_map(|(c, _)| c.desc().into_iter().cloned())
            .chain(
                mirrored
                    .gauges
                    .iter()
                    .flat_map(|(g, _)| g.desc().into_iter().cloned()),
            )
            .collect();
        let mirror = Mirror {
            counters: mirrored.counters,
            gauges: mirrored.gauges,
            descs,
        };
        if let Err(err) = self.registry.register(Box::new(mirror)) {
            tracing::error!(error = %err, "metrics not mirrored");
        }
    }

    /// The Prometheus text exposition of every metric.
    pub fn render(&self) -> String {
        let mut buffer = Vec::new();
        let _ = TextEncoder::new().encode(&self.registry.gather(), &mut buffer);
        String::from_utf8(buffer).unwrap_or_default()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::atomic::{AtomicU64, Ordering};
    use std::sync::Arc;

    #[test]
    fn mirrored_counts_follow_their_source() {
        let metrics = Metrics::new(["gpt"]);
        let source = Arc::new(AtomicU64::new(3));
        let read = source.clone();
        metrics.mirror(
            Mirrored::default()
                .counter(
                    "chaosai_test_total",
                    "A test count",
                    &[("result", "hit")],
                    Box::new(move || read.load(Ordering::Relaxed)),
                )
                .gauge("chaosai_test_ratio", "A test ratio", Box::new(|| 0.5)),
        );
        assert!(metrics
            .render()
            .contains("chaosai_test_total{result=\"hit\"} 3"));
        source.store(7, Ordering::Relaxed);
        let text = metrics.render();
        assert!(
            text.contains("chaosai_test_total{result=\"hit\"} 7"),
            "{text}"
        );
        assert!(text.contains("chaosai_test_ratio 0.5"), "{text}");
        metrics.attempt("gpt", AttemptOutcome::SkippedOpen, None);
        assert!(metrics
            .render()
            .contains("chaosai_attempts_total{outcome=\"skipped_open\",provider=\"gpt\"} 1"));
    }
}
