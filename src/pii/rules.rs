//! The rules file (`config/pii-rules.toml`, packaged as `/etc/csirt/pii-rules.toml`): which
//! facts make a report or a notification a duty, and its clocks, each with its legal source.
//!
//! A change of the law is an edit of this file, not a release. Loaded strictly (unknown keys,
//! unknown facts, parties and kinds, a warning after its deadline are `file:line` errors) by the
//! daemon at start, by `csirt config check` and `csirt playbooks check`, and by the commands that
//! use it. The copy in the source tree is built in, for a CLI with no config file.

use super::{Flag, Kind, Party};
use crate::duration::Span;
use crate::toml_file::{self, TomlError};
use serde::Deserialize;
use std::collections::BTreeSet;
use std::path::{Path, PathBuf};
use toml::Spanned;

/// The rules shipped with this csirt (used when the config names no `pii_rules` file).
pub const BUILT_IN: &str = include_str!("../../config/pii-rules.toml");

/// The path the built-in rules are reported under.
pub const BUILT_IN_PATH: &str = "(built-in) config/pii-rules.toml";

/// The validated rules.
#[derive(Debug, Clone, PartialEq)]
pub struct Rules {
    /// Which file they came from (or the built-in name).
    pub path: PathBuf,
    /// The law's version they encode (the date it took effect).
    pub version: String,
    /// SHA-256 of the file as read (hex): which text the clocks were computed under, even when
    /// an edit forgot to change `version`.
    pub sha256: String,
    pub duties: Vec<Duty>,
}

/// One duty to report or notify, and when it arises.
#[derive(Debug, Clone, PartialEq)]
pub struct Duty {
    pub id: String,
    pub name: String,
    pub source: String,
    /// The article's text, for the reader who wants it.
    pub text: Option<String>,
    pub exclusions: Vec<Exclusion>,
    pub triggers: Vec<Trigger>,
    pub reports: Vec<Report>,
}

/// A fact that takes every trigger of a duty out (高度な暗号化).
#[derive(Debug, Clone, PartialEq)]
pub struct Exclusion {
    pub flag: Flag,
    pub reason: String,
    pub source: String,
}

/// A state of affairs that makes the duty arise: every flag in `all` is true and, with
/// `persons_over`, more persons than that are concerned.
#[derive(Debug, Clone, PartialEq)]
pub struct Trigger {
    pub id: String,
    pub all: Vec<Flag>,
    pub persons_over: Option<i64>,
    pub reason: String,
    pub source: String,
}

/// A report or notification the duty requires, with its clock from 覚知.
#[derive(Debug, Clone, PartialEq)]
pub struct Report {
    pub name: String,
    pub to: Party,
    pub kind: Kind,
    pub warn: Span,
    /// `None`: 速やかに, no statutory number of days.
    pub due: Option<Span>,
    pub source: String,
    pub longer: Vec<Longer>,
}

/// A longer clock when a trigger holds (確報 60 days for 不正の目的).
#[derive(Debug, Clone, PartialEq)]
pub struct Longer {
    pub trigger: String,
    pub warn: Span,
    pub due: Span,
    pub source: String,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct File {
    version: String,
    #[serde(default)]
    duty: Vec<Spanned<DutyFile>>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct DutyFile {
    id: String,
    name: String,
    source: String,
    #[serde(default)]
    text: Option<String>,
    #[serde(default)]
    exclusion: Vec<Spanned<ExclusionFile>>,
    #[serde(default)]
    trigger: Vec<Spanned<TriggerFile>>,
    #[serde(default)]
    report: Vec<Spanned<ReportFile>>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct ExclusionFile {
    #[serde(rename = "if")]
    flag: String,
    reason: String,
    source: String,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct TriggerFile {
    id: String,
    #[serde(rename = "if", default)]
    all: Vec<String>,
    #[serde(default)]
    persons_over: Option<i64>,
    reason: String,
    source: String,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct ReportFile {
    name: String,
    to: String,
    kind: String,
    warn: Span,
    #[serde(default)]
    due: Option<Span>,
    source: String,
    #[serde(default)]
    longer: Vec<Spanned<LongerFile>>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct LongerFile {
    trigger: String,
    warn: Span,
    due: Span,
    source: String,
}

impl Rules {
    /// The rules at `path`, or the built-in ones when `path` is `None`.
    pub fn load(path: Option<&Path>) -> Result<Rules, TomlError> {
        match path {
            Some(path) => Self::parse(path, &toml_file::read(path)?),
            None => Self::parse(Path::new(BUILT_IN_PATH), BUILT_IN),
        }
    }

    /// Parses and validates `text` as if read from `path`.
    pub fn parse(path: &Path, text: &str) -> Result<Rules, TomlError> {
        let file: File = toml_file::parse(path, text)?;
        let mut duties = Vec::new();
        let mut ids = BTreeSet::new();
        for duty in file.duty {
            let span = duty.span();
            let d = duty.into_inner();
            let invalid = |m: String| TomlError::invalid(path, text, span.clone(), m);
            check_id(&d.id).map_err(|m| invalid(format!("duty id: {m}")))?;
            if !ids.insert(d.id.clone()) {
                return Err(invalid(format!("duty `{}` is defined twice", d.id)));
            }
            for (what, value) in [("name", &d.name), ("source", &d.source)] {
                if value.trim().is_empty() {
                    return Err(invalid(format!("duty `{}`: {what} is empty", d.id)));
                }
            }
            if d.trigger.is_empty() || d.report.is_empty() {
                return Err(invalid(format!(
                    "duty `{}` needs at least one [[duty.trigger]] and one [[duty.report]]",
                    d.id
                )));
            }
            let mut exclusions = Vec::new();
            for e in d.exclusion {
                let span = e.span();
                let e = e.into_inner();
                let invalid = |m: String| TomlError::invalid(path, text, span.clone(), m);
                exclusions.push(Exclusion {
                    flag: e.flag.parse().map_err(invalid)?,
                    reason: non_empty(e.reason, "reason").map_err(invalid)?,
                    source: non_empty(e.source, "source").map_err(invalid)?,
                });
            }
            let mut triggers: Vec<Trigger> = Vec::new();
            for t in d.trigger {
                let span = t.span();
                let t = t.into_inner();
                let invalid = |m: String| TomlError::invalid(path, text, span.clone(), m);
                check_id(&t.id).map_err(|m| invalid(format!("trigger id: {m}")))?;
                if triggers.iter().any(|o| o.id == t.id) {
                    return Err(invalid(format!("trigger `{}` is defined twice", t.id)));
                }
                let all = t
                    .all
                    .iter()
                    .map(|f| f.parse::<Flag>())
                    .collect::<Result<Vec<_>, _>>()
                    .map_err(invalid)?;
                if all.is_empty() && t.persons_over.is_none() {
                    return Err(invalid(format!(
                        "trigger `{}` has neither `if` nor `persons_over`: it would always hold",
                        t.id
                    )));
                }
                if t.persons_over.is_some_and(|n| n < 0) {
                    return Err(invalid(format!(
                        "trigger `{}`: persons_over must not be negative",
                        t.id
                    )));
                }
                triggers.push(Trigger {
                    id: t.id,
                    all,
                    persons_over: t.persons_over,
                    reason: non_empty(t.reason, "reason").map_err(invalid)?,
                    source: non_empty(t.source, "source").map_err(invalid)?,
                });
            }
            let mut reports: Vec<Report> = Vec::new();
            for r in d.report {
                let span = r.span();
                let r = r.into_inner();
                let invalid = |m: String| TomlError::invalid(path, text, span.clone(), m);
                let name = non_empty(r.name, "name").map_err(invalid)?;
                if reports.iter().any(|o| o.name == name) {
                    return Err(invalid(format!("report `{name}` is defined twice")));
                }
                if r.due.is_some_and(|due| r.warn > due) {
                    return Err(invalid(format!(
                        "report `{name}`: warn is after due (the warning would come too late)"
                    )));
                }
                let mut longer = Vec::new();
                for l in r.longer {
                    let span = l.span();
                    let l = l.into_inner();
                    let invalid = |m: String| TomlError::invalid(path, text, span.clone(), m);
                    if !triggers.iter().any(|t| t.id == l.trigger) {
                        return Err(invalid(format!(
                            "longer: no trigger `{}` in duty `{}`",
                            l.trigger, d.id
                        )));
                    }
                    if l.warn > l.due {
                        return Err(invalid("longer: warn is after due".into()));
                    }
                    longer.push(Longer {
                        trigger: l.trigger,
                        warn: l.warn,
                        due: l.due,
                        source: non_empty(l.source, "source").map_err(invalid)?,
                    });
                }
                reports.push(Report {
                    name,
                    to: r.to.parse().map_err(invalid)?,
                    kind: r.kind.parse().map_err(invalid)?,
                    warn: r.warn,
                    due: r.due,
                    source: non_empty(r.source, "source").map_err(invalid)?,
                    longer,
                });
            }
            duties.push(Duty {
                id: d.id,
                name: d.name,
                source: d.source,
                text: d.text,
                exclusions,
                triggers,
                reports,
            });
        }
        if duties.is_empty() {
            return Err(TomlError::invalid(
                path,
                text,
                0..0,
                "no [[duty]]: csirt could never say that a report is required",
            ));
        }
        Ok(Rules {
            path: path.to_path_buf(),
            version: file.version,
            sha256: {
                use sha2::Digest;
                let digest = sha2::Sha256::digest(text.as_bytes());
                digest.iter().map(|b| format!("{b:02x}")).collect()
            },
            duties,
        })
    }

    /// The first 12 hex digits of `sha256`, as the timeline shows it.
    pub fn short_hash(&self) -> &str {
        &self.sha256[..self.sha256.len().min(12)]
    }

    /// Who a recomputation under these rules is recorded as: the rules file, its version and
    /// hash (`rules:pii-rules.toml@2025-10-01#1a2b3c4d5e6f`).
    pub fn actor(&self) -> crate::model::Actor {
        let file = self.path.file_name().map_or_else(
            || self.path.display().to_string(),
            |f| f.to_string_lossy().into_owned(),
        );
        crate::model::Actor::rules(&format!("{file}@{}#{}", self.version, self.short_hash()))
    }
}

fn check_id(id: &str) -> Result<(), String> {
    if id.is_empty()
        || !id
            .chars()
            .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '-')
    {
        return Err(format!("`{id}` must be [a-z0-9-] and not empty"));
    }
    Ok(())
}

fn non_empty(value: String, what: &str) -> Result<String, String> {
    if value.trim().is_empty() {
        Err(format!(
            "{what} is empty (every rule names its legal source)"
        ))
    } else {
        Ok(value)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_shipped_rules_load() {
        let rules = Rules::load(None).expect("built-in rules");
        let ids: Vec<&str> = rules.duties.iter().map(|d| d.id.as_str()).collect();
        assert_eq!(ids, ["ppc", "mynumber"]);
        assert!(
            rules
                .duties
                .iter()
                .all(|d| d.triggers.iter().all(|t| t.source.contains("規則")))
        );
    }

    fn refused(text: &str) -> String {
        Rules::parse(Path::new("r.toml"), text)
            .expect_err("refused")
            .to_string()
    }

    const DUTY: &str = "version = \"x\"\n[[duty]]\nid = \"d\"\nname = \"n\"\nsource = \"s\"\n";

    #[test]
    fn mistakes_are_refused_with_file_and_line() {
        let unknown_fact = format!(
            "{DUTY}[[duty.trigger]]\nid = \"t\"\nif = [\"sensitiv\"]\nreason = \"r\"\nsource = \"s\"\n\
             [[duty.report]]\nname = \"x\"\nto = \"ppc\"\nkind = \"速報\"\nwarn = \"3d\"\nsource = \"s\"\n"
        );
        let msg = refused(&unknown_fact);
        assert!(
            msg.starts_with("r.toml:6:") && msg.contains("sensitiv"),
            "{msg}"
        );
        let late_warning = format!(
            "{DUTY}[[duty.trigger]]\nid = \"t\"\npersons_over = 100\nreason = \"r\"\nsource = \"s\"\n\
             [[duty.report]]\nname = \"x\"\nto = \"ppc\"\nkind = \"速報\"\nwarn = \"6d\"\ndue = \"5d\"\nsource = \"s\"\n"
        );
        assert!(
            refused(&late_warning).contains("warn is after due"),
            "{}",
            refused(&late_warning)
        );
        let no_source = format!(
            "{DUTY}[[duty.trigger]]\nid = \"t\"\npersons_over = 100\nreason = \"r\"\nsource = \" \"\n\
             [[duty.report]]\nname = \"x\"\nto = \"ppc\"\nkind = \"速報\"\nwarn = \"3d\"\nsource = \"s\"\n"
        );
        assert!(refused(&no_source).contains("source is empty"));
        let bad_party = format!(
            "{DUTY}[[duty.trigger]]\nid = \"t\"\npersons_over = 100\nreason = \"r\"\nsource = \"s\"\n\
             [[duty.report]]\nname = \"x\"\nto = \"fbi\"\nkind = \"速報\"\nwarn = \"3d\"\nsource = \"s\"\n"
        );
        assert!(refused(&bad_party).contains("fbi"));
        let always = format!(
            "{DUTY}[[duty.trigger]]\nid = \"t\"\nreason = \"r\"\nsource = \"s\"\n\
             [[duty.report]]\nname = \"x\"\nto = \"ppc\"\nkind = \"速報\"\nwarn = \"3d\"\nsource = \"s\"\n"
        );
        assert!(refused(&always).contains("always hold"));
        assert!(refused(&format!("{DUTY}colour = 1\n")).contains("colour"));
    }
}
