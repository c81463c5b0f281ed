//! What the CSIRT reads: the subject and Japanese body of every notification, from templates.
//!
//! Built-in templates live in `templates/` and are compiled into the binary; a file of the same
//! name in `<config dir>/templates/` replaces one. A replacement is rendered once at load with a
//! sample incident, so a broken one is refused with its file and line before the daemon starts;
//! if one still fails at run time, the built-in template is used and the failure logged, because
//! a mail with the stock wording beats no mail. Everything that came from a log line or a mail is
//! stripped of control characters before it reaches a header or a body.

use crate::config::Config;
use crate::engine::rate::FOLD_KIND;
use crate::level::Levels;
use crate::model::{Event, Incident};
use crate::playbook::PlaybookSet;
use crate::text::{long_time, remaining, sanitize};
use chrono::{DateTime, Utc};
use chrono_tz::Tz;
use minijinja::{Environment, Value, context};
use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use tracing::warn;

const INCIDENT: &str = "incident.txt";
const DIGEST: &str = "digest.txt";
const BUILT_IN: [(&str, &str); 2] = [
    (INCIDENT, include_str!("../templates/incident.txt")),
    (DIGEST, include_str!("../templates/digest.txt")),
];

/// Where replacements for the built-in templates live: `templates/` beside the config file.
pub fn template_dir(config_path: &Path) -> Option<PathBuf> {
    config_path
        .parent()
        .map(|d| d.join("templates"))
        .filter(|d| d.is_dir())
}

/// Evidence lines shown from each end of an incident.
const EVIDENCE_SHOWN: usize = 3;
/// Longest subject, in characters: phones cut the rest anyway.
const SUBJECT_MAX: usize = 140;

/// Why the templates were refused.
#[derive(Debug, thiserror::Error)]
pub enum ComposeError {
    #[error("{path}: cannot read: {source}")]
    Read {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("{path}:{line}: {message}")]
    Template {
        path: PathBuf,
        line: usize,
        message: String,
    },
}

/// Why a mail about an incident is written.
#[derive(Debug, Clone)]
pub enum Occasion {
    Opened,
    /// More events arrived since the last mail.
    Update {
        new_events: i64,
    },
    /// Unacknowledged past an `[[escalation]]` level (1-based; repeats count on).
    Escalation {
        level: i64,
        to: Vec<String>,
    },
    /// A playbook deadline is near, or a statutory clock (personal information) is due or past:
    /// `to` names the contacts told besides `[notify] to` (the CISO group for a report to
    /// 個人情報保護委員会).
    Reminder {
        deadline: String,
        due: DateTime<Utc>,
        to: Vec<String>,
    },
    /// A later event raised the incident (a login after failures): told at once, to the last
    /// escalation level's contacts too.
    Raised {
        reason: String,
        level: i64,
        to: Vec<String>,
    },
    /// The facts now require a report to 個人情報保護委員会: the incident is at least L3 and the
    /// CISO group (`to`) hears at once, with the reason, the rule it cites and the clocks.
    Statutory {
        reason: String,
        to: Vec<String>,
        clocks: Vec<crate::pii::Clock>,
    },
    /// A reply by mail acted on the incident: everyone told is told who did what, so that an
    /// action nobody recognises is seen (and undone) at once.
    Acted {
        /// What was done, in Japanese (受付, クローズ (誤検知), 担当を 佐藤 に).
        action: String,
        by: String,
    },
}

impl Occasion {
    /// The outbox `kind`.
    pub fn kind(&self) -> &'static str {
        match self {
            Occasion::Opened => "opened",
            Occasion::Update { .. } => "update",
            Occasion::Escalation { .. } => "escalation",
            Occasion::Reminder { .. } => "reminder",
            // A raise: the notifier gives it the critical mails' ceiling.
            Occasion::Raised { .. } | Occasion::Statutory { .. } => "raised",
            Occasion::Acted { .. } => "acted",
        }
    }

    /// What the template's `kind` says: the outbox kind, except for a required report to
    /// 個人情報保護委員会, which has its own wording.
    fn template_kind(&self) -> &'static str {
        match self {
            Occasion::Statutory { .. } => "statutory",
            other => other.kind(),
        }
    }
}

/// A mail folded into a digest, as the digest lists it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Notice {
    pub incident: Option<i64>,
    /// The outbox kind (`opened`, `update`, …).
    pub kind: String,
    pub subject: String,
}

/// An outbox kind as a digest names it.
fn kind_label(kind: &str) -> &str {
    match kind {
        "opened" => "新規",
        "update" => "続報",
        "escalation" => "未受付エスカレーション",
        "reminder" => "期限間近",
        "raised" => "緊急・引き上げ",
        "digest" => "定時の一覧",
        crate::engine::rate::REPORT_KIND => "定時の報告書",
        FOLD_KIND => "まとめ",
        other => other,
    }
}

/// A composed mail, ready for the outbox.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Notification {
    pub kind: &'static str,
    pub message_id: String,
    pub in_reply_to: Option<String>,
    pub recipients: Vec<String>,
    pub subject: String,
    pub body: String,
}

/// A file a mail carries beside its text (the scheduled report's HTML).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Attachment {
    /// The file name the reader sees (ours, ASCII).
    pub name: String,
    pub content_type: String,
    pub content: Vec<u8>,
}

/// Composes every mail the daemon sends; rebuilt on reload.
pub struct Composer {
    node: String,
    domain: String,
    tz: Tz,
    notify_to: Vec<String>,
    contacts: BTreeMap<String, Vec<String>>,
    /// The city's level of each severity, shown beside it.
    levels: Levels,
    /// The `[contacts]` group told of a required report to 個人情報保護委員会 (`pii_ciso`).
    pii_ciso: Option<String>,
    playbooks: PlaybookSet,
    /// The built-in templates and, where given, the replacements.
    built_in: Environment<'static>,
    custom: Option<Environment<'static>>,
}

impl Composer {
    /// Loads the templates (replacements from `template_dir` when it exists) and checks them.
    pub fn new(
        config: &Config,
        playbooks: &PlaybookSet,
        template_dir: Option<&Path>,
    ) -> Result<Composer, ComposeError> {
        let mut built_in = Environment::new();
        for (name, source) in BUILT_IN {
            built_in
                .add_template(name, source)
                .map_err(|e| template_error(Path::new("templates").join(name), &e))?;
        }
        let from = config.notify.from.get_ref();
        let mut composer = Composer {
            node: config.node_name(),
            domain: from
                .rsplit_once('@')
                .map(|(_, d)| d.trim_end_matches('>').to_string())
                .unwrap_or_else(|| "localhost".into()),
            tz: config.timezone,
            notify_to: resolve(
                config,
                config.notify.to.get_ref().iter().map(|t| t.get_ref()),
            ),
            contacts: config
                .contacts
                .iter()
                .map(|(k, v)| (k.clone(), v.iter().map(|a| a.get_ref().clone()).collect()))
                .collect(),
            levels: config.levels(),
            pii_ciso: config.pii_ciso().map(str::to_string),
            playbooks: playbooks.clone(),
            built_in,
            custom: None,
        };
        if let Some(dir) = template_dir {
            composer.custom = composer.load_custom(dir)?;
        }
        Ok(composer)
    }

    fn load_custom(&self, dir: &Path) -> Result<Option<Environment<'static>>, ComposeError> {
        let mut env = Environment::new();
        let mut any = false;
        for (name, source) in BUILT_IN {
            let path = dir.join(name);
            let text = match std::fs::read_to_string(&path) {
                Ok(text) => text,
                Err(e) if e.kind() == std::io::ErrorKind::NotFound => source.to_string(),
                Err(source) => return Err(ComposeError::Read { path, source }),
            };
            any |= path.exists();
            env.add_template_owned(name, text)
                .map_err(|e| template_error(path.clone(), &e))?;
            // Render once with each sample, so that an unknown filter or a bad loop is found now.
            let samples = match name {
                INCIDENT => vec![sample_incident_context(&self.node)],
                _ => vec![
                    sample_digest_context(&self.node, "schedule"),
                    sample_digest_context(&self.node, FOLD_KIND),
                ],
            };
            for sample in samples {
                env.get_template(name)
                    .and_then(|t| t.render(sample))
                    .map_err(|e| template_error(path.clone(), &e))?;
            }
        }
        Ok(any.then_some(env))
    }

    fn render(&self, name: &str, ctx: Value) -> String {
        if let Some(custom) = &self.custom {
            match custom.get_template(name).and_then(|t| t.render(&ctx)) {
                Ok(text) => return text,
                Err(e) => {
                    warn!(template = name, error = %e, "custom template failed; using the built-in one")
                }
            }
        }
        self.built_in
            .get_template(name)
            .and_then(|t| t.render(&ctx))
            .unwrap_or_else(|e| format!("(テンプレート {name} の展開に失敗しました: {e})\n"))
    }

    /// The addresses `[notify] to` names.
    pub fn notify_to(&self) -> &[String] {
        &self.notify_to
    }

    /// The addresses that contact names or literal addresses stand for, without duplicates.
    pub fn addresses(&self, names: &[String]) -> Vec<String> {
        let mut out: Vec<String> = Vec::new();
        for name in names {
            let list = match self.contacts.get(name) {
                Some(list) => list.clone(),
                None => vec![name.clone()],
            };
            for a in list {
                if !out.contains(&a) {
                    out.push(a);
                }
            }
        }
        out
    }

    /// The `[contacts]` group told of a required report to 個人情報保護委員会, if there is one.
    pub fn pii_ciso(&self) -> Option<&str> {
        self.pii_ciso.as_deref()
    }

    /// The city's level of each severity.
    pub fn levels(&self) -> &Levels {
        &self.levels
    }

    /// The playbooks the mails describe (steps, deadlines, escalation levels).
    pub fn playbooks(&self) -> &PlaybookSet {
        &self.playbooks
    }

    /// A stable, unique Message-ID for a new outbox row.
    pub fn message_id(&self, what: &str, now: DateTime<Utc>) -> String {
        format!(
            "<csirt.{what}.{}.{:08x}@{}>",
            now.timestamp_micros(),
            fastrand::u32(..),
            self.domain
        )
    }

    /// The mail about `incident` on `occasion`. `evidence` is the incident's stored events in
    /// order; `thread` the Message-ID of its first mail, which every later one replies to.
    pub fn incident_mail(
        &self,
        occasion: &Occasion,
        incident: &Incident,
        evidence: &[Event],
        thread: Option<&str>,
        now: DateTime<Utc>,
    ) -> Notification {
        let recipients = match occasion {
            Occasion::Escalation { to, .. }
            | Occasion::Raised { to, .. }
            | Occasion::Statutory { to, .. }
            | Occasion::Reminder { to, .. } => {
                let mut all = self.addresses(to);
                for a in &self.notify_to {
                    if !all.contains(a) {
                        all.push(a.clone());
                    }
                }
                all
            }
            _ => self.notify_to.clone(),
        };
        let marker = match occasion {
            Occasion::Opened => String::new(),
            Occasion::Update { .. } => "【続報】".into(),
            Occasion::Escalation { level, .. } => format!("【未受付・第{level}段階】"),
            Occasion::Reminder { .. } => "【期限間近】".into(),
            Occasion::Raised { .. } => "【緊急・引き上げ】".into(),
            Occasion::Statutory { .. } => "【個人情報保護委員会へ報告が必要】".into(),
            Occasion::Acted { .. } => "【メール操作】".into(),
        };
        // The level in a bracket of its own: a mail filter on 【重要度:緊急】 keeps working.
        let subject = subject_line(&format!(
            "[CSIRT #{}] {marker}【重要度:{}】【{}】{}",
            incident.id,
            incident.severity.label_ja(),
            self.levels.of(incident.severity),
            incident.title
        ));
        let playbook = self.playbooks.get(&incident.playbook);
        let tz = self.tz;
        let deadlines = self.deadlines_of(incident, now);
        let steps: Vec<String> = playbook
            .map(|p| {
                p.steps
                    .iter()
                    .map(|s| clean(&crate::engine::fill_step(s, &incident.fields)))
                    .collect()
            })
            .unwrap_or_default();
        let shown = |events: &[Event]| -> Vec<Value> {
            events
                .iter()
                .map(|e| {
                    context! {
                        at => long_time(e.observed_at, tz),
                        source => clean(&e.source),
                        locator => clean(&e.locator),
                        text => clean(&e.text),
                    }
                })
                .collect()
        };
        let first = &evidence[..evidence.len().min(EVIDENCE_SHOWN)];
        let latest = if evidence.len() > EVIDENCE_SHOWN {
            &evidence[evidence
                .len()
                .saturating_sub(EVIDENCE_SHOWN)
                .max(first.len())..]
        } else {
            &[][..]
        };
        let (new_events, level, escalated_to, deadline) = match occasion {
            Occasion::Update { new_events } => (*new_events, 0, Vec::new(), Value::UNDEFINED),
            Occasion::Escalation { level, to } => (0, *level, to.clone(), Value::UNDEFINED),
            Occasion::Reminder { deadline, due, .. } => {
                // A reminder no playbook deadline of this name explains is a statutory clock
                // (personal information, from `pii_clocks`): the mail says how to stop it.
                let statutory =
                    playbook.is_none_or(|p| !p.deadlines.iter().any(|d| d.name == *deadline));
                (
                    0,
                    0,
                    Vec::new(),
                    context! { name => clean(deadline), due => long_time(*due, tz), remaining => remaining(*due, now), pii => statutory },
                )
            }
            Occasion::Opened | Occasion::Acted { .. } => (0, 0, Vec::new(), Value::UNDEFINED),
            Occasion::Raised { level, to, .. } => (0, *level, to.clone(), Value::UNDEFINED),
            Occasion::Statutory { to, .. } => (0, 0, to.clone(), Value::UNDEFINED),
        };
        let reason = match occasion {
            Occasion::Raised { reason, .. } | Occasion::Statutory { reason, .. } => clean(reason),
            _ => String::new(),
        };
        let statutory: Vec<Value> = match occasion {
            Occasion::Statutory { clocks, .. } => clocks
                .iter()
                .map(|c| {
                    context! {
                        name => clean(&c.name),
                        due => c.due_at.map_or_else(
                            || format!("速やかに (予告 {})", long_time(c.warn_at, tz)),
                            |d| format!("{} ({})", long_time(d, tz), remaining(d, now)),
                        ),
                        done => c.done_at.is_some(),
                    }
                })
                .collect(),
            _ => Vec::new(),
        };
        let acted = match occasion {
            Occasion::Acted { action, by } => context! { action => clean(action), by => clean(by) },
            _ => Value::UNDEFINED,
        };
        let ctx = context! {
            kind => occasion.template_kind(),
            node => self.node.clone(),
            incident => incident_context(incident, tz, &self.levels),
            fields => incident
                .fields
                .iter()
                .map(|(k, v)| context! { name => clean(k), value => clean(&field_text(v)) })
                .collect::<Vec<_>>(),
            first_evidence => shown(first),
            latest_evidence => shown(latest),
            steps => steps,
            deadlines => deadlines,
            new_events => new_events,
            level => level,
            escalated_to => escalated_to,
            reason => reason,
            statutory => statutory,
            acted => acted,
            open_for => crate::text::ago(incident.opened_at, now).trim_end_matches('前').to_string(),
            deadline => deadline,
            commands => context! {
                show => format!("csirt incidents show {}", incident.id),
                ack => format!("csirt incidents ack {}", incident.id),
                close => format!("csirt incidents close {} --resolution resolved --note \"対応内容\"", incident.id),
            },
        };
        Notification {
            kind: occasion.kind(),
            message_id: self.message_id(&format!("{}.{}", incident.id, occasion.kind()), now),
            in_reply_to: thread.map(str::to_string),
            recipients,
            subject,
            body: self.render(INCIDENT, ctx),
        }
    }

    /// A `[[schedule]]` digest to `to` of `total` incidents not closed, listing `incidents` (the
    /// most severe first; the mail says how many more there are).
    pub fn schedule_digest(
        &self,
        name: &str,
        to: &[String],
        incidents: &[Incident],
        total: i64,
        now: DateTime<Utc>,
    ) -> Notification {
        let subject = subject_line(&format!(
            "[CSIRT] 未クローズのインシデント {total} 件 ({})",
            self.tz_now(now)
        ));
        Notification {
            kind: "digest",
            message_id: self.message_id("digest", now),
            in_reply_to: None,
            recipients: self.addresses(to),
            subject,
            body: self.render(
                DIGEST,
                self.digest_context("schedule", name, incidents, total, now),
            ),
        }
    }

    /// The scheduled evaluation report to `to`: the generated summary in the body, the report
    /// itself in the attachment named `file` (the same document `csirt report` writes).
    /// Written here rather than as a template, as the quarantine notice is: fixed wording
    /// around a summary that is itself generated.
    pub fn report_mail(
        &self,
        name: &str,
        to: &[String],
        (title, period): (&str, &str),
        summary: &[String],
        file: &str,
        now: DateTime<Utc>,
    ) -> Notification {
        let subject = subject_line(&format!("[CSIRT] {title} {period}"));
        let mut body = format!("{title}\n{period}\n\n");
        for paragraph in summary {
            body.push_str(&clean(paragraph));
            body.push_str("\n\n");
        }
        body.push_str(&format!(
            "詳しい数値とグラフは添付の {} をブラウザで開いてください (印刷すると A4 です)。\n\
             Excel 用の CSV は csirt report --format csv で作れます。\n\
             \n-- \ncsirt ({}) 北上市CSIRT インシデント管理\n\
             このメールは自動送信です (定時の報告: {})。\n",
            clean(file),
            self.node,
            clean(name)
        ));
        Notification {
            kind: crate::engine::rate::REPORT_KIND,
            message_id: self.message_id(crate::engine::rate::REPORT_KIND, now),
            in_reply_to: None,
            recipients: self.addresses(to),
            subject,
            body,
        }
    }

    /// One mail to `recipients` in place of the `notices` that `[notify] rate` held back: it
    /// lists each (incident, kind, subject), so that nothing the CSIRT should read is dropped.
    pub fn fold_digest(
        &self,
        recipients: &[String],
        notices: &[Notice],
        now: DateTime<Utc>,
    ) -> Notification {
        let what = if notices.iter().all(|n| n.kind == "opened") {
            "新規インシデント"
        } else {
            "通知"
        };
        let subject = subject_line(&format!(
            "[CSIRT] {what} {} 件 (まとめて通知)",
            notices.len()
        ));
        let items: Vec<Value> = notices
            .iter()
            .map(|n| {
                context! {
                    incident => n.incident,
                    kind => kind_label(&n.kind),
                    subject => clean(&n.subject),
                }
            })
            .collect();
        let ctx = context! {
            notices => items,
            // `total` 0: the listed notices are all there is, nothing is "more".
            ..self.digest_context(FOLD_KIND, "", &[], 0, now)
        };
        Notification {
            kind: FOLD_KIND,
            message_id: self.message_id(FOLD_KIND, now),
            in_reply_to: None,
            recipients: recipients.to_vec(),
            subject,
            body: self.render(DIGEST, ctx),
        }
    }

    /// The notice to `[notify] to` of quarantined intake mail: `listed` (oldest first) of the
    /// `total` not announced yet. Written here rather than as a template: it is a fixed report
    /// whose every line is what a responder needs to find the mail, and a broken replacement
    /// must not be able to hide a quarantine.
    pub fn quarantine_notice(
        &self,
        listed: &[crate::store::mail::QuarantineNotice],
        total: i64,
        now: DateTime<Utc>,
    ) -> Notification {
        let subject = subject_line(&format!(
            "[CSIRT] 隔離された受付メール {} 件 ({})",
            listed.len(),
            self.tz_now(now)
        ));
        let mut body = String::from("北上市CSIRT 各位\n\n");
        body.push_str(&format!(
            "受付メールのうち {} 件を取り込めず、隔離しました。インシデントにはなっていません。\n\
             報告や返信が埋もれていないか、内容を確認してください。\n",
            listed.len()
        ));
        for m in listed {
            body.push_str(&format!(
                "\n隔離 #{} ({})\n    差出人: {}\n    件名:   {}\n    理由:   {}\n    経路:   {}\n",
                m.id,
                long_time(m.received_at, self.tz),
                m.sender
                    .as_deref()
                    .map_or_else(|| "(読めません)".into(), clean),
                m.subject
                    .as_deref()
                    .filter(|s| !s.is_empty())
                    .map_or_else(|| "(なし)".into(), |s| clean(&crate::text::flatten(s, 200))),
                clean(&m.reason),
                clean(&m.source),
            ));
        }
        let more = total - listed.len() as i64;
        if more > 0 {
            body.push_str(&format!(
                "\nほか {more} 件は次のお知らせに載せます (今すぐ見るには下のコマンド)。\n"
            ));
        }
        body.push_str(&format!(
            "\n■ 操作\n  隔離の一覧: csirt intake quarantined\n\n\
             隔離したメールは元のまま保存しています (Maildir の場合は .Quarantine フォルダにも)。\n\
             \n-- \ncsirt ({}) 北上市CSIRT インシデント管理\nこのメールは自動送信です。\n",
            self.node
        ));
        Notification {
            kind: "quarantine",
            message_id: self.message_id("quarantine", now),
            in_reply_to: None,
            recipients: self.notify_to.clone(),
            subject,
            body,
        }
    }

    /// The playbook's deadlines for `incident`, as dates in the configured zone.
    fn deadlines_of(&self, incident: &Incident, now: DateTime<Utc>) -> Vec<Value> {
        let Some(playbook) = self.playbooks.get(&incident.playbook) else {
            return Vec::new();
        };
        playbook
            .deadlines
            .iter()
            .map(|d| {
                let due = incident.opened_at + d.within.to_chrono();
                context! { name => clean(&d.name), due => long_time(due, self.tz), remaining => remaining(due, now) }
            })
            .collect()
    }

    fn tz_now(&self, now: DateTime<Utc>) -> String {
        now.with_timezone(&self.tz)
            .format("%Y-%m-%d %H:%M")
            .to_string()
    }

    fn digest_context(
        &self,
        kind: &str,
        name: &str,
        incidents: &[Incident],
        total: i64,
        now: DateTime<Utc>,
    ) -> Value {
        let tz = self.tz;
        let items: Vec<Value> = incidents
            .iter()
            .map(|i| context! { deadlines => self.deadlines_of(i, now), ..incident_context(i, tz, &self.levels) })
            .collect();
        context! {
            kind => kind,
            name => clean(name),
            node => self.node.clone(),
            now => self.tz_now(now),
            total => total,
            more => (total - items.len() as i64).max(0),
            incidents => items,
        }
    }
}

/// The incident as templates see it: times in the configured zone, labels in Japanese, text
/// cleaned, the city's level beside the severity.
fn incident_context(i: &Incident, tz: Tz, levels: &Levels) -> Value {
    let level = levels.of(i.severity);
    context! {
        id => i.id,
        title => clean(&i.title),
        category => clean(&i.category),
        playbook => clean(&i.playbook),
        severity => i.severity.label_ja(),
        level => level.as_str(),
        level_label => level.label_ja(),
        status => i.status.label_ja(),
        assignee => i.assignee.as_deref().map(clean),
        event_count => i.event_count,
        escalation_level => i.escalation_level,
        first_seen => long_time(i.first_seen, tz),
        last_seen => long_time(i.last_seen, tz),
        opened_at => long_time(i.opened_at, tz),
    }
}

fn field_text(v: &serde_json::Value) -> String {
    match v {
        serde_json::Value::String(s) => s.clone(),
        other => other.to_string(),
    }
}

/// Text from outside, safe in a body: control characters and escape sequences neutralised.
fn clean(s: &str) -> String {
    sanitize(s).into_owned()
}

/// A subject: on one line (CR, LF and other controls become spaces), runs of spaces collapsed,
/// no `=?` that could open an encoded word, at most `SUBJECT_MAX` characters. lettre encodes
/// what is not ASCII (RFC 2047).
pub fn subject_line(s: &str) -> String {
    // Controls become spaces first (a CR/LF must not even show as an escape in a subject);
    // what `sanitize` then catches is the rest (bidi overrides and the like), which it turns
    // into escapes without spaces, so the flattened text stays flat.
    let flat = crate::text::flatten(s, usize::MAX);
    // A reported mail's subject may decode to text that is itself an encoded word
    // (`=?UTF-8?B?4oCu?=`, double-encoded by the attacker). lettre writes an ASCII word as it
    // is, and the recipient's client would decode it: a U+202E that `sanitize` never saw.
    // Clients decode `=?…?=` even inside a word, so every `=?` is broken, visibly.
    let flat = flat.replace("=?", "= ?");
    let safe = sanitize(&flat);
    match safe.char_indices().nth(SUBJECT_MAX) {
        Some((cut, _)) => format!("{}…", &safe[..cut]),
        None => safe.into_owned(),
    }
}

fn resolve<'a>(config: &Config, names: impl Iterator<Item = &'a String>) -> Vec<String> {
    let mut out: Vec<String> = Vec::new();
    for name in names {
        for a in config.resolve_recipients(name) {
            if !out.contains(&a) {
                out.push(a);
            }
        }
    }
    out
}

fn template_error(path: PathBuf, e: &minijinja::Error) -> ComposeError {
    ComposeError::Template {
        path,
        line: e.line().unwrap_or(0),
        message: e.to_string(),
    }
}

fn sample_incident_context(node: &str) -> Value {
    let evidence = vec![
        context! { at => "2026-01-01 09:00:00", source => "/var/log/auth.log", locator => "1", text => "sample" },
    ];
    context! {
        kind => "opened",
        node => node,
        incident => context! {
            id => 1, title => "sample", category => "sample", playbook => "sample", severity => "高",
            level => "L2", level_label => "業務全体", status => "未対応", assignee => (), event_count => 1, escalation_level => 0,
            first_seen => "2026-01-01 09:00:00", last_seen => "2026-01-01 09:00:00", opened_at => "2026-01-01 09:00:00",
        },
        fields => vec![context! { name => "ip", value => "192.0.2.1" }],
        first_evidence => evidence.clone(),
        latest_evidence => evidence,
        steps => vec!["sample"],
        deadlines => vec![context! { name => "sample", due => "2026-01-04 09:00:00", remaining => "あと 3 日" }],
        new_events => 1,
        level => 1,
        escalated_to => vec!["lead"],
        statutory => vec![context! { name => "sample", due => "2026-01-04 09:00:00 (あと 3 日)", done => false }],
        open_for => "30 分",
        deadline => context! { name => "sample", due => "2026-01-04 09:00:00", remaining => "あと 3 日", pii => true },
        commands => context! { show => "csirt incidents show 1", ack => "csirt incidents ack 1", close => "csirt incidents close 1" },
    }
}

fn sample_digest_context(node: &str, kind: &str) -> Value {
    context! {
        kind => kind,
        notices => vec![context! { incident => 1, kind => "続報", subject => "[CSIRT #1] 【続報】sample" }],
        name => "sample",
        node => node,
        now => "2026-01-01 09:00",
        total => 1,
        more => 0,
        incidents => vec![context! {
            id => 1, title => "sample", severity => "高", level => "L2", level_label => "業務全体",
            status => "未対応", assignee => (),
            event_count => 1, opened_at => "2026-01-01 09:00:00", escalation_level => 1,
            deadlines => vec![context! { name => "sample", due => "2026-01-04 09:00:00", remaining => "あと 3 日" }],
        }],
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn subjects_stay_on_one_line_whatever_the_log_line_held() {
        let s =
            subject_line("[CSIRT #1] SSH (x\r\nBcc: victim@example.jp\r\n\r\nbody)\x1b[2J\u{202e}");
        assert!(!s.contains('\r') && !s.contains('\n'), "{s:?}");
        assert!(!s.contains('\x1b') && !s.contains('\u{202e}'), "{s:?}");
        assert!(
            s.starts_with("[CSIRT #1] SSH (x Bcc: victim@example.jp body)"),
            "{s:?}"
        );
        // Issue #12: a subject that decoded to an encoded word went out as one.
        assert_eq!(
            subject_line("報告受付: =?UTF-8?B?4oCu?=gpj.exe x=?utf-8?q?=E2=80=AE?="),
            "報告受付: = ?UTF-8?B?4oCu?=gpj.exe x= ?utf-8?q?=E2=80=AE?="
        );
        let long = subject_line(&"長".repeat(500));
        assert_eq!(long.chars().count(), SUBJECT_MAX + 1);
        assert!(long.ends_with('…'));
        assert_eq!(subject_line("  a \t\t b  "), "a b");
    }
}
