//! The audit read API (admin token): requests with their attempts, breaker
//! transitions and tickets, newest first, paged by cursor; what the answers
//! cost, by provider or by tenant; resolving tickets; and the request list of a
//! filter exported as CSV or JSON lines, streamed page by page.

use super::{
    admin::Admin,
    error::{echoed, ApiError},
    params::{Params, PathText},
    AppState,
};
use crate::shared::audit::{
    CostReport, Page, RequestRow, TicketDetail, TicketRow, TransitionRow, UsageBy, UsageRow,
};
use crate::shared::{RequestStatus, Route};
use crate::store::queries::RequestFilter;
use axum::{
    body::Body,
    extract::{rejection::QueryRejection, Query, State},
    http::{header, StatusCode},
    response::{IntoResponse, Response},
    Json,
};
use futures::StreamExt;
use serde::Serialize;
use std::collections::HashMap;

type QueryMap = Result<Query<HashMap<String, String>>, QueryRejection>;

/// `GET /api/audit/requests?limit&before&route&provider&status`.
pub async fn requests(
    _: Admin,
    State(state): State<AppState>,
    query: QueryMap,
) -> Result<Json<Page<RequestRow>>, ApiError> {
    let params = Params::new(query, &[FILTERS, &["limit", "before"]].concat())?;
    let mut filter = filter(&params, state.gateway.clock().unix_ms())?;
    filter.before = params.before()?;
    filter.limit = params.limit()?;
    Ok(Json(state.store.requests(&filter).await?))
}

/// The request filters every list and export accepts.
const FILTERS: &[&str] = &[
    "route",
    "provider",
    "status",
    "tenant",
    "from",
    "to",
    "last_minutes",
];

/// The filter the query names (route, provider, status, tenant, period;
/// `last_minutes` counts back from `now_ms`).
pub fn filter(params: &Params, now_ms: i64) -> Result<RequestFilter, ApiError> {
    let last = match params.parsed::<i64>("last_minutes")? {
        Some(m) if m <= 0 => {
            return Err(ApiError::invalid(
                Some("last_minutes"),
                "last_minutes must be a positive number of minutes",
            ))
        }
        last => last.map(|m| now_ms - m.saturating_mul(60_000)),
    };
    let from_ms = params.parsed::<i64>("from")?.or(last);
    let to_ms = params.parsed::<i64>("to")?;
    if let (Some(from), Some(to)) = (from_ms, to_ms) {
        if from >= to {
            return Err(ApiError::invalid(Some("from"), "from must be before to"));
        }
    }
    Ok(RequestFilter {
        route: params.text("route")?.map(Route::from),
        provider: params.text("provider")?.map(str::to_string),
        status: params.parsed::<RequestStatus>("status")?,
        tenant: params.text("tenant")?.map(str::to_string),
        from_ms,
        to_ms,
        ..RequestFilter::default()
    })
}

/// `GET /api/audit/requests/{id}`: one request with its attempts.
pub async fn request(
    _: Admin,
    State(state): State<AppState>,
    PathText(id): PathText,
) -> Result<Json<RequestRow>, ApiError> {
    match state.store.request(&id).await? {
        Some(row) => Ok(Json(row)),
        None => Err(ApiError::not_found(format!("no request {:?}", echoed(&id)))),
    }
}

/// `GET /api/audit/transitions?limit&before`.
pub async fn transitions(
    _: Admin,
    State(state): State<AppState>,
    query: QueryMap,
) -> Result<Json<Page<TransitionRow>>, ApiError> {
    let params = Params::new(query, &["limit", "before"])?;
    Ok(Json(
        state
            .store
            .transitions(params.before()?, params.limit()?)
            .await?,
    ))
}

/// `GET /api/tickets?limit&before`.
pub async fn tickets(
    _: Admin,
    State(state): State<AppState>,
    query: QueryMap,
) -> Result<Json<Page<TicketRow>>, ApiError> {
    let params = Params::new(query, &["limit", "before"])?;
    Ok(Json(
        state
            .store
            .tickets(params.before()?, params.limit()?)
            .await?,
    ))
}

/// Tokens spent over a period, grouped as asked.
#[derive(Serialize)]
pub struct UsageReport {
    /// How the rows are grouped.
    by: UsageBy,
    /// The period's start (Unix ms).
    since_ms: i64,
    /// One row per provider or tenant, the costliest first.
    rows: Vec<UsageRow>,
}

/// `GET /api/audit/usage?by=provider|tenant&since=<unix ms>`.
pub async fn usage(
    _: Admin,
    State(state): State<AppState>,
    query: QueryMap,
) -> Result<Json<UsageReport>, ApiError> {
    let params = Params::new(query, &["by", "since"])?;
    let by = params.parsed::<UsageBy>("by")?.unwrap_or(UsageBy::Provider);
    let since_ms = match params.parsed::<i64>("since")? {
        Some(ms) if ms < 0 => {
            return Err(ApiError::invalid(
                Some("since"),
                "since must be a Unix time in milliseconds",
            ))
        }
        since => since.unwrap_or(0),
    };
    let rows = state.store.usage(by, since_ms).await?;
    Ok(Json(UsageReport { by, since_ms, rows }))
}

/// `GET /api/audit/costs?from&to`: tokens and US dollars by provider and by
/// tenant, at the prices configured per provider.
pub async fn costs(
    _: Admin,
    State(state): State<AppState>,
    query: QueryMap,
) -> Result<Json<CostReport>, ApiError> {
    let params = Params::new(query, &["from", "to"])?;
    let (from, to) = super::history::period(&params, state.gateway.clock().unix_ms())?;
    Ok(Json(cost_report(&state, from, to).await?))
}

/// The cost report of a period.
pub async fn cost_report(
    state: &AppState,
    from: i64,
    to: i64,
) -> Result<CostReport, crate::store::StoreError> {
    let spend = state.store.spend(from, to).await?;
    Ok(CostReport::from_spend((from, to), &spend, &state.prices))
}

/// `GET /api/tickets/{id}`: one ticket with its conversation and the attempts
/// that failed before it.
pub async fn ticket(
    _: Admin,
    State(state): State<AppState>,
    PathText(id): PathText,
) -> Result<Json<TicketDetail>, ApiError> {
    match state.store.ticket(&id).await? {
        Some(ticket) => Ok(Json(ticket)),
        None => Err(ApiError::not_found(format!("no ticket {:?}", echoed(&id)))),
    }
}

/// `POST /api/tickets/{id}/resolve`: an agent handled the ticket.
pub async fn resolve_ticket(
    _: Admin,
    State(state): State<AppState>,
    PathText(id): PathText,
) -> Result<StatusCode, ApiError> {
    let now = state.gateway.clock().unix_ms();
    if state.store.resolve_ticket(&id, now).await? {
        Ok(StatusCode::NO_CONTENT)
    } else {
        Err(ApiError::not_found(format!(
            "no open ticket {:?}",
            echoed(&id)
        )))
    }
}

/// Most rows one export writes: a filter that matches more is cut there, and the
/// last line says so.
pub const MAX_EXPORT_ROWS: usize = 100_000;

/// Rows read per query while exporting.
const EXPORT_PAGE: i64 = 500;

crate::spelled! {
    /// The shape of an export.
    pub enum ExportFormat {
        /// Comma-separated values with a header row.
        Csv => "csv",
        /// One JSON object per line.
        Jsonl => "jsonl",
    }
}

const CSV_HEADER: &[&str] = &[
    "id",
    "created_at_ms",
    "surface",
    "stream",
    "tenant",
    "served_by",
    "status",
    "latency_ms",
    "overhead_ms",
    "question_chars",
    "cache_similarity",
    "prompt_tokens",
    "completion_tokens",
    "usage_source",
    "conversation_id",
    "attempts",
];

fn csv_line(fields: &[String]) -> Vec<u8> {
    let mut writer = csv::Writer::from_writer(Vec::new());
    // Writing to memory cannot fail.
    let _ = writer.write_record(fields);
    writer.into_inner().unwrap_or_default()
}

fn csv_fields(row: &RequestRow) -> [String; 16] {
    let attempts = row
        .attempts
        .iter()
        .flatten()
        .map(|a| format!("{}:{}", a.provider, a.outcome))
        .collect::<Vec<_>>()
        .join(" ");
    [
        row.id.clone(),
        row.created_at_ms.to_string(),
        row.surface.as_str().into(),
        row.stream.to_string(),
        row.tenant.clone(),
        row.served_by
            .as_ref()
            .map(ToString::to_string)
            .unwrap_or_default(),
        row.status.as_str().into(),
        row.latency_ms.to_string(),
        format!("{:.3}", row.overhead_ms),
        row.question_chars.to_string(),
        row.cache_similarity
            .map(|s| format!("{s:.4}"))
            .unwrap_or_default(),
        row.prompt_tokens.to_string(),
        row.completion_tokens.to_string(),
        row.usage_source
            .map(|u| u.as_str().to_string())
            .unwrap_or_default(),
        row.conversation_id.clone().unwrap_or_default(),
        attempts,
    ]
}

/// `GET /api/audit/export?format=csv|jsonl&route&provider&status&tenant&from&to`:
/// every request the filter matches, newest first, with its attempts, streamed
/// page by page (at most [`MAX_EXPORT_ROWS`]).
pub async fn export(
    _: Admin,
    State(state): State<AppState>,
    query: QueryMap,
) -> Result<Response, ApiError> {
    let params = Params::new(query, &[FILTERS, &["format"]].concat())?;
    let format = params
        .parsed::<ExportFormat>("format")?
        .unwrap_or(ExportFormat::Csv);
    let mut filter = filter(&params, state.gateway.clock().unix_ms())?;
    filter.limit = EXPORT_PAGE;
    filter.with_attempts = true;
    let store = state.store.clone();
    struct Cursor {
        filter: RequestFilter,
        sent: usize,
        done: bool,
    }
    let start = Cursor {
        filter,
        sent: 0,
        done: false,
    };
    let pages = futures::stream::unfold(start, move |mut cursor| {
        let store = store.clone();
        async move {
            if cursor.done {
                return None;
            }
            let page = match store.requests(&cursor.filter).await {
                Ok(page) => page,
                Err(err) => {
                    tracing::error!(error = %err, "audit export stopped");
                    // The body ends early; a cut export shows as an error, not as whole.
                    cursor.done = true;
                    return Some((
                        Err(std::io::Error::other("the audit store could not be read")),
                        cursor,
                    ));
                }
            };
            let room = MAX_EXPORT_ROWS - cursor.sent;
            let rows: Vec<&RequestRow> = page.items.iter().take(room).collect();
            cursor.sent += rows.len();
            let mut chunk = match format {
                // One writer for the page, not one per row.
                ExportFormat::Csv => {
                    let mut writer = csv::Writer::from_writer(Vec::new());
                    for row in &rows {
                        // Writing to memory cannot fail.
                        let _ = writer.write_record(csv_fields(row));
                    }
                    writer.into_inner().unwrap_or_default()
                }
                ExportFormat::Jsonl => {
                    let mut chunk = Vec::new();
                    for row in &rows {
                        chunk.extend(serde_json::to_vec(row).unwrap_or_default());
                        chunk.push(b'\n');
                    }
                    chunk
                }
            };
            match page.next_cursor {
                Some(next) if cursor.sent < MAX_EXPORT_ROWS => cursor.filter.before = Some(next),
                Some(_) => {
                    cursor.done = true;
                    let note = format!("more than {MAX_EXPORT_ROWS} rows match: narrow the filter");
                    match format {
                        ExportFormat::Csv => chunk.extend(csv_line(&[format!("# {note}")])),
                        ExportFormat::Jsonl => {
                            chunk.extend(
                                serde_json::json!({"truncated": note})
                                    .to_string()
                                    .into_bytes(),
                            );
                            chunk.push(b'\n');
                        }
                    }
                }
                None => cursor.done = true,
            }
            Some((Ok::<_, std::io::Error>(bytes::Bytes::from(chunk)), cursor))
        }
    });
    let (content_type, extension, head) = match format {
        ExportFormat::Csv => (
            "text/csv; charset=utf-8",
            "csv",
            csv_line(&CSV_HEADER.iter().map(|h| h.to_string()).collect::<Vec<_>>()),
        ),
        ExportFormat::Jsonl => ("application/x-ndjson", "jsonl", Vec::new()),
    };
    let body = futures::stream::once(async move { Ok(bytes::Bytes::from(head)) }).chain(pages);
    Ok((
        [
            (header::CONTENT_TYPE, content_type.to_string()),
            (
                header::CONTENT_DISPOSITION,
                format!("attachment; filename=\"chaosai-audit.{extension}\""),
            ),
        ],
        Body::from_stream(body),
    )
        .into_response())
}
