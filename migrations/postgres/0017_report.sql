-- The evaluation report (#15). It reads the incidents opened in a period (a month, a fiscal
-- year, and the same period a year before): by opening time, through this index, instead of
-- every incident ever opened.
CREATE INDEX incidents_opened ON incidents (opened_at);

-- Files a mail carries beside its text body (the scheduled report's HTML). Written in the
-- transaction that writes their outbox row, read when the row is claimed for sending.
CREATE TABLE outbox_attachments (
    id           BIGINT GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    outbox_id    BIGINT NOT NULL REFERENCES outbox (id) ON DELETE RESTRICT,
    name         TEXT   NOT NULL,
    content_type TEXT   NOT NULL,
    content      BYTEA  NOT NULL
);
CREATE INDEX outbox_attachments_outbox ON outbox_attachments (outbox_id, id);
