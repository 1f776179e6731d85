//! The SQLite store: pool, migrations, the audit writer, the read queries, and
//! the client keys made through the admin API.
//!
//! SQLite runs in WAL mode with `synchronous=NORMAL` and a busy timeout, so
//! readers never block the writer and a crash loses at most the last commit.

pub mod audit;
mod clients;
mod history;
pub mod queries;

use crate::shared::{AttemptSummary, RequestStatus, Route, Surface, Usage, UsageSource};
use sqlx::sqlite::{SqliteConnectOptions, SqliteJournalMode, SqlitePoolOptions, SqliteSynchronous};
use sqlx::SqlitePool;
use std::str::FromStr;
use std::time::Duration;

/// Why the store could not be opened or written.
#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    /// The database could not be opened or queried.
    #[error("database error: {0}")]
    Database(#[from] sqlx::Error),
    /// A migration failed.
    #[error("migration failed: {0}")]
    Migrate(#[from] sqlx::migrate::MigrateError),
}

/// One finished request, as the audit keeps it: metadata only, no customer text.
#[derive(Clone, Debug)]
pub struct RequestRecord {
    /// Request id (also sent to the caller as the completion id).
    pub id: String,
    /// Unix time in milliseconds when the request arrived.
    pub created_at_ms: i64,
    /// Where it came from.
    pub surface: Surface,
    /// Whether the answer was streamed.
    pub stream: bool,
    /// Who served it, if anyone did.
    pub served_by: Option<Route>,
    /// How it ended.
    pub status: RequestStatus,
    /// Total time in milliseconds.
    pub latency_ms: u64,
    /// Time spent in the gateway itself, in milliseconds.
    pub overhead_ms: f64,
    /// Size of the customer's last message, in characters.
    pub question_chars: usize,
    /// Size of the answer sent, in characters.
    pub answer_chars: usize,
    /// Every provider attempt, in order.
    pub attempts: Vec<AttemptSummary>,
    /// The chat page's conversation, when the request came from it.
    pub conversation_id: Option<String>,
    /// Similarity of the cache entry that answered, when the cache did.
    pub cache_similarity: Option<f64>,
    /// Whose request it was (a client key's tenant, or the default).
    pub tenant: String,
    /// What the answer cost, summed over its sources.
    pub usage: Usage,
    /// Who counted it; `None` when nothing answered.
    pub usage_source: Option<UsageSource>,
}

/// A ticket for a human agent.
#[derive(Clone, Debug)]
pub struct Ticket {
    /// Ticket id shown to the customer.
    pub id: String,
    /// Unix time in milliseconds.
    pub created_at_ms: i64,
    /// The request that opened it.
    pub request_id: String,
    /// The customer's last message.
    pub question: String,
    /// The whole conversation, as a JSON array of turns.
    pub conversation_json: String,
    /// The attempts that failed, as a JSON array.
    pub failure_json: String,
}

/// Handle to the database; cheap to clone.
#[derive(Clone)]
pub struct Store {
    /// Connection pool.
    pool: SqlitePool,
}

impl Store {
    /// Opens (creating if needed) the database at `url` and applies pending migrations.
    pub async fn open(url: &str) -> Result<Self, StoreError> {
        if let Some(path) = url
            .strip_prefix("sqlite://")
            .or_else(|| url.strip_prefix("sqlite:"))
        {
            let path = path.split('?').next().unwrap_or(path);
            if let Some(parent) = std::path::Path::new(path).parent() {
                if !parent.as_os_str().is_empty() {
                    let _ = std::fs::create_dir_all(parent);
                }
            }
        }
        let options = SqliteConnectOptions::from_str(url)?
            .create_if_missing(true)
            .journal_mode(SqliteJournalMode::Wal)
            .synchronous(SqliteSynchronous::Normal)
            .busy_timeout(Duration::from_secs(5))
            .foreign_keys(true);
        let pool = SqlitePoolOptions::new()
            .max_connections(4)
            .connect_with(options)
            .await?;
        sqlx::migrate!("./migrations").run(&pool).await?;
        Ok(Self { pool })
    }

    /// The pool, for queries that belong to other modules.
    pub fn pool(&self) -> &SqlitePool {
        &self.pool
    }

    /// Stores a ticket; awaited, because the customer is told its number.
    pub async fn insert_ticket(&self, ticket: &Ticket) -> Result<(), StoreError> {
        sqlx::query(
            "INSERT INTO tickets (id, created_at_ms, request_id, question, conversation_json, failure_json) \
             VALUES (?, ?, ?, ?, ?, ?)",
        )
        .bind(&ticket.id)
        .bind(ticket.created_at_ms)
        .bind(&ticket.request_id)
        .bind(&ticket.question)
        .bind(&ticket.conversation_json)
        .bind(&ticket.failure_json)
        .execute(&self.pool)
        .await?;
        Ok(())
    }
}
