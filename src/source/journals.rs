//! The `[[journal]]` sources: each runs one `journalctl --follow` (`journal::JournalTail`),
//! matches every entry as the line rsyslog would have written for it, and sends the hits to
//! the store writer in batches that carry the cursor of the batch's last entry.
//!
//! Exactly once: the cursor in the store moves only in the transaction that commits the hits
//! of the entries up to it. After a crash the source resumes strictly after the stored cursor;
//! after journalctl itself dies it resumes after the last entry it sent (queued batches are
//! committed in order by the writer), so nothing is read twice or skipped. Rules see an entry
//! through the name of its source: `name = "auth.log"` lets rules that read `auth.log*` read it.

use super::journal::{JournalEntry, JournalQuery, JournalTail, syslog_line};
use super::{Notice, Running, Source, SourceContext};
use crate::config::{JournalSource, StartAt};
use crate::engine::{Batch, Hit, JournalCursor, RaiseGate};
use crate::playbook::matcher::Matcher;
use crate::playbook::session::Sessions;
use std::path::Path;
use std::time::Duration;
use tracing::{info, warn};

/// Entries per batch at most (one transaction).
const BATCH_ENTRIES: usize = 10_000;
/// How long a batch waits for one more entry before it is sent.
const LINGER: Duration = Duration::from_millis(50);
/// A batch of entries that matched nothing still moves the cursor, at most this often: reading
/// them again after a crash is harmless, so it need not cost a transaction each time.
const CURSOR_EVERY: Duration = Duration::from_secs(1);
/// Waits before starting journalctl again after it stopped, doubling up to a minute.
const RESTART_FIRST: Duration = Duration::from_secs(1);
const RESTART_MAX: Duration = Duration::from_secs(60);

/// One `[[journal]]` source.
pub struct JournalFeed {
    source: JournalSource,
}

impl JournalFeed {
    pub fn new(source: JournalSource) -> JournalFeed {
        JournalFeed { source }
    }
}

impl Source for JournalFeed {
    fn name(&self) -> &'static str {
        "journal reader"
    }

    fn run(self: Box<Self>, ctx: SourceContext) -> Running {
        Box::pin(follow(self.source, ctx))
    }
}

async fn follow(source: JournalSource, ctx: SourceContext) -> anyhow::Result<()> {
    let name = source.name.get_ref().clone();
    // The position of the last entry sent to the writer: from the store at start, then ours.
    let mut position = ctx.store.journal_cursor(&ctx.node, &name).await?;
    let mut ready = Some(ctx.ready);
    let mut restart_wait = RESTART_FIRST;
    // The processes whose entries this source reads (sshd's multi-line failures).
    let mut sessions = Sessions::default();
    info!(source = %name, resume = position.is_some(), "journal reader started");
    while !ctx.cancel.is_cancelled() {
        let query = JournalQuery {
            matches: source.matches.iter().map(|m| m.get_ref().clone()).collect(),
            directory: source.directory.clone(),
            after_cursor: position.clone(),
            from_start: source.start_at == StartAt::Beginning,
        };
        let started = JournalTail::spawn(&query);
        if let Some(ready) = ready.take() {
            let _ = ready.send(());
        }
        let mut tail = match started {
            Ok(tail) => tail,
            Err(e) => {
                notice(&ctx.notices, format!("[[journal]] {name}: {e}")).await;
                if pause(&ctx.cancel, &mut restart_wait).await {
                    break;
                }
                continue;
            }
        };
        let mut last_cursor_sent = std::time::Instant::now();
        let ended = loop {
            ctx.health.idle();
            let batch = tokio::select! {
                _ = ctx.cancel.cancelled() => break None,
                batch = tail.next_batch(BATCH_ENTRIES, LINGER) => batch,
            };
            ctx.health.busy();
            let entries = match batch {
                Ok(entries) => entries,
                Err(e) => break Some(e),
            };
            for skipped in tail.take_skipped() {
                notice(&ctx.notices, format!("[[journal]] {name}: {skipped}")).await;
            }
            let Some(last) = entries.last() else {
                continue;
            };
            restart_wait = RESTART_FIRST;
            let hits = match_entries(
                &ctx.matcher.get(),
                &ctx.gate,
                &name,
                &mut sessions,
                &entries,
            );
            if hits.is_empty() && last_cursor_sent.elapsed() < CURSOR_EVERY {
                // Only the position would move; it moves with the next batch that is sent.
                position = Some(last.cursor.clone());
                continue;
            }
            let batch = Batch {
                node: ctx.node.clone(),
                hits,
                cursors: vec![JournalCursor {
                    source: name.clone(),
                    cursor: last.cursor.clone(),
                    entry_at: last.realtime,
                }],
                ..Batch::default()
            };
            // Blocks while the store writer is behind: reading slows, nothing is dropped.
            ctx.health.idle();
            if ctx.batches.send(batch).await.is_err() {
                anyhow::bail!("the store writer is gone");
            }
            position = Some(last.cursor.clone());
            last_cursor_sent = std::time::Instant::now();
        };
        let words = tail.stderr_tail();
        if let Err(e) = tail.stop().await {
            warn!(source = %name, "stopping journalctl: {e}");
        }
        let Some(e) = ended else {
            break;
        };
        let extra = if words.is_empty() {
            String::new()
        } else {
            format!(" ({words})")
        };
        notice(
            &ctx.notices,
            format!("[[journal]] {name}: {e}{extra}; starting it again after the last entry read"),
        )
        .await;
        if pause(&ctx.cancel, &mut restart_wait).await {
            break;
        }
    }
    // Entries read but not yet sent are only those whose position moved without a batch: they
    // matched nothing, and are read again at the next start.
    info!(source = %name, "journal reader stopped");
    Ok(())
}

/// The hits of `entries` under the rules that read `name`: rules that name a program see the
/// entry's own fields (SYSLOG_IDENTIFIER or _COMM, the pid, MESSAGE) as the line's structure;
/// the others see the line rsyslog would have written for it.
pub fn match_entries(
    matcher: &Matcher,
    gate: &RaiseGate,
    name: &str,
    sessions: &mut Sessions,
    entries: &[JournalEntry],
) -> Vec<Hit> {
    let rules = matcher.rules_for(Path::new(name));
    let mut hits = Vec::new();
    let mut matches = Vec::new();
    for entry in entries {
        let line = syslog_line(entry);
        let pid = entry.pid.map(|p| p.to_string());
        let structure = entry.identifier.as_deref().map(|program| {
            crate::playbook::line::from_parts(
                entry.hostname.as_deref(),
                program,
                pid.as_deref(),
                &entry.message,
            )
        });
        matcher.scan_in_session(&rules, &line, structure, sessions, &mut matches);
        for m in matches.drain(..) {
            hits.extend(super::through_gate(gate, m, |m| {
                Hit::of_log_match(
                    m,
                    format!("journal:{name}"),
                    entry.cursor.clone(),
                    entry.realtime,
                    line.clone(),
                )
            }));
        }
    }
    hits
}

async fn notice(notices: &tokio::sync::mpsc::Sender<Notice>, message: String) {
    warn!("{message}");
    let _ = notices
        .send(Notice {
            component: "journal",
            message,
        })
        .await;
}

/// Waits before a restart; true when cancelled meanwhile.
async fn pause(cancel: &tokio_util::sync::CancellationToken, wait: &mut Duration) -> bool {
    let cancelled = tokio::select! {
        _ = cancel.cancelled() => true,
        _ = tokio::time::sleep(*wait) => false,
    };
    *wait = (*wait * 2).min(RESTART_MAX);
    cancelled
}

/// The newest entry `source` would read now (journalctl's last line for its matches), for the
/// lag `csirt status` shows; `Ok(None)` when the journal holds no such entry. Never follows:
/// at most a few seconds.
pub async fn newest_entry(source: &JournalSource) -> Result<Option<JournalEntry>, String> {
    let mut cmd = tokio::process::Command::new(super::journal::JOURNALCTL);
    cmd.args([
        "--output=json",
        "--all",
        "--no-pager",
        "--merge",
        "--lines=1",
    ])
    .env("SYSTEMD_COLORS", "0")
    .stdin(std::process::Stdio::null())
    .kill_on_drop(true);
    if let Some(dir) = &source.directory {
        cmd.arg(format!("--directory={}", dir.display()));
    }
    cmd.arg("--");
    cmd.args(source.matches.iter().map(|m| m.get_ref()));
    let out = tokio::time::timeout(Duration::from_secs(10), cmd.output())
        .await
        .map_err(|_| "journalctl did not answer within 10 s".to_string())?
        .map_err(|e| format!("cannot run journalctl: {e}"))?;
    if !out.status.success() {
        return Err(format!(
            "journalctl {}: {}",
            out.status,
            crate::text::flatten(&String::from_utf8_lossy(&out.stderr), 300)
        ));
    }
    match out.stdout.split(|&b| b == b'\n').rfind(|l| !l.is_empty()) {
        Some(line) => super::journal::parse_entry(line)
            .map(Some)
            .map_err(|e| e.to_string()),
        None => Ok(None),
    }
}
