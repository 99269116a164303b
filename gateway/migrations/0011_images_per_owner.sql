-- Image ids are per owner: two users may each have an image `env`, and neither learns of the
-- other's. Public images (owner_id NULL, an admin's) are unique among themselves; the
-- gateway keeps the ids a user sees (built-in, public, their own) distinct, so a notebook's
-- `image` names one image in its owner's view.
CREATE TABLE images_per_owner (
    id              TEXT NOT NULL,
    ref             TEXT NOT NULL,  -- the engine's or registry's reference
    kind            TEXT NOT NULL,  -- 'registered' | 'saved'
    owner_id        TEXT REFERENCES users (id),
    description     TEXT NOT NULL DEFAULT '',
    source_notebook TEXT,           -- saved: the notebook's id (kept after it is deleted)
    size_bytes      INTEGER,
    created_at      TEXT NOT NULL
);
INSERT INTO images_per_owner (id, ref, kind, owner_id, description, source_notebook, size_bytes, created_at)
    SELECT id, ref, kind, owner_id, description, source_notebook, size_bytes, created_at FROM images;
DROP TABLE images;
ALTER TABLE images_per_owner RENAME TO images;
CREATE UNIQUE INDEX images_public_id ON images (id) WHERE owner_id IS NULL;
CREATE UNIQUE INDEX images_owner_id ON images (owner_id, id) WHERE owner_id IS NOT NULL;
