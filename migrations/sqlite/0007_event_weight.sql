-- Detection (#11): one line can stand for several failures (rsyslog's "message repeated N
-- times: [ … ]"). An event's weight is how many it counts for in thresholds, hit counts and the
-- incident's event_count; every event stored before this counted once.
ALTER TABLE events ADD COLUMN weight INTEGER NOT NULL DEFAULT 1;
