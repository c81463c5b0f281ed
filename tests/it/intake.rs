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
    every_quarantine_is_announced_once,
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
        &format!("Re: [CSIRT #{id}] 【重要度:中】【L1】報告受付"),
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
    // Everyone the incident's mails go to is told who acted by mail, and how to undo it.
    let confirmations = block_on(async {
        let store = env.store().await;
        let outbox = store.outbox().await.expect("outbox");
        store.close().await;
        outbox
            .into_iter()
            .filter(|r| r.kind == "acted")
            .collect::<Vec<_>>()
    });
    assert_eq!(confirmations.len(), 1, "{confirmations:#?}");
    assert!(
        confirmations[0].subject.contains("【メール操作】"),
        "{}",
        confirmations[0].subject
    );
    let body = &confirmations[0].body;
    assert!(
        body.contains("「受付」") && body.contains("duty@example.jp"),
        "{body}"
    );
    assert!(
        body.contains(&format!("csirt incidents reopen {id}")),
        "{body}"
    );
    // assign: NAME with the code sets the assignee.
    let out = env.intake(&reply(
        "duty@example.jp",
        "Re: ホームページの件",
        &thread,
        &format!("assign: 佐藤\r\n\r\n> 確認コード: {duty_code}"),
        7,
    ));
    assert!(
        stderr(&out).contains(&format!("assigned incident #{id}")),
        "{}",
        stderr(&out)
    );
    let assigned = json(&env.csirt(&["incidents", "show", &id.to_string(), "--json"]));
    assert_eq!(assigned["assignee"], "佐藤", "{assigned}");
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

/// A mail with no subject says so in its incident's title, with or without a text.
#[test]
fn a_mail_without_a_subject_gets_a_title_that_says_so() {
    let env = Env::new(Backend::Sqlite);
    for (n, body) in [(1, ""), (2, "ホームページが見られません")] {
        let raw = format!(
            "From: staff{n}@example.jp\r\nTo: csirt@example.jp\r\nMessage-ID: <nosubject-{n}@example.jp>\r\n\
             MIME-Version: 1.0\r\nContent-Type: text/plain; charset=utf-8\r\n\r\n{body}\r\n"
        );
        assert_exit(&env.intake(raw.as_bytes()), 0);
    }
    let mut titles: Vec<String> = incidents(&env)
        .iter()
        .map(|i| i["title"].as_str().expect("title").to_string())
        .collect();
    titles.sort();
    assert_eq!(
        titles,
        ["報告受付: (件名なし)", "報告受付: (件名も本文もないメール)"]
    );
}

/// With `[intake] authserv_id`, the city's server must vouch for the sender too: the reply
/// code alone does not act, nor does a pass the sender wrote below the server's own header.
#[test]
fn where_the_mail_server_vouches_its_word_is_needed_too() {
    let env = Env::new(Backend::Sqlite);
    let text = std::fs::read_to_string(&env.config).expect("config");
    env.write_config(&format!(
        "{text}\n[intake]\nauthserv_id = \"mx.example.jp\"\n"
    ));
    assert_exit(&env.intake(&corpus("utf8_plain.eml")), 0);
    let id = incidents(&env)[0]["id"].as_i64().expect("id");
    let code = block_on(async {
        let store = env.store().await;
        let proof = store.mail_proof().await.expect("reply-code key");
        store.close().await;
        proof.code(id, "duty@example.jp")
    });
    let ack = |n: u32, results: &str| {
        format!(
            "{results}From: duty@example.jp\r\nTo: csirt@example.jp\r\nSubject: Re: [CSIRT #{id}]\r\n\
             Message-ID: <vouch-{n}@example.jp>\r\nMIME-Version: 1.0\r\n\
             Content-Type: text/plain; charset=utf-8\r\n\r\nack\r\n> 確認コード: {code}\r\n"
        )
        .into_bytes()
    };
    let status =
        || json(&env.csirt(&["incidents", "show", &id.to_string(), "--json"]))["status"].clone();
    // No header; the sender's own "pass" under the server's "none": a note, nothing acts.
    for (n, results) in [
        (1, String::new()),
        (
            2,
            "Authentication-Results: mx.example.jp; dkim=none\r\n\
             Authentication-Results: mx.example.jp; dkim=pass header.d=example.jp\r\n"
                .to_string(),
        ),
    ] {
        let out = env.intake(&ack(n, &results));
        assert!(
            stderr(&out).contains("noted on incident"),
            "{}",
            stderr(&out)
        );
        assert_eq!(status(), "open");
    }
    let show = json(&env.csirt(&["incidents", "show", &id.to_string(), "--json"]));
    assert!(
        show["timeline"]
            .as_array()
            .expect("timeline")
            .iter()
            .any(|t| t["detail"]
                .as_str()
                .unwrap_or("")
                .contains("送信元の認証 (DKIM/SPF)")),
        "{show}"
    );
    // The server's pass for the From domain, with the code: it acts.
    let out = env.intake(&ack(
        3,
        "Authentication-Results: mx.example.jp; spf=pass smtp.mailfrom=duty@example.jp; dkim=none\r\n",
    ));
    assert!(
        stderr(&out).contains("acknowledged incident"),
        "{}",
        stderr(&out)
    );
    assert_eq!(status(), "acknowledged");
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

/// Regression: run as `nobody` through an `/etc/aliases` pipe, `csirt intake` said "there is no
/// SQLite store … run `csirt db migrate`" when the store's directory was merely unreadable.
/// Each refusal must name the user and the permission, and make the MTA retry (75): the mail
/// waits in its queue while the sysadmin fixes the owner.
#[test]
fn intake_as_another_user_names_the_user_and_the_permission_it_lacks() {
    if !can_drop_privileges() {
        eprintln!("skipped: needs root and setpriv (util-linux) to run csirt intake as nobody");
        return;
    }
    let env = Env::new(Backend::Sqlite);
    let dir = env.dir.path();
    let var = dir.join("var");
    let db = var.join("csirt.db");
    let refused = |want: &[&str]| {
        let out = env.intake_as_nobody(&corpus("utf8_plain.eml"));
        assert_exit(&out, 75);
        let err = stderr(&out);
        for w in want {
            assert!(err.contains(w), "wanted {w:?} in: {err}");
        }
        assert!(!err.contains("db migrate"), "sent to the wrong fix: {err}");
    };
    // The test's directory is root's, 0700: the config cannot be read.
    chmod(dir, 0o700);
    refused(&[
        &format!(
            "{}: cannot read as user nobody (uid 65534)",
            env.config.display()
        ),
        "ermission denied",
    ]);
    // The config can be read, the store's directory (0770 root:root) cannot be searched.
    chmod(dir, 0o755);
    chmod(&env.config, 0o644);
    refused(&[
        "user nobody (uid 65534) has no search (x) permission on",
        &format!("{} (drwxrwx--- root:root)", var.display()),
        "user=csirt",
    ]);
    // The directory is nobody's, the database file (0660 root:root) is not.
    chown(&var, "nobody:nogroup");
    refused(&[&format!(
        "user nobody (uid 65534) has no read and write (rw) permission on {} (-rw-rw---- root:root)",
        db.display()
    )]);
    // With the file its own, the same user takes the mail.
    chown(&db, "nobody:nogroup");
    for side in ["csirt.db-wal", "csirt.db-shm"] {
        if var.join(side).exists() {
            chown(&var.join(side), "nobody:nogroup");
        }
    }
    let out = env.intake_as_nobody(&corpus("utf8_plain.eml"));
    assert_exit(&out, 0);
    assert!(
        stderr(&out).contains("opened incident #1"),
        "{}",
        stderr(&out)
    );
}

/// The quarantine notices in the outbox that the daemon has sent, oldest first.
fn quarantine_notices(env: &Env) -> Vec<csirt::store::outbox::OutboxRow> {
    crate::logs::with_store(env, "outbox", async |store| Ok(store.outbox().await?))
        .into_iter()
        .filter(|r| r.kind == "quarantine")
        .collect()
}

/// Issue #12: quarantines through the pipe showed only as a count in `csirt status`, and nobody
/// was told. Two quarantines go out in one notice from the daemon, listing each with its
/// sender, subject and reason; a later one gets a notice of its own that lists only it.
fn every_quarantine_is_announced_once(backend: Backend) {
    let env = Env::new(backend);
    crate::logs::configure_default(&env);
    let text = std::fs::read_to_string(&env.config).expect("config");
    assert!(text.contains("transport = \"file\"\n"), "{text}");
    // The gap between two notices is an hour by default; a second here.
    env.write_config(&text.replace(
        "transport = \"file\"\n",
        "transport = \"file\"\nquarantine_notice = \"1s\"\n",
    ));
    let bounce = b"From: MAILER-DAEMON@mx.example.net\r\nTo: csirt@example.jp\r\n\
        Subject: Undelivered Mail Returned to Sender\r\nMessage-ID: <bounce-1@mx.example.net>\r\n\
        Auto-Submitted: auto-replied\r\n\r\nThe mail could not be delivered.\r\n";
    let away = "From: Sato <sato@city.kitakami.example.jp>\r\nTo: csirt@example.jp\r\n\
        Subject: =?UTF-8?B?5LiN5Zyo6YCa55+l?=\r\nMessage-ID: <away-1@city.kitakami.example.jp>\r\n\
        Auto-Submitted: auto-replied\r\n\r\n12/1 まで不在です。\r\n";
    assert_exit(&env.intake(bounce), 65);
    assert_exit(&env.intake(away.as_bytes()), 65);

    let mut daemon = crate::logs::Daemon::start(&env);
    let first = daemon.wait("the first quarantine notice sent", &env, |env| {
        quarantine_notices(env)
            .into_iter()
            .find(|r| r.status == "sent")
    });
    assert_eq!(first.recipients(), ["duty@example.jp"], "{first:#?}");
    assert!(
        first.subject.contains("隔離された受付メール 2 件"),
        "{first:#?}"
    );
    let body = &first.body;
    for expected in [
        "差出人: mailer-daemon@mx.example.net",
        "件名:   Undelivered Mail Returned to Sender",
        "差出人: sato@city.kitakami.example.jp",
        "件名:   不在通知",
        "理由:   automatic message",
        "経路:   stdin",
        "csirt intake quarantined",
    ] {
        assert!(body.contains(expected), "{expected:?} missing from\n{body}");
    }

    // A third, later: a notice of its own, with only it.
    assert_exit(&env.intake(&corpus("not_mail.eml")), 65);
    let second = daemon.wait("the second quarantine notice sent", &env, |env| {
        quarantine_notices(env)
            .into_iter()
            .nth(1)
            .filter(|r| r.status == "sent")
    });
    assert!(
        second.subject.contains("隔離された受付メール 1 件"),
        "{second:#?}"
    );
    assert!(
        second.body.contains("not a mail message"),
        "{}",
        second.body
    );
    assert!(
        !second.body.contains("mailer-daemon") && !second.body.contains("不在通知"),
        "announced twice:\n{}",
        second.body
    );
    daemon.stop();
    assert_eq!(quarantine_notices(&env).len(), 2, "one notice per batch");
    // The file transport delivered both.
    let delivered = std::fs::read_dir(env.dir.path().join("mail"))
        .expect("the mail directory")
        .filter_map(Result::ok)
        .filter(|e| {
            std::fs::read_to_string(e.path()).is_ok_and(|t| t.contains(&first.message_id))
                || std::fs::read_to_string(e.path()).is_ok_and(|t| t.contains(&second.message_id))
        })
        .count();
    assert_eq!(delivered, 2);
}
