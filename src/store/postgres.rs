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
    let mut options = PgConnectOptions::from_str(url)
        .map_err(open_err)?
        .application_name("csirt");
    // A password kept out of the config file (which others may read) comes as the systemd
    // credential `store-password`; one written in the URL wins, as the sysadmin wrote it there.
    let in_url = crate::config::StoreUrl::parse(url).is_ok_and(|u| u.has_password());
    if !in_url
        && let Some(password) =
            crate::config::credential("store-password").map_err(|e| StoreError::Open {
                url: redacted.to_string(),
                source: sqlx::Error::Configuration(
                    format!("$CREDENTIALS_DIRECTORY/store-password: {e}").into(),
                ),
            })?
    {
        options = options.password(&password);
    }
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
