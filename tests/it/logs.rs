//! Log watching through the real daemon: real files appended to, rotated, truncated, deleted and
//! filled with hostile bytes while a `csirt daemon` child process tails them, checked against the
//! exact ground truth of a generated auth.log (per-address failure counts, banned addresses).
//!
//! Files present when a pattern is first started are read from their end, so every test creates
//! its log file (empty) before the daemon starts, or after, and only ever appends to it.

use crate::helpers::*;
use crate::on_both_backends;
use csirt::config::StoreUrl;
use csirt::engine::Checkpoint;
use csirt::store::{Role, Store, StoreError};
use nix::sys::signal::{Signal, kill};
use nix::unistd::Pid;
use std::collections::{BTreeMap, BTreeSet};
use std::fs::{File, OpenOptions};
use std::io::Write;
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Stdio};
use std::sync::atomic::{AtomicU32, Ordering};
use std::time::{Duration, Instant};

on_both_backends!(
    rename_and_create_rotation_loses_no_line,
    rename_and_create_rotation_with_a_glob_matching_the_rotated_name,
    sigkill_mid_ingest_then_restart_counts_exactly_once,
    hostile_input_keeps_flowing,
    a_login_after_failures_raises_across_a_sigkill,
);

/// The node name every test's daemon runs as (checkpoints are kept per node).
pub(crate) const NODE: &str = "it-node";
const PLAYBOOK: &str = "ssh-bruteforce";
/// How long any one wait may take before the test fails.
const PATIENCE: Duration = Duration::from_secs(30);

// ---------------------------------------------------------------------------------------------
// The world: config, generated logs, files, the daemon, the store.
// ---------------------------------------------------------------------------------------------

/// The log directory of the default config (`<dir>/log/*.log`), created.
pub(crate) fn log_dir(env: &Env) -> PathBuf {
    let dir = env.dir.path().join("log");
    std::fs::create_dir_all(&dir).expect("create the log dir");
    dir
}

/// Rewrites the config with a fixed node name and these `[[logs]] paths`.
pub(crate) fn configure(env: &Env, patterns: &[String]) {
    let base = config_text(&env.url, &env.playbooks(), env.dir.path());
    let default = format!("paths = [\"{}/log/*.log\"]", env.dir.path().display());
    assert!(
        base.contains(&default),
        "the helpers' config changed: {base}"
    );
    let paths: Vec<String> = patterns.iter().map(|p| format!("\"{p}\"")).collect();
    let text = base.replace(&default, &format!("paths = [{}]", paths.join(", ")));
    env.write_config(&format!("node = \"{NODE}\"\n{text}"));
}

/// The default pattern, `<dir>/log/*.log`, under the fixed node name.
pub(crate) fn configure_default(env: &Env) {
    configure(env, &[format!("{}/*.log", log_dir(env).display())]);
}

/// A generated auth.log and its ground truth.
/// A test environment watching the default pattern, with an empty auth.log in place.
fn env_with_auth_log(backend: Backend) -> (Env, PathBuf) {
    let env = Env::new(backend);
    configure_default(&env);
    let auth = log_dir(&env).join("auth.log");
    File::create(&auth).expect("create auth.log");
    (env, auth)
}

struct Generated {
    /// The lines, each with its newline.
    lines: Vec<String>,
    /// Failures per dedupe key (`ip=<addr>`), addresses with none left out.
    counts: BTreeMap<String, i64>,
    /// Dedupe keys of the addresses with 5 failures within 600 s.
    banned: Vec<String>,
}

impl Generated {
    fn total(&self) -> i64 {
        self.counts.values().sum()
    }

    fn text(lines: &[String]) -> String {
        lines.concat()
    }
}

/// Runs gen_authlog.py (deterministic by seed) into `<dir>/gen/`, out of every log pattern.
fn generate(env: &Env, lines: usize, seed: u64) -> Generated {
    let script = std::env::var("CSIRT_TEST_GEN_AUTHLOG")
        .unwrap_or_else(|_| "/work/shared/bench/gen_authlog.py".into());
    assert!(
        Path::new(&script).is_file(),
        "the auth.log generator is missing: {script} (set CSIRT_TEST_GEN_AUTHLOG)"
    );
    let out = env.dir.path().join("gen").join(format!("auth-{seed}.log"));
    let attackers = (lines / 250).max(8).to_string();
    let run = std::process::Command::new("python3")
        .arg(&script)
        .args(["--lines", &lines.to_string(), "--seed", &seed.to_string()])
        .args(["--attackers", &attackers, "--fail-ratio", "0.08"])
        .arg("--out")
        .arg(&out)
        .output()
        .expect("run python3 gen_authlog.py");
    assert!(run.status.success(), "gen_authlog.py: {}", stderr(&run));
    let text = std::fs::read_to_string(&out).expect("read the generated log");
    let truth: serde_json::Value = serde_json::from_str(
        &std::fs::read_to_string(out.with_extension("truth.json")).expect("read the truth"),
    )
    .expect("truth JSON");
    let counts: BTreeMap<String, i64> = truth["failures_by_ip"]
        .as_object()
        .expect("failures_by_ip")
        .iter()
        .map(|(ip, n)| (format!("ip={ip}"), n.as_i64().expect("a count")))
        .filter(|(_, n)| *n > 0)
        .collect();
    let mut banned: Vec<String> = truth["banned_sliding_600s"]
        .as_array()
        .expect("banned_sliding_600s")
        .iter()
        .map(|ip| format!("ip={}", ip.as_str().expect("an address")))
        .collect();
    banned.sort();
    let lines: Vec<String> = text.split_inclusive('\n').map(str::to_string).collect();
    assert_eq!(lines.len() as u64, truth["log"]["lines"], "line count");
    assert!(
        banned.len() >= 3 && counts.len() > banned.len(),
        "the generated log should have banned and unbanned addresses: {} / {}",
        banned.len(),
        counts.len()
    );
    Generated {
        lines,
        counts,
        banned,
    }
}

/// Appends with a real `O_APPEND` write and flush, as a logger does.
pub(crate) fn append(path: &Path, bytes: impl AsRef<[u8]>) {
    let mut f = OpenOptions::new()
        .append(true)
        .create(true)
        .open(path)
        .unwrap_or_else(|e| panic!("open {} for append: {e}", path.display()));
    f.write_all(bytes.as_ref()).expect("append");
    f.flush().expect("flush");
}

/// `Nov  3 10:MM:SS host sshd[N]: Failed password for root from IP port 22 ssh2`, at `second`
/// seconds after 10:00:00.
pub(crate) fn failure(ip: &str, second: u32) -> String {
    format!(
        "Nov  3 {:02}:{:02}:{:02} it-host sshd[{}]: Failed password for root from {ip} port {} ssh2\n",
        10 + second / 3600,
        second / 60 % 60,
        second % 60,
        4000 + second,
        30_000 + second
    )
}

/// A line no playbook matches.
pub(crate) fn filler(n: usize) -> String {
    format!(
        "Nov  3 09:00:00 it-host CRON[{n}]: pam_unix(cron:session): session closed for user root\n"
    )
}

static DAEMONS: AtomicU32 = AtomicU32::new(0);

/// A `csirt daemon` child; killed when dropped. Its log goes to a file shown on failures.
pub(crate) struct Daemon {
    child: Child,
    log: PathBuf,
}

impl Daemon {
    /// Spawns the daemon and waits for its heartbeat and for every configured pattern to be
    /// recorded as started (so files created from now on are read from their beginning).
    pub(crate) fn start(env: &Env) -> Daemon {
        let log = env.dir.path().join(format!(
            "daemon-{}.log",
            DAEMONS.fetch_add(1, Ordering::Relaxed)
        ));
        let child = env
            .command(&["daemon"])
            .env("RUST_LOG", "info")
            .stdout(Stdio::null())
            .stderr(File::create(&log).expect("daemon log file"))
            .spawn()
            .expect("spawn the daemon");
        let mut daemon = Daemon { child, log };
        let pid = i64::from(daemon.child.id());
        let patterns = configured_patterns(env);
        daemon.wait("the heartbeat and the started patterns", env, |env| {
            let (beats, started) = with_store(env, "heartbeats", async |store| {
                Ok((store.heartbeats().await?, store.log_patterns(NODE).await?))
            });
            let beating = beats.iter().any(|b| b.node == NODE && b.pid == pid);
            let all = patterns.iter().all(|p| started.contains(p));
            (beating && all).then_some(())
        });
        daemon
    }

    fn signal(&self, sig: Signal) {
        kill(Pid::from_raw(self.child.id() as i32), sig).expect("send a signal to the daemon");
    }

    /// SIGSTOP, and waits until every thread of the daemon is stopped (a signal is delivered
    /// asynchronously: the daemon may run on for a moment after `kill` returns).
    pub(crate) fn pause(&mut self) {
        self.signal(Signal::SIGSTOP);
        let tasks = PathBuf::from(format!("/proc/{}/task", self.child.id()));
        let deadline = Instant::now() + Duration::from_secs(10);
        loop {
            let states: Vec<String> = std::fs::read_dir(&tasks)
                .expect("list the daemon's threads")
                .filter_map(|t| std::fs::read_to_string(t.ok()?.path().join("stat")).ok())
                // The state follows the parenthesised command name.
                .filter_map(|stat| Some(stat.rsplit_once(") ")?.1.chars().next()?.to_string()))
                .collect();
            if !states.is_empty() && states.iter().all(|s| s == "T" || s == "t") {
                return;
            }
            assert!(
                Instant::now() < deadline,
                "the daemon did not stop: {states:?}"
            );
            std::thread::sleep(Duration::from_millis(10));
        }
    }

    pub(crate) fn resume(&self) {
        self.signal(Signal::SIGCONT);
    }

    /// SIGHUP: reload.
    pub(crate) fn hangup(&self) {
        self.signal(Signal::SIGHUP);
    }

    pub(crate) fn alive(&mut self) -> bool {
        self.child.try_wait().expect("try_wait").is_none()
    }

    /// The daemon's whole log so far.
    pub(crate) fn log_text(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }

    /// The daemon's log so far (its last 80 lines).
    pub(crate) fn log_tail(&self) -> String {
        let text = std::fs::read_to_string(&self.log).unwrap_or_default();
        let lines: Vec<&str> = text.lines().collect();
        lines[lines.len().saturating_sub(80)..].join("\n")
    }

    /// Polls `check` until it gives a value; fails with the daemon's log after `PATIENCE`, or
    /// at once if the daemon died.
    pub(crate) fn wait<T>(
        &mut self,
        what: &str,
        env: &Env,
        check: impl FnMut(&Env) -> Option<T>,
    ) -> T {
        self.wait_up_to(PATIENCE, what, env, check)
    }

    /// `wait` with a patience of its own (for what waits out a rate window).
    pub(crate) fn wait_up_to<T>(
        &mut self,
        patience: Duration,
        what: &str,
        env: &Env,
        mut check: impl FnMut(&Env) -> Option<T>,
    ) -> T {
        let deadline = Instant::now() + patience;
        loop {
            if let Some(value) = check(env) {
                return value;
            }
            assert!(
                self.alive(),
                "the daemon died while waiting for {what}\n--- daemon log\n{}",
                self.log_tail()
            );
            assert!(
                Instant::now() < deadline,
                "timed out waiting for {what}\n--- daemon log\n{}",
                self.log_tail()
            );
            std::thread::sleep(Duration::from_millis(150));
        }
    }

    /// Waits until the store's hit counts equal `expected`; on a timeout, shows the difference.
    pub(crate) fn wait_for_counts(&mut self, env: &Env, expected: &BTreeMap<String, i64>) {
        let deadline = Instant::now() + PATIENCE;
        loop {
            let counts = hit_counts(env);
            if &counts == expected {
                return;
            }
            assert!(
                self.alive(),
                "the daemon died before the counts were reached\n--- daemon log\n{}",
                self.log_tail()
            );
            if Instant::now() >= deadline {
                panic!(
                    "hit counts never reached the truth: {}\n--- daemon log\n{}",
                    count_diff(&counts, expected),
                    self.log_tail()
                );
            }
            std::thread::sleep(Duration::from_millis(150));
        }
    }

    /// Waits until the store holds a checkpoint of the file now at `path` at its current end:
    /// every line of it is committed, so its counts are final.
    pub(crate) fn wait_read_to_end(&mut self, env: &Env, path: &Path) {
        let meta = std::fs::metadata(path).expect("stat the log");
        let (dev, inode, size) = (meta.dev(), meta.ino(), meta.len());
        self.wait(
            &format!("{} to be committed to its end ({size})", path.display()),
            env,
            |env| {
                checkpoints(env)
                    .iter()
                    .any(|c| (c.dev, c.inode, c.offset) == (dev, inode, size))
                    .then_some(())
            },
        );
    }

    /// SIGTERM; the daemon must exit successfully within 10 s.
    pub(crate) fn stop(mut self) {
        self.signal(Signal::SIGTERM);
        let deadline = Instant::now() + Duration::from_secs(10);
        let status = loop {
            if let Some(status) = self.child.try_wait().expect("try_wait") {
                break status;
            }
            assert!(
                Instant::now() < deadline,
                "the daemon did not stop on SIGTERM\n--- daemon log\n{}",
                self.log_tail()
            );
            std::thread::sleep(Duration::from_millis(50));
        };
        assert!(
            status.success(),
            "daemon exit {status:?}\n--- daemon log\n{}",
            self.log_tail()
        );
    }

    /// SIGKILL: no chance to commit anything more.
    pub(crate) fn kill(mut self) {
        self.signal(Signal::SIGKILL);
        let _ = self.child.wait();
    }
}

impl Drop for Daemon {
    fn drop(&mut self) {
        if self.alive() {
            let _ = self.child.kill();
            let _ = self.child.wait();
        }
    }
}

/// The patterns of the config as written by `configure`.
fn configured_patterns(env: &Env) -> Vec<String> {
    let text = std::fs::read_to_string(&env.config).expect("read config");
    let value: toml::Table = toml::from_str(&text).expect("config TOML");
    value["logs"]
        .as_array()
        .expect("[[logs]]")
        .iter()
        .flat_map(|l| l["paths"].as_array().expect("paths").clone())
        .map(|p| p.as_str().expect("a path").to_string())
        .collect()
}

/// Runs `read` on the store as the CLI opens it, retried for a while on any store error: on a
/// loaded machine a PostgreSQL connection or query can wait longer than the store's 5 s acquire
/// timeout, which is not what these tests are about.
pub(crate) fn with_store<T>(
    env: &Env,
    what: &str,
    read: impl AsyncFn(&Store) -> Result<T, StoreError>,
) -> T {
    let url = StoreUrl::parse(&env.url).expect("test URL");
    let deadline = Instant::now() + PATIENCE;
    loop {
        let attempt = block_on(async {
            let store = Store::open(&url, Role::Cli).await?;
            let value = read(&store).await;
            store.close().await;
            value
        });
        match attempt {
            Ok(value) => return value,
            Err(e) if Instant::now() < deadline => {
                eprintln!("{what}: {e}; retrying");
                std::thread::sleep(Duration::from_millis(200));
            }
            Err(e) => panic!("{what}: {e}"),
        }
    }
}

/// Exact hit counts of the SSH playbook, per dedupe key.
pub(crate) fn hit_counts(env: &Env) -> BTreeMap<String, i64> {
    with_store(env, "hit counts", async |store| {
        Ok(store.hit_counts(PLAYBOOK).await?.into_iter().collect())
    })
}

pub(crate) fn checkpoints(env: &Env) -> Vec<Checkpoint> {
    with_store(env, "checkpoints", async |store| {
        store.log_checkpoints(NODE).await
    })
}

/// Every incident, through the CLI (retried like `with_store` when the store is slow to answer).
pub(crate) fn incidents(env: &Env) -> Vec<serde_json::Value> {
    let args = [
        "incidents",
        "list",
        "--status",
        "all",
        "--json",
        "--limit",
        "100000",
    ];
    let deadline = Instant::now() + PATIENCE;
    let mut out = env.csirt(&args);
    while !out.status.success() && Instant::now() < deadline {
        eprintln!("incidents list: {}; retrying", stderr(&out));
        std::thread::sleep(Duration::from_millis(200));
        out = env.csirt(&args);
    }
    assert_exit(&out, 0);
    json(&out).as_array().expect("an array").clone()
}

/// The dedupe keys of the SSH incidents, sorted, duplicates kept.
fn incident_keys(env: &Env) -> Vec<String> {
    let all = incidents(env);
    let mut keys: Vec<String> = all
        .iter()
        .map(|i| {
            assert_eq!(i["playbook"], PLAYBOOK, "{i}");
            i["dedupe_key"].as_str().expect("dedupe_key").to_string()
        })
        .collect();
    keys.sort();
    keys
}

/// What differs between two count maps, for failure messages.
pub(crate) fn count_diff(got: &BTreeMap<String, i64>, want: &BTreeMap<String, i64>) -> String {
    let keys: BTreeSet<&String> = got.keys().chain(want.keys()).collect();
    let diffs: Vec<String> = keys
        .into_iter()
        .filter(|k| got.get(*k) != want.get(*k))
        .map(|k| {
            format!(
                "{k}: got {}, want {}",
                got.get(k).copied().unwrap_or(0),
                want.get(k).copied().unwrap_or(0)
            )
        })
        .collect();
    format!(
        "total got {}, want {}; {} keys differ: {}",
        got.values().sum::<i64>(),
        want.values().sum::<i64>(),
        diffs.len(),
        diffs.join("; ")
    )
}

/// The whole truth at the end: exact counts, one incident per banned address and no other.
fn assert_truth(env: &Env, daemon: &mut Daemon, generated: &Generated) {
    daemon.wait_for_counts(env, &generated.counts);
    let keys = incident_keys(env);
    assert_eq!(
        keys,
        generated.banned,
        "incidents must be exactly the banned addresses, one each\n--- daemon log\n{}",
        daemon.log_tail()
    );
}

// ---------------------------------------------------------------------------------------------
// Rotation
// ---------------------------------------------------------------------------------------------

fn rename_and_create_rotation_loses_no_line(backend: Backend) {
    rename_and_create(backend, false);
}

fn rename_and_create_rotation_with_a_glob_matching_the_rotated_name(backend: Backend) {
    rename_and_create(backend, true);
}

/// logrotate's default: auth.log is renamed to auth.log.1 and a new auth.log created, while
/// syslog still holds the old file for a few lines (until its HUP).
fn rename_and_create(backend: Backend, glob_matches_rotated: bool) {
    let env = Env::new(backend);
    let dir = log_dir(&env);
    if glob_matches_rotated {
        // auth.log.1 matches too: it must be recognised as the file already read, not re-read.
        configure(&env, &[format!("{}/auth.log*", dir.display())]);
    } else {
        configure_default(&env);
    }
    let auth = dir.join("auth.log");
    let rotated = dir.join("auth.log.1");
    File::create(&auth).expect("create auth.log");
    let generated = generate(&env, 20_000, 101);
    let mut daemon = Daemon::start(&env);

    let chunks: Vec<&[String]> = generated.lines.chunks(400).collect();
    let (before, after) = chunks.split_at(chunks.len() / 2);
    let mut syslog = OpenOptions::new()
        .append(true)
        .open(&auth)
        .expect("open auth.log");
    for chunk in before {
        syslog
            .write_all(Generated::text(chunk).as_bytes())
            .expect("append");
        syslog.flush().expect("flush");
        std::thread::sleep(Duration::from_millis(10));
    }
    std::fs::rename(&auth, &rotated).expect("rotate");
    // The writer still holds the renamed file: its next lines land there.
    let (held, rest) = after[0].split_at(40);
    syslog
        .write_all(Generated::text(held).as_bytes())
        .expect("append to the rotated file");
    syslog.flush().expect("flush");
    drop(syslog);
    // Reopened after its HUP: a new auth.log, written from now on.
    append(&auth, Generated::text(rest));
    for chunk in &after[1..] {
        append(&auth, Generated::text(chunk));
        std::thread::sleep(Duration::from_millis(10));
    }

    daemon.wait_read_to_end(&env, &rotated);
    daemon.wait_read_to_end(&env, &auth);
    assert_truth(&env, &mut daemon, &generated);
    if glob_matches_rotated {
        // Let the rotated file go (5 s without growth) and be met again under its new name by
        // the glob: it must resume at its checkpoint, not from its beginning.
        let rotated_id = std::fs::metadata(&rotated).expect("stat").ino();
        let log = daemon.log.clone();
        daemon.wait("the rotated file to be let go", &env, |_| {
            std::fs::read_to_string(&log)
                .ok()
                .filter(|log| log.contains("rotated file read to its end; let go"))
                .map(|_| ())
        });
        // Two sweeps later (inotify or the 1 s poll), with a line to wake the reader.
        append(&auth, filler(1));
        daemon.wait_read_to_end(&env, &auth);
        append(&auth, filler(2));
        daemon.wait_read_to_end(&env, &auth);
        assert_eq!(
            hit_counts(&env),
            generated.counts,
            "the rotated file (inode {rotated_id}) was read twice\n--- daemon log\n{}",
            daemon.log_tail()
        );
    }
    daemon.stop();
}

/// The reader can be behind (blocked on a slow store, or between polls) when logrotate runs:
/// the old file's last lines and the new file's first lines are then both waiting. They happened
/// in that order, and a threshold counted in log time must see them in that order: five
/// failures within 40 s from one address open an incident, whatever a failure 11 minutes later
/// in the new file does.
#[test]
fn rotation_while_the_reader_is_behind_keeps_line_order() {
    let (env, auth) = env_with_auth_log(Backend::Sqlite);
    let dir = log_dir(&env);
    let rotated = dir.join("auth.log.1");
    let mut daemon = Daemon::start(&env);
    let ip = "198.51.100.20";
    let mut syslog = OpenOptions::new()
        .append(true)
        .open(&auth)
        .expect("open auth.log");
    for second in [0, 10, 20] {
        syslog
            .write_all(failure(ip, second).as_bytes())
            .expect("append");
    }
    syslog.flush().expect("flush");
    daemon.wait_read_to_end(&env, &auth);
    assert_eq!(hit_counts(&env), BTreeMap::from([(format!("ip={ip}"), 3)]));

    // The reader is held (SIGSTOP stands for a reader blocked on the store) while logrotate
    // renames, syslog writes two more failures to the old file, then its first line to the new.
    daemon.pause();
    std::fs::rename(&auth, &rotated).expect("rotate");
    for second in [30, 40] {
        syslog
            .write_all(failure(ip, second).as_bytes())
            .expect("append");
    }
    syslog.flush().expect("flush");
    drop(syslog);
    append(&auth, failure(ip, 660));
    daemon.resume();

    daemon.wait_for_counts(&env, &BTreeMap::from([(format!("ip={ip}"), 6)]));
    daemon.wait_read_to_end(&env, &rotated);
    daemon.wait_read_to_end(&env, &auth);
    assert_eq!(
        incident_keys(&env),
        [format!("ip={ip}")],
        "five failures within 40 s (the last two read from the rotated file) must open an \
         incident; reading the new file's line first (11 min later) dropped the first three \
         from the window\n--- daemon log\n{}",
        daemon.log_tail()
    );
    daemon.stop();
}

/// copytruncate: the file is copied to auth.log.1 (not matched) and truncated in place; the
/// writer keeps appending to the same inode. Lines written between the copy and the truncation
/// are lost by the method itself (they are in neither file the daemon reads), so none are
/// written there; every line written after the truncation must be counted once.
#[test]
fn copytruncate_rotation_reads_the_new_lines() {
    let (env, auth) = env_with_auth_log(Backend::Sqlite);
    let dir = log_dir(&env);
    let generated = generate(&env, 12_000, 202);
    let mut daemon = Daemon::start(&env);
    // Two thirds before, one third after: after the truncation the file stays shorter than the
    // offset the reader had reached, as when the reader sees the truncation promptly.
    let cut = generated.lines.len() * 2 / 3;
    for chunk in generated.lines[..cut].chunks(500) {
        append(&auth, Generated::text(chunk));
        std::thread::sleep(Duration::from_millis(10));
    }
    // The daemon has read everything before the copy (anything it had not would be only in the
    // copy, which the pattern does not match).
    daemon.wait_read_to_end(&env, &auth);
    let inode = std::fs::metadata(&auth).expect("stat").ino();
    std::fs::copy(&auth, dir.join("auth.log.1")).expect("copy");
    OpenOptions::new()
        .write(true)
        .open(&auth)
        .expect("open for truncation")
        .set_len(0)
        .expect("truncate");
    for chunk in generated.lines[cut..].chunks(500) {
        append(&auth, Generated::text(chunk));
        std::thread::sleep(Duration::from_millis(10));
    }
    assert_eq!(
        std::fs::metadata(&auth).expect("stat").ino(),
        inode,
        "same file"
    );
    daemon.wait_read_to_end(&env, &auth);
    assert_truth(&env, &mut daemon, &generated);
    daemon.stop();
}

/// copytruncate while the reader is behind: by the time it looks, the writer has appended more
/// after the truncation than the file held before, so the size alone does not show the
/// truncation; the file's head (its fingerprint) does. The new lines must all be read, from the
/// beginning of the file.
#[test]
fn copytruncate_while_the_reader_is_behind_reads_the_new_lines() {
    let (env, auth) = env_with_auth_log(Backend::Sqlite);
    let dir = log_dir(&env);
    let mut daemon = Daemon::start(&env);
    let before: String = (0..8).map(filler).collect::<String>()
        + &failure("192.0.2.31", 0)
        + &failure("192.0.2.31", 1);
    append(&auth, &before);
    daemon.wait_read_to_end(&env, &auth);
    daemon.wait_for_counts(&env, &BTreeMap::from([("ip=192.0.2.31".into(), 2)]));

    daemon.pause();
    std::fs::copy(&auth, dir.join("auth.log.1")).expect("copy");
    OpenOptions::new()
        .write(true)
        .open(&auth)
        .expect("open for truncation")
        .set_len(0)
        .expect("truncate");
    let after: String = (0..3)
        .map(|s| failure("192.0.2.32", 10 + s))
        .collect::<String>()
        + &(0..12).map(filler).collect::<String>()
        + &(0..3)
            .map(|s| failure("192.0.2.33", 20 + s))
            .collect::<String>();
    assert!(after.len() as u64 > before.len() as u64);
    append(&auth, &after);
    daemon.resume();

    daemon.wait_for_counts(
        &env,
        &BTreeMap::from([
            ("ip=192.0.2.31".into(), 2),
            ("ip=192.0.2.32".into(), 3),
            ("ip=192.0.2.33".into(), 3),
        ]),
    );
    daemon.wait_read_to_end(&env, &auth);
    daemon.stop();
}

/// Rotations compressed by logrotate carry lines read before they were rotated: a file named
/// like one (here with plain failure lines inside, so that reading it would show) is never read,
/// even where the glob matches it.
#[test]
fn compressed_rotations_are_ignored() {
    let env = Env::new(Backend::Sqlite);
    let dir = log_dir(&env);
    configure(&env, &[format!("{}/auth.log*", dir.display())]);
    let auth = dir.join("auth.log");
    File::create(&auth).expect("create auth.log");
    let mut daemon = Daemon::start(&env);
    // Created after the pattern started, so they would be read from their beginning.
    let compressed = [
        ("auth.log.2.gz", "198.51.100.71"),
        ("auth.log.3.xz", "198.51.100.72"),
        ("auth.log.4.zst", "198.51.100.73"),
        ("auth.log.5.bz2", "198.51.100.74"),
        ("auth.log.6.lz4", "198.51.100.75"),
        ("auth.log.7.zip", "198.51.100.76"),
        ("auth.log.8.Z", "198.51.100.77"),
    ];
    for (name, ip) in compressed {
        append(
            &dir.join(name),
            (0..6).map(|s| failure(ip, s)).collect::<String>(),
        );
    }
    append(&auth, failure("192.0.2.70", 0));
    daemon.wait_for_counts(&env, &BTreeMap::from([("ip=192.0.2.70".into(), 1)]));
    // They grow too, between two more marker lines a sweep apart.
    for (name, ip) in compressed {
        append(&dir.join(name), failure(ip, 10));
    }
    std::thread::sleep(Duration::from_millis(1_200));
    append(&auth, failure("192.0.2.70", 1));
    daemon.wait_read_to_end(&env, &auth);
    std::thread::sleep(Duration::from_millis(1_200));
    append(&auth, failure("192.0.2.70", 2));
    daemon.wait_read_to_end(&env, &auth);
    assert_eq!(
        hit_counts(&env),
        BTreeMap::from([("ip=192.0.2.70".into(), 3)]),
        "only auth.log is read\n--- daemon log\n{}",
        daemon.log_tail()
    );
    assert!(incident_keys(&env).is_empty());
    daemon.stop();
}

// ---------------------------------------------------------------------------------------------
// Crash and restart
// ---------------------------------------------------------------------------------------------

/// Hits and the checkpoint that covers them commit together: a daemon killed mid-ingest leaves
/// no partial batch, and the next one resumes exactly after the last committed line.
fn sigkill_mid_ingest_then_restart_counts_exactly_once(backend: Backend) {
    let (env, auth) = env_with_auth_log(backend);
    let generated = generate(&env, 30_000, 303);
    let mut first = Daemon::start(&env);

    let chunks: Vec<&[String]> = generated.lines.chunks(250).collect();
    let (steady, rest) = chunks.split_at(40);
    let (burst, after) = rest.split_at(20);
    for chunk in steady {
        append(&auth, Generated::text(chunk));
        std::thread::sleep(Duration::from_millis(5));
    }
    first.wait("the first committed hits", &env, |env| {
        (hit_counts(env).values().sum::<i64>() > 0).then_some(())
    });
    // A burst, and the kill right behind it, while the reader and the writer are busy with it.
    for chunk in burst {
        append(&auth, Generated::text(chunk));
    }
    first.kill();
    let written = Generated::text(&generated.lines[..(steady.len() + burst.len()) * 250]);
    let at_kill: i64 = hit_counts(&env).values().sum();
    let written_failures = generated
        .lines
        .iter()
        .take((steady.len() + burst.len()) * 250)
        .filter(|l| l.contains("Failed password for") || l.contains("]: Invalid user "))
        .count();
    eprintln!(
        "killed with {at_kill} of the {written_failures} failures written ({} bytes) committed",
        written.len()
    );
    assert!(
        at_kill as usize <= written_failures,
        "more hits than failure lines written"
    );

    for chunk in after {
        append(&auth, Generated::text(chunk));
    }
    let mut second = Daemon::start(&env);
    second.wait_read_to_end(&env, &auth);
    assert_truth(&env, &mut second, &generated);
    second.stop();
}

// ---------------------------------------------------------------------------------------------
// Hostile input and a vanishing directory
// ---------------------------------------------------------------------------------------------

/// Garbage, NULs, terminal escapes and a 10 MiB line do not stop the reader, do not kill the
/// daemon, and do not forge the captured address.
fn hostile_input_keeps_flowing(backend: Backend) {
    let (env, auth) = env_with_auth_log(backend);
    let mut daemon = Daemon::start(&env);

    // Binary garbage (every byte value, newlines and NULs included), NUL runs, escapes.
    let mut garbage: Vec<u8> = (0..65_536u32)
        .map(|i| (i.wrapping_mul(2_654_435_761) >> 11) as u8)
        .collect();
    garbage.extend_from_slice(b"\n\0\0\0\0\0\0\0\0\n\x1b[2J\x1b[31mred\x1b[0m\x1b]0;owned\x07\n");
    garbage.extend_from_slice(b"\xff\xfe\xfd\xc3\x28\xe2\x82\n");
    append(&auth, &garbage);
    // Matching lines carrying NULs, escapes and invalid UTF-8: counted, and stored.
    append(
        &auth,
        b"Nov  3 10:00:00 it-host sshd[1]: Failed password for ro\0ot from 203.0.113.53 port 22 ssh2\n",
    );
    append(
        &auth,
        "Nov  3 10:00:01 it-host sshd[2]: Failed password for invalid user \u{1b}[31mroot\u{1b}[0m from 203.0.113.51 port 22 ssh2\n",
    );
    append(
        &auth,
        b"Nov  3 10:00:02 it-host sshd[3]: Invalid user \xff\xfe\xc3\x28x from 203.0.113.52 port 22\n",
    );
    // Junk before the time is no syslog line: its program is unknown, so no sshd rule reads it.
    append(
        &auth,
        b"\xff\xfe Nov  3 10:00:02 it-host sshd[3]: Invalid user x from 203.0.113.57 port 22\n",
    );
    // A 10 MiB line without its newline: the reader must not hold it, nor stall behind it.
    append(&auth, vec![b'x'; 10 << 20]);
    // Let the reader meet the unfinished line (setup, not an assertion: any timing must pass).
    std::thread::sleep(Duration::from_millis(1_500));
    let mut tail = String::from("\n");
    for s in 0..5 {
        tail += &failure("203.0.113.50", 100 + s);
    }
    // A user name that forges an address: the captured one is sshd's own, the last.
    tail += "Nov  3 10:03:00 it-host sshd[9]: Failed password for invalid user x from 10.0.0.1 port 1 ssh2 from 203.0.113.9 port 4242 ssh2\n";
    append(&auth, tail);

    daemon.wait_for_counts(
        &env,
        &BTreeMap::from([
            ("ip=203.0.113.50".into(), 5),
            ("ip=203.0.113.51".into(), 1),
            ("ip=203.0.113.52".into(), 1),
            ("ip=203.0.113.53".into(), 1),
            ("ip=203.0.113.9".into(), 1),
        ]),
    );
    daemon.wait_read_to_end(&env, &auth);
    assert_eq!(incident_keys(&env), ["ip=203.0.113.50"]);
    // The cut is reported for `csirt status` (recorded apart from the hits, so polled).
    daemon.wait("the report of the cut line", &env, |env| {
        with_store(env, "recent errors", async |store| {
            store.recent_errors(50).await
        })
        .iter()
        .any(|e| e.message.contains("lines longer than 64 KiB are cut"))
        .then_some(())
    });
    assert!(daemon.alive(), "the daemon survives");
    // Still reading after all that.
    append(&auth, failure("203.0.113.99", 0));
    daemon.wait_for_counts(
        &env,
        &BTreeMap::from([
            ("ip=203.0.113.50".into(), 5),
            ("ip=203.0.113.51".into(), 1),
            ("ip=203.0.113.52".into(), 1),
            ("ip=203.0.113.53".into(), 1),
            ("ip=203.0.113.9".into(), 1),
            ("ip=203.0.113.99".into(), 1),
        ]),
    );
    daemon.stop();
}

/// The log directory is removed while the daemon runs and created again with a new auth.log:
/// its lines are counted. Once after the reader has seen the directory gone, once at once.
#[test]
fn directory_that_disappears_and_comes_back() {
    let (env, auth) = env_with_auth_log(Backend::Sqlite);
    let dir = log_dir(&env);
    let mut daemon = Daemon::start(&env);
    append(
        &auth,
        (0..3).map(|s| failure("192.0.2.61", s)).collect::<String>(),
    );
    let mut expected = BTreeMap::from([("ip=192.0.2.61".to_string(), 3)]);
    daemon.wait_for_counts(&env, &expected);

    // Gone for longer than a sweep (inotify on the directory, or the 1 s poll).
    std::fs::remove_dir_all(&dir).expect("remove the log dir");
    std::thread::sleep(Duration::from_millis(1_500));
    assert!(daemon.alive(), "the daemon survives its log dir vanishing");
    std::fs::create_dir(&dir).expect("recreate the log dir");
    append(
        &auth,
        (0..4).map(|s| failure("192.0.2.62", s)).collect::<String>(),
    );
    expected.insert("ip=192.0.2.62".into(), 4);
    daemon.wait_for_counts(&env, &expected);
    append(&auth, failure("192.0.2.62", 10));
    expected.insert("ip=192.0.2.62".into(), 5);
    daemon.wait_for_counts(&env, &expected);

    // Gone and back at once: the reader may never see the directory missing.
    std::fs::remove_dir_all(&dir).expect("remove the log dir");
    std::fs::create_dir(&dir).expect("recreate the log dir");
    append(
        &auth,
        (0..2).map(|s| failure("192.0.2.63", s)).collect::<String>(),
    );
    expected.insert("ip=192.0.2.63".into(), 2);
    daemon.wait_for_counts(&env, &expected);
    daemon.wait_read_to_end(&env, &auth);
    assert_eq!(incident_keys(&env), ["ip=192.0.2.62"]);
    daemon.stop();
}

// ---------------------------------------------------------------------------------------------
// The dry run
// ---------------------------------------------------------------------------------------------

/// `csirt playbooks test ssh-bruteforce FILE --json` against the generator's truth.
#[test]
fn playbooks_test_json_matches_the_ground_truth() {
    let env = Env::new(Backend::Sqlite);
    let generated = generate(&env, 20_000, 404);
    let file = env.dir.path().join("gen").join("auth-404.log");
    let out = env.csirt(&[
        "playbooks",
        "test",
        PLAYBOOK,
        file.to_str().expect("utf-8 path"),
        "--json",
    ]);
    assert_exit(&out, 0);
    let run = json(&out);
    assert_eq!(run["playbook"], PLAYBOOK);
    assert_eq!(run["lines"], generated.lines.len() as u64);
    assert_eq!(run["matched"], generated.total());
    assert_eq!(run["truncated"], 0);
    let matches = run["matches"].as_array().expect("matches");
    assert_eq!(
        matches.len() as i64,
        generated.total(),
        "one match per line"
    );
    let mut per_ip: BTreeMap<String, i64> = BTreeMap::new();
    let mut last_line = 0;
    for m in matches {
        let line = m["line"].as_u64().expect("line") as usize;
        assert!(line > last_line, "ascending 1-based lines: {m}");
        last_line = line;
        let text = &generated.lines[line - 1];
        let ip = m["fields"]["ip"].as_str().expect("fields.ip");
        match m["rule"].as_str().expect("rule") {
            "failed-password" => assert!(
                text.contains("]: Failed password for ") && !text.contains(" for invalid user "),
                "{m}: {text}"
            ),
            "failed-password-invalid-user" => assert!(
                text.contains("]: Failed password for invalid user "),
                "{m}: {text}"
            ),
            "invalid-user" => assert!(text.contains("]: Invalid user "), "{m}: {text}"),
            other => panic!("unknown rule {other}"),
        }
        assert!(
            text.trim_end()
                .ends_with(&format!("from {ip} port {}", port_of(text))),
            "{m} does not name the address of line {line}: {text}"
        );
        *per_ip.entry(format!("ip={ip}")).or_default() += 1;
    }
    assert_eq!(
        per_ip,
        generated.counts,
        "{}",
        count_diff(&per_ip, &generated.counts)
    );
    let rules = &run["rules"];
    assert_eq!(
        rules["failed-password"].as_i64().unwrap_or(0)
            + rules["failed-password-invalid-user"].as_i64().unwrap_or(0)
            + rules["invalid-user"].as_i64().unwrap_or(0),
        generated.total()
    );
    let mut keys: Vec<String> = run["incidents"]
        .as_array()
        .expect("incidents")
        .iter()
        .map(|i| i["dedupe_key"].as_str().expect("dedupe_key").to_string())
        .collect();
    keys.sort();
    assert_eq!(keys, generated.banned);
}

/// The port (and `ssh2`, for failed-password lines) at the end of an sshd failure line.
fn port_of(line: &str) -> String {
    let line = line.trim_end();
    let words: Vec<&str> = line.split(' ').collect();
    let n = words.len();
    if words[n - 1] == "ssh2" {
        format!("{} ssh2", words[n - 2])
    } else {
        words[n - 1].to_string()
    }
}

/// `csirt status` shows each log file with the position read and how far behind its end.
#[test]
fn status_shows_each_log_with_its_offset_and_lag() {
    let (env, auth) = env_with_auth_log(Backend::Sqlite);
    let mut daemon = Daemon::start(&env);
    append(&auth, (0..20).map(filler).collect::<String>());
    daemon.wait_read_to_end(&env, &auth);
    let size = std::fs::metadata(&auth).expect("stat").len();
    let status = json(&env.csirt(&["status", "--json"]));
    let sources = status["sources"].as_array().expect("sources");
    let source = sources
        .iter()
        .find(|s| s["path"] == auth.display().to_string().as_str())
        .unwrap_or_else(|| panic!("auth.log not in {status}"));
    assert_eq!(source["node"], NODE);
    assert_eq!(source["offset"], size);
    assert_eq!(source["lag_bytes"], 0);
    let text = stdout(&env.csirt(&["status"]));
    assert!(
        text.contains(&format!("{}  位置 {size}  追いついている", auth.display())),
        "{text}"
    );
    daemon.stop();
}

// ---------------------------------------------------------------------------------------------
// Correlation through the daemon
// ---------------------------------------------------------------------------------------------

/// `Accepted … from H` after failures from H raises the incident, even when the daemon was
/// killed between the failures and the login: the open incident, and failures still below the
/// threshold, are in the store, not in the dead process.
fn a_login_after_failures_raises_across_a_sigkill(backend: Backend) {
    let (env, auth) = env_with_auth_log(backend);
    let accepted = |ip: &str, second: u32| {
        format!(
            "Nov  3 10:05:{second:02} it-host sshd[{}]: Accepted password for kitakami from {ip} port 40000 ssh2\n",
            5000 + second
        )
    };
    let mut first = Daemon::start(&env);
    // Five failures from .80 (an incident), three from .81 (below the threshold).
    let mut lines: String = (0..5).map(|s| failure("192.0.2.80", s)).collect();
    lines += &(10..13)
        .map(|s| failure("192.0.2.81", s))
        .collect::<String>();
    append(&auth, lines);
    let mut expected = BTreeMap::new();
    expected.insert("ip=192.0.2.80".to_string(), 5);
    expected.insert("ip=192.0.2.81".to_string(), 3);
    first.wait_for_counts(&env, &expected);
    first.wait_read_to_end(&env, &auth);
    first.kill();
    append(
        &auth,
        accepted("192.0.2.80", 1) + &accepted("192.0.2.81", 2),
    );
    let mut second = Daemon::start(&env);
    second.wait_read_to_end(&env, &auth);
    let raised = second.wait("both incidents raised", &env, |env| {
        let all = incidents(env);
        let raised: Vec<serde_json::Value> = all
            .into_iter()
            .filter(|i| i["severity"] == "critical")
            .collect();
        (raised.len() == 2).then_some(raised)
    });
    for i in &raised {
        let title = i["title"].as_str().expect("title");
        assert!(title.ends_with("(ログイン成功)"), "{title}");
        assert_eq!(i["escalation_level"], 2, "{i}");
    }
    let counts = hit_counts(&env);
    assert_eq!(counts, expected, "the logins are not failures");
    // Failures this daemon reads itself, then a login, raise too; a login from an address
    // that never failed (most logins: the gate lets them pass unmade) raises and records
    // nothing.
    let mut more: String = (20..23).map(|s| failure("192.0.2.82", s)).collect();
    more += &(accepted("192.0.2.82", 30) + &accepted("192.0.2.83", 31));
    append(&auth, more);
    second.wait_read_to_end(&env, &auth);
    let all = second.wait("the third incident raised", &env, |env| {
        let all = incidents(env);
        (all.iter().filter(|i| i["severity"] == "critical").count() == 3).then_some(all)
    });
    assert!(
        all.iter()
            .all(|i| !i["title"].as_str().unwrap_or("").contains("192.0.2.83")),
        "{all:#?}"
    );
    expected.insert("ip=192.0.2.82".to_string(), 3);
    assert_eq!(hit_counts(&env), expected);
    second.stop();
}
