//! `csirt db migrate` and `csirt config check`: what a sysadmin runs when installing.

use super::output::Output;
use super::{Cli, load_config};
use crate::compose::{Composer, template_dir};
use crate::config::{Config, Transport};
use crate::store::prune::PrunePlan;
use crate::store::{Role, Store};
use std::process::ExitCode;

pub(super) async fn migrate(cli: &Cli) -> anyhow::Result<ExitCode> {
    let (_, config) = load_config(cli)?;
    let store = Store::open(&config.store.url, Role::Migrate).await?;
    let before = store.schema_version().await?;
    let after = store.migrate().await?;
    let message = if before.applied == after.applied {
        format!(
            "{}: schema already at version {}",
            store.url(),
            after.applied
        )
    } else {
        format!(
            "{}: schema migrated from version {} to {}",
            store.url(),
            before.applied,
            after.applied
        )
    };
    Output::stdout(config.timezone).line(&message)?;
    Ok(ExitCode::SUCCESS)
}

/// `csirt db prune`: one housekeeping run, with the windows of the configured playbooks (a
/// playbook set that does not load is an error: without the windows nothing below a threshold
/// can be judged expired).
pub(super) async fn prune(cli: &Cli, dry_run: bool, json: bool) -> anyhow::Result<ExitCode> {
    let (_, config) = load_config(cli)?;
    let contacts = config.contacts.keys().cloned().collect();
    let playbooks = match crate::playbook::load(&config.playbooks, Some(&contacts)) {
        Ok(set) => set,
        Err(errors) => return Ok(super::playbooks::report(&errors)),
    };
    let store = Store::open(&config.store.url, Role::Cli).await?;
    store.ensure_schema_current().await?;
    let plan = PrunePlan::new(&config.retention, &playbooks, dry_run);
    let counts = store.prune(&plan, crate::model::now()).await?;
    Output::stdout(config.timezone).pruned(&counts, dry_run, json)?;
    Ok(ExitCode::SUCCESS)
}

pub(super) async fn config_check(cli: &Cli) -> anyhow::Result<ExitCode> {
    let (path, config) = load_config(cli)?;
    config.check_secret_permissions(&path)?;
    // Warnings are diagnostics: stderr, so that stdout stays what the config does.
    for warning in config.warnings() {
        eprintln!("csirt: warning: {}", crate::text::sanitize(warning));
    }
    let contacts = config.contacts.keys().cloned().collect();
    let playbooks = match crate::playbook::load(&config.playbooks, Some(&contacts)) {
        Ok(set) => set,
        Err(errors) => return Ok(super::playbooks::report(&errors)),
    };
    for warning in crate::coverage::warnings(&config, &playbooks) {
        eprintln!("csirt: warning: {}", crate::text::sanitize(&warning));
    }
    let templates = template_dir(&path);
    Composer::new(&config, &playbooks, templates.as_deref())?;
    let pii_rules = config.pii_rules()?;
    let mut out = Output::stdout(config.timezone);
    for line in describe(&path, &config, playbooks.len()) {
        out.line(&line)?;
    }
    out.line(&match templates {
        Some(dir) => format!("templates: {} (replacing the built-in ones)", dir.display()),
        None => "templates: built-in".into(),
    })?;
    out.line(&pii_rules_line(&pii_rules))?;
    let levels = config.levels();
    let mapped: Vec<String> = crate::model::Severity::ALL
        .iter()
        .rev()
        .map(|s| format!("{s} {}", levels.of(*s)))
        .collect();
    out.line(&format!(
        "levels: {} (a required report to 個人情報保護委員会 raises to {} at least)",
        mapped.join(", "),
        levels.floor(crate::level::Level::L3)
    ))?;
    out.line(&match config.pii_ciso() {
        Some(group) => format!(
            "pii ciso: {group} ({})",
            config.resolve_recipients(group).join(", ")
        ),
        None => "pii ciso: none ([notify] to only)".into(),
    })?;
    Ok(ExitCode::SUCCESS)
}

/// `pii rules: PATH (version V): N duties OK`, for `config check` and `playbooks check`.
pub(super) fn pii_rules_line(rules: &crate::pii::rules::Rules) -> String {
    format!(
        "pii rules: {} (version {}): {} duties OK",
        rules.path.display(),
        rules.version,
        rules.duties.len()
    )
}

/// What the daemon would do with this config, line by line.
fn describe(path: &std::path::Path, config: &Config, playbooks: usize) -> Vec<String> {
    let mut lines = vec![
        format!("{}: OK", path.display()),
        format!("node: {}", config.node_name()),
        format!("timezone: {}", config.timezone),
        format!("store: {}", config.store.url),
        format!(
            "playbooks: {} ({playbooks} loaded)",
            config.playbooks.display()
        ),
    ];
    if config.logs.is_empty() {
        lines.push("logs: none configured".into());
    }
    for source in &config.logs {
        for pattern in &source.paths {
            let pattern = pattern.get_ref();
            let matched: Vec<String> = glob::glob(pattern)
                .map(|paths| {
                    paths
                        .filter_map(Result::ok)
                        .map(|p| p.display().to_string())
                        .collect()
                })
                .unwrap_or_default();
            let start = match source.start_at {
                crate::config::StartAt::End => "from the end",
                crate::config::StartAt::Beginning => "from the beginning",
            };
            if matched.is_empty() {
                lines.push(format!(
                    "logs: {pattern}: no file yet (files that appear are read from the beginning)"
                ));
            } else {
                lines.push(format!(
                    "logs: {pattern}: {} file(s), existing ones read {start}",
                    matched.len()
                ));
                lines.extend(matched.iter().take(20).map(|m| format!("  {m}")));
                if matched.len() > 20 {
                    lines.push(format!("  … and {} more", matched.len() - 20));
                }
            }
        }
    }
    match config.intake.as_ref().and_then(|i| i.maildir.as_ref()) {
        Some(maildir) => lines.push(format!("intake: Maildir {}", maildir.display())),
        None => lines.push("intake: no Maildir (csirt intake on stdin still works)".into()),
    }
    let to: Vec<String> = config
        .notify
        .to
        .get_ref()
        .iter()
        .map(|t| t.get_ref().clone())
        .collect();
    let transport = match config.notify.transport.get_ref() {
        Transport::File => format!(
            "file under {}",
            config
                .notify
                .dir
                .as_ref()
                .map_or_else(|| "?".into(), |d| d.display().to_string())
        ),
        Transport::Sendmail => "sendmail".into(),
        Transport::Smtp => config
            .smtp
            .as_ref()
            .map_or_else(|| "smtp".into(), |s| format!("smtp {}:{}", s.host, s.port)),
    };
    lines.push(format!(
        "notify: {} → {} via {transport}",
        config.notify.from.get_ref(),
        to.join(", ")
    ));
    for schedule in &config.schedule {
        let next = schedule
            .parsed()
            .ok()
            .and_then(|s| s.upcoming(config.timezone).next())
            .map_or_else(
                || "never".into(),
                |t| t.format("%Y-%m-%d %H:%M %Z").to_string(),
            );
        let to: Vec<String> = schedule
            .to
            .get_ref()
            .iter()
            .map(|t| t.get_ref().clone())
            .collect();
        let what = match (schedule.kind, schedule.report_period()) {
            (crate::config::ScheduleKind::Digest, _) => "digest",
            (crate::config::ScheduleKind::Report, crate::config::ReportPeriod::Month) => {
                "report of the last month"
            }
            (crate::config::ScheduleKind::Report, crate::config::ReportPeriod::FiscalYear) => {
                "report of the last fiscal year"
            }
        };
        lines.push(format!(
            "schedule: {} ({what}, {}) → {}; next {next}",
            schedule.name.get_ref(),
            schedule.cron_text().unwrap_or(""),
            to.join(", ")
        ));
    }
    lines
}
