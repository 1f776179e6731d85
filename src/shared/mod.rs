//! Types that cross the wire between the server and the browser.
//!
//! Everything here compiles for both targets, so the chat page and the gateway
//! agree on one definition of a turn, a streamed event and an attempt.

mod events;

pub use events::*;
use serde::{Deserialize, Serialize};

/// Who said a turn of a conversation.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Role {
    /// Instructions that frame the conversation; never shown as a bubble.
    System,
    /// The customer.
    User,
    /// The support assistant (a provider, the cache or the last resort).
    Assistant,
}

/// One message of a conversation, as the customer and the providers see it.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct ChatTurn {
    /// Who said it.
    pub role: Role,
    /// What was said, as plain text.
    pub content: String,
}

impl ChatTurn {
    /// A turn said by the customer.
    pub fn user(content: impl Into<String>) -> Self {
        Self {
            role: Role::User,
            content: content.into(),
        }
    }

    /// A turn said by the assistant.
    pub fn assistant(content: impl Into<String>) -> Self {
        Self {
            role: Role::Assistant,
            content: content.into(),
        }
    }
}

/// How one provider attempt of a request ended; shown next to a reply and kept in the audit.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct AttemptSummary {
    /// The provider's configured name ("claude", "gpt", …).
    pub provider: String,
    /// `"ok"` for the attempt that served the answer, otherwise a short failure kind
    /// such as `"server_error"`, `"rate_limited"` or `"timeout"`.
    pub outcome: String,
    /// The HTTP status the provider answered with, when it answered at all.
    pub status: Option<u16>,
    /// Wall time of the attempt in milliseconds.
    pub latency_ms: u64,
    /// The provider's breaker state when the attempt was decided.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub breaker: Option<BreakerState>,
}

/// One line of the chat page's answer stream (newline-delimited JSON).
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(tag = "type", rename_all = "snake_case")]
pub enum ChatEvent {
    /// The answer is being served by this route; sent once, before any text.
    Started {
        /// The provider's name, `cache` or `last-resort`.
        served_by: String,
        /// The conversation this answer belongs to; the page sends it back with
        /// the next question so the history is kept together.
        conversation_id: String,
    },
    /// The next piece of the answer's text.
    Delta {
        /// Text to append to the reply.
        text: String,
    },
    /// The answer is complete.
    Done {
        /// Who served it.
        served_by: String,
        /// Time from the question reaching the gateway to the last token.
        elapsed_ms: u64,
        /// Every provider attempt the request made, in order.
        attempts: Vec<AttemptSummary>,
    },
    /// The answer could not be completed; the text so far must not be taken as whole.
    Failed {
        /// A message fit to show the customer.
        message: String,
    },
}
