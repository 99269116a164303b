-- Atelier state. Plain SQL that SQLite and PostgreSQL both accept: TEXT ids (UUIDs),
-- RFC 3339 UTC timestamps with a fixed width so they sort as text.

CREATE TABLE users (
    id          TEXT PRIMARY KEY,
    name        TEXT NOT NULL UNIQUE,
    role        TEXT NOT NULL CHECK (role IN ('admin', 'user')),
    created_at  TEXT NOT NULL
);

-- API tokens and browser sessions; only a SHA-256 of the secret is stored.
CREATE TABLE tokens (
    id            TEXT PRIMARY KEY,
    user_id       TEXT NOT NULL REFERENCES users (id) ON DELETE CASCADE,
    kind          TEXT NOT NULL CHECK (kind IN ('api', 'session')),
    secret_hash   TEXT NOT NULL UNIQUE,
    label         TEXT NOT NULL DEFAULT '',
    created_at    TEXT NOT NULL,
    last_used_at  TEXT,
    expires_at    TEXT
);
CREATE INDEX tokens_user ON tokens (user_id);

CREATE TABLE notebooks (
    id                 TEXT PRIMARY KEY,
    owner_id           TEXT NOT NULL REFERENCES users (id),
    name               TEXT NOT NULL,
    description        TEXT NOT NULL DEFAULT '',
    flavor             TEXT NOT NULL,
    image              TEXT NOT NULL,
    status             TEXT NOT NULL,
    status_reason      TEXT,
    unhealthy          INTEGER NOT NULL DEFAULT 0,
    auto_stop_enabled  INTEGER NOT NULL,
    auto_stop_hours    INTEGER NOT NULL,
    backend            TEXT NOT NULL,
    handle             TEXT,
    created_at         TEXT NOT NULL,
    updated_at         TEXT NOT NULL,
    last_activity_at   TEXT,
    UNIQUE (owner_id, name)
);
CREATE INDEX notebooks_owner ON notebooks (owner_id, created_at);

CREATE TABLE events (
    id           TEXT PRIMARY KEY, -- UUIDv7: time ordered
    notebook_id  TEXT NOT NULL REFERENCES notebooks (id) ON DELETE CASCADE,
    name         TEXT NOT NULL,
    description  TEXT NOT NULL,
    severity     TEXT NOT NULL,
    detail       TEXT,
    time         TEXT NOT NULL
);
CREATE INDEX events_notebook ON events (notebook_id, id);

-- Append-only; never cascades, so it outlives what it describes.
CREATE TABLE audit (
    id             TEXT PRIMARY KEY, -- UUIDv7: time ordered
    time           TEXT NOT NULL,
    user_name      TEXT NOT NULL,
    action         TEXT NOT NULL,
    resource_type  TEXT NOT NULL,
    resource_id    TEXT NOT NULL,
    resource_name  TEXT NOT NULL,
    outcome        TEXT NOT NULL,
    detail         TEXT
);
CREATE INDEX audit_time ON audit (id);
