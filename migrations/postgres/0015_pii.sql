-- Personal-information incidents (#16): the facts that decide whether 個人情報保護法 / 番号法
-- require a report and a notification, the reports made, and the statutory clocks derived from
-- them by pii::assess under the rules file. The clocks are stored (not recomputed by the
-- daemon) so that the escalator's reminders, `incidents list --overdue` and a restart all read
-- the same deadlines; every change of a fact or a report recomputes them in its transaction.

-- NULL is 未確認 (not known yet), never "no".
CREATE TABLE pii_facts (
    incident_id         BIGINT      PRIMARY KEY REFERENCES incidents (id) ON DELETE RESTRICT,
    persons             BIGINT,
    sensitive           BOOLEAN,
    financial           BOOLEAN,
    malicious           BOOLEAN,
    ordinance_sensitive BOOLEAN,
    mynumber            BOOLEAN,
    encrypted           BOOLEAN,
    -- 覚知: when the city learned of it; the clocks run from here.
    aware_at            TIMESTAMPTZ,
    updated_at          TIMESTAMPTZ NOT NULL
);

-- Reports made and notifications done (`csirt incidents reported`). Append-only like the
-- timeline: a wrong entry is corrected by a note, not erased.
CREATE TABLE pii_reports (
    id          BIGSERIAL   PRIMARY KEY,
    incident_id BIGINT      NOT NULL REFERENCES incidents (id) ON DELETE RESTRICT,
    to_party    TEXT        NOT NULL,
    kind        TEXT        NOT NULL,
    ref         TEXT,
    at          TIMESTAMPTZ NOT NULL,
    note        TEXT,
    actor       TEXT        NOT NULL,
    recorded_at TIMESTAMPTZ NOT NULL
);
CREATE INDEX pii_reports_incident ON pii_reports (incident_id, id);

-- The clocks the decision requires: warn_at (the reminder), due_at (the deadline; NULL for
-- 速やかに), done_at (the first matching report).
CREATE TABLE pii_clocks (
    incident_id BIGINT      NOT NULL REFERENCES incidents (id) ON DELETE RESTRICT,
    duty        TEXT        NOT NULL,
    name        TEXT        NOT NULL,
    to_party    TEXT        NOT NULL,
    kind        TEXT        NOT NULL,
    warn_at     TIMESTAMPTZ NOT NULL,
    due_at      TIMESTAMPTZ,
    source      TEXT        NOT NULL,
    done_at     TIMESTAMPTZ,
    PRIMARY KEY (incident_id, duty, name)
);
-- The morning check (`incidents list --overdue`) reads the pending clocks by their warning.
CREATE INDEX pii_clocks_pending ON pii_clocks (warn_at) WHERE done_at IS NULL;
