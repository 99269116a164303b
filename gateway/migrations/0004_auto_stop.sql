-- Auto-stop: the lease deadline of a running notebook (NULL when auto-stop is off or the
-- notebook is not running) and when its warning was given (NULL until then; reset by renew).
ALTER TABLE notebooks ADD COLUMN stop_at TEXT;
ALTER TABLE notebooks ADD COLUMN stop_warned_at TEXT;
