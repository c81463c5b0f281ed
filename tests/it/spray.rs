//! Address sprays through the real daemon (#13): many addresses below their threshold, held in
//! memory windows with a bound (`[store] window_keys`), the oldest spilled to the store, and a
//! SIGKILL in the middle; the counts stay exact and the threshold opens exactly the incidents
//! the sliding window says, one each, across the spill and across the restart.

use crate::helpers::*;
use crate::logs::{Daemon, append, configure_default, failure, hit_counts, incidents, log_dir};
use crate::on_both_backends;
use std::collections::BTreeMap;
use std::fs::File;
use std::path::PathBuf;
use std::time::Duration;

on_both_backends!(
    a_spray_over_the_window_bound_keeps_exact_counts,
    sigkill_mid_spray_then_restart_keeps_exact_counts_and_opens_one_incident,
);

/// The default config with `[store] window_keys = bound` and an empty auth.log in place.
fn env_with_bound(backend: Backend, bound: Option<usize>) -> (Env, PathBuf) {
    let env = Env::new(backend);
    configure_default(&env);
    if let Some(bound) = bound {
        let text = std::fs::read_to_string(&env.config).expect("read config");
        assert!(text.contains("[store]\n"), "the helpers' config changed");
        env.write_config(&text.replace("[store]\n", &format!("[store]\nwindow_keys = {bound}\n")));
    }
    let auth = log_dir(&env).join("auth.log");
    File::create(&auth).expect("create auth.log");
    (env, auth)
}

/// Failures as (second, address), in time order, and the counts per key they make.
struct Spray {
    events: Vec<(u32, String)>,
}

impl Spray {
    fn new(mut events: Vec<(u32, String)>) -> Spray {
        events.sort();
        Spray { events }
    }

    fn lines(&self, range: std::ops::Range<usize>) -> String {
        self.events[range]
            .iter()
            .map(|(s, ip)| failure(ip, *s))
            .collect()
    }

    fn counts(&self) -> BTreeMap<String, i64> {
        let mut counts = BTreeMap::new();
        for (_, ip) in &self.events {
            *counts.entry(format!("ip={ip}")).or_insert(0) += 1;
        }
        counts
    }
}

/// The SSH incidents: dedupe key → event count, each key at most once.
fn incident_counts(env: &Env) -> BTreeMap<String, i64> {
    let mut out = BTreeMap::new();
    for i in incidents(env) {
        let key = i["dedupe_key"].as_str().expect("dedupe_key").to_string();
        let count = i["event_count"].as_i64().expect("event_count");
        assert!(
            out.insert(key.clone(), count).is_none(),
            "two incidents of {key}"
        );
    }
    out
}

/// 600 addresses with 1-4 failures each within ten minutes (never five: no incident), under a
/// bound of 40 windows, so that nearly every window is spilled before its key comes back;
/// among them attackers whose fifth failure within ten minutes comes long after their first
/// (their windows spilled in between: read back from the store) and one whose fifth comes
/// after its first left the window (no incident: the memory must not count a stale hit).
fn a_spray_over_the_window_bound_keeps_exact_counts(backend: Backend) {
    let (env, auth) = env_with_bound(backend, Some(40));
    let mut daemon = Daemon::start(&env);
    let mut events = Vec::new();
    for i in 0..600u32 {
        let ip = format!("10.1.{}.{}", i / 200, i % 200);
        for k in 0..(1 + i % 4) {
            events.push(((i * 7 + k * 131) % 590, ip.clone()));
        }
    }
    let attackers: Vec<String> = (1..=5).map(|i| format!("198.51.100.{i}")).collect();
    for (n, ip) in attackers.iter().enumerate() {
        let n = n as u32;
        for k in 0..(5 + n) {
            events.push((10 + n + k * 110, ip.clone()));
        }
    }
    // Four within ten minutes, the fifth 601 s after the first: never five in one window.
    for s in [0u32, 200, 400, 590, 601] {
        events.push((s, "198.51.100.99".into()));
    }
    let spray = Spray::new(events);
    let total = spray.events.len();
    let step = 97;
    for start in (0..total).step_by(step) {
        append(&auth, spray.lines(start..(start + step).min(total)));
        std::thread::sleep(Duration::from_millis(20));
    }
    daemon.wait_for_counts(&env, &spray.counts());
    let want: BTreeMap<String, i64> = attackers
        .iter()
        .enumerate()
        .map(|(n, ip)| {
            // Every failure of an attacker lies within 600 s of its first but the last ones of
            // the longest (5 + n failures, 110 s apart: the sixth and later join the incident).
            (format!("ip={ip}"), 5 + n as i64)
        })
        .collect();
    assert_eq!(
        incident_counts(&env),
        want,
        "\n--- daemon log\n{}",
        daemon.log_tail()
    );
    let log = daemon.log_text();
    daemon.stop();
    assert!(
        log.contains("window_keys"),
        "the spray should have gone over the bound of 40 windows:\n{log}"
    );
}

/// Two addresses with three failures each before a SIGKILL that lands in the middle of a spray
/// of 3,000 addresses; after the restart one of them fails twice more within its window (one
/// incident, five events: the three before the kill counted once), the other once more (four:
/// none), and every counter is exact.
fn sigkill_mid_spray_then_restart_keeps_exact_counts_and_opens_one_incident(backend: Backend) {
    let (env, auth) = env_with_bound(backend, None);
    let mut first = Daemon::start(&env);
    let spray_ips: Vec<String> = (0..3000u32)
        .map(|i| format!("10.2.{}.{}", i / 250, i % 250))
        .collect();
    let lines = |range: std::ops::Range<usize>, second: u32| -> String {
        spray_ips[range]
            .iter()
            .map(|ip| failure(ip, second))
            .collect()
    };
    let (crossing, staying) = ("198.51.100.7", "198.51.100.8");
    let mut before = String::new();
    for s in [10, 20, 30] {
        before.push_str(&failure(crossing, s));
        before.push_str(&failure(staying, s));
    }
    append(&auth, before);
    append(&auth, lines(0..500, 40));
    first.wait("the first committed hits", &env, |env| {
        (hit_counts(env).values().sum::<i64>() > 0).then_some(())
    });
    // A burst, and the kill right behind it.
    for chunk in (500..2000).step_by(100) {
        append(&auth, lines(chunk..chunk + 100, 50));
    }
    first.kill();
    let at_kill: i64 = hit_counts(&env).values().sum();
    eprintln!("killed with {at_kill} of 2006 failures committed");
    assert!(at_kill <= 2006, "more hits than failure lines written");

    append(&auth, lines(2000..3000, 60));
    let mut after = failure(crossing, 300);
    after.push_str(&failure(crossing, 310));
    after.push_str(&failure(staying, 320));
    append(&auth, after);
    let mut second = Daemon::start(&env);
    let mut want: BTreeMap<String, i64> =
        spray_ips.iter().map(|ip| (format!("ip={ip}"), 1)).collect();
    want.insert(format!("ip={crossing}"), 5);
    want.insert(format!("ip={staying}"), 4);
    second.wait_for_counts(&env, &want);
    assert_eq!(
        incident_counts(&env),
        BTreeMap::from([(format!("ip={crossing}"), 5)]),
        "\n--- daemon log\n{}",
        second.log_tail()
    );
    second.stop();
}
