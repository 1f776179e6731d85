//! Which questions the semantic cache may answer, under which key, and when an
//! answer may be stored: the gateway's side of layer 0. The key scopes a question
//! by tenant, model, the caller's system prompt and the whole conversation before
//! it, so a cached answer never crosses tenants, prompts or contexts.
//!
//! Only a request whose answer is free text from default sampling may use the
//! cache at all: tools, tool results, a JSON form, a seed, a stop sequence or any
//! other sampling parameter make the answer one that a cached one is not. A
//! request that caps the answer below a cached answer's size is not served it.

use super::cascade::CascadeRequest;
use super::request::GatewayRequest;
use crate::cache::{semantic, Hit, SemanticCache};
use crate::shared::{Role, Usage};
use std::sync::Arc;

/// The model name a request that runs the whole cascade is cached under.
const CASCADE_SCOPE: &str = "chaosai";

/// Where a question's answer lives in the cache.
#[derive(Clone, Debug)]
pub(super) struct CacheKey {
    scope: String,
    question: String,
    /// The caller's cap on the answer, in tokens.
    max_tokens: Option<u32>,
}

/// An answer that may be stored once it has ended whole.
pub(super) struct PendingStore {
    cache: Arc<SemanticCache>,
    key: CacheKey,
}

impl PendingStore {
    /// Stores `answer` off the request path: the customer already has it.
    pub fn store(self, answer: String) {
        tokio::spawn(async move {
            self.cache
                .remember(&self.key.scope, &self.key.question, &answer)
                .await
        });
    }
}

/// The gateway's view of the cache; a disabled cache answers nothing.
pub(super) struct AnswerCache {
    cache: Option<Arc<SemanticCache>>,
}

impl AnswerCache {
    /// Wraps the cache (or its absence).
    pub fn new(cache: Option<Arc<SemanticCache>>) -> Self {
        Self { cache }
    }

    /// The cache itself, for its admin API and metrics.
    pub fn inner(&self) -> Option<&Arc<SemanticCache>> {
        self.cache.as_ref()
    }

    /// Where this request's answer would live, if it may use the cache at all.
    pub fn key(&self, request: &GatewayRequest, cascade: &CascadeRequest) -> Option<CacheKey> {
        self.cache.as_ref()?;
        if !request.use_cache || !cascade.options.cacheable() {
            return None;
        }
        // A tool's result or an image says more than the text the cache keys
        // on: two questions worded alike about different pictures differ.
        let beyond_text = cascade
            .turns
            .iter()
            .any(|t| t.role == Role::Tool || !t.tool_calls.is_empty() || !t.images.is_empty());
        if beyond_text {
            return None;
        }
        let (question, before) = cascade.turns.split_last()?;
        Some(CacheKey {
            scope: semantic::scope(
                &request.tenant,
                request.pinned.as_deref().unwrap_or(CASCADE_SCOPE),
                &cascade.caller_system,
                before,
            ),
            question: question.content.clone(),
            max_tokens: cascade.max_tokens,
        })
    }

    /// The cached answer for `key`, if one may answer.
    pub async fn lookup(&self, key: &CacheKey) -> Option<Hit> {
        let hit = self
            .cache
            .as_ref()?
            .lookup(&key.scope, &key.question)
            .await?;
        let fits = key
            .max_tokens
            .is_none_or(|cap| Usage::estimate(&hit.answer) <= u64::from(cap));
        fits.then_some(hit)
    }

    /// The handle that stores the answer to `key` once it ended whole.
    pub fn pending(&self, key: CacheKey) -> Option<PendingStore> {
        Some(PendingStore {
            cache: self.cache.clone()?,
            key,
        })
    }
}
