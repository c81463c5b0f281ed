//! `csirt playbooks …`: list and validate the playbook set.

use super::output::{Output, Table, sanitize};
use super::{Cli, PlaybooksCommand, load_config};
use crate::playbook::{self, PlaybookSet};
use serde::Serialize;
use std::collections::BTreeSet;
use std::process::ExitCode;

#[derive(Serialize)]
struct PlaybookJson<'a> {
    id: &'a str,
    title: &'a str,
    category: &'a str,
    severity: crate::model::Severity,
    rules: usize,
    steps: usize,
    escalations: usize,
    deadlines: usize,
    path: String,
}

pub(super) async fn run(cli: &Cli, command: &PlaybooksCommand) -> anyhow::Result<ExitCode> {
    match command {
        PlaybooksCommand::List { json } => {
            let (_, config) = load_config(cli)?;
            let set = playbook::load(&config.playbooks, Some(&contact_names(&config)))?;
            let mut out = Output::stdout(config.timezone);
            if *json {
                out.json(&to_json(&set))?;
            } else {
                let mut table = Table::new(vec!["ID", "重要度", "分類", "ルール", "件名"], 4);
                for p in set.iter() {
                    table.row(vec![
                        p.id.clone(),
                        p.severity.label_ja().into(),
                        p.category.clone(),
                        p.rules.len().to_string(),
                        p.title.clone(),
                    ]);
                }
                out.table(&table)?;
            }
            Ok(ExitCode::SUCCESS)
        }
        PlaybooksCommand::Check { path } => {
            // With an explicit PATH the config is optional: it only adds the check that
            // escalation targets exist in [contacts].
            let (dir, config) = match path {
                Some(p) => (p.clone(), load_config(cli).ok().map(|(_, c)| c)),
                None => {
                    let (_, c) = load_config(cli)?;
                    (c.playbooks.clone(), Some(c))
                }
            };
            let contacts = config.as_ref().map(contact_names);
            let tz = config.map_or(chrono_tz::Asia::Tokyo, |c| c.timezone);
            match playbook::load(&dir, contacts.as_ref()) {
                Ok(set) => {
                    Output::stdout(tz).line(&format!(
                        "{}: {} playbooks OK",
                        dir.display(),
                        set.len()
                    ))?;
                    Ok(ExitCode::SUCCESS)
                }
                Err(errors) => Ok(report(&errors)),
            }
        }
    }
}

/// Prints each playbook error as `file:line: message` on stderr, where editors and CI pick
/// them up, and a one-line count.
pub(super) fn report(errors: &playbook::PlaybookErrors) -> ExitCode {
    for e in &errors.0 {
        eprintln!("{}", sanitize(&e.to_string()));
    }
    eprintln!(
        "csirt: {} playbook error(s); nothing was loaded",
        errors.0.len()
    );
    ExitCode::FAILURE
}

fn contact_names(config: &crate::config::Config) -> BTreeSet<String> {
    config.contacts.keys().cloned().collect()
}

fn to_json(set: &PlaybookSet) -> Vec<PlaybookJson<'_>> {
    set.iter()
        .map(|p| PlaybookJson {
            id: &p.id,
            title: &p.title,
            category: &p.category,
            severity: p.severity,
            rules: p.rules.len(),
            steps: p.steps.len(),
            escalations: p.escalations.len(),
            deadlines: p.deadlines.len(),
            path: p.path.display().to_string(),
        })
        .collect()
}
