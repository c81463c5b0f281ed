//! The daemons' own records: heartbeats, the recent errors `csirt status` shows, and the counts
//! of its overview.

use super::{Backend, Store, StoreError};
use crate::model::{Severity, now};
use chrono::{DateTime, Utc};
use sqlx::FromRow;

/// A daemon's last sign of life.
#[derive(Debug, Clone, PartialEq, FromRow, serde::Serialize)]
pub struct Heartbeat {
    pub node: String,
    pub pid: i64,
    pub version: String,
    pub started_at: DateTime<Utc>,
    pub beat_at: DateTime<Utc>,
    pub summary: String,
}

/// A refusal or failure recorded for `csirt status`.
#[derive(Debug, Clone, PartialEq, FromRow, serde::Serialize)]
pub struct DaemonError {
    pub at: DateTime<Utc>,
    pub node: String,
    pub component: String,
    pub message: String,
}

/// The numbers `csirt status` shows.
#[derive(Debug, Clone, Default, PartialEq, serde::Serialize)]
pub struct Overview {
    /// Not-closed incidents per severity, most severe first.
    pub open_by_severity: Vec<(Severity, i64)>,
    pub outbox_pending: i64,
    pub outbox_failed: i64,
    /// Recipients refused while the rest of their mail went out.
    pub outbox_refused: i64,
    pub quarantined_mails: i64,
}

/// Statements `csirt status` also runs in its snapshot (`store::status`).
pub(super) const HEARTBEATS: &str = "SELECT node, pid, version, started_at, beat_at, summary FROM daemon_heartbeats ORDER BY beat_at DESC";
pub(super) const RECENT_ERRORS: &str =
    "SELECT at, node, component, message FROM daemon_errors ORDER BY id DESC LIMIT $1";
pub(super) const OPEN_BY_SEVERITY: &str =
    "SELECT severity, COUNT(*) FROM incidents WHERE status <> 'closed' GROUP BY severity";
pub(super) const QUARANTINED: &str = "SELECT COUNT(*) FROM mails WHERE disposition = 'quarantined'";

/// The component under which a daemon records why its ingest stopped (a batch that does not
/// commit: the store's disk is full, the store is away), in `daemon_errors` and in its
/// heartbeat row (`set_ingest_stopped`); removed once a batch commits again.
pub const INGEST_STOPPED: &str = "ingest";

/// The daemons whose ingest is stopped, and why, as `DaemonError`s (component `$1`), newest first.
pub(super) const INGEST_STOPS: &str = "SELECT ingest_stopped_at AS at, node, $1 AS component, \
     ingest_stopped AS message FROM daemon_heartbeats WHERE ingest_stopped IS NOT NULL \
     ORDER BY ingest_stopped_at DESC";

/// How many errors the store keeps for `csirt status`; older ones are dropped.
const KEPT_ERRORS: i64 = 1_000;

impl Store {
    /// Records that the daemon on `node` is alive.
    pub async fn beat(&self, beat: &Heartbeat) -> Result<(), StoreError> {
        transaction!(self, tx => {
            sqlx::query(
                "INSERT INTO daemon_heartbeats (node, pid, version, started_at, beat_at, summary) \
                 VALUES ($1, $2, $3, $4, $5, $6) ON CONFLICT (node) DO UPDATE SET pid = excluded.pid, \
                 version = excluded.version, started_at = excluded.started_at, beat_at = excluded.beat_at, \
                 summary = excluded.summary",
            )
            .bind(&beat.node)
            .bind(beat.pid)
            .bind(&beat.version)
            .bind(beat.started_at)
            .bind(beat.beat_at)
            .bind(&beat.summary)
            .execute(&mut *tx)
            .await?;
            Ok(())
        })
    }

    /// Records on `node`'s heartbeat row why its ingest is stopped since `at` (None: it runs).
    /// An UPDATE of an existing row, so that it finds room when the disk has little: the row
    /// exists from the daemon's first beat.
    pub async fn set_ingest_stopped(
        &self,
        node: &str,
        stopped: Option<(&str, DateTime<Utc>)>,
    ) -> Result<(), StoreError> {
        let (why, at) = stopped.unzip();
        transaction!(self, tx => {
            sqlx::query(
                "UPDATE daemon_heartbeats SET ingest_stopped = $2, ingest_stopped_at = $3 WHERE node = $1",
            )
            .bind(node)
            .bind(why)
            .bind(at)
            .execute(&mut *tx)
            .await?;
            Ok(())
        })
    }

    /// Every daemon's last heartbeat, most recent first.
    pub async fn heartbeats(&self) -> Result<Vec<Heartbeat>, StoreError> {
        Ok(read!(self, pool => sqlx::query_as(HEARTBEATS)
        .fetch_all(pool)
        .await?))
    }

    /// Records a refusal or failure for `csirt status`, keeping the most recent ones only.
    pub async fn record_error(
        &self,
        node: &str,
        component: &str,
        message: &str,
    ) -> Result<(), StoreError> {
        let at = now();
        transaction!(self, tx => {
            sqlx::query("INSERT INTO daemon_errors (at, node, component, message) VALUES ($1, $2, $3, $4)")
                .bind(at)
                .bind(node)
                .bind(component)
                .bind(message)
                .execute(&mut *tx)
                .await?;
            sqlx::query("DELETE FROM daemon_errors WHERE id <= (SELECT MAX(id) FROM daemon_errors) - $1")
                .bind(KEPT_ERRORS)
                .execute(&mut *tx)
                .await?;
            Ok(())
        })
    }

    /// Forgets `node`'s errors of `component` that a success has superseded: a reload error
    /// once a reload (or a start) has loaded the configuration, so that `csirt status` does
    /// not show a fixed error as current. The journal keeps them.
    pub async fn resolve_errors(&self, node: &str, component: &str) -> Result<(), StoreError> {
        transaction!(self, tx => {
            sqlx::query("DELETE FROM daemon_errors WHERE node = $1 AND component = $2")
                .bind(node)
                .bind(component)
                .execute(&mut *tx)
                .await?;
            Ok(())
        })
    }

    /// The most recent recorded errors, newest first.
    pub async fn recent_errors(&self, limit: i64) -> Result<Vec<DaemonError>, StoreError> {
        Ok(read!(self, pool => sqlx::query_as(RECENT_ERRORS)
        .bind(limit)
        .fetch_all(pool)
        .await?))
    }

    /// Counts for `csirt status`.
    pub async fn overview(&self) -> Result<Overview, StoreError> {
        type Counts = Vec<(String, i64)>;
        let (by_severity, outbox, refused, quarantined): (Counts, Counts, i64, i64) = read!(self, pool => (
            sqlx::query_as(OPEN_BY_SEVERITY)
                .fetch_all(pool)
                .await?,
            sqlx::query_as("SELECT status, COUNT(*) FROM outbox WHERE status <> 'sent' GROUP BY status")
                .fetch_all(pool)
                .await?,
            sqlx::query_scalar("SELECT COUNT(*) FROM mail_refusals")
                .fetch_one(pool)
                .await?,
            sqlx::query_scalar(QUARANTINED)
                .fetch_one(pool)
                .await?,
        ));
        let count_of = |rows: &[(String, i64)], key: &str| {
            rows.iter().find(|(k, _)| k == key).map_or(0, |(_, n)| *n)
        };
        Ok(Overview {
            open_by_severity: Severity::ALL
                .iter()
                .map(|s| (*s, count_of(&by_severity, s.as_str())))
                .collect(),
            outbox_pending: count_of(&outbox, "pending"),
            outbox_failed: count_of(&outbox, "failed"),
            outbox_refused: refused,
            quarantined_mails: quarantined,
        })
    }
}
