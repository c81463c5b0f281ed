//! What the evaluation report's statutory deadlines (`crate::report::statutory`) read: the
//! clocks of 個人情報保護法 and 番号法 stored for the incidents opened in a period. Reads only.
//!
//! The clocks are read as stored, never recomputed here: every change of a fact and every
//! recorded report rewrites them through `pii::assess` in its own transaction (`store::pii`),
//! so the report judges the same deadlines the escalator reminded of and `incidents show`
//! listed. The statement is the same on both backends (the times bind as each stores them).

use super::pii::{CLOCK_COLUMNS, ClockRow};
use super::{Backend, Store, StoreError};
use crate::pii::Clock;
use chrono::{DateTime, Utc};
use sqlx::FromRow;

/// A statutory clock of an incident opened in the report's period.
#[derive(Debug, Clone, PartialEq)]
pub struct IncidentClock {
    pub incident: i64,
    /// Attacker-written at some point (a reported mail's subject): renderers escape it.
    pub title: String,
    pub opened_at: DateTime<Utc>,
    pub clock: Clock,
}

#[derive(FromRow)]
struct Row {
    incident_id: i64,
    title: String,
    opened_at: DateTime<Utc>,
    #[sqlx(flatten)]
    clock: ClockRow,
}

impl Store {
    /// The statutory clocks of the incidents opened in `[start, end)`, in order of opening, each
    /// incident's earliest deadline first (as `incidents show` lists them). Personal-information
    /// incidents are few: the join starts from `pii_clocks` and looks each incident up by id.
    pub async fn report_statutory_clocks(
        &self,
        start: DateTime<Utc>,
        end: DateTime<Utc>,
    ) -> Result<Vec<IncidentClock>, StoreError> {
        let columns = CLOCK_COLUMNS
            .split(", ")
            .map(|c| format!("c.{c}"))
            .collect::<Vec<_>>()
            .join(", ");
        let sql = format!(
            "SELECT c.incident_id, i.title, i.opened_at, {columns} \
             FROM pii_clocks c JOIN incidents i ON i.id = c.incident_id \
             WHERE i.opened_at >= $1 AND i.opened_at < $2 \
             ORDER BY i.opened_at, c.incident_id, COALESCE(c.due_at, c.warn_at), c.warn_at, c.duty, c.name"
        );
        let rows: Vec<Row> = read!(self, pool => sqlx::query_as(&sql)
            .bind(start)
            .bind(end)
            .fetch_all(pool)
            .await?);
        rows.into_iter()
            .map(|r| {
                Ok(IncidentClock {
                    incident: r.incident_id,
                    title: r.title,
                    opened_at: r.opened_at,
                    clock: r.clock.into_clock(r.incident_id)?,
                })
            })
            .collect()
    }
}
