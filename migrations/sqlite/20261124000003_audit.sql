-- The audit trail: what a request was part of, the breaker's state before each
-- attempt, every breaker transition and fault change, and the chat page's messages.
ALTER TABLE requests ADD COLUMN conversation_id TEXT;
ALTER TABLE requests ADD COLUMN cache_similarity REAL;
ALTER TABLE attempts ADD COLUMN breaker_before TEXT;

CREATE INDEX IF NOT EXISTS requests_served_by ON requests (served_by);
CREATE INDEX IF NOT EXISTS requests_status ON requests (status);
CREATE INDEX IF NOT EXISTS attempts_provider ON attempts (provider);

CREATE TABLE IF NOT EXISTS breaker_transitions (
    id          INTEGER PRIMARY KEY AUTOINCREMENT,
    at_ms       INTEGER NOT NULL,
    provider    TEXT NOT NULL,
    from_state  TEXT NOT NULL,
    to_state    TEXT NOT NULL,
    reason      TEXT NOT NULL
);

CREATE TABLE IF NOT EXISTS fault_changes (
    id          INTEGER PRIMARY KEY AUTOINCREMENT,
    at_ms       INTEGER NOT NULL,
    provider    TEXT NOT NULL,
    -- "set" or "healed"
    action      TEXT NOT NULL,
    kind        TEXT,
    spec_json   TEXT,
    -- "admin" or "expiry"
    changed_by  TEXT NOT NULL
);

-- The chat page's conversations, one row per turn, so a conversation can be shown again.
CREATE TABLE IF NOT EXISTS messages (
    id               INTEGER PRIMARY KEY AUTOINCREMENT,
    at_ms            INTEGER NOT NULL,
    conversation_id  TEXT NOT NULL,
    request_id       TEXT NOT NULL,
    role             TEXT NOT NULL,
    content          TEXT NOT NULL
);
CREATE INDEX IF NOT EXISTS messages_conversation ON messages (conversation_id, id);
