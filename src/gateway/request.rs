//! A question as the gateway receives it, the checks it must pass, and the only
//! errors a caller can get back: their own mistakes. Whatever the providers do,
//! the gateway answers; an invalid conversation is the one thing it refuses.

use super::cascade::{CascadeError, CascadeRequest};
use crate::shared::{ChatTurn, Role, Surface};

/// The tenant of requests that name none.
pub const DEFAULT_TENANT: &str = "default";

/// How big a conversation may be.
#[derive(Clone, Copy, Debug)]
pub struct RequestLimits {
    /// Most messages in one request.
    pub max_messages: usize,
    /// Most characters in one message.
    pub max_message_chars: usize,
}

impl Default for RequestLimits {
    fn default() -> Self {
        Self {
            max_messages: 200,
            max_message_chars: 32_000,
        }
    }
}

/// What happens when a stream breaks after text was sent and no provider can
/// truly continue it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum OnBreak {
    /// End with an explicit error event: the caller knows the text is not whole.
    Fail,
    /// Start the answer over on another provider and tell the caller to replace
    /// what it has (ChaosAI's own chat does; API callers may opt in).
    Restart,
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
    /// The chat page's conversation id; its turns are kept for the chat history.
    pub conversation_id: Option<String>,
    /// Who is asking (a tenant); cached answers never cross tenants.
    pub tenant: String,
    /// Whether the cache may answer (and store the answer).
    pub use_cache: bool,
    /// What a broken stream that cannot be continued becomes.
    pub on_break: OnBreak,
}

impl GatewayRequest {
    /// A one-question request from `surface` with every default.
    pub fn question(surface: Surface, question: impl Into<String>) -> Self {
        Self {
            turns: vec![ChatTurn::user(question)],
            pinned: None,
            max_tokens: None,
            temperature: None,
            surface,
            conversation_id: None,
            tenant: DEFAULT_TENANT.into(),
            use_cache: true,
            // Our own pages can replace a partial answer; an API caller must ask.
            on_break: match surface {
                Surface::Chat | Surface::Traffic => OnBreak::Restart,
                Surface::Api => OnBreak::Fail,
            },
        }
    }
}

/// Why the gateway returned no answer: only ever the caller's own mistake.
#[derive(Debug, thiserror::Error)]
pub enum GatewayError {
    /// The request itself is unusable; `param` names the field at fault.
    #[error("{message}")]
    BadRequest {
        /// The request field at fault (`messages[2].content`, `temperature`, …).
        param: String,
        /// What is wrong, naming the problem.
        message: String,
    },
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
}

impl GatewayError {
    fn bad(param: impl Into<String>, message: impl Into<String>) -> Self {
        GatewayError::BadRequest {
            param: param.into(),
            message: message.into(),
        }
    }

    /// The caller-facing error for a cascade that refused the request.
    pub(super) fn from_cascade(err: CascadeError) -> Self {
        match err {
            CascadeError::InvalidRequest {
                provider,
                status,
                message,
                ..
            }
            | CascadeError::TooLarge {
                provider,
                status,
                message,
                ..
            } => GatewayError::Rejected {
                provider,
                status,
                message,
            },
            CascadeError::UnknownProvider(name) => GatewayError::UnknownModel(name),
            // The gateway answers an exhausted cascade itself; it never gets here.
            CascadeError::Exhausted { .. } => {
                GatewayError::bad("model", "no provider could answer")
            }
        }
    }
}

/// Checks a conversation (and that a pinned model is one `known` to the
/// cascade) and splits off the caller's system text.
pub(super) fn validate(
    request: &GatewayRequest,
    limits: RequestLimits,
    known: impl Fn(&str) -> bool,
) -> Result<CascadeRequest, GatewayError> {
    if let Some(name) = &request.pinned {
        if !known(name) {
            return Err(GatewayError::UnknownModel(name.clone()));
        }
    }
    if request.turns.is_empty() {
        return Err(GatewayError::bad("messages", "messages must not be empty"));
    }
    if request.turns.len() > limits.max_messages {
        return Err(GatewayError::bad(
            "messages",
            format!(
                "messages holds {} messages; at most {} are allowed",
                request.turns.len(),
                limits.max_messages
            ),
        ));
    }
    let mut caller_system = Vec::new();
    let mut turns = Vec::with_capacity(request.turns.len());
    for (index, turn) in request.turns.iter().enumerate() {
        let chars = turn.content.chars().count();
        if chars > limits.max_message_chars {
            let param = format!("messages[{index}].content");
            return Err(GatewayError::bad(
                param.clone(),
                format!(
                    "{param} has {chars} characters; at most {} are allowed",
                    limits.max_message_chars
                ),
            ));
        }
        if turn.content.trim().is_empty() && turn.role != Role::Assistant {
            let param = format!("messages[{index}].content");
            return Err(GatewayError::bad(
                param.clone(),
                format!("{param} must not be empty"),
            ));
        }
        match turn.role {
            Role::System => caller_system.push(turn.content.trim()),
            _ => turns.push(turn.clone()),
        }
    }
    match turns.last() {
        Some(last) if last.role == Role::User => {}
        _ => {
            return Err(GatewayError::bad(
                "messages",
                "the last message must come from the user",
            ))
        }
    }
    if request.max_tokens == Some(0) {
        return Err(GatewayError::bad(
            "max_tokens",
            "max_tokens must be at least 1",
        ));
    }
    if let Some(t) = request.temperature {
        if !(0.0..=2.0).contains(&t) {
            return Err(GatewayError::bad(
                "temperature",
                "temperature must be between 0 and 2",
            ));
        }
    }
    Ok(CascadeRequest {
        caller_system: caller_system.join("\n"),
        turns,
        max_tokens: request.max_tokens,
        temperature: request.temperature,
        pinned: request.pinned.clone(),
        ..Default::default()
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn param_of(request: &GatewayRequest) -> String {
        match validate(request, RequestLimits::default(), |_| true) {
            Err(GatewayError::BadRequest { param, .. }) => param,
            other => panic!("expected a bad request, got {other:?}"),
        }
    }

    #[test]
    fn each_bad_request_names_its_parameter() {
        let mut request = GatewayRequest::question(Surface::Api, "hi");
        request.temperature = Some(3.0);
        assert_eq!(param_of(&request), "temperature");
        request.temperature = None;
        request.max_tokens = Some(0);
        assert_eq!(param_of(&request), "max_tokens");
        request.max_tokens = None;
        request.turns.push(ChatTurn::user("  "));
        assert_eq!(param_of(&request), "messages[1].content");
        request.turns[1] = ChatTurn::assistant("hello");
        assert_eq!(param_of(&request), "messages");
    }

    #[test]
    fn a_conversation_beyond_the_limits_names_the_limit() {
        let limits = RequestLimits {
            max_messages: 3,
            max_message_chars: 10,
        };
        let mut request = GatewayRequest::question(Surface::Api, "x".repeat(11));
        match validate(&request, limits, |_| true) {
            Err(GatewayError::BadRequest { param, message }) => {
                assert_eq!(param, "messages[0].content");
                assert!(message.contains("at most 10"), "{message}");
            }
            other => panic!("{other:?}"),
        }
        request.turns = vec![ChatTurn::user("hi"); 4];
        match validate(&request, limits, |_| true) {
            Err(GatewayError::BadRequest { param, message }) => {
                assert_eq!(param, "messages");
                assert!(message.contains("at most 3"), "{message}");
            }
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn system_turns_become_the_callers_system_text() {
        let mut request = GatewayRequest::question(Surface::Chat, "hi");
        request.turns.insert(
            0,
            ChatTurn {
                role: Role::System,
                content: " Reply in French. ".into(),
            },
        );
        let cascade = validate(&request, RequestLimits::default(), |_| true).unwrap();
        request.pinned = Some("nobody".into());
        assert!(matches!(
            validate(&request, RequestLimits::default(), |name| name == "gpt"),
            Err(GatewayError::UnknownModel(_))
        ));
        assert_eq!(cascade.caller_system, "Reply in French.");
        assert_eq!(cascade.turns, vec![ChatTurn::user("hi")]);
    }
}
