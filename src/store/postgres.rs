//! Opening the PostgreSQL store: one pool shared by readers and writers (PostgreSQL has row locks,
//! so writers do not need to be serialised as on SQLite), with a short acquire timeout so that a
//! database that went away is reported in seconds, not after a hang.

use super::{Role, StoreError};
use sqlx::postgres::{PgConnectOptions, PgPool, PgPoolOptions};
use std::str::FromStr;
use std::time::Duration;

pub(super) async fn open(url: &str, redacted: &str, role: Role) -> Result<PgPool, StoreError> {
    let open_err = |source| StoreError::Open {
        url: redacted.to_string(),
        source,
    };
    let options = PgConnectOptions::from_str(url)
        .map_err(open_err)?
        .application_name("csirt");
    let connections = match role {
        Role::Cli | Role::Migrate => 2,
        Role::Daemon => 8,
    };
    PgPoolOptions::new()
        .max_connections(connections)
        .acquire_timeout(Duration::from_secs(5))
        .connect_with(options)
        .await
        .map_err(open_err)
}
