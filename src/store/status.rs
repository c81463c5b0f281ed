//! What `csirt status` reads, in one read-only transaction: the counts of its summary and the
//! rows listed under them come from the same state of the store, so they cannot disagree (the
//! bug of issue #17: "outbox 0 pending" over "送信待ち (outbox): 1"). A failure that a later
//! success superseded is not counted or listed: a mail refused for a recipient group that has
//! since received mail, a reload error of a daemon that has since reloaded or restarted.

use super::daemons::{HEARTBEATS, INGEST_STOPS, OPEN_BY_SEVERITY, QUARANTINED, RECENT_ERRORS};
use super::outbox::{OutboxStats, RECENT_FAILURE, Refusal};
use super::{Backend, DaemonError, Heartbeat, Store, StoreError};
use crate::model::Severity;
use chrono::{DateTime, TimeDelta, Utc};

/// How many failures and refusals `csirt status` lists (the counts cover all of them).
const LISTED: i64 = 5;

/// A failed mail (`o`) is superseded once mail to the same recipient group went out after it
/// (sent itself, not folded into a digest: a digest is another recipient group's row).
const FAILURE_OPEN: &str = "NOT EXISTS (SELECT 1 FROM outbox s WHERE s.status = 'sent' AND s.sent_in IS NULL \
     AND s.recipients = o.recipients AND s.sent_at > o.failed_at)";

/// A refused recipient (`r`, of mail `o`) is superseded once a later mail to the same group
/// went out and was not refused for that recipient.
const REFUSAL_OPEN: &str = "NOT EXISTS (SELECT 1 FROM outbox s WHERE s.status = 'sent' AND s.sent_in IS NULL \
     AND s.recipients = o.recipients AND s.sent_at > r.at AND NOT EXISTS \
     (SELECT 1 FROM mail_refusals r2 WHERE r2.outbox_id = s.id AND r2.recipient = r.recipient))";

/// Intake mail quarantined and not yet announced to `[notify] to`.
const UNANNOUNCED: &str =
    "FROM mails WHERE disposition = 'quarantined' AND announced_at IS NULL AND received_at < $1";

/// Everything `csirt status` shows from the store, as of one moment.
#[derive(Debug, Clone, serde::Serialize)]
pub struct StatusSnapshot {
    /// Not-closed incidents per severity, most severe first.
    pub open_by_severity: Vec<(Severity, i64)>,
    pub outbox: OutboxStats,
    pub quarantine: QuarantineBacklog,
    /// Every daemon's last heartbeat, most recent first.
    pub heartbeats: Vec<Heartbeat>,
    /// The latest recorded errors, newest first (the superseded ones left out).
    pub errors: Vec<DaemonError>,
    /// Why ingest is stopped, per daemon that recorded a stop on its heartbeat row and has not
    /// resumed since (the store writer clears it when a batch commits again), newest first.
    pub ingest_stops: Vec<DaemonError>,
}

/// Quarantined intake mail, and what of it the responders have not been told about in time.
#[derive(Debug, Clone, Default, serde::Serialize)]
pub struct QuarantineBacklog {
    pub quarantined: i64,
    /// Quarantined before the `overdue_before` given and still not announced: the notice that
    /// should list them has not been written (no daemon, or its escalator is stuck).
    pub unannounced_overdue: i64,
    pub oldest_unannounced: Option<DateTime<Utc>>,
}

/// Runs `$body` with `$tx` bound to one read-only transaction on the read pool, rolled back at
/// the end. SQLite under WAL keeps the snapshot of a read transaction's first read until it
/// ends; PostgreSQL's REPEATABLE READ gives the same for the whole transaction.
macro_rules! snapshot {
    ($self:ident, $tx:ident => $body:expr) => {
        match &$self.backend {
            Backend::Sqlite { read, .. } => {
                let mut $tx = read.begin().await?;
                let result = async { $body }.await;
                $tx.rollback().await?;
                result
            }
            Backend::Postgres(pool) => {
                let mut $tx = pool
                    .begin_with("BEGIN ISOLATION LEVEL REPEATABLE READ READ ONLY")
                    .await?;
                let result = async { $body }.await;
                $tx.rollback().await?;
                result
            }
        }
    };
}

impl Store {
    /// The state `csirt status` shows, read in one transaction. "Recently" is since
    /// `now - RECENT_FAILURE`; quarantined mail received before `overdue_before` should have
    /// been announced by then.
    pub async fn status_snapshot(
        &self,
        now: DateTime<Utc>,
        overdue_before: DateTime<Utc>,
        errors: i64,
    ) -> Result<StatusSnapshot, StoreError> {
        let since = now - RECENT_FAILURE;
        snapshot!(self, tx => {
            let by_severity: Vec<(String, i64)> = sqlx::query_as(OPEN_BY_SEVERITY)
                .fetch_all(&mut *tx)
                .await?;
            let quarantined: i64 = sqlx::query_scalar(QUARANTINED).fetch_one(&mut *tx).await?;
            let (unannounced_overdue, oldest_unannounced): (i64, Option<DateTime<Utc>>) =
                sqlx::query_as(&format!("SELECT COUNT(*), MIN(received_at) {UNANNOUNCED}"))
                    .bind(overdue_before)
                    .fetch_one(&mut *tx)
                    .await?;
            let (pending, retrying, sent, oldest_pending): (i64, i64, i64, Option<DateTime<Utc>>) =
                sqlx::query_as(
                    "SELECT COALESCE(SUM(CASE WHEN status = 'pending' THEN 1 ELSE 0 END), 0), \
                     COALESCE(SUM(CASE WHEN status = 'pending' AND last_error IS NOT NULL THEN 1 ELSE 0 END), 0), \
                     COALESCE(SUM(CASE WHEN status = 'sent' THEN 1 ELSE 0 END), 0), \
                     MIN(CASE WHEN status = 'pending' THEN created_at END) FROM outbox",
                )
                .fetch_one(&mut *tx)
                .await?;
            // A failure recorded before its time was (schema 11) has none: not recent.
            let (failed, failed_resolved, failed_recently): (i64, i64, i64) = sqlx::query_as(&format!(
                "SELECT COALESCE(SUM(CASE WHEN {FAILURE_OPEN} THEN 1 ELSE 0 END), 0), \
                 COALESCE(SUM(CASE WHEN {FAILURE_OPEN} THEN 0 ELSE 1 END), 0), \
                 COALESCE(SUM(CASE WHEN {FAILURE_OPEN} AND o.failed_at >= $1 THEN 1 ELSE 0 END), 0) \
                 FROM outbox o WHERE o.status = 'failed'"
            ))
            .bind(since)
            .fetch_one(&mut *tx)
            .await?;
            let failures: Vec<(i64, String, String)> = sqlx::query_as(&format!(
                "SELECT o.id, o.subject, COALESCE(o.last_error, '') FROM outbox o \
                 WHERE o.status = 'failed' AND {FAILURE_OPEN} ORDER BY o.id DESC LIMIT $1"
            ))
            .bind(LISTED)
            .fetch_all(&mut *tx)
            .await?;
            let (refused, refused_resolved, refused_recently): (i64, i64, i64) = sqlx::query_as(&format!(
                "SELECT COALESCE(SUM(CASE WHEN {REFUSAL_OPEN} THEN 1 ELSE 0 END), 0), \
                 COALESCE(SUM(CASE WHEN {REFUSAL_OPEN} THEN 0 ELSE 1 END), 0), \
                 COALESCE(SUM(CASE WHEN {REFUSAL_OPEN} AND r.at >= $1 THEN 1 ELSE 0 END), 0) \
                 FROM mail_refusals r JOIN outbox o ON o.id = r.outbox_id"
            ))
            .bind(since)
            .fetch_one(&mut *tx)
            .await?;
            let refusals: Vec<Refusal> = sqlx::query_as(&format!(
                "SELECT r.outbox_id, o.subject, r.recipient, r.error, r.at FROM mail_refusals r \
                 JOIN outbox o ON o.id = r.outbox_id WHERE {REFUSAL_OPEN} ORDER BY r.id DESC LIMIT $1"
            ))
            .bind(LISTED)
            .fetch_all(&mut *tx)
            .await?;
            let heartbeats: Vec<Heartbeat> = sqlx::query_as(HEARTBEATS).fetch_all(&mut *tx).await?;
            let errors: Vec<DaemonError> = sqlx::query_as(RECENT_ERRORS)
                .bind(errors)
                .fetch_all(&mut *tx)
                .await?;
            let ingest_stops: Vec<DaemonError> = sqlx::query_as(INGEST_STOPS)
                .bind(super::INGEST_STOPPED)
                .fetch_all(&mut *tx)
                .await?;
            let count_of = |key: &str| {
                by_severity.iter().find(|(k, _)| k == key).map_or(0, |(_, n)| *n)
            };
            Ok(StatusSnapshot {
                open_by_severity: Severity::ALL
                    .iter()
                    .map(|s| (*s, count_of(s.as_str())))
                    .collect(),
                outbox: OutboxStats {
                    pending,
                    retrying,
                    failed,
                    failed_resolved,
                    sent,
                    refused,
                    refused_resolved,
                    failed_recently,
                    refused_recently,
                    oldest_pending,
                    failures,
                    refusals,
                },
                quarantine: QuarantineBacklog {
                    quarantined,
                    unannounced_overdue,
                    oldest_unannounced: oldest_unannounced.filter(|_| unannounced_overdue > 0),
                },
                heartbeats,
                errors,
                ingest_stops,
            })
        })
    }
}

/// How long after `quarantine_notice` an unannounced quarantine counts as overdue: one
/// heartbeat and the escalator's pass, so that a status read mid-pass does not alarm.
pub const ANNOUNCE_GRACE: TimeDelta = TimeDelta::minutes(5);
