//! What the evaluation report (`crate::report`) reads: the incidents opened in a period with
//! their first acknowledgement and how they came in, the escalations fired, the incidents still
//! open at a time. Reads only. The same SQL on both backends; everything the backends would
//! spell differently (JSON paths, date arithmetic, percentiles) is left to the report, in Rust,
//! over the rows returned here.

use super::{Backend, Store, StoreError};
use crate::model::{Resolution, Severity};
use chrono::{DateTime, Utc};
use serde::Deserialize;
use sqlx::FromRow;
use sqlx::types::Json;

/// An incident as the report counts it.
#[derive(Debug, Clone, PartialEq)]
pub struct ReportedIncident {
    pub id: i64,
    pub title: String,
    pub playbook: String,
    pub category: String,
    pub severity: Severity,
    pub resolution: Option<Resolution>,
    pub event_count: i64,
    pub opened_at: DateTime<Utc>,
    pub closed_at: Option<DateTime<Utc>>,
    /// The first acknowledgement: the incident's own time, or (after a reopening cleared it)
    /// the first `acknowledged` entry of its timeline.
    pub first_ack: Option<DateTime<Utc>>,
    /// How the first evidence came: `log`, `journal` or `mail`; None without evidence.
    pub origin: Option<String>,
    /// The fields the report ranks and counts by (text as stored, attacker-written).
    pub ip: Option<String>,
    pub user: Option<String>,
    /// The staff who reported a suspicious mail (the report path's `reporters` list).
    pub reporters: Vec<String>,
    pub from: Option<String>,
}

/// An incident not closed at the report's time.
#[derive(Debug, Clone, PartialEq, FromRow, serde::Serialize)]
pub struct AgedIncident {
    pub id: i64,
    pub title: String,
    pub playbook: String,
    pub severity: String,
    pub opened_at: DateTime<Utc>,
}

/// The few fields the report reads, whatever else an incident's fields hold.
#[derive(Debug, Default, Deserialize)]
struct ReportFields {
    #[serde(default)]
    ip: Option<serde_json::Value>,
    #[serde(default)]
    user: Option<serde_json::Value>,
    #[serde(default)]
    reporters: Option<serde_json::Value>,
    #[serde(default)]
    from: Option<serde_json::Value>,
}

/// A field's value as text: strings as they are, numbers written out, nothing for empty.
fn text_of(value: Option<serde_json::Value>) -> Option<String> {
    match value? {
        serde_json::Value::String(s) if s.trim().is_empty() => None,
        serde_json::Value::String(s) => Some(s),
        serde_json::Value::Null => None,
        other => Some(other.to_string()),
    }
}

#[derive(FromRow)]
struct ReportRow {
    id: i64,
    title: String,
    playbook: String,
    category: String,
    severity: String,
    resolution: Option<String>,
    fields: Json<ReportFields>,
    event_count: i64,
    opened_at: DateTime<Utc>,
    closed_at: Option<DateTime<Utc>>,
    first_ack: Option<DateTime<Utc>>,
    origin: Option<String>,
}

impl TryFrom<ReportRow> for ReportedIncident {
    type Error = StoreError;
    fn try_from(r: ReportRow) -> Result<Self, StoreError> {
        let corrupt =
            |e: crate::model::UnknownValue| StoreError::Corrupt(format!("incident #{}: {e}", r.id));
        let fields = r.fields.0;
        let reporters = text_of(fields.reporters)
            .map(|list| {
                list.split(", ")
                    .map(str::trim)
                    .filter(|s| !s.is_empty())
                    .map(str::to_string)
                    .collect()
            })
            .unwrap_or_default();
        Ok(ReportedIncident {
            id: r.id,
            severity: r.severity.parse().map_err(corrupt)?,
            resolution: r
                .resolution
                .as_deref()
                .map(str::parse)
                .transpose()
                .map_err(corrupt)?,
            title: r.title,
            playbook: r.playbook,
            category: r.category,
            event_count: r.event_count,
            opened_at: r.opened_at,
            closed_at: r.closed_at,
            first_ack: r.first_ack,
            origin: r.origin,
            ip: text_of(fields.ip),
            user: text_of(fields.user),
            reporters,
            from: text_of(fields.from),
        })
    }
}

/// The incidents opened in `[$1, $2)`, through the index `incidents_opened`. The first ack and
/// the first event are one index lookup each per incident (`timeline_incident`,
/// `events_incident`); the timeline is read only for an incident whose own ack time a reopening
/// cleared.
const INCIDENTS_OPENED: &str = "SELECT i.id, i.title, i.playbook, i.category, i.severity, i.resolution, i.fields, \
     i.event_count, i.opened_at, i.closed_at, \
     COALESCE(i.acknowledged_at, (SELECT MIN(t.at) FROM timeline t WHERE t.incident_id = i.id AND t.action = 'acknowledged')) AS first_ack, \
     (SELECT CASE WHEN e.kind = 'mail' THEN 'mail' WHEN e.source LIKE 'journal:%' THEN 'journal' ELSE 'log' END \
      FROM events e WHERE e.incident_id = i.id ORDER BY e.id LIMIT 1) AS origin \
     FROM incidents i WHERE i.opened_at >= $1 AND i.opened_at < $2";

impl Store {
    /// Every incident opened in `[start, end)`.
    pub async fn report_incidents(
        &self,
        start: DateTime<Utc>,
        end: DateTime<Utc>,
    ) -> Result<Vec<ReportedIncident>, StoreError> {
        let rows: Vec<ReportRow> = read!(self, pool => sqlx::query_as(INCIDENTS_OPENED)
            .bind(start)
            .bind(end)
            .fetch_all(pool)
            .await?);
        rows.into_iter().map(ReportedIncident::try_from).collect()
    }

    /// How many escalation levels fired in `[start, end)`, per level: `(level, count)`.
    pub async fn report_escalations(
        &self,
        start: DateTime<Utc>,
        end: DateTime<Utc>,
    ) -> Result<Vec<(i64, i64)>, StoreError> {
        Ok(read!(self, pool => sqlx::query_as(
            "SELECT level, COUNT(*) FROM escalations WHERE fired_at >= $1 AND fired_at < $2 GROUP BY level ORDER BY level",
        )
        .bind(start)
        .bind(end)
        .fetch_all(pool)
        .await?))
    }

    /// The incidents opened before `opened_before` and not closed at `at` (closed later, or not
    /// at all): how many, and the `limit` oldest.
    pub async fn report_open_since(
        &self,
        opened_before: DateTime<Utc>,
        at: DateTime<Utc>,
        limit: i64,
    ) -> Result<(i64, Vec<AgedIncident>), StoreError> {
        const WHERE: &str = "WHERE opened_at < $1 AND (closed_at IS NULL OR closed_at > $2)";
        read!(self, pool => {
            let count: i64 = sqlx::query_scalar(&format!("SELECT COUNT(*) FROM incidents {WHERE}"))
                .bind(opened_before)
                .bind(at)
                .fetch_one(pool)
                .await?;
            let oldest: Vec<AgedIncident> = sqlx::query_as(&format!(
                "SELECT id, title, playbook, severity, opened_at FROM incidents {WHERE} ORDER BY opened_at, id LIMIT $3"
            ))
            .bind(opened_before)
            .bind(at)
            .bind(limit)
            .fetch_all(pool)
            .await?;
            Ok((count, oldest))
        })
    }

    /// When the first incident in the store was opened (None for an empty store): whether a
    /// previous year can be compared with at all.
    pub async fn earliest_incident(&self) -> Result<Option<DateTime<Utc>>, StoreError> {
        // ORDER BY + LIMIT rather than MIN(): SQLite gives MIN() of a TEXT column no declared
        // type, and the index answers both at once.
        Ok(read!(self, pool => sqlx::query_scalar(
            "SELECT opened_at FROM incidents ORDER BY opened_at LIMIT 1",
        )
        .fetch_optional(pool)
        .await?))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn fields_are_read_as_text_whatever_their_json_type() {
        let fields: ReportFields = serde_json::from_str(
            r#"{"ip": "192.0.2.1", "user": 42, "reporters": "a@x.jp, b@x.jp", "from": "", "other": [1]}"#,
        )
        .expect("fields");
        assert_eq!(text_of(fields.ip), Some("192.0.2.1".into()));
        assert_eq!(text_of(fields.user), Some("42".into()));
        assert_eq!(text_of(fields.from), None);
        assert_eq!(text_of(fields.reporters), Some("a@x.jp, b@x.jp".into()));
    }
}
