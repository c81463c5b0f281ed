//! Every statement that more than one store operation runs, written once for both backends.
//!
//! `Sql` is implemented for SQLite's and PostgreSQL's connections by one macro body, so a
//! transaction of either backend calls `tx.insert_timeline(…)` and the two cannot drift apart;
//! only the per-key lock differs (PostgreSQL's advisory lock; SQLite's BEGIN IMMEDIATE already
//! makes each transaction the only writer). Values from logs and mail reach SQL only as bound
//! parameters; the few statements formatted at run time format only our own enums' names.

use super::StoreError;
use super::rows::{DueRow, EventRow, INCIDENT_COLUMNS, IncidentRow};
use crate::compose::{Attachment, Composer, Notification, Occasion};
use crate::engine::{EVIDENCE_KEEP, Hit, MailRecord};
use crate::model::{Action, Event, Fields, Incident, Status};
use chrono::{DateTime, Utc};
use sqlx::types::Json;

/// An incident to insert (status `open`).
pub(super) struct NewIncidentRow<'a> {
    pub playbook: &'a str,
    pub category: &'a str,
    pub title: &'a str,
    pub severity: &'a str,
    pub dedupe_key: &'a str,
    pub fields: &'a Fields,
    pub event_count: i64,
    pub first_seen: DateTime<Utc>,
    pub last_seen: DateTime<Utc>,
    pub opened_at: DateTime<Utc>,
    /// How it came in (`origin_of`); None when it is opened without evidence.
    pub origin: Option<&'static str>,
}

/// The channel of an event, as the report counts incidents by it: `mail`, `journal` (the journal
/// source names its events `journal:NAME`) or `log`. Migration 0020 and the report's reading of
/// an incident's first evidence (`store::report`) spell the same rule in SQL.
pub(crate) fn origin_of(kind: &str, source: &str) -> &'static str {
    if kind == "mail" {
        "mail"
    } else if source.starts_with("journal:") {
        "journal"
    } else {
        "log"
    }
}

impl<'a> NewIncidentRow<'a> {
    /// The incident `hit` opens at `opened_at`: one event, seen when the hit was.
    pub fn of_hit(hit: &'a Hit, opened_at: DateTime<Utc>) -> NewIncidentRow<'a> {
        NewIncidentRow {
            playbook: &hit.playbook,
            category: &hit.category,
            title: &hit.title,
            severity: hit.severity.as_str(),
            dedupe_key: &hit.dedupe_key,
            fields: &hit.fields,
            event_count: 1,
            first_seen: hit.observed_at,
            last_seen: hit.observed_at,
            opened_at,
            origin: Some(origin_of(hit.kind, &hit.source)),
        }
    }
}

/// An event to insert: a hit, or a responder's evidence.
pub(super) struct NewEventRow<'a> {
    pub playbook: &'a str,
    pub rule: &'a str,
    pub dedupe_key: &'a str,
    pub kind: &'a str,
    pub source: &'a str,
    pub locator: &'a str,
    pub observed_at: DateTime<Utc>,
    pub text: &'a str,
    pub fields: &'a Fields,
    /// How many it counts for (a repeated line).
    pub weight: u32,
}

impl<'a> From<&'a Hit> for NewEventRow<'a> {
    fn from(h: &'a Hit) -> NewEventRow<'a> {
        NewEventRow {
            playbook: &h.playbook,
            rule: &h.rule,
            dedupe_key: &h.dedupe_key,
            kind: h.kind,
            source: &h.source,
            locator: &h.locator,
            observed_at: h.observed_at,
            text: &h.text,
            fields: &h.fields,
            weight: h.weight,
        }
    }
}

/// What became of a schedule's run at `now` (`Sql::claim_schedule`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum ScheduleClaim {
    /// Seen for the first time: registered, its first run is the next one.
    Registered,
    /// Its run has not come.
    NotDue,
    /// Another daemon's transaction ran it first.
    Taken,
    /// Ours to run: the next run is stored.
    Claimed,
}

/// The statements, on a connection inside a transaction.
pub(super) trait Sql: Send {
    /// What `due_batch` appends to lock the rows it returns: on PostgreSQL another daemon's
    /// pass skips them (and takes the next ones) instead of waiting; SQLite's BEGIN IMMEDIATE
    /// already makes the pass the only writer.
    const DUE_LOCK: &'static str;

    /// Serialises writers of one dedupe key across daemons, until the transaction ends.
    fn lock_key(
        &mut self,
        playbook: &str,
        key: &str,
    ) -> impl Future<Output = Result<(), sqlx::Error>> + Send;

    /// Up to `limit` open incidents whose `due_at` has come by `now`, most overdue first,
    /// through the partial index `incidents_due`: the pass reads what is due, not every open
    /// incident.
    fn due_batch(
        &mut self,
        now: DateTime<Utc>,
        limit: i64,
    ) -> impl Future<Output = Result<Vec<DueRow>, sqlx::Error>> + Send;

    /// Stores when something next falls due on incident `id` (None: nothing until it changes).
    fn set_due(
        &mut self,
        id: i64,
        at: Option<DateTime<Utc>>,
    ) -> impl Future<Output = Result<(), sqlx::Error>> + Send;

    /// Moves incident `id`'s mailed-event count to its event count, if it still is `notified`
    /// (compare-and-set: of two daemons, the one that moves the count mails the update).
    fn claim_update(
        &mut self,
        id: i64,
        notified: i64,
    ) -> impl Future<Output = Result<bool, sqlx::Error>> + Send;

    /// Records deadline `name`'s reminder of incident `id` as sent by `node`; false when it
    /// was before (at most once, whichever daemon is first).
    fn insert_reminder(
        &mut self,
        id: i64,
        name: &str,
        node: &str,
        now: DateTime<Utc>,
    ) -> impl Future<Output = Result<bool, sqlx::Error>> + Send;

    /// Inserts an open incident; a second open incident of the same playbook and key is a
    /// unique violation (the partial index `incidents_open_key`).
    fn insert_incident(
        &mut self,
        row: &NewIncidentRow<'_>,
    ) -> impl Future<Output = Result<i64, sqlx::Error>> + Send;

    /// The incident with this id (which the transaction knows exists).
    fn incident(&mut self, id: i64) -> impl Future<Output = Result<Incident, StoreError>> + Send;

    /// Counts `hits` more events, seen between `first` and `last`, on incident `id` unless it
    /// was closed meanwhile; the number of rows changed (0 when closed). Events after the last
    /// mail make an update due: the escalator looks at the incident again from `at`.
    fn add_hits(
        &mut self,
        id: i64,
        hits: i64,
        first: DateTime<Utc>,
        last: DateTime<Utc>,
        at: DateTime<Utc>,
    ) -> impl Future<Output = Result<u64, sqlx::Error>> + Send;

    /// Stores one event, of `incident` or pending (None) below its threshold.
    fn insert_event(
        &mut self,
        incident: Option<i64>,
        event: &NewEventRow<'_>,
        received_at: DateTime<Utc>,
    ) -> impl Future<Output = Result<(), sqlx::Error>> + Send;

    /// The key's threshold window as the store holds it, once the memory's window
    /// (`engine::window`) reached its count: drops the key's pending events older than `floor`
    /// (they can never count again) and returns the rest's weight and earliest hit.
    fn settle_pending(
        &mut self,
        playbook: &str,
        key: &str,
        floor: DateTime<Utc>,
    ) -> impl Future<Output = Result<(i64, Option<DateTime<Utc>>), sqlx::Error>> + Send;

    /// The incident of `playbook` and `key` closed most recently at or after `since`.
    fn closed_since(
        &mut self,
        playbook: &str,
        key: &str,
        since: DateTime<Utc>,
    ) -> impl Future<Output = Result<Option<i64>, sqlx::Error>> + Send;

    /// The key's pending failures (below the threshold) seen at or after `since`: their weight
    /// and the earliest.
    fn pending_failures(
        &mut self,
        playbook: &str,
        key: &str,
        since: DateTime<Utc>,
    ) -> impl Future<Output = Result<(i64, Option<DateTime<Utc>>), sqlx::Error>> + Send;

    /// Makes the key's pending events evidence of incident `id`.
    fn attach_pending(
        &mut self,
        id: i64,
        playbook: &str,
        key: &str,
    ) -> impl Future<Output = Result<(), sqlx::Error>> + Send;

    /// Raises incident `id`: a new severity and title (its level changes with it, so the
    /// escalator looks at it again from `at`, unless it is closed).
    fn set_severity_title(
        &mut self,
        id: i64,
        severity: &str,
        title: &str,
        at: DateTime<Utc>,
    ) -> impl Future<Output = Result<(), sqlx::Error>> + Send;

    /// Records escalation levels `from..=level` of incident `id` as fired by `node` (each at
    /// most once, whichever daemon is first) and moves its level up; true when `level` itself
    /// was fired here (only then is it mailed).
    fn fire_levels(
        &mut self,
        id: i64,
        from: i64,
        level: i64,
        node: &str,
        now: DateTime<Utc>,
    ) -> impl Future<Output = Result<bool, sqlx::Error>> + Send;

    /// How many events incident `id` stores.
    fn count_events(&mut self, id: i64) -> impl Future<Output = Result<i64, sqlx::Error>> + Send;

    /// The incident's stored evidence, oldest first.
    fn events(&mut self, id: i64) -> impl Future<Output = Result<Vec<Event>, sqlx::Error>> + Send;

    /// Keeps the first and last `EVIDENCE_KEEP` events of incident `id`, deleting those
    /// between: evidence stays bounded however long an attack goes on. Returns how many went.
    fn trim_evidence(&mut self, id: i64) -> impl Future<Output = Result<u64, sqlx::Error>> + Send;

    /// Adds `count` to housekeeping's total of `kind`, in the transaction that deleted them
    /// (nothing when there is nothing to add).
    fn add_prune_total(
        &mut self,
        kind: &str,
        count: i64,
        at: DateTime<Utc>,
    ) -> impl Future<Output = Result<(), sqlx::Error>> + Send;

    /// Appends to the incident's timeline (the database refuses updates and deletes there).
    fn insert_timeline(
        &mut self,
        id: i64,
        at: DateTime<Utc>,
        actor: &str,
        action: &str,
        detail: &str,
    ) -> impl Future<Output = Result<(), sqlx::Error>> + Send;

    /// Applies `action`'s change to incident `id` if its status allows it (the check is part of
    /// the UPDATE, so two racing writers cannot both succeed); the number of rows changed. A
    /// change of status makes the escalator look at the incident again from `at` (a closed one
    /// is never due).
    fn transition(
        &mut self,
        id: i64,
        action: &Action,
        at: DateTime<Utc>,
    ) -> impl Future<Output = Result<u64, sqlx::Error>> + Send;

    /// The incident's status; `NotFound` when there is no such incident.
    fn status_of(&mut self, id: i64) -> impl Future<Output = Result<Status, StoreError>> + Send;

    /// Stores an intake mail with its disposition; false when it was stored before (same key
    /// and content hash), which makes a redelivery a no-op.
    fn insert_mail(
        &mut self,
        mail: &MailRecord,
        disposition: &str,
        reason: Option<&str>,
        at: DateTime<Utc>,
    ) -> impl Future<Output = Result<bool, sqlx::Error>> + Send;

    /// Records which incident a stored mail went to.
    fn link_mail(
        &mut self,
        mail: &MailRecord,
        incident: i64,
    ) -> impl Future<Output = Result<(), sqlx::Error>> + Send;

    /// Puts a notification in the outbox, due at once; its row id.
    fn enqueue(
        &mut self,
        incident: Option<i64>,
        mail: &Notification,
        now: DateTime<Utc>,
    ) -> impl Future<Output = Result<i64, sqlx::Error>> + Send;

    /// Stores `file` as an attachment of outbox row `outbox_id` (sent with it).
    fn attach(
        &mut self,
        outbox_id: i64,
        file: &Attachment,
    ) -> impl Future<Output = Result<(), sqlx::Error>> + Send;

    /// The attachments of outbox rows `ids`, in the order they were stored: `(row, file)`.
    fn attachments_of(
        &mut self,
        ids: &[i64],
    ) -> impl Future<Output = Result<Vec<(i64, Attachment)>, sqlx::Error>> + Send;

    /// Claims the run of schedule `name` due by `now`, storing `next` as its next run: a
    /// compare-and-set on `next_run_at`, so whichever daemon's transaction is first runs it and
    /// the others change nothing. Runs missed while no daemon ran collapse into this one.
    fn claim_schedule(
        &mut self,
        name: &str,
        now: DateTime<Utc>,
        next: DateTime<Utc>,
    ) -> impl Future<Output = Result<ScheduleClaim, sqlx::Error>> + Send;

    /// Makes this transaction the only one claiming outbox rows until it ends, so that two
    /// daemons cannot both count a group under its rate and both send (PostgreSQL's advisory
    /// lock; SQLite's BEGIN IMMEDIATE already does it).
    fn lock_outbox(&mut self) -> impl Future<Output = Result<(), sqlx::Error>> + Send;

    /// Composes the mail about incident `id` on `occasion` from what the transaction sees, puts
    /// it in the outbox, and records what it covered. The first mail becomes the thread.
    fn announce(
        &mut self,
        composer: &Composer,
        id: i64,
        occasion: &Occasion,
        now: DateTime<Utc>,
    ) -> impl Future<Output = Result<Notification, StoreError>> + Send;

    /// Incident `id`'s personal-information facts, if any were recorded.
    fn pii_facts(
        &mut self,
        id: i64,
    ) -> impl Future<Output = Result<Option<crate::pii::Facts>, StoreError>> + Send;

    /// The reports made on incident `id`, in the order recorded.
    fn pii_reports(
        &mut self,
        id: i64,
    ) -> impl Future<Output = Result<Vec<crate::pii::ReportMade>, StoreError>> + Send;

    /// Incident `id`'s statutory clocks, earliest deadline first (the escalator's reminders,
    /// `show`, the morning check).
    fn pii_clocks(
        &mut self,
        id: i64,
    ) -> impl Future<Output = Result<Vec<crate::pii::Clock>, StoreError>> + Send;

    /// Records that incident `id`'s required report to 個人情報保護委員会 raised it and is to be
    /// told to the CISO group, with the mail's `reason`; false when it was before (once per
    /// incident, whichever transaction is first).
    fn insert_pii_escalation(
        &mut self,
        id: i64,
        at: DateTime<Utc>,
        reason: &str,
    ) -> impl Future<Output = Result<bool, sqlx::Error>> + Send;

    /// Claims the CISO mail of incident `id`'s escalation if nobody has written it yet
    /// (compare-and-set on `notified_at`): its reason, or None when there is none to write.
    fn claim_pii_notice(
        &mut self,
        id: i64,
        at: DateTime<Utc>,
        by: &str,
    ) -> impl Future<Output = Result<Option<String>, sqlx::Error>> + Send;
}

/// The statements both backends run as written.
macro_rules! shared_statements {
    () => {
        async fn due_batch(&mut self, now: DateTime<Utc>, limit: i64) -> Result<Vec<DueRow>, sqlx::Error> {
            // `status <> 'closed'` is spelled as in the partial index `incidents_due`.
            let sql = format!(
                "SELECT {INCIDENT_COLUMNS}, notified_event_count, last_update_at FROM incidents \
                 WHERE status <> 'closed' AND due_at <= $1 ORDER BY due_at, id LIMIT $2{}",
                Self::DUE_LOCK
            );
            sqlx::query_as(&sql).bind(now).bind(limit).fetch_all(&mut *self).await
        }

        async fn claim_update(&mut self, id: i64, notified: i64) -> Result<bool, sqlx::Error> {
            Ok(sqlx::query(
                "UPDATE incidents SET notified_event_count = event_count WHERE id = $1 AND notified_event_count = $2",
            )
            .bind(id)
            .bind(notified)
            .execute(&mut *self)
            .await?
            .rows_affected()
                == 1)
        }

        async fn insert_reminder(
            &mut self,
            id: i64,
            name: &str,
            node: &str,
            now: DateTime<Utc>,
        ) -> Result<bool, sqlx::Error> {
            Ok(sqlx::query(
                "INSERT INTO deadline_reminders (incident_id, name, fired_at, node) VALUES ($1, $2, $3, $4) \
                 ON CONFLICT (incident_id, name) DO NOTHING",
            )
            .bind(id)
            .bind(name)
            .bind(now)
            .bind(node)
            .execute(&mut *self)
            .await?
            .rows_affected()
                == 1)
        }

        async fn set_due(&mut self, id: i64, at: Option<DateTime<Utc>>) -> Result<(), sqlx::Error> {
            sqlx::query("UPDATE incidents SET due_at = $2 WHERE id = $1")
                .bind(id)
                .bind(at)
                .execute(&mut *self)
                .await
                .map(|_| ())
        }

        async fn insert_incident(&mut self, row: &NewIncidentRow<'_>) -> Result<i64, sqlx::Error> {
            sqlx::query_scalar(
                "INSERT INTO incidents (playbook, category, title, severity, status, dedupe_key, fields, \
                 event_count, first_seen, last_seen, opened_at, due_at, origin) \
                 VALUES ($1, $2, $3, $4, 'open', $5, $6, $7, $8, $9, $10, $10, $11) RETURNING id",
            )
            .bind(row.playbook)
            .bind(row.category)
            .bind(row.title)
            .bind(row.severity)
            .bind(row.dedupe_key)
            .bind(Json(row.fields))
            .bind(row.event_count)
            .bind(row.first_seen)
            .bind(row.last_seen)
            .bind(row.opened_at)
            .bind(row.origin)
            .fetch_one(&mut *self)
            .await
        }

        async fn incident(&mut self, id: i64) -> Result<Incident, StoreError> {
            let sql = format!("SELECT {INCIDENT_COLUMNS} FROM incidents WHERE id = $1");
            let row: Option<IncidentRow> =
                sqlx::query_as(&sql).bind(id).fetch_optional(&mut *self).await?;
            row.ok_or(StoreError::NotFound(id))?.try_into()
        }

        async fn add_hits(
            &mut self,
            id: i64,
            hits: i64,
            first: DateTime<Utc>,
            last: DateTime<Utc>,
            at: DateTime<Utc>,
        ) -> Result<u64, sqlx::Error> {
            // Only the first events after a mail move `due_at`: from then on the escalator has
            // scheduled the update (SET reads the row as it was before this UPDATE), so a flood
            // of hits does not make the incident due again and again.
            Ok(sqlx::query(
                "UPDATE incidents SET event_count = event_count + $2, \
                 last_seen = CASE WHEN $3 > last_seen THEN $3 ELSE last_seen END, \
                 first_seen = CASE WHEN $4 < first_seen THEN $4 ELSE first_seen END, \
                 due_at = CASE WHEN $2 > 0 AND event_count = notified_event_count \
                 AND (due_at IS NULL OR due_at > $5) THEN $5 ELSE due_at END \
                 WHERE id = $1 AND status <> 'closed'",
            )
            .bind(id)
            .bind(hits)
            .bind(last)
            .bind(first)
            .bind(at)
            .execute(&mut *self)
            .await?
            .rows_affected())
        }

        async fn insert_event(
            &mut self,
            incident: Option<i64>,
            event: &NewEventRow<'_>,
            received_at: DateTime<Utc>,
        ) -> Result<(), sqlx::Error> {
            sqlx::query(
                "INSERT INTO events (incident_id, playbook, rule, dedupe_key, kind, source, locator, \
                 observed_at, received_at, text, fields, weight) VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12)",
            )
            .bind(incident)
            .bind(event.playbook)
            .bind(event.rule)
            .bind(event.dedupe_key)
            .bind(event.kind)
            .bind(event.source)
            .bind(event.locator)
            .bind(event.observed_at)
            .bind(received_at)
            .bind(event.text)
            .bind(Json(event.fields))
            .bind(i64::from(event.weight))
            .execute(&mut *self)
            .await
            .map(|_| ())
        }

        async fn settle_pending(
            &mut self,
            playbook: &str,
            key: &str,
            floor: DateTime<Utc>,
        ) -> Result<(i64, Option<DateTime<Utc>>), sqlx::Error> {
            sqlx::query(
                "DELETE FROM events WHERE playbook = $1 AND dedupe_key = $2 AND incident_id IS NULL AND observed_at < $3",
            )
            .bind(playbook)
            .bind(key)
            .bind(floor)
            .execute(&mut *self)
            .await?;
            // SUM of an INTEGER column is BIGINT on PostgreSQL and INTEGER on SQLite: both i64.
            sqlx::query_as(
                "SELECT COALESCE(SUM(weight), 0), MIN(observed_at) FROM events \
                 WHERE playbook = $1 AND dedupe_key = $2 AND incident_id IS NULL",
            )
            .bind(playbook)
            .bind(key)
            .fetch_one(&mut *self)
            .await
        }

        async fn closed_since(
            &mut self,
            playbook: &str,
            key: &str,
            since: DateTime<Utc>,
        ) -> Result<Option<i64>, sqlx::Error> {
            sqlx::query_scalar(
                "SELECT id FROM incidents WHERE playbook = $1 AND dedupe_key = $2 AND status = 'closed' \
                 AND closed_at >= $3 ORDER BY closed_at DESC LIMIT 1",
            )
            .bind(playbook)
            .bind(key)
            .bind(since)
            .fetch_optional(&mut *self)
            .await
        }

        async fn pending_failures(
            &mut self,
            playbook: &str,
            key: &str,
            since: DateTime<Utc>,
        ) -> Result<(i64, Option<DateTime<Utc>>), sqlx::Error> {
            sqlx::query_as(
                "SELECT COALESCE(SUM(weight), 0), MIN(observed_at) FROM events \
                 WHERE playbook = $1 AND dedupe_key = $2 AND incident_id IS NULL AND observed_at >= $3",
            )
            .bind(playbook)
            .bind(key)
            .bind(since)
            .fetch_one(&mut *self)
            .await
        }

        async fn attach_pending(&mut self, id: i64, playbook: &str, key: &str) -> Result<(), sqlx::Error> {
            sqlx::query(
                "UPDATE events SET incident_id = $1 WHERE playbook = $2 AND dedupe_key = $3 AND incident_id IS NULL",
            )
            .bind(id)
            .bind(playbook)
            .bind(key)
            .execute(&mut *self)
            .await
            .map(|_| ())
        }

        async fn set_severity_title(
            &mut self,
            id: i64,
            severity: &str,
            title: &str,
            at: DateTime<Utc>,
        ) -> Result<(), sqlx::Error> {
            // A closed incident is never due (a required report raises it after closing too).
            sqlx::query(
                "UPDATE incidents SET severity = $2, title = $3, \
                 due_at = CASE WHEN status = 'closed' THEN NULL ELSE $4 END WHERE id = $1",
            )
                .bind(id)
                .bind(severity)
                .bind(title)
                .bind(at)
                .execute(&mut *self)
                .await
                .map(|_| ())
        }

        async fn fire_levels(
            &mut self,
            id: i64,
            from: i64,
            level: i64,
            node: &str,
            now: DateTime<Utc>,
        ) -> Result<bool, sqlx::Error> {
            let mut fired = false;
            for l in from..=level {
                let inserted = sqlx::query(
                    "INSERT INTO escalations (incident_id, level, fired_at, node) VALUES ($1, $2, $3, $4) \
                     ON CONFLICT (incident_id, level) DO NOTHING",
                )
                .bind(id)
                .bind(l)
                .bind(now)
                .bind(node)
                .execute(&mut *self)
                .await?
                .rows_affected();
                fired |= inserted == 1 && l == level;
            }
            if fired {
                sqlx::query("UPDATE incidents SET escalation_level = $2 WHERE id = $1 AND escalation_level < $2")
                    .bind(id)
                    .bind(level)
                    .execute(&mut *self)
                    .await?;
            }
            Ok(fired)
        }

        async fn count_events(&mut self, id: i64) -> Result<i64, sqlx::Error> {
            sqlx::query_scalar("SELECT COUNT(*) FROM events WHERE incident_id = $1")
                .bind(id)
                .fetch_one(&mut *self)
                .await
        }

        async fn events(&mut self, id: i64) -> Result<Vec<Event>, sqlx::Error> {
            let rows: Vec<EventRow> = sqlx::query_as(
                "SELECT kind, rule, source, locator, observed_at, text, fields FROM events \
                 WHERE incident_id = $1 ORDER BY id",
            )
            .bind(id)
            .fetch_all(&mut *self)
            .await?;
            Ok(rows.into_iter().map(Event::from).collect())
        }

        async fn trim_evidence(&mut self, id: i64) -> Result<u64, sqlx::Error> {
            sqlx::query(
                "DELETE FROM events WHERE incident_id = $1 \
                 AND id > (SELECT id FROM events WHERE incident_id = $1 ORDER BY id LIMIT 1 OFFSET $2) \
                 AND id < (SELECT id FROM events WHERE incident_id = $1 ORDER BY id DESC LIMIT 1 OFFSET $2)",
            )
            .bind(id)
            .bind(EVIDENCE_KEEP - 1)
            .execute(&mut *self)
            .await
            .map(|r| r.rows_affected())
        }

        async fn add_prune_total(&mut self, kind: &str, count: i64, at: DateTime<Utc>) -> Result<(), sqlx::Error> {
            if count == 0 {
                return Ok(());
            }
            sqlx::query(
                "INSERT INTO prune_totals (kind, total, last_at) VALUES ($1, $2, $3) \
                 ON CONFLICT (kind) DO UPDATE SET total = prune_totals.total + excluded.total, last_at = excluded.last_at",
            )
            .bind(kind)
            .bind(count)
            .bind(at)
            .execute(&mut *self)
            .await
            .map(|_| ())
        }

        async fn insert_timeline(
            &mut self,
            id: i64,
            at: DateTime<Utc>,
            actor: &str,
            action: &str,
            detail: &str,
        ) -> Result<(), sqlx::Error> {
            sqlx::query("INSERT INTO timeline (incident_id, at, actor, action, detail) VALUES ($1, $2, $3, $4, $5)")
                .bind(id)
                .bind(at)
                .bind(actor)
                .bind(action)
                .bind(detail)
                .execute(&mut *self)
                .await
                .map(|_| ())
        }

        async fn transition(&mut self, id: i64, action: &Action, at: DateTime<Utc>) -> Result<u64, sqlx::Error> {
            let allowed = action
                .allowed_from()
                .iter()
                .map(|s| format!("'{}'", s.as_str()))
                .collect::<Vec<_>>()
                .join(", ");
            // Statuses come from our own enum, never from input: safe to format into the statement.
            // A status change sets `due_at`: reopened, the incident escalates again; acknowledged,
            // the escalator looks once more and keeps only its reminders and updates; closed, it
            // is never due.
            let set = match action {
                Action::Acknowledge => "status = 'acknowledged', acknowledged_at = $2, due_at = $2",
                Action::Assign(_) => "assignee = $2",
                // A no-op change rather than a SELECT: it checks existence and status, and on
                // PostgreSQL it locks the row until the timeline entry is written.
                Action::Note(_) => "last_seen = last_seen",
                Action::Close { .. } => {
                    "status = 'closed', closed_at = $2, resolution = $3, due_at = NULL"
                }
                Action::Reopen => {
                    "status = 'open', closed_at = NULL, resolution = NULL, acknowledged_at = NULL, due_at = $2"
                }
            };
            let sql = format!("UPDATE incidents SET {set} WHERE id = $1 AND status IN ({allowed})");
            let query = sqlx::query(&sql).bind(id);
            let query = match action {
                Action::Acknowledge => query.bind(at),
                Action::Assign(user) => query.bind(user.as_str()),
                Action::Close { resolution, .. } => query.bind(at).bind(resolution.as_str()),
                Action::Reopen => query.bind(at),
                Action::Note(_) => query,
            };
            Ok(query.execute(&mut *self).await?.rows_affected())
        }

        async fn status_of(&mut self, id: i64) -> Result<Status, StoreError> {
            let status: Option<String> = sqlx::query_scalar("SELECT status FROM incidents WHERE id = $1")
                .bind(id)
                .fetch_optional(&mut *self)
                .await?;
            status
                .ok_or(StoreError::NotFound(id))?
                .parse()
                .map_err(|e| StoreError::Corrupt(format!("incident #{id}: {e}")))
        }

        async fn insert_mail(
            &mut self,
            mail: &MailRecord,
            disposition: &str,
            reason: Option<&str>,
            at: DateTime<Utc>,
        ) -> Result<bool, sqlx::Error> {
            Ok(sqlx::query(
                "INSERT INTO mails (message_key, content_hash, received_at, source, disposition, reason, size, raw) \
                 VALUES ($1, $2, $3, $4, $5, $6, $7, $8) ON CONFLICT (message_key, content_hash) DO NOTHING",
            )
            .bind(&mail.key)
            .bind(&mail.hash)
            .bind(at)
            .bind(&mail.source)
            .bind(disposition)
            .bind(reason)
            .bind(mail.size)
            // Moved, not copied: sqlx would clone a blob bound by reference (see RawMail).
            .bind(mail.raw.take())
            .execute(&mut *self)
            .await?
            .rows_affected()
                == 1)
        }

        async fn link_mail(&mut self, mail: &MailRecord, incident: i64) -> Result<(), sqlx::Error> {
            sqlx::query("UPDATE mails SET incident_id = $1 WHERE message_key = $2 AND content_hash = $3")
                .bind(incident)
                .bind(&mail.key)
                .bind(&mail.hash)
                .execute(&mut *self)
                .await
                .map(|_| ())
        }

        async fn enqueue(
            &mut self,
            incident: Option<i64>,
            mail: &Notification,
            now: DateTime<Utc>,
        ) -> Result<i64, sqlx::Error> {
            sqlx::query_scalar(
                "INSERT INTO outbox (incident_id, kind, message_id, in_reply_to, recipients, subject, body, \
                 created_at, next_attempt_at) VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $8) RETURNING id",
            )
            .bind(incident)
            .bind(mail.kind)
            .bind(&mail.message_id)
            .bind(&mail.in_reply_to)
            .bind(serde_json::Value::from(mail.recipients.clone()).to_string())
            .bind(&mail.subject)
            .bind(&mail.body)
            .bind(now)
            .fetch_one(&mut *self)
            .await
        }

        async fn pii_facts(&mut self, id: i64) -> Result<Option<crate::pii::Facts>, StoreError> {
            let sql = format!("SELECT {} FROM pii_facts WHERE incident_id = $1", super::pii::FACT_COLUMNS);
            let row: Option<super::pii::FactsRow> =
                sqlx::query_as(&sql).bind(id).fetch_optional(&mut *self).await?;
            Ok(row.map(Into::into))
        }

        async fn pii_reports(&mut self, id: i64) -> Result<Vec<crate::pii::ReportMade>, StoreError> {
            let sql = format!(
                "SELECT {} FROM pii_reports WHERE incident_id = $1 ORDER BY id",
                super::pii::REPORT_COLUMNS
            );
            let rows: Vec<super::pii::ReportRow> = sqlx::query_as(&sql).bind(id).fetch_all(&mut *self).await?;
            rows.into_iter().map(|r| r.into_report(id)).collect()
        }

        async fn pii_clocks(&mut self, id: i64) -> Result<Vec<crate::pii::Clock>, StoreError> {
            let sql = format!(
                "SELECT {} FROM pii_clocks WHERE incident_id = $1 ORDER BY COALESCE(due_at, warn_at), warn_at, duty, name",
                super::pii::CLOCK_COLUMNS
            );
            let rows: Vec<super::pii::ClockRow> = sqlx::query_as(&sql).bind(id).fetch_all(&mut *self).await?;
            rows.into_iter().map(|r| r.into_clock(id)).collect()
        }

        async fn insert_pii_escalation(
            &mut self,
            id: i64,
            at: DateTime<Utc>,
            reason: &str,
        ) -> Result<bool, sqlx::Error> {
            Ok(sqlx::query(
                "INSERT INTO pii_escalations (incident_id, raised_at, reason) VALUES ($1, $2, $3) \
                 ON CONFLICT (incident_id) DO NOTHING",
            )
            .bind(id)
            .bind(at)
            .bind(reason)
            .execute(&mut *self)
            .await?
            .rows_affected()
                == 1)
        }

        async fn claim_pii_notice(
            &mut self,
            id: i64,
            at: DateTime<Utc>,
            by: &str,
        ) -> Result<Option<String>, sqlx::Error> {
            sqlx::query_scalar(
                "UPDATE pii_escalations SET notified_at = $2, notified_by = $3 \
                 WHERE incident_id = $1 AND notified_at IS NULL RETURNING reason",
            )
            .bind(id)
            .bind(at)
            .bind(by)
            .fetch_optional(&mut *self)
            .await
        }

        async fn attach(&mut self, outbox_id: i64, file: &Attachment) -> Result<(), sqlx::Error> {
            sqlx::query(
                "INSERT INTO outbox_attachments (outbox_id, name, content_type, content) VALUES ($1, $2, $3, $4)",
            )
            .bind(outbox_id)
            .bind(&file.name)
            .bind(&file.content_type)
            .bind(file.content.as_slice())
            .execute(&mut *self)
            .await
            .map(|_| ())
        }

        async fn attachments_of(&mut self, ids: &[i64]) -> Result<Vec<(i64, Attachment)>, sqlx::Error> {
            // The ids are our own numbers: formatted into the statement, one statement per batch.
            let list: Vec<String> = ids.iter().map(i64::to_string).collect();
            let sql = format!(
                "SELECT outbox_id, name, content_type, content FROM outbox_attachments \
                 WHERE outbox_id IN ({}) ORDER BY id",
                list.join(", ")
            );
            let rows: Vec<(i64, String, String, Vec<u8>)> =
                sqlx::query_as(&sql).fetch_all(&mut *self).await?;
            Ok(rows
                .into_iter()
                .map(|(id, name, content_type, content)| (id, Attachment { name, content_type, content }))
                .collect())
        }

        async fn claim_schedule(
            &mut self,
            name: &str,
            now: DateTime<Utc>,
            next: DateTime<Utc>,
        ) -> Result<ScheduleClaim, sqlx::Error> {
            let stored: Option<DateTime<Utc>> =
                sqlx::query_scalar("SELECT next_run_at FROM schedule_runs WHERE name = $1")
                    .bind(name)
                    .fetch_optional(&mut *self)
                    .await?;
            let Some(due) = stored else {
                sqlx::query("INSERT INTO schedule_runs (name, next_run_at) VALUES ($1, $2) ON CONFLICT (name) DO NOTHING")
                    .bind(name)
                    .bind(next)
                    .execute(&mut *self)
                    .await?;
                return Ok(ScheduleClaim::Registered);
            };
            if due > now {
                return Ok(ScheduleClaim::NotDue);
            }
            let claimed = sqlx::query(
                "UPDATE schedule_runs SET next_run_at = $2, last_run_at = $3 WHERE name = $1 AND next_run_at = $4",
            )
            .bind(name)
            .bind(next)
            .bind(now)
            .bind(due)
            .execute(&mut *self)
            .await?
            .rows_affected();
            Ok(if claimed == 1 { ScheduleClaim::Claimed } else { ScheduleClaim::Taken })
        }

        async fn announce(
            &mut self,
            composer: &Composer,
            id: i64,
            occasion: &Occasion,
            now: DateTime<Utc>,
        ) -> Result<Notification, StoreError> {
            let incident = self.incident(id).await?;
            let thread: Option<String> =
                sqlx::query_scalar("SELECT thread_message_id FROM incidents WHERE id = $1")
                    .bind(id)
                    .fetch_one(&mut *self)
                    .await?;
            let evidence = self.events(id).await?;
            let mail = composer.incident_mail(occasion, &incident, &evidence, thread.as_deref(), now);
            self.enqueue(Some(id), &mail, now).await?;
            sqlx::query(
                "UPDATE incidents SET thread_message_id = COALESCE(thread_message_id, $2), \
                 notified_event_count = CASE WHEN $3 THEN event_count ELSE notified_event_count END, \
                 last_update_at = CASE WHEN $3 THEN $4 ELSE last_update_at END WHERE id = $1",
            )
            .bind(id)
            .bind(&mail.message_id)
            .bind(matches!(occasion, Occasion::Opened | Occasion::Update { .. }))
            .bind(now)
            .execute(&mut *self)
            .await?;
            Ok(mail)
        }
    };
}

impl Sql for sqlx::SqliteConnection {
    const DUE_LOCK: &'static str = "";

    shared_statements!();

    async fn lock_key(&mut self, _: &str, _: &str) -> Result<(), sqlx::Error> {
        Ok(())
    }

    async fn lock_outbox(&mut self) -> Result<(), sqlx::Error> {
        Ok(())
    }
}

impl Sql for sqlx::PgConnection {
    const DUE_LOCK: &'static str = " FOR UPDATE SKIP LOCKED";

    shared_statements!();

    async fn lock_key(&mut self, playbook: &str, key: &str) -> Result<(), sqlx::Error> {
        sqlx::query("SELECT pg_advisory_xact_lock(hashtext($1), hashtext($2))")
            .bind(playbook)
            .bind(key)
            .execute(&mut *self)
            .await
            .map(|_| ())
    }

    async fn lock_outbox(&mut self) -> Result<(), sqlx::Error> {
        // The one-key form: a space apart from lock_key's two-key locks.
        sqlx::query("SELECT pg_advisory_xact_lock(hashtext('csirt.outbox.claim'))")
            .execute(&mut *self)
            .await
            .map(|_| ())
    }
}
