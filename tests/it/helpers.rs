//! Test environments: a temporary directory with a config, playbooks and a fresh store (a SQLite
//! file, or a PostgreSQL database created for the test and dropped after it), and a runner for
//! the real `csirt` binary.

use csirt::config::StoreUrl;
use csirt::model::{Actor, Fields, NewIncident, Severity};
use csirt::store::{NewEvent, Role, Store};
use std::path::{Path, PathBuf};
use std::process::{Command, Output};
use std::sync::atomic::{AtomicU32, Ordering};

/// Which store a test runs on.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Backend {
    Sqlite,
    Postgres,
}

/// Generates `mod name { fn sqlite(); fn postgres() }` for a test body `fn name(Backend)`.
#[macro_export]
macro_rules! on_both_backends {
    ($($name:ident),+ $(,)?) => {$(
        mod $name {
            #[test]
            fn sqlite() {
                super::$name($crate::helpers::Backend::Sqlite)
            }
            #[test]
            fn postgres() {
                if $crate::helpers::postgres_url().is_some() {
                    super::$name($crate::helpers::Backend::Postgres)
                }
            }
        }
    )+};
}

/// The PostgreSQL server URL for tests (no database part), when set. CI sets it; on CI a missing
/// URL is a failure, not a silent skip, so the PostgreSQL half of the suite cannot vanish.
pub fn postgres_url() -> Option<String> {
    match std::env::var("CSIRT_TEST_PG_URL") {
        Ok(url) if !url.is_empty() => Some(url.trim_end_matches('/').to_string()),
        _ if std::env::var_os("CI").is_some() => panic!("CI is set but CSIRT_TEST_PG_URL is not"),
        _ => None,
    }
}

/// A runtime for the async store API from synchronous tests.
pub fn block_on<F: std::future::Future>(f: F) -> F::Output {
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("a tokio runtime for the test")
        .block_on(f)
}

static COUNTER: AtomicU32 = AtomicU32::new(0);

/// A PostgreSQL database that lives as long as the test.
struct PgDatabase {
    server: String,
    name: String,
}

impl PgDatabase {
    fn create(server: &str) -> PgDatabase {
        let name = format!(
            "csirt_it_{}_{}_{}",
            std::process::id(),
            COUNTER.fetch_add(1, Ordering::Relaxed),
            chrono::Utc::now().timestamp_subsec_nanos()
        );
        admin(server, &format!("CREATE DATABASE {name}"));
        PgDatabase {
            server: server.to_string(),
            name,
        }
    }
}

/// Runs one statement on the server's `postgres` database, on a thread of its own so that it
/// works from inside and outside a runtime alike.
fn admin(server: &str, sql: &str) {
    let (server, sql) = (server.to_string(), sql.to_string());
    std::thread::spawn(move || {
        block_on(async {
            use sqlx::Connection;
            let mut conn = sqlx::PgConnection::connect(&format!("{server}/postgres")).await?;
            sqlx::query(&sql).execute(&mut conn).await?;
            conn.close().await
        })
    })
    .join()
    .expect("admin thread")
    .expect("PostgreSQL admin statement");
}

impl Drop for PgDatabase {
    fn drop(&mut self) {
        admin(
            &self.server,
            &format!("DROP DATABASE IF EXISTS {} WITH (FORCE)", self.name),
        );
    }
}

/// One test's world: a directory, a config, playbooks and a store.
pub struct Env {
    pub dir: tempfile::TempDir,
    pub config: PathBuf,
    pub url: String,
    _pg: Option<PgDatabase>,
}

impl Env {
    /// A migrated store on `backend` with the repository's playbooks.
    pub fn new(backend: Backend) -> Env {
        let env = Env::unmigrated(backend);
        let out = env.csirt(&["db", "migrate"]);
        assert!(out.status.success(), "db migrate: {}", stderr(&out));
        env
    }

    /// Like `new`, without running the migrations.
    pub fn unmigrated(backend: Backend) -> Env {
        let dir = tempfile::tempdir().expect("temp dir");
        let (url, pg) = match backend {
            Backend::Sqlite => (
                format!("sqlite://{}/var/csirt.db", dir.path().display()),
                None,
            ),
            Backend::Postgres => {
                let server = postgres_url().expect("PostgreSQL tests need CSIRT_TEST_PG_URL");
                let db = PgDatabase::create(&server);
                (format!("{server}/{}", db.name), Some(db))
            }
        };
        let playbooks = dir.path().join("playbooks");
        std::fs::create_dir(&playbooks).expect("playbook dir");
        for entry in std::fs::read_dir(repo().join("playbooks")).expect("repository playbooks") {
            let path = entry.expect("playbook entry").path();
            std::fs::copy(&path, playbooks.join(path.file_name().expect("file name")))
                .expect("copy playbook");
        }
        let config = dir.path().join("csirt.toml");
        std::fs::write(&config, config_text(&url, &playbooks, dir.path())).expect("write config");
        Env {
            dir,
            config,
            url,
            _pg: pg,
        }
    }

    /// Runs `csirt --config <ours> ARGS` with a clean environment for the variables it reads.
    pub fn csirt(&self, args: &[&str]) -> Output {
        self.command(args).output().expect("run csirt")
    }

    /// The command `csirt` would run, for tests that need to adjust it.
    pub fn command(&self, args: &[&str]) -> Command {
        let mut cmd = Command::new(env!("CARGO_BIN_EXE_csirt"));
        cmd.arg("--config").arg(&self.config).args(args);
        cmd.env_remove("CSIRT_CONFIG")
            .env_remove("CSIRT_DATABASE_URL")
            .env_remove("RUST_LOG");
        cmd
    }

    /// The store, opened as the CLI opens it.
    pub async fn store(&self) -> Store {
        let url = StoreUrl::parse(&self.url).expect("test URL");
        Store::open(&url, Role::Cli).await.expect("open test store")
    }

    /// Opens an incident of `playbook` keyed `key`, with one evidence line; returns its id.
    pub fn open(&self, playbook: &str, key: &str, title: &str, severity: Severity) -> i64 {
        block_on(async {
            let store = self.store().await;
            let id = store
                .open_incident(
                    &incident(playbook, key, title, severity),
                    &[event(key)],
                    &Actor::daemon(),
                )
                .await
                .expect("open incident");
            store.close().await;
            id
        })
    }

    /// The mail composer the daemon would build from this environment's config and playbooks.
    pub fn composer(&self) -> csirt::compose::Composer {
        let config = csirt::config::Config::load(&self.config).expect("test config");
        let contacts = config.contacts.keys().cloned().collect();
        let playbooks =
            csirt::playbook::load(&config.playbooks, Some(&contacts)).expect("test playbooks");
        csirt::compose::Composer::new(&config, &playbooks, None).expect("composer")
    }

    /// Rewrites the config, for tests of bad configs.
    pub fn write_config(&self, text: &str) {
        std::fs::write(&self.config, text).expect("write config");
    }

    /// The playbook directory of this environment.
    pub fn playbooks(&self) -> PathBuf {
        self.dir.path().join("playbooks")
    }
}

/// The config every test starts from.
pub fn config_text(url: &str, playbooks: &Path, dir: &Path) -> String {
    format!(
        r#"playbooks = "{}"

[store]
url = "{url}"

[[logs]]
paths = ["{}/log/*.log"]

[notify]
to = ["duty"]
from = "csirt@example.jp"
transport = "file"
dir = "{}/mail"

[contacts]
duty = ["duty@example.jp"]
lead = ["lead@example.jp"]
tokatsu = ["tokatsu@example.jp"]
ciso = ["ciso@example.jp"]
"#,
        playbooks.display(),
        dir.display(),
        dir.display()
    )
}

/// A new incident as the engine would open it.
pub fn incident(playbook: &str, key: &str, title: &str, severity: Severity) -> NewIncident {
    let mut fields = Fields::new();
    fields.insert("ip".into(), key.into());
    let now = csirt::model::now();
    NewIncident {
        playbook: playbook.into(),
        category: "不正アクセス".into(),
        title: title.into(),
        severity,
        dedupe_key: key.into(),
        fields,
        first_seen: now,
        last_seen: now,
        event_count: 1,
    }
}

/// One matched log line.
pub fn event(ip: &str) -> NewEvent {
    let mut fields = Fields::new();
    fields.insert("ip".into(), ip.into());
    NewEvent {
        kind: "log",
        rule: "failed-password".into(),
        source: "/var/log/auth.log".into(),
        locator: "42".into(),
        observed_at: csirt::model::now(),
        text: format!("sshd[123]: Failed password for root from {ip} port 22 ssh2"),
        fields,
    }
}

/// The repository root.
pub fn repo() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

/// A process's stdout as text.
pub fn stdout(out: &Output) -> String {
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// A process's stderr as text.
pub fn stderr(out: &Output) -> String {
    String::from_utf8_lossy(&out.stderr).into_owned()
}

/// Parses a process's stdout as JSON.
pub fn json(out: &Output) -> serde_json::Value {
    serde_json::from_slice(&out.stdout)
        .unwrap_or_else(|e| panic!("stdout is not JSON ({e}): {}", stdout(out)))
}

/// Asserts an exit code, showing both streams when it differs.
#[track_caller]
pub fn assert_exit(out: &Output, code: i32) {
    assert_eq!(
        out.status.code(),
        Some(code),
        "exit status\n--- stdout\n{}\n--- stderr\n{}",
        stdout(out),
        stderr(out)
    );
}

/// A playbook with a statutory deadline (reminded a day ahead), for tests of deadlines.
pub const LEAK_PLAYBOOK: &str = r#"id = "leak"
title = "情報漏えい ({ip})"
category = "情報漏えい"
severity = "critical"
dedupe = ["ip"]
[[rule]]
source = "log"
pattern = '^leak from (?P<ip>\S+)'
[[step]]
text = "漏えいした情報の範囲を確認する"
[[deadline]]
name = "個人情報保護委員会への速報"
within = "3d"
remind_before = "1d"
"#;

/// A failed-password hit of the SSH playbook from `ip`, observed `at`, with the line `text`.
pub fn ssh_hit_with(
    set: &csirt::playbook::PlaybookSet,
    ip: &str,
    locator: String,
    at: chrono::DateTime<chrono::Utc>,
    text: String,
) -> csirt::engine::Hit {
    let playbook = set.get("ssh-bruteforce").expect("ssh playbook");
    let mut fields = Fields::new();
    fields.insert("ip".into(), ip.into());
    csirt::engine::Hit::new(
        playbook,
        &playbook.rules[0],
        fields,
        "log",
        "/var/log/auth.log".into(),
        locator,
        at,
        text,
    )
}

/// A batch of `hits` from node-a, without checkpoints.
pub fn batch(hits: Vec<csirt::engine::Hit>) -> csirt::engine::Batch {
    csirt::engine::Batch {
        node: "node-a".into(),
        hits,
        ..Default::default()
    }
}

/// A port nothing listens on now (for a test server on loopback).
pub fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .map(|a| a.port())
        .expect("a free port")
}

/// A message of the intake corpus in tests/fixtures/mail.
pub fn corpus(name: &str) -> Vec<u8> {
    let path = repo().join("tests/fixtures/mail").join(name);
    std::fs::read(&path).unwrap_or_else(|e| panic!("{}: {e}", path.display()))
}

impl Env {
    /// `csirt intake` with `raw` on stdin.
    pub fn intake(&self, raw: &[u8]) -> Output {
        use std::io::Write;
        let mut child = self
            .command(&["intake"])
            .stdin(std::process::Stdio::piped())
            .stdout(std::process::Stdio::piped())
            .stderr(std::process::Stdio::piped())
            .spawn()
            .expect("spawn csirt intake");
        // The child may stop reading early (a message over the limit): a broken pipe is its right.
        let _ = child.stdin.take().expect("stdin").write_all(raw);
        child.wait_with_output().expect("wait for csirt intake")
    }
}

/// Whether this test process may run commands as another user (root, with util-linux's
/// `setpriv`): permission errors only show when the kernel can refuse, and it refuses root
/// nothing.
pub fn can_drop_privileges() -> bool {
    let root = std::fs::read_to_string("/proc/self/status")
        .map(|s| {
            s.lines()
                .any(|l| l.starts_with("Uid:") && l.split_whitespace().nth(2) == Some("0"))
        })
        .unwrap_or(false);
    root && Command::new("setpriv")
        .arg("--version")
        .output()
        .is_ok_and(|o| o.status.success())
}

/// Changes the mode of `path` (a test adjusting who may reach what).
pub fn chmod(path: &Path, mode: u32) {
    use std::os::unix::fs::PermissionsExt;
    std::fs::set_permissions(path, std::fs::Permissions::from_mode(mode))
        .unwrap_or_else(|e| panic!("chmod {mode:o} {}: {e}", path.display()));
}

/// Changes the owner of `path` to the user and group named (as `chown user:group path`).
pub fn chown(path: &Path, owner: &str) {
    let out = Command::new("chown")
        .arg(owner)
        .arg(path)
        .output()
        .expect("run chown");
    assert!(
        out.status.success(),
        "chown {owner} {}: {}",
        path.display(),
        stderr(&out)
    );
}

impl Env {
    /// `csirt intake` with `raw` on stdin, run as `nobody:nogroup` with no supplementary groups,
    /// as an `/etc/aliases` pipe would run it. Needs `can_drop_privileges()`.
    pub fn intake_as_nobody(&self, raw: &[u8]) -> Output {
        use std::io::Write;
        let mut child = Command::new("setpriv")
            .args(["--reuid=nobody", "--regid=nogroup", "--clear-groups", "--"])
            .arg(env!("CARGO_BIN_EXE_csirt"))
            .arg("--config")
            .arg(&self.config)
            .arg("intake")
            .env_remove("CSIRT_CONFIG")
            .env_remove("CSIRT_DATABASE_URL")
            .env_remove("RUST_LOG")
            .stdin(std::process::Stdio::piped())
            .stdout(std::process::Stdio::piped())
            .stderr(std::process::Stdio::piped())
            .spawn()
            .expect("spawn setpriv csirt intake");
        let _ = child.stdin.take().expect("stdin").write_all(raw);
        child.wait_with_output().expect("wait for csirt intake")
    }
}

/// The names in `dir`, sorted (none if it cannot be read).
pub fn files(dir: &Path) -> Vec<String> {
    let mut names: Vec<String> = std::fs::read_dir(dir)
        .map(|d| {
            d.filter_map(|e| e.ok())
                .map(|e| e.file_name().to_string_lossy().into_owned())
                .collect()
        })
        .unwrap_or_default();
    names.sort();
    names
}
