//! Who this process runs as, and which permission on which path it lacks.
//!
//! `csirt intake` runs as whatever user the MTA chose (Postfix's pipe `user=`, or `nobody`
//! through an `/etc/aliases` pipe). When that user cannot reach the store, "no such file" or
//! SQLite's "unable to open database file" send the sysadmin to the wrong fix; a [`Denial`]
//! names the user, the path and the permission instead. This module only looks: it never
//! changes a mode or an owner.

use nix::unistd::{AccessFlags, Gid, Group, Uid, User, eaccess, geteuid};
use std::fmt;
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};

/// A permission the effective user lacks on a path.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Denial {
    /// The user this process runs as, e.g. `nobody (uid 65534)`.
    pub user: String,
    pub path: PathBuf,
    /// What was needed, e.g. `search (x)` or `read and write (rw)`.
    pub need: &'static str,
    /// The path's mode and owner as `ls -l` shows them, e.g. `drwx------ root:root`.
    pub has: String,
}

impl fmt::Display for Denial {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "user {} has no {} permission on {} ({})",
            self.user,
            self.need,
            self.path.display(),
            self.has
        )
    }
}

/// The effective user, as `name (uid N)`; the number alone when the name is unknown.
pub fn effective_user() -> String {
    let uid = geteuid();
    match User::from_uid(uid) {
        Ok(Some(user)) => format!("{} (uid {uid})", user.name),
        _ => format!("uid {uid}"),
    }
}

/// The first permission the effective user lacks to read and write the SQLite database `file`:
/// search on every directory above it, write on its directory (SQLite makes its `-wal`,
/// `-shm` and journal files there, also for a reader in WAL mode), read and write on the file
/// and on its `-wal` and `-shm` files where they exist. Paths that do not exist are not
/// judged here: the caller says what is missing.
pub fn sqlite_denial(file: &Path) -> Option<Denial> {
    let dir = file
        .parent()
        .filter(|d| !d.as_os_str().is_empty())
        .unwrap_or(Path::new("."));
    // From the root down, so the denial named is the one to fix first.
    let mut ancestors: Vec<&Path> = dir.ancestors().collect();
    ancestors.reverse();
    for path in ancestors {
        if let Some(denial) = lacks(path, AccessFlags::X_OK, "search (x)") {
            return Some(denial);
        }
    }
    if let Some(denial) = lacks(
        dir,
        AccessFlags::W_OK | AccessFlags::X_OK,
        "write and search (wx)",
    ) {
        return Some(denial);
    }
    let with_suffix = |suffix: &str| {
        let mut name = file.as_os_str().to_owned();
        name.push(suffix);
        PathBuf::from(name)
    };
    [file.to_path_buf(), with_suffix("-wal"), with_suffix("-shm")]
        .iter()
        .find_map(|path| {
            lacks(
                path,
                AccessFlags::R_OK | AccessFlags::W_OK,
                "read and write (rw)",
            )
        })
}

/// The denial of `need` on `path` when the kernel refuses it to the effective user (the
/// effective ids, as open(2) checks them, not the real ones access(2) would use).
fn lacks(path: &Path, mode: AccessFlags, need: &'static str) -> Option<Denial> {
    match eaccess(path, mode) {
        Err(nix::errno::Errno::EACCES) => Some(Denial {
            user: effective_user(),
            path: path.to_path_buf(),
            need,
            has: describe(path),
        }),
        _ => None,
    }
}

/// `drwxr-x--- csirt:csirt`, or as much of it as can be read.
fn describe(path: &Path) -> String {
    let Ok(meta) = std::fs::symlink_metadata(path) else {
        return "mode unknown".to_string();
    };
    let mode = meta.mode();
    let kind = if meta.is_dir() { 'd' } else { '-' };
    let bits: String = [
        (0o400, 'r'),
        (0o200, 'w'),
        (0o100, 'x'),
        (0o040, 'r'),
        (0o020, 'w'),
        (0o010, 'x'),
        (0o004, 'r'),
        (0o002, 'w'),
        (0o001, 'x'),
    ]
    .iter()
    .map(|&(bit, c)| if mode & bit != 0 { c } else { '-' })
    .collect();
    let owner = match User::from_uid(Uid::from_raw(meta.uid())) {
        Ok(Some(user)) => user.name,
        _ => meta.uid().to_string(),
    };
    let group = match Group::from_gid(Gid::from_raw(meta.gid())) {
        Ok(Some(group)) => group.name,
        _ => meta.gid().to_string(),
    };
    format!("{kind}{bits} {owner}:{group}")
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::fs::PermissionsExt;

    #[test]
    fn an_open_directory_denies_nothing() {
        let dir = tempfile::tempdir().expect("temp dir");
        let file = dir.path().join("csirt.db");
        assert_eq!(sqlite_denial(&file), None);
        std::fs::write(&file, b"").expect("file");
        assert_eq!(sqlite_denial(&file), None);
    }

    #[test]
    fn modes_are_shown_as_ls_shows_them() {
        let dir = tempfile::tempdir().expect("temp dir");
        std::fs::set_permissions(dir.path(), std::fs::Permissions::from_mode(0o750))
            .expect("chmod");
        let shown = describe(dir.path());
        assert!(shown.starts_with("drwxr-x--- "), "{shown}");
        assert!(effective_user().contains(&format!("uid {}", geteuid())));
    }
}
