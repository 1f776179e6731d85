//! The chaos board: one card per provider with its breaker light, its health
//! over the last minute and its fault controls; the request path, counters and
//! latency chart; the transition timeline and the last hour's incident chart;
//! scenarios and synthetic traffic.
//!
//! The page renders whole on the server from a seed (the gateway's live state
//! and the last minutes from the audit trail), so it is right before hydration
//! and after a reload; the websocket then keeps it current, and every
//! (re)connect takes a fresh seed, so a gap loses nothing.

mod actions;
mod socket;
pub mod state;

pub use actions::{heal, load_board, scenario, set_fault, traffic};
use socket::Link;
use state::BoardState;

use super::incident::{hms, load_incident, IncidentChart};
use crate::shared::history::BoardSeed;
use crate::shared::{
    AttemptOutcome, AttemptSummary, BreakerState, FaultKind, FaultSpec, ProviderStatus, Route,
};
use leptos::prelude::*;
use leptos::task::spawn_local;

/// The local clock in milliseconds (0 during server rendering).
fn clock_ms() -> f64 {
    #[cfg(feature = "hydrate")]
    {
        js_sys::Date::now()
    }
    #[cfg(not(feature = "hydrate"))]
    {
        0.0
    }
}

fn seconds(ms: f64) -> String {
    let s = (ms / 1000.0).max(0.0);
    if s < 60.0 {
        format!("{s:.0} s")
    } else {
        format!("{:.0} min {:.0} s", (s / 60.0).floor(), s % 60.0)
    }
}

fn describe(spec: &FaultSpec) -> String {
    match &spec.kind {
        FaultKind::Outage => "Outage 503".into(),
        FaultKind::Latency {
            delay_ms,
            jitter_ms,
        } => format!("Latency {delay_ms} ms ± {jitter_ms}"),
        FaultKind::RateLimit { retry_after_s } => {
            format!("Rate limit 429 (retry {retry_after_s} s)")
        }
        FaultKind::Flaky { error_rate } => format!("Flaky {:.0}%", error_rate * 100.0),
        FaultKind::Hang => "Hang".into(),
        FaultKind::Malformed => "Malformed".into(),
        FaultKind::Reset { .. } => "Reset".into(),
    }
}

/// Runs a board action, reporting failures in the notice line.
fn act(
    notice: RwSignal<Option<String>>,
    action: impl std::future::Future<Output = Result<(), ServerFnError>> + 'static,
) {
    spawn_local(async move {
        match action.await {
            Ok(()) => notice.set(None),
            Err(err) => notice.set(Some(err.to_string())),
        }
    });
}

/// `/chaos`: the board for a presenter holding the admin cookie, a login form otherwise.
#[component]
pub fn BoardPage() -> impl IntoView {
    let seed = Resource::new(|| (), |_| load_board());
    view! {
        <Suspense fallback=|| view! { <p class="muted">"Loading the board…"</p> }>
            {move || {
                seed.get().map(|seed| match seed {
                    Ok(Some(seed)) => view! { <Board seed/> }.into_any(),
                    _ => view! { <Login/> }.into_any(),
                })
            }}
        </Suspense>
    }
}

/// Asks for the admin token, sent in a POST body so it never sits in a URL
/// (the one-time board link printed at start-up logs in without it).
#[component]
fn Login() -> impl IntoView {
    let query = leptos_router::hooks::use_query_map();
    let problem = move || {
        query.with(|q| match q.get("login").as_deref() {
            Some("failed") => Some("That token is not the admin token."),
            Some("expired") => {
                Some("That board link was already used or has expired: enter the admin token.")
            }
            _ => None,
        })
    };
    view! {
        <section class="panel login">
            <h1>"Chaos board"</h1>
            <p>"Open the one-time board link printed when the server started, or enter the admin token."</p>
            {move || problem().map(|p| view! { <p class="notice" role="alert">{p}</p> })}
            <form method="post" action="/chaos/login">
                <label for="token">"Admin token"</label>
                <input id="token" name="token" type="password" autocomplete="off" required/>
                <button type="submit">"Open the board"</button>
            </form>
        </section>
    }
}

/// The live board, starting from `seed`.
#[component]
pub fn Board(seed: BoardSeed) -> impl IntoView {
    // The server and the browser start from the same seed and the same clock
    // reading, so the hydrated page is the rendered one.
    let now = RwSignal::new(seed.now_ms as f64);
    let board = RwSignal::new(BoardState::from_seed(seed));
    let link = RwSignal::new(Link::Connecting);
    let notice = RwSignal::new(None::<String>);
    let incident = Resource::new(|| (), |_| load_incident(None));
    Effect::new(move |_| {
        socket::open(
            move |event| board.update(|b| b.apply(event, clock_ms())),
            move |state| {
                link.set(state);
                // Whatever happened while the socket was away is in the audit.
                if state == Link::Live {
                    spawn_local(async move {
                        if let Ok(Some(seed)) = load_board().await {
                            board.update(|b| b.reseed(seed));
                        }
                    });
                    incident.refetch();
                }
            },
        );
        now.set(clock_ms());
        set_interval(
            move || now.set(clock_ms()),
            std::time::Duration::from_millis(500),
        );
        set_interval(
            move || incident.refetch(),
            std::time::Duration::from_secs(15),
        );
    });

    let providers = Memo::new(move |_| {
        board.with(|b| {
            b.providers
                .iter()
                .map(|p| p.name.clone())
                .collect::<Vec<_>>()
        })
    });
    let traffic_on = Memo::new(move |_| board.with(|b| b.traffic.running));
    let traffic_status = Memo::new(move |_| board.with(|b| b.traffic));

    view! {
        <section class="board" aria-label="Chaos board">
            <header class="board-head">
                <h1>"Chaos board"</h1>
                <span class="link" data-link=move || link.get().label() role="status">
                    <span class="dot" aria-hidden="true"></span>
                    {move || link.get().label()}
                </span>
            </header>
            <div class="scenarios" role="group" aria-label="Scenarios">
                <button on:click=move |_| act(notice, scenario("primary_outage".into()))>"Primary outage"</button>
                <button on:click=move |_| act(notice, scenario("total_blackout".into()))>"Total blackout"</button>
                <button on:click=move |_| act(notice, scenario("latency_everywhere".into()))>"Latency storm everywhere"</button>
                <button class="heal" on:click=move |_| act(notice, heal(None))>"Heal all"</button>
                <button
                    class="traffic"
                    aria-pressed=move || traffic_on.get().to_string()
                    on:click=move |_| {
                        let on = !traffic_on.get_untracked();
                        act(notice, async move { traffic(on).await.map(|_| ()) })
                    }
                >
                    {move || if traffic_on.get() { "Stop traffic" } else { "Start traffic" }}
                </button>
                <span class="traffic-status muted" role="status"
                    data-asked=move || traffic_status.get().asked.to_string()
                    data-in-flight=move || traffic_status.get().in_flight.to_string()>
                    {move || {
                        let t = traffic_status.get();
                        format!("{} asked, {} in flight", t.asked, t.in_flight)
                    }}
                </span>
            </div>
            {move || notice.get().map(|n| view! { <p class="notice" role="alert">{n}</p> })}
            <div class="cards">
                <For each=move || providers.get() key=|name| name.clone() let:name>
                    <ProviderCard name board now notice/>
                </For>
            </div>
            <div class="live-grid">
                <Counters board now/>
                <LatencyChart board/>
            </div>
            <div class="live-grid">
                <RequestPath board/>
                <Timeline board/>
            </div>
            <section class="panel" aria-label="The last hour">
                <h2>"The last hour"</h2>
                <Transition fallback=|| view! { <p class="muted">"Loading…"</p> }>
                    {move || incident.get().map(|t| match t {
                        Ok(timeline) => view! { <IncidentChart timeline/> }.into_any(),
                        Err(err) => view! { <p class="notice" role="alert">{err.to_string()}</p> }.into_any(),
                    })}
                </Transition>
            </section>
        </section>
    }
}

/// One provider: breaker light and word, numbers, active fault, fault buttons.
#[component]
fn ProviderCard(
    name: String,
    board: RwSignal<BoardState>,
    now: RwSignal<f64>,
    notice: RwSignal<Option<String>>,
) -> impl IntoView {
    let status = {
        let name = name.clone();
        Memo::new(move |_| board.with(|b| b.providers.iter().find(|p| p.name == name).cloned()))
    };
    let delay_ms = RwSignal::new(3000u64);
    let error_rate = RwSignal::new(50u64);
    let heal_after = RwSignal::new(30u64);
    let field = |p: &Option<ProviderStatus>, f: &dyn Fn(&ProviderStatus) -> String| {
        p.as_ref().map(f).unwrap_or_default()
    };
    let inject = {
        let name = name.clone();
        move |kind: FaultKind| {
            let spec = FaultSpec {
                kind,
                duration_s: Some(heal_after.get_untracked()).filter(|s| *s > 0),
            };
            act(notice, set_fault(name.clone(), spec));
        }
    };
    let button = {
        let inject = inject.clone();
        move |label: &'static str, make: fn(u64, u64) -> FaultKind| {
            let inject = inject.clone();
            view! {
                <button on:click=move |_| inject(make(delay_ms.get_untracked(), error_rate.get_untracked()))>{label}</button>
            }
        }
    };
    let heal_one = {
        let name = name.clone();
        move |_| act(notice, heal(Some(name.clone())))
    };
    let title = name.clone();
    view! {
        <article
            class="card"
            data-provider=name.clone()
            data-state=move || status.with(|p| p.as_ref().map(|p| p.state.as_str()).unwrap_or("closed"))
        >
            <header>
                <span class="light" aria-hidden="true"></span>
                <h2>{title}</h2>
                <span class="state">{move || status.with(|p| p.as_ref().map(|p| p.state.label()).unwrap_or("…"))}</span>
            </header>
            <dl>
                <dt>"Model"</dt>
                <dd>{move || status.with(|p| field(p, &|p| format!("{} ({}{})", p.model, p.protocol, if p.simulated { ", simulated" } else { "" })))}</dd>
                <dt>"Priority"</dt>
                <dd>{move || status.with(|p| field(p, &|p| format!("#{}", p.priority + 1)))}</dd>
                <dt>"Consecutive failures"</dt>
                <dd class="failures">{move || status.with(|p| field(p, &|p| p.consecutive_failures.to_string()))}</dd>
                <dt>"Time in state"</dt>
                <dd>
                    {move || {
                        let age = now.get() - board.with(|b| b.snapshot_at_ms);
                        status.with(|p| field(p, &|p| seconds(p.in_state_ms as f64 + age)))
                    }}
                </dd>
                <dt>"Fault"</dt>
                <dd class="fault" data-active=move || status.with(|p| p.as_ref().is_some_and(|p| p.fault.is_some()).to_string())>
                    {move || {
                        let age = now.get() - board.with(|b| b.snapshot_at_ms);
                        status.with(|p| match p.as_ref().and_then(|p| p.fault.as_ref()) {
                            None => "none".to_string(),
                            Some(f) => match f.remaining_ms {
                                Some(ms) => format!("{} · heals in {}", describe(&f.spec), seconds(ms as f64 - age)),
                                None => describe(&f.spec),
                            },
                        })
                    }}
                </dd>
            </dl>
            <Health name=name.clone() board now/>
            <div class="fault-buttons" role="group" aria-label=format!("Inject a fault into {name}")>
                {button("Outage 503", |_, _| FaultKind::Outage)}
                {button("Latency storm", |delay, _| FaultKind::Latency { delay_ms: delay, jitter_ms: delay / 5 })}
                {button("Rate limit 429", |_, _| FaultKind::RateLimit { retry_after_s: 20 })}
                {button("Flaky", |_, rate| FaultKind::Flaky { error_rate: rate as f64 / 100.0 })}
                {button("Hang", |_, _| FaultKind::Hang)}
                {button("Malformed", |_, _| FaultKind::Malformed)}
                {button("Reset", |_, _| FaultKind::Reset { after_bytes: 600 })}
                <button class="heal" on:click=heal_one>"Heal"</button>
            </div>
            <div class="fault-settings">
                <label>
                    "Delay (ms)"
                    <input type="number" min="0" step="500" prop:value=move || delay_ms.get().to_string()
                        on:change=move |ev| delay_ms.set(event_target_value(&ev).parse().unwrap_or(3000))/>
                </label>
                <label>
                    "Error rate (%)"
                    <input type="number" min="0" max="100" prop:value=move || error_rate.get().to_string()
                        on:change=move |ev| error_rate.set(event_target_value(&ev).parse::<u64>().unwrap_or(50).min(100))/>
                </label>
                <label>
                    "Auto-heal (s, 0 = never)"
                    <input type="number" min="0" prop:value=move || heal_after.get().to_string()
                        on:change=move |ev| heal_after.set(event_target_value(&ev).parse().unwrap_or(0))/>
                </label>
            </div>
        </article>
    }
}

/// The customer-facing numbers over the board's window.
#[component]
fn Counters(board: RwSignal<BoardState>, now: RwSignal<f64>) -> impl IntoView {
    let counters = Memo::new(move |_| board.with(|b| b.counters(now.get())));
    let window = move || board.with(|b| b.window_ms / 60_000);
    view! {
        <section class="panel counters" aria-label="Counters">
            <h2>"Customers"<span class="muted">{move || format!(" · last {} min", window())}</span></h2>
            <dl>
                <dt>"Answered"</dt>
                <dd class="answered">{move || counters.with(|c| c.answered)}</dd>
                <dt>"Cache hit ratio"</dt>
                <dd>{move || format!("{:.0}%", counters.with(|c| c.cache_ratio()) * 100.0)}</dd>
                <dt>"Last resort"</dt>
                <dd class="last-resort-count">{move || counters.with(|c| c.route(&Route::LastResort))}</dd>
                <dt>"Customer-visible errors"</dt>
                <dd class="customer-errors">{move || counters.with(|c| c.customer_errors)}</dd>
            </dl>
            <ul class="routes">
                {move || counters.with(|c| c.by_route.iter().map(|(route, n)| {
                    let (label, n) = (route.clone(), *n);
                    view! { <li data-route=route.clone()><b>{label}</b>" "{n}</li> }
                }).collect_view())}
            </ul>
        </section>
    }
}

/// A provider's last minute: error rate, latency percentiles, a sparkline of
/// its median latency (failures marked below), its last success, and while it
/// is OPEN why and when the next probe goes.
#[component]
fn Health(name: String, board: RwSignal<BoardState>, now: RwSignal<f64>) -> impl IntoView {
    let health = {
        let name = name.clone();
        Memo::new(move |_| board.with(|b| b.health(&name, now.get())))
    };
    let open = {
        let name = name.clone();
        Memo::new(move |_| {
            board.with(|b| {
                let p = b.providers.iter().find(|p| p.name == name)?;
                (p.state == BreakerState::Open).then(|| {
                    let age = now.get() - b.snapshot_at_ms;
                    let due = p.retry_in_ms.map(|ms| (ms as f64 - age).max(0.0));
                    (b.open_reason(&name).unwrap_or("failures").to_string(), due)
                })
            })
        })
    };
    let spark = move || {
        health.with(|h| {
            let peak = h.spark.iter().flatten().copied().max().unwrap_or(1).max(1) as f64;
            let step = 120.0 / (h.spark.len().max(2) - 1) as f64;
            let line = h
                .spark
                .iter()
                .enumerate()
                .filter_map(|(i, v)| v.map(|v| format!("{:.1},{:.1}", i as f64 * step, 22.0 - v as f64 / peak * 20.0)))
                .collect::<Vec<_>>()
                .join(" ");
            let errors = h
                .spark_errors
                .iter()
                .enumerate()
                .filter(|(_, n)| **n > 0)
                .map(|(i, _)| view! { <rect x=format!("{:.1}", i as f64 * step - 2.0) y="24" width="4" height="4" fill="#ff6b6b"/> })
                .collect_view();
            view! {
                <polyline points=line fill="none" stroke="currentColor" stroke-width="1.5"/>
                {errors}
            }
        })
    };
    let label = {
        let name = name.clone();
        move || {
            health.with(|h| {
                format!(
                    "{name} over the last minute: {} attempts, {:.0}% failed, median {}",
                    h.attempts,
                    h.error_rate() * 100.0,
                    h.p50_ms.map_or("—".to_string(), |ms| format!("{ms} ms"))
                )
            })
        }
    };
    view! {
        <div class="health" aria-label="Last minute">
            <dl>
                <dt>"Errors (1 min)"</dt>
                <dd class="error-rate">{move || health.with(|h| if h.attempts == 0 {
                    "no attempts".to_string()
                } else {
                    format!("{:.0}% of {}", h.error_rate() * 100.0, h.attempts)
                })}</dd>
                <dt>"Latency p50 / p95"</dt>
                <dd>{move || health.with(|h| match (h.p50_ms, h.p95_ms) {
                    (Some(a), Some(b)) => format!("{a} / {b} ms"),
                    _ => "—".to_string(),
                })}</dd>
                <dt>"Last success"</dt>
                <dd class="last-success">{move || health.with(|h| match h.last_success_ms {
                    Some(at) => format!("{} ago", seconds(now.get() - at as f64)),
                    None => "none yet".to_string(),
                })}</dd>
                {move || open.get().map(|(reason, due)| view! {
                    <dt>"Why OPEN"</dt>
                    <dd class="open-reason">{reason}</dd>
                    <dt>"Next probe"</dt>
                    <dd>{due.map_or("when due".to_string(), |ms| format!("in {}", seconds(ms)))}</dd>
                })}
            </dl>
            <svg class="spark" viewBox="0 0 120 28" preserveAspectRatio="none" role="img" aria-label=label>
                {spark}
            </svg>
        </div>
    }
}

/// Latency of recent requests.
#[component]
fn LatencyChart(board: RwSignal<BoardState>) -> impl IntoView {
    let points = move || {
        board.with(|b| {
            let latencies = b.latencies();
            let max = latencies.iter().copied().max().unwrap_or(1).max(1) as f64;
            let n = latencies.len().max(2) as f64 - 1.0;
            latencies
                .iter()
                .enumerate()
                .map(|(i, l)| {
                    format!(
                        "{:.1},{:.1}",
                        i as f64 * 300.0 / n,
                        100.0 - *l as f64 / max * 95.0
                    )
                })
                .collect::<Vec<_>>()
                .join(" ")
        })
    };
    let peak = move || board.with(|b| b.latencies().into_iter().max().unwrap_or(0));
    view! {
        <section class="panel chart" aria-label="Latency of recent requests">
            <h2>"Latency"<span class="muted">{move || format!(" · peak {} ms", peak())}</span></h2>
            <svg viewBox="0 0 300 100" preserveAspectRatio="none" role="img" aria-label="Latency over the last requests">
                <polyline points=points fill="none" stroke="currentColor" stroke-width="2"/>
            </svg>
        </section>
    }
}

fn attempt_view(a: &AttemptSummary) -> impl IntoView + use<> {
    let (mark, class, detail) = match a.outcome {
        AttemptOutcome::Ok => ("✓", "ok", format!("{} ms", a.latency_ms)),
        AttemptOutcome::SkippedOpen => ("↷", "skipped", "skipped (open)".to_string()),
        outcome => (
            "✗",
            "failed",
            a.status
                .map(|s| s.to_string())
                .unwrap_or_else(|| outcome.as_str().replace('_', " ")),
        ),
    };
    view! { <span class=format!("hop {class}")>{a.provider.clone()}" "{mark}" "{detail}</span> }
}

/// Each request as it happens: the route it took.
#[component]
fn RequestPath(board: RwSignal<BoardState>) -> impl IntoView {
    view! {
        <section class="panel path" aria-label="Live request path">
            <h2>"Requests"</h2>
            <ol class="traces">
                {move || {
                    board.with(|b| {
                        b.traces
                            .iter()
                            .map(|t| {
                                let hops = t.attempts.iter().map(attempt_view).collect_view();
                                let route = t.served_by.as_ref().map_or("—".to_string(), Route::to_string);
                                // In a cluster, which replica served it.
                                let on = t.replica.as_ref().map_or(String::new(), |r| format!(" · {r}"));
                                let label = format!("→ {route} · {} ms{on}", t.latency_ms);
                                view! {
                                    <li data-route=route>
                                        {hops}
                                        <span class="served">{label}</span>
                                    </li>
                                }
                            })
                            .collect_view()
                    })
                }}
            </ol>
        </section>
    }
}

/// Breaker transitions, newest first.
#[component]
fn Timeline(board: RwSignal<BoardState>) -> impl IntoView {
    view! {
        <section class="panel timeline" aria-label="Breaker transitions">
            <h2>"Transitions"</h2>
            <ol class="transitions">
                {move || {
                    board.with(|b| {
                        b.transitions
                            .iter()
                            .map(|t| {
                                view! {
                                    <li data-to=t.to.as_str()>
                                        <time>{hms(t.at_ms)}</time>" "
                                        <b>{t.provider.clone()}</b>" "
                                        {t.replica.as_ref().map(|r| format!("on {r} "))}
                                        {t.from.label()}" → "{t.to.label()}
                                        <span class="reason">{t.reason.clone()}</span>
                                    </li>
                                }
                            })
                            .collect_view()
                    })
                }}
            </ol>
        </section>
    }
}
