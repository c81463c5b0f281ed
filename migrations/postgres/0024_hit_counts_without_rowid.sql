-- SQLite's 0024 makes hit_counts a WITHOUT ROWID table (one B-tree insert per new counter
-- instead of two). A PostgreSQL table's primary key is its only index already: nothing to do.
-- Kept so that both backends number their migrations alike.
SELECT 1;
