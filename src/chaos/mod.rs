//! Fault injection for live demos and tests.
//!
//! A [`FaultPlan`] holds the fault in force on each provider. While a provider
//! has one, its adapter's requests go through the [`FaultProxy`], a loopback
//! HTTP server that forwards to the provider and breaks the exchange on the wire
//! as the fault says. Adapters see exactly what a failing provider would send,
//! for simulated and real providers alike; without a fault, requests go straight
//! to the provider and chaos costs nothing.

mod plan;
mod proxy;

pub use plan::FaultPlan;
pub use proxy::{FaultProxy, Upstream};
