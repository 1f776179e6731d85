//! The Leptos application: the HTML shell, the router and the pages.

mod audit;
pub mod board;
mod chat;
mod incident;

use leptos::prelude::*;
use leptos_meta::{provide_meta_context, MetaTags, Stylesheet, Title};
use leptos_router::{
    components::{Route, Router, Routes},
    SsrMode, StaticSegment,
};

pub use audit::AuditPage;
pub use board::BoardPage;
pub use chat::ChatPage;

/// The server's state for a caller holding the admin token (or cookie); a 401
/// for anyone else.
#[cfg(feature = "ssr")]
pub(crate) async fn admin_state() -> Result<crate::api::AppState, ServerFnError> {
    let state = expect_context::<crate::api::AppState>();
    let headers: axum::http::HeaderMap = leptos_axum::extract().await?;
    if crate::api::admin::check(&headers, &state.admin_token).is_ok() {
        Ok(state)
    } else {
        leptos_axum::ResponseOptions::set_status(
            &expect_context(),
            axum::http::StatusCode::UNAUTHORIZED,
        );
        Err(ServerFnError::new(
            "the admin token is required: open the board link printed at start-up",
        ))
    }
}

/// The HTML document around the application, rendered on the server.
pub fn shell(options: LeptosOptions) -> impl IntoView {
    view! {
        <!DOCTYPE html>
        <html lang="en">
            <head>
                <meta charset="utf-8"/>
                <meta name="viewport" content="width=device-width, initial-scale=1"/>
                <AutoReload options=options.clone()/>
                <HydrationScripts options/>
                <MetaTags/>
            </head>
            <body>
                <App/>
            </body>
        </html>
    }
}

/// The application: header and routed pages.
#[component]
pub fn App() -> impl IntoView {
    provide_meta_context();
    view! {
        <Stylesheet id="leptos" href="/pkg/chaosai.css"/>
        <Title text="ChaosAI support"/>
        <Router>
            <header class="topbar">
                <a class="brand" href="/">"ChaosAI"</a>
                <span class="tagline">"support that stays up when the models go down"</span>
                <nav aria-label="Pages">
                    <a href="/">"Chat"</a>
                    <a href="/chaos">"Chaos board"</a>
                    <a href="/demo">"Demo"</a>
                    <a href="/audit">"Audit"</a>
                </nav>
            </header>
            <main>
                <Routes fallback=|| view! { <p class="not-found">"Page not found."</p> }>
                    <Route path=StaticSegment("") view=ChatPage/>
                    // The board and the audit render whole on the server (state,
                    // history, tables), so they are right before hydration and
                    // readable with JavaScript off.
                    <Route path=StaticSegment("chaos") view=BoardPage ssr=SsrMode::Async/>
                    <Route path=StaticSegment("demo") view=DemoPage ssr=SsrMode::Async/>
                    <Route path=StaticSegment("audit") view=AuditPage ssr=SsrMode::Async/>
                </Routes>
            </main>
        </Router>
    }
}

/// `/demo`: the customer's chat beside the board, so the audience sees the
/// customer stay calm while the providers burn.
#[component]
fn DemoPage() -> impl IntoView {
    view! {
        <div class="split">
            <ChatPage/>
            <BoardPage/>
        </div>
    }
}
