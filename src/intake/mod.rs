//! Mail to the CSIRT's intake address, whichever way it arrives (a watched Maildir, `csirt
//! intake` on an MTA's pipe), takes one path: parse within limits, then
//!
//! 1. a reply (`[CSIRT #N]` in the subject, or In-Reply-To/References naming one of our
//!    notifications) becomes a note on incident N by its sender; a reply from an address in
//!    `[contacts]` with a first line `ack` or `close: <resolution>` also acts on it when it
//!    carries that contact's reply code for that incident (`crate::proof`), which only our
//!    notification to that contact had. Without the code a command is a note marked 未確認 and
//!    acts on nothing; a note from outside the contacts is marked 外部;
//! 0. a machine's message (bounce, delivery report, auto-reply) is only ever a note on the
//!    incident it names, else quarantined: it can never open an incident and start a loop;
//! 2. a forwarded message (message/rfc822, or a forward pasted inline) is a report of
//!    suspicious mail: its indicators are extracted and reports of one campaign (same inner
//!    Message-ID, attachment hash, or sender and subject) join one `phishing-report` incident;
//! 3. anything else meets the playbooks' `source = "mail"` rules (on subject and text), the
//!    `intake` playbook's last: the first playbook whose rule matches takes it.
//!
//! A message that breaks a limit or cannot be parsed is quarantined with its reason. Each
//! outcome is committed in one transaction with the raw message, keyed by Message-ID (or hash)
//! and content hash, so a redelivery changes nothing.

pub mod authres;
pub mod imap;
pub mod maildir;
pub mod parse;
pub mod shape;

use crate::compose::Composer;
use crate::config::Config;
use crate::engine::{Batch, Hit, MailRecord, RawMail};
use crate::model::{Action, Actor, Fields, Resolution, now};
use crate::playbook::{PlaybookSet, RuleSource};
use crate::store::{Store, StoreError};
use parse::{Limits, ParsedMail, Report};
use regex::Regex;
use std::collections::HashSet;
use std::sync::{Arc, LazyLock};
use tracing::info;

/// The playbook reports of suspicious mail go to.
pub const REPORT_PLAYBOOK: &str = "phishing-report";
/// The playbook that takes mail no other rule matched; its rules are tried last.
pub const DEFAULT_PLAYBOOK: &str = "intake";
/// Longest note taken from a reply.
const NOTE_MAX: usize = 2000;

/// What became of a message.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Outcome {
    Opened(i64),
    Joined(i64),
    /// Below a rule's threshold: stored, no incident yet.
    Pending,
    Noted(i64),
    /// A contact's reply that acted on the incident (and was noted).
    Acted {
        incident: i64,
        action: String,
    },
    /// Stored before: nothing changed.
    Duplicate,
    Quarantined(String),
}

impl Outcome {
    /// For the log and `csirt intake`'s message.
    pub fn describe(&self) -> String {
        match self {
            Outcome::Opened(id) => format!("opened incident #{id}"),
            Outcome::Joined(id) => format!("joined incident #{id}"),
            Outcome::Pending => "stored below its rule's threshold".into(),
            Outcome::Noted(id) => format!("noted on incident #{id}"),
            Outcome::Acted { incident, action } => format!("{action} incident #{incident}"),
            Outcome::Duplicate => "already stored; nothing changed".into(),
            Outcome::Quarantined(why) => format!("quarantined: {why}"),
        }
    }
}

/// What intake needs besides the store; rebuilt on reload.
pub struct Context {
    pub node: String,
    pub limits: Limits,
    pub playbooks: PlaybookSet,
    /// Every address in `[contacts]`, lower-cased: only they may act by mail.
    pub contacts: HashSet<String>,
    /// `[intake] authserv_id`: whose Authentication-Results must pass for a command to act.
    pub authserv_id: Option<String>,
    pub composer: Arc<Composer>,
}

impl Context {
    pub fn new(config: &Config, playbooks: &PlaybookSet, composer: Arc<Composer>) -> Context {
        Context {
            node: config.node_name(),
            limits: config
                .intake
                .as_ref()
                .map(|i| i.limits())
                .unwrap_or_default(),
            playbooks: playbooks.clone(),
            contacts: config
                .contacts
                .values()
                .flatten()
                .map(|a| a.get_ref().to_lowercase())
                .collect(),
            authserv_id: config.intake.as_ref().and_then(|i| i.authserv_id.clone()),
            composer,
        }
    }
}

// The pattern is a constant: it compiles, or no test would pass.
#[allow(clippy::expect_used)]
static TAG: LazyLock<Regex> =
    LazyLock::new(|| Regex::new(r"\[CSIRT #(\d{1,18})\]").expect("the tag pattern compiles"));

/// Takes one message. An error means the store could not be reached: nothing was committed and
/// the message must be offered again (Maildir: left in `new/`; MTA: exit 75). The raw bytes are
/// moved into the stored record, not copied: a 25 MiB message is held once.
pub async fn take(
    store: &Store,
    ctx: &Context,
    raw: Vec<u8>,
    source: &str,
) -> Result<Outcome, StoreError> {
    let mail = match parse::parse(&raw, ctx.limits) {
        Ok(mail) => mail,
        Err(refusal) => return quarantine(store, ctx, raw, source, &refusal.to_string()).await,
    };
    let record = MailRecord {
        key: mail.key.clone(),
        hash: mail.hash.clone(),
        source: source.to_string(),
        size: mail.size as i64,
        raw: RawMail::new(raw),
    };
    let tag = TAG
        .captures(&mail.subject)
        .and_then(|c| c[1].parse::<i64>().ok());
    // A bounce carries our own notification inside: its Message-ID names the thread too.
    let mut references = mail.replies_to.clone();
    if let Some(inner) = mail.report.as_ref().and_then(|r| r.message_id.clone()) {
        references.push(inner);
    }
    let by_reference = if references.is_empty() {
        None
    } else {
        store.thread_of(None, &references).await?
    };
    let thread = match by_reference {
        Some(id) => Some(id),
        // A forwarded message is a report whatever the subject says: the reported mail's own
        // subject may carry `[CSIRT #1]` (issue #12: the forward became a note on #1).
        None if tag.is_some() && (mail.report.is_none() || mail.automatic) => {
            store.thread_of(tag, &[]).await?
        }
        None => None,
    };
    if let Some(incident) = thread {
        // A machine's message never acts. Whether a person's may is the reply code's to say:
        // the subject tag and the Message-IDs of our mails are known to anyone in the thread.
        let may_act = !mail.automatic;
        return reply(store, ctx, &mail, &record, incident, may_act).await;
    }
    if mail.automatic {
        // A bounce or auto-reply that names no incident must not open one: its notification
        // would bounce again, and so on.
        let reason =
            "automatic message (bounce, delivery report or auto-reply) that names no incident";
        store
            .quarantine_mail(&record, reason, mail.from.as_deref(), Some(&mail.subject))
            .await?;
        return Ok(Outcome::Quarantined(reason.into()));
    }
    if let Some(report) = &mail.report
        && let Some(outcome) = reported(store, ctx, &mail, report, &record).await?
    {
        return Ok(outcome);
    }
    matched(store, ctx, &mail, record).await
}

/// Keeps a refused message with its reason (its raw bytes too, unless over the size limit).
pub async fn quarantine(
    store: &Store,
    ctx: &Context,
    raw: Vec<u8>,
    source: &str,
    reason: &str,
) -> Result<Outcome, StoreError> {
    let hash = parse::sha256(&raw);
    let (sender, subject) = parse::headline(&raw);
    let record = MailRecord {
        key: format!("sha256:{hash}"),
        hash,
        source: source.to_string(),
        size: raw.len() as i64,
        raw: RawMail::new(if raw.len() <= ctx.limits.max_size {
            raw
        } else {
            Vec::new()
        }),
    };
    store
        .quarantine_mail(&record, reason, sender.as_deref(), subject.as_deref())
        .await?;
    Ok(Outcome::Quarantined(reason.to_string()))
}

/// A reply to one of our notifications: a note, and from a contact maybe an action.
async fn reply(
    store: &Store,
    ctx: &Context,
    mail: &ParsedMail,
    record: &MailRecord,
    incident: i64,
    may_act: bool,
) -> Result<Outcome, StoreError> {
    let sender = mail.from.clone().unwrap_or_else(|| "unknown".into());
    let actor = Actor::mail_sender(&sender);
    let body = reply_text(&mail.text);
    let contact = ctx.contacts.contains(&sender);
    let commanded = if may_act && contact {
        command(&body)
    } else {
        None
    };
    // The code is looked for in the whole text: replies quote the notification that had it.
    let proven = match &commanded {
        Some(_) => store
            .mail_proof()
            .await?
            .carried_by(incident, &sender, &mail.text),
        None => false,
    };
    // Where the city's server vouches for senders, its word is needed too.
    let authenticated = match &ctx.authserv_id {
        Some(id) => authres::aligned_pass(&mail.authentication_results, id, &sender),
        None => true,
    };
    let action = commanded.clone().filter(|_| proven && authenticated);
    let text = if body.is_empty() {
        format!("(メールでの返信: {})", mail.subject)
    } else {
        body
    };
    let note = if !contact {
        format!("【外部】{text}")
    } else if commanded.is_some() && !proven {
        format!("【未確認: 確認コードがないため操作しません】{text}")
    } else if commanded.is_some() && !authenticated {
        format!("【未確認: 送信元の認証 (DKIM/SPF) が確認できないため操作しません】{text}")
    } else {
        text
    };
    if commanded.is_some() && !(proven && authenticated) {
        tracing::warn!(incident, sender = %sender, "a mail command without its proof (reply code, or the mail server's DKIM/SPF pass): kept as a note, not applied");
    }
    // The action, the note and the mail commit together: a redelivery finds the mail stored
    // and changes nothing, even after a responder has reopened the incident since.
    Ok(
        match store
            .mail_note(
                record,
                incident,
                actor.as_str(),
                &note,
                action.as_ref(),
                &ctx.composer,
            )
            .await?
        {
            crate::store::mail::ThreadOutcome::Acted(incident, name) => Outcome::Acted {
                incident,
                action: name.to_string(),
            },
            crate::store::mail::ThreadOutcome::Noted(incident) => Outcome::Noted(incident),
            crate::store::mail::ThreadOutcome::Duplicate(_) => Outcome::Duplicate,
        },
    )
}

/// The reply's own text: up to the quoted original, at most `NOTE_MAX` characters.
fn reply_text(text: &str) -> String {
    let mut out = String::new();
    for line in text.lines() {
        let trimmed = line.trim();
        if trimmed.starts_with('>')
            || trimmed.starts_with("-----Original")
            || trimmed.starts_with("-------- Original")
            || (trimmed.starts_with("On ") && trimmed.ends_with("wrote:"))
            || trimmed.ends_with("のメッセージ:")
            || trimmed.ends_with("wrote:")
        {
            break;
        }
        out.push_str(line);
        out.push('\n');
    }
    out.trim().chars().take(NOTE_MAX).collect()
}

/// Longest name `assign:` takes (a person or a section, not a paragraph).
const ASSIGNEE_MAX: usize = 64;

/// `ack`, `close: <resolution>` or `assign: <name>` on the first non-empty line.
fn command(body: &str) -> Option<Action> {
    let first = body.lines().map(str::trim).find(|l| !l.is_empty())?;
    let lower = first.to_lowercase();
    if lower == "ack" {
        return Some(Action::Acknowledge);
    }
    if lower.starts_with("assign:") {
        let name = first["assign:".len()..].trim();
        let fits = !name.is_empty()
            && name.chars().count() <= ASSIGNEE_MAX
            && !name.chars().any(crate::text::is_unsafe);
        return fits.then(|| Action::Assign(name.to_string()));
    }
    let resolution = lower
        .strip_prefix("close:")?
        .trim()
        .parse::<Resolution>()
        .ok()?;
    Some(Action::Close {
        resolution,
        note: Some("メールでクローズ".into()),
    })
}

/// A forwarded suspicious mail: joins its campaign's incident or opens one. None when there is
/// no report playbook (the message then meets the rules like any other).
async fn reported(
    store: &Store,
    ctx: &Context,
    mail: &ParsedMail,
    report: &Report,
    record: &MailRecord,
) -> Result<Option<Outcome>, StoreError> {
    let Some(playbook) = ctx.playbooks.get(REPORT_PLAYBOOK) else {
        return Ok(None);
    };
    let Some(rule) = playbook.rules.first() else {
        return Ok(None);
    };
    let mut keys = Vec::new();
    if let Some(id) = &report.message_id {
        keys.push(format!("mid:{id}"));
    }
    keys.extend(
        report
            .attachments
            .iter()
            .map(|a| format!("sha256:{}", a.sha256)),
    );
    if let Some(from) = &report.from {
        keys.push(format!("from:{from}|{}", report.subject));
    }
    if keys.is_empty() {
        keys.push(format!("mail:{}", record.key));
    }
    let reporter = mail.from.clone().unwrap_or_else(|| "unknown".into());
    let mut fields = Fields::new();
    fields.insert("subject".into(), report.subject.clone().into());
    fields.insert(
        "from".into(),
        report.from.clone().unwrap_or_default().into(),
    );
    fields.insert(
        "message_id".into(),
        report.message_id.clone().unwrap_or_default().into(),
    );
    for (name, value) in [
        ("return_path", report.return_path.clone()),
        ("reply_to", report.reply_to.clone()),
    ] {
        if let Some(v) = value {
            fields.insert(name.into(), v.into());
        }
    }
    for (name, list) in [
        ("received", &report.received),
        ("urls", &report.urls),
        ("domains", &report.domains),
    ] {
        if !list.is_empty() {
            fields.insert(name.into(), list.join("\n").into());
        }
    }
    if !report.attachments.is_empty() {
        let list: Vec<String> = report
            .attachments
            .iter()
            .map(|a| {
                format!(
                    "{} ({}, {} bytes, sha256 {})",
                    a.name, a.content_type, a.size, a.sha256
                )
            })
            .collect();
        fields.insert("attachments".into(), list.join("\n").into());
    }
    let text = format!(
        "{reporter} が報告: 件名「{}」差出人 {}",
        report.subject,
        report.from.as_deref().unwrap_or("(不明)")
    );
    let hit = Hit::new(
        playbook,
        rule,
        fields,
        "mail",
        record.source.clone(),
        record.key.clone(),
        now(),
        text,
    );
    let outcome = store
        .mail_report(record, &hit, &keys, &reporter, &ctx.composer)
        .await?;
    Ok(Some(if outcome.duplicate {
        Outcome::Duplicate
    } else if outcome.opened {
        Outcome::Opened(outcome.incident)
    } else {
        Outcome::Joined(outcome.incident)
    }))
}

/// Any other mail: the first playbook whose mail rule matches subject and text takes it.
async fn matched(
    store: &Store,
    ctx: &Context,
    mail: &ParsedMail,
    record: MailRecord,
) -> Result<Outcome, StoreError> {
    let haystack = format!("{}\n{}", mail.subject, mail.text);
    let mut playbooks: Vec<_> = ctx.playbooks.iter().collect();
    // The default playbook's rules are tried last, whatever its name sorts as.
    playbooks.sort_by_key(|p| p.id == DEFAULT_PLAYBOOK);
    for playbook in playbooks {
        for rule in playbook
            .rules
            .iter()
            .filter(|r| r.source == RuleSource::Mail)
        {
            let Some(regex) = &rule.regex else {
                continue;
            };
            let Some(captures) = regex.captures(&haystack) else {
                continue;
            };
            let mut fields = Fields::new();
            for name in regex.capture_names().flatten() {
                if let Some(m) = captures.name(name) {
                    fields.insert(name.into(), parse::one_line(m.as_str()).into());
                }
            }
            // A title must say something: `報告受付: ` with nothing after it reads as a bug.
            let subject = match (mail.subject.trim().is_empty(), mail.text.trim().is_empty()) {
                (false, _) => mail.subject.clone(),
                (true, false) => "(件名なし)".to_string(),
                (true, true) => "(件名も本文もないメール)".to_string(),
            };
            fields.insert("subject".into(), subject.into());
            fields.insert("from".into(), mail.from.clone().unwrap_or_default().into());
            fields.insert("message_id".into(), mail.key.clone().into());
            let excerpt: String = haystack.chars().take(2000).collect();
            let hit = Hit::new(
                playbook,
                rule,
                fields,
                "mail",
                record.source.clone(),
                record.key.clone(),
                now(),
                excerpt,
            );
            let batch = Batch {
                node: ctx.node.clone(),
                hits: vec![hit],
                mail: Some(record),
                ..Batch::default()
            };
            let outcome = store.ingest(&batch, &ctx.composer).await?;
            return Ok(if outcome.duplicate {
                Outcome::Duplicate
            } else if let Some(id) = outcome.opened.first() {
                Outcome::Opened(*id)
            } else if let Some(id) = outcome.joined.first() {
                Outcome::Joined(*id)
            } else {
                Outcome::Pending
            });
        }
    }
    info!(key = %record.key, "no playbook takes this mail (no `intake` playbook?)");
    let reason = format!(
        "no playbook's mail rule matched and there is no `{DEFAULT_PLAYBOOK}` playbook to take it"
    );
    store
        .quarantine_mail(&record, &reason, mail.from.as_deref(), Some(&mail.subject))
        .await?;
    Ok(Outcome::Quarantined(reason))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn replies_keep_their_own_text_and_commands_come_from_the_first_line() {
        let body = "  \nack\nlooking into it\n\nOn Tue, CSIRT wrote:\n> [CSIRT #4] ...\n";
        assert_eq!(reply_text(body), "ack\nlooking into it");
        assert_eq!(command(&reply_text(body)), Some(Action::Acknowledge));
        assert!(matches!(
            command("close: false-positive\n誤検知でした"),
            Some(Action::Close {
                resolution: Resolution::FalsePositive,
                ..
            })
        ));
        assert_eq!(command("close: maybe"), None);
        assert_eq!(
            command("Assign: 佐藤 (情報政策)\n"),
            Some(Action::Assign("佐藤 (情報政策)".into()))
        );
        assert_eq!(command("assign:   "), None);
        assert_eq!(command(&format!("assign: {}", "x".repeat(65))), None);
        assert_eq!(
            command("assign: a\u{202e}b"),
            None,
            "no format controls in a name"
        );
        assert_eq!(command("了解しました\nack"), None);
        let japanese = "確認中です。\n\n2026年11月25日 10:00 csirt のメッセージ:\n> 本文";
        assert_eq!(reply_text(japanese), "確認中です。");
    }
}
