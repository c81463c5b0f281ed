//! The disk under the store: how much room it has left, whether an error means it has none, and
//! the reserve that gives the daemon room to say so.
//!
//! A store that fills its disk stops ingest: the writer retries its batch with backoff until it
//! commits (`source::writer`), so nothing read is lost or counted twice. To say why in `csirt
//! status` the daemon must write one small row into the very store that refused a write, so a
//! SQLite store keeps a reserve beside its file (`<file>-reserve`, `RESERVE_BYTES` of written
//! zeros): released at the first disk-full error, just before that row is written, and made
//! again once the store takes writes and the disk has room for it. SQLite reuses the room a
//! failed transaction grew its WAL into, so what the reserve released stays the store's for its
//! later small writes (heartbeats) unless another process takes it first. `csirt status` does
//! not depend on that row: it reads the filesystem's free space itself (statvfs, a read), and
//! the journal has the error either way. A PostgreSQL store's disk is the server's: only its
//! error (SQLSTATE 53100, disk_full) tells.

use super::{Backend, Store, StoreError};
use std::io::Write;
use std::os::unix::fs::OpenOptionsExt;
use std::path::{Path, PathBuf};

/// What the reserve beside a SQLite store holds: room for the error row and a few hundred
/// heartbeats' WAL frames.
pub const RESERVE_BYTES: u64 = 512 * 1024;

/// Below this much room a store's disk is reported by `csirt status`: a few batches, or the
/// reserve and a batch, no longer fit.
pub const LOW_BYTES: u64 = 1024 * 1024;

/// How a recorded disk-full stop begins (`DiskFull::message`): `csirt status` tells the
/// sysadmin what to do about that one.
pub const DISK_FULL: &str = "ストアのディスクが一杯です (disk full)";

/// SQLite's primary result codes for a full disk (SQLITE_FULL: its write got ENOSPC) and for a
/// failed read or write (SQLITE_IOERR and its extended codes: growing the WAL index, say).
const SQLITE_FULL: i32 = 13;
const SQLITE_IOERR: i32 = 10;
/// PostgreSQL's SQLSTATE `disk_full`.
const PG_DISK_FULL: &str = "53100";

/// The filesystem that holds a SQLite store.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct Disk {
    /// The directory of the database file (its -wal, -shm and reserve are there too).
    pub dir: PathBuf,
    /// Bytes the daemon's user may still write (statvfs's f_bavail: without root's share).
    pub available_bytes: u64,
    pub total_bytes: u64,
}

impl Disk {
    /// The filesystem of `dir`, as of now.
    pub fn of(dir: &Path) -> std::io::Result<Disk> {
        let vfs = nix::sys::statvfs::statvfs(dir).map_err(std::io::Error::from)?;
        let unit = vfs.fragment_size();
        Ok(Disk {
            dir: dir.to_path_buf(),
            available_bytes: vfs.blocks_available().saturating_mul(unit),
            total_bytes: vfs.blocks().saturating_mul(unit),
        })
    }

    /// Whether so little room is left that ingest stops soon, or has.
    pub fn is_low(&self) -> bool {
        self.available_bytes < LOW_BYTES
    }
}

/// A write the store refused because its disk is full, with what the sysadmin needs.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DiskFull {
    /// The database file (SQLite) or the store's URL with any password hidden (PostgreSQL).
    pub store: String,
    /// A SQLite store's filesystem, just after the error.
    pub disk: Option<Disk>,
    /// The store's error and the operating system's reason.
    pub error: String,
}

impl DiskFull {
    /// The line `csirt status` lists and systemd's STATUS= carries.
    pub fn message(&self) -> String {
        let room = self.disk.as_ref().map_or_else(String::new, |d| {
            format!(" ({} の空き {})", d.dir.display(), bytes(d.available_bytes))
        });
        format!("{DISK_FULL}: {}{room}: {}", self.store, self.error)
    }
}

/// `512 KiB`, `3.2 MiB`, `17 B`: sizes for people.
pub fn bytes(n: u64) -> String {
    const KIB: u64 = 1024;
    const MIB: u64 = 1024 * 1024;
    match n {
        n if n < KIB => format!("{n} B"),
        n if n < MIB => format!("{:.0} KiB", n as f64 / KIB as f64),
        n => format!("{:.1} MiB", n as f64 / MIB as f64),
    }
}

impl Store {
    /// The SQLite database file, for a store on a file.
    pub(super) fn sqlite_file(&self) -> Option<PathBuf> {
        match &self.backend {
            Backend::Sqlite { write, .. } => {
                let file = write.connect_options().get_filename().to_path_buf();
                (file.as_os_str() != ":memory:").then_some(file)
            }
            Backend::Postgres(_) => None,
        }
    }

    /// The filesystem of a SQLite store (None for PostgreSQL, or when it cannot be read).
    pub fn disk(&self) -> Option<Disk> {
        let file = self.sqlite_file()?;
        let dir = file
            .parent()
            .filter(|d| !d.as_os_str().is_empty())
            .unwrap_or(Path::new("."));
        Disk::of(dir).ok()
    }

    /// What `error` says if it means the store's disk is full, else None.
    pub fn disk_full(&self, error: &StoreError) -> Option<DiskFull> {
        let StoreError::Db(e) = error else {
            return None;
        };
        let disk = self.disk();
        let reason = match e {
            sqlx::Error::Database(d) => {
                let code = d.code().unwrap_or_default();
                match &self.backend {
                    // PostgreSQL's message carries the system's own words ("could not extend
                    // file …: No space left on device").
                    Backend::Postgres(_) if code == PG_DISK_FULL => d.message().to_string(),
                    Backend::Postgres(_) => return None,
                    Backend::Sqlite { .. } => {
                        let primary = code.parse::<i32>().unwrap_or(0) & 0xff;
                        // SQLITE_FULL is ENOSPC on a write (os_unix.c); an I/O error counts as
                        // a full disk only while the disk really has no room to speak of.
                        let no_room = disk.as_ref().is_some_and(|d| d.available_bytes < 65_536);
                        if primary != SQLITE_FULL && !(primary == SQLITE_IOERR && no_room) {
                            return None;
                        }
                        format!(
                            "{} (SQLite {code}; {})",
                            d.message(),
                            nix::errno::Errno::ENOSPC
                        )
                    }
                }
            }
            sqlx::Error::Io(io) if io.raw_os_error() == Some(nix::libc::ENOSPC) => io.to_string(),
            _ => return None,
        };
        Some(DiskFull {
            store: self
                .sqlite_file()
                .map_or_else(|| self.url.clone(), |f| f.display().to_string()),
            disk,
            error: reason,
        })
    }

    /// The reserve beside a SQLite store's file.
    fn reserve_path(&self) -> Option<PathBuf> {
        let mut name = self.sqlite_file()?.into_os_string();
        name.push("-reserve");
        Some(name.into())
    }

    /// Makes the reserve beside a SQLite store if it is missing and the disk has room for it
    /// and more (it never takes the last of the room); true when it is in place afterwards.
    /// Written, not sized with `set_len`: a sparse file would reserve nothing.
    pub fn make_reserve(&self) -> std::io::Result<bool> {
        let Some(path) = self.reserve_path() else {
            return Ok(false);
        };
        if std::fs::metadata(&path).is_ok_and(|m| m.len() >= RESERVE_BYTES) {
            return Ok(true);
        }
        if self
            .disk()
            .is_none_or(|d| d.available_bytes < 2 * RESERVE_BYTES + LOW_BYTES)
        {
            return Ok(false);
        }
        let made = (|| {
            let mut file = std::fs::OpenOptions::new()
                .write(true)
                .create(true)
                .truncate(true)
                .mode(0o600)
                .open(&path)?;
            let zeros = vec![0u8; 64 * 1024];
            for _ in 0..RESERVE_BYTES / zeros.len() as u64 {
                file.write_all(&zeros)?;
            }
            file.sync_all()
        })();
        match made {
            Ok(()) => Ok(true),
            Err(e) => {
                // Half a reserve is room taken for nothing.
                let _ = std::fs::remove_file(&path);
                Err(e)
            }
        }
    }

    /// Deletes the reserve, giving its room back to the disk; true if there was one.
    pub fn release_reserve(&self) -> bool {
        self.reserve_path()
            .is_some_and(|p| std::fs::remove_file(p).is_ok())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sizes_read_as_people_write_them() {
        assert_eq!(bytes(0), "0 B");
        assert_eq!(bytes(1023), "1023 B");
        assert_eq!(bytes(RESERVE_BYTES), "512 KiB");
        assert_eq!(bytes(3 * 1024 * 1024 + 200 * 1024), "3.2 MiB");
    }

    #[test]
    fn the_message_names_the_store_the_room_left_and_the_reason() {
        let full = DiskFull {
            store: "/var/lib/csirt/csirt.db".into(),
            disk: Some(Disk {
                dir: "/var/lib/csirt".into(),
                available_bytes: 0,
                total_bytes: 8 << 20,
            }),
            error: "database or disk is full (SQLite 13; ENOSPC: No space left on device)".into(),
        };
        let m = full.message();
        assert!(m.contains("ディスクが一杯"), "{m}");
        assert!(m.contains("/var/lib/csirt/csirt.db"), "{m}");
        assert!(m.contains("/var/lib/csirt の空き 0 B"), "{m}");
        assert!(m.contains("No space left on device"), "{m}");
    }

    #[test]
    fn the_disk_of_a_directory_is_read() {
        let dir = tempfile::tempdir().expect("temp dir");
        let disk = Disk::of(dir.path()).expect("statvfs");
        assert!(disk.total_bytes > 0);
        assert!(disk.available_bytes <= disk.total_bytes);
        assert!(Disk::of(&dir.path().join("missing")).is_err());
    }
}
