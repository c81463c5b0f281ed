-- Mail failures that are seen (#12, items 5 and 7).
-- A permanent failure's time, so that `csirt status` can tell a failure of the last 24 hours
-- (exit 3, for monitoring) from an old one that was dealt with.
ALTER TABLE outbox ADD COLUMN failed_at TEXT;
CREATE INDEX outbox_failed_at ON outbox (failed_at) WHERE status = 'failed';

-- A recipient the server refused (5xx) while others of the same mail were accepted: the row is
-- sent, but a typo in the lead's address must not be only a line in the daemon's log.
CREATE TABLE mail_refusals (
    id        INTEGER PRIMARY KEY AUTOINCREMENT,
    outbox_id INTEGER NOT NULL REFERENCES outbox (id) ON DELETE RESTRICT,
    recipient TEXT    NOT NULL,
    error     TEXT    NOT NULL,
    at        TEXT    NOT NULL
);
CREATE INDEX mail_refusals_at ON mail_refusals (at);

-- Every quarantine is announced to [notify] to, once: the sender and subject the notice lists
-- (read from the headers when the mail was quarantined), and when it was announced.
ALTER TABLE mails ADD COLUMN sender TEXT;
ALTER TABLE mails ADD COLUMN subject TEXT;
ALTER TABLE mails ADD COLUMN announced_at TEXT;
CREATE INDEX mails_unannounced ON mails (id) WHERE disposition = 'quarantined' AND announced_at IS NULL;
CREATE INDEX mails_announced_at ON mails (announced_at) WHERE announced_at IS NOT NULL;
