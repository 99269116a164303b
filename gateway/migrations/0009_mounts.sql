-- Object-storage folders mounted into notebooks (FUSE on the host, made by the gateway with
-- rclone). Dynamic mounts live under /data/<name>/ and are made again at every start; a
-- mount never owns the objects behind it.
CREATE TABLE notebook_mounts (
    id             TEXT PRIMARY KEY,
    notebook_id    TEXT NOT NULL REFERENCES notebooks (id) ON DELETE CASCADE,
    kind           TEXT NOT NULL,            -- dynamic
    name           TEXT NOT NULL,            -- the folder under /data
    uri            TEXT NOT NULL,            -- obs://bucket/prefix/
    connection_id  TEXT NOT NULL REFERENCES storage_connections (id),
    read_only      INTEGER NOT NULL,
    status         TEXT NOT NULL,            -- MOUNTING, MOUNTED, UNMOUNTED, FAILED
    error          TEXT,                     -- why it is FAILED
    pid            INTEGER,                  -- the rclone process serving it
    start_ticks    INTEGER,                  -- its start time (/proc/<pid>/stat field 22)
    created_at     TEXT NOT NULL,
    updated_at     TEXT NOT NULL,
    UNIQUE (notebook_id, name)
);
CREATE INDEX notebook_mounts_connection ON notebook_mounts (connection_id);
