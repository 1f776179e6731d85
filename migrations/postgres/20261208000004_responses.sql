-- Responses the Responses API keeps (see migrations/sqlite): the whole
-- conversation up to each answer, and the response object as it was sent.
CREATE TABLE IF NOT EXISTS responses (
    rowid              BIGINT GENERATED ALWAYS AS IDENTITY UNIQUE,
    id                 TEXT PRIMARY KEY NOT NULL,
    tenant             TEXT NOT NULL,
    created_at_ms      BIGINT NOT NULL,
    conversation_json  TEXT NOT NULL,
    response_json      TEXT NOT NULL,
    -- the two texts' size, so retention can hold the table to a size without
    -- reading them
    bytes              BIGINT NOT NULL
);
CREATE INDEX IF NOT EXISTS responses_created ON responses (created_at_ms);
