-- Workflows (spec/workflow.md §1.1, §2.1, §2.19): a user's named DAG of steps. Each published
-- change of its definition is a new version (the canonical JSON and its digest: publishing
-- the same definition again makes none); a run records the version it ran.
CREATE TABLE workflows (
    id             TEXT PRIMARY KEY,
    owner_id       TEXT NOT NULL REFERENCES users (id),
    name           TEXT NOT NULL,
    description    TEXT NOT NULL DEFAULT '',
    latest_version INTEGER NOT NULL,
    tags           TEXT NOT NULL DEFAULT '{}',  -- JSON object
    created_at     TEXT NOT NULL,
    updated_at     TEXT NOT NULL,
    UNIQUE (owner_id, name)
);

CREATE TABLE workflow_versions (
    workflow_id TEXT NOT NULL REFERENCES workflows (id) ON DELETE CASCADE,
    version     INTEGER NOT NULL,   -- 1, 2, …
    digest      TEXT NOT NULL,      -- sha256 of the canonical definition
    definition  TEXT NOT NULL,      -- the canonical JSON
    created_at  TEXT NOT NULL,
    PRIMARY KEY (workflow_id, version)
);

-- One run (the seed's execution record), numbered per workflow. At most one is active per
-- workflow (RUNNING, AWAITING_INPUT, STOPPING): the index refuses a second.
CREATE TABLE workflow_runs (
    id            TEXT PRIMARY KEY,
    workflow_id   TEXT NOT NULL REFERENCES workflows (id) ON DELETE CASCADE,
    owner_id      TEXT NOT NULL REFERENCES users (id),
    number        INTEGER NOT NULL,
    version       INTEGER NOT NULL,
    parameters    TEXT NOT NULL,    -- JSON object: the resolved values (delayed ones added)
    selected      TEXT,             -- JSON array: the steps of a partial run (none: all)
    status        TEXT NOT NULL,
    status_reason TEXT,
    tags          TEXT NOT NULL DEFAULT '{}',
    created_at    TEXT NOT NULL,
    updated_at    TEXT NOT NULL,
    ended_at      TEXT,
    UNIQUE (workflow_id, number)
);
CREATE UNIQUE INDEX workflow_runs_active ON workflow_runs (workflow_id)
    WHERE status IN ('RUNNING', 'AWAITING_INPUT', 'STOPPING');

-- One step of a run (the seed's phase): written before it starts, so a restarted gateway
-- knows what ran; `attempt` counts retries; `child` is what it started (a training job, a
-- service), stopped with the run.
CREATE TABLE workflow_run_steps (
    run_id      TEXT NOT NULL REFERENCES workflow_runs (id) ON DELETE CASCADE,
    name        TEXT NOT NULL,
    status      TEXT NOT NULL,
    reason      TEXT,
    attempt     INTEGER NOT NULL DEFAULT 0,
    inputs      TEXT,               -- JSON: the step's properties with references resolved
    outputs     TEXT,               -- JSON object: output name → value or object path
    metrics     TEXT,               -- JSON object: metric name → number
    child_kind  TEXT,               -- 'training_job' | 'service' | 'model_version'
    child_id    TEXT,
    started_at  TEXT,
    ended_at    TEXT,
    PRIMARY KEY (run_id, name)
);
