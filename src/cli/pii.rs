//! `csirt incidents pii|reported|export` and `list --overdue`: personal-information incidents
//! under 個人情報保護法 and 番号法. The decisions are `pii::assess`'s, the rules the config's
//! `pii_rules` (or the built-in); this module parses, calls the store and renders lines, which
//! `output` sanitises and prints.

use super::output::{Output, Table};
use super::{Cli, load_config, open_store};
use crate::compose::{Composer, template_dir};
use crate::model::{Actor, now};
use crate::pii::form::{self, Known};
use crate::pii::rules::Rules;
use crate::pii::{Assessment, Clock, ClockState, Edit, Facts, Flag, Kind, Party, assess, yes_no};
use crate::store::pii::{NewReport, PiiPolicy, PiiRecord};
use crate::text::{long_time, remaining};
use chrono::{DateTime, Utc};
use chrono_tz::Tz;
use clap::{Args, ValueEnum};
use serde::Serialize;
use std::process::ExitCode;

/// `csirt incidents pii`.
#[derive(Args, Debug)]
pub struct PiiArgs {
    /// The incident (none with --recompute-all)
    #[arg(value_parser = super::parse_id, required_unless_present = "recompute_all")]
    pub id: Option<i64>,
    /// How many persons' information leaked or may have (本人の数)
    #[arg(long, value_name = "N", value_parser = clap::value_parser!(i64).range(0..))]
    pub persons: Option<i64>,
    /// It includes 要配慮個人情報
    #[arg(long, conflicts_with = "no_sensitive")]
    pub sensitive: bool,
    #[arg(long, hide_short_help = true)]
    pub no_sensitive: bool,
    /// Its misuse may cause financial damage (財産的被害のおそれ)
    #[arg(long, conflicts_with = "no_financial")]
    pub financial: bool,
    #[arg(long, hide_short_help = true)]
    pub no_financial: bool,
    /// It may have been done with 不正の目的 (unauthorised access, theft): 確報 in 60 days
    #[arg(long, conflicts_with = "no_malicious")]
    pub malicious: bool,
    #[arg(long, hide_short_help = true)]
    pub no_malicious: bool,
    /// It includes 条例要配慮個人情報
    #[arg(long, conflicts_with = "no_ordinance_sensitive")]
    pub ordinance_sensitive: bool,
    #[arg(long, hide_short_help = true)]
    pub no_ordinance_sensitive: bool,
    /// It includes 特定個人情報 (マイナンバー)
    #[arg(long, conflicts_with = "no_mynumber")]
    pub mynumber: bool,
    #[arg(long, hide_short_help = true)]
    pub no_mynumber: bool,
    /// It was protected by strong encryption (高度な暗号化): no report required
    #[arg(long, conflicts_with = "no_encrypted")]
    pub encrypted: bool,
    #[arg(long, hide_short_help = true)]
    pub no_encrypted: bool,
    /// When the city (any department) learned of it (覚知), e.g. "2026-12-01 09:30" in the
    /// configured time zone or RFC 3339; default: now, on the first change
    #[arg(long, value_name = "TIME")]
    pub aware_at: Option<String>,
    /// Make a fact unknown (未確認) again: persons, sensitive, financial, malicious,
    /// ordinance_sensitive, mynumber, encrypted (repeatable)
    #[arg(long, value_name = "FACT")]
    pub unset: Vec<String>,
    /// Recompute the clocks under the current rules file (after a change of the law) even when
    /// no fact changes
    #[arg(long)]
    pub recompute: bool,
    /// Recompute every incident with recorded facts under the current rules file (the daemon
    /// does it at start and on reload): each change is in its timeline by the rules file
    #[arg(long, conflicts_with_all = [
        "id", "persons", "sensitive", "no_sensitive", "financial", "no_financial", "malicious",
        "no_malicious", "ordinance_sensitive", "no_ordinance_sensitive", "mynumber",
        "no_mynumber", "encrypted", "no_encrypted", "aware_at", "unset", "recompute",
    ])]
    pub recompute_all: bool,
    /// Print one JSON object
    #[arg(long)]
    pub json: bool,
}

/// `--to`.
#[derive(ValueEnum, Clone, Copy, Debug)]
pub enum PartyArg {
    Ppc,
    Police,
    Prefecture,
    Nco,
    Jpcert,
    Ipa,
    Person,
}

/// `--kind`.
#[derive(ValueEnum, Clone, Copy, Debug)]
pub enum KindArg {
    #[value(name = "速報")]
    Preliminary,
    #[value(name = "確報")]
    Final,
    #[value(name = "届出")]
    Filing,
    #[value(name = "通知")]
    Notice,
}

/// `csirt incidents reported`.
#[derive(Args, Debug)]
pub struct ReportedArgs {
    #[arg(value_parser = super::parse_id)]
    pub id: i64,
    /// To whom (person: the persons concerned were notified)
    #[arg(long, value_enum)]
    pub to: PartyArg,
    /// Which report: 速報, 確報, 届出 or 通知
    #[arg(long, value_enum)]
    pub kind: KindArg,
    /// The receipt number or reference the other side gave (one line)
    #[arg(long = "ref", value_name = "REF", value_parser = parse_line)]
    pub reference: Option<String>,
    /// When it was made (default: now)
    #[arg(long, value_name = "TIME")]
    pub at: Option<String>,
    /// A note for the timeline
    #[arg(long, value_parser = super::parse_text)]
    pub note: Option<String>,
}

/// `--form`.
#[derive(ValueEnum, Clone, Copy, Debug)]
pub enum FormArg {
    Ppc,
    Common,
}

/// `--format`.
#[derive(ValueEnum, Clone, Copy, Debug, Default)]
pub enum FormatArg {
    #[default]
    Text,
    Json,
}

/// `csirt incidents export`.
#[derive(Args, Debug)]
pub struct ExportArgs {
    #[arg(value_parser = super::parse_id)]
    pub id: i64,
    /// ppc: 個人情報保護委員会の漏えい等報告; common: DDoS・ランサムウェア事案の共通様式
    #[arg(long, value_enum)]
    pub form: FormArg,
    #[arg(long, value_enum, default_value = "text")]
    pub format: FormatArg,
}

impl From<PartyArg> for Party {
    fn from(p: PartyArg) -> Party {
        match p {
            PartyArg::Ppc => Party::Ppc,
            PartyArg::Police => Party::Police,
            PartyArg::Prefecture => Party::Prefecture,
            PartyArg::Nco => Party::Nco,
            PartyArg::Jpcert => Party::Jpcert,
            PartyArg::Ipa => Party::Ipa,
            PartyArg::Person => Party::Person,
        }
    }
}

impl From<KindArg> for Kind {
    fn from(k: KindArg) -> Kind {
        match k {
            KindArg::Preliminary => Kind::Preliminary,
            KindArg::Final => Kind::Final,
            KindArg::Filing => Kind::Filing,
            KindArg::Notice => Kind::Notice,
        }
    }
}

/// One line of free text: a reference goes into a form field, where a line break has no place.
fn parse_line(s: &str) -> Result<String, String> {
    if s.contains(['\n', '\r']) {
        return Err("must be one line".into());
    }
    super::parse_text(s)
}

impl PiiArgs {
    /// The edits the flags ask for, `--unset` last.
    fn edits(&self, tz: Tz) -> anyhow::Result<Vec<Edit>> {
        let mut edits = Vec::new();
        if let Some(n) = self.persons {
            edits.push(Edit::Persons(Some(n)));
        }
        let pairs = [
            (Flag::Sensitive, self.sensitive, self.no_sensitive),
            (Flag::Financial, self.financial, self.no_financial),
            (Flag::Malicious, self.malicious, self.no_malicious),
            (
                Flag::OrdinanceSensitive,
                self.ordinance_sensitive,
                self.no_ordinance_sensitive,
            ),
            (Flag::Mynumber, self.mynumber, self.no_mynumber),
            (Flag::Encrypted, self.encrypted, self.no_encrypted),
        ];
        for (flag, yes, no) in pairs {
            if yes || no {
                edits.push(Edit::Flag(flag, Some(yes)));
            }
        }
        if let Some(at) = &self.aware_at {
            edits.push(Edit::AwareAt(Some(past_time(at, tz, "--aware-at")?)));
        }
        for name in &self.unset {
            edits.push(match name.as_str() {
                "persons" => Edit::Persons(None),
                other => Edit::Flag(
                    other.parse::<Flag>().map_err(|e| {
                        anyhow::anyhow!("--unset: {e}; persons too (覚知 cannot be unset, only moved with --aware-at)")
                    })?,
                    None,
                ),
            });
        }
        Ok(edits)
    }
}

/// `--json` of `pii` and the `pii` member of `show --json`.
#[derive(Serialize)]
pub(super) struct PiiJson<'a> {
    facts: Option<&'a Facts>,
    ppc_required: bool,
    person_notice_required: bool,
    decisions: &'a [crate::pii::Decision],
    clocks: Vec<ClockJson<'a>>,
    reports: &'a [crate::pii::ReportMade],
}

#[derive(Serialize)]
struct ClockJson<'a> {
    #[serde(flatten)]
    clock: &'a Clock,
    state: ClockState,
}

/// The decision on what is recorded, under the current rules, with the stored clocks.
pub(super) struct View {
    pub record: PiiRecord,
    pub assessment: Option<Assessment>,
}

impl View {
    pub(super) fn new(record: PiiRecord, rules: Option<&Rules>) -> View {
        let assessment = match (&record.facts, rules) {
            (Some(facts), Some(rules)) => Some(assess(facts, rules, &record.reports)),
            _ => None,
        };
        View { record, assessment }
    }

    pub(super) fn json(&self, now: DateTime<Utc>) -> PiiJson<'_> {
        PiiJson {
            facts: self.record.facts.as_ref(),
            ppc_required: self.record.clocks.iter().any(|c| c.to == Party::Ppc),
            person_notice_required: self.record.clocks.iter().any(|c| c.to == Party::Person),
            decisions: self
                .assessment
                .as_ref()
                .map_or(&[][..], |a| &a.decisions[..]),
            clocks: self
                .record
                .clocks
                .iter()
                .map(|c| ClockJson {
                    clock: c,
                    state: c.state(now),
                })
                .collect(),
            reports: &self.record.reports,
        }
    }

    /// The section `show` and `pii` print: facts, decision, reports required / made / overdue.
    pub(super) fn lines(&self, tz: Tz, now: DateTime<Utc>) -> Vec<String> {
        let mut lines = vec!["個人情報 (personal information):".to_string()];
        let Some(facts) = &self.record.facts else {
            lines.push(
                "  事実は未記録 (record them: csirt incidents pii 番号 --persons N …)".into(),
            );
            return lines;
        };
        lines.push(format!(
            "  覚知日時: {}",
            facts
                .aware_at
                .map_or_else(|| "未確認".into(), |t| long_time(t, tz))
        ));
        lines.push(format!(
            "  本人の数: {}",
            facts
                .persons
                .map_or_else(|| "未確認".into(), |n| format!("{n}人"))
        ));
        for flag in Flag::ALL {
            lines.push(format!(
                "  {}: {}",
                flag.label_ja(),
                yes_no(facts.flag(flag))
            ));
        }
        if let Some(a) = &self.assessment {
            lines.push("  判断 (decision):".into());
            for d in &a.decisions {
                lines.push(format!("    {}: {} [{}]", d.name, d.verdict_ja(), d.source));
                for r in &d.reasons {
                    lines.push(format!("      {} ({})", r.text, r.source));
                }
                if !d.waiting_for.is_empty() {
                    lines.push(format!(
                        "      未確認の事実 (判断が変わりうる): {}",
                        d.waiting_for.join("、")
                    ));
                }
            }
        }
        lines.push("  必要な報告・通知 (reports required):".into());
        if self.record.clocks.is_empty() {
            lines.push("    なし".into());
        }
        for c in &self.record.clocks {
            lines.push(format!("    {}", clock_line(c, tz, now)));
            lines.push(format!("      根拠: {}", c.source));
        }
        lines.push("  報告・通知の記録 (reports made):".into());
        if self.record.reports.is_empty() {
            lines.push("    なし".into());
        }
        for r in &self.record.reports {
            let mut line = format!(
                "    {}  {} {}  [{}]",
                long_time(r.at, tz),
                r.to.label_ja(),
                r.kind,
                r.actor
            );
            if let Some(reference) = &r.reference {
                line.push_str(&format!("  受付番号等: {reference}"));
            }
            lines.push(line);
            if let Some(note) = &r.note {
                lines.extend(note.lines().map(|l| format!("      {l}")));
            }
        }
        lines
    }
}

/// `【期限超過】 個人情報保護委員会への速報 → 個人情報保護委員会 速報: 期限 … (1日超過)`.
fn clock_line(c: &Clock, tz: Tz, now: DateTime<Utc>) -> String {
    let state = c.state(now);
    let when = match (state, c.due_at, c.done_at) {
        (ClockState::Done, _, Some(done)) => format!("{} に済", long_time(done, tz)),
        (_, Some(due), _) => format!("期限 {} ({})", long_time(due, tz), remaining(due, now)),
        (_, None, _) => format!(
            "速やかに (予告 {}{})",
            long_time(c.warn_at, tz),
            if now >= c.warn_at { "、経過" } else { "" }
        ),
    };
    format!(
        "【{}】 {} → {} {}: {when}",
        state.label_ja(),
        c.name,
        c.to.label_ja(),
        c.kind
    )
}

/// A time that has passed: a 覚知 or a report in the future is a typo (a wrong year, a wrong
/// zone) that would put every statutory clock late, so it is refused. A few minutes of slack
/// allow for a workstation's clock.
fn past_time(s: &str, tz: Tz, flag: &str) -> anyhow::Result<DateTime<Utc>> {
    let at = crate::pii::parse_time(s, tz).map_err(|e| anyhow::anyhow!("{flag}: {e}"))?;
    if at > now() + chrono::TimeDelta::minutes(5) {
        anyhow::bail!(
            "{flag}: {} is in the future (a typo would make every statutory deadline late)",
            long_time(at, tz)
        );
    }
    Ok(at)
}

/// The rules, or the error that says which line of which file is wrong.
fn rules(config: &crate::config::Config) -> anyhow::Result<Rules> {
    Ok(config.pii_rules()?)
}

/// What the commands that change facts or reports judge and announce by.
struct Policy {
    rules: Rules,
    levels: crate::level::Levels,
    composer: Option<Composer>,
}

impl Policy {
    /// The config's rules and levels, and a composer for the CISO group's mail when the config
    /// can address it. Without a config file (only `--database`) there is nobody to address:
    /// the daemon's escalator writes that mail. Neither do broken templates stop the command
    /// (the daemon has the last good ones): the mail is left to the daemon, which says so.
    fn of(path: &std::path::Path, config: &crate::config::Config) -> anyhow::Result<Policy> {
        let composer = if config.notify.to.get_ref().is_empty() {
            None
        } else {
            let contacts = config.contacts.keys().cloned().collect();
            // Steps in the mail need the playbooks; without them the mail still goes.
            let playbooks =
                crate::playbook::load(&config.playbooks, Some(&contacts)).unwrap_or_default();
            match Composer::new(config, &playbooks, template_dir(path).as_deref()) {
                Ok(composer) => Some(composer),
                Err(e) => {
                    eprintln!(
                        "csirt: warning: {}: the CISO's mail, if one is due, is left to the daemon",
                        crate::text::sanitize(&e.to_string())
                    );
                    None
                }
            }
        };
        Ok(Policy {
            rules: rules(config)?,
            levels: config.levels(),
            composer,
        })
    }

    fn store(&self) -> PiiPolicy<'_> {
        PiiPolicy {
            rules: &self.rules,
            levels: &self.levels,
            composer: self.composer.as_ref(),
        }
    }
}

/// `csirt incidents pii`: records what changed (nothing: only shows) and prints the decision.
pub(super) async fn pii(cli: &Cli, args: &PiiArgs) -> anyhow::Result<ExitCode> {
    let (path, config) = load_config(cli)?;
    let policy = Policy::of(&path, &config)?;
    let Some(id) = args.id else {
        return recompute_all(&config, &policy, args.json).await;
    };
    let edits = args.edits(config.timezone)?;
    let store = open_store(&config).await?;
    let mut out = Output::stdout(config.timezone);
    store.incident(id).await?;
    if !edits.is_empty() || args.recompute {
        let actor = Actor::current_user();
        let change = store.set_pii(id, &edits, &actor, &policy.store()).await?;
        if !args.json {
            if change.changes.is_empty() {
                out.line(&format!("#{id} 変更はありません (no change)"))?;
            } else {
                out.line(&format!(
                    "#{id} の個人情報の事実を記録しました (pii recorded) [{}]",
                    actor.as_str()
                ))?;
            }
            escalation_lines(&mut out, &change.escalation)?;
        }
    }
    let rules = &policy.rules;
    let view = View::new(store.pii(id).await?, Some(rules));
    let now = now();
    if args.json {
        out.json(&view.json(now))?;
    } else {
        for line in view.lines(config.timezone, now) {
            out.line(&line)?;
        }
    }
    Ok(ExitCode::SUCCESS)
}

/// What a required report to 個人情報保護委員会 did now, under the command's own line.
fn escalation_lines(out: &mut Output, lines: &[String]) -> std::io::Result<()> {
    for line in lines {
        out.line(&format!("  【引き上げ】{line}"))?;
    }
    Ok(())
}

/// `--recompute-all --json`.
#[derive(Serialize)]
struct RecomputedJson<'a> {
    rules: RulesJson<'a>,
    #[serde(flatten)]
    done: &'a crate::store::pii::Recomputed,
}

#[derive(Serialize)]
struct RulesJson<'a> {
    path: String,
    version: &'a str,
    sha256: &'a str,
}

/// `csirt incidents pii --recompute-all`: every incident with facts, under the current rules,
/// recorded in each timeline as the rules file's doing.
async fn recompute_all(
    config: &crate::config::Config,
    policy: &Policy,
    json: bool,
) -> anyhow::Result<ExitCode> {
    let store = open_store(config).await?;
    let rules = &policy.rules;
    let done = store
        .recompute_all_pii(&rules.actor(), &policy.store())
        .await?;
    let mut out = Output::stdout(config.timezone);
    if json {
        out.json(&RecomputedJson {
            rules: RulesJson {
                path: rules.path.display().to_string(),
                version: &rules.version,
                sha256: &rules.sha256,
            },
            done: &done,
        })?;
        return Ok(ExitCode::SUCCESS);
    }
    out.line(&format!(
        "規則 {} (version {}, sha256 {}) で、個人情報の事実を記録したインシデント {} 件を見直しました (recomputed)",
        rules.path.display(),
        rules.version,
        rules.short_hash(),
        done.incidents
    ))?;
    for id in &done.changed {
        out.line(&format!("  #{id} 期限を再計算 (経過に記録)"))?;
    }
    for id in &done.escalated {
        out.line(&format!(
            "  #{id} 個人情報保護委員会への報告が必要: L3 に引き上げ、CISO に通知"
        ))?;
    }
    let unchanged = done.incidents - done.changed.len();
    out.line(&format!("  変更なし (unchanged): {unchanged} 件"))?;
    Ok(ExitCode::SUCCESS)
}

/// `csirt incidents reported`.
pub(super) async fn reported(cli: &Cli, args: &ReportedArgs) -> anyhow::Result<ExitCode> {
    let (path, config) = load_config(cli)?;
    let policy = Policy::of(&path, &config)?;
    let at = match &args.at {
        Some(t) => past_time(t, config.timezone, "--at")?,
        None => now(),
    };
    let report = NewReport {
        to: args.to.into(),
        kind: args.kind.into(),
        reference: args.reference.clone(),
        at,
        note: args.note.clone(),
    };
    let store = open_store(&config).await?;
    let actor = Actor::current_user();
    let change = store
        .record_report(args.id, &report, &actor, &policy.store())
        .await?;
    let mut out = Output::stdout(config.timezone);
    out.line(&format!(
        "#{} {}への{}を記録しました (reported) [{}]",
        args.id,
        report.to.label_ja(),
        report.kind,
        actor.as_str()
    ))?;
    let stopped: Vec<&Clock> = change
        .assessment
        .clocks
        .iter()
        .filter(|c| c.to == report.to && c.kind == report.kind)
        .collect();
    if stopped.is_empty() {
        out.line("  (この報告で止まる法定の期限はありません)")?;
    }
    for c in stopped {
        out.line(&format!("  期限を停止: {}", c.name))?;
    }
    escalation_lines(&mut out, &change.escalation)?;
    Ok(ExitCode::SUCCESS)
}

/// `csirt incidents export`.
pub(super) async fn export(cli: &Cli, args: &ExportArgs) -> anyhow::Result<ExitCode> {
    let (_, config) = load_config(cli)?;
    let rules = rules(&config)?;
    let store = open_store(&config).await?;
    let incident = store.incident(args.id).await?;
    let view = View::new(store.pii(args.id).await?, Some(&rules));
    let known = Known {
        incident: &incident,
        facts: view.record.facts.as_ref(),
        assessment: view.assessment.as_ref(),
        reports: &view.record.reports,
        tz: config.timezone,
    };
    let form = match args.form {
        FormArg::Ppc => form::ppc(&known),
        FormArg::Common => form::common(&known),
    };
    let mut out = Output::stdout(config.timezone);
    match args.format {
        FormatArg::Json => out.json(&form)?,
        FormatArg::Text => {
            for line in form::text(&form) {
                out.line(&line)?;
            }
        }
    }
    Ok(ExitCode::SUCCESS)
}

/// `--overdue --json`: each incident with its pending clocks.
#[derive(Serialize)]
struct OverdueJson<'a> {
    #[serde(flatten)]
    incident: super::incidents::IncidentJson<'a>,
    clocks: Vec<ClockJson<'a>>,
}

/// `csirt incidents list --overdue`: the morning check.
pub(super) async fn overdue(cli: &Cli, json: bool) -> anyhow::Result<ExitCode> {
    let (_, config) = load_config(cli)?;
    let store = open_store(&config).await?;
    let now = now();
    let pending = store.pending_pii(now).await?;
    let levels = config.levels();
    let mut out = Output::stdout(config.timezone);
    if json {
        let items: Vec<OverdueJson<'_>> = pending
            .iter()
            .map(|(incident, clocks)| OverdueJson {
                incident: super::incidents::IncidentJson::new(incident, &levels),
                clocks: clocks
                    .iter()
                    .map(|c| ClockJson {
                        clock: c,
                        state: c.state(now),
                    })
                    .collect(),
            })
            .collect();
        out.json(&items)?;
        return Ok(ExitCode::SUCCESS);
    }
    if pending.is_empty() {
        out.line("期限超過・期限間近の報告はありません (no report overdue or due)")?;
        return Ok(ExitCode::SUCCESS);
    }
    let mut table = Table::new(vec!["ID", "状態", "期限", "報告", "件名"], 4);
    for (incident, clocks) in &pending {
        for c in clocks {
            table.row(vec![
                format!("#{}", incident.id),
                c.state(now).label_ja().to_string(),
                c.due_at.map_or_else(
                    || "速やかに".to_string(),
                    |d| {
                        format!(
                            "{} ({})",
                            crate::text::short_time(d, config.timezone),
                            remaining(d, now)
                        )
                    },
                ),
                format!("{} {}", c.to.label_ja(), c.kind),
                incident.title.clone(),
            ]);
        }
    }
    out.table(&table)?;
    Ok(ExitCode::SUCCESS)
}
