//! The supervisor: every task of the daemon under one `TaskTracker` and one
//! `CancellationToken`, with its entry in the watchdog's health registry, and one report when a
//! task ends that should not have (it returned, failed or panicked before the daemon was asked
//! to stop). One shutdown sequence for all: cancel, then wait for everything with a deadline.

use crate::systemd::{Health, Worker};
use std::future::Future;
use std::time::Duration;
use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;
use tracing::{error, warn};

/// A task that ended before the daemon was asked to stop: its name and why.
pub struct Ended {
    pub task: &'static str,
    pub why: String,
}

/// The daemon's tasks.
pub struct Supervisor {
    tracker: TaskTracker,
    cancel: CancellationToken,
    health: Health,
    ended_tx: mpsc::UnboundedSender<Ended>,
    ended_rx: mpsc::UnboundedReceiver<Ended>,
}

impl Supervisor {
    pub fn new() -> Supervisor {
        let (ended_tx, ended_rx) = mpsc::unbounded_channel();
        Supervisor {
            tracker: TaskTracker::new(),
            cancel: CancellationToken::new(),
            health: Health::new(),
            ended_tx,
            ended_rx,
        }
    }

    /// The token every task stops on.
    pub fn cancel_token(&self) -> CancellationToken {
        self.cancel.clone()
    }

    /// A new entry in the health registry.
    pub fn worker(&self, name: &'static str) -> Worker {
        self.health.worker(name)
    }

    /// The registry the watchdog consults.
    pub fn health(&self) -> &Health {
        &self.health
    }

    /// Runs `task` under the supervisor as `name`.
    pub fn spawn<F>(&self, name: &'static str, task: F)
    where
        F: Future<Output = anyhow::Result<()>> + Send + 'static,
    {
        let handle = self.tracker.spawn(task);
        let cancel = self.cancel.clone();
        let ended = self.ended_tx.clone();
        self.tracker.spawn(async move {
            let why = match handle.await {
                Ok(Ok(())) if cancel.is_cancelled() => return,
                Ok(Ok(())) => "returned unexpectedly".to_string(),
                Ok(Err(e)) => crate::text::error_chain(&e),
                Err(e) if e.is_panic() => format!("panicked: {e}"),
                Err(e) => e.to_string(),
            };
            if cancel.is_cancelled() {
                error!(task = name, "{why}");
                return;
            }
            let _ = ended.send(Ended { task: name, why });
        });
    }

    /// Runs `task`, which drains a channel and ends when every sender is gone (the store writer,
    /// the notice recorder), as `name`. Ending before the stop is normal for it: a daemon with
    /// only a Maildir has no batch source, so those channels close at once. It then waits for
    /// the stop instead of being reported as dead.
    pub fn spawn_drain<F>(&self, name: &'static str, task: F)
    where
        F: Future<Output = anyhow::Result<()>> + Send + 'static,
    {
        let cancel = self.cancel.clone();
        self.spawn(name, async move {
            task.await?;
            cancel.cancelled().await;
            Ok(())
        });
    }

    /// Resolves when a task ended before the stop.
    pub async fn ended(&mut self) -> Ended {
        match self.ended_rx.recv().await {
            Some(ended) => ended,
            // The supervisor holds a sender itself: the channel cannot close.
            None => std::future::pending().await,
        }
    }

    /// Cancels every task and waits for them, at most `deadline`. What is cut off is safe: an
    /// uncommitted batch is read again at the next start, a claimed mail is sent again after its
    /// lease.
    pub async fn shutdown(self, deadline: Duration) {
        self.cancel.cancel();
        self.tracker.close();
        if tokio::time::timeout(deadline, self.tracker.wait())
            .await
            .is_err()
        {
            warn!(
                "not every task stopped within {} s; what they had not committed is read or sent again at the next start",
                deadline.as_secs()
            );
        }
    }
}
