//! Which watched log files no playbook rule reads, and which log rules no watched file feeds.
//!
//! A line in a file that no rule's `files` glob names is read, checkpointed and never matched:
//! nothing says so at run time (issue #17: `/var/log/test/sshd.log` beside an SSH playbook that
//! reads only `auth.log*` and `secure*`). `csirt config check` and the daemon's start-up print
//! these findings as warnings, never errors: a sysadmin may watch a file for a playbook still
//! to be written. This module only looks at names; it never opens a log.

use crate::config::Config;
use crate::playbook::{PlaybookSet, Rule, RuleSource};
use std::path::{Path, PathBuf};

/// Warnings, one line each, naming the files, patterns, playbooks and rules concerned.
pub fn warnings(config: &Config, playbooks: &PlaybookSet) -> Vec<String> {
    let rules: Vec<(&str, &Rule)> = playbooks
        .iter()
        .flat_map(|p| p.rules.iter().map(move |r| (p.id.as_str(), r)))
        .filter(|(_, r)| r.source == RuleSource::Log)
        .collect();
    let watched = watched(config);
    let mut out = Vec::new();
    for (origin, path) in &watched.present {
        if !rules.iter().any(|(_, r)| r.reads(path)) {
            out.push(format!(
                "{} (watched by {origin}) is read by no playbook rule: no rule's `files` glob \
                 matches its name, so its lines never open an incident; rename it in the \
                 config (e.g. a [[journal]] name) or add its name to a rule's `files`",
                path.display()
            ));
        }
    }
    // Grouped by playbook: a playbook for a service this host does not run (mail, Samba)
    // gives one line, not one per rule.
    let mut unfed: Vec<(&str, Vec<&str>, Vec<&str>)> = Vec::new();
    for (id, rule) in &rules {
        if rule.files.is_empty() {
            continue;
        }
        let fed = watched.present.iter().any(|(_, p)| rule.reads(p))
            || watched.possible.iter().any(|p| rule.reads(p))
            || watched
                .patterns
                .iter()
                .any(|pattern| could_meet(pattern, &rule.files));
        if fed {
            continue;
        }
        if unfed.last().is_none_or(|(last, _, _)| last != id) {
            unfed.push((id, Vec::new(), Vec::new()));
        }
        if let Some((_, names, globs)) = unfed.last_mut() {
            names.push(rule.name.as_str());
            for g in &rule.files {
                if !globs.contains(&g.as_str()) {
                    globs.push(g.as_str());
                }
            }
        }
    }
    for (id, names, globs) in unfed {
        out.push(format!(
            "playbook {id}: rule(s) {} read only files named {}, and no [[logs]] pattern or \
             [[journal]] name can feed them: they will never match",
            names.join(", "),
            globs.join(", ")
        ));
    }
    out
}

/// The config's sources as names.
struct Watched {
    /// The files a `[[logs]]` pattern matches now, and the journal names, with where each
    /// comes from (`[[logs]] /var/log/*.log`, `[[journal]]`).
    present: Vec<(String, PathBuf)>,
    /// Plain paths (no glob character) of `[[logs]]` that do not exist yet.
    possible: Vec<PathBuf>,
    /// The `[[logs]]` patterns with glob characters, for files still to appear.
    patterns: Vec<glob::Pattern>,
}

fn watched(config: &Config) -> Watched {
    let mut w = Watched {
        present: Vec::new(),
        possible: Vec::new(),
        patterns: Vec::new(),
    };
    for source in &config.logs {
        for pattern in &source.paths {
            let pattern = pattern.get_ref();
            let has_glob = pattern.contains(['*', '?', '[']);
            let mut matched = false;
            for path in glob::glob(pattern).into_iter().flatten().flatten() {
                let name = path.file_name().and_then(|n| n.to_str()).unwrap_or("");
                // The reader skips logrotate's compressed files: so does this check.
                if !path.is_file()
                    || crate::source::logs::COMPRESSED
                        .iter()
                        .any(|ext| name.ends_with(ext))
                {
                    continue;
                }
                matched = true;
                w.present.push((format!("[[logs]] {pattern}"), path));
            }
            if has_glob {
                if let Ok(p) = glob::Pattern::new(pattern) {
                    w.patterns.push(p);
                }
            } else if !matched {
                w.possible.push(PathBuf::from(pattern));
            }
        }
    }
    for journal in &config.journal {
        // A journal source is seen by the rules under its `name`, as if it were that file.
        w.present.push((
            "[[journal]]".to_string(),
            PathBuf::from(journal.name.get_ref()),
        ));
    }
    w
}

/// Whether a file matched by `pattern` could also be named by one of `globs`. Deciding that
/// exactly means intersecting two globs; a sample name made from each glob (wildcards dropped)
/// tested against the other is enough for the globs playbooks use (`auth.log*`, `*.log`), and
/// it errs towards "could", which only silences a warning.
fn could_meet(pattern: &glob::Pattern, globs: &[glob::Pattern]) -> bool {
    let pattern_text = pattern.as_str();
    let dir = Path::new(pattern_text).parent().unwrap_or(Path::new(""));
    // A path the pattern accepts, as the rules will see it.
    let from_pattern = PathBuf::from(sample(pattern_text));
    globs.iter().any(|g| {
        // A path the rule's glob accepts: a bare name is placed in the pattern's directory.
        let from_rule = if g.as_str().contains('/') {
            PathBuf::from(sample(g.as_str()))
        } else {
            dir.join(sample(g.as_str()))
        };
        let name = from_pattern
            .file_name()
            .and_then(|n| n.to_str())
            .unwrap_or("");
        let rule_reads = if g.as_str().contains('/') {
            g.matches_path(&from_pattern)
        } else {
            g.matches(name)
        };
        pattern.matches_path(&from_rule) || rule_reads
    })
}

/// The glob with `*` dropped, `?` as `x` and a class as its first character.
fn sample(glob: &str) -> String {
    let mut out = String::new();
    let mut chars = glob.chars();
    while let Some(c) = chars.next() {
        match c {
            '*' => {}
            '?' => out.push('x'),
            '[' => {
                let class: String = chars.by_ref().take_while(|&c| c != ']').collect();
                let first = class.trim_start_matches(['!', '^']).chars().next();
                out.push(first.unwrap_or('x'));
            }
            c => out.push(c),
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn globs(list: &[&str]) -> Vec<glob::Pattern> {
        list.iter()
            .map(|g| glob::Pattern::new(g).expect("glob"))
            .collect()
    }

    #[test]
    fn patterns_and_rule_globs_meet_when_one_name_fits_both() {
        let p = |s: &str| glob::Pattern::new(s).expect("glob");
        assert!(could_meet(&p("/var/log/*.log"), &globs(&["auth.log*"])));
        assert!(could_meet(&p("/var/log/auth.log*"), &globs(&["auth.log*"])));
        assert!(could_meet(&p("/var/log/*"), &globs(&["eve.json*"])));
        assert!(!could_meet(&p("/var/log/test/*.log"), &globs(&["secure*"])));
        assert!(!could_meet(
            &p("/var/log/nginx/*.log"),
            &globs(&["eve.json*"])
        ));
    }

    #[test]
    fn samples_drop_wildcards() {
        assert_eq!(sample("auth.log*"), "auth.log");
        assert_eq!(sample("secure-[0-9]?"), "secure-0x");
    }
}
