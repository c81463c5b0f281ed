//! The systemd journal through the real daemon: journal files written by Debian's
//! systemd-journal-remote (no systemd as PID 1 needed), read by `csirt daemon` with a
//! `[[journal]]` source over that directory, killed with SIGKILL mid-stream and restarted; the
//! committed counts must equal what was written, exactly.

use crate::helpers::*;
use crate::journalfile::{Entry, TestJournal};
use crate::logs::{Daemon, NODE, configure_default, with_store};
use crate::on_both_backends;
use std::collections::BTreeMap;
use std::time::Duration;

on_both_backends!(journal_sigkill_mid_stream_then_restart_counts_exactly_once);

/// The SSH playbook reads `auth.log*`: the journal source takes that name.
const SOURCE: &str = "auth.log";

fn configure_journal(env: &Env, journal: &TestJournal) {
    configure_default(env);
    let text = std::fs::read_to_string(&env.config).expect("read config");
    env.write_config(&format!(
        "{text}\n[[journal]]\nname = \"{SOURCE}\"\nmatches = [\"_SYSTEMD_UNIT=ssh.service\"]\n\
         directory = \"{}\"\nstart_at = \"beginning\"\n",
        journal.dir.path().display()
    ));
}

fn hit_counts(env: &Env) -> BTreeMap<String, i64> {
    with_store(env, "hit counts", async |store| {
        Ok(store
            .hit_counts("ssh-bruteforce")
            .await?
            .into_iter()
            .collect())
    })
}

/// `n` failures spread over `addresses` attackers, deterministically, with their truth.
fn failures(n: usize, addresses: usize, pid_base: u32) -> (Vec<Entry>, BTreeMap<String, i64>) {
    let mut truth = BTreeMap::new();
    let entries = (0..n)
        .map(|i| {
            let ip = format!("203.0.113.{}", 1 + (i * 7 + i / 3) % addresses);
            *truth.entry(format!("ip={ip}")).or_insert(0) += 1;
            Entry::sshd(pid_base + i as u32, &ip)
        })
        .collect();
    (entries, truth)
}

fn add(total: &mut BTreeMap<String, i64>, more: BTreeMap<String, i64>) {
    for (k, v) in more {
        *total.entry(k).or_insert(0) += v;
    }
}

fn journal_sigkill_mid_stream_then_restart_counts_exactly_once(backend: Backend) {
    let Some(journal) = TestJournal::new() else {
        return;
    };
    let env = Env::new(backend);
    configure_journal(&env, &journal);
    let mut truth = BTreeMap::new();
    // Written before the first start: read from the beginning of the directory.
    let (early, t) = failures(40, 6, 1000);
    add(&mut truth, t);
    journal.append(&early);
    // What must never count: another unit's failure line, and a local user's forgery (`logger
    // -t sshd` sets SYSLOG_IDENTIFIER, but journald sets _SYSTEMD_UNIT itself).
    journal.append(&[
        Entry::new("Failed password for root from 198.51.100.7 port 22 ssh2")
            .field("SYSLOG_IDENTIFIER", "sshd")
            .field("_PID", "4242")
            .field("_SYSTEMD_UNIT", "user@1000.service"),
        Entry::new("Failed password for root from 198.51.100.8 port 22 ssh2")
            .field("SYSLOG_IDENTIFIER", "cron")
            .field("_PID", "4243")
            .field("_SYSTEMD_UNIT", "cron.service"),
    ]);

    let mut first = Daemon::start(&env);
    first.wait("the early entries committed", &env, |env| {
        (hit_counts(env) == truth).then_some(())
    });
    // A stream, and the kill in the middle of it.
    let (stream, t) = failures(3_000, 25, 5000);
    add(&mut truth, t);
    let (steady, rest) = stream.split_at(600);
    let (burst, tail) = rest.split_at(1_200);
    for chunk in steady.chunks(100) {
        journal.append(chunk);
    }
    first.wait("some of the stream committed", &env, |env| {
        (hit_counts(env).values().sum::<i64>() > 40).then_some(())
    });
    // A burst, and the kill as soon as part of it is committed: the reader and the writer are
    // busy with the rest.
    let writer = std::thread::scope(|scope| {
        let writing = scope.spawn(|| {
            for chunk in burst.chunks(50) {
                journal.append(chunk);
                // Spread over about a second: the kill is meant to land inside it.
                std::thread::sleep(Duration::from_millis(40));
            }
        });
        first.wait("part of the burst committed", &env, |env| {
            (hit_counts(env).values().sum::<i64>() > 640).then_some(())
        });
        let seen: i64 = hit_counts(&env).values().sum();
        first.kill();
        eprintln!(
            "kill sent with {seen} committed, writer done: {}",
            writing.is_finished()
        );
        writing.join()
    });
    writer.expect("the burst was written");
    let at_kill: i64 = hit_counts(&env).values().sum();
    eprintln!("killed with {at_kill} of {} failures committed", 40 + 1_800);
    assert!(at_kill <= 40 + 1_800, "more hits than entries written");
    for chunk in tail.chunks(300) {
        journal.append(chunk);
    }

    let mut second = Daemon::start(&env);
    second.wait("every failure counted exactly once", &env, |env| {
        (hit_counts(env) == truth).then_some(())
    });
    // Nothing more arrives later either: no entry is read twice after the restart.
    std::thread::sleep(Duration::from_millis(1_500));
    assert_eq!(hit_counts(&env), truth, "{}", second.log_tail());
    // One incident per attacker (each crossed the threshold within seconds), none for the
    // forged or foreign lines.
    let listed = json(&env.csirt(&[
        "incidents",
        "list",
        "--status",
        "all",
        "--limit",
        "1000",
        "--json",
    ]));
    let mut keys: Vec<String> = listed
        .as_array()
        .expect("an array")
        .iter()
        .map(|i| i["dedupe_key"].as_str().expect("a key").to_string())
        .collect();
    keys.sort();
    assert_eq!(keys, truth.keys().cloned().collect::<Vec<_>>());
    // `csirt status` shows where the node stands in the journal.
    let status = json(&env.csirt(&["status", "--json"]));
    let journals = status["journals"].as_array().expect("journals in status");
    assert!(
        journals
            .iter()
            .any(|j| j["node"] == NODE && j["source"] == SOURCE && j["cursor"].is_string()),
        "{status:#}"
    );
    second.stop();
}
