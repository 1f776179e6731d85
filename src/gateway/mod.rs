//! The gateway core: one customer question in, one answer out.
//!
//! [`Gateway`] validates a conversation, runs it through the [`Cascade`] and keeps
//! the audit row of every request. It knows nothing of HTTP servers or the UI:
//! the OpenAI-compatible API and the chat page's server function both call it.

pub mod cascade;
pub mod prompt;
pub mod provider;

use crate::shared::{AttemptSummary, ChatEvent, ChatTurn, Role};
use crate::store::{RequestRecord, Store};
use cascade::{Cascade, CascadeError, CascadeRequest};
use futures::{stream::BoxStream, StreamExt};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

/// The limits that apply to attempts and to whole requests.
#[derive(Clone, Copy, Debug)]
pub struct Timeouts {
    /// From sending a request to a provider to its response head.
    pub first_byte: Duration,
    /// From the response head to the first content token of a stream.
    pub first_token: Duration,
    /// Longest silence between two chunks.
    pub stall: Duration,
    /// One whole attempt (a non-streamed answer, or a stream up to its first token).
    pub attempt: Duration,
    /// One whole request across all attempts.
    pub deadline: Duration,
}

/// Which surface a request came through; kept in the audit.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Surface {
    /// The customer chat page.
    Chat,
    /// The OpenAI-compatible API.
    Api,
}

impl Surface {
    fn as_str(self) -> &'static str {
        match self {
            Surface::Chat => "chat",
            Surface::Api => "api",
        }
    }
}

/// A question for the gateway: a whole conversation, the customer's turn last.
#[derive(Clone, Debug)]
pub struct GatewayRequest {
    /// Every turn, system turns included, oldest first.
    pub turns: Vec<ChatTurn>,
    /// A provider's name to pin the request to it; `None` runs the cascade.
    pub pinned: Option<String>,
    /// Caller's answer size limit.
    pub max_tokens: Option<u32>,
    /// Caller's sampling temperature.
    pub temperature: Option<f32>,
    /// Where the request came from.
    pub surface: Surface,
}

/// Why the gateway returned no answer.
#[derive(Debug, thiserror::Error)]
pub enum GatewayError {
    /// The conversation itself is unusable; the message names the problem.
    #[error("{0}")]
    BadRequest(String),
    /// The caller pinned a model that no provider serves.
    #[error("unknown model {0:?}")]
    UnknownModel(String),
    /// A provider judged the request invalid; no other provider would accept it either.
    #[error("{provider} rejected the request: {message}")]
    Rejected {
        /// Who rejected it.
        provider: String,
        /// The provider's status, passed on to the caller.
        status: u16,
        /// The provider's reason.
        message: String,
    },
    /// No provider could answer within the deadline.
    #[error("no provider could answer")]
    Unavailable {
        /// What was tried.
        attempts: Vec<AttemptSummary>,
    },
}

/// A whole answer.
#[derive(Debug)]
pub struct Completed {
    /// The request's id.
    pub id: String,
    /// Who served it.
    pub served_by: String,
    /// The answer's text.
    pub text: String,
    /// Why the provider stopped.
    pub finish_reason: String,
    /// Every attempt, the serving one last.
    pub attempts: Vec<AttemptSummary>,
    /// Time spent in the gateway itself, excluding waits on providers.
    pub overhead: Duration,
}

/// A streamed answer whose first token is ready.
pub struct Streaming {
    /// The request's id.
    pub id: String,
    /// Who is serving it.
    pub served_by: String,
    /// Gateway time up to the first token, excluding waits on providers.
    pub overhead: Duration,
    /// `Delta` events, then exactly one `Done` or `Failed`.
    pub events: BoxStream<'static, ChatEvent>,
}

/// The gateway: a cascade of providers and the audit of every request.
pub struct Gateway {
    /// Providers and their policy.
    cascade: Cascade,
    /// Where request rows go; `None` in tests that do not need them.
    store: Option<Store>,
}

impl Gateway {
    /// Creates a gateway over `cascade`, auditing into `store`.
    pub fn new(cascade: Cascade, store: Option<Store>) -> Self {
        Self { cascade, store }
    }

    /// The cascade, for listing providers.
    pub fn cascade(&self) -> &Cascade {
        &self.cascade
    }

    /// Whether `name` is a configured provider.
    pub fn has_provider(&self, name: &str) -> bool {
        self.cascade.providers().any(|p| p.name() == name)
    }

    /// Answers in one piece.
    pub async fn complete(&self, request: GatewayRequest) -> Result<Completed, GatewayError> {
        let (cascade_request, mut recorder) = self.prepare(&request, false)?;
        match self.cascade.complete(&cascade_request).await {
            Ok(answer) => {
                let overhead = recorder
                    .started
                    .elapsed()
                    .saturating_sub(answer.provider_wait);
                recorder.record.served_by = Some(answer.served_by.clone());
                recorder.record.attempts = answer.attempts.clone();
                recorder.record.answer_chars = answer.text.chars().count();
                recorder.record.overhead_ms = overhead.as_secs_f64() * 1000.0;
                recorder.finish("ok");
                Ok(Completed {
                    id: recorder.record.id.clone(),
                    served_by: answer.served_by,
                    text: answer.text,
                    finish_reason: answer.finish_reason,
                    attempts: answer.attempts,
                    overhead,
                })
            }
            Err(err) => Err(recorder.fail(err)),
        }
    }

    /// Answers as a stream. Returns once a provider produced its first token, so the
    /// caller can name the serving provider before sending anything.
    pub async fn stream(&self, request: GatewayRequest) -> Result<Streaming, GatewayError> {
        let (cascade_request, mut recorder) = self.prepare(&request, true)?;
        match self.cascade.stream(&cascade_request).await {
            Ok(answer) => {
                let overhead = recorder
                    .started
                    .elapsed()
                    .saturating_sub(answer.provider_wait);
                recorder.record.served_by = Some(answer.served_by.clone());
                recorder.record.attempts = answer.attempts;
                recorder.record.overhead_ms = overhead.as_secs_f64() * 1000.0;
                let id = recorder.record.id.clone();
                let tail = Tail {
                    first: Some(answer.first),
                    rest: answer.rest,
                    recorder,
                    done: false,
                };
                let events = futures::stream::unfold(tail, Tail::next).boxed();
                Ok(Streaming {
                    id,
                    served_by: answer.served_by,
                    overhead,
                    events,
                })
            }
            Err(err) => Err(recorder.fail(err)),
        }
    }

    fn prepare(
        &self,
        request: &GatewayRequest,
        stream: bool,
    ) -> Result<(CascadeRequest, Recorder), GatewayError> {
        let cascade_request = validate(request)?;
        if let Some(name) = &request.pinned {
            if !self.has_provider(name) {
                return Err(GatewayError::UnknownModel(name.clone()));
            }
        }
        let question_chars = cascade_request
            .turns
            .last()
            .map_or(0, |t| t.content.chars().count());
        let created_at_ms = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map_or(0, |d| d.as_millis() as i64);
        let recorder = Recorder {
            store: self.store.clone(),
            started: Instant::now(),
            finished: false,
            record: RequestRecord {
                id: format!("chatcmpl-{}", uuid::Uuid::new_v4().simple()),
                created_at_ms,
                surface: request.surface.as_str(),
                stream,
                served_by: None,
                status: "ok",
                latency_ms: 0,
                overhead_ms: 0.0,
                question_chars,
                answer_chars: 0,
                attempts: Vec::new(),
            },
        };
        Ok((cascade_request, recorder))
    }
}

/// Checks a conversation and splits off the caller's system text.
fn validate(request: &GatewayRequest) -> Result<CascadeRequest, GatewayError> {
    if request.turns.is_empty() {
        return Err(GatewayError::BadRequest(
            "messages must not be empty".into(),
        ));
    }
    let mut caller_system = Vec::new();
    let mut turns = Vec::with_capacity(request.turns.len());
    for (index, turn) in request.turns.iter().enumerate() {
        if turn.content.trim().is_empty() && turn.role != Role::Assistant {
            return Err(GatewayError::BadRequest(format!(
                "messages[{index}].content must not be empty"
            )));
        }
        match turn.role {
            Role::System => caller_system.push(turn.content.trim()),
            _ => turns.push(turn.clone()),
        }
    }
    match turns.last() {
        Some(last) if last.role == Role::User => {}
        _ => {
            return Err(GatewayError::BadRequest(
                "the last message must come from the user".into(),
            ))
        }
    }
    if request.max_tokens == Some(0) {
        return Err(GatewayError::BadRequest(
            "max_tokens must be at least 1".into(),
        ));
    }
    if let Some(t) = request.temperature {
        if !(0.0..=2.0).contains(&t) {
            return Err(GatewayError::BadRequest(
                "temperature must be between 0 and 2".into(),
            ));
        }
    }
    Ok(CascadeRequest {
        caller_system: caller_system.join("\n"),
        turns,
        max_tokens: request.max_tokens,
        temperature: request.temperature,
        pinned: request.pinned.clone(),
    })
}

/// Keeps the audit row of one request and writes it exactly once: when the answer
/// ends, or, if the caller goes away first, when it is dropped.
struct Recorder {
    store: Option<Store>,
    started: Instant,
    finished: bool,
    record: RequestRecord,
}

impl Recorder {
    fn finish(&mut self, status: &'static str) {
        if std::mem::replace(&mut self.finished, true) {
            return;
        }
        self.record.status = status;
        self.record.latency_ms = self.started.elapsed().as_millis() as u64;
        if let Some(store) = &self.store {
            store.record(self.record.clone());
        }
    }

    fn fail(mut self, err: CascadeError) -> GatewayError {
        self.record.attempts = err.attempts().to_vec();
        self.record.overhead_ms = 0.0;
        match err {
            CascadeError::InvalidRequest {
                provider,
                status,
                message,
                ..
            } => {
                self.finish("invalid_request");
                GatewayError::Rejected {
                    provider,
                    status,
                    message,
                }
            }
            CascadeError::Exhausted { attempts } => {
                self.finish("exhausted");
                GatewayError::Unavailable { attempts }
            }
            CascadeError::UnknownProvider(name) => {
                self.finish("invalid_request");
                GatewayError::UnknownModel(name)
            }
        }
    }
}

impl Drop for Recorder {
    fn drop(&mut self) {
        self.finish("client_disconnected");
    }
}

/// The rest of a streamed answer, turned into chat events.
struct Tail {
    first: Option<String>,
    rest: provider::DeltaStream,
    recorder: Recorder,
    done: bool,
}

impl Tail {
    async fn next(mut self) -> Option<(ChatEvent, Self)> {
        if self.done {
            return None;
        }
        let text = match self.first.take() {
            Some(first) => Ok(Some(first)),
            None => self.rest.next().await.transpose(),
        };
        let event = match text {
            Ok(Some(text)) => {
                self.recorder.record.answer_chars += text.chars().count();
                ChatEvent::Delta { text }
            }
            Ok(None) => {
                self.done = true;
                self.recorder.finish("ok");
                ChatEvent::Done {
                    served_by: self.recorder.record.served_by.clone().unwrap_or_default(),
                    elapsed_ms: self.recorder.record.latency_ms,
                    attempts: self.recorder.record.attempts.clone(),
                }
            }
            Err(err) => {
                self.done = true;
                tracing::warn!(request_id = %self.recorder.record.id, error = %err, "stream broke after first token");
                self.recorder.finish("stream_failed");
                ChatEvent::Failed {
                    message: "The answer was interrupted; it is incomplete.".into(),
                }
            }
        };
        Some((event, self))
    }
}
