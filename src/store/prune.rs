//! Housekeeping: what retention removes, in short batches, each counted in `prune_totals` in the
//! transaction that deletes (so the totals are exact), and what `csirt status` shows of the
//! store's size and its oldest rows.
//!
//! It must never take what counting or an open incident still needs: a below-threshold key goes
//! only when its playbook's longest window has passed since its newest pending event, both in
//! the events' observed time and in the time they were received (a backlog read after an outage
//! carries old observed times while its next lines for the same key are still to come); a key
//! with an incident that is not closed keeps its counter; a mail of such an incident keeps its
//! bytes; a quarantine not announced yet stays. Each batch is its own short transaction, so
//! ingest waits for the write lock at most one batch.

use super::sql::Sql;
use super::{Backend, Store, StoreError};
use chrono::{DateTime, TimeDelta, Utc};
use serde::Serialize;
use std::collections::BTreeMap;

/// How many keys, mails or incidents one transaction handles.
pub const BATCH: i64 = 500;

/// Runs `batch` over ids from the start (it gets the last id done, 0 first, and says what it
/// removed, its own last id and whether it was full) until a batch is not full; the ingest
/// writer gets the lock between batches.
async fn in_id_batches<F, Fut>(mut batch: F) -> Result<i64, StoreError>
where
    F: FnMut(i64) -> Fut,
    Fut: std::future::Future<Output = Result<(i64, i64, bool), StoreError>>,
{
    let (mut total, mut after) = (0, 0);
    loop {
        let (count, last, full) = batch(after).await?;
        total += count;
        after = last;
        if !full {
            return Ok(total);
        }
        tokio::task::yield_now().await;
    }
}

/// What one housekeeping run may remove.
#[derive(Debug, Clone)]
pub struct PrunePlan {
    /// Per playbook id, its longest window (thresholds and raising rules).
    pub windows: BTreeMap<String, TimeDelta>,
    /// The window of a playbook the store holds but the loaded set lacks (removed or renamed):
    /// the longest of all, since it may come back.
    pub fallback_window: TimeDelta,
    pub mails: TimeDelta,
    pub quarantine: TimeDelta,
    pub events: TimeDelta,
    /// Count what would go, and roll back.
    pub dry_run: bool,
}

impl PrunePlan {
    /// The plan of `retention` for `playbooks`: each playbook's window is the longest of its
    /// rules' threshold and raising windows, the span within which a pending event can still
    /// count. A playbook without either never keeps pending events (its hits open incidents).
    pub fn new(
        retention: &crate::config::Retention,
        playbooks: &crate::playbook::PlaybookSet,
        dry_run: bool,
    ) -> PrunePlan {
        let windows: BTreeMap<String, TimeDelta> = playbooks
            .iter()
            .map(|p| {
                let longest = p
                    .rules
                    .iter()
                    .flat_map(|r| {
                        r.threshold
                            .map(|t| t.window.to_chrono())
                            .into_iter()
                            .chain(r.raise.as_ref().map(|x| x.window.to_chrono()))
                    })
                    .max()
                    .unwrap_or_else(TimeDelta::zero);
                (p.id.clone(), longest)
            })
            .collect();
        PrunePlan {
            fallback_window: windows
                .values()
                .copied()
                .max()
                .unwrap_or_else(TimeDelta::zero),
            windows,
            mails: retention.mails.to_chrono(),
            quarantine: retention.quarantine.to_chrono(),
            events: retention.events.to_chrono(),
            dry_run,
        }
    }
}

/// What one run removed (or, dry, would remove).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize)]
pub struct PruneCounts {
    /// Below-threshold events whose window had passed.
    pub pending_events: i64,
    /// Their keys' counters.
    pub hit_counts: i64,
    /// Raw mails whose bytes were blanked (the rows stay).
    pub raw_mails: i64,
    /// Quarantined mails deleted.
    pub quarantined_mails: i64,
    /// Events of long-closed incidents beyond the kept evidence.
    pub incident_events: i64,
}

impl PruneCounts {
    fn kinds(&self) -> [(&'static str, i64); 5] {
        [
            ("pending_events", self.pending_events),
            ("hit_counts", self.hit_counts),
            ("raw_mails", self.raw_mails),
            ("quarantined_mails", self.quarantined_mails),
            ("incident_events", self.incident_events),
        ]
    }

    /// The sum of every kind.
    pub fn total(&self) -> i64 {
        self.kinds().iter().map(|(_, n)| n).sum()
    }
}

/// A kind's total since the store was created.
#[derive(Debug, Clone, Serialize, sqlx::FromRow)]
pub struct PruneTotal {
    pub kind: String,
    pub total: i64,
    /// When the last housekeeping run that removed some of this kind committed.
    pub last_at: DateTime<Utc>,
}

/// The store's size, its oldest rows and what housekeeping has removed.
#[derive(Debug, Clone, Serialize)]
pub struct StoreUsage {
    /// SQLite: the database file and its WAL; PostgreSQL: `pg_database_size`.
    pub size_bytes: Option<i64>,
    /// SQLite: the filesystem that holds it (PostgreSQL's disk is the server's).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub disk: Option<super::space::Disk>,
    pub oldest_pending_event: Option<DateTime<Utc>>,
    pub pending_events: i64,
    pub hit_counts: i64,
    pub oldest_raw_mail: Option<DateTime<Utc>>,
    /// When a housekeeping run last completed (dry runs do not count).
    pub last_prune_at: Option<DateTime<Utc>>,
    pub pruned: Vec<PruneTotal>,
}

/// The kind under which the completed runs themselves are counted.
const RUNS: &str = "runs";

impl Store {
    /// Runs every retention once, batch by batch, as of `now`.
    #[tracing::instrument(skip_all, fields(dry_run = plan.dry_run))]
    pub async fn prune(
        &self,
        plan: &PrunePlan,
        now: DateTime<Utc>,
    ) -> Result<PruneCounts, StoreError> {
        let mut counts = PruneCounts::default();
        let mut playbooks: Vec<String> = read!(self, pool => sqlx::query_scalar(
            "SELECT DISTINCT playbook FROM hit_counts",
        )
        .fetch_all(pool)
        .await?);
        playbooks.sort();
        for playbook in &playbooks {
            let window = plan
                .windows
                .get(playbook)
                .copied()
                .unwrap_or(plan.fallback_window);
            let (events, keys) = self
                .prune_pending(playbook, now - window, plan.dry_run, now)
                .await?;
            counts.pending_events += events;
            counts.hit_counts += keys;
        }
        counts.raw_mails = self
            .prune_raw_mails(now - plan.mails, plan.dry_run, now)
            .await?;
        counts.quarantined_mails = self
            .prune_quarantine(now - plan.quarantine, plan.dry_run, now)
            .await?;
        counts.incident_events = self
            .prune_incident_events(now - plan.events, plan.dry_run, now)
            .await?;
        if !plan.dry_run {
            transaction!(self, tx => {
                tx.add_prune_total(RUNS, 1, now).await?;
                Ok::<_, StoreError>(())
            })?;
        }
        Ok(counts)
    }

    /// Below-threshold events and counters of `playbook` whose keys' newest pending event
    /// precedes `cutoff` (observed and received), and that have no incident that is not
    /// closed. Walks the counters in key order, `BATCH` keys per transaction.
    async fn prune_pending(
        &self,
        playbook: &str,
        cutoff: DateTime<Utc>,
        dry_run: bool,
        now: DateTime<Utc>,
    ) -> Result<(i64, i64), StoreError> {
        let (mut events, mut counters) = (0, 0);
        let mut after = String::new();
        loop {
            let (batch_events, batch_counters, last, full) = transaction_or_rollback!(self, !dry_run, tx => {
                let candidates: Vec<String> = sqlx::query_scalar(
                    "SELECT dedupe_key FROM hit_counts WHERE playbook = $1 AND dedupe_key > $2 \
                     AND last_seen < $3 ORDER BY dedupe_key LIMIT $4",
                )
                .bind(playbook)
                .bind(&after)
                .bind(cutoff)
                .bind(BATCH)
                .fetch_all(&mut *tx)
                .await?;
                let Some(last) = candidates.last().cloned() else {
                    return Ok::<_, StoreError>((0, 0, after.clone(), false));
                };
                // On PostgreSQL another daemon may be ingesting one of these keys: its lock
                // makes this wait for its commit, and the statements below, which re-check
                // every condition, then see its rows. In byte order, as ingest takes them (the
                // database's collation may order them otherwise), so the two cannot deadlock.
                let mut locking: Vec<&String> = candidates.iter().collect();
                locking.sort_unstable();
                for key in locking {
                    tx.lock_key(playbook, key).await?;
                }
                // A key is expired when its counter and every pending event of it precede the
                // cutoff, and no incident of it is open. (One DELETE with this as a subquery
                // made PostgreSQL plan a scan of the events per key: minutes for 6,000 keys.)
                let expired: Vec<String> = sqlx::query_scalar(
                    "SELECT h.dedupe_key FROM hit_counts h WHERE h.playbook = $1 \
                     AND h.dedupe_key > $2 AND h.dedupe_key <= $3 AND h.last_seen < $4 \
                     AND NOT EXISTS (SELECT 1 FROM incidents i WHERE i.playbook = h.playbook \
                       AND i.dedupe_key = h.dedupe_key AND i.status <> 'closed') \
                     AND NOT EXISTS (SELECT 1 FROM events e WHERE e.incident_id IS NULL \
                       AND e.playbook = h.playbook AND e.dedupe_key = h.dedupe_key \
                       AND (e.observed_at >= $4 OR e.received_at >= $4)) \
                     ORDER BY h.dedupe_key",
                )
                .bind(playbook)
                .bind(&after)
                .bind(&last)
                .bind(cutoff)
                .fetch_all(&mut *tx)
                .await?;
                let (mut gone_events, mut gone_counters) = (0i64, 0i64);
                for key in &expired {
                    gone_events += sqlx::query(
                        "DELETE FROM events WHERE incident_id IS NULL AND playbook = $1 AND dedupe_key = $2",
                    )
                    .bind(playbook)
                    .bind(key)
                    .execute(&mut *tx)
                    .await?
                    .rows_affected() as i64;
                    gone_counters += sqlx::query(
                        "DELETE FROM hit_counts WHERE playbook = $1 AND dedupe_key = $2",
                    )
                    .bind(playbook)
                    .bind(key)
                    .execute(&mut *tx)
                    .await?
                    .rows_affected() as i64;
                }
                tx.add_prune_total("pending_events", gone_events, now).await?;
                tx.add_prune_total("hit_counts", gone_counters, now).await?;
                Ok((gone_events, gone_counters, last, candidates.len() as i64 == BATCH))
            })?;
            events += batch_events;
            counters += batch_counters;
            after = last;
            if !full {
                return Ok((events, counters));
            }
            // Let the ingest writer have the lock between batches.
            tokio::task::yield_now().await;
        }
    }

    /// Blanks the raw bytes of mails received before `cutoff`, except quarantined ones (their
    /// own retention) and those of an incident that is not closed.
    async fn prune_raw_mails(
        &self,
        cutoff: DateTime<Utc>,
        dry_run: bool,
        now: DateTime<Utc>,
    ) -> Result<i64, StoreError> {
        const KEPT: &str = "raw_pruned_at IS NULL AND disposition <> 'quarantined' AND received_at < $2 \
             AND (incident_id IS NULL OR NOT EXISTS (SELECT 1 FROM incidents i \
               WHERE i.id = mails.incident_id AND i.status <> 'closed'))";
        in_id_batches(|after| async move {
            transaction_or_rollback!(self, !dry_run, tx => {
                    let ids: Vec<i64> = sqlx::query_scalar(&format!(
                        "SELECT id FROM mails WHERE id > $1 AND {KEPT} ORDER BY id LIMIT $3"
                    ))
                    .bind(after)
                    .bind(cutoff)
                    .bind(BATCH)
                    .fetch_all(&mut *tx)
                    .await?;
                    let Some(&last) = ids.last() else {
                        return Ok::<_, StoreError>((0, after, false));
                    };
                    let count = sqlx::query(&format!(
                        "UPDATE mails SET raw = $4, raw_pruned_at = $5 WHERE id > $1 AND id <= $3 AND {KEPT}"
                    ))
                    .bind(after)
                    .bind(cutoff)
                    .bind(last)
                    .bind(Vec::<u8>::new())
                    .bind(now)
                    .execute(&mut *tx)
                    .await?
                    .rows_affected() as i64;
                    tx.add_prune_total("raw_mails", count, now).await?;
                    Ok((count, last, ids.len() as i64 == BATCH))
            })
        })
        .await
    }

    /// Deletes quarantined mails received before `cutoff` that have been announced (a notice
    /// not sent yet still needs its row).
    async fn prune_quarantine(
        &self,
        cutoff: DateTime<Utc>,
        dry_run: bool,
        now: DateTime<Utc>,
    ) -> Result<i64, StoreError> {
        const OLD: &str =
            "disposition = 'quarantined' AND announced_at IS NOT NULL AND received_at < $2";
        in_id_batches(|after| async move {
            transaction_or_rollback!(self, !dry_run, tx => {
                    let ids: Vec<i64> = sqlx::query_scalar(&format!(
                        "SELECT id FROM mails WHERE id > $1 AND {OLD} ORDER BY id LIMIT $3"
                    ))
                    .bind(after)
                    .bind(cutoff)
                    .bind(BATCH)
                    .fetch_all(&mut *tx)
                    .await?;
                    let Some(&last) = ids.last() else {
                        return Ok::<_, StoreError>((0, after, false));
                    };
                    let count = sqlx::query(&format!(
                        "DELETE FROM mails WHERE id > $1 AND id <= $3 AND {OLD}"
                    ))
                    .bind(after)
                    .bind(cutoff)
                    .bind(last)
                    .execute(&mut *tx)
                    .await?
                    .rows_affected() as i64;
                    tx.add_prune_total("quarantined_mails", count, now).await?;
                    Ok((count, last, ids.len() as i64 == BATCH))
            })
        })
        .await
    }

    /// Trims incidents closed before `cutoff` to their first and last `EVIDENCE_KEEP` events.
    /// Only closed ones: an open incident's evidence is what its responders work from.
    async fn prune_incident_events(
        &self,
        cutoff: DateTime<Utc>,
        dry_run: bool,
        now: DateTime<Utc>,
    ) -> Result<i64, StoreError> {
        in_id_batches(|after| async move {
            transaction_or_rollback!(self, !dry_run, tx => {
                    let ids: Vec<i64> = sqlx::query_scalar(
                        "SELECT id FROM incidents WHERE id > $1 AND status = 'closed' AND closed_at < $2 \
                         ORDER BY id LIMIT $3",
                    )
                    .bind(after)
                    .bind(cutoff)
                    .bind(BATCH)
                    .fetch_all(&mut *tx)
                    .await?;
                    let Some(&last) = ids.last() else {
                        return Ok::<_, StoreError>((0, after, false));
                    };
                    let mut count = 0i64;
                    for id in &ids {
                        count += tx.trim_evidence(*id).await? as i64;
                    }
                    tx.add_prune_total("incident_events", count, now).await?;
                    Ok((count, last, ids.len() as i64 == BATCH))
            })
        })
        .await
    }

    /// The store's size, its oldest rows and the housekeeping totals, for `csirt status`.
    pub async fn usage(&self) -> Result<StoreUsage, StoreError> {
        let size_bytes = match &self.backend {
            Backend::Sqlite { write, .. } => {
                let options = write.connect_options();
                let file = options.get_filename();
                // The WAL holds committed pages not yet checkpointed into the file: both are
                // what the store takes on disk.
                let mut wal = file.as_os_str().to_os_string();
                wal.push("-wal");
                let size = |p: &std::path::Path| std::fs::metadata(p).map(|m| m.len()).ok();
                size(file).map(|f| (f + size(std::path::Path::new(&wal)).unwrap_or(0)) as i64)
            }
            Backend::Postgres(pool) => Some(
                sqlx::query_scalar("SELECT pg_database_size(current_database())")
                    .fetch_one(pool)
                    .await?,
            ),
        };
        let (oldest_pending_event, pending_events, hit_counts, oldest_raw_mail, pruned) = read!(self, pool => (
            sqlx::query_scalar::<_, Option<DateTime<Utc>>>(
                "SELECT MIN(observed_at) FROM events WHERE incident_id IS NULL",
            )
            .fetch_one(pool)
            .await?,
            sqlx::query_scalar::<_, i64>("SELECT COUNT(*) FROM events WHERE incident_id IS NULL")
                .fetch_one(pool)
                .await?,
            sqlx::query_scalar::<_, i64>("SELECT COUNT(*) FROM hit_counts")
                .fetch_one(pool)
                .await?,
            sqlx::query_scalar::<_, Option<DateTime<Utc>>>(
                "SELECT MIN(received_at) FROM mails WHERE raw_pruned_at IS NULL",
            )
            .fetch_one(pool)
            .await?,
            sqlx::query_as::<_, PruneTotal>("SELECT kind, total, last_at FROM prune_totals ORDER BY kind")
                .fetch_all(pool)
                .await?,
        ));
        let last_prune_at = pruned.iter().find(|t| t.kind == RUNS).map(|t| t.last_at);
        Ok(StoreUsage {
            size_bytes,
            disk: self.disk(),
            oldest_pending_event,
            pending_events,
            hit_counts,
            oldest_raw_mail,
            last_prune_at,
            pruned: pruned.into_iter().filter(|t| t.kind != RUNS).collect(),
        })
    }
}
