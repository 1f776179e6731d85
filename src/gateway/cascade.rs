//! The cascade: providers in priority order, per-attempt limits, one overall deadline.
//!
//! The cascade owns policy only. It asks adapters for answers and reads their
//! classified errors; it never sees a provider's JSON. A failure that another
//! provider could fix moves on to the next provider; an invalid request goes
//! back to the caller. A stream is held back until its first content token, so a
//! failover before it is invisible to the customer.

use super::prompt::PromptTemplate;
use super::provider::{DeltaStream, Provider, ProviderError, ProviderRequest, TimeoutKind};
use super::Timeouts;
use crate::shared::{AttemptSummary, ChatTurn};
use futures::StreamExt;
use std::sync::Arc;
use std::time::{Duration, Instant};

/// One provider of the cascade with the policy that belongs to it.
pub struct CascadeEntry {
    /// The adapter.
    pub provider: Arc<dyn Provider>,
    /// The system prompt template for its model.
    pub template: PromptTemplate,
    /// Default answer size when the caller does not ask for one.
    pub max_tokens: u32,
}

/// A request as the cascade sees it.
#[derive(Clone, Debug, Default)]
pub struct CascadeRequest {
    /// The caller's own system text (already joined), slotted into each template.
    pub caller_system: String,
    /// The conversation without system turns; the last turn is the customer's.
    pub turns: Vec<ChatTurn>,
    /// Caller's answer size limit, capped by each provider's configured maximum.
    pub max_tokens: Option<u32>,
    /// Caller's sampling temperature.
    pub temperature: Option<f32>,
    /// Only this provider may serve (the caller named it as the model).
    pub pinned: Option<String>,
}

/// Why the cascade produced no answer.
#[derive(Debug, thiserror::Error)]
pub enum CascadeError {
    /// A provider said the request itself is invalid; no other provider is tried.
    #[error("the request was rejected by {provider}: {message}")]
    InvalidRequest {
        /// Who rejected it.
        provider: String,
        /// HTTP status to pass on.
        status: u16,
        /// The provider's reason.
        message: String,
        /// Attempts made.
        attempts: Vec<AttemptSummary>,
    },
    /// Every provider failed or the deadline ran out.
    #[error("no provider could answer")]
    Exhausted {
        /// Attempts made, in order.
        attempts: Vec<AttemptSummary>,
    },
    /// The caller pinned a provider that is not configured.
    #[error("unknown provider {0:?}")]
    UnknownProvider(String),
}

impl CascadeError {
    /// The attempts made before the cascade gave up.
    pub fn attempts(&self) -> &[AttemptSummary] {
        match self {
            CascadeError::InvalidRequest { attempts, .. }
            | CascadeError::Exhausted { attempts } => attempts,
            CascadeError::UnknownProvider(_) => &[],
        }
    }
}

/// A whole answer from one provider.
#[derive(Debug)]
pub struct Answer {
    /// The provider that served it.
    pub served_by: String,
    /// The answer's text.
    pub text: String,
    /// Why the provider stopped, in OpenAI's vocabulary.
    pub finish_reason: String,
    /// Every attempt made, the serving one last.
    pub attempts: Vec<AttemptSummary>,
    /// Time spent waiting on providers, to tell the gateway's own overhead apart.
    pub provider_wait: Duration,
}

/// A streamed answer whose first token has arrived.
pub struct StreamingAnswer {
    /// The provider that is serving it.
    pub served_by: String,
    /// The first content token, already received.
    pub first: String,
    /// The rest of the answer; a failure after this point is final.
    pub rest: DeltaStream,
    /// Every attempt made, the serving one last.
    pub attempts: Vec<AttemptSummary>,
    /// Time spent waiting on providers up to the first token.
    pub provider_wait: Duration,
}

/// Providers in priority order and the limits that apply to them.
pub struct Cascade {
    /// Priority order: the first entry is tried first.
    entries: Vec<CascadeEntry>,
    /// Per-attempt and overall limits.
    timeouts: Timeouts,
}

impl Cascade {
    /// Creates a cascade over `entries` in the given priority order.
    pub fn new(entries: Vec<CascadeEntry>, timeouts: Timeouts) -> Self {
        Self { entries, timeouts }
    }

    /// The providers in priority order.
    pub fn providers(&self) -> impl Iterator<Item = &Arc<dyn Provider>> {
        self.entries.iter().map(|e| &e.provider)
    }

    /// The entries a request may use, in order.
    fn candidates(&self, request: &CascadeRequest) -> Result<Vec<&CascadeEntry>, CascadeError> {
        match &request.pinned {
            None => Ok(self.entries.iter().collect()),
            Some(name) => self
                .entries
                .iter()
                .find(|e| e.provider.name() == name)
                .map(|e| vec![e])
                .ok_or_else(|| CascadeError::UnknownProvider(name.clone())),
        }
    }

    fn provider_request(entry: &CascadeEntry, request: &CascadeRequest) -> ProviderRequest {
        ProviderRequest {
            system: entry.template.render(&request.caller_system),
            turns: request.turns.clone(),
            max_tokens: request
                .max_tokens
                .map_or(entry.max_tokens, |m| m.min(entry.max_tokens)),
            temperature: request.temperature,
        }
    }

    /// The limit for the next attempt, or `None` once the deadline has passed.
    fn attempt_limit(&self, deadline: Instant) -> Option<Duration> {
        let left = deadline.checked_duration_since(Instant::now())?;
        (!left.is_zero()).then(|| left.min(self.timeouts.attempt))
    }

    /// Asks providers in order for a whole answer.
    pub async fn complete(&self, request: &CascadeRequest) -> Result<Answer, CascadeError> {
        let deadline = Instant::now() + self.timeouts.deadline;
        let mut attempts = Vec::new();
        let mut provider_wait = Duration::ZERO;
        for entry in self.candidates(request)? {
            let Some(limit) = self.attempt_limit(deadline) else {
                break;
            };
            let provider_request = Self::provider_request(entry, request);
            let started = Instant::now();
            let result = tokio::time::timeout(limit, entry.provider.complete(&provider_request))
                .await
                .unwrap_or(Err(ProviderError::Timeout(TimeoutKind::Total)));
            let elapsed = started.elapsed();
            provider_wait += elapsed;
            let name = entry.provider.name();
            match result {
                Ok(completion) => {
                    attempts.push(summary(name, Ok(()), elapsed));
                    return Ok(Answer {
                        served_by: name.to_string(),
                        text: completion.text,
                        finish_reason: completion.finish_reason,
                        attempts,
                        provider_wait,
                    });
                }
                Err(err) => {
                    tracing::warn!(provider = name, kind = err.kind(), error = %err, "attempt failed");
                    attempts.push(summary(name, Err(&err), elapsed));
                    if let ProviderError::InvalidRequest { status, message } = err {
                        return Err(CascadeError::InvalidRequest {
                            provider: name.to_string(),
                            status,
                            message,
                            attempts,
                        });
                    }
                }
            }
        }
        Err(CascadeError::Exhausted { attempts })
    }

    /// Asks providers in order for a stream, returning once one has produced its
    /// first content token. Nothing is sent to the customer before that point, so
    /// the failovers before it are invisible.
    pub async fn stream(&self, request: &CascadeRequest) -> Result<StreamingAnswer, CascadeError> {
        let deadline = Instant::now() + self.timeouts.deadline;
        let mut attempts = Vec::new();
        let mut provider_wait = Duration::ZERO;
        for entry in self.candidates(request)? {
            let Some(limit) = self.attempt_limit(deadline) else {
                break;
            };
            let provider_request = Self::provider_request(entry, request);
            let started = Instant::now();
            let first_token = self.timeouts.first_token;
            let attempt = async {
                let mut stream = entry.provider.stream(&provider_request).await?;
                match tokio::time::timeout(first_token, stream.next()).await {
                    Err(_) => Err(ProviderError::Timeout(TimeoutKind::FirstToken)),
                    Ok(None) => Err(ProviderError::Malformed("empty answer".into())),
                    Ok(Some(Err(err))) => Err(err),
                    Ok(Some(Ok(first))) => Ok((first, stream)),
                }
            };
            let result = tokio::time::timeout(limit, attempt)
                .await
                .unwrap_or(Err(ProviderError::Timeout(TimeoutKind::Total)));
            let elapsed = started.elapsed();
            provider_wait += elapsed;
            let name = entry.provider.name();
            match result {
                Ok((first, rest)) => {
                    attempts.push(summary(name, Ok(()), elapsed));
                    return Ok(StreamingAnswer {
                        served_by: name.to_string(),
                        first,
                        rest,
                        attempts,
                        provider_wait,
                    });
                }
                Err(err) => {
                    tracing::warn!(provider = name, kind = err.kind(), error = %err, "stream attempt failed");
                    attempts.push(summary(name, Err(&err), elapsed));
                    if let ProviderError::InvalidRequest { status, message } = err {
                        return Err(CascadeError::InvalidRequest {
                            provider: name.to_string(),
                            status,
                            message,
                            attempts,
                        });
                    }
                }
            }
        }
        Err(CascadeError::Exhausted { attempts })
    }
}

fn summary(
    provider: &str,
    result: Result<(), &ProviderError>,
    elapsed: Duration,
) -> AttemptSummary {
    AttemptSummary {
        provider: provider.to_string(),
        outcome: match result {
            Ok(()) => "ok".to_string(),
            Err(err) => err.kind().to_string(),
        },
        status: match result {
            Ok(()) => Some(200),
            Err(err) => err.status(),
        },
        latency_ms: elapsed.as_millis() as u64,
    }
}
