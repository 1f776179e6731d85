//! The incident timeline: who answered, minute by minute (a stacked bar per
//! bucket, its height the number of answers), with the breaker transitions and
//! fault changes marked on the same time axis, and the same facts as a list
//! below, so it reads without colour and after the fact. The board shows the last
//! hour; the audit page the period it is filtered to.

use crate::shared::history::{FaultAction, IncidentTimeline};
use crate::shared::BreakerState;
use leptos::prelude::*;
use leptos::server_fn::codec::Json;

/// The timeline of the last `last_minutes` (default 60, at most a week).
#[server(input = Json, endpoint = "board/incident")]
pub async fn load_incident(last_minutes: Option<i64>) -> Result<IncidentTimeline, ServerFnError> {
    let state = super::admin_state().await?;
    let to = state.gateway.clock().unix_ms();
    let minutes = last_minutes.unwrap_or(60).clamp(1, 7 * 24 * 60);
    crate::api::history::incident(&state, to - minutes * 60_000, to)
        .await
        .map_err(|e| ServerFnError::new(e.to_string()))
}

/// The chart's width and height in SVG units.
const WIDTH: f64 = 600.0;
const HEIGHT: f64 = 140.0;
/// Room above the bars for fault markers.
const TOP: f64 = 14.0;

/// A route's colour (every colour also has its name in the legend).
pub fn route_colour(route: &str, index: usize) -> &'static str {
    match route {
        "cache" => "#2dd4bf",
        "last-resort" => "#fb923c",
        "none" => "#9ca3af",
        _ => ["#60a5fa", "#c084fc", "#86efac", "#fde047", "#f472b6"][index % 5],
    }
}

/// `HH:MM` of a Unix time, UTC (the same on the server and in the browser, so
/// the rendered page and the hydrated one agree).
pub fn hhmm(at_ms: i64) -> String {
    let minutes = at_ms.max(0) / 60_000;
    format!("{:02}:{:02} UTC", minutes / 60 % 24, minutes % 60)
}

/// `HH:MM:SS` of a Unix time, UTC.
pub fn hms(at_ms: i64) -> String {
    let secs = at_ms.max(0) / 1000;
    format!(
        "{:02}:{:02}:{:02} UTC",
        secs / 3600 % 24,
        secs / 60 % 60,
        secs % 60
    )
}

/// The incident chart of one timeline.
#[component]
pub fn IncidentChart(timeline: IncidentTimeline) -> impl IntoView {
    let span = (timeline.to_ms - timeline.from_ms).max(1) as f64;
    let x = move |at_ms: i64| ((at_ms - timeline.from_ms) as f64 / span * WIDTH).clamp(0.0, WIDTH);
    let mut routes: Vec<String> = timeline
        .buckets
        .iter()
        .flat_map(|b| b.by_route.keys().cloned())
        .collect();
    routes.sort();
    routes.dedup();
    // Providers first, then the gateway's own answers.
    routes.sort_by_key(|r| matches!(r.as_str(), "cache" | "last-resort" | "none"));
    let colour = {
        let routes = routes.clone();
        move |route: &str| {
            let index = routes.iter().position(|r| r == route).unwrap_or(0);
            route_colour(route, index)
        }
    };
    let peak = timeline
        .buckets
        .iter()
        .map(|b| b.by_route.values().sum::<u64>())
        .max()
        .unwrap_or(0)
        .max(1) as f64;
    let bar_width = (timeline.bucket_ms as f64 / span * WIDTH).max(1.0);
    let bars = timeline
        .buckets
        .iter()
        .flat_map(|bucket| {
            let mut y = HEIGHT;
            let left = x(bucket.at_ms);
            let total: u64 = bucket.by_route.values().sum();
            routes
                .iter()
                .filter_map(|route| bucket.by_route.get(route).map(|n| (route, *n)))
                .map(|(route, n)| {
                    let h = n as f64 / peak * (HEIGHT - TOP);
                    y -= h;
                    let label = format!("{}: {n} of {total} answers by {route}", hhmm(bucket.at_ms));
                    view! {
                        <rect x=format!("{left:.1}") y=format!("{y:.1}") width=format!("{:.1}", (bar_width - 0.5).max(0.5))
                            height=format!("{h:.1}") fill=colour(route)>
                            <title>{label}</title>
                        </rect>
                    }
                })
                .collect::<Vec<_>>()
        })
        .collect_view();
    let lines = timeline
        .transitions
        .iter()
        .map(|t| {
            let (stroke, dash) = match t.to {
                BreakerState::Open => ("#ff6b6b", "none"),
                BreakerState::HalfOpen => ("#f5b14c", "3 2"),
                BreakerState::Closed => ("#3ecf8e", "1 2"),
            };
            let at = x(t.at_ms);
            let label = format!("{} {}: {} → {} ({})", hhmm(t.at_ms), t.provider, t.from.label(), t.to.label(), t.reason);
            view! {
                <line x1=format!("{at:.1}") x2=format!("{at:.1}") y1=format!("{TOP}") y2=format!("{HEIGHT}")
                    stroke=stroke stroke-width="1.5" stroke-dasharray=dash>
                    <title>{label}</title>
                </line>
            }
        })
        .collect_view();
    let markers = timeline
        .faults
        .iter()
        .map(|f| {
            let at = x(f.at_ms);
            let (fill, shape) = match f.action {
                FaultAction::Set => (
                    "#ff6b6b",
                    format!("{:.1},0 {:.1},0 {at:.1},10", at - 5.0, at + 5.0),
                ),
                FaultAction::Healed => (
                    "#3ecf8e",
                    format!("{:.1},10 {:.1},10 {at:.1},0", at - 5.0, at + 5.0),
                ),
            };
            let label = format!(
                "{} {}: fault {} {}",
                hhmm(f.at_ms),
                f.provider,
                f.kind.clone().unwrap_or_default(),
                f.action.as_str()
            );
            view! { <polygon points=shape fill=fill><title>{label}</title></polygon> }
        })
        .collect_view();
    let legend = routes
        .iter()
        .map(|route| {
            let swatch = format!("background:{}", colour(route));
            view! { <li><span class="swatch" style=swatch aria-hidden="true"></span>{route.clone()}</li> }
        })
        .collect_view();
    let mut events: Vec<(i64, String, &'static str)> = timeline
        .transitions
        .iter()
        .map(|t| {
            (
                t.at_ms,
                format!(
                    "{} {} → {} ({})",
                    t.provider,
                    t.from.label(),
                    t.to.label(),
                    t.reason
                ),
                t.to.as_str(),
            )
        })
        .chain(timeline.faults.iter().map(|f| {
            let what = match f.action {
                FaultAction::Set => format!(
                    "{}: fault injected ({})",
                    f.provider,
                    f.kind.clone().unwrap_or_default()
                ),
                FaultAction::Healed => {
                    format!("{}: fault healed ({})", f.provider, f.changed_by.as_str())
                }
            };
            (f.at_ms, what, f.action.as_str())
        }))
        .collect();
    events.sort_by_key(|e| std::cmp::Reverse(e.0));
    let answers: u64 = timeline
        .buckets
        .iter()
        .flat_map(|b| b.by_route.values())
        .sum();
    let summary = format!(
        "{answers} answers from {} to {}; {} breaker transitions; {} fault changes",
        hhmm(timeline.from_ms),
        hhmm(timeline.to_ms),
        timeline.transitions.len(),
        timeline.faults.len()
    );
    view! {
        <figure class="incident">
            <svg viewBox=format!("0 0 {WIDTH} {HEIGHT}") preserveAspectRatio="none" role="img" aria-label=summary.clone()>
                {bars}
                {lines}
                {markers}
            </svg>
            <figcaption>
                <span class="axis"><span>{hhmm(timeline.from_ms)}</span><span>{hhmm(timeline.to_ms)}</span></span>
                <ul class="legend" aria-label="Routes">{legend}</ul>
                <p class="muted">{summary}" · ▼ fault injected · ▲ fault healed · solid line OPEN, dashed HALF-OPEN, dotted CLOSED"</p>
            </figcaption>
            <ol class="incident-events">
                {events.into_iter().take(40).map(|(at, what, kind)| view! {
                    <li data-kind=kind><time>{hms(at)}</time>" "{what}</li>
                }).collect_view()}
            </ol>
        </figure>
    }
}
