-- Training jobs (spec/training.md §1.3, §2.2, §3.1): a user's run of an algorithm (or of a
-- custom command) on one or more workers, restarted on failure, watched for hangs.
-- `spec` is the resolved create request (what a rebuild copies and the runner reads).
CREATE TABLE training_jobs (
    id            TEXT PRIMARY KEY,
    owner_id      TEXT NOT NULL REFERENCES users (id),
    name          TEXT NOT NULL,
    description   TEXT NOT NULL DEFAULT '',
    algorithm_id  TEXT,              -- algorithms.id; an algorithm in use is not deleted
    spec          TEXT NOT NULL,
    status        TEXT NOT NULL,
    status_reason TEXT,
    attempt       INTEGER NOT NULL DEFAULT 0,  -- the attempt running or last run (0-based)
    retries       INTEGER NOT NULL DEFAULT 0,  -- restarts so far (the seed's Retries)
    streak        INTEGER NOT NULL DEFAULT 0,  -- consecutive unconditional or hang restarts
    run_seconds   INTEGER NOT NULL DEFAULT 0,  -- RUNNING time of ended attempts (auto stop)
    created_at    TEXT NOT NULL,
    updated_at    TEXT NOT NULL,
    started_at    TEXT,              -- the current attempt's start (RUNNING)
    ended_at      TEXT,
    UNIQUE (owner_id, name)
);
CREATE INDEX training_jobs_algorithm ON training_jobs (algorithm_id);

-- One worker of one attempt: its backend handle while it runs, how it ended.
CREATE TABLE training_workers (
    job_id      TEXT NOT NULL REFERENCES training_jobs (id) ON DELETE CASCADE,
    attempt     INTEGER NOT NULL,
    rank        INTEGER NOT NULL,
    handle      TEXT,
    exit_code   INTEGER,
    started_at  TEXT NOT NULL,
    ended_at    TEXT,
    PRIMARY KEY (job_id, attempt, rank)
);

-- The seed's Fault Recovery Details (8.10.4): one row per attempt that ended in a fault.
CREATE TABLE training_recoveries (
    job_id        TEXT NOT NULL REFERENCES training_jobs (id) ON DELETE CASCADE,
    attempt       INTEGER NOT NULL,
    started_at    TEXT NOT NULL,
    ended_at      TEXT NOT NULL,
    fault_source  TEXT NOT NULL,     -- worker-N
    reason        TEXT NOT NULL,
    action        TEXT NOT NULL,     -- what followed: restarted, failed
    PRIMARY KEY (job_id, attempt)
);

-- Metrics a job reports (`[metric]` lines, the Wasm metrics import).
CREATE TABLE training_metrics (
    job_id   TEXT NOT NULL REFERENCES training_jobs (id) ON DELETE CASCADE,
    attempt  INTEGER NOT NULL,
    worker   INTEGER NOT NULL,
    name     TEXT NOT NULL,
    step     INTEGER,
    value    REAL NOT NULL,
    time     TEXT NOT NULL
);
CREATE INDEX training_metrics_job ON training_metrics (job_id, name);
