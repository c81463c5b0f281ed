-- Mail intake (#4): the keys that tie reports of one campaign of suspicious mail to one
-- incident: the reported message's Message-ID, each attachment's SHA-256, its sender and subject.
CREATE TABLE report_keys (
    report_key  TEXT    NOT NULL,
    incident_id BIGINT NOT NULL REFERENCES incidents (id) ON DELETE RESTRICT,
    PRIMARY KEY (report_key, incident_id)
);
CREATE INDEX mails_incident ON mails (incident_id);
CREATE INDEX mails_quarantined ON mails (id) WHERE disposition = 'quarantined';
