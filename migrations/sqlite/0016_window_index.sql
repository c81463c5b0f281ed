-- Ingest at botnet scale (#13): every statement that reads events by key reads either pending
-- events (`incident_id IS NULL`: the partial index events_pending) or an incident's events
-- (events_incident). The index of every event by key and time served the window count before
-- the partial index existed; it is read by nothing now, and each event written paid for it:
-- a spray of a million addresses writes a million pending events.
DROP INDEX IF EXISTS events_window;
