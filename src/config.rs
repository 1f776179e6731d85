//! The one typed configuration of a ChaosAI server.
//!
//! Loaded from a TOML file (`config/chaosai.toml` by default) and then overridden by
//! `CHAOSAI_*` environment variables. API keys are read from the environment only,
//! here, once; the rest of the crate receives them through this struct.
//!
//! A leaf: it names settings in plain numbers and strings and imports nothing from
//! the core. `server::settings` turns them into the core's own types, once.

pub use crate::shared::{ContinuationStyle, ProbeMode, Protocol};
use serde::Deserialize;
use std::{net::SocketAddr, path::Path};

/// A credential: printed by `Debug` as `[redacted]`, so a logged config never shows it.
#[derive(Clone, PartialEq, Eq)]
pub struct Secret(String);

impl Secret {
    /// Wraps a credential.
    pub fn new(value: impl Into<String>) -> Self {
        Self(value.into())
    }

    /// The credential itself, for the one place that sends it.
    pub fn expose(&self) -> &str {
        &self.0
    }
}

impl From<&str> for Secret {
    fn from(value: &str) -> Self {
        Self::new(value)
    }
}

impl std::fmt::Debug for Secret {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("[redacted]")
    }
}

/// Shortest admin token accepted: a short one is guessed.
const MIN_TOKEN_CHARS: usize = 16;

/// Everything a server needs to start.
#[derive(Clone, Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Config {
    /// Where and how the HTTP server listens.
    #[serde(default)]
    pub server: ServerConfig,
    /// Where the database lives (SQLite by default, PostgreSQL for replicas).
    #[serde(default)]
    pub database: DatabaseConfig,
    /// Replicas sharing breakers, faults, events and cache through Redis.
    #[serde(default)]
    pub cluster: ClusterConfig,
    /// Timeouts and prompts of the cascade.
    #[serde(default)]
    pub gateway: GatewayConfig,
    /// Behaviour of the built-in simulated providers.
    #[serde(default)]
    pub sim: SimConfig,
    /// Where the embedding model and runtime library are found.
    #[serde(default)]
    pub embedder: EmbedderConfig,
    /// The audit trail.
    #[serde(default)]
    pub audit: AuditConfig,
    /// The layer-0 semantic cache.
    #[serde(default)]
    pub cache: CacheConfig,
    /// The cascade, in priority order: the first entry is tried first.
    pub providers: Vec<ProviderConfig>,
    /// Client keys of `/v1`; with none (here or made through the admin API),
    /// `/v1` is open and single-tenant.
    #[serde(default)]
    pub clients: Vec<ClientConfig>,
}

/// One client key, as `[[clients]]` names it.
#[derive(Clone, Debug, Deserialize, PartialEq, Eq)]
#[serde(deny_unknown_fields)]
pub struct ClientConfig {
    /// Who the client is (shown in metrics and the admin API).
    pub name: String,
    /// The tenant its requests belong to; the cache never crosses tenants.
    pub tenant: String,
    /// The SHA-256 of its key, as lower-case hex (`printf %s "$KEY" | sha256sum`).
    pub key_sha256: String,
    /// Requests per minute it may make; none means no limit.
    #[serde(default)]
    pub rpm: Option<u32>,
    /// Tokens (prompt and completion) per minute it may spend; none means no limit.
    #[serde(default)]
    pub tpm: Option<u32>,
}

/// HTTP server settings.
#[derive(Clone, Debug, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct ServerConfig {
    /// Address to listen on; port 0 picks a free port (used by the tests).
    pub addr: SocketAddr,
    /// Largest accepted request body on every route but the two that take a
    /// conversation; bigger bodies get a 413 before any parsing. On those two it
    /// is what a body may hold without drawing on `body_budget_bytes`.
    pub body_limit_bytes: usize,
    /// Largest body of a conversation (`/v1/chat/completions`, `/v1/responses`):
    /// pictures sent inline as data URLs make a customer's question megabytes.
    pub conversation_body_limit_bytes: usize,
    /// Bytes of conversation bodies larger than `body_limit_bytes` held at once,
    /// over every connection, from the first byte read to the answer's last: a
    /// large body that would go beyond it is a 503 with `Retry-After` before it
    /// is read, so many large uploads at once cannot exhaust memory.
    pub body_budget_bytes: usize,
    /// How long in-flight answers may run after a shutdown signal before the server exits.
    pub shutdown_grace_ms: u64,
    /// A request's headers (and the next request on a kept-alive connection) must
    /// arrive within this, or the connection is closed: slow clients cannot hold
    /// connections open.
    pub header_timeout_ms: u64,
    /// A request's body must arrive whole within this of its head (a 408 otherwise).
    pub body_timeout_ms: u64,
    /// Connections served at once; beyond that new ones are closed at once.
    pub max_connections: usize,
    /// Most messages in one request.
    pub max_messages: usize,
    /// Most characters in one message.
    pub max_message_chars: usize,
    /// The address browsers reach the server at when it is not the listening
    /// address (behind a proxy): admin requests from that origin are accepted,
    /// and an `https://` address makes the admin cookie `Secure`.
    pub public_url: Option<String>,
    /// Web origins (`https://shop.example`) whose pages may read `/v1` answers
    /// while no client key is required; `*` is every origin. While keys are
    /// required any page may, since it must present one (`CHAOSAI_API_ORIGINS`,
    /// comma-separated, replaces the list).
    pub api_origins: Vec<String>,
    /// Token the chaos and admin APIs require; from `CHAOSAI_ADMIN_TOKEN` only (a
    /// secret never lives in the config file). Generated at start-up when unset.
    #[serde(skip)]
    pub admin_token: Option<Secret>,
}

impl Default for ServerConfig {
    fn default() -> Self {
        Self {
            addr: SocketAddr::from(([127, 0, 0, 1], 3000)),
            body_limit_bytes: 64 * 1024,
            conversation_body_limit_bytes: 20 << 20,
            body_budget_bytes: 32 << 20,
            shutdown_grace_ms: 10_000,
            header_timeout_ms: 10_000,
            body_timeout_ms: 10_000,
            max_connections: 2_048,
            max_messages: 200,
            max_message_chars: 32_000,
            public_url: None,
            api_origins: Vec::new(),
            admin_token: None,
        }
    }
}

/// Database settings.
#[derive(Clone, Debug, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct DatabaseConfig {
    /// sqlx connection URL, e.g. `sqlite://data/chaosai.db`.
    pub url: String,
}

impl Default for DatabaseConfig {
    fn default() -> Self {
        Self {
            url: "sqlite://data/chaosai.db".into(),
        }
    }
}

/// Replicas of one gateway sharing live state through Redis.
#[derive(Clone, Debug, Default, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct ClusterConfig {
    /// `redis://…`; `None` runs alone, every state in this process.
    pub redis_url: Option<String>,
    /// This replica's name on traces and transitions; by default the host name
    /// and the listening port.
    pub replica: Option<String>,
}

/// Policy of the cascade.
#[derive(Clone, Debug, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct GatewayConfig {
    /// Limit on establishing a TCP/TLS connection to a provider.
    pub connect_timeout_ms: u64,
    /// Limit from sending a streamed request to receiving the response head. A
    /// non-streamed answer's head comes only once the whole answer is written,
    /// so it is held to `attempt_timeout_ms` instead.
    pub first_byte_timeout_ms: u64,
    /// Limit from the response head to the first content token of a stream.
    pub first_token_timeout_ms: u64,
    /// Longest silence tolerated between two chunks of a stream.
    pub stall_timeout_ms: u64,
    /// Limit on one whole attempt (a non-streamed answer, or a stream up to its first token).
    pub attempt_timeout_ms: u64,
    /// Budget of one whole request across every attempt, up to its first token
    /// (the cache lookup included).
    pub deadline_ms: u64,
    /// Budget of a whole streamed answer, from the request to its last token: a
    /// provider that keeps sending cannot hold a stream open beyond it.
    pub answer_budget_ms: u64,
    /// Most bytes of a provider's error body that are read.
    pub max_error_body_bytes: usize,
    /// Most bytes of a provider's whole (non-streamed) answer.
    pub max_response_bytes: usize,
    /// Most bytes of one SSE line or event from a provider.
    pub max_event_bytes: usize,
    /// Most bytes of a provider's whole streamed answer, every event counted.
    pub max_answer_bytes: usize,
    /// The support assistant's instructions, used for providers without their own template.
    pub system_prompt: String,
    /// Whether providers with API keys reach the real APIs (`auto`) or every provider is simulated.
    pub simulate: SimulateMode,
}

impl Default for GatewayConfig {
    fn default() -> Self {
        Self {
            connect_timeout_ms: 1_000,
            first_byte_timeout_ms: 4_000,
            first_token_timeout_ms: 4_000,
            stall_timeout_ms: 4_000,
            attempt_timeout_ms: 15_000,
            deadline_ms: 25_000,
            answer_budget_ms: 120_000,
            max_error_body_bytes: 1 << 20,
            max_response_bytes: 8 << 20,
            max_event_bytes: 1 << 20,
            max_answer_bytes: 8 << 20,
            system_prompt: "You are the support assistant of an online shop. Answer briefly and \
                            kindly. {system}"
                .into(),
            simulate: SimulateMode::Auto,
        }
    }
}

/// Whether real providers may be reached.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum SimulateMode {
    /// A provider whose API key is set reaches its real API; the others are simulated.
    Auto,
    /// Every provider is simulated, whatever keys are set (tests, offline demos).
    Always,
}

/// The semantic cache.
#[derive(Clone, Debug, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct CacheConfig {
    /// Whether questions are looked up (and answers stored) at all.
    pub enabled: bool,
    /// Lowest cosine similarity that may answer.
    pub threshold: f32,
    /// Hours an entry may answer.
    pub ttl_hours: u64,
    /// Most entries kept; the least recently hit are evicted first.
    pub max_entries: usize,
    /// Embeddings running or waiting for the model at most; a lookup beyond that
    /// skips the cache and goes to the providers.
    pub max_waiting_embeddings: usize,
}

impl Default for CacheConfig {
    fn default() -> Self {
        Self {
            enabled: true,
            threshold: 0.85,
            ttl_hours: 24,
            max_entries: 10_000,
            max_waiting_embeddings: 16,
        }
    }
}

/// The audit trail: the writer's batching, redaction and retention.
#[derive(Clone, Debug, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct AuditConfig {
    /// Whether requests are audited at all (off only to measure what the audit costs).
    pub enabled: bool,
    /// Queue capacity in records; a full queue never fails a request.
    pub queue: usize,
    /// Most records per batch.
    pub batch: usize,
    /// Longest a record waits before its batch is written.
    pub flush_interval_ms: u64,
    /// Store `[redacted]` instead of customer text (chat messages, tickets).
    pub redact_text: bool,
    /// Requests older than this are pruned.
    pub retention_days: u64,
    /// At most this many requests are kept.
    pub max_rows: i64,
    /// The Responses API's kept responses hold at most this many bytes in all
    /// (each holds its whole conversation, pictures included); the oldest go first.
    pub max_kept_response_bytes: i64,
    /// How often retention runs.
    pub prune_interval_s: u64,
}

impl Default for AuditConfig {
    fn default() -> Self {
        Self {
            enabled: true,
            queue: 10_000,
            batch: 512,
            flush_interval_ms: 50,
            redact_text: false,
            retention_days: 30,
            max_rows: 1_000_000,
            max_kept_response_bytes: 1 << 30,
            prune_interval_s: 60,
        }
    }
}

/// Simulated provider behaviour.
#[derive(Clone, Debug, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct SimConfig {
    /// Shortest pause between two streamed chunks, in milliseconds.
    pub chunk_delay_min_ms: u64,
    /// Longest pause between two streamed chunks, in milliseconds.
    pub chunk_delay_max_ms: u64,
}

impl Default for SimConfig {
    fn default() -> Self {
        Self {
            chunk_delay_min_ms: 20,
            chunk_delay_max_ms: 40,
        }
    }
}

/// Location of the embedding model files that `make models` installs.
#[derive(Clone, Debug, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct EmbedderConfig {
    /// The ONNX Runtime shared library.
    pub runtime_library: String,
    /// all-MiniLM-L6-v2 as ONNX; by default the int8 model `make models` makes
    /// (`scripts/quantise-model.py`), beside the fp32-computing one it comes from.
    pub model: String,
    /// The model's `tokenizer.json`.
    pub tokenizer: String,
    /// Copies of the model that embed at once (about 40 MiB each), each served
    /// by its own worker thread taking the oldest waiting question. One per core
    /// of a 2-core machine by default; 1 to 8.
    pub sessions: usize,
}

impl Default for EmbedderConfig {
    fn default() -> Self {
        Self {
            runtime_library: ".tools/onnxruntime/libonnxruntime.so.1.31.1".into(),
            model: ".tools/models/all-MiniLM-L6-v2/model-int8-per-token.onnx".into(),
            tokenizer: ".tools/models/all-MiniLM-L6-v2/tokenizer.json".into(),
            sessions: 2,
        }
    }
}

/// One provider of the cascade.
#[derive(Clone, Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ProviderConfig {
    /// Name used in routes, headers, metrics and the `model` field of requests.
    pub name: String,
    /// Wire protocol.
    pub protocol: Protocol,
    /// Model id sent to the provider.
    pub model: String,
    /// Real API base URL, used when the API key is present (and simulation is not forced).
    pub base_url: String,
    /// Name of the environment variable that holds the API key.
    pub api_key_env: Option<String>,
    /// System prompt template for this provider's model; `{system}` is replaced by the
    /// caller's own system messages. Falls back to `gateway.system_prompt`.
    pub system_template: Option<String>,
    /// Largest answer requested from the provider, in tokens.
    #[serde(default = "default_max_tokens")]
    pub max_tokens: u32,
    /// Consecutive failures that open this provider's breaker.
    #[serde(default = "default_failure_threshold")]
    pub failure_threshold: u32,
    /// Cool-down of an opened breaker before its half-open probe, in milliseconds.
    #[serde(default = "default_open_for_ms")]
    pub open_for_ms: u64,
    /// Ceiling of the cool-down, which doubles after each failed probe. Kept low
    /// (12 s) so a recovered provider serves again within seconds.
    #[serde(default = "default_max_open_for_ms")]
    pub max_open_for_ms: u64,
    /// How an OPEN breaker learns that the provider is back: a one-token probe of
    /// the gateway's own (`background`, the default) or a customer request.
    #[serde(default = "default_probe")]
    pub probe: ProbeMode,
    /// Whether and how the provider can continue a partial answer; defaults to
    /// `prefill` for Anthropic and `none` for the OpenAI protocol.
    #[serde(default)]
    pub continuation: Option<ContinuationStyle>,
    /// Immediate retries on this provider after one transient failure (a lone
    /// 5xx, a reset before the response, a 429 asking for at most a second).
    #[serde(default = "default_retries")]
    pub retries: u32,
    /// This provider's own limits, in place of the `[gateway]` ones: a
    /// reasoning model thinks for many seconds before its first token, which
    /// under the gateway's 4 s would be a timeout on every attempt and an open
    /// breaker on a healthy provider.
    #[serde(default)]
    pub first_byte_timeout_ms: Option<u64>,
    /// See `first_byte_timeout_ms`.
    #[serde(default)]
    pub first_token_timeout_ms: Option<u64>,
    /// See `first_byte_timeout_ms`.
    #[serde(default)]
    pub stall_timeout_ms: Option<u64>,
    /// See `first_byte_timeout_ms`.
    #[serde(default)]
    pub attempt_timeout_ms: Option<u64>,
    /// Whether its model can look at images a customer shows. A text-only
    /// model (Groq's Llama 3.1) is passed by for a question with images
    /// instead of being sent parts it would refuse.
    #[serde(default = "default_images")]
    pub images: bool,
    /// What its model costs, US dollars per million prompt tokens (for the
    /// audit's cost report; unset means unknown, not free).
    #[serde(default)]
    pub price_input_per_mtok: Option<f64>,
    /// US dollars per million completion tokens.
    #[serde(default)]
    pub price_output_per_mtok: Option<f64>,
    /// The API key, filled in from `api_key_env` at load time; never logged.
    #[serde(skip)]
    pub api_key: Option<Secret>,
}

impl ProviderConfig {
    /// Its price, when both halves are configured.
    pub fn price(&self) -> Option<crate::shared::audit::Price> {
        Some(crate::shared::audit::Price {
            input_per_mtok: self.price_input_per_mtok?,
            output_per_mtok: self.price_output_per_mtok?,
        })
    }
}

fn default_max_tokens() -> u32 {
    512
}

fn default_failure_threshold() -> u32 {
    3
}

fn default_open_for_ms() -> u64 {
    4_000
}

fn default_max_open_for_ms() -> u64 {
    12_000
}

fn default_probe() -> ProbeMode {
    ProbeMode::Background
}

fn default_retries() -> u32 {
    1
}

fn default_images() -> bool {
    true
}

impl ProviderConfig {
    /// How this provider continues a partial answer: as configured, or its
    /// protocol's default.
    pub fn continuation(&self) -> ContinuationStyle {
        self.continuation
            .unwrap_or_else(|| ContinuationStyle::default_for(self.protocol))
    }

    /// A provider with default limits, for tests and examples.
    pub fn new(name: &str, protocol: Protocol, model: &str, base_url: &str) -> Self {
        Self {
            name: name.into(),
            protocol,
            model: model.into(),
            base_url: base_url.into(),
            api_key_env: None,
            system_template: None,
            max_tokens: default_max_tokens(),
            failure_threshold: default_failure_threshold(),
            open_for_ms: default_open_for_ms(),
            max_open_for_ms: default_max_open_for_ms(),
            probe: default_probe(),
            continuation: None,
            retries: default_retries(),
            first_byte_timeout_ms: None,
            first_token_timeout_ms: None,
            stall_timeout_ms: None,
            attempt_timeout_ms: None,
            images: default_images(),
            price_input_per_mtok: None,
            price_output_per_mtok: None,
            api_key: None,
        }
    }
}

/// Why a configuration could not be loaded.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    /// The file could not be read.
    #[error("cannot read config file {path}: {source}")]
    Read {
        /// The file.
        path: String,
        /// Why.
        source: std::io::Error,
    },
    /// The file is not valid TOML for this struct.
    #[error("invalid config file {path}: {source}")]
    Parse {
        /// The file.
        path: String,
        /// Where and why.
        source: toml::de::Error,
    },
    /// An environment override could not be parsed.
    #[error("invalid value for {name}: {value:?}")]
    Env {
        /// The variable.
        name: &'static str,
        /// Its value.
        value: String,
    },
    /// The values parse but do not make a usable gateway.
    #[error("invalid config: {0}")]
    Invalid(String),
}

impl Config {
    /// Parses a configuration from TOML text, without environment overrides.
    pub fn from_toml(text: &str, origin: &str) -> Result<Self, ConfigError> {
        let config: Config = toml::from_str(text).map_err(|source| ConfigError::Parse {
            path: origin.to_string(),
            source,
        })?;
        config.validate()?;
        Ok(config)
    }

    /// Loads the file at `path`, then applies `CHAOSAI_*` overrides and reads API keys.
    pub fn load(path: &Path) -> Result<Self, ConfigError> {
        let origin = path.display().to_string();
        let text = std::fs::read_to_string(path).map_err(|source| ConfigError::Read {
            path: origin.clone(),
            source,
        })?;
        let mut config = Self::from_toml(&text, &origin)?;
        config.apply_env(|name| std::env::var(name).ok())?;
        Ok(config)
    }

    /// Applies environment overrides through `get`, so tests can pass their own environment.
    pub fn apply_env(&mut self, get: impl Fn(&str) -> Option<String>) -> Result<(), ConfigError> {
        fn parse<T: std::str::FromStr>(
            name: &'static str,
            value: String,
        ) -> Result<T, ConfigError> {
            value.parse().map_err(|_| ConfigError::Env { name, value })
        }
        if let Some(v) = get("CHAOSAI_ADDR") {
            self.server.addr = parse("CHAOSAI_ADDR", v)?;
        }
        if let Some(v) = get("CHAOSAI_ADMIN_TOKEN").filter(|t| !t.trim().is_empty()) {
            self.server.admin_token = Some(Secret::new(v));
        }
        if let Some(v) = get("CHAOSAI_API_ORIGINS") {
            self.server.api_origins = v
                .split(',')
                .map(str::trim)
                .filter(|o| !o.is_empty())
                .map(String::from)
                .collect();
        }
        if let Some(v) = get("CHAOSAI_DATABASE_URL") {
            self.database.url = v;
        }
        if let Some(v) = get("CHAOSAI_REDIS_URL").filter(|v| !v.trim().is_empty()) {
            self.cluster.redis_url = Some(v);
        }
        if let Some(v) = get("CHAOSAI_REPLICA").filter(|v| !v.trim().is_empty()) {
            self.cluster.replica = Some(v);
        }
        if let Some(v) = get("CHAOSAI_SIMULATE") {
            self.gateway.simulate = match v.as_str() {
                "auto" => SimulateMode::Auto,
                "always" => SimulateMode::Always,
                _ => {
                    return Err(ConfigError::Env {
                        name: "CHAOSAI_SIMULATE",
                        value: v,
                    })
                }
            };
        }
        if let Some(v) = get("CHAOSAI_SIM_CHUNK_DELAY_MS") {
            let ms: u64 = parse("CHAOSAI_SIM_CHUNK_DELAY_MS", v)?;
            self.sim.chunk_delay_min_ms = ms;
            self.sim.chunk_delay_max_ms = ms;
        }
        if let Some(v) = get("CHAOSAI_CACHE") {
            self.cache.enabled = match v.as_str() {
                "on" => true,
                "off" => false,
                _ => {
                    return Err(ConfigError::Env {
                        name: "CHAOSAI_CACHE",
                        value: v,
                    })
                }
            };
        }
        if let Some(v) = get("CHAOSAI_SHUTDOWN_GRACE_MS") {
            self.server.shutdown_grace_ms = parse("CHAOSAI_SHUTDOWN_GRACE_MS", v)?;
        }
        if let Some(v) = get("CHAOSAI_BREAKER_OPEN_FOR_MS") {
            let ms: u64 = parse("CHAOSAI_BREAKER_OPEN_FOR_MS", v)?;
            for provider in &mut self.providers {
                provider.open_for_ms = ms;
            }
        }
        for provider in &mut self.providers {
            provider.api_key = provider
                .api_key_env
                .as_deref()
                .and_then(&get)
                .filter(|key| !key.trim().is_empty())
                .map(Secret::new);
        }
        self.validate()
    }

    fn validate(&self) -> Result<(), ConfigError> {
        // A browser's Origin is `scheme://host[:port]` and nothing more: an entry
        // with a path, or without a scheme, would never match and admit nobody.
        for origin in &self.server.api_origins {
            let origin = origin.trim_end_matches('/');
            let host = origin
                .strip_prefix("https://")
                .or_else(|| origin.strip_prefix("http://"));
            let whole = origin == "*"
                || host.is_some_and(|h| !h.is_empty() && !h.contains(['/', '?', '#', '@']));
            if !whole {
                return Err(ConfigError::Invalid(format!(
                    "server.api_origins: {origin:?} is not an origin such as https://shop.example or *"
                )));
            }
        }
        if self.providers.is_empty() {
            return Err(ConfigError::Invalid(
                "at least one provider is required".into(),
            ));
        }
        let server = &self.server;
        if server.conversation_body_limit_bytes < server.body_limit_bytes
            || server.conversation_body_limit_bytes > server.body_budget_bytes
            || server.conversation_body_limit_bytes > u32::MAX as usize
        {
            return Err(ConfigError::Invalid(format!(
                "server.conversation_body_limit_bytes ({}) must lie between body_limit_bytes ({}) and body_budget_bytes ({}), and below 4 GiB",
                server.conversation_body_limit_bytes, server.body_limit_bytes, server.body_budget_bytes
            )));
        }
        let mut names = std::collections::HashSet::new();
        for p in &self.providers {
            if p.name.is_empty()
                || p.name == "chaosai"
                || crate::shared::Route::is_reserved(&p.name)
            {
                return Err(ConfigError::Invalid(format!(
                    "provider name {:?} is reserved or empty",
                    p.name
                )));
            }
            if p.protocol == Protocol::Anthropic
                && !matches!(
                    p.continuation(),
                    ContinuationStyle::None | ContinuationStyle::Prefill
                )
            {
                return Err(ConfigError::Invalid(format!(
                    "provider {:?}: the Anthropic protocol continues by prefill or not at all",
                    p.name
                )));
            }
            let own = [
                ("first_byte_timeout_ms", p.first_byte_timeout_ms),
                ("first_token_timeout_ms", p.first_token_timeout_ms),
                ("stall_timeout_ms", p.stall_timeout_ms),
                ("attempt_timeout_ms", p.attempt_timeout_ms),
            ];
            if let Some((field, _)) = own.iter().find(|(_, ms)| *ms == Some(0)) {
                return Err(ConfigError::Invalid(format!(
                    "provider {:?}: {field} of 0 lets nothing through; leave it out for the gateway's",
                    p.name
                )));
            }
            if !names.insert(p.name.as_str()) {
                return Err(ConfigError::Invalid(format!(
                    "duplicate provider name {:?}",
                    p.name
                )));
            }
        }
        if let Some(token) = &self.server.admin_token {
            if token.expose().chars().count() < MIN_TOKEN_CHARS {
                return Err(ConfigError::Invalid(format!(
                    "CHAOSAI_ADMIN_TOKEN must be at least {MIN_TOKEN_CHARS} characters"
                )));
            }
        }
        let mut clients = std::collections::HashSet::new();
        for c in &self.clients {
            let hex = c.key_sha256.len() == 64
                && c.key_sha256
                    .bytes()
                    .all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b));
            if !hex {
                return Err(ConfigError::Invalid(format!(
                    "client {:?}: key_sha256 must be 64 lower-case hex digits",
                    c.name
                )));
            }
            if c.name.is_empty() || c.tenant.is_empty() || c.tenant.len() > 128 {
                return Err(ConfigError::Invalid(format!(
                    "client {:?}: name and tenant (at most 128 characters) are required",
                    c.name
                )));
            }
            if c.rpm == Some(0) || c.tpm == Some(0) {
                return Err(ConfigError::Invalid(format!(
                    "client {:?}: a limit of 0 lets nothing through; leave it out for none",
                    c.name
                )));
            }
            if !clients.insert(c.name.as_str()) {
                return Err(ConfigError::Invalid(format!(
                    "duplicate client name {:?}",
                    c.name
                )));
            }
        }
        if !(0.0..=1.0).contains(&self.cache.threshold) {
            return Err(ConfigError::Invalid(
                "cache.threshold must be between 0 and 1".into(),
            ));
        }
        if !(1..=8).contains(&self.embedder.sessions) {
            return Err(ConfigError::Invalid(
                "embedder.sessions must be from 1 to 8".into(),
            ));
        }
        if self.sim.chunk_delay_min_ms > self.sim.chunk_delay_max_ms {
            return Err(ConfigError::Invalid(
                "sim.chunk_delay_min_ms exceeds sim.chunk_delay_max_ms".into(),
            ));
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const MINIMAL: &str = r#"
        [[providers]]
        name = "gpt"
        protocol = "openai"
        model = "gpt-4o-mini"
        base_url = "https://api.openai.com/v1"
        api_key_env = "OPENAI_API_KEY"
    "#;

    #[test]
    fn env_overrides_and_keys_come_from_the_given_environment() {
        let mut config = Config::from_toml(MINIMAL, "test").unwrap();
        config
            .apply_env(|name| match name {
                "CHAOSAI_ADDR" => Some("127.0.0.1:0".into()),
                "CHAOSAI_SIMULATE" => Some("always".into()),
                "OPENAI_API_KEY" => Some("sk-test".into()),
                _ => None,
            })
            .unwrap();
        assert_eq!(config.server.addr.port(), 0);
        assert_eq!(config.gateway.simulate, SimulateMode::Always);
        let key = config.providers[0].api_key.as_ref().unwrap();
        assert_eq!(key.expose(), "sk-test");
        assert!(
            !format!("{config:?}").contains("sk-test"),
            "Debug never prints a key"
        );
    }

    #[test]
    fn api_origins_come_from_the_environment_and_must_be_origins() {
        let mut config = Config::from_toml(MINIMAL, "test").unwrap();
        config
            .apply_env(|name| {
                (name == "CHAOSAI_API_ORIGINS")
                    .then(|| " https://shop.example, http://localhost:5173/ ,".into())
            })
            .unwrap();
        assert_eq!(
            config.server.api_origins,
            ["https://shop.example", "http://localhost:5173/"]
        );
        for bad in [
            "shop.example",
            "https://shop.example/chat",
            "https://",
            "ftp://x",
        ] {
            let text = format!("[server]\napi_origins = [{bad:?}]\n{MINIMAL}");
            let err = Config::from_toml(&text, "test").unwrap_err();
            assert!(err.to_string().contains("api_origins"), "{bad}: {err}");
        }
    }

    #[test]
    fn rejects_duplicate_names_and_bad_overrides() {
        let doubled = format!("{MINIMAL}\n{MINIMAL}");
        assert!(matches!(
            Config::from_toml(&doubled, "test"),
            Err(ConfigError::Invalid(_))
        ));
        let mut config = Config::from_toml(MINIMAL, "test").unwrap();
        let err = config
            .apply_env(|name| (name == "CHAOSAI_SIMULATE").then(|| "sometimes".into()))
            .unwrap_err();
        assert!(err.to_string().contains("CHAOSAI_SIMULATE"));
    }

    #[test]
    fn a_providers_own_limits_replace_the_gateways_and_zero_is_refused() {
        let text = MINIMAL.replace(
            "base_url = \"https://api.openai.com/v1\"",
            "base_url = \"https://api.openai.com/v1\"\nfirst_token_timeout_ms = 30000",
        );
        let config = Config::from_toml(&text, "test").unwrap();
        assert_eq!(config.providers[0].first_token_timeout_ms, Some(30_000));
        assert_eq!(config.providers[0].attempt_timeout_ms, None);
        let zero = text.replace("30000", "0");
        let err = Config::from_toml(&zero, "test").unwrap_err();
        assert!(err.to_string().contains("first_token_timeout_ms"), "{err}");
    }

    #[test]
    fn embedder_sessions_are_bounded() {
        for sessions in [0, 9] {
            let text = format!("[embedder]\nsessions = {sessions}\n{MINIMAL}");
            let err = Config::from_toml(&text, "test").unwrap_err();
            assert!(err.to_string().contains("embedder.sessions"), "{err}");
        }
        let text = format!("[embedder]\nsessions = 1\n{MINIMAL}");
        assert_eq!(
            Config::from_toml(&text, "test").unwrap().embedder.sessions,
            1
        );
    }

    #[test]
    fn conversation_bodies_must_fit_between_the_small_limit_and_the_budget() {
        for (limit, budget) in [(1024, 1 << 20), (8 << 20, 4 << 20)] {
            let text = format!(
                "[server]\nbody_limit_bytes = 65536\nconversation_body_limit_bytes = {limit}\nbody_budget_bytes = {budget}\n{MINIMAL}"
            );
            let err = Config::from_toml(&text, "test").unwrap_err();
            assert!(
                err.to_string().contains("conversation_body_limit_bytes"),
                "{err}"
            );
        }
        let config = Config::from_toml(MINIMAL, "test").unwrap();
        assert_eq!(config.server.conversation_body_limit_bytes, 20 << 20);
        assert_eq!(config.server.body_budget_bytes, 32 << 20);
    }

    #[test]
    fn the_shipped_config_parses() {
        let text = include_str!("../config/chaosai.toml");
        let config = Config::from_toml(text, "config/chaosai.toml").unwrap();
        assert_eq!(config.providers.len(), 3);
    }
}
