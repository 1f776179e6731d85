//! What happened to a request and its attempts, named once: who served it, how it
//! ended, how each provider attempt ended. The audit rows, the API headers, the
//! metrics labels, the live events and the board all use these types, so each
//! outcome has exactly one spelling.

use crate::spelled;
use serde::{Deserialize, Serialize};
use std::sync::Arc;

spelled! {
    /// Which surface a request came through; kept in the audit.
    pub enum Surface {
        /// The customer chat page.
        Chat => "chat",
        /// The OpenAI-compatible API.
        Api => "api",
        /// The built-in synthetic traffic of demos.
        Traffic => "traffic",
    }
}

spelled! {
    /// How a request ended.
    pub enum RequestStatus {
        /// The customer got a whole answer from one source.
        Ok => "ok",
        /// A stream broke and another provider continued it seamlessly.
        Spliced => "spliced",
        /// A stream broke and could not be continued; the answer was started over
        /// on another provider, and the caller was told to replace what it had.
        Restarted => "restarted",
        /// A stream broke and could not be continued: it ended with an explicit error.
        StreamFailed => "stream_failed",
        /// The request itself was invalid (the caller's or a provider's verdict).
        InvalidRequest => "invalid_request",
        /// The caller went away before the answer ended.
        ClientDisconnected => "client_disconnected",
    }
}

spelled! {
    /// How one provider attempt ended.
    pub enum AttemptOutcome {
        /// The provider served the answer (a stream: its first content token arrived).
        Ok => "ok",
        /// The breaker was OPEN: skipped without any I/O.
        SkippedOpen => "skipped_open",
        /// A stream that had started broke before its end.
        StreamBroken => "stream_broken",
        /// 5xx or overloaded.
        ServerError => "server_error",
        /// 429.
        RateLimited => "rate_limited",
        /// A limit ran out (connect, first byte, first token, stall, attempt).
        Timeout => "timeout",
        /// The connection failed or broke.
        ConnectionError => "connection_error",
        /// The answer was not the protocol.
        Malformed => "malformed",
        /// Our credentials or model were refused (401, 403, 404).
        Misconfigured => "misconfigured",
        /// The request was judged invalid (400, 422).
        InvalidRequest => "invalid_request",
        /// The request is too large for this provider (its context window, 413):
        /// another provider may take it, and this one is not unwell.
        TooLarge => "too_large",
        /// Not asked to continue a broken answer: it cannot do so for real.
        CannotContinue => "cannot_continue",
        /// Not asked at all: it cannot honour a parameter of the request that
        /// may not be dropped (Anthropic and a temperature above 1).
        Unsupported => "unsupported",
    }
}

spelled! {
    /// Who changed a fault.
    pub enum FaultChangedBy {
        /// An operator, through the chaos API or the board.
        Admin => "admin",
        /// The fault's own duration ran out.
        Expiry => "expiry",
    }
}

/// Who served an answer: a provider, the semantic cache or the last resort.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub enum Route {
    /// A provider of the cascade, by its configured name.
    Provider(Arc<str>),
    /// Layer 0, the semantic cache.
    Cache,
    /// No provider could answer: the knowledge base or an apology with a ticket.
    LastResort,
}

impl Route {
    /// The spelling of the cache route.
    pub const CACHE: &'static str = "cache";
    /// The spelling of the last-resort route.
    pub const LAST_RESORT: &'static str = "last-resort";

    /// A provider route.
    pub fn provider(name: &str) -> Self {
        Route::Provider(name.into())
    }

    /// The one spelling of the route (header, audit, metrics label, board).
    pub fn as_str(&self) -> &str {
        match self {
            Route::Provider(name) => name,
            Route::Cache => Self::CACHE,
            Route::LastResort => Self::LAST_RESORT,
        }
    }

    /// Whether `name` is spelled like a route that is not a provider, and so
    /// cannot be a provider's name.
    pub fn is_reserved(name: &str) -> bool {
        matches!(name, Self::CACHE | Self::LAST_RESORT)
    }

    /// The provider's name, if a provider served.
    pub fn provider_name(&self) -> Option<&str> {
        match self {
            Route::Provider(name) => Some(name),
            _ => None,
        }
    }
}

impl From<&str> for Route {
    fn from(text: &str) -> Self {
        match text {
            Self::CACHE => Route::Cache,
            Self::LAST_RESORT => Route::LastResort,
            name => Route::provider(name),
        }
    }
}

impl std::fmt::Display for Route {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

impl Serialize for Route {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(self.as_str())
    }
}

impl<'de> Deserialize<'de> for Route {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let text = <std::borrow::Cow<'de, str> as Deserialize>::deserialize(d)?;
        Ok(Route::from(text.as_ref()))
    }
}

#[cfg(feature = "ssr")]
mod route_sql {
    use super::Route;

    impl<DB: sqlx::Database> sqlx::Type<DB> for Route
    where
        str: sqlx::Type<DB>,
    {
        fn type_info() -> DB::TypeInfo {
            <str as sqlx::Type<DB>>::type_info()
        }

        fn compatible(ty: &DB::TypeInfo) -> bool {
            <str as sqlx::Type<DB>>::compatible(ty)
        }
    }

    impl<'q, DB: sqlx::Database> sqlx::Encode<'q, DB> for Route
    where
        String: sqlx::Encode<'q, DB>,
    {
        fn encode_by_ref(
            &self,
            buf: &mut <DB as sqlx::Database>::ArgumentBuffer<'q>,
        ) -> Result<sqlx::encode::IsNull, sqlx::error::BoxDynError> {
            <String as sqlx::Encode<'q, DB>>::encode(self.as_str().to_string(), buf)
        }
    }

    impl<'r, DB: sqlx::Database> sqlx::Decode<'r, DB> for Route
    where
        &'r str: sqlx::Decode<'r, DB>,
    {
        fn decode(
            value: <DB as sqlx::Database>::ValueRef<'r>,
        ) -> Result<Self, sqlx::error::BoxDynError> {
            Ok(Route::from(<&'r str as sqlx::Decode<'r, DB>>::decode(
                value,
            )?))
        }
    }
}

/// How one provider attempt of a request ended; shown next to a reply and kept in the audit.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct AttemptSummary {
    /// The provider's configured name ("claude", "gpt", …).
    pub provider: String,
    /// How the attempt ended.
    pub outcome: AttemptOutcome,
    /// The HTTP status the provider answered with, when it answered at all.
    pub status: Option<u16>,
    /// Wall time of the attempt in milliseconds.
    pub latency_ms: u64,
    /// The provider's breaker state when the attempt was decided.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub breaker: Option<super::BreakerState>,
    /// What the attempt cost, once its answer ended (or broke).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub usage: Option<super::Usage>,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_spelling_round_trips_through_text_and_json() {
        for outcome in AttemptOutcome::ALL {
            assert_eq!(outcome.as_str().parse::<AttemptOutcome>(), Ok(*outcome));
            let json = serde_json::to_string(outcome).unwrap();
            assert_eq!(json, format!("\"{}\"", outcome.as_str()));
            assert_eq!(
                serde_json::from_str::<AttemptOutcome>(&json).unwrap(),
                *outcome
            );
        }
        for status in RequestStatus::ALL {
            assert_eq!(status.as_str().parse::<RequestStatus>(), Ok(*status));
        }
        assert!("sometimes".parse::<Surface>().is_err());
    }

    #[test]
    fn routes_spell_providers_by_name_and_reserve_the_rest() {
        assert_eq!(Route::from("cache"), Route::Cache);
        assert_eq!(Route::from("last-resort"), Route::LastResort);
        assert_eq!(Route::from("gpt").as_str(), "gpt");
        assert_eq!(Route::from("gpt").provider_name(), Some("gpt"));
        assert!(Route::is_reserved("cache") && !Route::is_reserved("claude"));
        let json = serde_json::to_string(&Route::LastResort).unwrap();
        assert_eq!(json, "\"last-resort\"");
    }
}
