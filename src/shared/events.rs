//! The live view of the gateway: breaker states, faults and request traces, as
//! the websocket sends them and the browser renders them.

use super::{AttemptSummary, FaultChangedBy, Protocol, RequestStatus, Route};
use serde::{Deserialize, Serialize};

crate::spelled! {
    /// State of a provider's circuit breaker.
    pub enum BreakerState {
        /// Healthy: calls go through, failures are counted.
        Closed => "closed",
        /// Failing: calls are skipped without any I/O until the cool-down ends.
        Open => "open",
        /// Testing: one probe call decides between CLOSED and OPEN.
        HalfOpen => "half_open",
    }
}

impl BreakerState {
    /// The word shown next to the light: state is never shown by colour alone.
    pub fn label(self) -> &'static str {
        match self {
            BreakerState::Closed => "CLOSED",
            BreakerState::Open => "OPEN",
            BreakerState::HalfOpen => "HALF-OPEN",
        }
    }

    /// A number for gauges: 0 closed, 1 half-open, 2 open.
    pub fn level(self) -> u8 {
        match self {
            BreakerState::Closed => 0,
            BreakerState::HalfOpen => 1,
            BreakerState::Open => 2,
        }
    }
}

/// What goes wrong on the wire when a fault is injected into a provider.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "snake_case", deny_unknown_fields)]
pub enum FaultKind {
    /// Every call gets a 503 with the provider's own error body.
    Outage,
    /// The response head is delayed by `delay_ms` ± `jitter_ms`.
    Latency {
        /// Added delay before the first byte, in milliseconds.
        delay_ms: u64,
        /// Random spread around the delay, in milliseconds.
        #[serde(default)]
        jitter_ms: u64,
    },
    /// Every call gets a 429 with `Retry-After: retry_after_s`.
    RateLimit {
        /// Seconds the provider asks callers to wait.
        #[serde(default = "default_retry_after")]
        retry_after_s: u64,
    },
    /// A fraction `error_rate` (0–1) of calls fail with a 500.
    Flaky {
        /// Fraction of calls that fail.
        error_rate: f64,
    },
    /// The provider accepts the connection and never answers.
    Hang,
    /// The provider answers 200 with invalid JSON or a broken SSE stream.
    Malformed,
    /// The connection drops after `after_bytes` of the response body.
    Reset {
        /// Body bytes passed through before the drop (0 = before any body).
        #[serde(default = "default_reset_after")]
        after_bytes: u64,
    },
}

fn default_retry_after() -> u64 {
    30
}

fn default_reset_after() -> u64 {
    600
}

impl FaultKind {
    /// Short name of the kind (`outage`, `latency`, …).
    pub fn name(&self) -> &'static str {
        match self {
            FaultKind::Outage => "outage",
            FaultKind::Latency { .. } => "latency",
            FaultKind::RateLimit { .. } => "rate_limit",
            FaultKind::Flaky { .. } => "flaky",
            FaultKind::Hang => "hang",
            FaultKind::Malformed => "malformed",
            FaultKind::Reset { .. } => "reset",
        }
    }
}

/// A fault to inject, with an optional self-healing duration.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct FaultSpec {
    /// What goes wrong.
    #[serde(flatten)]
    pub kind: FaultKind,
    /// Heal by itself after this many seconds; `None` lasts until healed.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub duration_s: Option<u64>,
}

impl FaultSpec {
    /// Checks the values; `Err` names the field at fault.
    pub fn validate(&self) -> Result<(), (&'static str, String)> {
        match &self.kind {
            FaultKind::Latency {
                delay_ms,
                jitter_ms,
            } => {
                if *delay_ms > 600_000 {
                    return Err(("delay_ms", "must be at most 600000 (10 minutes)".into()));
                }
                if jitter_ms > delay_ms {
                    return Err(("jitter_ms", "must not exceed delay_ms".into()));
                }
            }
            FaultKind::Flaky { error_rate } if !(0.0..=1.0).contains(error_rate) => {
                return Err(("error_rate", "must be between 0 and 1".into()));
            }
            FaultKind::RateLimit { retry_after_s } if *retry_after_s > 3600 => {
                return Err(("retry_after_s", "must be at most 3600".into()));
            }
            _ => {}
        }
        if let Some(d) = self.duration_s {
            if d == 0 || d > 86_400 {
                return Err(("duration_s", "must be between 1 and 86400 seconds".into()));
            }
        }
        Ok(())
    }
}

/// A fault in force on a provider.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct ActiveFault {
    /// The fault.
    pub spec: FaultSpec,
    /// Time left before it heals by itself, if it does.
    pub remaining_ms: Option<u64>,
}

/// Everything the board shows about one provider.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct ProviderStatus {
    /// Configured name.
    pub name: String,
    /// Wire protocol.
    pub protocol: Protocol,
    /// Model id.
    pub model: String,
    /// Position in the cascade, 0 first.
    pub priority: usize,
    /// Whether it is a built-in simulation.
    pub simulated: bool,
    /// Breaker state.
    pub state: BreakerState,
    /// Consecutive failures counted.
    pub consecutive_failures: u32,
    /// Time in the current state.
    pub in_state_ms: u64,
    /// While OPEN: time left before the next probe may go.
    #[serde(default)]
    pub retry_in_ms: Option<u64>,
    /// The injected fault, if any.
    pub fault: Option<ActiveFault>,
}

/// One event on the live bus.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(tag = "type", rename_all = "snake_case")]
pub enum GatewayEvent {
    /// Every provider's state; sent on connect and after a lagging client resyncs.
    Snapshot {
        /// Providers in cascade order.
        providers: Vec<ProviderStatus>,
        /// The built-in synthetic customer traffic.
        #[serde(default)]
        traffic: TrafficStatus,
    },
    /// A breaker changed state.
    BreakerTransition(Transition),
    /// A request finished along this route.
    RequestTrace(Trace),
    /// A fault was injected or healed.
    FaultChanged {
        /// Provider name.
        provider: String,
        /// The fault now in force; `None` when healed.
        fault: Option<FaultSpec>,
        /// Who changed it.
        by: FaultChangedBy,
        /// Unix time in milliseconds.
        at_ms: i64,
    },
}

/// Where the built-in synthetic customer traffic stands.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct TrafficStatus {
    /// Whether new questions are being asked.
    pub running: bool,
    /// Questions asked since the server started.
    pub asked: u64,
    /// Questions asked and not yet answered.
    pub in_flight: u64,
}

/// A breaker's change of state, as the timeline shows it.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Transition {
    /// Provider name.
    pub provider: String,
    /// State before.
    pub from: BreakerState,
    /// State after.
    pub to: BreakerState,
    /// Why.
    pub reason: String,
    /// Unix time in milliseconds.
    pub at_ms: i64,
    /// The replica whose breaker it was, when several share the board.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub replica: Option<String>,
}

/// One finished request, as the live request path shows it.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Trace {
    /// Request id.
    pub id: String,
    /// Who served it; `None` when nobody did (an invalid request).
    pub served_by: Option<Route>,
    /// Provider attempts in order (skipped OPEN providers included).
    pub attempts: Vec<AttemptSummary>,
    /// Total time in milliseconds.
    pub latency_ms: u64,
    /// How the request ended.
    pub status: RequestStatus,
    /// Unix time in milliseconds.
    pub at_ms: i64,
    /// The replica that served it, when several share the board.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub replica: Option<String>,
}
