-- Hyperparameter searches (spec/training.md §1.4, §2.10; Katib's experiments): trials of a
-- training job template with sampled hyperparameters. `spec` is the checked create request.
CREATE TABLE training_searches (
    id            TEXT PRIMARY KEY,
    owner_id      TEXT NOT NULL REFERENCES users (id),
    name          TEXT NOT NULL,
    description   TEXT NOT NULL DEFAULT '',
    spec          TEXT NOT NULL,
    status        TEXT NOT NULL,
    status_reason TEXT,
    best_trial    INTEGER,           -- training_search_trials.number of the best trial
    created_at    TEXT NOT NULL,
    updated_at    TEXT NOT NULL,
    ended_at      TEXT,
    UNIQUE (owner_id, name)
);

-- One trial: numbered and sampled before its job is created (so a restarted gateway never
-- creates a number twice), then its job, its outcome.
CREATE TABLE training_search_trials (
    search_id     TEXT NOT NULL REFERENCES training_searches (id) ON DELETE CASCADE,
    number        INTEGER NOT NULL,
    job_name      TEXT NOT NULL,
    job_id        TEXT,              -- training_jobs.id once created (the job may be gone)
    parameters    TEXT NOT NULL,     -- JSON object: the sampled values
    status        TEXT NOT NULL,
    reason        TEXT,
    objective     REAL,
    outputs       TEXT,              -- JSON: the job's output channels, once it ended
    created_at    TEXT NOT NULL,
    ended_at      TEXT,
    PRIMARY KEY (search_id, number)
);
