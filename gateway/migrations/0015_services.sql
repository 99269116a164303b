-- Real-time services (spec/inference.md §2.8, §3.2): a user's named service runs one or
-- more NORMAL model versions with traffic weights; `spec` holds what it was deployed with.
CREATE TABLE services (
    id               TEXT PRIMARY KEY,
    owner_id         TEXT NOT NULL REFERENCES users (id),
    name             TEXT NOT NULL,
    description      TEXT NOT NULL DEFAULT '',
    status           TEXT NOT NULL,
    status_reason    TEXT,
    spec             TEXT NOT NULL,     -- JSON: versions and weights, instances, limits, …
    deploy_deadline  TEXT,              -- a DEPLOYING service not up by then is FAILED
    stop_at          TEXT,              -- auto-stop deadline while it runs
    created_at       TEXT NOT NULL,
    updated_at       TEXT NOT NULL,
    UNIQUE (owner_id, name)
);
CREATE INDEX services_status ON services (status);

-- The model versions a service runs: a version listed here cannot be deleted.
CREATE TABLE service_models (
    service_id        TEXT NOT NULL REFERENCES services (id) ON DELETE CASCADE,
    model_version_id  TEXT NOT NULL REFERENCES model_versions (id),
    PRIMARY KEY (service_id, model_version_id)
);
CREATE INDEX service_models_version ON service_models (model_version_id);
