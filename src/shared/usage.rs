//! What an answer cost in tokens, and who counted it: the figure a support team
//! bills and budgets by, so it is never a made-up zero.

use serde::{Deserialize, Serialize};

crate::spelled! {
    /// Who counted an answer's tokens.
    pub enum UsageSource {
        /// The provider reported its own counts.
        Provider => "provider",
        /// The provider reported none (or the stream broke before it could): the
        /// gateway estimated them from the text.
        Estimated => "estimated",
        /// The semantic cache answered: no prompt was sent anywhere; the completion
        /// is the cached answer's own size.
        Cache => "cache",
        /// The last resort answered from the knowledge base or with a ticket.
        LastResort => "last_resort",
    }
}

/// Tokens one answer (or one attempt) cost.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Usage {
    /// Tokens of the request.
    pub prompt_tokens: u64,
    /// Tokens of the answer.
    pub completion_tokens: u64,
}

impl Usage {
    /// Both together.
    pub fn total(&self) -> u64 {
        self.prompt_tokens.saturating_add(self.completion_tokens)
    }

    /// The sum of two usages.
    pub fn plus(self, other: Usage) -> Usage {
        Usage {
            prompt_tokens: self.prompt_tokens.saturating_add(other.prompt_tokens),
            completion_tokens: self
                .completion_tokens
                .saturating_add(other.completion_tokens),
        }
    }

    /// The gateway's estimate for text no provider counted: OpenAI's documented
    /// rule of thumb of four characters a token, never zero for non-empty text.
    pub fn estimate(text: &str) -> u64 {
        (text.chars().count() as u64).div_ceil(4)
    }
}

impl UsageSource {
    /// The source of an answer served in parts (a splice): estimated if any part was.
    pub fn and(self, other: UsageSource) -> UsageSource {
        if self == UsageSource::Estimated || other == UsageSource::Estimated {
            UsageSource::Estimated
        } else {
            self
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_estimate_counts_every_started_four_characters() {
        assert_eq!(Usage::estimate(""), 0);
        assert_eq!(Usage::estimate("abc"), 1);
        assert_eq!(Usage::estimate("abcd"), 1);
        assert_eq!(Usage::estimate("abcde"), 2);
        // Characters, not bytes: a customer writing in Greek is not billed double.
        assert_eq!(Usage::estimate("αβγδ"), 1);
    }

    #[test]
    fn a_splice_with_an_estimated_part_is_estimated() {
        use UsageSource::*;
        assert_eq!(Provider.and(Provider), Provider);
        assert_eq!(Provider.and(Estimated), Estimated);
        assert_eq!(Estimated.and(Provider), Estimated);
    }
}
