//! Fault control: the one place that sets, heals and expires injected faults.
//! Every change updates the `FaultPlan` the adapters' endpoints follow, the
//! `faults_active` metric, the live event (which also writes the audit row),
//! so the chaos API, the board's buttons and the expiry task cannot drift apart.

use super::events::EventBus;
use super::metrics::Metrics;
use crate::chaos::FaultPlan;
use crate::clock::SharedClock;
use crate::shared::{ActiveFault, FaultChangedBy, FaultSpec, GatewayEvent};
use std::sync::Arc;

/// Why a fault could not be changed.
#[derive(Debug, PartialEq, thiserror::Error)]
pub enum FaultError {
    /// No provider of that name.
    #[error("unknown provider {0:?}")]
    UnknownProvider(String),
    /// The spec's values are out of range; `field` names the culprit.
    #[error("{field} {message}")]
    Invalid {
        /// The spec field at fault.
        field: &'static str,
        /// What is wrong with it.
        message: String,
    },
}

/// Sets, heals and expires faults, announcing every change.
pub struct FaultControl {
    /// The faults in force, read by the endpoints and the fault proxy.
    plan: Arc<FaultPlan>,
    /// Where changes are announced (and audited).
    events: Arc<EventBus>,
    /// Where the fault gauge lives.
    metrics: Arc<Metrics>,
    /// Expiry and timestamps.
    clock: SharedClock,
}

impl FaultControl {
    /// Control over `plan`.
    pub fn new(
        plan: Arc<FaultPlan>,
        events: Arc<EventBus>,
        metrics: Arc<Metrics>,
        clock: SharedClock,
    ) -> Self {
        Self {
            plan,
            events,
            metrics,
            clock,
        }
    }

    /// Injects `spec` into `provider`, replacing any fault it had.
    pub fn set(
        &self,
        provider: &str,
        spec: FaultSpec,
        by: FaultChangedBy,
    ) -> Result<(), FaultError> {
        self.known(provider)?;
        spec.validate()
            .map_err(|(field, message)| FaultError::Invalid { field, message })?;
        self.plan.set(provider, spec.clone(), self.clock.now());
        self.announce(provider, Some(spec), by);
        Ok(())
    }

    /// Heals `provider`; returns whether it had a fault.
    pub fn heal(&self, provider: &str, by: FaultChangedBy) -> Result<bool, FaultError> {
        self.known(provider)?;
        let had = self.plan.heal(provider);
        if had {
            self.announce(provider, None, by);
        }
        Ok(had)
    }

    /// Heals every provider; returns those that had a fault.
    pub fn heal_all(&self, by: FaultChangedBy) -> Vec<String> {
        let healed = self.plan.heal_all();
        for provider in &healed {
            self.announce(provider, None, by);
        }
        healed
    }

    /// Heals the faults whose time is up; returns those providers.
    pub fn expire(&self) -> Vec<String> {
        let expired = self.plan.expire(self.clock.now());
        for provider in &expired {
            tracing::info!(%provider, "fault healed by itself");
            self.announce(provider, None, FaultChangedBy::Expiry);
        }
        expired
    }

    /// Puts in force (or heals) a fault another replica set or healed: the plan
    /// and the metric here follow; the live event and the audit row are the
    /// origin's, so nothing is announced. `false` for an unknown provider or a
    /// fault this build refuses.
    pub fn follow(&self, provider: &str, fault: Option<FaultSpec>) -> bool {
        if self.known(provider).is_err() {
            return false;
        }
        match fault {
            Some(spec) if spec.validate().is_ok() => {
                self.plan.set(provider, spec, self.clock.now());
                self.metrics.fault_active(provider, true);
            }
            Some(_) => return false,
            None => {
                self.plan.heal(provider);
                self.metrics.fault_active(provider, false);
            }
        }
        true
    }

    /// The fault in force on `provider`, with its remaining time.
    pub fn status(&self, provider: &str) -> Option<ActiveFault> {
        self.plan.status(provider, self.clock.now())
    }

    /// Whether `provider` is one faults can be set on.
    pub fn known(&self, provider: &str) -> Result<(), FaultError> {
        if self.plan.knows(provider) {
            Ok(())
        } else {
            Err(FaultError::UnknownProvider(provider.to_string()))
        }
    }

    fn announce(&self, provider: &str, fault: Option<FaultSpec>, by: FaultChangedBy) {
        self.metrics.fault_active(provider, fault.is_some());
        tracing::info!(provider, fault = ?fault, %by, "fault changed");
        self.events.publish(GatewayEvent::FaultChanged {
            provider: provider.to_string(),
            fault,
            by,
            at_ms: self.clock.unix_ms(),
        });
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::clock::ManualClock;
    use crate::shared::FaultKind;
    use std::time::Duration;

    #[tokio::test]
    async fn every_change_is_announced_once_and_expiry_follows_the_clock() {
        let clock = ManualClock::new();
        let events = Arc::new(EventBus::default());
        let metrics = Arc::new(Metrics::new(["gpt"]));
        let control = FaultControl::new(
            Arc::new(FaultPlan::new(["gpt"])),
            events.clone(),
            metrics.clone(),
            clock.clone(),
        );
        let mut seen = events.subscribe();
        let outage = FaultSpec {
            kind: FaultKind::Outage,
            duration_s: Some(30),
        };
        assert_eq!(
            control.set("nobody", outage.clone(), FaultChangedBy::Admin),
            Err(FaultError::UnknownProvider("nobody".into()))
        );
        let bad = FaultSpec {
            kind: FaultKind::Flaky { error_rate: 2.0 },
            duration_s: None,
        };
        assert!(matches!(
            control.set("gpt", bad, FaultChangedBy::Admin),
            Err(FaultError::Invalid {
                field: "error_rate",
                ..
            })
        ));
        control.set("gpt", outage, FaultChangedBy::Admin).unwrap();
        assert!(metrics
            .render()
            .contains("chaosai_faults_active{provider=\"gpt\"} 1"));
        clock.advance(Duration::from_secs(29));
        assert!(control.expire().is_empty());
        assert_eq!(control.status("gpt").unwrap().remaining_ms, Some(1_000));
        clock.advance(Duration::from_secs(1));
        assert_eq!(control.expire(), vec!["gpt".to_string()]);
        assert!(control.status("gpt").is_none());
        assert!(metrics
            .render()
            .contains("chaosai_faults_active{provider=\"gpt\"} 0"));
        let mut bys = Vec::new();
        while let Ok(GatewayEvent::FaultChanged { fault, by, .. }) = seen.try_recv() {
            bys.push((fault.is_some(), by));
        }
        assert_eq!(
            bys,
            vec![
                (true, FaultChangedBy::Admin),
                (false, FaultChangedBy::Expiry)
            ]
        );
        assert!(
            !control.heal("gpt", FaultChangedBy::Admin).unwrap(),
            "nothing left to heal"
        );
    }
}
