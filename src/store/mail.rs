//! Intake mail in the store: every message kept raw in `mails` under its (key, hash), which makes
//! a redelivery a no-op; replies that become notes (and, from a contact, actions); reports of
//! suspicious mail joined into one incident per campaign; quarantined messages with their reason.

use super::ingest::{KeyLock, trim_evidence};
use super::outbox::{announce, enqueue};
use super::{Backend, EventRow, INCIDENT_COLUMNS, IncidentRow, Store, StoreError};
use crate::compose::{Composer, Occasion};
use crate::engine::EVIDENCE_KEEP;
use crate::engine::{Hit, MailRecord};
use crate::model::{Action, Event, Incident, now};
use sqlx::types::Json;

/// Stores `$mail` with `$disposition`; evaluates to false when it was stored before.
macro_rules! insert_mail {
    ($tx:expr, $mail:expr, $disposition:expr, $reason:expr, $at:expr) => {
        sqlx::query(
            "INSERT INTO mails (message_key, content_hash, received_at, source, disposition, reason, size, raw) \
             VALUES ($1, $2, $3, $4, $5, $6, $7, $8) ON CONFLICT (message_key, content_hash) DO NOTHING",
        )
        .bind(&$mail.key)
        .bind(&$mail.hash)
        .bind($at)
        .bind(&$mail.source)
        .bind($disposition)
        .bind($reason)
        .bind($mail.size)
        // Borrowed, not copied: sqlx would clone a Vec bound by reference.
        .bind($mail.raw.as_slice())
        .execute($tx)
        .await?
        .rows_affected()
            == 1
    };
}
pub(super) use insert_mail;

/// What became of a reply.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ThreadOutcome {
    /// Added as a note to the incident.
    Noted(i64),
    /// The mail's command acted on the incident (and the mail was noted).
    Acted(i64, &'static str),
    /// Stored before: nothing changed.
    Duplicate(i64),
}

/// What became of a report of suspicious mail.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ReportOutcome {
    pub incident: i64,
    pub opened: bool,
    pub duplicate: bool,
}

impl Store {
    /// The incident a reply belongs to: `tag` (from `[CSIRT #N]`) when that incident exists,
    /// else the incident of one of our notifications named by In-Reply-To/References.
    pub async fn thread_of(
        &self,
        tag: Option<i64>,
        replies_to: &[String],
    ) -> Result<Option<i64>, StoreError> {
        if let Some(id) = tag {
            let found: Option<i64> = read!(self, pool => sqlx::query_scalar("SELECT id FROM incidents WHERE id = $1")
                .bind(id)
                .fetch_optional(pool)
                .await?);
            if found.is_some() {
                return Ok(found);
            }
        }
        for id in replies_to {
            let found: Option<Option<i64>> = read!(self, pool => sqlx::query_scalar(
                "SELECT incident_id FROM outbox WHERE message_id = $1",
            )
            .bind(format!("<{id}>"))
            .fetch_optional(pool)
            .await?);
            if let Some(Some(incident)) = found {
                return Ok(Some(incident));
            }
        }
        Ok(None)
    }

    /// Stores a reply as a note on `incident` by `actor`, with the mail, in one transaction; with
    /// `action` (acknowledge or close, from a contact's reply) applied in the same transaction
    /// when the incident's status allows it, so a redelivery can never apply it twice.
    pub async fn mail_note(
        &self,
        mail: &MailRecord,
        incident: i64,
        actor: &str,
        note: &str,
        action: Option<&Action>,
    ) -> Result<ThreadOutcome, StoreError> {
        let at = now();
        write!(self, tx => {
            if !insert_mail!(&mut *tx, mail, "note", None::<&str>, at) {
                return Ok(ThreadOutcome::Duplicate(incident));
            }
            sqlx::query("UPDATE mails SET incident_id = $1 WHERE message_key = $2 AND content_hash = $3")
                .bind(incident)
                .bind(&mail.key)
                .bind(&mail.hash)
                .execute(&mut *tx)
                .await?;
            let mut acted = None;
            if let Some(action) = action {
                let changed = match action {
                    Action::Acknowledge => sqlx::query(
                        "UPDATE incidents SET status = 'acknowledged', acknowledged_at = $2 WHERE id = $1 AND status = 'open'",
                    )
                    .bind(incident)
                    .bind(at)
                    .execute(&mut *tx)
                    .await?
                    .rows_affected(),
                    Action::Close { resolution, .. } => sqlx::query(
                        "UPDATE incidents SET status = 'closed', closed_at = $2, resolution = $3 \
                         WHERE id = $1 AND status IN ('open', 'acknowledged')",
                    )
                    .bind(incident)
                    .bind(at)
                    .bind(resolution.as_str())
                    .execute(&mut *tx)
                    .await?
                    .rows_affected(),
                    // Mail commands are only these two.
                    _ => 0,
                };
                if changed == 1 {
                    sqlx::query("INSERT INTO timeline (incident_id, at, actor, action, detail) VALUES ($1, $2, $3, $4, $5)")
                        .bind(incident)
                        .bind(at)
                        .bind(actor)
                        .bind(action.name())
                        .bind(action.detail())
                        .execute(&mut *tx)
                        .await?;
                    acted = Some(action.name());
                }
            }
            sqlx::query("INSERT INTO timeline (incident_id, at, actor, action, detail) VALUES ($1, $2, $3, 'note', $4)")
                .bind(incident)
                .bind(at)
                .bind(actor)
                .bind(note)
                .execute(&mut *tx)
                .await?;
            Ok(match acted {
                Some(name) => ThreadOutcome::Acted(incident, name),
                None => ThreadOutcome::Noted(incident),
            })
        })
    }

    /// A report of suspicious mail: joins the open incident that shares one of `keys` (the inner
    /// Message-ID, an attachment hash, sender and subject) or opens one from `hit` (with its first
    /// mail), records the reporter, and stores the mail, in one transaction.
    pub async fn mail_report(
        &self,
        mail: &MailRecord,
        hit: &Hit,
        keys: &[String],
        reporter: &str,
        composer: &Composer,
    ) -> Result<ReportOutcome, StoreError> {
        let at = now();
        write!(self, tx => {
            // Reports of one campaign arrive in parallel (several MTA pipes, Maildir and IMAP):
            // on PostgreSQL they take turns, as SQLite's single writer makes them.
            KeyLock::lock_key(&mut *tx, &hit.playbook, "report").await?;
            if !insert_mail!(&mut *tx, mail, "incident", None::<&str>, at) {
                let incident: Option<i64> = sqlx::query_scalar(
                    "SELECT incident_id FROM mails WHERE message_key = $1 AND content_hash = $2",
                )
                .bind(&mail.key)
                .bind(&mail.hash)
                .fetch_one(&mut *tx)
                .await?;
                return Ok(ReportOutcome { incident: incident.unwrap_or(0), opened: false, duplicate: true });
            }
            let mut open: Option<i64> = None;
            for key in keys {
                open = sqlx::query_scalar(
                    "SELECT i.id FROM report_keys k JOIN incidents i ON i.id = k.incident_id \
                     WHERE k.report_key = $1 AND i.playbook = $2 AND i.status <> 'closed' ORDER BY i.id LIMIT 1",
                )
                .bind(key)
                .bind(&hit.playbook)
                .fetch_optional(&mut *tx)
                .await?;
                if open.is_some() {
                    break;
                }
            }
            let (id, opened) = match open {
                Some(id) => {
                    let fields: Json<crate::model::Fields> =
                        sqlx::query_scalar("SELECT fields FROM incidents WHERE id = $1")
                            .bind(id)
                            .fetch_one(&mut *tx)
                            .await?;
                    let mut fields = fields.0;
                    add_reporter(&mut fields, reporter);
                    sqlx::query(
                        "UPDATE incidents SET event_count = event_count + 1, fields = $2, \
                         last_seen = CASE WHEN $3 > last_seen THEN $3 ELSE last_seen END WHERE id = $1",
                    )
                    .bind(id)
                    .bind(Json(&fields))
                    .bind(hit.observed_at)
                    .execute(&mut *tx)
                    .await?;
                    (id, false)
                }
                None => {
                    let mut fields = hit.fields.clone();
                    add_reporter(&mut fields, reporter);
                    let id: i64 = sqlx::query_scalar(
                        "INSERT INTO incidents (playbook, category, title, severity, status, dedupe_key, fields, \
                         event_count, first_seen, last_seen, opened_at) \
                         VALUES ($1, $2, $3, $4, 'open', $5, $6, 1, $7, $7, $8) RETURNING id",
                    )
                    .bind(&hit.playbook)
                    .bind(&hit.category)
                    .bind(&hit.title)
                    .bind(hit.severity.as_str())
                    .bind(format!("report:{}", keys.first().map(String::as_str).unwrap_or(&mail.key)))
                    .bind(Json(&fields))
                    .bind(hit.observed_at)
                    .bind(at)
                    .fetch_one(&mut *tx)
                    .await?;
                    sqlx::query("INSERT INTO timeline (incident_id, at, actor, action, detail) VALUES ($1, $2, $3, 'opened', $4)")
                        .bind(id)
                        .bind(at)
                        .bind(format!("mail:{reporter}"))
                        .bind(&hit.title)
                        .execute(&mut *tx)
                        .await?;
                    (id, true)
                }
            };
            sqlx::query(
                "INSERT INTO events (incident_id, playbook, rule, dedupe_key, kind, source, locator, \
                 observed_at, received_at, text, fields) VALUES ($1, $2, $3, $4, 'mail', $5, $6, $7, $8, $9, $10)",
            )
            .bind(id)
            .bind(&hit.playbook)
            .bind(&hit.rule)
            .bind(&hit.dedupe_key)
            .bind(&hit.source)
            .bind(&hit.locator)
            .bind(hit.observed_at)
            .bind(at)
            .bind(&hit.text)
            .bind(Json(&hit.fields))
            .execute(&mut *tx)
            .await?;
            // Evidence stays bounded however many staff report one campaign (invariant 6).
            trim_evidence!(&mut *tx, id)?;
            for key in keys {
                sqlx::query("INSERT INTO report_keys (report_key, incident_id) VALUES ($1, $2) ON CONFLICT DO NOTHING")
                    .bind(key)
                    .bind(id)
                    .execute(&mut *tx)
                    .await?;
            }
            sqlx::query("UPDATE mails SET incident_id = $1 WHERE message_key = $2 AND content_hash = $3")
                .bind(id)
                .bind(&mail.key)
                .bind(&mail.hash)
                .execute(&mut *tx)
                .await?;
            if opened {
                announce!(tx, composer, id, Occasion::Opened, at);
            }
            Ok(ReportOutcome { incident: id, opened, duplicate: false })
        })
    }

    /// Keeps a message that could not be taken, with the reason; false if it was kept before.
    pub async fn quarantine_mail(
        &self,
        mail: &MailRecord,
        reason: &str,
    ) -> Result<bool, StoreError> {
        let at = now();
        write!(self, tx => {
            Ok(insert_mail!(&mut *tx, mail, "quarantined", Some(reason), at))
        })
    }

    /// How far the IMAP `account` has been read: `(uidvalidity, last_uid)`.
    pub async fn imap_position(&self, account: &str) -> Result<Option<(i64, i64)>, StoreError> {
        Ok(
            read!(self, pool => sqlx::query_as("SELECT uidvalidity, last_uid FROM imap_state WHERE account = $1")
            .bind(account)
            .fetch_optional(pool)
            .await?),
        )
    }

    /// Records that `account` has been read up to `last_uid` under `uidvalidity`.
    pub async fn set_imap_position(
        &self,
        account: &str,
        uidvalidity: i64,
        last_uid: i64,
    ) -> Result<(), StoreError> {
        write!(self, tx => {
            sqlx::query(
                "INSERT INTO imap_state (account, uidvalidity, last_uid) VALUES ($1, $2, $3) \
                 ON CONFLICT (account) DO UPDATE SET uidvalidity = excluded.uidvalidity, last_uid = excluded.last_uid",
            )
            .bind(account)
            .bind(uidvalidity)
            .bind(last_uid)
            .execute(&mut *tx)
            .await?;
            Ok(())
        })
    }
}

/// Adds `reporter` to the incident's `reporters` field (a comma-separated list, once each).
fn add_reporter(fields: &mut crate::model::Fields, reporter: &str) {
    let mut list: Vec<String> = fields
        .get("reporters")
        .and_then(|v| v.as_str())
        .map(|s| s.split(", ").map(str::to_string).collect())
        .unwrap_or_default();
    if !list.iter().any(|r| r == reporter) {
        list.push(reporter.to_string());
    }
    fields.insert("reporters".into(), list.join(", ").into());
}
