//! Opening the SQLite store: the file created 0660 in a 0770 directory, WAL, `busy_timeout`,
//! foreign keys, and one writer connection (SQLite has one writer; a pool of several would only
//! queue on its lock and turn `busy_timeout` into the scheduler).

use super::{Role, StoreError};
use sqlx::sqlite::{
    SqliteConnectOptions, SqliteJournalMode, SqlitePool, SqlitePoolOptions, SqliteSynchronous,
};
use std::os::unix::fs::{DirBuilderExt, OpenOptionsExt, PermissionsExt};
use std::path::Path;
use std::str::FromStr;
use std::time::Duration;

/// How long a writer waits for another process's write lock before giving up.
const BUSY_TIMEOUT: Duration = Duration::from_secs(10);

/// The reader and writer pools of one SQLite file.
pub(super) async fn open(
    url: &str,
    redacted: &str,
    role: Role,
) -> Result<(SqlitePool, SqlitePool), StoreError> {
    let open_err = |source| StoreError::Open {
        url: redacted.to_string(),
        source,
    };
    let options = SqliteConnectOptions::from_str(url)
        .map_err(open_err)?
        .journal_mode(SqliteJournalMode::Wal)
        // NORMAL under WAL loses at most the last transactions on power loss, never corrupts;
        // FULL would cost an fsync per batch on the ingest path.
        .synchronous(SqliteSynchronous::Normal)
        .foreign_keys(true)
        .busy_timeout(BUSY_TIMEOUT)
        .create_if_missing(true);
    let file = options.get_filename().to_path_buf();
    if file.as_os_str() != ":memory:" {
        // Before the existence check: an unreadable directory hides the file from `exists()`,
        // and "there is no store" would send the sysadmin to `db migrate` instead of `chmod`.
        if let Some(denial) = crate::access::sqlite_denial(&file) {
            return Err(StoreError::Denied { file, denial });
        }
        if role == Role::Cli && !file.exists() {
            return Err(StoreError::Missing { path: file });
        }
        prepare_file(&file)?;
        if role == Role::Daemon {
            refuse_writable_by_others(&file)?;
        }
    }
    let write = SqlitePoolOptions::new()
        .max_connections(1)
        .acquire_timeout(BUSY_TIMEOUT)
        .connect_with(options.clone())
        .await
        .map_err(open_err)?;
    let readers = match role {
        Role::Cli | Role::Migrate => 1,
        Role::Daemon => 4,
    };
    let read = SqlitePoolOptions::new()
        .max_connections(readers)
        .acquire_timeout(BUSY_TIMEOUT)
        .connect_lazy_with(options);
    Ok((read, write))
}

/// The daemon refuses a database file, or a directory holding it, that other users can write:
/// they could forge incidents or replace the file. It refuses a database file (or its WAL, which
/// holds the latest writes) that they can read: it holds reporters' mail and evidence.
fn refuse_writable_by_others(file: &Path) -> Result<(), StoreError> {
    let dir = file
        .parent()
        .filter(|d| !d.as_os_str().is_empty())
        .unwrap_or(Path::new("."));
    let mut wal = file.as_os_str().to_owned();
    wal.push("-wal");
    let wal = std::path::PathBuf::from(wal);
    let mode_of = |path: &Path| {
        std::fs::metadata(path)
            .map(|m| m.permissions().mode())
            .map_err(|source| StoreError::Prepare {
                path: path.to_path_buf(),
                source,
            })
    };
    for path in [file, dir] {
        let mode = mode_of(path)?;
        if mode & 0o002 != 0 {
            return Err(StoreError::WritableByOthers {
                path: path.to_path_buf(),
                mode: mode & 0o7777,
            });
        }
    }
    for path in [file, wal.as_path()] {
        if path != file && !path.exists() {
            continue;
        }
        let mode = mode_of(path)?;
        if mode & 0o004 != 0 {
            return Err(StoreError::ReadableByOthers {
                path: path.to_path_buf(),
                mode: mode & 0o7777,
            });
        }
    }
    Ok(())
}

/// Creates the database file 0660 (and its directory 0770) if it does not exist yet, so that the
/// daemon's group can share it and nobody else can read it. The umask does not get a say:
/// permissions are set explicitly after creation. Existing files and directories are left as the
/// sysadmin made them. SQLite creates its -wal and -shm files with the database file's mode.
fn prepare_file(file: &Path) -> Result<(), StoreError> {
    let prep_err = |source| StoreError::Prepare {
        path: file.to_path_buf(),
        source,
    };
    if file.exists() {
        return Ok(());
    }
    if let Some(dir) = file.parent().filter(|d| !d.as_os_str().is_empty())
        && !dir.exists()
    {
        std::fs::DirBuilder::new()
            .recursive(true)
            .mode(0o770)
            .create(dir)
            .map_err(prep_err)?;
        std::fs::set_permissions(dir, std::fs::Permissions::from_mode(0o770)).map_err(prep_err)?;
    }
    match std::fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(0o660)
        .open(file)
    {
        Ok(_) => {
            std::fs::set_permissions(file, std::fs::Permissions::from_mode(0o660)).map_err(prep_err)
        }
        // Another process created it between our check and now: theirs is as good as ours.
        Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => Ok(()),
        Err(e) => Err(prep_err(e)),
    }
}
