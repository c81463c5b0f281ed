-- Escalation by what is due (#12): the escalator used to read the first 5,000 open incidents by
-- id every pass, so a later incident past that page never escalated. `due_at` is a lower bound
-- on when something (an update mail, an escalation level, a deadline reminder) next falls due
-- on the incident: the pass reads only rows with `due_at <= now` through the partial index, and
-- writes back the exact next time from engine::due. NULL: nothing can fall due until the
-- incident changes. Every change that can make something due sooner lowers it.
ALTER TABLE incidents ADD COLUMN due_at TEXT;
-- Existing open incidents are evaluated by the first pass, which stores their exact next time.
UPDATE incidents SET due_at = opened_at WHERE status <> 'closed';
CREATE INDEX incidents_due ON incidents (due_at) WHERE status <> 'closed';
