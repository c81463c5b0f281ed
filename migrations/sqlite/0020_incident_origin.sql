-- The evaluation report (#15) counts incidents by how they came in (log file, journal, mail).
-- Reading each incident's first evidence for that was nearly half of a report's work on a
-- store of a million incidents (an index lookup in events per incident), so the channel is kept
-- on the incident: written when the hit that opens it is (`log`, `journal` or `mail`), and here
-- for the incidents opened before, from their first evidence. NULL: not recorded (an incident
-- opened without evidence); the report then reads the first evidence, as it did before.
-- (The rule is `store::sql::origin_of`; `journal:` is the prefix of the journal source's names.)
ALTER TABLE incidents ADD COLUMN origin TEXT CHECK (origin IN ('log', 'journal', 'mail'));
UPDATE incidents SET origin = (
    SELECT CASE WHEN e.kind = 'mail' THEN 'mail' WHEN e.source LIKE 'journal:%' THEN 'journal' ELSE 'log' END
    FROM events e WHERE e.incident_id = incidents.id ORDER BY e.id LIMIT 1
);
