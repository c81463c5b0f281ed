//! The store: every SQL statement of csirt lives under this module, behind one `Store` type.
//!
//! SQLite (the embedded default) and PostgreSQL (several daemons on one database) run the same
//! statements: sqlx binds `$1` on both, and each method body is written once and compiled for
//! each backend by the `read!`/`write!` macros, so the two cannot drift apart. Where the SQL
//! must differ (locking, catalog queries) the method says so. Values from logs and mail only
//! ever reach SQL as bound parameters. Writes are transactions: nothing is half-written.

mod postgres;
mod sqlite;

use crate::model::{
    Action, Actor, Event, Fields, Incident, NewIncident, Resolution, Severity, Status,
    TimelineEntry, now,
};
use chrono::{DateTime, Utc};
use sqlx::types::Json;
use sqlx::{FromRow, PgPool, QueryBuilder, SqlitePool};
use std::path::PathBuf;

/// Who is opening the store: the CLI needs a couple of connections, the daemon a few more.
/// Only the daemon and `csirt db migrate` create a SQLite file that is not there: a responder's
/// mistyped `--database` path must be an error, not a new empty store.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Role {
    Cli,
    Migrate,
    Daemon,
}

/// What went wrong in the store, with what the reader needs to act.
#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    #[error("cannot open the store at {url}: {source}")]
    Open {
        url: String,
        #[source]
        source: sqlx::Error,
    },
    #[error("cannot create the SQLite database file {}: {source}", path.display())]
    Prepare {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("there is no SQLite store at {}: run `csirt db migrate` (or start the daemon) to create it", path.display())]
    Missing { path: PathBuf },
    #[error(
        "{} is writable by other users (mode {mode:o}): anyone on this machine could forge or erase incidents; \
         run `chmod o-w {}` (csirt creates it 0660 in a 0770 directory)",
        path.display(), path.display()
    )]
    WritableByOthers { path: PathBuf, mode: u32 },
    #[error("migrating the store failed: {0}")]
    Migrate(#[from] sqlx::migrate::MigrateError),
    #[error(
        "the store's schema is at version {applied} but this csirt needs {expected}: run `csirt db migrate`"
    )]
    SchemaBehind { applied: i64, expected: i64 },
    #[error(
        "the store's schema is at version {applied}, newer than this csirt knows ({expected}): upgrade csirt"
    )]
    SchemaAhead { applied: i64, expected: i64 },
    #[error("incident #{0} not found")]
    NotFound(i64),
    #[error("cannot {verb} incident #{id}: it is {status}{hint}")]
    InvalidTransition {
        id: i64,
        status: Status,
        verb: &'static str,
        hint: String,
    },
    #[error("{0}")]
    Conflict(String),
    #[error("the store holds a value this csirt does not understand: {0}")]
    Corrupt(String),
    #[error("store error: {0}")]
    Db(#[from] sqlx::Error),
}

impl StoreError {
    /// True when the store could not be reached at all (the MTA should retry later).
    pub fn is_unavailable(&self) -> bool {
        match self {
            StoreError::Open { .. } | StoreError::Missing { .. } => true,
            StoreError::Db(e) => matches!(
                e,
                sqlx::Error::Io(_) | sqlx::Error::PoolTimedOut | sqlx::Error::PoolClosed
            ),
            _ => false,
        }
    }
}

static SQLITE_MIGRATIONS: sqlx::migrate::Migrator = sqlx::migrate!("./migrations/sqlite");
static POSTGRES_MIGRATIONS: sqlx::migrate::Migrator = sqlx::migrate!("./migrations/postgres");

enum Backend {
    Sqlite { read: SqlitePool, write: SqlitePool },
    Postgres(PgPool),
}

/// The incident store.
pub struct Store {
    backend: Backend,
    /// The URL with any password hidden, for messages.
    url: String,
}

/// Runs `$body` with `$pool` bound to the backend's read pool.
macro_rules! read {
    ($self:ident, $pool:ident => $body:expr) => {
        match &$self.backend {
            Backend::Sqlite { read: $pool, .. } => $body,
            Backend::Postgres($pool) => $body,
        }
    };
}

/// Runs `$body` (which yields a `Result`) inside a write transaction bound to `$tx`, committed
/// only when the body succeeds. SQLite transactions begin IMMEDIATE: a deferred one that reads
/// first cannot upgrade to a writer while another process writes, and fails at once with
/// SQLITE_BUSY instead of waiting for `busy_timeout`.
macro_rules! write {
    ($self:ident, $tx:ident => $body:expr) => {
        match &$self.backend {
            Backend::Sqlite { write, .. } => {
                let mut $tx = write.begin_with("BEGIN IMMEDIATE").await?;
                let result = async { $body }.await;
                if result.is_ok() {
                    $tx.commit().await?;
                }
                result
            }
            Backend::Postgres(pool) => {
                let mut $tx = pool.begin().await?;
                let result = async { $body }.await;
                if result.is_ok() {
                    $tx.commit().await?;
                }
                result
            }
        }
    };
}

mod ingest;
pub mod mail;
pub use ingest::LogPosition;
pub mod outbox;

const INCIDENT_COLUMNS: &str = "id, title, playbook, category, severity, status, resolution, dedupe_key, fields, \
     event_count, first_seen, last_seen, opened_at, acknowledged_at, closed_at, assignee, escalation_level";

#[derive(FromRow)]
struct IncidentRow {
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

#[derive(FromRow)]
struct TimelineRow {
    at: DateTime<Utc>,
    actor: String,
    action: String,
    detail: String,
}

#[derive(FromRow)]
struct EventRow {
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

/// A daemon's last sign of life.
#[derive(Debug, Clone, PartialEq, FromRow, serde::Serialize)]
pub struct Heartbeat {
    pub node: String,
    pub pid: i64,
    pub version: String,
    pub started_at: DateTime<Utc>,
    pub beat_at: DateTime<Utc>,
    pub summary: String,
}

/// A refusal or failure recorded for `csirt status`.
#[derive(Debug, Clone, PartialEq, FromRow, serde::Serialize)]
pub struct DaemonError {
    pub at: DateTime<Utc>,
    pub node: String,
    pub component: String,
    pub message: String,
}

/// The numbers `csirt status` shows.
#[derive(Debug, Clone, Default, PartialEq, serde::Serialize)]
pub struct Overview {
    /// Not-closed incidents per severity, most severe first.
    pub open_by_severity: Vec<(Severity, i64)>,
    pub outbox_pending: i64,
    pub outbox_failed: i64,
    pub quarantined_mails: i64,
}

/// The schema the store has against the one this binary carries.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize)]
pub struct SchemaVersion {
    pub applied: i64,
    pub expected: i64,
}

/// How many errors the store keeps for `csirt status`; older ones are dropped.
const KEPT_ERRORS: i64 = 1_000;

fn is_unique_violation(e: &sqlx::Error) -> bool {
    matches!(e, sqlx::Error::Database(d) if d.is_unique_violation())
}

impl Store {
    /// Opens the store at `url` (`sqlite://PATH` or `postgres://…`).
    #[tracing::instrument(skip_all, fields(role = ?role))]
    pub async fn open(url: &crate::config::StoreUrl, role: Role) -> Result<Store, StoreError> {
        let redacted = url.to_string();
        let raw = url.expose();
        let backend = if raw.starts_with("sqlite:") {
            let (read, write) = sqlite::open(raw, &redacted, role).await?;
            Backend::Sqlite { read, write }
        } else {
            Backend::Postgres(postgres::open(raw, &redacted, role).await?)
        };
        Ok(Store {
            backend,
            url: redacted,
        })
    }

    /// `sqlite` or `postgres`.
    pub fn backend_name(&self) -> &'static str {
        match self.backend {
            Backend::Sqlite { .. } => "sqlite",
            Backend::Postgres(_) => "postgres",
        }
    }

    /// The store's URL with any password hidden.
    pub fn url(&self) -> &str {
        &self.url
    }

    fn migrator(&self) -> &'static sqlx::migrate::Migrator {
        match self.backend {
            Backend::Sqlite { .. } => &SQLITE_MIGRATIONS,
            Backend::Postgres(_) => &POSTGRES_MIGRATIONS,
        }
    }

    /// Applies the migrations this binary carries that the store lacks.
    pub async fn migrate(&self) -> Result<SchemaVersion, StoreError> {
        match &self.backend {
            Backend::Sqlite { write, .. } => SQLITE_MIGRATIONS.run(write).await?,
            Backend::Postgres(pool) => POSTGRES_MIGRATIONS.run(pool).await?,
        }
        self.schema_version().await
    }

    /// The applied schema version (0 for an empty store) and the one this binary expects.
    pub async fn schema_version(&self) -> Result<SchemaVersion, StoreError> {
        let expected = self.migrator().iter().map(|m| m.version).max().unwrap_or(0);
        // The migrations table exists only once `migrate` has run; the catalogs differ.
        let exists: bool = match &self.backend {
            Backend::Sqlite { read, .. } => sqlx::query_scalar(
                "SELECT COUNT(*) > 0 FROM sqlite_master WHERE type = 'table' AND name = '_sqlx_migrations'",
            )
            .fetch_one(read)
            .await?,
            Backend::Postgres(pool) => sqlx::query_scalar("SELECT to_regclass('_sqlx_migrations') IS NOT NULL")
                .fetch_one(pool)
                .await?,
        };
        let applied: Option<i64> = if exists {
            read!(self, pool => sqlx::query_scalar("SELECT MAX(version) FROM _sqlx_migrations WHERE success")
                .fetch_one(pool)
                .await?)
        } else {
            None
        };
        Ok(SchemaVersion {
            applied: applied.unwrap_or(0),
            expected,
        })
    }

    /// Fails unless the schema is exactly the one this binary expects.
    pub async fn ensure_schema_current(&self) -> Result<(), StoreError> {
        let SchemaVersion { applied, expected } = self.schema_version().await?;
        match applied.cmp(&expected) {
            std::cmp::Ordering::Less => Err(StoreError::SchemaBehind { applied, expected }),
            std::cmp::Ordering::Greater => Err(StoreError::SchemaAhead { applied, expected }),
            std::cmp::Ordering::Equal => Ok(()),
        }
    }

    /// Opens an incident with its first evidence; the timeline records `actor` opening it.
    #[tracing::instrument(skip_all, fields(playbook = %new.playbook))]
    pub async fn open_incident(
        &self,
        new: &NewIncident,
        events: &[NewEvent],
        actor: &Actor,
    ) -> Result<i64, StoreError> {
        let at = now();
        write!(self, tx => {
            let inserted = sqlx::query_scalar::<_, i64>(
                "INSERT INTO incidents (playbook, category, title, severity, status, dedupe_key, fields, \
                 event_count, first_seen, last_seen, opened_at) \
                 VALUES ($1, $2, $3, $4, 'open', $5, $6, $7, $8, $9, $10) RETURNING id",
            )
            .bind(&new.playbook)
            .bind(&new.category)
            .bind(&new.title)
            .bind(new.severity.as_str())
            .bind(&new.dedupe_key)
            .bind(Json(&new.fields))
            .bind(new.event_count)
            .bind(new.first_seen)
            .bind(new.last_seen)
            .bind(at)
            .fetch_one(&mut *tx)
            .await;
            let id = match inserted {
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
                sqlx::query(
                    "INSERT INTO events (incident_id, playbook, rule, dedupe_key, kind, source, locator, \
                     observed_at, received_at, text, fields) VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11)",
                )
                .bind(id)
                .bind(&new.playbook)
                .bind(&event.rule)
                .bind(&new.dedupe_key)
                .bind(event.kind)
                .bind(&event.source)
                .bind(&event.locator)
                .bind(event.observed_at)
                .bind(at)
                .bind(&event.text)
                .bind(Json(&event.fields))
                .execute(&mut *tx)
                .await?;
            }
            sqlx::query("INSERT INTO timeline (incident_id, at, actor, action, detail) VALUES ($1, $2, $3, 'opened', $4)")
                .bind(id)
                .bind(at)
                .bind(actor.as_str())
                .bind(&new.title)
                .execute(&mut *tx)
                .await?;
            Ok(id)
        })
    }

    /// Applies a responder's action to incident `id` and records it in the timeline, atomically.
    /// The status check is part of the UPDATE, so two responders racing cannot both succeed.
    #[tracing::instrument(skip_all, fields(incident = id, action = action.name()))]
    pub async fn apply(
        &self,
        id: i64,
        action: &Action,
        actor: &Actor,
    ) -> Result<Incident, StoreError> {
        let at = now();
        let allowed = action
            .allowed_from()
            .iter()
            .map(|s| format!("'{}'", s.as_str()))
            .collect::<Vec<_>>()
            .join(", ");
        // Statuses come from our own enum, never from input: safe to format into the statement.
        let sql = match action {
            Action::Acknowledge => format!(
                "UPDATE incidents SET status = 'acknowledged', acknowledged_at = $2 WHERE id = $1 AND status IN ({allowed})"
            ),
            Action::Assign(_) => format!(
                "UPDATE incidents SET assignee = $2 WHERE id = $1 AND status IN ({allowed})"
            ),
            // A no-op UPDATE rather than a SELECT: it checks existence and status, and on
            // PostgreSQL it locks the row until the timeline entry is written.
            Action::Note(_) => {
                format!(
                    "UPDATE incidents SET last_seen = last_seen WHERE id = $1 AND status IN ({allowed})"
                )
            }
            Action::Close { .. } => format!(
                "UPDATE incidents SET status = 'closed', closed_at = $2, resolution = $3 WHERE id = $1 AND status IN ({allowed})"
            ),
            Action::Reopen => format!(
                "UPDATE incidents SET status = 'open', closed_at = NULL, resolution = NULL, acknowledged_at = NULL \
                 WHERE id = $1 AND status IN ({allowed})"
            ),
        };
        write!(self, tx => {
            let query = sqlx::query(&sql).bind(id);
            let query = match action {
                Action::Acknowledge => query.bind(at),
                Action::Assign(user) => query.bind(user.as_str()),
                Action::Close { resolution, .. } => query.bind(at).bind(resolution.as_str()),
                Action::Note(_) | Action::Reopen => query,
            };
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
            let updated = match query.execute(&mut *tx).await {
                Ok(done) => done.rows_affected(),
                // The daemon opened a new incident with this key between our check and the update.
                Err(e) if is_unique_violation(&e) => {
                    return Err(StoreError::Conflict(format!(
                        "cannot reopen incident #{id}: an incident of the same playbook and key was just opened"
                    )));
                }
                Err(e) => return Err(e.into()),
            };
            if updated == 0 {
                let status: Option<String> = sqlx::query_scalar("SELECT status FROM incidents WHERE id = $1")
                    .bind(id)
                    .fetch_optional(&mut *tx)
                    .await?;
                let status: Status = status
                    .ok_or(StoreError::NotFound(id))?
                    .parse()
                    .map_err(|e| StoreError::Corrupt(format!("incident #{id}: {e}")))?;
                let hint = match (status, action) {
                    (Status::Closed, _) => format!(" (reopen it first: csirt incidents reopen {id})"),
                    (Status::Acknowledged, Action::Acknowledge) => " already".to_string(),
                    _ => String::new(),
                };
                return Err(StoreError::InvalidTransition { id, status, verb: action.verb(), hint });
            }
            sqlx::query("INSERT INTO timeline (incident_id, at, actor, action, detail) VALUES ($1, $2, $3, $4, $5)")
                .bind(id)
                .bind(at)
                .bind(actor.as_str())
                .bind(action.name())
                .bind(action.detail())
                .execute(&mut *tx)
                .await?;
            let row: IncidentRow = sqlx::query_as(&format!("SELECT {INCIDENT_COLUMNS} FROM incidents WHERE id = $1"))
                .bind(id)
                .fetch_one(&mut *tx)
                .await?;
            Incident::try_from(row)
        })
    }

    /// The incident with this id.
    pub async fn incident(&self, id: i64) -> Result<Incident, StoreError> {
        let sql = format!("SELECT {INCIDENT_COLUMNS} FROM incidents WHERE id = $1");
        let row: Option<IncidentRow> =
            read!(self, pool => sqlx::query_as(&sql).bind(id).fetch_optional(pool).await?);
        row.ok_or(StoreError::NotFound(id))?.try_into()
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
        let rows: Vec<EventRow> = read!(self, pool => sqlx::query_as(
            "SELECT kind, rule, source, locator, observed_at, text, fields FROM events WHERE incident_id = $1 ORDER BY id",
        )
        .bind(id)
        .fetch_all(pool)
        .await?);
        Ok(rows.into_iter().map(Event::from).collect())
    }

    /// The incident's timeline, oldest first.
    pub async fn timeline(&self, id: i64) -> Result<Vec<TimelineEntry>, StoreError> {
        let rows: Vec<TimelineRow> = read!(self, pool => sqlx::query_as(
            "SELECT at, actor, action, detail FROM timeline WHERE incident_id = $1 ORDER BY id",
        )
        .bind(id)
        .fetch_all(pool)
        .await?);
        Ok(rows
            .into_iter()
            .map(|r| TimelineEntry {
                at: r.at,
                actor: r.actor,
                action: r.action,
                detail: r.detail,
            })
            .collect())
    }

    /// Records that the daemon on `node` is alive.
    pub async fn beat(&self, beat: &Heartbeat) -> Result<(), StoreError> {
        write!(self, tx => {
            sqlx::query(
                "INSERT INTO daemon_heartbeats (node, pid, version, started_at, beat_at, summary) \
                 VALUES ($1, $2, $3, $4, $5, $6) ON CONFLICT (node) DO UPDATE SET pid = excluded.pid, \
                 version = excluded.version, started_at = excluded.started_at, beat_at = excluded.beat_at, \
                 summary = excluded.summary",
            )
            .bind(&beat.node)
            .bind(beat.pid)
            .bind(&beat.version)
            .bind(beat.started_at)
            .bind(beat.beat_at)
            .bind(&beat.summary)
            .execute(&mut *tx)
            .await?;
            Ok(())
        })
    }

    /// Every daemon's last heartbeat, most recent first.
    pub async fn heartbeats(&self) -> Result<Vec<Heartbeat>, StoreError> {
        Ok(read!(self, pool => sqlx::query_as(
            "SELECT node, pid, version, started_at, beat_at, summary FROM daemon_heartbeats ORDER BY beat_at DESC",
        )
        .fetch_all(pool)
        .await?))
    }

    /// Records a refusal or failure for `csirt status`, keeping the most recent ones only.
    pub async fn record_error(
        &self,
        node: &str,
        component: &str,
        message: &str,
    ) -> Result<(), StoreError> {
        let at = now();
        write!(self, tx => {
            sqlx::query("INSERT INTO daemon_errors (at, node, component, message) VALUES ($1, $2, $3, $4)")
                .bind(at)
                .bind(node)
                .bind(component)
                .bind(message)
                .execute(&mut *tx)
                .await?;
            sqlx::query("DELETE FROM daemon_errors WHERE id <= (SELECT MAX(id) FROM daemon_errors) - $1")
                .bind(KEPT_ERRORS)
                .execute(&mut *tx)
                .await?;
            Ok(())
        })
    }

    /// The most recent recorded errors, newest first.
    pub async fn recent_errors(&self, limit: i64) -> Result<Vec<DaemonError>, StoreError> {
        Ok(read!(self, pool => sqlx::query_as(
            "SELECT at, node, component, message FROM daemon_errors ORDER BY id DESC LIMIT $1",
        )
        .bind(limit)
        .fetch_all(pool)
        .await?))
    }

    /// Counts for `csirt status`.
    pub async fn overview(&self) -> Result<Overview, StoreError> {
        type Counts = Vec<(String, i64)>;
        let (by_severity, outbox, quarantined): (Counts, Counts, i64) = read!(self, pool => (
            sqlx::query_as("SELECT severity, COUNT(*) FROM incidents WHERE status <> 'closed' GROUP BY severity")
                .fetch_all(pool)
                .await?,
            sqlx::query_as("SELECT status, COUNT(*) FROM outbox WHERE status <> 'sent' GROUP BY status")
                .fetch_all(pool)
                .await?,
            sqlx::query_scalar("SELECT COUNT(*) FROM mails WHERE disposition = 'quarantined'")
                .fetch_one(pool)
                .await?,
        ));
        let count_of = |rows: &[(String, i64)], key: &str| {
            rows.iter().find(|(k, _)| k == key).map_or(0, |(_, n)| *n)
        };
        Ok(Overview {
            open_by_severity: Severity::ALL
                .iter()
                .map(|s| (*s, count_of(&by_severity, s.as_str())))
                .collect(),
            outbox_pending: count_of(&outbox, "pending"),
            outbox_failed: count_of(&outbox, "failed"),
            quarantined_mails: quarantined,
        })
    }

    /// Closes the pools, waiting for connections to finish (the daemon's clean shutdown).
    pub async fn close(&self) {
        match &self.backend {
            Backend::Sqlite { read, write } => {
                read.close().await;
                write.close().await;
            }
            Backend::Postgres(pool) => pool.close().await,
        }
    }
}
