//! What a gateway tells the other replicas of a cluster, and the one thing it
//! asks them. The gateway knows nothing of how they are reached (Redis, in
//! [`crate::cluster`]); without replicas there is no `Peers` at all and none of
//! this costs anything.
//!
//! Every call but [`Peers::probe_lease`] returns at once: what must travel is
//! queued and sent off the request path, so a slow or absent Redis never slows
//! an answer.

use crate::shared::GatewayEvent;
use futures::future::BoxFuture;
use std::time::Duration;

/// The other replicas, as the gateway core sees them.
pub trait Peers: Send + Sync {
    /// This replica's name, stamped on the traces and transitions it publishes.
    fn replica(&self) -> &str;
    /// A call to `provider` failed here while its breaker was CLOSED: the shared
    /// consecutive-failure count goes up by one.
    fn failed(&self, provider: &str);
    /// `provider` answered here after failures had been counted: the shared count
    /// goes back to 0. Not called when nothing was counted, so a healthy
    /// provider's success costs no message.
    fn recovered(&self, provider: &str);
    /// `provider`'s breaker opened here with this cool-down.
    fn opened(&self, provider: &str, retry_in: Duration);
    /// A probe here closed `provider`'s breaker.
    fn closed(&self, provider: &str);
    /// Asks for the right to probe `provider` for `lease`: `true` for one replica
    /// of the cluster at a time, and for everyone when the peers cannot be
    /// reached (each replica then probes for itself).
    fn probe_lease<'a>(&'a self, provider: &'a str, lease: Duration) -> BoxFuture<'a, bool>;
    /// The probe of `provider` this replica leased is over (whatever its
    /// verdict, which went out as `opened` or `closed`): the lease is handed
    /// back, so the next probe need not wait for it to expire.
    fn probe_done(&self, provider: &str);
    /// An event published here (a transition, a trace, a fault change) that
    /// every replica's board shows.
    fn forward(&self, event: &GatewayEvent);
}
