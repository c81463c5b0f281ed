//! Housekeeping through the real `csirt db prune` and `csirt status`: expired below-threshold
//! evidence and its counters go while a key inside its window keeps counting exactly; raw mail
//! bytes go after `[retention] mails` with the incident untouched; announced quarantines go
//! after `[retention] quarantine`; every deletion is counted in `csirt status`.

use crate::helpers::*;
use crate::on_both_backends;
use chrono::{DateTime, TimeDelta, Utc};
use csirt::engine::Hit;
use csirt::playbook::PlaybookSet;
use std::time::Duration;

on_both_backends!(
    expired_below_threshold_keys_go_and_a_key_in_its_window_counts_on,
    old_raw_mails_are_blanked_and_old_quarantines_deleted,
    long_closed_incidents_keep_their_first_and_last_evidence,
    the_daemon_prunes_every_interval,
);

/// The window the tests' SSH playbook gets: short, so that the received-time guard passes
/// after a short sleep.
const WINDOW: &str = "3s";
const SPRAY: usize = 6_000;

/// Shortens every window of the environment's SSH playbook to `WINDOW`, and loads it.
fn short_windows(env: &Env) -> PlaybookSet {
    let path = env.playbooks().join("ssh-bruteforce.toml");
    let text = std::fs::read_to_string(&path).expect("ssh playbook");
    let text = text.replace("window = \"10m\"", &format!("window = \"{WINDOW}\""));
    std::fs::write(&path, text).expect("write ssh playbook");
    csirt::playbook::load(&env.playbooks(), None).expect("playbooks")
}

fn failure(set: &PlaybookSet, ip: &str, at: DateTime<Utc>) -> Hit {
    ssh_hit_with(
        set,
        ip,
        "1".into(),
        at,
        format!("sshd[1]: Failed password for root from {ip} port 22 ssh2"),
    )
}

fn spray_ip(i: usize) -> String {
    format!("10.{}.{}.{}", i / 65_536, (i / 256) % 256, i % 256)
}

fn prune(env: &Env, dry_run: bool) -> serde_json::Value {
    let mut args = vec!["db", "prune", "--json"];
    if dry_run {
        args.push("--dry-run");
    }
    let out = env.csirt(&args);
    assert_exit(&out, 0);
    json(&out)
}

fn expired_below_threshold_keys_go_and_a_key_in_its_window_counts_on(backend: Backend) {
    let env = Env::new(backend);
    let set = short_windows(&env);
    let composer = env.composer();
    let long_ago = csirt::model::now() - TimeDelta::hours(1);
    // The key in its window: observed an hour ahead, so that it stays inside its window however
    // slowly this machine runs the prune.
    let ahead = csirt::model::now() + TimeDelta::hours(1);
    let in_window = "192.0.2.77";
    let attacker = "192.0.2.99";
    block_on(async {
        let store = env.store().await;
        for chunk in (0..SPRAY).collect::<Vec<_>>().chunks(1_000) {
            let hits = chunk
                .iter()
                .map(|&i| failure(&set, &spray_ip(i), long_ago))
                .collect();
            store.ingest(&batch(hits), &composer).await.expect("spray");
        }
        // An attacker over the threshold, long ago: its incident is open, so its counter stays.
        let hits = (0..5)
            .map(|s| failure(&set, attacker, long_ago + TimeDelta::milliseconds(100 * s)))
            .collect();
        let outcome = store
            .ingest(&batch(hits), &composer)
            .await
            .expect("attacker");
        assert_eq!(outcome.opened.len(), 1);
        store.close().await;
    });
    // The received-time guard: the window must have passed since they were read, too.
    std::thread::sleep(Duration::from_millis(3_500));
    block_on(async {
        let store = env.store().await;
        let hits = (0..2)
            .map(|s| failure(&set, in_window, ahead + TimeDelta::milliseconds(100 * s)))
            .collect();
        let outcome = store
            .ingest(&batch(hits), &composer)
            .await
            .expect("in window");
        assert_eq!(outcome.pending, 2);
        store.close().await;
    });

    let status = json(&env.csirt(&["status", "--json"]));
    assert_eq!(
        status["usage"]["pending_events"],
        SPRAY as i64 + 2,
        "{status}"
    );
    assert!(status["usage"]["size_bytes"].as_i64().expect("size") > 0);
    assert!(status["usage"]["oldest_pending_event"].is_string());

    let dry = prune(&env, true);
    assert_eq!(dry["dry_run"], true);
    assert_eq!(dry["pending_events"], SPRAY as i64, "{dry}");
    assert_eq!(dry["hit_counts"], SPRAY as i64, "{dry}");
    let status = json(&env.csirt(&["status", "--json"]));
    assert_eq!(
        status["usage"]["pending_events"],
        SPRAY as i64 + 2,
        "a dry run deletes nothing: {status}"
    );

    let started = std::time::Instant::now();
    let done = prune(&env, false);
    eprintln!(
        "{backend:?}: pruned {} pending events and {} counters in {:?}",
        done["pending_events"],
        done["hit_counts"],
        started.elapsed()
    );
    assert_eq!(done["pending_events"], SPRAY as i64, "{done}");
    assert_eq!(done["hit_counts"], SPRAY as i64, "{done}");
    // A second run finds nothing left.
    assert_eq!(prune(&env, false)["pending_events"], 0);

    block_on(async {
        let store = env.store().await;
        let counts = store.hit_counts("ssh-bruteforce").await.expect("counts");
        assert_eq!(
            counts,
            [
                (format!("ip={in_window}"), 2),
                (format!("ip={attacker}"), 5)
            ],
        );
        // The key in its window counts on from its two: three more reach the threshold of five.
        let hits = (2..5)
            .map(|s| failure(&set, in_window, ahead + TimeDelta::milliseconds(100 * s)))
            .collect();
        let outcome = store.ingest(&batch(hits), &composer).await.expect("more");
        assert_eq!(outcome.opened.len(), 1, "{outcome:?}");
        let incident = store.incident(outcome.opened[0]).await.expect("incident");
        assert_eq!(incident.event_count, 5);
        let counts = store.hit_counts("ssh-bruteforce").await.expect("counts");
        assert!(
            counts.contains(&(format!("ip={in_window}"), 5)),
            "{counts:?}"
        );
        store.close().await;
    });

    let status = json(&env.csirt(&["status", "--json"]));
    let usage = &status["usage"];
    assert_eq!(usage["pending_events"], 0, "{status}");
    assert_eq!(usage["hit_counts"], 2, "{status}");
    assert!(usage["last_prune_at"].is_string(), "{status}");
    let total = |kind: &str| {
        usage["pruned"]
            .as_array()
            .expect("pruned")
            .iter()
            .find(|t| t["kind"] == kind)
            .map(|t| t["total"].clone())
    };
    assert_eq!(total("pending_events"), Some(SPRAY.into()), "{status}");
    assert_eq!(total("hit_counts"), Some(SPRAY.into()), "{status}");
    let text = stdout(&env.csirt(&["status"]));
    assert!(text.contains("pending_events 6000"), "{text}");
    assert!(text.contains("容量 (size)"), "{text}");
}

/// Runs one statement on the test's store (what the daemon's notifier would have done).
fn execute(env: &Env, sql: &str) {
    block_on(async {
        if env.url.starts_with("sqlite:") {
            let pool = sqlx::SqlitePool::connect(&env.url).await.expect("sqlite");
            sqlx::query(sql).execute(&pool).await.expect(sql);
            pool.close().await;
        } else {
            let pool = sqlx::PgPool::connect(&env.url).await.expect("postgres");
            sqlx::query(sql).execute(&pool).await.expect(sql);
            pool.close().await;
        }
    })
}

fn scalar(env: &Env, sql: &str) -> i64 {
    block_on(async {
        if env.url.starts_with("sqlite:") {
            let pool = sqlx::SqlitePool::connect(&env.url).await.expect("sqlite");
            let n = sqlx::query_scalar(sql).fetch_one(&pool).await.expect(sql);
            pool.close().await;
            n
        } else {
            let pool = sqlx::PgPool::connect(&env.url).await.expect("postgres");
            let n = sqlx::query_scalar(sql).fetch_one(&pool).await.expect(sql);
            pool.close().await;
            n
        }
    })
}

fn old_raw_mails_are_blanked_and_old_quarantines_deleted(backend: Backend) {
    let env = Env::new(backend);
    let config = std::fs::read_to_string(&env.config).expect("config");
    env.write_config(&format!(
        "{config}\n[retention]\nmails = \"1s\"\nquarantine = \"1s\"\n"
    ));
    // Two reports: one incident closed, one left open (its mail keeps its bytes).
    assert_exit(&env.intake(&corpus("report_staff1.eml")), 0);
    assert_exit(&env.intake(&corpus("utf8_plain.eml")), 0);
    let list = json(&env.csirt(&["incidents", "list", "--status", "all", "--json"]));
    let ids: Vec<i64> = list
        .as_array()
        .expect("incidents")
        .iter()
        .map(|i| i["id"].as_i64().expect("id"))
        .collect();
    assert!(!ids.is_empty(), "{list}");
    let closed = ids[0];
    let before = json(&env.csirt(&["incidents", "show", &closed.to_string(), "--json"]));
    assert_exit(
        &env.csirt(&[
            "incidents",
            "close",
            &closed.to_string(),
            "--resolution",
            "resolved",
        ]),
        0,
    );
    // Two quarantines: one announced (it may go), one not yet (its notice still needs it).
    assert_exit(&env.intake(&corpus("not_mail.eml")), 65);
    execute(
        &env,
        "UPDATE mails SET announced_at = received_at WHERE disposition = 'quarantined'",
    );
    let mut other = corpus("not_mail.eml");
    other.extend_from_slice(b"\nsomething else\n");
    assert_exit(&env.intake(&other), 65);
    let quarantined = scalar(
        &env,
        "SELECT COUNT(*) FROM mails WHERE disposition = 'quarantined'",
    );
    let of_closed = scalar(
        &env,
        &format!("SELECT COUNT(*) FROM mails WHERE incident_id = {closed}"),
    );
    let kept_open = scalar(
        &env,
        &format!(
            "SELECT COUNT(*) FROM mails WHERE disposition <> 'quarantined' \
             AND (incident_id IS NULL OR incident_id <> {closed})"
        ),
    );
    assert!(of_closed >= 1);
    std::thread::sleep(Duration::from_millis(1_500));

    let done = prune(&env, false);
    // Mails not linked to any incident (notes without one) are blanked too; those of open
    // incidents are not.
    let unlinked = scalar(
        &env,
        "SELECT COUNT(*) FROM mails WHERE incident_id IS NULL AND disposition <> 'quarantined' \
         AND raw_pruned_at IS NOT NULL",
    );
    assert_eq!(done["raw_mails"], of_closed + unlinked, "{done}");
    assert_eq!(done["quarantined_mails"], quarantined - 1, "{done}");
    assert_eq!(
        scalar(
            &env,
            &format!(
                "SELECT COUNT(*) FROM mails WHERE incident_id = {closed} \
                 AND raw_pruned_at IS NOT NULL AND size > 0 AND content_hash <> ''"
            ),
        ),
        of_closed,
        "the rows stay with their hash and size"
    );
    let kept: i64 = scalar(
        &env,
        "SELECT COUNT(*) FROM mails WHERE disposition <> 'quarantined' AND raw_pruned_at IS NULL",
    );
    assert_eq!(
        kept,
        kept_open - unlinked,
        "an open incident's mail keeps its bytes"
    );
    // The incident keeps what it had: fields, indicators, evidence text.
    let after = json(&env.csirt(&["incidents", "show", &closed.to_string(), "--json"]));
    assert_eq!(before["fields"], after["fields"]);
    assert_eq!(before["events"], after["events"]);

    let status = json(&env.csirt(&["status", "--json"]));
    let pruned = status["usage"]["pruned"]
        .as_array()
        .expect("pruned")
        .clone();
    let total = |kind: &str| {
        pruned
            .iter()
            .find(|t| t["kind"] == kind)
            .map(|t| t["total"].as_i64().expect("total"))
    };
    assert_eq!(total("raw_mails"), done["raw_mails"].as_i64(), "{status}");
    assert_eq!(
        total("quarantined_mails"),
        Some(quarantined - 1),
        "{status}"
    );
    assert_eq!(status["overview"]["quarantined_mails"], 1, "{status}");
}

fn long_closed_incidents_keep_their_first_and_last_evidence(backend: Backend) {
    let env = Env::new(backend);
    let config = std::fs::read_to_string(&env.config).expect("config");
    env.write_config(&format!("{config}\n[retention]\nevents = \"1s\"\n"));
    let (closed, open) = block_on(async {
        let store = env.store().await;
        let events: Vec<_> = (0..30).map(|_| event("198.51.100.1")).collect();
        let mut ids = Vec::new();
        for key in ["198.51.100.1", "198.51.100.2"] {
            let new = incident("ssh-bruteforce", key, "SSH", csirt::model::Severity::High);
            ids.push(
                store
                    .open_incident(&new, &events, &csirt::model::Actor::daemon())
                    .await
                    .expect("open"),
            );
        }
        store.close().await;
        (ids[0], ids[1])
    });
    assert_exit(
        &env.csirt(&[
            "incidents",
            "close",
            &closed.to_string(),
            "--resolution",
            "resolved",
        ]),
        0,
    );
    std::thread::sleep(Duration::from_millis(1_500));
    let done = prune(&env, false);
    assert_eq!(done["incident_events"], 10, "{done}");
    let events = |id: i64| {
        scalar(
            &env,
            &format!("SELECT COUNT(*) FROM events WHERE incident_id = {id}"),
        )
    };
    assert_eq!(events(closed), 20, "the first and last ten stay");
    assert_eq!(events(open), 30, "an open incident keeps all its evidence");
}

fn the_daemon_prunes_every_interval(backend: Backend) {
    let env = Env::new(backend);
    let set = short_windows(&env);
    crate::logs::configure_default(&env);
    let config = std::fs::read_to_string(&env.config).expect("config");
    env.write_config(&format!("{config}\n[retention]\ninterval = \"2s\"\n"));
    let composer = env.composer();
    let long_ago = csirt::model::now() - TimeDelta::hours(1);
    block_on(async {
        let store = env.store().await;
        let hits = (0..50)
            .map(|i| failure(&set, &spray_ip(i), long_ago))
            .collect();
        store.ingest(&batch(hits), &composer).await.expect("spray");
        store.close().await;
    });
    std::thread::sleep(Duration::from_millis(3_500));
    let mut daemon = crate::logs::Daemon::start(&env);
    let usage = daemon.wait("the daemon's housekeeping", &env, |env| {
        let status = json(&env.csirt(&["status", "--json"]));
        (status["usage"]["pending_events"] == 0).then(|| status["usage"].clone())
    });
    daemon.stop();
    assert_eq!(usage["hit_counts"], 0, "{usage}");
    let pending = usage["pruned"]
        .as_array()
        .expect("pruned")
        .iter()
        .find(|t| t["kind"] == "pending_events")
        .map(|t| t["total"].clone());
    assert_eq!(pending, Some(50.into()), "{usage}");
}
