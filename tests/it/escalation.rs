//! Escalation by what is due (#12) on both backends: with more open incidents than the old
//! fixed page of 5,000, a later critical incident still escalates on the next pass, an
//! acknowledged one is not looked at again, and reminders still fire.

use crate::helpers::*;
use crate::on_both_backends;
use chrono::{DateTime, TimeDelta, Utc};
use csirt::model::{Action, Actor, Severity, now};

on_both_backends!(
    a_critical_incident_behind_a_flood_escalates_on_the_next_pass,
    a_digest_lists_the_most_severe_and_counts_the_rest,
);

/// The flood: escalates only after a day, so no pass of the test mails any of it.
const NOISE_PLAYBOOK: &str = r#"id = "noise"
title = "ノイズ ({ip})"
category = "不正アクセス"
severity = "medium"
dedupe = ["ip"]
[[rule]]
source = "log"
pattern = '^noise from (?P<ip>\S+)'
[[step]]
text = "送信元を確認する"
[[escalation]]
after = "1d"
to = ["lead"]
"#;

/// Escalates 5 s after it opens (the issue's reproduction), with a reminder an hour in.
const URGENT_PLAYBOOK: &str = r#"id = "urgent"
title = "緊急 ({ip})"
category = "不正アクセス"
severity = "critical"
dedupe = ["ip"]
[[rule]]
source = "log"
pattern = '^urgent from (?P<ip>\S+)'
[[step]]
text = "影響範囲を確認する"
[[escalation]]
after = "5s"
to = ["lead"]
[[deadline]]
name = "速報"
within = "2h"
remind_before = "1h"
"#;

/// More open incidents than the escalator's old page held.
const FLOOD: i64 = 5_100;

/// Inserts `count` open, unacknowledged, already mailed incidents of `noise` opened `at`, in one
/// statement (the same on both backends), as the store leaves a new incident: due at its opening.
async fn insert_flood(url: &str, count: i64, at: DateTime<Utc>) {
    let sql = "WITH RECURSIVE n(i) AS (SELECT 1 UNION ALL SELECT i + 1 FROM n WHERE i < $1) \
               INSERT INTO incidents (playbook, category, title, severity, status, dedupe_key, fields, \
               event_count, notified_event_count, first_seen, last_seen, opened_at, due_at) \
               SELECT 'noise', '不正アクセス', 'ノイズ', 'medium', 'open', 'ip=' || i, '{}', 1, 1, $2, $2, $2, $2 FROM n";
    if url.starts_with("sqlite:") {
        let pool = sqlx::SqlitePool::connect(url).await.expect("sqlite");
        sqlx::query(sql)
            .bind(count)
            .bind(at)
            .execute(&pool)
            .await
            .expect("flood");
        pool.close().await;
    } else {
        let pool = sqlx::PgPool::connect(url).await.expect("postgres");
        sqlx::query(sql)
            .bind(count)
            .bind(at)
            .execute(&pool)
            .await
            .expect("flood");
        pool.close().await;
    }
}

fn a_critical_incident_behind_a_flood_escalates_on_the_next_pass(backend: Backend) {
    let env = Env::new(backend);
    std::fs::write(env.playbooks().join("noise.toml"), NOISE_PLAYBOOK).expect("write playbook");
    std::fs::write(env.playbooks().join("urgent.toml"), URGENT_PLAYBOOK).expect("write playbook");
    block_on(async {
        let store = env.store().await;
        let composer = env.composer();
        let interval = TimeDelta::minutes(15);
        let t0 = now();
        let at = |seconds: i64| t0 + TimeDelta::seconds(seconds);
        insert_flood(&env.url, FLOOD, t0).await;
        // The first pass looks at the whole flood once (each was due at its opening) and finds
        // nothing to mail: their escalation is a day away.
        let first = store
            .escalate("node-a", at(10), interval, &composer)
            .await
            .expect("first pass");
        assert_eq!(first.examined, FLOOD as usize);
        assert!(first.escalations.is_empty(), "{:?}", first.escalations);

        let critical = store
            .open_incident(
                &incident(
                    "urgent",
                    "ip=192.0.2.66",
                    "緊急 (192.0.2.66)",
                    Severity::Critical,
                ),
                &[event("192.0.2.66")],
                &Actor::daemon(),
            )
            .await
            .expect("open critical");
        let acked = store
            .open_incident(
                &incident(
                    "urgent",
                    "ip=192.0.2.67",
                    "緊急 (192.0.2.67)",
                    Severity::Critical,
                ),
                &[event("192.0.2.67")],
                &Actor::daemon(),
            )
            .await
            .expect("open acknowledged");
        assert!(critical > 5_000 && acked > 5_000, "behind the old page");
        store
            .apply(acked, &Action::Acknowledge, &Actor::current_user())
            .await
            .expect("ack");

        // Its 5 s have passed: it escalates on the next pass, which reads only the two new ones.
        let pass = store
            .escalate("node-a", at(20), interval, &composer)
            .await
            .expect("second pass");
        assert_eq!(pass.escalations, [(critical, 1)], "{pass:?}");
        assert_eq!(pass.examined, 2, "the flood is not read again: {pass:?}");
        assert_eq!(
            store
                .incident(critical)
                .await
                .expect("critical")
                .escalation_level,
            1
        );

        // Nothing is due before their first update (15 min: opened by hand, they were never
        // mailed): the acknowledged incident is not selected again.
        let quiet = store
            .escalate("node-a", at(10 * 60), interval, &composer)
            .await
            .expect("quiet pass");
        assert_eq!(quiet.examined, 0, "{quiet:?}");
        assert_eq!(
            store.incident(acked).await.expect("acked").escalation_level,
            0
        );

        // An hour in, both reminders fire (acknowledged or not), once, with the updates.
        let remind = store
            .escalate("node-a", at(3_700), interval, &composer)
            .await
            .expect("reminder pass");
        let mut reminded: Vec<i64> = remind.reminders.iter().map(|(id, _)| *id).collect();
        reminded.sort_unstable();
        assert_eq!(reminded, [critical, acked], "{remind:?}");
        assert!(remind.escalations.is_empty(), "{remind:?}");
        let again = store
            .escalate("node-a", at(3_800), interval, &composer)
            .await
            .expect("after the reminders");
        assert_eq!((again.examined, again.reminders.len()), (0, 0), "{again:?}");
        let outbox = store.outbox().await.expect("outbox");
        assert_eq!(outbox.iter().filter(|r| r.kind == "escalation").count(), 1);
        assert_eq!(outbox.iter().filter(|r| r.kind == "reminder").count(), 2);
        store.close().await;
    });
}

/// The scheduled digest lists at most 500: a critical incident opened after 600 others is
/// listed, and the mail says how many it left out.
fn a_digest_lists_the_most_severe_and_counts_the_rest(backend: Backend) {
    let env = Env::new(backend);
    std::fs::write(env.playbooks().join("noise.toml"), NOISE_PLAYBOOK).expect("write playbook");
    std::fs::write(env.playbooks().join("urgent.toml"), URGENT_PLAYBOOK).expect("write playbook");
    block_on(async {
        let store = env.store().await;
        let composer = env.composer();
        insert_flood(&env.url, 600, now()).await;
        let critical = store
            .open_incident(
                &incident(
                    "urgent",
                    "ip=192.0.2.66",
                    "緊急 (192.0.2.66)",
                    Severity::Critical,
                ),
                &[event("192.0.2.66")],
                &Actor::daemon(),
            )
            .await
            .expect("open critical");
        let to = vec!["lead".to_string()];
        let (t1, t2) = (now() + TimeDelta::hours(1), now() + TimeDelta::hours(25));
        assert!(
            !store
                .run_schedule("daily", &to, now(), t1, &composer)
                .await
                .expect("register")
        );
        assert!(
            store
                .run_schedule("daily", &to, t1, t2, &composer)
                .await
                .expect("run")
        );
        let outbox = store.outbox().await.expect("outbox");
        let digest = outbox
            .iter()
            .find(|r| r.kind == "digest")
            .expect("a digest");
        assert!(
            digest.subject.contains("未クローズのインシデント 601 件"),
            "{}",
            digest.subject
        );
        assert!(
            digest.body.contains(&format!("#{critical} 【")),
            "{}",
            digest.body
        );
        assert!(digest.body.contains("ほか 101 件"), "{}", digest.body);
        assert_eq!(digest.body.matches("ノイズ").count(), 499);
        store.close().await;
    });
}
