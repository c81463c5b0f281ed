//! The daemon's lifecycle: load and validate everything, open and migrate the store, start the
//! tasks under the supervisor, beat, feed the watchdog, reload on SIGHUP, stop on SIGTERM/SIGINT.
//!
//! The tasks: the sources the config names (`source::configured`), the store writer that
//! commits their batches (`source::writer`), the notifier that drains the outbox and the
//! escalator that fills it (`notifier`), and housekeeping (`housekeeping`, retention). The daemon never exits on a failure that a retry can
//! cure: a store that goes away is logged, and the writer retries the same batch until it
//! commits (the sources wait meanwhile), so nothing read is lost and nothing is committed twice.
//! A task that ends on its own ends the daemon, non-zero, so that systemd restarts it whole.

mod housekeeping;
mod reload;
mod supervisor;

use crate::config::Config;
use crate::model::now;
use crate::notifier::transport::Mailer;
use crate::source::{self, SourceContext};
use crate::store::{Heartbeat, Role, Store};
use crate::systemd;
use anyhow::Context;
use chrono::TimeDelta;
use reload::{LiveSet, Loaded};
use std::future::Future;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;
use supervisor::Supervisor;
use tokio::sync::{Notify, mpsc, oneshot};
use tracing::{error, info, warn};
/// How often the daemon records that it is alive.
pub const HEARTBEAT_INTERVAL: Duration = Duration::from_secs(15);

/// The last heartbeat of a daemon that stopped cleanly says this (`csirt status` shows it as
/// stopped, not running).
pub const STOPPED_SUMMARY: &str = "stopped";

/// A heartbeat older than this means the daemon is gone or stuck (four missed beats).
pub const HEARTBEAT_STALE_AFTER: Duration = Duration::from_secs(60);

/// Resolves on SIGTERM or SIGINT.
pub async fn shutdown_signal() {
    use tokio::signal::unix::{SignalKind, signal};
    match (
        signal(SignalKind::terminate()),
        signal(SignalKind::interrupt()),
    ) {
        (Ok(mut term), Ok(mut int)) => {
            tokio::select! {
                _ = term.recv() => info!("SIGTERM received, stopping"),
                _ = int.recv() => info!("SIGINT received, stopping"),
            }
        }
        // Without signal handlers the daemon could only be killed; refuse to pretend.
        (Err(e), _) | (_, Err(e)) => {
            error!("cannot install signal handlers: {e}");
            std::future::pending::<()>().await
        }
    }
}

/// How long the tasks get to stop after SIGTERM (systemd's TimeoutStopSec is longer).
const STOP_DEADLINE: Duration = Duration::from_secs(3);

/// Logs why the store cannot be opened: the path, the user and the permission missing when the
/// kernel refuses them, else the store's own message.
fn log_store_failure(url: &crate::config::StoreUrl, e: &anyhow::Error) {
    let message = crate::text::error_chain(e);
    match e.downcast_ref::<crate::store::StoreError>() {
        Some(crate::store::StoreError::Denied { file, denial }) => error!(
            path = %file.display(),
            user = %denial.user,
            missing = denial.need,
            denied = %denial.path.display(),
            "the daemon cannot open its store: {message}"
        ),
        _ => error!(
            store = %url,
            user = %crate::access::effective_user(),
            "the daemon cannot open its store: {message}"
        ),
    }
}

/// The daemon's tokio workers at most (fewer on a host with fewer CPUs). The heavy work runs
/// elsewhere (log matching on its own thread, SQLite on one thread per connection), so more
/// workers would add threads, not throughput.
pub const WORKER_THREADS: usize = 8;

/// tokio's blocking pool at most (its default is 512). What blocks here is short (DNS lookups
/// of the SMTP and IMAP servers) or one long wait (the log thread's join).
pub const MAX_BLOCKING_THREADS: usize = 16;

/// Runs the daemon until `shutdown` resolves.
pub async fn run(
    path: PathBuf,
    config: Config,
    shutdown: impl Future<Output = ()>,
) -> anyhow::Result<()> {
    // The personal-information rules are loaded with the rest: a broken file is refused here,
    // at start, like a broken config, rather than found by a responder in the middle of an
    // incident.
    let mut loaded = Loaded::build(&path, config)?;
    // The files watched at start are the ones the sources open now: say which of them no rule
    // reads, and which rules nothing feeds, before lines go by unmatched.
    for warning in crate::coverage::warnings(&loaded.config, &loaded.playbooks) {
        warn!("{warning}");
    }
    let store = match Store::open(&loaded.config.store.url, Role::Daemon).await {
        Ok(store) => Arc::new(store),
        Err(e) => {
            // At error level, so that `journalctl -p err` shows it: under systemd the returned
            // error reaches the journal only as stderr, at the unit's default priority (info),
            // while Restart= retries every few seconds (issue #17).
            let e = anyhow::Error::from(e);
            log_store_failure(&loaded.config.store.url, &e);
            return Err(e);
        }
    };
    let schema = store.migrate().await?;
    store
        .set_window_bound(loaded.config.store.window_keys)
        .await;
    let live = LiveSet::new(&loaded);
    let mailer = Mailer::from_config(&loaded.config)?.with_proof(store.mail_proof().await?);
    let node = loaded.config.node_name();
    // This start loaded the configuration: a reload refused before it is superseded.
    if let Err(e) = store.resolve_errors(&node, "reload").await {
        warn!(error = %e, "cannot clear the earlier reload errors in the store");
    }
    // An ingest stop recorded by an earlier run is this run's to record again if it still holds.
    let cleared = store.set_ingest_stopped(&node, None).await;
    let resolved = store
        .resolve_errors(&node, crate::store::INGEST_STOPPED)
        .await;
    if let Err(e) = cleared.and(resolved) {
        warn!(error = %e, "cannot clear the earlier ingest stop in the store");
    }
    source::writer::make_reserve(&store).await;
    let stall = Arc::new(source::writer::Stall::default());
    let started_at = now();
    info!(node = %node, store = %store.url(), schema = schema.applied, playbooks = loaded.playbooks.len(), pii_rules = %loaded.pii_rules.path.display(), "csirt daemon started");
    // A rules file edited while no daemon ran reaches the recorded incidents now.
    reload::recompute_pii(&store, &loaded, &node).await;

    let mut tasks = Supervisor::new();
    let wake_notifier = Arc::new(Notify::new());
    let notify = &loaded.config.notify;
    tasks.spawn(
        "notifier",
        crate::notifier::run_notifier(
            Arc::clone(&store),
            mailer,
            live.composer.clone(),
            node.clone(),
            (notify.rate_limit(), notify.retry_after.to_chrono()),
            (Arc::clone(&wake_notifier), tasks.cancel_token()),
            tasks.worker("notifier"),
        ),
    );
    tasks.spawn(
        "escalator",
        crate::notifier::run_escalator(
            Arc::clone(&store),
            live.composer.clone(),
            live.escalator.clone(),
            node.clone(),
            (Arc::clone(&wake_notifier), tasks.cancel_token()),
            tasks.worker("escalator"),
        ),
    );
    tasks.spawn(
        "housekeeping",
        housekeeping::run(
            Arc::clone(&store),
            live.prune.clone(),
            Duration::from_secs(loaded.config.retention.interval.as_secs()),
            node.clone(),
            tasks.cancel_token(),
        ),
    );
    let (batches, batch_rx) = mpsc::channel(source::writer::BATCH_QUEUE);
    let (notices, notice_rx) = mpsc::channel(64);
    tasks.spawn_drain(
        "store writer",
        source::writer::run(
            Arc::clone(&store),
            node.clone(),
            batch_rx,
            live.composer.clone(),
            wake_notifier,
            tasks.worker("store writer"),
            Arc::clone(&stall),
        ),
    );
    tasks.spawn_drain(
        "notice recorder",
        source::writer::record_notices(Arc::clone(&store), node.clone(), notice_rx),
    );
    // Loaded before the sources start, so that a login read at once meets the store's keys; if
    // the store cannot be read, the gate passes everything.
    let gate = Arc::new(crate::engine::RaiseGate::default());
    refresh_gate(&store, &gate, &loaded.playbooks, &node, true).await;
    let mut ready = Vec::new();
    for source in source::configured(&loaded.config) {
        let (ready_tx, ready_rx) = oneshot::channel();
        ready.push(ready_rx);
        let name = source.name();
        let ctx = SourceContext {
            store: Arc::clone(&store),
            node: node.clone(),
            timezone: loaded.config.timezone,
            batches: batches.clone(),
            notices: notices.clone(),
            matcher: live.matcher.clone(),
            intake: live.intake.clone(),
            gate: Arc::clone(&gate),
            health: tasks.worker(name),
            cancel: tasks.cancel_token(),
            ready: ready_tx,
        };
        tasks.spawn(name, source.run(ctx));
    }
    // The writer and the recorder end once every source has dropped its senders.
    drop((batches, notices));
    // READY=1 once every source is ready (a dropped sender counts), at most 30 s.
    if tokio::time::timeout(
        Duration::from_secs(30),
        futures_util::future::join_all(ready),
    )
    .await
    .is_err()
    {
        warn!("not every source was ready within 30 s; reporting ready anyway");
    }

    let mut hangup = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::hangup())
        .context("cannot install the SIGHUP handler")?;
    let mut ticker = tokio::time::interval(HEARTBEAT_INTERVAL);
    ticker.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let watchdog = systemd::watchdog_period();
    let mut watchdog_ticker =
        tokio::time::interval(watchdog.map_or(Duration::from_secs(3600), |p| p / 2));
    systemd::sd_notify(&format!(
        "READY=1\nSTATUS={}",
        status_line(&store, &loaded, &stall).await
    ));
    info!(watchdog = ?watchdog, "ready");
    tokio::pin!(shutdown);
    let ended = loop {
        tokio::select! {
            _ = &mut shutdown => break None,
            ended = tasks.ended() => break Some(format!("the {} ended: {}", ended.task, ended.why)),
            _ = ticker.tick() => {
                let status = status_line(&store, &loaded, &stall).await;
                systemd::sd_notify(&format!("STATUS={status}"));
                beat(&store, &node, started_at, status).await;
                refresh_gate(&store, &gate, &loaded.playbooks, &node, false).await;
            }
            _ = watchdog_ticker.tick(), if watchdog.is_some() => {
                match tasks.health().stuck(watchdog.unwrap_or(Duration::MAX)) {
                    None => systemd::sd_notify("WATCHDOG=1"),
                    Some((name, busy)) => error!(
                        worker = name,
                        busy_s = busy.as_secs(),
                        "a worker is stuck; not feeding the watchdog, so systemd restarts the daemon"
                    ),
                }
            }
            _ = hangup.recv() => {
                systemd::sd_notify(&format!("RELOADING=1\nMONOTONIC_USEC={}", systemd::monotonic_usec()));
                reload::reload(&path, &mut loaded, &live, &store, &node).await;
                systemd::sd_notify(&format!("READY=1\nSTATUS={}", status_line(&store, &loaded, &stall).await));
            }
        }
    };
    if let Some(why) = ended {
        // A task died: exit non-zero so that systemd restarts the whole daemon, rather than run
        // on half alive. Everything committed stays; the rest is read again at the start.
        error!("{why}; exiting so that systemd restarts the daemon");
        systemd::sd_notify(&format!("STOPPING=1\nSTATUS={why}"));
        tasks.shutdown(STOP_DEADLINE).await;
        anyhow::bail!("{why}");
    }
    systemd::sd_notify("STOPPING=1");
    // Everything stops at once: the sources at their next batch, the writer after committing
    // what is queued, the notifier after the mail in hand (what it has not sent stays in the
    // outbox for the next start).
    tasks.shutdown(STOP_DEADLINE).await;
    beat(&store, &node, started_at, STOPPED_SUMMARY.into()).await;
    store.close().await;
    info!(node = %node, "csirt daemon stopped");
    Ok(())
}

/// The one-line summary for systemd's STATUS= and the heartbeat; why ingest is stopped first,
/// while it is.
async fn status_line(store: &Store, loaded: &Loaded, stall: &source::writer::Stall) -> String {
    let patterns: usize = loaded.config.logs.iter().map(|l| l.paths.len()).sum();
    let line = status_counts(store, loaded, patterns).await;
    match stall.reason() {
        Some(why) => format!("{why}; {line}"),
        None => line,
    }
}

async fn status_counts(store: &Store, loaded: &Loaded, patterns: usize) -> String {
    match store.overview().await {
        Ok(o) => {
            let open: i64 = o.open_by_severity.iter().map(|(_, n)| n).sum();
            format!(
                "{} playbooks, {patterns} log patterns; {open} open incidents; outbox {} pending, {} failed, {} recipients refused",
                loaded.playbooks.len(),
                o.outbox_pending,
                o.outbox_failed,
                o.outbox_refused
            )
        }
        Err(e) => format!("store unreachable: {e}"),
    }
}

async fn beat(
    store: &Store,
    node: &str,
    started_at: chrono::DateTime<chrono::Utc>,
    summary: String,
) {
    let heartbeat = Heartbeat {
        node: node.to_string(),
        pid: i64::from(std::process::id()),
        version: env!("CARGO_PKG_VERSION").to_string(),
        started_at,
        beat_at: now(),
        summary,
    };
    if let Err(e) = store.beat(&heartbeat).await {
        warn!(error = %e, "cannot record the heartbeat; retrying at the next beat");
    }
}

/// Loads the raise gate (`engine::gate`) from the store: per playbook with a raising rule, the
/// keys it may raise for; and whether another daemon writes to the store (then the gate passes
/// everything: that daemon's failures are not noted here). At the start (`everything`) also
/// the incidents closed within `closed_within` and every failure counter; later only the open
/// incidents (an incident reopened from the CLI), through their partial index: a closed key
/// stays in the gate longer than `closed_within` after it was last seen open, and new failures
/// are noted by the readers.
async fn refresh_gate(
    store: &Store,
    gate: &crate::engine::RaiseGate,
    playbooks: &crate::playbook::PlaybookSet,
    node: &str,
    everything: bool,
) {
    let at = now();
    let mut keys = Vec::new();
    let mut keep = TimeDelta::zero();
    for playbook in playbooks.iter() {
        let Some(closed_within) = playbook
            .rules
            .iter()
            .filter_map(|r| r.raise.as_ref())
            .map(|r| r.closed_within.to_chrono())
            .max()
        else {
            continue;
        };
        keep = keep.max(closed_within);
        let since = everything.then(|| at - closed_within);
        match store.raise_keys(&playbook.id, since).await {
            Ok(found) => keys.extend(found.into_iter().map(|k| (playbook.id.clone(), k))),
            Err(e) => {
                warn!(error = %e, "cannot read the keys logins may raise; every login is looked up");
                gate.pass_all();
                return;
            }
        }
    }
    let stale = TimeDelta::from_std(HEARTBEAT_STALE_AFTER).unwrap_or(TimeDelta::minutes(1));
    match store.heartbeats().await {
        Ok(beats) => {
            let others = beats
                .iter()
                .any(|b| b.node != node && b.beat_at >= at - stale);
            gate.load(keys, others, at, keep);
            store.set_shared_writers(others).await;
        }
        Err(e) => {
            warn!(error = %e, "cannot read the daemons' heartbeats; every login is looked up");
            gate.pass_all();
        }
    }
}
