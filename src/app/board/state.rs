//! What the board shows, folded from the live events. Pure and compiled for
//! both targets, so it is unit-tested natively.

use crate::shared::{AttemptSummary, BreakerState, GatewayEvent, ProviderStatus};
use std::collections::BTreeMap;

/// Requests kept in the live request path.
const TRACES: usize = 25;
/// Transitions kept in the timeline.
const TRANSITIONS: usize = 30;
/// Points in the latency chart.
const POINTS: usize = 60;

/// One request as the live path shows it.
#[derive(Clone, Debug, PartialEq)]
pub struct TraceRow {
    /// Request id.
    pub id: String,
    /// Who served it.
    pub served_by: String,
    /// Provider attempts in order.
    pub attempts: Vec<AttemptSummary>,
    /// Total time.
    pub latency_ms: u64,
    /// How it ended.
    pub status: String,
    /// When it finished (Unix ms).
    pub at_ms: u64,
}

/// One breaker transition in the timeline.
#[derive(Clone, Debug, PartialEq)]
pub struct TransitionRow {
    /// Provider.
    pub provider: String,
    /// State before.
    pub from: BreakerState,
    /// State after.
    pub to: BreakerState,
    /// Why.
    pub reason: String,
    /// When (Unix ms).
    pub at_ms: u64,
}

/// Everything on the board.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct BoardState {
    /// Providers in cascade order, from the latest snapshot.
    pub providers: Vec<ProviderStatus>,
    /// Local clock (ms) when the latest snapshot arrived, to age its durations.
    pub snapshot_at_ms: f64,
    /// Whether synthetic traffic runs.
    pub traffic: bool,
    /// Recent requests, newest first.
    pub traces: Vec<TraceRow>,
    /// Recent transitions, newest first.
    pub transitions: Vec<TransitionRow>,
    /// Requests answered since the board opened.
    pub answered: u64,
    /// Answers by route.
    pub by_route: BTreeMap<String, u64>,
    /// Answers that reached the customer broken.
    pub customer_errors: u64,
    /// Latencies of recent requests, oldest first, for the chart.
    pub latencies: Vec<u64>,
}

impl BoardState {
    /// Folds one event in; `now_ms` is the local clock.
    pub fn apply(&mut self, event: GatewayEvent, now_ms: f64) {
        match event {
            GatewayEvent::Snapshot { providers, traffic } => {
                self.providers = providers;
                self.traffic = traffic;
                self.snapshot_at_ms = now_ms;
            }
            GatewayEvent::BreakerTransition {
                provider,
                from,
                to,
                reason,
                at_ms,
            } => {
                if let Some(p) = self.providers.iter_mut().find(|p| p.name == provider) {
                    p.state = to;
                }
                self.transitions.insert(
                    0,
                    TransitionRow {
                        provider,
                        from,
                        to,
                        reason,
                        at_ms,
                    },
                );
                self.transitions.truncate(TRANSITIONS);
            }
            GatewayEvent::RequestTrace {
                id,
                served_by,
                attempts,
                latency_ms,
                status,
                at_ms,
            } => {
                self.answered += 1;
                *self.by_route.entry(served_by.clone()).or_default() += 1;
                if status == "stream_failed" {
                    self.customer_errors += 1;
                }
                self.latencies.push(latency_ms);
                if self.latencies.len() > POINTS {
                    self.latencies.remove(0);
                }
                self.traces.insert(
                    0,
                    TraceRow {
                        id,
                        served_by,
                        attempts,
                        latency_ms,
                        status,
                        at_ms,
                    },
                );
                self.traces.truncate(TRACES);
            }
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

    /// Answers served by `route`.
    pub fn route_count(&self, route: &str) -> u64 {
        self.by_route.get(route).copied().unwrap_or(0)
    }

    /// Share of answers served from the cache.
    pub fn cache_ratio(&self) -> f64 {
        if self.answered == 0 {
            0.0
        } else {
            self.route_count("cache") as f64 / self.answered as f64
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn provider(name: &str) -> ProviderStatus {
        ProviderStatus {
            name: name.into(),
            protocol: "openai".into(),
            model: "m".into(),
            priority: 0,
            simulated: true,
            state: BreakerState::Closed,
            consecutive_failures: 0,
            in_state_ms: 0,
            fault: None,
        }
    }

    fn trace(served_by: &str, status: &str) -> GatewayEvent {
        GatewayEvent::RequestTrace {
            id: "r".into(),
            served_by: served_by.into(),
            attempts: vec![],
            latency_ms: 40,
            status: status.into(),
            at_ms: 1,
        }
    }

    #[test]
    fn events_fold_into_what_the_board_shows() {
        let mut board = BoardState::default();
        board.apply(
            GatewayEvent::Snapshot {
                providers: vec![provider("claude"), provider("gpt")],
                traffic: true,
            },
            1000.0,
        );
        board.apply(
            GatewayEvent::BreakerTransition {
                provider: "claude".into(),
                from: BreakerState::Closed,
                to: BreakerState::Open,
                reason: "3 consecutive failures".into(),
                at_ms: 5,
            },
            1100.0,
        );
        board.apply(trace("gpt", "ok"), 1200.0);
        board.apply(trace("last-resort", "ok"), 1300.0);
        board.apply(trace("gpt", "stream_failed"), 1400.0);
        assert_eq!(board.providers[0].state, BreakerState::Open);
        assert_eq!(board.transitions[0].to, BreakerState::Open);
        assert_eq!(board.answered, 3);
        assert_eq!(board.route_count("gpt"), 2);
        assert_eq!(board.route_count("last-resort"), 1);
        assert_eq!(board.customer_errors, 1);
        assert_eq!(board.traces[0].status, "stream_failed", "newest first");
        assert!(board.traffic);
    }

    #[test]
    fn lists_stay_bounded() {
        let mut board = BoardState::default();
        for _ in 0..500 {
            board.apply(trace("gpt", "ok"), 0.0);
        }
        assert_eq!(board.traces.len(), TRACES);
        assert_eq!(board.latencies.len(), POINTS);
        assert_eq!(board.answered, 500);
    }
}
