-- What a run needs beyond its parameters to go on after a restart (issue 19): each
-- storage's root, the delayed parameters still awaited, the storage connection its paths
-- are read and written through (none: the owner's own storage), and what started it.
-- Per step: the variables it published (`access_address`) and the tail of its log.
ALTER TABLE workflow_runs ADD COLUMN storages TEXT NOT NULL DEFAULT '{}';
ALTER TABLE workflow_runs ADD COLUMN awaiting TEXT NOT NULL DEFAULT '[]';
ALTER TABLE workflow_runs ADD COLUMN connection_id TEXT;
ALTER TABLE workflow_runs ADD COLUMN trigger TEXT NOT NULL DEFAULT 'api';
ALTER TABLE workflow_run_steps ADD COLUMN variables TEXT;
ALTER TABLE workflow_run_steps ADD COLUMN log TEXT;
