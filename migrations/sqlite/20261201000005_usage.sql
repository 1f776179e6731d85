-- What each answer cost, who counted it, and whose it was: cost by provider
-- (per attempt) and by tenant (per request).
ALTER TABLE requests ADD COLUMN tenant TEXT NOT NULL DEFAULT 'default';
ALTER TABLE requests ADD COLUMN prompt_tokens INTEGER NOT NULL DEFAULT 0;
ALTER TABLE requests ADD COLUMN completion_tokens INTEGER NOT NULL DEFAULT 0;
-- "provider", "estimated", "cache" or "last_resort"; NULL when nothing answered
ALTER TABLE requests ADD COLUMN usage_source TEXT;
-- NULL for attempts that produced nothing (failed before their first token)
ALTER TABLE attempts ADD COLUMN prompt_tokens INTEGER;
ALTER TABLE attempts ADD COLUMN completion_tokens INTEGER;

CREATE INDEX IF NOT EXISTS requests_tenant ON requests (tenant, created_at_ms);
