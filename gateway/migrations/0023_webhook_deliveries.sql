-- Webhook deliveries (`notify.rs`): an event of a resource (a training job) to POST to the
-- URL its owner gave, signed with the owner's secret (sealed, the resource's id as context),
-- retried until delivered or given up.
CREATE TABLE webhook_deliveries (
    id           TEXT PRIMARY KEY,
    subject_kind TEXT NOT NULL,
    subject_id   TEXT NOT NULL,
    url          TEXT NOT NULL,
    secret       TEXT NOT NULL,
    event        TEXT NOT NULL,
    body         TEXT NOT NULL,
    status       TEXT NOT NULL,      -- pending | delivered | failed
    attempts     INTEGER NOT NULL DEFAULT 0,
    next_at      TEXT NOT NULL,
    last_status  INTEGER,
    last_error   TEXT,
    created_at   TEXT NOT NULL,
    delivered_at TEXT
);
CREATE INDEX webhook_deliveries_due ON webhook_deliveries (status, next_at);
CREATE INDEX webhook_deliveries_subject ON webhook_deliveries (subject_id);
