//! `Store::ingest` on both backends: thresholds from stored events, dedupe, bounded evidence,
//! exact counts, checkpoints.

use crate::helpers::*;
use crate::on_both_backends;
use chrono::{DateTime, TimeDelta, Utc};
use csirt::engine::{Batch, Checkpoint, EVIDENCE_KEEP, Hit};
use csirt::model::{Action, Actor, Resolution};
use csirt::playbook::PlaybookSet;

on_both_backends!(
    threshold_opens_at_the_count_within_the_window,
    a_restart_mid_window_loses_no_partial_count,
    later_hits_join_with_bounded_evidence_and_exact_counts,
    a_hit_after_close_opens_a_new_incident,
    checkpoints_and_hostile_bytes_are_stored,
    a_repeated_line_counts_as_often_as_it_repeats,
    a_login_after_failures_raises_the_incident,
    severity_follows_the_citys_networks,
    pending_events_keep_each_hits_own_values,
);

fn playbooks() -> PlaybookSet {
    csirt::playbook::load(&repo().join("playbooks"), None).expect("repository playbooks")
}

fn t0() -> DateTime<Utc> {
    DateTime::parse_from_rfc3339("2026-11-03T06:00:00Z")
        .expect("time")
        .to_utc()
}

/// A failed-password hit from `ip` at `t0 + seconds`.
fn ssh_hit(set: &PlaybookSet, ip: &str, seconds: i64) -> Hit {
    ssh_hit_with(
        set,
        ip,
        seconds.to_string(),
        t0() + TimeDelta::seconds(seconds),
        format!("sshd[1]: Failed password for root from {ip} port 22 ssh2"),
    )
}

fn threshold_opens_at_the_count_within_the_window(backend: Backend) {
    let env = Env::new(backend);
    let set = playbooks();
    block_on(async {
        let store = env.store().await;
        let composer = env.composer();
        // Four failures, then one 20 minutes later: never five within 10 minutes.
        let slow: Vec<Hit> = [0, 60, 120, 180, 1_380]
            .iter()
            .map(|s| ssh_hit(&set, "192.0.2.10", *s))
            .collect();
        let outcome = store.ingest(&batch(slow), &composer).await.expect("ingest");
        assert!(outcome.opened.is_empty(), "{outcome:?}");
        assert_eq!(outcome.pending, 5);
        // Four more within the window of the last one: five in 10 minutes, one incident.
        let more: Vec<Hit> = [1_400, 1_500, 1_600, 1_700]
            .iter()
            .map(|s| ssh_hit(&set, "192.0.2.10", *s))
            .collect();
        let outcome = store.ingest(&batch(more), &composer).await.expect("ingest");
        assert_eq!(outcome.opened.len(), 1, "{outcome:?}");
        let incident = store.incident(outcome.opened[0]).await.expect("incident");
        assert_eq!(incident.event_count, 5);
        assert_eq!(incident.first_seen, t0() + TimeDelta::seconds(1_380));
        assert_eq!(incident.dedupe_key, "ip=192.0.2.10");
        assert_eq!(incident.title, "SSH総当たり攻撃 (192.0.2.10)");
        assert_eq!(store.events(incident.id).await.expect("events").len(), 5);
        assert_eq!(
            store.hit_counts("ssh-bruteforce").await.expect("counts"),
            [("ip=192.0.2.10".to_string(), 9)]
        );
        store.close().await;
    });
}

fn a_restart_mid_window_loses_no_partial_count(backend: Backend) {
    let env = Env::new(backend);
    let set = playbooks();
    block_on(async {
        let store = env.store().await;
        let composer = env.composer();
        let first: Vec<Hit> = (0..3)
            .map(|n| ssh_hit(&set, "2001:db8::7", n * 30))
            .collect();
        assert!(
            store
                .ingest(&batch(first), &composer)
                .await
                .expect("ingest")
                .opened
                .is_empty()
        );
        store.close().await;
    });
    block_on(async {
        let store = env.store().await;
        let composer = env.composer();
        let rest: Vec<Hit> = (3..5)
            .map(|n| ssh_hit(&set, "2001:db8::7", n * 30))
            .collect();
        let outcome = store.ingest(&batch(rest), &composer).await.expect("ingest");
        assert_eq!(outcome.opened.len(), 1, "the count survives the restart");
        assert_eq!(
            store
                .incident(outcome.opened[0])
                .await
                .expect("incident")
                .event_count,
            5
        );
        store.close().await;
    });
}

fn later_hits_join_with_bounded_evidence_and_exact_counts(backend: Backend) {
    let env = Env::new(backend);
    let set = playbooks();
    block_on(async {
        let store = env.store().await;
        let composer = env.composer();
        let hits: Vec<Hit> = (0..100).map(|n| ssh_hit(&set, "203.0.113.5", n)).collect();
        let outcome = store
            .ingest(&batch(hits[..50].to_vec()), &composer)
            .await
            .expect("ingest");
        assert_eq!(outcome.opened.len(), 1);
        let id = outcome.opened[0];
        let outcome = store
            .ingest(&batch(hits[50..].to_vec()), &composer)
            .await
            .expect("ingest");
        assert_eq!(
            (outcome.opened.len(), outcome.joined.as_slice()),
            (0, &[id][..])
        );
        let incident = store.incident(id).await.expect("incident");
        assert_eq!(incident.event_count, 100);
        assert_eq!(incident.last_seen, t0() + TimeDelta::seconds(99));
        let kept: Vec<String> = store
            .events(id)
            .await
            .expect("events")
            .into_iter()
            .map(|e| e.locator)
            .collect();
        let expected: Vec<String> = (0..EVIDENCE_KEEP)
            .chain(100 - EVIDENCE_KEEP..100)
            .map(|n| n.to_string())
            .collect();
        assert_eq!(kept, expected, "first and last {EVIDENCE_KEEP} kept");
        store.close().await;
    });
}

fn a_hit_after_close_opens_a_new_incident(backend: Backend) {
    let env = Env::new(backend);
    let set = playbooks();
    block_on(async {
        let store = env.store().await;
        let composer = env.composer();
        let five = |from: i64| {
            (from..from + 5)
                .map(|n| ssh_hit(&set, "198.51.100.9", n))
                .collect::<Vec<_>>()
        };
        let first = store
            .ingest(&batch(five(0)), &composer)
            .await
            .expect("ingest")
            .opened[0];
        store
            .apply(
                first,
                &Action::Close {
                    resolution: Resolution::Resolved,
                    note: None,
                },
                &Actor::daemon(),
            )
            .await
            .expect("close");
        let one_more = store
            .ingest(&batch(vec![ssh_hit(&set, "198.51.100.9", 10)]), &composer)
            .await
            .expect("ingest");
        assert!(
            one_more.opened.is_empty(),
            "below the threshold again after the close"
        );
        let second = store
            .ingest(&batch(five(20)), &composer)
            .await
            .expect("ingest");
        assert_eq!(second.opened.len(), 1);
        assert_ne!(second.opened[0], first);
        store.close().await;
    });
}

fn checkpoints_and_hostile_bytes_are_stored(backend: Backend) {
    let env = Env::new(backend);
    let set = playbooks();
    block_on(async {
        let store = env.store().await;
        let composer = env.composer();
        let mut hit = ssh_hit(&set, "192.0.2.99", 0);
        hit.threshold = None;
        let mut fields = hit.fields.clone();
        fields.insert("user".into(), "ro\0ot\u{1b}[31m".into());
        let playbook = set.get("ssh-bruteforce").expect("playbook");
        let hostile = Hit::new(
            playbook,
            &playbook.rules[0],
            fields,
            "log",
            hit.source.clone(),
            "1".into(),
            hit.observed_at,
            "a\0b\u{1b}[2J".into(),
        );
        let hostile = Hit {
            threshold: None,
            ..hostile
        };
        let checkpoint = Checkpoint {
            dev: 2049,
            inode: u64::from(u32::MAX) + 5,
            fingerprint: "512:0123abcd".into(),
            path: "/var/log/auth.log".into(),
            offset: 123_456,
            line_no: 789,
            tail_fingerprint: "256:89abcdef01234567".into(),
        };
        let outcome = store
            .ingest(
                &Batch {
                    node: "node-a".into(),
                    hits: vec![hostile],
                    checkpoints: vec![checkpoint.clone()],
                    ..Default::default()
                },
                &composer,
            )
            .await
            .expect("NUL and escapes are stored, not refused");
        let events = store.events(outcome.opened[0]).await.expect("events");
        assert_eq!(events[0].text, "a\u{2400}b\u{1b}[2J");
        assert_eq!(events[0].fields["user"], "ro\u{2400}ot\u{1b}[31m");
        assert_eq!(
            store.log_checkpoints("node-a").await.expect("checkpoints"),
            std::slice::from_ref(&checkpoint)
        );
        let moved = Checkpoint {
            path: "/var/log/auth.log.1".into(),
            offset: 200_000,
            ..checkpoint.clone()
        };
        store
            .ingest(
                &Batch {
                    node: "node-a".into(),
                    hits: vec![],
                    checkpoints: vec![moved.clone()],
                    ..Default::default()
                },
                &composer,
            )
            .await
            .expect("ingest");
        assert_eq!(
            store.log_checkpoints("node-a").await.expect("checkpoints"),
            [moved]
        );
        assert!(
            store
                .log_checkpoints("node-b")
                .await
                .expect("checkpoints")
                .is_empty()
        );
        store.close().await;
    });
}

/// rsyslog's `message repeated 3 times: [ … ]` is three failures: toward the threshold (in a
/// later batch too, so from the stored window), in the exact counts and in event_count.
fn a_repeated_line_counts_as_often_as_it_repeats(backend: Backend) {
    let env = Env::new(backend);
    let set = playbooks();
    block_on(async {
        let store = env.store().await;
        let composer = env.composer();
        let first = vec![ssh_hit(&set, "192.0.2.30", 0).times(3)];
        let outcome = store
            .ingest(&batch(first), &composer)
            .await
            .expect("ingest");
        assert!(outcome.opened.is_empty(), "3 of 5: {outcome:?}");
        let second = vec![ssh_hit(&set, "192.0.2.30", 30).times(2)];
        let outcome = store
            .ingest(&batch(second), &composer)
            .await
            .expect("ingest");
        assert_eq!(outcome.opened.len(), 1, "3 + 2 reach 5: {outcome:?}");
        let id = outcome.opened[0];
        let later = vec![
            ssh_hit(&set, "192.0.2.30", 40).times(4),
            ssh_hit(&set, "192.0.2.30", 50),
        ];
        store
            .ingest(&batch(later), &composer)
            .await
            .expect("ingest");
        let incident = store.incident(id).await.expect("incident");
        assert_eq!(incident.event_count, 10);
        assert_eq!(
            store.hit_counts("ssh-bruteforce").await.expect("counts"),
            [("ip=192.0.2.30".to_string(), 10)]
        );
        assert_eq!(store.events(id).await.expect("events").len(), 4);
    });
}

/// Pending events are written many rows to a statement, with what a run of hits shares (rule,
/// file, …) bound once (#13): each event still holds its own hit's values, whatever runs the
/// batch falls into, and the counters are exact.
fn pending_events_keep_each_hits_own_values(backend: Backend) {
    let env = Env::new(backend);
    let set = playbooks();
    let playbook = set.get("ssh-bruteforce").expect("ssh playbook");
    // Two rules, two files, two keys, interleaved: runs of one, two and three hits.
    let hit = |ip: &str, rule: usize, file: &str, n: i64| {
        let mut fields = csirt::model::Fields::new();
        fields.insert("ip".into(), ip.into());
        fields.insert("user".into(), format!("user{n}").into());
        Hit::new(
            playbook,
            &playbook.rules[rule],
            fields,
            "log",
            file.into(),
            format!("{}", 100 + n),
            t0() + TimeDelta::seconds(n),
            format!("line {n} from {ip} by rule {rule} in {file}"),
        )
    };
    let hits = vec![
        hit("192.0.2.50", 0, "/var/log/auth.log", 1),
        hit("192.0.2.51", 0, "/var/log/auth.log", 2),
        hit("192.0.2.50", 1, "/var/log/auth.log", 3),
        hit("192.0.2.50", 1, "/var/log/secure", 4),
        hit("192.0.2.51", 1, "/var/log/secure", 5),
        hit("192.0.2.50", 1, "/var/log/secure", 6),
    ];
    block_on(async {
        let store = env.store().await;
        let composer = env.composer();
        let outcome = store
            .ingest(&batch(hits.clone()), &composer)
            .await
            .expect("ingest");
        assert!(
            outcome.opened.is_empty(),
            "below the threshold: {outcome:?}"
        );
        assert_eq!(outcome.pending, 6);
        assert_eq!(
            store.hit_counts("ssh-bruteforce").await.expect("counts"),
            [
                ("ip=192.0.2.50".to_string(), 4),
                ("ip=192.0.2.51".to_string(), 2)
            ]
        );
        // The fifth failure of 192.0.2.50 opens its incident with the pending events as evidence.
        let fifth = hit("192.0.2.50", 0, "/var/log/auth.log", 7);
        let outcome = store
            .ingest(&batch(vec![fifth.clone()]), &composer)
            .await
            .expect("ingest");
        assert_eq!(outcome.opened.len(), 1, "{outcome:?}");
        let events = store.events(outcome.opened[0]).await.expect("events");
        let expected: Vec<&Hit> = hits
            .iter()
            .chain([&fifth])
            .filter(|h| h.dedupe_key == "ip=192.0.2.50")
            .collect();
        assert_eq!(events.len(), expected.len());
        for (event, hit) in events.iter().zip(expected) {
            assert_eq!(
                (
                    event.kind.as_str(),
                    &event.rule,
                    &event.source,
                    &event.locator,
                    event.observed_at,
                    &event.text,
                    &event.fields,
                ),
                (
                    hit.kind,
                    &hit.rule,
                    &hit.source,
                    &hit.locator,
                    hit.observed_at,
                    &hit.text,
                    &hit.fields,
                ),
            );
        }
        store.close().await;
    });
}

/// An `Accepted … from H` hit of the SSH playbook's raising rule.
fn login(set: &PlaybookSet, ip: &str, seconds: i64) -> Hit {
    let playbook = set.get("ssh-bruteforce").expect("ssh playbook");
    let rule = playbook
        .rules
        .iter()
        .find(|r| r.raise.is_some())
        .expect("the raising rule");
    let mut fields = csirt::model::Fields::new();
    fields.insert("ip".into(), ip.into());
    fields.insert("user".into(), "kitakami".into());
    Hit::new(
        playbook,
        rule,
        fields,
        "log",
        "/var/log/auth.log".into(),
        format!("ok-{seconds}"),
        t0() + TimeDelta::seconds(seconds),
        format!("sshd[1]: Accepted password for kitakami from {ip} port 22 ssh2"),
    )
}

/// A brute force that ends in a login is the compromise: the open incident (or one closed
/// within 24 h, or three failures still below the threshold) becomes critical, its title says
/// so, the CSIRT is told at once and the escalation jumps to the last level; an ordinary login
/// records nothing, and a second login raises nothing new.
fn a_login_after_failures_raises_the_incident(backend: Backend) {
    let env = Env::new(backend);
    let set = playbooks();
    block_on(async {
        let store = env.store().await;
        let composer = env.composer();
        // An open incident of five failures, then the login.
        let failures: Vec<Hit> = (0..5).map(|s| ssh_hit(&set, "192.0.2.40", s)).collect();
        let id = store
            .ingest(&batch(failures), &composer)
            .await
            .expect("ingest")
            .opened[0];
        let outcome = store
            .ingest(&batch(vec![login(&set, "192.0.2.40", 30)]), &composer)
            .await
            .expect("ingest");
        assert_eq!(outcome.raised, [id]);
        let raised = store.incident(id).await.expect("incident");
        assert_eq!(raised.severity, csirt::model::Severity::Critical);
        assert_eq!(raised.title, "SSH総当たり攻撃 (192.0.2.40) (ログイン成功)");
        assert_eq!(raised.escalation_level, 2, "straight to the last level");
        assert_eq!(
            raised.event_count, 5,
            "the login is evidence, not a failure"
        );
        let outbox = store.outbox().await.expect("outbox");
        let mail = outbox
            .iter()
            .find(|r| r.kind == "raised")
            .expect("a raised mail");
        assert!(mail.subject.contains("ログイン成功"), "{}", mail.subject);
        for to in ["tokatsu@example.jp", "ciso@example.jp", "duty@example.jp"] {
            assert!(
                mail.recipients().contains(&to.to_string()),
                "{to}: {:?}",
                mail.recipients()
            );
        }
        let timeline = store.timeline(id).await.expect("timeline");
        assert!(
            timeline
                .iter()
                .any(|t| t.action == "raised" && t.detail.contains("kitakami"))
        );
        // A second login: evidence and a note, no second alarm.
        let outcome = store
            .ingest(&batch(vec![login(&set, "192.0.2.40", 40)]), &composer)
            .await
            .expect("ingest");
        assert!(outcome.raised.is_empty());
        let raised_mails = store
            .outbox()
            .await
            .expect("outbox")
            .iter()
            .filter(|r| r.kind == "raised")
            .count();
        assert_eq!(raised_mails, 1);

        // Three failures below the threshold, then a login: opened raised.
        let few: Vec<Hit> = (0..3).map(|s| ssh_hit(&set, "192.0.2.41", s)).collect();
        store.ingest(&batch(few), &composer).await.expect("ingest");
        let outcome = store
            .ingest(&batch(vec![login(&set, "192.0.2.41", 20)]), &composer)
            .await
            .expect("ingest");
        assert_eq!(outcome.opened.len(), 1, "{outcome:?}");
        assert_eq!(outcome.raised, outcome.opened);
        let opened = store.incident(outcome.opened[0]).await.expect("incident");
        assert_eq!(
            (opened.event_count, opened.severity),
            (3, csirt::model::Severity::Critical)
        );

        // Two failures then a login, and a login from nowhere: nothing.
        let two: Vec<Hit> = (0..2).map(|s| ssh_hit(&set, "192.0.2.42", s)).collect();
        store.ingest(&batch(two), &composer).await.expect("ingest");
        for ip in ["192.0.2.42", "192.0.2.43"] {
            let outcome = store
                .ingest(&batch(vec![login(&set, ip, 20)]), &composer)
                .await
                .expect("ingest");
            assert!(
                outcome.opened.is_empty() && outcome.raised.is_empty(),
                "{ip}: {outcome:?}"
            );
        }

        // Closed as a false positive an hour ago, then a login: reopened and raised.
        let failures: Vec<Hit> = (0..5).map(|s| ssh_hit(&set, "192.0.2.44", s)).collect();
        let closed = store
            .ingest(&batch(failures), &composer)
            .await
            .expect("ingest")
            .opened[0];
        let close = Action::Close {
            resolution: Resolution::FalsePositive,
            note: None,
        };
        store
            .apply(closed, &close, &Actor::current_user())
            .await
            .expect("close");
        let outcome = store
            .ingest(&batch(vec![login(&set, "192.0.2.44", 60)]), &composer)
            .await
            .expect("ingest");
        assert_eq!(outcome.raised, [closed]);
        let reopened = store.incident(closed).await.expect("incident");
        assert_eq!(reopened.status, csirt::model::Status::Open);
    });
}

/// `[networks]` and the SSH playbook's `[context]`: failures from outside the city's networks
/// open a low incident that does not escalate past duty; from inside, a high one; a login after
/// failures from outside is still critical and escalates to the last level.
fn severity_follows_the_citys_networks(backend: Backend) {
    let env = Env::new(backend);
    let internal: Vec<csirt::playbook::cidr::Cidr> = vec!["10.0.0.0/8".parse().expect("cidr")];
    let set = playbooks()
        .with_networks(Some(internal))
        .with_exposed(Some(vec!["GW".into()]));
    block_on(async {
        let store = env.store().await;
        let composer = env.composer();
        let outside: Vec<Hit> = (0..5).map(|s| ssh_hit(&set, "203.0.113.50", s)).collect();
        let inside: Vec<Hit> = (0..5).map(|s| ssh_hit(&set, "10.20.3.4", s)).collect();
        let o = store
            .ingest(&batch(outside), &composer)
            .await
            .expect("ingest")
            .opened[0];
        let i = store
            .ingest(&batch(inside), &composer)
            .await
            .expect("ingest")
            .opened[0];
        let o = store.incident(o).await.expect("incident");
        let i = store.incident(i).await.expect("incident");
        assert_eq!(o.severity, csirt::model::Severity::Low);
        assert_eq!(o.fields["network"], "external");
        assert_eq!(i.severity, csirt::model::Severity::High);
        assert_eq!(i.fields["network"], "internal");
        // Three hours unacknowledged: the inside one escalates to its last level, the outside
        // one not at all.
        let later = t0() + TimeDelta::hours(3);
        let playbook = set.get("ssh-bruteforce").expect("playbook");
        let quiet = |x: &csirt::model::Incident| csirt::engine::due::Notified {
            events: x.event_count,
            last_update_at: None,
        };
        let mut o_at = o.clone();
        o_at.opened_at = t0();
        let mut i_at = i.clone();
        i_at.opened_at = t0();
        let due_o = csirt::engine::due::due(
            &o_at,
            quiet(&o),
            Some(playbook),
            later,
            TimeDelta::minutes(15),
        );
        let due_i = csirt::engine::due::due(
            &i_at,
            quiet(&i),
            Some(playbook),
            later,
            TimeDelta::minutes(15),
        );
        assert_eq!(due_o.escalation, None);
        assert_eq!(due_i.escalation.map(|l| l.level), Some(2));

        // From outside, through the real rules: failures against an account the host has
        // (sshd writes no "invalid user") open a high incident that escalates in full; the same
        // against root (every host has it) or an unknown account stay low.
        let matcher = csirt::playbook::matcher::Matcher::new(set.clone()).expect("matcher");
        let rules = matcher.rules_for(std::path::Path::new("/var/log/auth.log"));
        let hits = |ip: &str, account: &str, host: &str| -> Vec<Hit> {
            (0..5)
                .map(|s| {
                    let line = format!(
                        "Nov 25 10:00:0{s} {host} sshd[4{s}]: Failed password for {account} from {ip} port 22 ssh2"
                    );
                    let mut out = Vec::new();
                    matcher.scan(&rules, &line, &mut out);
                    assert_eq!(out.len(), 1, "{line}");
                    Hit::of_log_match(
                        out.remove(0),
                        "/var/log/auth.log".into(),
                        format!("k{ip}{s}"),
                        t0() + TimeDelta::seconds(s),
                        line.clone(),
                    )
                })
                .collect()
        };
        let mut opened = Vec::new();
        for (ip, account, host) in [
            ("198.51.100.7", "tanaka.taro", "gw"),
            ("198.51.100.8", "root", "gw"),
            ("198.51.100.9", "invalid user tanaka.taro", "gw"),
            // A host the config does not name as exposed: the perimeter let them through.
            ("198.51.100.10", "invalid user x", "db01"),
        ] {
            let id = store
                .ingest(&batch(hits(ip, account, host)), &composer)
                .await
                .expect("ingest")
                .opened[0];
            let mut incident = store.incident(id).await.expect("incident");
            incident.opened_at = t0();
            opened.push(incident);
        }
        let levels: Vec<_> = opened
            .iter()
            .map(|x| {
                let due = csirt::engine::due::due(
                    x,
                    quiet(x),
                    Some(playbook),
                    later,
                    TimeDelta::minutes(15),
                );
                (
                    x.severity,
                    x.fields.get("account").cloned(),
                    due.escalation.map(|l| l.level),
                )
            })
            .collect();
        assert_eq!(
            levels,
            [
                (csirt::model::Severity::High, Some("exists".into()), Some(2)),
                (csirt::model::Severity::Low, None, None),
                (csirt::model::Severity::Low, None, None),
                (csirt::model::Severity::High, None, Some(2)),
            ]
        );
        assert_eq!(opened[3].fields["exposed"], "no");
        assert_eq!(opened[3].fields["target_host"], "db01");
        assert!(opened[0].fields.get("exposed").is_none(), "gw is exposed");
        assert_eq!(opened[0].fields["user"], "tanaka.taro");
        assert_eq!(opened[2].fields["user"], "tanaka.taro");
    });
}
