//! The two engines a store can run on, and the one macro that runs the same
//! sqlx code on either.
//!
//! SQLite is the embedded default (one file, nothing to run); PostgreSQL is for
//! replicas that share one audit. The store's SQL is written once, in the subset
//! both engines speak (`$n` placeholders, `ON CONFLICT DO NOTHING`, `rowid`,
//! which the PostgreSQL schema declares as an identity column), and
//! [`with_db!`](crate::with_db) expands it once per engine, so each runs on its
//! native driver rather than through `sqlx::Any`'s lowest common denominator.

use sqlx::postgres::{PgConnectOptions, PgPoolOptions};
use sqlx::sqlite::{SqliteConnectOptions, SqliteJournalMode, SqlitePoolOptions, SqliteSynchronous};
use sqlx::{PgPool, SqlitePool};
use std::str::FromStr;
use std::time::Duration;

/// Which engine a store runs on.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Engine {
    /// One local file (`sqlite://…`).
    Sqlite,
    /// A PostgreSQL server (`postgres://…`), shared by replicas.
    Postgres,
}

impl Engine {
    /// The engine a connection URL names, if it names one this build knows.
    pub fn of_url(url: &str) -> Option<Self> {
        let scheme = url.split(':').next().unwrap_or_default();
        match scheme {
            "sqlite" => Some(Self::Sqlite),
            "postgres" | "postgresql" => Some(Self::Postgres),
            _ => None,
        }
    }

    /// Lower-case name, for logs, `/healthz` and metrics.
    pub fn label(self) -> &'static str {
        match self {
            Self::Sqlite => "sqlite",
            Self::Postgres => "postgres",
        }
    }
}

/// A connection pool on one of the engines; cheap to clone.
#[derive(Clone, Debug)]
pub enum Db {
    /// The embedded default.
    Sqlite(SqlitePool),
    /// Shared by replicas.
    Postgres(PgPool),
}

/// Runs `$body` with `$pool` bound to the native pool of whichever engine `$db`
/// is, so one piece of sqlx code serves both. The body is compiled once per
/// engine; it must use SQL both engines accept.
#[macro_export]
macro_rules! with_db {
    ($db:expr, $pool:ident => $body:expr) => {
        match $db {
            $crate::store::Db::Sqlite($pool) => $body,
            $crate::store::Db::Postgres($pool) => $body,
        }
    };
}

/// Why a database URL could not be used.
#[derive(Debug, thiserror::Error)]
pub enum ConnectError {
    /// The URL names no engine this build supports.
    #[error("database URL {0:?} is neither sqlite://… nor postgres://…")]
    UnknownEngine(String),
    /// The engine refused the connection or the URL's options.
    #[error("cannot connect to {engine} at {url}: {source}")]
    Connect {
        /// The engine.
        engine: &'static str,
        /// The URL with any password removed.
        url: String,
        /// The driver's error.
        source: sqlx::Error,
    },
    /// A migration failed.
    #[error("migrating {engine}: {0}", engine = .1)]
    Migrate(#[source] sqlx::migrate::MigrateError, &'static str),
}

/// `text` as every engine can hold it. PostgreSQL's `text` refuses U+0000, which
/// JSON lets any customer or provider send: left in, it got the row refused and set
/// aside (a request's record, a chat turn, a ticket) by anyone who typed `\u0000`.
/// It becomes U+FFFD, on SQLite too, so both engines keep the same text.
pub fn nul_free(text: &str) -> std::borrow::Cow<'_, str> {
    if text.contains('\0') {
        text.replace('\0', "\u{FFFD}").into()
    } else {
        text.into()
    }
}

/// `url` with its password (if any) replaced, for logs.
pub fn redacted(url: &str) -> String {
    match reqwest::Url::parse(url) {
        Ok(mut parsed) if parsed.password().is_some() => {
            let _ = parsed.set_password(Some("***"));
            parsed.to_string()
        }
        _ => url.to_string(),
    }
}

impl Db {
    /// Connects to `url` and applies that engine's pending migrations.
    pub async fn connect(url: &str) -> Result<Self, ConnectError> {
        let engine =
            Engine::of_url(url).ok_or_else(|| ConnectError::UnknownEngine(redacted(url)))?;
        let failed = |source| ConnectError::Connect {
            engine: engine.label(),
            url: redacted(url),
            source,
        };
        let db = match engine {
            Engine::Sqlite => {
                create_parent_dir(url);
                let options = SqliteConnectOptions::from_str(url)
                    .map_err(failed)?
                    .create_if_missing(true)
                    .journal_mode(SqliteJournalMode::Wal)
                    .synchronous(SqliteSynchronous::Normal)
                    .busy_timeout(Duration::from_secs(5))
                    .foreign_keys(true);
                let pool = SqlitePoolOptions::new()
                    .max_connections(4)
                    .connect_with(options)
                    .await
                    .map_err(failed)?;
                sqlx::migrate!("./migrations/sqlite")
                    .run(&pool)
                    .await
                    .map_err(|e| ConnectError::Migrate(e, "sqlite"))?;
                Self::Sqlite(pool)
            }
            Engine::Postgres => {
                let options = PgConnectOptions::from_str(url).map_err(failed)?;
                // Short acquire timeout: while PostgreSQL is down, a reader gets an
                // error fast and the audit writer's retry loop does the waiting.
                let pool = PgPoolOptions::new()
                    .max_connections(8)
                    .acquire_timeout(Duration::from_secs(3))
                    .connect_with(options)
                    .await
                    .map_err(failed)?;
                sqlx::migrate!("./migrations/postgres")
                    .run(&pool)
                    .await
                    .map_err(|e| ConnectError::Migrate(e, "postgres"))?;
                Self::Postgres(pool)
            }
        };
        Ok(db)
    }

    /// The engine this pool runs on.
    pub fn engine(&self) -> Engine {
        match self {
            Self::Sqlite(_) => Engine::Sqlite,
            Self::Postgres(_) => Engine::Postgres,
        }
    }

    /// The SQLite pool, when this is one: for SQLite-only tools (triggers in
    /// tests, the file's own pragmas).
    pub fn as_sqlite(&self) -> Option<&SqlitePool> {
        match self {
            Self::Sqlite(pool) => Some(pool),
            Self::Postgres(_) => None,
        }
    }

    /// Whether the database answers a trivial query now.
    pub async fn ping(&self) -> bool {
        crate::with_db!(self, pool => sqlx::query("SELECT 1").execute(pool).await.is_ok())
    }
}

fn create_parent_dir(url: &str) {
    let Some(path) = url
        .strip_prefix("sqlite://")
        .or_else(|| url.strip_prefix("sqlite:"))
    else {
        return;
    };
    let path = path.split('?').next().unwrap_or(path);
    if let Some(parent) = std::path::Path::new(path).parent() {
        if !parent.as_os_str().is_empty() {
            let _ = std::fs::create_dir_all(parent);
        }
    }
}
