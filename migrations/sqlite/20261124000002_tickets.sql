-- Tickets for human agents, opened by the last resort when no provider could answer.
CREATE TABLE IF NOT EXISTS tickets (
    id                 TEXT PRIMARY KEY NOT NULL,
    created_at_ms      INTEGER NOT NULL,
    request_id         TEXT NOT NULL,
    -- the customer's last message and the whole conversation (JSON array of turns):
    -- a human agent needs them to answer
    question           TEXT NOT NULL,
    conversation_json  TEXT NOT NULL,
    -- what failed: the attempts (JSON array)
    failure_json       TEXT NOT NULL,
    status             TEXT NOT NULL DEFAULT 'open'
);
CREATE INDEX IF NOT EXISTS tickets_created ON tickets (created_at_ms);
