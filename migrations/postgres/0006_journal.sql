-- The systemd journal as a source (#10): where each node stands in each [[journal]] source, as
-- the journal's own cursor of the last entry committed, written in the same transaction as the
-- hits from the entries before it (the exactly-once point, as log_checkpoints is for files).
CREATE TABLE journal_cursors (
    node        TEXT NOT NULL,
    source      TEXT NOT NULL,
    cursor      TEXT NOT NULL,
    -- The last committed entry's own time (__REALTIME_TIMESTAMP): the lag `csirt status` shows.
    entry_at    TIMESTAMPTZ NOT NULL,
    updated_at  TIMESTAMPTZ NOT NULL,
    PRIMARY KEY (node, source)
);
