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
//! - `image`: a picture a customer shows with a question.
//! - `spelling`: the macro that gives each of those names one spelling.

pub mod audit;
mod events;
pub mod history;
mod image;
mod outcome;
mod provider;
mod spelling;
mod usage;

pub use events::*;
pub use image::{Image, ImageDetail, ImageSource, ImageType};
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
    /// A customer turn's images, in the order they were shown.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub images: Vec<Image>,
}

impl ChatTurn {
    /// A turn of `role` saying `content`.
    pub fn new(role: Role, content: impl Into<String>) -> Self {
        Self {
            role,
            content: content.into(),
            tool_calls: Vec::new(),
            tool_call_id: None,
            images: Vec::new(),
        }
    }

    /// A rough count of the prompt tokens this turn costs: its text (a token
    /// is about four characters) and its images.
    pub fn estimated_tokens(&self) -> u64 {
        Usage::estimate(&self.content)
            + self.images.iter().map(Image::estimated_tokens).sum::<u64>()
    }

    /// The turn's text and images in the order they were shown: text pieces
    /// (never empty) and images between them.
    pub fn parts(&self) -> impl Iterator<Item = TurnPart<'_>> {
        let mut parts = Vec::with_capacity(2 * self.images.len() + 1);
        let mut from = 0;
        for image in &self.images {
            // An offset past the text or inside a character means the end.
            let at = if self.content.is_char_boundary(image.at) {
                image.at.max(from)
            } else {
                self.content.len()
            };
            if at > from {
                parts.push(TurnPart::Text(&self.content[from..at]));
            }
            parts.push(TurnPart::Image(image));
            from = at;
        }
        if from < self.content.len() {
            parts.push(TurnPart::Text(&self.content[from..]));
        }
        parts.into_iter()
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

/// A piece of a turn in the order it was shown.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum TurnPart<'a> {
    /// Text.
    Text(&'a str),
    /// An image.
    Image(&'a Image),
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

#[cfg(test)]
mod tests {
    use super::*;

    fn image(at: usize) -> Image {
        Image {
            source: ImageSource::Url {
                url: "https://shop.example/a.png".into(),
            },
            detail: None,
            at,
        }
    }

    #[test]
    fn a_turns_parts_keep_their_order_whatever_the_offsets() {
        let mut turn = ChatTurn::user("héllo there");
        turn.images = vec![image(0), image(6), image(6)];
        let parts: Vec<_> = turn.parts().collect();
        assert_eq!(
            parts,
            [
                TurnPart::Image(&turn.images[0]),
                TurnPart::Text("héllo"),
                TurnPart::Image(&turn.images[1]),
                TurnPart::Image(&turn.images[2]),
                TurnPart::Text(" there"),
            ]
        );
        // An offset inside a character or past the text puts the image last;
        // one before an earlier image's keeps the order shown.
        turn.images = vec![image(2), image(99)];
        let parts: Vec<_> = turn.parts().collect();
        assert_eq!(
            parts,
            [
                TurnPart::Text("héllo there"),
                TurnPart::Image(&turn.images[0]),
                TurnPart::Image(&turn.images[1]),
            ]
        );
        turn.images = vec![image(6), image(1)];
        let parts: Vec<_> = turn.parts().collect();
        assert_eq!(parts[2], TurnPart::Image(&turn.images[1]));
        assert_eq!(parts[3], TurnPart::Text(" there"));
        // The estimate counts the pictures.
        assert_eq!(
            turn.estimated_tokens(),
            Usage::estimate("héllo there") + 2 * 765
        );
    }
}
