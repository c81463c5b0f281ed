//! `csirt incidents …`: what a responder types to see and handle incidents.

use super::output::Output;
use super::{Cli, IncidentsCommand, load_config, open_store};
use crate::model::{Action, Actor, Incident, now};
use crate::store::IncidentFilter;
use serde::Serialize;
use std::process::ExitCode;

/// An incident as `list --json` prints it: its fields, and the city's level beside its severity.
#[derive(Serialize)]
pub(super) struct IncidentJson<'a> {
    #[serde(flatten)]
    incident: &'a Incident,
    /// `L0` … `L3` (the config's `[levels]`).
    level: crate::level::Level,
}

impl<'a> IncidentJson<'a> {
    pub(super) fn new(incident: &'a Incident, levels: &crate::level::Levels) -> Self {
        IncidentJson {
            incident,
            level: levels.of(incident.severity),
        }
    }
}

/// `incidents show --json`: the incident object with its context, so `jq .id` works on both
/// `list` items and `show`.
#[derive(Serialize)]
struct Detail<'a> {
    #[serde(flatten)]
    incident: IncidentJson<'a>,
    /// The playbook's steps with the incident's fields filled in.
    steps: Vec<String>,
    deadlines: Vec<DeadlineJson<'a>>,
    events: Vec<crate::model::Event>,
    timeline: Vec<crate::model::TimelineEntry>,
    /// Personal-information facts, decision, statutory clocks and reports made.
    pii: super::pii::PiiJson<'a>,
}

#[derive(Serialize)]
struct DeadlineJson<'a> {
    name: &'a str,
    due: chrono::DateTime<chrono::Utc>,
}

pub(super) async fn run(cli: &Cli, command: &IncidentsCommand) -> anyhow::Result<ExitCode> {
    let (_, config) = load_config(cli)?;
    let store = open_store(&config).await?;
    let mut out = Output::stdout(config.timezone);
    let (id, action) = match command {
        IncidentsCommand::List {
            status,
            severity,
            playbook,
            since,
            limit,
            overdue,
            json,
        } => {
            if *overdue {
                return super::pii::overdue(cli, *json).await;
            }
            let filter = IncidentFilter {
                status: status.map(Into::into),
                severity: severity.map(Into::into),
                playbook: playbook.clone(),
                seen_since: since.map(|s| now() - s.to_chrono()),
                limit: *limit,
            };
            let incidents = store.list(&filter).await?;
            let levels = config.levels();
            if *json {
                let items: Vec<IncidentJson<'_>> = incidents
                    .iter()
                    .map(|i| IncidentJson::new(i, &levels))
                    .collect();
                out.json(&items)?
            } else {
                out.incidents(&incidents, &levels)?
            }
            return Ok(ExitCode::SUCCESS);
        }
        IncidentsCommand::Show { id, json } => {
            let incident = store.incident(*id).await?;
            let (events, timeline) = (store.events(*id).await?, store.timeline(*id).await?);
            // The decision's reasons come from the rules; a broken rules file must not hide the
            // incident either (its stored clocks still show).
            let rules = config.pii_rules().ok();
            let pii = super::pii::View::new(store.pii(*id).await?, rules.as_ref());
            let now = now();
            // Steps come from the playbook files; an unloadable set must not hide the incident.
            let playbooks = crate::playbook::load(&config.playbooks, None).ok();
            let playbook = playbooks
                .as_ref()
                .and_then(|set| set.get(&incident.playbook));
            if *json {
                out.json(&Detail {
                    incident: IncidentJson::new(&incident, &config.levels()),
                    steps: playbook.map_or_else(Vec::new, |p| {
                        p.steps
                            .iter()
                            .map(|s| crate::engine::fill_step(s, &incident.fields))
                            .collect()
                    }),
                    deadlines: playbook.map_or_else(Vec::new, |p| {
                        p.deadlines
                            .iter()
                            .map(|d| DeadlineJson {
                                name: &d.name,
                                due: incident.opened_at + d.within.to_chrono(),
                            })
                            .collect()
                    }),
                    events,
                    timeline,
                    pii: pii.json(now),
                })?;
            } else {
                out.incident(
                    &incident,
                    &config.levels(),
                    playbook,
                    &events,
                    &timeline,
                    now,
                )?;
                // Only where personal information was recorded: an SSH scan needs no section.
                if pii.record.facts.is_some() || !pii.record.reports.is_empty() {
                    out.line("")?;
                    for line in pii.lines(config.timezone, now) {
                        out.line(&line)?;
                    }
                }
            }
            return Ok(ExitCode::SUCCESS);
        }
        IncidentsCommand::Ack { id } => (*id, Action::Acknowledge),
        IncidentsCommand::Assign { id, user } => (*id, Action::Assign(user.clone())),
        IncidentsCommand::Note { id, text } => (*id, Action::Note(text.clone())),
        IncidentsCommand::Close {
            id,
            resolution,
            note,
        } => (
            *id,
            Action::Close {
                resolution: (*resolution).into(),
                note: note.clone(),
            },
        ),
        IncidentsCommand::Reopen { id } => (*id, Action::Reopen),
        IncidentsCommand::Pii(args) => return super::pii::pii(cli, args).await,
        IncidentsCommand::Reported(args) => return super::pii::reported(cli, args).await,
        IncidentsCommand::Export(args) => return super::pii::export(cli, args).await,
    };
    let actor = Actor::current_user();
    let incident = store.apply(id, &action, &actor).await?;
    out.line(&confirmation(&incident, &action, &actor))?;
    Ok(ExitCode::SUCCESS)
}

/// One line saying what changed, in the responders' language.
fn confirmation(i: &Incident, action: &Action, actor: &Actor) -> String {
    let what = match action {
        Action::Acknowledge => "を受付けました (acknowledged)".to_string(),
        Action::Assign(user) => format!("の担当を {user} にしました (assigned)"),
        Action::Note(_) => "にメモを追加しました (note added)".to_string(),
        Action::Close { resolution, .. } => {
            format!(
                "をクローズしました: {} (closed: {resolution})",
                resolution.label_ja()
            )
        }
        Action::Reopen => "を再オープンしました (reopened)".to_string(),
    };
    format!("#{} {what} [{}] {}", i.id, actor.as_str(), i.title)
}
