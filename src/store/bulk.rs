//! The ingest transaction's statements over many rows at once: a batch of a spray of addresses
//! costs a few statements, not several per hit. The SQL differs by backend (PostgreSQL takes
//! arrays through `UNNEST` and `= ANY`, one statement text whatever the batch's size; SQLite
//! takes multi-row `VALUES` in power-of-two chunks, so that a handful of statement texts are
//! prepared once and cached, and a JSON array of keys through `json_each`). Values from logs
//! reach SQL only as bound parameters.

use crate::engine::Hit;
use chrono::{DateTime, Utc};
use std::collections::HashMap;

/// A key's hits in one batch, for its exact counter in `hit_counts`.
pub(super) struct CountRow<'a> {
    pub playbook: &'a str,
    pub key: &'a str,
    pub hits: i64,
    pub first: DateTime<Utc>,
    pub last: DateTime<Utc>,
}

/// A pending event of a key as the window needs it: when, and how many it counts for.
pub(super) type PendingHit = (DateTime<Utc>, u32);

/// The statements over many rows, on a connection inside a transaction.
pub(super) trait Bulk: Send {
    /// Serialises writers of these (playbook, key) pairs across daemons until the transaction
    /// ends; `keys` sorted, so that two daemons take them in one order.
    fn lock_keys(
        &mut self,
        keys: &[(&str, &str)],
    ) -> impl Future<Output = Result<(), sqlx::Error>> + Send;

    /// The open incidents of these keys of `playbook`: key → id.
    fn open_incidents(
        &mut self,
        playbook: &str,
        keys: &[&str],
    ) -> impl Future<Output = Result<HashMap<String, i64>, sqlx::Error>> + Send;

    /// Adds each row to its key's counter (one row per key).
    fn add_hit_counts(
        &mut self,
        rows: &[CountRow<'_>],
    ) -> impl Future<Output = Result<(), sqlx::Error>> + Send;

    /// Stores `hits` as pending events (below their threshold), in this order.
    fn insert_pending(
        &mut self,
        hits: &[&Hit],
        received_at: DateTime<Utc>,
    ) -> impl Future<Output = Result<(), sqlx::Error>> + Send;

    /// The pending events of these keys of `playbook` seen at or after `since`, per key.
    fn pending_of(
        &mut self,
        playbook: &str,
        keys: &[&str],
        since: DateTime<Utc>,
    ) -> impl Future<Output = Result<HashMap<String, Vec<PendingHit>>, sqlx::Error>> + Send;
}

/// The newest pending event's time, the start of the windows' memory (`engine::window`).
pub(super) const NEWEST_PENDING: &str =
    "SELECT MAX(observed_at) FROM events WHERE incident_id IS NULL";

/// The counter upsert's conflict clause, both backends.
const COUNT_CONFLICT: &str = " ON CONFLICT (playbook, dedupe_key) DO UPDATE SET hits = hit_counts.hits + excluded.hits, \
     first_seen = CASE WHEN excluded.first_seen < hit_counts.first_seen THEN excluded.first_seen ELSE hit_counts.first_seen END, \
     last_seen = CASE WHEN excluded.last_seen > hit_counts.last_seen THEN excluded.last_seen ELSE hit_counts.last_seen END";

/// The columns of a pending event, both backends (incident_id stays NULL).
const EVENT_COLUMNS: &str = "INSERT INTO events (playbook, rule, dedupe_key, kind, source, locator, observed_at, \
     received_at, text, fields, weight) ";

/// The most rows one SQLite statement takes (11 parameters each stay far below SQLite's 32,766):
/// every chunk size is a statement kept prepared, and a 1,024-row one held megabytes of memory.
const SQLITE_CHUNK: usize = 256;

/// `n` split into power-of-two chunks of at most `max` (a power of two), largest first: at most
/// log2(max) + 1 statement texts, each prepared once per connection.
fn chunks(mut n: usize, max: usize) -> impl Iterator<Item = usize> {
    std::iter::from_fn(move || {
        if n == 0 {
            return None;
        }
        let size = if n >= max {
            max
        } else {
            1 << (usize::BITS - 1 - n.leading_zeros())
        };
        n -= size;
        Some(size)
    })
}

/// The multi-row SQLite statements, their text made once per chunk size (formatting a 256-row
/// statement's placeholders for every chunk was an eighth of the writer task's work in a spray).
/// Values shared by a statement's rows are bound once, after each row's own.
#[derive(Clone, Copy)]
enum SqliteSql {
    /// `hit_counts` upserts: per row the key, hits, first and last seen; then the playbook.
    Counts,
    /// Pending events: per row the key, locator, observed_at, text, fields and weight; then
    /// the playbook, rule, kind, source and received_at.
    Pending,
}

impl SqliteSql {
    /// The statement for `rows` rows, a power of two of at most `SQLITE_CHUNK`.
    fn text(self, rows: usize) -> &'static str {
        static TEXTS: [std::sync::OnceLock<Vec<String>>; 2] =
            [std::sync::OnceLock::new(), std::sync::OnceLock::new()];
        let sizes = SQLITE_CHUNK.trailing_zeros() as usize + 1;
        let texts = TEXTS[self as usize]
            .get_or_init(|| (0..sizes).map(|log2| self.build(1 << log2)).collect());
        debug_assert!(rows.is_power_of_two() && rows <= SQLITE_CHUNK);
        &texts[rows.trailing_zeros() as usize]
    }

    /// The text: the row template's `?` are each row's own values, bound in order; `$S1`… are
    /// the shared ones, bound after them all. Own values stay anonymous: sqlx asks SQLite for
    /// every parameter's name, a walk of the list of named ones, so naming a 256-row
    /// statement's 1,500 parameters made binding it quadratic.
    fn build(self, rows: usize) -> String {
        let (head, row, tail) = match self {
            SqliteSql::Counts => (
                "INSERT INTO hit_counts (playbook, dedupe_key, hits, first_seen, last_seen) ",
                "($S1, ?, ?, ?, ?)",
                COUNT_CONFLICT,
            ),
            SqliteSql::Pending => (
                EVENT_COLUMNS,
                "($S1, $S2, ?, $S3, $S4, ?, ?, $S5, ?, ?, ?)",
                "",
            ),
        };
        let own = rows * row.matches('?').count();
        let mut row = row.to_string();
        for shared in (1..=5).rev() {
            row = row.replace(&format!("$S{shared}"), &format!("${}", own + shared));
        }
        let rows = vec![row; rows].join(", ");
        format!("{head}VALUES {rows}{tail}")
    }
}

/// Times as sqlx writes a bound `DateTime<Utc>` in SQLite (RFC 3339, `+00:00`, a fraction
/// only when there is one), each distinct time formatted once: a batch's hits mostly share a
/// few seconds, and formatting every bound time was about 2% of a spray's instructions (#13).
#[derive(Default)]
struct SqliteTimes {
    texts: Vec<String>,
    last: Option<DateTime<Utc>>,
}

impl SqliteTimes {
    /// The index in `texts` of `at`'s text (repeats of the time just seen reuse it).
    fn index(&mut self, at: DateTime<Utc>) -> usize {
        if self.last != Some(at) || self.texts.is_empty() {
            self.texts
                .push(at.to_rfc3339_opts(chrono::SecondsFormat::AutoSi, false));
            self.last = Some(at);
        }
        self.texts.len() - 1
    }
}

fn group_pending(rows: Vec<(String, DateTime<Utc>, i64)>) -> HashMap<String, Vec<PendingHit>> {
    let mut out: HashMap<String, Vec<PendingHit>> = HashMap::new();
    for (key, at, weight) in rows {
        out.entry(key)
            .or_default()
            .push((at, u32::try_from(weight).unwrap_or(u32::MAX)));
    }
    out
}

fn keys_json(keys: &[&str]) -> Result<String, sqlx::Error> {
    // Written straight from the strings: through a `Value`, each key was copied first.
    serde_json::to_string(keys).map_err(|e| sqlx::Error::Encode(e.into()))
}

impl Bulk for sqlx::SqliteConnection {
    async fn lock_keys(&mut self, _: &[(&str, &str)]) -> Result<(), sqlx::Error> {
        // BEGIN IMMEDIATE already made this transaction the only writer.
        Ok(())
    }

    async fn open_incidents(
        &mut self,
        playbook: &str,
        keys: &[&str],
    ) -> Result<HashMap<String, i64>, sqlx::Error> {
        let rows: Vec<(String, i64)> = sqlx::query_as(
            "SELECT dedupe_key, id FROM incidents WHERE playbook = $1 AND status <> 'closed' \
             AND dedupe_key IN (SELECT value FROM json_each($2))",
        )
        .bind(playbook)
        .bind(keys_json(keys)?)
        .fetch_all(&mut *self)
        .await?;
        Ok(rows.into_iter().collect())
    }

    async fn add_hit_counts(&mut self, rows: &[CountRow<'_>]) -> Result<(), sqlx::Error> {
        let mut times = SqliteTimes::default();
        let stamps: Vec<(usize, usize)> = rows
            .iter()
            .map(|r| (times.index(r.first), times.index(r.last)))
            .collect();
        let texts = &times.texts;
        let rows: Vec<_> = rows.iter().zip(&stamps).collect();
        // The playbook is bound once per statement, for a run of rows that share it.
        for run in rows.chunk_by(|a, b| a.0.playbook == b.0.playbook) {
            let mut rest = run;
            for size in chunks(run.len(), SQLITE_CHUNK) {
                let (chunk, after) = rest.split_at(size);
                rest = after;
                let mut q = sqlx::query(SqliteSql::Counts.text(size));
                for &(r, &(first, last)) in chunk {
                    q = q
                        .bind(r.key)
                        .bind(r.hits)
                        .bind(texts[first].as_str())
                        .bind(texts[last].as_str());
                }
                q.bind(chunk[0].0.playbook).execute(&mut *self).await?;
            }
        }
        Ok(())
    }

    async fn insert_pending(
        &mut self,
        hits: &[&Hit],
        received_at: DateTime<Utc>,
    ) -> Result<(), sqlx::Error> {
        let mut times = SqliteTimes::default();
        let received = times.index(received_at);
        let observed: Vec<usize> = hits.iter().map(|h| times.index(h.observed_at)).collect();
        let texts = &times.texts;
        let hits: Vec<_> = hits.iter().zip(&observed).collect();
        // What a run of hits from one rule and file shares is bound once per statement: binding
        // (a copy into sqlx's arguments, another into SQLite's) and freeing each value again was
        // most of the writer's work in a spray. Runs keep the hits' order.
        fn shared(h: &Hit) -> (&str, &str, &str, &str) {
            (&h.playbook, &h.rule, h.kind, &h.source)
        }
        for run in hits.chunk_by(|a, b| shared(a.0) == shared(b.0)) {
            let mut rest = run;
            for size in chunks(run.len(), SQLITE_CHUNK) {
                let (chunk, after) = rest.split_at(size);
                rest = after;
                let mut q = sqlx::query(SqliteSql::Pending.text(size));
                for &(h, &observed) in chunk {
                    q = q
                        .bind(h.dedupe_key.as_str())
                        .bind(h.locator.as_str())
                        .bind(texts[observed].as_str())
                        .bind(h.text.as_str())
                        .bind(sqlx::types::Json(&h.fields))
                        .bind(i64::from(h.weight));
                }
                let first = chunk[0].0;
                q.bind(first.playbook.as_str())
                    .bind(first.rule.as_str())
                    .bind(first.kind)
                    .bind(first.source.as_str())
                    .bind(texts[received].as_str())
                    .execute(&mut *self)
                    .await?;
            }
        }
        Ok(())
    }

    async fn pending_of(
        &mut self,
        playbook: &str,
        keys: &[&str],
        since: DateTime<Utc>,
    ) -> Result<HashMap<String, Vec<PendingHit>>, sqlx::Error> {
        let rows = sqlx::query_as(
            "SELECT dedupe_key, observed_at, CAST(weight AS BIGINT) FROM events WHERE incident_id IS NULL \
             AND playbook = $1 AND dedupe_key IN (SELECT value FROM json_each($2)) AND observed_at >= $3",
        )
        .bind(playbook)
        .bind(keys_json(keys)?)
        .bind(since)
        .fetch_all(&mut *self)
        .await?;
        Ok(group_pending(rows))
    }
}

impl Bulk for sqlx::PgConnection {
    async fn lock_keys(&mut self, keys: &[(&str, &str)]) -> Result<(), sqlx::Error> {
        if keys.is_empty() {
            return Ok(());
        }
        let (playbooks, keys): (Vec<&str>, Vec<&str>) = keys.iter().copied().unzip();
        // In the order given (WITH ORDINALITY; PostgreSQL evaluates a volatile function of the
        // target list after the sort), the order prune's `lock_key` loop takes them in too.
        sqlx::query(
            "SELECT pg_advisory_xact_lock(hashtext(p), hashtext(k)) \
             FROM UNNEST($1::text[], $2::text[]) WITH ORDINALITY AS u(p, k, n) ORDER BY n",
        )
        .bind(playbooks)
        .bind(keys)
        .execute(&mut *self)
        .await
        .map(|_| ())
    }

    async fn open_incidents(
        &mut self,
        playbook: &str,
        keys: &[&str],
    ) -> Result<HashMap<String, i64>, sqlx::Error> {
        let rows: Vec<(String, i64)> = sqlx::query_as(
            "SELECT dedupe_key, id FROM incidents WHERE playbook = $1 AND status <> 'closed' \
             AND dedupe_key = ANY($2::text[])",
        )
        .bind(playbook)
        .bind(keys)
        .fetch_all(&mut *self)
        .await?;
        Ok(rows.into_iter().collect())
    }

    async fn add_hit_counts(&mut self, rows: &[CountRow<'_>]) -> Result<(), sqlx::Error> {
        if rows.is_empty() {
            return Ok(());
        }
        let sql = format!(
            "INSERT INTO hit_counts (playbook, dedupe_key, hits, first_seen, last_seen) \
             SELECT * FROM UNNEST($1::text[], $2::text[], $3::int8[], $4::timestamptz[], $5::timestamptz[]){COUNT_CONFLICT}"
        );
        sqlx::query(&sql)
            .bind(rows.iter().map(|r| r.playbook).collect::<Vec<_>>())
            .bind(rows.iter().map(|r| r.key).collect::<Vec<_>>())
            .bind(rows.iter().map(|r| r.hits).collect::<Vec<_>>())
            .bind(rows.iter().map(|r| r.first).collect::<Vec<_>>())
            .bind(rows.iter().map(|r| r.last).collect::<Vec<_>>())
            .execute(&mut *self)
            .await
            .map(|_| ())
    }

    async fn insert_pending(
        &mut self,
        hits: &[&Hit],
        received_at: DateTime<Utc>,
    ) -> Result<(), sqlx::Error> {
        if hits.is_empty() {
            return Ok(());
        }
        // Fields go as JSON text and are cast: sqlx has no array of JSONB parameters to bind.
        let fields = hits
            .iter()
            .map(|h| serde_json::to_string(&h.fields))
            .collect::<Result<Vec<String>, _>>()
            .map_err(|e| sqlx::Error::Encode(e.into()))?;
        let sql = format!(
            "{EVENT_COLUMNS} SELECT p, r, k, kd, s, l, o, $7, t, f::jsonb, w \
             FROM UNNEST($1::text[], $2::text[], $3::text[], $4::text[], $5::text[], $6::text[], \
             $8::timestamptz[], $9::text[], $10::text[], $11::int4[]) AS u(p, r, k, kd, s, l, o, t, f, w)"
        );
        sqlx::query(&sql)
            .bind(hits.iter().map(|h| h.playbook.as_str()).collect::<Vec<_>>())
            .bind(hits.iter().map(|h| h.rule.as_str()).collect::<Vec<_>>())
            .bind(
                hits.iter()
                    .map(|h| h.dedupe_key.as_str())
                    .collect::<Vec<_>>(),
            )
            .bind(hits.iter().map(|h| h.kind).collect::<Vec<_>>())
            .bind(hits.iter().map(|h| h.source.as_str()).collect::<Vec<_>>())
            .bind(hits.iter().map(|h| h.locator.as_str()).collect::<Vec<_>>())
            .bind(received_at)
            .bind(hits.iter().map(|h| h.observed_at).collect::<Vec<_>>())
            .bind(hits.iter().map(|h| h.text.as_str()).collect::<Vec<_>>())
            .bind(fields)
            .bind(
                hits.iter()
                    .map(|h| i32::try_from(h.weight).unwrap_or(i32::MAX))
                    .collect::<Vec<_>>(),
            )
            .execute(&mut *self)
            .await
            .map(|_| ())
    }

    async fn pending_of(
        &mut self,
        playbook: &str,
        keys: &[&str],
        since: DateTime<Utc>,
    ) -> Result<HashMap<String, Vec<PendingHit>>, sqlx::Error> {
        let rows = sqlx::query_as(
            "SELECT dedupe_key, observed_at, CAST(weight AS BIGINT) FROM events WHERE incident_id IS NULL \
             AND playbook = $1 AND dedupe_key = ANY($2::text[]) AND observed_at >= $3",
        )
        .bind(playbook)
        .bind(keys)
        .bind(since)
        .fetch_all(&mut *self)
        .await?;
        Ok(group_pending(rows))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn times_are_written_as_sqlx_writes_a_bound_time() {
        let at = DateTime::parse_from_rfc3339("2026-12-01T22:08:02.250+09:00")
            .expect("a valid time")
            .with_timezone(&Utc);
        let whole = at - chrono::TimeDelta::milliseconds(250);
        let mut times = SqliteTimes::default();
        let (a, b, c, d) = (
            times.index(at),
            times.index(at),
            times.index(whole),
            times.index(at),
        );
        assert_eq!(
            (a, b, c, d),
            (0, 0, 1, 2),
            "a repeat of the last time is reused"
        );
        assert_eq!(times.texts[a], "2026-12-01T13:08:02.250+00:00");
        assert_eq!(times.texts[c], "2026-12-01T13:08:02+00:00");
        for (i, t) in [(a, at), (c, whole)] {
            let mut bound = Vec::new();
            let _ = sqlx::Encode::<sqlx::Sqlite>::encode_by_ref(&t, &mut bound);
            // What sqlx binds for the time itself, the text every other row has.
            assert_eq!(
                format!("{bound:?}"),
                format!("[Text({:?})]", times.texts[i])
            );
        }
    }

    #[test]
    fn shared_values_are_bound_once_after_each_rows_own() {
        assert_eq!(
            SqliteSql::Counts.text(2),
            format!(
                "INSERT INTO hit_counts (playbook, dedupe_key, hits, first_seen, last_seen) \
                 VALUES ($9, ?, ?, ?, ?), ($9, ?, ?, ?, ?){COUNT_CONFLICT}"
            )
        );
        assert!(SqliteSql::Pending.text(2).ends_with(
            "VALUES ($13, $14, ?, $15, $16, ?, ?, $17, ?, ?, ?), \
             ($13, $14, ?, $15, $16, ?, ?, $17, ?, ?, ?)"
        ));
        // The largest statement's last parameter: 6 per row and 5 shared, far below SQLite's
        // limit of 32,766.
        let largest = SqliteSql::Pending.text(SQLITE_CHUNK);
        assert!(largest.contains(&format!("${},", 6 * SQLITE_CHUNK + 5)));
        assert!(!largest.contains(&format!("${}", 6 * SQLITE_CHUNK + 6)));
        for log2 in 0..=SQLITE_CHUNK.trailing_zeros() {
            let rows = 1 << log2;
            let text = SqliteSql::Counts.text(rows);
            assert_eq!(text.matches(", ?, ?, ?, ?)").count(), rows);
            assert_eq!(text.matches(&format!("(${}, ", 4 * rows + 1)).count(), rows);
        }
    }

    #[test]
    fn rows_go_in_power_of_two_chunks() {
        assert_eq!(chunks(0, 1024).collect::<Vec<_>>(), Vec::<usize>::new());
        assert_eq!(chunks(13, 1024).collect::<Vec<_>>(), [8, 4, 1]);
        assert_eq!(
            chunks(2100, 1024).collect::<Vec<_>>(),
            [1024, 1024, 32, 16, 4]
        );
        assert_eq!(chunks(2100, 1024).sum::<usize>(), 2100);
    }
}
