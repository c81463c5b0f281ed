//! The Store API on both backends: the same story, the same answers.

use crate::helpers::*;
use crate::on_both_backends;
use csirt::model::{Action, Actor, Resolution, Severity, Status};
use csirt::store::{IncidentFilter, StoreError};

on_both_backends!(
    story_of_one_incident,
    one_open_incident_per_playbook_and_key,
    concurrent_acknowledgements_exactly_one_wins,
    timeline_cannot_be_rewritten,
);

fn story_of_one_incident(backend: Backend) {
    let env = Env::new(backend);
    block_on(async {
        let store = env.store().await;
        let new = incident(
            "ssh-bruteforce",
            "203.0.113.5",
            "SSH総当たり攻撃 (203.0.113.5)",
            Severity::High,
        );
        let id = store
            .open_incident(&new, &[event("203.0.113.5")], &Actor::daemon())
            .await
            .expect("open");
        let got = store.incident(id).await.expect("read back");
        assert_eq!(
            (got.status, got.severity, got.event_count),
            (Status::Open, Severity::High, 1)
        );
        assert_eq!(got.first_seen, new.first_seen, "times round-trip exactly");
        assert_eq!(got.fields, new.fields);
        let lead = Actor::mail_sender("lead@example.jp");
        let acked = store
            .apply(id, &Action::Acknowledge, &lead)
            .await
            .expect("ack");
        assert!(acked.acknowledged_at.is_some());
        let closed = store
            .apply(
                id,
                &Action::Close {
                    resolution: Resolution::FalsePositive,
                    note: None,
                },
                &lead,
            )
            .await
            .expect("close");
        assert_eq!(
            (closed.status, closed.resolution),
            (Status::Closed, Some(Resolution::FalsePositive))
        );
        let timeline = store.timeline(id).await.expect("timeline");
        assert_eq!(
            timeline
                .iter()
                .map(|t| t.actor.as_str())
                .collect::<Vec<_>>(),
            ["daemon", "mail:lead@example.jp", "mail:lead@example.jp"]
        );
        let events = store.events(id).await.expect("events");
        assert_eq!(events[0].locator, "42");
        assert!(
            store
                .list(&IncidentFilter {
                    limit: 10,
                    ..Default::default()
                })
                .await
                .expect("list")
                .is_empty()
        );
        let overview = store.overview().await.expect("overview");
        assert!(overview.open_by_severity.iter().all(|(_, n)| *n == 0));
        assert!(
            matches!(store.incident(id + 1000).await, Err(StoreError::NotFound(n)) if n == id + 1000)
        );
        store
            .record_error("node-a", "reload", "playbooks refused")
            .await
            .expect("record");
        assert_eq!(
            store.recent_errors(5).await.expect("errors")[0].message,
            "playbooks refused"
        );
        store.close().await;
    });
}

fn one_open_incident_per_playbook_and_key(backend: Backend) {
    let env = Env::new(backend);
    block_on(async {
        let store = env.store().await;
        let new = incident("ssh-bruteforce", "192.0.2.1", "x", Severity::High);
        let first = store
            .open_incident(&new, &[], &Actor::daemon())
            .await
            .expect("first");
        let dup = store.open_incident(&new, &[], &Actor::daemon()).await;
        assert!(matches!(dup, Err(StoreError::Conflict(_))), "{dup:?}");
        let other_playbook = incident("phishing-report", "192.0.2.1", "x", Severity::High);
        store
            .open_incident(&other_playbook, &[], &Actor::daemon())
            .await
            .expect("same key, other playbook");
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
        store
            .open_incident(&new, &[], &Actor::daemon())
            .await
            .expect("after close, a new one opens");
        store.close().await;
    });
}

fn concurrent_acknowledgements_exactly_one_wins(backend: Backend) {
    let env = Env::new(backend);
    let id = env.open("ssh-bruteforce", "192.0.2.44", "race", Severity::High);
    // Eight separate processes race to acknowledge; the status check inside the UPDATE lets
    // exactly one through, on SQLite (BEGIN IMMEDIATE) and PostgreSQL (row lock) alike.
    let spawned: Vec<_> = (0..8)
        .map(|_| {
            env.command(&["incidents", "ack", &id.to_string()])
                .stdout(std::process::Stdio::piped())
                .stderr(std::process::Stdio::piped())
                .spawn()
                .expect("spawn")
        })
        .collect();
    let codes: Vec<i32> = spawned
        .into_iter()
        .map(|c| {
            c.wait_with_output()
                .expect("wait")
                .status
                .code()
                .unwrap_or(-1)
        })
        .collect();
    assert_eq!(codes.iter().filter(|c| **c == 0).count(), 1, "{codes:?}");
    assert_eq!(codes.iter().filter(|c| **c == 1).count(), 7, "{codes:?}");
    let timeline = block_on(async { env.store().await.timeline(id).await.expect("timeline") });
    assert_eq!(
        timeline
            .iter()
            .filter(|t| t.action == "acknowledged")
            .count(),
        1
    );
}

fn timeline_cannot_be_rewritten(backend: Backend) {
    let env = Env::new(backend);
    let id = env.open("ssh-bruteforce", "192.0.2.45", "x", Severity::High);
    block_on(async {
        use sqlx::Connection;
        let (update, delete) = (
            "UPDATE timeline SET actor = 'nobody'",
            "DELETE FROM timeline",
        );
        let errors = match backend {
            Backend::Sqlite => {
                let mut conn = sqlx::SqliteConnection::connect(&env.url)
                    .await
                    .expect("connect");
                (
                    sqlx::query(update).execute(&mut conn).await.err(),
                    sqlx::query(delete).execute(&mut conn).await.err(),
                )
            }
            Backend::Postgres => {
                let mut conn = sqlx::PgConnection::connect(&env.url)
                    .await
                    .expect("connect");
                (
                    sqlx::query(update).execute(&mut conn).await.err(),
                    sqlx::query(delete).execute(&mut conn).await.err(),
                )
            }
        };
        for e in [errors.0, errors.1] {
            let e = e.expect("the statement must be refused");
            assert!(e.to_string().contains("timeline is append-only"), "{e}");
        }
        assert_eq!(
            env.store()
                .await
                .timeline(id)
                .await
                .expect("timeline")
                .len(),
            1
        );
    });
}
