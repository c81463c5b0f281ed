//! Personal-information incidents (#16) through the real binary on both backends: the facts
//! decide whether a report to 個人情報保護委員会 and a notification are required, the clocks
//! run from 覚知 and move with it, the escalator's deadline reminders fire (driven with explicit
//! times, as tests/it/escalation.rs does) until `reported` records the report, `list --overdue`
//! is the morning check, and `export` fills the forms. Hostile text stays inert in every view.

use crate::helpers::*;
use crate::on_both_backends;
use chrono::{DateTime, SecondsFormat, SubsecRound, TimeDelta, Utc};
use csirt::model::{Actor, Severity, now};

on_both_backends!(
    facts_decide_whether_a_report_is_required,
    a_misdelivered_mail_from_facts_to_the_final_report,
    hostile_text_is_inert_in_show_and_export,
);

/// A time as `--aware-at` and `--at` take it.
pub(crate) fn rfc3339(t: DateTime<Utc>) -> String {
    t.to_rfc3339_opts(SecondsFormat::Secs, true)
}

fn time(v: &serde_json::Value) -> DateTime<Utc> {
    DateTime::parse_from_rfc3339(v.as_str().unwrap_or_else(|| panic!("not a time: {v}")))
        .expect("RFC 3339")
        .to_utc()
}

/// `csirt incidents pii ID ARGS --json`, which must succeed.
fn pii(env: &Env, id: i64, args: &[&str]) -> serde_json::Value {
    let id = id.to_string();
    let mut all = vec!["incidents", "pii", id.as_str()];
    all.extend_from_slice(args);
    all.push("--json");
    let out = env.csirt(&all);
    assert_exit(&out, 0);
    json(&out)
}

/// `csirt incidents reported ID ARGS`.
fn report(env: &Env, id: &str, args: &[&str]) -> std::process::Output {
    let mut all = vec!["incidents", "reported", id];
    all.extend_from_slice(args);
    env.csirt(&all)
}

/// The clock of `to`/`kind` in a `pii --json` answer.
fn clock<'a>(v: &'a serde_json::Value, duty: &str, kind: &str) -> &'a serde_json::Value {
    v["clocks"]
        .as_array()
        .expect("clocks")
        .iter()
        .find(|c| c["duty"] == duty && c["kind"] == kind)
        .unwrap_or_else(|| panic!("no {duty} {kind} clock in {v:#}"))
}

fn leak(env: &Env, key: &str, title: &str) -> i64 {
    env.open("info-leak", key, title, Severity::Critical)
}

/// The table: one person with 要配慮 requires it; 100 persons do not, 101 do; strong
/// encryption takes it out; 不正の目的 makes 確報 60 days.
fn facts_decide_whether_a_report_is_required(backend: Backend) {
    let env = Env::new(backend);
    let id = leak(&env, "k1", "誤送付");
    let aware = (now() - TimeDelta::hours(1)).trunc_subsecs(0);
    let v = pii(
        &env,
        id,
        &["--persons", "100", "--aware-at", &rfc3339(aware)],
    );
    assert_eq!(v["ppc_required"], false, "{v:#}");
    assert_eq!(v["clocks"].as_array().map(Vec::len), Some(0));
    assert_eq!(time(&v["facts"]["aware_at"]), aware);

    let v = pii(&env, id, &["--persons", "101"]);
    assert_eq!(v["ppc_required"], true, "{v:#}");
    assert_eq!(v["person_notice_required"], true);
    let sokuhou = clock(&v, "ppc", "速報");
    assert_eq!(time(&sokuhou["warn_at"]), aware + TimeDelta::days(3));
    assert_eq!(time(&sokuhou["due_at"]), aware + TimeDelta::days(5));
    assert_eq!(
        time(&clock(&v, "ppc", "確報")["due_at"]),
        aware + TimeDelta::days(30)
    );
    let reason = v["decisions"][0]["reasons"][0]["source"]
        .as_str()
        .unwrap_or("");
    assert!(reason.contains("第43条第4号"), "{v:#}");

    let v = pii(&env, id, &["--malicious"]);
    assert_eq!(
        time(&clock(&v, "ppc", "確報")["due_at"]),
        aware + TimeDelta::days(60),
        "不正の目的: 60 days"
    );

    let v = pii(&env, id, &["--encrypted"]);
    assert_eq!(v["ppc_required"], false, "{v:#}");
    assert_eq!(v["clocks"].as_array().map(Vec::len), Some(0));
    let text = v["decisions"][0]["reasons"][0]["text"]
        .as_str()
        .unwrap_or("");
    assert!(text.contains("高度な暗号化"), "{v:#}");

    // Unset: encryption 未確認 again, the report is required again (never assume it away).
    let v = pii(&env, id, &["--unset", "encrypted", "--unset", "malicious"]);
    assert_eq!(v["facts"]["encrypted"], serde_json::Value::Null);
    assert_eq!(v["ppc_required"], true);
    assert_eq!(
        time(&clock(&v, "ppc", "確報")["due_at"]),
        aware + TimeDelta::days(30)
    );

    // One person with 要配慮個人情報 is enough.
    let one = leak(&env, "k2", "要配慮の誤送付");
    let v = pii(&env, one, &["--persons", "1", "--sensitive"]);
    assert_eq!(v["ppc_required"], true, "{v:#}");

    // Every change is in the timeline with its actor.
    let show = env.csirt(&["incidents", "show", &id.to_string(), "--json"]);
    assert_exit(&show, 0);
    let timeline = json(&show)["timeline"].clone();
    let changes: Vec<&serde_json::Value> = timeline
        .as_array()
        .expect("timeline")
        .iter()
        .filter(|t| t["action"] == "pii")
        .collect();
    assert_eq!(changes.len(), 5, "{timeline:#}");
    let me = Actor::current_user();
    assert!(changes.iter().all(|t| t["actor"] == me.as_str()));
    assert!(
        changes[1]["detail"]
            .as_str()
            .is_some_and(|d| d.contains("本人の数: 100人 → 101人") && d.contains("必要")),
        "{:#}",
        changes[1]
    );

    // 覚知 in the future is a typo that would make every deadline late: refused.
    let next_year = rfc3339(now() + TimeDelta::days(365));
    let out = env.csirt(&[
        "incidents",
        "pii",
        &id.to_string(),
        "--aware-at",
        &next_year,
    ]);
    assert_exit(&out, 1);
    assert!(stderr(&out).contains("in the future"), "{}", stderr(&out));

    // Unknown fact names and a non-number are usage errors, not silent.
    assert_exit(
        &env.csirt(&["incidents", "pii", &id.to_string(), "--unset", "colour"]),
        1,
    );
    assert_exit(
        &env.csirt(&["incidents", "pii", &id.to_string(), "--persons", "-3"]),
        2,
    );
}

/// The "done when": a mail to 480 addresses, from the first facts to the 確報, with the
/// reminders coming from the escalator and stopping once each report is recorded.
fn a_misdelivered_mail_from_facts_to_the_final_report(backend: Backend) {
    let env = Env::new(backend);
    let reported = leak(&env, "m1", "メール誤送信 (BCC に入れず 480 件)");
    let forgotten = leak(&env, "m2", "メール誤送信 (もう一件)");
    let t0 = now();
    // Learned of 2 days 23 hours ago: the 3-day warnings come in an hour.
    let aware = (t0 - TimeDelta::days(3) + TimeDelta::hours(1)).trunc_subsecs(0);
    for id in [reported, forgotten] {
        pii(
            &env,
            id,
            &["--persons", "480", "--aware-at", &rfc3339(aware)],
        );
    }
    block_on(async {
        let composer = env.composer();
        let interval = TimeDelta::minutes(15);
        let reminders = |pass: &csirt::store::EscalatorPass, id: i64| -> Vec<String> {
            let mut r: Vec<String> = pass
                .reminders
                .iter()
                .filter(|(i, _)| *i == id)
                .map(|(_, name)| name.clone())
                .collect();
            r.sort();
            r
        };
        let store = env.store().await;
        let early = store
            .escalate("node-a", t0 + TimeDelta::minutes(1), interval, &composer)
            .await
            .expect("pass before the warning");
        assert!(reminders(&early, reported).is_empty(), "{early:?}");
        store.close().await;

        // A restart between passes changes nothing: everything is in the store.
        let store = env.store().await;
        let warned = store
            .escalate("node-a", t0 + TimeDelta::hours(2), interval, &composer)
            .await
            .expect("pass after the warning");
        for id in [reported, forgotten] {
            assert_eq!(
                reminders(&warned, id),
                ["個人情報保護委員会への速報", "本人への通知 (速やかに)"],
                "{warned:?}"
            );
        }
        let again = store
            .escalate("node-b", t0 + TimeDelta::hours(3), interval, &composer)
            .await
            .expect("a second daemon's pass");
        assert!(again.reminders.is_empty(), "at most once: {again:?}");
        let outbox = store.outbox().await.expect("outbox");
        let mail = outbox
            .iter()
            .find(|m| {
                m.kind == "reminder"
                    && m.incident_id == Some(reported)
                    && m.body.contains("「個人情報保護委員会への速報」")
            })
            .expect("the reminder is mailed");
        assert!(
            mail.body.contains("が近づいています")
                && mail
                    .body
                    .contains(&format!("csirt incidents reported {reported} --to")),
            "{}",
            mail.body
        );
        store.close().await;
    });

    // The 速報 is made for one incident, and the persons notified.
    let id = reported.to_string();
    let out = report(
        &env,
        &id,
        &["--to", "ppc", "--kind", "速報", "--ref", "PPC-2026-0042"],
    );
    assert_exit(&out, 0);
    assert!(
        stdout(&out).contains("期限を停止: 個人情報保護委員会への速報"),
        "{}",
        stdout(&out)
    );
    let out = report(
        &env,
        &id,
        &[
            "--to",
            "person",
            "--kind",
            "通知",
            "--note",
            "480件に謝罪のメールを送付",
        ],
    );
    assert_exit(&out, 0);

    block_on(async {
        let composer = env.composer();
        let store = env.store().await;
        // Past the 5-day deadline: only the incident without the report is reminded, as overdue.
        let late = store
            .escalate(
                "node-a",
                aware + TimeDelta::days(5) + TimeDelta::minutes(1),
                TimeDelta::minutes(15),
                &composer,
            )
            .await
            .expect("pass after the deadline");
        let names = |id: i64| -> Vec<String> {
            late.reminders
                .iter()
                .filter(|(i, _)| *i == id)
                .map(|(_, n)| n.clone())
                .collect()
        };
        assert_eq!(
            names(forgotten),
            ["個人情報保護委員会への速報 (期限超過)"],
            "{late:?}"
        );
        assert!(
            names(reported).is_empty(),
            "reported: no reminder: {late:?}"
        );
        let outbox = store.outbox().await.expect("outbox");
        assert!(
            outbox.iter().any(|m| m.incident_id == Some(forgotten)
                && m.body
                    .contains("「個人情報保護委員会への速報 (期限超過)」を過ぎています")),
            "the overdue mail says so"
        );
        // Still not reported a day later: reminded again, once a day, never for the reported.
        let next_day = store
            .escalate(
                "node-a",
                aware + TimeDelta::days(6) + TimeDelta::minutes(1),
                TimeDelta::minutes(15),
                &composer,
            )
            .await
            .expect("a day later");
        let overdue: Vec<&(i64, String)> = next_day
            .reminders
            .iter()
            .filter(|(_, n)| n.contains("期限超過"))
            .collect();
        assert_eq!(
            overdue,
            [&(
                forgotten,
                "個人情報保護委員会への速報 (期限超過 1日)".to_string()
            )],
            "{next_day:?}"
        );
        store.close().await;
    });

    // The morning check by the wall clock: nothing yet (the warnings come in an hour).
    let overdue = env.csirt(&["incidents", "list", "--overdue", "--json"]);
    assert_exit(&overdue, 0);
    assert_eq!(json(&overdue), serde_json::json!([]));

    // 覚知 was earlier than first thought: the clocks move back, and the 速報 is overdue now.
    pii(
        &env,
        forgotten,
        &["--aware-at", &rfc3339(aware - TimeDelta::days(3))],
    );
    let overdue = env.csirt(&["incidents", "list", "--overdue"]);
    assert_exit(&overdue, 0);
    let text = stdout(&overdue);
    assert!(
        text.contains(&format!("#{forgotten}")) && text.contains("期限超過"),
        "{text}"
    );
    assert!(!text.contains(&format!("#{reported} ")), "{text}");

    // show lists required, made and overdue.
    let show = env.csirt(&["incidents", "show", &id]);
    assert_exit(&show, 0);
    let text = stdout(&show);
    for expected in [
        "【済】 個人情報保護委員会への速報",
        "【済】 本人への通知",
        "【未了】 個人情報保護委員会への確報",
        "受付番号等: PPC-2026-0042",
        "第43条第4号",
    ] {
        assert!(text.contains(expected), "{expected} not in\n{text}");
    }

    // The 確報: the PPC form, filled from the store.
    let form = env.csirt(&["incidents", "export", &id, "--form", "ppc"]);
    assert_exit(&form, 0);
    let text = stdout(&form);
    for expected in [
        "■ 報告の種類 (速報/確報)\n  確報",
        "■ 漏えい等が発生し又は発生したおそれがある保有個人情報に係る本人の数\n  480人",
        "■ 本人への対応の実施状況\n  ",
        "480件に謝罪のメールを送付",
        "■ 再発防止のための措置\n  【未記入】",
        "PPC-2026-0042",
    ] {
        assert!(text.contains(expected), "{expected:?} not in\n{text}");
    }
    let form = env.csirt(&[
        "incidents",
        "export",
        &id,
        "--form",
        "ppc",
        "--format",
        "json",
    ]);
    assert_exit(&form, 0);
    let v = json(&form);
    let field = |key: &str| {
        v["fields"]
            .as_array()
            .expect("fields")
            .iter()
            .find(|f| f["key"] == key)
            .unwrap_or_else(|| panic!("no {key}"))["value"]
            .clone()
    };
    assert_eq!(field("persons"), "480人");
    assert_eq!(field("prevention"), serde_json::Value::Null);
    let common = env.csirt(&[
        "incidents",
        "export",
        &id,
        "--form",
        "common",
        "--format",
        "json",
    ]);
    assert_exit(&common, 0);
    assert_eq!(json(&common)["form"], "common");

    // The 確報 made: nothing of this incident is pending.
    let out = report(&env, &id, &["--to", "ppc", "--kind", "確報"]);
    assert_exit(&out, 0);
    let v = pii(&env, reported, &[]);
    assert!(
        v["clocks"]
            .as_array()
            .expect("clocks")
            .iter()
            .all(|c| c["state"] == "done"),
        "{v:#}"
    );
}

/// A mail subject (the incident's title) and fields are the attacker's; a note is a
/// responder's but may be pasted from anywhere. Neither reaches a terminal raw.
fn hostile_text_is_inert_in_show_and_export(backend: Backend) {
    let env = Env::new(backend);
    // A NUL reaches only SQLite: PostgreSQL refuses it in text, and ingest and intake turn it
    // into U+2400 before any store sees it.
    let nul = if backend == Backend::Sqlite { "\0" } else { "" };
    let hostile = format!("誤送信\u{1b}[2J\u{1b}]0;pwned\u{7}\r偽の行{nul}NUL\u{202e}");
    let hostile = hostile.as_str();
    let id = env.open("info-leak", "h1", hostile, Severity::Critical);
    let sid = id.to_string();
    let aware = rfc3339(now() - TimeDelta::days(6));
    pii(&env, id, &["--persons", "480", "--aware-at", &aware]);
    let out = report(
        &env,
        &sid,
        &[
            "--to",
            "police",
            "--kind",
            "届出",
            "--note",
            "一行目\n\t二行目",
        ],
    );
    assert_exit(&out, 0);
    // A reference is one line; control characters are refused at the door.
    for bad in ["A\nB", "A\u{1b}[2JB", "A\rB"] {
        let out = report(&env, &sid, &["--to", "ppc", "--kind", "速報", "--ref", bad]);
        assert_exit(&out, 2);
    }
    for args in [
        vec!["incidents", "show", &sid],
        vec!["incidents", "export", &sid, "--form", "ppc"],
        vec!["incidents", "export", &sid, "--form", "common"],
        vec!["incidents", "list", "--overdue"],
    ] {
        let out = env.csirt(&args);
        assert_exit(&out, 0);
        let text = stdout(&out);
        for raw in ['\u{1b}', '\0', '\r', '\u{7}', '\u{202e}'] {
            assert!(!text.contains(raw), "{args:?} printed {raw:?} raw:\n{text}");
        }
        assert!(
            text.contains("\\x1b[2J"),
            "{args:?}: the escape shows:\n{text}"
        );
    }
    // JSON carries the text exactly, escaped.
    let out = env.csirt(&[
        "incidents",
        "export",
        &sid,
        "--form",
        "ppc",
        "--format",
        "json",
    ]);
    assert_exit(&out, 0);
    assert!(!stdout(&out).contains('\u{1b}'));
    let v = json(&out);
    let overview = v["fields"]
        .as_array()
        .expect("fields")
        .iter()
        .find(|f| f["key"] == "overview")
        .expect("overview")["value"]
        .as_str()
        .expect("text")
        .to_string();
    assert!(overview.contains(hostile), "{overview:?}");
}

/// The rules are data: an edit of the file (a changed threshold, as a change of the law would
/// be) changes the decision without a release, and a broken file is refused with `file:line`
/// by `config check`, `playbooks check`, the commands that use it and the daemon's start.
#[test]
fn the_rules_file_is_checked_and_an_edit_changes_the_decision() {
    let env = Env::new(Backend::Sqlite);
    let rules = env.dir.path().join("pii-rules.toml");
    let shipped =
        std::fs::read_to_string(repo().join("config/pii-rules.toml")).expect("shipped rules");
    assert_eq!(shipped.matches("persons_over = 100").count(), 2);
    std::fs::write(
        &rules,
        shipped.replace("persons_over = 100", "persons_over = 1000"),
    )
    .expect("edited rules");
    let text = config_text(&env.url, &env.playbooks(), env.dir.path());
    env.write_config(&format!("pii_rules = \"{}\"\n{text}", rules.display()));
    let out = env.csirt(&["config", "check"]);
    assert_exit(&out, 0);
    assert!(
        stdout(&out).contains(&format!("pii rules: {} (version ", rules.display())),
        "{}",
        stdout(&out)
    );
    let id = leak(&env, "r1", "誤送付");
    let v = pii(&env, id, &["--persons", "480"]);
    assert_eq!(v["ppc_required"], false, "480 is not over 1000: {v:#}");
    let v = pii(&env, id, &["--persons", "1001"]);
    assert_eq!(v["ppc_required"], true, "{v:#}");

    // The law changes again (確報 in 40 days): the recorded incident is recomputed on demand,
    // and the timeline says under which rules.
    std::fs::write(
        &rules,
        shipped
            .replace("persons_over = 100", "persons_over = 1000")
            .replace("due = \"30d\"", "due = \"40d\""),
    )
    .expect("edited rules");
    let before = time(&clock(&pii(&env, id, &[]), "ppc", "確報")["due_at"]);
    let v = pii(&env, id, &["--recompute"]);
    assert_eq!(
        time(&clock(&v, "ppc", "確報")["due_at"]),
        before + TimeDelta::days(10),
        "{v:#}"
    );
    let show = json(&env.csirt(&["incidents", "show", &id.to_string(), "--json"]));
    let last = show["timeline"].as_array().and_then(|t| t.last()).cloned();
    assert!(
        last.as_ref()
            .and_then(|t| t["detail"].as_str())
            .is_some_and(|d| d.contains("により期限を再計算")),
        "{last:?}"
    );
    // Nothing to recompute: nothing written.
    pii(&env, id, &["--recompute"]);
    let again = json(&env.csirt(&["incidents", "show", &id.to_string(), "--json"]));
    assert_eq!(again["timeline"], show["timeline"]);

    // A misspelt fact name.
    let broken = shipped.replacen("if = [\"sensitive\"]", "if = [\"sensitve\"]", 1);
    let line = broken
        .lines()
        .position(|l| l.contains("sensitve"))
        .expect("the typo")
        + 1;
    std::fs::write(&rules, broken).expect("broken rules");
    for args in [
        &["config", "check"][..],
        &["playbooks", "check"],
        &["incidents", "pii", &id.to_string(), "--sensitive"],
        &["daemon"],
    ] {
        let out = env.csirt(args);
        assert_exit(&out, 1);
        let err = stderr(&out);
        assert!(
            err.contains(&format!("{}:", rules.display())) && err.contains("sensitve"),
            "{args:?}: {err}"
        );
        // The trigger's table starts a line or two above the typo.
        assert!(
            (line.saturating_sub(2)..=line).any(|l| err.contains(&format!("pii-rules.toml:{l}:"))),
            "{args:?}: no line near {line}: {err}"
        );
    }
}
