-- Housekeeping (#13, item 2): the store is bounded by retention, and every deletion is counted.
-- A raw mail past `[retention] mails` keeps its row (hash, incident, sender, subject: what the
-- incident refers to) and loses only its bytes; this says when they went, so that a blank `raw`
-- is never mistaken for an empty message.
ALTER TABLE mails ADD COLUMN raw_pruned_at TIMESTAMPTZ;

-- What housekeeping has deleted, per kind, since the store was created: `csirt status` shows it.
-- Updated in the transaction that deletes, so the totals are exact.
CREATE TABLE prune_totals (
    kind         TEXT        PRIMARY KEY,
    total        BIGINT      NOT NULL,
    last_at      TIMESTAMPTZ NOT NULL
);

-- The raw mails still held, oldest first: what the mail retention reads, and the oldest raw
-- mail that `csirt status` shows.
CREATE INDEX mails_raw_kept ON mails (received_at) WHERE raw_pruned_at IS NULL;
