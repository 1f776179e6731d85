//! The vocabulary of a provider's failures, as its adapter classifies them:
//! what went wrong, whether another provider may do better, whether it says
//! anything about the provider's health, and how long it asked us to wait.

use crate::shared::AttemptOutcome;
use std::time::Duration;

/// Which limit a timed-out attempt ran into.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum TimeoutKind {
    /// Establishing the connection.
    Connect,
    /// Waiting for the response head.
    FirstByte,
    /// Waiting for the first content token of a stream.
    FirstToken,
    /// Silence between two chunks of a stream.
    Stall,
    /// The whole attempt, or the request's overall deadline.
    Total,
}

/// Why a provider call failed, as classified by its adapter.
#[derive(Clone, Debug, PartialEq, thiserror::Error)]
pub enum ProviderError {
    /// 5xx or Anthropic's 529 "overloaded": the provider is unwell; try another.
    #[error("provider error {status}: {message}")]
    Server {
        /// HTTP status.
        status: u16,
        /// The provider's message.
        message: String,
    },
    /// 429: too many requests; `retry_after` is what the provider asked for.
    #[error("rate limited (retry after {retry_after:?}): {message}")]
    RateLimited {
        /// Parsed `Retry-After` (or `retry-after-ms`), when given.
        retry_after: Option<Duration>,
        /// The provider's message.
        message: String,
    },
    /// A limit ran out before the provider answered.
    #[error("timed out ({0:?})")]
    Timeout(TimeoutKind),
    /// The connection could not be made, or broke.
    #[error("connection error: {0}")]
    Connection(String),
    /// The provider answered something that is not its protocol (bad JSON, broken SSE,
    /// a stream that ends without its end marker).
    #[error("malformed response: {0}")]
    Malformed(String),
    /// The provider refused our credentials or does not know the model: a configuration
    /// problem of this provider alone, so another provider may still serve.
    #[error("provider rejected the gateway ({status}): {message}")]
    Misconfigured {
        /// HTTP status (401, 403, 404).
        status: u16,
        /// The provider's message.
        message: String,
    },
    /// The request itself is invalid (400, 422) or refused by a content policy:
    /// no provider should serve it, so it goes back to the caller instead of
    /// falling through (a safety filter is not routed around).
    #[error("invalid request ({status}): {message}")]
    InvalidRequest {
        /// HTTP status.
        status: u16,
        /// The provider's message.
        message: String,
    },
    /// This provider's model does not take a parameter or value the request
    /// carries (OpenAI's `unsupported_parameter` / `unsupported_value`: a
    /// reasoning model refuses `temperature`): the request is valid, and a
    /// provider whose model takes it may serve it; this one is well.
    #[error("not supported by this provider ({status}): {message}")]
    Unsupported {
        /// HTTP status.
        status: u16,
        /// The provider's message.
        message: String,
    },
    /// The request is too large for this provider (its context window, or a 413):
    /// another provider with a larger window may serve it, and this one is well.
    #[error("too large for this provider ({status}): {message}")]
    TooLarge {
        /// HTTP status.
        status: u16,
        /// The provider's message.
        message: String,
    },
}

/// What a provider's error body says, as its adapter extracted it.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct WireFault {
    /// The human-readable message.
    pub message: String,
    /// The machine-readable code, when the protocol has one (`context_length_exceeded`).
    pub code: Option<String>,
    /// The error's type (`invalid_request_error`, `overloaded_error`, …).
    pub kind: Option<String>,
}

impl WireFault {
    /// Whether the provider says its model does not take a parameter or value
    /// of the request, by OpenAI's codes for it.
    fn is_unsupported(&self) -> bool {
        matches!(
            self.code.as_deref(),
            Some("unsupported_parameter" | "unsupported_value")
        )
    }

    /// Whether the provider says the request does not fit its window: OpenAI's
    /// and Groq's `context_length_exceeded` code, or the wording Anthropic
    /// ("prompt is too long"), vLLM and others use without a code.
    fn is_too_large(&self) -> bool {
        if matches!(
            self.code.as_deref(),
            Some("context_length_exceeded" | "request_too_large" | "tokens_exceeded")
        ) {
            return true;
        }
        let message = self.message.to_lowercase();
        [
            "maximum context length",
            "context length",
            "context window",
            "prompt is too long",
            "too many tokens",
            "reduce the length",
        ]
        .iter()
        .any(|phrase| message.contains(phrase))
    }
}

impl ProviderError {
    /// Whether another provider may succeed where this one failed.
    pub fn falls_through(&self) -> bool {
        !matches!(self, ProviderError::InvalidRequest { .. })
    }

    /// Whether the failure says the provider is unwell (and so counts against its
    /// breaker): a too-large request or the caller's own mistake does not.
    pub fn counts_against_provider(&self) -> bool {
        !matches!(
            self,
            ProviderError::InvalidRequest { .. }
                | ProviderError::TooLarge { .. }
                | ProviderError::Unsupported { .. }
        )
    }

    /// Whether one immediate retry on the same provider may help: a single
    /// server error, a connection that failed before any response, or a rate
    /// limit that asks for at most a second.
    pub fn is_transient(&self) -> bool {
        match self {
            ProviderError::Server { status, .. } => matches!(status, 500 | 502 | 503),
            ProviderError::Connection(_) => true,
            ProviderError::RateLimited { retry_after, .. } => {
                retry_after.is_some_and(|r| r <= Duration::from_secs(1))
            }
            _ => false,
        }
    }

    /// The HTTP status behind the failure, when the provider answered with one.
    pub fn status(&self) -> Option<u16> {
        match self {
            ProviderError::Server { status, .. }
            | ProviderError::Misconfigured { status, .. }
            | ProviderError::InvalidRequest { status, .. }
            | ProviderError::TooLarge { status, .. }
            | ProviderError::Unsupported { status, .. } => Some(*status),
            ProviderError::RateLimited { .. } => Some(429),
            _ => None,
        }
    }

    /// How long the provider asked callers to wait (a 429's Retry-After).
    pub fn retry_after(&self) -> Option<Duration> {
        match self {
            ProviderError::RateLimited { retry_after, .. } => *retry_after,
            _ => None,
        }
    }

    /// The kind of failure as attempts record it (audit rows, UI, metrics labels).
    pub fn outcome(&self) -> AttemptOutcome {
        match self {
            ProviderError::Server { .. } => AttemptOutcome::ServerError,
            ProviderError::RateLimited { .. } => AttemptOutcome::RateLimited,
            ProviderError::Timeout(_) => AttemptOutcome::Timeout,
            ProviderError::Connection(_) => AttemptOutcome::ConnectionError,
            ProviderError::Malformed(_) => AttemptOutcome::Malformed,
            ProviderError::Misconfigured { .. } => AttemptOutcome::Misconfigured,
            ProviderError::InvalidRequest { .. } => AttemptOutcome::InvalidRequest,
            ProviderError::TooLarge { .. } => AttemptOutcome::TooLarge,
            ProviderError::Unsupported { .. } => AttemptOutcome::Unsupported,
        }
    }

    /// Classifies an HTTP error status with what the adapter read from its body.
    pub fn from_status(status: u16, fault: WireFault, retry_after: Option<Duration>) -> Self {
        let message = fault.message.clone();
        match status {
            429 => ProviderError::RateLimited {
                retry_after,
                message,
            },
            // A redirect is not followed (it could carry the key elsewhere): the
            // provider is configured at the wrong address.
            300..=399 | 401 | 403 | 404 => ProviderError::Misconfigured { status, message },
            413 => ProviderError::TooLarge { status, message },
            400..=499 if fault.is_too_large() => ProviderError::TooLarge { status, message },
            400..=499 if fault.is_unsupported() => ProviderError::Unsupported { status, message },
            400..=499 => ProviderError::InvalidRequest { status, message },
            _ => ProviderError::Server { status, message },
        }
    }

    /// Classifies a transport error from reqwest.
    pub fn from_transport(err: &reqwest::Error) -> Self {
        if err.is_timeout() {
            ProviderError::Timeout(if err.is_connect() {
                TimeoutKind::Connect
            } else {
                TimeoutKind::Total
            })
        } else if err.is_decode() {
            ProviderError::Malformed(err.to_string())
        } else {
            // Include the source chain: "error sending request" alone says nothing.
            let mut message = err.to_string();
            let mut source = std::error::Error::source(err);
            while let Some(inner) = source {
                message.push_str(": ");
                message.push_str(&inner.to_string());
                source = inner.source();
            }
            ProviderError::Connection(message)
        }
    }
}

/// The longest wait a provider can ask for that is taken as said; anything
/// longer (a year, 10^20 seconds) is read as this, and the breaker caps it
/// further at its own ceiling.
const RETRY_AFTER_CEILING: Duration = Duration::from_secs(24 * 3600);

/// A `Retry-After` (or OpenAI's `retry-after-ms`) header, whatever a provider
/// writes there: seconds, fractions, an HTTP date, or nonsense. Never panics:
/// `inf`, `NaN`, negatives and unparsable text read as no value, huge values
/// are capped.
pub(crate) fn retry_after(headers: &reqwest::header::HeaderMap) -> Option<Duration> {
    let get = |name: &str| {
        headers
            .get(name)
            .and_then(|v| v.to_str().ok())
            .map(str::trim)
    };
    if let Some(ms) = get("retry-after-ms").and_then(|v| v.parse::<f64>().ok()) {
        return seconds(ms / 1000.0);
    }
    let value = get("retry-after")?;
    if let Ok(secs) = value.parse::<f64>() {
        return seconds(secs);
    }
    // An HTTP date: the wait is until then.
    let at = httpdate::parse_http_date(value).ok()?;
    Some(
        at.duration_since(std::time::SystemTime::now())
            .unwrap_or(Duration::ZERO)
            .min(RETRY_AFTER_CEILING),
    )
}

/// A finite, non-negative number of seconds as a capped duration.
fn seconds(secs: f64) -> Option<Duration> {
    if !secs.is_finite() || secs < 0.0 {
        return None;
    }
    Some(
        Duration::try_from_secs_f64(secs)
            .map_or(RETRY_AFTER_CEILING, |d| d.min(RETRY_AFTER_CEILING)),
    )
}

#[cfg(test)]
mod tests {
    use super::*;
    use reqwest::header::{HeaderMap, HeaderValue};

    fn parse(name: &'static str, value: &str) -> Option<Duration> {
        let mut headers = HeaderMap::new();
        headers.insert(name, HeaderValue::from_str(value).unwrap());
        retry_after(&headers)
    }

    #[test]
    fn any_retry_after_a_provider_sends_parses_without_panicking() {
        assert_eq!(parse("retry-after", "7"), Some(Duration::from_secs(7)));
        assert_eq!(
            parse("retry-after", "0.5"),
            Some(Duration::from_millis(500))
        );
        assert_eq!(
            parse("retry-after-ms", "250"),
            Some(Duration::from_millis(250))
        );
        for nonsense in ["inf", "-inf", "NaN", "-3", "soon", ""] {
            assert_eq!(parse("retry-after", nonsense), None, "{nonsense:?}");
        }
        for huge in ["99999999999999999999", "31536000", "1e300"] {
            assert_eq!(
                parse("retry-after", huge),
                Some(RETRY_AFTER_CEILING),
                "{huge}"
            );
        }
        assert_eq!(parse("retry-after-ms", "inf"), None);
        // An HTTP date in the past means now; one far ahead is capped.
        assert_eq!(
            parse("retry-after", "Wed, 21 Oct 2015 07:28:00 GMT"),
            Some(Duration::ZERO)
        );
        assert_eq!(
            parse("retry-after", "Fri, 31 Dec 9999 23:59:59 GMT"),
            Some(RETRY_AFTER_CEILING)
        );
    }

    #[test]
    fn a_context_window_refusal_is_too_large_not_invalid() {
        let fault = |code: Option<&str>, message: &str| WireFault {
            message: message.into(),
            code: code.map(str::to_string),
            kind: Some("invalid_request_error".into()),
        };
        let openai = fault(
            Some("context_length_exceeded"),
            "This model's maximum context length is 8192 tokens.",
        );
        let anthropic = fault(None, "prompt is too long: 208310 tokens > 200000 maximum");
        let policy = fault(
            Some("content_policy_violation"),
            "Your request was rejected by the safety system.",
        );
        for f in [openai, anthropic] {
            let err = ProviderError::from_status(400, f, None);
            assert!(
                matches!(err, ProviderError::TooLarge { status: 400, .. }),
                "{err:?}"
            );
            assert!(err.falls_through() && !err.counts_against_provider());
        }
        let err = ProviderError::from_status(400, policy, None);
        assert!(
            matches!(err, ProviderError::InvalidRequest { .. }),
            "{err:?}"
        );
        assert!(!err.falls_through() && !err.counts_against_provider());
        assert!(matches!(
            ProviderError::from_status(413, WireFault::default(), None),
            ProviderError::TooLarge { status: 413, .. }
        ));
    }
}
