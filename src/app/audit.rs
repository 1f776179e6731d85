//! `/audit`: recent requests with their attempts, and the tickets the last resort
//! opened. Admin only, like the board.

use crate::shared::AttemptSummary;
use leptos::prelude::*;
use leptos::server_fn::codec::Json;
use serde::{Deserialize, Serialize};

/// One request as the audit view lists it.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct AuditEntry {
    /// Request id.
    pub id: String,
    /// Unix time in milliseconds.
    pub at_ms: i64,
    /// Who served it.
    pub served_by: Option<String>,
    /// How it ended.
    pub status: String,
    /// Total time in milliseconds.
    pub latency_ms: i64,
    /// Its attempts.
    pub attempts: Vec<AttemptSummary>,
}

/// One ticket.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct TicketEntry {
    /// Ticket id.
    pub id: String,
    /// Unix time in milliseconds.
    pub at_ms: i64,
    /// The customer's question.
    pub question: String,
    /// `open` until handled.
    pub status: String,
}

/// Recent requests (with attempts) and tickets, newest first.
#[server(input = Json, endpoint = "audit/recent")]
pub async fn recent_audit() -> Result<(Vec<AuditEntry>, Vec<TicketEntry>), ServerFnError> {
    use crate::store::queries::RequestFilter;
    let state = expect_context::<crate::api::AppState>();
    let headers: axum::http::HeaderMap = leptos_axum::extract().await?;
    if !crate::api::chaos::is_admin(&headers, &state.admin_token) {
        return Err(ServerFnError::new("the admin token is required"));
    }
    let filter = RequestFilter {
        limit: 30,
        ..Default::default()
    };
    let page = state
        .store
        .requests(&filter)
        .await
        .map_err(|e| ServerFnError::new(e.to_string()))?;
    let mut requests = Vec::new();
    for row in page.items {
        let attempts = state
            .store
            .request(&row.id)
            .await
            .map_err(|e| ServerFnError::new(e.to_string()))?
            .and_then(|r| r.attempts)
            .unwrap_or_default()
            .into_iter()
            .map(|a| AttemptSummary {
                provider: a.provider,
                outcome: a.outcome,
                status: a.http_status.and_then(|s| u16::try_from(s).ok()),
                latency_ms: a.latency_ms.max(0) as u64,
                breaker: None,
            })
            .collect();
        requests.push(AuditEntry {
            id: row.id,
            at_ms: row.created_at_ms,
            served_by: row.served_by,
            status: row.status,
            latency_ms: row.latency_ms,
            attempts,
        });
    }
    let tickets = state
        .store
        .tickets(None, 30)
        .await
        .map_err(|e| ServerFnError::new(e.to_string()))?
        .items
        .into_iter()
        .map(|t| TicketEntry {
            id: t.id,
            at_ms: t.created_at_ms,
            question: t.question,
            status: t.status,
        })
        .collect();
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
                                        <td>{r.served_by.unwrap_or_else(|| "—".into())}</td>
                                        <td>{r.status}</td>
                                        <td>{r.latency_ms}" ms"</td>
                                        <td>{r.attempts.iter().map(|a| format!("{} {}", a.provider, a.outcome)).collect::<Vec<_>>().join(" → ")}</td>
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
