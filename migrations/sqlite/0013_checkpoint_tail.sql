-- "<length>:<hash>" of the bytes just before a checkpoint's offset. With the head fingerprint it
-- recognises logrotate's copytruncate copy (a new inode holding what was already read), also
-- when the daemon restarts between the copy and its discovery. Empty: not known (older rows).
ALTER TABLE log_checkpoints ADD COLUMN tail_fingerprint TEXT NOT NULL DEFAULT '';
