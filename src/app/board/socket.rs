//! The board's websocket to `/ws/events`, with automatic reconnection and
//! exponential backoff. Browser only: during server rendering the board shows
//! "connecting" until the page hydrates.

// Only the browser build opens sockets; the server build renders the states.
#![cfg_attr(not(feature = "hydrate"), allow(dead_code))]

use crate::shared::GatewayEvent;

/// Where the live connection stands.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Link {
    /// Not yet connected (server rendering, first attempt).
    Connecting,
    /// Events are flowing.
    Live,
    /// The connection dropped; a retry is scheduled.
    Reconnecting,
}

impl Link {
    /// The word shown in the indicator.
    pub fn label(self) -> &'static str {
        match self {
            Link::Connecting => "connecting",
            Link::Live => "live",
            Link::Reconnecting => "reconnecting",
        }
    }
}

/// Delay before reconnection attempt `n` (0-based): 250 ms doubling, capped at 8 s.
pub fn backoff_ms(attempt: u32) -> u32 {
    250u32.saturating_mul(1 << attempt.min(5)).min(8_000)
}

/// Opens the socket; `on_event` gets every event, `on_link` every change of state.
#[cfg(feature = "hydrate")]
pub fn open(
    on_event: impl Fn(GatewayEvent) + Clone + 'static,
    on_link: impl Fn(Link) + Clone + 'static,
) {
    connect(on_event, on_link, std::rc::Rc::new(std::cell::Cell::new(0)));
}

/// Server rendering has no socket.
#[cfg(not(feature = "hydrate"))]
pub fn open(
    _on_event: impl Fn(GatewayEvent) + Clone + 'static,
    _on_link: impl Fn(Link) + Clone + 'static,
) {
}

#[cfg(feature = "hydrate")]
fn connect(
    on_event: impl Fn(GatewayEvent) + Clone + 'static,
    on_link: impl Fn(Link) + Clone + 'static,
    attempts: std::rc::Rc<std::cell::Cell<u32>>,
) {
    use wasm_bindgen::{closure::Closure, JsCast};

    let retry = {
        let (on_event, on_link, attempts) = (on_event.clone(), on_link.clone(), attempts.clone());
        move || {
            on_link(Link::Reconnecting);
            let attempt = attempts.get();
            attempts.set(attempt + 1);
            let (on_event, on_link, attempts) =
                (on_event.clone(), on_link.clone(), attempts.clone());
            leptos::prelude::set_timeout(
                move || connect(on_event, on_link, attempts),
                std::time::Duration::from_millis(u64::from(backoff_ms(attempt))),
            );
        }
    };
    let Some(window) = web_sys::window() else {
        return;
    };
    let location = window.location();
    let scheme = if location.protocol().ok().as_deref() == Some("https:") {
        "wss"
    } else {
        "ws"
    };
    let host = location.host().unwrap_or_default();
    let Ok(socket) = web_sys::WebSocket::new(&format!("{scheme}://{host}/ws/events")) else {
        retry();
        return;
    };
    let onopen = {
        let (on_link, attempts) = (on_link.clone(), attempts.clone());
        Closure::<dyn FnMut()>::new(move || {
            attempts.set(0);
            on_link(Link::Live);
        })
    };
    let onmessage =
        Closure::<dyn FnMut(web_sys::MessageEvent)>::new(move |message: web_sys::MessageEvent| {
            if let Some(text) = message.data().as_string() {
                if let Ok(event) = serde_json::from_str::<GatewayEvent>(&text) {
                    on_event(event);
                }
            }
        });
    // `close` follows `error`, so reconnecting on close alone covers both.
    let onclose = Closure::<dyn FnMut()>::new(retry);
    socket.set_onopen(Some(onopen.as_ref().unchecked_ref()));
    socket.set_onmessage(Some(onmessage.as_ref().unchecked_ref()));
    socket.set_onclose(Some(onclose.as_ref().unchecked_ref()));
    // The handlers live as long as the page; one small set per connection.
    onopen.forget();
    onmessage.forget();
    onclose.forget();
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn backoff_doubles_and_is_capped() {
        assert_eq!(backoff_ms(0), 250);
        assert_eq!(backoff_ms(1), 500);
        assert_eq!(backoff_ms(4), 4_000);
        assert_eq!(backoff_ms(5), 8_000);
        assert_eq!(backoff_ms(30), 8_000);
    }
}
