//! What a provider is and can do, as configuration names it and the board shows
//! it: its wire protocol, whether it can truly continue a partial answer, and how
//! its breaker finds out that it has recovered.

use crate::spelled;

spelled! {
    /// Wire protocol an adapter speaks.
    pub enum Protocol {
        /// Anthropic Messages API.
        Anthropic => "anthropic",
        /// OpenAI Chat Completions (also Groq, Ollama, vLLM).
        OpenAi => "openai",
    }
}

spelled! {
    /// How a provider can continue a partial assistant answer, if it can at all.
    /// Only a real continuation is ever asked for: a provider that cannot is never
    /// sent a partial answer to "go on" from.
    pub enum ContinuationStyle {
        /// It cannot: it is never asked to continue a broken stream.
        None => "none",
        /// A trailing assistant message is continued as is (Anthropic's prefill;
        /// OpenAI-compatible servers that honour a trailing assistant turn).
        Prefill => "prefill",
        /// The trailing assistant message carries `"prefix": true` (DeepSeek, Mistral).
        Prefix => "prefix",
        /// The request says `continue_final_message: true` and
        /// `add_generation_prompt: false` (vLLM).
        ContinueFinalMessage => "continue_final_message",
    }
}

impl ContinuationStyle {
    /// What a protocol can do when the configuration does not say.
    pub fn default_for(protocol: Protocol) -> Self {
        match protocol {
            Protocol::Anthropic => ContinuationStyle::Prefill,
            // OpenAI's own API answers a trailing assistant turn afresh.
            Protocol::OpenAi => ContinuationStyle::None,
        }
    }
}

spelled! {
    /// How an OPEN breaker finds out that its provider is back.
    pub enum ProbeMode {
        /// A cheap request of the gateway's own (a one-token completion), so no
        /// customer's question is spent on a provider that may still be down.
        Background => "background",
        /// The first customer request after the cool-down is the probe (for
        /// providers where a probe of our own costs money).
        Request => "request",
    }
}
