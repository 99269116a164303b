-- Schedules and triggers of workflows (issue 19, item 5).
--
-- One cron schedule per workflow: its pattern and IANA time zone, the parameters and storage
-- roots its runs start with, and when it is next due (UTC, the store's fixed-width time; NULL
-- while disabled). The scheduler sleeps until the earliest `next_due`; a restarted gateway
-- finds a firing it missed by this column and runs it once.
CREATE TABLE workflow_schedules (
    workflow_id TEXT PRIMARY KEY REFERENCES workflows (id) ON DELETE CASCADE,
    cron        TEXT NOT NULL,
    timezone    TEXT NOT NULL,
    parameters  TEXT NOT NULL DEFAULT '{}',  -- JSON object
    storages    TEXT NOT NULL DEFAULT '{}',  -- JSON object: storage name → root
    connection  TEXT,                        -- the owner's storage connection, by name
    enabled     INTEGER NOT NULL,
    next_due    TEXT,
    created_at  TEXT NOT NULL,
    updated_at  TEXT NOT NULL
);
CREATE INDEX workflow_schedules_due ON workflow_schedules (next_due) WHERE next_due IS NOT NULL;

-- What each due time of a schedule did: `started` (run_number), `skipped` (a run under way,
-- its number in run_number) or `failed` (detail says why). The newest 100 per workflow are
-- kept.
CREATE TABLE workflow_schedule_firings (
    id          TEXT PRIMARY KEY,            -- time-ordered
    workflow_id TEXT NOT NULL REFERENCES workflows (id) ON DELETE CASCADE,
    due_at      TEXT NOT NULL,
    fired_at    TEXT NOT NULL,
    outcome     TEXT NOT NULL,
    run_number  INTEGER,
    detail      TEXT
);
CREATE INDEX workflow_schedule_firings_by_workflow ON workflow_schedule_firings (workflow_id, id);

-- A workflow's webhook trigger token (at most one): its SHA-256 only, as API tokens'.
CREATE TABLE workflow_trigger_tokens (
    workflow_id TEXT PRIMARY KEY REFERENCES workflows (id) ON DELETE CASCADE,
    token_hash  TEXT NOT NULL UNIQUE,
    created_at  TEXT NOT NULL,
    created_by  TEXT NOT NULL
);
