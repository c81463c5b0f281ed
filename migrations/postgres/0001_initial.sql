-- csirt store schema, PostgreSQL. Same tables and behaviour as migrations/sqlite.

CREATE TABLE incidents (
    id               BIGINT GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    playbook         TEXT        NOT NULL,
    category         TEXT        NOT NULL,
    title            TEXT        NOT NULL,
    severity         TEXT        NOT NULL CHECK (severity IN ('critical', 'high', 'medium', 'low')),
    status           TEXT        NOT NULL CHECK (status IN ('open', 'acknowledged', 'closed')),
    resolution       TEXT        CHECK (resolution IN ('resolved', 'false-positive', 'duplicate')),
    dedupe_key       TEXT        NOT NULL,
    fields           JSONB       NOT NULL DEFAULT '{}',
    event_count      BIGINT      NOT NULL DEFAULT 0,
    first_seen       TIMESTAMPTZ NOT NULL,
    last_seen        TIMESTAMPTZ NOT NULL,
    opened_at        TIMESTAMPTZ NOT NULL,
    acknowledged_at  TIMESTAMPTZ,
    closed_at        TIMESTAMPTZ,
    assignee         TEXT,
    escalation_level BIGINT      NOT NULL DEFAULT 0,
    thread_message_id TEXT,
    last_update_at   TIMESTAMPTZ,
    node             TEXT,
    CHECK ((status = 'closed') = (resolution IS NOT NULL))
);
CREATE UNIQUE INDEX incidents_open_dedupe ON incidents (playbook, dedupe_key) WHERE status <> 'closed';
CREATE INDEX incidents_active ON incidents (id) WHERE status <> 'closed';
CREATE INDEX incidents_status ON incidents (status, id);
CREATE INDEX incidents_last_seen ON incidents (last_seen);

CREATE TABLE events (
    id          BIGINT GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    incident_id BIGINT REFERENCES incidents (id) ON DELETE RESTRICT,
    playbook    TEXT        NOT NULL,
    rule        TEXT        NOT NULL,
    dedupe_key  TEXT        NOT NULL,
    kind        TEXT        NOT NULL CHECK (kind IN ('log', 'mail')),
    source      TEXT        NOT NULL,
    locator     TEXT        NOT NULL,
    observed_at TIMESTAMPTZ NOT NULL,
    received_at TIMESTAMPTZ NOT NULL,
    text        TEXT        NOT NULL,
    fields      JSONB       NOT NULL DEFAULT '{}'
);
CREATE INDEX events_incident ON events (incident_id, id);
CREATE INDEX events_window ON events (playbook, dedupe_key, observed_at);

CREATE TABLE timeline (
    id          BIGINT GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    incident_id BIGINT      NOT NULL REFERENCES incidents (id) ON DELETE RESTRICT,
    at          TIMESTAMPTZ NOT NULL,
    actor       TEXT        NOT NULL,
    action      TEXT        NOT NULL,
    detail      TEXT        NOT NULL DEFAULT ''
);
CREATE INDEX timeline_incident ON timeline (incident_id, id);
CREATE FUNCTION timeline_append_only() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    RAISE EXCEPTION 'timeline is append-only';
END;
$$;
CREATE TRIGGER timeline_no_update BEFORE UPDATE OR DELETE ON timeline
    FOR EACH ROW EXECUTE FUNCTION timeline_append_only();
CREATE TRIGGER timeline_no_truncate BEFORE TRUNCATE ON timeline
    FOR EACH STATEMENT EXECUTE FUNCTION timeline_append_only();

CREATE TABLE outbox (
    id              BIGINT GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    incident_id     BIGINT REFERENCES incidents (id) ON DELETE RESTRICT,
    kind            TEXT        NOT NULL,
    message_id      TEXT        NOT NULL UNIQUE,
    in_reply_to     TEXT,
    recipients      TEXT        NOT NULL,
    subject         TEXT        NOT NULL,
    body            TEXT        NOT NULL,
    created_at      TIMESTAMPTZ NOT NULL,
    status          TEXT        NOT NULL DEFAULT 'pending' CHECK (status IN ('pending', 'sent', 'failed')),
    attempts        BIGINT      NOT NULL DEFAULT 0,
    next_attempt_at TIMESTAMPTZ NOT NULL,
    last_error      TEXT,
    claimed_by      TEXT,
    claimed_until   TIMESTAMPTZ,
    sent_at         TIMESTAMPTZ
);
CREATE INDEX outbox_due ON outbox (status, next_attempt_at);

CREATE TABLE escalations (
    incident_id BIGINT      NOT NULL REFERENCES incidents (id) ON DELETE RESTRICT,
    level       BIGINT      NOT NULL,
    fired_at    TIMESTAMPTZ NOT NULL,
    node        TEXT        NOT NULL,
    PRIMARY KEY (incident_id, level)
);

CREATE TABLE schedule_runs (
    name          TEXT PRIMARY KEY,
    next_run_at   TIMESTAMPTZ NOT NULL,
    last_run_at   TIMESTAMPTZ,
    claimed_by    TEXT,
    claimed_until TIMESTAMPTZ
);

CREATE TABLE source_checkpoints (
    node        TEXT        NOT NULL,
    path        TEXT        NOT NULL,
    dev         BIGINT      NOT NULL,
    inode       BIGINT      NOT NULL,
    fingerprint TEXT        NOT NULL,
    "offset"    BIGINT      NOT NULL,
    line_no     BIGINT      NOT NULL,
    updated_at  TIMESTAMPTZ NOT NULL,
    PRIMARY KEY (node, path)
);

CREATE TABLE mails (
    id           BIGINT GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    message_key  TEXT        NOT NULL,
    content_hash TEXT        NOT NULL,
    received_at  TIMESTAMPTZ NOT NULL,
    source       TEXT        NOT NULL,
    disposition  TEXT        NOT NULL CHECK (disposition IN ('incident', 'note', 'quarantined')),
    reason       TEXT,
    incident_id  BIGINT REFERENCES incidents (id) ON DELETE RESTRICT,
    size         BIGINT      NOT NULL,
    raw          BYTEA       NOT NULL,
    UNIQUE (message_key, content_hash)
);

CREATE TABLE daemon_heartbeats (
    node       TEXT PRIMARY KEY,
    pid        BIGINT      NOT NULL,
    version    TEXT        NOT NULL,
    started_at TIMESTAMPTZ NOT NULL,
    beat_at    TIMESTAMPTZ NOT NULL,
    summary    TEXT        NOT NULL DEFAULT ''
);

CREATE TABLE daemon_errors (
    id        BIGINT GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    at        TIMESTAMPTZ NOT NULL,
    node      TEXT NOT NULL,
    component TEXT NOT NULL,
    message   TEXT NOT NULL
);
