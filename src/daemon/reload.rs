//! What the daemon loads from its configuration, and SIGHUP: the new configuration, playbooks,
//! matcher, templates and escalator settings are all built and validated before anything is
//! replaced; on any error the running set stays, and the error is logged and recorded for
//! `csirt status`.

use crate::compose::{self, Composer};
use crate::config::{Config, Imap, Intake, Notify, Retention};
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
    /// The personal-information rules: a broken file refuses the start or the reload.
    pub pii_rules: crate::pii::rules::Rules,
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
            .with_networks(config.internal_networks())
            .with_exposed(config.exposed_hosts());
        let matcher = Matcher::new(playbooks.clone())
            .context("the playbooks' patterns do not compile together")?;
        // Templates in `<config dir>/templates/` replace the built-in ones.
        let dir = compose::template_dir(path);
        let composer = Composer::new(&config, &playbooks, dir.as_deref())?;
        let escalator = EscalatorConfig::from_config(&config)?;
        let pii_rules = config.pii_rules()?;
        Ok(Loaded {
            config,
            playbooks,
            pii_rules,
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

/// The keys changed between `old` and `new` that only a restart applies; everything else is
/// replaced by the reload itself. The list mirrors what `daemon::run` reads once at start: a
/// key read there and missing here would be ignored silently on SIGHUP, which is the trap this
/// function exists to close. So each section is taken apart field by field: a key added to
/// `[intake]`, `[notify]` or `[retention]` (no `..` there) does not compile until it is placed
/// here, as read at start (compared below) or reloaded (bound to `_`, with the reason); the
/// top level lists every public key, with `..` only for `Config`'s private derived fields.
/// The header of deploy/csirt.toml and the README list the same keys for the sysadmin.
pub fn restart_keys(old: &Config, new: &Config) -> Vec<RestartKey> {
    let Config {
        timezone,
        node,
        // Reloaded: the playbooks (and `[networks]` in them), contacts, templates and
        // schedules are all rebuilt by `Loaded::build`.
        playbooks: _,
        // Reloaded: the rules are read again (and every recorded incident recomputed under
        // them), the levels and the CISO group are the composer's and the recompute's.
        pii_rules: _,
        pii_ciso: _,
        levels: _,
        log_level,
        store,
        logs,
        journal,
        intake,
        notify,
        smtp,
        contacts: _,
        networks: _,
        schedule: _,
        retention,
        // The rest is private and derived from the keys above (secret sites, warnings).
        ..
    } = new;
    let mut keys = Vec::new();
    let mut check = |changed: bool, key: &'static str, until: &'static str| {
        if changed {
            keys.push(RestartKey { key, until });
        }
    };
    check(
        // `[store] window_keys` is applied by the reload (`Store::set_window_bound`).
        old.store.url != store.url,
        "[store] url",
        "the daemon keeps the store it has open",
    );
    check(
        old.logs != *logs,
        "[[logs]]",
        "the files watched now stay watched; the playbooks are reloaded now",
    );
    check(
        old.journal != *journal,
        "[[journal]]",
        "the journal sources started stay as they are; the playbooks are reloaded now",
    );
    let (old_maildir, old_imap) = intake_sources(old.intake.as_ref());
    let (maildir, imap) = intake_sources(intake.as_ref());
    check(
        old_maildir != maildir,
        "[intake] maildir",
        "the Maildir read now stays the one read; intake limits are reloaded now",
    );
    check(
        old_imap != imap,
        "[intake.imap]",
        "the IMAP connection keeps its server, account and mailbox",
    );
    let Notify {
        // Reloaded: recipients and the escalator's intervals are read from the live set.
        to: _,
        from,
        transport,
        dir,
        update_interval: _,
        // The outbox driver's limits, compared together through `rate_limit()` below.
        rate: _,
        rate_window: _,
        critical_rate: _,
        flood: _,
        retry_after,
        quarantine_notice: _,
    } = notify;
    check(
        old.notify.transport.get_ref() != transport.get_ref(),
        "[notify] transport",
        "mail leaves by the old transport; templates, recipients and escalations are reloaded now",
    );
    check(
        old.notify.dir != *dir,
        "[notify] dir",
        "the file transport writes to the old directory",
    );
    check(
        old.notify.from.get_ref() != from.get_ref(),
        "[notify] from",
        "the mailer keeps the old envelope sender",
    );
    check(
        old.notify.rate_limit() != notify.rate_limit() || old.notify.retry_after != *retry_after,
        "[notify] rate/rate_window/critical_rate/retry_after",
        "the outbox driver keeps the old values",
    );
    check(
        old.smtp != *smtp,
        "[smtp]",
        "mail goes to the old server with the old account and TLS settings",
    );
    let Retention {
        // Reloaded: housekeeping reads its spans from the live prune plan at each run.
        mails: _,
        quarantine: _,
        events: _,
        interval,
    } = retention;
    check(
        old.retention.interval != *interval,
        "[retention] interval",
        "housekeeping keeps running at the old interval; the retention spans are reloaded now",
    );
    check(
        old.node != *node,
        "node",
        "the daemon keeps reporting under its old name",
    );
    check(
        old.log_level != *log_level,
        "log_level",
        "logging keeps its level (RUST_LOG still wins)",
    );
    check(
        old.timezone != *timezone,
        "timezone",
        "log lines without a year are read in the old zone; mail and schedules use the new one",
    );
    keys
}

/// What of `[intake]` the sources read once at start: the Maildir and the IMAP account. The
/// rest (the parser's limits, `authserv_id`) reaches them through the live intake context.
fn intake_sources(intake: Option<&Intake>) -> (Option<&std::path::PathBuf>, Option<&Imap>) {
    match intake {
        Some(Intake {
            maildir,
            imap,
            max_size: _,
            max_parts: _,
            max_depth: _,
            authserv_id: _,
        }) => (maildir.as_ref(), imap.as_ref()),
        None => (None, None),
    }
}

/// Recomputes every incident with personal-information facts under the loaded rules (at the
/// start and after each reload): a rules edit reaches the recorded clocks, each change in its
/// incident's timeline by the rules file, and a report that became required raises and
/// announces its incident. A failure is logged and recorded; the next reload or start retries.
pub async fn recompute_pii(store: &Store, loaded: &Loaded, node: &str) {
    let rules = &loaded.pii_rules;
    let levels = loaded.config.levels();
    let policy = crate::store::pii::PiiPolicy {
        rules,
        levels: &levels,
        composer: Some(&loaded.composer),
    };
    match store.recompute_all_pii(&rules.actor(), &policy).await {
        Ok(done) => info!(
            pii_rules = %rules.path.display(),
            version = %rules.version,
            sha256 = %rules.short_hash(),
            incidents = done.incidents,
            changed = done.changed.len(),
            escalated = done.escalated.len(),
            "personal-information incidents recomputed under the rules"
        ),
        Err(e) => {
            let message = format!(
                "cannot recompute the personal-information incidents under {}: {e}",
                rules.path.display()
            );
            error!("{message}");
            if let Err(e) = store.record_error(node, "reload", &message).await {
                warn!(error = %e, "cannot record the error in the store");
            }
        }
    }
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
            // The rules file may be what was edited (a change of the law).
            recompute_pii(store, loaded, node).await;
            // An earlier refusal is fixed now: `csirt status` stops showing it.
            if let Err(e) = store.resolve_errors(node, "reload").await {
                warn!(error = %e, "cannot clear the earlier reload errors in the store");
            }
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

    /// `added` put into BASE: a top-level key before the first table, a table at the end.
    fn with(added: &str) -> String {
        if added.starts_with('[') {
            format!("{BASE}{added}")
        } else {
            format!("{added}{BASE}")
        }
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
            ("[retention]\ninterval = \"2h\"\n", "[retention] interval"),
            (
                "[[journal]]\nname = \"sshd\"\nmatches = [\"_COMM=sshd\"]\n",
                "[[journal]]",
            ),
            ("node = \"csirt02\"\n", "node"),
            ("log_level = \"debug\"\n", "log_level"),
            ("timezone = \"UTC\"\n", "timezone"),
        ];
        for (added, key) in cases {
            assert_eq!(keys(BASE, &with(added)), vec![key], "{added}");
        }
        let notify = [
            ("dir = \"/tmp/outbox\"", "dir = \"/srv/outbox\""),
            ("from = \"csirt@example.jp\"", "from = \"soc@example.jp\""),
            ("transport = \"file\"", "transport = \"sendmail\""),
        ];
        for (was, now) in notify {
            let key = format!("[notify] {}", was.split(' ').next().unwrap_or_default());
            assert_eq!(
                keys(BASE, &BASE.replace(was, now)),
                vec![key.as_str()],
                "{now}"
            );
        }
        for limit in [
            "rate = 5",
            "rate_window = \"1h\"",
            "critical_rate = 90",
            "retry_after = \"5m\"",
        ] {
            let new = BASE.replace("dir = ", &format!("{limit}\ndir = "));
            assert_eq!(
                keys(BASE, &new),
                vec!["[notify] rate/rate_window/critical_rate/retry_after"],
                "{limit}"
            );
        }
        let moved = BASE.replace("/var/log/auth.log", "/var/log/secure");
        assert_eq!(keys(BASE, &moved), vec!["[[logs]]"]);
        let store = BASE.replace("/tmp/csirt.db", "/srv/csirt.db");
        assert_eq!(keys(BASE, &store), vec!["[store] url"]);
    }

    /// The other half of the contract: a key the reload applies is not reported as needing a
    /// restart (a warning for it would teach the sysadmin to ignore the warnings).
    #[test]
    fn keys_the_reload_applies_are_not_named() {
        let cases = [
            "[contacts]\nduty = [\"duty@example.jp\"]\n",
            "[networks]\ninternal = [\"10.0.0.0/8\"]\n",
            "[retention]\nmails = \"30d\"\nquarantine = \"7d\"\nevents = \"90d\"\n",
            "[intake]\nmax_size = 1000\nmax_parts = 10\nmax_depth = 2\nauthserv_id = \"mx.example.jp\"\n",
            "[[schedule]]\nname = \"daily\"\ncron = \"0 0 9 * * Mon-Fri\"\nto = [\"duty@example.jp\"]\n",
            "playbooks = \"/srv/playbooks\"\n",
        ];
        for added in cases {
            assert!(keys(BASE, &with(added)).is_empty(), "{added}");
        }
        for (was, now) in [
            ("to = [\"duty@example.jp\"]", "to = [\"lead@example.jp\"]"),
            ("dir = ", "update_interval = \"1h\"\ndir = "),
            ("dir = ", "quarantine_notice = \"1h\"\ndir = "),
        ] {
            assert!(keys(BASE, &BASE.replace(was, now)).is_empty(), "{now}");
        }
    }

    #[test]
    fn intake_limits_are_reloaded_without_a_restart() {
        let old = format!("{BASE}[intake]\nmaildir = \"/srv/Maildir\"\n");
        let new = format!("{old}max_size = 1000000\n");
        assert!(keys(&old, &new).is_empty());
    }
}
