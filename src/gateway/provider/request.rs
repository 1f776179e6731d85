//! What the cascade asks of a provider: the conversation with its system prompt
//! rendered, the caller's tools, and the sampling parameters, in the gateway's
//! own terms; each adapter writes them in its protocol's.

use crate::shared::ChatTurn;
use serde_json::Value;

/// One of the caller's functions the model may call.
#[derive(Clone, Debug, PartialEq)]
pub struct Tool {
    /// Its name.
    pub name: String,
    /// What it does, for the model to decide when to call it.
    pub description: Option<String>,
    /// Its arguments, as a JSON schema.
    pub parameters: Value,
}

/// Whether and which tools the model may call.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum ToolChoice {
    /// The model decides.
    Auto,
    /// No tool.
    None,
    /// Some tool, the model's choice.
    Required,
    /// This function.
    Function(String),
}

/// The form the answer must take.
#[derive(Clone, Debug, Default, PartialEq)]
pub enum ResponseFormat {
    /// Free text.
    #[default]
    Text,
    /// A JSON object.
    JsonObject,
    /// JSON following this schema.
    JsonSchema {
        /// The schema's name.
        name: String,
        /// The schema.
        schema: Value,
        /// Whether the provider must follow it exactly (OpenAI's structured outputs).
        strict: Option<bool>,
    },
}

/// How the caller wants the answer sampled; `None` leaves a provider's default.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct Sampling {
    /// Randomness, 0–2.
    pub temperature: Option<f32>,
    /// Nucleus sampling, 0–1.
    pub top_p: Option<f32>,
    /// Up to four texts that end the answer where they would appear.
    pub stop: Vec<String>,
    /// Best-effort determinism (OpenAI protocol; Anthropic has none).
    pub seed: Option<i64>,
    /// Penalty for tokens already present, -2–2 (OpenAI protocol).
    pub presence_penalty: Option<f32>,
    /// Penalty for frequent tokens, -2–2 (OpenAI protocol).
    pub frequency_penalty: Option<f32>,
    /// The end user, for the provider's abuse monitoring.
    pub user: Option<String>,
}

impl Sampling {
    /// Whether the answer may differ from a default request's: such answers
    /// are never served from, or stored in, the cache.
    pub fn is_default(&self) -> bool {
        *self
            == Sampling {
                user: self.user.clone(),
                ..Sampling::default()
            }
    }
}

crate::spelled! {
    /// How hard a reasoning model should think before it answers (OpenAI's
    /// `reasoning_effort`). A hint about cost and latency, not about the
    /// answer's form: a provider whose model does not reason goes without it.
    pub enum ReasoningEffort {
        /// No reasoning (GPT-5.1 and later).
        None => "none",
        /// The least.
        Minimal => "minimal",
        /// Little.
        Low => "low",
        /// The usual default.
        Medium => "medium",
        /// Much.
        High => "high",
        /// More (GPT-5.1-Codex-Max and later).
        Xhigh => "xhigh",
        /// The most a model offers.
        Max => "max",
    }
}

crate::spelled! {
    /// How long an answer a model that takes it should give (GPT-5's
    /// `verbosity`): a hint about length, not form; a model that does not
    /// take it goes without.
    pub enum Verbosity {
        /// Concise.
        Low => "low",
        /// The default.
        Medium => "medium",
        /// Thorough.
        High => "high",
    }
}

/// What the caller asked for beyond the conversation: how to sample, which tools
/// the model may call, and the answer's form. It travels unchanged from the API
/// to every provider a request reaches, failover or not.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct Options {
    /// How to sample.
    pub sampling: Sampling,
    /// The caller's functions.
    pub tools: Vec<Tool>,
    /// Whether and which of them the model may call.
    pub tool_choice: Option<ToolChoice>,
    /// Whether the model may call several at once (`None`: the provider's default).
    pub parallel_tool_calls: Option<bool>,
    /// The form of the answer.
    pub response_format: ResponseFormat,
    /// How hard a reasoning model should think (`None`: its default).
    pub reasoning_effort: Option<ReasoningEffort>,
    /// How long an answer should be (`None`: the model's default).
    pub verbosity: Option<Verbosity>,
}

impl Options {
    /// Whether a cached answer could be what these options produce: free text,
    /// default sampling, effort and verbosity, no tools.
    pub fn cacheable(&self) -> bool {
        self.sampling.is_default()
            && self.tools.is_empty()
            && self.response_format == ResponseFormat::Text
            && self.reasoning_effort.is_none()
            && self.verbosity.is_none()
    }
}

/// What the cascade asks of a provider: the conversation with its system prompt already rendered.
#[derive(Clone, Debug)]
pub struct ProviderRequest {
    /// The rendered system prompt for this provider's model.
    pub system: String,
    /// The conversation without system turns, oldest first; the last turn is the
    /// customer's or a tool's result.
    pub turns: Vec<ChatTurn>,
    /// Largest answer to ask for, in tokens.
    pub max_tokens: u32,
    /// Sampling, tools and the answer's form.
    pub options: Options,
    /// The start of the answer already sent to the customer by a provider that
    /// broke mid-stream; this provider is asked to continue it, not to repeat it
    /// (only ever asked of a provider whose continuation style is not `none`).
    pub continuation: Option<String>,
}
