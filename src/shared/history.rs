//! What the board needs to tell the story of the last minutes on first paint and
//! after a reconnect: the gateway's live state and the recent past read from the
//! audit trail; and the incident timeline of the last hour. Both halves read the
//! same types: the server fills them, the board folds live events into them.

use super::{AttemptOutcome, FaultChangedBy, ProviderStatus, RequestStatus, Route, Trace};
use super::{TrafficStatus, Transition};
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;

/// One finished request, as the board's counters and chart count it.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct RequestPoint {
    /// The request's id (so a request seen both in history and live counts once).
    pub id: String,
    /// When it ended (Unix ms).
    pub at_ms: i64,
    /// Who served it.
    pub served_by: Option<Route>,
    /// How it ended.
    pub status: RequestStatus,
    /// Its latency.
    pub latency_ms: u64,
}

impl From<&Trace> for RequestPoint {
    fn from(trace: &Trace) -> Self {
        Self {
            id: trace.id.clone(),
            at_ms: trace.at_ms,
            served_by: trace.served_by.clone(),
            status: trace.status,
            latency_ms: trace.latency_ms,
        }
    }
}

/// One provider attempt, as the per-provider health counts it.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct AttemptPoint {
    /// When its request ended (Unix ms).
    pub at_ms: i64,
    /// The provider.
    pub provider: String,
    /// How it ended.
    pub outcome: AttemptOutcome,
    /// Its latency.
    pub latency_ms: u64,
}

/// Everything the board starts from.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct BoardSeed {
    /// The server's clock when it was read (Unix ms).
    pub now_ms: i64,
    /// How far back the counters look.
    pub window_ms: i64,
    /// Every provider's breaker and fault, in cascade order.
    pub providers: Vec<ProviderStatus>,
    /// The synthetic traffic.
    pub traffic: TrafficStatus,
    /// Requests of the window, oldest first (bounded).
    pub requests: Vec<RequestPoint>,
    /// Attempts of the last two minutes, oldest first (bounded).
    pub attempts: Vec<AttemptPoint>,
    /// The latest requests with their attempts, newest first.
    pub traces: Vec<Trace>,
    /// The latest breaker transitions, newest first.
    pub transitions: Vec<Transition>,
    /// Each provider's last successful attempt (Unix ms), if it had one.
    pub last_success_ms: BTreeMap<String, i64>,
}

crate::spelled! {
    /// What happened to a fault.
    pub enum FaultAction {
        /// It was injected.
        Set => "set",
        /// It was healed (or expired).
        Healed => "healed",
    }
}

/// A fault change as the incident timeline shows it.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[cfg_attr(feature = "ssr", derive(sqlx::FromRow))]
pub struct FaultChangeRow {
    /// Unix ms.
    pub at_ms: i64,
    /// The provider.
    pub provider: String,
    /// Set or healed.
    pub action: FaultAction,
    /// The fault's kind when set (`outage`, `latency`, …).
    pub kind: Option<String>,
    /// Who changed it.
    pub changed_by: FaultChangedBy,
}

/// Answers of one minute, by route.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct RouteBucket {
    /// The bucket's start (Unix ms).
    pub at_ms: i64,
    /// Answers by route (`claude`, `cache`, `last-resort`, …).
    pub by_route: BTreeMap<String, u64>,
    /// Answers that reached the customer broken.
    pub failed: u64,
}

/// An hour (or any range) on one time axis: who answered, minute by minute; the
/// breaker transitions; the fault changes.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct IncidentTimeline {
    /// Start of the range (Unix ms).
    pub from_ms: i64,
    /// End of the range (Unix ms).
    pub to_ms: i64,
    /// Width of a bucket.
    pub bucket_ms: i64,
    /// Buckets with answers, oldest first (empty minutes are left out).
    pub buckets: Vec<RouteBucket>,
    /// Transitions in the range, oldest first.
    pub transitions: Vec<Transition>,
    /// Fault changes in the range, oldest first.
    pub faults: Vec<FaultChangeRow>,
}
