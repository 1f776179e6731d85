-- One row per customer request, whatever served it.
CREATE TABLE IF NOT EXISTS requests (
    id              TEXT PRIMARY KEY NOT NULL,
    created_at_ms   INTEGER NOT NULL,
    -- "chat" (the customer page) or "api" (/v1/chat/completions)
    surface         TEXT NOT NULL,
    stream          INTEGER NOT NULL,
    -- provider name, later also "cache" or "last-resort"; NULL when nothing served
    served_by       TEXT,
    -- "ok", "invalid_request", "exhausted", "stream_failed", "client_disconnected"
    status          TEXT NOT NULL,
    latency_ms      INTEGER NOT NULL,
    overhead_ms     REAL NOT NULL,
    question_chars  INTEGER NOT NULL,
    answer_chars    INTEGER NOT NULL
);
CREATE INDEX IF NOT EXISTS requests_created ON requests (created_at_ms);

-- Every provider attempt of a request, in order.
CREATE TABLE IF NOT EXISTS attempts (
    request_id   TEXT NOT NULL REFERENCES requests (id) ON DELETE CASCADE,
    seq          INTEGER NOT NULL,
    provider     TEXT NOT NULL,
    outcome      TEXT NOT NULL,
    http_status  INTEGER,
    latency_ms   INTEGER NOT NULL,
    PRIMARY KEY (request_id, seq)
);
