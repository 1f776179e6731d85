//! Prometheus metrics of one gateway, rendered by `GET /metrics`.
//!
//! Each gateway owns its registry (rather than a process-global recorder), so
//! several servers in one test process keep separate counts.

use crate::shared::BreakerState;
use prometheus::{
    Encoder, HistogramOpts, HistogramVec, IntCounterVec, IntGaugeVec, Opts, Registry, TextEncoder,
};

/// Latency buckets in seconds: sub-millisecond cache hits up to a whole deadline.
const BUCKETS: &[f64] = &[
    0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0,
];

/// The gateway's metrics.
pub struct Metrics {
    /// Everything below is registered here.
    registry: Registry,
    /// Requests by route (provider, `cache`, `last-resort`) and final status.
    pub requests: IntCounterVec,
    /// Request latency by route.
    pub request_seconds: HistogramVec,
    /// Provider attempts by provider and outcome (`ok`, `server_error`, `skipped_open`, …).
    pub attempts: IntCounterVec,
    /// Attempt latency by provider.
    pub attempt_seconds: HistogramVec,
    /// Breaker state per provider: 0 closed, 1 half-open, 2 open.
    pub breaker_state: IntGaugeVec,
    /// Breaker transitions by provider and target state.
    pub breaker_transitions: IntCounterVec,
    /// 1 while a fault is injected into the provider.
    pub faults_active: IntGaugeVec,
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
            registry,
        };
        for name in providers {
            metrics.breaker_state.with_label_values(&[name]).set(0);
            metrics.faults_active.with_label_values(&[name]).set(0);
        }
        metrics
    }

    /// Records a breaker's new state.
    pub fn breaker(&self, provider: &str, to: BreakerState) {
        self.breaker_state
            .with_label_values(&[provider])
            .set(i64::from(to.level()));
        let to_label = match to {
            BreakerState::Closed => "closed",
            BreakerState::Open => "open",
            BreakerState::HalfOpen => "half_open",
        };
        self.breaker_transitions
            .with_label_values(&[provider, to_label])
            .inc();
    }

    /// The Prometheus text exposition of every metric.
    pub fn render(&self) -> String {
        let mut buffer = Vec::new();
        let _ = TextEncoder::new().encode(&self.registry.gather(), &mut buffer);
        String::from_utf8(buffer).unwrap_or_default()
    }
}
