//! The store: the engine and its pool ([`db`]), migrations, the audit writer,
//! the read queries, the client keys made through the admin API, and the
//! responses the Responses API keeps.
//!
//! SQLite (the embedded default) runs in WAL mode with `synchronous=NORMAL` and
//! a busy timeout, so readers never block the writer and a crash loses at most
//! the last commit. PostgreSQL holds one audit for every replica.

pub mod audit;
mod clients;
mod db;
mod history;
pub mod queries;
mod responses;

use crate::shared::{AttemptSummary, RequestStatus, Route, Surface, Usage, UsageSource};
pub use db::{nul_free, redacted, ConnectError, Db, Engine};
pub use responses::StoredResponse;

/// Why the store could not be opened or written.
#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    /// The database could not be opened or queried.
    #[error("database error: {0}")]
    Database(#[from] sqlx::Error),
    /// The database could not be reached or migrated at start-up.
    #[error(transparent)]
    Connect(#[from] ConnectError),
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
    /// The conversation it was opened for, if the request named one: a
    /// customer who writes again in it while the ticket is open keeps it.
    pub conversation_id: Option<String>,
}

/// Handle to the database; cheap to clone.
#[derive(Clone)]
pub struct Store {
    /// Connection pool, on whichever engine the URL named.
    db: Db,
}

impl Store {
    /// Opens (creating if needed) the database at `url` (`sqlite://…` or
    /// `postgres://…`) and applies pending migrations.
    pub async fn open(url: &str) -> Result<Self, StoreError> {
        Ok(Self {
            db: Db::connect(url).await?,
        })
    }

    /// The pool, for queries that belong to other modules.
    pub fn db(&self) -> &Db {
        &self.db
    }

    /// Stores a ticket; awaited, because the customer is told its number.
    pub async fn insert_ticket(&self, ticket: &Ticket) -> Result<(), StoreError> {
        crate::with_db!(&self.db, pool => sqlx::query(
            "INSERT INTO tickets (id, created_at_ms, request_id, question, conversation_json, failure_json, \
             conversation_id) VALUES ($1, $2, $3, $4, $5, $6, $7)",
        )
        .bind(&ticket.id)
        .bind(ticket.created_at_ms)
        .bind(&ticket.request_id)
        .bind(nul_free(&ticket.question))
        .bind(&ticket.conversation_json)
        .bind(&ticket.failure_json)
        .bind(ticket.conversation_id.as_deref().map(nul_free))
        .execute(pool)
        .await.map(|done| done.rows_affected()))?;
        Ok(())
    }
}
