//! Notification mail through a real SMTP server on loopback (Debian's aiosmtpd, with the sink
//! handler in tests/fixtures): delivered, RFC 2047 subject and UTF-8 body as an independent
//! parser (Python's email package) reads them, threaded updates, retried across a server
//! outage without loss or duplicate, and a 5xx refusal recorded and shown by `csirt status`.

use crate::helpers::*;
use crate::logs::{Daemon, append, configure_default, failure, log_dir, with_store};
use crate::on_both_backends;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

/// Debian's interpreter, which has python3-aiosmtpd (the first `python3` on PATH may not).
const PYTHON: &str = "/usr/bin/python3";

/// An aiosmtpd process on 127.0.0.1; killed when dropped.
pub(crate) struct SmtpSink {
    child: Child,
    port: u16,
    dir: PathBuf,
}

impl SmtpSink {
    pub(crate) fn start(port: u16, dir: &Path, mode: &str) -> SmtpSink {
        Self::start_with(port, dir, mode, &[])
    }

    /// With STARTTLS required, offering `cert` (PEM chain) and `key`.
    fn start_tls(port: u16, dir: &Path, cert: &Path, key: &Path) -> SmtpSink {
        let (cert, key) = (cert.display().to_string(), key.display().to_string());
        Self::start_with(port, dir, "accept", &["--tlscert", &cert, "--tlskey", &key])
    }

    fn start_with(port: u16, dir: &Path, mode: &str, tls: &[&str]) -> SmtpSink {
        let child = Command::new(PYTHON)
            .args(["-m", "aiosmtpd", "-n", "-l"])
            .arg(format!("127.0.0.1:{port}"))
            .args(tls)
            .args(["-c", "smtp_sink.Sink"])
            .arg(dir)
            .arg(mode)
            .env("PYTHONPATH", repo().join("tests/fixtures"))
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("start aiosmtpd (apt-get install python3-aiosmtpd)");
        let deadline = Instant::now() + Duration::from_secs(20);
        while std::net::TcpStream::connect(("127.0.0.1", port)).is_err() {
            assert!(
                Instant::now() < deadline,
                "aiosmtpd did not listen on {port}"
            );
            std::thread::sleep(Duration::from_millis(50));
        }
        SmtpSink {
            child,
            port,
            dir: dir.to_path_buf(),
        }
    }

    fn stop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }

    /// The messages received so far, in order.
    pub(crate) fn received(&self) -> Vec<PathBuf> {
        let mut files: Vec<PathBuf> = std::fs::read_dir(&self.dir)
            .map(|d| {
                d.filter_map(|e| e.ok().map(|e| e.path()))
                    .filter(|p| p.extension().is_some_and(|x| x == "eml"))
                    .collect()
            })
            .unwrap_or_default();
        files.sort();
        files
    }
}

impl Drop for SmtpSink {
    fn drop(&mut self) {
        self.stop();
    }
}

/// The config of `configure_default` with mail going to SMTP on `port` (no TLS), fast retries
/// and updates.
pub(crate) fn configure_smtp(env: &Env, port: u16) {
    configure_smtp_with(env, port, "tls = \"none\"\n");
}

fn configure_smtp_with(env: &Env, port: u16, tls: &str) {
    configure_default(env);
    let text = std::fs::read_to_string(&env.config).expect("read config");
    let file_transport = format!(
        "transport = \"file\"\ndir = \"{}/mail\"\n",
        env.dir.path().display()
    );
    assert!(
        text.contains(&file_transport),
        "the helpers' config changed: {text}"
    );
    let text = text.replace(
        &file_transport,
        "transport = \"smtp\"\nupdate_interval = \"1s\"\nretry_after = \"1s\"\n",
    );
    env.write_config(&format!(
        "{text}\n[smtp]\nhost = \"127.0.0.1\"\nport = {port}\n{tls}"
    ));
}

/// A received mail, parsed by Python's email package.
pub(crate) fn read_mail(path: &Path) -> serde_json::Value {
    let out = Command::new(PYTHON)
        .arg(repo().join("tests/fixtures/read_mail.py"))
        .arg(path)
        .output()
        .expect("run read_mail.py");
    assert!(out.status.success(), "read_mail.py: {}", stderr(&out));
    serde_json::from_slice(&out.stdout).expect("read_mail.py JSON")
}

fn five_failures(ip: &str, from: u32) -> String {
    (from..from + 5).map(|s| failure(ip, s)).collect()
}

#[test]
fn smtp_delivery_threads_and_survives_a_server_outage() {
    let env = Env::new(Backend::Sqlite);
    let port = free_port();
    let mut sink = SmtpSink::start(port, &env.dir.path().join("smtp"), "accept");
    configure_smtp(&env, port);
    let auth = log_dir(&env).join("auth.log");
    std::fs::File::create(&auth).expect("create auth.log");
    let mut daemon = Daemon::start(&env);

    append(&auth, five_failures("203.0.113.5", 0));
    let first = daemon.wait("the first mail", &env, |_| sink.received().first().cloned());
    let mail = read_mail(&first);
    assert_eq!(
        mail["subject"],
        "[CSIRT #1] 【重要度:高】【L2】SSH総当たり攻撃 (203.0.113.5)"
    );
    assert_eq!(mail["to"], "duty@example.jp");
    assert_eq!(mail["auto_submitted"], "auto-generated");
    assert_eq!(mail["content_type"], "text/plain");
    assert_eq!(mail["charset"], "utf-8");
    let body = mail["body"].as_str().expect("body");
    assert!(body.contains("新しいインシデントを起票しました"), "{body}");
    assert!(body.contains("csirt incidents ack 1"), "{body}");
    assert!(
        body.contains("Failed password for root from 203.0.113.5"),
        "{body}"
    );
    let thread = mail["message_id"].as_str().expect("Message-ID").to_string();
    assert!(thread.starts_with("<csirt.1.opened."), "{thread}");
    let raw = std::fs::read_to_string(&first).expect("the received mail");
    assert!(raw.contains("\nMIME-Version: 1.0\r\n"), "{raw}");
    // The copy carries the reply code made for its recipient, and says how to answer.
    let code = with_store(&env, "reply-code key", async |store| {
        Ok(store.mail_proof().await?.code(1, "duty@example.jp"))
    });
    assert!(body.contains(&format!("確認コード: {code}")), "{body}");
    assert!(body.contains("返信の 1 行目"), "{body}");
    // Replying with it (the client quotes the notification) acknowledges through the pipe.
    let quoted: String = body.lines().map(|l| format!("> {l}\r\n")).collect();
    let answer = format!(
        "From: duty@example.jp\r\nTo: csirt@example.jp\r\nSubject: Re: [CSIRT #1]\r\n\
         Message-ID: <answer-1@example.jp>\r\nIn-Reply-To: {thread}\r\nMIME-Version: 1.0\r\n\
         Content-Type: text/plain; charset=utf-8\r\n\r\nack\r\n\r\n{quoted}"
    );
    let out = env.intake(answer.as_bytes());
    assert!(
        stderr(&out).contains("acknowledged incident #1"),
        "{}",
        stderr(&out)
    );

    // Everyone is told of the action by mail, in the thread.
    let confirmation = daemon.wait("the confirmation", &env, |_| {
        sink.received().get(1).cloned()
    });
    let confirmation = read_mail(&confirmation);
    assert!(
        confirmation["subject"]
            .as_str()
            .expect("subject")
            .contains("【メール操作】"),
        "{confirmation}"
    );
    assert_eq!(confirmation["in_reply_to"], thread.as_str());

    // More hits: one update (update_interval 1 s, escalator every 10 s), replying to the first.
    append(&auth, five_failures("203.0.113.5", 100));
    let second = daemon.wait("the update mail", &env, |_| sink.received().get(2).cloned());
    let update = read_mail(&second);
    assert!(
        update["subject"]
            .as_str()
            .expect("subject")
            .contains("【続報】"),
        "{update}"
    );
    assert_eq!(update["in_reply_to"], thread.as_str());
    assert_eq!(update["references"], thread.as_str());

    // The server goes away; a new incident's mail waits and is retried, not lost.
    sink.stop();
    append(&auth, five_failures("198.51.100.9", 200));
    daemon.wait("a failed attempt recorded", &env, |env| {
        let rows = with_store(env, "outbox", async |store| Ok(store.outbox().await?));
        rows.iter()
            .any(|r| r.status == "pending" && r.attempts >= 1 && r.last_error.is_some())
            .then_some(())
    });
    let mut sink = SmtpSink::start(port, &sink.dir.clone(), "accept");
    let third = daemon.wait("the mail sent after the outage", &env, |_| {
        sink.received().get(3).cloned()
    });
    assert_eq!(
        read_mail(&third)["subject"],
        "[CSIRT #2] 【重要度:高】【L2】SSH総当たり攻撃 (198.51.100.9)"
    );
    let rows = with_store(&env, "outbox", async |store| Ok(store.outbox().await?));
    assert!(
        rows.iter().all(|r| r.status == "sent"),
        "every row sent: {rows:#?}"
    );
    // Nothing more arrives: no duplicate of a mail that was retried.
    std::thread::sleep(Duration::from_secs(3));
    assert_eq!(sink.received().len(), 4, "{:?}", sink.received());
    daemon.stop();
    sink.stop();
    let _ = sink.port;
}

#[test]
fn a_refused_mail_is_recorded_as_failed_and_shown_by_status() {
    let env = Env::new(Backend::Sqlite);
    let port = free_port();
    let _sink = SmtpSink::start(port, &env.dir.path().join("smtp"), "refuse");
    configure_smtp(&env, port);
    let auth = log_dir(&env).join("auth.log");
    std::fs::File::create(&auth).expect("create auth.log");
    let mut daemon = Daemon::start(&env);
    append(&auth, five_failures("203.0.113.66", 0));
    let error = daemon.wait("the refusal recorded", &env, |env| {
        let rows = with_store(env, "outbox", async |store| Ok(store.outbox().await?));
        rows.iter()
            .find(|r| r.status == "failed")
            .and_then(|r| r.last_error.clone())
    });
    assert!(error.contains("550"), "{error}");
    assert!(error.contains("User unknown"), "{error}");
    let out = env.csirt(&["status"]);
    // A mail that failed today is what monitoring must catch: exit 3, and the text says why.
    assert_exit(&out, 3);
    let text = stdout(&out);
    assert!(text.contains("送信失敗 (failed): 1"), "{text}");
    assert!(text.contains("User unknown"), "{text}");
    assert!(
        text.contains("要対応 (attention): 直近 24 時間にメールの送信失敗が 1 通"),
        "{text}"
    );
    let out = env.csirt(&["status", "--json"]);
    assert_exit(&out, 3);
    let json = json(&out);
    assert_eq!(json["outbox"]["failed"], 1, "{json}");
    assert_eq!(json["outbox"]["failed_recently"], 1, "{json}");
    assert_eq!(json["ok"], false, "{json}");
    daemon.stop();
}

/// A private CA (as the city runs its own) and a server certificate for 127.0.0.1 signed by it,
/// made with openssl in `dir`: returns (ca.pem, server.pem, server.key).
pub(crate) fn private_ca(dir: &Path) -> (PathBuf, PathBuf, PathBuf) {
    let run = |args: &[&str]| {
        let out = Command::new("openssl")
            .args(args)
            .current_dir(dir)
            .output()
            .expect("run openssl");
        assert!(out.status.success(), "openssl {args:?}: {}", stderr(&out));
    };
    std::fs::write(
        dir.join("server.ext"),
        "subjectAltName=IP:127.0.0.1,DNS:localhost\nbasicConstraints=CA:FALSE\n\
         keyUsage=digitalSignature,keyEncipherment\nextendedKeyUsage=serverAuth\n",
    )
    .expect("write server.ext");
    run(&[
        "req",
        "-x509",
        "-newkey",
        "rsa:2048",
        "-nodes",
        "-keyout",
        "ca.key",
        "-out",
        "ca.pem",
        "-days",
        "2",
        "-subj",
        "/CN=Kitakami City test CA",
        "-addext",
        "basicConstraints=critical,CA:TRUE",
        "-addext",
        "keyUsage=critical,keyCertSign",
    ]);
    run(&[
        "req",
        "-newkey",
        "rsa:2048",
        "-nodes",
        "-keyout",
        "server.key",
        "-out",
        "server.csr",
        "-subj",
        "/CN=127.0.0.1",
    ]);
    run(&[
        "x509",
        "-req",
        "-in",
        "server.csr",
        "-CA",
        "ca.pem",
        "-CAkey",
        "ca.key",
        "-CAcreateserial",
        "-out",
        "server.pem",
        "-days",
        "2",
        "-extfile",
        "server.ext",
    ]);
    (
        dir.join("ca.pem"),
        dir.join("server.pem"),
        dir.join("server.key"),
    )
}

/// STARTTLS with rustls: a server whose certificate only the city's CA vouches for is refused
/// (the mail waits and is retried), and accepted once `[smtp] ca_file` names that CA.
#[test]
fn starttls_trusts_the_city_ca_from_ca_file_and_nothing_else() {
    let env = Env::new(Backend::Sqlite);
    let (ca, cert, key) = private_ca(env.dir.path());
    let port = free_port();
    let sink = SmtpSink::start_tls(port, &env.dir.path().join("smtp"), &cert, &key);
    configure_smtp_with(&env, port, "tls = \"starttls\"\n");
    let auth = log_dir(&env).join("auth.log");
    std::fs::File::create(&auth).expect("create auth.log");
    let mut daemon = Daemon::start(&env);
    append(&auth, five_failures("203.0.113.8", 0));
    let error = daemon.wait("the untrusted certificate refused", &env, |env| {
        let rows = with_store(env, "outbox", async |store| Ok(store.outbox().await?));
        rows.first().and_then(|r| r.last_error.clone())
    });
    assert!(error.to_lowercase().contains("certificate"), "{error}");
    assert!(
        sink.received().is_empty(),
        "sent over an unverified connection"
    );
    daemon.stop();

    configure_smtp_with(
        &env,
        port,
        &format!("tls = \"starttls\"\nca_file = \"{}\"\n", ca.display()),
    );
    let mut daemon = Daemon::start(&env);
    let mail = daemon.wait("the mail over STARTTLS", &env, |_| {
        sink.received().first().cloned()
    });
    assert_eq!(
        read_mail(&mail)["subject"],
        "[CSIRT #1] 【重要度:高】【L2】SSH総当たり攻撃 (203.0.113.8)"
    );
    daemon.stop();
}

on_both_backends!(a_refused_address_does_not_silence_the_rest_of_the_group);

/// One address that no longer exists in a contact group: the others still get the mail, and
/// the refused address is recorded as a failure of its own, which `csirt status` shows with the
/// server's answer and exits 3 for (issue #12: it was a WARN in the daemon's log, and status
/// said 0 failures).
fn a_refused_address_does_not_silence_the_rest_of_the_group(backend: Backend) {
    let env = Env::new(backend);
    let port = free_port();
    let sink = SmtpSink::start(port, &env.dir.path().join("smtp"), "refuse-gone");
    configure_smtp(&env, port);
    let text = std::fs::read_to_string(&env.config).expect("config");
    env.write_config(&text.replace(
        "duty = [\"duty@example.jp\"]",
        "duty = [\"gone@example.jp\", \"duty@example.jp\"]",
    ));
    let auth = log_dir(&env).join("auth.log");
    std::fs::File::create(&auth).expect("create auth.log");
    let mut daemon = Daemon::start(&env);
    append(&auth, five_failures("203.0.113.67", 0));
    let mail = daemon.wait("the mail to the rest of the group", &env, |_| {
        sink.received().first().cloned()
    });
    assert_eq!(read_mail(&mail)["to"], "duty@example.jp");
    let row = daemon.wait("the row marked sent", &env, |env| {
        let rows = with_store(env, "outbox", async |store| Ok(store.outbox().await?));
        rows.into_iter().find(|r| r.status == "sent")
    });
    let note = row.last_error.unwrap_or_default();
    assert!(
        note.contains("gone@example.jp") && note.contains("550"),
        "{note}"
    );

    let out = env.csirt(&["status"]);
    assert_exit(&out, 3);
    let text = stdout(&out);
    assert!(
        text.contains("送信失敗 (failed): 0  宛先拒否 (refused): 1"),
        "{text}"
    );
    let refusal_line = text
        .lines()
        .find(|l| l.contains("宛先拒否 gone@example.jp"))
        .unwrap_or_else(|| panic!("no line for the refused address: {text}"));
    assert!(
        refusal_line.contains("550") && refusal_line.contains("User unknown"),
        "{refusal_line}"
    );
    assert!(
        text.contains(
            "要対応 (attention): 直近 24 時間にメールの送信失敗が 0 通、宛先の拒否が 1 件"
        ),
        "{text}"
    );
    let out = env.csirt(&["status", "--json"]);
    assert_exit(&out, 3);
    let json = json(&out);
    assert_eq!(json["outbox"]["refused"], 1, "{json}");
    assert_eq!(json["outbox"]["refused_recently"], 1, "{json}");
    assert_eq!(json["overview"]["outbox_refused"], 1, "{json}");
    let refusal = &json["outbox"]["refusals"][0];
    assert_eq!(refusal["recipient"], "gone@example.jp", "{json}");
    assert_eq!(refusal["outbox_id"], row.id, "{json}");
    assert!(
        refusal["error"].as_str().is_some_and(|e| e.contains("550")),
        "{json}"
    );
    assert_eq!(json["problems"].as_array().map(Vec::len), Some(1), "{json}");
    daemon.stop();
}
