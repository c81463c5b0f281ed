//! Reads what a report needs from the store, for the period and the same period a year before,
//! and tallies both the same way. Reads only; the statements are in `store::report`.

use super::figures::{LINGERING, LINGERING_LISTED, Rows, Tally};
use super::period::{Period, PeriodError};
use super::{Report, TITLE};
use crate::level::Levels;
use crate::playbook::PlaybookSet;
use crate::store::{Store, StoreError};
use chrono::{DateTime, Utc};
use futures_util::StreamExt;

/// Why a report could not be made.
#[derive(Debug, thiserror::Error)]
pub enum ReportError {
    #[error(transparent)]
    Store(#[from] StoreError),
    #[error(transparent)]
    Period(#[from] PeriodError),
}

/// The report of `period` at `now`. `playbooks` (for the deadlines) may be None when they
/// cannot be read: the report then says the deadlines were not evaluated. `levels` label each
/// severity with the city's level.
pub async fn gather(
    store: &Store,
    period: &Period,
    playbooks: Option<&PlaybookSet>,
    levels: &Levels,
    now: DateTime<Utc>,
) -> Result<Report, ReportError> {
    let current = figures_of(store, period, playbooks, levels, now).await?;
    let before = period.year_before()?;
    // A year with no incident recorded before its end is not a year of zero incidents: the
    // store did not exist yet, and a comparison would mislead.
    let earliest = store.earliest_incident().await?;
    let previous = match earliest {
        Some(first) if first < before.end => {
            Some(figures_of(store, &before, playbooks, levels, now).await?)
        }
        _ => None,
    };
    let previous_records_from =
        earliest.filter(|first| previous.is_some() && *first > before.start);
    let mut summary = super::summary::write(&current, previous.as_ref());
    if let Some(first) = previous_records_from {
        summary.push(super::summary::partial_previous(first, period.tz));
    }
    Ok(Report {
        title: TITLE.to_string(),
        timezone: period.tz.to_string(),
        generated_at: now,
        current,
        previous,
        previous_records_from,
        summary,
    })
}

/// How many batches of incidents (months) are read at once: SQLite reads one on each
/// connection of its read pool while the report counts the one before.
const READ_AHEAD: usize = 2;

async fn figures_of(
    store: &Store,
    period: &Period,
    playbooks: Option<&PlaybookSet>,
    levels: &Levels,
    now: DateTime<Utc>,
) -> Result<super::figures::Figures, ReportError> {
    let mut tally = Tally::new(period, playbooks, levels, now);
    let spans = period.month_spans()?;
    let mut batches = futures_util::stream::iter(spans)
        .map(|(start, end)| store.report_incidents(start, end))
        .buffered(READ_AHEAD)
        .enumerate();
    while let Some((month, batch)) = batches.next().await {
        batch?.each(|incident| tally.add(month, &incident))?;
    }
    let titles = store.incident_titles(&tally.listed_missed()).await?;
    let escalations = store.report_escalations(period.start, period.end).await?;
    let as_of = now.min(period.end);
    let lingering = store
        .report_open_since(as_of - LINGERING, as_of, LINGERING_LISTED)
        .await?;
    Ok(tally.finish(
        Rows {
            escalations,
            lingering,
            lingering_as_of: as_of,
        },
        &titles,
    ))
}
