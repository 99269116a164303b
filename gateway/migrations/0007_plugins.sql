-- Wasm plugins (plugins/ crate): a component registered under a name and version. The
-- component and its compiled form live in the data dir by digest (plugins/cache); model
-- files uploaded with an inference processor in plugins/files/<name>/<version>/.
CREATE TABLE plugins (
    name        TEXT NOT NULL,
    version     TEXT NOT NULL,
    owner_id    TEXT NOT NULL REFERENCES users (id),
    digest      TEXT NOT NULL,  -- sha256 of the component, hex
    world       TEXT NOT NULL,  -- inference-processor | workflow-step | training-algorithm
    description TEXT NOT NULL DEFAULT '',
    limits      TEXT NOT NULL,  -- JSON: the limits in force (manifest resolved with defaults)
    manifest    TEXT NOT NULL,  -- JSON: the limits as the manifest gave them
    exports     TEXT NOT NULL,  -- JSON array of export names
    imports     TEXT NOT NULL,  -- JSON array of import names
    files       TEXT NOT NULL DEFAULT '[]',  -- JSON array of model file names
    size_bytes  INTEGER NOT NULL,
    compile_ms  REAL NOT NULL,
    created_at  TEXT NOT NULL,
    PRIMARY KEY (name, version)
);
CREATE INDEX plugins_digest ON plugins (digest);
