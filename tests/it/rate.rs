//! Flood control through the real daemon (`[notify] rate`), on both backends: incidents opened
//! one after another (never all at one instant) with the file transport writing each mail that
//! leaves. Checked from the outbox and the mail directory: no recipient group gets more than
//! `rate` mails in any window, every held mail is listed in a digest and marked sent in it
//! (nothing lost), updates and escalations are limited too, and a critical incident's mail
//! still goes out on its own while ordinary mail is held.

use crate::helpers::*;
use crate::logs::{Daemon, append, configure_default, failure, log_dir, with_store};
use crate::on_both_backends;
use csirt::store::outbox::OutboxRow;
use std::fs::File;
use std::path::PathBuf;
use std::time::Duration;

on_both_backends!(
    twenty_incidents_opened_over_time_send_at_most_rate_mails_and_a_digest_of_the_rest,
    updates_and_escalations_are_limited_per_recipient_group,
    a_critical_incident_is_mailed_on_its_own_while_a_flood_is_held,
);

/// Long enough to wait out a test's rate window and the escalator's 10 s tick.
const WINDOW_PATIENCE: Duration = Duration::from_secs(90);

/// A daemon environment with an empty auth.log and these lines added to `[notify]`.
fn env_with(backend: Backend, notify: &str) -> (Env, PathBuf) {
    let env = Env::new(backend);
    configure_default(&env);
    let text = std::fs::read_to_string(&env.config).expect("read config");
    assert!(text.contains("[notify]\n"), "{text}");
    env.write_config(&text.replace("[notify]\n", &format!("[notify]\n{notify}\n")));
    let auth = log_dir(&env).join("auth.log");
    File::create(&auth).expect("create auth.log");
    (env, auth)
}

/// Five failures from `ip`: one incident (ssh-bruteforce counts 5 in 10 minutes).
fn five_failures(ip: &str, from_second: u32) -> String {
    (from_second..from_second + 5)
        .map(|s| failure(ip, s))
        .collect()
}

fn outbox(env: &Env) -> Vec<OutboxRow> {
    with_store(env, "outbox", async |store| store.outbox().await)
}

/// Mails that left on their own (not inside a digest).
fn individual(rows: &[OutboxRow]) -> Vec<&OutboxRow> {
    rows.iter()
        .filter(|r| r.status == "sent" && r.sent_in.is_none())
        .collect()
}

/// The most mails one recipient group got within any `window` seconds.
fn most_in_a_window(rows: &[OutboxRow], window: i64) -> usize {
    let sent = individual(rows);
    sent.iter()
        .map(|a| {
            let start = a.sent_at.expect("sent_at of a sent row");
            sent.iter()
                .filter(|b| b.recipients == a.recipients)
                .filter(|b| {
                    let at = b.sent_at.expect("sent_at");
                    at >= start && (at - start).num_seconds() < window
                })
                .count()
        })
        .max()
        .unwrap_or(0)
}

/// Every row of `kind` went out: on its own, or listed in a digest (a `flood` row to the same
/// recipients that carries its incident, kind and subject) and marked sent in it. Returns how
/// many went in digests.
fn nothing_lost(rows: &[OutboxRow], kind: &str, label: &str) -> usize {
    let mut folded = 0;
    for row in rows.iter().filter(|r| r.kind == kind) {
        assert_eq!(row.status, "sent", "{row:#?}");
        let Some(digest_id) = &row.sent_in else {
            continue;
        };
        folded += 1;
        let digest = rows
            .iter()
            .find(|d| &d.message_id == digest_id)
            .unwrap_or_else(|| panic!("#{} went into a digest that is not there", row.id));
        assert_eq!(digest.kind, "flood");
        assert_eq!(digest.recipients, row.recipients);
        assert_eq!(digest.status, "sent", "{digest:#?}");
        let line = format!(
            "#{} [{label}] {}",
            row.incident_id.expect("an incident"),
            row.subject
        );
        assert!(
            digest.body.contains(&line),
            "{line:?} is not listed in\n{}",
            digest.body
        );
    }
    folded
}

/// The files the file transport wrote: the mails that really left.
fn mail_files(env: &Env) -> usize {
    std::fs::read_dir(env.dir.path().join("mail"))
        .map(|d| d.count())
        .unwrap_or(0)
}

fn twenty_incidents_opened_over_time_send_at_most_rate_mails_and_a_digest_of_the_rest(
    backend: Backend,
) {
    let (env, auth) = env_with(backend, "rate = 10\nrate_window = \"20s\"");
    let mut daemon = Daemon::start(&env);
    // Twenty incidents 0.4 s apart: never more than one or two waiting at once, which the old
    // snapshot guard (`flood = 10`) let through one by one.
    for n in 0..20u32 {
        append(
            &auth,
            five_failures(&format!("198.51.100.{}", n + 1), n * 5),
        );
        std::thread::sleep(Duration::from_millis(400));
    }
    let rows = daemon.wait_up_to(
        WINDOW_PATIENCE,
        "20 new-incident mails sent or folded",
        &env,
        |env| {
            let rows = outbox(env);
            let opened = rows.iter().filter(|r| r.kind == "opened").count();
            (opened == 20 && rows.iter().all(|r| r.status == "sent")).then_some(rows)
        },
    );
    let most = most_in_a_window(&rows, 20);
    let alone = individual(&rows)
        .iter()
        .filter(|r| r.kind == "opened")
        .count();
    let digests = rows.iter().filter(|r| r.kind == "flood").count();
    let folded = nothing_lost(&rows, "opened", "新規");
    eprintln!(
        "rate 10 per 20s, 20 incidents 0.4 s apart: {alone} mailed on their own, {folded} in \
         {digests} digest(s), at most {most} mails in any 20 s"
    );
    assert!(most <= 10, "{most} mails within one window");
    assert!(alone <= 10, "{alone} new-incident mails on their own");
    assert_eq!(alone + folded, 20);
    assert!(digests >= 1);
    assert_eq!(
        mail_files(&env),
        individual(&rows).len(),
        "mails written by the transport"
    );
    daemon.stop();
}

fn updates_and_escalations_are_limited_per_recipient_group(backend: Backend) {
    let (env, auth) = env_with(
        backend,
        "rate = 3\nrate_window = \"20s\"\nupdate_interval = \"1s\"",
    );
    // Level 1 after a second, so that the escalator's next pass escalates every incident.
    let playbook = env.playbooks().join("ssh-bruteforce.toml");
    let text = std::fs::read_to_string(&playbook).expect("read playbook");
    assert!(text.contains("after = \"30m\""));
    std::fs::write(&playbook, text.replace("after = \"30m\"", "after = \"1s\"")).expect("write");
    let mut daemon = Daemon::start(&env);
    let ips: Vec<String> = (1..=5).map(|n| format!("203.0.113.{n}")).collect();
    for (n, ip) in ips.iter().enumerate() {
        append(&auth, five_failures(ip, n as u32 * 10));
        std::thread::sleep(Duration::from_millis(200));
    }
    daemon.wait("five incidents", &env, |env| {
        (outbox(env).iter().filter(|r| r.kind == "opened").count() == 5).then_some(())
    });
    // More failures on each: five updates due at the escalator's next pass, with the five
    // escalations.
    for (n, ip) in ips.iter().enumerate() {
        append(&auth, five_failures(ip, 100 + n as u32 * 10));
    }
    let rows = daemon.wait_up_to(
        WINDOW_PATIENCE,
        "five updates and five escalations sent or folded",
        &env,
        |env| {
            let rows = outbox(env);
            let count = |k: &str| rows.iter().filter(|r| r.kind == k).count();
            (count("update") == 5
                && count("escalation") == 5
                && rows.iter().all(|r| r.status == "sent"))
            .then_some(rows)
        },
    );
    let most = most_in_a_window(&rows, 20);
    let alone = |kind: &str| individual(&rows).iter().filter(|r| r.kind == kind).count();
    let (updates, escalations) = (
        nothing_lost(&rows, "update", "続報"),
        nothing_lost(&rows, "escalation", "未受付エスカレーション"),
    );
    nothing_lost(&rows, "opened", "新規");
    eprintln!(
        "rate 3 per 20s: updates {} alone / {updates} folded, escalations {} alone / \
         {escalations} folded, at most {most} mails per group in any 20 s",
        alone("update"),
        alone("escalation")
    );
    assert!(most <= 3, "{most} mails to one group within one window");
    assert!(updates >= 2 && escalations >= 2, "{rows:#?}");
    let groups: std::collections::BTreeSet<&str> = rows
        .iter()
        .filter(|r| r.kind == "flood")
        .map(|r| r.recipients.as_str())
        .collect();
    assert!(
        groups.contains(r#"["duty@example.jp"]"#)
            && groups.contains(r#"["lead@example.jp","duty@example.jp"]"#),
        "a digest per recipient group: {groups:?}"
    );
    assert_eq!(mail_files(&env), individual(&rows).len());
    daemon.stop();
}

/// A critical playbook of its own: one line opens it.
const CRITICAL_PLAYBOOK: &str = r#"id = "rootkit"
title = "ルートキット検知 ({ip})"
category = "マルウェア"
severity = "critical"
dedupe = ["ip"]
[[rule]]
source = "log"
files = ["auth.log*"]
program = "sshd"
pattern = '^csirt-test rootkit from (?P<ip>[0-9.]+)$'
[[step]]
text = "端末をネットワークから切り離す"
"#;

fn a_critical_incident_is_mailed_on_its_own_while_a_flood_is_held(backend: Backend) {
    let (env, auth) = env_with(
        backend,
        "rate = 3\nrate_window = \"30s\"\ncritical_rate = 6",
    );
    std::fs::write(env.playbooks().join("rootkit.toml"), CRITICAL_PLAYBOOK).expect("playbook");
    let mut daemon = Daemon::start(&env);
    // Three mails, one at a time: the group is at its rate.
    for n in 1..=3u32 {
        append(&auth, five_failures(&format!("192.0.2.{n}"), n * 10));
        daemon.wait("the new-incident mail sent", &env, |env| {
            let rows = outbox(env);
            (rows.len() == n as usize && rows.iter().all(|r| r.status == "sent")).then_some(())
        });
    }
    // Two more are held.
    append(
        &auth,
        five_failures("192.0.2.4", 40) + &five_failures("192.0.2.5", 50),
    );
    daemon.wait("two more incidents", &env, |env| {
        (outbox(env).len() == 5).then_some(())
    });
    append(
        &auth,
        "Nov  3 10:01:00 it-host sshd[999]: csirt-test rootkit from 192.0.2.66\n",
    );
    let rows = daemon.wait("the critical incident's mail sent", &env, |env| {
        let rows = outbox(env);
        rows.iter()
            .any(|r| r.subject.contains("ルートキット検知") && r.status == "sent")
            .then_some(rows)
    });
    let critical = rows
        .iter()
        .find(|r| r.subject.contains("ルートキット検知"))
        .expect("the critical mail");
    assert_eq!(critical.kind, "opened");
    assert_eq!(critical.sent_in, None, "folded: {rows:#?}");
    let held: Vec<_> = rows
        .iter()
        .filter(|r| r.subject.contains("192.0.2.4)") || r.subject.contains("192.0.2.5)"))
        .collect();
    assert_eq!(held.len(), 2);
    assert!(
        held.iter().all(|r| r.status == "pending"),
        "ordinary mail went out over the rate: {held:#?}"
    );
    // When the window has room, the held two go out: on their own if the three earlier mails
    // have all left the window by then, in one digest otherwise; never before.
    let rows = daemon.wait_up_to(WINDOW_PATIENCE, "the held mails sent", &env, |env| {
        let rows = outbox(env);
        rows.iter().all(|r| r.status == "sent").then_some(rows)
    });
    let folded = nothing_lost(&rows, "opened", "新規");
    let first = rows[0].sent_at.expect("the first mail's time");
    let waited: Vec<i64> = rows
        .iter()
        .filter(|r| r.subject.contains("192.0.2.4)") || r.subject.contains("192.0.2.5)"))
        .map(|r| {
            let sent = match &r.sent_in {
                Some(digest) => rows.iter().find(|d| &d.message_id == digest),
                None => Some(r),
            };
            (sent.and_then(|r| r.sent_at).expect("sent_at") - first).num_milliseconds()
        })
        .collect();
    eprintln!(
        "rate 3 per 30s, critical_rate 6: 3 ordinary mails, then the critical one on its own \
         while 2 were held; those left {waited:?} ms after the first mail ({folded} in a digest)"
    );
    assert!(
        waited.iter().all(|ms| *ms >= 30_000),
        "held mail left before the window had room: {waited:?} ms"
    );
    assert!(most_in_a_window(&rows, 30) <= 6);
    assert_eq!(mail_files(&env), individual(&rows).len());
    daemon.stop();
}
