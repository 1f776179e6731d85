//! What an OpenAI-compatible server turned out not to take of a request as it
//! is first written, learned from its own refusals and remembered for the
//! provider's life. OpenAI's reasoning models refuse `max_tokens` (they take
//! `max_completion_tokens`, which other compatible servers do not know), and
//! some compatible servers refuse `stream_options`. Such a refusal is about the
//! wording, not the request: the request is sent again at once, rewritten,
//! within the same attempt, instead of the 400 reaching the caller.

use super::super::ProviderError;
use std::sync::atomic::{AtomicU8, Ordering};

/// How a request is written for this server.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub(super) struct Wording {
    /// The answer's cap goes in `max_completion_tokens`, not `max_tokens`.
    pub completion_tokens: bool,
    /// A stream is asked for without `stream_options` (its usage is then the
    /// gateway's estimate).
    pub no_stream_options: bool,
}

const COMPLETION_TOKENS: u8 = 1;
const NO_STREAM_OPTIONS: u8 = 2;

/// The wording learned so far; every adaptation is one-way, so a request is
/// rewritten at most once per adaptation.
#[derive(Debug, Default)]
pub(super) struct Dialect(AtomicU8);

impl Dialect {
    /// How to write the next request.
    pub fn wording(&self) -> Wording {
        let bits = self.0.load(Ordering::Relaxed);
        Wording {
            completion_tokens: bits & COMPLETION_TOKENS != 0,
            no_stream_options: bits & NO_STREAM_OPTIONS != 0,
        }
    }

    /// Learns from `err`, the server's answer to a request written as `sent`,
    /// whether it refused only the wording; if so the request should be sent
    /// again, as [`Dialect::wording`] now says.
    pub fn learn(&self, sent: Wording, stream: bool, err: &ProviderError) -> bool {
        let message = match err {
            ProviderError::InvalidRequest { message, .. }
            | ProviderError::Unsupported { message, .. } => message.to_ascii_lowercase(),
            _ => return false,
        };
        let bit = if !sent.completion_tokens
            && message.contains("max_tokens")
            && message.contains("max_completion_tokens")
        {
            COMPLETION_TOKENS
        } else if stream && !sent.no_stream_options && message.contains("stream_options") {
            NO_STREAM_OPTIONS
        } else {
            return false;
        };
        self.0.fetch_or(bit, Ordering::Relaxed);
        true
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn refused(message: &str) -> ProviderError {
        ProviderError::InvalidRequest {
            status: 400,
            message: message.into(),
        }
    }

    #[test]
    fn each_refused_wording_is_learned_once_and_nothing_else_is() {
        let dialect = Dialect::default();
        let first = dialect.wording();
        assert_eq!(first, Wording::default());
        // OpenAI's words for a reasoning model.
        let max_tokens = ProviderError::Unsupported {
            status: 400,
            message: "Unsupported parameter: 'max_tokens' is not supported with this model. \
                      Use 'max_completion_tokens' instead."
                .into(),
        };
        assert!(dialect.learn(first, false, &max_tokens));
        let second = dialect.wording();
        assert!(second.completion_tokens && !second.no_stream_options);
        assert!(
            !dialect.learn(second, false, &max_tokens),
            "already written that way: not a wording problem"
        );
        // Groq's words, once, for a stream only.
        let options = refused("property 'stream_options' is unsupported, did you mean 'stream'?");
        assert!(!dialect.learn(second, false, &options));
        assert!(dialect.learn(second, true, &options));
        assert!(dialect.wording().no_stream_options);
        // Other refusals are the request's own.
        let fresh = Dialect::default();
        for err in [
            refused("max_tokens is too large: 100000"),
            refused("messages: at least one message is required"),
            ProviderError::Server {
                status: 500,
                message: "max_completion_tokens stream_options".into(),
            },
        ] {
            assert!(!fresh.learn(Wording::default(), true, &err), "{err}");
        }
        assert_eq!(fresh.wording(), Wording::default());
    }
}
