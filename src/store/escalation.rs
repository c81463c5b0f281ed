//! The escalator's pass and the scheduled digests: what `engine::due` says is due, applied
//! with at-most-once per escalation level and deadline from primary keys (`escalations`,
//! `deadline_reminders`), and per schedule run from a compare-and-set on `next_run_at`:
//! whichever daemon's transaction inserts or updates first fires, the others change nothing.

use super::rows::{DueRow, INCIDENT_COLUMNS, IncidentRow};
use super::sql::{ScheduleClaim, Sql};
use super::{Backend, Store, StoreError};
use crate::compose::{Attachment, Composer, Notification, Occasion};
use crate::engine::due::{LevelDue, Notified, clock_reminders, due, next_clock_due, next_due};
use crate::model::Incident;
use chrono::{DateTime, TimeDelta, Utc};

/// How many due incidents one write transaction of a pass handles. Bounded so that the write
/// lock (SQLite's one writer) is given back between batches: ingest and responders' commands
/// get their turn however much falls due at once.
const DUE_BATCH: i64 = 200;

/// How many incidents a scheduled digest lists; the rest are counted.
const DIGEST_LIST: usize = 500;

/// What the escalator found due and did in one pass.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct EscalatorPass {
    pub updates: Vec<i64>,
    pub escalations: Vec<(i64, i64)>,
    pub reminders: Vec<(i64, String)>,
    /// How many incidents the pass looked at (those whose `due_at` had come): the work of a
    /// pass, whatever the number of open incidents.
    pub examined: usize,
}

impl Store {
    /// One pass of the escalator: update mails for incidents with new events once
    /// `update_interval` has passed since the last mail, escalation levels that fell due on
    /// unacknowledged incidents, and deadline reminders. Everything it decides is derived from
    /// stored times, so a restart neither loses nor repeats a step.
    ///
    /// Only incidents whose `due_at` has come are read, through an index, in batches of
    /// `DUE_BATCH` until none is left (so none is starved behind a fixed page); each gets its next
    /// `due_at` from `engine::due::next_due`. When nothing is due the pass takes no write lock.
    pub async fn escalate(
        &self,
        node: &str,
        now: DateTime<Utc>,
        update_interval: TimeDelta,
        composer: &Composer,
    ) -> Result<EscalatorPass, StoreError> {
        let mut pass = EscalatorPass::default();
        let any_due: Option<i64> = read!(self, pool => sqlx::query_scalar(
            "SELECT id FROM incidents WHERE status <> 'closed' AND due_at <= $1 LIMIT 1",
        )
        .bind(now)
        .fetch_optional(pool)
        .await?);
        if any_due.is_none() {
            return Ok(pass);
        }
        loop {
            let examined = transaction!(self, tx => {
                let rows = tx.due_batch(now, DUE_BATCH).await?;
                let examined = rows.len();
                for row in rows {
                    apply_due(&mut *tx, row, node, now, update_interval, composer, &mut pass).await?;
                }
                Ok::<usize, StoreError>(examined)
            })?;
            pass.examined += examined;
            // Every incident handled got a `due_at` after `now`: a short batch means none is left
            // (on PostgreSQL, or only those another daemon's pass holds).
            if (examined as i64) < DUE_BATCH {
                return Ok(pass);
            }
        }
    }

    /// Makes every open incident due at `now` (unless due sooner): the escalator's rules changed,
    /// and the stored times were computed under the old ones. The next pass recomputes each.
    /// Returns how many incidents were marked.
    pub async fn reschedule_open(&self, now: DateTime<Utc>) -> Result<u64, StoreError> {
        transaction!(self, tx => Ok(sqlx::query(
            "UPDATE incidents SET due_at = $1 WHERE status <> 'closed' AND (due_at IS NULL OR due_at > $1)",
        )
        .bind(now)
        .execute(&mut *tx)
        .await?
        .rows_affected()))
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
        // A digest lists at most DIGEST_LIST incidents, the most severe first (a critical one is
        // never left out behind older noise), and says how many more there are.
        let active_sql = format!(
            "SELECT {INCIDENT_COLUMNS} FROM incidents WHERE status <> 'closed' ORDER BY \
             CASE severity WHEN 'critical' THEN 0 WHEN 'high' THEN 1 WHEN 'medium' THEN 2 ELSE 3 END, id \
             LIMIT {DIGEST_LIST}"
        );
        transaction!(self, tx => {
            if tx.claim_schedule(name, now, next).await? != ScheduleClaim::Claimed {
                return Ok(false);
            }
            let rows: Vec<IncidentRow> = sqlx::query_as(&active_sql).fetch_all(&mut *tx).await?;
            let incidents = rows.into_iter().map(Incident::try_from).collect::<Result<Vec<_>, _>>()?;
            let total: i64 = if incidents.len() < DIGEST_LIST {
                incidents.len() as i64
            } else {
                sqlx::query_scalar("SELECT COUNT(*) FROM incidents WHERE status <> 'closed'")
                    .fetch_one(&mut *tx)
                    .await?
            };
            let mail = composer.schedule_digest(name, to, &incidents, total, now);
            tx.enqueue(None, &mail, now).await?;
            Ok(true)
        })
    }

    /// Writes the scheduled `mail` with its `attachments` if the run of `name` due by `now` is
    /// still ours (another daemon may have taken it while the report was being made): true
    /// when it was written. `next` is the run after this one; runs missed while no daemon ran
    /// collapse into this one, as for digests.
    pub async fn run_scheduled_mail(
        &self,
        name: &str,
        now: DateTime<Utc>,
        next: DateTime<Utc>,
        mail: &Notification,
        attachments: &[Attachment],
    ) -> Result<bool, StoreError> {
        transaction!(self, tx => {
            if tx.claim_schedule(name, now, next).await? != ScheduleClaim::Claimed {
                return Ok(false);
            }
            let id = tx.enqueue(None, mail, now).await?;
            for file in attachments {
                tx.attach(id, file).await?;
            }
            Ok(true)
        })
    }

    /// Registers schedule `name` with its first run `next`, if it is not registered yet.
    pub async fn register_schedule(
        &self,
        name: &str,
        now: DateTime<Utc>,
        next: DateTime<Utc>,
    ) -> Result<(), StoreError> {
        transaction!(self, tx => {
            tx.claim_schedule(name, now, next).await?;
            Ok(())
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

/// Does what is due on one incident at `now` and stores when it is next due.
async fn apply_due(
    tx: &mut impl Sql,
    row: DueRow,
    node: &str,
    now: DateTime<Utc>,
    update_interval: TimeDelta,
    composer: &Composer,
    pass: &mut EscalatorPass,
) -> Result<(), StoreError> {
    let mut notified = Notified {
        events: row.notified_event_count,
        last_update_at: row.last_update_at,
    };
    let mut incident = Incident::try_from(row.incident)?;
    let id = incident.id;
    let playbook = composer.playbooks().get(&incident.playbook);
    let due = due(&incident, notified, playbook, now, update_interval);
    // Statutory clocks (personal information) remind through the same keys and mails; those of
    // a report to 個人情報保護委員会 reach the CISO group too.
    let clocks = tx.pii_clocks(id).await?;
    let ppc = clocks.iter().any(|c| c.to == crate::pii::Party::Ppc);
    let statutory_to: Vec<String> = if ppc {
        composer
            .pii_ciso()
            .map(str::to_string)
            .into_iter()
            .collect()
    } else {
        Vec::new()
    };
    let reminders = due
        .reminders
        .iter()
        .map(|r| (r, Vec::new()))
        .chain(
            clock_reminders(&clocks, now)
                .iter()
                .map(|r| (r, statutory_to.clone())),
        )
        .map(|((name, at), to)| (name.clone(), *at, to))
        .collect::<Vec<_>>();
    // A required report whose CISO mail the command that recorded it could not write (it had
    // no config to address it from): written here, once, whichever daemon claims it.
    if ppc && super::pii::notify_pending(&mut *tx, composer, id, node, now).await? {
        tx.insert_timeline(
            id,
            now,
            "daemon",
            "note",
            &super::pii::ciso_notified(composer),
        )
        .await?;
    }
    if let Some(new_events) = due.update {
        // Compare-and-set: of two daemons, the one that moves the count mails.
        let claimed = tx.claim_update(id, notified.events).await?;
        if claimed {
            tx.announce(composer, id, &Occasion::Update { new_events }, now)
                .await?;
            pass.updates.push(id);
        }
        // Mailed here or by the other daemon: either way the update is done.
        notified = Notified {
            events: incident.event_count,
            last_update_at: Some(now),
        };
    }
    if let Some(LevelDue { from, level, to }) = due.escalation {
        // Levels skipped while no daemon ran are recorded with this one: one mail for the
        // highest level due, never a burst of stale ones.
        if tx.fire_levels(id, from, level, node, now).await? {
            let detail = format!("第{level}段階: {}", to.join(", "));
            tx.insert_timeline(id, now, "daemon", "escalated", &detail)
                .await?;
            tx.announce(composer, id, &Occasion::Escalation { level, to }, now)
                .await?;
            pass.escalations.push((id, level));
        }
        incident.escalation_level = incident.escalation_level.max(level);
    }
    for (deadline, at, to) in reminders {
        let inserted = tx.insert_reminder(id, &deadline, node, now).await?;
        if inserted {
            let occasion = Occasion::Reminder {
                deadline: deadline.clone(),
                due: at,
                to,
            };
            tx.announce(composer, id, &occasion, now).await?;
            pass.reminders.push((id, deadline));
        }
    }
    let next = [
        next_due(&incident, notified, playbook, now, update_interval),
        next_clock_due(&clocks, now),
    ]
    .into_iter()
    .flatten()
    .min();
    tx.set_due(id, next).await?;
    Ok(())
}
