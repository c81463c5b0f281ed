-- Log ingest (#3). Checkpoints are keyed by file identity, not path: a rotated file keeps its
-- position under its new name, and a glob that also matches `auth.log.1` cannot read it twice.
DROP TABLE source_checkpoints;

CREATE TABLE log_checkpoints (
    node        TEXT    NOT NULL,
    dev         INTEGER NOT NULL,
    inode       INTEGER NOT NULL,
    -- "<length>:<hash>" of the file's first bytes; a reused inode has a different head.
    fingerprint TEXT    NOT NULL,
    path        TEXT    NOT NULL,
    "offset"    INTEGER NOT NULL,
    line_no     INTEGER NOT NULL,
    updated_at  TEXT    NOT NULL,
    PRIMARY KEY (node, dev, inode)
);

-- The [[logs]] patterns a node has started on: files present when a pattern is first seen
-- are read from their end (start_at), files that appear afterwards from their beginning.
CREATE TABLE log_patterns (
    node       TEXT NOT NULL,
    pattern    TEXT NOT NULL,
    started_at TEXT NOT NULL,
    PRIMARY KEY (node, pattern)
);

-- Exact hit counts per playbook and dedupe key, whether or not a threshold was reached:
-- evidence rows are bounded, these counters are not lossy.
CREATE TABLE hit_counts (
    playbook   TEXT    NOT NULL,
    dedupe_key TEXT    NOT NULL,
    hits       INTEGER NOT NULL,
    first_seen TEXT    NOT NULL,
    last_seen  TEXT    NOT NULL,
    PRIMARY KEY (playbook, dedupe_key)
);

-- Pending (below-threshold) events by key and time, for the window count.
CREATE INDEX events_pending ON events (playbook, dedupe_key, observed_at) WHERE incident_id IS NULL;
