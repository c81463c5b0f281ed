//! The ingest transaction: a batch of hits, their correlation into incidents, the first mail of
//! each incident opened, and the source checkpoints, committed together — the exactly-once
//! point of log ingest (and of a mail that a mail rule took).
//!
//! What happens to each hit is `engine::on_hit`/`after_window`'s decision; this module only
//! reads what those need and writes what they decide.

use super::bulk::{Bulk, CountRow, NEWEST_PENDING};
use super::sql::{NewEventRow, NewIncidentRow, Sql};
use super::{Backend, Store, StoreError};
use crate::compose::{Composer, Occasion};
use crate::engine::{
    Batch, Hit, IngestOutcome, RaiseStep, Step, Windows, after_window, on_hit, on_raise,
    raised_title, worth_storing,
};
use crate::model::Action;
use crate::model::now;
use crate::playbook::Raise;
use chrono::{DateTime, TimeDelta, Utc};
use std::collections::HashMap;

/// A key's hits in one batch: how many, the first and the last observed.
type KeyCount = (i64, DateTime<Utc>, DateTime<Utc>);

impl Store {
    /// The keys of `playbook` a raising hit can matter for (`engine::gate`): incidents not
    /// closed (through the partial index of open incidents), and with `closed_since` (the
    /// daemon's start) also those closed at or after it and the keys with failure counters
    /// (below the threshold, whatever their age: a backlog being read may still reach them).
    pub async fn raise_keys(
        &self,
        playbook: &str,
        closed_since: Option<DateTime<Utc>>,
    ) -> Result<Vec<String>, StoreError> {
        Ok(match closed_since {
            None => read!(self, pool => sqlx::query_scalar(
                "SELECT dedupe_key FROM incidents WHERE playbook = $1 AND status <> 'closed'",
            )
            .bind(playbook)
            .fetch_all(pool)
            .await?),
            Some(since) => read!(self, pool => sqlx::query_scalar(
                "SELECT dedupe_key FROM incidents WHERE playbook = $1 AND (status <> 'closed' OR closed_at >= $2) \
                 UNION SELECT dedupe_key FROM hit_counts WHERE playbook = $1",
            )
            .bind(playbook)
            .bind(since)
            .fetch_all(pool)
            .await?),
        })
    }

    /// How many threshold windows to keep in memory (`[store] window_keys`); a reload may change it.
    pub async fn set_window_bound(&self, bound: usize) {
        self.windows.lock().await.set_bound(bound);
    }

    /// Whether another daemon writes to this store: then every key's window is read from the
    /// store under its lock, since that daemon's hits are not in this one's memory.
    pub async fn set_shared_writers(&self, shared: bool) {
        self.windows.lock().await.set_shared(shared);
    }

    /// The threshold windows held in memory and how many were spilled under the bound since the
    /// start (for the log and the tests).
    pub async fn windows_held(&self) -> (usize, u64) {
        let windows = self.windows.lock().await;
        (windows.len(), windows.spilled())
    }

    /// Commits a batch of hits and the checkpoints that cover them in one transaction. Each hit
    /// joins the open incident of its playbook and dedupe key, or is stored as pending until its
    /// rule's threshold is reached within the window, or opens one. The window is counted in
    /// memory (`engine::window`), and confirmed from the stored pending events when it reaches
    /// its count; the pending events are written in the batch's transaction, so a restart loses
    /// no partial count and counts nothing twice.
    #[tracing::instrument(skip_all, fields(hits = batch.hits.len(), checkpoints = batch.checkpoints.len() + batch.cursors.len()))]
    pub async fn ingest(
        &self,
        batch: &Batch,
        composer: &Composer,
    ) -> Result<IngestOutcome, StoreError> {
        let mut windows = self.windows.lock().await;
        let spilled = windows.spilled();
        let result = self.ingest_with(batch, composer, &mut windows).await;
        match &result {
            Ok(_) => {
                windows.settle();
                if windows.spilled() > spilled {
                    tracing::info!(
                        held = windows.len(),
                        spilled = windows.spilled(),
                        "more keys below their threshold than [store] window_keys: the oldest windows are read from the store again when their keys come back"
                    );
                }
            }
            // The windows changed with a transaction that did not commit: the store is the truth.
            Err(_) => windows.forget_all(),
        }
        result
    }

    async fn ingest_with(
        &self,
        batch: &Batch,
        composer: &Composer,
        windows: &mut Windows,
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
        transaction!(self, tx => {
            let mut outcome = IngestOutcome::default();
            if let Some(mail) = &batch.mail
                && !tx.insert_mail(mail, "incident", None, received_at).await?
            {
                outcome.duplicate = true;
                return Ok(outcome);
            }
            tx.lock_keys(&keys).await?;
            // Exact per-key counters: one row per key and batch, not per hit.
            let mut counts: HashMap<(&str, &str), KeyCount> = HashMap::new();
            for hit in batch.hits.iter().filter(|h| h.raise.is_none()) {
                let c = counts
                    .entry((hit.playbook.as_str(), hit.dedupe_key.as_str()))
                    .or_insert((0, hit.observed_at, hit.observed_at));
                c.0 += i64::from(hit.weight);
                c.1 = c.1.min(hit.observed_at);
                c.2 = c.2.max(hit.observed_at);
            }
            // In key order (`keys` is sorted), the counters' index order: the upserts walk its
            // pages once, not in the hash map's random order.
            let rows: Vec<CountRow<'_>> = keys
                .iter()
                .filter_map(|slot| {
                    let &(hits, first, last) = counts.get(slot)?;
                    Some(CountRow { playbook: slot.0, key: slot.1, hits, first, last })
                })
                .collect();
            tx.add_hit_counts(&rows).await?;
            // The open incident of each key, looked up once per batch: the key is locked (or the
            // store is, on SQLite), so only a responder's close can change it meanwhile, and the
            // guarded UPDATE of `add_hits` notices that.
            let mut open_of: HashMap<(&str, &str), Option<i64>> = HashMap::with_capacity(keys.len());
            for (playbook, of_playbook) in &by_playbook(&keys) {
                let open = tx.open_incidents(playbook, of_playbook).await?;
                for key in of_playbook {
                    open_of.insert((playbook, key), open.get(*key).copied());
                }
            }
            // The windows of keys the memory does not hold and the store may: read at once.
            if windows.needs_forgotten() {
                let newest: Option<DateTime<Utc>> = sqlx::query_scalar(NEWEST_PENDING).fetch_one(&mut *tx).await?;
                windows.set_forgotten(newest);
            }
            let mut to_load: HashMap<(&str, &str), (DateTime<Utc>, TimeDelta)> = HashMap::new();
            for hit in batch.hits.iter().filter(|h| h.raise.is_none()) {
                let slot = (hit.playbook.as_str(), hit.dedupe_key.as_str());
                if let (None, Step::Count { since, .. }) = (open_of.get(&slot).copied().flatten(), on_hit(None::<i64>, hit))
                    // A mail's hits may come from `csirt intake`, another process whose
                    // counts this memory never saw: their keys are always read (mail is few).
                    && (hit.kind == "mail" || windows.needs_load(slot.0, slot.1, since))
                {
                    let span = hit.observed_at - since;
                    let entry = to_load.entry(slot).or_insert((since, span));
                    *entry = (entry.0.min(since), entry.1.max(span));
                }
            }
            if !to_load.is_empty() {
                let mut loading: Vec<(&str, &str)> = to_load.keys().copied().collect();
                loading.sort_unstable();
                for (playbook, of_playbook) in &by_playbook(&loading) {
                    let since = of_playbook.iter().map(|k| to_load[&(*playbook, *k)].0).min().unwrap_or(received_at);
                    let mut found = tx.pending_of(playbook, of_playbook, since).await?;
                    for key in of_playbook {
                        let (since, span) = to_load[&(*playbook, *key)];
                        windows.load(playbook, key, since, span, found.remove(*key).unwrap_or_default());
                    }
                }
            }
            // Incidents this transaction already holds (joined or opened here, so no one can
            // close them before it commits), with their later hits: counted in one UPDATE and
            // stored as evidence only where trimming would keep them.
            let mut held: HashMap<i64, Vec<&Hit>> = HashMap::new();
            let mut grown: Vec<i64> = Vec::new();
            // Keys whose raising hit (a login) found nothing to raise in this batch, so that a
            // monitoring account logging in every few seconds costs the lookups once per batch;
            // forgotten as soon as a failure of the key arrives.
            let mut nothing_to_raise: std::collections::HashSet<(&str, &str)> = Default::default();
            // Below-threshold hits not written yet: written together, and before any statement
            // that reads pending events.
            let mut pending_rows: Vec<&Hit> = Vec::new();
            for hit in &batch.hits {
                let slot = (hit.playbook.as_str(), hit.dedupe_key.as_str());
                let open = open_of.get(&slot).copied().flatten();
                if hit.raise.is_none() && !nothing_to_raise.is_empty() {
                    nothing_to_raise.remove(&slot);
                }
                if let Some(raise) = &hit.raise {
                    if open.is_none() && nothing_to_raise.contains(&slot) {
                        continue;
                    }
                    let closed = match open {
                        Some(_) => None,
                        None => {
                            let since = received_at - raise.closed_within.to_chrono();
                            tx.closed_since(&hit.playbook, &hit.dedupe_key, since).await?
                        }
                    };
                    let (pending, first) = match (open, closed) {
                        (None, None) => {
                            // The failures before it in this batch are among them.
                            tx.insert_pending(&pending_rows, received_at).await?;
                            pending_rows.clear();
                            let since = hit.observed_at - raise.window.to_chrono();
                            tx.pending_failures(&hit.playbook, &hit.dedupe_key, since).await?
                        }
                        _ => (0, None),
                    };
                    let id = match on_raise(raise, open, closed, pending, first) {
                        RaiseStep::Raise(id) => id,
                        RaiseStep::Reopen(id) => {
                            if tx.transition(id, &Action::Reopen, received_at).await? == 0 {
                                continue;
                            }
                            tx.insert_timeline(id, received_at, "daemon", "reopened", &raise.mark).await?;
                            id
                        }
                        RaiseStep::Open { count, first } => {
                            let id = tx
                                .insert_incident(&NewIncidentRow {
                                    event_count: count,
                                    first_seen: first,
                                    ..NewIncidentRow::of_hit(hit, received_at)
                                })
                                .await?;
                            tx.attach_pending(id, &hit.playbook, &hit.dedupe_key).await?;
                            windows.remove(&hit.playbook, &hit.dedupe_key);
                            let detail = format!("{} ({count} hits below the threshold, rule {})", hit.title, hit.rule);
                            tx.insert_timeline(id, received_at, "daemon", "opened", &detail).await?;
                            outcome.opened.push(id);
                            id
                        }
                        RaiseStep::Nothing => {
                            nothing_to_raise.insert(slot);
                            continue;
                        }
                    };
                    open_of.insert(slot, Some(id));
                    held.entry(id).or_default();
                    grown.push(id);
                    if raise_incident(&mut *tx, composer, id, hit, raise, &batch.node, received_at).await? {
                        outcome.raised.push(id);
                    }
                    continue;
                }
                let mut step = on_hit(open, hit);
                if let Step::Join(id) = step {
                    if let Some(later) = held.get_mut(&id) {
                        later.push(hit);
                        continue;
                    }
                    let weight = i64::from(hit.weight);
                    if tx.add_hits(id, weight, hit.observed_at, hit.observed_at, received_at).await? == 1 {
                        tx.insert_event(Some(id), &NewEventRow::from(hit), received_at).await?;
                        held.insert(id, Vec::new());
                        grown.push(id);
                        if !outcome.opened.contains(&id) && !outcome.joined.contains(&id) {
                            outcome.joined.push(id);
                        }
                        continue;
                    }
                    // Closed by a responder since: this hit starts anew.
                    open_of.insert(slot, None);
                    step = on_hit(None, hit);
                }
                let (count, first_seen) = match step {
                    Step::Count { since, needed } => {
                        let tally = windows.add(&hit.playbook, &hit.dedupe_key, hit.observed_at, hit.weight, since);
                        pending_rows.push(hit);
                        if after_window(needed, tally.count, tally.first).is_none() {
                            outcome.pending += 1;
                            continue;
                        }
                        // The memory may count too much (two keys of one hash; events pruned):
                        // the store's pending events decide.
                        tx.insert_pending(&pending_rows, received_at).await?;
                        pending_rows.clear();
                        let (count, first) = tx.settle_pending(&hit.playbook, &hit.dedupe_key, tally.floor).await?;
                        match after_window(needed, count, first.unwrap_or(hit.observed_at)) {
                            Some(opened) => {
                                windows.remove(&hit.playbook, &hit.dedupe_key);
                                opened
                            }
                            None => {
                                outcome.pending += 1;
                                continue;
                            }
                        }
                    }
                    Step::Join(_) | Step::Open => (i64::from(hit.weight), hit.observed_at),
                };
                let id = tx
                    .insert_incident(&NewIncidentRow {
                        event_count: count,
                        first_seen,
                        ..NewIncidentRow::of_hit(hit, received_at)
                    })
                    .await?;
                if matches!(step, Step::Count { .. }) {
                    tx.attach_pending(id, &hit.playbook, &hit.dedupe_key).await?;
                    grown.push(id);
                } else {
                    tx.insert_event(Some(id), &NewEventRow::from(hit), received_at).await?;
                }
                let detail = format!("{} ({} hits, rule {})", hit.title, count, hit.rule);
                tx.insert_timeline(id, received_at, "daemon", "opened", &detail).await?;
                // The first mail, in the transaction that opens the incident (invariant 3).
                tx.announce(composer, id, &Occasion::Opened, received_at).await?;
                outcome.opened.push(id);
                open_of.insert(slot, Some(id));
                held.insert(id, Vec::new());
            }
            tx.insert_pending(&pending_rows, received_at).await?;
            for (id, later) in &held {
                let (Some(first), Some(last)) = (
                    later.iter().map(|h| h.observed_at).min(),
                    later.iter().map(|h| h.observed_at).max(),
                ) else {
                    continue;
                };
                let weight: i64 = later.iter().map(|h| i64::from(h.weight)).sum();
                tx.add_hits(*id, weight, first, last, received_at).await?;
                let stored = tx.count_events(*id).await?;
                for (i, hit) in later.iter().enumerate() {
                    if worth_storing(i, later.len(), stored) {
                        tx.insert_event(Some(*id), &NewEventRow::from(*hit), received_at).await?;
                    }
                }
                grown.push(*id);
            }
            grown.sort_unstable();
            grown.dedup();
            for id in grown {
                tx.trim_evidence(id).await?;
            }
            if let Some(mail) = &batch.mail
                && let Some(id) = outcome.opened.first().or(outcome.joined.first())
            {
                tx.link_mail(mail, *id).await?;
            }
            for c in &batch.checkpoints {
                sqlx::query(
                    "INSERT INTO log_checkpoints (node, dev, inode, fingerprint, path, \"offset\", line_no, updated_at, tail_fingerprint) \
                     VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9) ON CONFLICT (node, dev, inode) DO UPDATE SET \
                     fingerprint = excluded.fingerprint, path = excluded.path, \"offset\" = excluded.\"offset\", \
                     line_no = excluded.line_no, updated_at = excluded.updated_at, \
                     tail_fingerprint = excluded.tail_fingerprint",
                )
                .bind(&batch.node)
                .bind(c.dev as i64)
                .bind(c.inode as i64)
                .bind(&c.fingerprint)
                .bind(&c.path)
                .bind(c.offset as i64)
                .bind(c.line_no as i64)
                .bind(received_at)
                .bind(&c.tail_fingerprint)
                .execute(&mut *tx)
                .await?;
            }
            for c in &batch.cursors {
                sqlx::query(
                    "INSERT INTO journal_cursors (node, source, cursor, entry_at, updated_at) VALUES ($1, $2, $3, $4, $5) \
                     ON CONFLICT (node, source) DO UPDATE SET cursor = excluded.cursor, entry_at = excluded.entry_at, \
                     updated_at = excluded.updated_at",
                )
                .bind(&batch.node)
                .bind(&c.source)
                .bind(&c.cursor)
                .bind(c.entry_at)
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
}

/// `keys` (sorted) grouped by playbook.
fn by_playbook<'a>(keys: &[(&'a str, &'a str)]) -> Vec<(&'a str, Vec<&'a str>)> {
    let mut out: Vec<(&str, Vec<&str>)> = Vec::new();
    for &(playbook, key) in keys {
        match out.last_mut() {
            Some((p, of)) if *p == playbook => of.push(key),
            _ => out.push((playbook, vec![key])),
        }
    }
    out
}

/// Raises incident `id` for `hit` (a login after failures): the hit is evidence that does not
/// count, the severity and title change, the escalation goes straight to the playbook's last
/// level, and the CSIRT is told at once. A second raise of the same incident is evidence and a
/// timeline entry only. True when it raised.
async fn raise_incident(
    tx: &mut impl Sql,
    composer: &Composer,
    id: i64,
    hit: &Hit,
    raise: &Raise,
    node: &str,
    at: DateTime<Utc>,
) -> Result<bool, StoreError> {
    let incident = tx.incident(id).await?;
    tx.add_hits(id, 0, hit.observed_at, hit.observed_at, at)
        .await?;
    let evidence = NewEventRow {
        weight: 0,
        ..NewEventRow::from(hit)
    };
    tx.insert_event(Some(id), &evidence, at).await?;
    let user = hit
        .fields
        .get("user")
        .and_then(|u| u.as_str())
        .map(|u| format!(" (ユーザー {u})"))
        .unwrap_or_default();
    let Some(title) = raised_title(&incident.title, &raise.mark) else {
        let detail = format!("再び{}{user}: ルール {}", raise.mark, hit.rule);
        tx.insert_timeline(id, at, "daemon", "note", &detail)
            .await?;
        return Ok(false);
    };
    tx.set_severity_title(id, raise.severity.as_str(), &title, at)
        .await?;
    let playbook = composer.playbooks().get(&incident.playbook);
    let (level, to) = match playbook.and_then(|p| p.escalations.last().map(|l| (p, l))) {
        Some((p, last)) => (p.escalations.len() as i64, last.to.clone()),
        None => (0, Vec::new()),
    };
    if level > incident.escalation_level {
        tx.fire_levels(id, incident.escalation_level + 1, level, node, at)
            .await?;
    }
    let reason = format!(
        "{}{user} (ルール {}、事象 {} 件の後): 重要度を{}に引き上げ{}",
        raise.mark,
        hit.rule,
        incident.event_count,
        raise.severity.label_ja(),
        if level > 0 {
            format!("、第{level}段階 (最終) へエスカレーション")
        } else {
            String::new()
        }
    );
    tx.insert_timeline(id, at, "daemon", "raised", &reason)
        .await?;
    let occasion = Occasion::Raised { reason, level, to };
    tx.announce(composer, id, &occasion, at).await?;
    Ok(true)
}
