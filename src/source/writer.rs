//! The store writer: commits the batches of every batch-producing source in order. A batch that
//! fails is retried with backoff until it commits; the sources are blocked meanwhile by the
//! bounded channel, so a backlog stays on disk (or in the journal), not in memory, and nothing
//! read is lost or committed twice. It ends when every source has dropped its sender.
//!
//! While a batch does not commit, ingest is stopped, and says why: in the journal, in the
//! store for `csirt status` (on the daemon's heartbeat row and among the recent errors as
//! component `ingest`, both cleared once ingest resumes), and in the heartbeat's summary and
//! systemd's STATUS= (`Stall`). A store whose disk is full gets the
//! reserve beside it released first (`store::space`), so that there is room to say so.

use super::Notice;
use crate::compose::Composer;
use crate::engine::Batch;
use crate::live::Live;
use crate::store::{INGEST_STOPPED, Store, StoreError};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};
use tokio::sync::{Notify, mpsc};
use tracing::{error, info, warn};

/// Batches waiting between the sources and the writer: small, so that a slow store slows the
/// sources within a few batches. Two keep the writer busy while a source builds the next; each
/// waiting batch of a spray is about 2 MiB of hits (#13: 4 made the peak RSS of a 100,000-address
/// spray go past its 64 MiB).
pub const BATCH_QUEUE: usize = 2;

/// The first retry of a failed batch, doubled up to `MAX_DELAY`: a store that is away for a
/// moment costs a moment, one that is away for hours a try every half minute (no busy loop).
const FIRST_DELAY: Duration = Duration::from_millis(250);
const MAX_DELAY: Duration = Duration::from_secs(30);

/// How often a missing reserve is made again while the store takes writes.
const RESERVE_RETRY: Duration = Duration::from_secs(60);

/// Why ingest is stopped, while it is: for the heartbeat's summary and systemd's STATUS=.
#[derive(Debug, Default)]
pub struct Stall(Mutex<Option<String>>);

impl Stall {
    /// The reason, while ingest is stopped.
    pub fn reason(&self) -> Option<String> {
        self.0.lock().map(|s| s.clone()).unwrap_or_default()
    }

    fn set(&self, why: Option<String>) {
        if let Ok(mut s) = self.0.lock() {
            *s = why;
        }
    }
}

/// A stop in progress: since when, how many tries, whether it is the disk.
struct Stopped {
    since: Instant,
    attempts: u32,
    disk_full: bool,
}

/// Commits batches until the channel closes.
pub async fn run(
    store: Arc<Store>,
    node: String,
    mut batches: mpsc::Receiver<Batch>,
    composer: Live<Composer>,
    wake_notifier: Arc<Notify>,
    health: crate::systemd::Worker,
    stall: Arc<Stall>,
) -> anyhow::Result<()> {
    // The reserve, made at the start (`daemon::run`), is made again while ingest goes on when
    // the disk had no room for it then, or it was released.
    let mut reserve_tried: Option<Instant> = None;
    while let Some(batch) = batches.recv().await {
        let mut delay = FIRST_DELAY;
        let mut stopped: Option<Stopped> = None;
        loop {
            // Each attempt is one piece of work: retrying a store that is away is not stuck.
            health.busy();
            match store.ingest(&batch, &composer.get()).await {
                Ok(outcome) => {
                    if let Some(stop) = stopped.take() {
                        resume(&store, &node, &stall, stop).await;
                        reserve_tried = None;
                    }
                    for id in &outcome.opened {
                        info!(incident = id, "incident opened");
                    }
                    for id in &outcome.raised {
                        tracing::warn!(incident = id, "incident raised by a later event");
                    }
                    if !outcome.opened.is_empty() || !outcome.raised.is_empty() {
                        wake_notifier.notify_one();
                    }
                    break;
                }
                Err(e) => {
                    match &mut stopped {
                        // A stop that turns out to be the disk (after a timeout, say) says so.
                        Some(stop) if stop.disk_full || store.disk_full(&e).is_none() => {
                            stop.attempts += 1;
                        }
                        _ => {
                            let since = stopped.as_ref().map(|s| s.since);
                            let mut stop = halt(&store, &node, &stall, &e, batch.hits.len()).await;
                            stop.since = since.unwrap_or(stop.since);
                            stopped = Some(stop);
                        }
                    }
                    tokio::time::sleep(delay).await;
                    delay = (delay * 2).min(MAX_DELAY);
                    // On shutdown with the store away, give up: the checkpoint was not advanced,
                    // so these lines are read again at the next start.
                    if batches.is_closed() && delay >= Duration::from_secs(4) {
                        warn!(
                            "stopping with an uncommitted batch; its lines are read again at the next start"
                        );
                        return Ok(());
                    }
                }
            }
        }
        // A spray's batch is thousands of hits, each a handful of allocations: freeing them was
        // a sixth of this task's work, which the next batch waits for. Another thread does it.
        drop(tokio::task::spawn_blocking(move || drop(batch)));
        health.idle();
        if reserve_tried.is_none_or(|t| t.elapsed() >= RESERVE_RETRY) {
            reserve_tried = Some(Instant::now());
            make_reserve(&store).await;
        }
    }
    Ok(())
}

/// Makes the reserve beside a SQLite store if it is missing and there is room (`store::space`),
/// off the runtime's threads: it writes and syncs half a megabyte.
pub async fn make_reserve(store: &Arc<Store>) {
    let store = Arc::clone(store);
    match tokio::task::spawn_blocking(move || store.make_reserve()).await {
        Ok(Ok(_)) => {}
        Ok(Err(e)) => warn!(error = %e, "cannot make the reserve beside the store"),
        Err(e) => warn!(error = %e, "the task making the reserve beside the store failed"),
    }
}

/// Ingest stops on `e`: logs it, makes room if the disk is full, and records why.
async fn halt(store: &Store, node: &str, stall: &Stall, e: &StoreError, hits: usize) -> Stopped {
    let full = store.disk_full(e);
    let message = match &full {
        Some(full) => {
            error!(
                store = %full.store,
                available_bytes = full.disk.as_ref().map(|d| d.available_bytes),
                hits,
                "the store's disk is full: ingest stopped, the batch is retried with backoff and \
                 ingest resumes where it stopped once there is room: {}",
                full.error
            );
            if store.release_reserve() {
                info!(
                    bytes = crate::store::space::RESERVE_BYTES,
                    "released the reserve beside the store, to record why ingest stopped"
                );
            }
            format!(
                "{}。取り込みを止めて再試行しています。空きができしだい、止まった位置から再開します",
                full.message()
            )
        }
        None => {
            error!(error = %e, hits, "cannot commit a batch; retrying until the store takes it");
            format!(
                "取り込みを止めています: バッチをコミットできません: {e}。ストアが受け付けしだい、止まった位置から再開します"
            )
        }
    };
    stall.set(Some(message.clone()));
    let since = crate::model::now();
    // The heartbeat row first: its UPDATE is the write most likely to find room.
    if let Err(e) = store
        .set_ingest_stopped(node, Some((&message, since)))
        .await
    {
        warn!(error = %e, "cannot record in the store why ingest stopped (this log has it)");
    }
    if let Err(e) = store.record_error(node, INGEST_STOPPED, &message).await {
        tracing::debug!(error = %e, "cannot list the ingest stop among the recent errors");
    }
    Stopped {
        since: Instant::now(),
        attempts: 1,
        disk_full: full.is_some(),
    }
}

/// Ingest commits again after `stop`: says so, and clears what `halt` recorded.
async fn resume(store: &Store, node: &str, stall: &Stall, stop: Stopped) {
    info!(
        stopped_s = stop.since.elapsed().as_secs(),
        attempts = stop.attempts,
        disk_full = stop.disk_full,
        "the store takes writes again; ingest resumed where it stopped"
    );
    stall.set(None);
    if let Err(e) = store.set_ingest_stopped(node, None).await {
        warn!(error = %e, "cannot clear the recorded ingest stop in the store");
    }
    if let Err(e) = store.resolve_errors(node, INGEST_STOPPED).await {
        warn!(error = %e, "cannot clear the ingest stop from the recent errors");
    }
}

/// Records the sources' notices for `csirt status` until every source has dropped its sender.
pub async fn record_notices(
    store: Arc<Store>,
    node: String,
    mut notices: mpsc::Receiver<Notice>,
) -> anyhow::Result<()> {
    while let Some(n) = notices.recv().await {
        if let Err(e) = store.record_error(&node, n.component, &n.message).await {
            warn!(error = %e, "cannot record a notice in the store");
        }
    }
    Ok(())
}
