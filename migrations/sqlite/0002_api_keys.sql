-- API keys. Only a SHA-256 digest of each key is stored; the key itself is shown once, when
-- it is created. Rows are never deleted: a revoked key keeps its row (and its tenant's
-- resources stay put), so "has any key ever been created" keeps authentication switched on.

CREATE TABLE api_keys (
    id          TEXT PRIMARY KEY NOT NULL,  -- the key's public part (wsk_<id>_<secret>)
    name        TEXT NOT NULL,
    tenant      TEXT NOT NULL,              -- owner of what requests with this key create
    hash        TEXT NOT NULL,              -- hex SHA-256 of the whole key
    created_at  TEXT NOT NULL,
    revoked_at  TEXT
);
CREATE INDEX api_keys_name ON api_keys (name);
