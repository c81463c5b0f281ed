//! Mail intake through the real binary: `csirt intake` on stdin with the corpus in
//! tests/fixtures/mail (both backends), replies that thread and act, a store that is away, and
//! a Maildir watched by the daemon.

use crate::helpers::*;
use crate::on_both_backends;
use csirt::engine::rate::RateLimit;
use std::path::{Path, PathBuf};

on_both_backends!(
    the_corpus_goes_in_with_the_right_outcomes,
    replies_thread_as_notes_and_contacts_act_by_mail,
);

fn incidents(env: &Env) -> Vec<serde_json::Value> {
    let out = env.csirt(&["incidents", "list", "--status", "all", "--json"]);
    assert_exit(&out, 0);
    json(&out).as_array().expect("array").clone()
}

fn by_playbook<'a>(all: &'a [serde_json::Value], playbook: &str) -> Vec<&'a serde_json::Value> {
    all.iter().filter(|i| i["playbook"] == playbook).collect()
}

fn the_corpus_goes_in_with_the_right_outcomes(backend: Backend) {
    let env = Env::new(backend);
    for name in [
        "utf8_plain.eml",
        "iso2022jp.eml",
        "shift_jis.eml",
        "euc_jp.eml",
        "crlf_escape_subject.eml",
        "nul_bytes.eml",
        "eightbit_headers.eml",
        "broken_boundary.eml",
        "unknown_charset.eml",
        "truncated_base64.eml",
        "broken_encoded_word.eml",
    ] {
        let out = env.intake(&corpus(name));
        assert_exit(&out, 0);
        assert!(
            stderr(&out).contains("opened incident #"),
            "{name}: {}",
            stderr(&out)
        );
    }
    let all = incidents(&env);
    let titles: Vec<&str> = by_playbook(&all, "intake")
        .iter()
        .map(|i| i["title"].as_str().expect("title"))
        .collect();
    // The ISO-2022-JP report of a lost USB memory goes to its own playbook.
    let loss = by_playbook(&all, "device-loss");
    assert_eq!(loss.len(), 1, "{all:#?}");
    assert_eq!(
        loss[0]["title"],
        "端末・記録媒体の紛失・盗難: USBメモリを紛失しました"
    );
    for want in [
        "報告受付: ホームページの表示がおかしい",
        "報告受付: ①㈱北上システム～障害連絡",
        "報告受付: ウイルス検知のお知らせ",
        "報告受付: 生のUTF-8ヘッダ",
    ] {
        assert!(titles.contains(&want), "{want} not in {titles:#?}");
    }
    for title in &titles {
        assert!(
            !title.chars().any(|c| c.is_control()),
            "a control character survived into a title: {title:?}"
        );
    }

    // Two staff forward the same message: one incident, both reporters; an inline forward of
    // another campaign: another.
    for (name, want) in [
        ("report_staff1.eml", "opened incident #"),
        ("report_staff2.eml", "joined incident #"),
        ("report_inline.eml", "opened incident #"),
    ] {
        let out = env.intake(&corpus(name));
        assert_exit(&out, 0);
        assert!(stderr(&out).contains(want), "{name}: {}", stderr(&out));
    }
    let all = incidents(&env);
    let reports = by_playbook(&all, "phishing-report");
    assert_eq!(reports.len(), 2, "{reports:#?}");
    let campaign = reports
        .iter()
        .find(|i| i["event_count"] == 2)
        .expect("the campaign reported twice");
    assert_eq!(
        campaign["title"],
        "標的型攻撃メールの報告: 【至急】マイナンバー関連書類のご確認"
    );
    let fields = &campaign["fields"];
    assert_eq!(
        fields["reporters"],
        "staff1@city.kitakami.example.jp, staff2@city.kitakami.example.jp"
    );
    assert_eq!(fields["from"], "soumu@iwate-pref.example.com");
    assert_eq!(fields["return_path"], "bounce@attacker.example");
    assert!(
        fields["urls"]
            .as_str()
            .expect("urls")
            .contains("https://login.iwate-pref.example.com.attacker.example/verify?id=4711")
    );
    assert!(
        fields["attachments"]
            .as_str()
            .expect("attachments")
            .contains("請求書.pdf.zip (application/zip, 1028 bytes, sha256 ")
    );

    // Redelivery changes nothing.
    let before = incidents(&env);
    for name in ["report_staff1.eml", "utf8_plain.eml"] {
        let out = env.intake(&corpus(name));
        assert_exit(&out, 0);
        assert!(stderr(&out).contains("already stored"), "{}", stderr(&out));
    }
    assert_eq!(incidents(&env), before);

    // Not mail: quarantined, exit 65, and csirt status counts it.
    let out = env.intake(&corpus("not_mail.eml"));
    assert_exit(&out, 65);
    assert!(
        stderr(&out).contains("not a mail message"),
        "{}",
        stderr(&out)
    );
    let status = json(&env.csirt(&["status", "--json"]));
    assert_eq!(status["overview"]["quarantined_mails"], 1, "{status}");

    // Every new incident has its first mail, with a clean subject.
    block_on(async {
        let store = env.store().await;
        let outbox = store.outbox().await.expect("outbox");
        assert_eq!(outbox.len(), 11 + 2, "{outbox:#?}");
        for row in &outbox {
            assert!(
                !row.subject.chars().any(|c| c.is_control()),
                "{:?}",
                row.subject
            );
        }
        store.close().await;
    });
}

fn replies_thread_as_notes_and_contacts_act_by_mail(backend: Backend) {
    let env = Env::new(backend);
    let out = env.intake(&corpus("utf8_plain.eml"));
    assert_exit(&out, 0);
    let id = incidents(&env)[0]["id"].as_i64().expect("id");
    let (thread, duty_code, lead_code) = block_on(async {
        let store = env.store().await;
        let outbox = store.outbox().await.expect("outbox");
        let proof = store.mail_proof().await.expect("reply-code key");
        store.close().await;
        (
            outbox[0].message_id.clone(),
            proof.code(id, "duty@example.jp"),
            proof.code(id, "lead@example.jp"),
        )
    });
    let reply = |from: &str, subject: &str, in_reply_to: &str, body: &str, n: u32| {
        format!(
            "From: {from}\r\nTo: csirt@example.jp\r\nSubject: {subject}\r\n\
             Message-ID: <reply-{n}@example.jp>\r\nIn-Reply-To: {in_reply_to}\r\n\
             Date: Wed, 25 Nov 2026 10:00:00 +0900\r\nMIME-Version: 1.0\r\n\
             Content-Type: text/plain; charset=utf-8\r\n\r\n{body}\r\n"
        )
        .into_bytes()
    };
    // Someone outside the contacts replies with a command: only a note.
    let out = env.intake(&reply(
        "citizen@example.net",
        &format!("Re: [CSIRT #{id}] 【重要度:中】報告受付"),
        "<nothing@example.net>",
        "close: resolved\r\nもう直りました",
        1,
    ));
    assert_exit(&out, 0);
    assert!(
        stderr(&out).contains(&format!("noted on incident #{id}")),
        "{}",
        stderr(&out)
    );
    // A forged From: a contact's address, a reply to our notification, but no reply code (or
    // another recipient's): a note marked unconfirmed, nothing acts.
    for (n, code) in [(5, String::new()), (6, lead_code.clone())] {
        let out = env.intake(&reply(
            "duty@example.jp",
            "Re: ホームページの件",
            &thread,
            &format!("close: false-positive\r\n\r\n> 確認コード: {code}"),
            n,
        ));
        assert_exit(&out, 0);
        assert!(
            stderr(&out).contains(&format!("noted on incident #{id}")),
            "{}",
            stderr(&out)
        );
        let show = json(&env.csirt(&["incidents", "show", &id.to_string(), "--json"]));
        assert_eq!(show["status"], "open", "a forged command acted: {show}");
    }
    // The duty contact acknowledges by replying to the notification, which it quotes with the
    // reply code made for it (no tag needed).
    let genuine = format!(
        "ack\r\n確認します。\r\n\r\nOn Wed, csirt wrote:\r\n> 新しいインシデント\r\n> 確認コード: {duty_code}"
    );
    let out = env.intake(&reply(
        "duty@example.jp",
        "Re: ホームページの件",
        &thread,
        &genuine,
        2,
    ));
    assert_exit(&out, 0);
    assert!(
        stderr(&out).contains(&format!("acknowledged incident #{id}")),
        "{}",
        stderr(&out)
    );
    let show = json(&env.csirt(&["incidents", "show", &id.to_string(), "--json"]));
    assert_eq!(show["status"], "acknowledged", "{show}");
    let timeline = show["timeline"].as_array().expect("timeline");
    let notes: Vec<(&str, &str)> = timeline
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
        [
            (
                "mail:citizen@example.net",
                "【外部】close: resolved\nもう直りました"
            ),
            (
                "mail:duty@example.jp",
                "【未確認: 確認コードがないため操作しません】close: false-positive"
            ),
            (
                "mail:duty@example.jp",
                "【未確認: 確認コードがないため操作しません】close: false-positive"
            ),
            ("mail:duty@example.jp", "ack\n確認します。"),
        ]
    );
    assert!(
        timeline
            .iter()
            .any(|t| t["action"] == "acknowledged" && t["actor"] == "mail:duty@example.jp"),
        "{timeline:#?}"
    );
    // A forged sender with only the subject tag: a note, never an action.
    let out = env.intake(&reply(
        "lead@example.jp",
        &format!("Re: [CSIRT #{id}] 報告受付"),
        "<forged@example.net>",
        "close: resolved",
        3,
    ));
    assert_exit(&out, 0);
    assert!(
        stderr(&out).contains(&format!("noted on incident #{id}")),
        "{}",
        stderr(&out)
    );
    // A bounce that names no incident is quarantined, never an incident (no mail loop).
    let bounce = b"From: MAILER-DAEMON@mx.example.jp\r\nTo: csirt@example.jp\r\n\
        Subject: Undelivered Mail Returned to Sender\r\nMessage-ID: <bounce-1@mx.example.jp>\r\n\
        Auto-Submitted: auto-replied\r\n\r\nThe mail could not be delivered.\r\n";
    let out = env.intake(bounce);
    assert_exit(&out, 65);
    assert!(
        stderr(&out).contains("automatic message"),
        "{}",
        stderr(&out)
    );
    let show = json(&env.csirt(&["incidents", "show", &id.to_string(), "--json"]));
    assert_eq!(
        show["status"], "acknowledged",
        "the forged close acted: {show}"
    );
    // The same reply delivered again: nothing changes.
    let out = env.intake(&reply(
        "duty@example.jp",
        "Re: ホームページの件",
        &thread,
        &genuine,
        2,
    ));
    assert_exit(&out, 0);
    let again = json(&env.csirt(&["incidents", "show", &id.to_string(), "--json"]));
    assert_eq!(again["timeline"], show["timeline"]);
    // A close by mail, a responder's reopen, then the same mail again: it stays open.
    let close = reply(
        "duty@example.jp",
        "Re: ホームページの件",
        &thread,
        &format!("close: false-positive\r\n誤検知でした\r\n> 確認コード: {duty_code}"),
        4,
    );
    let out = env.intake(&close);
    assert!(
        stderr(&out).contains(&format!("closed incident #{id}")),
        "{}",
        stderr(&out)
    );
    assert_exit(&env.csirt(&["incidents", "reopen", &id.to_string()]), 0);
    let out = env.intake(&close);
    assert!(stderr(&out).contains("already stored"), "{}", stderr(&out));
    let last = json(&env.csirt(&["incidents", "show", &id.to_string(), "--json"]));
    assert_eq!(last["status"], "open", "{last}");
}

#[test]
fn a_store_that_is_away_makes_the_mta_retry() {
    let env = Env::new(Backend::Sqlite);
    let text = std::fs::read_to_string(&env.config).expect("config");
    let url_line = text
        .lines()
        .find(|l| l.starts_with("url = "))
        .expect("url line")
        .to_string();
    env.write_config(&text.replace(
        &url_line,
        "url = \"postgres://postgres@127.0.0.1:1/csirt?connect_timeout=2\"",
    ));
    let out = env.intake(&corpus("utf8_plain.eml"));
    assert_exit(&out, 75);
    assert!(
        stderr(&out).contains("the MTA should retry later"),
        "{}",
        stderr(&out)
    );
}

/// A delivery as an MDA makes it: written in tmp/, renamed into new/.
fn deliver(maildir: &Path, name: &str, raw: &[u8]) {
    let tmp = maildir.join("tmp").join(name);
    std::fs::write(&tmp, raw).expect("write into tmp/");
    std::fs::rename(&tmp, maildir.join("new").join(name)).expect("rename into new/");
}

fn files(dir: &Path) -> Vec<String> {
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

#[test]
fn the_daemon_takes_a_maildir_and_quarantines_what_it_must() {
    use crate::logs::Daemon;
    let env = Env::new(Backend::Sqlite);
    let maildir: PathBuf = env.dir.path().join("Maildir");
    for sub in ["new", "cur", "tmp"] {
        std::fs::create_dir_all(maildir.join(sub)).expect("maildir");
    }
    crate::logs::configure_default(&env);
    let text = std::fs::read_to_string(&env.config).expect("config");
    env.write_config(&format!(
        "{}\n[intake]\nmaildir = \"{}\"\nmax_size = 10485760\n",
        text,
        maildir.display()
    ));
    let mut daemon = Daemon::start(&env);
    deliver(&maildir, "1764030000.M1P1.host", &corpus("iso2022jp.eml"));
    deliver(
        &maildir,
        "1764030001.M2P1.host",
        &corpus("report_staff1.eml"),
    );
    deliver(&maildir, "1764030002.M3P1.host", &corpus("not_mail.eml"));
    // A 50 MiB attachment: over this config's 10 MiB limit, quarantined unread.
    let mut big = corpus("utf8_plain.eml");
    big.extend(std::iter::repeat_n(b'A', 50 * 1024 * 1024));
    deliver(&maildir, "1764030003.M4P1.host", &big);
    daemon.wait("every message taken", &env, |_| {
        (files(&maildir.join("new")).is_empty()).then_some(())
    });
    assert_eq!(
        files(&maildir.join("cur")),
        ["1764030000.M1P1.host:2,S", "1764030001.M2P1.host:2,S"]
    );
    assert_eq!(
        files(&maildir.join(".Quarantine/new")),
        ["1764030002.M3P1.host", "1764030003.M4P1.host"]
    );
    // Quarantined unchanged.
    assert_eq!(
        std::fs::read(maildir.join(".Quarantine/new/1764030003.M4P1.host"))
            .expect("read")
            .len(),
        big.len()
    );
    let status = json(&env.csirt(&["status", "--json"]));
    assert_eq!(status["overview"]["quarantined_mails"], 2, "{status}");
    let errors = status["recent_errors"].to_string();
    assert!(errors.contains("over the 10485760-byte limit"), "{errors}");
    assert!(errors.contains("not a mail message"), "{errors}");
    let all = incidents(&env);
    assert_eq!(all.len(), 2, "{all:#?}");
    // Delivered again (an MDA retry): moved, nothing changes.
    deliver(&maildir, "1764030009.M9P1.host", &corpus("iso2022jp.eml"));
    daemon.wait("the redelivery taken", &env, |_| {
        (files(&maildir.join("new")).is_empty()).then_some(())
    });
    assert_eq!(incidents(&env), all);
    daemon.stop();
}

/// Regression: with a Maildir and no log source, the store writer and the notice recorder have
/// no sender from the start; the daemon exited 1 ms after READY ("the store writer ended:
/// returned unexpectedly"), and under systemd it would have restarted forever. It must run,
/// take mail, and stop cleanly.
#[test]
fn a_daemon_with_only_a_maildir_stays_up() {
    let env = Env::new(Backend::Sqlite);
    let maildir: PathBuf = env.dir.path().join("Maildir");
    for sub in ["new", "cur", "tmp"] {
        std::fs::create_dir_all(maildir.join(sub)).expect("maildir");
    }
    let text = std::fs::read_to_string(&env.config).expect("config");
    let logs = format!(
        "[[logs]]\npaths = [\"{}/log/*.log\"]\n",
        env.dir.path().display()
    );
    assert!(text.contains(&logs), "the helpers' config changed: {text}");
    env.write_config(&format!(
        "{}\n[intake]\nmaildir = \"{}\"\n",
        text.replace(&logs, ""),
        maildir.display()
    ));
    let log = env.dir.path().join("daemon.log");
    let mut child = env
        .command(&["daemon"])
        .env("RUST_LOG", "info")
        .stdout(std::process::Stdio::null())
        .stderr(std::fs::File::create(&log).expect("log file"))
        .spawn()
        .expect("spawn the daemon");
    let said = || std::fs::read_to_string(&log).unwrap_or_default();
    deliver(&maildir, "1764030000.M1P1.host", &corpus("iso2022jp.eml"));
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(30);
    while !files(&maildir.join("new")).is_empty() {
        assert!(
            child.try_wait().expect("try_wait").is_none(),
            "the daemon exited:\n{}",
            said()
        );
        assert!(
            std::time::Instant::now() < deadline,
            "mail not taken:\n{}",
            said()
        );
        std::thread::sleep(std::time::Duration::from_millis(100));
    }
    // Still up a while later (it used to end at once, before any mail).
    std::thread::sleep(std::time::Duration::from_millis(1500));
    assert!(
        child.try_wait().expect("try_wait").is_none(),
        "the daemon exited:\n{}",
        said()
    );
    nix::sys::signal::kill(
        nix::unistd::Pid::from_raw(child.id() as i32),
        nix::sys::signal::Signal::SIGTERM,
    )
    .expect("SIGTERM");
    let status = child.wait().expect("wait");
    assert!(status.success(), "exit {status:?}:\n{}", said());
}

/// Issue #12: a reported mail whose subject decodes to an encoded word (`=?UTF-8?B?4oCu?=`,
/// encoded twice by the sender) put that word into our notification's Subject as ASCII, and
/// the recipient's client decoded it into a U+202E.
#[test]
fn a_subject_that_decodes_to_an_encoded_word_is_not_decoded_twice() {
    let env = Env::new(Backend::Sqlite);
    // The subject is "=?UTF-8?B?4oCu?=gpj.exe 請求書", base64 once more.
    let raw = "From: kouhou@city.kitakami.example.jp\r\nTo: csirt@city.kitakami.example.jp\r\n\
               Subject: =?UTF-8?B?PT9VVEYtOD9CPzRvQ3U/PWdwai5leGUg6KuL5rGC5pu4?=\r\n\
               Message-ID: <double-1@city.kitakami.example.jp>\r\nMIME-Version: 1.0\r\n\
               Content-Type: text/plain; charset=UTF-8\r\n\r\n請求書が届きました。\r\n";
    let out = env.intake(raw.as_bytes());
    assert_exit(&out, 0);
    let config = csirt::config::Config::load(&env.config).expect("config");
    let mailer = csirt::notifier::transport::Mailer::from_config(&config).expect("mailer");
    let composer = env.composer();
    let rows = block_on(async {
        let store = env.store().await;
        let rows = store
            .claim_outbox(
                "test",
                csirt::model::now(),
                10,
                RateLimit::default(),
                &composer,
            )
            .await
            .expect("claim");
        store.close().await;
        rows
    });
    assert!(!rows.is_empty(), "the report was notified");
    for row in rows {
        let formatted = mailer.message(&row).expect("message").formatted();
        let parsed = mail_parser::MessageParser::default()
            .parse(&formatted)
            .expect("our mail parses");
        let subject = parsed.subject().expect("a subject");
        assert!(subject.contains("gpj.exe"), "{subject}");
        assert!(
            !subject.contains('\u{202e}'),
            "the client decodes {subject:?} from {}",
            String::from_utf8_lossy(&formatted)
        );
    }
}
