//! The only writer to stdout: tables, detail views and JSON.
//!
//! Everything printed for a terminal passes `sanitize`: stored text comes from log lines and mail,
//! and an escape sequence in an attacker's user name must not repaint a responder's terminal.
//! Tables measure display width (Japanese is double-width) and fit the terminal. JSON is printed
//! as serde_json writes it, which escapes control characters itself.

use crate::level::Levels;
use crate::model::{Event, Incident, TimelineEntry};
use crate::playbook::Playbook;
use crate::text::{long_time, remaining, sanitize, short_time};
use chrono::{DateTime, Utc};
use chrono_tz::Tz;
use serde::Serialize;
use std::borrow::Cow;
use std::io::{self, IsTerminal, Write};
use unicode_width::{UnicodeWidthChar, UnicodeWidthStr};

/// Display width of sanitized text.
fn width(s: &str) -> usize {
    UnicodeWidthStr::width(s)
}

/// Cuts `s` to at most `max` columns, marking the cut with `…`.
fn truncate(s: &str, max: usize) -> Cow<'_, str> {
    if width(s) <= max {
        return Cow::Borrowed(s);
    }
    let mut out = String::new();
    let mut used = 0;
    for c in s.chars() {
        let w = c.width().unwrap_or(0);
        if used + w + 1 > max {
            break;
        }
        out.push(c);
        used += w;
    }
    out.push('…');
    Cow::Owned(out)
}

/// A text table whose `flex` column shrinks so that the whole fits `max_width`.
pub struct Table {
    headers: Vec<&'static str>,
    rows: Vec<Vec<String>>,
    flex: usize,
}

impl Table {
    /// A table with these headers; column `flex` (usually the title) absorbs a narrow terminal.
    pub fn new(headers: Vec<&'static str>, flex: usize) -> Self {
        Table {
            headers,
            rows: Vec::new(),
            flex,
        }
    }

    /// Adds a row; cells are sanitized here, so callers pass stored text as it is.
    pub fn row(&mut self, cells: Vec<String>) {
        self.rows.push(
            cells
                .into_iter()
                .map(|c| sanitize(&c).into_owned())
                .collect(),
        );
    }

    /// Renders with two spaces between columns, no trailing spaces.
    pub fn render(&self, max_width: Option<usize>) -> String {
        let columns = self.headers.len();
        let mut widths: Vec<usize> = self.headers.iter().map(|h| width(h)).collect();
        for row in &self.rows {
            for (i, cell) in row.iter().enumerate().take(columns) {
                widths[i] = widths[i].max(width(cell));
            }
        }
        if let Some(max) = max_width {
            let fixed: usize = widths
                .iter()
                .enumerate()
                .filter(|(i, _)| *i != self.flex)
                .map(|(_, w)| w)
                .sum();
            let gaps = 2 * columns.saturating_sub(1);
            let room = max
                .saturating_sub(fixed + gaps)
                .max(width(self.headers[self.flex]).max(10));
            widths[self.flex] = widths[self.flex].min(room);
        }
        let mut out = String::new();
        let header: Vec<String> = self.headers.iter().map(|h| h.to_string()).collect();
        for row in std::iter::once(&header).chain(&self.rows) {
            let mut line = String::new();
            for (i, cell) in row.iter().enumerate().take(columns) {
                let cell = truncate(cell, widths[i]);
                line.push_str(&cell);
                if i + 1 < columns {
                    line.push_str(&" ".repeat(widths[i] - width(&cell) + 2));
                }
            }
            out.push_str(line.trim_end());
            out.push('\n');
        }
        out
    }
}

/// Where command output goes: stdout, buffered, with the display zone.
pub struct Output {
    out: io::BufWriter<io::StdoutLock<'static>>,
    pub tz: Tz,
    /// Terminal width when stdout is a terminal; no truncation for pipes and files.
    width: Option<usize>,
}

impl Output {
    /// Output to stdout, showing times in `tz`.
    pub fn stdout(tz: Tz) -> Self {
        let stdout = io::stdout();
        let width = stdout
            .is_terminal()
            .then(|| terminal_size::terminal_size().map(|(w, _)| usize::from(w.0)))
            .flatten();
        Output {
            out: io::BufWriter::new(stdout.lock()),
            tz,
            width,
        }
    }

    /// Prints `value` as pretty JSON. serde_json escapes control characters; the invisible
    /// format characters (category Cf: bidi controls, zero-width, tags) are valid unescaped in JSON, so they are
    /// escaped here too: `--json | jq -r` output lands on terminals as well.
    pub fn json<T: Serialize + ?Sized>(&mut self, value: &T) -> io::Result<()> {
        let text = serde_json::to_string_pretty(value)?;
        writeln!(self.out, "{}", crate::text::escape_invisible_json(&text))?;
        self.out.flush()
    }

    /// Writes a document as it is (a report: its renderer escaped it for its own format).
    pub fn bytes(&mut self, bytes: &[u8]) -> io::Result<()> {
        self.out.write_all(bytes)?;
        self.out.flush()
    }

    /// Prints a line of text, sanitized.
    pub fn line(&mut self, text: &str) -> io::Result<()> {
        writeln!(self.out, "{}", sanitize(text))?;
        self.out.flush()
    }

    /// Prints a table fitted to the terminal.
    pub fn table(&mut self, table: &Table) -> io::Result<()> {
        self.out.write_all(table.render(self.width).as_bytes())?;
        self.out.flush()
    }

    /// What `csirt db prune` removed (or, dry, would remove).
    pub fn pruned(
        &mut self,
        counts: &crate::store::prune::PruneCounts,
        dry_run: bool,
        json: bool,
    ) -> io::Result<()> {
        if json {
            #[derive(Serialize)]
            struct Pruned<'a> {
                dry_run: bool,
                #[serde(flatten)]
                counts: &'a crate::store::prune::PruneCounts,
                total: i64,
            }
            return self.json(&Pruned {
                dry_run,
                counts,
                total: counts.total(),
            });
        }
        let verb = if dry_run {
            "削除対象 (would prune, dry run)"
        } else {
            "削除 (pruned)"
        };
        self.line(&format!(
            "{verb}: 閾値未満のイベント (pending events) {}  カウンタ (hit counts) {}  \
             メール本文 (raw mails blanked) {}  隔離メール (quarantined mails) {}  \
             クローズ済みインシデントのイベント (closed incidents' events) {}",
            counts.pending_events,
            counts.hit_counts,
            counts.raw_mails,
            counts.quarantined_mails,
            counts.incident_events
        ))
    }

    /// Quarantined intake mails as a table.
    pub fn quarantined(&mut self, mails: &[crate::store::mail::QuarantinedMail]) -> io::Result<()> {
        if mails.is_empty() {
            return self.line("隔離されたメールはありません (no quarantined mail)");
        }
        let mut table = Table::new(
            vec!["ID", "受信日時", "経路", "大きさ", "メールキー", "理由"],
            5,
        );
        for m in mails {
            table.row(vec![
                m.id.to_string(),
                short_time(m.received_at, self.tz),
                m.source.clone(),
                m.size.to_string(),
                m.message_key.clone(),
                m.reason.clone(),
            ]);
        }
        self.table(&table)
    }

    /// The incident list as a table, each severity with the city's level beside it.
    pub fn incidents(&mut self, incidents: &[Incident], levels: &Levels) -> io::Result<()> {
        if incidents.is_empty() {
            return self.line("該当するインシデントはありません (no incidents match)");
        }
        let mut table = Table::new(
            vec![
                "ID",
                "重要度",
                "レベル",
                "状態",
                "最終検知",
                "件数",
                "担当",
                "プレイブック",
                "件名",
            ],
            8,
        );
        for i in incidents {
            table.row(vec![
                format!("#{}", i.id),
                i.severity.label_ja().to_string(),
                levels.of(i.severity).to_string(),
                i.status.label_ja().to_string(),
                short_time(i.last_seen, self.tz),
                i.event_count.to_string(),
                i.assignee.clone().unwrap_or_else(|| "-".into()),
                i.playbook.clone(),
                i.title.clone(),
            ]);
        }
        self.table(&table)
    }

    /// One incident in full: what it is, what to do, the evidence, who did what.
    pub fn incident(
        &mut self,
        i: &Incident,
        levels: &Levels,
        playbook: Option<&Playbook>,
        events: &[Event],
        timeline: &[TimelineEntry],
        now: DateTime<Utc>,
    ) -> io::Result<()> {
        let tz = self.tz;
        let mut lines: Vec<String> = Vec::new();
        lines.push(format!("#{} {}", i.id, sanitize(&i.title)));
        let status = match i.resolution {
            Some(r) => format!("{} ({})", i.status.label_ja(), r.label_ja()),
            None => i.status.label_ja().to_string(),
        };
        let rows: Vec<(&str, String)> = vec![
            (
                "重要度",
                format!(
                    "{} ({})  市のレベル {}",
                    i.severity.label_ja(),
                    i.severity,
                    levels.of(i.severity).long_ja()
                ),
            ),
            ("状態", format!("{status} [{}]", i.status)),
            ("分類", i.category.clone()),
            ("プレイブック", i.playbook.clone()),
            ("担当", i.assignee.clone().unwrap_or_else(|| "-".into())),
            ("件数", i.event_count.to_string()),
            ("初回検知", long_time(i.first_seen, tz)),
            ("最終検知", long_time(i.last_seen, tz)),
            ("起票", long_time(i.opened_at, tz)),
            (
                "受付",
                i.acknowledged_at
                    .map_or_else(|| "-".into(), |t| long_time(t, tz)),
            ),
            (
                "クローズ",
                i.closed_at.map_or_else(|| "-".into(), |t| long_time(t, tz)),
            ),
            ("エスカレーション段階", i.escalation_level.to_string()),
            ("重複判定キー", i.dedupe_key.clone()),
        ];
        let label_width = rows.iter().map(|(l, _)| width(l)).max().unwrap_or(0);
        for (label, value) in rows {
            lines.push(format!(
                "  {label}{}  {}",
                " ".repeat(label_width - width(label)),
                sanitize(&value)
            ));
        }
        if !i.fields.is_empty() {
            lines.push(String::new());
            lines.push("項目 (fields):".into());
            for (k, v) in &i.fields {
                let v = v.as_str().map_or_else(|| v.to_string(), str::to_string);
                lines.push(format!("  {}: {}", sanitize(k), sanitize(&v)));
            }
        }
        match playbook {
            Some(p) => {
                lines.push(String::new());
                lines.push("初動対応 (steps):".into());
                for (n, step) in p.steps.iter().enumerate() {
                    let step = crate::engine::fill_step(step, &i.fields);
                    lines.push(format!("  {}. {}", n + 1, sanitize(&step)));
                }
                if !p.deadlines.is_empty() {
                    lines.push(String::new());
                    lines.push("期限 (deadlines):".into());
                    for d in &p.deadlines {
                        let due = i.opened_at + d.within.to_chrono();
                        let state = if i.closed_at.is_some() {
                            String::new()
                        } else {
                            format!("  ({})", remaining(due, now))
                        };
                        lines.push(format!(
                            "  {}: {}{state}",
                            sanitize(&d.name),
                            long_time(due, tz)
                        ));
                    }
                }
            }
            None => {
                lines.push(String::new());
                lines.push(format!(
                    "(プレイブック `{}` が見つからないため手順を表示できません)",
                    sanitize(&i.playbook)
                ));
            }
        }
        lines.push(String::new());
        lines.push(format!(
            "証跡 (evidence, {} 件中 {} 件を保存):",
            i.event_count,
            events.len()
        ));
        for e in events {
            lines.push(format!(
                "  {}  {}:{}  [{}]",
                long_time(e.observed_at, tz),
                sanitize(&e.source),
                sanitize(&e.locator),
                sanitize(&e.rule)
            ));
            for line in e.text.lines() {
                lines.push(format!("    {}", sanitize(line)));
            }
        }
        lines.push(String::new());
        lines.push("経過 (timeline):".into());
        for t in timeline {
            // A note keeps its line breaks: the first line beside the entry, the rest indented
            // under it; each line is sanitized on its own, so a CR or an escape still shows.
            let mut detail_lines = t.detail.lines();
            let detail = detail_lines
                .next()
                .map_or_else(String::new, |l| format!("  {}", sanitize(l)));
            lines.push(format!(
                "  {}  {}  {}{detail}",
                long_time(t.at, tz),
                sanitize(&t.actor),
                t.action
            ));
            for line in detail_lines {
                lines.push(format!("      {}", sanitize(line)));
            }
        }
        for line in lines {
            writeln!(self.out, "{line}")?;
        }
        self.out.flush()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tables_line_up_with_double_width_text() {
        let mut t = Table::new(vec!["件名", "ID"], 0);
        t.row(vec!["SSH総当たり攻撃".into(), "#1".into()]);
        t.row(vec!["abc".into(), "#10".into()]);
        let rendered = t.render(None);
        // The second column starts at the same display column on every line.
        let starts: Vec<usize> = rendered
            .lines()
            .map(|l| {
                let last = l.rsplit(' ').next().unwrap_or("");
                width(l) - width(last)
            })
            .collect();
        assert_eq!(starts, vec![starts[0]; 3], "{rendered}");
        assert_eq!(starts[0], width("SSH総当たり攻撃") + 2, "{rendered}");
    }

    #[test]
    fn narrow_terminal_truncates_the_flex_column_by_width() {
        let mut t = Table::new(vec!["ID", "件名"], 1);
        t.row(vec![
            "#1".into(),
            "北上市役所のウェブサイトが改ざんされた疑い".into(),
        ]);
        let rendered = t.render(Some(20));
        for line in rendered.lines() {
            assert!(width(line) <= 20, "{line:?} is {} wide", width(line));
        }
        assert!(rendered.contains('…'));
    }
}
