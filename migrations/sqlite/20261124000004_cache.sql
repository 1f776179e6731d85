-- Layer-0 semantic cache entries. The index is rebuilt from these at start-up.
CREATE TABLE IF NOT EXISTS cache_entries (
    id             INTEGER PRIMARY KEY AUTOINCREMENT,
    -- hash of tenant, model, caller system prompt and earlier turns
    scope          TEXT NOT NULL,
    question       TEXT NOT NULL,
    normalized     TEXT NOT NULL,
    answer         TEXT NOT NULL,
    -- 384 little-endian f32; NULL when stored without the embedding model
    embedding      BLOB,
    created_at_ms  INTEGER NOT NULL,
    hits           INTEGER NOT NULL DEFAULT 0,
    last_hit_ms    INTEGER NOT NULL DEFAULT 0
);
CREATE UNIQUE INDEX IF NOT EXISTS cache_entries_exact ON cache_entries (scope, normalized);
