//! The daemon's lifecycle: open and migrate the store, load the playbooks, beat, reload on
//! SIGHUP, stop on SIGTERM/SIGINT.
//!
//! Sources (log files, Maildir, IMAP), the notifier and the escalator run as tasks under this
//! supervisor as they are built (issues #3–#5); until then the daemon keeps the store migrated
//! and its heartbeat current. It never exits on a failure that a retry can cure: a store that
//! goes away is logged and retried at the next beat.

use crate::config::Config;
use crate::model::now;
use crate::playbook::{self, PlaybookSet};
use crate::store::{Heartbeat, Role, Store};
use anyhow::Context;
use std::future::Future;
use std::path::{Path, PathBuf};
use std::time::Duration;
use tracing::{error, info, warn};

/// How often the daemon records that it is alive.
pub const HEARTBEAT_INTERVAL: Duration = Duration::from_secs(15);

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

impl Loaded {
    fn summary(&self) -> String {
        format!(
            "playbooks {}, log sources {} configured; log and mail intake are not implemented yet",
            self.playbooks.len(),
            self.config.logs.len()
        )
    }
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
    let store = Store::open(&config.store.url, Role::Daemon).await?;
    let schema = store.migrate().await?;
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

    let mut hangup = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::hangup())
        .context("cannot install the SIGHUP handler")?;
    let mut ticker = tokio::time::interval(HEARTBEAT_INTERVAL);
    ticker.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    tokio::pin!(shutdown);
    loop {
        tokio::select! {
            _ = &mut shutdown => break,
            _ = ticker.tick() => beat(&store, &node, started_at, loaded.summary()).await,
            _ = hangup.recv() => reload(&path, &mut loaded, &store, &node).await,
        }
    }
    beat(&store, &node, started_at, "stopped".into()).await;
    store.close().await;
    info!(node = %node, "csirt daemon stopped");
    Ok(())
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

/// Validates the new config and playbooks completely before replacing anything; on any error
/// the running set stays and the error is logged and recorded for `csirt status`.
async fn reload(path: &Path, loaded: &mut Loaded, store: &Store, node: &str) {
    info!(config = %path.display(), "SIGHUP received, reloading");
    let attempt = Config::load(path)
        .map_err(anyhow::Error::from)
        .and_then(|config| {
            config.check_secret_permissions(path)?;
            let playbooks = load_playbooks(&config)?;
            Ok(Loaded { config, playbooks })
        });
    match attempt {
        Ok(new) => {
            if new.config.store.url != loaded.config.store.url {
                warn!(
                    "[store] url changed: that takes a restart; the daemon keeps the store it has open"
                );
            }
            info!(playbooks = new.playbooks.len(), "reloaded");
            *loaded = new;
        }
        Err(e) => {
            let message = crate::cli::output::error_chain(&e);
            error!("reload refused, the previous configuration keeps running: {message}");
            if let Err(e) = store.record_error(node, "reload", &message).await {
                warn!(error = %e, "cannot record the reload error in the store");
            }
        }
    }
}
