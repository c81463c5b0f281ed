//! The transactional outbox: the notifier's claims on due rows and their delivery state. Rows
//! are written by the transactions that cause them (`Sql::enqueue`/`announce`): new incidents in
//! ingest, updates, escalations, reminders and digests in `escalation`. At-least-once
//! delivery comes from the claim lease: a row claimed by a daemon that died is claimed again
//! when its lease runs out, and resent with the same Message-ID.

use super::rows::{INCIDENT_COLUMNS, IncidentRow};
use super::sql::Sql;
use super::{Backend, Store, StoreError};
use crate::compose::Composer;
use crate::model::Incident;
use chrono::{DateTime, TimeDelta, Utc};

/// How long a claim on an outbox row lasts: far longer than one SMTP transaction, so a row is
/// claimed twice only when its daemon died.
const CLAIM_LEASE: TimeDelta = TimeDelta::minutes(5);

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

/// How far back a failure makes `csirt status` exit non-zero: a day, so that a monitoring check
/// run every few minutes or hours sees it, and yesterday's dealt-with failure stops alarming.
pub const RECENT_FAILURE: TimeDelta = TimeDelta::hours(24);

/// How many failures and refusals `csirt status` lists (the counts cover all of them).
const LISTED: i64 = 5;

/// The outbox as `csirt status` shows it.
#[derive(Debug, Clone, Default, serde::Serialize)]
pub struct OutboxStats {
    pub pending: i64,
    /// Pending rows that have failed at least once (retrying).
    pub retrying: i64,
    /// Mails refused for good as a whole (every recipient).
    pub failed: i64,
    pub sent: i64,
    /// Recipients refused while the rest of their mail went out.
    pub refused: i64,
    /// Whole failures and refused recipients within `RECENT_FAILURE` of now.
    pub failed_recently: i64,
    pub refused_recently: i64,
    pub oldest_pending: Option<DateTime<Utc>>,
    /// The latest permanent failures: `(id, subject, error)`.
    pub failures: Vec<(i64, String, String)>,
    /// The latest refused recipients.
    pub refusals: Vec<Refusal>,
}

/// A recipient the server refused while others of the same mail were accepted.
#[derive(Debug, Clone, PartialEq, Eq, sqlx::FromRow, serde::Serialize)]
pub struct Refusal {
    pub outbox_id: i64,
    pub subject: String,
    pub recipient: String,
    /// The server's answer.
    pub error: String,
    pub at: DateTime<Utc>,
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
        transaction!(self, tx => {
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
                tx.enqueue(None, &digest, now).await?;
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

    /// The server accepted the mail. `refused` are the `(address, server's answer)` of the
    /// recipients it refused, if some were: each is kept as a row of its own, which `csirt
    /// status` counts as a failure, and summed up in the row's `last_error`.
    pub async fn outbox_sent(
        &self,
        id: i64,
        now: DateTime<Utc>,
        refused: &[(String, String)],
    ) -> Result<(), StoreError> {
        let note = (!refused.is_empty()).then(|| {
            let each: Vec<String> = refused.iter().map(|(to, e)| format!("{to}: {e}")).collect();
            format!("refused: {}", each.join("; "))
        });
        transaction!(self, tx => {
            sqlx::query("UPDATE outbox SET status = 'sent', sent_at = $2, claimed_by = NULL, claimed_until = NULL, last_error = $3 WHERE id = $1")
                .bind(id)
                .bind(now)
                .bind(&note)
                .execute(&mut *tx)
                .await?;
            for (to, error) in refused {
                sqlx::query("INSERT INTO mail_refusals (outbox_id, recipient, error, at) VALUES ($1, $2, $3, $4)")
                    .bind(id)
                    .bind(to)
                    .bind(error)
                    .bind(now)
                    .execute(&mut *tx)
                    .await?;
            }
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
        transaction!(self, tx => {
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
    pub async fn outbox_failed(
        &self,
        id: i64,
        error: &str,
        now: DateTime<Utc>,
    ) -> Result<(), StoreError> {
        transaction!(self, tx => {
            sqlx::query("UPDATE outbox SET status = 'failed', last_error = $2, failed_at = $3, claimed_by = NULL, claimed_until = NULL WHERE id = $1")
                .bind(id)
                .bind(error)
                .bind(now)
                .execute(&mut *tx)
                .await?;
            Ok(())
        })
    }

    /// Counts for `csirt status`; "recently" is since `now - RECENT_FAILURE`.
    pub async fn outbox_stats(&self, now: DateTime<Utc>) -> Result<OutboxStats, StoreError> {
        let since = now - RECENT_FAILURE;
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
                "SELECT id, subject, COALESCE(last_error, '') FROM outbox WHERE status = 'failed' ORDER BY id DESC LIMIT $1",
            )
            .bind(LISTED)
            .fetch_all(pool)
            .await?;
            // A failure recorded before its time was (schema 11) has none: not recent.
            let (failed_recently, refused, refused_recently): (i64, i64, i64) = sqlx::query_as(
                "SELECT (SELECT COUNT(*) FROM outbox WHERE status = 'failed' AND failed_at >= $1), \
                 (SELECT COUNT(*) FROM mail_refusals), \
                 (SELECT COUNT(*) FROM mail_refusals WHERE at >= $1)",
            )
            .bind(since)
            .fetch_one(pool)
            .await?;
            let refusals: Vec<Refusal> = sqlx::query_as(
                "SELECT r.outbox_id, o.subject, r.recipient, r.error, r.at FROM mail_refusals r \
                 JOIN outbox o ON o.id = r.outbox_id ORDER BY r.id DESC LIMIT $1",
            )
            .bind(LISTED)
            .fetch_all(pool)
            .await?;
            Ok(OutboxStats {
                pending,
                retrying,
                failed,
                sent,
                refused,
                failed_recently,
                refused_recently,
                oldest_pending,
                failures,
                refusals,
            })
        })
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
