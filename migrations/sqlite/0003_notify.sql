-- Notification and escalation (#5).
-- How many events the last mail about an incident covered: an update is due when event_count
-- has grown past it and update_interval has passed since last_update_at.
ALTER TABLE incidents ADD COLUMN notified_event_count INTEGER NOT NULL DEFAULT 0;

-- A mail that went out inside another (a flood of new incidents sent as one digest) is marked
-- sent with the Message-ID of the mail that carried it.
ALTER TABLE outbox ADD COLUMN sent_in TEXT;
CREATE INDEX outbox_pending ON outbox (next_attempt_at) WHERE status = 'pending';

-- Each deadline reminder fires at most once per incident (primary key), as escalations do.
CREATE TABLE deadline_reminders (
    incident_id INTEGER NOT NULL REFERENCES incidents (id) ON DELETE RESTRICT,
    name        TEXT    NOT NULL,
    fired_at    TEXT    NOT NULL,
    node        TEXT    NOT NULL,
    PRIMARY KEY (incident_id, name)
);
