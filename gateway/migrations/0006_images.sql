-- Images besides the settings' built-in ones: registered (an existing engine or registry
-- image given a name; public when an admin registers it, owner_id NULL) and saved (a running
-- notebook committed and pushed). `id` is what notebooks name (notebooks.image): the
-- registered name, or namespace/name:tag for saved images.
CREATE TABLE images (
    id              TEXT PRIMARY KEY,
    ref             TEXT NOT NULL,  -- the engine's or registry's reference
    kind            TEXT NOT NULL,  -- 'registered' | 'saved'
    owner_id        TEXT REFERENCES users (id),
    description     TEXT NOT NULL DEFAULT '',
    source_notebook TEXT,           -- saved: the notebook's id (kept after it is deleted)
    size_bytes      INTEGER,
    created_at      TEXT NOT NULL
);
CREATE INDEX images_owner ON images (owner_id);
