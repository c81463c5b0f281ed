//! End to end through a real Postfix: Debian's package, started by the test as an instance of
//! its own (own config directory, queue, data directory and log file, SMTP on a free loopback
//! port; the system's /etc/postfix instance is never touched), delivering the intake address
//! through the pipe transport of deploy/postfix/master.cf to this build's `csirt intake`.
//!
//! The pipe runs as `nobody`, which owns the test's store, because pipe(8) refuses root and the
//! test must not create system users; the package's `user=csirt` is the same shape.

use crate::helpers::*;
use lettre::address::Envelope;
use lettre::{Address, SmtpTransport, Transport};
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};

/// How long a delivery may take before the test fails (Postfix's pipe is quick; CI is not).
const DELIVERY: Duration = Duration::from_secs(60);

/// The intake address; `intake.test` is routed to the csirt transport by the instance's table.
const INTAKE: &str = "report@intake.test";

/// A Postfix instance of the test's own, stopped when dropped.
struct Postfix {
    etc: PathBuf,
    log: PathBuf,
    port: u16,
}

impl Postfix {
    /// Writes main.cf, master.cf and the transport table under `root` and starts the instance.
    /// The csirt service is the shipped one, with this build's binary and the test's config.
    fn start(root: &Path, config: &Path) -> Postfix {
        let etc = root.join("etc");
        let queue = root.join("queue");
        let data = root.join("data");
        for dir in [&etc, &queue, &data] {
            std::fs::create_dir_all(dir).expect("postfix dir");
        }
        chown(&data, "postfix:postfix");
        let log = root.join("maillog");
        let port = free_port();
        // Short backoff so that a deferred mail is retried while the test watches; the rest
        // keeps the instance on loopback, delivering to the csirt transport and nowhere else
        // (bounces to the test's outside senders are discarded, not looked up in DNS).
        let main_cf = format!(
            "compatibility_level = 3.6
queue_directory = {queue}
data_directory = {data}
mail_owner = postfix
setgid_group = postdrop
myhostname = mx.csirt-test.example
mydomain = csirt-test.example
inet_interfaces = loopback-only
inet_protocols = ipv4
mynetworks = 127.0.0.0/8
smtpd_relay_restrictions = permit_mynetworks, reject_unauth_destination
mydestination =
alias_maps =
alias_database =
local_recipient_maps =
relay_domains = intake.test
transport_maps = texthash:{etc}/transport
csirt_destination_recipient_limit = 1
default_transport = discard:the test instance sends nowhere else
maillog_file = {log}
maillog_file_prefixes = {root}
queue_run_delay = 1s
minimal_backoff_time = 1s
maximal_backoff_time = 2s
",
            queue = queue.display(),
            data = data.display(),
            etc = etc.display(),
            log = log.display(),
            root = root.display(),
        );
        std::fs::write(etc.join("main.cf"), main_cf).expect("main.cf");
        std::fs::write(etc.join("transport"), "intake.test csirt:\n").expect("transport");
        let shipped = std::fs::read_to_string(repo().join("deploy/postfix/master.cf"))
            .expect("deploy/postfix/master.cf");
        let csirt_service = shipped
            .replace("user=csirt", "user=nobody")
            .replace("/usr/bin/csirt", env!("CARGO_BIN_EXE_csirt"))
            .replace("/etc/csirt/csirt.toml", &config.display().to_string());
        assert!(
            csirt_service.contains(&format!("user=nobody argv={}", env!("CARGO_BIN_EXE_csirt"))),
            "the shipped master.cf changed shape: {shipped}"
        );
        // No chroot anywhere: the instance's queue has no copy of /etc for a chroot to use.
        let master_cf = format!(
            "127.0.0.1:{port} inet n - n - - smtpd
pickup    unix  n       -       n       60      1       pickup
cleanup   unix  n       -       n       -       0       cleanup
qmgr      unix  n       -       n       300     1       qmgr
rewrite   unix  -       -       n       -       -       trivial-rewrite
bounce    unix  -       -       n       -       0       bounce
defer     unix  -       -       n       -       0       bounce
trace     unix  -       -       n       -       0       bounce
verify    unix  -       -       n       -       1       verify
flush     unix  n       -       n       1000?   0       flush
proxymap  unix  -       -       n       -       -       proxymap
showq     unix  n       -       n       -       -       showq
error     unix  -       -       n       -       -       error
retry     unix  -       -       n       -       -       error
discard   unix  -       -       n       -       -       discard
anvil     unix  -       -       n       -       1       anvil
scache    unix  -       -       n       -       1       scache
postlog   unix-dgram n  -       n       -       1       postlogd
{csirt_service}"
        );
        std::fs::write(etc.join("master.cf"), master_cf).expect("master.cf");
        let out = Command::new("postfix")
            .arg("-c")
            .arg(&etc)
            .arg("start")
            .output()
            .expect("run postfix start");
        let postfix = Postfix { etc, log, port };
        assert!(
            out.status.success(),
            "postfix start: {}{}\n{}",
            stdout(&out),
            stderr(&out),
            postfix.log_text()
        );
        postfix.wait_for_smtp();
        postfix
    }

    fn log_text(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }

    fn wait_for_smtp(&self) {
        let deadline = Instant::now() + DELIVERY;
        while std::net::TcpStream::connect(("127.0.0.1", self.port)).is_err() {
            assert!(
                Instant::now() < deadline,
                "smtpd never listened on {}: {}",
                self.port,
                self.log_text()
            );
            std::thread::sleep(Duration::from_millis(100));
        }
    }

    /// Sends `raw` over SMTP with the envelope sender `from`; returns Postfix's queue id.
    fn send(&self, from: &str, raw: &[u8]) -> String {
        let envelope = Envelope::new(
            Some(from.parse::<Address>().expect("sender")),
            vec![INTAKE.parse::<Address>().expect("recipient")],
        )
        .expect("envelope");
        let smtp = SmtpTransport::builder_dangerous("127.0.0.1")
            .port(self.port)
            .build();
        let response = smtp
            .send_raw(&envelope, raw)
            .expect("SMTP to the test's Postfix");
        // "250 2.0.0 Ok: queued as 4Zx3Q51Hy9z1"
        let text: String = response.message().collect::<Vec<_>>().join(" ");
        text.rsplit(' ')
            .next()
            .filter(|_| text.contains("queued as"))
            .unwrap_or_else(|| panic!("no queue id in {text:?}"))
            .to_string()
    }

    /// The delivery lines of queue id `qid` in the log (`…: to=<…>, relay=csirt, … status=…`).
    fn deliveries(&self, qid: &str) -> Vec<String> {
        let head = format!("{qid}: to=<{INTAKE}>");
        self.log_text()
            .lines()
            .filter(|l| l.contains(&head))
            .map(str::to_string)
            .collect()
    }

    /// Waits until queue id `qid` has `n` delivery lines; returns them.
    fn wait_deliveries(&self, qid: &str, n: usize) -> Vec<String> {
        let deadline = Instant::now() + DELIVERY;
        loop {
            let lines = self.deliveries(qid);
            if lines.len() >= n {
                return lines;
            }
            assert!(
                Instant::now() < deadline,
                "{qid}: {} of {n} delivery attempts in {DELIVERY:?}:\n{}",
                lines.len(),
                self.log_text()
            );
            std::thread::sleep(Duration::from_millis(100));
        }
    }

    /// Waits for the attempt that delivered `qid` (status=sent); fails on any other end.
    fn wait_sent(&self, qid: &str) -> String {
        let deadline = Instant::now() + DELIVERY;
        loop {
            let lines = self.deliveries(qid);
            if let Some(sent) = lines.iter().find(|l| l.contains("status=sent")) {
                return sent.clone();
            }
            assert!(
                !lines.iter().any(|l| l.contains("status=bounced")),
                "{qid} bounced: {lines:#?}"
            );
            assert!(
                Instant::now() < deadline,
                "{qid} not delivered in {DELIVERY:?}:\n{}",
                self.log_text()
            );
            std::thread::sleep(Duration::from_millis(100));
        }
    }

    /// `postqueue -c DIR ARGS` (as the sysadmin runs it after fixing the cause).
    fn postqueue(&self, args: &[&str]) -> String {
        let out = Command::new("postqueue")
            .arg("-c")
            .arg(&self.etc)
            .args(args)
            .output()
            .expect("run postqueue");
        assert!(out.status.success(), "postqueue {args:?}: {}", stderr(&out));
        stdout(&out)
    }
}

impl Drop for Postfix {
    fn drop(&mut self) {
        // `stop` waits for master to end its children; nothing of the instance outlives the test.
        let _ = Command::new("postfix")
            .arg("-c")
            .arg(&self.etc)
            .arg("stop")
            .output();
    }
}

/// Whether this machine can run the test: Debian's postfix installed, and root (to start an
/// instance and to run the pipe as another user).
fn postfix_available() -> bool {
    if !Path::new("/usr/sbin/postfix").exists() {
        eprintln!(
            "skipped: postfix is not installed (apt-get install postfix; .ci/run installs it)"
        );
        return false;
    }
    if !can_drop_privileges() {
        eprintln!("skipped: starting a Postfix instance needs root and setpriv");
        return false;
    }
    true
}

fn show(env: &Env, id: i64) -> serde_json::Value {
    let out = env.csirt(&["incidents", "show", &id.to_string(), "--json"]);
    assert_exit(&out, 0);
    json(&out)
}

fn incidents(env: &Env) -> Vec<serde_json::Value> {
    let out = env.csirt(&["incidents", "list", "--status", "all", "--json"]);
    assert_exit(&out, 0);
    json(&out).as_array().expect("array").clone()
}

/// Gives the store (its directory, database and WAL files) to `owner`.
fn give_store(var: &Path, owner: &str) {
    for entry in std::fs::read_dir(var).expect("store dir") {
        chown(&entry.expect("store entry").path(), owner);
    }
    chown(var, owner);
}

#[test]
fn postfix_delivers_through_the_csirt_pipe_retries_a_tempfail_and_forged_commands_do_not_act() {
    if !postfix_available() {
        return;
    }
    let env = Env::new(Backend::Sqlite);
    let root = env.dir.path();
    // What the package arranges for user csirt: the config readable, the store its own.
    chmod(root, 0o755);
    chmod(&env.config, 0o644);
    let var = root.join("var");
    give_store(&var, "nobody:nogroup");
    let postfix = Postfix::start(&root.join("postfix"), &env.config);

    // (a) A staff member's report becomes an incident: the pipe exits 0, Postfix says sent.
    let qid = postfix.send("reporter@example.jp", &corpus("utf8_plain.eml"));
    let sent = postfix.wait_sent(&qid);
    assert!(sent.contains("relay=csirt"), "{sent}");
    let all = incidents(&env);
    assert_eq!(all.len(), 1, "{all:#?}");
    let id = all[0]["id"].as_i64().expect("id");
    assert_eq!(all[0]["status"], "open");

    // (c) A forged command: From a contact, In-Reply-To our notification, no reply code; the
    // envelope sender is the attacker's. Delivered (exit 0), noted as unconfirmed, acts on
    // nothing.
    let thread = block_on(async {
        let store = env.store().await;
        let outbox = store.outbox().await.expect("outbox");
        store.close().await;
        outbox[0].message_id.clone()
    });
    let forged = format!(
        "From: duty@example.jp\r\nTo: {INTAKE}\r\nSubject: Re: ホームページの件\r\n\
         Message-ID: <forged-1@evil.example.net>\r\nIn-Reply-To: {thread}\r\n\
         References: {thread}\r\nDate: Wed, 25 Nov 2026 10:00:00 +0900\r\nMIME-Version: 1.0\r\n\
         Content-Type: text/plain; charset=utf-8\r\n\r\nclose: resolved\r\n"
    );
    let qid = postfix.send("mallory@evil.example.net", forged.as_bytes());
    postfix.wait_sent(&qid);
    let after = show(&env, id);
    assert_eq!(after["status"], "open", "a forged command acted: {after}");
    let notes: Vec<(&str, &str)> = after["timeline"]
        .as_array()
        .expect("timeline")
        .iter()
        .filter(|t| t["action"] == "note")
        .map(|t| {
            (
                t["actor"].as_str().expect("actor"),
                t["detail"].as_str().expect("detail"),
            )
        })
        .collect();
    assert_eq!(
        notes,
        [(
            "mail:duty@example.jp",
            "【未確認: 確認コードがないため操作しません】close: resolved"
        )],
        "{after}"
    );

    // (b) The store becomes unreachable for the pipe's user: csirt intake exits 75 naming the
    // user and the permission, Postfix defers and retries by itself, the mail stays queued.
    give_store(&var, "root:root");
    let qid = postfix.send("reporter@example.jp", &corpus("iso2022jp.eml"));
    postfix.wait_deliveries(&qid, 1);
    // The retry is Postfix's own (the mail stays queued, deferred); asking for it at once keeps
    // the test off Postfix's backoff timers, which a loaded machine stretched past a minute.
    postfix.postqueue(&["-i", &qid]);
    let attempts = postfix.wait_deliveries(&qid, 2);
    for attempt in &attempts {
        assert!(attempt.contains("status=deferred"), "{attempts:#?}");
        assert!(
            attempt.contains("user nobody (uid 65534) has no search (x) permission on")
                && attempt.contains("the MTA should retry later"),
            "{attempt}"
        );
    }
    assert!(
        postfix.postqueue(&["-p"]).contains(&qid),
        "{qid} left the queue"
    );
    assert_eq!(incidents(&env).len(), 1, "a deferred mail was taken");
    // The sysadmin fixes the owner and flushes the queue: the same mail goes in, once.
    give_store(&var, "nobody:nogroup");
    postfix.postqueue(&["-f"]);
    postfix.wait_sent(&qid);
    let all = incidents(&env);
    assert_eq!(all.len(), 2, "{all:#?}");
    assert!(
        all.iter().any(|i| i["playbook"] == "device-loss"),
        "the deferred report is not in: {all:#?}"
    );
    assert!(
        !postfix.postqueue(&["-p"]).contains(&qid),
        "{qid} is still queued"
    );
}
