-- The PostgreSQL schema: the same tables as the SQLite migrations (migrations/sqlite),
-- so the store's SQL runs unchanged on both engines. Every dated table has a
-- `rowid` identity, the column SQLite gives every table implicitly, because the
-- audit pages by it and retention deletes oldest-first by it.

CREATE TABLE IF NOT EXISTS requests (
    rowid              BIGINT GENERATED ALWAYS AS IDENTITY UNIQUE,
    id                 TEXT PRIMARY KEY NOT NULL,
    created_at_ms      BIGINT NOT NULL,
    surface            TEXT NOT NULL,
    stream             BOOLEAN NOT NULL,
    served_by          TEXT,
    status             TEXT NOT NULL,
    latency_ms         BIGINT NOT NULL,
    overhead_ms        DOUBLE PRECISION NOT NULL,
    question_chars     BIGINT NOT NULL,
    answer_chars       BIGINT NOT NULL,
    conversation_id    TEXT,
    cache_similarity   DOUBLE PRECISION,
    tenant             TEXT NOT NULL DEFAULT 'default',
    prompt_tokens      BIGINT NOT NULL DEFAULT 0,
    completion_tokens  BIGINT NOT NULL DEFAULT 0,
    usage_source       TEXT
);
CREATE INDEX IF NOT EXISTS requests_created ON requests (created_at_ms);
CREATE INDEX IF NOT EXISTS requests_served_by ON requests (served_by);
CREATE INDEX IF NOT EXISTS requests_status ON requests (status);
CREATE INDEX IF NOT EXISTS requests_tenant ON requests (tenant, created_at_ms);

CREATE TABLE IF NOT EXISTS attempts (
    request_id         TEXT NOT NULL REFERENCES requests (id) ON DELETE CASCADE,
    seq                BIGINT NOT NULL,
    provider           TEXT NOT NULL,
    outcome            TEXT NOT NULL,
    http_status        BIGINT,
    latency_ms         BIGINT NOT NULL,
    breaker_before     TEXT,
    prompt_tokens      BIGINT,
    completion_tokens  BIGINT,
    PRIMARY KEY (request_id, seq)
);
CREATE INDEX IF NOT EXISTS attempts_provider ON attempts (provider);

CREATE TABLE IF NOT EXISTS tickets (
    rowid              BIGINT GENERATED ALWAYS AS IDENTITY UNIQUE,
    id                 TEXT PRIMARY KEY NOT NULL,
    created_at_ms      BIGINT NOT NULL,
    request_id         TEXT NOT NULL,
    question           TEXT NOT NULL,
    conversation_json  TEXT NOT NULL,
    failure_json       TEXT NOT NULL,
    status             TEXT NOT NULL DEFAULT 'open',
    resolved_at_ms     BIGINT
);
CREATE INDEX IF NOT EXISTS tickets_created ON tickets (created_at_ms);

CREATE TABLE IF NOT EXISTS breaker_transitions (
    id          BIGINT GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    rowid       BIGINT GENERATED ALWAYS AS (id) STORED,
    at_ms       BIGINT NOT NULL,
    provider    TEXT NOT NULL,
    from_state  TEXT NOT NULL,
    to_state    TEXT NOT NULL,
    reason      TEXT NOT NULL
);
CREATE INDEX IF NOT EXISTS breaker_transitions_at ON breaker_transitions (at_ms);

CREATE TABLE IF NOT EXISTS fault_changes (
    id          BIGINT GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    rowid       BIGINT GENERATED ALWAYS AS (id) STORED,
    at_ms       BIGINT NOT NULL,
    provider    TEXT NOT NULL,
    action      TEXT NOT NULL,
    kind        TEXT,
    spec_json   TEXT,
    changed_by  TEXT NOT NULL
);
CREATE INDEX IF NOT EXISTS fault_changes_at ON fault_changes (at_ms);

CREATE TABLE IF NOT EXISTS messages (
    id               BIGINT GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    rowid            BIGINT GENERATED ALWAYS AS (id) STORED,
    at_ms            BIGINT NOT NULL,
    conversation_id  TEXT NOT NULL,
    request_id       TEXT NOT NULL,
    role             TEXT NOT NULL,
    content          TEXT NOT NULL
);
CREATE INDEX IF NOT EXISTS messages_conversation ON messages (conversation_id, id);

CREATE TABLE IF NOT EXISTS cache_entries (
    id             BIGINT GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    scope          TEXT NOT NULL,
    question       TEXT NOT NULL,
    normalized     TEXT NOT NULL,
    answer         TEXT NOT NULL,
    embedding      BYTEA,
    created_at_ms  BIGINT NOT NULL,
    hits           BIGINT NOT NULL DEFAULT 0,
    last_hit_ms    BIGINT NOT NULL DEFAULT 0
);
CREATE UNIQUE INDEX IF NOT EXISTS cache_entries_exact ON cache_entries (scope, normalized);

CREATE TABLE IF NOT EXISTS clients (
    name           TEXT PRIMARY KEY NOT NULL,
    tenant         TEXT NOT NULL,
    key_sha256     TEXT NOT NULL UNIQUE,
    rpm            BIGINT,
    tpm            BIGINT,
    created_at_ms  BIGINT NOT NULL
);
