-- The instances of real-time services whose models run on a container or process engine
-- (spec/inference.md §3.2): one row per instance with the backend's handle, written before
-- the instance is launched (handle NULL) and given its handle at once, so a restarted
-- gateway re-attaches to instances that kept running and removes what it cannot use.
CREATE TABLE service_instances (
    id          TEXT PRIMARY KEY,
    service_id  TEXT NOT NULL REFERENCES services (id) ON DELETE CASCADE,
    version_id  TEXT NOT NULL,
    slot        INTEGER NOT NULL,  -- which of the version's instances it is (0-based)
    handle      TEXT,
    restarts    INTEGER NOT NULL DEFAULT 0,
    created_at  TEXT NOT NULL
);
CREATE INDEX service_instances_service ON service_instances (service_id);
