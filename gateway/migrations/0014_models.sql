-- The model registry (spec/inference.md §2.1, §2.16): a model is a user's name; its
-- versions ("0.0.1", …) each hold one import: where it came from, the settings a service
-- runs it with (a new version copies the previous one's), and the files, copied into the
-- gateway's model store by digest so that nothing changes under a service.
CREATE TABLE models (
    id           TEXT PRIMARY KEY,
    owner_id     TEXT NOT NULL REFERENCES users (id),
    name         TEXT NOT NULL,
    description  TEXT NOT NULL DEFAULT '',
    created_at   TEXT NOT NULL,
    updated_at   TEXT NOT NULL,
    UNIQUE (owner_id, name)
);

CREATE TABLE model_versions (
    id           TEXT PRIMARY KEY,
    model_id     TEXT NOT NULL REFERENCES models (id),
    version      TEXT NOT NULL,
    status       TEXT NOT NULL,        -- IMPORTING, NORMAL, FAILED, DELETING
    error        TEXT,                 -- why it is FAILED
    description  TEXT NOT NULL DEFAULT '',
    source       TEXT NOT NULL,        -- JSON: where the files came from
    settings     TEXT NOT NULL,        -- JSON: what a service runs it with
    config       TEXT,                 -- JSON: the package's config.json, checked and normalised
    manifest     TEXT,                 -- JSON: [{path, sha256, size}, ...] once imported
    processor    TEXT,                 -- JSON: the package's processor component, registered
    size         INTEGER NOT NULL DEFAULT 0,
    created_at   TEXT NOT NULL,
    updated_at   TEXT NOT NULL,
    UNIQUE (model_id, version)
);
CREATE INDEX model_versions_status ON model_versions (status);

-- Events of resources other than notebooks (models now; services and batch jobs next):
-- the seed's texts with its types (Normal, Abnormal, Warning). No foreign key: a model's
-- events outlive a deleted version until the retention job removes them.
CREATE TABLE resource_events (
    id            TEXT PRIMARY KEY,   -- UUIDv7: time ordered
    subject_kind  TEXT NOT NULL,      -- model, service, batch
    subject_id    TEXT NOT NULL,      -- the model (all its versions' events together)
    part          TEXT,               -- the version it is about
    level         TEXT NOT NULL,      -- Normal, Abnormal, Warning
    text          TEXT NOT NULL,
    detail        TEXT,
    time          TEXT NOT NULL
);
CREATE INDEX resource_events_subject ON resource_events (subject_kind, subject_id, id);
