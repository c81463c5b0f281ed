//! Incidents as responders see and change them: opening one by hand, the lifecycle actions
//! (through the one guard every caller shares: `model::Action::allowed_from`, enforced inside the
//! UPDATE), and the read side of `csirt incidents list|show`.

use super::rows::{INCIDENT_COLUMNS, IncidentRow, TimelineRow};
use super::sql::{NewEventRow, NewIncidentRow, Sql};
use super::{Backend, Store, StoreError, is_unique_violation};
use crate::model::{
    Action, Actor, Event, Fields, Incident, NewIncident, Severity, Status, TimelineEntry, now,
};
use chrono::{DateTime, Utc};
use sqlx::QueryBuilder;

/// A piece of evidence to store with an incident.
#[derive(Debug, Clone)]
pub struct NewEvent {
    pub kind: &'static str,
    pub rule: String,
    pub source: String,
    pub locator: String,
    pub observed_at: DateTime<Utc>,
    pub text: String,
    pub fields: Fields,
}

/// Which incidents `list` returns.
#[derive(Debug, Clone, Default)]
pub struct IncidentFilter {
    /// `None` means every status but closed.
    pub status: Option<StatusFilter>,
    pub severity: Option<Severity>,
    pub playbook: Option<String>,
    /// Only incidents seen at or after this time.
    pub seen_since: Option<DateTime<Utc>>,
    pub limit: u32,
}

/// A `--status` choice.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum StatusFilter {
    Only(Status),
    All,
}

impl Store {
    /// Opens an incident with its first evidence; the timeline records `actor` opening it.
    /// (Responders' and tests' way in; the daemon opens incidents through `ingest`.)
    #[tracing::instrument(skip_all, fields(playbook = %new.playbook))]
    pub async fn open_incident(
        &self,
        new: &NewIncident,
        events: &[NewEvent],
        actor: &Actor,
    ) -> Result<i64, StoreError> {
        let at = now();
        transaction!(self, tx => {
            let row = NewIncidentRow {
                playbook: &new.playbook,
                category: &new.category,
                title: &new.title,
                severity: new.severity.as_str(),
                dedupe_key: &new.dedupe_key,
                fields: &new.fields,
                event_count: new.event_count,
                first_seen: new.first_seen,
                last_seen: new.last_seen,
                opened_at: at,
                origin: events
                    .first()
                    .map(|e| super::sql::origin_of(e.kind, &e.source)),
            };
            let id = match tx.insert_incident(&row).await {
                Ok(id) => id,
                Err(e) if is_unique_violation(&e) => {
                    return Err(StoreError::Conflict(format!(
                        "an incident of playbook `{}` with key `{}` is already open",
                        new.playbook, new.dedupe_key
                    )))
                }
                Err(e) => return Err(e.into()),
            };
            for event in events {
                let event = NewEventRow {
                    playbook: &new.playbook,
                    rule: &event.rule,
                    dedupe_key: &new.dedupe_key,
                    kind: event.kind,
                    source: &event.source,
                    locator: &event.locator,
                    observed_at: event.observed_at,
                    text: &event.text,
                    fields: &event.fields,
                    weight: 1,
                };
                tx.insert_event(Some(id), &event, at).await?;
            }
            tx.insert_timeline(id, at, actor.as_str(), "opened", &new.title).await?;
            Ok(id)
        })
    }

    /// Applies a responder's action to incident `id` and records it in the timeline, atomically.
    #[tracing::instrument(skip_all, fields(incident = id, action = action.name()))]
    pub async fn apply(
        &self,
        id: i64,
        action: &Action,
        actor: &Actor,
    ) -> Result<Incident, StoreError> {
        let at = now();
        transaction!(self, tx => {
            if matches!(action, Action::Reopen) {
                // Checked first: on PostgreSQL a unique violation aborts the transaction, and the
                // responder needs the other incident's number to act on.
                let other: Option<i64> = sqlx::query_scalar(
                    "SELECT o.id FROM incidents o JOIN incidents c ON o.playbook = c.playbook \
                     AND o.dedupe_key = c.dedupe_key WHERE c.id = $1 AND o.id <> c.id AND o.status <> 'closed'",
                )
                .bind(id)
                .fetch_optional(&mut *tx)
                .await?;
                if let Some(other) = other {
                    return Err(StoreError::Conflict(format!(
                        "cannot reopen incident #{id}: incident #{other} of the same playbook and key is open; \
                         add a note there instead"
                    )));
                }
            }
            let updated = match tx.transition(id, action, at).await {
                Ok(n) => n,
                // The daemon opened a new incident with this key between our check and the update.
                Err(e) if is_unique_violation(&e) => {
                    return Err(StoreError::Conflict(format!(
                        "cannot reopen incident #{id}: an incident of the same playbook and key was just opened"
                    )));
                }
                Err(e) => return Err(e.into()),
            };
            if updated == 0 {
                let status = tx.status_of(id).await?;
                return Err(refused(id, status, action));
            }
            tx.insert_timeline(id, at, actor.as_str(), action.name(), &action.detail()).await?;
            tx.incident(id).await
        })
    }

    /// The incident with this id.
    pub async fn incident(&self, id: i64) -> Result<Incident, StoreError> {
        reader!(self, conn => conn.incident(id).await)
    }

    /// Incidents matching `filter`, newest first.
    pub async fn list(&self, filter: &IncidentFilter) -> Result<Vec<Incident>, StoreError> {
        let rows: Vec<IncidentRow> = read!(self, pool => {
            let mut q = QueryBuilder::new(format!("SELECT {INCIDENT_COLUMNS} FROM incidents WHERE "));
            // `status <> 'closed'` is spelled exactly as the partial index `incidents_active` is,
            // so the default view reads that index backwards and stops at the limit.
            match filter.status {
                None => q.push("status <> 'closed'"),
                Some(StatusFilter::All) => q.push("1 = 1"),
                Some(StatusFilter::Only(s)) => q.push("status = ").push_bind(s.as_str()),
            };
            if let Some(severity) = filter.severity {
                q.push(" AND severity = ").push_bind(severity.as_str());
            }
            if let Some(playbook) = &filter.playbook {
                q.push(" AND playbook = ").push_bind(playbook.as_str());
            }
            if let Some(since) = filter.seen_since {
                q.push(" AND last_seen >= ").push_bind(since);
            }
            q.push(" ORDER BY id DESC LIMIT ").push_bind(i64::from(filter.limit));
            q.build_query_as().fetch_all(pool).await?
        });
        rows.into_iter().map(Incident::try_from).collect()
    }

    /// The incident's stored evidence, oldest first.
    pub async fn events(&self, id: i64) -> Result<Vec<Event>, StoreError> {
        reader!(self, conn => Ok(conn.events(id).await?))
    }

    /// The incident's timeline, oldest first.
    pub async fn timeline(&self, id: i64) -> Result<Vec<TimelineEntry>, StoreError> {
        let rows: Vec<TimelineRow> = read!(self, pool => sqlx::query_as(
            "SELECT at, actor, action, detail FROM timeline WHERE incident_id = $1 ORDER BY id",
        )
        .bind(id)
        .fetch_all(pool)
        .await?);
        Ok(rows.into_iter().map(TimelineEntry::from).collect())
    }
}

/// Why `action` could not be applied to incident `id` in `status`, with what to do instead.
pub(super) fn refused(id: i64, status: Status, action: &Action) -> StoreError {
    let hint = match (status, action) {
        (Status::Closed, _) => format!(" (reopen it first: csirt incidents reopen {id})"),
        (Status::Acknowledged, Action::Acknowledge) => " already".to_string(),
        _ => String::new(),
    };
    StoreError::InvalidTransition {
        id,
        status,
        verb: action.verb(),
        hint,
    }
}
