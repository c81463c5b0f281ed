//! The store writer: commits the batches of every batch-producing source in order. A batch that
//! fails is retried with backoff until it commits; the sources are blocked meanwhile by the
//! bounded channel, so a backlog stays on disk (or in the journal), not in memory, and nothing
//! read is lost or committed twice. It ends when every source has dropped its sender.

use super::Notice;
use crate::compose::Composer;
use crate::engine::Batch;
use crate::live::Live;
use crate::store::Store;
use std::sync::Arc;
use std::time::Duration;
use tokio::sync::{Notify, mpsc};
use tracing::{error, info, warn};

/// Batches waiting between the sources and the writer: small, so that a slow store slows the
/// sources within a few batches.
pub const BATCH_QUEUE: usize = 4;

/// Commits batches until the channel closes.
pub async fn run(
    store: Arc<Store>,
    mut batches: mpsc::Receiver<Batch>,
    composer: Live<Composer>,
    wake_notifier: Arc<Notify>,
    health: crate::systemd::Worker,
) -> anyhow::Result<()> {
    while let Some(batch) = batches.recv().await {
        let mut delay = Duration::from_millis(250);
        let mut failing = false;
        loop {
            // Each attempt is one piece of work: retrying a store that is away is not stuck.
            health.busy();
            match store.ingest(&batch, &composer.get()).await {
                Ok(outcome) => {
                    if failing {
                        info!("store reachable again; ingest resumed");
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
                    if !failing {
                        error!(error = %e, hits = batch.hits.len(), "cannot commit a batch; retrying until the store takes it");
                        failing = true;
                    }
                    tokio::time::sleep(delay).await;
                    delay = (delay * 2).min(Duration::from_secs(30));
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
        health.idle();
    }
    Ok(())
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
