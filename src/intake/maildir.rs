//! The intake Maildir: messages are taken from `new/` (never `tmp/`, where deliveries are still
//! being written), their effect committed, and only then moved to `cur/` with the Seen flag; a
//! refused one goes, unchanged, to the Maildir++ folder `.Quarantine`. A crash between commit and
//! move leaves the file in `new/`: taken again, it is recognised (same key and hash) and only
//! moved. A store that is away leaves every file where it is until it comes back.

use super::{Context, Outcome};
use crate::live::Live;
use crate::store::Store;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;
use tokio_util::sync::CancellationToken;
use tracing::{error, info, warn};

/// How often `new/` is listed when no inotify event wakes the task.
const POLL: Duration = Duration::from_secs(2);
/// Where refused messages go (a Maildir++ folder of the intake Maildir).
pub const QUARANTINE: &str = ".Quarantine";

/// Creates `new/`, `cur/` and `tmp/` (and the quarantine folder's) if missing.
pub fn prepare(root: &Path) -> std::io::Result<()> {
    for dir in [root.to_path_buf(), root.join(QUARANTINE)] {
        for sub in ["new", "cur", "tmp"] {
            std::fs::create_dir_all(dir.join(sub))?;
        }
    }
    Ok(())
}

/// Takes one file from `new/`: commits its effect, then moves it. An error leaves it in place.
pub async fn take_file(
    store: &Store,
    ctx: &Context,
    root: &Path,
    file: &Path,
) -> Result<Outcome, crate::store::StoreError> {
    let name = file
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_default();
    let source = format!("maildir:{name}");
    let size = std::fs::metadata(file).map(|m| m.len()).unwrap_or(0);
    let source_ref = &source;
    let unread = |reason: String| async move {
        // Kept by the file in the quarantine folder, not in the store.
        let record = crate::engine::MailRecord {
            key: format!("unread:{source_ref}"),
            hash: format!("size:{size}"),
            source: source_ref.clone(),
            size: size as i64,
            raw: Default::default(),
        };
        // Unread, so nothing is known of its sender or subject; the notice names the file.
        store.quarantine_mail(&record, &reason, None, None).await?;
        Ok::<_, crate::store::StoreError>(Outcome::Quarantined(reason))
    };
    let outcome = if size as usize > ctx.limits.max_size {
        // Not read into memory at all.
        unread(format!(
            "message of {size} bytes is over the {}-byte limit",
            ctx.limits.max_size
        ))
        .await?
    } else {
        match std::fs::read(file) {
            Ok(raw) => super::take(store, ctx, raw, &source).await?,
            Err(e) => unread(format!("cannot read {}: {e}", file.display())).await?,
        }
    };
    let to = match &outcome {
        Outcome::Quarantined(_) => root.join(QUARANTINE).join("new").join(&name),
        _ => {
            let base = name.split(":2,").next().unwrap_or(&name);
            root.join("cur").join(format!("{base}:2,S"))
        }
    };
    if let Err(e) = std::fs::rename(file, &to) {
        // Committed but not moved: the next pass finds it again and only moves it.
        warn!(file = %file.display(), to = %to.display(), "cannot move the message: {e}");
    }
    Ok(outcome)
}

/// The files waiting in `new/`, oldest name first (delivery names start with a timestamp).
fn waiting(root: &Path) -> std::io::Result<Vec<PathBuf>> {
    let mut files: Vec<PathBuf> = std::fs::read_dir(root.join("new"))?
        .filter_map(|e| e.ok())
        .filter(|e| e.file_type().is_ok_and(|t| t.is_file()))
        .filter(|e| !e.file_name().to_string_lossy().starts_with('.'))
        .map(|e| e.path())
        .collect();
    files.sort();
    Ok(files)
}

/// Watches the Maildir until `stop`.
pub async fn run(
    store: Arc<Store>,
    root: PathBuf,
    ctx: Live<Context>,
    stop: CancellationToken,
    health: crate::systemd::Worker,
) {
    if let Err(e) = prepare(&root) {
        error!(maildir = %root.display(), "cannot prepare the intake Maildir: {e}");
    }
    let wake = Arc::new(tokio::sync::Notify::new());
    let waker = Arc::clone(&wake);
    let watcher = notify::recommended_watcher(move |event: notify::Result<notify::Event>| {
        if let Ok(notify::Event {
            kind: notify::EventKind::Access(_),
            ..
        }) = event
        {
            return;
        }
        waker.notify_one();
    });
    let _watcher = match watcher {
        Ok(mut w) => {
            use notify::Watcher;
            if let Err(e) = w.watch(&root.join("new"), notify::RecursiveMode::NonRecursive) {
                warn!(maildir = %root.display(), "no inotify watch on new/ ({e}); polling every {}s", POLL.as_secs());
            }
            Some(w)
        }
        Err(e) => {
            warn!(
                "inotify unavailable ({e}); polling the Maildir every {}s",
                POLL.as_secs()
            );
            None
        }
    };
    info!(maildir = %root.display(), "mail intake started");
    let mut failing = false;
    loop {
        health.busy();
        match waiting(&root) {
            Ok(files) => {
                for file in files {
                    if stop.is_cancelled() {
                        break;
                    }
                    health.busy();
                    let ctx_now = ctx.get();
                    match take_file(&store, &ctx_now, &root, &file).await {
                        Ok(outcome) => {
                            if failing {
                                info!("store reachable again; mail intake resumed");
                                failing = false;
                            }
                            match &outcome {
                                Outcome::Quarantined(why) => {
                                    warn!(file = %file.display(), "mail quarantined: {why}");
                                    let message = format!("{}: quarantined: {why}", file.display());
                                    if let Err(e) =
                                        store.record_error(&ctx_now.node, "intake", &message).await
                                    {
                                        warn!("cannot record the quarantine in the store: {e}");
                                    }
                                }
                                other => info!(file = %file.display(), "mail {}", other.describe()),
                            }
                        }
                        Err(e) => {
                            if !failing {
                                error!(error = %e, "cannot store intake mail; it stays in new/ until the store is back");
                                failing = true;
                            }
                            break;
                        }
                    }
                }
            }
            Err(e) => warn!(maildir = %root.display(), "cannot list new/: {e}"),
        }
        health.idle();
        tokio::select! {
            _ = stop.cancelled() => break,
            _ = wake.notified() => {}
            _ = tokio::time::sleep(POLL) => {}
        }
    }
    info!("mail intake stopped");
}

/// The intake Maildir as a source.
pub struct Maildir {
    root: PathBuf,
}

impl Maildir {
    pub fn new(root: PathBuf) -> Maildir {
        Maildir { root }
    }
}

impl crate::source::Source for Maildir {
    fn name(&self) -> &'static str {
        "mail intake"
    }

    fn run(self: Box<Self>, ctx: crate::source::SourceContext) -> crate::source::Running {
        Box::pin(async move {
            let _ = ctx.ready.send(());
            run(ctx.store, self.root, ctx.intake, ctx.cancel, ctx.health).await;
            Ok(())
        })
    }
}
