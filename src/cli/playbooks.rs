//! `csirt playbooks …`: list and validate the playbook set.

use super::output::{Output, Table};
use super::{Cli, EncodingArg, ImportCommand, PlaybooksCommand, load_config};
use crate::engine::{DryIncident, DryRun, Hit, dedupe_key};
use crate::model::{Fields, now};
use crate::playbook::matcher::Matcher;
use crate::playbook::{self, PlaybookSet};
use crate::source::logfile::{Line, Start, Tail};
use crate::source::logs::MAX_LINE;
use crate::text::{sanitize, short_time};
use anyhow::Context;
use serde::Serialize;
use std::borrow::Cow;
use std::collections::{BTreeMap, BTreeSet};
use std::path::Path;
use std::process::ExitCode;

#[derive(Serialize)]
struct PlaybookJson<'a> {
    id: &'a str,
    title: &'a str,
    category: &'a str,
    severity: crate::model::Severity,
    /// The city's level of its severity (the config's `[levels]`).
    level: crate::level::Level,
    rules: usize,
    /// The file-name globs its log rules read (`*`: every file); empty for mail-only ones.
    files: Vec<String>,
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
                out.json(&to_json(&set, &config.levels()))?;
            } else {
                let mut table = Table::new(
                    vec![
                        "ID",
                        "重要度",
                        "レベル",
                        "分類",
                        "ルール",
                        "読むファイル",
                        "件名",
                    ],
                    6,
                );
                for p in set.iter() {
                    let files = p.file_globs();
                    table.row(vec![
                        p.id.clone(),
                        p.severity.label_ja().into(),
                        config.levels().of(p.severity).to_string(),
                        p.category.clone(),
                        p.rules.len().to_string(),
                        if files.is_empty() {
                            "(メールのみ)".into()
                        } else {
                            files.join(" ")
                        },
                        p.title.clone(),
                    ]);
                }
                out.table(&table)?;
            }
            Ok(ExitCode::SUCCESS)
        }
        PlaybooksCommand::Test {
            playbook,
            logfile,
            encoding,
            json,
        } => dry_run(cli, playbook, logfile, *encoding, *json),
        PlaybooksCommand::Import(ImportCommand::Fail2ban {
            paths,
            jail,
            mode,
            out,
            json,
        }) => import_fail2ban(paths, jail.as_deref(), mode.clone(), out, *json),
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
            let tz = config
                .as_ref()
                .map_or(chrono_tz::Asia::Tokyo, |c| c.timezone);
            // The personal-information rules are checked with the set: a change of the law is
            // an edit that CI should catch as a playbook edit is.
            let rules = config.as_ref().map(|c| c.pii_rules()).transpose();
            match (playbook::load(&dir, contacts.as_ref()), rules) {
                (Ok(set), Ok(rules)) => {
                    let mut out = Output::stdout(tz);
                    out.line(&format!("{}: {} playbooks OK", dir.display(), set.len()))?;
                    if let Some(rules) = rules {
                        out.line(&super::admin::pii_rules_line(&rules))?;
                    }
                    Ok(ExitCode::SUCCESS)
                }
                (Err(errors), _) => Ok(report(&errors)),
                (Ok(_), Err(e)) => {
                    eprintln!("{}", sanitize(&e.to_string()));
                    Ok(ExitCode::FAILURE)
                }
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

/// `playbooks test --json`.
#[derive(Serialize)]
struct DryRunJson<'a> {
    playbook: &'a str,
    file: String,
    lines: u64,
    matched: u64,
    truncated: u64,
    rules: BTreeMap<&'a str, u64>,
    matches: Vec<MatchJson<'a>>,
    /// Lines of raising rules (a login after failures): not failures, listed apart.
    raises: Vec<MatchJson<'a>>,
    incidents: &'a [DryIncident],
    /// Lines on which a backtracking rule reached its step limit (counted as no match), by
    /// `playbook/rule`.
    step_limit: BTreeMap<String, u64>,
}

#[derive(Serialize)]
struct MatchJson<'a> {
    line: u64,
    rule: &'a str,
    fields: Fields,
    /// When the line says it happened (RFC 3339, UTC): the time its hit is counted at.
    time: chrono::DateTime<chrono::Utc>,
}

/// The playbook argument that means the whole set.
const ALL: &str = "all";

/// The dry run: every line of `logfile` through one playbook's log rules (whatever their
/// `files` globs say) and the in-memory correlation, nothing stored.
fn dry_run(
    cli: &Cli,
    id_or_path: &str,
    logfile: &Path,
    encoding: EncodingArg,
    json: bool,
) -> anyhow::Result<ExitCode> {
    let config = load_config(cli).ok().map(|(_, c)| c);
    let tz = config
        .as_ref()
        .map_or(chrono_tz::Asia::Tokyo, |c| c.timezone);
    let as_path = Path::new(id_or_path);
    let set = if as_path.is_file() {
        match playbook::load(as_path, None) {
            Ok(set) => set,
            Err(errors) => return Ok(report(&errors)),
        }
    } else {
        let config = config.as_ref().context(format!("`{id_or_path}` is not a playbook file, and without a config there is no playbook set to find it in"))?;
        let one = if id_or_path == ALL {
            None
        } else {
            playbook::load_one(&config.playbooks, id_or_path, None)
                .ok()
                .flatten()
        };
        match one.map_or_else(|| playbook::load(&config.playbooks, None), Ok) {
            Ok(set) => set,
            Err(errors) => return Ok(report(&errors)),
        }
    };
    let set = set
        .with_networks(config.as_ref().and_then(|c| c.internal_networks()))
        .with_exposed(config.as_ref().and_then(|c| c.exposed_hosts()));
    let matcher = Matcher::new(set)?;
    let id = if as_path.is_file() {
        matcher
            .playbooks()
            .iter()
            .next()
            .map(|p| p.id.clone())
            .unwrap_or_default()
    } else {
        id_or_path.to_string()
    };
    // `all`: the whole set, as the daemon applies it to a file of this name (`files` globs).
    let rules = if id == ALL {
        matcher.rules_for(logfile)
    } else {
        let Some(rules) = matcher.rules_of(&id) else {
            let known: Vec<&str> = matcher.playbooks().iter().map(|p| p.id.as_str()).collect();
            anyhow::bail!(
                "no playbook `{id}` (known: {}, or `{ALL}`)",
                known.join(", ")
            );
        };
        rules
    };
    // Syslog dates have no year: an old file's lines are placed by the file's own time (its
    // last write), not by today, or last December's lines would land in this December.
    let reference = std::fs::metadata(logfile)
        .and_then(|m| m.modified())
        .map(chrono::DateTime::<chrono::Utc>::from)
        .unwrap_or_else(|_| now());
    let mut tail = Tail::open(logfile, Start::Beginning, MAX_LINE)
        .with_context(|| format!("cannot read {}", logfile.display()))?;
    let mut matched = 0u64;
    let mut per_rule: BTreeMap<&str, u64> = BTreeMap::new();
    let mut matches_json = Vec::new();
    let mut raises_json = Vec::new();
    let mut dry = DryRun::default();
    let mut found = Vec::new();
    let mut sessions = crate::playbook::session::Sessions::default();
    let source = logfile.display().to_string();
    let mut on_line = |line: Line<'_>| {
        let text: Cow<'_, str> = match encoding {
            EncodingArg::Utf8 => crate::text::utf8_lossy(line.bytes),
            EncodingArg::ShiftJis => {
                encoding_rs::SHIFT_JIS
                    .decode_without_bom_handling(line.bytes)
                    .0
            }
        };
        let structure = matcher.structure(&rules, &text);
        matcher.scan_in_session(&rules, &text, structure, &mut sessions, &mut found);
        if found.is_empty() {
            return;
        }
        if found.iter().any(|m| m.rule.raise.is_none()) {
            matched += 1;
        }
        let mut observed_at = None;
        for m in found.drain(..) {
            let rule = m.rule;
            *per_rule.entry(rule.name.as_str()).or_default() += 1;
            // A login (a raising rule) of an address with no failure before it raises nothing:
            // counted, not made into a hit (monitoring accounts log in all day).
            if !json
                && rule.raise.is_some()
                && !dry.knows(&m.playbook.id, &dedupe_key(&m.playbook.dedupe, &m.fields))
            {
                continue;
            }
            let locator = line.line_no.to_string();
            let at = m
                .stamp
                .and_then(|s| s.resolve(tz, reference))
                .unwrap_or_else(|| {
                    *observed_at
                        .get_or_insert_with(|| crate::timestamp::line_time(&text, tz, reference))
                });
            let hit = Hit::of_log_match(m, source.clone(), locator, at, String::new());
            dry.add(&hit);
            if json {
                let found = MatchJson {
                    line: line.line_no,
                    rule: rule.name.as_str(),
                    fields: hit.fields,
                    time: at,
                };
                if rule.raise.is_some() {
                    raises_json.push(found);
                } else {
                    matches_json.push(found);
                }
            }
        }
    };
    let wanted = rules.raw_filter();
    while tail.read_lines_where(4 << 20, wanted, &mut on_line)? > 0 {}
    tail.finish(&mut on_line);
    // Lines passed over by the filter were never handed out: the reader counted them.
    let lines = tail.checkpoint().line_no;
    let truncated = tail.truncated_lines;
    let step_limit: BTreeMap<String, u64> = matcher.step_limit_reached().into_iter().collect();
    let mut out = Output::stdout(tz);
    if json {
        out.json(&DryRunJson {
            playbook: &id,
            file: source,
            lines,
            matched,
            truncated,
            rules: per_rule,
            matches: matches_json,
            raises: raises_json,
            incidents: &dry.incidents,
            step_limit,
        })?;
        return Ok(ExitCode::SUCCESS);
    }
    let share = if lines == 0 {
        0.0
    } else {
        100.0 * matched as f64 / lines as f64
    };
    out.line(&format!(
        "{}: {lines} lines, {matched} matched ({share:.2}%), {} missed",
        source,
        lines - matched
    ))?;
    if truncated > 0 {
        out.line(&format!(
            "{truncated} lines longer than {} KiB were cut",
            MAX_LINE / 1024
        ))?;
    }
    for (rule, n) in &step_limit {
        out.line(&format!(
            "{rule}: {n} 行で後戻りの上限 ({} 歩) に達し、一致なしとした (step limit reached on {n} lines, counted as no match)",
            crate::playbook::backtrack::STEP_LIMIT
        ))?;
    }
    let mut table = Table::new(vec!["ルール (rule)", "一致 (matches)"], 0);
    let shown: Vec<&crate::playbook::Playbook> = if id == ALL {
        matcher.playbooks().iter().collect()
    } else {
        vec![matcher.playbooks().get(&id).context("playbook vanished")?]
    };
    for playbook in shown {
        for rule in &playbook.rules {
            let name = if id == ALL {
                format!("{}/{}", playbook.id, rule.name)
            } else {
                rule.name.clone()
            };
            table.row(vec![
                name,
                per_rule
                    .get(rule.name.as_str())
                    .copied()
                    .unwrap_or(0)
                    .to_string(),
            ]);
        }
    }
    out.table(&table)?;
    out.line(&format!(
        "起票されるインシデント (incidents that would open): {}",
        dry.incidents.len()
    ))?;
    let mut table = Table::new(vec!["件数", "初回", "最終", "重複判定キー", "件名"], 4);
    for i in &dry.incidents {
        table.row(vec![
            i.event_count.to_string(),
            short_time(i.first_seen, tz),
            short_time(i.last_seen, tz),
            i.dedupe_key.clone(),
            i.title.clone(),
        ]);
    }
    if !dry.incidents.is_empty() {
        out.table(&table)?;
    }
    Ok(ExitCode::SUCCESS)
}

fn contact_names(config: &crate::config::Config) -> BTreeSet<String> {
    config.contacts.keys().cloned().collect()
}

fn to_json<'a>(set: &'a PlaybookSet, levels: &crate::level::Levels) -> Vec<PlaybookJson<'a>> {
    set.iter()
        .map(|p| PlaybookJson {
            id: &p.id,
            title: &p.title,
            category: &p.category,
            severity: p.severity,
            level: levels.of(p.severity),
            rules: p.rules.len(),
            files: p.file_globs(),
            steps: p.steps.len(),
            escalations: p.escalations.len(),
            deadlines: p.deadlines.len(),
            path: p.path.display().to_string(),
        })
        .collect()
}

/// One filter in `playbooks import fail2ban --json`.
#[derive(Serialize)]
struct ImportJson<'a> {
    filter: &'a str,
    /// `imported` or `left out`.
    status: &'static str,
    id: Option<&'a str>,
    file: Option<String>,
    mode: Option<&'a str>,
    rules: usize,
    backtracking: usize,
    left_out: &'a [String],
    notes: &'a [String],
    reason: Option<&'a str>,
    /// The rules' `files` globs (empty: every file of `[[logs]]`).
    files: Vec<String>,
    /// The `[[journal]]` source the rules read, when the jail reads the journal.
    journal: Option<JournalJson<'a>>,
}

/// The `[[journal]]` an imported playbook needs in the config.
#[derive(Serialize)]
struct JournalJson<'a> {
    name: &'a str,
    matches: &'a [String],
}

/// `csirt playbooks import fail2ban`: each filter made into a playbook file in `out`, or left
/// out with the reason. A file is written only after it passed the playbook check, and only over
/// a file that an import wrote (its first line says so), never over a hand-written playbook.
fn import_fail2ban(
    paths: &[std::path::PathBuf],
    jail: Option<&Path>,
    mode: Option<String>,
    out_dir: &Path,
    json: bool,
) -> anyhow::Result<ExitCode> {
    use crate::playbook::fail2ban::{self, Outcome, emit::HEADER};
    let jails = jail
        .map(|path| {
            fail2ban::jail::Jails::read(path)
                .map_err(|e| anyhow::anyhow!("{}: {e}", path.display()))
        })
        .transpose()?;
    let settings = fail2ban::Settings { mode, jails };
    let mut files = Vec::new();
    for path in paths {
        files.extend(
            fail2ban::filter_files(path)
                .with_context(|| format!("cannot read {}", path.display()))?,
        );
    }
    std::fs::create_dir_all(out_dir)
        .with_context(|| format!("cannot create {}", out_dir.display()))?;
    let mut outcomes = Vec::new();
    for file in &files {
        let outcome = match fail2ban::import(file, &settings) {
            Outcome::Imported(imported) => {
                let target = out_dir.join(format!("{}.toml", imported.id));
                match write_imported(&target, &imported.toml, HEADER) {
                    Ok(()) => (Outcome::Imported(imported), Some(target)),
                    Err(reason) => (
                        Outcome::LeftOut {
                            filter: imported.filter.clone(),
                            reason,
                        },
                        None,
                    ),
                }
            }
            left_out => (left_out, None),
        };
        outcomes.push(outcome);
    }
    let imported = outcomes
        .iter()
        .filter(|(o, _)| matches!(o, Outcome::Imported(_)))
        .count();
    let mut out = Output::stdout(chrono_tz::Asia::Tokyo);
    if json {
        let list: Vec<ImportJson<'_>> = outcomes
            .iter()
            .map(|(o, file)| match o {
                Outcome::Imported(i) => ImportJson {
                    filter: &i.filter,
                    status: "imported",
                    id: Some(&i.id),
                    file: file.as_ref().map(|f| f.display().to_string()),
                    mode: i.mode.as_deref(),
                    rules: i.rules,
                    backtracking: i.backtracking,
                    left_out: &i.left_out,
                    notes: &i.notes,
                    reason: None,
                    files: i.logs.files(),
                    journal: match &i.logs {
                        fail2ban::Logs::Journal { source, matches } => Some(JournalJson {
                            name: source,
                            matches,
                        }),
                        _ => None,
                    },
                },
                Outcome::LeftOut { filter, reason } => ImportJson {
                    filter,
                    status: "left out",
                    id: None,
                    file: None,
                    mode: None,
                    rules: 0,
                    backtracking: 0,
                    left_out: &[],
                    notes: &[],
                    reason: Some(reason),
                    files: Vec::new(),
                    journal: None,
                },
            })
            .collect();
        out.json(&list)?;
    } else {
        for (o, file) in &outcomes {
            match o {
                Outcome::Imported(i) => {
                    out.line(&sanitize(&format!(
                        "{}: 取り込み (imported) → {} ({} rules, {} backtracking, mode {})",
                        i.filter,
                        file.as_ref()
                            .map_or(String::new(), |f| f.display().to_string()),
                        i.rules,
                        i.backtracking,
                        i.mode.as_deref().unwrap_or("normal")
                    )))?;
                    out.line(&sanitize(&format!("  {}", logs_line(&i.logs))))?;
                    for why in &i.left_out {
                        out.line(&sanitize(&format!("  除外 (left out) {why}")))?;
                    }
                    for note in &i.notes {
                        out.line(&sanitize(&format!("  注意 (note) {note}")))?;
                    }
                }
                Outcome::LeftOut { filter, reason } => {
                    out.line(&sanitize(&format!("{filter}: 除外 (left out): {reason}")))?;
                }
            }
        }
        out.line(&format!(
            "{imported} of {} filters imported into {}, {} left out",
            outcomes.len(),
            out_dir.display(),
            outcomes.len() - imported
        ))?;
    }
    Ok(if imported > 0 || outcomes.is_empty() {
        ExitCode::SUCCESS
    } else {
        ExitCode::FAILURE
    })
}

/// What an imported playbook reads, for the importer's output.
fn logs_line(logs: &crate::playbook::fail2ban::Logs) -> String {
    use crate::playbook::fail2ban::Logs;
    match logs {
        Logs::Every { why } => format!(
            "読むログ (files): 設定の [[logs]] のすべて ({why}: the rules have no files and read every file of [[logs]]; --jail で jail の logpath を読ませられます)"
        ),
        Logs::Files { globs, logpath } => format!(
            "読むログ (files): {} (jail の logpath: {})",
            globs.join(", "),
            logpath.join(", ")
        ),
        Logs::Journal { source, matches } => format!(
            "読むログ (files): {source} (jail は backend = systemd: 設定に [[journal]] name = \"{source}\", matches = [{}] を書いてください)",
            matches
                .iter()
                .map(|m| format!("\"{m}\""))
                .collect::<Vec<_>>()
                .join(", ")
        ),
    }
}

/// Writes an imported playbook (through a temporary file and a rename), unless `target` exists
/// and was not written by an import.
fn write_imported(target: &Path, text: &str, header: &str) -> Result<(), String> {
    if let Ok(existing) = std::fs::read_to_string(target)
        && !existing.starts_with(header)
    {
        return Err(format!(
            "{} exists and is not an imported playbook (its first line is not `{header}`); not overwritten",
            target.display()
        ));
    }
    let name = target
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_default();
    let temporary = target.with_file_name(format!(".{name}.tmp"));
    std::fs::write(&temporary, text)
        .and_then(|()| std::fs::rename(&temporary, target))
        .map_err(|e| format!("cannot write {}: {e}", target.display()))
}
