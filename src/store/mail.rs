//! Intake mail in the store: every message kept raw in `mails` under its (key, hash), which makes
//! a redelivery a no-op; replies that become notes (and, from a contact, actions); reports of
//! suspicious mail joined into one incident per campaign; quarantined messages with their reason.

use super::incidents::refused;
use super::sql::{NewEventRow, NewIncidentRow, Sql};
use super::{Backend, Store, StoreError};
use crate::compose::{Composer, Occasion};
use crate::engine::{Hit, MailRecord};
use crate::model::{Action, Fields, Origin, now};
use crate::proof::Proof;
use chrono::{DateTime, TimeDelta, Utc};
use sqlx::types::Json;

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

/// A quarantined intake mail, as `csirt intake quarantined` lists it (the raw bytes stay in
/// the store).
#[derive(Debug, Clone, PartialEq, sqlx::FromRow, serde::Serialize)]
pub struct QuarantinedMail {
    pub id: i64,
    pub received_at: chrono::DateTime<chrono::Utc>,
    /// `stdin`, `maildir:<file>`, `imap:<account>#<uid>`.
    pub source: String,
    pub message_key: String,
    pub size: i64,
    pub reason: String,
}

/// How many quarantined mails one notice lists; more wait for the next notice.
const NOTICE_LIST: i64 = 200;

/// A quarantined mail as the notice to the CSIRT lists it.
#[derive(Debug, Clone, PartialEq, sqlx::FromRow)]
pub struct QuarantineNotice {
    pub id: i64,
    pub received_at: DateTime<Utc>,
    pub source: String,
    pub reason: String,
    /// The From address its headers gave, if they could be read.
    pub sender: Option<String>,
    pub subject: Option<String>,
}

/// What became of a report of suspicious mail.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ReportOutcome {
    pub incident: i64,
    pub opened: bool,
    pub duplicate: bool,
}

impl Store {
    /// The key of the reply codes that prove a mail command (`crate::proof`), made the first
    /// time a process asks for it; if two make one at once, the first stored is everyone's.
    pub async fn mail_proof(&self) -> Result<Proof, StoreError> {
        const NAME: &str = "reply-codes";
        let stored: Option<String> = read!(self, pool => sqlx::query_scalar("SELECT value FROM secrets WHERE name = $1")
            .bind(NAME)
            .fetch_optional(pool)
            .await?);
        let text = match stored {
            Some(text) => text,
            None => {
                let key = crate::proof::new_key().map_err(|e| StoreError::Random(e.to_string()))?;
                transaction!(self, tx => {
                    sqlx::query("INSERT INTO secrets (name, value) VALUES ($1, $2) ON CONFLICT (name) DO NOTHING")
                        .bind(NAME)
                        .bind(crate::proof::key_to_text(&key))
                        .execute(&mut *tx)
                        .await?;
                    Ok::<(), StoreError>(())
                })?;
                read!(self, pool => sqlx::query_scalar("SELECT value FROM secrets WHERE name = $1")
                    .bind(NAME)
                    .fetch_one(pool)
                    .await?)
            }
        };
        crate::proof::key_from_text(&text)
            .map(Proof::new)
            .ok_or_else(|| StoreError::Corrupt("the key of the mail reply codes is not hex".into()))
    }

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
    /// `action` (acknowledge, close or assign, from a contact's proven reply) applied in the same
    /// transaction when the incident's status allows it, so a redelivery can never apply it
    /// twice, and a confirmation of it queued for everyone the incident's mails go to.
    pub async fn mail_note(
        &self,
        mail: &MailRecord,
        incident: i64,
        actor: &str,
        note: &str,
        action: Option<&Action>,
        composer: &Composer,
    ) -> Result<ThreadOutcome, StoreError> {
        let at = now();
        if let Some(action) = action
            && !action.permitted_by(Origin::Mail)
        {
            // The intake only parses `ack`, `close:` and `assign:`; anything else here is a bug,
            // and it must be loud rather than a silent no-op.
            return Err(StoreError::Conflict(format!(
                "`{}` cannot be done by mail (only acknowledge, close and assign)",
                action.name()
            )));
        }
        transaction!(self, tx => {
            if !tx.insert_mail(mail, "note", None, at).await? {
                return Ok(ThreadOutcome::Duplicate(incident));
            }
            tx.link_mail(mail, incident).await?;
            let mut acted = None;
            if let Some(action) = action {
                // The same guarded transition as a responder's: a mail cannot acknowledge what is
                // closed or close it twice. A refused command is still kept as the note below.
                if tx.transition(incident, action, at).await? == 1 {
                    tx.insert_timeline(incident, at, actor, action.name(), &action.detail()).await?;
                    let confirmation = Occasion::Acted {
                        action: action.label_ja(),
                        by: actor.strip_prefix("mail:").unwrap_or(actor).to_string(),
                    };
                    tx.announce(composer, incident, &confirmation, at).await?;
                    acted = Some(action.name());
                } else {
                    let status = tx.status_of(incident).await?;
                    tracing::info!(incident, "mail command not applied: {}", refused(incident, status, action));
                }
            }
            tx.insert_timeline(incident, at, actor, "note", note).await?;
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
        transaction!(self, tx => {
            // Reports of one campaign arrive in parallel (several MTA pipes, Maildir and IMAP):
            // on PostgreSQL they take turns, as SQLite's single writer makes them.
            tx.lock_key(&hit.playbook, "report").await?;
            if !tx.insert_mail(mail, "incident", None, at).await? {
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
                    let mut fields = tx.incident(id).await?.fields;
                    add_reporter(&mut fields, reporter);
                    sqlx::query("UPDATE incidents SET fields = $2 WHERE id = $1")
                        .bind(id)
                        .bind(Json(&fields))
                        .execute(&mut *tx)
                        .await?;
                    tx.add_hits(id, 1, hit.observed_at, hit.observed_at, at).await?;
                    (id, false)
                }
                None => {
                    let mut fields = hit.fields.clone();
                    add_reporter(&mut fields, reporter);
                    let key = format!("report:{}", keys.first().map(String::as_str).unwrap_or(&mail.key));
                    let id = tx
                        .insert_incident(&NewIncidentRow {
                            dedupe_key: &key,
                            fields: &fields,
                            ..NewIncidentRow::of_hit(hit, at)
                        })
                        .await?;
                    tx.insert_timeline(id, at, &format!("mail:{reporter}"), "opened", &hit.title).await?;
                    (id, true)
                }
            };
            tx.insert_event(Some(id), &NewEventRow::from(hit), at).await?;
            // Evidence stays bounded however many staff report one campaign (invariant 6).
            tx.trim_evidence(id).await?;
            for key in keys {
                sqlx::query("INSERT INTO report_keys (report_key, incident_id) VALUES ($1, $2) ON CONFLICT DO NOTHING")
                    .bind(key)
                    .bind(id)
                    .execute(&mut *tx)
                    .await?;
            }
            tx.link_mail(mail, id).await?;
            if opened {
                tx.announce(composer, id, &Occasion::Opened, at).await?;
            }
            Ok(ReportOutcome { incident: id, opened, duplicate: false })
        })
    }

    /// Keeps a message that could not be taken, with the reason and what its headers said of
    /// its `sender` and `subject` (for the notice to the CSIRT); false if it was kept before.
    pub async fn quarantine_mail(
        &self,
        mail: &MailRecord,
        reason: &str,
        sender: Option<&str>,
        subject: Option<&str>,
    ) -> Result<bool, StoreError> {
        let at = now();
        transaction!(self, tx => {
            let new = tx.insert_mail(mail, "quarantined", Some(reason), at).await?;
            if new {
                sqlx::query("UPDATE mails SET sender = $3, subject = $4 WHERE message_key = $1 AND content_hash = $2")
                    .bind(&mail.key)
                    .bind(&mail.hash)
                    .bind(sender)
                    .bind(subject)
                    .execute(&mut *tx)
                    .await?;
            }
            Ok(new)
        })
    }

    /// Puts one notice of the quarantined mails not announced yet in the outbox, unless one
    /// went out less than `gap` before `now`; returns how many it lists. Each quarantine is
    /// marked announced in the same transaction, so it is listed exactly once; on PostgreSQL a
    /// lock makes two daemons take turns, and the second finds nothing left.
    pub async fn announce_quarantines(
        &self,
        now: DateTime<Utc>,
        gap: TimeDelta,
        composer: &Composer,
    ) -> Result<usize, StoreError> {
        // Cheap when there is nothing to say (every escalator tick): no write lock taken.
        let waiting: Option<i64> = read!(self, pool => sqlx::query_scalar(
            "SELECT id FROM mails WHERE disposition = 'quarantined' AND announced_at IS NULL LIMIT 1",
        )
        .fetch_optional(pool)
        .await?);
        if waiting.is_none() {
            return Ok(0);
        }
        transaction!(self, tx => {
            tx.lock_key("quarantine", "notice").await?;
            let last: Option<DateTime<Utc>> = sqlx::query_scalar(
                "SELECT MAX(announced_at) FROM mails WHERE announced_at IS NOT NULL",
            )
            .fetch_one(&mut *tx)
            .await?;
            if last.is_some_and(|last| last + gap > now) {
                return Ok(0);
            }
            let listed: Vec<QuarantineNotice> = sqlx::query_as(
                "SELECT id, received_at, source, COALESCE(reason, '') AS reason, sender, subject FROM mails \
                 WHERE disposition = 'quarantined' AND announced_at IS NULL ORDER BY id LIMIT $1",
            )
            .bind(NOTICE_LIST)
            .fetch_all(&mut *tx)
            .await?;
            let Some(newest) = listed.last().map(|m| m.id) else {
                return Ok(0);
            };
            let total: i64 = sqlx::query_scalar(
                "SELECT COUNT(*) FROM mails WHERE disposition = 'quarantined' AND announced_at IS NULL",
            )
            .fetch_one(&mut *tx)
            .await?;
            let mail = composer.quarantine_notice(&listed, total, now);
            tx.enqueue(None, &mail, now).await?;
            // Only what the notice lists: the rest (over NOTICE_LIST) goes in the next one.
            sqlx::query(
                "UPDATE mails SET announced_at = $1 WHERE disposition = 'quarantined' AND announced_at IS NULL AND id <= $2",
            )
            .bind(now)
            .bind(newest)
            .execute(&mut *tx)
            .await?;
            Ok(listed.len())
        })
    }

    /// The newest quarantined mails, at most `limit`, newest first: whatever path they came by.
    pub async fn quarantined_mails(&self, limit: i64) -> Result<Vec<QuarantinedMail>, StoreError> {
        Ok(read!(self, pool => sqlx::query_as(
            "SELECT id, received_at, source, message_key, size, COALESCE(reason, '') AS reason \
             FROM mails WHERE disposition = 'quarantined' ORDER BY id DESC LIMIT $1",
        )
        .bind(limit)
        .fetch_all(pool)
        .await?))
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
        transaction!(self, tx => {
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
fn add_reporter(fields: &mut Fields, reporter: &str) {
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
