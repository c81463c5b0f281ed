-- A required report to 個人情報保護委員会 makes an incident L3 and tells the CISO group at once
-- (#16), once per incident: this row is the "once". It is written in the transaction that
-- recorded the facts (or recomputed them under new rules) that made the report required, with
-- the severity raise and its timeline entry. The CISO's mail goes into the outbox in the same
-- transaction when the command can address it (notified_at set); otherwise (a CLI with only
-- --database) notified_at stays NULL and the daemon's escalator writes the mail, claiming the
-- row with a compare-and-set on notified_at, so one daemon or two send it exactly once.

CREATE TABLE pii_escalations (
    incident_id BIGINT      PRIMARY KEY REFERENCES incidents (id) ON DELETE RESTRICT,
    raised_at   TIMESTAMPTZ NOT NULL,
    -- Why (the decision's reasons with the rules they cite, and what became of the severity):
    -- the text of the mail, whoever writes it.
    reason      TEXT        NOT NULL,
    notified_at TIMESTAMPTZ,
    -- Who wrote the mail: the responder's command or the daemon's node.
    notified_by TEXT
);

-- Incidents recorded before this migration whose every report to 個人情報保護委員会 is already
-- made count as handled: an upgrade must not send the CISO a notice of each old, finished case
-- (those still owing a report are raised and announced by the daemon's first recompute).
INSERT INTO pii_escalations (incident_id, raised_at, reason, notified_at, notified_by)
SELECT incident_id, now(),
       '0021 の導入前に個人情報保護委員会への報告を済ませていたため、引き上げと通知はしない',
       now(), 'migration 0021'
FROM pii_clocks WHERE to_party = 'ppc'
GROUP BY incident_id HAVING COUNT(*) = COUNT(done_at);
