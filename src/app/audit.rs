//! `/audit`: recent requests with their attempts, and the tickets the last resort
//! opened. Admin only, like the board.

use crate::shared::audit::{RequestRow, TicketRow};
use leptos::prelude::*;
use leptos::server_fn::codec::Json;

/// Recent requests (with their attempts, in one query) and tickets, newest first.
#[server(input = Json, endpoint = "audit/recent")]
pub async fn recent_audit() -> Result<(Vec<RequestRow>, Vec<TicketRow>), ServerFnError> {
    use crate::store::queries::RequestFilter;
    let state = expect_context::<crate::api::AppState>();
    let headers: axum::http::HeaderMap = leptos_axum::extract().await?;
    if crate::api::admin::check(&headers, &state.admin_token).is_err() {
        return Err(ServerFnError::new("the admin token is required"));
    }
    let filter = RequestFilter {
        limit: 30,
        with_attempts: true,
        ..Default::default()
    };
    let requests = state
        .store
        .requests(&filter)
        .await
        .map_err(|e| ServerFnError::new(e.to_string()))?
        .items;
    let tickets = state
        .store
        .tickets(None, 30)
        .await
        .map_err(|e| ServerFnError::new(e.to_string()))?
        .items;
    Ok((requests, tickets))
}

/// The audit view.
#[component]
pub fn AuditPage() -> impl IntoView {
    let data = Resource::new(|| (), |_| recent_audit());
    view! {
        <section class="panel audit" aria-label="Audit log">
            <h1>"Audit"</h1>
            <button on:click=move |_| data.refetch()>"Refresh"</button>
            <Suspense fallback=|| view! { <p class="muted">"Loading…"</p> }>
                {move || data.get().map(|result| match result {
                    Err(err) => view! { <p class="notice" role="alert">{err.to_string()}" — open the board link first."</p> }.into_any(),
                    Ok((requests, tickets)) => view! {
                        <h2>"Tickets"</h2>
                        <table class="tickets">
                            <thead><tr><th>"Ticket"</th><th>"Question"</th><th>"Status"</th></tr></thead>
                            <tbody>
                                {tickets.into_iter().map(|t| view! {
                                    <tr><td class="ticket-id">{t.id}</td><td>{t.question}</td><td>{t.status}</td></tr>
                                }).collect_view()}
                            </tbody>
                        </table>
                        <h2>"Recent requests"</h2>
                        <table class="requests">
                            <thead><tr><th>"Served by"</th><th>"Status"</th><th>"Latency"</th><th>"Attempts"</th></tr></thead>
                            <tbody>
                                {requests.into_iter().map(|r| view! {
                                    <tr>
                                        <td>{r.served_by.as_ref().map_or("—".to_string(), ToString::to_string)}</td>
                                        <td>{r.status.as_str()}</td>
                                        <td>{r.latency_ms}" ms"</td>
                                        <td>{r.attempts.iter().flatten().map(|a| format!("{} {}", a.provider, a.outcome)).collect::<Vec<_>>().join(" → ")}</td>
                                    </tr>
                                }).collect_view()}
                            </tbody>
                        </table>
                    }.into_any(),
                })}
            </Suspense>
        </section>
    }
}
