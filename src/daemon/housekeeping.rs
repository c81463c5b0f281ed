//! The housekeeping task: every `[retention] interval`, one `Store::prune` with the playbooks'
//! windows as last (re)loaded. The store does the work in short batches, so ingest never waits
//! long for the write lock; a failed run is logged, recorded for `csirt status` and tried again
//! at the next tick, never fatal: retention can always wait.

use crate::live::Live;
use crate::model::now;
use crate::store::Store;
use crate::store::prune::PrunePlan;
use std::sync::Arc;
use std::time::Duration;
use tokio_util::sync::CancellationToken;
use tracing::{info, warn};

/// Runs until `cancel`: the first run one `interval` after the start.
pub async fn run(
    store: Arc<Store>,
    plan: Live<PrunePlan>,
    interval: Duration,
    node: String,
    cancel: CancellationToken,
) -> anyhow::Result<()> {
    // Not in the watchdog's registry: a first run over a large backlog of expired evidence may
    // take minutes, and a slow prune must not make systemd restart the daemon; ingest, which
    // the watchdog guards, goes on between its batches.
    let start = tokio::time::Instant::now() + interval;
    let mut ticker = tokio::time::interval_at(start, interval);
    // A run longer than the interval is followed by the next one, not by a burst of catch-ups.
    ticker.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tokio::select! {
            _ = cancel.cancelled() => return Ok(()),
            _ = ticker.tick() => {}
        }
        let plan = plan.get();
        let outcome = tokio::select! {
            // A run cut off by the stop has committed its batches so far; the rest waits for
            // the next start.
            _ = cancel.cancelled() => return Ok(()),
            outcome = store.prune(&plan, now()) => outcome,
        };
        match outcome {
            Ok(counts) if counts.total() > 0 => info!(
                pending_events = counts.pending_events,
                hit_counts = counts.hit_counts,
                raw_mails = counts.raw_mails,
                quarantined_mails = counts.quarantined_mails,
                incident_events = counts.incident_events,
                "housekeeping removed what retention allows"
            ),
            Ok(_) => {}
            Err(e) => {
                let message = format!(
                    "housekeeping failed (retried in {} s): {e}",
                    interval.as_secs()
                );
                warn!("{message}");
                if let Err(e) = store.record_error(&node, "housekeeping", &message).await {
                    warn!(error = %e, "cannot record the housekeeping error in the store");
                }
            }
        }
    }
}
