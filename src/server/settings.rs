//! The one place configuration becomes the core's own settings. `config` names
//! plain numbers; each core type gets a `From` conversion here, so a setting's
//! unit, floor and default are decided once.

use crate::cache::CacheSettings;
use crate::config::{AuditConfig, CacheConfig, GatewayConfig, ProviderConfig, ServerConfig};
use crate::gateway::breaker::BreakerConfig;
use crate::gateway::cascade::Timeouts;
use crate::gateway::provider::WireLimits;
use crate::gateway::RequestLimits;
use crate::store::audit::AuditSettings;
use std::time::Duration;

fn ms(value: u64) -> Duration {
    Duration::from_millis(value)
}

impl From<&GatewayConfig> for Timeouts {
    fn from(c: &GatewayConfig) -> Self {
        Timeouts {
            first_byte: ms(c.first_byte_timeout_ms),
            first_token: ms(c.first_token_timeout_ms),
            stall: ms(c.stall_timeout_ms),
            attempt: ms(c.attempt_timeout_ms),
            deadline: ms(c.deadline_ms),
            answer: ms(c.answer_budget_ms.max(c.deadline_ms)),
        }
    }
}

/// A provider's wire limits: its own timeouts where it has them, the gateway's
/// otherwise.
pub(super) fn wire_limits(gateway: &GatewayConfig, provider: &ProviderConfig) -> WireLimits {
    let mut limits = WireLimits::from(gateway);
    if let Some(first_byte) = provider.first_byte_timeout_ms {
        limits.first_byte = ms(first_byte);
    }
    if let Some(stall) = provider.stall_timeout_ms {
        limits.stall = ms(stall);
    }
    if let Some(attempt) = provider.attempt_timeout_ms {
        limits.whole_answer = ms(attempt);
    }
    if let Some(first_token) = provider.first_token_timeout_ms {
        limits.first_token = ms(first_token);
    }
    limits
}

impl From<&GatewayConfig> for WireLimits {
    fn from(c: &GatewayConfig) -> Self {
        WireLimits {
            first_byte: ms(c.first_byte_timeout_ms),
            whole_answer: ms(c.attempt_timeout_ms),
            first_token: ms(c.first_token_timeout_ms),
            stall: ms(c.stall_timeout_ms),
            max_error_body: c.max_error_body_bytes.max(1024),
            max_body: c.max_response_bytes.max(1024),
            max_event: c.max_event_bytes.max(1024),
            max_stream: c.max_answer_bytes.max(1024),
        }
    }
}

impl From<&ServerConfig> for RequestLimits {
    fn from(c: &ServerConfig) -> Self {
        RequestLimits {
            max_messages: c.max_messages.max(1),
            max_message_chars: c.max_message_chars.max(1),
        }
    }
}

impl From<&ProviderConfig> for BreakerConfig {
    fn from(c: &ProviderConfig) -> Self {
        BreakerConfig {
            failure_threshold: c.failure_threshold.max(1),
            open_for: ms(c.open_for_ms),
            max_open_for: ms(c.max_open_for_ms.max(c.open_for_ms)),
            probe: c.probe,
        }
    }
}

impl From<&CacheConfig> for CacheSettings {
    fn from(c: &CacheConfig) -> Self {
        CacheSettings {
            threshold: c.threshold,
            ttl: Duration::from_secs(c.ttl_hours * 3600),
            max_entries: c.max_entries.max(1),
            max_embeddings: c.max_waiting_embeddings.max(1),
        }
    }
}

impl From<&AuditConfig> for AuditSettings {
    fn from(c: &AuditConfig) -> Self {
        AuditSettings {
            queue: c.queue.max(1),
            batch: c.batch.max(1),
            flush_interval: ms(c.flush_interval_ms),
        }
    }
}

/// How often the audit's retention runs, and what it keeps.
#[derive(Clone, Copy, Debug)]
pub struct Retention {
    /// Between two runs.
    pub every: Duration,
    /// Rows older than this go.
    pub keep: Duration,
    /// At most this many requests stay.
    pub max_rows: i64,
    /// At most this many bytes of kept responses stay.
    pub max_response_bytes: i64,
}

impl From<&AuditConfig> for Retention {
    fn from(c: &AuditConfig) -> Self {
        Retention {
            every: Duration::from_secs(c.prune_interval_s.max(1)),
            keep: Duration::from_secs(c.retention_days * 86_400),
            max_rows: c.max_rows.max(0),
            max_response_bytes: c.max_kept_response_bytes.max(0),
        }
    }
}
