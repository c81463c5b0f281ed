//! Intake of hostile and awkward mail through `csirt intake` (issue #12, items 4-6): limits
//! counted from the MIME headers, caps on what a forward adds, forwards that carry a subject
//! tag, quarantines listed with their reason, and Japanese bodies without a charset.

use crate::helpers::*;
use crate::on_both_backends;

on_both_backends!(
    hostile_shapes_are_refused_or_capped_and_every_quarantine_is_listed,
    a_forward_whose_subject_has_our_tag_is_a_report_not_a_note,
    a_jis_body_without_a_charset_is_decoded_and_notes_keep_their_lines,
);

const HEAD: &str = "From: staff@city.kitakami.example.jp\r\nTo: csirt@city.kitakami.example.jp\r\n\
    Date: Tue, 25 Nov 2025 10:00:00 +0900\r\nMIME-Version: 1.0\r\n";

fn forward(n: u32, subject: &str, inner: &str) -> Vec<u8> {
    format!(
        "{HEAD}Message-ID: <fwd-{n}@city.kitakami.example.jp>\r\nSubject: {subject}\r\n\
         Content-Type: multipart/mixed; boundary=\"outer\"\r\n\r\n\
         --outer\r\nContent-Type: text/plain; charset=utf-8\r\n\r\nご確認ください。\r\n\
         --outer\r\nContent-Type: message/rfc822\r\n\r\n{inner}\r\n--outer--\r\n"
    )
    .into_bytes()
}

fn incidents(env: &Env) -> Vec<serde_json::Value> {
    let out = env.csirt(&["incidents", "list", "--status", "all", "--json"]);
    assert_exit(&out, 0);
    json(&out).as_array().expect("array").clone()
}

fn hostile_shapes_are_refused_or_capped_and_every_quarantine_is_listed(backend: Backend) {
    let env = Env::new(backend);
    // Regression (#12): `message/rfc822` eleven times in an HTML comment made the forward
    // quarantine as "MIME nesting 12 deep".
    let comment = "<!-- message/rfc822 -->".repeat(11);
    let inner = format!(
        "From: phish@attacker.example\r\nSubject: verify\r\nMessage-ID: <c11@attacker.example>\r\n\
         Content-Type: text/html; charset=utf-8\r\n\r\n{comment}<a href=\"https://attacker.example/x\">x</a>\r\n"
    );
    let out = env.intake(&forward(1, "Fwd: verify", &inner));
    assert_exit(&out, 0);
    // 600 empty parts: refused from the headers, with the reason.
    let mut many = format!(
        "{HEAD}Message-ID: <many@example.jp>\r\nSubject: many\r\nContent-Type: multipart/mixed; boundary=b\r\n\r\n"
    );
    many.push_str(&"--b\n\n".repeat(600));
    let out = env.intake(many.as_bytes());
    assert_exit(&out, 65);
    assert!(
        stderr(&out).contains("more than 500 MIME parts"),
        "{}",
        stderr(&out)
    );
    // Plain multipart nesting, 12 levels: limited like attached messages.
    let mut deep = format!(
        "{HEAD}Message-ID: <deep@example.jp>\r\nSubject: deep\r\nContent-Type: multipart/mixed; boundary=b0\r\n\r\n"
    );
    for i in 0..12 {
        deep.push_str(&format!(
            "--b{i}\r\nContent-Type: multipart/mixed; boundary=b{}\r\n\r\n",
            i + 1
        ));
    }
    let out = env.intake(deep.as_bytes());
    assert_exit(&out, 65);
    assert!(
        stderr(&out).contains("MIME nesting 11 deep"),
        "{}",
        stderr(&out)
    );
    // A forward carrying 20,000 Received fields: taken, its fields and notification small.
    let mut received = String::new();
    for n in 0..20_000 {
        received.push_str(&format!(
            "Received: from h{n}.example ([198.51.100.{}])\r\n",
            n % 250
        ));
    }
    let inner = format!(
        "{received}From: bulk@attacker.example\r\nSubject: trace\r\nMessage-ID: <trace@attacker.example>\r\n\r\nhttps://attacker.example/t\r\n"
    );
    let out = env.intake(&forward(2, "Fwd: trace", &inner));
    assert_exit(&out, 0);
    for incident in incidents(&env) {
        let fields = incident["fields"].to_string();
        assert!(fields.len() < 16 * 1024, "{} bytes of fields", fields.len());
    }
    let largest = block_on(async {
        let store = env.store().await;
        let outbox = store.outbox().await.expect("outbox");
        store.close().await;
        outbox.iter().map(|m| m.body.len()).max().unwrap_or(0)
    });
    assert!(largest < 16 * 1024, "a notification of {largest} bytes");
    // Both refusals are listed with their reason, and counted by status.
    let out = env.csirt(&["intake", "quarantined", "--json"]);
    assert_exit(&out, 0);
    let listed = json(&out);
    let reasons: Vec<&str> = listed
        .as_array()
        .expect("array")
        .iter()
        .map(|m| m["reason"].as_str().expect("reason"))
        .collect();
    assert_eq!(reasons.len(), 2, "{reasons:?}");
    assert!(
        reasons.iter().any(|r| r.contains("MIME parts")),
        "{reasons:?}"
    );
    assert!(listed[0]["source"] == "stdin", "{listed}");
    let out = env.csirt(&["intake", "quarantined"]);
    assert_exit(&out, 0);
    assert!(stdout(&out).contains("理由"), "{}", stdout(&out));
    let out = env.csirt(&["status", "--json"]);
    assert_eq!(
        json(&out)["overview"]["quarantined_mails"],
        2,
        "{}",
        stdout(&out)
    );
}

fn a_forward_whose_subject_has_our_tag_is_a_report_not_a_note(backend: Backend) {
    let env = Env::new(backend);
    let out = env.intake(&corpus("utf8_plain.eml"));
    assert_exit(&out, 0);
    let first = incidents(&env)[0]["id"].as_i64().expect("id");
    // Regression (#12): a phishing mail whose own subject holds `[CSIRT #1]` turned its forward
    // into a note on #1.
    let inner = format!(
        "From: phish@attacker.example\r\nSubject: [CSIRT #{first}] 対応のお願い\r\n\
         Message-ID: <tagged@attacker.example>\r\n\r\nhttps://attacker.example/tag\r\n"
    );
    let out = env.intake(&forward(
        3,
        &format!("Fwd: [CSIRT #{first}] 対応のお願い"),
        &inner,
    ));
    assert_exit(&out, 0);
    assert!(stderr(&out).contains("opened incident"), "{}", stderr(&out));
    let all = incidents(&env);
    assert!(
        all.iter().any(|i| i["playbook"] == "phishing-report"),
        "{all:?}"
    );
}

fn a_jis_body_without_a_charset_is_decoded_and_notes_keep_their_lines(backend: Backend) {
    let env = Env::new(backend);
    // Outlook: ISO-2022-JP bytes, no charset parameter. 「不審なメール」 in JIS.
    let mut raw = format!(
        "{HEAD}Message-ID: <jis@example.jp>\r\nSubject: JIS body\r\n\
         Content-Type: text/plain\r\n\r\n"
    )
    .into_bytes();
    raw.extend_from_slice(b"\x1b$BIT?3$J%a!<%k\x1b(B\r\n2\x1b$B9TL\\\x1b(B\r\n");
    let out = env.intake(&raw);
    assert_exit(&out, 0);
    let id = incidents(&env)[0]["id"].as_i64().expect("id");
    let show = env.csirt(&["incidents", "show", &id.to_string()]);
    assert_exit(&show, 0);
    let text = stdout(&show);
    assert!(text.contains("不審なメール"), "{text}");
    assert!(!text.contains("\\x1b"), "{text}");
    // A note keeps its line breaks (each line still passes sanitize on its own).
    let out = env.csirt(&["incidents", "note", &id.to_string(), "一行目\n二行目"]);
    assert_exit(&out, 0);
    let text = stdout(&env.csirt(&["incidents", "show", &id.to_string()]));
    assert!(text.contains("一行目\n"), "{text}");
    assert!(text.contains("      二行目"), "{text}");
    assert!(!text.contains("一行目\\n"), "{text}");
}
