//! A required report to 個人情報保護委員会 makes an incident L3 and tells the CISO group (#16),
//! and a rules edit reaches every recorded incident, through the real binary on both backends:
//! once per incident whatever is recomputed, never lowering a severity, the mail in the same
//! transaction as the facts (or, from a command with only `--database`, written by the daemon
//! exactly once with one daemon or two), the statutory reminders to the CISO group too, and the
//! daemon's start and SIGHUP recomputing under an edited rules file without repeating a reminder.

use crate::helpers::*;
use crate::logs::Daemon;
use crate::on_both_backends;
use crate::pii::rfc3339;
use chrono::{DateTime, SubsecRound, TimeDelta, Utc};
use csirt::model::{Severity, now};
use csirt::store::outbox::OutboxRow;

on_both_backends!(
    a_required_report_raises_to_l3_and_tells_the_ciso_once,
    without_a_config_the_daemon_tells_the_ciso_exactly_once,
    a_rules_edit_reaches_every_recorded_incident,
);

/// `csirt incidents pii ID ARGS`, which must succeed; its stdout.
fn pii(env: &Env, id: i64, args: &[&str]) -> String {
    let id = id.to_string();
    let mut all = vec!["incidents", "pii", id.as_str()];
    all.extend_from_slice(args);
    let out = env.csirt(&all);
    assert_exit(&out, 0);
    stdout(&out)
}

fn outbox(env: &Env) -> Vec<OutboxRow> {
    block_on(async {
        let store = env.store().await;
        let rows = store.outbox().await.expect("outbox");
        store.close().await;
        rows
    })
}

/// The mails telling of a required report about `id`.
fn statutory(env: &Env, id: i64) -> Vec<OutboxRow> {
    outbox(env)
        .into_iter()
        .filter(|m| {
            m.incident_id == Some(id) && m.subject.contains("【個人情報保護委員会へ報告が必要】")
        })
        .collect()
}

fn show(env: &Env, id: i64) -> serde_json::Value {
    let out = env.csirt(&["incidents", "show", &id.to_string(), "--json"]);
    assert_exit(&out, 0);
    json(&out)
}

/// The timeline entries of `id` with this action.
fn entries(env: &Env, id: i64, action: &str) -> Vec<serde_json::Value> {
    show(env, id)["timeline"]
        .as_array()
        .expect("timeline")
        .iter()
        .filter(|t| t["action"] == action)
        .cloned()
        .collect()
}

fn a_required_report_raises_to_l3_and_tells_the_ciso_once(backend: Backend) {
    let env = Env::new(backend);
    let lost = env.open(
        "device-loss",
        "pc-1",
        "端末の紛失 (ノートPC)",
        Severity::High,
    );
    let aware = rfc3339((now() - TimeDelta::days(3) + TimeDelta::hours(1)).trunc_subsecs(0));

    // 100 persons: no report, nothing raised, nobody told.
    let text = pii(&env, lost, &["--persons", "100", "--aware-at", &aware]);
    assert!(!text.contains("引き上げ"), "{text}");
    assert_eq!(show(&env, lost)["severity"], "high");
    assert!(statutory(&env, lost).is_empty());

    // 101: the report is required. Raised to critical (L3 by default), the reason citing the
    // rule in the timeline, and the CISO group and the duty list told in the same transaction.
    let text = pii(&env, lost, &["--persons", "101"]);
    assert!(
        text.contains(
            "【引き上げ】個人情報保護委員会への漏えい等の報告が必要 — 保有個人情報に係る本人の数が百人を超える"
        ) && text.contains(
            "重要度を高から緊急に引き上げ (市のレベル L3 住民・外部に影響、個人情報漏えい)"
        ) && text.contains("CISO の連絡先 ciso (ciso@example.jp) と当番に直ちに通知"),
        "{text}"
    );
    let v = show(&env, lost);
    assert_eq!(
        (v["severity"].clone(), v["level"].clone()),
        ("critical".into(), "L3".into())
    );
    let raised = entries(&env, lost, "raised");
    assert_eq!(raised.len(), 1, "{raised:#?}");
    let detail = raised[0]["detail"].as_str().unwrap_or("");
    assert!(
        detail.contains("第43条第4号") && detail.contains("百人を超える"),
        "{detail}"
    );
    assert_eq!(
        raised[0]["actor"],
        csirt::model::Actor::current_user().as_str()
    );
    let mails = statutory(&env, lost);
    assert_eq!(mails.len(), 1, "{mails:#?}");
    let mail = &mails[0];
    assert_eq!(mail.kind, "raised", "a raise: the critical mails' ceiling");
    assert_eq!(mail.recipients(), ["ciso@example.jp", "duty@example.jp"]);
    assert!(
        mail.subject.starts_with(&format!(
            "[CSIRT #{lost}] 【個人情報保護委員会へ報告が必要】【重要度:緊急】【L3】"
        )),
        "{}",
        mail.subject
    );
    for expected in [
        "個人情報保護委員会への報告が必要と判断しました",
        "ciso にもお知らせします",
        "第43条第4号",
        "個人情報保護委員会への速報: ",
        "個人情報保護委員会への確報: ",
        &format!("csirt incidents reported {lost} --to ppc --kind 速報"),
    ] {
        assert!(
            mail.body.contains(expected),
            "{expected:?} not in\n{}",
            mail.body
        );
    }

    // Idempotent: another fact (the clocks move), a recompute, every incident recomputed and a
    // report recorded: nothing is raised or sent again.
    pii(&env, lost, &["--malicious"]);
    pii(&env, lost, &["--recompute"]);
    let out = env.csirt(&["incidents", "pii", "--recompute-all"]);
    assert_exit(&out, 0);
    let out = env.csirt(&[
        "incidents",
        "reported",
        &lost.to_string(),
        "--to",
        "ppc",
        "--kind",
        "速報",
    ]);
    assert_exit(&out, 0);
    assert_eq!(statutory(&env, lost).len(), 1);
    assert_eq!(entries(&env, lost, "raised").len(), 1);

    // Never lowered: strong encryption takes the duty away, the severity stays; and back again,
    // the report required once more, nobody is told twice.
    pii(&env, lost, &["--encrypted"]);
    assert_eq!(show(&env, lost)["severity"], "critical");
    pii(&env, lost, &["--unset", "encrypted"]);
    assert_eq!(statutory(&env, lost).len(), 1);

    // Already critical: stays so, and the CISO group is still told.
    let leak = env.open("info-leak", "m-1", "メール誤送信", Severity::Critical);
    let text = pii(&env, leak, &["--persons", "480", "--aware-at", &aware]);
    assert!(
        text.contains("重要度は緊急 (市のレベル L3 住民・外部に影響、個人情報漏えい) のまま"),
        "{text}"
    );
    assert_eq!(statutory(&env, leak).len(), 1);

    // The statutory reminders go to the CISO group as well as [notify] to.
    block_on(async {
        let store = env.store().await;
        let pass = store
            .escalate(
                "node-a",
                now() + TimeDelta::hours(2),
                TimeDelta::minutes(15),
                &env.composer(),
            )
            .await
            .expect("pass after the warnings");
        assert!(
            pass.reminders
                .contains(&(leak, "個人情報保護委員会への速報".to_string())),
            "{pass:?}"
        );
        let rows = store.outbox().await.expect("outbox");
        let reminders: Vec<&OutboxRow> = rows
            .iter()
            .filter(|m| m.kind == "reminder" && m.incident_id == Some(leak))
            .collect();
        assert!(!reminders.is_empty());
        for r in reminders {
            assert_eq!(
                r.recipients(),
                ["ciso@example.jp", "duty@example.jp"],
                "{}",
                r.subject
            );
        }
        store.close().await;
    });

    // A city that counts high as L3 raises a medium incident to high, not further.
    let text = config_text(&env.url, &env.playbooks(), env.dir.path());
    env.write_config(&format!("{text}\n[levels]\nhigh = \"L3\"\n"));
    let web = env.open(
        "web-attack",
        "198.51.100.9",
        "Webサーバへの攻撃",
        Severity::Medium,
    );
    let text = pii(&env, web, &["--persons", "101", "--financial"]);
    assert!(
        text.contains("重要度を中から高に引き上げ (市のレベル L3"),
        "{text}"
    );
    assert_eq!(show(&env, web)["severity"], "high");
}

/// `csirt` with only `--database` (a responder's workstation): no config to address mail from.
///
/// Without `--config` the binary also reads `/etc/csirt/csirt.toml` when it exists, and on a
/// machine where `.ci/run` installed the package it does (with the example CISO address). There
/// the command runs in a private mount namespace with an empty tmpfs over `/etc/csirt`, so it
/// meets the workstation it is meant to; where that cannot be done the test fails and says why.
fn database_only(env: &Env, args: &[&str]) -> std::process::Output {
    let installed = std::path::Path::new(csirt::config::DEFAULT_PATH);
    let mut cmd = if installed.exists() {
        let mut c = std::process::Command::new("unshare");
        c.args(["--mount", "--propagation", "private", "sh", "-c"])
            .arg(r#"mount -t tmpfs tmpfs /etc/csirt && exec "$@""#)
            .arg("sh")
            .arg(env!("CARGO_BIN_EXE_csirt"));
        c
    } else {
        std::process::Command::new(env!("CARGO_BIN_EXE_csirt"))
    };
    let out = cmd
        .arg("--database")
        .arg(&env.url)
        .args(args)
        .env_remove("CSIRT_CONFIG")
        .env_remove("CSIRT_DATABASE_URL")
        .env_remove("RUST_LOG")
        .output()
        .expect("run csirt --database");
    assert!(
        !installed.exists()
            || !stderr(&out).contains("unshare") && !stderr(&out).contains("mount:"),
        "{} exists and could not be hidden from the command (needs root for a mount namespace): {}",
        installed.display(),
        stderr(&out)
    );
    out
}

fn without_a_config_the_daemon_tells_the_ciso_exactly_once(backend: Backend) {
    let env = Env::new(backend);
    let first = env.open("device-loss", "pc-2", "USB メモリの紛失", Severity::High);
    let second = env.open("device-loss", "pc-3", "タブレットの紛失", Severity::High);
    for id in [first, second] {
        let out = database_only(
            &env,
            &["incidents", "pii", &id.to_string(), "--persons", "300"],
        );
        assert_exit(&out, 0);
        assert!(
            stdout(&out).contains("CISO への通知はデーモンが送る"),
            "{}",
            stdout(&out)
        );
        // Raised at once; the mail waits for a daemon.
        assert_eq!(show(&env, id)["severity"], "critical");
        assert!(statutory(&env, id).is_empty());
    }

    // Two daemons' escalator passes race for the first: exactly one writes the mail.
    block_on(async {
        let (a, b) = (env.store().await, env.store().await);
        let composer = env.composer();
        let at = now() + TimeDelta::seconds(1);
        let (x, y) = tokio::join!(
            a.escalate("node-a", at, TimeDelta::minutes(15), &composer),
            b.escalate("node-b", at, TimeDelta::minutes(15), &composer),
        );
        x.expect("node-a");
        y.expect("node-b");
        a.close().await;
        b.close().await;
    });
    for id in [first, second] {
        let mails = statutory(&env, id);
        assert_eq!(mails.len(), 1, "#{id}: {mails:#?}");
        assert_eq!(
            mails[0].recipients(),
            ["ciso@example.jp", "duty@example.jp"]
        );
        assert!(
            entries(&env, id, "note")
                .iter()
                .any(|t| t["actor"] == "daemon"
                    && t["detail"]
                        .as_str()
                        .is_some_and(|d| d.contains("ciso と当番に通知"))),
            "#{id}"
        );
    }

    // A third, closed before its facts were recorded: the escalator never looks at a closed
    // incident, so the daemon's start (which recomputes every recorded incident) writes it;
    // the real daemon delivers it through its transport, and a restart and a reload send
    // nothing again.
    let closed = env.open(
        "device-loss",
        "pc-4",
        "スマートフォンの紛失",
        Severity::High,
    );
    let out = env.csirt(&[
        "incidents",
        "close",
        &closed.to_string(),
        "--resolution",
        "resolved",
    ]);
    assert_exit(&out, 0);
    let out = database_only(
        &env,
        &["incidents", "pii", &closed.to_string(), "--persons", "150"],
    );
    assert_exit(&out, 0);
    daemon_config(&env, "");
    let mut daemon = Daemon::start(&env);
    let mail_dir = env.dir.path().join("mail");
    daemon.wait("the CISO's mail of the closed incident", &env, |env| {
        (statutory(env, closed).len() == 1).then_some(())
    });
    daemon.wait("the mail delivered by the file transport", &env, |_| {
        let files: Vec<String> = std::fs::read_dir(&mail_dir)
            .map(|d| {
                d.filter_map(|e| std::fs::read_to_string(e.ok()?.path()).ok())
                    .collect()
            })
            .unwrap_or_default();
        files
            .iter()
            .any(|m| m.contains("ciso@example.jp") && m.contains(&format!("CSIRT #{closed}]")))
            .then_some(())
    });
    daemon.hangup();
    daemon.wait("the recompute after the reload", &env, |_| {
        (daemon_recomputes(&env) >= 2).then_some(())
    });
    daemon.stop();
    let mut daemon = Daemon::start(&env);
    daemon.wait("the recompute at the restart", &env, |_| {
        (daemon_recomputes(&env) >= 3).then_some(())
    });
    daemon.stop();
    for id in [first, second, closed] {
        assert_eq!(statutory(&env, id).len(), 1, "#{id}: told once");
    }
}

/// The test config for a real daemon (the node name `Daemon::start` waits for, the log
/// directory it watches), with `top` (top-level keys) first.
fn daemon_config(env: &Env, top: &str) {
    crate::logs::log_dir(env);
    let text = config_text(&env.url, &env.playbooks(), env.dir.path());
    env.write_config(&format!("node = \"{}\"\n{top}{text}", crate::logs::NODE));
}

/// How many times the daemons of this environment logged a recompute of the PII incidents.
fn daemon_recomputes(env: &Env) -> usize {
    std::fs::read_dir(env.dir.path())
        .map(|d| {
            d.filter_map(|e| e.ok())
                .filter(|e| e.file_name().to_string_lossy().starts_with("daemon-"))
                .filter_map(|e| std::fs::read_to_string(e.path()).ok())
                .map(|log| {
                    log.matches("personal-information incidents recomputed under the rules")
                        .count()
                })
                .sum()
        })
        .unwrap_or(0)
}

fn a_rules_edit_reaches_every_recorded_incident(backend: Backend) {
    let env = Env::new(backend);
    let rules = env.dir.path().join("pii-rules.toml");
    let shipped =
        std::fs::read_to_string(repo().join("config/pii-rules.toml")).expect("shipped rules");
    std::fs::write(&rules, &shipped).expect("rules");
    daemon_config(&env, &format!("pii_rules = \"{}\"\n", rules.display()));

    // Learned of 2 days 23 hours ago: the 3-day warnings come in an hour.
    let aware = rfc3339((now() - TimeDelta::days(3) + TimeDelta::hours(1)).trunc_subsecs(0));
    let many = env.open("info-leak", "a", "誤送信 (480 件)", Severity::Critical);
    let some = env.open("info-leak", "b", "誤送信 (150 件)", Severity::Critical);
    let few = env.open("device-loss", "c", "紛失 (50 件)", Severity::High);
    let closed_few = env.open(
        "device-loss",
        "d",
        "紛失 (60 件、クローズ済み)",
        Severity::Low,
    );
    for (id, persons) in [
        (many, "480"),
        (some, "150"),
        (few, "50"),
        (closed_few, "60"),
    ] {
        pii(&env, id, &["--persons", persons, "--aware-at", &aware]);
    }
    let out = env.csirt(&[
        "incidents",
        "close",
        &closed_few.to_string(),
        "--resolution",
        "resolved",
    ]);
    assert_exit(&out, 0);
    let reminders_at = |at: DateTime<Utc>| -> Vec<(i64, String)> {
        block_on(async {
            let store = env.store().await;
            let pass = store
                .escalate("node-a", at, TimeDelta::minutes(15), &env.composer())
                .await
                .expect("escalator pass");
            store.close().await;
            let mut r = pass.reminders;
            r.sort();
            r
        })
    };
    let warned = reminders_at(now() + TimeDelta::hours(2));
    assert!(
        warned.contains(&(many, "個人情報保護委員会への速報".into())),
        "{warned:?}"
    );

    // The law changes: more than 200 persons, and the 確報 in 40 days.
    std::fs::write(
        &rules,
        shipped
            .replace("persons_over = 100", "persons_over = 200")
            .replace("due = \"30d\"", "due = \"40d\""),
    )
    .expect("edited rules");
    let out = env.csirt(&["incidents", "pii", "--recompute-all", "--json"]);
    assert_exit(&out, 0);
    let v = json(&out);
    assert_eq!(v["incidents"], 4);
    assert_eq!(v["changed"], serde_json::json!([many, some]), "{v:#}");
    assert_eq!(v["escalated"], serde_json::json!([]));
    let sha = v["rules"]["sha256"].as_str().expect("sha256").to_string();
    assert_eq!(sha.len(), 64);
    let actor = format!("rules:pii-rules.toml@2025-10-01#{}", &sha[..12]);
    let entry = entries(&env, many, "pii")
        .last()
        .cloned()
        .expect("an entry");
    assert_eq!(entry["actor"], actor.as_str());
    assert!(
        entry["detail"]
            .as_str()
            .is_some_and(|d| d.contains("により期限を再計算") && d.contains(&sha[..12])),
        "{entry:#}"
    );
    let clocks = |id: i64| -> serde_json::Value {
        let out = env.csirt(&["incidents", "pii", &id.to_string(), "--json"]);
        json(&out)["clocks"].clone()
    };
    assert_eq!(clocks(some), serde_json::json!([]), "150 is not over 200");
    // The 速報's clock did not move: its warning is not sent again.
    let again = reminders_at(now() + TimeDelta::hours(2) + TimeDelta::minutes(1));
    assert!(
        !again.iter().any(|(id, _)| *id == many),
        "a reminder repeated for an unchanged clock: {again:?}"
    );
    // Nothing left to recompute: nothing written.
    let before = show(&env, many)["timeline"].clone();
    let out = env.csirt(&["incidents", "pii", "--recompute-all", "--json"]);
    assert_eq!(json(&out)["changed"], serde_json::json!([]));
    assert_eq!(show(&env, many)["timeline"], before);

    // Usage: --recompute-all takes no incident and no fact.
    for args in [
        &["incidents", "pii", "--recompute-all", &many.to_string()][..],
        &["incidents", "pii", "--recompute-all", "--persons", "3"],
        &["incidents", "pii"],
    ] {
        assert_exit(&env.csirt(args), 2);
    }

    // Edited again while no daemon runs (more than 40 persons): the daemon's start reaches the
    // two small incidents, the closed one too, raises both to L3 and tells the CISO group, by
    // the rules file; a SIGHUP after an edit of the version alone changes nothing.
    let lower = shipped.replace("persons_over = 100", "persons_over = 40");
    std::fs::write(&rules, &lower).expect("edited rules");
    let mut daemon = Daemon::start(&env);
    daemon.wait("the start's recompute", &env, |env| {
        (statutory(env, few).len() == 1 && statutory(env, closed_few).len() == 1).then_some(())
    });
    assert_eq!(show(&env, few)["severity"], "critical");
    assert_eq!(show(&env, closed_few)["severity"], "critical");
    let raised = entries(&env, closed_few, "raised");
    assert_eq!(raised.len(), 1);
    assert!(
        raised[0]["actor"]
            .as_str()
            .is_some_and(|a| a.starts_with("rules:pii-rules.toml@2025-10-01#")),
        "{raised:#?}"
    );
    let timeline = show(&env, some)["timeline"].clone();
    std::fs::write(
        &rules,
        lower.replace("version = \"2025-10-01\"", "version = \"2026-04-01\""),
    )
    .expect("edited rules");
    daemon.hangup();
    daemon.wait("the reload's recompute", &env, |env| {
        (daemon_recomputes(env) >= 2).then_some(())
    });
    daemon.stop();
    assert_eq!(
        show(&env, some)["timeline"],
        timeline,
        "nothing differs: nothing written"
    );
    for id in [many, some, few, closed_few] {
        assert!(statutory(&env, id).len() <= 1, "#{id} told twice");
    }
}
