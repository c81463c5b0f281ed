-- Log ingest (#3); see migrations/sqlite/0002_log_ingest.sql for the reasons.
DROP TABLE source_checkpoints;

CREATE TABLE log_checkpoints (
    node        TEXT        NOT NULL,
    dev         BIGINT      NOT NULL,
    inode       BIGINT      NOT NULL,
    fingerprint TEXT        NOT NULL,
    path        TEXT        NOT NULL,
    "offset"    BIGINT      NOT NULL,
    line_no     BIGINT      NOT NULL,
    updated_at  TIMESTAMPTZ NOT NULL,
    PRIMARY KEY (node, dev, inode)
);

CREATE TABLE log_patterns (
    node       TEXT        NOT NULL,
    pattern    TEXT        NOT NULL,
    started_at TIMESTAMPTZ NOT NULL,
    PRIMARY KEY (node, pattern)
);

CREATE TABLE hit_counts (
    playbook   TEXT        NOT NULL,
    dedupe_key TEXT        NOT NULL,
    hits       BIGINT      NOT NULL,
    first_seen TIMESTAMPTZ NOT NULL,
    last_seen  TIMESTAMPTZ NOT NULL,
    PRIMARY KEY (playbook, dedupe_key)
);

CREATE INDEX events_pending ON events (playbook, dedupe_key, observed_at) WHERE incident_id IS NULL;
