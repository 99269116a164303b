-- Batch services whose model runs on a container or process engine launch instances
-- through the same supervisor as real-time services, recorded here too: `service_id` is a
-- real-time or a batch service's id, so it no longer references `services`. (The cascade it
-- had never stopped an instance, only lost its handle: the services stop their recorded
-- instances before their rows go; a gateway start removes instances left of a service that
-- is gone.) SQLite drops a reference only by copying the table.
CREATE TABLE service_instances_new (
    id          TEXT PRIMARY KEY,
    service_id  TEXT NOT NULL,     -- services.id or batch_services.id
    version_id  TEXT NOT NULL,
    slot        INTEGER NOT NULL,  -- which of the version's instances it is (0-based)
    handle      TEXT,
    restarts    INTEGER NOT NULL DEFAULT 0,
    created_at  TEXT NOT NULL
);
INSERT INTO service_instances_new (id, service_id, version_id, slot, handle, restarts, created_at)
    SELECT id, service_id, version_id, slot, handle, restarts, created_at FROM service_instances;
DROP TABLE service_instances;
ALTER TABLE service_instances_new RENAME TO service_instances;
CREATE INDEX service_instances_service ON service_instances (service_id);
