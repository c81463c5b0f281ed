//! Logging setup: to journald with structured fields when systemd connected our stderr to the
//! journal (`JOURNAL_STREAM`), human-readable lines on stderr otherwise. The level comes from
//! `RUST_LOG`, else the config, else the command's default.

use tracing_subscriber::EnvFilter;
use tracing_subscriber::layer::SubscriberExt;
use tracing_subscriber::util::SubscriberInitExt;

/// Installs the global subscriber. `default` applies when neither `RUST_LOG` nor `configured`
/// gives a level.
pub fn init(configured: Option<&str>, default: &str) {
    let filter = EnvFilter::try_from_default_env()
        .or_else(|_| EnvFilter::try_new(configured.unwrap_or(default)))
        .unwrap_or_else(|_| EnvFilter::new(default));
    if stderr_is_journal() {
        match tracing_journald::layer() {
            Ok(journald) => {
                // Event fields arrive upper-cased behind the layer's F_ prefix (F_INCIDENT=,
                // F_PLAYBOOK=, F_PATH=), which keeps them clear of journald's own fields such
                // as MESSAGE_ID=: `journalctl -u csirt F_INCIDENT=42`.
                let journald = journald.with_syslog_identifier("csirt".into());
                let _ = tracing_subscriber::registry()
                    .with(filter)
                    .with(journald)
                    .try_init();
                return;
            }
            Err(e) => eprintln!("csirt: journald unavailable ({e}); logging to stderr"),
        }
    }
    let _ = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .with_ansi(
            std::io::IsTerminal::is_terminal(&std::io::stderr())
                && std::env::var_os("NO_COLOR").is_none(),
        )
        .try_init();
}

/// Whether stderr is the journal stream systemd named in `JOURNAL_STREAM` (`DEVICE:INODE`): the
/// variable is inherited by children whose stderr goes elsewhere, so it must match our fd 2.
fn stderr_is_journal() -> bool {
    let Some(stream) = std::env::var_os("JOURNAL_STREAM") else {
        return false;
    };
    let Some((dev, ino)) = stream.to_str().and_then(|s| s.split_once(':')) else {
        return false;
    };
    let Ok(stat) = nix::sys::stat::fstat(std::io::stderr()) else {
        return false;
    };
    dev.parse::<u64>().ok() == Some(stat.st_dev) && ino.parse::<u64>().ok() == Some(stat.st_ino)
}
