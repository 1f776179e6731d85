//! What the board shows, folded from the live events. Pure and compiled for
//! both targets, so it is unit-tested natively.

use crate::shared::{
    GatewayEvent, ProviderStatus, RequestStatus, Route, Trace, TrafficStatus, Transition,
};
use std::collections::BTreeMap;

/// Requests kept in the live request path.
const TRACES: usize = 25;
/// Transitions kept in the timeline.
const TRANSITIONS: usize = 30;
/// Points in the latency chart.
const POINTS: usize = 60;

/// Everything on the board.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct BoardState {
    /// Providers in cascade order, from the latest snapshot.
    pub providers: Vec<ProviderStatus>,
    /// Local clock (ms) when the latest snapshot arrived, to age its durations.
    pub snapshot_at_ms: f64,
    /// Whether synthetic traffic runs.
    pub traffic: TrafficStatus,
    /// Recent requests, newest first.
    pub traces: Vec<Trace>,
    /// Recent transitions, newest first.
    pub transitions: Vec<Transition>,
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
            GatewayEvent::RequestTrace(trace) => {
                self.answered += 1;
                let route = trace
                    .served_by
                    .as_ref()
                    .map_or("none", Route::as_str)
                    .to_string();
                *self.by_route.entry(route).or_default() += 1;
                if trace.status == RequestStatus::StreamFailed {
                    self.customer_errors += 1;
                }
                self.latencies.push(trace.latency_ms);
                if self.latencies.len() > POINTS {
                    self.latencies.remove(0);
                }
                self.traces.insert(0, trace);
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
    pub fn route_count(&self, route: &Route) -> u64 {
        self.by_route.get(route.as_str()).copied().unwrap_or(0)
    }

    /// Share of answers served from the cache.
    pub fn cache_ratio(&self) -> f64 {
        if self.answered == 0 {
            0.0
        } else {
            self.route_count(&Route::Cache) as f64 / self.answered as f64
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    use crate::shared::{BreakerState, Protocol};

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

    fn trace(served_by: &str, status: RequestStatus) -> GatewayEvent {
        GatewayEvent::RequestTrace(Trace {
            id: "r".into(),
            served_by: Some(Route::from(served_by)),
            attempts: vec![],
            latency_ms: 40,
            status,
            at_ms: 1,
        })
    }

    #[test]
    fn events_fold_into_what_the_board_shows() {
        let mut board = BoardState::default();
        board.apply(
            GatewayEvent::Snapshot {
                providers: vec![provider("claude"), provider("gpt")],
                traffic: TrafficStatus {
                    running: true,
                    asked: 4,
                    in_flight: 1,
                },
            },
            1000.0,
        );
        board.apply(
            GatewayEvent::BreakerTransition(Transition {
                provider: "claude".into(),
                from: BreakerState::Closed,
                to: BreakerState::Open,
                reason: "3 consecutive failures".into(),
                at_ms: 5,
            }),
            1100.0,
        );
        board.apply(trace("gpt", RequestStatus::Ok), 1200.0);
        board.apply(trace("last-resort", RequestStatus::Ok), 1300.0);
        board.apply(trace("gpt", RequestStatus::StreamFailed), 1400.0);
        assert_eq!(board.providers[0].state, BreakerState::Open);
        assert_eq!(board.transitions[0].to, BreakerState::Open);
        assert_eq!(board.answered, 3);
        assert_eq!(board.route_count(&Route::from("gpt")), 2);
        assert_eq!(board.route_count(&Route::LastResort), 1);
        assert_eq!(board.customer_errors, 1);
        assert_eq!(
            board.traces[0].status,
            RequestStatus::StreamFailed,
            "newest first"
        );
        assert!(board.traffic.running);
    }

    #[test]
    fn lists_stay_bounded() {
        let mut board = BoardState::default();
        for _ in 0..500 {
            board.apply(trace("gpt", RequestStatus::Ok), 0.0);
        }
        assert_eq!(board.traces.len(), TRACES);
        assert_eq!(board.latencies.len(), POINTS);
        assert_eq!(board.answered, 500);
    }
}
