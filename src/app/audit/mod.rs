//! `/audit`: what a support lead asks after an incident. When did it start,
//! which provider, how many customers got the last resort, what did it cost.
//! Admin only, like the board. The filter lives in the page's query string, so
//! every view has a link, reloads keep it, and the page works without
//! JavaScript (the form is a plain GET; the tables render on the server).
//!
//! - `requests`: the filtered request list, paged, and one request opened.
//! - `tickets`: the last resort's tickets, each opened to its conversation, resolvable.
//! - `costs`: tokens and dollars by provider and by tenant.

mod costs;
mod requests;
mod tickets;

use super::incident::{load_incident, IncidentChart};
use crate::shared::audit::AuditQuery;
use crate::shared::RequestStatus;
use leptos::prelude::*;
use leptos_router::components::Form;
use leptos_router::hooks::use_query_map;

/// The time ranges the page offers, in minutes.
const RANGES: &[(i64, &str)] = &[
    (15, "last 15 minutes"),
    (60, "last hour"),
    (24 * 60, "last 24 hours"),
    (7 * 24 * 60, "last 7 days"),
];

/// The audit page's filter, read from the query string.
fn query_of(map: &leptos_router::params::ParamsMap) -> AuditQuery {
    let text = |name: &str| map.get(name).filter(|v| !v.trim().is_empty());
    AuditQuery {
        last_minutes: text("last_minutes")
            .and_then(|v| v.parse().ok())
            .or(Some(60)),
        route: text("route"),
        status: text("status").and_then(|v| v.parse().ok()),
        provider: text("provider"),
        tenant: text("tenant"),
        before: text("before").and_then(|v| v.parse().ok()),
    }
}

/// The audit view.
#[component]
pub fn AuditPage() -> impl IntoView {
    let params = use_query_map();
    let query = Memo::new(move |_| params.with(query_of));
    let opened = Memo::new(move |_| params.with(|p| p.get("request")));
    let minutes = Memo::new(move |_| query.with(|q| q.last_minutes));
    let incident = Resource::new(move || minutes.get(), load_incident);
    let selected = move |value: Option<String>, option: &str| value.as_deref() == Some(option);
    view! {
        <section class="panel audit" aria-label="Audit log">
            <h1>"Audit"</h1>
            <Form method="GET" action="/audit" attr:class="filters" attr:role="search" attr:aria-label="Filter requests">
                <label>"Time range"
                    <select name="last_minutes">
                        {RANGES.iter().map(|(m, label)| view! {
                            <option value=m.to_string() selected=move || query.with(|q| q.last_minutes == Some(*m))>{*label}</option>
                        }).collect_view()}
                    </select>
                </label>
                <label>"Served by"
                    <input name="route" placeholder="claude, cache, last-resort…" prop:value=move || query.with(|q| q.route.clone().unwrap_or_default())/>
                </label>
                <label>"Status"
                    <select name="status">
                        <option value="">"any"</option>
                        {RequestStatus::ALL.iter().map(|s| view! {
                            <option value=s.as_str() selected=move || selected(query.with(|q| q.status.map(|s| s.as_str().to_string())), s.as_str())>{s.as_str().replace('_', " ")}</option>
                        }).collect_view()}
                    </select>
                </label>
                <label>"Provider attempted"
                    <input name="provider" prop:value=move || query.with(|q| q.provider.clone().unwrap_or_default())/>
                </label>
                <label>"Tenant"
                    <input name="tenant" prop:value=move || query.with(|q| q.tenant.clone().unwrap_or_default())/>
                </label>
                <button type="submit">"Apply"</button>
                <a class="button" href="/audit">"Reset"</a>
            </Form>
            <p class="exports">
                "Export this filter: "
                <a class="export-csv" href=move || format!("/api/audit/export?format=csv&{}", query.with(AuditQuery::filter_params)) download="chaosai-audit.csv">"CSV"</a>
                " · "
                <a class="export-jsonl" href=move || format!("/api/audit/export?format=jsonl&{}", query.with(AuditQuery::filter_params)) download="chaosai-audit.jsonl">"JSON lines"</a>
            </p>
            <section aria-label="Incident timeline">
                <h2>"Timeline"</h2>
                <Suspense fallback=|| view! { <p class="muted">"Loading…"</p> }>
                    {move || incident.get().map(|t| match t {
                        Ok(timeline) => view! { <IncidentChart timeline/> }.into_any(),
                        Err(err) => view! { <p class="notice" role="alert">{err.to_string()}" — open the board link first."</p> }.into_any(),
                    })}
                </Suspense>
            </section>
            <costs::Costs minutes/>
            {move || opened.get().map(|id| view! { <requests::Opened id/> })}
            <requests::Requests query/>
            <tickets::Tickets/>
        </section>
    }
}
