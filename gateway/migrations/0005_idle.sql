-- Idle stop: per-notebook idle timeout (NULL: the gateway's default; 0: off), the last
-- activity per source as JSON ({"proxy": unix seconds, "kernel": …, "ssh": …, "cpu": …}),
-- and when the idle warning of the current idle period was given.
ALTER TABLE notebooks ADD COLUMN idle_timeout_seconds INTEGER;
ALTER TABLE notebooks ADD COLUMN activity TEXT;
ALTER TABLE notebooks ADD COLUMN idle_warned_at TEXT;
