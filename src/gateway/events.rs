//! The live event bus: one broadcast channel of [`GatewayEvent`]s.
//!
//! Publishing never waits: a subscriber that falls behind loses old events and
//! is told so (it then resyncs from a snapshot), so a slow browser can never
//! slow the gateway.
//!
//! In a cluster, what is published here is stamped with this replica's name and
//! forwarded to the others ([`Peers::forward`]); what they publish arrives
//! through [`EventBus::publish_remote`], for the boards only: its origin audited it.

use super::peers::Peers;
use crate::shared::GatewayEvent;
use crate::store::audit::{AuditRecord, AuditWriter, FaultRecord};
use std::sync::Arc;
use tokio::sync::broadcast;

/// How many events a subscriber may fall behind before it must resync.
const CAPACITY: usize = 1024;

/// The bus.
pub struct EventBus {
    /// Sender side; receivers come from [`EventBus::subscribe`].
    tx: broadcast::Sender<GatewayEvent>,
    /// Transitions and fault changes also go to the audit, which unlike a
    /// broadcast subscriber never loses one.
    audit: Option<AuditWriter>,
    /// The other replicas, when there are any.
    peers: Option<Arc<dyn Peers>>,
}

impl Default for EventBus {
    fn default() -> Self {
        Self {
            tx: broadcast::channel(CAPACITY).0,
            audit: None,
            peers: None,
        }
    }
}

impl EventBus {
    /// A bus that also audits transitions and fault changes.
    pub fn with_audit(audit: Option<AuditWriter>) -> Self {
        Self {
            audit,
            ..Self::default()
        }
    }

    /// A bus whose events also reach the other replicas' boards.
    pub fn with_peers(mut self, peers: Option<Arc<dyn Peers>>) -> Self {
        self.peers = peers;
        self
    }

    /// Publishes an event to every current subscriber (none is fine).
    pub fn publish(&self, mut event: GatewayEvent) {
        if let Some(peers) = &self.peers {
            let replica = Some(peers.replica().to_string());
            match &mut event {
                GatewayEvent::RequestTrace(trace) => trace.replica = replica,
                GatewayEvent::BreakerTransition(transition) => transition.replica = replica,
                GatewayEvent::Snapshot { .. } | GatewayEvent::FaultChanged { .. } => {}
            }
            if !matches!(event, GatewayEvent::Snapshot { .. }) {
                peers.forward(&event);
            }
        }
        if let Some(audit) = &self.audit {
            match &event {
                GatewayEvent::BreakerTransition(transition) => {
                    audit.enqueue(AuditRecord::Transition(transition.clone()))
                }
                GatewayEvent::FaultChanged {
                    provider,
                    fault,
                    by,
                    at_ms,
                } => audit.enqueue(AuditRecord::Fault(FaultRecord {
                    at_ms: *at_ms,
                    provider: provider.clone(),
                    spec: fault.clone(),
                    by: *by,
                })),
                GatewayEvent::Snapshot { .. } | GatewayEvent::RequestTrace(_) => {}
            }
        }
        let _ = self.tx.send(event);
    }

    /// Publishes an event another replica published: to this replica's boards
    /// only, neither audited again nor sent back.
    pub fn publish_remote(&self, event: GatewayEvent) {
        let _ = self.tx.send(event);
    }

    /// A new subscription, receiving events published from now on.
    pub fn subscribe(&self) -> broadcast::Receiver<GatewayEvent> {
        self.tx.subscribe()
    }
}
