-- Batch services (spec/inference.md §2.13, §3.3): a user's job runs one NORMAL model
-- version over every file of an object storage folder or `.manifest` and writes one result
-- per file, then the `infer-result-{task_id}.manifest` lines, into an output folder.
CREATE TABLE batch_services (
    id               TEXT PRIMARY KEY,
    owner_id         TEXT NOT NULL REFERENCES users (id),
    name             TEXT NOT NULL,
    description      TEXT NOT NULL DEFAULT '',
    status           TEXT NOT NULL,      -- DEPLOYING, RUNNING, COMPLETED, FAILED, STOPPING, STOPPED, DELETING
    status_reason    TEXT,
    model_version_id TEXT NOT NULL REFERENCES model_versions (id),
    connection_id    TEXT NOT NULL,      -- the owner's storage connection (checked at deploy)
    task_id          TEXT NOT NULL,      -- names the results: infer-result-{task_id}
    spec             TEXT NOT NULL,      -- JSON: input, output, request path, mapping, instances, …
    started_at       TEXT,               -- the current run's start
    ended_at         TEXT,               -- when it was COMPLETED or FAILED
    created_at       TEXT NOT NULL,
    updated_at       TEXT NOT NULL,
    UNIQUE (owner_id, name)
);
CREATE INDEX batch_services_status ON batch_services (status);
CREATE INDEX batch_services_version ON batch_services (model_version_id);

-- One row per input file, written with the service at deploy: its progress survives a
-- gateway restart. A result object is written under `result_key` before its row leaves
-- `pending`, so a finished item is never done again.
CREATE TABLE batch_items (
    batch_id    TEXT NOT NULL REFERENCES batch_services (id) ON DELETE CASCADE,
    seq         INTEGER NOT NULL,     -- input order: the manifest's line order
    source      TEXT NOT NULL,        -- as the input named it (obs://bucket/key)
    object_key  TEXT NOT NULL,        -- the key it is read from, in the connection's bucket
    bucket      TEXT NOT NULL,
    size        INTEGER,              -- known from a folder listing
    result_name TEXT NOT NULL,        -- the result's file name, unique in the service
    state       TEXT NOT NULL,        -- pending, succeeded, failed
    error       TEXT,                 -- why it failed
    PRIMARY KEY (batch_id, seq),
    UNIQUE (batch_id, result_name)
);
CREATE INDEX batch_items_state ON batch_items (batch_id, state);
