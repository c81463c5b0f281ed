-- csirt store schema, SQLite. Times are UTC, RFC 3339 text as sqlx encodes chrono::DateTime<Utc>
-- (truncated to microseconds by the code, so both backends hold the same values).
-- The schema covers the whole design: log and mail intake, outbox, escalation and schedules.

CREATE TABLE incidents (
    id               INTEGER PRIMARY KEY AUTOINCREMENT,
    playbook         TEXT    NOT NULL,
    category         TEXT    NOT NULL,
    title            TEXT    NOT NULL,
    severity         TEXT    NOT NULL CHECK (severity IN ('critical', 'high', 'medium', 'low')),
    status           TEXT    NOT NULL CHECK (status IN ('open', 'acknowledged', 'closed')),
    resolution       TEXT    CHECK (resolution IN ('resolved', 'false-positive', 'duplicate')),
    dedupe_key       TEXT    NOT NULL,
    fields           TEXT    NOT NULL DEFAULT '{}',
    event_count      INTEGER NOT NULL DEFAULT 0,
    first_seen       TEXT    NOT NULL,
    last_seen        TEXT    NOT NULL,
    opened_at        TEXT    NOT NULL,
    acknowledged_at  TEXT,
    closed_at        TEXT,
    assignee         TEXT,
    escalation_level INTEGER NOT NULL DEFAULT 0,
    -- Message-ID of the first notification; every later mail threads under it.
    thread_message_id TEXT,
    last_update_at   TEXT,
    node             TEXT,
    CHECK ((status = 'closed') = (resolution IS NOT NULL))
);
-- One open (not closed) incident per playbook and dedupe key: hits join it.
CREATE UNIQUE INDEX incidents_open_dedupe ON incidents (playbook, dedupe_key) WHERE status <> 'closed';
-- The responder's default view: not closed, newest first.
CREATE INDEX incidents_active ON incidents (id) WHERE status <> 'closed';
CREATE INDEX incidents_status ON incidents (status, id);
CREATE INDEX incidents_last_seen ON incidents (last_seen);

-- Matched log lines and mails. incident_id is NULL while a threshold has not been reached:
-- threshold windows are derived from these rows, so a restart loses no partial count.
CREATE TABLE events (
    id          INTEGER PRIMARY KEY AUTOINCREMENT,
    incident_id INTEGER REFERENCES incidents (id) ON DELETE RESTRICT,
    playbook    TEXT    NOT NULL,
    rule        TEXT    NOT NULL,
    dedupe_key  TEXT    NOT NULL,
    kind        TEXT    NOT NULL CHECK (kind IN ('log', 'mail')),
    source      TEXT    NOT NULL,
    locator     TEXT    NOT NULL,
    observed_at TEXT    NOT NULL,
    received_at TEXT    NOT NULL,
    text        TEXT    NOT NULL,
    fields      TEXT    NOT NULL DEFAULT '{}'
);
CREATE INDEX events_incident ON events (incident_id, id);
CREATE INDEX events_window ON events (playbook, dedupe_key, observed_at);

-- Append-only: who did what, when.
CREATE TABLE timeline (
    id          INTEGER PRIMARY KEY AUTOINCREMENT,
    incident_id INTEGER NOT NULL REFERENCES incidents (id) ON DELETE RESTRICT,
    at          TEXT    NOT NULL,
    actor       TEXT    NOT NULL,
    action      TEXT    NOT NULL,
    detail      TEXT    NOT NULL DEFAULT ''
);
CREATE INDEX timeline_incident ON timeline (incident_id, id);
CREATE TRIGGER timeline_no_update BEFORE UPDATE ON timeline
BEGIN SELECT RAISE(ABORT, 'timeline is append-only'); END;
CREATE TRIGGER timeline_no_delete BEFORE DELETE ON timeline
BEGIN SELECT RAISE(ABORT, 'timeline is append-only'); END;

-- Transactional outbox: written with the change that causes it, drained by the notifier.
CREATE TABLE outbox (
    id              INTEGER PRIMARY KEY AUTOINCREMENT,
    incident_id     INTEGER REFERENCES incidents (id) ON DELETE RESTRICT,
    kind            TEXT    NOT NULL,
    message_id      TEXT    NOT NULL UNIQUE,
    in_reply_to     TEXT,
    recipients      TEXT    NOT NULL,
    subject         TEXT    NOT NULL,
    body            TEXT    NOT NULL,
    created_at      TEXT    NOT NULL,
    status          TEXT    NOT NULL DEFAULT 'pending' CHECK (status IN ('pending', 'sent', 'failed')),
    attempts        INTEGER NOT NULL DEFAULT 0,
    next_attempt_at TEXT    NOT NULL,
    last_error      TEXT,
    claimed_by      TEXT,
    claimed_until   TEXT,
    sent_at         TEXT
);
CREATE INDEX outbox_due ON outbox (status, next_attempt_at);

-- Each escalation level fires at most once per incident (primary key).
CREATE TABLE escalations (
    incident_id INTEGER NOT NULL REFERENCES incidents (id) ON DELETE RESTRICT,
    level       INTEGER NOT NULL,
    fired_at    TEXT    NOT NULL,
    node        TEXT    NOT NULL,
    PRIMARY KEY (incident_id, level)
);

-- Cron schedules: one row per configured schedule, claimed with a lease.
CREATE TABLE schedule_runs (
    name          TEXT PRIMARY KEY,
    next_run_at   TEXT NOT NULL,
    last_run_at   TEXT,
    claimed_by    TEXT,
    claimed_until TEXT
);

-- Where each log source stands: file identity and the offset after the last committed line.
CREATE TABLE source_checkpoints (
    node        TEXT    NOT NULL,
    path        TEXT    NOT NULL,
    dev         INTEGER NOT NULL,
    inode       INTEGER NOT NULL,
    fingerprint TEXT    NOT NULL,
    "offset"    INTEGER NOT NULL,
    line_no     INTEGER NOT NULL,
    updated_at  TEXT    NOT NULL,
    PRIMARY KEY (node, path)
);

-- Every intake mail, raw bytes kept; the unique key makes redelivery a no-op.
CREATE TABLE mails (
    id           INTEGER PRIMARY KEY AUTOINCREMENT,
    message_key  TEXT    NOT NULL,
    content_hash TEXT    NOT NULL,
    received_at  TEXT    NOT NULL,
    source       TEXT    NOT NULL,
    disposition  TEXT    NOT NULL CHECK (disposition IN ('incident', 'note', 'quarantined')),
    reason       TEXT,
    incident_id  INTEGER REFERENCES incidents (id) ON DELETE RESTRICT,
    size         INTEGER NOT NULL,
    raw          BLOB    NOT NULL,
    UNIQUE (message_key, content_hash)
);

CREATE TABLE daemon_heartbeats (
    node       TEXT PRIMARY KEY,
    pid        INTEGER NOT NULL,
    version    TEXT    NOT NULL,
    started_at TEXT    NOT NULL,
    beat_at    TEXT    NOT NULL,
    summary    TEXT    NOT NULL DEFAULT ''
);

-- Refusals and failures that `csirt status` shows (bounded by the daemon).
CREATE TABLE daemon_errors (
    id        INTEGER PRIMARY KEY AUTOINCREMENT,
    at        TEXT NOT NULL,
    node      TEXT NOT NULL,
    component TEXT NOT NULL,
    message   TEXT NOT NULL
);
