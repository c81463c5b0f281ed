//! The city's playbooks scored on fail2ban's own annotated test logs, as Debian's fail2ban
//! package installs them (`fail2ban/tests/files/logs/`; never copied into this repository).
//! Each `# failJSON: {…}` comment describes the line after it: whether fail2ban's filter
//! counts it as a failure (`match`) and from which address (`host`). A `# filterOptions:` line
//! says in which filter modes the cases after it apply; a case's `constraint` narrows it.
//!
//! A playbook is scored in the modes it covers, through `csirt playbooks test --json` (the
//! real matcher): recall over the failures, no false positive, and every "Injecting" case (a
//! line carrying a forged address) attributed to the true one.

use crate::helpers::*;
use std::collections::BTreeMap;
use std::path::PathBuf;

/// Where Debian's python3-fail2ban puts the test logs.
pub const LOGS: &str = "/usr/lib/python3/dist-packages/fail2ban/tests/files/logs";

/// Cases where the playbook deliberately takes another address than fail2ban's annotation,
/// with the reason: `(log, line text fragment, the address csirt takes, why)`. Each is asserted.
const DISAGREEMENTS: &[(&str, &str, &str, &str)] = &[(
    "sshd",
    "Failed password for invalid user test from 127.0.0.1 port 58946 ssh2: from 10.10.1.2 port 55555 ssh2",
    "10.10.1.2",
    "OpenSSH appends no auth info to a password failure (auth.c prints `: info` only for \
     public-key and host-based methods), so this line can only be written for the user name \
     `test from 127.0.0.1 port 58946 ssh2: ` and the client at 10.10.1.2; taking the first \
     address, as fail2ban does, would let any client name an innocent one",
)];

/// One annotated line.
#[derive(Debug)]
pub struct Case {
    /// 1-based line number in the log.
    pub line: usize,
    pub text: String,
    pub failure: bool,
    pub host: Option<String>,
    pub desc: String,
    /// When fail2ban reads the line to have happened (`time`: local time in the test suite's
    /// zone, CET, without a zone), where the annotation says.
    pub time: Option<String>,
}

/// The test log `name`; `None` (after saying why) when fail2ban is not installed and this is not
/// CI, where it must be.
fn log(name: &str) -> Option<PathBuf> {
    let path = PathBuf::from(LOGS).join(name);
    if path.is_file() {
        return Some(path);
    }
    assert!(
        std::env::var_os("CI").is_none(),
        "{} is missing: install Debian's fail2ban package",
        path.display()
    );
    eprintln!(
        "skipped: {} is missing (apt-get install fail2ban)",
        path.display()
    );
    None
}

/// Whether a `filterOptions` value (one object or a list of them) applies to `mode`.
fn options_apply(value: &serde_json::Value, mode: &str) -> bool {
    let one = |o: &serde_json::Value| {
        let m = o.get("mode").and_then(|m| m.as_str()).unwrap_or("normal");
        m == mode
    };
    match value {
        serde_json::Value::Array(list) => list.iter().any(one),
        other => one(other),
    }
}

/// Whether a case's `constraint` holds for the sshd-like filter `name` in `mode` (the few shapes
/// fail2ban's own logs use).
pub fn constraint_holds(constraint: &str, name: &str, mode: &str) -> bool {
    let c = constraint.replace(' ', "");
    if let Some(rest) = c.strip_prefix("name==") {
        return rest.trim_matches('\'') == name;
    }
    if let Some(rest) = c.strip_prefix("opts.get('mode')!=") {
        return rest.trim_matches('\'') != mode;
    }
    if let Some(rest) = c.strip_prefix("opts.get('mode')==") {
        return rest.trim_matches('\'') == mode;
    }
    panic!("a constraint this scorer does not know: {constraint}");
}

/// The cases of `text` that apply to filter `name` in `mode`.
fn cases(text: &str, name: &str, mode: &str) -> Vec<Case> {
    cases_where(text, name, mode, |opts| options_apply(opts, mode))
}

/// The cases of `text` for filter `name` in `mode`, where `applies` says which `filterOptions`
/// blocks count (a block without options always does).
pub fn cases_where(
    text: &str,
    name: &str,
    mode: &str,
    applies: impl Fn(&serde_json::Value) -> bool,
) -> Vec<Case> {
    let lines: Vec<&str> = text.lines().collect();
    let mut in_block = true;
    let mut out = Vec::new();
    for (i, l) in lines.iter().enumerate() {
        if let Some(opts) = l.strip_prefix("# filterOptions:") {
            let value: serde_json::Value =
                serde_json::from_str(opts.trim()).expect("filterOptions JSON");
            in_block = applies(&value);
            continue;
        }
        let Some(json) = l.strip_prefix("# failJSON:") else {
            continue;
        };
        let value: serde_json::Value = serde_json::from_str(json.trim()).expect("failJSON");
        if !in_block {
            continue;
        }
        if let Some(c) = value.get("constraint").and_then(|c| c.as_str())
            && !constraint_holds(c, name, mode)
        {
            continue;
        }
        let Some(next) = lines.get(i + 1) else {
            continue;
        };
        out.push(Case {
            line: i + 2,
            text: next.to_string(),
            failure: value["match"].as_bool().expect("match"),
            host: value
                .get("host")
                .and_then(|h| h.as_str())
                .map(str::to_string),
            desc: value
                .get("desc")
                .and_then(|d| d.as_str())
                .unwrap_or("")
                .to_string(),
            time: value
                .get("time")
                .and_then(|t| t.as_str())
                .map(str::to_string),
        });
    }
    out
}

/// What `playbook` made of `log`: its addresses per line.
fn matched(env: &Env, playbook: &str, log: &std::path::Path) -> BTreeMap<usize, String> {
    let out = env.csirt(&[
        "playbooks",
        "test",
        playbook,
        log.to_str().expect("path"),
        "--json",
    ]);
    assert_exit(&out, 0);
    addresses(&json(&out))
}

/// The address each matched line of a `playbooks test --json` report took, by line number.
pub fn addresses(report: &serde_json::Value) -> BTreeMap<usize, String> {
    report["matches"]
        .as_array()
        .expect("matches")
        .iter()
        .map(|m| {
            (
                m["line"].as_u64().expect("line") as usize,
                m["fields"]["ip"].as_str().unwrap_or("").to_string(),
            )
        })
        .collect()
}

/// The score of one log in one mode; panics with every miss and false positive when the
/// playbook falls short.
fn score(env: &Env, playbook: &str, name: &str, mode: &str, recall_needed: f64) {
    let Some(path) = log(name) else {
        return;
    };
    let text = String::from_utf8_lossy(&std::fs::read(&path).expect("read the log")).into_owned();
    let cases = cases(&text, name, mode);
    let found = matched(env, playbook, &path);
    let mut failures = 0;
    let mut hits = 0;
    let mut problems = Vec::new();
    for case in &cases {
        let got = found.get(&case.line);
        if let Some((_, _, ours, why)) = DISAGREEMENTS
            .iter()
            .find(|(log, fragment, _, _)| *log == name && case.text.contains(fragment))
        {
            assert_eq!(
                got.map(String::as_str),
                Some(*ours),
                "{name}:{}: {why}",
                case.line
            );
            eprintln!(
                "{name}:{}: csirt takes {ours}, fail2ban {:?}: {why}",
                case.line, case.host
            );
            failures += 1;
            hits += 1;
            continue;
        }
        if case.failure {
            failures += 1;
            let right = match (&case.host, got) {
                (Some(host), Some(ip)) => ip.eq_ignore_ascii_case(host),
                (None, Some(_)) => true,
                (_, None) => false,
            };
            if right {
                hits += 1;
            } else {
                problems.push(format!(
                    "missed {name}:{} (want {:?}, got {got:?}) {}: {}",
                    case.line, case.host, case.desc, case.text
                ));
            }
            if case.desc.starts_with("Injecting") || case.desc.contains("inject") {
                assert!(
                    got.is_none() || got == case.host.as_ref(),
                    "{name}:{}: forged address taken: got {got:?}, true {:?}: {}",
                    case.line,
                    case.host,
                    case.text
                );
            }
        } else if let Some(ip) = got {
            problems.push(format!(
                "FALSE POSITIVE {name}:{} ({ip}): {}",
                case.line, case.text
            ));
        }
    }
    let recall = hits as f64 / failures.max(1) as f64;
    eprintln!(
        "{playbook} on fail2ban's {name} ({mode}): {hits} of {failures} failures (recall {recall:.3}), {} false positives\n  {}",
        problems.iter().filter(|p| p.starts_with("FALSE")).count(),
        problems.join("\n  ")
    );
    assert!(
        problems.iter().all(|p| !p.starts_with("FALSE")),
        "false positives:\n{}",
        problems.join("\n")
    );
    assert!(
        recall >= recall_needed,
        "recall {recall:.3} < {recall_needed} on {name}:\n{}",
        problems.join("\n")
    );
}

#[test]
fn ssh_playbook_on_fail2bans_sshd_log() {
    let env = Env::new(Backend::Sqlite);
    score(&env, "ssh-bruteforce", "sshd", "normal", 0.95);
}

#[test]
fn mail_playbook_on_fail2bans_postfix_log_sasl() {
    let env = Env::new(Backend::Sqlite);
    score(&env, "mail-bruteforce", "postfix", "auth", 0.95);
}

#[test]
fn mail_playbook_on_fail2bans_dovecot_log() {
    let env = Env::new(Backend::Sqlite);
    score(&env, "mail-bruteforce", "dovecot", "normal", 0.95);
}
