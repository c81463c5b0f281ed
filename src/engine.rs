//! From a rule's match to what the store records: the hit (title and dedupe key rendered from
//! the match's fields), the batch that commits hits with their source checkpoints, and the
//! in-memory correlation the dry run (`csirt playbooks test`) uses.
//!
//! The daemon's correlation runs inside the store's transaction (`Store::ingest`), so that the
//! threshold state is the stored events and several daemons on one PostgreSQL agree; the dry run
//! applies the same rules to a file in memory. Both are checked against the generator's ground
//! truth in the tests.

use crate::model::{Fields, Severity};
use crate::playbook::{Playbook, Rule, Threshold};
use chrono::{DateTime, Utc};
use std::collections::{HashMap, VecDeque};

/// First and last this many events are kept as evidence per incident; `event_count` stays exact.
pub const EVIDENCE_KEEP: i64 = 10;

/// A rule's match, ready to be stored.
#[derive(Debug, Clone)]
pub struct Hit {
    pub playbook: String,
    pub category: String,
    pub severity: Severity,
    pub title: String,
    pub dedupe_key: String,
    pub rule: String,
    pub threshold: Option<Threshold>,
    /// `log` or `mail`.
    pub kind: &'static str,
    /// The file path or mailbox.
    pub source: String,
    /// The line number or Message-ID.
    pub locator: String,
    pub observed_at: DateTime<Utc>,
    pub text: String,
    pub fields: Fields,
}

impl Hit {
    /// A hit of `rule` of `playbook` with the match's `fields`.
    #[allow(clippy::too_many_arguments)]
    pub fn new(
        playbook: &Playbook,
        rule: &Rule,
        fields: Fields,
        kind: &'static str,
        source: String,
        locator: String,
        observed_at: DateTime<Utc>,
        text: String,
    ) -> Hit {
        // PostgreSQL refuses NUL in TEXT and in JSONB: a NUL from a log line becomes U+2400 (␀),
        // visible to the analyst, before the title and the dedupe key are derived from it.
        let mut fields = fields;
        for value in fields.values_mut() {
            if let serde_json::Value::String(s) = value
                && s.contains('\0')
            {
                *s = s.replace('\0', "\u{2400}");
            }
        }
        let text = if text.contains('\0') {
            text.replace('\0', "\u{2400}")
        } else {
            text
        };
        Hit {
            playbook: playbook.id.clone(),
            category: playbook.category.clone(),
            severity: playbook.severity,
            title: render_title(&playbook.title, &fields),
            dedupe_key: dedupe_key(&playbook.dedupe, &fields),
            rule: rule.name.clone(),
            threshold: rule.threshold,
            kind,
            source,
            locator,
            observed_at,
            text,
            fields,
        }
    }
}

/// Fills `{field}` placeholders from the hit's fields; an absent field stays as written.
pub fn render_title(template: &str, fields: &Fields) -> String {
    let mut out = String::with_capacity(template.len() + 16);
    let mut rest = template;
    while let Some(open) = rest.find('{') {
        out.push_str(&rest[..open]);
        let after = &rest[open + 1..];
        match after.find('}') {
            Some(close) if fields.contains_key(&after[..close]) => {
                match &fields[&after[..close]] {
                    serde_json::Value::String(s) => out.push_str(s),
                    other => out.push_str(&other.to_string()),
                }
                rest = &after[close + 1..];
            }
            _ => {
                out.push('{');
                rest = after;
            }
        }
    }
    out.push_str(rest);
    out
}

/// `ip=203.0.113.5` (fields in the playbook's `dedupe` order, joined with `,`); empty when the
/// playbook dedupes on nothing, which makes one open incident per playbook.
pub fn dedupe_key(fields_to_use: &[String], fields: &Fields) -> String {
    let mut key = String::new();
    for name in fields_to_use {
        if !key.is_empty() {
            key.push(',');
        }
        key.push_str(name);
        key.push('=');
        match fields.get(name) {
            Some(serde_json::Value::String(s)) => key.push_str(s),
            Some(other) => key.push_str(&other.to_string()),
            None => {}
        }
    }
    key
}

/// Where a log source stands after the lines of a batch: the file's identity and the offset
/// after its last consumed line.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Checkpoint {
    pub dev: u64,
    pub inode: u64,
    pub fingerprint: String,
    pub path: String,
    pub offset: u64,
    pub line_no: u64,
}

/// What one transaction commits: hits and the checkpoints that cover them.
#[derive(Debug, Clone, Default)]
pub struct Batch {
    pub node: String,
    pub hits: Vec<Hit>,
    pub checkpoints: Vec<Checkpoint>,
    /// `[[logs]]` patterns started with this batch (their pre-existing files were positioned
    /// by `start_at`); recorded with the checkpoints so that a crash before it cannot re-apply it.
    pub patterns: Vec<String>,
    /// The intake mail these hits came from: stored in the same transaction, and a redelivery
    /// of it (same key and hash) makes the whole batch a no-op.
    pub mail: Option<MailRecord>,
}

/// An intake mail as the store keeps it: its identity, where it came from, its raw bytes.
#[derive(Debug, Clone)]
pub struct MailRecord {
    /// Message-ID, or `sha256:<hash>` when it has none.
    pub key: String,
    pub hash: String,
    /// `maildir:<file>`, `stdin`, `imap:<uid>`.
    pub source: String,
    pub size: i64,
    /// The message as it arrived (empty when it was too large to keep; the file is then kept
    /// in the quarantine folder).
    pub raw: Vec<u8>,
}

/// What a batch changed.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct IngestOutcome {
    /// The batch's mail was stored before: nothing was changed.
    pub duplicate: bool,
    /// Incidents this batch opened.
    pub opened: Vec<i64>,
    /// Open incidents this batch added events to.
    pub joined: Vec<i64>,
    /// Hits stored below their threshold.
    pub pending: usize,
}

/// An incident the dry run would open.
#[derive(Debug, Clone, PartialEq, serde::Serialize)]
pub struct DryIncident {
    pub playbook: String,
    pub title: String,
    pub dedupe_key: String,
    pub first_seen: DateTime<Utc>,
    pub last_seen: DateTime<Utc>,
    pub event_count: u64,
}

/// The correlation of `Store::ingest`, in memory, for one run over a file (no incident is ever
/// closed during it): open at the threshold within the window, then every later hit joins.
#[derive(Default)]
pub struct DryRun {
    windows: HashMap<(String, String), VecDeque<DateTime<Utc>>>,
    open: HashMap<(String, String), usize>,
    pub incidents: Vec<DryIncident>,
}

impl DryRun {
    /// Applies one hit.
    pub fn add(&mut self, hit: &Hit) {
        let key = (hit.playbook.clone(), hit.dedupe_key.clone());
        if let Some(&index) = self.open.get(&key) {
            let incident = &mut self.incidents[index];
            incident.event_count += 1;
            incident.last_seen = incident.last_seen.max(hit.observed_at);
            incident.first_seen = incident.first_seen.min(hit.observed_at);
            return;
        }
        let (count, first_seen) = match hit.threshold {
            Some(t) if t.count > 1 => {
                let window = self.windows.entry(key.clone()).or_default();
                window.push_back(hit.observed_at);
                let start = hit.observed_at - t.window.to_chrono();
                window.retain(|at| *at >= start);
                if window.len() < t.count as usize {
                    return;
                }
                let first = window.iter().min().copied().unwrap_or(hit.observed_at);
                let count = window.len() as u64;
                self.windows.remove(&key);
                (count, first)
            }
            _ => (1, hit.observed_at),
        };
        self.open.insert(key, self.incidents.len());
        self.incidents.push(DryIncident {
            playbook: hit.playbook.clone(),
            title: hit.title.clone(),
            dedupe_key: hit.dedupe_key.clone(),
            first_seen,
            last_seen: hit.observed_at,
            event_count: count,
        });
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn fields(pairs: &[(&str, &str)]) -> Fields {
        pairs
            .iter()
            .map(|(k, v)| (k.to_string(), serde_json::Value::from(*v)))
            .collect()
    }

    #[test]
    fn titles_and_keys_are_rendered_from_fields() {
        let f = fields(&[("ip", "203.0.113.5"), ("user", "root")]);
        assert_eq!(
            render_title("SSH総当たり攻撃 ({ip}) {user} {missing} {", &f),
            "SSH総当たり攻撃 (203.0.113.5) root {missing} {"
        );
        assert_eq!(
            dedupe_key(&["ip".into(), "user".into()], &f),
            "ip=203.0.113.5,user=root"
        );
        assert_eq!(dedupe_key(&[], &f), "");
    }
}
