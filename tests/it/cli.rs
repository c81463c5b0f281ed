//! The responder CLI, through the real binary, on both backends.

use crate::helpers::*;
use crate::on_both_backends;
use csirt::model::Severity;

on_both_backends!(
    lifecycle_is_recorded_with_the_real_os_user,
    list_json_carries_the_contract_fields,
    list_filters_and_orders_newest_first,
    missing_incident_names_its_id,
    refused_transitions_explain_themselves,
    reopen_refuses_when_the_same_key_is_open_again,
    hostile_text_never_reaches_the_terminal,
    show_gives_steps_deadlines_events_and_timeline,
    status_reports_schema_and_stale_heartbeat,
    status_exit_codes_name_what_is_wrong_and_drop_what_was_fixed,
    unmigrated_store_is_reported_not_used,
);

fn lifecycle_is_recorded_with_the_real_os_user(backend: Backend) {
    let env = Env::new(backend);
    let id = env.open(
        "ssh-bruteforce",
        "203.0.113.5",
        "SSH総当たり攻撃 (203.0.113.5)",
        Severity::High,
    );
    let id_arg = id.to_string();
    let steps: [&[&str]; 5] = [
        &["incidents", "ack", &id_arg],
        &["incidents", "assign", &id_arg, "sato"],
        &["incidents", "note", &id_arg, "送信元を遮断した"],
        &[
            "incidents",
            "close",
            &id_arg,
            "--resolution",
            "resolved",
            "--note",
            "遮断済み",
        ],
        &["incidents", "reopen", &id_arg],
    ];
    for args in steps {
        // $USER and $LOGNAME lie; the timeline must record who really ran the command.
        let out = env
            .command(args)
            .env("USER", "mallory")
            .env("LOGNAME", "mallory")
            .output()
            .expect("run");
        assert_exit(&out, 0);
        assert!(stdout(&out).contains(&format!("#{id}")), "{}", stdout(&out));
    }
    let show = json(&env.csirt(&["incidents", "show", &id_arg, "--json"]));
    let actions: Vec<&str> = show["timeline"]
        .as_array()
        .expect("timeline")
        .iter()
        .filter_map(|t| t["action"].as_str())
        .collect();
    assert_eq!(
        actions,
        [
            "opened",
            "acknowledged",
            "assigned",
            "note",
            "closed",
            "reopened"
        ]
    );
    let me = csirt::model::Actor::current_user();
    for entry in &show["timeline"].as_array().expect("timeline")[1..] {
        assert_eq!(entry["actor"], me.as_str(), "{entry}");
    }
    assert_eq!(show["timeline"][0]["actor"], "daemon");
    assert_eq!(show["timeline"][4]["detail"], "resolved: 遮断済み");
    assert_eq!(show["status"], "open");
    assert_eq!(show["assignee"], "sato");
    assert!(
        show["closed_at"].is_null() && show["resolution"].is_null(),
        "{show}"
    );
}

fn list_json_carries_the_contract_fields(backend: Backend) {
    let env = Env::new(backend);
    env.open(
        "ssh-bruteforce",
        "198.51.100.7",
        "SSH総当たり攻撃 (198.51.100.7)",
        Severity::High,
    );
    let list = json(&env.csirt(&["incidents", "list", "--json"]));
    let item = &list.as_array().expect("a JSON array")[0];
    for key in [
        "id",
        "title",
        "playbook",
        "category",
        "severity",
        "status",
        "dedupe_key",
        "fields",
        "event_count",
        "first_seen",
        "last_seen",
        "opened_at",
        "acknowledged_at",
        "closed_at",
        "assignee",
        "escalation_level",
    ] {
        assert!(item.get(key).is_some(), "missing {key} in {item}");
    }
    assert_eq!(item["fields"]["ip"], "198.51.100.7");
    let opened = item["opened_at"].as_str().expect("opened_at");
    assert!(
        chrono::DateTime::parse_from_rfc3339(opened).is_ok(),
        "not RFC 3339: {opened}"
    );
}

fn list_filters_and_orders_newest_first(backend: Backend) {
    let env = Env::new(backend);
    let a = env.open("ssh-bruteforce", "192.0.2.1", "A", Severity::High);
    let b = env.open("phishing-report", "件名", "B", Severity::Medium);
    let c = env.open("ssh-bruteforce", "192.0.2.3", "C", Severity::Critical);
    let ids = |args: &[&str]| -> Vec<i64> {
        let mut full = vec!["incidents", "list", "--json"];
        full.extend_from_slice(args);
        let out = env.csirt(&full);
        assert_exit(&out, 0);
        json(&out)
            .as_array()
            .expect("array")
            .iter()
            .filter_map(|i| i["id"].as_i64())
            .collect()
    };
    assert_eq!(ids(&[]), [c, b, a]);
    assert_eq!(ids(&["--severity", "critical"]), [c]);
    assert_eq!(ids(&["--playbook", "phishing-report"]), [b]);
    assert_eq!(ids(&["--limit", "2"]), [c, b]);
    assert_eq!(ids(&["--since", "1h"]), [c, b, a]);
    assert_exit(
        &env.csirt(&[
            "incidents",
            "close",
            &b.to_string(),
            "--resolution",
            "false-positive",
        ]),
        0,
    );
    assert_eq!(ids(&[]), [c, a], "closed incidents leave the default view");
    assert_eq!(ids(&["--status", "closed"]), [b]);
    assert_eq!(ids(&["--status", "all"]), [c, b, a]);
    assert_exit(
        &env.csirt(&["incidents", "list", "--since", "yesterday"]),
        2,
    );
    assert_exit(
        &env.csirt(&["incidents", "list", "--severity", "urgent"]),
        2,
    );
}

fn missing_incident_names_its_id(backend: Backend) {
    let env = Env::new(backend);
    for args in [
        &["incidents", "show", "4242"][..],
        &["incidents", "ack", "#4242"],
        &["incidents", "note", "4242", "x"],
    ] {
        let out = env.csirt(args);
        assert_exit(&out, 1);
        assert_eq!(stderr(&out).trim(), "csirt: incident #4242 not found");
    }
    let out = env.csirt(&["incidents", "close", "4242"]);
    assert_exit(&out, 2);
    assert!(stderr(&out).contains("--resolution"), "{}", stderr(&out));
}

fn refused_transitions_explain_themselves(backend: Backend) {
    let env = Env::new(backend);
    let id = env
        .open("ssh-bruteforce", "192.0.2.9", "x", Severity::Low)
        .to_string();
    assert_exit(&env.csirt(&["incidents", "ack", &id]), 0);
    let again = env.csirt(&["incidents", "ack", &id]);
    assert_exit(&again, 1);
    assert!(
        stderr(&again).contains("it is acknowledged already"),
        "{}",
        stderr(&again)
    );
    assert_exit(
        &env.csirt(&["incidents", "close", &id, "--resolution", "duplicate"]),
        0,
    );
    let assign = env.csirt(&["incidents", "assign", &id, "suzuki"]);
    assert_exit(&assign, 1);
    assert!(
        stderr(&assign).contains(&format!("csirt incidents reopen {id}")),
        "{}",
        stderr(&assign)
    );
    // A refused change writes nothing: the timeline has open, ack, close only.
    let show = json(&env.csirt(&["incidents", "show", &id, "--json"]));
    assert_eq!(show["timeline"].as_array().map(Vec::len), Some(3), "{show}");
    assert!(show["assignee"].is_null());
}

fn reopen_refuses_when_the_same_key_is_open_again(backend: Backend) {
    let env = Env::new(backend);
    let first = env.open("ssh-bruteforce", "203.0.113.77", "x", Severity::High);
    assert_exit(
        &env.csirt(&[
            "incidents",
            "close",
            &first.to_string(),
            "--resolution",
            "resolved",
        ]),
        0,
    );
    let second = env.open("ssh-bruteforce", "203.0.113.77", "x", Severity::High);
    let out = env.csirt(&["incidents", "reopen", &first.to_string()]);
    assert_exit(&out, 1);
    assert!(
        stderr(&out).contains(&format!(
            "incident #{second} of the same playbook and key is open"
        )),
        "{}",
        stderr(&out)
    );
}

fn hostile_text_never_reaches_the_terminal(backend: Backend) {
    let env = Env::new(backend);
    // Issue #12: every format character (category Cf), not only the bidi overrides: the Arabic
    // letter mark, LRM, an isolate, the BOM, a tag character (outside the BMP).
    let hostile = "SSH総当たり \u{1b}]0;pwned\u{7}\u{1b}[2J\u{202e}fdp.exe\r\nforged line \
                   \u{61c}a\u{200e}b\u{2066}c\u{feff}d\u{e0041}";
    let id = env
        .open("ssh-bruteforce", hostile, hostile, Severity::High)
        .to_string();
    for args in [
        &["incidents", "list"][..],
        &["incidents", "show", &id],
        &["incidents", "list", "--json"],
        &["incidents", "show", &id, "--json"],
    ] {
        let out = env.csirt(args);
        assert_exit(&out, 0);
        let text = stdout(&out);
        assert!(
            !text.chars().any(|c| matches!(
                c,
                '\u{1b}'
                    | '\u{7}'
                    | '\u{202e}'
                    | '\r'
                    | '\u{61c}'
                    | '\u{200e}'
                    | '\u{2066}'
                    | '\u{feff}'
                    | '\u{e0041}'
            )),
            "{args:?} printed a raw control character: {text:?}"
        );
    }
    let shown = stdout(&env.csirt(&["incidents", "show", &id]));
    assert!(
        shown.contains("\\x1b]0;pwned\\x07\\x1b[2J\\u{202e}fdp.exe\\r\\nforged line \\u{061c}a\\u{200e}b\\u{2066}c\\u{feff}d\\u{e0041}"),
        "{shown}"
    );
    let detail = json(&env.csirt(&["incidents", "show", &id, "--json"]));
    assert_eq!(
        detail["title"], hostile,
        "JSON keeps the exact text, escaped"
    );
}

fn show_gives_steps_deadlines_events_and_timeline(backend: Backend) {
    let env = Env::new(backend);
    std::fs::write(env.playbooks().join("leak.toml"), LEAK_PLAYBOOK).expect("write playbook");
    let id = env
        .open(
            "leak",
            "192.0.2.50",
            "情報漏えい (192.0.2.50)",
            Severity::Critical,
        )
        .to_string();
    let out = env.csirt(&["incidents", "show", &id]);
    assert_exit(&out, 0);
    let text = stdout(&out);
    for needle in [
        "#",
        "緊急",
        "漏えいした情報の範囲を確認する",
        "個人情報保護委員会への速報",
        "残り2日",
        "Failed password for root",
        "opened",
        "JST",
    ] {
        assert!(text.contains(needle), "missing {needle:?} in\n{text}");
    }
    let detail = json(&env.csirt(&["incidents", "show", &id, "--json"]));
    assert_eq!(detail["steps"][0], "漏えいした情報の範囲を確認する");
    assert_eq!(detail["events"].as_array().map(Vec::len), Some(1));
    let due =
        chrono::DateTime::parse_from_rfc3339(detail["deadlines"][0]["due"].as_str().expect("due"))
            .expect("rfc3339");
    let opened =
        chrono::DateTime::parse_from_rfc3339(detail["opened_at"].as_str().expect("opened"))
            .expect("rfc3339");
    assert_eq!((due - opened).num_hours(), 72);
}

fn status_reports_schema_and_stale_heartbeat(backend: Backend) {
    let env = Env::new(backend);
    let out = env.csirt(&["status", "--json"]);
    assert_exit(&out, 0);
    let status = json(&out);
    assert_eq!(status["store"]["reachable"], true);
    assert_eq!(status["schema"]["applied"], status["schema"]["expected"]);
    block_on(async {
        let store = env.store().await;
        let long_ago = csirt::model::now() - chrono::TimeDelta::minutes(10);
        let beat = csirt::store::Heartbeat {
            node: "kitakami-log01".into(),
            pid: 4242,
            version: "0.1.0".into(),
            started_at: long_ago,
            beat_at: long_ago,
            summary: "playbooks 2".into(),
        };
        store.beat(&beat).await.expect("beat");
        store.close().await;
    });
    let out = env.csirt(&["status"]);
    assert_exit(&out, 1);
    assert!(
        stdout(&out).contains("kitakami-log01 応答なし (STALE)"),
        "{}",
        stdout(&out)
    );
}

/// Runs one statement with `at` bound as `$1` on the test's store (both backends take the same
/// SQL here), for the rows only the daemon writes: old failures and quarantines.
async fn execute_at(url: &str, sql: &str, at: chrono::DateTime<chrono::Utc>) {
    if url.starts_with("sqlite:") {
        let pool = sqlx::SqlitePool::connect(url).await.expect("sqlite");
        sqlx::query(sql).bind(at).execute(&pool).await.expect(sql);
        pool.close().await;
    } else {
        let pool = sqlx::PgPool::connect(url).await.expect("postgres");
        sqlx::query(sql).bind(at).execute(&pool).await.expect(sql);
        pool.close().await;
    }
}

/// The exit codes of `csirt status` as `--help` and the README document them, through the
/// binary: 4 for quarantined mail not announced in time, 3 for a mail failure (which wins over
/// 4), and a failure or a reload error that a later success superseded is no longer a problem
/// (issue #17: an old reload error stayed shown after a later reload succeeded).
fn status_exit_codes_name_what_is_wrong_and_drop_what_was_fixed(backend: Backend) {
    let env = Env::new(backend);
    let now = csirt::model::now();
    let status = |code: i32| {
        let out = env.csirt(&["status"]);
        assert_exit(&out, code);
        let json_out = env.csirt(&["status", "--json"]);
        assert_exit(&json_out, code);
        (stdout(&out), json(&json_out))
    };
    status(0);

    // Quarantined two hours ago, never announced (the default quarantine_notice is shorter).
    let quarantine = "INSERT INTO mails (message_key, content_hash, received_at, source, disposition, reason, size, raw) \
                      VALUES ('<q1@example.jp>', 'h1', $1, 'stdin', 'quarantined', 'too large', 0, '')";
    block_on(execute_at(
        &env.url,
        quarantine,
        now - chrono::TimeDelta::hours(2),
    ));
    let (text, j) = status(4);
    assert!(
        text.contains("未通知の隔離メール (unannounced): 1 件"),
        "{text}"
    );
    assert!(
        text.contains("要対応 (attention): 隔離したメール 1 通"),
        "{text}"
    );
    assert_eq!(j["quarantine"]["unannounced_overdue"], 1, "{j}");

    // A mail refused for good an hour ago: exit 3, which outranks the backlog.
    let failed = "INSERT INTO outbox (kind, message_id, recipients, subject, body, created_at, status, next_attempt_at, last_error, failed_at) \
                  VALUES ('new', '<f1@csirt>', '[\"duty@example.jp\"]', 'failed one', '', $1, 'failed', $1, '550 User unknown', $1)";
    block_on(execute_at(
        &env.url,
        failed,
        now - chrono::TimeDelta::hours(1),
    ));
    let (text, j) = status(3);
    assert!(text.contains("送信失敗 (failed): 1"), "{text}");
    assert!(text.contains("送信失敗 #"), "{text}");
    assert_eq!(j["outbox"]["failed_recently"], 1, "{j}");

    // Later mail to the same recipients went out: the failure is resolved, not a problem.
    let sent = "INSERT INTO outbox (kind, message_id, recipients, subject, body, created_at, status, next_attempt_at, sent_at) \
                VALUES ('update', '<s1@csirt>', '[\"duty@example.jp\"]', 'sent one', '', $1, 'sent', $1, $1)";
    block_on(execute_at(
        &env.url,
        sent,
        now - chrono::TimeDelta::minutes(30),
    ));
    let (text, j) = status(4);
    assert!(text.contains("送信失敗 (failed): 0"), "{text}");
    assert!(text.contains("解決済み (resolved): 送信失敗 1"), "{text}");
    assert!(!text.contains("送信失敗 #"), "{text}");
    assert_eq!(j["outbox"]["failed_resolved"], 1, "{j}");

    // One recipient of a group refused while the rest got the mail: exit 3 until a later mail
    // to that group goes out with no refusal for them.
    let group = "'[\"gone@example.jp\",\"lead@example.jp\"]'";
    let refused = format!(
        "INSERT INTO outbox (kind, message_id, recipients, subject, body, created_at, status, next_attempt_at, sent_at) \
         VALUES ('new', '<r1@csirt>', {group}, 'refused one', '', $1, 'sent', $1, $1)"
    );
    let at = now - chrono::TimeDelta::minutes(20);
    block_on(execute_at(&env.url, &refused, at));
    let refusal = "INSERT INTO mail_refusals (outbox_id, recipient, error, at) \
                   SELECT id, 'gone@example.jp', '550 User unknown', $1 FROM outbox WHERE message_id = '<r1@csirt>'";
    block_on(execute_at(&env.url, refusal, at));
    let (text, j) = status(3);
    assert!(text.contains("宛先拒否 (refused): 1"), "{text}");
    assert!(text.contains("宛先拒否 gone@example.jp"), "{text}");
    assert_eq!(j["overview"]["outbox_refused"], 1, "{j}");
    let later = format!(
        "INSERT INTO outbox (kind, message_id, recipients, subject, body, created_at, status, next_attempt_at, sent_at) \
         VALUES ('update', '<r2@csirt>', {group}, 'later one', '', $1, 'sent', $1, $1)"
    );
    block_on(execute_at(
        &env.url,
        &later,
        now - chrono::TimeDelta::minutes(10),
    ));
    let (text, j) = status(4);
    assert!(text.contains("宛先拒否 (refused): 0"), "{text}");
    assert!(
        text.contains("宛先拒否 1 (その後同じ宛先への送信が成功)"),
        "{text}"
    );
    assert_eq!(j["outbox"]["refused_resolved"], 1, "{j}");

    // Announced: nothing is wrong any more.
    block_on(async {
        let store = env.store().await;
        let listed = store
            .announce_quarantines(now, chrono::TimeDelta::hours(1), &env.composer())
            .await
            .expect("announce");
        assert_eq!(listed, 1);
        store.close().await;
    });
    let (text, j) = status(0);
    assert!(!text.contains("未通知"), "{text}");
    assert_eq!(j["ok"], true, "{j}");

    // A reload error is shown until a later reload (or start) of that node supersedes it.
    block_on(async {
        let store = env.store().await;
        store
            .record_error("kitakami-log01", "reload", "csirt.toml:3: duplicate key")
            .await
            .expect("record");
        store.close().await;
    });
    let (text, _) = status(0);
    assert!(
        text.contains("[reload] csirt.toml:3: duplicate key"),
        "{text}"
    );
    block_on(async {
        let store = env.store().await;
        store
            .resolve_errors("kitakami-log01", "reload")
            .await
            .expect("resolve");
        store.close().await;
    });
    let (text, j) = status(0);
    assert!(!text.contains("duplicate key"), "{text}");
    assert_eq!(j["recent_errors"].as_array().map(Vec::len), Some(0), "{j}");
}

fn unmigrated_store_is_reported_not_used(backend: Backend) {
    let env = Env::unmigrated(backend);
    if backend == Backend::Sqlite {
        let out = env.csirt(&["incidents", "list"]);
        assert_exit(&out, 1);
        assert!(
            stderr(&out).contains("there is no SQLite store at"),
            "{}",
            stderr(&out)
        );
        assert!(
            !env.dir.path().join("var/csirt.db").exists(),
            "a read command must not create the store"
        );
    } else {
        let out = env.csirt(&["incidents", "list"]);
        assert_exit(&out, 1);
        assert!(
            stderr(&out).contains("run `csirt db migrate`"),
            "{}",
            stderr(&out)
        );
    }
    let out = env.csirt(&["db", "migrate"]);
    assert_exit(&out, 0);
    assert!(
        stdout(&out).contains("migrated from version 0 to "),
        "{}",
        stdout(&out)
    );
    assert!(stdout(&env.csirt(&["db", "migrate"])).contains("already at version "));
}

#[test]
fn sqlite_store_is_created_group_shared_and_private() {
    use std::os::unix::fs::PermissionsExt;
    let env = Env::new(Backend::Sqlite);
    let mode =
        |p: &std::path::Path| std::fs::metadata(p).expect("stat").permissions().mode() & 0o777;
    let var = env.dir.path().join("var");
    assert_eq!(mode(&var), 0o770);
    assert_eq!(mode(&var.join("csirt.db")), 0o660);
}

#[test]
fn bad_config_gets_one_line_with_file_and_line() {
    let env = Env::new(Backend::Sqlite);
    let good = std::fs::read_to_string(&env.config).expect("config");
    let cases = [
        (
            good.replace("[contacts]", "colour = \"red\"\n[contacts]"),
            ":15: unknown field `colour`",
        ),
        (
            good.replace("sqlite://", "mysql://"),
            ":4: unsupported store URL scheme `mysql`",
        ),
        (format!("{good}\n[store\n"), ":21: "),
    ];
    for (text, needle) in cases {
        env.write_config(&text);
        let out = env.csirt(&["incidents", "list"]);
        assert_exit(&out, 1);
        let err = stderr(&out);
        assert_eq!(err.lines().count(), 1, "one line: {err}");
        assert!(
            err.contains(&format!("{}{needle}", env.config.display())),
            "{err}"
        );
    }
    // A config path that is a directory cannot be read; the message says which path.
    let out = env
        .command(&["status"])
        .arg("--config")
        .arg(env.dir.path())
        .output()
        .expect("run");
    assert_exit(&out, 1);
    assert!(
        stderr(&out).contains(&format!("{}: cannot read", env.dir.path().display())),
        "{}",
        stderr(&out)
    );
}

#[test]
fn database_flag_and_environment_override_the_config() {
    let env = Env::new(Backend::Sqlite);
    let other = Env::new(Backend::Sqlite);
    let id = other.open(
        "ssh-bruteforce",
        "192.0.2.200",
        "other store",
        Severity::Low,
    );
    let via_flag = env.csirt(&["--database", &other.url, "incidents", "list", "--json"]);
    assert_eq!(json(&via_flag)[0]["id"], id);
    let via_env = env
        .command(&["incidents", "list", "--json"])
        .env("CSIRT_DATABASE_URL", &other.url)
        .output()
        .expect("run");
    assert_eq!(json(&via_env)[0]["id"], id);
    let mut by_env_config = std::process::Command::new(env!("CARGO_BIN_EXE_csirt"));
    by_env_config
        .args(["incidents", "list", "--json"])
        .env("CSIRT_CONFIG", &other.config)
        .env_remove("CSIRT_DATABASE_URL");
    assert_eq!(json(&by_env_config.output().expect("run"))[0]["id"], id);
    let bad = env.csirt(&[
        "--database",
        "mysql://root@localhost/csirt",
        "incidents",
        "list",
    ]);
    assert_exit(&bad, 1);
    assert!(stderr(&bad).contains("unsupported store URL scheme `mysql`"));
}

#[test]
fn unreachable_postgres_fails_fast_with_the_url_but_not_the_password() {
    let env = Env::new(Backend::Sqlite);
    let out = env.csirt(&[
        "--database",
        "postgres://csirt:hunter2@127.0.0.1:1/csirt",
        "incidents",
        "list",
    ]);
    assert_exit(&out, 1);
    let err = stderr(&out);
    assert!(
        err.contains("cannot open the store at postgres://csirt:***@127.0.0.1:1/csirt"),
        "{err}"
    );
    assert!(!err.contains("hunter2"), "{err}");
}

/// Issue #12: only `[smtp] password` was checked; a password in the store URL, or a
/// password_file, that others can read was accepted.
#[test]
fn secrets_others_can_read_are_refused_with_the_line_and_the_chmod() {
    use std::os::unix::fs::PermissionsExt;
    let env = Env::new(Backend::Sqlite);
    let chmod = |p: &std::path::Path, mode| {
        std::fs::set_permissions(p, std::fs::Permissions::from_mode(mode)).expect("chmod")
    };
    let config = env.config.display().to_string();
    for url in [
        "postgres://csirt:hunter2@127.0.0.1:1/csirt",
        "postgres://csirt@127.0.0.1:1/csirt?password=hunter2",
    ] {
        env.write_config(&config_text(url, &env.playbooks(), env.dir.path()));
        chmod(&env.config, 0o644);
        let out = env.csirt(&["config", "check"]);
        assert_exit(&out, 1);
        let err = stderr(&out);
        assert!(
            err.contains(&format!(
                "{config}:4: [store] url holds a password, and {config} is readable by other users (mode 644): run `chmod 640 {config}`"
            )),
            "{err}"
        );
        assert!(err.contains("LoadCredential=store-password"), "{err}");
        assert!(!err.contains("hunter2"), "{err}");
        chmod(&env.config, 0o640);
        let out = env.csirt(&["config", "check"]);
        assert_exit(&out, 0);
    }
    let secret = env.dir.path().join("smtp-password");
    std::fs::write(&secret, "hunter2\n").expect("secret");
    chmod(&secret, 0o644);
    let text = config_text(&env.url, &env.playbooks(), env.dir.path());
    env.write_config(&format!(
        "{text}\n[smtp]\nhost = \"127.0.0.1\"\nusername = \"csirt\"\npassword_file = \"{}\"\n",
        secret.display()
    ));
    chmod(&env.config, 0o640);
    for args in [&["config", "check"][..], &["daemon"]] {
        let out = env.csirt(args);
        assert_exit(&out, 1);
        let err = stderr(&out);
        assert!(
            err.contains(&format!(
                "{config}:24: [smtp] password_file names a secret file, and {} is readable by other users (mode 644): run `chmod 640 {}`",
                secret.display(),
                secret.display()
            )),
            "{args:?}: {err}"
        );
    }
    chmod(&secret, 0o640);
    assert_exit(&env.csirt(&["config", "check"]), 0);
}

/// Issue #12: a contact on a dotless domain (`root@localhost`) was refused as "not a mail
/// address"; it is legal, and only worth a warning.
#[test]
fn a_contact_on_a_dotless_domain_is_accepted_with_a_warning() {
    let env = Env::new(Backend::Sqlite);
    let text = config_text(&env.url, &env.playbooks(), env.dir.path());
    env.write_config(&text.replace("lead@example.jp", "root@localhost"));
    let out = env.csirt(&["config", "check"]);
    assert_exit(&out, 0);
    let err = stderr(&out);
    assert!(
        err.contains(&format!(
            "csirt: warning: {}:17: [contacts] lead: `root@localhost` has no dot in its domain",
            env.config.display()
        )),
        "{err}"
    );
    assert!(stdout(&out).contains(": OK"), "{}", stdout(&out));
}

/// Issue #12: SMTP AUTH over `tls = "none"` to a host on the network was accepted.
#[test]
fn smtp_auth_in_clear_is_refused_beyond_loopback() {
    let env = Env::new(Backend::Sqlite);
    let text = config_text(&env.url, &env.playbooks(), env.dir.path());
    let with_smtp = |host: &str| {
        env.write_config(&format!(
            "{text}\n[smtp]\nhost = \"{host}\"\ntls = \"none\"\nusername = \"csirt\"\n"
        ));
        env.csirt(&["config", "check"])
    };
    let out = with_smtp("mail.city.example.jp");
    assert_exit(&out, 1);
    let err = stderr(&out);
    assert!(
        err.contains(&format!(
            "{}:23: [smtp] tls = \"none\" with a username would send the password in clear to mail.city.example.jp",
            env.config.display()
        )),
        "{err}"
    );
    assert!(err.contains("use tls = \"starttls\""), "{err}");
    assert_exit(&with_smtp("127.0.0.1"), 0);
}

/// Issue #12: `?password=` and passwords holding `?`, `/` or `@` were shown in errors, since
/// redaction searched the text for `user:…@` instead of parsing the URL.
#[test]
fn no_password_shape_reaches_an_error() {
    let env = Env::new(Backend::Sqlite);
    let cases = [
        (
            "postgres://csirt@127.0.0.1:1/csirt?password=hunter2",
            "cannot open the store at postgres://csirt@127.0.0.1:1/csirt?password=***",
        ),
        (
            "postgres://csirt:hun%3Fter%2F2%40@127.0.0.1:1/csirt",
            "cannot open the store at postgres://csirt:***@127.0.0.1:1/csirt",
        ),
        (
            "postgres://csirt:hun@ter2@127.0.0.1:1/csirt",
            "cannot open the store at postgres://csirt:***@127.0.0.1:1/csirt",
        ),
        (
            "postgres://csirt:hun?ter2@127.0.0.1:1/csirt",
            "percent-encode",
        ),
        (
            "postgres://csirt:12/hunter2@127.0.0.1:1/csirt",
            "percent-encode",
        ),
    ];
    for (url, needle) in cases {
        // Through the flag and through the config file, whose URL also reaches the error.
        let by_flag = env.csirt(&["--database", url, "incidents", "list"]);
        env.write_config(&config_text(url, &env.playbooks(), env.dir.path()));
        let by_config = env.csirt(&["incidents", "list"]);
        for out in [by_flag, by_config] {
            assert_exit(&out, 1);
            let err = stderr(&out);
            assert!(err.contains(needle), "{url}: {err}");
            assert!(
                !err.contains("hunter2") && !err.contains("ter2"),
                "{url}: {err}"
            );
        }
    }
}

#[test]
fn playbook_check_lists_every_error_as_file_line() {
    let env = Env::new(Backend::Sqlite);
    let ok = env.csirt(&["playbooks", "check"]);
    assert_exit(&ok, 0);
    let pb = env.playbooks();
    std::fs::copy(pb.join("ssh-bruteforce.toml"), pb.join("zz-copy.toml")).expect("copy");
    std::fs::write(
        pb.join("broken.toml"),
        "id = \"broken\"\ntitle = \"x\"\ncategory = \"x\"\nseverity = \"urgent\"\n",
    )
    .expect("write");
    let out = env.csirt(&["playbooks", "check"]);
    assert_exit(&out, 1);
    let err = stderr(&out);
    assert!(
        err.contains(&format!(
            "{}:4: unknown variant `urgent`",
            pb.join("broken.toml").display()
        )),
        "{err}"
    );
    assert!(
        err.contains(&format!(
            "{}:18: duplicate playbook id `ssh-bruteforce`",
            pb.join("zz-copy.toml").display()
        )),
        "{err}"
    );
    assert!(err.contains("2 playbook error(s)"), "{err}");
    let single = env.csirt(&[
        "playbooks",
        "check",
        &pb.join("phishing-report.toml").display().to_string(),
    ]);
    assert_exit(&single, 0);
}

#[test]
fn closed_stdout_is_a_normal_end() {
    let env = Env::new(Backend::Sqlite);
    for n in 0..30 {
        env.open(
            "ssh-bruteforce",
            &format!("192.0.2.{n}"),
            "SSH総当たり攻撃",
            Severity::High,
        );
    }
    let mut child = env
        .command(&["incidents", "list", "--limit", "1000"])
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .expect("spawn");
    drop(child.stdout.take());
    let out = child.wait_with_output().expect("wait");
    assert_exit(&out, 0);
    assert!(!stderr(&out).contains("panicked"), "{}", stderr(&out));
}

#[test]
fn config_check_says_what_it_would_watch() {
    let env = Env::new(Backend::Sqlite);
    let logs = env.dir.path().join("log");
    std::fs::create_dir(&logs).expect("log dir");
    std::fs::write(logs.join("auth.log"), "").expect("log file");
    let out = env.csirt(&["config", "check"]);
    assert_exit(&out, 0);
    let text = stdout(&out);
    assert!(
        text.contains("1 file(s), existing ones read from the end"),
        "{text}"
    );
    assert!(
        text.contains(&logs.join("auth.log").display().to_string()),
        "{text}"
    );
    assert!(
        text.contains("playbooks:") && text.contains("(14 loaded)"),
        "{text}"
    );
}

/// The configs we ship parse and validate: the quick start's and the package's
/// /etc/csirt/csirt.toml (whose paths exist only on an installed system).
#[test]
fn shipped_configs_are_valid() {
    for path in ["config/csirt.example.toml", "deploy/csirt.toml"] {
        let config = csirt::config::Config::load(&repo().join(path))
            .unwrap_or_else(|e| panic!("{path}: {e}"));
        assert_eq!(config.timezone, chrono_tz::Asia::Tokyo, "{path}");
        // The daily digest, the monthly report and the fiscal-year report (to 情報戦略本部).
        let kinds: Vec<_> = config
            .schedule
            .iter()
            .map(|s| (s.kind, s.report_period()))
            .collect();
        use csirt::config::{ReportPeriod, ScheduleKind};
        assert_eq!(
            kinds,
            [
                (ScheduleKind::Digest, ReportPeriod::Month),
                (ScheduleKind::Report, ReportPeriod::Month),
                (ScheduleKind::Report, ReportPeriod::FiscalYear)
            ],
            "{path}"
        );
        for name in ["duty", "lead", "ciso", "honbu"] {
            assert!(
                config.contacts.contains_key(name),
                "{path}: [contacts] {name}"
            );
        }
    }
}

/// `show` gives the steps with the incident's own address in the commands, ready to paste.
#[test]
fn steps_carry_the_incidents_address() {
    let env = Env::new(Backend::Sqlite);
    let id = env.open(
        "ssh-bruteforce",
        "203.0.113.77",
        "SSH総当たり攻撃 (203.0.113.77)",
        Severity::High,
    );
    let id = id.to_string();
    let show = json(&env.csirt(&["incidents", "show", &id, "--json"]));
    let steps: Vec<&str> = show["steps"]
        .as_array()
        .expect("steps")
        .iter()
        .filter_map(|s| s.as_str())
        .collect();
    assert!(
        steps
            .iter()
            .any(|s| s.contains("blocklist '{ 203.0.113.77 }'")),
        "{steps:#?}"
    );
    let text = stdout(&env.csirt(&["incidents", "show", &id]));
    assert!(text.contains("grep -F -- 203.0.113.77"), "{text}");
}
