//! Rows as the store reads them, and their conversion into the model's types (a value this
//! csirt does not understand is `StoreError::Corrupt`, never a panic).

use super::StoreError;
use crate::model::{Event, Fields, Incident, Resolution, Severity, Status, TimelineEntry};
use chrono::{DateTime, Utc};
use sqlx::FromRow;
use sqlx::types::Json;

pub(super) const INCIDENT_COLUMNS: &str = "id, title, playbook, category, severity, status, resolution, dedupe_key, fields, \
     event_count, first_seen, last_seen, opened_at, acknowledged_at, closed_at, assignee, escalation_level";

#[derive(FromRow)]
pub(super) struct IncidentRow {
    id: i64,
    title: String,
    playbook: String,
    category: String,
    severity: String,
    status: String,
    resolution: Option<String>,
    dedupe_key: String,
    fields: Json<Fields>,
    event_count: i64,
    first_seen: DateTime<Utc>,
    last_seen: DateTime<Utc>,
    opened_at: DateTime<Utc>,
    acknowledged_at: Option<DateTime<Utc>>,
    closed_at: Option<DateTime<Utc>>,
    assignee: Option<String>,
    escalation_level: i64,
}

impl TryFrom<IncidentRow> for Incident {
    type Error = StoreError;
    fn try_from(r: IncidentRow) -> Result<Self, StoreError> {
        let corrupt =
            |e: crate::model::UnknownValue| StoreError::Corrupt(format!("incident #{}: {e}", r.id));
        Ok(Incident {
            id: r.id,
            severity: r.severity.parse::<Severity>().map_err(corrupt)?,
            status: r.status.parse::<Status>().map_err(corrupt)?,
            resolution: r
                .resolution
                .as_deref()
                .map(str::parse::<Resolution>)
                .transpose()
                .map_err(corrupt)?,
            title: r.title,
            playbook: r.playbook,
            category: r.category,
            dedupe_key: r.dedupe_key,
            fields: r.fields.0,
            event_count: r.event_count,
            first_seen: r.first_seen,
            last_seen: r.last_seen,
            opened_at: r.opened_at,
            acknowledged_at: r.acknowledged_at,
            closed_at: r.closed_at,
            assignee: r.assignee,
            escalation_level: r.escalation_level,
        })
    }
}

/// An incident the escalator found due, with what its last mail covered.
#[derive(FromRow)]
pub(super) struct DueRow {
    #[sqlx(flatten)]
    pub incident: IncidentRow,
    pub notified_event_count: i64,
    pub last_update_at: Option<DateTime<Utc>>,
}

#[derive(FromRow)]
pub(super) struct TimelineRow {
    at: DateTime<Utc>,
    actor: String,
    action: String,
    detail: String,
}

#[derive(FromRow)]
pub(super) struct EventRow {
    kind: String,
    rule: String,
    source: String,
    locator: String,
    observed_at: DateTime<Utc>,
    text: String,
    fields: Json<Fields>,
}

impl From<EventRow> for Event {
    fn from(r: EventRow) -> Event {
        Event {
            kind: r.kind,
            rule: r.rule,
            source: r.source,
            locator: r.locator,
            observed_at: r.observed_at,
            text: r.text,
            fields: r.fields.0,
        }
    }
}

impl From<TimelineRow> for TimelineEntry {
    fn from(r: TimelineRow) -> TimelineEntry {
        TimelineEntry {
            at: r.at,
            actor: r.actor,
            action: r.action,
            detail: r.detail,
        }
    }
}
