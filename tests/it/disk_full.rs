//! A store that fills its disk (#13, "bad input"): ingest stops with the reason in `csirt
//! status`, the daemon keeps running and retrying with backoff, intake mail stays in `new/` (not
//! quarantined) and `csirt intake` asks the MTA to retry; once there is room again ingest
//! resumes where it stopped, and the counts equal what was written, nothing lost or counted
//! twice.
//!
//! The disk is a real small filesystem: a size-limited tmpfs holding the SQLite store, or, for
//! PostgreSQL, a tablespace on one (owned by the server's user) that the test database's tables
//! are created in. Mounting needs root (CAP_SYS_ADMIN); without it the test says so and passes,
//! except under CI, which runs as root and must run it.

use crate::helpers::*;
use crate::logs::{
    Daemon, NODE, append, configure_default, failure, hit_counts, incidents, log_dir,
};
use crate::on_both_backends;
use std::collections::BTreeMap;
use std::fs::File;
use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;

on_both_backends!(a_full_disk_stops_ingest_says_why_and_resumes_where_it_stopped);

/// How long ingest may take to stop after the disk filled, and to resume after it emptied: the
/// writer's backoff reaches 30 s between tries.
const PATIENCE: Duration = Duration::from_secs(120);

/// A filesystem mounted for the test, unmounted when dropped.
struct Mount(PathBuf);

impl Mount {
    /// A tmpfs of `size` at `at` (created), owned by `owner` (uid, gid) with `mode`; None, with
    /// the reason, where this process may not mount.
    fn tmpfs(at: &Path, size: &str, owner: (u32, u32), mode: &str) -> Result<Mount, String> {
        std::fs::create_dir_all(at).expect("the mount point");
        let options = format!("size={size},mode={mode},uid={},gid={}", owner.0, owner.1);
        let out = Command::new("mount")
            .args(["-t", "tmpfs", "-o", &options, "tmpfs"])
            .arg(at)
            .output()
            .map_err(|e| format!("cannot run mount: {e}"))?;
        if out.status.success() {
            Ok(Mount(at.to_path_buf()))
        } else {
            Err(format!(
                "mount -t tmpfs failed ({}): {}",
                out.status,
                stderr(&out).trim()
            ))
        }
    }

    /// Writes zeros into `filler` until the filesystem has no room left.
    fn fill(&self) {
        let mut file = File::create(self.filler()).expect("create the filler");
        let chunk = vec![0u8; 64 * 1024];
        let small = vec![0u8; 512];
        loop {
            match file.write(&chunk) {
                Ok(0) => break,
                Ok(_) => {}
                Err(e) if e.raw_os_error() == Some(nix::libc::ENOSPC) => break,
                Err(e) => panic!("filling {}: {e}", self.0.display()),
            }
        }
        // The last partial chunk's room, in small pieces.
        while let Ok(n) = file.write(&small) {
            if n == 0 {
                break;
            }
        }
        let _ = file.sync_all();
    }

    fn free(&self) {
        std::fs::remove_file(self.filler()).expect("remove the filler");
    }

    fn filler(&self) -> PathBuf {
        self.0.join("filler")
    }
}

impl Drop for Mount {
    fn drop(&mut self) {
        // Lazy: a store connection not yet closed must not keep the mount (and the test's
        // directory) alive.
        let _ = Command::new("umount").arg("-l").arg(&self.0).status();
    }
}

/// A PostgreSQL tablespace, dropped (after the test's database) when dropped.
struct Tablespace {
    server: String,
    name: String,
}

impl Drop for Tablespace {
    fn drop(&mut self) {
        let _ = pg(
            &self.server,
            &format!("DROP TABLESPACE IF EXISTS {}", self.name),
        );
    }
}

/// Runs `sql` on the server's `postgres` database; the first column of its first row, if any.
fn pg(server: &str, sql: &str) -> Result<Option<String>, sqlx::Error> {
    let (server, sql) = (server.to_string(), sql.to_string());
    std::thread::spawn(move || {
        block_on(async {
            use sqlx::{Connection, Row};
            let mut conn = sqlx::PgConnection::connect(&format!("{server}/postgres")).await?;
            let row = sqlx::query(&sql).fetch_optional(&mut conn).await?;
            conn.close().await?;
            Ok(row.and_then(|r| r.try_get::<String, _>(0).ok()))
        })
    })
    .join()
    .expect("a PostgreSQL admin thread")
}

/// The test's world: a store on a small filesystem, or why there cannot be one here.
struct SmallDisk {
    // Dropped in this order: the store (its database) before its tablespace, both before the
    // filesystem under them.
    env: Env,
    _tablespace: Option<Tablespace>,
    mount: Mount,
}

impl SmallDisk {
    fn new(backend: Backend) -> Result<SmallDisk, String> {
        let env = Env::unmigrated(backend);
        let (mount, tablespace) = match backend {
            Backend::Sqlite => {
                // The helpers' store is <dir>/var/csirt.db: the tmpfs is its directory.
                let var = env.dir.path().join("var");
                let me = (
                    nix::unistd::getuid().as_raw(),
                    nix::unistd::getgid().as_raw(),
                );
                (Mount::tmpfs(&var, "16m", me, "0770")?, None)
            }
            Backend::Postgres => {
                let server = postgres_url().expect("PostgreSQL tests need CSIRT_TEST_PG_URL");
                let data = pg(&server, "SHOW data_directory")
                    .map_err(|e| format!("cannot ask the server for its data directory: {e}"))?
                    .unwrap_or_default();
                if data.is_empty() || !Path::new(&data).is_dir() {
                    return Err(format!(
                        "the PostgreSQL server's data directory ({data:?}) is not on this machine, \
                         so a tablespace here cannot be made for it"
                    ));
                }
                let user = nix::unistd::User::from_name("postgres")
                    .ok()
                    .flatten()
                    .ok_or("no local user postgres to own the tablespace")?;
                // The server's user must reach the mount through the test's directory.
                chmod(env.dir.path(), 0o755);
                let at = env.dir.path().join("pgspace");
                let owner = (user.uid.as_raw(), user.gid.as_raw());
                let mount = Mount::tmpfs(&at, "16m", owner, "0700")?;
                let location = at.join("ts");
                std::fs::create_dir(&location).expect("the tablespace directory");
                chown(&location, "postgres");
                let database = env.url.rsplit('/').next().expect("a database name");
                let name = format!("{database}_ts");
                pg(
                    &server,
                    &format!("CREATE TABLESPACE {name} LOCATION '{}'", location.display()),
                )
                .map_err(|e| format!("cannot create a tablespace on the small disk: {e}"))?;
                let tablespace = Tablespace {
                    server: server.clone(),
                    name: name.clone(),
                };
                pg(
                    &server,
                    &format!("ALTER DATABASE {database} SET default_tablespace = {name}"),
                )
                .expect("the test database's default tablespace");
                (mount, Some(tablespace))
            }
        };
        let out = env.csirt(&["db", "migrate"]);
        assert!(out.status.success(), "db migrate: {}", stderr(&out));
        Ok(SmallDisk {
            env,
            _tablespace: tablespace,
            mount,
        })
    }
}

/// A mail of about `size` bytes (a text mail with a long body): too large for the room a full
/// disk leaves, so it cannot be stored while the disk is full.
fn large_mail(size: usize) -> Vec<u8> {
    let mut raw = corpus("utf8_plain.eml");
    let line = b"padding padding padding padding padding padding padding padding\n";
    while raw.len() < size {
        raw.extend_from_slice(line);
    }
    raw
}

/// `n` failures from distinct addresses of `10.<net>.x.y`, each at `second`.
fn spray(net: u32, n: u32, second: u32) -> String {
    (0..n)
        .map(|i| failure(&format!("10.{net}.{}.{}", i / 250, i % 250), second))
        .collect()
}

fn add_spray(counts: &mut BTreeMap<String, i64>, net: u32, n: u32) {
    for i in 0..n {
        counts.insert(format!("ip=10.{net}.{}.{}", i / 250, i % 250), 1);
    }
}

fn a_full_disk_stops_ingest_says_why_and_resumes_where_it_stopped(backend: Backend) {
    let disk = match SmallDisk::new(backend) {
        Ok(disk) => disk,
        Err(why) if std::env::var_os("CI").is_none() => {
            eprintln!("SKIPPED: a full disk cannot be made here ({why}); run the tests as root");
            return;
        }
        Err(why) => panic!("CI must run the disk-full test: {why}"),
    };
    let env = &disk.env;
    configure_default(env);
    let maildir = env.dir.path().join("Maildir");
    for sub in ["new", "cur", "tmp"] {
        std::fs::create_dir_all(maildir.join(sub)).expect("maildir");
    }
    let text = std::fs::read_to_string(&env.config).expect("config");
    env.write_config(&format!(
        "{text}\n[intake]\nmaildir = \"{}\"\n",
        maildir.display()
    ));
    let auth = log_dir(env).join("auth.log");
    File::create(&auth).expect("create auth.log");
    let mut daemon = Daemon::start(env);

    // Before: 200 addresses once each, and three failures of an attacker.
    let attacker = "198.51.100.77";
    let mut want = BTreeMap::new();
    let mut lines = spray(3, 200, 5);
    add_spray(&mut want, 3, 200);
    for s in [10, 20, 30] {
        lines.push_str(&failure(attacker, s));
    }
    want.insert(format!("ip={attacker}"), 3);
    append(&auth, lines);
    daemon.wait_for_counts(env, &want);

    // The disk fills up; 4,000 more addresses and the attacker's fourth and fifth failure
    // (its threshold: an incident of five events) arrive, and a mail.
    disk.mount.fill();
    let mut lines = spray(4, 4000, 35);
    add_spray(&mut want, 4, 4000);
    for s in [40, 50] {
        lines.push_str(&failure(attacker, s));
    }
    want.insert(format!("ip={attacker}"), 5);
    append(&auth, lines);
    let mail = large_mail(1024 * 1024);
    let tmp = maildir.join("tmp/1764040000.M1P1.host");
    std::fs::write(&tmp, &mail).expect("deliver into tmp/");
    std::fs::rename(&tmp, maildir.join("new/1764040000.M1P1.host")).expect("into new/");

    let stops = daemon.wait_up_to(PATIENCE, "ingest to stop on the full disk", env, |env| {
        let status = json(&env.csirt(&["status", "--json"]));
        let stops = status["ingest_stopped"]
            .as_array()
            .cloned()
            .unwrap_or_default();
        (!stops.is_empty()).then_some((status, stops))
    });
    let (status, stops) = stops;
    let reason = stops[0]["message"].as_str().expect("a reason").to_string();
    assert_eq!(stops[0]["node"], NODE, "{status:#}");
    assert!(reason.contains("ディスクが一杯"), "{reason}");
    assert!(reason.contains("No space left on device"), "{reason}");
    if backend == Backend::Sqlite {
        let file = env.dir.path().join("var/csirt.db");
        assert!(reason.contains(&file.display().to_string()), "{reason}");
        let free = status["usage"]["disk"]["available_bytes"]
            .as_u64()
            .expect("the store's free room");
        assert!(free < 1024 * 1024, "{status:#}");
    }
    assert_eq!(status["ok"], false, "{status:#}");
    assert!(
        status["problems"]
            .as_array()
            .expect("problems")
            .iter()
            .any(|p| p
                .as_str()
                .is_some_and(|p| p.contains("取り込みが止まっています"))),
        "{status:#}"
    );
    let text = env.csirt(&["status"]);
    assert_exit(&text, 1);
    let text = stdout(&text);
    assert!(
        text.contains("取り込み停止 (ingest stopped)") && text.contains("No space left on device"),
        "{text}"
    );

    // Meanwhile: the mail waits in new/, not quarantined; the MTA is told to retry; nothing is
    // counted beyond what was written, and the file's position is not past what is committed.
    assert_eq!(files(&maildir.join("new")), ["1764040000.M1P1.host"]);
    assert!(files(&maildir.join(".Quarantine/new")).is_empty());
    assert_exit(&env.intake(&large_mail(1024 * 1024 + 1)), 75);
    let counts = hit_counts(env);
    for (key, n) in &counts {
        assert!(want.get(key).is_some_and(|w| n <= w), "{key}: {n}");
    }
    assert!(counts.values().sum::<i64>() < want.values().sum::<i64>());
    let size = std::fs::metadata(&auth).expect("auth.log").len();
    assert!(
        crate::logs::checkpoints(env)
            .iter()
            .all(|c| c.offset < size),
        "the position moved past lines that are not committed"
    );

    // Stopped it stays, alive and retrying (how often is checked against the log below).
    std::thread::sleep(Duration::from_secs(10));
    let status = json(&env.csirt(&["status", "--json"]));
    assert_ne!(
        status["ingest_stopped"],
        serde_json::json!([]),
        "{status:#}"
    );
    assert!(daemon.alive(), "the daemon died:\n{}", daemon.log_tail());

    // Room again: ingest resumes where it stopped.
    disk.mount.free();
    daemon.wait_up_to(PATIENCE, "the counts after the disk emptied", env, |env| {
        (hit_counts(env) == want).then_some(())
    });
    daemon.wait_up_to(PATIENCE, "the mail taken", env, |_| {
        files(&maildir.join("new")).is_empty().then_some(())
    });
    assert_eq!(files(&maildir.join("cur")), ["1764040000.M1P1.host:2,S"]);
    assert!(files(&maildir.join(".Quarantine/new")).is_empty());
    let ssh: Vec<serde_json::Value> = incidents(env)
        .into_iter()
        .filter(|i| i["playbook"] == "ssh-bruteforce")
        .collect();
    assert_eq!(ssh.len(), 1, "{ssh:#?}");
    assert_eq!(ssh[0]["dedupe_key"], format!("ip={attacker}"));
    assert_eq!(ssh[0]["event_count"], 5, "{ssh:#?}");
    let pending = with_usage(env);
    assert_eq!(pending, 4200, "pending events: one per sprayed address");
    let status = json(&env.csirt(&["status", "--json"]));
    assert_eq!(
        status["ingest_stopped"],
        serde_json::json!([]),
        "{status:#}"
    );
    assert!(
        !status["problems"].to_string().contains("取り込み"),
        "{status:#}"
    );

    // Backoff, not a busy loop: the tries while stopped, against how long it was stopped.
    let log = daemon.log_text();
    let resumed = log
        .lines()
        .rev()
        // The last: the first batch may have fitted in the room the reserve gave back.
        .find(|l| l.contains("ingest resumed where it stopped"))
        .unwrap_or_else(|| panic!("no resumption in the log:\n{log}"));
    let field = |name: &str| -> u64 {
        resumed
            .split_whitespace()
            .find_map(|w| w.strip_prefix(&format!("{name}=")))
            .and_then(|v| v.parse().ok())
            .unwrap_or_else(|| panic!("no {name} in {resumed}"))
    };
    let (attempts, stopped_s) = (field("attempts"), field("stopped_s"));
    // In the test's output, so that a CI log shows the test ran (it is skipped without root).
    eprintln!("disk full on {backend:?}: status said \"{reason}\"; the log: {resumed}");
    assert!(
        attempts <= 10 + stopped_s / 15,
        "{attempts} tries in {stopped_s} s: {resumed}"
    );
    daemon.stop();
}

/// Pending (below-threshold) events in the store.
fn with_usage(env: &Env) -> i64 {
    crate::logs::with_store(env, "usage", async |store| {
        Ok(store.usage().await?.pending_events)
    })
}
