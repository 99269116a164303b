-- Training algorithms (spec/training.md §1.2, §2.1): a user's named recipe a training job
-- runs. `wasm` ones name a registered plugin of world training-algorithm (its describe()
-- answer is kept in `spec`); `container` ones an image (none: the notebook environment on
-- the process backend), a code dir on object storage and a boot file or command.
CREATE TABLE algorithms (
    id              TEXT PRIMARY KEY,
    owner_id        TEXT NOT NULL REFERENCES users (id),
    name            TEXT NOT NULL,
    description     TEXT NOT NULL DEFAULT '',
    kind            TEXT NOT NULL,   -- wasm | container
    plugin_name     TEXT,            -- wasm: the plugin registration it runs
    plugin_version  TEXT,
    spec            TEXT NOT NULL,   -- JSON: boot, code dir, inputs, outputs, hyperparameters, metrics
    created_at      TEXT NOT NULL,
    updated_at      TEXT NOT NULL,
    UNIQUE (owner_id, name)
);
CREATE INDEX algorithms_plugin ON algorithms (plugin_name, plugin_version);
