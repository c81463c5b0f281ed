//! The transactional outbox and what fills it: new-incident mails (written by the ingest
//! transaction), updates, escalations, deadline reminders and scheduled digests (written by the
//! escalator), and the notifier's claims on due rows.
//!
//! At-most-once per escalation level and deadline comes from primary keys (`escalations`,
//! `deadline_reminders`), and per schedule run from a compare-and-set on `next_run_at`: whichever
//! daemon's transaction inserts or updates first fires, the others change nothing. At-least-once
//! delivery comes from the claim lease: a row claimed by a daemon that died is claimed again
//! when its lease runs out, and resent with the same Message-ID.

use super::{Backend, EventRow, INCIDENT_COLUMNS, IncidentRow, Store, StoreError};
use crate::compose::{Composer, Occasion};
use crate::model::{Event, Incident};
use chrono::{DateTime, TimeDelta, Utc};

/// How long a claim on an outbox row lasts: far longer than one SMTP transaction, so a row is
/// claimed twice only when its daemon died.
const CLAIM_LEASE: TimeDelta = TimeDelta::minutes(5);

/// Inserts `$mail` into the outbox, due at once.
macro_rules! enqueue {
    ($tx:expr, $incident:expr, $mail:expr, $now:expr) => {
        sqlx::query(
            "INSERT INTO outbox (incident_id, kind, message_id, in_reply_to, recipients, subject, body, \
             created_at, next_attempt_at) VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $8)",
        )
        .bind($incident)
        .bind($mail.kind)
        .bind(&$mail.message_id)
        .bind(&$mail.in_reply_to)
        .bind(serde_json::Value::from($mail.recipients.clone()).to_string())
        .bind(&$mail.subject)
        .bind(&$mail.body)
        .bind($now)
        .execute(&mut *$tx)
        .await
    };
}

/// Composes the mail about incident `$id` on `$occasion` from what the transaction sees, puts it
/// in the outbox, and records what it covered. The first mail becomes the incident's thread.
macro_rules! announce {
    ($tx:expr, $composer:expr, $id:expr, $occasion:expr, $now:expr) => {{
        let sql = format!("SELECT {INCIDENT_COLUMNS} FROM incidents WHERE id = $1");
        let row: IncidentRow = sqlx::query_as(&sql).bind($id).fetch_one(&mut *$tx).await?;
        let incident = Incident::try_from(row)?;
        let thread: Option<String> =
            sqlx::query_scalar("SELECT thread_message_id FROM incidents WHERE id = $1")
                .bind($id)
                .fetch_one(&mut *$tx)
                .await?;
        let rows: Vec<EventRow> = sqlx::query_as(
            "SELECT kind, rule, source, locator, observed_at, text, fields FROM events WHERE incident_id = $1 ORDER BY id",
        )
        .bind($id)
        .fetch_all(&mut *$tx)
        .await?;
        let evidence: Vec<Event> = rows.into_iter().map(Event::from).collect();
        let mail = $composer.incident_mail(&$occasion, &incident, &evidence, thread.as_deref(), $now);
        enqueue!($tx, Some($id), mail, $now)?;
        sqlx::query(
            "UPDATE incidents SET thread_message_id = COALESCE(thread_message_id, $2), \
             notified_event_count = CASE WHEN $3 THEN event_count ELSE notified_event_count END, \
             last_update_at = CASE WHEN $3 THEN $4 ELSE last_update_at END WHERE id = $1",
        )
        .bind($id)
        .bind(&mail.message_id)
        .bind(matches!($occasion, Occasion::Opened | Occasion::Update { .. }))
        .bind($now)
        .execute(&mut *$tx)
        .await?;
        mail
    }};
}
pub(super) use {announce, enqueue};

/// An outbox row claimed for sending.
#[derive(Debug, Clone, sqlx::FromRow)]
pub struct Outgoing {
    pub id: i64,
    pub kind: String,
    pub incident_id: Option<i64>,
    pub message_id: String,
    pub in_reply_to: Option<String>,
    /// A JSON array of addresses (TEXT on both backends).
    pub recipients: String,
    pub subject: String,
    pub body: String,
    pub attempts: i64,
}

impl Outgoing {
    /// The addresses the row is for.
    pub fn recipients(&self) -> Vec<String> {
        parse_recipients(&self.recipients)
    }
}

/// The stored JSON array of addresses; an unreadable one yields none (and the row fails with
/// "no valid recipient", visible in `csirt status`).
fn parse_recipients(text: &str) -> Vec<String> {
    serde_json::from_str(text).unwrap_or_default()
}

/// The outbox as `csirt status` shows it.
#[derive(Debug, Clone, Default, serde::Serialize)]
pub struct OutboxStats {
    pub pending: i64,
    /// Pending rows that have failed at least once (retrying).
    pub retrying: i64,
    pub failed: i64,
    pub sent: i64,
    pub oldest_pending: Option<DateTime<Utc>>,
    /// The latest permanent failures: `(id, subject, error)`.
    pub failures: Vec<(i64, String, String)>,
}

/// What the escalator found due and did in one pass.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct EscalatorPass {
    pub updates: Vec<i64>,
    pub escalations: Vec<(i64, i64)>,
    pub reminders: Vec<(i64, String)>,
}

impl Store {
    /// Claims up to `limit` due outbox rows for `node`. With more new-incident mails waiting
    /// than `flood`, those are first replaced by one digest (in the same transaction), so a
    /// backlog or a flood never becomes a mail storm.
    pub async fn claim_outbox(
        &self,
        node: &str,
        now: DateTime<Utc>,
        limit: i64,
        flood: u32,
        composer: &Composer,
    ) -> Result<Vec<Outgoing>, StoreError> {
        let skip_locked = match self.backend {
            Backend::Postgres(_) => " FOR UPDATE SKIP LOCKED",
            Backend::Sqlite { .. } => "",
        };
        let claim = format!(
            "UPDATE outbox SET claimed_by = $1, claimed_until = $2, attempts = attempts + 1 WHERE id IN \
             (SELECT id FROM outbox WHERE status = 'pending' AND next_attempt_at <= $3 \
              AND (claimed_until IS NULL OR claimed_until < $3) ORDER BY id LIMIT $4{skip_locked}) \
             RETURNING id, kind, incident_id, message_id, in_reply_to, recipients, subject, body, attempts"
        );
        let waiting_sql = format!(
            "SELECT id, incident_id FROM outbox WHERE status = 'pending' AND kind = 'opened' AND attempts = 0 \
             AND (claimed_until IS NULL OR claimed_until < $1) ORDER BY id LIMIT 1000{skip_locked}"
        );
        write!(self, tx => {
            let waiting: Vec<(i64, Option<i64>)> = sqlx::query_as(&waiting_sql)
                .bind(now)
                .fetch_all(&mut *tx)
                .await?;
            if waiting.len() > flood as usize {
                let mut incidents = Vec::new();
                for (_, incident) in &waiting {
                    if let Some(id) = incident {
                        let sql = format!("SELECT {INCIDENT_COLUMNS} FROM incidents WHERE id = $1");
                        let row: IncidentRow = sqlx::query_as(&sql).bind(id).fetch_one(&mut *tx).await?;
                        incidents.push(Incident::try_from(row)?);
                    }
                }
                let digest = composer.flood_digest(&incidents, now);
                enqueue!(tx, None::<i64>, digest, now)?;
                for (id, _) in &waiting {
                    sqlx::query("UPDATE outbox SET status = 'sent', sent_at = $2, sent_in = $3 WHERE id = $1")
                        .bind(id)
                        .bind(now)
                        .bind(&digest.message_id)
                        .execute(&mut *tx)
                        .await?;
                }
                tracing::warn!(
                    incidents = waiting.len(),
                    flood,
                    "more new incidents at once than [notify] flood allows; sending one digest instead"
                );
            }
            let rows: Vec<Outgoing> = sqlx::query_as(&claim)
                .bind(node)
                .bind(now + CLAIM_LEASE)
                .bind(now)
                .bind(limit)
                .fetch_all(&mut *tx)
                .await?;
            Ok(rows)
        })
    }

    /// The server accepted the mail (`note`: the recipients it refused, if some were).
    pub async fn outbox_sent(
        &self,
        id: i64,
        now: DateTime<Utc>,
        note: Option<&str>,
    ) -> Result<(), StoreError> {
        write!(self, tx => {
            sqlx::query("UPDATE outbox SET status = 'sent', sent_at = $2, claimed_by = NULL, claimed_until = NULL, last_error = $3 WHERE id = $1")
                .bind(id)
                .bind(now)
                .bind(note)
                .execute(&mut *tx)
                .await?;
            Ok(())
        })
    }

    /// A temporary failure: try again at `next`.
    pub async fn outbox_retry(
        &self,
        id: i64,
        next: DateTime<Utc>,
        error: &str,
    ) -> Result<(), StoreError> {
        write!(self, tx => {
            sqlx::query("UPDATE outbox SET next_attempt_at = $2, last_error = $3, claimed_by = NULL, claimed_until = NULL WHERE id = $1")
                .bind(id)
                .bind(next)
                .bind(error)
                .execute(&mut *tx)
                .await?;
            Ok(())
        })
    }

    /// A permanent failure (the server refused with 5xx): kept, shown by `csirt status`.
    pub async fn outbox_failed(&self, id: i64, error: &str) -> Result<(), StoreError> {
        write!(self, tx => {
            sqlx::query("UPDATE outbox SET status = 'failed', last_error = $2, claimed_by = NULL, claimed_until = NULL WHERE id = $1")
                .bind(id)
                .bind(error)
                .execute(&mut *tx)
                .await?;
            Ok(())
        })
    }

    /// Counts for `csirt status`.
    pub async fn outbox_stats(&self) -> Result<OutboxStats, StoreError> {
        read!(self, pool => {
            let (pending, retrying, failed, sent): (i64, i64, i64, i64) = sqlx::query_as(
                "SELECT COALESCE(SUM(CASE WHEN status = 'pending' THEN 1 ELSE 0 END), 0), \
                 COALESCE(SUM(CASE WHEN status = 'pending' AND last_error IS NOT NULL THEN 1 ELSE 0 END), 0), \
                 COALESCE(SUM(CASE WHEN status = 'failed' THEN 1 ELSE 0 END), 0), \
                 COALESCE(SUM(CASE WHEN status = 'sent' THEN 1 ELSE 0 END), 0) FROM outbox",
            )
            .fetch_one(pool)
            .await?;
            let oldest_pending: Option<DateTime<Utc>> =
                sqlx::query_scalar("SELECT MIN(created_at) FROM outbox WHERE status = 'pending'")
                    .fetch_one(pool)
                    .await?;
            let failures: Vec<(i64, String, String)> = sqlx::query_as(
                "SELECT id, subject, COALESCE(last_error, '') FROM outbox WHERE status = 'failed' ORDER BY id DESC LIMIT 5",
            )
            .fetch_all(pool)
            .await?;
            Ok(OutboxStats { pending, retrying, failed, sent, oldest_pending, failures })
        })
    }

    /// One pass of the escalator: update mails for incidents with new events once
    /// `update_interval` has passed since the last mail, escalation levels that fell due on
    /// unacknowledged incidents, and deadline reminders. Everything it decides is derived from
    /// stored times, so a restart neither loses nor repeats a step.
    pub async fn escalate(
        &self,
        node: &str,
        now: DateTime<Utc>,
        update_interval: TimeDelta,
        composer: &Composer,
    ) -> Result<EscalatorPass, StoreError> {
        let playbooks = composer.playbooks();
        let active_sql = format!(
            "SELECT {INCIDENT_COLUMNS} FROM incidents WHERE status <> 'closed' ORDER BY id LIMIT 5000"
        );
        write!(self, tx => {
            let mut pass = EscalatorPass::default();
            let rows: Vec<IncidentRow> = sqlx::query_as(&active_sql).fetch_all(&mut *tx).await?;
            let notified_rows: Vec<(i64, i64, Option<DateTime<Utc>>)> = sqlx::query_as(
                "SELECT id, notified_event_count, last_update_at FROM incidents WHERE status <> 'closed'",
            )
            .fetch_all(&mut *tx)
            .await?;
            let notified_of: std::collections::HashMap<i64, (i64, Option<DateTime<Utc>>)> =
                notified_rows.into_iter().map(|(id, n, at)| (id, (n, at))).collect();
            for row in rows {
                let incident = Incident::try_from(row)?;
                let id = incident.id;
                // Updates: events since the last mail, and the interval passed.
                let Some(&(notified, last_update)) = notified_of.get(&id) else {
                    continue;
                };
                let since = last_update.unwrap_or(incident.opened_at);
                if incident.event_count > notified && now - since >= update_interval {
                    let claimed = sqlx::query(
                        "UPDATE incidents SET notified_event_count = event_count WHERE id = $1 AND notified_event_count = $2",
                    )
                    .bind(id)
                    .bind(notified)
                    .execute(&mut *tx)
                    .await?
                    .rows_affected();
                    if claimed == 1 {
                        let occasion = Occasion::Update { new_events: incident.event_count - notified };
                        announce!(tx, composer, id, occasion, now);
                        pass.updates.push(id);
                    }
                }
                let Some(playbook) = playbooks.get(&incident.playbook) else {
                    continue;
                };
                // Escalation, while nobody has acknowledged.
                if incident.status == crate::model::Status::Open
                    && let Some((level, to)) = due_level(&playbook.escalations, incident.opened_at, now)
                    && level > incident.escalation_level
                {
                    // Levels skipped while the daemon was down are recorded as fired with this
                    // one: one mail for the highest level due, never a burst of stale ones.
                    let mut fired = false;
                    for l in (incident.escalation_level + 1)..=level {
                        let inserted = sqlx::query(
                            "INSERT INTO escalations (incident_id, level, fired_at, node) VALUES ($1, $2, $3, $4) \
                             ON CONFLICT (incident_id, level) DO NOTHING",
                        )
                        .bind(id)
                        .bind(l)
                        .bind(now)
                        .bind(node)
                        .execute(&mut *tx)
                        .await?
                        .rows_affected();
                        fired |= inserted == 1 && l == level;
                    }
                    if fired {
                        sqlx::query("UPDATE incidents SET escalation_level = $2 WHERE id = $1 AND escalation_level < $2")
                            .bind(id)
                            .bind(level)
                            .execute(&mut *tx)
                            .await?;
                        sqlx::query("INSERT INTO timeline (incident_id, at, actor, action, detail) VALUES ($1, $2, 'daemon', 'escalated', $3)")
                            .bind(id)
                            .bind(now)
                            .bind(format!("第{level}段階: {}", to.join(", ")))
                            .execute(&mut *tx)
                            .await?;
                        let occasion = Occasion::Escalation { level, to };
                        announce!(tx, composer, id, occasion, now);
                        pass.escalations.push((id, level));
                    }
                }
                // Deadline reminders, once each, `remind_before` ahead (default one day).
                for deadline in &playbook.deadlines {
                    let due = incident.opened_at + deadline.within.to_chrono();
                    let before = deadline
                        .remind_before
                        .map(|s| s.to_chrono())
                        .unwrap_or(TimeDelta::days(1));
                    if now < due - before || now > due {
                        continue;
                    }
                    let inserted = sqlx::query(
                        "INSERT INTO deadline_reminders (incident_id, name, fired_at, node) VALUES ($1, $2, $3, $4) \
                         ON CONFLICT (incident_id, name) DO NOTHING",
                    )
                    .bind(id)
                    .bind(&deadline.name)
                    .bind(now)
                    .bind(node)
                    .execute(&mut *tx)
                    .await?
                    .rows_affected();
                    if inserted == 1 {
                        let occasion = Occasion::Reminder { deadline: deadline.name.clone(), due };
                        announce!(tx, composer, id, occasion, now);
                        pass.reminders.push((id, deadline.name.clone()));
                    }
                }
            }
            Ok(pass)
        })
    }

    /// Runs the `[[schedule]]` named `name` if it is due: `next` is its next run after this
    /// one. A schedule seen for the first time is only registered (its first run is `next`).
    /// Runs missed while no daemon ran collapse into this one. Returns whether a digest was
    /// written.
    pub async fn run_schedule(
        &self,
        name: &str,
        to: &[String],
        now: DateTime<Utc>,
        next: DateTime<Utc>,
        composer: &Composer,
    ) -> Result<bool, StoreError> {
        let active_sql = format!(
            "SELECT {INCIDENT_COLUMNS} FROM incidents WHERE status <> 'closed' ORDER BY id LIMIT 500"
        );
        write!(self, tx => {
            let stored: Option<DateTime<Utc>> =
                sqlx::query_scalar("SELECT next_run_at FROM schedule_runs WHERE name = $1")
                    .bind(name)
                    .fetch_optional(&mut *tx)
                    .await?;
            let Some(due) = stored else {
                sqlx::query("INSERT INTO schedule_runs (name, next_run_at) VALUES ($1, $2) ON CONFLICT (name) DO NOTHING")
                    .bind(name)
                    .bind(next)
                    .execute(&mut *tx)
                    .await?;
                return Ok(false);
            };
            if due > now {
                return Ok(false);
            }
            let claimed = sqlx::query(
                "UPDATE schedule_runs SET next_run_at = $2, last_run_at = $3 WHERE name = $1 AND next_run_at = $4",
            )
            .bind(name)
            .bind(next)
            .bind(now)
            .bind(due)
            .execute(&mut *tx)
            .await?
            .rows_affected();
            if claimed != 1 {
                return Ok(false);
            }
            let rows: Vec<IncidentRow> = sqlx::query_as(&active_sql).fetch_all(&mut *tx).await?;
            let incidents = rows.into_iter().map(Incident::try_from).collect::<Result<Vec<_>, _>>()?;
            let mail = composer.schedule_digest(name, to, &incidents, now);
            enqueue!(tx, None::<i64>, mail, now)?;
            Ok(true)
        })
    }

    /// When `name` runs next, if it is registered.
    pub async fn schedule_next(&self, name: &str) -> Result<Option<DateTime<Utc>>, StoreError> {
        Ok(
            read!(self, pool => sqlx::query_scalar("SELECT next_run_at FROM schedule_runs WHERE name = $1")
            .bind(name)
            .fetch_optional(pool)
            .await?),
        )
    }

    /// Every outbox row, oldest first (for tests and `csirt status`).
    pub async fn outbox(&self) -> Result<Vec<OutboxRow>, StoreError> {
        Ok(read!(self, pool => sqlx::query_as(
            "SELECT id, incident_id, kind, message_id, in_reply_to, recipients, subject, body, status, attempts, last_error, sent_in \
             FROM outbox ORDER BY id",
        )
        .fetch_all(pool)
        .await?))
    }
}

/// An outbox row as stored.
#[derive(Debug, Clone, sqlx::FromRow, serde::Serialize)]
pub struct OutboxRow {
    pub id: i64,
    pub incident_id: Option<i64>,
    pub kind: String,
    pub message_id: String,
    pub in_reply_to: Option<String>,
    pub recipients: String,
    pub subject: String,
    pub body: String,
    pub status: String,
    pub attempts: i64,
    pub last_error: Option<String>,
    pub sent_in: Option<String>,
}

impl OutboxRow {
    /// The addresses the row is for.
    pub fn recipients(&self) -> Vec<String> {
        parse_recipients(&self.recipients)
    }
}

/// The highest escalation level due `now` for an incident opened at `opened`, with whom it
/// reaches. Levels count from 1; a `repeat` on the last level adds a level per period.
pub fn due_level(
    levels: &[crate::playbook::Escalation],
    opened: DateTime<Utc>,
    now: DateTime<Utc>,
) -> Option<(i64, Vec<String>)> {
    let elapsed = now - opened;
    let reached = levels
        .iter()
        .take_while(|l| elapsed >= l.after.to_chrono())
        .count();
    if reached == 0 {
        return None;
    }
    let last = &levels[reached - 1];
    let mut level = reached as i64;
    if reached == levels.len()
        && let Some(repeat) = last.repeat
        && repeat.to_chrono() > TimeDelta::zero()
    {
        let over = elapsed - last.after.to_chrono();
        level += over.num_seconds() / repeat.to_chrono().num_seconds().max(1);
    }
    Some((level, last.to.clone()))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::duration::Span;
    use crate::playbook::Escalation;

    fn level(after: u64, to: &str, repeat: Option<u64>) -> Escalation {
        Escalation {
            after: Span::from_secs(after),
            to: vec![to.into()],
            repeat: repeat.map(Span::from_secs),
        }
    }

    #[test]
    fn levels_fall_due_in_order_and_repeat_on_the_last() {
        let opened = DateTime::parse_from_rfc3339("2026-11-25T00:00:00Z")
            .expect("time")
            .to_utc();
        let at = |s: i64| opened + TimeDelta::seconds(s);
        let levels = [level(1800, "lead", None), level(7200, "ciso", Some(3600))];
        assert_eq!(due_level(&levels, opened, at(1799)), None);
        assert_eq!(
            due_level(&levels, opened, at(1800)),
            Some((1, vec!["lead".into()]))
        );
        assert_eq!(due_level(&levels, opened, at(7199)).map(|l| l.0), Some(1));
        assert_eq!(
            due_level(&levels, opened, at(7200)),
            Some((2, vec!["ciso".into()]))
        );
        assert_eq!(
            due_level(&levels, opened, at(7200 + 3599)).map(|l| l.0),
            Some(2)
        );
        assert_eq!(
            due_level(&levels, opened, at(7200 + 3600)).map(|l| l.0),
            Some(3)
        );
        assert_eq!(
            due_level(&levels, opened, at(7200 + 3 * 3600)).map(|l| l.0),
            Some(5)
        );
        assert_eq!(due_level(&[], opened, at(99_999)), None);
    }
}
