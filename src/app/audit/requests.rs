//! The filtered request list, newest first and paged, and one request opened to
//! its attempts (with the breaker state each met) and its chat conversation.

use super::super::incident::hms;
use crate::shared::audit::{AuditQuery, Page, RequestDetail, RequestRow};
use leptos::prelude::*;
use leptos::server_fn::codec::Json;

/// Rows per page.
#[cfg(feature = "ssr")]
const PAGE: i64 = 50;

/// Requests the query matches, newest first, with their attempts.
#[server(input = Json, endpoint = "board/audit-requests")]
pub async fn audit_requests(query: AuditQuery) -> Result<Page<RequestRow>, ServerFnError> {
    use crate::store::queries::RequestFilter;
    let state = super::super::admin_state().await?;
    let now = state.gateway.clock().unix_ms();
    let filter = RequestFilter {
        route: query.route.as_deref().map(crate::shared::Route::from),
        provider: query.provider,
        status: query.status,
        tenant: query.tenant,
        from_ms: query.last_minutes.map(|m| now - m.max(1) * 60_000),
        before: query.before,
        limit: PAGE,
        with_attempts: true,
        ..RequestFilter::default()
    };
    state
        .store
        .requests(&filter)
        .await
        .map_err(|e| ServerFnError::new(e.to_string()))
}

/// One request with its attempts and, for a chat request, its conversation.
#[server(input = Json, endpoint = "board/audit-request")]
pub async fn audit_request(id: String) -> Result<Option<RequestDetail>, ServerFnError> {
    let state = super::super::admin_state().await?;
    let error = |e: crate::store::StoreError| ServerFnError::new(e.to_string());
    let Some(request) = state.store.request(&id).await.map_err(error)? else {
        return Ok(None);
    };
    let messages = match &request.conversation_id {
        Some(conversation) => state
            .store
            .conversation(conversation)
            .await
            .map_err(error)?,
        None => Vec::new(),
    };
    Ok(Some(RequestDetail {
        request,
        messages,
        redacted: state.redact,
    }))
}

fn tokens(r: &RequestRow) -> String {
    match r.usage_source {
        None => "—".into(),
        Some(source) => format!(
            "{} + {} ({})",
            r.prompt_tokens,
            r.completion_tokens,
            source.as_str().replace('_', " ")
        ),
    }
}

/// The request table of `query`.
#[component]
pub fn Requests(query: Memo<AuditQuery>) -> impl IntoView {
    let page = Resource::new(move || query.get(), audit_requests);
    let link = move |extra: String| {
        let params = query.with(AuditQuery::filter_params);
        format!("/audit?{params}{extra}")
    };
    view! {
        <section aria-label="Requests">
            <h2>"Requests"</h2>
            <Suspense fallback=|| view! { <p class="muted">"Loading…"</p> }>
                {move || page.get().map(|result| match result {
                    Err(err) => view! { <p class="notice" role="alert">{err.to_string()}</p> }.into_any(),
                    Ok(page) => {
                        let next = page.next_cursor;
                        let paged = query.with(|q| q.before.is_some());
                        view! {
                            <div class="table-scroll">
                                <table class="requests">
                                    <thead><tr>
                                        <th scope="col">"Time"</th><th scope="col">"Served by"</th><th scope="col">"Status"</th>
                                        <th scope="col">"Latency"</th><th scope="col">"Overhead"</th><th scope="col">"Cache"</th>
                                        <th scope="col">"Tokens"</th><th scope="col">"Tenant"</th><th scope="col">"Attempts"</th>
                                        <th scope="col">"Conversation"</th>
                                    </tr></thead>
                                    <tbody>
                                        {page.items.into_iter().map(|r| {
                                            let open = link(format!("&request={}", r.id));
                                            view! {
                                                <tr data-id=r.id.clone() data-status=r.status.as_str()>
                                                    <td><a href=open class="open-request">{hms(r.created_at_ms)}</a></td>
                                                    <td class="route">{r.served_by.as_ref().map_or("—".to_string(), ToString::to_string)}</td>
                                                    <td>{r.status.as_str().replace('_', " ")}</td>
                                                    <td>{r.latency_ms}" ms"</td>
                                                    <td>{format!("{:.2} ms", r.overhead_ms)}</td>
                                                    <td>{r.cache_similarity.map_or("—".to_string(), |s| format!("{s:.3}"))}</td>
                                                    <td>{tokens(&r)}</td>
                                                    <td>{r.tenant.clone()}</td>
                                                    <td class="attempts">{r.attempts.iter().flatten().map(|a| format!("{} {}", a.provider, a.outcome.as_str().replace('_', " "))).collect::<Vec<_>>().join(" → ")}</td>
                                                    <td>{r.conversation_id.clone().unwrap_or_else(|| r.surface.as_str().to_string())}</td>
                                                </tr>
                                            }
                                        }).collect_view()}
                                    </tbody>
                                </table>
                            </div>
                            <nav class="pager" aria-label="Pages">
                                {paged.then(|| view! { <a href=link(String::new())>"← Newest"</a> })}
                                {next.map(|cursor| view! { <a class="older" href=link(format!("&before={cursor}"))>"Older →"</a> })}
                            </nav>
                        }.into_any()
                    }
                })}
            </Suspense>
        </section>
    }
}

/// One request opened.
#[component]
pub fn Opened(id: String) -> impl IntoView {
    let detail = Resource::new(move || id.clone(), audit_request);
    view! {
        <section class="panel opened" aria-label="The request opened">
            <Suspense fallback=|| view! { <p class="muted">"Loading…"</p> }>
                {move || detail.get().map(|result| match result {
                    Err(err) => view! { <p class="notice" role="alert">{err.to_string()}</p> }.into_any(),
                    Ok(None) => view! { <p class="notice" role="alert">"No such request."</p> }.into_any(),
                    Ok(Some(detail)) => {
                        let r = detail.request;
                        let messages = detail.messages;
                        view! {
                            <h2>"Request "<code>{r.id.clone()}</code></h2>
                            <p>
                                {hms(r.created_at_ms)}" · "{r.surface.as_str()}" · served by "
                                {r.served_by.as_ref().map_or("nobody".to_string(), ToString::to_string)}
                                " · "{r.status.as_str().replace('_', " ")}" · "{r.latency_ms}" ms · tenant "{r.tenant.clone()}
                                " · "{tokens(&r)}" tokens"
                            </p>
                            <div class="table-scroll">
                                <table class="attempt-table">
                                    <thead><tr>
                                        <th scope="col">"#"</th><th scope="col">"Provider"</th><th scope="col">"Outcome"</th>
                                        <th scope="col">"HTTP"</th><th scope="col">"Latency"</th><th scope="col">"Breaker before"</th>
                                        <th scope="col">"Tokens"</th>
                                    </tr></thead>
                                    <tbody>
                                        {r.attempts.clone().unwrap_or_default().into_iter().map(|a| view! {
                                            <tr data-outcome=a.outcome.as_str()>
                                                <td>{a.seq + 1}</td>
                                                <td>{a.provider}</td>
                                                <td>{a.outcome.as_str().replace('_', " ")}</td>
                                                <td>{a.http_status.map_or("—".to_string(), |s| s.to_string())}</td>
                                                <td>{a.latency_ms}" ms"</td>
                                                <td>{a.breaker_before.map_or("—", |b| b.label())}</td>
                                                <td>{a.prompt_tokens.zip(a.completion_tokens).map_or("—".to_string(), |(p, c)| format!("{p} + {c}"))}</td>
                                            </tr>
                                        }).collect_view()}
                                    </tbody>
                                </table>
                            </div>
                            {(!messages.is_empty()).then(|| view! {
                                <h3>"Conversation"</h3>
                                {detail.redacted.then(|| view! { <p class="muted">"Customer text is stored redacted (audit.redact_text)."</p> })}
                                <ol class="messages">
                                    {messages.into_iter().map(|m| view! {
                                        <li data-role=m.role.as_str()><b>{m.role.as_str()}</b>": "{m.content}</li>
                                    }).collect_view()}
                                </ol>
                            })}
                        }.into_any()
                    }
                })}
            </Suspense>
        </section>
    }
}
