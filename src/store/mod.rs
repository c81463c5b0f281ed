//! The store: every SQL statement of csirt lives under this module, behind one `Store` type.
//!
//! SQLite (the embedded default) and PostgreSQL (several daemons on one database) run the same
//! statements: sqlx binds `$1` on both, and each method body is written once and compiled for
//! each backend by the `read!`/`reader!`/`transaction!` macros, so the two cannot drift apart.
//! A statement that several operations share is written once, in `sql` (the `Sql` trait on
//! both backends' connections); the decisions around it are the engine's plain functions.
//! Where the SQL must differ (locking, catalog queries) the code says so. Values from logs and
//! mail only ever reach SQL as bound parameters. Writes are transactions: nothing is
//! half-written.
//!
//! One module per concern: `incidents` (lifecycle and reads), `ingest` (the batch transaction),
//! `checkpoints` (where each source stands), `mail` (intake mail, replies, reports),
//! `outbox` (claims and delivery state), `escalation` (what falls due, schedules), `daemons`
//! (heartbeats and errors), `report` (what the evaluation report reads), `space` (the disk
//! under the store: free room, disk-full errors, the reserve); `rows` and `sql` are
//! the shared row types and statements; `bulk` the ingest's statements over a whole batch's
//! rows (they differ by backend).

use crate::model::Status;
use sqlx::{PgPool, SqlitePool};
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
    #[error(
        "cannot give {} to {owner}, the owner of its directory: {source}; run this command as \
         that user instead (e.g. `sudo -u {} csirt db migrate`), or the daemon running as that \
         user cannot open a store root created",
        path.display(),
        owner.split(':').next().unwrap_or(owner.as_str())
    )]
    Chown {
        path: PathBuf,
        owner: String,
        #[source]
        source: std::io::Error,
    },
    #[error("there is no SQLite store at {}: run `csirt db migrate` (or start the daemon) to create it", path.display())]
    Missing { path: PathBuf },
    #[error(
        "cannot open the SQLite store {}: {denial}; the store needs read and write permission on \
         its file and its directory: run csirt as the store's owner (the package's user `csirt`; \
         `user=csirt` in Postfix's master.cf for `csirt intake`) or give this user that access",
        file.display()
    )]
    Denied {
        file: PathBuf,
        denial: crate::access::Denial,
    },
    #[error(
        "{} is writable by other users (mode {mode:o}): anyone on this machine could forge or erase incidents; \
         run `chmod o-w {}` (csirt creates it 0660 in a 0770 directory)",
        path.display(), path.display()
    )]
    WritableByOthers { path: PathBuf, mode: u32 },
    #[error(
        "{} is readable by other users (mode {mode:o}): anyone on this machine could read the incidents, \
         the reported mail and the evidence; run `chmod o-rwx {}` (csirt creates it 0660 in a 0770 directory)",
        path.display(), path.display()
    )]
    ReadableByOthers { path: PathBuf, mode: u32 },
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
    #[error(
        "cannot make the key of the mail reply codes: the operating system's random source failed: {0}"
    )]
    Random(String),
    #[error("the store holds a value this csirt does not understand: {0}")]
    Corrupt(String),
    #[error("store error: {0}")]
    Db(#[from] sqlx::Error),
}

impl StoreError {
    /// True when the store could not be reached at all (the MTA should retry later).
    pub fn is_unavailable(&self) -> bool {
        match self {
            // A denied permission is fixed by the sysadmin, not by the mail: the MTA keeps it.
            StoreError::Open { .. } | StoreError::Missing { .. } | StoreError::Denied { .. } => {
                true
            }
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
    /// The threshold windows of below-threshold keys (`engine::window`), held by the ingest
    /// transaction from its start to its end: two ingests of one process (the log writer and a
    /// mail's) take it in turn, before their transaction, so they cannot deadlock on it.
    windows: tokio::sync::Mutex<crate::engine::Windows>,
}

/// How many threshold windows the store keeps in memory unless the config says otherwise.
pub const WINDOW_KEYS: usize = 1_000_000;

/// Runs `$body` with `$pool` bound to the backend's read pool.
macro_rules! read {
    ($self:ident, $pool:ident => $body:expr) => {
        match &$self.backend {
            Backend::Sqlite { read: $pool, .. } => $body,
            Backend::Postgres($pool) => $body,
        }
    };
}

/// Runs `$body` with `$conn` bound to a connection of the backend's read pool, so that the
/// statements of `sql::Sql` serve reads as well as transactions.
macro_rules! reader {
    ($self:ident, $conn:ident => $body:expr) => {
        match &$self.backend {
            Backend::Sqlite { read, .. } => {
                let mut $conn = read.acquire().await?;
                $body
            }
            Backend::Postgres(pool) => {
                let mut $conn = pool.acquire().await?;
                $body
            }
        }
    };
}

/// The SQLite half of `transaction!` and `transaction_or_rollback!`: `$body` inside a BEGIN
/// IMMEDIATE transaction on the one writer connection, committed when the body succeeds and
/// `$commit` holds, else rolled back. A failed body's transaction is dropped, which queues its
/// ROLLBACK; the connection is then checked (`sqlite::discard_if_in_transaction`): SQLite rolls
/// a transaction back by itself on some errors (SQLITE_FULL: a full disk), sqlx's ROLLBACK then
/// fails and sqlx goes on counting a transaction that is gone, refusing every later BEGIN on the
/// writer ("attempted to call begin_with at non-zero transaction depth") for the life of the
/// process: a daemon whose disk filled up could never write again, even with room back.
macro_rules! sqlite_transaction {
    ($write:ident, $commit:expr, $tx:ident => $body:expr) => {{
        let mut conn = $write.acquire().await?;
        let result = async {
            let mut $tx = sqlx::Connection::begin_with(&mut *conn, "BEGIN IMMEDIATE").await?;
            let result = async { $body }.await;
            if result.is_ok() {
                if $commit {
                    $tx.commit().await?;
                } else {
                    $tx.rollback().await?;
                }
            }
            result
        }
        .await;
        if result.is_err() {
            $crate::store::sqlite::discard_if_in_transaction(&mut conn).await;
        }
        result
    }};
}

/// Runs `$body` (which yields a `Result`) inside a write transaction bound to `$tx`, committed
/// only when the body succeeds. SQLite transactions begin IMMEDIATE: a deferred one that reads
/// first cannot upgrade to a writer while another process writes, and fails at once with
/// SQLITE_BUSY instead of waiting for `busy_timeout`.
macro_rules! transaction {
    ($self:ident, $tx:ident => $body:expr) => {
        match &$self.backend {
            Backend::Sqlite { write, .. } => sqlite_transaction!(write, true, $tx => $body),
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

/// Like `transaction!`, but commits only when `$commit` is true: a dry run executes the very
/// statements of a real one, counts what they touch, and rolls back.
macro_rules! transaction_or_rollback {
    ($self:ident, $commit:expr, $tx:ident => $body:expr) => {
        match &$self.backend {
            Backend::Sqlite { write, .. } => sqlite_transaction!(write, $commit, $tx => $body),
            Backend::Postgres(pool) => {
                let mut $tx = pool.begin().await?;
                let result = async { $body }.await;
                if result.is_ok() && $commit {
                    $tx.commit().await?;
                } else {
                    $tx.rollback().await?;
                }
                result
            }
        }
    };
}

mod bulk;
mod checkpoints;
mod daemons;
mod escalation;
mod incidents;
mod ingest;
pub mod mail;
pub mod outbox;
pub mod pii;
mod postgres;
pub mod prune;
pub mod report;
mod rows;
pub mod space;
mod sql;
mod sqlite;
pub mod status;
pub mod statutory;

pub use checkpoints::{JournalPosition, LogPosition};
pub use daemons::{DaemonError, Heartbeat, INGEST_STOPPED, Overview};
pub use escalation::EscalatorPass;
pub use incidents::{IncidentFilter, NewEvent, StatusFilter};

/// The schema the store has against the one this binary carries.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize)]
pub struct SchemaVersion {
    pub applied: i64,
    pub expected: i64,
}

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
            windows: tokio::sync::Mutex::new(crate::engine::Windows::new(WINDOW_KEYS)),
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
