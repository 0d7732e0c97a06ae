-- Warmstart schema v1 (PostgreSQL; the same tables as migrations/sqlite/0001_init.sql). Rows point at artefacts in the data folder; artefacts are written
-- before the rows that reference them.

CREATE TABLE datasets (
    id            TEXT PRIMARY KEY NOT NULL,
    tenant        TEXT NOT NULL DEFAULT '',
    name          TEXT NOT NULL,
    modality      TEXT NOT NULL CHECK (modality IN ('text', 'image')),
    num_examples  BIGINT NOT NULL,
    labels        TEXT NOT NULL,  -- JSON array, sorted
    label_counts  TEXT NOT NULL,  -- JSON object label -> count
    warnings      TEXT NOT NULL,  -- JSON array of strings
    source_format TEXT NOT NULL,  -- csv | jsonl | zip
    created_at    TEXT NOT NULL
);
CREATE INDEX datasets_tenant ON datasets (tenant, created_at);

CREATE TABLE jobs (
    id            TEXT PRIMARY KEY NOT NULL,
    tenant        TEXT NOT NULL DEFAULT '',
    dataset_id    TEXT NOT NULL,
    backbone      TEXT NOT NULL,
    status        TEXT NOT NULL CHECK (status IN ('queued', 'running', 'succeeded', 'failed', 'cancelled')),
    stage         TEXT,
    epoch         BIGINT NOT NULL DEFAULT 0,
    epochs        BIGINT NOT NULL DEFAULT 0,
    fraction      DOUBLE PRECISION NOT NULL DEFAULT 0,
    request       TEXT NOT NULL,  -- JSON: the request as submitted (hyperparameters, validation, seed)
    config        TEXT,           -- JSON: the resolved recipe, with the reason for each automatic choice
    metrics       TEXT,           -- JSON: latest metrics
    model_id      TEXT,
    error_code    TEXT,
    error_message TEXT,
    attempts      BIGINT NOT NULL DEFAULT 0,
    created_at    TEXT NOT NULL,
    started_at    TEXT,
    finished_at   TEXT
);
CREATE INDEX jobs_queue ON jobs (status, created_at);
CREATE INDEX jobs_tenant ON jobs (tenant, created_at);

CREATE TABLE job_events (
    id      BIGINT GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    job_id  TEXT NOT NULL REFERENCES jobs (id) ON DELETE CASCADE,
    at      TEXT NOT NULL,
    kind    TEXT NOT NULL,
    stage   TEXT,
    epoch   BIGINT,
    metrics TEXT,  -- JSON object
    message TEXT
);
CREATE INDEX job_events_job ON job_events (job_id, id);

CREATE TABLE models (
    id          TEXT PRIMARY KEY NOT NULL,
    tenant      TEXT NOT NULL DEFAULT '',
    job_id      TEXT NOT NULL,
    dataset_id  TEXT NOT NULL,
    backbone    TEXT NOT NULL,
    modality    TEXT NOT NULL,
    labels      TEXT NOT NULL,  -- JSON array, index = class id
    metrics     TEXT NOT NULL,  -- JSON object
    created_at  TEXT NOT NULL
);
CREATE INDEX models_tenant ON models (tenant, created_at);
