//! Tokens and dollars by provider and by tenant over the page's time range, at
//! the prices configured per provider.

use crate::shared::audit::{CostReport, CostRow};
use leptos::prelude::*;
use leptos::server_fn::codec::Json;

/// The cost report of the last `last_minutes`.
#[server(input = Json, endpoint = "board/costs")]
pub async fn audit_costs(last_minutes: Option<i64>) -> Result<CostReport, ServerFnError> {
    let state = super::super::admin_state().await?;
    let to = state.gateway.clock().unix_ms();
    let from = to - last_minutes.unwrap_or(60).max(1) * 60_000;
    crate::api::audit::cost_report(&state, from, to)
        .await
        .map_err(|e| ServerFnError::new(e.to_string()))
}

fn dollars(cost: Option<f64>) -> String {
    match cost {
        Some(c) if c < 0.01 && c > 0.0 => format!("${c:.4}"),
        Some(c) => format!("${c:.2}"),
        None => "unpriced".into(),
    }
}

fn table(caption: &'static str, class: &'static str, rows: Vec<CostRow>) -> impl IntoView {
    view! {
        <div class="table-scroll">
        <table class=format!("costs {class}")>
            <caption>{caption}</caption>
            <thead><tr>
                <th scope="col">{if class == "by-provider" { "Provider" } else { "Tenant" }}</th>
                <th scope="col">"Prompt tokens"</th><th scope="col">"Completion tokens"</th><th scope="col">"Cost"</th>
            </tr></thead>
            <tbody>
                {rows.into_iter().map(|r| view! {
                    <tr data-key=r.key.clone()>
                        <td>{r.key.clone()}</td>
                        <td>{r.prompt_tokens}</td>
                        <td>{r.completion_tokens}</td>
                        <td class="cost">{dollars(r.cost_usd)}</td>
                    </tr>
                }).collect_view()}
            </tbody>
        </table>
        </div>
    }
}

/// Cost by provider and by tenant.
#[component]
pub fn Costs(minutes: Memo<Option<i64>>) -> impl IntoView {
    let report = Resource::new(move || minutes.get(), audit_costs);
    view! {
        <section aria-label="Cost">
            <h2>"Cost"</h2>
            <Suspense fallback=|| view! { <p class="muted">"Loading…"</p> }>
                {move || report.get().map(|result| match result {
                    Err(err) => view! { <p class="notice" role="alert">{err.to_string()}</p> }.into_any(),
                    Ok(report) => view! {
                        <div class="cost-tables">
                            {table("By provider", "by-provider", report.by_provider)}
                            {table("By tenant", "by-tenant", report.by_tenant)}
                        </div>
                    }.into_any(),
                })}
            </Suspense>
        </section>
    }
}
