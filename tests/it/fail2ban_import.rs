//! `csirt playbooks import fail2ban` on the whole `filter.d` of Debian's fail2ban package (read
//! where the package installs it, never copied here), then every imported filter that has an
//! annotated test log scored on it through `csirt playbooks test --json`, as fail2ban's own test
//! suite reads the `# failJSON:` annotations (the reader of `fail2ban_logs`), in each filter's
//! default mode: match or not, the address, and the time where the annotation gives one, read
//! as fail2ban's suite reads it (in CET, with the logs read on 14 August 2005 at noon, which
//! places the lines without a year). Prints the table (filter, cases, recall, false positives,
//! times, or why it was not imported) that README's table is made from;
//! `bench/fail2ban_import.sh` prints it too.

use crate::fail2ban_logs::{Case, LOGS, addresses, cases_where};
use crate::helpers::*;
use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

const FILTERS: &str = "/etc/fail2ban/filter.d";

/// When fail2ban's test suite reads its logs (`TEST_NOW`, 2005-08-14 12:00 CEST): a line's
/// year, where it has none, is placed by it.
const TEST_NOW: i64 = 1_124_013_600;

/// Filters every city could run, and the recall each must reach on its own log. Below 1.0
/// only where fail2ban follows a connection over several lines (`<F-MLFID>`), which an
/// imported rule does not.
const FLOORS: &[(&str, f64)] = &[
    ("sshd", 0.75),
    ("postfix", 0.95),
    ("dovecot", 0.95),
    ("nginx-http-auth", 0.95),
    ("apache-auth", 0.95),
    ("vsftpd", 0.95),
    ("proftpd", 0.95),
    ("pure-ftpd", 0.95),
    ("courier-auth", 0.95),
    ("cyrus-imap", 0.95),
    ("exim", 0.95),
    ("named-refused", 0.95),
    ("mysqld-auth", 0.95),
    ("roundcube-auth", 0.95),
    ("nginx-limit-req", 0.95),
    ("apache-badbots", 0.95),
];

/// fail2ban is installed (or this is CI, where it must be).
fn installed() -> bool {
    if Path::new(FILTERS).is_dir() && Path::new(LOGS).is_dir() {
        return true;
    }
    assert!(
        std::env::var_os("CI").is_none(),
        "{FILTERS} is missing: install Debian's fail2ban package"
    );
    eprintln!("skipped: {FILTERS} is missing (apt-get install fail2ban)");
    false
}

/// The score of one filter on its log.
#[derive(Debug, Default)]
struct Score {
    cases: usize,
    failures: usize,
    hits: usize,
    false_positives: Vec<String>,
    misses: Vec<String>,
    /// Failures where a wrong address was taken, and "Injecting" lines (a forged address in
    /// the line) that were missed.
    wrong: Vec<String>,
    step_limit: u64,
    /// Failures found whose annotation gives a time, and those whose time differs from it.
    timed: usize,
    wrong_time: Vec<String>,
}

impl Score {
    fn recall(&self) -> f64 {
        if self.failures == 0 {
            1.0
        } else {
            self.hits as f64 / self.failures as f64
        }
    }
}

/// Whether a filterOptions block is the filter's default: no option but the default mode.
fn default_options(value: &serde_json::Value, mode: &str) -> bool {
    let one = |o: &serde_json::Value| {
        o.as_object().is_some_and(|o| {
            o.iter().all(|(k, v)| match (k.as_str(), v.as_str()) {
                ("mode", Some(m)) => m == mode,
                ("logtype", Some(t)) => t == "file",
                ("test.condition", Some(_)) => true,
                _ => false,
            })
        })
    };
    match value {
        serde_json::Value::Array(list) => list.iter().any(one),
        other => one(other),
    }
}

/// Two spellings of one address are one address.
fn same_host(a: &str, b: &str) -> bool {
    match (a.parse::<std::net::IpAddr>(), b.parse::<std::net::IpAddr>()) {
        (Ok(x), Ok(y)) => x == y,
        _ => a.eq_ignore_ascii_case(b),
    }
}

/// The instant a failJSON `time` names: local time in CET, as the suite's `time.mktime` reads
/// it under `TZ=CET-01CEST-02,M3.5.0,M10.5.0`.
fn annotated_time(time: &str) -> chrono::DateTime<chrono::Utc> {
    use chrono::TimeZone;
    let naive = chrono::NaiveDateTime::parse_from_str(time, "%Y-%m-%dT%H:%M:%S%.f")
        .unwrap_or_else(|e| panic!("failJSON time {time}: {e}"));
    chrono_tz::CET
        .from_local_datetime(&naive)
        .earliest()
        .unwrap_or_else(|| panic!("failJSON time {time} does not exist in CET"))
        .to_utc()
}

/// A copy of the test log last written when fail2ban's suite reads it: the dry run places a
/// line without a year by its file's time.
fn log_as_read(env: &Env, log: &Path) -> PathBuf {
    let copy = env
        .dir
        .path()
        .join("logs")
        .join(log.file_name().expect("name"));
    std::fs::create_dir_all(copy.parent().expect("dir")).expect("logs dir");
    std::fs::copy(log, &copy).expect("copy the log");
    let read = std::time::UNIX_EPOCH + std::time::Duration::from_secs(TEST_NOW.unsigned_abs());
    std::fs::File::options()
        .write(true)
        .open(&copy)
        .and_then(|f| f.set_modified(read))
        .expect("set the log's time");
    copy
}

fn score(env: &Env, playbook: &Path, name: &str, mode: &str, log: &Path) -> Score {
    let text = String::from_utf8_lossy(&std::fs::read(log).expect("read the log")).into_owned();
    let cases: Vec<Case> = cases_where(&text, name, mode, |o| default_options(o, mode));
    let copy = log_as_read(env, log);
    let out = env.csirt(&[
        "playbooks",
        "test",
        playbook.to_str().expect("path"),
        copy.to_str().expect("path"),
        "--json",
    ]);
    assert_exit(&out, 0);
    let report = json(&out);
    let found = addresses(&report);
    let times: BTreeMap<usize, String> = report["matches"]
        .as_array()
        .expect("matches")
        .iter()
        .map(|m| {
            (
                m["line"].as_u64().expect("line") as usize,
                m["time"].as_str().expect("time").to_string(),
            )
        })
        .collect();
    let mut s = Score {
        cases: cases.len(),
        step_limit: report["step_limit"]
            .as_object()
            .map_or(0, |o| o.values().filter_map(|v| v.as_u64()).sum()),
        ..Score::default()
    };
    for case in &cases {
        let got = found.get(&case.line);
        if !case.failure {
            if let Some(ip) = got {
                s.false_positives
                    .push(format!("{name}:{} ({ip}): {}", case.line, case.text));
            }
            continue;
        }
        s.failures += 1;
        match (got, &case.host) {
            (Some(ip), Some(host)) if !same_host(ip, host) => s.wrong.push(format!(
                "{name}:{} took {ip}, fail2ban {host} ({}): {}",
                case.line, case.desc, case.text
            )),
            (Some(_), _) => {
                s.hits += 1;
                if let (Some(time), Some(got)) = (&case.time, times.get(&case.line)) {
                    s.timed += 1;
                    let got = chrono::DateTime::parse_from_rfc3339(got)
                        .expect("RFC 3339")
                        .to_utc();
                    if got != annotated_time(time) {
                        s.wrong_time.push(format!(
                            "{name}:{} at {got}, fail2ban {time} CET: {}",
                            case.line, case.text
                        ));
                    }
                }
            }
            // A line that forges an address must still be attributed, to the true one.
            (None, _) if case.desc.to_ascii_lowercase().contains("inject") => s.wrong.push(
                format!("{name}:{} missed ({}): {}", case.line, case.desc, case.text),
            ),
            (None, _) => s
                .misses
                .push(format!("{name}:{} {}: {}", case.line, case.desc, case.text)),
        }
    }
    s
}

#[test]
fn imported_filters_pass_check_and_score_on_fail2bans_logs() {
    if !installed() {
        return;
    }
    let env = Env::new(Backend::Sqlite);
    // fail2ban's test suite reads its logs in CET.
    let config = std::fs::read_to_string(&env.config).expect("config");
    env.write_config(&format!("timezone = \"CET\"\n{config}"));
    let out_dir: PathBuf = env.dir.path().join("imported");
    let out = env.csirt(&[
        "playbooks",
        "import",
        "fail2ban",
        FILTERS,
        "--out",
        out_dir.to_str().expect("path"),
        "--json",
    ]);
    assert_exit(&out, 0);
    let report = json(&out);
    let filters = report.as_array().expect("one entry per filter");
    // Every written file passes the check, all at once.
    let check = env.csirt(&["playbooks", "check", out_dir.to_str().expect("path")]);
    assert_exit(&check, 0);

    let mut table = Vec::new();
    let mut totals = (0usize, 0usize, 0usize, 0usize, 0usize);
    let mut scores = BTreeMap::new();
    for f in filters {
        let name = f["filter"].as_str().expect("filter");
        let log = Path::new(LOGS).join(name);
        if f["status"] == "left out" {
            table.push(format!(
                "| {name} | | | | | left out: {} |",
                f["reason"].as_str().unwrap_or("")
            ));
            continue;
        }
        let file = PathBuf::from(f["file"].as_str().expect("file"));
        assert!(file.is_file(), "{}", file.display());
        if !log.is_file() {
            table.push(format!("| {name} | | | | | no test log |"));
            continue;
        }
        let mode = f["mode"].as_str().unwrap_or("normal");
        let s = score(&env, &file, name, mode, &log);
        totals.0 += s.failures;
        totals.1 += s.hits;
        totals.2 += s.false_positives.len();
        totals.3 += s.timed;
        totals.4 += s.wrong_time.len();
        table.push(format!(
            "| {name} | {} | {:.2} | {} | {} | {} rules{}{} |",
            s.cases,
            s.recall(),
            s.false_positives.len(),
            if s.timed == 0 {
                "-".to_string()
            } else {
                format!("{}/{}", s.timed - s.wrong_time.len(), s.timed)
            },
            f["rules"],
            if f["backtracking"].as_u64().unwrap_or(0) > 0 {
                format!(", {} backtracking", f["backtracking"])
            } else {
                String::new()
            },
            if s.step_limit > 0 {
                format!(", step limit on {} lines", s.step_limit)
            } else {
                String::new()
            }
        ));
        scores.insert(name.to_string(), s);
    }
    let imported = filters.iter().filter(|f| f["status"] == "imported").count();
    let good = scores
        .values()
        .filter(|s| s.recall() >= 0.95 && s.false_positives.is_empty())
        .count();
    eprintln!(
        "imported {imported} of {} filter files; recall {:.3} ({} of {} failures), {} false positives on their own logs; {good} filters with recall >= 0.95 and no false positive; times {} of {} as fail2ban reads them",
        filters.len(),
        totals.1 as f64 / totals.0.max(1) as f64,
        totals.1,
        totals.0,
        totals.2,
        totals.3 - totals.4,
        totals.3,
    );
    eprintln!("| filter | cases | recall | false positives | time | |\n|---|---|---|---|---|---|");
    for row in &table {
        eprintln!("{row}");
    }
    for s in scores.values() {
        for line in s
            .wrong
            .iter()
            .chain(&s.false_positives)
            .chain(&s.wrong_time)
        {
            eprintln!("  {line}");
        }
    }

    assert!(imported >= 80, "only {imported} filters imported");
    for (name, floor) in FLOORS {
        let s = scores
            .get(*name)
            .unwrap_or_else(|| panic!("{name} was not imported or has no log"));
        assert!(
            s.recall() >= *floor,
            "{name}: recall {:.3} < {floor}:\n{}",
            s.recall(),
            s.misses.join("\n")
        );
        assert!(
            s.false_positives.is_empty(),
            "{name}: false positives:\n{}",
            s.false_positives.join("\n")
        );
    }
    // A forged address is never taken: a failure is attributed to fail2ban's host or not at
    // all, and every "Injecting" failure is attributed to the true address.
    let wrong: Vec<&String> = scores.values().flat_map(|s| &s.wrong).collect();
    assert!(wrong.is_empty(), "wrong addresses:\n{wrong:#?}");
    // Every failure found is placed at the time fail2ban reads in its line.
    let wrong_time: Vec<&String> = scores.values().flat_map(|s| &s.wrong_time).collect();
    assert!(wrong_time.is_empty(), "wrong times:\n{wrong_time:#?}");
    assert!(totals.3 > 600, "only {} failures with a time", totals.3);
}

/// A playbook a user could write with the backtracking engine, whose pattern a crafted line
/// blows up (every `a` may be either branch).
const BLOWUP: &str = r#"
id = "blowup"
title = "blowup ({ip})"
category = "不正アクセス"
severity = "low"
dedupe = ["ip"]
[[rule]]
source = "log"
strip = '^([A-Z][a-z]{2} [ 0-9]?[0-9] [0-9:]{8})'
engine = "backtrack"
pattern = '^ \S+ app\[\d+\]: (?:(?P<x>a)|a)*\k<x>b from (?P<ip>[0-9.]+)$'
[[step]]
text = "x"
"#;

#[test]
fn an_imported_filter_runs_in_the_daemon_and_a_step_limit_shows_in_status() {
    use crate::logs::{Daemon, append, configure_default, failure, log_dir, with_store};
    if !installed() {
        return;
    }
    let env = Env::new(Backend::Sqlite);
    configure_default(&env);
    let playbooks = env.playbooks();
    let sshd = format!("{FILTERS}/sshd.conf");
    let out = env.csirt(&[
        "playbooks",
        "import",
        "fail2ban",
        &sshd,
        "--out",
        playbooks.to_str().expect("path"),
    ]);
    assert_exit(&out, 0);
    assert!(
        stdout(&out).contains("sshd: 取り込み (imported)"),
        "{}",
        stdout(&out)
    );
    std::fs::write(playbooks.join("blowup.toml"), BLOWUP).expect("write");
    let check = env.csirt(&["playbooks", "check"]);
    assert_exit(&check, 0);

    let mut daemon = Daemon::start(&env);
    let auth = log_dir(&env).join("auth.log");
    let mut lines = String::new();
    for s in 0..5 {
        lines += &failure("198.51.100.23", s);
    }
    lines += &format!(
        "Nov  3 10:01:00 it-host app[7]: {}c b from 198.51.100.24\n",
        "a".repeat(64)
    );
    append(&auth, lines);
    let title = daemon.wait("the imported playbook's incident", &env, |env| {
        let out = env.csirt(&["incidents", "list", "--json", "--playbook", "fail2ban-sshd"]);
        let list = json(&out);
        list.as_array()
            .filter(|l| l.len() == 1)
            .map(|l| l[0]["title"].as_str().unwrap_or("").to_string())
    });
    assert_eq!(title, "fail2ban sshd (198.51.100.23)");
    daemon.wait("the step limit in csirt status", &env, |env| {
        let errors = with_store(env, "recent errors", async |store| {
            store.recent_errors(50).await
        });
        errors
            .iter()
            .any(|e| e.message.contains("blowup/rule-1") && e.message.contains("step limit"))
            .then_some(())
    });
    let status = env.csirt(&["status"]);
    assert!(
        stdout(&status).contains("step limit"),
        "{}",
        stdout(&status)
    );
    daemon.stop();
}

/// With `--jail`, an imported filter's rules read the jail's `logpath` (its file names, as
/// `files`) and the importer says so; without, they read every file, and it says that.
#[test]
fn a_jails_logpath_becomes_the_imported_rules_files() {
    if !installed() {
        return;
    }
    let env = Env::new(Backend::Sqlite);
    let jail = env.dir.path().join("jail.conf");
    std::fs::write(
        &jail,
        "[DEFAULT]\nmaxretry = 3\n[sshd]\nenabled = true\nlogpath = /var/log/auth.log\n",
    )
    .expect("write the jail");
    let sshd = format!("{FILTERS}/sshd.conf");
    let playbooks = env.playbooks();
    let import = |jail: Option<&Path>| {
        let mut args = vec!["playbooks", "import", "fail2ban", &sshd];
        if let Some(jail) = jail {
            args.extend(["--jail", jail.to_str().expect("path")]);
        }
        args.extend(["--out", playbooks.to_str().expect("path")]);
        let out = env.csirt(&args);
        assert_exit(&out, 0);
        stdout(&out)
    };
    let said = import(Some(&jail));
    assert!(
        said.contains("読むログ (files): auth.log* (jail の logpath: /var/log/auth.log)"),
        "{said}"
    );
    let text = std::fs::read_to_string(playbooks.join("fail2ban-sshd.toml")).expect("the playbook");
    assert!(text.contains("files = [\"auth.log*\"]"), "{text}");

    // The whole set as the daemon applies it to a file of each name.
    let logs = env.dir.path().join("log");
    std::fs::create_dir_all(&logs).expect("log dir");
    let lines: String = (0..5)
        .map(|i| {
            format!(
                "Nov  3 10:00:0{i} gw sshd[7]: Failed password for root from 198.51.100.7 port 22 ssh2\n"
            )
        })
        .collect();
    let opened = |name: &str| -> Vec<String> {
        let path = logs.join(name);
        std::fs::write(&path, &lines).expect("write the log");
        let out = env.csirt(&[
            "playbooks",
            "test",
            "all",
            path.to_str().expect("path"),
            "--json",
        ]);
        assert_exit(&out, 0);
        json(&out)["incidents"]
            .as_array()
            .expect("incidents")
            .iter()
            .map(|i| i["playbook"].as_str().expect("playbook").to_string())
            .collect()
    };
    assert!(opened("auth.log").contains(&"fail2ban-sshd".to_string()));
    assert!(!opened("app.log").contains(&"fail2ban-sshd".to_string()));

    // Without a jail: today's behaviour, said.
    let said = import(None);
    assert!(
        said.contains("読むログ (files): 設定の [[logs]] のすべて (no --jail"),
        "{said}"
    );
    assert!(opened("app.log").contains(&"fail2ban-sshd".to_string()));
}
