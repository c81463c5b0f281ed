//! One escalator pass on a large store, timed in-process: what `bench/escalation.sh` runs.
//!
//! Usage: `escalation_bench CONFIG INCIDENTS`. The config's store must be an empty SQLite file
//! (it is migrated here). Seeds INCIDENTS open, unacknowledged, already mailed ssh-bruteforce
//! incidents (one statement), then times, with the clock passed in as the daemon's loop does:
//! the first pass after a start (every open incident looked at once), passes with nothing due,
//! and the pass in which a ransomware incident opened among them reaches its first level
//! (10 min). Prints one line per figure; exits 1 if the critical incident did not escalate.

use anyhow::{Context, bail};
use chrono::{DateTime, TimeDelta, Utc};
use csirt::config::Config;
use csirt::model::{Actor, Fields, NewIncident, Severity, now};
use csirt::store::{Role, Store};
use std::time::Instant;

#[tokio::main(flavor = "current_thread")]
async fn main() -> anyhow::Result<()> {
    let mut args = std::env::args().skip(1);
    let (Some(config), Some(count)) = (args.next(), args.next()) else {
        bail!("usage: escalation_bench CONFIG INCIDENTS");
    };
    let count: i64 = count.parse().context("INCIDENTS must be a number")?;
    let config = Config::load(std::path::Path::new(&config)).context("loading the config")?;
    let contacts = config.contacts.keys().cloned().collect();
    let playbooks =
        csirt::playbook::load(&config.playbooks, Some(&contacts)).context("loading playbooks")?;
    let composer =
        csirt::compose::Composer::new(&config, &playbooks, None).context("building composer")?;
    let interval = config.notify.update_interval.to_chrono();
    let store = Store::open(&config.store.url, Role::Daemon)
        .await
        .context("opening the store")?;
    store.migrate().await.context("migrating")?;

    let t0 = now();
    let started = Instant::now();
    seed(config.store.url.expose(), count, t0)
        .await
        .context("seeding")?;
    println!(
        "seed        {count} open incidents in {:.0} ms",
        ms(started)
    );

    // The daemon's first pass after a start: every open incident is made due and looked at.
    store.reschedule_open(t0).await.context("reschedule")?;
    let (first, took) = pass(&store, &composer, t0 + TimeDelta::seconds(1), interval).await?;
    println!(
        "first pass  {took:.1} ms, examined {} (after a start or reload: all open incidents once)",
        first.examined
    );

    let mut fields = Fields::new();
    fields.insert("ip".into(), "192.0.2.66".into());
    let opened_at = now();
    let critical = store
        .open_incident(
            &NewIncident {
                playbook: "ransomware".into(),
                category: "マルウェア".into(),
                title: "ランサムウェア (192.0.2.66)".into(),
                severity: Severity::Critical,
                dedupe_key: "ip=192.0.2.66".into(),
                fields,
                event_count: 1,
                first_seen: opened_at,
                last_seen: opened_at,
            },
            &[],
            &Actor::daemon(),
        )
        .await
        .context("opening the critical incident")?;
    // The store stamps the opening itself, a moment after ours: its escalation runs from that.
    let opened_at = store
        .incident(critical)
        .await
        .context("reading the critical incident")?
        .opened_at;
    // The critical incident's first pass (never mailed: its update is scheduled), then passes
    // 10 s apart with nothing due, then the one at its 10-minute level.
    let mut idle = Vec::new();
    for tick in 0..30 {
        let at = opened_at + TimeDelta::seconds(10 + 10 * tick);
        let (p, took) = pass(&store, &composer, at, interval).await?;
        if tick > 0 {
            if p.examined != 0 {
                bail!("a pass with nothing due examined {}", p.examined);
            }
            idle.push(took);
        }
    }
    let due_at = opened_at + TimeDelta::minutes(10);
    let (p, took) = pass(&store, &composer, due_at, interval).await?;
    let escalated = p.escalations.contains(&(critical, 1));
    idle.sort_by(f64::total_cmp);
    println!(
        "idle pass   median {:.2} ms, max {:.2} ms over {} passes (nothing due, {count} open)",
        idle[idle.len() / 2],
        idle[idle.len() - 1],
        idle.len()
    );
    println!(
        "due pass    {took:.1} ms at opened + 10 min: examined {}, escalated #{critical} to level 1: {}",
        p.examined,
        if escalated { "yes" } else { "NO" }
    );
    store.close().await;
    if !escalated {
        bail!("the critical incident #{critical} did not escalate on time: {p:?}");
    }
    Ok(())
}

async fn pass(
    store: &Store,
    composer: &csirt::compose::Composer,
    at: DateTime<Utc>,
    interval: TimeDelta,
) -> anyhow::Result<(csirt::store::EscalatorPass, f64)> {
    let started = Instant::now();
    let p = store
        .escalate("bench", at, interval, composer)
        .await
        .context("escalator pass")?;
    Ok((p, ms(started)))
}

fn ms(since: Instant) -> f64 {
    since.elapsed().as_secs_f64() * 1000.0
}

/// Inserts `count` open, unacknowledged, already mailed ssh-bruteforce incidents opened at `at`,
/// in one statement, as the store leaves a new incident: due at its opening.
async fn seed(url: &str, count: i64, at: DateTime<Utc>) -> anyhow::Result<()> {
    let pool = sqlx::SqlitePool::connect(url)
        .await
        .context("the bench seeds SQLite stores only")?;
    sqlx::query(
        "WITH RECURSIVE n(i) AS (SELECT 1 UNION ALL SELECT i + 1 FROM n WHERE i < $1) \
         INSERT INTO incidents (playbook, category, title, severity, status, dedupe_key, fields, \
         event_count, notified_event_count, first_seen, last_seen, opened_at, due_at) \
         SELECT 'ssh-bruteforce', '不正アクセス', 'SSH総当たり攻撃', 'high', 'open', 'ip=' || i, '{}', \
         1, 1, $2, $2, $2, $2 FROM n",
    )
    .bind(count)
    .bind(at)
    .execute(&pool)
    .await?;
    pool.close().await;
    Ok(())
}
