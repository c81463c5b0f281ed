-- Mail commands with proof (#12): the key of the per-recipient, per-incident reply codes that
-- our notifications carry. Made once, from the operating system's random source, by the first
-- process that needs it (the daemon or `csirt intake`); kept with the store, so every node and
-- every intake path that shares the store checks the same codes.
CREATE TABLE secrets (
    name  TEXT PRIMARY KEY,
    value TEXT NOT NULL
);
