//! The daemon's lifecycle: open and migrate the store, load the playbooks, beat, reload on
//! SIGHUP, stop on SIGTERM/SIGINT.
//!
//! The log reader runs on a thread of its own (blocking file I/O) and hands batches to the store
//! writer task through a bounded channel; the notifier drains the outbox and the escalator
//! writes updates, escalations, reminders and digests into it (`notify`). Mail intake joins
//! this supervisor with issue #4. The daemon never exits on a failure that a retry can cure:
//! a store that goes away is logged, and the writer retries the same batch until it commits
//! (the reader waits meanwhile), so nothing read is lost and nothing is committed twice.

use crate::compose::Composer;
use crate::config::Config;
use crate::engine::Batch;
use crate::model::now;
use crate::notifier::transport::Mailer;
use crate::notifier::{EscalatorConfig, SharedComposer};
use crate::playbook::matcher::Matcher;
use crate::playbook::{self, PlaybookSet};
use crate::source::logs::{LogReader, Notice, ReaderHandle, Resume};
use crate::store::{Heartbeat, Role, Store};
use crate::systemd;
use anyhow::Context;
use std::future::Future;
use std::path::{Path, PathBuf};
use std::sync::{Arc, RwLock};
use std::time::Duration;
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

/// What a reload replaces.
struct Loaded {
    config: Config,
    playbooks: PlaybookSet,
}

/// Batches waiting between the reader and the store writer: small, so that a slow store slows
/// the reader within a few batches.
const BATCH_QUEUE: usize = 4;

/// The log side of the daemon: the reader thread and the store writer task.
struct LogIngest {
    handle: ReaderHandle,
    thread: std::thread::JoinHandle<()>,
    writer: tokio::task::JoinHandle<()>,
    notices: tokio::task::JoinHandle<()>,
}

impl LogIngest {
    async fn start(
        store: Arc<Store>,
        node: &str,
        config: &Config,
        matcher: Arc<RwLock<Arc<Matcher>>>,
        composer: SharedComposer,
        wake_notifier: Arc<tokio::sync::Notify>,
        health: &crate::systemd::Health,
    ) -> anyhow::Result<Option<LogIngest>> {
        if config.logs.is_empty() {
            return Ok(None);
        }
        let mut checkpoints = store.log_checkpoints(node).await?;
        let present = crate::source::logs::present_identities(&config.logs);
        let gone: Vec<(u64, u64)> = checkpoints
            .iter()
            .map(|c| (c.dev, c.inode))
            .filter(|id| !present.contains(id))
            .collect();
        let pruned = store
            .prune_log_checkpoints(node, &gone, now() - chrono::TimeDelta::days(30))
            .await?;
        if pruned > 0 {
            info!(
                pruned,
                "forgot the checkpoints of log files gone for 30 days"
            );
            checkpoints = store.log_checkpoints(node).await?;
        }
        let resume = Resume {
            checkpoints,
            started_patterns: store.log_patterns(node).await?,
        };
        let (batch_tx, batch_rx) = tokio::sync::mpsc::channel::<Batch>(BATCH_QUEUE);
        let (notice_tx, notice_rx) = tokio::sync::mpsc::channel::<Notice>(64);
        let (mut reader, handle) = LogReader::new(
            node.to_string(),
            config.timezone,
            &config.logs,
            matcher,
            resume,
            batch_tx,
            notice_tx,
        );
        reader.watched_by(health.worker("log reader"));
        let opened = reader.opened();
        let thread = std::thread::Builder::new()
            .name("csirt-logs".into())
            .spawn(move || reader.run())?;
        let writer = tokio::spawn(write_batches(
            Arc::clone(&store),
            batch_rx,
            composer,
            wake_notifier,
            health.worker("store writer"),
        ));
        let notices = tokio::spawn(record_notices(store, node.to_string(), notice_rx));
        // READY=1 waits for the files to be open, not for a backlog to be read.
        if tokio::time::timeout(Duration::from_secs(30), opened)
            .await
            .is_err()
        {
            warn!("the log files were not all opened within 30 s; reporting ready anyway");
        }
        Ok(Some(LogIngest {
            handle,
            thread,
            writer,
            notices,
        }))
    }

    /// Stops reading, commits what was read, and waits for both sides to finish.
    async fn stop(self) {
        self.handle.stop();
        if let Err(e) = self.writer.await {
            error!("store writer task failed: {e}");
        }
        let _ = tokio::task::spawn_blocking(move || self.thread.join()).await;
        self.notices.abort();
    }
}

/// Commits batches in order; a batch that fails is retried with backoff until it commits. The
/// reader is blocked meanwhile by the bounded channel, so the backlog stays on disk, not in memory.
async fn write_batches(
    store: Arc<Store>,
    mut batches: tokio::sync::mpsc::Receiver<Batch>,
    composer: SharedComposer,
    wake_notifier: Arc<tokio::sync::Notify>,
    health: crate::systemd::Worker,
) {
    while let Some(batch) = batches.recv().await {
        let mut delay = Duration::from_millis(250);
        let mut failing = false;
        loop {
            // Each attempt is one piece of work: retrying a store that is away is not stuck.
            health.busy();
            let composer = crate::notifier::current(&composer);
            match store.ingest(&batch, &composer).await {
                Ok(outcome) => {
                    if failing {
                        info!("store reachable again; ingest resumed");
                    }
                    for id in &outcome.opened {
                        info!(incident = id, "incident opened");
                    }
                    if !outcome.opened.is_empty() {
                        wake_notifier.notify_one();
                    }
                    break;
                }
                Err(e) => {
                    if !failing {
                        error!(error = %e, hits = batch.hits.len(), "cannot commit a log batch; retrying until the store takes it");
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
                        return;
                    }
                }
            }
        }
        health.idle();
    }
}

async fn record_notices(
    store: Arc<Store>,
    node: String,
    mut notices: tokio::sync::mpsc::Receiver<Notice>,
) {
    while let Some(n) = notices.recv().await {
        if let Err(e) = store.record_error(&node, n.component, &n.message).await {
            warn!(error = %e, "cannot record a notice in the store");
        }
    }
}

fn build_matcher(playbooks: &PlaybookSet) -> anyhow::Result<Matcher> {
    Matcher::new(playbooks.clone()).context("the playbooks' patterns do not compile together")
}

/// Templates in `<config dir>/templates/` replace the built-in ones.
fn build_composer(
    path: &Path,
    config: &Config,
    playbooks: &PlaybookSet,
) -> anyhow::Result<Composer> {
    let dir = crate::compose::template_dir(path);
    Ok(Composer::new(config, playbooks, dir.as_deref())?)
}

fn load_playbooks(config: &Config) -> anyhow::Result<PlaybookSet> {
    let contacts = config.contacts.keys().cloned().collect();
    playbook::load(&config.playbooks, Some(&contacts))
        .with_context(|| format!("playbooks in {} refused", config.playbooks.display()))
}

/// Runs the daemon until `shutdown` resolves.
pub async fn run(
    path: PathBuf,
    config: Config,
    shutdown: impl Future<Output = ()>,
) -> anyhow::Result<()> {
    config.check_secret_permissions(&path)?;
    let playbooks = load_playbooks(&config)?;
    let store = Arc::new(Store::open(&config.store.url, Role::Daemon).await?);
    let schema = store.migrate().await?;
    let matcher = Arc::new(RwLock::new(Arc::new(build_matcher(&playbooks)?)));
    let composer: SharedComposer = Arc::new(RwLock::new(Arc::new(build_composer(
        &path, &config, &playbooks,
    )?)));
    let escalator_config = Arc::new(RwLock::new(Arc::new(EscalatorConfig::from_config(
        &config,
    )?)));
    let mailer = Mailer::from_config(&config)?;
    let node = config.node_name();
    let started_at = now();
    let mut loaded = Loaded { config, playbooks };
    info!(
        node = %node,
        store = %store.url(),
        schema = schema.applied,
        playbooks = loaded.playbooks.len(),
        "csirt daemon started"
    );

    let health = crate::systemd::Health::new();
    let wake_notifier = Arc::new(tokio::sync::Notify::new());
    let stop_tasks = tokio_util::sync::CancellationToken::new();
    let notifier = tokio::spawn(crate::notifier::run_notifier(
        Arc::clone(&store),
        mailer,
        Arc::clone(&composer),
        node.clone(),
        (
            loaded.config.notify.flood,
            loaded.config.notify.retry_after.to_chrono(),
        ),
        (Arc::clone(&wake_notifier), stop_tasks.clone()),
        health.worker("notifier"),
    ));
    let escalator = tokio::spawn(crate::notifier::run_escalator(
        Arc::clone(&store),
        Arc::clone(&composer),
        Arc::clone(&escalator_config),
        node.clone(),
        (Arc::clone(&wake_notifier), stop_tasks.clone()),
        health.worker("escalator"),
    ));
    let intake_ctx: crate::intake::maildir::SharedContext =
        Arc::new(RwLock::new(Arc::new(crate::intake::Context::new(
            &loaded.config,
            &loaded.playbooks,
            crate::notifier::current(&composer),
        ))));
    let mail_intake = loaded
        .config
        .intake
        .as_ref()
        .and_then(|i| i.maildir.clone())
        .map(|root| {
            tokio::spawn(crate::intake::maildir::run(
                Arc::clone(&store),
                root,
                Arc::clone(&intake_ctx),
                stop_tasks.clone(),
                health.worker("mail intake"),
            ))
        });
    let imap_intake = loaded
        .config
        .intake
        .as_ref()
        .and_then(|i| i.imap.clone())
        .map(|imap| {
            tokio::spawn(crate::intake::imap::run(
                Arc::clone(&store),
                imap,
                Arc::clone(&intake_ctx),
                stop_tasks.clone(),
                health.worker("IMAP intake"),
            ))
        });
    let logs = LogIngest::start(
        Arc::clone(&store),
        &node,
        &loaded.config,
        Arc::clone(&matcher),
        Arc::clone(&composer),
        Arc::clone(&wake_notifier),
        &health,
    )
    .await?;

    let mut hangup = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::hangup())
        .context("cannot install the SIGHUP handler")?;
    let mut ticker = tokio::time::interval(HEARTBEAT_INTERVAL);
    ticker.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let watchdog = crate::systemd::watchdog_period();
    let mut watchdog_ticker =
        tokio::time::interval(watchdog.map_or(Duration::from_secs(3600), |p| p / 2));
    let mut notifier = notifier;
    let mut escalator = escalator;
    let mut logs = logs;
    let mut mail_intake = mail_intake;
    let mut imap_intake = imap_intake;
    systemd::sd_notify(&format!(
        "READY=1\nSTATUS={}",
        status_line(&store, &loaded).await
    ));
    info!(watchdog = ?watchdog, "ready");
    tokio::pin!(shutdown);
    let ended = loop {
        let writer_ended = async {
            match logs.as_mut() {
                Some(l) => (&mut l.writer).await,
                None => std::future::pending().await,
            }
        };
        let intake_ended = async {
            match mail_intake.as_mut() {
                Some(task) => task.await,
                None => std::future::pending().await,
            }
        };
        let imap_ended = async {
            match imap_intake.as_mut() {
                Some(task) => task.await,
                None => std::future::pending().await,
            }
        };
        tokio::select! {
            _ = &mut shutdown => break None,
            _ = ticker.tick() => {
                let status = status_line(&store, &loaded).await;
                systemd::sd_notify(&format!("STATUS={status}"));
                beat(&store, &node, started_at, status).await
            }
            _ = watchdog_ticker.tick(), if watchdog.is_some() => {
                let limit = watchdog.unwrap_or(Duration::MAX);
                match health.stuck(limit) {
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
                let live = Live { matcher: &matcher, composer: &composer, escalator: &escalator_config, intake: &intake_ctx };
                reload(&path, &mut loaded, &store, &node, live).await;
                systemd::sd_notify(&format!("READY=1\nSTATUS={}", status_line(&store, &loaded).await));
            }
            r = &mut notifier => break Some(format!("the notifier ended: {}", task_end(r))),
            r = &mut escalator => break Some(format!("the escalator ended: {}", task_end(r))),
            r = writer_ended => break Some(format!("the log store writer ended: {}", task_end(r))),
            r = intake_ended => break Some(format!("the mail intake ended: {}", task_end(r))),
            r = imap_ended => break Some(format!("the IMAP intake ended: {}", task_end(r))),
        }
    };
    if let Some(why) = ended {
        // A worker died: exit non-zero so that systemd restarts the whole daemon, rather than
        // run on half alive. Everything committed stays; the rest is read again at the start.
        error!("{why}; exiting so that systemd restarts the daemon");
        systemd::sd_notify(&format!("STOPPING=1\nSTATUS={why}"));
        anyhow::bail!("{why}");
    }
    systemd::sd_notify("STOPPING=1");
    // Everything stops at once, within about 3 s: the reader at its next batch, the writer after
    // committing what is queued, the notifier after the mail in hand (what it has not sent stays
    // in the outbox for the next start).
    stop_tasks.cancel();
    let stop_logs = async {
        if let Some(logs) = logs
            && tokio::time::timeout(Duration::from_secs(3), logs.stop())
                .await
                .is_err()
        {
            warn!(
                "log ingest did not stop within 3 s; uncommitted lines are read again at the next start"
            );
        }
    };
    let stop_task = |name: &'static str, task: tokio::task::JoinHandle<()>| async move {
        match tokio::time::timeout(Duration::from_secs(3), task).await {
            Ok(Ok(())) => {}
            Ok(Err(e)) => error!("{name} task failed: {e}"),
            Err(_) => warn!(
                "{name} did not stop within 3 s; its claimed mail is sent again after its lease"
            ),
        }
    };
    let stop_intake = async {
        if let Some(task) = mail_intake {
            stop_task("mail intake", task).await;
        }
        if let Some(task) = imap_intake {
            stop_task("IMAP intake", task).await;
        }
    };
    tokio::join!(
        stop_logs,
        stop_task("notifier", notifier),
        stop_task("escalator", escalator),
        stop_intake
    );
    beat(&store, &node, started_at, STOPPED_SUMMARY.into()).await;
    store.close().await;
    info!(node = %node, "csirt daemon stopped");
    Ok(())
}

/// Why a task's future ended: a panic's message, or that it returned when it should not have.
fn task_end(result: Result<(), tokio::task::JoinError>) -> String {
    match result {
        Ok(()) => "returned unexpectedly".into(),
        Err(e) if e.is_panic() => format!("panicked: {e}"),
        Err(e) => e.to_string(),
    }
}

/// The one-line summary for systemd's STATUS= and the heartbeat.
async fn status_line(store: &Store, loaded: &Loaded) -> String {
    let patterns: usize = loaded.config.logs.iter().map(|l| l.paths.len()).sum();
    match store.overview().await {
        Ok(o) => {
            let open: i64 = o.open_by_severity.iter().map(|(_, n)| n).sum();
            format!(
                "{} playbooks, {patterns} log patterns; {open} open incidents; outbox {} pending, {} failed",
                loaded.playbooks.len(),
                o.outbox_pending,
                o.outbox_failed
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

/// What a reload swaps under the running tasks.
struct Live<'a> {
    matcher: &'a RwLock<Arc<Matcher>>,
    composer: &'a RwLock<Arc<Composer>>,
    escalator: &'a RwLock<Arc<EscalatorConfig>>,
    intake: &'a RwLock<Arc<crate::intake::Context>>,
}

fn swap<T>(slot: &RwLock<Arc<T>>, value: T) {
    match slot.write() {
        Ok(mut m) => *m = Arc::new(value),
        Err(poisoned) => *poisoned.into_inner() = Arc::new(value),
    }
}

/// Validates the new config, playbooks and templates completely before replacing anything; on
/// any error the running set stays and the error is logged and recorded for `csirt status`.
async fn reload(path: &Path, loaded: &mut Loaded, store: &Store, node: &str, live: Live<'_>) {
    info!(config = %path.display(), "SIGHUP received, reloading");
    let attempt = Config::load(path)
        .map_err(anyhow::Error::from)
        .and_then(|config| {
            config.check_secret_permissions(path)?;
            let playbooks = load_playbooks(&config)?;
            let compiled = build_matcher(&playbooks)?;
            let composer = build_composer(path, &config, &playbooks)?;
            let escalator = EscalatorConfig::from_config(&config)?;
            Ok((Loaded { config, playbooks }, compiled, composer, escalator))
        });
    match attempt {
        Ok((new, compiled, composer, escalator)) => {
            if new.config.store.url != loaded.config.store.url {
                warn!(
                    "[store] url changed: that takes a restart; the daemon keeps the store it has open"
                );
            }
            let patterns = |c: &Config| {
                c.logs
                    .iter()
                    .flat_map(|l| l.paths.iter().map(|p| p.get_ref().clone()))
                    .collect::<Vec<_>>()
            };
            if patterns(&new.config) != patterns(&loaded.config) {
                warn!(
                    "[[logs]] changed: new log patterns take a restart; the playbooks are reloaded now"
                );
            }
            if new.config.notify.transport.get_ref() != loaded.config.notify.transport.get_ref() {
                warn!(
                    "[notify] transport changed: that takes a restart; templates, recipients and escalations are reloaded now"
                );
            }
            let composer = Arc::new(composer);
            swap(
                live.intake,
                crate::intake::Context::new(&new.config, &new.playbooks, Arc::clone(&composer)),
            );
            swap(live.matcher, compiled);
            match live.composer.write() {
                Ok(mut c) => *c = composer,
                Err(poisoned) => *poisoned.into_inner() = composer,
            }
            swap(live.escalator, escalator);
            info!(playbooks = new.playbooks.len(), "reloaded");
            *loaded = new;
        }
        Err(e) => {
            let message = crate::text::error_chain(&e);
            error!("reload refused, the previous configuration keeps running: {message}");
            if let Err(e) = store.record_error(node, "reload", &message).await {
                warn!(error = %e, "cannot record the reload error in the store");
            }
        }
    }
}
