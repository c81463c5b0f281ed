//! Logging setup: human-readable lines on stderr, level from `RUST_LOG`, else the config, else
//! the command's default. (journald output arrives with the systemd issue, #6.)

use tracing_subscriber::EnvFilter;

/// Installs the global subscriber. `default` applies when neither `RUST_LOG` nor `configured`
/// gives a level.
pub fn init(configured: Option<&str>, default: &str) {
    let filter = EnvFilter::try_from_default_env()
        .or_else(|_| EnvFilter::try_new(configured.unwrap_or(default)))
        .unwrap_or_else(|_| EnvFilter::new(default));
    let _ = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .with_ansi(
            std::io::IsTerminal::is_terminal(&std::io::stderr())
                && std::env::var_os("NO_COLOR").is_none(),
        )
        .try_init();
}
