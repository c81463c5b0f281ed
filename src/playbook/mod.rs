//! Playbooks: the city's incident types as TOML files, loaded and validated as a whole set.
//!
//! A playbook that is wrong in any way is refused with `file:line: message` before anything runs;
//! `load_dir` reports every error of every file, not only the first, so that one
//! `csirt playbooks check` run shows everything to fix. Loading never touches the store.

pub mod backtrack;
pub mod cidr;
pub mod cut;
pub mod fail2ban;
pub mod line;
pub mod matcher;
pub mod prefix;
pub mod session;

use crate::duration::Span;
use crate::model::Severity;
use crate::toml_file::{self, Location, TomlError};
use regex::{Regex, RegexBuilder};
use serde::Deserialize;
use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};
use toml::Spanned;

/// Compiled size cap for an analyst-written pattern: generous for real rules, small enough that
/// a pasted 10,000-alternative blocklist is refused at load rather than eating memory.
const REGEX_SIZE_LIMIT: usize = 2 << 20;

/// Fields every mail hit carries, available to mail rules' titles and dedupe keys.
pub const MAIL_FIELDS: [&str; 3] = ["subject", "from", "message_id"];

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct PlaybookFile {
    id: Spanned<String>,
    title: Spanned<String>,
    category: Spanned<String>,
    severity: Severity,
    #[serde(default)]
    description: Option<String>,
    #[serde(default)]
    dedupe: Vec<Spanned<String>>,
    #[serde(default, rename = "rule")]
    rules: Vec<Spanned<RuleFile>>,
    #[serde(default, rename = "step")]
    steps: Vec<Spanned<StepFile>>,
    #[serde(default, rename = "escalation")]
    escalations: Vec<Spanned<EscalationFile>>,
    #[serde(default, rename = "deadline")]
    deadlines: Vec<DeadlineFile>,
    /// Lines matching any of these patterns are not hits of this playbook.
    #[serde(default)]
    ignore: Vec<Spanned<String>>,
    /// Hits whose address fields fall in these ranges are ignored (the city's own networks).
    #[serde(default)]
    ignore_cidrs: Vec<Spanned<String>>,
    /// Severity by where the address is, against the config's `[networks]`.
    #[serde(default)]
    context: Option<Context>,
}

/// Severity by context: an incident whose `field` address is in the config's `[networks]
/// internal` ranges takes `internal`, any other `external`, and an external one escalates at
/// most `external_levels` levels (0: the duty list only, in its mails and digests). Applies
/// only where the config names its networks; without `[networks]` the playbook's severity
/// stands. A raising rule (a login after failures) still goes to critical and the last level.
///
/// An account that exists: a hit of a rule marked `account_exists` (sshd writes `Failed
/// password for U` only for an account the host has, `… for invalid user U` otherwise) from
/// outside takes `existing_account` and escalates in full, unless the account is one of
/// `common_accounts`, the names every host has and every scanner tries (`root`): guessing those
/// says nothing about the attacker knowing the city.
#[derive(Deserialize, Debug, Clone, PartialEq, Eq)]
#[serde(deny_unknown_fields)]
pub struct Context {
    #[serde(default = "ip_field")]
    pub field: String,
    pub internal: Severity,
    pub external: Severity,
    #[serde(default)]
    pub external_levels: Option<u32>,
    #[serde(default)]
    pub existing_account: Option<Severity>,
    /// The field that names the account (`user`).
    #[serde(default = "user_field")]
    pub account_field: String,
    #[serde(default = "common_accounts")]
    pub common_accounts: Vec<String>,
    /// From outside, against a host that the config's `[networks] exposed` does not name (a
    /// server that should not be reachable from the internet): the perimeter let it through.
    #[serde(default)]
    pub unexposed: Option<Severity>,
}

fn ip_field() -> String {
    "ip".into()
}

fn user_field() -> String {
    "user".into()
}

fn common_accounts() -> Vec<String> {
    vec!["root".into()]
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RuleFile {
    #[serde(default)]
    name: Option<String>,
    source: RuleSource,
    #[serde(default)]
    files: Vec<Spanned<String>>,
    /// Only this program's syslog (or journal) lines, by its tag: a name or a glob, or a list.
    #[serde(default)]
    program: Option<Spanned<OneOrMany>>,
    #[serde(default)]
    pattern: Option<Spanned<String>>,
    /// `false` lets a log pattern start matching anywhere (with a `note` saying why).
    #[serde(default)]
    anchored: Option<bool>,
    /// `"pid"`: a dedupe field the line lacks (the address of a failure sshd logs without it)
    /// comes from another line of the same process: one seen before, or the next that has it.
    #[serde(default)]
    session: Option<SessionKey>,
    /// `true`: the rule is no hit; what it captures is remembered for the process's session.
    /// `"waiting"`: the same, only while a hit of that process waits for its address (for
    /// lines as common as every connection's end, which would otherwise cost a capture each).
    #[serde(default)]
    learn: Option<LearnFile>,
    /// Why the rule is as it is (required with `anchored = false`).
    #[serde(default)]
    note: Option<String>,
    #[serde(default)]
    format: RuleFormat,
    /// JSON rules: field path = value (or a list of accepted values); all must hold.
    #[serde(default, rename = "match")]
    json_match: BTreeMap<String, toml::Value>,
    /// JSON rules: hit field = JSON field path.
    #[serde(default)]
    fields: BTreeMap<String, String>,
    #[serde(default)]
    threshold: Option<Threshold>,
    /// `"backtrack"`: the pattern runs on the bounded backtracking engine, for the look-around,
    /// backreferences and conditionals of imported fail2ban patterns (`regex` has none).
    #[serde(default)]
    engine: Option<Engine>,
    /// The first match of this pattern (its first group, when it has one) is cut out of the line
    /// before `pattern` matches what is left, as fail2ban cuts a line's time stamp.
    #[serde(default)]
    strip: Option<Spanned<String>>,
    /// A later event with the same key raises the incident (a login after failures).
    #[serde(default)]
    raise: Option<Raise>,
    /// The line proves that the account it names exists on the host (see `[context]`).
    #[serde(default)]
    account_exists: bool,
}

/// Which engine runs a rule's pattern.
#[derive(Deserialize, Debug, Clone, Copy, PartialEq, Eq)]
#[serde(rename_all = "lowercase")]
enum Engine {
    /// The `regex` crate: linear time (the default).
    Linear,
    /// fancy-regex with a step limit per line (`backtrack::STEP_LIMIT`).
    Backtrack,
}

/// `learn = true` or `learn = "waiting"`.
#[derive(Deserialize, Debug, Clone)]
#[serde(untagged)]
enum LearnFile {
    Flag(bool),
    When(String),
}

/// What ties the lines of one session together.
#[derive(Deserialize, Debug, Clone, Copy, PartialEq, Eq)]
#[serde(rename_all = "lowercase")]
pub enum SessionKey {
    /// The host, program and process id of a syslog line.
    Pid,
}

/// A name or a list of names.
#[derive(Deserialize, Debug, Clone)]
#[serde(untagged)]
enum OneOrMany {
    One(String),
    Many(Vec<String>),
}

impl OneOrMany {
    fn items(&self) -> &[String] {
        match self {
            OneOrMany::One(one) => std::slice::from_ref(one),
            OneOrMany::Many(many) => many,
        }
    }
}

/// How a log rule reads a line.
#[derive(Deserialize, Debug, Clone, Copy, Default, PartialEq, Eq)]
#[serde(rename_all = "lowercase")]
pub enum RuleFormat {
    /// The line is text; `pattern` matches it.
    #[default]
    Text,
    /// The line is a JSON object (Suricata eve.json, JSON-lines logs); `match` tests its fields.
    Json,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct StepFile {
    text: String,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct EscalationFile {
    after: Span,
    to: Vec<Spanned<String>>,
    #[serde(default)]
    repeat: Option<Span>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct DeadlineFile {
    name: String,
    within: Span,
    #[serde(default)]
    remind_before: Option<Span>,
}

/// What a rule reads.
#[derive(Deserialize, Debug, Clone, Copy, PartialEq, Eq, serde::Serialize)]
#[serde(rename_all = "lowercase")]
pub enum RuleSource {
    Log,
    Mail,
}

/// Open an incident only at `count` hits within `window`, per dedupe key.
#[derive(Deserialize, Debug, Clone, Copy, PartialEq, Eq, serde::Serialize)]
#[serde(deny_unknown_fields)]
pub struct Threshold {
    pub count: u32,
    pub window: Span,
}

/// What a raising rule does: its hit never counts and never opens an incident on its own;
/// it raises the open incident of its key (or one closed within `closed_within`), or opens one
/// raised when the key has at least `pending_at_least` failures within `window` below the
/// threshold. Raised: the severity becomes `severity`, ` ({mark})` is added to the title, the
/// CSIRT is told at once and the escalation goes straight to its last level.
#[derive(Deserialize, Debug, Clone, PartialEq, Eq)]
#[serde(deny_unknown_fields)]
pub struct Raise {
    #[serde(default = "critical")]
    pub severity: Severity,
    pub mark: String,
    #[serde(default = "one_day")]
    pub closed_within: Span,
    #[serde(default = "three")]
    pub pending_at_least: u32,
    #[serde(default = "ten_minutes")]
    pub window: Span,
}

fn critical() -> Severity {
    Severity::Critical
}
fn one_day() -> Span {
    Span::from_secs(86_400)
}
fn three() -> u32 {
    3
}
fn ten_minutes() -> Span {
    Span::from_secs(600)
}

/// One compiled rule of a playbook.
#[derive(Debug, Clone)]
pub struct Rule {
    /// The rule's `name`, or `rule-N` (1-based) when it has none.
    pub name: String,
    pub source: RuleSource,
    /// File-name globs this rule reads; empty means every log file.
    pub files: Vec<glob::Pattern>,
    /// Program globs (`sshd`, `postfix/*`): the rule sees only these programs' syslog lines and
    /// its pattern matches their message, from its start. Empty: the whole line.
    pub programs: Vec<glob::Pattern>,
    /// Missing dedupe fields come from the same process's other lines.
    pub session: Option<SessionKey>,
    /// Not a hit: its captures are remembered for the process's session.
    pub learn: bool,
    /// ...and only looked at while a hit of the process waits for its address.
    pub learn_waiting: bool,
    /// The text pattern; for JSON rules, an optional extra test on the raw line.
    pub regex: Option<Regex>,
    /// The text pattern when it runs on the backtracking engine (then `regex` is `None`).
    pub backtrack: Option<backtrack::Backtrack>,
    /// What is cut out of the line before the pattern matches (fail2ban's time stamp).
    pub strip: Option<Regex>,
    /// For JSON rules: the field tests and the fields a hit takes.
    pub json: Option<JsonRule>,
    pub threshold: Option<Threshold>,
    /// Set for a rule whose hits raise an incident instead of counting.
    pub raise: Option<Raise>,
    /// Its lines prove that the account they name exists.
    pub account_exists: bool,
    /// Where the rule is, for messages.
    pub location: Location,
}

/// The JSON side of a rule: every `conditions` path must hold one of its values; `fields` name
/// the hit's fields and the JSON paths (dotted) they come from.
#[derive(Debug, Clone, PartialEq)]
pub struct JsonRule {
    pub conditions: Vec<(Vec<String>, Vec<serde_json::Value>)>,
    pub fields: Vec<(String, Vec<String>)>,
}

impl Playbook {
    /// The `files` globs its log rules read, each once, in rule order; `*` for a log rule that
    /// reads every file. Empty for a playbook of mail rules only.
    pub fn file_globs(&self) -> Vec<String> {
        let mut globs: Vec<String> = Vec::new();
        for rule in self.rules.iter().filter(|r| r.source == RuleSource::Log) {
            let names: Vec<String> = if rule.files.is_empty() {
                vec!["*".to_string()]
            } else {
                rule.files.iter().map(|g| g.as_str().to_string()).collect()
            };
            for name in names {
                if !globs.contains(&name) {
                    globs.push(name);
                }
            }
        }
        globs
    }
}

impl Rule {
    /// Whether this rule reads the log file `path`: a rule without `files` reads every file;
    /// otherwise a glob matches the file name (or the whole path, for globs with a `/`). The
    /// matcher and `csirt config check` both ask this, so the check warns about exactly what
    /// the daemon will skip.
    pub fn reads(&self, path: &Path) -> bool {
        let name = path.file_name().and_then(|n| n.to_str()).unwrap_or("");
        self.files.is_empty()
            || self.files.iter().any(|g| {
                if g.as_str().contains('/') {
                    g.matches_path(path)
                } else {
                    g.matches(name)
                }
            })
    }
}

/// An escalation level: notify `to` after `after` while the incident stays unacknowledged.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Escalation {
    pub after: Span,
    pub to: Vec<String>,
    pub repeat: Option<Span>,
}

/// A deadline that runs from the incident's opening.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Deadline {
    pub name: String,
    pub within: Span,
    pub remind_before: Option<Span>,
}

/// A validated playbook.
#[derive(Debug, Clone)]
pub struct Playbook {
    pub id: String,
    pub title: String,
    pub category: String,
    pub severity: Severity,
    pub description: Option<String>,
    pub dedupe: Vec<String>,
    pub rules: Vec<Rule>,
    pub steps: Vec<String>,
    pub escalations: Vec<Escalation>,
    pub deadlines: Vec<Deadline>,
    /// Lines matching this are not hits of the playbook.
    pub ignore: Option<regex::RegexSet>,
    pub ignore_cidrs: Vec<cidr::Cidr>,
    pub context: Option<Context>,
    /// The config's `[networks] internal`, when it names them (set by `PlaybookSet::with_networks`).
    pub internal_networks: Option<std::sync::Arc<Vec<cidr::Cidr>>>,
    /// The config's `[networks] exposed` hosts, which `[context] unexposed` judges by.
    pub exposed_hosts: Option<std::sync::Arc<Vec<String>>>,
    pub path: PathBuf,
}

/// Every playbook of a directory, ids unique.
#[derive(Debug, Clone, Default)]
pub struct PlaybookSet {
    playbooks: Vec<Playbook>,
}

impl PlaybookSet {
    /// The set with the config's internal networks, which `[context]` judges addresses by.
    pub fn with_networks(mut self, internal: Option<Vec<cidr::Cidr>>) -> PlaybookSet {
        let internal = internal.map(std::sync::Arc::new);
        for p in &mut self.playbooks {
            p.internal_networks = internal.clone();
        }
        self
    }

    /// The set with the config's hosts that face the internet (`[networks] exposed`).
    pub fn with_exposed(mut self, exposed: Option<Vec<String>>) -> PlaybookSet {
        let exposed = exposed.map(std::sync::Arc::new);
        for p in &mut self.playbooks {
            p.exposed_hosts = exposed.clone();
        }
        self
    }

    /// The playbooks in file-name order.
    pub fn iter(&self) -> impl Iterator<Item = &Playbook> {
        self.playbooks.iter()
    }

    /// The playbook at `index` in file-name order.
    pub fn by_index(&self, index: usize) -> &Playbook {
        &self.playbooks[index]
    }

    /// The playbook with this id.
    pub fn get(&self, id: &str) -> Option<&Playbook> {
        self.playbooks.iter().find(|p| p.id == id)
    }

    /// How many playbooks there are.
    pub fn len(&self) -> usize {
        self.playbooks.len()
    }

    /// Whether there are none.
    pub fn is_empty(&self) -> bool {
        self.playbooks.is_empty()
    }
}

/// All the errors of a playbook set, each `file:line: message`, in file order.
#[derive(Debug, thiserror::Error)]
#[error("{}", .0.iter().map(ToString::to_string).collect::<Vec<_>>().join("\n"))]
pub struct PlaybookErrors(pub Vec<TomlError>);

/// Loads `path`, a directory of `*.toml` playbooks or a single file. When `contacts` is given,
/// escalation targets must name one of them.
pub fn load(
    path: &Path,
    contacts: Option<&BTreeSet<String>>,
) -> Result<PlaybookSet, PlaybookErrors> {
    let files = playbook_files(path).map_err(|e| PlaybookErrors(vec![e]))?;
    let mut errors = Vec::new();
    let mut playbooks: Vec<Playbook> = Vec::new();
    let mut seen: BTreeMap<String, Location> = BTreeMap::new();
    for file in files {
        let text = match toml_file::read(&file) {
            Ok(text) => text,
            Err(e) => {
                errors.push(e);
                continue;
            }
        };
        match parse(&file, &text, contacts) {
            Ok((playbook, id_location)) => match seen.get(&playbook.id) {
                Some(first) => errors.push(TomlError::Invalid {
                    location: id_location,
                    message: format!(
                        "duplicate playbook id `{}` (first defined at {first})",
                        playbook.id
                    ),
                }),
                None => {
                    seen.insert(playbook.id.clone(), id_location);
                    playbooks.push(playbook);
                }
            },
            Err(mut e) => errors.append(&mut e),
        }
    }
    if errors.is_empty() {
        Ok(PlaybookSet { playbooks })
    } else {
        Err(PlaybookErrors(errors))
    }
}

/// Only the playbook `id` of the set at `path` (its file found by reading each file's `id`
/// alone), compiled; `None` when no file has that id. `playbooks test` on one playbook need not
/// compile every other playbook's patterns, most of its start. A set with errors elsewhere is
/// not reported here: `playbooks check` does that.
pub fn load_one(
    path: &Path,
    id: &str,
    contacts: Option<&BTreeSet<String>>,
) -> Result<Option<PlaybookSet>, PlaybookErrors> {
    #[derive(serde::Deserialize)]
    struct IdOnly {
        id: String,
    }
    let files = playbook_files(path).map_err(|e| PlaybookErrors(vec![e]))?;
    for file in files {
        let Ok(text) = toml_file::read(&file) else {
            continue;
        };
        if toml::from_str::<IdOnly>(&text).is_ok_and(|only| only.id == id) {
            return load(&file, contacts).map(Some);
        }
    }
    Ok(None)
}

/// Validates the text of one playbook file as `load` would (without `[contacts]`), for a
/// playbook made in memory before it is written to `path`; every error, `file:line: message`.
pub fn check_text(path: &Path, text: &str) -> Result<Playbook, Vec<TomlError>> {
    parse(path, text, None).map(|(playbook, _)| playbook)
}

/// The `*.toml` files of a directory in name order, or the file itself.
fn playbook_files(path: &Path) -> Result<Vec<PathBuf>, TomlError> {
    let read_err = |source| TomlError::Read {
        path: path.to_path_buf(),
        source,
    };
    let meta = std::fs::metadata(path).map_err(read_err)?;
    if meta.is_file() {
        return Ok(vec![path.to_path_buf()]);
    }
    let mut files = Vec::new();
    for entry in std::fs::read_dir(path).map_err(read_err)? {
        let p = entry.map_err(read_err)?.path();
        let name = p.file_name().and_then(|n| n.to_str()).unwrap_or("");
        // Editors leave `.foo.toml.swp` and `#foo.toml#`; only plain `*.toml` files are playbooks.
        if name.ends_with(".toml") && !name.starts_with('.') && p.is_file() {
            files.push(p);
        }
    }
    files.sort();
    Ok(files)
}

/// Parses and validates one playbook file; returns every error found in it.
fn parse(
    path: &Path,
    text: &str,
    contacts: Option<&BTreeSet<String>>,
) -> Result<(Playbook, Location), Vec<TomlError>> {
    let file: PlaybookFile = toml_file::parse(path, text).map_err(|e| vec![e])?;
    let mut errors = Vec::new();
    let mut invalid = |span: std::ops::Range<usize>, message: String| {
        errors.push(TomlError::invalid(path, text, span, message));
    };

    let id = file.id.get_ref();
    if id.is_empty()
        || !id
            .bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-')
    {
        invalid(
            file.id.span(),
            format!("id `{id}` must be lower-case letters, digits and `-`"),
        );
    }
    let category = file.category.get_ref();
    // Shown in every list and report, and the evaluation report's batches separate columns by
    // control characters (`store::report`).
    if category.trim().is_empty() || category.chars().any(char::is_control) {
        invalid(
            file.category.span(),
            format!("category {category:?} must be a name: not empty, no control characters"),
        );
    }
    if file.rules.is_empty() {
        invalid(
            file.id.span(),
            format!("playbook `{id}` has no [[rule]]: it would never fire"),
        );
    }
    if file.steps.is_empty() {
        invalid(
            file.id.span(),
            format!("playbook `{id}` has no [[step]]: a responder needs the first-response steps"),
        );
    }

    let mut rules = Vec::new();
    // An imported filter writes one `strip` on every rule: compiled once (each is large).
    let mut strips: Vec<(&str, Regex)> = Vec::new();
    for (index, spanned) in file.rules.iter().enumerate() {
        let rule = spanned.get_ref();
        let name = rule
            .name
            .clone()
            .unwrap_or_else(|| format!("rule-{}", index + 1));
        let backtracking = rule.engine == Some(Engine::Backtrack);
        let mut backtrack = None;
        if let (true, Some(pattern)) = (backtracking, &rule.pattern) {
            if compile(pattern.get_ref()).is_ok() {
                invalid(
                    pattern.span(),
                    format!(
                        "rule `{name}`: the pattern needs no backtracking engine (regex runs it in linear time); remove engine = \"backtrack\""
                    ),
                );
            }
            match backtrack::Backtrack::new(pattern.get_ref(), REGEX_SIZE_LIMIT) {
                Ok(b) => {
                    b.name(format!("{}/{name}", file.id.get_ref()));
                    backtrack = Some(b);
                }
                Err(why) => {
                    invalid(
                        pattern.span(),
                        format!(
                            "rule `{name}`: pattern does not compile: {}",
                            one_line(&why)
                        ),
                    );
                    continue;
                }
            }
        }
        let strip = match &rule.strip {
            Some(pattern) => match strips.iter().find(|(p, _)| p == pattern.get_ref()) {
                Some((_, regex)) => Some(regex.clone()),
                None => match compile(pattern.get_ref()) {
                    Ok(regex) => {
                        strips.push((pattern.get_ref(), regex.clone()));
                        Some(regex)
                    }
                    Err(e) => {
                        invalid(
                            pattern.span(),
                            format!(
                                "rule `{name}`: strip does not compile: {}",
                                one_line(&e.to_string())
                            ),
                        );
                        None
                    }
                },
            },
            None => None,
        };
        if let (Some(regex), Some(pattern)) = (&strip, &rule.strip)
            && let Some(group) = regex
                .capture_names()
                .flatten()
                .find(|n| !crate::stamp::NAMES.contains(&n.split_once("__").map_or(*n, |(b, _)| b)))
        {
            invalid(
                pattern.span(),
                format!(
                    "rule `{name}`: strip names a group `{group}`: its named groups are the parts of the line's time ({}, each optionally with a `__x` suffix)",
                    crate::stamp::NAMES.join(", "),
                ),
            );
        }
        let whole_line = backtrack.is_some() || strip.is_some();
        if whole_line
            && (rule.source != RuleSource::Log
                || rule.format != RuleFormat::Text
                || rule.program.is_some()
                || rule.session.is_some()
                || rule.learn.is_some()
                || rule.raise.is_some())
        {
            invalid(
                spanned.span(),
                format!(
                    "rule `{name}`: engine = \"backtrack\" and strip apply to text log rules that read whole lines (no program, session, learn or raise)"
                ),
            );
        }
        let regex = match &rule.pattern {
            Some(_) if backtracking => None,
            Some(pattern) => match compile(pattern.get_ref()) {
                Ok(regex) => Some(regex),
                Err(e) => {
                    invalid(
                        pattern.span(),
                        format!(
                            "rule `{name}`: pattern does not compile: {}",
                            one_line(&e.to_string())
                        ),
                    );
                    continue;
                }
            },
            None => None,
        };
        let json = match rule.format {
            RuleFormat::Text => {
                if regex.is_none() && backtrack.is_none() {
                    invalid(spanned.span(), format!("rule `{name}` has no pattern"));
                }
                if !rule.json_match.is_empty() || !rule.fields.is_empty() {
                    invalid(
                        spanned.span(),
                        format!("rule `{name}`: `match` and `fields` need format = \"json\""),
                    );
                }
                None
            }
            RuleFormat::Json if rule.source == RuleSource::Mail => {
                invalid(
                    spanned.span(),
                    format!("rule `{name}`: mail rules are text rules"),
                );
                None
            }
            RuleFormat::Json => {
                if rule.json_match.is_empty() {
                    invalid(
                        spanned.span(),
                        format!("rule `{name}`: a JSON rule needs a [rule.match] table"),
                    );
                }
                let mut conditions = Vec::new();
                for (path, value) in &rule.json_match {
                    let accepted: Vec<toml::Value> = match value {
                        toml::Value::Array(values) => values.clone(),
                        single => vec![single.clone()],
                    };
                    let accepted: Result<Vec<serde_json::Value>, _> =
                        accepted.into_iter().map(serde_json::to_value).collect();
                    match accepted {
                        Ok(values) => conditions.push((split_path(path), values)),
                        Err(e) => invalid(
                            spanned.span(),
                            format!("rule `{name}`: match `{path}`: {e}"),
                        ),
                    }
                }
                let fields = rule
                    .fields
                    .iter()
                    .map(|(field, path)| (field.clone(), split_path(path)))
                    .collect();
                Some(JsonRule { conditions, fields })
            }
        };
        let mut files = Vec::new();
        for glob in &rule.files {
            match glob::Pattern::new(glob.get_ref()) {
                Ok(p) => files.push(p),
                Err(e) => invalid(
                    glob.span(),
                    format!("rule `{name}`: files `{}`: {e}", glob.get_ref()),
                ),
            }
        }
        let mut programs = Vec::new();
        if let Some(names) = &rule.program {
            if names.get_ref().items().is_empty() {
                invalid(
                    names.span(),
                    format!("rule `{name}`: program names no program"),
                );
            }
            for program in names.get_ref().items() {
                match glob::Pattern::new(program) {
                    Ok(p) if !program.is_empty() => programs.push(p),
                    Ok(_) => invalid(
                        names.span(),
                        format!("rule `{name}`: an empty program name"),
                    ),
                    Err(e) => invalid(
                        names.span(),
                        format!("rule `{name}`: program `{program}`: {e}"),
                    ),
                }
            }
            if rule.source == RuleSource::Mail || rule.format == RuleFormat::Json {
                invalid(
                    names.span(),
                    format!("rule `{name}`: `program` applies to text log rules only"),
                );
            }
        }
        if let (RuleSource::Log, RuleFormat::Text, Some(pattern)) =
            (rule.source, rule.format, &rule.pattern)
        {
            match (rule.anchored, rule.note.as_deref().map(str::trim)) {
                (Some(false), None | Some("")) => invalid(
                    pattern.span(),
                    format!(
                        "rule `{name}`: anchored = false needs a note saying why this pattern may start anywhere"
                    ),
                ),
                (Some(false), Some(_)) => {}
                _ if !(if backtracking {
                    starts_with_caret(pattern.get_ref())
                } else {
                    is_anchored(pattern.get_ref())
                }) =>
                {
                    let what = if programs.is_empty() {
                        "the line"
                    } else {
                        "the message"
                    };
                    invalid(
                        pattern.span(),
                        format!(
                            "rule `{name}`: the pattern can start matching anywhere in {what}, so text an attacker \
                             wrote further along (a user name, a client's text) could supply its captures; \
                             start it with ^ (for a syslog program's lines, set program = \"…\" and match the \
                             message from its start), or set anchored = false with a note saying why"
                        ),
                    )
                }
                _ => {}
            }
        }
        let (learn, learn_waiting) = match &rule.learn {
            None | Some(LearnFile::Flag(false)) => (false, false),
            Some(LearnFile::Flag(true)) => (true, false),
            Some(LearnFile::When(when)) if when == "waiting" => (true, true),
            Some(LearnFile::When(other)) => {
                invalid(
                    spanned.span(),
                    format!("rule `{name}`: learn = \"{other}\": use true or \"waiting\""),
                );
                (false, false)
            }
        };
        if let Some(raise) = &rule.raise {
            if learn || rule.threshold.is_some() {
                invalid(
                    spanned.span(),
                    format!(
                        "rule `{name}`: a raising rule neither learns nor has a threshold of its own"
                    ),
                );
            }
            if raise.mark.trim().is_empty() || raise.mark.chars().any(char::is_control) {
                invalid(
                    spanned.span(),
                    format!(
                        "rule `{name}`: raise.mark must be a short text for the title, e.g. \"ログイン成功\""
                    ),
                );
            }
        }
        if (rule.session.is_some() || learn) && programs.is_empty() {
            invalid(
                spanned.span(),
                format!(
                    "rule `{name}`: session and learn need program = \"…\": a session is one process's syslog lines"
                ),
            );
        }
        if rule.source == RuleSource::Mail && !rule.files.is_empty() {
            invalid(
                spanned.span(),
                format!("rule `{name}`: `files` applies to log rules only"),
            );
        }
        if let Some(t) = rule.threshold
            && t.count == 0
        {
            invalid(
                spanned.span(),
                format!("rule `{name}`: threshold count must be at least 1"),
            );
        }
        let available = rule_fields(
            regex.as_ref(),
            backtrack.as_ref(),
            json.as_ref(),
            rule.source,
        );
        // A session rule's missing fields come from its session; a learn rule is no hit.
        let whole = rule.session.is_none() && !learn;
        for field in &file.dedupe {
            if whole && !available.contains(field.get_ref().as_str()) {
                invalid(
                    field.span(),
                    format!(
                        "dedupe field `{}` is not captured by rule `{name}` (add (?P<{}>...) to its pattern)",
                        field.get_ref(),
                        field.get_ref()
                    ),
                );
            }
        }
        if rule.account_exists {
            let account = file
                .context
                .as_ref()
                .filter(|c| c.existing_account.is_some())
                .map(|c| c.account_field.as_str());
            match account {
                Some(field) if available.contains(field) => {}
                Some(field) => invalid(
                    spanned.span(),
                    format!(
                        "rule `{name}`: account_exists needs the account in (?P<{field}>...) ([context] account_field)"
                    ),
                ),
                None => invalid(
                    spanned.span(),
                    format!(
                        "rule `{name}`: account_exists says nothing without [context] existing_account"
                    ),
                ),
            }
        }
        for placeholder in placeholders(file.title.get_ref()) {
            if whole && !available.contains(placeholder) {
                invalid(
                    file.title.span(),
                    format!("title uses {{{placeholder}}}, which rule `{name}` does not capture"),
                );
            }
        }
        rules.push(Rule {
            name,
            source: rule.source,
            files,
            programs,
            session: rule.session,
            learn,
            learn_waiting,
            regex,
            backtrack,
            strip,
            json,
            threshold: rule.threshold,
            raise: rule.raise.clone(),
            account_exists: rule.account_exists,
            location: Location::of_span(path, text, spanned.span()),
        });
    }

    let mut steps = Vec::new();
    for step in &file.steps {
        let text = step.get_ref().text.trim();
        if text.is_empty() {
            invalid(step.span(), "[[step]] text is empty".into());
        }
        steps.push(text.to_string());
    }

    let mut escalations: Vec<Escalation> = Vec::new();
    for level in &file.escalations {
        let e = level.get_ref();
        if e.to.is_empty() {
            invalid(level.span(), "[[escalation]] to is empty".into());
        }
        if let Some(previous) = escalations.last()
            && e.after <= previous.after
        {
            invalid(
                level.span(),
                format!(
                    "[[escalation]] after = \"{}\" must be later than the level before it ({})",
                    e.after, previous.after
                ),
            );
        }
        if let Some(contacts) = contacts {
            for to in &e.to {
                if !contacts.contains(to.get_ref()) {
                    invalid(
                        to.span(),
                        format!(
                            "[[escalation]] to `{}` is not a name in the config's [contacts]",
                            to.get_ref()
                        ),
                    );
                }
            }
        }
        escalations.push(Escalation {
            after: e.after,
            to: e.to.iter().map(|t| t.get_ref().clone()).collect(),
            repeat: e.repeat,
        });
    }

    let ignore = match regex::RegexSetBuilder::new(file.ignore.iter().map(|p| p.get_ref()))
        .size_limit(REGEX_SIZE_LIMIT)
        .build()
    {
        Ok(set) if set.is_empty() => None,
        Ok(set) => Some(set),
        Err(e) => {
            let at = file.ignore.first().map_or(file.id.span(), |p| p.span());
            let why = e
                .to_string()
                .split_whitespace()
                .collect::<Vec<_>>()
                .join(" ");
            invalid(at, format!("ignore pattern does not compile: {why}"));
            None
        }
    };
    let mut ignore_cidrs = Vec::new();
    for range in &file.ignore_cidrs {
        match range.get_ref().parse::<cidr::Cidr>() {
            Ok(c) => ignore_cidrs.push(c),
            Err(e) => invalid(range.span(), format!("ignore_cidrs: {e}")),
        }
    }

    let deadlines = file
        .deadlines
        .iter()
        .map(|d| Deadline {
            name: d.name.clone(),
            within: d.within,
            remind_before: d.remind_before,
        })
        .collect();

    if !errors.is_empty() {
        return Err(errors);
    }
    let id_location = Location::of_span(path, text, file.id.span());
    Ok((
        Playbook {
            id: file.id.into_inner(),
            title: file.title.into_inner(),
            category: file.category.into_inner(),
            severity: file.severity,
            description: file.description,
            dedupe: file.dedupe.into_iter().map(Spanned::into_inner).collect(),
            rules,
            steps,
            escalations,
            deadlines,
            ignore,
            ignore_cidrs,
            context: file.context.clone(),
            internal_networks: None,
            exposed_hosts: None,
            path: path.to_path_buf(),
        },
        id_location,
    ))
}

/// `alert.severity` as the path `["alert", "severity"]`.
fn split_path(path: &str) -> Vec<String> {
    path.split('.').map(str::to_string).collect()
}

/// The fields a rule's hits carry: its named captures, its JSON fields, plus the mail fields for
/// mail rules.
fn rule_fields<'a>(
    regex: Option<&'a Regex>,
    backtrack: Option<&'a backtrack::Backtrack>,
    json: Option<&'a JsonRule>,
    source: RuleSource,
) -> BTreeSet<&'a str> {
    let mut fields: BTreeSet<&str> = regex
        .map(|r| r.capture_names().flatten().map(field_name).collect())
        .unwrap_or_default();
    if let Some(b) = backtrack {
        fields.extend(b.capture_names().flatten().map(field_name));
    }
    fields.extend(
        json.iter()
            .flat_map(|j| j.fields.iter().map(|(name, _)| name.as_str())),
    );
    if source == RuleSource::Mail {
        fields.extend(MAIL_FIELDS);
    }
    fields
}

/// An engine's multi-line error message on one line, for `file:line: message`.
fn one_line(message: &str) -> String {
    message.split_whitespace().collect::<Vec<_>>().join(" ")
}

/// A pattern compiled as every linear-time rule pattern is.
fn compile(pattern: &str) -> Result<Regex, regex::Error> {
    RegexBuilder::new(pattern)
        .size_limit(REGEX_SIZE_LIMIT)
        .build()
}

/// The field a named capture fills: `ip__6` fills `ip` (when no group before it did). A
/// pattern may capture one field in several places this way, which a regex cannot do under one
/// name (fail2ban's `<HOST>` is three groups: IPv4, IPv6 and a host name).
pub fn field_name(capture: &str) -> &str {
    capture.split_once("__").map_or(capture, |(field, _)| field)
}

/// Whether a backtracking pattern starts with `^` (after inline flags such as `(?i)`): its
/// syntax is not `regex`'s, so it is held to this plain reading.
pub(crate) fn starts_with_caret(pattern: &str) -> bool {
    let rest = match pattern.strip_prefix("(?") {
        Some(flags) => match flags.split_once(')') {
            Some((f, rest)) if !f.is_empty() && f.chars().all(|c| c.is_ascii_alphabetic()) => rest,
            _ => pattern,
        },
        None => pattern,
    };
    rest.starts_with('^')
}

/// Whether every match of `pattern` must begin at the start of the text (`^`, also inside a
/// group or in every branch of an alternation), as the regex crate's own parser sees it.
pub(crate) fn is_anchored(pattern: &str) -> bool {
    use regex_syntax::hir::Look;
    match regex_syntax::Parser::new().parse(pattern) {
        Ok(hir) => {
            let prefix = hir.properties().look_set_prefix();
            prefix.contains(Look::Start)
                || prefix.contains(Look::StartLF)
                || prefix.contains(Look::StartCRLF)
        }
        // It did not compile either; that error is reported on its own.
        Err(_) => true,
    }
}

/// The `{name}` placeholders of a title template.
pub fn placeholders(template: &str) -> impl Iterator<Item = &str> {
    template.split('{').skip(1).filter_map(|rest| {
        let (name, _) = rest.split_once('}')?;
        let is_ident =
            !name.is_empty() && name.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'_');
        is_ident.then_some(name)
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    const GOOD: &str = r#"
id = "ssh-bruteforce"
title = "SSH総当たり攻撃 ({ip})"
category = "不正アクセス"
severity = "high"
dedupe = ["ip"]

[[rule]]
source = "log"
program = "sshd"
pattern = '^Failed password for (?:invalid user )?\S+ from (?P<ip>[0-9a-fA-F:.]+)'
[rule.threshold]
count = 5
window = "10m"

[[step]]
text = "送信元IPアドレスを遮断する"

[[escalation]]
after = "30m"
to = ["lead"]
"#;

    #[test]
    fn new_rule_keys_refuse_what_they_cannot_mean() {
        let cases = [
            (
                GOOD.replace(
                    "program = \"sshd\"\n",
                    "learn = \"sometimes\"\nprogram = \"sshd\"\n",
                ),
                "learn = \"sometimes\"",
            ),
            (
                GOOD.replace("program = \"sshd\"\n", "session = \"pid\"\n"),
                "session and learn need program",
            ),
            (
                GOOD.replace("program = \"sshd\"\n", "program = []\n"),
                "program names no program",
            ),
            (
                GOOD.replace(
                    "[rule.threshold]\ncount = 5\nwindow = \"10m\"\n",
                    "[rule.raise]\nmark = \"x\\ny\"\n",
                ),
                "raise.mark",
            ),
            (
                GOOD.replace(
                    "[rule.threshold]",
                    "[rule.raise]\nmark = \"ok\"\n[rule.threshold]",
                ),
                "neither learns nor has a threshold",
            ),
            (
                GOOD.replace(
                    "dedupe = [\"ip\"]",
                    "dedupe = [\"ip\"]\n[context]\ninternal = \"urgent\"\nexternal = \"low\"",
                ),
                "urgent",
            ),
            (
                GOOD.replace("program = \"sshd\"\n", "program = \"sshd\"\naccount_exists = true\n"),
                "account_exists says nothing without [context] existing_account",
            ),
            (
                GOOD.replace("program = \"sshd\"\n", "program = \"sshd\"\naccount_exists = true\n")
                    .replace(
                        "dedupe = [\"ip\"]",
                        "dedupe = [\"ip\"]\n[context]\ninternal = \"high\"\nexternal = \"low\"\nexisting_account = \"high\"",
                    ),
                "account_exists needs the account in (?P<user>...)",
            ),
        ];
        for (text, needle) in cases {
            let errors = check(&text).expect_err(needle);
            assert!(
                errors.iter().any(|e| e.contains(needle)),
                "{needle}: {errors:?}"
            );
        }
    }

    #[test]
    fn log_patterns_must_be_anchored_or_say_why_not() {
        let with = |pattern: &str, extra: &str| {
            GOOD.replace(
                "pattern = '^Failed password for (?:invalid user )?\\S+ from (?P<ip>[0-9a-fA-F:.]+)'",
                &format!("pattern = '{pattern}'{extra}"),
            )
        };
        let anchored = [
            "^Failed .* from (?P<ip>\\S+)",
            "(?:^Failed|^Invalid) .* from (?P<ip>\\S+)",
            "(?i)^failed .* from (?P<ip>\\S+)",
            "(?:^(?:error: )?Failed) .* from (?P<ip>\\S+)",
        ];
        for pattern in anchored {
            assert!(check(&with(pattern, "")).is_ok(), "{pattern}");
        }
        let loose = [
            "Failed .* from (?P<ip>\\S+)",
            "(?:^|sshd: )Failed .* from (?P<ip>\\S+)",
            "(?m)x^Failed .* from (?P<ip>\\S+)",
        ];
        for pattern in loose {
            let errors = check(&with(pattern, "")).expect_err(pattern);
            assert!(
                errors[0].starts_with("pb.toml:11: ") && errors[0].contains("start it with ^"),
                "{errors:?}"
            );
        }
        let why_not = check(&with(loose[0], "\nanchored = false")).expect_err("no note");
        assert!(why_not[0].contains("needs a note"), "{why_not:?}");
        let noted = "\nanchored = false\nnote = \"a test of the escape hatch\"";
        assert!(check(&with(loose[0], noted)).is_ok());
    }

    #[test]
    fn strip_and_the_backtracking_engine_are_checked() {
        let rule = |extra: &str, pattern: &str| {
            GOOD.replace(
                "program = \"sshd\"\npattern = '^Failed password for (?:invalid user )?\\S+ from (?P<ip>[0-9a-fA-F:.]+)'",
                &format!("{extra}pattern = '{pattern}'"),
            )
        };
        let lookahead = r"^(?!x)Failed from (?P<ip>\S+)";
        assert!(check(&rule("engine = \"backtrack\"\n", lookahead)).is_ok());
        assert!(check(&rule("strip = '^\\S+ '\n", r"^Failed from (?P<ip>\S+)")).is_ok());
        assert!(
            check(&rule(
                "strip = '^((?P<b>[A-Z][a-z]{2}) (?P<d>\\d+)|(?P<d__2>\\d+)) '\n",
                r"^Failed from (?P<ip>\S+)"
            ))
            .is_ok(),
            "the time's parts may be named"
        );
        let cases = [
            (rule("", lookahead), "does not compile"),
            (
                rule("engine = \"backtrack\"\n", r"^Failed from (?P<ip>\S+)"),
                "needs no backtracking engine",
            ),
            (
                rule("engine = \"backtrack\"\n", r"(?!x)Failed from (?P<ip>\S+)"),
                "start it with ^",
            ),
            (
                rule("engine = \"backtrack\"\nprogram = \"sshd\"\n", lookahead),
                "whole lines",
            ),
            (
                rule("strip = '('\n", r"^Failed from (?P<ip>\S+)"),
                "strip does not compile",
            ),
            (
                rule("strip = '^(?P<when>\\d+) '\n", r"^Failed from (?P<ip>\S+)"),
                "strip names a group `when`",
            ),
            (
                rule(
                    "engine = \"backtrack\"\n",
                    r"^(?!x)Failed from (?P<addr>\S+)",
                ),
                "dedupe field `ip`",
            ),
        ];
        for (text, needle) in cases {
            let errors = check(&text).expect_err(needle);
            assert!(
                errors.iter().any(|e| e.contains(needle)),
                "{needle}: {errors:?}"
            );
        }
        // `ip__6` fills `ip`, so the dedupe field is captured.
        assert!(
            check(&rule(
                "",
                r"^Failed from (?:(?P<ip>[0-9.]+)|(?P<ip__6>[0-9a-f:]+))"
            ))
            .is_ok()
        );
    }

    fn check(text: &str) -> Result<Playbook, Vec<String>> {
        let contacts: BTreeSet<String> = ["lead".to_string()].into();
        parse(Path::new("pb.toml"), text, Some(&contacts))
            .map(|(p, _)| p)
            .map_err(|errs| errs.iter().map(ToString::to_string).collect())
    }

    #[test]
    fn good_playbook_loads() -> Result<(), Vec<String>> {
        let p = check(GOOD)?;
        assert_eq!(p.id, "ssh-bruteforce");
        assert_eq!(p.rules[0].name, "rule-1");
        assert_eq!(p.rules[0].threshold.map(|t| t.count), Some(5));
        assert_eq!(p.escalations[0].after.as_secs(), 1800);
        Ok(())
    }

    #[test]
    fn each_mistake_is_reported_at_its_line() {
        let cases = [
            (
                GOOD.replace("severity = \"high\"", "severity = \"urgent\""),
                "pb.toml:5: ",
                "urgent",
            ),
            (
                GOOD.replace("id = \"ssh-bruteforce\"", "id = \"SSH brute\""),
                "pb.toml:2: ",
                "lower-case",
            ),
            (
                GOOD.replace("(?P<ip>", "(?P<addr>"),
                "pb.toml:6: ",
                "dedupe field `ip`",
            ),
            (
                GOOD.replace("(?:invalid", "(?:invalid(("),
                "pb.toml:11: ",
                "does not compile",
            ),
            (
                GOOD.replace("window = \"10m\"", "window = \"10 minutes\""),
                "pb.toml:14: ",
                "invalid duration",
            ),
            (
                GOOD.replace("to = [\"lead\"]", "to = [\"ciso\"]"),
                "pb.toml:21: ",
                "`ciso`",
            ),
            (
                GOOD.replace("[[step]]", "colour = \"red\"\n[[step]]"),
                "pb.toml:16: ",
                "colour",
            ),
            (
                GOOD.replace("count = 5", "count = 0"),
                "pb.toml:8: ",
                "at least 1",
            ),
        ];
        for (text, prefix, needle) in cases {
            let errors = check(&text).expect_err(needle);
            assert!(
                errors
                    .iter()
                    .any(|e| e.starts_with(prefix) && e.contains(needle)),
                "wanted {prefix}…{needle}, got {errors:?}"
            );
        }
    }

    #[test]
    fn hostile_pattern_size_is_refused() {
        let huge = format!(
            "(?:{})",
            (0..20_000)
                .map(|i| format!("word{i}"))
                .collect::<Vec<_>>()
                .join("|")
        );
        let text = GOOD.replace(
            r"'^Failed password for (?:invalid user )?\S+ from (?P<ip>[0-9a-fA-F:.]+)'",
            &format!("'^{huge}(?P<ip>x)'"),
        );
        let errors = check(&text).expect_err("size limit");
        assert!(errors[0].contains("does not compile"), "{errors:?}");
    }

    #[test]
    fn a_category_is_a_name_without_control_characters() {
        // As TOML writes them: escapes, since TOML refuses the characters themselves.
        for bad in ["", "  ", r"不正\u001Fアクセス", r"a\u001eb", r"a\nb"] {
            let text = GOOD.replace(
                "category = \"不正アクセス\"",
                &format!("category = \"{bad}\""),
            );
            assert_ne!(text, GOOD);
            let errors = check(&text).expect_err(bad);
            assert!(errors[0].contains("must be a name"), "{bad:?}: {errors:?}");
        }
    }

    #[test]
    fn duplicate_ids_across_files_are_an_error() -> Result<(), Box<dyn std::error::Error>> {
        let dir = tempfile::tempdir()?;
        std::fs::write(dir.path().join("a.toml"), GOOD)?;
        std::fs::write(dir.path().join("b.toml"), GOOD)?;
        std::fs::write(dir.path().join(".b.toml.swp"), "junk")?;
        let err = load(dir.path(), None).expect_err("duplicate");
        let msg = err.to_string();
        assert!(
            msg.contains("b.toml:2: duplicate playbook id `ssh-bruteforce`"),
            "{msg}"
        );
        assert!(msg.contains("a.toml:2"), "{msg}");
        Ok(())
    }

    #[test]
    fn placeholders_are_found() {
        let names: Vec<_> = placeholders("{ip} から {user} へ {not a field} {}").collect();
        assert_eq!(names, ["ip", "user"]);
    }
}
