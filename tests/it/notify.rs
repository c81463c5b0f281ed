//! The outbox, escalation, reminders and schedules against the store on both backends, with
//! the clock passed in: each level, reminder and scheduled run fires once, with one daemon or
//! two racing on the same store; a flood goes out as one digest; a claim runs out and the mail
//! is claimed again with its Message-ID.

use crate::helpers::*;
use crate::on_both_backends;
use chrono::{DateTime, TimeDelta, Utc};
use csirt::compose::Composer;
use csirt::engine::Hit;
use csirt::engine::rate::RateLimit;
use csirt::model::{Action, Actor, now};
use csirt::playbook::PlaybookSet;
use csirt::store::Store;

on_both_backends!(
    an_opened_incident_mails_once_and_updates_thread_under_it,
    escalation_levels_fire_once_with_two_daemons_racing,
    acknowledging_stops_escalation,
    deadline_reminders_fire_once,
    a_schedule_runs_once_per_due_time,
    a_flood_of_new_incidents_goes_out_as_one_digest,
    a_claim_runs_out_and_the_same_message_is_claimed_again,
);

/// `n` failures from `ip` in the last minute, each line ending in a terminal escape.
fn ssh_hits(set: &PlaybookSet, ip: &str, n: usize) -> Vec<Hit> {
    (0..n)
        .map(|i| {
            ssh_hit_with(
                set,
                ip,
                i.to_string(),
                now() - TimeDelta::seconds(60 - i as i64),
                format!("sshd[1]: Failed password for root from {ip} port 22 ssh2\x1b[31m"),
            )
        })
        .collect()
}

/// Opens an SSH incident for `ip` through the ingest path (with its first mail); returns its id.
async fn open_ssh(store: &Store, composer: &Composer, ip: &str) -> i64 {
    let set = composer.playbooks().clone();
    let outcome = store
        .ingest(&batch(ssh_hits(&set, ip, 5)), composer)
        .await
        .expect("ingest");
    assert_eq!(outcome.opened.len(), 1, "five failures open one incident");
    outcome.opened[0]
}

fn later(minutes: i64) -> DateTime<Utc> {
    now() + TimeDelta::minutes(minutes)
}

fn an_opened_incident_mails_once_and_updates_thread_under_it(backend: Backend) {
    let env = Env::new(backend);
    block_on(async {
        let store = env.store().await;
        let composer = env.composer();
        let id = open_ssh(&store, &composer, "203.0.113.5").await;
        let rows = store.outbox().await.expect("outbox");
        assert_eq!(rows.len(), 1, "one mail for the new incident: {rows:#?}");
        let first = &rows[0];
        assert_eq!(first.kind, "opened");
        assert_eq!(first.incident_id, Some(id));
        assert_eq!(first.recipients(), ["duty@example.jp"]);
        assert_eq!(
            first.subject,
            format!("[CSIRT #{id}] 【重要度:高】【L2】SSH総当たり攻撃 (203.0.113.5)")
        );
        assert!(first.in_reply_to.is_none());
        assert!(first.body.contains(&format!("csirt incidents ack {id}")));
        assert!(
            !first.body.contains('\x1b'),
            "escape sequences from the log line reach the body"
        );

        // Ten more hits: no mail each; one update once update_interval (15m) has passed.
        let set = composer.playbooks().clone();
        store
            .ingest(&batch(ssh_hits(&set, "203.0.113.5", 10)), &composer)
            .await
            .expect("ingest");
        let early = store
            .escalate("node-a", later(5), TimeDelta::minutes(15), &composer)
            .await
            .expect("escalate");
        assert!(early.updates.is_empty(), "an update before the interval");
        let due = store
            .escalate("node-a", later(16), TimeDelta::minutes(15), &composer)
            .await
            .expect("escalate");
        assert_eq!(due.updates, [id]);
        let again = store
            .escalate("node-a", later(17), TimeDelta::minutes(15), &composer)
            .await
            .expect("escalate");
        assert!(
            again.updates.is_empty(),
            "a second update without new events"
        );
        let rows = store.outbox().await.expect("outbox");
        let updates: Vec<_> = rows.iter().filter(|r| r.kind == "update").collect();
        assert_eq!(updates.len(), 1);
        assert_eq!(
            updates[0].in_reply_to.as_deref(),
            Some(first.message_id.as_str())
        );
        assert!(updates[0].subject.contains("【続報】"));
        assert!(
            updates[0].body.contains("10 件の事象が追加"),
            "{}",
            updates[0].body
        );
        store.close().await;
    });
}

fn escalation_levels_fire_once_with_two_daemons_racing(backend: Backend) {
    let env = Env::new(backend);
    block_on(async {
        let a = env.store().await;
        let b = env.store().await;
        let composer = env.composer();
        let id = open_ssh(&a, &composer, "198.51.100.7").await;
        let interval = TimeDelta::minutes(15);
        let none = a
            .escalate("node-a", later(29), interval, &composer)
            .await
            .expect("escalate");
        assert!(none.escalations.is_empty());
        // ssh-bruteforce: 30m to lead, 2h to ciso.
        for (minutes, level) in [(31, 1), (121, 2)] {
            let (x, y) = tokio::join!(
                a.escalate("node-a", later(minutes), interval, &composer),
                b.escalate("node-b", later(minutes), interval, &composer),
            );
            let fired: Vec<_> = [x.expect("node-a"), y.expect("node-b")]
                .into_iter()
                .flat_map(|p| p.escalations)
                .collect();
            assert_eq!(fired, [(id, level)], "level {level} fires exactly once");
        }
        let rows = a.outbox().await.expect("outbox");
        let escalations: Vec<_> = rows.iter().filter(|r| r.kind == "escalation").collect();
        assert_eq!(escalations.len(), 2);
        assert_eq!(
            escalations[0].recipients(),
            ["lead@example.jp", "duty@example.jp"]
        );
        assert_eq!(
            escalations[1].recipients(),
            ["tokatsu@example.jp", "ciso@example.jp", "duty@example.jp"]
        );
        assert!(escalations[1].subject.contains("【未受付・第2段階】"));
        assert_eq!(a.incident(id).await.expect("incident").escalation_level, 2);
        let timeline = a.timeline(id).await.expect("timeline");
        assert_eq!(
            timeline.iter().filter(|t| t.action == "escalated").count(),
            2
        );
        a.close().await;
        b.close().await;
    });
}

fn acknowledging_stops_escalation(backend: Backend) {
    let env = Env::new(backend);
    block_on(async {
        let store = env.store().await;
        let composer = env.composer();
        let id = open_ssh(&store, &composer, "198.51.100.8").await;
        store
            .apply(id, &Action::Acknowledge, &Actor::current_user())
            .await
            .expect("ack");
        // A daemon that was down for a day comes back: nothing to escalate.
        let pass = store
            .escalate("node-a", later(24 * 60), TimeDelta::minutes(15), &composer)
            .await
            .expect("escalate");
        assert!(pass.escalations.is_empty(), "{pass:?}");
        store.close().await;
    });
}

fn deadline_reminders_fire_once(backend: Backend) {
    let env = Env::new(backend);
    std::fs::write(env.playbooks().join("leak.toml"), LEAK_PLAYBOOK).expect("write playbook");
    let id = env.open(
        "leak",
        "ip=192.0.2.9",
        "情報漏えい (192.0.2.9)",
        csirt::model::Severity::Critical,
    );
    block_on(async {
        let store = env.store().await;
        let composer = env.composer();
        let interval = TimeDelta::minutes(15);
        let early = store
            .escalate("node-a", later(47 * 60), interval, &composer)
            .await
            .expect("escalate");
        assert!(early.reminders.is_empty(), "reminded two days early");
        let (x, y) = tokio::join!(
            store.escalate("node-a", later(49 * 60), interval, &composer),
            store.escalate("node-b", later(50 * 60), interval, &composer),
        );
        let reminders: Vec<_> = [x.expect("a"), y.expect("b")]
            .into_iter()
            .flat_map(|p| p.reminders)
            .collect();
        assert_eq!(reminders, [(id, "個人情報保護委員会への速報".to_string())]);
        let rows = store.outbox().await.expect("outbox");
        let reminder = rows
            .iter()
            .find(|r| r.kind == "reminder")
            .expect("a reminder mail");
        assert!(
            reminder.subject.contains("【期限間近】"),
            "{}",
            reminder.subject
        );
        assert!(
            reminder.body.contains("個人情報保護委員会への速報"),
            "{}",
            reminder.body
        );
        store.close().await;
    });
}

fn a_schedule_runs_once_per_due_time(backend: Backend) {
    let env = Env::new(backend);
    env.open(
        "ssh-bruteforce",
        "ip=192.0.2.1",
        "SSH総当たり攻撃 (192.0.2.1)",
        csirt::model::Severity::High,
    );
    block_on(async {
        let store = env.store().await;
        let other = env.store().await;
        let composer = env.composer();
        let to = vec!["lead".to_string()];
        let (t1, t2, t3) = (later(60), later(24 * 60 + 60), later(48 * 60 + 60));
        // First sight registers the schedule at its next run, without running it.
        assert!(
            !store
                .run_schedule("daily", &to, now(), t1, &composer)
                .await
                .expect("run")
        );
        assert!(
            !store
                .run_schedule("daily", &to, later(59), t1, &composer)
                .await
                .expect("run")
        );
        // Due: one of two racing daemons runs it.
        let (x, y) = tokio::join!(
            store.run_schedule("daily", &to, t1, t2, &composer),
            other.run_schedule("daily", &to, t1, t2, &composer),
        );
        assert_eq!(
            [x.expect("a"), y.expect("b")]
                .iter()
                .filter(|r| **r)
                .count(),
            1
        );
        assert_eq!(store.schedule_next("daily").await.expect("next"), Some(t2));
        // Down for two days: the overdue run happens once, then the schedule goes on.
        let late = later(72 * 60);
        assert!(
            store
                .run_schedule("daily", &to, late, t3 + TimeDelta::days(1), &composer)
                .await
                .expect("run")
        );
        assert!(
            !store
                .run_schedule("daily", &to, late, t3 + TimeDelta::days(1), &composer)
                .await
                .expect("run")
        );
        let digests: Vec<_> = store
            .outbox()
            .await
            .expect("outbox")
            .into_iter()
            .filter(|r| r.kind == "digest")
            .collect();
        assert_eq!(digests.len(), 2);
        assert_eq!(digests[0].recipients(), ["lead@example.jp"]);
        assert!(
            digests[0]
                .subject
                .starts_with("[CSIRT] 未クローズのインシデント 1 件")
        );
        assert!(digests[0].body.contains("SSH総当たり攻撃 (192.0.2.1)"));
        store.close().await;
        other.close().await;
    });
}

/// `rate = 10`: a backlog of fifteen new-incident mails at one claim becomes one digest that
/// lists each, the fifteen rows marked sent in it; what then fits under the rate goes out on its
/// own, and a group at its rate is held.
fn a_flood_of_new_incidents_goes_out_as_one_digest(backend: Backend) {
    let env = Env::new(backend);
    block_on(async {
        let store = env.store().await;
        let composer = env.composer();
        let set = composer.playbooks().clone();
        let hits: Vec<Hit> = (1..=15)
            .flat_map(|n| ssh_hits(&set, &format!("203.0.113.{n}"), 5))
            .collect();
        let outcome = store.ingest(&batch(hits), &composer).await.expect("ingest");
        assert_eq!(outcome.opened.len(), 15);
        let claimed = store
            .claim_outbox("node-a", now(), 20, RateLimit::default(), &composer)
            .await
            .expect("claim");
        assert_eq!(
            claimed.len(),
            1,
            "one digest, not fifteen mails: {claimed:#?}"
        );
        assert_eq!(claimed[0].kind, "flood");
        assert_eq!(claimed[0].recipients(), ["duty@example.jp"]);
        assert!(
            claimed[0].subject.contains("新規インシデント 15 件"),
            "{}",
            claimed[0].subject
        );
        let rows = store.outbox().await.expect("outbox");
        for row in rows.iter().filter(|r| r.kind == "opened") {
            assert_eq!(row.status, "sent");
            assert_eq!(row.sent_in.as_deref(), Some(claimed[0].message_id.as_str()));
            let id = row.incident_id.expect("an incident");
            assert!(
                claimed[0]
                    .body
                    .contains(&format!("#{id} [新規] {}", row.subject)),
                "#{id} is not listed:\n{}",
                claimed[0].body
            );
        }
        store
            .outbox_sent(claimed[0].id, now(), &[])
            .await
            .expect("sent");
        // One mail sent in the window: three more fit and go out one by one.
        let more: Vec<Hit> = (16..=18)
            .flat_map(|n| ssh_hits(&set, &format!("203.0.113.{n}"), 5))
            .collect();
        store.ingest(&batch(more), &composer).await.expect("ingest");
        let claimed = store
            .claim_outbox("node-a", now(), 20, RateLimit::default(), &composer)
            .await
            .expect("claim");
        assert_eq!(claimed.iter().filter(|r| r.kind == "opened").count(), 3);
        for row in &claimed {
            store.outbox_sent(row.id, now(), &[]).await.expect("sent");
        }
        // Four sent in the window; with rate = 4 the group is full and the next one waits.
        let four = RateLimit {
            rate: 4,
            critical_rate: 4,
            ..RateLimit::default()
        };
        open_ssh(&store, &composer, "203.0.113.19").await;
        let claimed = store
            .claim_outbox("node-a", now(), 20, four, &composer)
            .await
            .expect("claim");
        assert!(claimed.is_empty(), "{claimed:#?}");
        // After the window it goes out on its own.
        let claimed = store
            .claim_outbox("node-a", later(11), 20, four, &composer)
            .await
            .expect("claim");
        assert_eq!(claimed.len(), 1);
        assert_eq!(claimed[0].kind, "opened");
        store.close().await;
    });
}

fn a_claim_runs_out_and_the_same_message_is_claimed_again(backend: Backend) {
    let env = Env::new(backend);
    block_on(async {
        let store = env.store().await;
        let composer = env.composer();
        open_ssh(&store, &composer, "192.0.2.77").await;
        // Two daemons claim at once: the row goes to one of them.
        let other = env.store().await;
        let (x, y) = tokio::join!(
            store.claim_outbox("node-a", now(), 20, RateLimit::default(), &composer),
            other.claim_outbox("node-b", now(), 20, RateLimit::default(), &composer),
        );
        let first: Vec<_> = [x.expect("node-a"), y.expect("node-b")].concat();
        assert_eq!(first.len(), 1, "claimed by both: {first:#?}");
        other.close().await;
        // node-a died without recording the result: after the lease, node-b sends it again.
        let after = store
            .claim_outbox("node-b", later(6), 20, RateLimit::default(), &composer)
            .await
            .expect("claim");
        assert_eq!(after.len(), 1);
        assert_eq!(after[0].message_id, first[0].message_id);
        assert_eq!(after[0].attempts, 2);
        store
            .outbox_sent(after[0].id, now(), &[])
            .await
            .expect("sent");
        let done = store
            .claim_outbox("node-b", later(60), 20, RateLimit::default(), &composer)
            .await
            .expect("claim");
        assert!(done.is_empty());
        store.close().await;
    });
}

/// `templates/incident.txt` beside the config replaces the built-in body; a broken one is
/// refused by `config check` (and so at daemon start and reload) with its file and line.
#[test]
fn custom_templates_replace_the_built_in_ones_and_broken_ones_are_refused() {
    let env = Env::new(Backend::Sqlite);
    let dir = env.dir.path().join("templates");
    std::fs::create_dir(&dir).expect("templates dir");
    std::fs::write(
        dir.join("incident.txt"),
        "北上市CSIRT 特別様式\n#{{ incident.id }} {{ incident.title }} ({{ kind }})\n",
    )
    .expect("write template");
    let out = env.csirt(&["config", "check"]);
    assert_exit(&out, 0);
    assert!(
        stdout(&out).contains("replacing the built-in ones"),
        "{}",
        stdout(&out)
    );
    block_on(async {
        let config = csirt::config::Config::load(&env.config).expect("config");
        let playbooks = csirt::playbook::load(&config.playbooks, None).expect("playbooks");
        let composer = Composer::new(
            &config,
            &playbooks,
            csirt::compose::template_dir(&env.config).as_deref(),
        )
        .expect("composer");
        let store = env.store().await;
        let id = open_ssh(&store, &composer, "192.0.2.200").await;
        let rows = store.outbox().await.expect("outbox");
        assert_eq!(
            rows[0].body,
            format!("北上市CSIRT 特別様式\n#{id} SSH総当たり攻撃 (192.0.2.200) (opened)")
        );
        store.close().await;
    });

    std::fs::write(
        dir.join("incident.txt"),
        "一行目\n{% for x in %}\n{{ x }}\n{% endfor %}\n",
    )
    .expect("write template");
    let out = env.csirt(&["config", "check"]);
    assert_exit(&out, 1);
    let err = stderr(&out);
    assert!(err.contains("templates/incident.txt:2:"), "{err}");
}
