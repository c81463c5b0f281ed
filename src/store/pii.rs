//! Personal-information incidents in the store: the facts, the reports made and the statutory
//! clocks. A change of a fact and a recorded report are each one transaction that writes the
//! change, its timeline entry, and the clocks `pii::assess` derives from everything recorded
//! (so the clocks never disagree with the facts), and makes the incident due for the escalator.
//! The escalator reads the pending clocks through `Sql::pii_clocks`.
//!
//! When the decision first says a report to 個人情報保護委員会 is required, the same transaction
//! raises the incident to the severity of L3 (never lowering one), records why in the timeline,
//! and writes the CISO group's mail (`escalate`): once per incident (`pii_escalations`), so a
//! recomputation or a second daemon never sends it again. A command that cannot address mail
//! (only `--database`) leaves the mail to the escalator (`notify_pending`).

use super::sql::Sql;
use super::{Backend, Store, StoreError};
use crate::compose::{Composer, Occasion};
use crate::level::Levels;
use crate::model::{Actor, Incident, now};
use crate::pii::rules::Rules;
use crate::pii::{Assessment, Clock, Edit, Escalation, Facts, Kind, Party, ReportMade, assess};
use chrono::{DateTime, Utc};
use sqlx::FromRow;

/// What is recorded about an incident's personal information.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct PiiRecord {
    /// `None` until the first `csirt incidents pii`.
    pub facts: Option<Facts>,
    pub reports: Vec<ReportMade>,
    pub clocks: Vec<Clock>,
}

/// A report to record.
#[derive(Debug, Clone)]
pub struct NewReport {
    pub to: Party,
    pub kind: Kind,
    pub reference: Option<String>,
    pub at: DateTime<Utc>,
    pub note: Option<String>,
}

/// What a change of personal-information facts is judged and announced by.
#[derive(Clone, Copy)]
pub struct PiiPolicy<'a> {
    pub rules: &'a Rules,
    /// The city's levels: an incident that requires a report to 個人情報保護委員会 is raised to
    /// the mildest severity at L3, at least.
    pub levels: &'a Levels,
    /// Writes the CISO group's mail in the change's own transaction. `None` when the command
    /// cannot address mail (no config, only `--database`): the daemon's escalator writes it.
    pub composer: Option<&'a Composer>,
}

/// What one change did.
#[derive(Debug, Clone)]
pub struct PiiChange {
    pub facts: Facts,
    pub assessment: Assessment,
    /// The lines of the timeline entry (empty: nothing changed, nothing written).
    pub changes: Vec<String>,
    /// What the required report to 個人情報保護委員会 did, when it did something now: the
    /// lines of its `raised` timeline entry.
    pub escalation: Vec<String>,
}

/// What `recompute_all` did.
#[derive(Debug, Clone, Default, PartialEq, Eq, serde::Serialize)]
pub struct Recomputed {
    /// Incidents with facts, all looked at.
    pub incidents: usize,
    /// Those whose clocks the rules changed (a timeline entry each).
    pub changed: Vec<i64>,
    /// Those a required report raised and announced now.
    pub escalated: Vec<i64>,
}

#[derive(FromRow)]
pub(super) struct FactsRow {
    persons: Option<i64>,
    sensitive: Option<bool>,
    financial: Option<bool>,
    malicious: Option<bool>,
    ordinance_sensitive: Option<bool>,
    mynumber: Option<bool>,
    encrypted: Option<bool>,
    aware_at: Option<DateTime<Utc>>,
}

impl From<FactsRow> for Facts {
    fn from(r: FactsRow) -> Facts {
        Facts {
            persons: r.persons,
            sensitive: r.sensitive,
            financial: r.financial,
            malicious: r.malicious,
            ordinance_sensitive: r.ordinance_sensitive,
            mynumber: r.mynumber,
            encrypted: r.encrypted,
            aware_at: r.aware_at,
        }
    }
}

#[derive(FromRow)]
pub(super) struct ReportRow {
    to_party: String,
    kind: String,
    #[sqlx(rename = "ref")]
    reference: Option<String>,
    at: DateTime<Utc>,
    note: Option<String>,
    actor: String,
}

impl ReportRow {
    pub(super) fn into_report(self, id: i64) -> Result<ReportMade, StoreError> {
        let corrupt = |e: String| StoreError::Corrupt(format!("incident #{id}: {e}"));
        Ok(ReportMade {
            to: self.to_party.parse().map_err(corrupt)?,
            kind: self.kind.parse().map_err(corrupt)?,
            reference: self.reference,
            at: self.at,
            note: self.note,
            actor: self.actor,
        })
    }
}

#[derive(FromRow)]
pub(super) struct ClockRow {
    duty: String,
    name: String,
    to_party: String,
    kind: String,
    warn_at: DateTime<Utc>,
    due_at: Option<DateTime<Utc>>,
    source: String,
    done_at: Option<DateTime<Utc>>,
}

impl ClockRow {
    pub(super) fn into_clock(self, id: i64) -> Result<Clock, StoreError> {
        let corrupt = |e: String| StoreError::Corrupt(format!("incident #{id}: {e}"));
        Ok(Clock {
            to: self.to_party.parse().map_err(corrupt)?,
            kind: self.kind.parse().map_err(corrupt)?,
            duty: self.duty,
            name: self.name,
            warn_at: self.warn_at,
            due_at: self.due_at,
            source: self.source,
            done_at: self.done_at,
        })
    }
}

/// The column lists the `Sql` statements read.
pub(super) const FACT_COLUMNS: &str =
    "persons, sensitive, financial, malicious, ordinance_sensitive, mynumber, encrypted, aware_at";
pub(super) const REPORT_COLUMNS: &str = "to_party, kind, ref, at, note, actor";
pub(super) const CLOCK_COLUMNS: &str =
    "duty, name, to_party, kind, warn_at, due_at, source, done_at";

/// What a change is.
#[derive(Clone, Copy)]
enum Change<'a> {
    Facts(&'a [Edit]),
    Report(&'a NewReport),
}

impl Store {
    /// Applies `edits` to incident `id`'s facts (覚知 defaults to now on the first change) and
    /// recomputes its clocks under `rules`, with one timeline entry listing what changed and
    /// what the decision now is. Editing nothing writes nothing, unless the rules now give
    /// other clocks than the stored ones (the rules file was edited): those are recomputed.
    #[tracing::instrument(skip_all, fields(incident = id))]
    pub async fn set_pii(
        &self,
        id: i64,
        edits: &[Edit],
        actor: &Actor,
        policy: &PiiPolicy<'_>,
    ) -> Result<PiiChange, StoreError> {
        self.change_pii(id, Change::Facts(edits), actor, policy)
            .await
    }

    /// Recomputes every incident with recorded facts under `policy.rules` (the rules file was
    /// edited: a change of the law), as `set_pii` with no edit does for one: each whose clocks
    /// differ gets them recomputed with a timeline entry by `actor` (the rules file), a clock
    /// that did not move keeps the reminders already sent, and a report that became required
    /// raises and announces its incident once. One transaction per incident, so a long store
    /// never holds the write lock for long.
    pub async fn recompute_all_pii(
        &self,
        actor: &Actor,
        policy: &PiiPolicy<'_>,
    ) -> Result<Recomputed, StoreError> {
        let ids: Vec<i64> = read!(self, pool => sqlx::query_scalar(
            "SELECT incident_id FROM pii_facts ORDER BY incident_id",
        )
        .fetch_all(pool)
        .await?);
        let mut done = Recomputed {
            incidents: ids.len(),
            ..Recomputed::default()
        };
        for id in ids {
            let change = self
                .change_pii(id, Change::Facts(&[]), actor, policy)
                .await?;
            if !change.changes.is_empty() {
                done.changed.push(id);
            }
            if !change.escalation.is_empty() {
                done.escalated.push(id);
            }
        }
        Ok(done)
    }

    /// Records a report made (or a notification done) on incident `id` with its timeline entry;
    /// the clocks it satisfies stop, and so do their reminders.
    #[tracing::instrument(skip_all, fields(incident = id))]
    pub async fn record_report(
        &self,
        id: i64,
        report: &NewReport,
        actor: &Actor,
        policy: &PiiPolicy<'_>,
    ) -> Result<PiiChange, StoreError> {
        self.change_pii(id, Change::Report(report), actor, policy)
            .await
    }

    async fn change_pii(
        &self,
        id: i64,
        change: Change<'_>,
        actor: &Actor,
        policy: &PiiPolicy<'_>,
    ) -> Result<PiiChange, StoreError> {
        let rules = policy.rules;
        let at = now();
        transaction!(self, tx => {
            // Locks the row (PostgreSQL) and proves the incident exists; closed ones too: a
            // report made after closing must still be recorded.
            let found = sqlx::query("UPDATE incidents SET last_seen = last_seen WHERE id = $1")
                .bind(id)
                .execute(&mut *tx)
                .await?
                .rows_affected();
            if found == 0 {
                return Err(StoreError::NotFound(id));
            }
            let stored = tx.pii_facts(id).await?;
            let had_facts = stored.is_some();
            let mut facts = stored.unwrap_or_default();
            let (action, mut changes) = match change {
                Change::Facts(edits) => {
                    let mut changes = facts.apply(edits);
                    if facts.aware_at.is_none() {
                        changes.extend(facts.apply(&[Edit::AwareAt(Some(at))]));
                    }
                    ("pii", changes)
                }
                Change::Report(r) => {
                    sqlx::query(
                        "INSERT INTO pii_reports (incident_id, to_party, kind, ref, at, note, actor, recorded_at) \
                         VALUES ($1, $2, $3, $4, $5, $6, $7, $8)",
                    )
                    .bind(id)
                    .bind(r.to.as_str())
                    .bind(r.kind.as_str())
                    .bind(r.reference.as_deref())
                    .bind(r.at)
                    .bind(r.note.as_deref())
                    .bind(actor.as_str())
                    .bind(at)
                    .execute(&mut *tx)
                    .await?;
                    let at = r.at.to_rfc3339_opts(chrono::SecondsFormat::Secs, true);
                    let mut line = format!("{} {} ({at})", r.to.label_ja(), r.kind);
                    if let Some(reference) = &r.reference {
                        line.push_str(&format!(" 受付番号等: {reference}"));
                    }
                    let mut lines = vec![line];
                    lines.extend(r.note.iter().cloned());
                    ("reported", lines)
                }
            };
            if changes.is_empty() {
                // No fact changed; but the rules may have (a change of the law): clocks that the
                // current rules compute differently are recomputed, and the timeline says why.
                let reports = tx.pii_reports(id).await?;
                let assessment = assess(&facts, rules, &reports);
                let stored = tx.pii_clocks(id).await?;
                if !had_facts {
                    return Ok(PiiChange { assessment, facts, changes, escalation: Vec::new() });
                }
                if same_clocks(&stored, &assessment.clocks) {
                    // Nothing to recompute; but a required report may still owe its raise (facts
                    // recorded before csirt did it) or its mail (left to the daemon).
                    let escalation = escalate(&mut *tx, id, &assessment, policy, actor, at).await?;
                    return Ok(PiiChange { assessment, facts, changes, escalation });
                }
                changes.push(format!(
                    "規則 {} (version {}, sha256 {}) により期限を再計算",
                    rules.path.display(),
                    rules.version,
                    rules.short_hash()
                ));
            }
            if matches!(change, Change::Facts(_)) || had_facts {
                sqlx::query(&format!(
                    "INSERT INTO pii_facts (incident_id, {FACT_COLUMNS}, updated_at) \
                     VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10) ON CONFLICT (incident_id) DO UPDATE SET \
                     persons = $2, sensitive = $3, financial = $4, malicious = $5, ordinance_sensitive = $6, \
                     mynumber = $7, encrypted = $8, aware_at = $9, updated_at = $10"
                ))
                .bind(id)
                .bind(facts.persons)
                .bind(facts.sensitive)
                .bind(facts.financial)
                .bind(facts.malicious)
                .bind(facts.ordinance_sensitive)
                .bind(facts.mynumber)
                .bind(facts.encrypted)
                .bind(facts.aware_at)
                .bind(at)
                .execute(&mut *tx)
                .await?;
            }
            let reports = tx.pii_reports(id).await?;
            let assessment = assess(&facts, rules, &reports);
            let old = tx.pii_clocks(id).await?;
            sqlx::query("DELETE FROM pii_clocks WHERE incident_id = $1")
                .bind(id)
                .execute(&mut *tx)
                .await?;
            for c in &assessment.clocks {
                sqlx::query(&format!(
                    "INSERT INTO pii_clocks (incident_id, {CLOCK_COLUMNS}) VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9)"
                ))
                .bind(id)
                .bind(&c.duty)
                .bind(&c.name)
                .bind(c.to.as_str())
                .bind(c.kind.as_str())
                .bind(c.warn_at)
                .bind(c.due_at)
                .bind(&c.source)
                .bind(c.done_at)
                .execute(&mut *tx)
                .await?;
                // A clock that moved (覚知 corrected, 不正の目的 found) warns again at its new
                // time: its earlier reminders are forgotten. One that stayed keeps them, so a
                // change of another fact never repeats a reminder.
                let moved = old.iter().any(|o| {
                    o.duty == c.duty && o.name == c.name && (o.warn_at, o.due_at) != (c.warn_at, c.due_at)
                });
                if moved {
                    // The daily overdue names share a prefix, compared as text (a LIKE pattern
                    // would read `%` or `_` in a rule's name as wildcards).
                    sqlx::query(
                        "DELETE FROM deadline_reminders WHERE incident_id = $1 AND (name IN ($2, $3) \
                         OR substr(name, 1, length($4)) = $4)",
                    )
                    .bind(id)
                    .bind(&c.name)
                    .bind(c.overdue_name(0))
                    .bind(c.overdue_prefix())
                    .execute(&mut *tx)
                    .await?;
                }
            }
            // The escalator looks at it on its next pass and schedules the clocks' reminders.
            sqlx::query(
                "UPDATE incidents SET due_at = $2 WHERE id = $1 AND status <> 'closed' AND (due_at IS NULL OR due_at > $2)",
            )
            .bind(id)
            .bind(at)
            .execute(&mut *tx)
            .await?;
            // A fact's change says what the decision now is; a report changes no decision.
            if matches!(change, Change::Facts(_)) {
                changes.extend(decision_lines(&assessment));
            }
            tx.insert_timeline(id, at, actor.as_str(), action, &changes.join("\n")).await?;
            let escalation = escalate(&mut *tx, id, &assessment, policy, actor, at).await?;
            Ok(PiiChange { facts, assessment, changes, escalation })
        })
    }

    /// What is recorded about incident `id`'s personal information.
    pub async fn pii(&self, id: i64) -> Result<PiiRecord, StoreError> {
        reader!(self, conn => Ok(PiiRecord {
            facts: conn.pii_facts(id).await?,
            reports: conn.pii_reports(id).await?,
            clocks: conn.pii_clocks(id).await?,
        }))
    }

    /// The morning check: incidents (closed ones too: a duty outlives the incident) with a
    /// clock past its warning and no report yet, with those clocks, most urgent first.
    pub async fn pending_pii(
        &self,
        now: DateTime<Utc>,
    ) -> Result<Vec<(Incident, Vec<Clock>)>, StoreError> {
        let ids: Vec<i64> = read!(self, pool => sqlx::query_scalar(
            "SELECT incident_id FROM pii_clocks WHERE done_at IS NULL AND warn_at <= $1 \
             GROUP BY incident_id ORDER BY MIN(COALESCE(due_at, warn_at)), incident_id",
        )
        .bind(now)
        .fetch_all(pool)
        .await?);
        let mut out = Vec::with_capacity(ids.len());
        reader!(self, conn => {
            for id in ids {
                let clocks: Vec<Clock> = conn
                    .pii_clocks(id)
                    .await?
                    .into_iter()
                    .filter(|c| c.done_at.is_none() && c.warn_at <= now)
                    .collect();
                out.push((conn.incident(id).await?, clocks));
            }
        });
        Ok(out)
    }
}

/// A required report to 個人情報保護委員会 on incident `id`, the first time it is seen: the
/// incident is raised to L3's severity (never lowered), the timeline says why (citing the
/// rules) by `actor`, and the CISO group's mail is written (now, with `policy.composer`; else
/// by the escalator). Returns the timeline entry's lines when it did that now; nothing when the
/// report is not required or was handled before. A mail left to the daemon earlier is written
/// now when this change can.
async fn escalate(
    tx: &mut impl Sql,
    id: i64,
    assessment: &Assessment,
    policy: &PiiPolicy<'_>,
    actor: &Actor,
    at: DateTime<Utc>,
) -> Result<Vec<String>, StoreError> {
    if !assessment.ppc_required() {
        return Ok(Vec::new());
    }
    let incident = tx.incident(id).await?;
    let Some(Escalation { severity, reason }) =
        crate::pii::escalation(assessment, incident.severity, policy.levels)
    else {
        return Ok(Vec::new());
    };
    let mut lines = Vec::new();
    if tx.insert_pii_escalation(id, at, &reason).await? {
        if severity != incident.severity {
            tx.set_severity_title(id, severity.as_str(), &incident.title, at)
                .await?;
        }
        lines.push(reason);
        let ciso = policy.composer.and_then(Composer::pii_ciso);
        lines.push(match (policy.composer, ciso) {
            (Some(composer), Some(group)) => format!(
                "CISO の連絡先 {group} ({}) と当番に直ちに通知",
                composer.addresses(&[group.to_string()]).join(", ")
            ),
            (Some(_), None) => {
                "CISO の連絡先 (設定の pii_ciso、[contacts] の ciso) がないため当番にだけ通知"
                    .into()
            }
            (None, _) => "CISO への通知はデーモンが送る (このコマンドには宛先の設定がない)".into(),
        });
        tx.insert_timeline(id, at, actor.as_str(), "raised", &lines.join("\n"))
            .await?;
    }
    if let Some(composer) = policy.composer {
        let written = notify_pending(tx, composer, id, actor.as_str(), at).await?;
        if written && lines.is_empty() {
            // The mail the daemon was to write: written by this change instead.
            tx.insert_timeline(id, at, actor.as_str(), "note", &ciso_notified(composer))
                .await?;
            lines.push(ciso_notified(composer));
        }
    }
    Ok(lines)
}

/// Writes the CISO group's mail of incident `id`'s escalation if nobody has (claimed by a
/// compare-and-set, so of two daemons or a daemon and a command exactly one writes it), with
/// the statutory clocks as they stand. True when it wrote it.
pub(super) async fn notify_pending(
    tx: &mut impl Sql,
    composer: &Composer,
    id: i64,
    by: &str,
    at: DateTime<Utc>,
) -> Result<bool, StoreError> {
    let Some(reason) = tx.claim_pii_notice(id, at, by).await? else {
        return Ok(false);
    };
    let occasion = Occasion::Statutory {
        reason,
        to: composer
            .pii_ciso()
            .map(str::to_string)
            .into_iter()
            .collect(),
        clocks: tx.pii_clocks(id).await?,
    };
    tx.announce(composer, id, &occasion, at).await?;
    Ok(true)
}

/// The timeline's line for a CISO mail written after the raise (by the escalator, or by a later
/// command that could address it).
pub(super) fn ciso_notified(composer: &Composer) -> String {
    match composer.pii_ciso() {
        Some(group) => format!("個人情報保護委員会への報告が必要な旨を {group} と当番に通知"),
        None => "個人情報保護委員会への報告が必要な旨を当番に通知 (CISO の連絡先がない)".into(),
    }
}

/// Whether two sets of clocks are the same duties, names, parties, times and sources (a rules
/// edit that only corrects a cited article is still recomputed).
fn same_clocks(a: &[Clock], b: &[Clock]) -> bool {
    let key = |c: &Clock| {
        (
            c.duty.clone(),
            c.name.clone(),
            c.to,
            c.kind,
            c.warn_at,
            c.due_at,
            c.source.clone(),
        )
    };
    let mut a: Vec<_> = a.iter().map(key).collect();
    let mut b: Vec<_> = b.iter().map(key).collect();
    a.sort();
    b.sort();
    a == b
}

/// The decision as the timeline records it, one line per duty.
fn decision_lines(a: &Assessment) -> Vec<String> {
    a.decisions
        .iter()
        .map(|d| {
            let why: Vec<String> = d
                .reasons
                .iter()
                .map(|r| format!("{} ({})", r.text, r.source))
                .collect();
            format!("判断: {}: {}", d.name, d.verdict_ja()) + &format!(" — {}", why.join("; "))
        })
        .collect()
}
