//! The semantic cache: a question similar enough to one already answered, in the
//! same scope, is answered at once.
//!
//! Lookup order: an exact repeat (normalised text, same scope) costs no
//! embedding; otherwise the question is embedded off the executor and the HNSW
//! index is searched. A candidate must be in the same scope, unexpired, at or
//! above the threshold, and pass every guard. Entries persist in SQLite and the
//! index is rebuilt from them at start-up. Without the embedding model the cache
//! still answers exact repeats.

use super::batcher::{BatchCounters, BatchError, BatchSettings, Batcher};
use super::guard;
use super::index::VectorIndex;
use super::Embedder;
use crate::clock::SharedClock;
use crate::shared::ChatTurn;
use crate::store::Db;
use serde::Serialize;
use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, RwLock};
use std::time::Duration;

/// A vector and the entry id it stands for, as the graph takes them.
type Point = (Vec<f32>, usize);

/// An entry's id and stored embedding, as the database returns them.
type StoredVector = (i64, Option<Vec<u8>>);

/// How the cache behaves.
#[derive(Clone, Copy, Debug)]
pub struct CacheSettings {
    /// Lowest cosine similarity that may answer.
    pub threshold: f32,
    /// Age after which an entry no longer answers.
    pub ttl: Duration,
    /// Most entries kept; the least recently hit go first.
    pub max_entries: usize,
    /// Embeddings running or waiting at most; a lookup beyond that skips the
    /// cache (counted as `bypassed_busy`) rather than queue behind the model.
    pub max_embeddings: usize,
}

/// A cached answer that may answer the question asked.
#[derive(Clone, Debug, PartialEq)]
pub struct Hit {
    /// The entry's id.
    pub id: i64,
    /// The answer.
    pub answer: String,
    /// Cosine similarity of the two questions (1 for an exact repeat).
    pub similarity: f32,
}

/// One entry, as the admin API lists it.
#[derive(Clone, Debug, Serialize)]
pub struct EntryView {
    /// Entry id.
    pub id: i64,
    /// The scope key.
    pub scope: String,
    /// The question it answers.
    pub question: String,
    /// The answer.
    pub answer: String,
    /// Unix time in milliseconds.
    pub created_at_ms: i64,
    /// Times it answered.
    pub hits: u64,
    /// When it last answered (Unix ms), 0 if never.
    pub last_hit_ms: i64,
}

/// Lookup counts for `/metrics`.
#[derive(Default, Debug)]
pub struct CacheCounters {
    /// Answered from the cache.
    pub hits: AtomicU64,
    /// Nothing close enough.
    pub misses: AtomicU64,
    /// A close candidate that a guard refused.
    pub refused: AtomicU64,
    /// Answers stored.
    pub stored: AtomicU64,
    /// Answers offered but kept out (personal data, empty, the model busy).
    pub not_stored: AtomicU64,
    /// Lookups that skipped the similarity search because the model was busy.
    pub bypassed_busy: AtomicU64,
}

/// A row of `cache_entries`.
#[derive(sqlx::FromRow)]
struct StoredEntry {
    id: i64,
    scope: String,
    question: String,
    normalized: String,
    answer: String,
    embedding: Option<Vec<u8>>,
    created_at_ms: i64,
    hits: i64,
    last_hit_ms: i64,
}

struct Entry {
    view: EntryView,
    normalized: String,
    dirty: bool,
}

/// The cache.
pub struct SemanticCache {
    /// Threshold, TTL, size.
    settings: CacheSettings,
    /// The sentence embedder behind its micro-batcher; `None` degrades to
    /// exact matches.
    batcher: Option<Batcher>,
    /// Vectors of entries by id. HNSW cannot delete: removed and expired entries
    /// stay in the graph until it is rebuilt (see [`SemanticCache::maintain`]).
    index: RwLock<Arc<VectorIndex>>,
    /// While a rebuild runs: the vectors stored meanwhile, for the new graph.
    rebuilding: Mutex<Option<Vec<Point>>>,
    /// Live entries by id.
    entries: RwLock<HashMap<i64, Entry>>,
    /// `(scope, normalised question)` → id, for exact repeats.
    exact: RwLock<HashMap<(String, String), i64>>,
    /// Where entries persist.
    db: Db,
    /// Lookup counts.
    counters: CacheCounters,
    /// The time TTLs and hit times are measured by.
    clock: SharedClock,
    /// Told the id of every entry stored here, so other replicas sharing the
    /// table can index it ([`SemanticCache::adopt`]).
    on_stored: std::sync::OnceLock<Box<dyn Fn(i64) + Send + Sync>>,
    /// Told what an admin removed here, so other replicas sharing the table stop
    /// answering with it ([`SemanticCache::forget`]).
    on_removed: std::sync::OnceLock<Box<dyn Fn(Removed) + Send + Sync>>,
}

/// What an admin removed from the cache.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Removed {
    /// One entry, by id.
    Entry(i64),
    /// Every entry.
    All,
}

/// Why the cache could not start.
#[derive(Debug, thiserror::Error)]
pub enum CacheError {
    /// The entries could not be read.
    #[error("cache store: {0}")]
    Database(#[from] sqlx::Error),
}

/// A stable 64-bit FNV-1a hash, hex: scope keys persist across restarts and
/// upgrades, which std's hasher does not promise.
fn fnv(parts: &[&str]) -> String {
    let mut hash: u64 = 0xcbf29ce484222325;
    for part in parts {
        for byte in part.bytes().chain(std::iter::once(0xff)) {
            hash ^= u64::from(byte);
            hash = hash.wrapping_mul(0x100000001b3);
        }
    }
    format!("{hash:016x}")
}

/// The scope of a question: the tenant, the model it was asked of, the caller's
/// system prompt and everything said before it. An answer never crosses scopes,
/// and never answers the last message alone out of its conversation.
pub fn scope(tenant: &str, model: &str, system: &str, before: &[ChatTurn]) -> String {
    let history: Vec<String> = before
        .iter()
        .map(|t| format!("{:?}:{}", t.role, guard::normalize(&t.content)))
        .collect();
    let mut parts = vec![tenant, model, system];
    parts.extend(history.iter().map(String::as_str));
    fnv(&parts)
}

fn to_blob(vector: &[f32]) -> Vec<u8> {
    vector.iter().flat_map(|v| v.to_le_bytes()).collect()
}

fn from_blob(blob: &[u8]) -> Vec<f32> {
    blob.chunks_exact(4)
        .map(|c| f32::from_le_bytes([c[0], c[1], c[2], c[3]]))
        .collect()
}

impl SemanticCache {
    /// Opens the cache over `pool`, loading unexpired entries into the index.
    pub async fn open(
        db: Db,
        settings: CacheSettings,
        embedder: Option<Arc<Embedder>>,
        clock: SharedClock,
    ) -> Result<Self, CacheError> {
        let oldest = clock.unix_ms() - settings.ttl.as_millis() as i64;
        crate::with_db!(&db, pool => sqlx::query("DELETE FROM cache_entries WHERE created_at_ms < $1")
            .bind(oldest)
            .execute(pool)
            .await.map(|done| done.rows_affected()))?;
        let rows: Vec<StoredEntry> = crate::with_db!(&db, pool => sqlx::query_as(
            "SELECT id, scope, question, normalized, answer, embedding, created_at_ms, hits, last_hit_ms \
             FROM cache_entries ORDER BY id",
        )
        .fetch_all(pool)
        .await)?;
        let mut vectors = Vec::new();
        let mut views = Vec::new();
        for row in rows {
            if let Some(blob) = row
                .embedding
                .filter(|b| b.len() == super::embedder::DIMENSIONS * 4)
            {
                vectors.push((from_blob(&blob), row.id as usize));
            }
            let view = EntryView {
                id: row.id,
                scope: row.scope,
                question: row.question,
                answer: row.answer,
                created_at_ms: row.created_at_ms,
                hits: row.hits.max(0) as u64,
                last_hit_ms: row.last_hit_ms,
            };
            views.push((view, row.normalized));
        }
        // Rebuilding the graph is CPU work: keep it off the executor.
        let capacity = settings.max_entries.max(views.len());
        let index = build_index(capacity, vectors).await;
        let cache = Self {
            batcher: embedder.map(|embedder| {
                let batch = BatchSettings {
                    max_waiting: settings.max_embeddings.max(1),
                    ..Default::default()
                };
                Batcher::start(embedder, batch)
            }),
            settings,
            index: RwLock::new(Arc::new(index)),
            rebuilding: Mutex::new(None),
            entries: RwLock::new(HashMap::new()),
            exact: RwLock::new(HashMap::new()),
            db,
            counters: CacheCounters::default(),
            clock,
            on_stored: std::sync::OnceLock::new(),
            on_removed: std::sync::OnceLock::new(),
        };
        for (view, normalized) in views {
            cache.add_entry(view, normalized);
        }
        tracing::info!(
            entries = cache.len(),
            semantic = cache.batcher.is_some(),
            "cache loaded"
        );
        Ok(cache)
    }

    fn add_entry(&self, view: EntryView, normalized: String) {
        self.exact
            .write()
            .unwrap_or_else(|e| e.into_inner())
            .insert((view.scope.clone(), normalized.clone()), view.id);
        self.entries
            .write()
            .unwrap_or_else(|e| e.into_inner())
            .insert(
                view.id,
                Entry {
                    view,
                    normalized,
                    dirty: false,
                },
            );
    }

    /// Live entries.
    pub fn len(&self) -> usize {
        self.entries.read().unwrap_or_else(|e| e.into_inner()).len()
    }

    /// Whether the cache is empty.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Whether similar (not only identical) questions can hit.
    pub fn semantic(&self) -> bool {
        self.batcher.is_some()
    }

    /// Lookup counts.
    pub fn counters(&self) -> &CacheCounters {
        &self.counters
    }

    /// Share of lookups answered from the cache (0 before any lookup).
    pub fn hit_ratio(&self) -> f64 {
        let hits = self.counters.hits.load(Ordering::Relaxed) as f64;
        let total = hits
            + self.counters.misses.load(Ordering::Relaxed) as f64
            + self.counters.refused.load(Ordering::Relaxed) as f64;
        if total == 0.0 {
            0.0
        } else {
            hits / total
        }
    }

    fn fresh(&self, entry: &Entry, now: i64) -> bool {
        now - entry.view.created_at_ms < self.settings.ttl.as_millis() as i64
    }

    fn record_hit(&self, id: i64, similarity: f32) -> Option<Hit> {
        let mut entries = self.entries.write().unwrap_or_else(|e| e.into_inner());
        let entry = entries.get_mut(&id)?;
        entry.view.hits += 1;
        entry.view.last_hit_ms = self.clock.unix_ms();
        entry.dirty = true;
        self.counters.hits.fetch_add(1, Ordering::Relaxed);
        Some(Hit {
            id,
            answer: entry.view.answer.clone(),
            similarity,
        })
    }

    /// The cached answer for `question` in `scope`, if one may answer it.
    pub async fn lookup(&self, scope: &str, question: &str) -> Option<Hit> {
        let now = self.clock.unix_ms();
        let normalized = guard::normalize(question);
        let exact = self
            .exact
            .read()
            .unwrap_or_else(|e| e.into_inner())
            .get(&(scope.to_string(), normalized))
            .copied();
        if let Some(id) = exact {
            let fresh = self
                .entries
                .read()
                .unwrap_or_else(|e| e.into_inner())
                .get(&id)
                .is_some_and(|e| self.fresh(e, now));
            if fresh {
                return self.record_hit(id, 1.0);
            }
        }
        // The model is a shared, slow resource: a lookup never queues behind a
        // long line for it; the question goes to the providers instead.
        let vector = match self.embed(question).await {
            Ok(vector) => vector,
            Err(BatchError::Busy) => {
                self.counters.bypassed_busy.fetch_add(1, Ordering::Relaxed);
                return None;
            }
            Err(_) => {
                self.counters.misses.fetch_add(1, Ordering::Relaxed);
                return None;
            }
        };
        let index = self.index.read().unwrap_or_else(|e| e.into_inner()).clone();
        let candidates = index.search(&vector, 8);
        let mut refused = false;
        let best = {
            let entries = self.entries.read().unwrap_or_else(|e| e.into_inner());
            candidates.into_iter().find_map(|(id, similarity)| {
                let entry = entries.get(&(id as i64))?;
                if similarity < self.settings.threshold
                    || entry.view.scope != scope
                    || !self.fresh(entry, now)
                {
                    return None;
                }
                match guard::compatible(question, &entry.view.question) {
                    Ok(()) => Some((id as i64, similarity)),
                    Err(mismatch) => {
                        tracing::debug!(
                            ?mismatch,
                            similarity,
                            "cache candidate refused by a guard"
                        );
                        refused = true;
                        None
                    }
                }
            })
        };
        match best {
            Some((id, similarity)) => self.record_hit(id, similarity),
            None => {
                let counter = if refused {
                    &self.counters.refused
                } else {
                    &self.counters.misses
                };
                counter.fetch_add(1, Ordering::Relaxed);
                None
            }
        }
    }

    /// `text`'s vector from the next free embedding worker (shared with every
    /// lookup of the same text waiting then).
    async fn embed(&self, text: &str) -> Result<Vec<f32>, BatchError> {
        let batcher = self.batcher.as_ref().ok_or(BatchError::Stopped)?;
        let result = batcher.embed(text).await;
        if let Err(err @ BatchError::Model(_)) = &result {
            tracing::warn!(error = %err, "embedding failed; treating as a miss");
        }
        result
    }

    /// What the embedding batcher has done so far, when the model is loaded.
    pub fn embedding_counters(&self) -> Option<&BatchCounters> {
        self.batcher.as_ref().map(|b| b.counters())
    }

    /// Stores a completed answer, unless the question or answer carries personal
    /// data. Runs after the customer was answered, off the critical path.
    pub async fn remember(&self, scope: &str, question: &str, answer: &str) {
        if answer.trim().is_empty()
            || guard::has_personal_data(question)
            || guard::has_personal_data(answer)
        {
            self.counters.not_stored.fetch_add(1, Ordering::Relaxed);
            return;
        }
        let normalized = guard::normalize(question);
        let key = (scope.to_string(), normalized.clone());
        if self
            .exact
            .read()
            .unwrap_or_else(|e| e.into_inner())
            .contains_key(&key)
        {
            return;
        }
        let vector = match self.embed(question).await {
            Ok(vector) => Some(vector),
            Err(BatchError::Stopped) if self.batcher.is_none() => None,
            // Storing can wait for a quieter moment; it never queues for the model.
            Err(_) => {
                self.counters.not_stored.fetch_add(1, Ordering::Relaxed);
                return;
            }
        };
        let created_at_ms = self.clock.unix_ms();
        let inserted = crate::with_db!(&self.db, pool => sqlx::query_scalar::<_, i64>(
            "INSERT INTO cache_entries (scope, question, normalized, answer, embedding, created_at_ms, hits, last_hit_ms) \
             VALUES ($1, $2, $3, $4, $5, $6, 0, 0) RETURNING id",
        )
        .bind(scope)
        .bind(crate::store::nul_free(question))
        .bind(&normalized)
        .bind(crate::store::nul_free(answer))
        .bind(vector.as_deref().map(to_blob))
        .bind(created_at_ms)
        .fetch_one(pool)
        .await);
        let id = match inserted {
            Ok(id) => id,
            Err(err) => {
                tracing::warn!(error = %err, "cache entry not stored");
                return;
            }
        };
        if let Some(vector) = vector {
            self.index_vector(id, vector);
        }
        self.counters.stored.fetch_add(1, Ordering::Relaxed);
        if let Some(told) = self.on_stored.get() {
            told(id);
        }
        self.add_entry(
            EntryView {
                id,
                scope: scope.to_string(),
                question: question.to_string(),
                answer: answer.to_string(),
                created_at_ms,
                hits: 0,
                last_hit_ms: 0,
            },
            normalized,
        );
        self.evict().await;
    }

    /// Puts a stored vector into the graph (and into the one being rebuilt).
    fn index_vector(&self, id: i64, vector: Vec<f32>) {
        let index = self.index.read().unwrap_or_else(|e| e.into_inner()).clone();
        index.insert(id as usize, &vector);
        if let Some(pending) = self
            .rebuilding
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .as_mut()
        {
            pending.push((vector, id as usize));
        }
    }

    /// Calls `told` with the id of every entry stored from now on (once; a
    /// second call is ignored).
    pub fn on_stored(&self, told: impl Fn(i64) + Send + Sync + 'static) {
        let _ = self.on_stored.set(Box::new(told));
    }

    /// Calls `told` with what an admin removes from now on (once; a second call
    /// is ignored). Eviction and expiry are each replica's own and not told.
    pub fn on_removed(&self, told: impl Fn(Removed) + Send + Sync + 'static) {
        let _ = self.on_removed.set(Box::new(told));
    }

    /// Indexes an entry another replica stored in the shared table; `false` when
    /// it is unknown, already indexed or no longer fresh.
    pub async fn adopt(&self, id: i64) -> bool {
        if self
            .entries
            .read()
            .unwrap_or_else(|e| e.into_inner())
            .contains_key(&id)
        {
            return false;
        }
        let row: Result<Option<StoredEntry>, sqlx::Error> = crate::with_db!(&self.db, pool => sqlx::query_as(
            "SELECT id, scope, question, normalized, answer, embedding, created_at_ms, hits, last_hit_ms \
             FROM cache_entries WHERE id = $1",
        )
        .bind(id)
        .fetch_optional(pool)
        .await);
        let row = match row {
            Ok(Some(row)) => row,
            Ok(None) => return false,
            Err(err) => {
                tracing::warn!(error = %err, id, "shared cache entry not loaded");
                return false;
            }
        };
        if row.created_at_ms < self.clock.unix_ms() - self.settings.ttl.as_millis() as i64 {
            return false;
        }
        if let Some(blob) = row
            .embedding
            .as_deref()
            .filter(|b| b.len() == super::embedder::DIMENSIONS * 4)
        {
            self.index_vector(row.id, from_blob(blob));
        }
        self.add_entry(
            EntryView {
                id: row.id,
                scope: row.scope,
                question: row.question,
                answer: row.answer,
                created_at_ms: row.created_at_ms,
                hits: row.hits.max(0) as u64,
                last_hit_ms: row.last_hit_ms,
            },
            row.normalized,
        );
        // An admin may have removed it between the read and now, and the news of
        // it may have come before the entry was added here: the row is deleted
        // before the news is sent, so looking again after adding closes the gap.
        let still: Result<Option<i64>, sqlx::Error> = crate::with_db!(&self.db, pool => sqlx::query_scalar(
            "SELECT id FROM cache_entries WHERE id = $1",
        )
        .bind(id)
        .fetch_optional(pool)
        .await);
        if let Ok(None) = still {
            self.forget(Removed::Entry(id));
            return false;
        }
        self.evict().await;
        true
    }

    /// Keeps the cache within its size, dropping the least recently hit entries.
    async fn evict(&self) {
        let over = self.len().saturating_sub(self.settings.max_entries);
        if over == 0 {
            return;
        }
        let mut victims: Vec<(i64, i64)> = self
            .entries
            .read()
            .unwrap_or_else(|e| e.into_inner())
            .values()
            .map(|e| (e.view.last_hit_ms.max(e.view.created_at_ms), e.view.id))
            .collect();
        victims.sort_unstable();
        for (_, id) in victims.into_iter().take(over) {
            self.drop_entry(id).await;
        }
        // Stale points pile up under steady eviction; keep the graph lean.
        self.compact().await;
    }

    /// Deletes one entry, as an admin asks: here, in the store and, through
    /// [`on_removed`](Self::on_removed), on the other replicas. Returns whether
    /// it existed here or in the store.
    pub async fn remove(&self, id: i64) -> bool {
        let existed = self.drop_entry(id).await;
        if let Some(told) = self.on_removed.get() {
            // Told even when unknown here: another replica may hold it.
            told(Removed::Entry(id));
        }
        existed
    }

    /// Stops answering with what another replica's admin removed; the shared
    /// table has already lost it. Returns how many entries went.
    pub fn forget(&self, removed: Removed) -> usize {
        // One lock at a time: no path holds one of them while taking the other.
        match removed {
            Removed::Entry(id) => {
                let entry = self
                    .entries
                    .write()
                    .unwrap_or_else(|e| e.into_inner())
                    .remove(&id);
                let Some(entry) = entry else { return 0 };
                self.exact
                    .write()
                    .unwrap_or_else(|e| e.into_inner())
                    .remove(&(entry.view.scope, entry.normalized));
                1
            }
            Removed::All => {
                let gone =
                    std::mem::take(&mut *self.entries.write().unwrap_or_else(|e| e.into_inner()));
                self.exact
                    .write()
                    .unwrap_or_else(|e| e.into_inner())
                    .clear();
                gone.len()
            }
        }
    }

    /// Deletes one entry here and from the store; returns whether either held
    /// it. The store is asked even when this replica does not hold the entry:
    /// another replica may have stored it, and it would come back at a restart.
    async fn drop_entry(&self, id: i64) -> bool {
        let removed = self
            .entries
            .write()
            .unwrap_or_else(|e| e.into_inner())
            .remove(&id);
        if let Some(entry) = &removed {
            self.exact
                .write()
                .unwrap_or_else(|e| e.into_inner())
                .remove(&(entry.view.scope.clone(), entry.normalized.clone()));
        }
        let stored = crate::with_db!(&self.db, pool => sqlx::query("DELETE FROM cache_entries WHERE id = $1")
            .bind(id)
            .execute(pool)
            .await.map(|done| done.rows_affected()));
        match stored {
            Ok(rows) => removed.is_some() || rows > 0,
            Err(err) => {
                tracing::warn!(error = %err, id, "cache entry not deleted from the store");
                removed.is_some()
            }
        }
    }

    /// Deletes every entry, as an admin asks: here, in the store and on the
    /// other replicas. Returns how many there were here.
    pub async fn clear(&self) -> usize {
        let count = {
            let mut entries = self.entries.write().unwrap_or_else(|e| e.into_inner());
            let count = entries.len();
            entries.clear();
            count
        };
        self.exact
            .write()
            .unwrap_or_else(|e| e.into_inner())
            .clear();
        if let Err(err) = crate::with_db!(&self.db, pool => sqlx::query("DELETE FROM cache_entries")
            .execute(pool)
            .await.map(|done| done.rows_affected()))
        {
            tracing::warn!(error = %err, "cache not cleared in the store");
        }
        if let Some(told) = self.on_removed.get() {
            told(Removed::All);
        }
        count
    }

    /// Entries, newest first, whose question or answer contains `search`.
    pub fn list(&self, search: Option<&str>, limit: usize) -> Vec<EntryView> {
        let needle = search.map(str::to_lowercase);
        let mut views: Vec<EntryView> = self
            .entries
            .read()
            .unwrap_or_else(|e| e.into_inner())
            .values()
            .filter(|e| {
                needle.as_ref().is_none_or(|n| {
                    e.view.question.to_lowercase().contains(n)
                        || e.view.answer.to_lowercase().contains(n)
                })
            })
            .map(|e| e.view.clone())
            .collect();
        views.sort_by_key(|v| std::cmp::Reverse(v.id));
        views.truncate(limit);
        views
    }

    /// Points in the similarity graph, live or removed (for tests and metrics).
    pub fn index_len(&self) -> usize {
        self.index.read().unwrap_or_else(|e| e.into_inner()).len()
    }

    /// Rebuilds the graph from the live entries when removed or expired ones make
    /// up more than a third of it: it never grows past 1.5× the live entries (so
    /// at most 1.5× `max_entries`), and stale points never crowd out real hits.
    /// The build runs off the executor; answers stored meanwhile join the new graph.
    async fn compact(&self) {
        let live = self.entries.read().unwrap_or_else(|e| e.into_inner()).len();
        let points = self.index_len();
        if points <= live + live / 2 + 16 {
            return;
        }
        {
            let mut rebuilding = self.rebuilding.lock().unwrap_or_else(|e| e.into_inner());
            if rebuilding.is_some() {
                return; // one rebuild at a time
            }
            *rebuilding = Some(Vec::new());
        }
        let rows: Result<Vec<StoredVector>, sqlx::Error> = crate::with_db!(&self.db, pool => sqlx::query_as("SELECT id, embedding FROM cache_entries")
                .fetch_all(pool)
                .await);
        let vectors: Vec<Point> = match rows {
            Ok(rows) => {
                let entries = self.entries.read().unwrap_or_else(|e| e.into_inner());
                rows.into_iter()
                    .filter(|(id, _)| entries.contains_key(id))
                    .filter_map(|(id, blob)| {
                        let blob = blob.filter(|b| b.len() == super::embedder::DIMENSIONS * 4)?;
                        Some((from_blob(&blob), id as usize))
                    })
                    .collect()
            }
            Err(err) => {
                tracing::warn!(error = %err, "cache index not rebuilt");
                *self.rebuilding.lock().unwrap_or_else(|e| e.into_inner()) = None;
                return;
            }
        };
        let capacity = self.settings.max_entries.max(vectors.len());
        let fresh = build_index(capacity, vectors).await;
        let pending = self
            .rebuilding
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .take()
            .unwrap_or_default();
        for (vector, id) in &pending {
            fresh.insert(*id, vector);
        }
        *self.index.write().unwrap_or_else(|e| e.into_inner()) = Arc::new(fresh);
        tracing::info!(
            before = points,
            after = self.index_len(),
            "cache index rebuilt"
        );
    }

    /// Writes hit counts to the store, drops expired entries and compacts the
    /// similarity graph; run periodically.
    pub async fn maintain(&self) {
        let now = self.clock.unix_ms();
        let (dirty, expired): (Vec<(i64, u64, i64)>, Vec<i64>) = {
            let mut entries = self.entries.write().unwrap_or_else(|e| e.into_inner());
            let dirty = entries
                .values_mut()
                .filter_map(|e| {
                    std::mem::take(&mut e.dirty).then_some((
                        e.view.id,
                        e.view.hits,
                        e.view.last_hit_ms,
                    ))
                })
                .collect();
            let expired = entries
                .values()
                .filter(|e| !self.fresh(e, now))
                .map(|e| e.view.id)
                .collect();
            (dirty, expired)
        };
        for (id, hits, last_hit_ms) in dirty {
            let _ = crate::with_db!(&self.db, pool => sqlx::query("UPDATE cache_entries SET hits = $1, last_hit_ms = $2 WHERE id = $3")
                .bind(hits as i64)
                .bind(last_hit_ms)
                .bind(id)
                .execute(pool)
                .await.map(|done| done.rows_affected()));
        }
        for id in expired {
            self.drop_entry(id).await;
        }
        self.compact().await;
    }
}

/// Builds a graph of `vectors` off the executor (it is CPU work).
async fn build_index(capacity: usize, vectors: Vec<Point>) -> VectorIndex {
    tokio::task::spawn_blocking(move || {
        let index = VectorIndex::new(capacity);
        if !vectors.is_empty() {
            index.insert_many(&vectors);
        }
        index
    })
    .await
    .unwrap_or_else(|_| VectorIndex::new(capacity))
}
