-- Why a daemon's ingest is stopped (#13: a batch that does not commit; a store whose disk is
-- full), while it is, for `csirt status`. Set and cleared by the store writer with an UPDATE of
-- the daemon's own heartbeat row: the write most likely to find room on a full disk (a HOT
-- update within its page, no new page), where an insert into daemon_errors may need one.
ALTER TABLE daemon_heartbeats ADD COLUMN ingest_stopped TEXT;
ALTER TABLE daemon_heartbeats ADD COLUMN ingest_stopped_at TIMESTAMPTZ;
