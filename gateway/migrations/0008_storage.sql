-- Object storage connections: an S3-compatible endpoint and the credentials to use there.
-- The secret key is sealed (AES-256-GCM under the gateway's secret key, bound to the row's
-- id: gateway/src/secrets.rs) and never returned by the API.
CREATE TABLE storage_connections (
    id             TEXT PRIMARY KEY,
    owner_id       TEXT NOT NULL REFERENCES users (id),
    name           TEXT NOT NULL,
    endpoint       TEXT NOT NULL,  -- http(s)://host[:port]
    region         TEXT NOT NULL,
    bucket         TEXT,           -- the default bucket, if one was given
    access_key_id  TEXT NOT NULL,
    secret_sealed  TEXT NOT NULL,  -- v1:base64(nonce || ciphertext || tag)
    path_style     INTEGER NOT NULL,
    created_at     TEXT NOT NULL,
    checked_at     TEXT NOT NULL,  -- when the store last accepted the credentials
    UNIQUE (owner_id, name)
);
