//! The tickets the last resort opened for human agents, each opened on demand
//! to the conversation as it stands and the attempts that failed, and
//! resolving them.

use super::super::incident::hms;
use crate::shared::audit::{TicketDetail, TicketRow, TicketStatus};
use leptos::prelude::*;
use leptos::server_fn::codec::Json;

/// The newest tickets.
#[server(input = Json, endpoint = "board/tickets")]
pub async fn audit_tickets() -> Result<Vec<TicketRow>, ServerFnError> {
    let state = super::super::admin_state().await?;
    state
        .store
        .tickets(None, 50)
        .await
        .map(|page| page.items)
        .map_err(|e| ServerFnError::new(e.to_string()))
}

/// One ticket with its conversation and failed attempts.
#[server(input = Json, endpoint = "board/ticket")]
pub async fn audit_ticket(id: String) -> Result<Option<TicketDetail>, ServerFnError> {
    let state = super::super::admin_state().await?;
    state
        .store
        .ticket(&id)
        .await
        .map_err(|e| ServerFnError::new(e.to_string()))
}

/// Marks a ticket resolved.
#[server(input = Json, endpoint = "board/resolve")]
pub async fn resolve_ticket(id: String) -> Result<(), ServerFnError> {
    let state = super::super::admin_state().await?;
    let now = state.gateway.clock().unix_ms();
    match state.store.resolve_ticket(&id, now).await {
        Ok(true) => Ok(()),
        Ok(false) => Err(ServerFnError::new(format!("no open ticket {id}"))),
        Err(e) => Err(ServerFnError::new(e.to_string())),
    }
}

/// The ticket table.
#[component]
pub fn Tickets() -> impl IntoView {
    let tickets = Resource::new(|| (), |_| audit_tickets());
    let notice = RwSignal::new(None::<String>);
    let resolve = move |id: String| {
        leptos::task::spawn_local(async move {
            match resolve_ticket(id).await {
                Ok(()) => notice.set(None),
                Err(err) => notice.set(Some(err.to_string())),
            }
            tickets.refetch();
        });
    };
    view! {
        <section aria-label="Tickets">
            <h2>"Tickets"</h2>
            {move || notice.get().map(|n| view! { <p class="notice" role="alert">{n}</p> })}
            <Suspense fallback=|| view! { <p class="muted">"Loading…"</p> }>
                {move || tickets.get().map(|result| match result {
                    Err(err) => view! { <p class="notice" role="alert">{err.to_string()}</p> }.into_any(),
                    Ok(rows) => view! {
                        <div class="table-scroll">
                            <table class="tickets">
                                <thead><tr>
                                    <th scope="col">"Ticket"</th><th scope="col">"Opened"</th><th scope="col">"Question"</th>
                                    <th scope="col">"Status"</th><th scope="col"><span class="sr-only">"Action"</span></th>
                                </tr></thead>
                                <tbody>
                                    {rows.into_iter().map(|t| {
                                        let id = t.id.clone();
                                        let shown = t.id.clone();
                                        let open = t.status == TicketStatus::Open;
                                        // Loaded only when asked for: a page of tickets
                                        // does not fetch fifty conversations.
                                        let expanded = RwSignal::new(false);
                                        view! {
                                            <tr data-ticket=t.id.clone() data-status=t.status.as_str()>
                                                <td class="ticket-id">{t.id.clone()}</td>
                                                <td>{hms(t.created_at_ms)}</td>
                                                <td>{t.question.clone()}</td>
                                                <td class="ticket-status">{t.status.as_str()}{t.resolved_at_ms.map(|at| format!(" at {}", hms(at)))}</td>
                                                <td>
                                                    <button class="show-conversation"
                                                        aria-expanded=move || expanded.get().to_string()
                                                        on:click=move |_| expanded.update(|e| *e = !*e)>
                                                        "Conversation"
                                                    </button>
                                                    {open.then(|| view! {
                                                        <button class="resolve" on:click=move |_| resolve(id.clone())>"Mark resolved"</button>
                                                    })}
                                                </td>
                                            </tr>
                                            {move || expanded.get().then(|| view! {
                                                <tr class="ticket-detail" data-ticket-detail=shown.clone()>
                                                    <td colspan="5"><TicketOpened id=shown.clone()/></td>
                                                </tr>
                                            })}
                                        }
                                    }).collect_view()}
                                </tbody>
                            </table>
                        </div>
                    }.into_any(),
                })}
            </Suspense>
        </section>
    }
}

/// What each provider answered before the last resort, a provider's retries
/// that ended alike counted once (`gpt (server error, HTTP 503) ×2`).
fn failed_attempts(attempts: &[crate::shared::AttemptSummary]) -> Vec<String> {
    let mut lines: Vec<(String, usize)> = Vec::new();
    for a in attempts {
        let line = format!(
            "{} ({}{})",
            a.provider,
            a.outcome.as_str().replace('_', " "),
            a.status.map(|s| format!(", HTTP {s}")).unwrap_or_default(),
        );
        match lines.last_mut() {
            Some((last, count)) if *last == line => *count += 1,
            _ => lines.push((line, 1)),
        }
    }
    lines
        .into_iter()
        .map(|(line, count)| match count {
            1 => line,
            n => format!("{line} ×{n}"),
        })
        .collect()
}

/// One ticket opened: the conversation as the agent picks it up, then what each
/// provider answered before the last resort did.
#[component]
fn TicketOpened(id: String) -> impl IntoView {
    let detail = Resource::new(move || id.clone(), audit_ticket);
    view! {
        <Suspense fallback=|| view! { <p class="muted">"Loading…"</p> }>
            {move || detail.get().map(|result| match result {
                Err(err) => view! { <p class="notice" role="alert">{err.to_string()}</p> }.into_any(),
                Ok(None) => view! { <p class="notice" role="alert">"No such ticket."</p> }.into_any(),
                Ok(Some(detail)) => {
                    let failed = failed_attempts(&detail.attempts);
                    view! {
                        {detail.conversation.is_empty().then(|| view! {
                            <p class="muted">"No conversation on record (customer text may be stored redacted)."</p>
                        })}
                        <ol class="messages">
                            {detail.conversation.into_iter().map(|m| view! {
                                <li data-role=m.role.as_str()><b>{m.role.as_str()}</b>": "{m.content}</li>
                            }).collect_view()}
                        </ol>
                        {(!failed.is_empty()).then(|| view! {
                            <p class="attempts">"Failed before it: "{failed.join(" · ")}</p>
                        })}
                    }.into_any()
                }
            })}
        </Suspense>
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::shared::{AttemptOutcome, AttemptSummary};

    fn attempt(provider: &str, outcome: AttemptOutcome, status: Option<u16>) -> AttemptSummary {
        AttemptSummary {
            provider: provider.into(),
            outcome,
            status,
            latency_ms: 1,
            breaker: None,
            usage: None,
        }
    }

    #[test]
    fn a_providers_retries_that_ended_alike_are_counted_once() {
        let attempts = [
            attempt("claude", AttemptOutcome::SkippedOpen, None),
            attempt("gpt", AttemptOutcome::ServerError, Some(503)),
            attempt("gpt", AttemptOutcome::ServerError, Some(503)),
            attempt("llama", AttemptOutcome::ServerError, Some(503)),
            attempt("llama", AttemptOutcome::ServerError, Some(500)),
        ];
        assert_eq!(
            failed_attempts(&attempts),
            [
                "claude (skipped open)",
                "gpt (server error, HTTP 503) ×2",
                "llama (server error, HTTP 503)",
                "llama (server error, HTTP 500)",
            ]
        );
    }
}
