-- Applications (spec/inference.md §1.4 AUTH-03/04, §2.10, §3.4): a user's apps call the
-- services bound to them with an AppCode (`X-Apig-AppCode`) or the AppKey (`apikey`).
-- Credentials are sealed under the gateway's secret key (crate::secrets, bound to their row)
-- so the owner can see them again; a call finds its app by the SHA-256 digest of what it
-- presents, then compares the opened value in constant time.
CREATE TABLE apps (
    id             TEXT PRIMARY KEY,
    owner_id       TEXT NOT NULL REFERENCES users (id),
    name           TEXT NOT NULL,
    description    TEXT NOT NULL DEFAULT '',
    key_digest     TEXT NOT NULL UNIQUE,  -- hex SHA-256 of the AppKey
    key_sealed     TEXT NOT NULL,
    secret_sealed  TEXT NOT NULL,         -- the AppSecret (for request signing, next)
    created_at     TEXT NOT NULL,
    updated_at     TEXT NOT NULL,
    UNIQUE (owner_id, name)
);

-- At most 5 per app (checked by the gateway).
CREATE TABLE app_codes (
    id          TEXT PRIMARY KEY,
    app_id      TEXT NOT NULL REFERENCES apps (id) ON DELETE CASCADE,
    digest      TEXT NOT NULL UNIQUE,     -- hex SHA-256 of the AppCode
    sealed      TEXT NOT NULL,
    created_at  TEXT NOT NULL
);
CREATE INDEX app_codes_app ON app_codes (app_id);

-- Which services an app may call (both the same user's). A deleted service or app takes
-- its bindings with it.
CREATE TABLE app_services (
    app_id      TEXT NOT NULL REFERENCES apps (id) ON DELETE CASCADE,
    service_id  TEXT NOT NULL REFERENCES services (id) ON DELETE CASCADE,
    created_at  TEXT NOT NULL,
    PRIMARY KEY (app_id, service_id)
);
CREATE INDEX app_services_service ON app_services (service_id);
