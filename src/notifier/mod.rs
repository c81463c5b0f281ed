//! Telling the CSIRT: the notifier drains the outbox, the escalator fills it on a schedule.
//!
//! Rows reach the outbox only inside the transaction of the change that causes them (a new
//! incident in the ingest transaction; updates, escalation levels, deadline reminders and
//! digests in the escalator's), so a crash can neither lose a notification nor invent one. The
//! notifier claims due rows with a lease, sends each with its stored Message-ID, and marks it
//! sent only after the server accepted it: a crash in between resends the same message, which
//! mail clients recognise. Transient failures back off exponentially with jitter up to an hour;
//! a 5xx reply marks the row failed with the server's words, for `csirt status`.

pub mod channel;
pub mod transport;

use crate::compose::Attachment;
use crate::compose::Composer;
use crate::config::{Config, ReportPeriod, ScheduleKind};
use crate::engine::rate::RateLimit;
use crate::live::Live;
use crate::model::now;
use crate::report::Format;
use crate::report::gather::{ReportError, gather};
use crate::report::period::{Period, Span};
use crate::store::Store;
use channel::{Channel, SendError};
use chrono::{DateTime, TimeDelta, Utc};
use std::sync::Arc;
use std::time::Duration;
use tokio::sync::Notify;
use tokio_util::sync::CancellationToken;
use tracing::{error, info, warn};

/// Rows claimed per turn.
const CLAIM_BATCH: i64 = 20;
/// How often the notifier looks at the outbox when nothing wakes it.
const NOTIFIER_POLL: Duration = Duration::from_secs(2);
/// How often the escalator looks for due updates, levels, reminders and schedules.
pub const ESCALATOR_TICK: Duration = Duration::from_secs(10);
/// The longest wait between two attempts at one mail.
const RETRY_CAP: TimeDelta = TimeDelta::hours(1);

/// When to try again after `attempts` failed attempts: `base` ([notify] retry_after, 30 s by
/// default), then doubled per attempt up to an hour, each stretched by up to a fifth at random
/// so that many rows do not retry in step.
pub fn retry_at(now: DateTime<Utc>, attempts: i64, base: TimeDelta) -> DateTime<Utc> {
    let exponent = attempts.clamp(1, 20) - 1;
    let delay = base
        .checked_mul(1 << exponent)
        .unwrap_or(RETRY_CAP)
        .min(RETRY_CAP);
    let jitter = TimeDelta::milliseconds(fastrand::i64(0..=delay.num_milliseconds() / 5));
    now + delay + jitter
}

/// Sends what the outbox holds, until `stop` is notified.
pub async fn run_notifier(
    store: Arc<Store>,
    mailer: impl Channel,
    composer: Live<Composer>,
    node: String,
    (rate, retry_after): (RateLimit, TimeDelta),
    (wake, stop): (Arc<Notify>, CancellationToken),
    health: crate::systemd::Worker,
) -> anyhow::Result<()> {
    info!(transport = mailer.describe(), "notifier started");
    let mut failing_store = false;
    loop {
        health.busy();
        let claimed = store
            .claim_outbox(&node, now(), CLAIM_BATCH, rate, &composer.get())
            .await;
        let rows = match claimed {
            Ok(rows) => {
                if failing_store {
                    info!("store reachable again; notifier resumed");
                    failing_store = false;
                }
                rows
            }
            Err(e) => {
                if !failing_store {
                    error!(error = %e, "notifier cannot read the outbox; retrying");
                    failing_store = true;
                }
                Vec::new()
            }
        };
        let full = rows.len() as i64 == CLAIM_BATCH;
        for row in rows {
            // Each mail is a piece of work of its own: a long outbox is not a stuck notifier.
            health.busy();
            let mut result = if mailer.one_by_one(&row) {
                Err(SendError::Permanent("no recipient".into()))
            } else {
                mailer.deliver(&row).await
            };
            let mut refused: Vec<(String, String)> = Vec::new();
            if mailer.one_by_one(&row)
                || (matches!(result, Err(SendError::Permanent(_))) && row.recipients().len() > 1)
            {
                // Refused as a whole (lettre stops at the first refused RCPT): one address each,
                // so a departed employee in a contact group does not silence the rest.
                let each = mailer.deliver_each(&row).await;
                if each.iter().any(|(_, r)| r.is_ok()) {
                    // The mail went out, so the row is sent; each address that did not get it is
                    // stored as a failure of its own (`csirt status` counts it and exits 3), or a
                    // typo in the lead's address would be one WARN line in the journal.
                    refused = each
                        .iter()
                        .filter_map(|(to, r)| r.as_ref().err().map(|e| (to.clone(), e.to_string())))
                        .collect();
                    for (to, e) in &refused {
                        warn!(outbox = row.id, recipient = %to, "recipient refused: {e}");
                    }
                    result = Ok(());
                } else if let Some((_, Err(e))) = each
                    .iter()
                    .find(|(_, r)| matches!(r, Err(SendError::Transient(_))))
                {
                    result = Err(SendError::Transient(e.to_string()));
                } else if let Some((to, Err(e))) = each.iter().find(|(_, r)| r.is_err()) {
                    result = Err(SendError::Permanent(format!("{to}: {e}")));
                }
            }
            let at = now();
            let recorded = match &result {
                Ok(()) => {
                    info!(outbox = row.id, incident = row.incident_id, kind = %row.kind, message_id = %row.message_id, "mail sent");
                    store.outbox_sent(row.id, at, &refused).await
                }
                Err(SendError::Transient(e)) => {
                    let next = retry_at(at, row.attempts, retry_after);
                    warn!(outbox = row.id, incident = row.incident_id, attempt = row.attempts, next = %next, "mail not sent, will retry: {e}");
                    store.outbox_retry(row.id, next, e).await
                }
                Err(SendError::Permanent(e)) => {
                    error!(
                        outbox = row.id,
                        incident = row.incident_id,
                        "mail refused for good: {e}"
                    );
                    store.outbox_failed(row.id, e, at).await
                }
            };
            // If the result cannot be recorded, the claim runs out and the row is sent again
            // with the same Message-ID: at least once, never lost.
            if let Err(e) = recorded {
                error!(outbox = row.id, error = %e, "cannot record the send result; the mail will be sent again");
            }
        }
        if full {
            continue;
        }
        health.idle();
        tokio::select! {
            _ = stop.cancelled() => break,
            _ = wake.notified() => {}
            _ = tokio::time::sleep(NOTIFIER_POLL) => {}
        }
    }
    info!("notifier stopped");
    Ok(())
}

/// Writes update, escalation, reminder and digest mails as they fall due, until `stop`.
pub async fn run_escalator(
    store: Arc<Store>,
    composer: Live<Composer>,
    config: Live<EscalatorConfig>,
    node: String,
    (wake_notifier, stop): (Arc<Notify>, CancellationToken),
    health: crate::systemd::Worker,
) -> anyhow::Result<()> {
    let mut failing = false;
    // The rules the stored `due_at` times were computed under. They come from the playbooks and
    // `update_interval`, which may have changed while no daemon ran or on a reload: then every
    // open incident is looked at once more (in the pass's bounded batches) so that a shortened
    // escalation is not waited out at its old time.
    let mut scheduled_under: Option<(Arc<Composer>, Arc<EscalatorConfig>)> = None;
    loop {
        health.busy();
        let composer_now = composer.get();
        let settings = config.get();
        let same_rules = scheduled_under
            .as_ref()
            .is_some_and(|(c, e)| Arc::ptr_eq(c, &composer_now) && Arc::ptr_eq(e, &settings));
        if !same_rules {
            match store.reschedule_open(now()).await {
                Ok(n) => {
                    info!(
                        incidents = n,
                        "escalation rules (re)loaded: open incidents are looked at again"
                    );
                    scheduled_under = Some((Arc::clone(&composer_now), Arc::clone(&settings)));
                }
                Err(e) => warn!(error = %e, "cannot mark open incidents for a new look; retrying"),
            }
        }
        match escalate_once(&store, &composer_now, &settings, &node).await {
            Ok(wrote) => {
                if failing {
                    info!("store reachable again; escalator resumed");
                    failing = false;
                }
                if wrote {
                    wake_notifier.notify_one();
                }
            }
            Err(e) => {
                if !failing {
                    error!(error = %e, "escalator cannot reach the store; retrying");
                    failing = true;
                }
            }
        }
        health.idle();
        tokio::select! {
            _ = stop.cancelled() => break,
            _ = tokio::time::sleep(ESCALATOR_TICK) => {}
        }
    }
    Ok(())
}

/// What the escalator needs from the config.
#[derive(Default)]
pub struct EscalatorConfig {
    pub update_interval: TimeDelta,
    /// The shortest time between two notices of quarantined mail.
    pub quarantine_notice: TimeDelta,
    pub tz: chrono_tz::Tz,
    /// Each `[[schedule]]`.
    pub schedules: Vec<Scheduled>,
}

/// A `[[schedule]]` as the escalator runs it.
pub struct Scheduled {
    pub name: String,
    pub cron: cron::Schedule,
    pub to: Vec<String>,
    /// None for a digest; for a report, whether it covers the last fiscal year (else the last
    /// month).
    pub report: Option<ReportPeriod>,
}

impl EscalatorConfig {
    pub fn from_config(config: &Config) -> anyhow::Result<EscalatorConfig> {
        let mut schedules = Vec::new();
        for s in &config.schedule {
            let parsed = s
                .parsed()
                .map_err(|m| anyhow::anyhow!("[[schedule]] {}: {m}", s.name.get_ref()))?;
            schedules.push(Scheduled {
                name: s.name.get_ref().clone(),
                cron: parsed,
                to: s.to.get_ref().iter().map(|t| t.get_ref().clone()).collect(),
                report: (s.kind == ScheduleKind::Report).then(|| s.report_period()),
            });
        }
        Ok(EscalatorConfig {
            update_interval: config.notify.update_interval.to_chrono(),
            quarantine_notice: config.notify.quarantine_notice.to_chrono(),
            tz: config.timezone,
            schedules,
        })
    }
}

/// One pass; true when it wrote mail.
pub async fn escalate_once(
    store: &Store,
    composer: &Composer,
    settings: &EscalatorConfig,
    node: &str,
) -> Result<bool, crate::store::StoreError> {
    let at = now();
    let pass = store
        .escalate(node, at, settings.update_interval, composer)
        .await?;
    for (id, level) in &pass.escalations {
        warn!(incident = id, level, "unacknowledged: escalated");
    }
    for (id, name) in &pass.reminders {
        info!(incident = id, deadline = %name, "deadline reminder written");
    }
    let mut wrote =
        !(pass.updates.is_empty() && pass.escalations.is_empty() && pass.reminders.is_empty());
    // Every quarantine, by whatever path it came (pipe, Maildir, IMAP), is in the store; this is
    // the one place that tells the CSIRT, so none is seen only by whoever runs `csirt status`.
    let announced = store
        .announce_quarantines(at, settings.quarantine_notice, composer)
        .await?;
    if announced > 0 {
        warn!(
            mails = announced,
            "quarantined intake mail announced to [notify] to"
        );
        wrote = true;
    }
    for s in &settings.schedules {
        // The next run strictly after now, in the configured zone: runs missed while no daemon
        // was up are not replayed one by one; the overdue run happens once, now.
        let Some(next) = s.cron.after(&at.with_timezone(&settings.tz)).next() else {
            continue;
        };
        let next = next.with_timezone(&Utc);
        let written = match s.report {
            None => {
                store
                    .run_schedule(&s.name, &s.to, at, next, composer)
                    .await?
            }
            Some(period) => run_report(store, composer, s, period, settings.tz, (at, next)).await?,
        };
        if written {
            info!(schedule = %s.name, "scheduled {} written", if s.report.is_some() { "report" } else { "digest" });
            wrote = true;
        }
    }
    Ok(wrote)
}

/// A report schedule's run, if it is due: the report of the last whole month or fiscal year
/// is made from the store (reads, outside any write transaction: a year's report must not hold
/// SQLite's one writer), then written to the outbox with its HTML attached only if the run is
/// still ours.
async fn run_report(
    store: &Store,
    composer: &Composer,
    s: &Scheduled,
    period: ReportPeriod,
    tz: chrono_tz::Tz,
    (at, next): (DateTime<Utc>, DateTime<Utc>),
) -> Result<bool, crate::store::StoreError> {
    match store.schedule_next(&s.name).await? {
        None => {
            store.register_schedule(&s.name, at, next).await?;
            return Ok(false);
        }
        Some(due) if due > at => return Ok(false),
        Some(_) => {}
    }
    let span = Span::last_complete(period == ReportPeriod::FiscalYear, at, tz);
    let report = match Period::new(span, tz) {
        Ok(period) => {
            gather(
                store,
                &period,
                Some(composer.playbooks()),
                composer.levels(),
                at,
            )
            .await
        }
        Err(e) => Err(ReportError::Period(e)),
    };
    let report = match report {
        Ok(report) => report,
        Err(ReportError::Store(e)) => return Err(e),
        Err(ReportError::Period(e)) => {
            // Only a zone without a midnight could do this; the run is skipped, not retried
            // every tick.
            warn!(schedule = %s.name, "report period: {e}");
            store.register_schedule(&s.name, at, next).await?;
            return Ok(false);
        }
    };
    let file = report.file_name(Format::Html);
    let mail = composer.report_mail(
        &s.name,
        &s.to,
        (&report.title, &report.current.period.label),
        &report.summary,
        &file,
        at,
    );
    let html = Attachment {
        name: file,
        content_type: "text/html; charset=utf-8".into(),
        content: report.render(Format::Html),
    };
    store
        .run_scheduled_mail(&s.name, at, next, &mail, std::slice::from_ref(&html))
        .await
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn retries_back_off_to_an_hour_with_bounded_jitter() {
        let t0 = now();
        for (attempts, base) in [(1, 30), (2, 60), (3, 120), (7, 1920), (8, 3600), (60, 3600)] {
            let delay = (retry_at(t0, attempts, TimeDelta::seconds(30)) - t0).num_milliseconds();
            assert!(
                delay >= base * 1000 && delay <= base * 1200,
                "attempt {attempts}: {delay} ms"
            );
        }
    }
}
