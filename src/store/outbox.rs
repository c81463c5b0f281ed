//! The transactional outbox: the notifier's claims on due rows and their delivery state. Rows
//! are written by the transactions that cause them (`Sql::enqueue`/`announce`): new incidents in
//! ingest, updates, escalations, reminders and digests in `escalation`. At-least-once
//! delivery comes from the claim lease: a row claimed by a daemon that died is claimed again
//! when its lease runs out, and resent with the same Message-ID. Flood control
//! (`[notify] rate`) is applied at the claim, where every kind of mail passes.

use super::sql::Sql;
use super::{Backend, Store, StoreError};
use crate::compose::{Attachment, Composer, Notice};
use crate::engine::rate::{RateLimit, Waiting, classify, plan};
use chrono::{DateTime, TimeDelta, Utc};
use std::collections::BTreeMap;

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
    /// Files sent with the body (the scheduled report), read with the claim.
    #[sqlx(skip)]
    pub attachments: Vec<Attachment>,
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

/// Due rows read per claim: a bound on the work of one turn (and on the notices one digest
/// lists); more waiting rows are decided in later turns.
const WAITING_MAX: i64 = 1000;

/// A due row as the rate plan sees it.
#[derive(sqlx::FromRow)]
struct WaitingRow {
    id: i64,
    incident_id: Option<i64>,
    kind: String,
    recipients: String,
    subject: String,
    /// The incident's severity now (a raise makes its waiting mails critical).
    severity: Option<String>,
}

impl WaitingRow {
    fn as_waiting(&self) -> Waiting {
        Waiting {
            id: self.id,
            group: self.recipients.clone(),
            class: classify(&self.kind, self.severity.as_deref()),
        }
    }
}

/// The outbox as `csirt status` shows it (read by `Store::status_snapshot`). A failure or
/// refusal that later mail to the same recipients superseded is counted as resolved only.
#[derive(Debug, Clone, Default, serde::Serialize)]
pub struct OutboxStats {
    pub pending: i64,
    /// Pending rows that have failed at least once (retrying).
    pub retrying: i64,
    /// Mails refused for good as a whole (every recipient), not superseded.
    pub failed: i64,
    /// Failed mails whose recipient group has received mail since.
    pub failed_resolved: i64,
    pub sent: i64,
    /// Recipients refused while the rest of their mail went out, not superseded.
    pub refused: i64,
    /// Refused recipients who have received mail to the same group since.
    pub refused_resolved: i64,
    /// Whole failures and refused recipients within `RECENT_FAILURE` of now.
    pub failed_recently: i64,
    pub refused_recently: i64,
    pub oldest_pending: Option<DateTime<Utc>>,
    /// The latest permanent failures not superseded: `(id, subject, error)`.
    pub failures: Vec<(i64, String, String)>,
    /// The latest refused recipients not superseded.
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
    /// Claims up to `limit` due outbox rows for `node`, within `[notify] rate`: rows of a
    /// recipient group that has had its share of mail in the window are folded into one digest
    /// (written and claimed in the same transaction, the folded rows marked sent in it) or held
    /// until the window has room (`engine::rate::plan` decides). The count is of mails sent or
    /// being sent, read from the outbox itself, so it holds across restarts and across daemons
    /// sharing the store.
    pub async fn claim_outbox(
        &self,
        node: &str,
        now: DateTime<Utc>,
        limit: i64,
        rate: RateLimit,
        composer: &Composer,
    ) -> Result<Vec<Outgoing>, StoreError> {
        let waiting_sql = format!(
            "SELECT o.id, o.incident_id, o.kind, o.recipients, o.subject, i.severity FROM outbox o \
             LEFT JOIN incidents i ON i.id = o.incident_id \
             WHERE o.status = 'pending' AND o.next_attempt_at <= $1 \
             AND (o.claimed_until IS NULL OR o.claimed_until < $1) ORDER BY o.id LIMIT {WAITING_MAX}"
        );
        transaction!(self, tx => {
            tx.lock_outbox().await?;
            let waiting: Vec<WaitingRow> = sqlx::query_as(&waiting_sql)
                .bind(now)
                .fetch_all(&mut *tx)
                .await?;
            if waiting.is_empty() {
                return Ok(Vec::new());
            }
            // Mails that count against the window: sent on their own (not inside a digest)
            // since it began, and those claimed and being sent now.
            let sent: BTreeMap<String, i64> = sqlx::query_as::<_, (String, i64)>(
                "SELECT recipients, COUNT(*) FROM (\
                 SELECT recipients FROM outbox WHERE status = 'sent' AND sent_in IS NULL AND sent_at > $1 \
                 UNION ALL \
                 SELECT recipients FROM outbox WHERE status = 'pending' AND claimed_until >= $2\
                 ) recent GROUP BY recipients",
            )
            .bind(now - rate.window)
            .bind(now)
            .fetch_all(&mut *tx)
            .await?
            .into_iter()
            .collect();
            let decided = plan(
                &waiting.iter().map(WaitingRow::as_waiting).collect::<Vec<_>>(),
                &sent,
                rate,
            );
            let mut claim = Vec::new();
            for (group, ids) in &decided.fold {
                let notices: Vec<Notice> = waiting
                    .iter()
                    .filter(|w| ids.contains(&w.id))
                    .map(|w| Notice {
                        incident: w.incident_id,
                        kind: w.kind.clone(),
                        subject: w.subject.clone(),
                    })
                    .collect();
                let digest = composer.fold_digest(&parse_recipients(group), &notices, now);
                // Claimed first below: it took its place in the window when it was planned.
                claim.push(tx.enqueue(None, &digest, now).await?);
                for id in ids {
                    sqlx::query(
                        "UPDATE outbox SET status = 'sent', sent_at = $2, sent_in = $3, \
                         claimed_by = NULL, claimed_until = NULL WHERE id = $1",
                    )
                    .bind(id)
                    .bind(now)
                    .bind(&digest.message_id)
                    .execute(&mut *tx)
                    .await?;
                }
                tracing::warn!(
                    mails = ids.len(),
                    recipients = %group,
                    rate = rate.rate,
                    window_secs = rate.window.num_seconds(),
                    "more mail than [notify] rate allows; the rest goes out as one digest"
                );
            }
            claim.extend(&decided.send);
            let held = waiting.len() - decided.send.len() - decided.fold.iter().map(|(_, ids)| ids.len()).sum::<usize>();
            if held > 0 {
                tracing::debug!(held, "mails held until [notify] rate allows more");
            }
            let mut rows = Vec::new();
            for id in claim.into_iter().take(usize::try_from(limit).unwrap_or(0)) {
                let row: Option<Outgoing> = sqlx::query_as(
                    "UPDATE outbox SET claimed_by = $1, claimed_until = $2, attempts = attempts + 1 \
                     WHERE id = $3 AND status = 'pending' \
                     RETURNING id, kind, incident_id, message_id, in_reply_to, recipients, subject, body, attempts",
                )
                .bind(node)
                .bind(now + CLAIM_LEASE)
                .bind(id)
                .fetch_optional(&mut *tx)
                .await?;
                rows.extend(row);
            }
            attach_files(&mut *tx, &mut rows).await?;
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

    /// Every outbox row, oldest first (for tests and `csirt status`).
    pub async fn outbox(&self) -> Result<Vec<OutboxRow>, StoreError> {
        Ok(read!(self, pool => sqlx::query_as(
            "SELECT id, incident_id, kind, message_id, in_reply_to, recipients, subject, body, status, attempts, last_error, sent_in, sent_at \
             FROM outbox ORDER BY id",
        )
        .fetch_all(pool)
        .await?))
    }
}

/// Gives the claimed `rows` their attachments (one statement for the batch).
async fn attach_files(tx: &mut impl Sql, rows: &mut [Outgoing]) -> Result<(), sqlx::Error> {
    if rows.is_empty() {
        return Ok(());
    }
    let ids: Vec<i64> = rows.iter().map(|r| r.id).collect();
    for (outbox_id, file) in tx.attachments_of(&ids).await? {
        if let Some(row) = rows.iter_mut().find(|r| r.id == outbox_id) {
            row.attachments.push(file);
        }
    }
    Ok(())
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
    pub sent_at: Option<DateTime<Utc>>,
}

impl OutboxRow {
    /// The addresses the row is for.
    pub fn recipients(&self) -> Vec<String> {
        parse_recipients(&self.recipients)
    }
}
