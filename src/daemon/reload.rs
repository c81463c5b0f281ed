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

/// Validates the new config, playbooks and templates completely before replacing anything.
pub async fn reload(path: &Path, loaded: &mut Loaded, live: &LiveSet, store: &Store, node: &str) {
    info!(config = %path.display(), "SIGHUP received, reloading");
    let attempt = Config::load(path)
        .map_err(anyhow::Error::from)
        .and_then(|config| Loaded::build(path, config));
    match attempt {
        Ok(new) => {
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
            let journals = |c: &Config| {
                c.journal
                    .iter()
                    .map(|j| {
                        let matches: Vec<String> =
                            j.matches.iter().map(|m| m.get_ref().clone()).collect();
                        (j.name.get_ref().clone(), matches, j.directory.clone())
                    })
                    .collect::<Vec<_>>()
            };
            if journals(&new.config) != journals(&loaded.config) {
                warn!(
                    "[[journal]] changed: journal sources take a restart; the playbooks are reloaded now"
                );
            }
            if new.config.notify.transport.get_ref() != loaded.config.notify.transport.get_ref() {
                warn!(
                    "[notify] transport changed: that takes a restart; templates, recipients and escalations are reloaded now"
                );
            }
            live.replace(&new);
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
