-- SSH key pairs: only the public key is stored; a generated private key is shown once.
CREATE TABLE key_pairs (
    id           TEXT PRIMARY KEY,
    owner_id     TEXT NOT NULL REFERENCES users (id),
    name         TEXT NOT NULL,
    algorithm    TEXT NOT NULL,
    public_key   TEXT NOT NULL, -- OpenSSH one-line form
    fingerprint  TEXT NOT NULL, -- SHA256:…
    created_at   TEXT NOT NULL,
    UNIQUE (owner_id, name)
);

-- The key pairs a notebook accepts for SSH logins.
CREATE TABLE notebook_key_pairs (
    notebook_id  TEXT NOT NULL REFERENCES notebooks (id) ON DELETE CASCADE,
    key_pair_id  TEXT NOT NULL REFERENCES key_pairs (id),
    PRIMARY KEY (notebook_id, key_pair_id)
);
CREATE INDEX notebook_key_pairs_key ON notebook_key_pairs (key_pair_id);

-- A notebook's SSH settings; its key pairs are in notebook_key_pairs.
ALTER TABLE notebooks ADD COLUMN ssh_enabled INTEGER NOT NULL DEFAULT 0;
-- Comma-separated IPs and CIDRs that may connect; empty: any address.
ALTER TABLE notebooks ADD COLUMN ssh_whitelist TEXT NOT NULL DEFAULT '';
