-- Large uploads staged through object storage (seed 6.3.5.1): the client sends the file's
-- parts straight to the store (presigned URLs of a multipart upload), then the gateway
-- puts the object into the notebook's work dir and deletes it from the store.
CREATE TABLE notebook_uploads (
    id             TEXT PRIMARY KEY,
    notebook_id    TEXT NOT NULL REFERENCES notebooks (id) ON DELETE CASCADE,
    path           TEXT NOT NULL,            -- in the work dir
    size           INTEGER NOT NULL,
    sha256         TEXT,                     -- given by the client; checked on landing
    overwrite      INTEGER NOT NULL,
    -- Finished uploads go with their connection; one in flight keeps it (gateway check).
    connection_id  TEXT NOT NULL REFERENCES storage_connections (id) ON DELETE CASCADE,
    bucket         TEXT NOT NULL,
    key            TEXT NOT NULL,            -- the staged object
    upload_id      TEXT,                     -- the store's multipart upload, once started
    part_size      INTEGER NOT NULL,
    status         TEXT NOT NULL,            -- QUEUED, UPLOADING, LANDING, DONE, FAILED, CANCELED
    error          TEXT,
    created_by     TEXT NOT NULL,
    created_at     TEXT NOT NULL,
    updated_at     TEXT NOT NULL
);
CREATE INDEX notebook_uploads_notebook ON notebook_uploads (notebook_id, status);
