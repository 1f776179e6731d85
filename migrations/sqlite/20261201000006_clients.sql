-- Client keys made through the admin API (keys in the config file are not
-- stored). Only the key's SHA-256 is kept: a leaked database leaks no key.
CREATE TABLE IF NOT EXISTS clients (
    name           TEXT PRIMARY KEY NOT NULL,
    tenant         TEXT NOT NULL,
    key_sha256     TEXT NOT NULL UNIQUE,
    -- requests and tokens per minute; NULL means no limit
    rpm            INTEGER,
    tpm            INTEGER,
    created_at_ms  INTEGER NOT NULL
);
