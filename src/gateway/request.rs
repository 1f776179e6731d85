//! A question as the gateway receives it, and the only errors a caller can get
//! back: their own mistakes (`validate` holds the checks). Whatever the providers do,
//! the gateway answers; an invalid conversation is the one thing it refuses.

use super::cascade::CascadeError;
use super::provider::Options;
use crate::shared::{ChatTurn, Surface};

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
    /// Sampling, tools and the answer's form.
    pub options: Options,
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
        Self::conversation(surface, vec![ChatTurn::user(question)])
    }

    /// A request for the conversation `turns` from `surface` with every default.
    pub fn conversation(surface: Surface, turns: Vec<ChatTurn>) -> Self {
        Self {
            turns,
            pinned: None,
            max_tokens: None,
            options: Options::default(),
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
    pub(super) fn bad(param: impl Into<String>, message: impl Into<String>) -> Self {
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
            CascadeError::Unsupported {
                param, providers, ..
            } => GatewayError::bad(
                param,
                format!(
                    "no provider of this gateway can honour {param} as given (tried {providers})"
                ),
            ),
            // The gateway answers an exhausted cascade itself; it never gets here.
            CascadeError::Exhausted { .. } => {
                GatewayError::bad("model", "no provider could answer")
            }
        }
    }
}
