-- Durable operations: the work a resource's transient status stands for (a notebook
-- CREATING, STARTING, STOPPING, DELETING or SNAPSHOTTING; an upload LANDING). Written in the
-- transaction of the transition into that status and removed in the one out of it, so a
-- restarted gateway finds exactly the work a previous one left unfinished, and counts how
-- many starts it has already survived (to give up on work that keeps killing the gateway).
CREATE TABLE operations (
    kind         TEXT NOT NULL,            -- notebook, upload
    resource_id  TEXT NOT NULL,
    status       TEXT NOT NULL,            -- the transient status it stands for
    attempts     INTEGER NOT NULL DEFAULT 0, -- gateway starts that resumed it
    started_at   TEXT NOT NULL,
    PRIMARY KEY (kind, resource_id)
);

-- Work under way when this migration runs (an upgrade after a crash).
INSERT INTO operations (kind, resource_id, status, started_at)
    SELECT 'notebook', id, status, updated_at FROM notebooks
    WHERE status IN ('CREATING', 'STARTING', 'STOPPING', 'DELETING', 'SNAPSHOTTING');
INSERT INTO operations (kind, resource_id, status, started_at)
    SELECT 'upload', id, status, updated_at FROM notebook_uploads WHERE status = 'LANDING';
