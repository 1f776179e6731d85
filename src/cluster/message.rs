//! What replicas say to each other on the cluster's Redis channel, and the
//! shared fault table's rows. JSON: small, and readable with `redis-cli monitor`.

use crate::shared::{FaultSpec, GatewayEvent};
use serde::{Deserialize, Serialize};

/// One publication on the channel: what a replica says in one round trip,
/// oldest first, with the replica that sent it (a replica ignores its own).
/// Many messages in one publication: under load, one `PUBLISH` carries a
/// batch of traces instead of one each.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Envelope {
    /// The sending replica.
    pub from: String,
    /// What it says, in order.
    pub messages: Vec<Message>,
}

/// What a replica tells the others.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "snake_case")]
pub enum Message {
    /// The provider's consecutive failures across the cluster (0: it answered).
    Failures {
        /// Provider name.
        provider: String,
        /// The shared count.
        count: u32,
    },
    /// The provider's breaker opened there.
    Opened {
        /// Provider name.
        provider: String,
        /// Its cool-down, in milliseconds.
        retry_in_ms: u64,
    },
    /// A probe there closed the provider's breaker.
    Closed {
        /// Provider name.
        provider: String,
    },
    /// Something for every board (a transition, a trace, a fault change).
    Event {
        /// The event, stamped with its replica.
        event: GatewayEvent,
    },
    /// A cache entry stored there, to be indexed here.
    CacheStored {
        /// Its id in the shared table.
        id: i64,
    },
    /// A cache entry an admin removed there (every entry, without an id), no
    /// longer to answer with here.
    CacheRemoved {
        /// Its id in the shared table; `None` when the whole cache was cleared.
        id: Option<i64>,
    },
    /// What clients spent there since its last such message, so their rate
    /// limits hold across the cluster.
    Spent {
        /// Per client that spent anything.
        clients: Vec<ClientSpent>,
    },
    /// A kind this replica does not know: a newer replica's, during a rolling
    /// upgrade. Read as nothing, so the rest of its batch (breaker openings,
    /// faults) still counts instead of the whole envelope being unreadable.
    #[serde(other)]
    Unknown,
}

/// What one client spent through one replica.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct ClientSpent {
    /// The client's name.
    pub client: String,
    /// What it spent there.
    #[serde(flatten)]
    pub spent: crate::clients::Spent,
}

/// A fault in force, as the shared table keeps it for replicas that join later.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct SharedFault {
    /// The fault.
    pub spec: FaultSpec,
    /// Unix ms when it heals by itself, if it does.
    pub until_ms: Option<i64>,
}

impl SharedFault {
    /// The fault as a replica joining at `now_ms` puts it in force: what is left
    /// of its duration, or nothing when it has already healed.
    pub fn remaining(&self, now_ms: i64) -> Option<FaultSpec> {
        let mut spec = self.spec.clone();
        if let Some(until) = self.until_ms {
            let left_ms = until - now_ms;
            if left_ms <= 0 {
                return None;
            }
            spec.duration_s = Some((left_ms as u64).div_ceil(1000));
        }
        Some(spec)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::shared::FaultKind;

    #[test]
    fn a_kind_from_a_newer_replica_leaves_the_rest_of_its_batch_readable() {
        let text = r#"{"from":"b","messages":[
            {"kind":"closed","provider":"gpt"},
            {"kind":"something_newer","detail":{"x":1}},
            {"kind":"cache_stored","id":7}
        ]}"#;
        let envelope: Envelope = serde_json::from_str(text).unwrap();
        assert_eq!(
            envelope.messages,
            [
                Message::Closed {
                    provider: "gpt".into()
                },
                Message::Unknown,
                Message::CacheStored { id: 7 },
            ]
        );
    }

    #[test]
    fn messages_round_trip_and_a_shared_fault_keeps_what_is_left_of_its_duration() {
        let envelope = Envelope {
            from: "a".into(),
            messages: vec![
                Message::Opened {
                    provider: "gpt".into(),
                    retry_in_ms: 4_000,
                },
                Message::CacheStored { id: 7 },
                Message::CacheRemoved { id: Some(7) },
                Message::CacheRemoved { id: None },
            ],
        };
        let text = serde_json::to_string(&envelope).unwrap();
        assert!(text.contains(r#""kind":"opened""#), "{text}");
        assert_eq!(serde_json::from_str::<Envelope>(&text).unwrap(), envelope);

        let fault = SharedFault {
            spec: FaultSpec {
                kind: FaultKind::Outage,
                duration_s: Some(30),
            },
            until_ms: Some(40_000),
        };
        assert_eq!(fault.remaining(30_500).unwrap().duration_s, Some(10));
        assert_eq!(fault.remaining(40_000), None, "healed by itself");
        let lasting = SharedFault {
            spec: FaultSpec {
                kind: FaultKind::Outage,
                duration_s: None,
            },
            until_ms: None,
        };
        assert_eq!(lasting.remaining(i64::MAX).unwrap().duration_s, None);
    }
}
