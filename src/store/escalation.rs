//! The escalator's pass and the scheduled digests: what `engine::due` says is due, applied
//! with at-most-once per escalation level and deadline from primary keys (`escalations`,
//! `deadline_reminders`), and per schedule run from a compare-and-set on `next_run_at`:
//! whichever daemon's transaction inserts or updates first fires, the others change nothing.

use super::rows::{INCIDENT_COLUMNS, IncidentRow};
use super::sql::Sql;
use super::{Backend, Store, StoreError};
use crate::compose::{Composer, Occasion};
use crate::engine::due::{LevelDue, Notified, due};
use crate::model::Incident;
use chrono::{DateTime, TimeDelta, Utc};

/// What the escalator found due and did in one pass.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct EscalatorPass {
    pub updates: Vec<i64>,
    pub escalations: Vec<(i64, i64)>,
    pub reminders: Vec<(i64, String)>,
}

impl Store {
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
        transaction!(self, tx => {
            let mut pass = EscalatorPass::default();
            let rows: Vec<IncidentRow> = sqlx::query_as(&active_sql).fetch_all(&mut *tx).await?;
            let notified_rows: Vec<(i64, i64, Option<DateTime<Utc>>)> = sqlx::query_as(
                "SELECT id, notified_event_count, last_update_at FROM incidents WHERE status <> 'closed'",
            )
            .fetch_all(&mut *tx)
            .await?;
            let notified_of: std::collections::HashMap<i64, Notified> = notified_rows
                .into_iter()
                .map(|(id, events, last_update_at)| (id, Notified { events, last_update_at }))
                .collect();
            for row in rows {
                let incident = Incident::try_from(row)?;
                let id = incident.id;
                let Some(&notified) = notified_of.get(&id) else {
                    continue;
                };
                let due = due(&incident, notified, playbooks.get(&incident.playbook), now, update_interval);
                if let Some(new_events) = due.update {
                    // Compare-and-set: of two daemons, the one that moves the count mails.
                    let claimed = sqlx::query(
                        "UPDATE incidents SET notified_event_count = event_count WHERE id = $1 AND notified_event_count = $2",
                    )
                    .bind(id)
                    .bind(notified.events)
                    .execute(&mut *tx)
                    .await?
                    .rows_affected();
                    if claimed == 1 {
                        tx.announce(composer, id, &Occasion::Update { new_events }, now).await?;
                        pass.updates.push(id);
                    }
                }
                if let Some(LevelDue { from, level, to }) = due.escalation {
                    // Levels skipped while no daemon ran are recorded with this one: one mail
                    // for the highest level due, never a burst of stale ones.
                    let fired = tx.fire_levels(id, from, level, node, now).await?;
                    if fired {
                        let detail = format!("第{level}段階: {}", to.join(", "));
                        tx.insert_timeline(id, now, "daemon", "escalated", &detail).await?;
                        tx.announce(composer, id, &Occasion::Escalation { level, to }, now).await?;
                        pass.escalations.push((id, level));
                    }
                }
                for (deadline, at) in due.reminders {
                    let inserted = sqlx::query(
                        "INSERT INTO deadline_reminders (incident_id, name, fired_at, node) VALUES ($1, $2, $3, $4) \
                         ON CONFLICT (incident_id, name) DO NOTHING",
                    )
                    .bind(id)
                    .bind(&deadline)
                    .bind(now)
                    .bind(node)
                    .execute(&mut *tx)
                    .await?
                    .rows_affected();
                    if inserted == 1 {
                        let occasion = Occasion::Reminder { deadline: deadline.clone(), due: at };
                        tx.announce(composer, id, &occasion, now).await?;
                        pass.reminders.push((id, deadline));
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
        transaction!(self, tx => {
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
            tx.enqueue(None, &mail, now).await?;
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
}
