//! Which fault is in force on which provider, and until when.

use crate::shared::{ActiveFault, FaultSpec};
use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, RwLock};
use std::time::{Duration, Instant};

struct Installed {
    spec: FaultSpec,
    until: Option<Instant>,
}

/// The faults in force, per provider.
pub struct FaultPlan {
    /// Faults by provider name.
    faults: RwLock<HashMap<String, Installed>>,
    /// Per provider: whether requests must go through the fault proxy. Read on
    /// every request, so it is an atomic flag rather than a map lookup under a lock.
    routed: HashMap<String, Arc<AtomicBool>>,
}

impl FaultPlan {
    /// A plan for these providers, all healthy.
    pub fn new<'a>(providers: impl IntoIterator<Item = &'a str>) -> Self {
        Self {
            faults: RwLock::new(HashMap::new()),
            routed: providers
                .into_iter()
                .map(|name| (name.to_string(), Arc::new(AtomicBool::new(false))))
                .collect(),
        }
    }

    /// Whether `name` is a provider this plan knows.
    pub fn knows(&self, name: &str) -> bool {
        self.routed.contains_key(name)
    }

    /// The flag an [`Endpoint`] reads to pick its route.
    pub fn route_flag(&self, name: &str) -> Arc<AtomicBool> {
        self.routed
            .get(name)
            .cloned()
            .unwrap_or_else(|| Arc::new(AtomicBool::new(false)))
    }

    /// Injects `spec` into provider `name`, replacing any fault it had.
    /// Returns `false` for an unknown provider.
    pub fn set(&self, name: &str, spec: FaultSpec, now: Instant) -> bool {
        let Some(flag) = self.routed.get(name) else {
            return false;
        };
        let until = spec.duration_s.map(|s| now + Duration::from_secs(s));
        self.faults
            .write()
            .unwrap_or_else(|e| e.into_inner())
            .insert(name.to_string(), Installed { spec, until });
        flag.store(true, Ordering::Release);
        true
    }

    /// Heals provider `name`; returns whether it had a fault.
    pub fn heal(&self, name: &str) -> bool {
        let removed = self
            .faults
            .write()
            .unwrap_or_else(|e| e.into_inner())
            .remove(name)
            .is_some();
        if let Some(flag) = self.routed.get(name) {
            flag.store(false, Ordering::Release);
        }
        removed
    }

    /// Heals every provider; returns the names that had a fault.
    pub fn heal_all(&self) -> Vec<String> {
        let mut faults = self.faults.write().unwrap_or_else(|e| e.into_inner());
        let healed: Vec<String> = faults.drain().map(|(name, _)| name).collect();
        for flag in self.routed.values() {
            flag.store(false, Ordering::Release);
        }
        healed
    }

    /// Removes faults whose time is up; returns the providers that healed.
    pub fn expire(&self, now: Instant) -> Vec<String> {
        let mut faults = self.faults.write().unwrap_or_else(|e| e.into_inner());
        let expired: Vec<String> = faults
            .iter()
            .filter(|(_, f)| f.until.is_some_and(|until| until <= now))
            .map(|(name, _)| name.clone())
            .collect();
        for name in &expired {
            faults.remove(name);
            if let Some(flag) = self.routed.get(name) {
                flag.store(false, Ordering::Release);
            }
        }
        expired
    }

    /// The fault in force on `name` at `now` (an expired one counts as healed).
    pub fn current(&self, name: &str, now: Instant) -> Option<FaultSpec> {
        let faults = self.faults.read().unwrap_or_else(|e| e.into_inner());
        faults
            .get(name)
            .filter(|f| f.until.is_none_or(|until| until > now))
            .map(|f| f.spec.clone())
    }

    /// The fault in force with its remaining time, for status views.
    pub fn status(&self, name: &str, now: Instant) -> Option<ActiveFault> {
        let faults = self.faults.read().unwrap_or_else(|e| e.into_inner());
        faults
            .get(name)
            .filter(|f| f.until.is_none_or(|until| until > now))
            .map(|f| ActiveFault {
                spec: f.spec.clone(),
                remaining_ms: f
                    .until
                    .map(|until| until.saturating_duration_since(now).as_millis() as u64),
            })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::shared::FaultKind;

    fn outage(duration_s: Option<u64>) -> FaultSpec {
        FaultSpec {
            kind: FaultKind::Outage,
            duration_s,
        }
    }

    #[test]
    fn setting_and_healing_flip_the_route_flag() {
        let plan = FaultPlan::new(["claude", "gpt"]);
        let flag = plan.route_flag("claude");
        let t0 = Instant::now();
        assert!(!flag.load(Ordering::Acquire));
        assert!(plan.set("claude", outage(None), t0));
        assert!(!plan.set("nobody", outage(None), t0));
        assert!(flag.load(Ordering::Acquire));
        assert_eq!(plan.current("claude", t0), Some(outage(None)));
        assert!(plan.heal("claude"));
        assert!(!flag.load(Ordering::Acquire));
        assert_eq!(plan.current("claude", t0), None);
    }

    #[test]
    fn faults_with_a_duration_heal_by_themselves() {
        let plan = FaultPlan::new(["gpt"]);
        let t0 = Instant::now();
        plan.set("gpt", outage(Some(30)), t0);
        let status = plan.status("gpt", t0 + Duration::from_secs(10)).unwrap();
        assert_eq!(status.remaining_ms, Some(20_000));
        assert!(plan.expire(t0 + Duration::from_secs(29)).is_empty());
        assert!(
            plan.current("gpt", t0 + Duration::from_secs(30)).is_none(),
            "expired counts as healed"
        );
        assert_eq!(
            plan.expire(t0 + Duration::from_secs(30)),
            vec!["gpt".to_string()]
        );
        assert!(!plan.route_flag("gpt").load(Ordering::Acquire));
    }
}
