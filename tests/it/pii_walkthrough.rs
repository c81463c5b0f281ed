//! The README's walkthrough of a misdelivered mail to 480 addresses (#16), run as written
//! through the real binary on both backends: every `csirt` command of its example block, in
//! order, with the incident number and the times moved to now, must succeed and print each of
//! the `#   ` lines under it (`…` stands for what varies). A README that drifts from the CLI fails
//! here, not in a responder's hands.

use crate::helpers::*;
use crate::on_both_backends;
use chrono::{NaiveDateTime, TimeDelta, Timelike};

on_both_backends!(the_readme_walkthrough_runs_as_written);

/// The heading of the walkthrough in README.md.
const HEADING: &str = "### 例: 480 件のアドレスを TO に入れて送ったメール (BCC の入れ忘れ)";
/// The incident number the README uses.
const README_ID: &str = "42";
/// 覚知 as the README writes it (JST, the config's zone).
const README_AWARE: &str = "2026-12-01 09:30";

/// One command of the block and the output lines it must print.
#[derive(Debug)]
struct Step {
    command: String,
    expected: Vec<String>,
}

/// The `sh` block under the heading, as steps.
fn readme_steps() -> Vec<Step> {
    let readme = std::fs::read_to_string(repo().join("README.md")).expect("README.md");
    let after = &readme[readme.find(HEADING).expect("the walkthrough's heading")..];
    let start = after.find("```sh\n").expect("its sh block") + "```sh\n".len();
    let block = &after[start..start + after[start..].find("```").expect("the block's end")];
    let mut steps: Vec<Step> = Vec::new();
    for line in block.lines() {
        if line.starts_with("csirt ") {
            steps.push(Step {
                command: line.to_string(),
                expected: Vec::new(),
            });
        } else if let Some(shown) = line.strip_prefix("#   ") {
            steps
                .last_mut()
                .expect("a shown line follows a command")
                .expected
                .push(shown.trim().to_string());
        } else if !line.trim().is_empty() {
            // A comment between steps: what shown lines follow belong to no command.
            assert!(
                line.starts_with("# "),
                "neither a command nor a comment: {line}"
            );
        }
    }
    steps
}

/// A command line as the shell splits it: words, "double-quoted" words, and a trailing
/// `# comment` dropped.
fn words(line: &str) -> Vec<String> {
    let mut out = Vec::new();
    let mut word = String::new();
    let (mut quoted, mut in_word) = (false, false);
    for c in line.chars() {
        match c {
            '"' => {
                quoted = !quoted;
                in_word = true;
            }
            '#' if !quoted && !in_word => break,
            c if c.is_whitespace() && !quoted => {
                if in_word {
                    out.push(std::mem::take(&mut word));
                    in_word = false;
                }
            }
            c => {
                word.push(c);
                in_word = true;
            }
        }
    }
    if in_word {
        out.push(word);
    }
    out
}

/// Every `YYYY-MM-DD HH:MM[:SS]` in `text` moved by `delta`.
fn shifted(text: &str, delta: TimeDelta) -> String {
    let times = regex::Regex::new(r"\d{4}-\d\d-\d\d \d\d:\d\d(:\d\d)?").expect("regex");
    times
        .replace_all(text, |c: &regex::Captures<'_>| {
            let seconds = c.get(1).is_some();
            let parsed = if seconds {
                NaiveDateTime::parse_from_str(&c[0], "%Y-%m-%d %H:%M:%S")
            } else {
                NaiveDateTime::parse_from_str(&c[0], "%Y-%m-%d %H:%M")
            }
            .expect("a README time");
            let moved = parsed + delta;
            moved
                .format(if seconds {
                    "%Y-%m-%d %H:%M:%S"
                } else {
                    "%Y-%m-%d %H:%M"
                })
                .to_string()
        })
        .into_owned()
}

fn collapsed(s: &str) -> String {
    s.split_whitespace().collect::<Vec<_>>().join(" ")
}

/// Whether one line of `output` holds the pieces of `expected` (split at `…`) in order.
fn shown(output: &str, expected: &str) -> bool {
    let pieces: Vec<String> = expected.split('…').map(collapsed).collect();
    output.lines().map(collapsed).any(|line| {
        let mut at = 0;
        pieces.iter().all(|p| match line[at..].find(p.as_str()) {
            Some(i) => {
                at += i + p.len();
                true
            }
            None => false,
        })
    })
}

fn the_readme_walkthrough_runs_as_written(backend: Backend) {
    let env = Env::new(backend);
    // The report as the README tells it, arriving at the intake address.
    let report = "From: kikaku@city.kitakami.example.jp\r\n\
                  To: csirt@city.kitakami.example.jp\r\n\
                  Subject: =?UTF-8?B?44Oh44O844Or6Kqk6YCB5L+h44Gu5aCx5ZGK?=\r\n\
                  Message-ID: <walkthrough-1@city.kitakami.example.jp>\r\n\
                  MIME-Version: 1.0\r\n\
                  Content-Type: text/plain; charset=utf-8\r\n\
                  Content-Transfer-Encoding: 8bit\r\n\
                  \r\n\
                  企画課です。本日 9:30、イベント案内メールを BCC に入れず、480 件のアドレスを TO に入れて送信してしまいました。\r\n";
    let out = env.intake(report.as_bytes());
    assert_exit(&out, 0);
    let id: i64 = stderr(&out)
        .rsplit_once("opened incident #")
        .and_then(|(_, n)| n.trim().parse().ok())
        .unwrap_or_else(|| panic!("not opened: {}", stderr(&out)));

    // The README's 覚知 becomes an hour ago (to the minute), every other time with it.
    let tz = chrono_tz::Asia::Tokyo;
    let now = csirt::model::now().with_timezone(&tz).naive_local();
    let now = now
        .with_second(0)
        .and_then(|t| t.with_nanosecond(0))
        .expect("minute");
    let aware = NaiveDateTime::parse_from_str(README_AWARE, "%Y-%m-%d %H:%M").expect("README 覚知");
    let delta = now - TimeDelta::hours(1) - aware;

    let steps = readme_steps();
    assert!(
        steps.len() >= 12,
        "the walkthrough lost its commands: {steps:#?}"
    );
    for step in &steps {
        let argv: Vec<String> = words(&shifted(&step.command, delta))
            .into_iter()
            .map(|w| if w == README_ID { id.to_string() } else { w })
            .collect();
        assert_eq!(argv[0], "csirt", "{}", step.command);
        let args: Vec<&str> = argv[1..].iter().map(String::as_str).collect();
        let out = env.csirt(&args);
        assert_exit(&out, 0);
        let text = stdout(&out);
        for expected in &step.expected {
            let expected =
                shifted(expected, delta).replace(&format!("#{README_ID}"), &format!("#{id}"));
            assert!(
                shown(&text, &expected),
                "`{}` did not print\n  {expected}\n--- it printed\n{text}",
                step.command
            );
        }
    }

    // What the walkthrough promised beyond its output: the CISO group was told once, and the
    // incident ended closed at L3 with every statutory clock done.
    block_on(async {
        let store = env.store().await;
        let told: Vec<_> = store
            .outbox()
            .await
            .expect("outbox")
            .into_iter()
            .filter(|m| m.incident_id == Some(id) && m.kind == "raised")
            .collect();
        assert_eq!(told.len(), 1, "{told:#?}");
        assert!(
            told[0]
                .recipients()
                .contains(&"ciso@example.jp".to_string())
        );
        store.close().await;
    });
    let v = json(&env.csirt(&["incidents", "show", &id.to_string(), "--json"]));
    assert_eq!(
        (
            v["status"].clone(),
            v["severity"].clone(),
            v["level"].clone()
        ),
        ("closed".into(), "critical".into(), "L3".into())
    );
    assert!(
        v["pii"]["clocks"]
            .as_array()
            .is_some_and(|c| !c.is_empty() && c.iter().all(|c| c["state"] == "done")),
        "{:#}",
        v["pii"]
    );
}

#[test]
fn the_walkthrough_parser_reads_the_shell_as_written() {
    assert_eq!(
        words(r#"csirt incidents pii 42 --aware-at "2026-12-01 09:30"   # 覚知"#),
        [
            "csirt",
            "incidents",
            "pii",
            "42",
            "--aware-at",
            "2026-12-01 09:30"
        ]
    );
    assert_eq!(
        shifted(
            "期限 2026-12-06 09:30:00 JST; 2026-12-01 09:30",
            TimeDelta::minutes(45)
        ),
        "期限 2026-12-06 10:15:00 JST; 2026-12-01 10:15"
    );
    assert!(shown("  a   b c\n", "a b…c"));
    assert!(!shown("c a b\n", "a b…c"));
}
