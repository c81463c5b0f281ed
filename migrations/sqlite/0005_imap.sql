-- IMAP intake (#4): where each account's mailbox has been read to. A new UIDVALIDITY means the
-- server renumbered the mailbox: it is read again from the start (redelivery is a no-op).
CREATE TABLE imap_state (
    account     TEXT    PRIMARY KEY,
    uidvalidity INTEGER NOT NULL,
    last_uid    INTEGER NOT NULL
);
