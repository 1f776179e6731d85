//! Where an adapter sends its requests: straight to the provider, or through the
//! fault proxy while chaos has a fault in force on it. The choice is one atomic
//! load per request, so a healthy provider pays nothing for chaos.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;

/// Where an adapter sends a request: straight to the provider, or through the
/// fault proxy while a fault is in force.
#[derive(Clone, Debug)]
pub struct Endpoint {
    /// The provider's own URL for this call.
    direct: Route,
    /// The same call through the fault proxy, with the flag that selects it.
    faulted: Option<(Route, Arc<AtomicBool>)>,
}

/// One URL, as configured and parsed once: parsing it again for every request
/// (host, IDNA, path) cost more than building the request's JSON.
#[derive(Clone, Debug)]
struct Route {
    text: String,
    /// `None` when it does not parse; the request then fails as it is sent.
    parsed: Option<reqwest::Url>,
}

impl Route {
    fn new(text: String) -> Self {
        let parsed = reqwest::Url::parse(&text).ok();
        Self { text, parsed }
    }
}

impl Endpoint {
    /// An endpoint that always goes straight to `url` (tests, chaos disabled).
    pub fn direct(url: impl Into<String>) -> Self {
        Self {
            direct: Route::new(url.into()),
            faulted: None,
        }
    }

    /// An endpoint that goes through `proxied` while `flag` is set.
    pub fn switched(
        direct: impl Into<String>,
        proxied: impl Into<String>,
        flag: Arc<AtomicBool>,
    ) -> Self {
        Self {
            direct: Route::new(direct.into()),
            faulted: Some((Route::new(proxied.into()), flag)),
        }
    }

    /// The same endpoint with `path` appended to both routes.
    pub fn join(&self, path: &str) -> Self {
        let join = |base: &Route| Route::new(format!("{}{path}", base.text.trim_end_matches('/')));
        Self {
            direct: join(&self.direct),
            faulted: self
                .faulted
                .as_ref()
                .map(|(url, flag)| (join(url), flag.clone())),
        }
    }

    fn route(&self) -> &Route {
        match &self.faulted {
            Some((route, flag)) if flag.load(Ordering::Acquire) => route,
            _ => &self.direct,
        }
    }

    /// The URL to use for a request starting now.
    pub fn url(&self) -> &str {
        &self.route().text
    }

    /// The same URL, parsed, if it parses.
    pub(crate) fn parsed(&self) -> Option<reqwest::Url> {
        self.route().parsed.clone()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::chaos::FaultPlan;
    use crate::shared::{FaultKind, FaultSpec};
    use std::time::Instant;

    #[test]
    fn a_fault_routes_through_the_proxy_until_healed() {
        let plan = FaultPlan::new(["claude"]);
        let endpoint = Endpoint::switched(
            "http://direct",
            "http://proxy/claude",
            plan.route_flag("claude"),
        )
        .join("/v1/messages");
        assert_eq!(endpoint.url(), "http://direct/v1/messages");
        let outage = FaultSpec {
            kind: FaultKind::Outage,
            duration_s: None,
        };
        plan.set("claude", outage, Instant::now());
        assert_eq!(endpoint.url(), "http://proxy/claude/v1/messages");
        plan.heal("claude");
        assert_eq!(endpoint.url(), "http://direct/v1/messages");
    }
}
