//! Sources: what turns the outside world into hits with checkpoints.
//!
//! Every source is a `Source`: the supervisor starts the ones the config names (`configured`,
//! the one place that knows them all) with a `SourceContext`, and each runs until cancelled.
//! Sources that produce batches of hits (log files; the journal) send them to the one store
//! writer (`writer`), which commits each batch with the checkpoints that cover it; mail sources
//! (Maildir, IMAP; `csirt intake` on a pipe is the CLI's) commit each message through
//! `intake::take`. A source never advances its own position in the store: only the transaction
//! that commits its hits does.
//!
//! - `journal`: the systemd journal through `journalctl --follow`, resumed by cursor;
//! - `journals`: the configured `[[journal]]` sources, their entries matched and batched;
//! - `logfile`: one file read line by line from a byte offset, with its identity;
//! - `logs`: the configured `[[logs]]` patterns watched, rotated files followed, lines matched
//!   and batched for the store;
//! - `writer`: the store writer that commits batches in order, retrying until the store takes them.

pub mod journal;
pub mod journals;
pub mod logfile;
pub mod logs;
pub mod writer;

use crate::config::Config;
use crate::engine::{Batch, Hit};
use crate::live::Live;
use crate::playbook::matcher::Matcher;
use crate::store::Store;
use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use tokio::sync::{mpsc, oneshot};
use tokio_util::sync::CancellationToken;

/// A problem worth a line in `csirt status`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Notice {
    pub component: &'static str,
    pub message: String,
}

/// What the supervisor hands every source.
pub struct SourceContext {
    pub store: Arc<Store>,
    pub node: String,
    pub timezone: chrono_tz::Tz,
    /// Batches for the store writer; a full channel is back-pressure, never a reason to drop.
    pub batches: mpsc::Sender<Batch>,
    /// Problems for `csirt status`.
    pub notices: mpsc::Sender<Notice>,
    pub matcher: Live<Matcher>,
    pub intake: Live<crate::intake::Context>,
    /// Which raising matches (logins) are worth a hit; the sources note every failure's key.
    pub gate: Arc<crate::engine::RaiseGate>,
    /// The source's entry in the watchdog's health registry.
    pub health: crate::systemd::Worker,
    pub cancel: CancellationToken,
    /// Sent (or dropped) once the source is ready: READY=1 waits for every source's, for at
    /// most 30 s, so that it means "the files are open", not "the backlog is read".
    pub ready: oneshot::Sender<()>,
}

/// What a source's `run` returns: it ends when cancelled; ending otherwise is a failure that
/// the supervisor answers by stopping the daemon (systemd restarts it).
pub type Running = Pin<Box<dyn Future<Output = anyhow::Result<()>> + Send>>;

/// One source of hits.
pub trait Source: Send {
    /// Its name in the health registry, the logs and `csirt status`.
    fn name(&self) -> &'static str;
    /// Reads until `ctx.cancel`, committing what it reads.
    fn run(self: Box<Self>, ctx: SourceContext) -> Running;
}

/// The sources `config` names.
pub fn configured(config: &Config) -> Vec<Box<dyn Source>> {
    let mut sources: Vec<Box<dyn Source>> = Vec::new();
    if !config.logs.is_empty() {
        sources.push(Box::new(logs::LogFiles::new(config.logs.clone())));
    }
    for journal in &config.journal {
        sources.push(Box::new(journals::JournalFeed::new(journal.clone())));
    }
    if let Some(intake) = &config.intake {
        if let Some(root) = &intake.maildir {
            sources.push(Box::new(crate::intake::maildir::Maildir::new(root.clone())));
        }
        if let Some(imap) = &intake.imap {
            sources.push(Box::new(crate::intake::imap::ImapMailbox::new(
                imap.clone(),
            )));
        }
    }
    sources
}

/// The hit of a log match, made by `make`, unless it is a raising match (a login) of a key the
/// gate knows nothing to raise for; a failure's key is noted in the gate on its way to the store.
pub fn through_gate(
    gate: &crate::engine::RaiseGate,
    m: crate::playbook::matcher::Match<'_>,
    make: impl FnOnce(crate::playbook::matcher::Match<'_>) -> Hit,
) -> Option<Hit> {
    if m.rule.raise.is_some() {
        // The key as `Hit::new` makes it (a NUL shown as U+2400), without making the hit.
        let mut key = crate::engine::dedupe_key(&m.playbook.dedupe, &m.fields);
        if key.contains('\0') {
            key = key.replace('\0', "\u{2400}");
        }
        return gate.passes(&m.playbook.id, &key).then(|| make(m));
    }
    let raises = m.playbook.rules.iter().any(|r| r.raise.is_some());
    let hit = make(m);
    if raises {
        gate.note(&hit.playbook, &hit.dedupe_key, crate::model::now());
    }
    Some(hit)
}
