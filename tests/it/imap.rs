//! IMAP intake against a real Dovecot on loopback (Debian's dovecot-imapd, started here with a
//! configuration of its own): messages taken once each, new ones seen through IDLE, nothing
//! taken twice across a restart, and implicit TLS verified against the city's own CA.

use crate::helpers::*;
use crate::logs::{Daemon, configure_default};
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};

const DOVECOT: &str = "/usr/sbin/dovecot";

/// A Dovecot instance serving `csirt` / `secret` on 127.0.0.1; stopped when dropped.
struct Dovecot {
    config: PathBuf,
    port: u16,
}

impl Dovecot {
    /// Starts Dovecot in `dir`; with `tls`, `(cert, key)` serve implicit TLS instead of plain.
    fn start(dir: &Path, tls: Option<(&Path, &Path)>) -> Dovecot {
        let port = free_port();
        let mail = dir.join("imap-mail");
        std::fs::create_dir_all(&mail).expect("mail dir");
        // Dovecot delivers as an unprivileged uid (nobody); the directory must let it write.
        std::fs::set_permissions(&mail, std::os::unix::fs::PermissionsExt::from_mode(0o777))
            .expect("chmod mail dir");
        std::fs::write(dir.join("imap-users"), "csirt:{PLAIN}secret\n").expect("users");
        let (ssl, listener) = match tls {
            Some((cert, key)) => (
                format!(
                    "ssl = required\nssl_cert = <{}\nssl_key = <{}\n",
                    cert.display(),
                    key.display()
                ),
                format!(
                    "inet_listener imap {{\n    port = 0\n  }}\n  inet_listener imaps {{\n    address = 127.0.0.1\n    port = {port}\n    ssl = yes\n  }}"
                ),
            ),
            None => (
                "ssl = no\ndisable_plaintext_auth = no\n".to_string(),
                format!(
                    "inet_listener imap {{\n    address = 127.0.0.1\n    port = {port}\n  }}\n  inet_listener imaps {{\n    port = 0\n  }}"
                ),
            ),
        };
        let d = dir.display();
        let config = dir.join("dovecot.conf");
        std::fs::write(
            &config,
            format!(
                "protocols = imap\nlisten = 127.0.0.1\nbase_dir = {d}/dovecot-run\n\
                 state_dir = {d}/dovecot-run/state\ninstance_name = csirt-test-{port}\n{ssl}\
                 auth_mechanisms = plain login\nmail_location = maildir:{d}/imap-mail/%u\n\
                 log_path = {d}/dovecot.log\nmail_uid = 65534\nmail_gid = 65534\nfirst_valid_uid = 1\n\
                 passdb {{\n  driver = passwd-file\n  args = scheme=PLAIN username_format=%u {d}/imap-users\n}}\n\
                 userdb {{\n  driver = static\n  args = uid=65534 gid=65534 home={d}/imap-mail/%u\n}}\n\
                 service imap-login {{\n  {listener}\n}}\n\
                 service stats {{\n  unix_listener stats-reader {{\n    mode = 0666\n  }}\n  unix_listener stats-writer {{\n    mode = 0666\n  }}\n}}\n"
            ),
        )
        .expect("write dovecot.conf");
        // Dovecot forks into the background, keeping any pipe it was given open: its output
        // goes to its log file instead, and only its exit status is awaited.
        let status = Command::new(DOVECOT)
            .arg("-c")
            .arg(&config)
            .stdin(std::process::Stdio::null())
            .stdout(std::process::Stdio::null())
            .stderr(std::process::Stdio::null())
            .status()
            .expect("start dovecot (apt-get install dovecot-imapd)");
        assert!(
            status.success(),
            "dovecot: {status}; its log: {}",
            std::fs::read_to_string(dir.join("dovecot.log")).unwrap_or_default()
        );
        let deadline = Instant::now() + Duration::from_secs(20);
        while std::net::TcpStream::connect(("127.0.0.1", port)).is_err() {
            assert!(
                Instant::now() < deadline,
                "dovecot did not listen on {port}"
            );
            std::thread::sleep(Duration::from_millis(50));
        }
        Dovecot { config, port }
    }

    /// Appends a message to INBOX with Python's imaplib (a client that is not ours).
    fn append(&self, raw: &[u8], tls_ca: Option<&Path>) {
        let dir = tempfile::tempdir().expect("temp");
        let file = dir.path().join("message.eml");
        std::fs::write(&file, raw).expect("write message");
        let script = match tls_ca {
            Some(ca) => format!(
                "import imaplib,ssl\nc=ssl.create_default_context(cafile={ca:?})\n\
                 m=imaplib.IMAP4_SSL('127.0.0.1',{},ssl_context=c)\n",
                self.port,
                ca = ca.display().to_string()
            ),
            None => format!(
                "import imaplib\nm=imaplib.IMAP4('127.0.0.1',{})\n",
                self.port
            ),
        } + &format!(
            "m.login('csirt','secret')\nm.select('INBOX')\n\
             m.append('INBOX',None,None,open({:?},'rb').read())\nm.logout()\n",
            file.display().to_string()
        );
        let out = Command::new("/usr/bin/python3")
            .args(["-c", &script])
            .output()
            .expect("run python3");
        assert!(out.status.success(), "imaplib append: {}", stderr(&out));
    }
}

impl Drop for Dovecot {
    fn drop(&mut self) {
        let _ = Command::new(DOVECOT)
            .arg("-c")
            .arg(&self.config)
            .arg("stop")
            .stdin(std::process::Stdio::null())
            .stdout(std::process::Stdio::null())
            .stderr(std::process::Stdio::null())
            .status();
    }
}

fn configure_imap(env: &Env, port: u16, tls: &str) {
    configure_default(env);
    let text = std::fs::read_to_string(&env.config).expect("config");
    std::fs::write(env.dir.path().join("imap-password"), "secret\n").expect("password");
    // A password_file others can read is refused.
    std::fs::set_permissions(
        env.dir.path().join("imap-password"),
        std::os::unix::fs::PermissionsExt::from_mode(0o640),
    )
    .expect("chmod");
    env.write_config(&format!(
        "{text}\n[intake.imap]\nhost = \"127.0.0.1\"\nport = {port}\nusername = \"csirt\"\n\
         password_file = \"{}\"\n{tls}",
        env.dir.path().join("imap-password").display()
    ));
}

/// Incidents so far: each test message opens one.
fn incident_count(env: &Env) -> usize {
    let out = env.csirt(&["incidents", "list", "--status", "all", "--json"]);
    json(&out).as_array().expect("array").len()
}

#[test]
fn imap_messages_are_taken_once_and_new_ones_arrive_through_idle() {
    let env = Env::new(Backend::Sqlite);
    let dovecot = Dovecot::start(env.dir.path(), None);
    dovecot.append(&corpus("utf8_plain.eml"), None);
    dovecot.append(&corpus("shift_jis.eml"), None);
    configure_imap(&env, dovecot.port, "tls = \"none\"\n");
    let mut daemon = Daemon::start(&env);
    daemon.wait("the two waiting messages", &env, |env| {
        (incident_count(env) == 2).then_some(())
    });
    // Delivered while the daemon idles: IDLE wakes it (polling would take 30 s).
    let appended = Instant::now();
    dovecot.append(&corpus("iso2022jp.eml"), None);
    daemon.wait("the message delivered during IDLE", &env, |env| {
        (incident_count(env) == 3).then_some(())
    });
    assert!(
        appended.elapsed() < Duration::from_secs(20),
        "not through IDLE: {:?}",
        appended.elapsed()
    );
    daemon.stop();
    // A restart reads nothing twice.
    let daemon = Daemon::start(&env);
    std::thread::sleep(Duration::from_secs(2));
    assert_eq!(incident_count(&env), 3);
    let titles = stdout(&env.csirt(&["incidents", "list", "--status", "all"]));
    assert!(titles.contains("①㈱北上システム～障害連絡"), "{titles}");
    daemon.stop();
}

#[test]
fn imap_over_tls_trusts_the_city_ca() {
    let env = Env::new(Backend::Sqlite);
    let (ca, cert, key) = crate::mail_out::private_ca(env.dir.path());
    let dovecot = Dovecot::start(env.dir.path(), Some((&cert, &key)));
    dovecot.append(&corpus("euc_jp.eml"), Some(&ca));
    configure_imap(
        &env,
        dovecot.port,
        &format!("tls = \"tls\"\nca_file = \"{}\"\n", ca.display()),
    );
    let mut daemon = Daemon::start(&env);
    daemon.wait("the message over TLS", &env, |env| {
        (incident_count(env) == 1).then_some(())
    });
    daemon.stop();
}
