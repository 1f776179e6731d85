//! What an OpenAI-compatible server turned out not to take of a request as it
//! is first written, learned from its own refusals and remembered for the
//! provider's life. OpenAI's reasoning models refuse `max_tokens` (they take
//! `max_completion_tokens`, which other compatible servers do not know), and
//! some compatible servers refuse `stream_options`; a model that does not reason
//! (GPT-4o, Llama) refuses `reasoning_effort`, and one before GPT-5 refuses
//! `verbosity`: hints it can go without. Such a
//! refusal is about the wording, not the request: the request is sent again at
//! once, rewritten, within the same attempt, instead of the 400 reaching the
//! caller.

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
    /// The model does not reason: `reasoning_effort` is left out.
    pub no_reasoning_effort: bool,
    /// The model does not take `verbosity`: it is left out.
    pub no_verbosity: bool,
}

const COMPLETION_TOKENS: u8 = 1;
const NO_STREAM_OPTIONS: u8 = 2;
const NO_REASONING_EFFORT: u8 = 4;
const NO_VERBOSITY: u8 = 8;

/// What a refused request carried that a refusal may be about.
#[derive(Clone, Copy, Debug, Default)]
pub(super) struct Carried {
    /// It was a stream (so it had `stream_options`, unless worded without).
    pub stream: bool,
    /// It had a `reasoning_effort`.
    pub effort: bool,
    /// It had a `verbosity`.
    pub verbosity: bool,
}

impl Carried {
    /// What `request` carries, asked for streamed or not.
    pub fn of(request: &super::super::ProviderRequest, stream: bool) -> Self {
        Self {
            stream,
            effort: request.options.reasoning_effort.is_some(),
            verbosity: request.options.verbosity.is_some(),
        }
    }
}

/// Whether `message` (lower case) refuses the parameter `name` itself.
/// "Unsupported value: 'reasoning_effort' does not support 'minimal'" is a
/// model refusing one level, not the parameter: that refusal passes the
/// provider by for this request only.
fn refuses_parameter(message: &str, name: &str) -> bool {
    message.contains(name) && !message.contains("value")
}

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
            no_reasoning_effort: bits & NO_REASONING_EFFORT != 0,
            no_verbosity: bits & NO_VERBOSITY != 0,
        }
    }

    /// Learns from `err`, the server's answer to a request written as `sent`,
    /// whether it refused only the wording; if so the request should be sent
    /// again, as [`Dialect::wording`] now says.
    pub fn learn(&self, sent: Wording, carried: Carried, err: &ProviderError) -> bool {
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
        } else if carried.stream && !sent.no_stream_options && message.contains("stream_options") {
            NO_STREAM_OPTIONS
        } else if carried.effort
            && !sent.no_reasoning_effort
            && refuses_parameter(&message, "reasoning_effort")
        {
            NO_REASONING_EFFORT
        } else if carried.verbosity
            && !sent.no_verbosity
            && refuses_parameter(&message, "verbosity")
        {
            NO_VERBOSITY
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
        let whole = Carried::default();
        let stream = Carried {
            stream: true,
            ..Carried::default()
        };
        assert!(dialect.learn(first, whole, &max_tokens));
        let second = dialect.wording();
        assert!(second.completion_tokens && !second.no_stream_options);
        assert!(
            !dialect.learn(second, whole, &max_tokens),
            "already written that way: not a wording problem"
        );
        // Groq's words, once, for a stream only.
        let options = refused("property 'stream_options' is unsupported, did you mean 'stream'?");
        assert!(!dialect.learn(second, whole, &options));
        assert!(dialect.learn(second, stream, &options));
        assert!(dialect.wording().no_stream_options);
        // A model that does not reason, in OpenAI's words and the older ones;
        // a refused level is not a refused parameter.
        let effort = Carried {
            effort: true,
            ..Carried::default()
        };
        let level = ProviderError::Unsupported {
            status: 400,
            message: "Unsupported value: 'reasoning_effort' does not support 'minimal' with this model. Supported values are: 'low', 'medium' and 'high'.".into(),
        };
        let third = dialect.wording();
        assert!(!dialect.learn(third, effort, &level));
        let parameter = ProviderError::Unsupported {
            status: 400,
            message: "Unsupported parameter: 'reasoning_effort' is not supported with this model."
                .into(),
        };
        assert!(!dialect.learn(third, whole, &parameter), "it was not sent");
        assert!(dialect.learn(third, effort, &parameter));
        assert!(dialect.wording().no_reasoning_effort);
        let older = refused("Unrecognized request argument supplied: reasoning_effort");
        let fresh = Dialect::default();
        assert!(fresh.learn(Wording::default(), effort, &older));
        // GPT-4o's refusal of GPT-5's `verbosity`, learned only when it was sent.
        let verbosity =
            refused("Unsupported parameter: 'verbosity' is not supported with this model.");
        assert!(!fresh.learn(fresh.wording(), effort, &verbosity));
        let talkative = Carried {
            verbosity: true,
            ..Carried::default()
        };
        assert!(fresh.learn(fresh.wording(), talkative, &verbosity));
        assert!(fresh.wording().no_verbosity && fresh.wording().no_reasoning_effort);
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
            let all = Carried {
                stream: true,
                effort: true,
                verbosity: true,
            };
            assert!(!fresh.learn(Wording::default(), all, &err), "{err}");
        }
        assert_eq!(fresh.wording(), Wording::default());
    }
}
