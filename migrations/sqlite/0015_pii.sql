-- Personal-information incidents (#16): the facts that decide whether 個人情報保護法 / 番号法
-- require a report and a notification, the reports made, and the statutory clocks derived from
-- them by pii::assess under the rules file. The clocks are stored (not recomputed by the
-- daemon) so that the escalator's reminders, `incidents list --overdue` and a restart all read
-- the same deadlines; every change of a fact or a report recomputes them in its transaction.

-- SQLite: times are RFC 3339 text, booleans 0/1 (as sqlx encodes them), as in 0001.
-- NULL is 未確認 (not known yet), never "no".
CREATE TABLE pii_facts (
    incident_id         INTEGER     PRIMARY KEY REFERENCES incidents (id) ON DELETE RESTRICT,
    persons             INTEGER,
    sensitive           INTEGER,
    financial           INTEGER,
    malicious           INTEGER,
    ordinance_sensitive INTEGER,
    mynumber            INTEGER,
    encrypted           INTEGER,
    -- 覚知: when the city learned of it; the clocks run from here.
    aware_at            TEXT,
    updated_at          TEXT        NOT NULL
);

-- Reports made and notifications done (`csirt incidents reported`). Append-only like the
-- timeline: a wrong entry is corrected by a note, not erased.
CREATE TABLE pii_reports (
    id          INTEGER     PRIMARY KEY AUTOINCREMENT,
    incident_id INTEGER     NOT NULL REFERENCES incidents (id) ON DELETE RESTRICT,
    to_party    TEXT        NOT NULL,
    kind        TEXT        NOT NULL,
    ref         TEXT,
    at          TEXT        NOT NULL,
    note        TEXT,
    actor       TEXT        NOT NULL,
    recorded_at TEXT        NOT NULL
);
CREATE INDEX pii_reports_incident ON pii_reports (incident_id, id);

-- The clocks the decision requires: warn_at (the reminder), due_at (the deadline; NULL for
-- 速やかに), done_at (the first matching report).
CREATE TABLE pii_clocks (
    incident_id INTEGER     NOT NULL REFERENCES incidents (id) ON DELETE RESTRICT,
    duty        TEXT        NOT NULL,
    name        TEXT        NOT NULL,
    to_party    TEXT        NOT NULL,
    kind        TEXT        NOT NULL,
    warn_at     TEXT        NOT NULL,
    due_at      TEXT,
    source      TEXT        NOT NULL,
    done_at     TEXT,
    PRIMARY KEY (incident_id, duty, name)
);
-- The morning check (`incidents list --overdue`) reads the pending clocks by their warning.
CREATE INDEX pii_clocks_pending ON pii_clocks (warn_at) WHERE done_at IS NULL;
