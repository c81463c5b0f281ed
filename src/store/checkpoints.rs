//! Where each source stands: log checkpoints (file identity and offset) and journal cursors per
//! node, the patterns
//! a node has started on, positions for `csirt status`, and the exact per-key hit counters.
//! Checkpoints are written only by the ingest transaction, together with the hits they cover.

use super::{Backend, Store, StoreError};
use crate::engine::Checkpoint;
use chrono::{DateTime, Utc};

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

/// A node's position in a `[[journal]]` source, for `csirt status`.
#[derive(Debug, Clone, serde::Serialize, sqlx::FromRow)]
pub struct JournalPosition {
    pub node: String,
    pub source: String,
    pub cursor: String,
    /// The time of the last entry committed: how far behind the journal the node is.
    pub entry_at: DateTime<Utc>,
    pub updated_at: DateTime<Utc>,
}

impl Store {
    /// Where `node` stands in the `[[journal]]` source `source`: the cursor of the last entry
    /// committed, if any.
    pub async fn journal_cursor(
        &self,
        node: &str,
        source: &str,
    ) -> Result<Option<String>, StoreError> {
        Ok(read!(self, pool => sqlx::query_scalar(
            "SELECT cursor FROM journal_cursors WHERE node = $1 AND source = $2",
        )
        .bind(node)
        .bind(source)
        .fetch_optional(pool)
        .await?))
    }

    /// Every node's position in every journal source.
    pub async fn journal_positions(&self) -> Result<Vec<JournalPosition>, StoreError> {
        Ok(read!(self, pool => sqlx::query_as(
            "SELECT node, source, cursor, entry_at, updated_at FROM journal_cursors ORDER BY node, source",
        )
        .fetch_all(pool)
        .await?))
    }

    /// The log checkpoints of `node`.
    pub async fn log_checkpoints(&self, node: &str) -> Result<Vec<Checkpoint>, StoreError> {
        let rows: Vec<(i64, i64, String, String, i64, i64, String)> = read!(self, pool => sqlx::query_as(
            "SELECT dev, inode, fingerprint, path, \"offset\", line_no, tail_fingerprint FROM log_checkpoints WHERE node = $1 ORDER BY path",
        )
        .bind(node)
        .fetch_all(pool)
        .await?);
        Ok(rows
            .into_iter()
            .map(
                |(dev, inode, fingerprint, path, offset, line_no, tail_fingerprint)| Checkpoint {
                    dev: dev as u64,
                    inode: inode as u64,
                    fingerprint,
                    path,
                    offset: offset as u64,
                    line_no: line_no as u64,
                    tail_fingerprint,
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
        transaction!(self, tx => {
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
