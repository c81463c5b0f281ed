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
/// How much of the file a reader maps (address space, not memory): SQLite's own ceiling on
/// Linux (`SQLITE_MAX_MMAP_SIZE`), beyond which it reads as usual.
const READ_MMAP_SIZE: &str = "2147418112";

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
        give_to_directory_owner(&file)?;
        if role == Role::Daemon {
            refuse_writable_by_others(&file)?;
        }
    }
    // The writer's statement journals in memory: a multi-row INSERT inside the ingest
    // transaction journals the pages it changes (to undo that one statement), and past 64 KiB
    // SQLite spilled them to a temporary file, a third of the daemon's writes in a spray (#13).
    // A journal lives for one statement of at most `bulk`'s chunk of rows.
    let write_options = options.clone().pragma("temp_store", "memory");
    let write = SqlitePoolOptions::new()
        .max_connections(1)
        .acquire_timeout(BUSY_TIMEOUT)
        .connect_with(write_options)
        .await
        .map_err(open_err)?;
    // The writer's first connection switched the file to WAL and may have made -wal and -shm.
    if file.as_os_str() != ":memory:" {
        give_to_directory_owner(&file)?;
    }
    // Two for the CLI: `csirt report` reads a month of incidents on one while SQLite answers
    // the next on the other (connections open lazily: other commands still open one).
    let readers = match role {
        Role::Migrate => 1,
        Role::Cli => 2,
        Role::Daemon => 4,
    };
    // A command's readers map the file instead of copying it a page at a time: `csirt report`
    // reads every incident of two years, on a store of a million (785 MB) 132,000 pread calls;
    // mapped, the report's system time fell from about 1.0 s to 0.65 s. Writes still go through
    // the writer's ordinary I/O; SQLite keeps a mapping coherent with them (and with the WAL).
    // Not the daemon's: an I/O error on a mapped page is a SIGBUS, not an error the daemon can
    // log, retry and report in `csirt status`, and its reads are small.
    let options = match role {
        Role::Cli => options.pragma("mmap_size", READ_MMAP_SIZE),
        Role::Daemon | Role::Migrate => options,
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

/// Run as root (`sudo csirt db migrate`, the command the CLI's own messages suggest), csirt
/// would leave a root-owned store in the daemon's directory, and the daemon, running as `csirt`,
/// could then never open it again (issue #17: "unable to open database file" every 5 s). So when
/// the effective user is root and the directory belongs to someone else, the database file and
/// its -wal and -shm are given to the directory's owner and group. Only files owned by root are
/// changed: a file someone deliberately gave to another user keeps its owner. SQLite itself
/// also hands the -wal and -shm it creates later to the owner of the database file when it runs
/// as root, so one chown here holds for the whole session.
fn give_to_directory_owner(file: &Path) -> Result<(), StoreError> {
    use std::os::unix::fs::MetadataExt;
    if !nix::unistd::geteuid().is_root() {
        return Ok(());
    }
    let dir = file
        .parent()
        .filter(|d| !d.as_os_str().is_empty())
        .unwrap_or(Path::new("."));
    let Ok(dir_meta) = std::fs::metadata(dir) else {
        return Ok(());
    };
    if dir_meta.uid() == 0 {
        return Ok(());
    }
    let (uid, gid) = (dir_meta.uid(), dir_meta.gid());
    let mut paths = vec![file.to_path_buf()];
    for suffix in ["-wal", "-shm"] {
        let mut name = file.as_os_str().to_owned();
        name.push(suffix);
        paths.push(name.into());
    }
    for path in paths {
        let Ok(meta) = std::fs::symlink_metadata(&path) else {
            continue;
        };
        if meta.uid() != 0 || !meta.is_file() {
            continue;
        }
        std::os::unix::fs::chown(&path, Some(uid), Some(gid)).map_err(|source| {
            StoreError::Chown {
                path: path.clone(),
                owner: owner_name(uid, gid),
                source,
            }
        })?;
    }
    Ok(())
}

/// `csirt:csirt (uid 998)` for messages, the numbers where a name is unknown.
fn owner_name(uid: u32, gid: u32) -> String {
    use nix::unistd::{Gid, Group, Uid, User};
    let user = match User::from_uid(Uid::from_raw(uid)) {
        Ok(Some(u)) => u.name,
        _ => uid.to_string(),
    };
    let group = match Group::from_gid(Gid::from_raw(gid)) {
        Ok(Some(g)) => g.name,
        _ => gid.to_string(),
    };
    format!("{user}:{group} (uid {uid})")
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

/// After a failed write transaction: once the ROLLBACK its drop queued has run (a ping runs
/// after it on the connection's worker, in order), the writer connection must be outside any
/// transaction. One that is not (SQLite rolled back by itself, sqlx's ROLLBACK failed and it
/// still counts the transaction) is closed instead of returned to the pool, which opens a fresh
/// connection for the next writer.
pub(super) async fn discard_if_in_transaction(conn: &mut sqlx::pool::PoolConnection<sqlx::Sqlite>) {
    use sqlx::Connection;
    let alive = conn.ping().await.is_ok();
    if !alive || conn.is_in_transaction() {
        // The error that got it there is the caller's to report.
        tracing::debug!(
            "the store's writer connection is left inside a failed transaction; opening a new one"
        );
        conn.close_on_drop();
    }
}
