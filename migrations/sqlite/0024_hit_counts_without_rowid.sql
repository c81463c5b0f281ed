-- Ingest at botnet scale (#13): a spray writes one counter per address. As a rowid table,
-- each new counter was two B-tree inserts (the row, and the primary key's index that every
-- upsert searches); WITHOUT ROWID the row lives in the primary key's B-tree, one insert.
-- Nothing reads a counter's rowid. The copy keeps every counter as it was.
CREATE TABLE hit_counts_keyed (
    playbook   TEXT    NOT NULL,
    dedupe_key TEXT    NOT NULL,
    hits       INTEGER NOT NULL,
    first_seen TEXT    NOT NULL,
    last_seen  TEXT    NOT NULL,
    PRIMARY KEY (playbook, dedupe_key)
) WITHOUT ROWID;
INSERT INTO hit_counts_keyed (playbook, dedupe_key, hits, first_seen, last_seen)
    SELECT playbook, dedupe_key, hits, first_seen, last_seen FROM hit_counts;
DROP TABLE hit_counts;
ALTER TABLE hit_counts_keyed RENAME TO hit_counts;
