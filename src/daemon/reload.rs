//! What the daemon loads from its configuration, and SIGHUP: the new configuration, playbooks,
//! matcher, templates and escalator settings are all built and validated before anything is
//! replaced; on any error the running set stays, and the error is logged and recorded for
//! `csirt status`.

use crate::compose::{self, Composer};
use crate::config::Config;
use crate::live::Live;
use crate::notifier::EscalatorConfig;
use crate::playbook::matcher::Matcher;
use crate::playbook::{self, PlaybookSet};
use crate::store::Store;
use anyhow::Context;
use std::path::Path;
use std::sync::Arc;
use tracing::{error, info, warn};

/// Everything built from one configuration file.
pub struct Loaded {
    pub config: Config,
    pub playbooks: PlaybookSet,
    matcher: Arc<Matcher>,
    composer: Arc<Composer>,
    escalator: Arc<EscalatorConfig>,
}

impl Loaded {
    /// Builds and validates all of it from `config` (read from `path`).
    pub fn build(path: &Path, config: Config) -> anyhow::Result<Loaded> {
        config.check_secret_permissions(path)?;
        for warning in config.warnings() {
            warn!("{warning}");
        }
        let contacts = config.contacts.keys().cloned().collect();
        let playbooks = playbook::load(&config.playbooks, Some(&contacts))
            .with_context(|| format!("playbooks in {} refused", config.playbooks.display()))?
            .with_networks(config.internal_networks());
        let matcher = Matcher::new(playbooks.clone())
            .context("the playbooks' patterns do not compile together")?;
        // Templates in `<config dir>/templates/` replace the built-in ones.
        let dir = compose::template_dir(path);
        let composer = Composer::new(&config, &playbooks, dir.as_deref())?;
        let escalator = EscalatorConfig::from_config(&config)?;
        Ok(Loaded {
            config,
            playbooks,
            matcher: Arc::new(matcher),
            composer: Arc::new(composer),
            escalator: Arc::new(escalator),
        })
    }
}

/// What the running tasks read, replaced as a whole on reload.
#[derive(Clone)]
pub struct LiveSet {
    pub matcher: Live<Matcher>,
    pub composer: Live<Composer>,
    pub escalator: Live<EscalatorConfig>,
    pub intake: Live<crate::intake::Context>,
    /// Housekeeping's windows follow the playbooks; its retention spans follow the config.
    pub prune: Live<crate::store::prune::PrunePlan>,
}

impl LiveSet {
    pub fn new(loaded: &Loaded) -> LiveSet {
        LiveSet {
            matcher: Live::new(Arc::clone(&loaded.matcher)),
            composer: Live::new(Arc::clone(&loaded.composer)),
            escalator: Live::new(Arc::clone(&loaded.escalator)),
            intake: Live::new(intake_context(loaded)),
            prune: Live::new(prune_plan(loaded)),
        }
    }

    fn replace(&self, loaded: &Loaded) {
        self.intake.set(Arc::new(intake_context(loaded)));
        self.matcher.set(Arc::clone(&loaded.matcher));
        self.composer.set(Arc::clone(&loaded.composer));
        self.escalator.set(Arc::clone(&loaded.escalator));
        self.prune.set(Arc::new(prune_plan(loaded)));
    }
}

fn prune_plan(loaded: &Loaded) -> crate::store::prune::PrunePlan {
    crate::store::prune::PrunePlan::new(&loaded.config.retention, &loaded.playbooks, false)
}

fn intake_context(loaded: &Loaded) -> crate::intake::Context {
    crate::intake::Context::new(
        &loaded.config,
        &loaded.playbooks,
        Arc::clone(&loaded.composer),
    )
}

/// A configuration key that SIGHUP does not apply, and what the daemon keeps until a restart.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RestartKey {
    /// As the sysadmin writes it in csirt.toml, e.g. `[intake] maildir`.
    pub key: &'static str,
    pub until: &'static str,
}

/// The keys changed between `old` and `new` that only a restart applies. Everything else
/// (playbooks, contacts, templates, escalation, [notify] to and intervals, [intake] limits,
/// [networks], [[schedule]]) is replaced by the reload itself. The list mirrors what
/// `daemon::run` reads once at start: a key read there and missing here would be ignored
/// silently on SIGHUP, which is the trap this function exists to close. The header of
/// deploy/csirt.toml lists the same keys for the sysadmin.
pub fn restart_keys(old: &Config, new: &Config) -> Vec<RestartKey> {
    let mut keys = Vec::new();
    let mut check = |changed: bool, key: &'static str, until: &'static str| {
        if changed {
            keys.push(RestartKey { key, until });
        }
    };
    check(
        old.store.url != new.store.url,
        "[store] url",
        "the daemon keeps the store it has open",
    );
    check(
        old.logs != new.logs,
        "[[logs]]",
        "the files watched now stay watched; the playbooks are reloaded now",
    );
    check(
        old.journal != new.journal,
        "[[journal]]",
        "the journal sources started stay as they are; the playbooks are reloaded now",
    );
    let maildir = |c: &Config| c.intake.as_ref().and_then(|i| i.maildir.clone());
    check(
        maildir(old) != maildir(new),
        "[intake] maildir",
        "the Maildir read now stays the one read; intake limits are reloaded now",
    );
    let imap = |c: &Config| c.intake.as_ref().and_then(|i| i.imap.clone());
    check(
        imap(old) != imap(new),
        "[intake.imap]",
        "the IMAP connection keeps its server, account and mailbox",
    );
    check(
        old.notify.transport.get_ref() != new.notify.transport.get_ref(),
        "[notify] transport",
        "mail leaves by the old transport; templates, recipients and escalations are reloaded now",
    );
    check(
        old.notify.dir != new.notify.dir,
        "[notify] dir",
        "the file transport writes to the old directory",
    );
    check(
        old.notify.from.get_ref() != new.notify.from.get_ref(),
        "[notify] from",
        "the mailer keeps the old envelope sender",
    );
    check(
        old.notify.rate_limit() != new.notify.rate_limit()
            || old.notify.retry_after != new.notify.retry_after,
        "[notify] rate/rate_window/critical_rate/retry_after",
        "the outbox driver keeps the old values",
    );
    check(
        old.smtp != new.smtp,
        "[smtp]",
        "mail goes to the old server with the old account and TLS settings",
    );
    check(
        old.node != new.node,
        "node",
        "the daemon keeps reporting under its old name",
    );
    check(
        old.log_level != new.log_level,
        "log_level",
        "logging keeps its level (RUST_LOG still wins)",
    );
    check(
        old.timezone != new.timezone,
        "timezone",
        "log lines without a year are read in the old zone; mail and schedules use the new one",
    );
    keys
}

/// Validates the new config, playbooks and templates completely before replacing anything.
pub async fn reload(path: &Path, loaded: &mut Loaded, live: &LiveSet, store: &Store, node: &str) {
    info!(config = %path.display(), "SIGHUP received, reloading");
    let attempt = Config::load(path)
        .map_err(anyhow::Error::from)
        .and_then(|config| Loaded::build(path, config));
    match attempt {
        Ok(new) => {
            for key in restart_keys(&loaded.config, &new.config) {
                warn!(
                    key = key.key,
                    "{} changed: that takes a restart (systemctl restart csirt); {}",
                    key.key,
                    key.until
                );
            }
            live.replace(&new);
            store.set_window_bound(new.config.store.window_keys).await;
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

#[cfg(test)]
mod tests {
    use super::*;

    const BASE: &str = r#"
[store]
url = "sqlite:///tmp/csirt.db"
[[logs]]
paths = ["/var/log/auth.log"]
[notify]
to = ["duty@example.jp"]
from = "csirt@example.jp"
transport = "file"
dir = "/tmp/outbox"
"#;

    fn keys(old: &str, new: &str) -> Vec<&'static str> {
        let path = Path::new("csirt.toml");
        let old = Config::from_text(path, old).expect("old config");
        let new = Config::from_text(path, new).expect("new config");
        restart_keys(&old, &new).iter().map(|k| k.key).collect()
    }

    #[test]
    fn a_comment_that_moves_every_line_needs_no_restart() {
        assert!(keys(BASE, &format!("# moved\n\n{BASE}")).is_empty());
    }

    #[test]
    fn each_key_read_at_start_is_named() {
        let cases = [
            ("[intake]\nmaildir = \"/srv/Maildir\"\n", "[intake] maildir"),
            (
                "[intake.imap]\nhost = \"imap.example.jp\"\nusername = \"u\"\n",
                "[intake.imap]",
            ),
            ("[smtp]\nhost = \"mail.example.jp\"\n", "[smtp]"),
            ("node = \"csirt02\"\n", "node"),
            ("log_level = \"debug\"\n", "log_level"),
        ];
        for (added, key) in cases {
            // Top-level keys must precede the first table.
            let new = if added.starts_with('[') {
                format!("{BASE}{added}")
            } else {
                format!("{added}{BASE}")
            };
            assert_eq!(keys(BASE, &new), vec![key], "{added}");
        }
        let moved = BASE.replace("/var/log/auth.log", "/var/log/secure");
        assert_eq!(keys(BASE, &moved), vec!["[[logs]]"]);
        let sendmail = BASE.replace("transport = \"file\"", "transport = \"sendmail\"");
        assert_eq!(keys(BASE, &sendmail), vec!["[notify] transport"]);
    }

    #[test]
    fn intake_limits_are_reloaded_without_a_restart() {
        let old = format!("{BASE}[intake]\nmaildir = \"/srv/Maildir\"\n");
        let new = format!("{old}max_size = 1000000\n");
        assert!(keys(&old, &new).is_empty());
    }
}
