//! fail2ban's filters made into playbooks (`csirt playbooks import fail2ban`).
//!
//! A filter is read as fail2ban reads it (`ini`: includes, `.local` files, `%(…)s`;
//! `options`: `[Init]`, `mode`, `<tag>` references), each failregex is combined with the
//! prefregex and translated (`pyre`), the time stamp fail2ban cuts before matching becomes the
//! rule's `strip` (`date`), the jail's `maxretry`/`findtime` the threshold and its `logpath`
//! (or journal) the rules' `files` (`jail`).
//! `emit` writes the playbook. Every playbook returned has passed the same validation as
//! `csirt playbooks check`; what could not be carried over is returned with the reason, per
//! filter and per failregex. Reads the user's files only; never writes.

pub mod date;
pub mod emit;
pub mod ini;
pub mod jail;
pub mod options;
pub mod pyre;

use super::backtrack::Backtrack;
use crate::duration::Span;
use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};

/// fail2ban's defaults when no jail says otherwise (`jail.conf`'s `[DEFAULT]`).
pub const DEFAULT_MAXRETRY: u32 = 5;
/// fail2ban's default `findtime`, 10 minutes.
pub const DEFAULT_FINDTIME: Span = Span::from_secs(600);

/// The compiled size cap of a pattern, the same as for any playbook pattern.
const SIZE_LIMIT: usize = 2 << 20;

/// What the importer is told.
#[derive(Debug, Default, Clone)]
pub struct Settings {
    /// `--mode`: the filter mode for every filter (else the jail's, else the filter's own).
    pub mode: Option<String>,
    /// `--jail`: the jails' thresholds and modes.
    pub jails: Option<jail::Jails>,
}

/// One imported filter.
#[derive(Debug, Clone)]
pub struct Imported {
    /// The filter's name (its file name without `.conf`).
    pub filter: String,
    /// The playbook id (`fail2ban-<filter>`).
    pub id: String,
    /// The playbook file's text, validated.
    pub toml: String,
    pub rules: usize,
    /// Rules on the backtracking engine.
    pub backtracking: usize,
    /// The mode the filter was read in.
    pub mode: Option<String>,
    /// Failregexes left out, each with the reason.
    pub left_out: Vec<String>,
    /// Things the responder should know (unanchored patterns, ignoreregex read on the whole line).
    pub notes: Vec<String>,
    /// The logs its rules read.
    pub logs: Logs,
}

/// The logs an imported filter's rules read, from the jail that uses it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Logs {
    /// No jail names them (no `--jail`, no jail uses the filter, or the jail has no
    /// `logpath`): the rules have no `files` and read every file of the config's `[[logs]]`.
    Every { why: String },
    /// The file names of the jail's `logpath` (`/var/log/auth.log` → `auth.log*`, which also
    /// reads the file while it is rotated).
    Files {
        globs: Vec<String>,
        logpath: Vec<String>,
    },
    /// The jail reads the systemd journal: the rules read the `[[journal]]` source of this name,
    /// which the config must have, with these matches (the filter's `journalmatch`).
    Journal {
        source: String,
        matches: Vec<String>,
    },
}

impl Logs {
    /// The rules' `files` globs.
    pub fn files(&self) -> Vec<String> {
        match self {
            Logs::Every { .. } => Vec::new(),
            Logs::Files { globs, .. } => globs.clone(),
            Logs::Journal { source, .. } => vec![source.clone()],
        }
    }
}

/// What became of one filter file.
#[derive(Debug, Clone)]
pub enum Outcome {
    Imported(Box<Imported>),
    LeftOut { filter: String, reason: String },
}

impl Outcome {
    /// The filter's name.
    pub fn filter(&self) -> &str {
        match self {
            Outcome::Imported(i) => &i.filter,
            Outcome::LeftOut { filter, .. } => filter,
        }
    }
}

/// The filter files `path` names: the file itself, or every `*.conf` of a directory (name order).
pub fn filter_files(path: &Path) -> std::io::Result<Vec<PathBuf>> {
    if path.is_file() {
        return Ok(vec![path.to_path_buf()]);
    }
    let mut files = Vec::new();
    for entry in std::fs::read_dir(path)? {
        let p = entry?.path();
        if p.extension().is_some_and(|e| e == "conf") && p.is_file() {
            files.push(p);
        }
    }
    files.sort();
    Ok(files)
}

/// The filter's name from its file: `sshd.conf` → `sshd`.
pub fn filter_name(path: &Path) -> String {
    path.file_stem()
        .map(|s| s.to_string_lossy().into_owned())
        .unwrap_or_default()
}

/// Imports one filter file.
pub fn import(path: &Path, settings: &Settings) -> Outcome {
    let filter = filter_name(path);
    match import_inner(path, &filter, settings) {
        Ok(imported) => Outcome::Imported(Box::new(imported)),
        Err(reason) => Outcome::LeftOut { filter, reason },
    }
}

/// One failregex made into a rule, before it is written.
#[derive(Debug, Clone)]
pub struct RuleDraft {
    /// 1-based position among the filter's failregexes.
    pub index: usize,
    pub pattern: String,
    pub backtrack: bool,
    pub anchored: bool,
}

fn import_inner(path: &Path, filter: &str, settings: &Settings) -> Result<Imported, String> {
    let config = ini::Config::read(path).map_err(|e| e.to_string())?;
    let jail = settings
        .jails
        .as_ref()
        .map(|j| j.for_filter(filter))
        .unwrap_or_default();
    let mut overrides = BTreeMap::new();
    if let Some(mode) = settings.mode.clone().or(jail.mode.clone()) {
        overrides.insert("mode".to_string(), mode);
    }
    // A jail on the journal reads the filter as `logtype = journal` (fail2ban's
    // `applyAutoOptions`), unless the filter sets its own.
    if jail.reads_journal() && !config.defines("Definition", "logtype") {
        overrides.insert("logtype".to_string(), "journal".to_string());
    }
    let opts = options::resolve(&config, &overrides).map_err(|e| e.to_string())?;
    let logs = logs(
        settings.jails.is_some(),
        &jail,
        opts.journalmatch.as_deref(),
    );
    if opts.failregex.is_empty() {
        return Err("no failregex (an include file for other filters, or an empty filter)".into());
    }
    let maxlines: usize = match opts.maxlines.as_deref().map(str::trim) {
        None => 1,
        Some(v) => v
            .parse()
            .map_err(|_| format!("maxlines = {v} is not a number"))?,
    };
    let spans_lines = |r: &str| r.contains("<SKIPLINES>") || matches_newline(r);
    if opts.prefregex.as_deref().is_some_and(spans_lines) {
        return Err(format!(
            "a multi-line filter (maxlines = {maxlines}): its prefregex spans several lines, and csirt's rules match one line"
        ));
    }
    let strip = date::strip_pattern(opts.datepattern.as_deref())?;

    let mut left_out = Vec::new();
    let mut drafts = Vec::new();
    for (i, failregex) in opts.failregex.iter().enumerate() {
        let index = i + 1;
        if spans_lines(failregex) {
            left_out.push(format!(
                "failregex {index}: spans several lines (maxlines = {maxlines}), and csirt's rules match one line"
            ));
            continue;
        }
        match draft(opts.prefregex.as_deref(), failregex, index) {
            Ok(d) => drafts.push(d),
            Err(why) => left_out.push(format!("failregex {index}: {why}")),
        }
    }
    let mut notes = Vec::new();
    if maxlines > 1 && !drafts.is_empty() {
        notes.push(format!(
            "maxlines = {maxlines}: the failregexes that match one line are imported, the others left out"
        ));
    }
    let mut ignore = Vec::new();
    for (i, regex) in opts.ignoreregex.iter().enumerate() {
        let t = pyre::translate(
            &pyre::expand_tags(regex),
            pyre::Mode::default(),
            &mut pyre::Names::default(),
        )
        .map_err(|e| format!("ignoreregex {}: {e}", i + 1))?;
        if t.backtrack || regex::Regex::new(&t.pattern).is_err() {
            return Err(format!(
                "ignoreregex {} needs the backtracking engine, which `ignore` does not run",
                i + 1
            ));
        }
        ignore.push(t.pattern);
        notes.push(format!(
            "ignoreregex {} is matched against the whole line (fail2ban matches it without the time stamp)",
            i + 1
        ));
    }

    let id = playbook_id(filter);
    let limits = jail.limits();
    let base = emit::Playbook {
        filter: filter.to_string(),
        source: path.display().to_string(),
        id: id.clone(),
        mode: opts.mode.clone(),
        category: emit::category(filter, opts.mode.as_deref()),
        maxretry: limits.0,
        findtime: limits.1,
        strip: strip.clone(),
        ignore,
        logs: logs.clone(),
        rules: Vec::new(),
    };
    // Each rule alone through the playbook check: one that fails is left out with the reason,
    // and the others stay.
    let mut kept = Vec::new();
    for d in drafts {
        let one = emit::Playbook {
            rules: vec![d.clone()],
            ..base.clone()
        };
        match super::check_text(Path::new(&format!("{id}.toml")), &emit::render(&one)) {
            Ok(_) => kept.push(d),
            Err(errors) => left_out.push(format!(
                "failregex {}: {}",
                d.index,
                errors
                    .iter()
                    .map(|e| e.to_string())
                    .collect::<Vec<_>>()
                    .join("; ")
            )),
        }
    }
    if kept.is_empty() {
        return Err(format!(
            "no failregex could be carried over ({})",
            left_out.join(" | ")
        ));
    }
    for d in kept.iter().filter(|d| !d.anchored) {
        notes.push(format!(
            "failregex {} is not anchored (fail2ban searches it anywhere in the line): text an attacker writes could supply its address",
            d.index
        ));
    }
    let playbook = emit::Playbook {
        rules: kept,
        ..base
    };
    let toml = emit::render(&playbook);
    super::check_text(Path::new(&format!("{id}.toml")), &toml).map_err(|errors| {
        errors
            .iter()
            .map(|e| e.to_string())
            .collect::<Vec<_>>()
            .join("; ")
    })?;
    Ok(Imported {
        filter: filter.to_string(),
        id,
        rules: playbook.rules.len(),
        backtracking: playbook.rules.iter().filter(|r| r.backtrack).count(),
        toml,
        mode: opts.mode,
        left_out,
        notes,
        logs,
    })
}

/// The logs the jail that uses the filter reads; `jails_given`: whether `--jail` was.
fn logs(jails_given: bool, jail: &jail::JailFor, journalmatch: Option<&str>) -> Logs {
    let Some(name) = jail.name.as_deref() else {
        return Logs::Every {
            why: if jails_given {
                "no jail of --jail uses this filter".into()
            } else {
                "no --jail".into()
            },
        };
    };
    if jail.reads_journal() {
        let matches = jail
            .journalmatch
            .as_deref()
            .or(journalmatch)
            .unwrap_or("")
            .split_whitespace()
            .map(str::to_string)
            .collect();
        return Logs::Journal {
            source: format!(
                "journal-{}",
                playbook_id(name).trim_start_matches("fail2ban-")
            ),
            matches,
        };
    }
    let mut globs: Vec<String> = Vec::new();
    for path in &jail.logpath {
        let file = path.rsplit('/').next().unwrap_or(path);
        let glob = if file.ends_with('*') {
            file.to_string()
        } else {
            format!("{file}*")
        };
        if !file.is_empty() && glob::Pattern::new(&glob).is_ok() && !globs.contains(&glob) {
            globs.push(glob);
        }
    }
    if globs.is_empty() {
        return Logs::Every {
            why: format!("jail [{name}] has no logpath"),
        };
    }
    Logs::Files {
        globs,
        logpath: jail.logpath.clone(),
    }
}

/// Whether a pattern has a `\n` escape (a newline: a pattern over several lines), not
/// counting an escaped backslash followed by `n`.
fn matches_newline(pattern: &str) -> bool {
    let mut chars = pattern.chars();
    while let Some(c) = chars.next() {
        if c == '\\' && chars.next() == Some('n') {
            return true;
        }
    }
    false
}

/// `fail2ban-<filter>`, in the id alphabet (lower-case letters, digits, `-`).
pub fn playbook_id(filter: &str) -> String {
    let mut id: String = format!("fail2ban-{filter}")
        .chars()
        .map(|c| {
            let c = c.to_ascii_lowercase();
            if c.is_ascii_lowercase() || c.is_ascii_digit() {
                c
            } else {
                '-'
            }
        })
        .collect();
    while id.contains("--") {
        id = id.replace("--", "-");
    }
    id.trim_end_matches('-').to_string()
}

/// One failregex (with the prefregex around it) as a rule's pattern.
fn draft(prefregex: Option<&str>, failregex: &str, index: usize) -> Result<RuleDraft, String> {
    let mut names = pyre::Names::default();
    let (pattern, backtrack, anchored) = match prefregex {
        None => {
            let t = pyre::translate(
                &pyre::expand_tags(failregex),
                pyre::Mode::default(),
                &mut names,
            )?;
            (t.pattern, t.backtrack, t.anchored)
        }
        Some(pref) => {
            let p = pyre::translate(&pyre::expand_tags(pref), pyre::Mode::default(), &mut names)
                .map_err(|e| format!("prefregex: {e}"))?;
            let offset = p
                .groups_before_content
                .ok_or("the prefregex has no <F-CONTENT>")?;
            let f = pyre::translate(
                &pyre::expand_tags(failregex),
                pyre::Mode {
                    in_content: true,
                    group_offset: offset,
                },
                &mut names,
            )?;
            (
                combine(&p.pattern, &f.pattern, f.anchored)?,
                p.backtrack || f.backtrack,
                p.anchored,
            )
        }
    };
    let fields = capture_fields(&pattern, backtrack)?;
    if !fields.contains("ip") {
        return Err(
            "no address in it (<HOST>, <ADDR>, <IP4>, <IP6>, <DNS>): fail2ban takes the address from another line of the connection (<F-MLFID>), which csirt does not follow".into(),
        );
    }
    Ok(RuleDraft {
        index,
        pattern,
        backtrack,
        anchored,
    })
}

/// The prefregex with its `<F-CONTENT>` group replaced by the failregex, which must match the
/// content from its start (`^`, already dropped) or anywhere in it, and up to its end when it
/// ends with `$` (dropped: what follows the content in the prefregex ends the match).
fn combine(pref: &str, fail: &str, anchored: bool) -> Result<String, String> {
    let open = "(?P<content>";
    let start = pref.find(open).ok_or("the prefregex has no <F-CONTENT>")?;
    let end =
        start + super::backtrack::group_len(&pref[start..]).ok_or("an unbalanced prefregex")? - 1;
    let (body, ends) = match fail.strip_suffix('$') {
        Some(body) if !body.ends_with('\\') || body.ends_with("\\\\") => (body, true),
        _ => (fail, false),
    };
    let lead = if anchored { "" } else { ".*?" };
    let trail = if ends { "" } else { ".*" };
    Ok(format!(
        "{}(?:{lead}(?:{body}){trail}){}",
        &pref[..start],
        &pref[end + 1..]
    ))
}

/// The fields a pattern's named groups fill, compiling it on its engine.
fn capture_fields(pattern: &str, backtrack: bool) -> Result<BTreeSet<String>, String> {
    let names: Vec<String> = if backtrack {
        Backtrack::new(pattern, SIZE_LIMIT)
            .map_err(|e| format!("does not compile: {e}"))?
            .capture_names()
            .flatten()
            .map(str::to_string)
            .collect()
    } else {
        regex::RegexBuilder::new(pattern)
            .size_limit(SIZE_LIMIT)
            .build()
            .map_err(|e| {
                format!(
                    "does not compile: {}",
                    e.to_string()
                        .split_whitespace()
                        .collect::<Vec<_>>()
                        .join(" ")
                )
            })?
            .capture_names()
            .flatten()
            .map(str::to_string)
            .collect()
    };
    Ok(names
        .iter()
        .map(|n| super::field_name(n).to_string())
        .collect())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_prefregex_and_a_failregex_become_one_anchored_pattern() -> Result<(), String> {
        let d = draft(
            Some(r"^<F-MLFID>\S+ sshd\[\d+\]: </F-MLFID><F-CONTENT>.+</F-CONTENT>$"),
            r"^Failed password for <F-USER>.*</F-USER> from <HOST> port \d+$",
            1,
        )?;
        assert!(d.anchored && !d.backtrack);
        let re = regex::Regex::new(&d.pattern).map_err(|e| e.to_string())?;
        let caps = re
            .captures("gw sshd[7]: Failed password for bob from 192.0.2.4 port 22")
            .ok_or("no match")?;
        assert_eq!(&caps["ip"], "192.0.2.4");
        assert!(
            !re.is_match("gw sshd[7]: x Failed password for bob from 192.0.2.4 port 22"),
            "the failregex's ^ is the content's start"
        );
        let loose = draft(
            Some(r"^(?P<h>\S+) <F-CONTENT>.+</F-CONTENT>$"),
            r"denied for <HOST>",
            2,
        )?;
        let re = regex::Regex::new(&loose.pattern).map_err(|e| e.to_string())?;
        assert!(re.is_match("gw x y denied for 192.0.2.5 z"));
        Ok(())
    }

    #[test]
    fn a_failregex_without_an_address_is_left_out_with_the_reason() {
        let err = draft(None, r"^Disconnecting: Too many authentication failures", 3)
            .expect_err("no address");
        assert!(err.contains("no address"), "{err}");
    }

    #[test]
    fn only_a_newline_escape_makes_a_pattern_span_lines() {
        assert!(matches_newline(r"^a\nb <HOST>"));
        assert!(!matches_newline(r"^error 'x(?:\\n)?'"));
        assert!(matches_newline(r"^x\\\n"));
    }

    #[test]
    fn ids_are_in_the_playbook_alphabet() {
        assert_eq!(playbook_id("sshd"), "fail2ban-sshd");
        assert_eq!(playbook_id("nginx-http-auth"), "fail2ban-nginx-http-auth");
        assert_eq!(playbook_id("My_Filter.v2"), "fail2ban-my-filter-v2");
    }

    #[test]
    fn the_jails_logs_become_the_rules_files() {
        let jail = |logpath: &[&str], backend: Option<&str>| jail::JailFor {
            name: Some("sshd".into()),
            logpath: logpath.iter().map(|p| p.to_string()).collect(),
            backend: backend.map(str::to_string),
            ..jail::JailFor::default()
        };
        assert_eq!(
            logs(true, &jail(&["/var/log/auth.log"], Some("auto")), None).files(),
            ["auth.log*"]
        );
        assert_eq!(
            logs(
                true,
                &jail(&["/var/log/apache2/*error.log", "/srv/a/error.log*"], None),
                None
            )
            .files(),
            ["*error.log*", "error.log*"]
        );
        assert_eq!(
            logs(
                true,
                &jail(&["/var/log/auth.log"], Some("systemd")),
                Some("_SYSTEMD_UNIT=sshd.service + _COMM=sshd")
            ),
            Logs::Journal {
                source: "journal-sshd".into(),
                matches: vec![
                    "_SYSTEMD_UNIT=sshd.service".into(),
                    "+".into(),
                    "_COMM=sshd".into()
                ],
            }
        );
        for (given, j) in [
            (false, jail::JailFor::default()),
            (true, jail::JailFor::default()),
            (true, jail(&[], None)),
        ] {
            let l = logs(given, &j, None);
            assert!(matches!(l, Logs::Every { .. }), "{l:?}");
            assert!(l.files().is_empty());
        }
    }
}
