//! Types that cross the wire between the server and the browser.
//!
//! Everything here compiles for both targets, so the chat page and the gateway
//! agree on one definition of a turn, a streamed event and an attempt.
//!
//! - `events`: the live view (breaker states, faults, traces, transitions).
//! - `outcome`: the names of what happened (route, request status, attempt outcome).
//! - `provider`: what a provider is and can do (protocol, continuation, probing).
//! - `audit`: the rows the audit API and the audit page read.
//! - `spelling`: the macro that gives each of those names one spelling.

pub mod audit;
mod events;
mod outcome;
mod provider;
mod spelling;

pub use events::*;
pub use outcome::*;
pub use provider::*;
use serde::{Deserialize, Serialize};
pub use spelling::UnknownSpelling;

crate::spelled! {
    /// Who said a turn of a conversation.
    pub enum Role {
        /// Instructions that frame the conversation; never shown as a bubble.
        System => "system",
        /// The customer.
        User => "user",
        /// The support assistant (a provider, the cache or the last resort).
        Assistant => "assistant",
    }
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

/// One line of the chat page's answer stream (newline-delimited JSON).
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(tag = "type", rename_all = "snake_case")]
pub enum ChatEvent {
    /// The answer is being served by this route; sent once, before any text.
    Started {
        /// The provider, the cache or the last resort.
        served_by: Route,
        /// The conversation this answer belongs to; the page sends it back with
        /// the next question so the history is kept together.
        conversation_id: String,
    },
    /// The next piece of the answer's text.
    Delta {
        /// Text to append to the reply.
        text: String,
    },
    /// The answer broke and starts over: the text so far is replaced by what follows.
    Restarted {
        /// Who serves the new answer.
        served_by: Route,
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
