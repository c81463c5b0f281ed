//! Log and mail ingest: the transaction that commits hits, their correlation into incidents,
//! and the source checkpoints together (the exactly-once point), plus the checkpoint queries.

use super::outbox::{announce, enqueue};
use super::{Backend, EventRow, INCIDENT_COLUMNS, IncidentRow, Store, StoreError};
use crate::compose::{Composer, Occasion};
use crate::engine::{Batch, Checkpoint, EVIDENCE_KEEP, IngestOutcome};
use crate::model::now;
use crate::model::{Event, Incident};
use chrono::{DateTime, Utc};
use sqlx::types::Json;
use std::collections::HashMap;

/// Serialises writers of one dedupe key across daemons. SQLite needs nothing: BEGIN IMMEDIATE
/// already makes each transaction the only writer.
pub(super) trait KeyLock {
    fn lock_key(
        &mut self,
        playbook: &str,
        key: &str,
    ) -> impl Future<Output = Result<(), sqlx::Error>> + Send;
}

impl KeyLock for sqlx::SqliteConnection {
    async fn lock_key(&mut self, _: &str, _: &str) -> Result<(), sqlx::Error> {
        Ok(())
    }
}

impl KeyLock for sqlx::PgConnection {
    async fn lock_key(&mut self, playbook: &str, key: &str) -> Result<(), sqlx::Error> {
        sqlx::query("SELECT pg_advisory_xact_lock(hashtext($1), hashtext($2))")
            .bind(playbook)
            .bind(key)
            .execute(self)
            .await
            .map(|_| ())
    }
}

/// A key's hits in one batch: how many, the first and the last observed.
type KeyCount = (i64, DateTime<Utc>, DateTime<Utc>);

/// Stores one event of `$hit` (pending when `$incident` is None).
macro_rules! insert_event {
    ($tx:expr, $incident:expr, $hit:expr, $received_at:expr) => {
        sqlx::query(
            "INSERT INTO events (incident_id, playbook, rule, dedupe_key, kind, source, locator, \
             observed_at, received_at, text, fields) VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11)",
        )
        .bind($incident)
        .bind(&$hit.playbook)
        .bind(&$hit.rule)
        .bind(&$hit.dedupe_key)
        .bind($hit.kind)
        .bind(&$hit.source)
        .bind(&$hit.locator)
        .bind($hit.observed_at)
        .bind($received_at)
        .bind(&$hit.text)
        .bind(Json(&$hit.fields))
        .execute($tx)
        .await
    };
}

/// Keeps the first and last `EVIDENCE_KEEP` events of incident `$id` and deletes those between:
/// evidence stays bounded however long an attack goes on; `event_count` keeps the exact number.
macro_rules! trim_evidence {
    ($tx:expr, $id:expr) => {
        sqlx::query(
            "DELETE FROM events WHERE incident_id = $1 \
             AND id > (SELECT id FROM events WHERE incident_id = $1 ORDER BY id LIMIT 1 OFFSET $2) \
             AND id < (SELECT id FROM events WHERE incident_id = $1 ORDER BY id DESC LIMIT 1 OFFSET $2)",
        )
        .bind($id)
        .bind(EVIDENCE_KEEP - 1)
        .execute($tx)
        .await
    };
}
pub(super) use trim_evidence;

/// A node's position in a log file, for `csirt status`.
#[derive(Debug, Clone, serde::Serialize)]
pub struct LogPosition {
    pub node: String,
    pub path: String,
    #[serde(skip)]
    pub dev: u64,
    #[serde(skip)]
    pub inode: u64,
    pub offset: u64,
    pub updated_at: DateTime<Utc>,
}

impl Store {
    /// Commits a batch of hits and the checkpoints that cover them in one transaction: the
    /// exactly-once point of log ingest. Each hit joins the open incident of its playbook and
    /// dedupe key, or is stored as pending until its rule's threshold is reached within the window
    /// (counted from the stored events, so a restart loses no partial count), or opens one.
    #[tracing::instrument(skip_all, fields(hits = batch.hits.len(), checkpoints = batch.checkpoints.len()))]
    pub async fn ingest(
        &self,
        batch: &Batch,
        composer: &Composer,
    ) -> Result<IngestOutcome, StoreError> {
        let received_at = now();
        // Two daemons seeing the same attacker lock its key; taking the locks in one order keeps
        // them from deadlocking each other.
        let mut keys: Vec<(&str, &str)> = batch
            .hits
            .iter()
            .map(|h| (h.playbook.as_str(), h.dedupe_key.as_str()))
            .collect();
        keys.sort_unstable();
        keys.dedup();
        write!(self, tx => {
            let mut outcome = IngestOutcome::default();
            if let Some(mail) = &batch.mail
                && !super::mail::insert_mail!(&mut *tx, mail, "incident", None::<&str>, received_at)
            {
                outcome.duplicate = true;
                return Ok(outcome);
            }
            for (playbook, key) in &keys {
                KeyLock::lock_key(&mut *tx, playbook, key).await?;
            }
            // Exact per-key counters: one upsert per key and batch, not per hit.
            let mut counts: HashMap<(&str, &str), KeyCount> = HashMap::new();
            for hit in &batch.hits {
                let c = counts
                    .entry((hit.playbook.as_str(), hit.dedupe_key.as_str()))
                    .or_insert((0, hit.observed_at, hit.observed_at));
                c.0 += 1;
                c.1 = c.1.min(hit.observed_at);
                c.2 = c.2.max(hit.observed_at);
            }
            for ((playbook, key), (hits, first, last)) in &counts {
                sqlx::query(
                    "INSERT INTO hit_counts (playbook, dedupe_key, hits, first_seen, last_seen) VALUES ($1, $2, $3, $4, $5) \
                     ON CONFLICT (playbook, dedupe_key) DO UPDATE SET hits = hit_counts.hits + excluded.hits, \
                     first_seen = CASE WHEN excluded.first_seen < hit_counts.first_seen THEN excluded.first_seen ELSE hit_counts.first_seen END, \
                     last_seen = CASE WHEN excluded.last_seen > hit_counts.last_seen THEN excluded.last_seen ELSE hit_counts.last_seen END",
                )
                .bind(playbook)
                .bind(key)
                .bind(hits)
                .bind(first)
                .bind(last)
                .execute(&mut *tx)
                .await?;
            }
            // The open incident of each key, looked up once per batch: the key is locked (or the
            // store is, on SQLite), so only a responder's close can change it meanwhile, and the
            // guarded UPDATE below notices that.
            let mut open_of: HashMap<(&str, &str), Option<i64>> = HashMap::new();
            // Incidents whose evidence grew: trimmed once, at the end of the batch.
            let mut grown: Vec<i64> = Vec::new();
            // Incidents this transaction already holds (updated or opened here, so no one can
            // close them before it commits), with their later hits: counted in one UPDATE and
            // stored as evidence only where trimming would keep them.
            let mut held: HashMap<i64, Vec<&crate::engine::Hit>> = HashMap::new();
            for hit in &batch.hits {
                let slot = (hit.playbook.as_str(), hit.dedupe_key.as_str());
                let open = match open_of.get(&slot) {
                    Some(open) => *open,
                    None => {
                        let open: Option<i64> = sqlx::query_scalar(
                            "SELECT id FROM incidents WHERE playbook = $1 AND dedupe_key = $2 AND status <> 'closed'",
                        )
                        .bind(&hit.playbook)
                        .bind(&hit.dedupe_key)
                        .fetch_optional(&mut *tx)
                        .await?;
                        open_of.insert(slot, open);
                        open
                    }
                };
                if let Some(id) = open {
                    if let Some(later) = held.get_mut(&id) {
                        later.push(hit);
                        continue;
                    }
                    let joined = sqlx::query(
                        "UPDATE incidents SET event_count = event_count + 1, \
                         last_seen = CASE WHEN $2 > last_seen THEN $2 ELSE last_seen END, \
                         first_seen = CASE WHEN $2 < first_seen THEN $2 ELSE first_seen END \
                         WHERE id = $1 AND status <> 'closed'",
                    )
                    .bind(id)
                    .bind(hit.observed_at)
                    .execute(&mut *tx)
                    .await?
                    .rows_affected();
                    if joined == 1 {
                        insert_event!(&mut *tx, Some(id), hit, received_at)?;
                        held.insert(id, Vec::new());
                        if !grown.contains(&id) {
                            grown.push(id);
                        }
                        if !outcome.joined.contains(&id) && !outcome.opened.contains(&id) {
                            outcome.joined.push(id);
                        }
                        continue;
                    }
                    // Closed by a responder since: this hit starts a new incident.
                    open_of.insert(slot, None);
                }
                let (count, first_seen) = match hit.threshold {
                    Some(t) if t.count > 1 => {
                        let start = hit.observed_at - t.window.to_chrono();
                        // Pending events older than the window can never count again: drop them,
                        // which bounds the window state per key to the threshold's count.
                        sqlx::query(
                            "DELETE FROM events WHERE playbook = $1 AND dedupe_key = $2 AND incident_id IS NULL AND observed_at < $3",
                        )
                        .bind(&hit.playbook)
                        .bind(&hit.dedupe_key)
                        .bind(start)
                        .execute(&mut *tx)
                        .await?;
                        insert_event!(&mut *tx, None::<i64>, hit, received_at)?;
                        let (count, first): (i64, Option<DateTime<Utc>>) = sqlx::query_as(
                            "SELECT COUNT(*), MIN(observed_at) FROM events \
                             WHERE playbook = $1 AND dedupe_key = $2 AND incident_id IS NULL",
                        )
                        .bind(&hit.playbook)
                        .bind(&hit.dedupe_key)
                        .fetch_one(&mut *tx)
                        .await?;
                        if count < i64::from(t.count) {
                            outcome.pending += 1;
                            continue;
                        }
                        (count, first.unwrap_or(hit.observed_at))
                    }
                    _ => (1, hit.observed_at),
                };
                let id: i64 = sqlx::query_scalar(
                    "INSERT INTO incidents (playbook, category, title, severity, status, dedupe_key, fields, \
                     event_count, first_seen, last_seen, opened_at) \
                     VALUES ($1, $2, $3, $4, 'open', $5, $6, $7, $8, $9, $10) RETURNING id",
                )
                .bind(&hit.playbook)
                .bind(&hit.category)
                .bind(&hit.title)
                .bind(hit.severity.as_str())
                .bind(&hit.dedupe_key)
                .bind(Json(&hit.fields))
                .bind(count)
                .bind(first_seen)
                .bind(hit.observed_at)
                .bind(received_at)
                .fetch_one(&mut *tx)
                .await?;
                if count > 1 {
                    sqlx::query("UPDATE events SET incident_id = $1 WHERE playbook = $2 AND dedupe_key = $3 AND incident_id IS NULL")
                        .bind(id)
                        .bind(&hit.playbook)
                        .bind(&hit.dedupe_key)
                        .execute(&mut *tx)
                        .await?;
                    trim_evidence!(&mut *tx, id)?;
                } else {
                    insert_event!(&mut *tx, Some(id), hit, received_at)?;
                }
                sqlx::query("INSERT INTO timeline (incident_id, at, actor, action, detail) VALUES ($1, $2, 'daemon', 'opened', $3)")
                    .bind(id)
                    .bind(received_at)
                    .bind(format!("{} ({} hits, rule {})", hit.title, count, hit.rule))
                    .execute(&mut *tx)
                    .await?;
                // The first mail, in the transaction that opens the incident (invariant 3).
                announce!(tx, composer, id, Occasion::Opened, received_at);
                outcome.opened.push(id);
                open_of.insert(slot, Some(id));
                held.insert(id, Vec::new());
            }
            for (id, later) in &held {
                let (Some(first), Some(last)) = (
                    later.iter().map(|h| h.observed_at).min(),
                    later.iter().map(|h| h.observed_at).max(),
                ) else {
                    continue;
                };
                sqlx::query(
                    "UPDATE incidents SET event_count = event_count + $2, \
                     last_seen = CASE WHEN $3 > last_seen THEN $3 ELSE last_seen END, \
                     first_seen = CASE WHEN $4 < first_seen THEN $4 ELSE first_seen END WHERE id = $1",
                )
                .bind(id)
                .bind(later.len() as i64)
                .bind(last)
                .bind(first)
                .execute(&mut *tx)
                .await?;
                // Evidence keeps the first and the last EVIDENCE_KEEP events: of these hits, only
                // those that can be among them are stored (the trim below settles the rest).
                let stored: i64 = sqlx::query_scalar("SELECT COUNT(*) FROM events WHERE incident_id = $1")
                    .bind(id)
                    .fetch_one(&mut *tx)
                    .await?;
                let keep_first = (EVIDENCE_KEEP - stored).max(0) as usize;
                let keep_last = EVIDENCE_KEEP as usize;
                for (i, hit) in later.iter().enumerate() {
                    if i < keep_first || i + keep_last >= later.len() {
                        insert_event!(&mut *tx, Some(*id), hit, received_at)?;
                    }
                }
                if !grown.contains(id) {
                    grown.push(*id);
                }
            }
            for id in grown {
                trim_evidence!(&mut *tx, id)?;
            }
            if let Some(mail) = &batch.mail
                && let Some(id) = outcome.opened.first().or(outcome.joined.first())
            {
                sqlx::query("UPDATE mails SET incident_id = $1 WHERE message_key = $2 AND content_hash = $3")
                    .bind(id)
                    .bind(&mail.key)
                    .bind(&mail.hash)
                    .execute(&mut *tx)
                    .await?;
            }
            for c in &batch.checkpoints {
                sqlx::query(
                    "INSERT INTO log_checkpoints (node, dev, inode, fingerprint, path, \"offset\", line_no, updated_at) \
                     VALUES ($1, $2, $3, $4, $5, $6, $7, $8) ON CONFLICT (node, dev, inode) DO UPDATE SET \
                     fingerprint = excluded.fingerprint, path = excluded.path, \"offset\" = excluded.\"offset\", \
                     line_no = excluded.line_no, updated_at = excluded.updated_at",
                )
                .bind(&batch.node)
                .bind(c.dev as i64)
                .bind(c.inode as i64)
                .bind(&c.fingerprint)
                .bind(&c.path)
                .bind(c.offset as i64)
                .bind(c.line_no as i64)
                .bind(received_at)
                .execute(&mut *tx)
                .await?;
            }
            for pattern in &batch.patterns {
                sqlx::query("INSERT INTO log_patterns (node, pattern, started_at) VALUES ($1, $2, $3) ON CONFLICT (node, pattern) DO NOTHING")
                    .bind(&batch.node)
                    .bind(pattern)
                    .bind(received_at)
                    .execute(&mut *tx)
                    .await?;
            }
            Ok(outcome)
        })
    }

    /// The log checkpoints of `node`.
    pub async fn log_checkpoints(&self, node: &str) -> Result<Vec<Checkpoint>, StoreError> {
        let rows: Vec<(i64, i64, String, String, i64, i64)> = read!(self, pool => sqlx::query_as(
            "SELECT dev, inode, fingerprint, path, \"offset\", line_no FROM log_checkpoints WHERE node = $1 ORDER BY path",
        )
        .bind(node)
        .fetch_all(pool)
        .await?);
        Ok(rows
            .into_iter()
            .map(
                |(dev, inode, fingerprint, path, offset, line_no)| Checkpoint {
                    dev: dev as u64,
                    inode: inode as u64,
                    fingerprint,
                    path,
                    offset: offset as u64,
                    line_no: line_no as u64,
                },
            )
            .collect())
    }

    /// Forgets the checkpoints of `gone` files (rotated away and deleted or compressed) that
    /// have not moved since `before`. Both conditions: a file that is only missing for a while
    /// (an unmounted share) must keep its position, or it would be read again from its start.
    pub async fn prune_log_checkpoints(
        &self,
        node: &str,
        gone: &[(u64, u64)],
        before: DateTime<Utc>,
    ) -> Result<u64, StoreError> {
        write!(self, tx => {
            let mut pruned = 0;
            for (dev, inode) in gone {
                pruned += sqlx::query("DELETE FROM log_checkpoints WHERE node = $1 AND dev = $2 AND inode = $3 AND updated_at < $4")
                    .bind(node)
                    .bind(*dev as i64)
                    .bind(*inode as i64)
                    .bind(before)
                    .execute(&mut *tx)
                    .await?
                    .rows_affected();
            }
            Ok(pruned)
        })
    }

    /// Where each node stands in each log file, newest position per path first: `(node, path,
    /// dev, inode, offset, updated_at)`, one row per node and path (the file now at the path).
    pub async fn log_positions(&self) -> Result<Vec<LogPosition>, StoreError> {
        let rows: Vec<(String, String, i64, i64, i64, DateTime<Utc>)> = read!(self, pool => sqlx::query_as(
            "SELECT node, path, dev, inode, \"offset\", updated_at FROM log_checkpoints ORDER BY node, path, updated_at DESC",
        )
        .fetch_all(pool)
        .await?);
        let mut out: Vec<LogPosition> = Vec::new();
        for (node, path, dev, inode, offset, updated_at) in rows {
            if out.last().is_some_and(|p| p.node == node && p.path == path) {
                continue;
            }
            out.push(LogPosition {
                node,
                path,
                dev: dev as u64,
                inode: inode as u64,
                offset: offset as u64,
                updated_at,
            });
        }
        Ok(out)
    }

    /// The `[[logs]]` patterns `node` has already started on.
    pub async fn log_patterns(&self, node: &str) -> Result<Vec<String>, StoreError> {
        Ok(
            read!(self, pool => sqlx::query_scalar("SELECT pattern FROM log_patterns WHERE node = $1")
            .bind(node)
            .fetch_all(pool)
            .await?),
        )
    }

    /// Records that `node` has started on `pattern`.
    pub async fn start_log_pattern(&self, node: &str, pattern: &str) -> Result<(), StoreError> {
        let at = now();
        write!(self, tx => {
            sqlx::query("INSERT INTO log_patterns (node, pattern, started_at) VALUES ($1, $2, $3) ON CONFLICT (node, pattern) DO NOTHING")
                .bind(node)
                .bind(pattern)
                .bind(at)
                .execute(&mut *tx)
                .await?;
            Ok(())
        })
    }

    /// Exact hit counts of `playbook` per dedupe key.
    pub async fn hit_counts(&self, playbook: &str) -> Result<Vec<(String, i64)>, StoreError> {
        Ok(
            read!(self, pool => sqlx::query_as("SELECT dedupe_key, hits FROM hit_counts WHERE playbook = $1 ORDER BY dedupe_key")
            .bind(playbook)
            .fetch_all(pool)
            .await?),
        )
    }
}
