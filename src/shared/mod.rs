//! Types that cross the wire between the server and the browser.
//!
//! Everything here compiles for both targets, so the chat page and the gateway
//! agree on one definition of a turn, a streamed event and an attempt.
//!
//! - `events`: the live view (breaker states, faults, traces, transitions).
//! - `outcome`: the names of what happened (route, request status, attempt outcome).
//! - `provider`: what a provider is and can do (protocol, continuation, probing).
//! - `audit`: the rows the audit API and the audit page read.
//! - `history`: the board's seed (the last minutes) and the incident timeline.
//! - `usage`: what an answer cost in tokens, and who counted it.
//! - `spelling`: the macro that gives each of those names one spelling.

pub mod audit;
mod events;
pub mod history;
mod outcome;
mod provider;
mod spelling;
mod usage;

pub use events::*;
pub use outcome::*;
pub use provider::*;
use serde::{Deserialize, Serialize};
pub use spelling::UnknownSpelling;
pub use usage::{Usage, UsageSource};

crate::spelled! {
    /// Who said a turn of a conversation.
    pub enum Role {
        /// Instructions that frame the conversation; never shown as a bubble.
        System => "system",
        /// The customer.
        User => "user",
        /// The support assistant (a provider, the cache or the last resort).
        Assistant => "assistant",
        /// The result of a tool the assistant called (a support bot's order lookup).
        Tool => "tool",
    }
}

/// A call of one of the caller's tools, as the model asked for it.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct ToolCall {
    /// The call's id, which the tool's result names.
    pub id: String,
    /// The function called.
    pub name: String,
    /// Its arguments, a JSON object as text.
    pub arguments: String,
}

/// One message of a conversation, as the customer and the providers see it.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct ChatTurn {
    /// Who said it.
    pub role: Role,
    /// What was said, as plain text (may be empty beside tool calls).
    pub content: String,
    /// An assistant turn's tool calls.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub tool_calls: Vec<ToolCall>,
    /// A tool turn: the call it answers.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tool_call_id: Option<String>,
}

impl ChatTurn {
    /// A turn of `role` saying `content`.
    pub fn new(role: Role, content: impl Into<String>) -> Self {
        Self {
            role,
            content: content.into(),
            tool_calls: Vec::new(),
            tool_call_id: None,
        }
    }

    /// A turn said by the customer.
    pub fn user(content: impl Into<String>) -> Self {
        Self::new(Role::User, content)
    }

    /// A turn said by the assistant.
    pub fn assistant(content: impl Into<String>) -> Self {
        Self::new(Role::Assistant, content)
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
