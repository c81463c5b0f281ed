//! The city's levels L0-L3 beside the severities (#16) through the real binary on both
//! backends: the config's `[levels]` decides them, and a responder sees them wherever a
//! severity is shown (list and show, text and JSON, `status`, `playbooks list`, the mails and
//! the digest, the report).

use crate::helpers::*;
use crate::on_both_backends;
use chrono::TimeDelta;
use csirt::model::{Severity, now};

on_both_backends!(levels_are_shown_beside_every_severity);

fn levels_are_shown_beside_every_severity(backend: Backend) {
    let env = Env::new(backend);
    // This city counts a high incident as L3 already: the config decides, not the code.
    let text = config_text(&env.url, &env.playbooks(), env.dir.path());
    env.write_config(&format!(
        "{text}\n[levels]\nhigh = \"L3\"\nmedium = \"L2\"\n"
    ));
    let high = env.open(
        "ssh-bruteforce",
        "203.0.113.5",
        "SSH総当たり攻撃 (203.0.113.5)",
        Severity::High,
    );
    let low = env.open(
        "web-attack",
        "198.51.100.7",
        "Webサーバへの攻撃 (198.51.100.7)",
        Severity::Low,
    );

    let list = env.csirt(&["incidents", "list"]);
    assert_exit(&list, 0);
    let text = stdout(&list);
    let header = text.lines().next().unwrap_or("");
    assert!(header.contains("重要度  レベル"), "{text}");
    let row = |id: i64| {
        text.lines()
            .find(|l| l.starts_with(&format!("#{id} ")))
            .unwrap_or_else(|| panic!("#{id} not listed:\n{text}"))
            .to_string()
    };
    assert!(row(high).contains("高      L3"), "{}", row(high));
    assert!(row(low).contains("低      L0"), "{}", row(low));

    let list = json(&env.csirt(&["incidents", "list", "--json"]));
    let item = |id: i64| {
        list.as_array()
            .expect("array")
            .iter()
            .find(|i| i["id"] == id)
            .cloned()
            .expect("listed")
    };
    assert_eq!(
        (item(high)["severity"].clone(), item(high)["level"].clone()),
        ("high".into(), "L3".into())
    );
    assert_eq!(item(low)["level"], "L0");

    let show = env.csirt(&["incidents", "show", &high.to_string()]);
    assert_exit(&show, 0);
    assert!(
        stdout(&show).contains(
            "重要度                高 (high)  市のレベル L3 住民・外部に影響、個人情報漏えい"
        ),
        "{}",
        stdout(&show)
    );
    let show = json(&env.csirt(&["incidents", "show", &low.to_string(), "--json"]));
    assert_eq!(
        (show["severity"].clone(), show["level"].clone()),
        ("low".into(), "L0".into())
    );

    let status = env.csirt(&["status"]);
    assert!(stdout(&status).contains("高 (L3) 1"), "{}", stdout(&status));
    let status = json(&env.csirt(&["status", "--json"]));
    assert_eq!(status["levels"]["of"]["high"], "L3", "{status}");
    assert_eq!(status["levels"]["of"]["medium"], "L2", "{status}");
    assert_eq!(
        (
            status["levels"]["open"]["L3"].clone(),
            status["levels"]["open"]["L0"].clone(),
            status["levels"]["open"]["L1"].clone(),
        ),
        (1.into(), 1.into(), 0.into()),
        "{status}"
    );
    let playbooks = env.csirt(&["playbooks", "list"]);
    assert_exit(&playbooks, 0);
    assert!(
        stdout(&playbooks)
            .lines()
            .any(|l| l.starts_with("ssh-bruteforce") && l.contains("高      L3")),
        "{}",
        stdout(&playbooks)
    );
    let playbooks = json(&env.csirt(&["playbooks", "list", "--json"]));
    let ssh = playbooks
        .as_array()
        .and_then(|a| a.iter().find(|p| p["id"] == "ssh-bruteforce"))
        .cloned()
        .unwrap_or_default();
    assert_eq!(
        (ssh["severity"].clone(), ssh["level"].clone()),
        ("high".into(), "L3".into())
    );

    // The mails: the subject keeps 【重要度:高】 whole (a mail filter on it still works) and
    // adds the level in a bracket of its own; the body says what the level means.
    block_on(async {
        let composer = env.composer();
        let store = env.store().await;
        let incident = store.incident(high).await.expect("incident");
        let mail = composer.incident_mail(
            &csirt::compose::Occasion::Opened,
            &incident,
            &[],
            None,
            now(),
        );
        assert_eq!(
            mail.subject,
            format!("[CSIRT #{high}] 【重要度:高】【L3】SSH総当たり攻撃 (203.0.113.5)")
        );
        assert!(
            mail.body
                .contains("重要度:   高 (市のレベル L3 住民・外部に影響、個人情報漏えい)"),
            "{}",
            mail.body
        );
        let at = now() + TimeDelta::minutes(1);
        assert!(
            store
                .run_schedule(
                    "daily",
                    &["duty".into()],
                    at,
                    at + TimeDelta::days(1),
                    &composer
                )
                .await
                .is_ok()
        );
        // The first run only registers the schedule; the second writes the digest.
        let later = at + TimeDelta::days(1);
        assert!(
            store
                .run_schedule(
                    "daily",
                    &["duty".into()],
                    later,
                    later + TimeDelta::days(1),
                    &composer
                )
                .await
                .expect("digest")
        );
        let outbox = store.outbox().await.expect("outbox");
        let digest = outbox
            .iter()
            .find(|m| m.kind == "digest")
            .expect("digest mail");
        assert!(
            digest
                .body
                .contains(&format!("#{high} 【高・L3】SSH総当たり攻撃"))
                && digest.body.contains(&format!("#{low} 【低・L0】")),
            "{}",
            digest.body
        );
        store.close().await;
    });

    // The evaluation report labels each severity with its level.
    let report = env.csirt(&["report", "--format", "json"]);
    assert_exit(&report, 0);
    let v = json(&report);
    let labels: Vec<String> = v["current"]["by_severity"]
        .as_array()
        .expect("by_severity")
        .iter()
        .map(|c| c["label"].as_str().unwrap_or("").to_string())
        .collect();
    assert_eq!(labels, ["緊急 (L3)", "高 (L3)", "中 (L2)", "低 (L0)"]);
}

/// A mapping the two scales disagree on is refused with its line, by `config check` and the
/// daemon alike; the CISO group must be in [contacts].
#[test]
fn a_broken_levels_table_or_ciso_group_is_refused() {
    let env = Env::new(Backend::Sqlite);
    let text = config_text(&env.url, &env.playbooks(), env.dir.path());
    env.write_config(&format!("{text}\n[levels]\nlow = \"L3\"\n"));
    let line = text.lines().count() + 3;
    for args in [&["config", "check"][..], &["daemon"]] {
        let out = env.csirt(args);
        assert_exit(&out, 1);
        assert!(
            stderr(&out).contains(&format!(
                "csirt.toml:{line}: [levels]: medium is L1 but the milder low is L3"
            )),
            "{args:?}: {}",
            stderr(&out)
        );
    }
    env.write_config(&format!("pii_ciso = \"kacho\"\n{text}"));
    let out = env.csirt(&["config", "check"]);
    assert_exit(&out, 1);
    assert!(
        stderr(&out).contains("csirt.toml:1: pii_ciso: `kacho` is not a name in [contacts]"),
        "{}",
        stderr(&out)
    );
    env.write_config(&text);
    let out = env.csirt(&["config", "check"]);
    assert_exit(&out, 0);
    assert!(
        stdout(&out).contains("levels: low L0, medium L1, high L2, critical L3")
            && stdout(&out).contains("pii ciso: ciso (ciso@example.jp)"),
        "{}",
        stdout(&out)
    );
}
