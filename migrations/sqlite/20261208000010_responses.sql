-- Responses the Responses API keeps (`store`, true unless the caller says
-- otherwise), so that a caller may go on from one with `previous_response_id`
-- and read it back with `GET /v1/responses/{id}`. Each row holds the whole
-- conversation up to and including its answer, as the gateway's own turns, and
-- the response object as it was sent. Retention prunes it like the audit.
CREATE TABLE IF NOT EXISTS responses (
    id                 TEXT PRIMARY KEY NOT NULL,
    tenant             TEXT NOT NULL,
    created_at_ms      INTEGER NOT NULL,
    conversation_json  TEXT NOT NULL,
    response_json      TEXT NOT NULL,
    -- the two texts' size, so retention can hold the table to a size without
    -- reading them
    bytes              INTEGER NOT NULL
);
CREATE INDEX IF NOT EXISTS responses_created ON responses (created_at_ms);
