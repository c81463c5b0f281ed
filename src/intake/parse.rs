//! One intake message, from raw bytes to what csirt acts on: identity (Message-ID, SHA-256),
//! the decoded subject and sender, the threading headers, the text, and, for a forwarded
//! suspicious mail, the indicators of the message inside.
//!
//! Parsing is mail-parser's (RFC 5322/MIME, RFC 2047, ISO-2022-JP, Shift_JIS/CP932, EUC-JP with
//! `full_encoding`). Everything decoded is attacker-controlled: subjects and names are flattened
//! to one line without control characters here, once, so that nothing downstream (titles,
//! notification headers, the terminal) ever sees a CR, an LF or an escape sequence from a mail.

use mail_parser::{Encoding, MessageParser, MimeHeaders, PartType};
use regex::Regex;
use sha2::{Digest, Sha256};
use std::sync::LazyLock;

/// Limits a message must keep; one that breaks them is quarantined, never parsed further.
#[derive(Debug, Clone, Copy)]
pub struct Limits {
    pub max_size: usize,
    pub max_parts: usize,
    pub max_depth: usize,
}

impl Default for Limits {
    fn default() -> Limits {
        Limits {
            max_size: 25 * 1024 * 1024,
            max_parts: 500,
            max_depth: 10,
        }
    }
}

/// Text kept of a body (for rules, notes and evidence).
const TEXT_MAX: usize = 64 * 1024;
/// Subjects and names are cut here.
const LINE_MAX: usize = 300;
/// URLs kept per report.
const URLS_MAX: usize = 200;
/// Received fields read per report (outermost first); the rest of a trace is not evidence.
const RECEIVED_MAX: usize = 30;
/// Bytes of each reported body searched for URLs.
const URL_TEXT_MAX: usize = 1024 * 1024;
/// Bodies of a reported message searched for URLs.
const BODIES_MAX: usize = 20;

/// Why a message was quarantined.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum Refusal {
    #[error("message of {size} bytes is over the {limit}-byte limit")]
    TooLarge { size: usize, limit: usize },
    #[error("empty message")]
    Empty,
    #[error("not a mail message: {0}")]
    NotMail(String),
    #[error("more than {limit} MIME parts (counted from the MIME headers before parsing)")]
    TooManyParts { parts: usize, limit: usize },
    #[error("a header block with more than {limit} fields (or Received fields)")]
    TooManyFields { limit: usize },
    #[error(
        "a header field of {size} bytes inside an encoded attached message, over the limit of {limit}"
    )]
    FieldTooLarge { size: usize, limit: usize },
    #[error("mail-parser failed on this message (a bug in the parser, caught)")]
    ParserPanic,
    #[error("MIME nesting {depth} deep, over the limit of {limit}")]
    TooDeep { depth: usize, limit: usize },
}

/// A file attached to a reported message.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct Attachment {
    pub name: String,
    pub content_type: String,
    pub size: usize,
    pub sha256: String,
}

/// The indicators of a forwarded (reported) message.
#[derive(Debug, Clone, Default, PartialEq, Eq, serde::Serialize)]
pub struct Report {
    pub message_id: Option<String>,
    pub subject: String,
    pub from: Option<String>,
    pub return_path: Option<String>,
    pub reply_to: Option<String>,
    /// Addresses from the Received chain, outermost first.
    pub received: Vec<String>,
    pub urls: Vec<String>,
    pub domains: Vec<String>,
    pub attachments: Vec<Attachment>,
}

/// A parsed intake message.
#[derive(Debug, Clone)]
pub struct ParsedMail {
    /// The Message-ID (without angle brackets), or `sha256:<hash>` when it has none.
    pub key: String,
    pub message_id: Option<String>,
    /// SHA-256 of the raw bytes, hex.
    pub hash: String,
    pub size: usize,
    pub subject: String,
    /// The sender's address, lower-cased.
    pub from: Option<String>,
    /// Message-IDs named by In-Reply-To and References.
    pub replies_to: Vec<String>,
    /// The text body (or the HTML body's text), at most 64 KiB.
    pub text: String,
    pub report: Option<Report>,
    /// Sent by a machine (Auto-Submitted other than `no`, a delivery report, a bounce or an
    /// auto-reply): never opens an incident, so no mail loop can start.
    pub automatic: bool,
    /// The Authentication-Results headers as written, top first (the receiving server's own
    /// comes first).
    pub authentication_results: Vec<String>,
}

/// Hex SHA-256.
pub fn sha256(bytes: &[u8]) -> String {
    let digest = Sha256::digest(bytes);
    digest.iter().map(|b| format!("{b:02x}")).collect()
}

/// How much of a refused message is read for the sender and subject its notice lists.
const HEADLINE_SCAN: usize = 64 * 1024;

/// The From address and Subject of a message that could not be taken, for the notice to the
/// CSIRT: read from at most the first `HEADLINE_SCAN` bytes' header block, so that a hostile
/// message costs nothing here; None for what cannot be read.
pub fn headline(raw: &[u8]) -> (Option<String>, Option<String>) {
    let head = &raw[..raw.len().min(HEADLINE_SCAN)];
    let end = head
        .windows(4)
        .position(|w| w == b"\r\n\r\n")
        .map(|p| p + 4)
        .or_else(|| head.windows(2).position(|w| w == b"\n\n").map(|p| p + 2))
        .unwrap_or(head.len());
    let head = &head[..end];
    // The same guard as `parse`: a panic in the parser costs the headline, not the quarantine.
    let Ok(Some(message)) =
        std::panic::catch_unwind(|| MessageParser::default().parse_headers(head))
    else {
        return (None, None);
    };
    let sender = message
        .from()
        .and_then(|a| a.first())
        .and_then(|a| a.address())
        .map(|a| one_line(a).to_lowercase())
        .filter(|a| !a.is_empty());
    let subject = message.subject().map(one_line);
    (sender, subject)
}

/// Parses `raw` within `limits`.
pub fn parse(raw: &[u8], limits: Limits) -> Result<ParsedMail, Refusal> {
    if raw.len() > limits.max_size {
        return Err(Refusal::TooLarge {
            size: raw.len(),
            limit: limits.max_size,
        });
    }
    if raw.iter().all(u8::is_ascii_whitespace) {
        return Err(Refusal::Empty);
    }
    // Parts and depth are counted from the MIME headers before mail-parser builds anything (it
    // keeps every part it reads: 5.2 million empty parts took 925 MB); header fields that would
    // only make its tree large are left out of its copy. The raw message is stored whole.
    let shape = super::shape::walk(raw, limits)?;
    let hash = sha256(raw);
    let trimmed = shape.trimmed(raw);
    let input = trimmed.as_deref().unwrap_or(raw);
    // A fuzzer found a panic in mail-parser 0.11.2: a message that trips one is quarantined, the
    // process (an MTA's pipe, the daemon's intake task) goes on.
    let message = std::panic::catch_unwind(|| MessageParser::default().parse(input))
        .map_err(|_| Refusal::ParserPanic)?
        .ok_or_else(|| Refusal::NotMail("no header could be read".into()))?;
    // Something that parses but has none of the headers every mail has is not mail.
    let has_mail_headers = message.from().is_some()
        || message.message_id().is_some()
        || message.subject().is_some()
        || message.date().is_some();
    if !has_mail_headers {
        return Err(Refusal::NotMail(
            "no From, Subject, Date or Message-ID header".into(),
        ));
    }
    let parts = count_parts(&message);
    if parts > limits.max_parts {
        return Err(Refusal::TooManyParts {
            parts,
            limit: limits.max_parts,
        });
    }
    let depth = depth(&message);
    if depth > limits.max_depth {
        return Err(Refusal::TooDeep {
            depth,
            limit: limits.max_depth,
        });
    }
    let message_id = message.message_id().map(clean_id).filter(|s| !s.is_empty());
    let key = message_id
        .clone()
        .unwrap_or_else(|| format!("sha256:{hash}"));
    let mut replies_to: Vec<String> = Vec::new();
    for value in [message.in_reply_to(), message.references()] {
        if let Some(text) = value.as_text() {
            replies_to.push(clean_id(text));
        }
        if let Some(list) = value.as_text_list() {
            replies_to.extend(list.iter().map(|id| clean_id(id)));
        }
    }
    replies_to.retain(|id| !id.is_empty());
    let text = body_text(&message);
    let subject = one_line(message.subject().unwrap_or(""));
    let report = forwarded(&message).or_else(|| inline_forward(&subject, &text));
    let auto_submitted = message
        .header_raw("Auto-Submitted")
        .is_some_and(|v| !v.trim().eq_ignore_ascii_case("no"));
    let delivery_report = message.content_type().is_some_and(|c| {
        c.ctype().eq_ignore_ascii_case("multipart")
            && c.subtype()
                .is_some_and(|s| s.eq_ignore_ascii_case("report"))
    });
    let from_daemon = message
        .from()
        .and_then(|a| a.first())
        .and_then(|a| a.address())
        .is_some_and(|a| {
            let local = a.split('@').next().unwrap_or("").to_ascii_lowercase();
            local == "mailer-daemon" || local == "postmaster"
        });
    let auto_reply = message.header_raw("X-Autoreply").is_some()
        || message.header_raw("Precedence").is_some_and(|v| {
            matches!(
                v.trim().to_ascii_lowercase().as_str(),
                "bulk" | "junk" | "auto_reply"
            )
        });
    Ok(ParsedMail {
        key,
        message_id,
        hash,
        size: raw.len(),
        subject,
        from: message
            .from()
            .and_then(|a| a.first())
            .and_then(|a| a.address())
            .map(|a| one_line(a).to_lowercase()),
        replies_to,
        text,
        report,
        automatic: auto_submitted || delivery_report || from_daemon || auto_reply,
        authentication_results: message
            .headers_raw()
            .filter(|(name, _)| name.eq_ignore_ascii_case("Authentication-Results"))
            .map(|(_, value)| one_line(value))
            .take(32)
            .collect(),
    })
}

fn count_parts(message: &mail_parser::Message<'_>) -> usize {
    message
        .parts
        .iter()
        .map(|p| match &p.body {
            PartType::Message(inner) => 1 + count_parts(inner),
            _ => 1,
        })
        .sum()
}

fn depth(message: &mail_parser::Message<'_>) -> usize {
    message
        .parts
        .iter()
        .map(|p| match &p.body {
            PartType::Message(inner) => 1 + depth(inner),
            PartType::Multipart(_) => 1,
            _ => 0,
        })
        .max()
        .unwrap_or(0)
}

/// The first text body, else the first HTML body reduced to its text; at most `TEXT_MAX`, with
/// NULs made visible (PostgreSQL refuses them).
fn body_text(message: &mail_parser::Message<'_>) -> String {
    let text = match message.text_body.first() {
        // mail-parser lists an HTML part as the text body when there is no text/plain one.
        Some(&id) if is_html(message, id) => part_text(message, id, 4 * TEXT_MAX)
            .map(|h| html_text(&h))
            .unwrap_or_default(),
        Some(&id) => part_text(message, id, TEXT_MAX).unwrap_or_default(),
        None => message
            .html_body
            .first()
            // The markup goes too: read more of it than the text kept.
            .and_then(|&id| part_text(message, id, 4 * TEXT_MAX))
            .map(|h| html_text(&h))
            .unwrap_or_default(),
    };
    // CRLF as sent becomes LF, as everywhere else in csirt's text.
    let text = text.replace("\r\n", "\n").replace('\0', "\u{2400}");
    cut(&text, TEXT_MAX).to_string()
}

fn is_html(message: &mail_parser::Message<'_>, id: u32) -> bool {
    message
        .parts
        .get(id as usize)
        .is_some_and(|p| matches!(p.body, PartType::Html(_)))
}

/// At most `max` bytes of `s`, cut at a character boundary.
fn cut(s: &str, max: usize) -> &str {
    let mut end = s.len().min(max);
    while !s.is_char_boundary(end) {
        end -= 1;
    }
    &s[..end]
}

/// The text of part `id`, at most `max` bytes of it (a base64 body of 18 MiB is not copied
/// whole). A text part without a charset parameter is decoded from its bytes by what they hold:
/// Outlook sends ISO-2022-JP so, which mail-parser would show as raw escapes (`\x1b$B…`).
fn part_text(message: &mail_parser::Message<'_>, id: u32, max: usize) -> Option<String> {
    let part = message.parts.get(id as usize)?;
    let declared = part
        .content_type()
        .is_some_and(|c| c.attribute("charset").is_some());
    if !declared && let Some(bytes) = part_bytes(message, part) {
        return Some(cut(&decode_undeclared(&bytes), max).to_string());
    }
    match &part.body {
        PartType::Text(t) | PartType::Html(t) => Some(cut(t, max).to_string()),
        _ => None,
    }
}

/// The bytes of a part's body with its transfer encoding undone.
fn part_bytes<'a>(
    message: &'a mail_parser::Message<'_>,
    part: &mail_parser::MessagePart<'_>,
) -> Option<std::borrow::Cow<'a, [u8]>> {
    let raw = message
        .raw_message()
        .get(part.offset_body as usize..part.offset_end as usize)?;
    Some(match part.encoding {
        Encoding::Base64 => mail_parser::decoders::base64::base64_decode(raw)?.into(),
        Encoding::QuotedPrintable => {
            mail_parser::decoders::quoted_printable::quoted_printable_decode(raw)?.into()
        }
        Encoding::None => raw.into(),
    })
}

/// Text whose charset nobody declared: ISO-2022-JP when it holds a JIS escape (`ESC $ B`,
/// `ESC $ @`, or `ESC ( I` for half-width kana), else UTF-8 when it is valid, else EUC-JP when
/// it decodes without error (CP932's common lead bytes 0x81-0x9F are not EUC-JP), else CP932
/// (encoding_rs's Shift_JIS is the WHATWG one, i.e. Windows-31J).
pub fn decode_undeclared(bytes: &[u8]) -> String {
    use encoding_rs::{EUC_JP, ISO_2022_JP, SHIFT_JIS};
    let jis = [&b"\x1b$B"[..], b"\x1b$@", b"\x1b(I"]
        .iter()
        .any(|e| memchr::memmem::find(bytes, e).is_some());
    if jis {
        return ISO_2022_JP
            .decode_without_bom_handling(bytes)
            .0
            .into_owned();
    }
    if let Ok(text) = std::str::from_utf8(bytes) {
        return text.to_string();
    }
    if let Some(text) = EUC_JP.decode_without_bom_handling_and_without_replacement(bytes) {
        return text.into_owned();
    }
    SHIFT_JIS.decode_without_bom_handling(bytes).0.into_owned()
}

// The pattern is a constant: it compiles, or no test would pass.
#[allow(clippy::expect_used)]
static TAG: LazyLock<Regex> =
    LazyLock::new(|| Regex::new(r"(?s)<[^>]*>").expect("the tag pattern compiles"));
// The pattern is a constant: it compiles, or no test would pass.
#[allow(clippy::expect_used)]
static URL: LazyLock<Regex> = LazyLock::new(|| {
    // Up to the first space, quote, angle bracket or full-width bracket (Japanese text often
    // puts a URL in 「」 or （）).
    Regex::new(r#"(?i)\bhttps?://[^\s<>"'「」（）()\]\[]+"#).expect("the URL pattern compiles")
});
// The pattern is a constant: it compiles, or no test would pass.
#[allow(clippy::expect_used)]
static HREF: LazyLock<Regex> = LazyLock::new(|| {
    Regex::new(r#"(?i)href\s*=\s*["']?(https?://[^"'\s>]+)"#).expect("the href pattern compiles")
});

fn html_text(html: &str) -> String {
    TAG.replace_all(html, " ").into_owned()
}

/// A message carried whole (message/rfc822) is a report; the first one found is taken.
fn forwarded(message: &mail_parser::Message<'_>) -> Option<Report> {
    message.parts.iter().find_map(|part| match &part.body {
        PartType::Message(inner) => Some(indicators(inner)),
        _ => None,
    })
}

/// The indicators of a reported message.
fn indicators(inner: &mail_parser::Message<'_>) -> Report {
    let address = |a: Option<&mail_parser::Address<'_>>| {
        a.and_then(|a| a.first())
            .and_then(|a| a.address())
            .map(|a| one_line(a).to_lowercase())
    };
    let mut received = Vec::new();
    for r in inner.received_all().take(RECEIVED_MAX) {
        if let Some(ip) = r.from_ip {
            received.push(ip.to_string());
        } else if let Some(host) = &r.from {
            received.push(one_line(&host.to_string()));
        }
    }
    // URLs are looked for in the first URL_TEXT_MAX bytes of each body, and in at most
    // BODIES_MAX bodies: a base64 body of 18 MiB is not copied whole.
    let mut bodies = String::new();
    for &id in inner.text_body.iter().take(BODIES_MAX) {
        if let Some(t) = part_text(inner, id, URL_TEXT_MAX) {
            bodies.push_str(&t);
            bodies.push('\n');
        }
    }
    for &id in inner.html_body.iter().take(BODIES_MAX) {
        if let Some(h) = part_text(inner, id, URL_TEXT_MAX) {
            for c in HREF.captures_iter(&h) {
                bodies.push_str(&c[1]);
                bodies.push('\n');
            }
        }
    }
    let (urls, domains) = urls_in(&bodies);
    let attachments = inner
        .attachments()
        .map(|part| {
            let content = part.contents();
            Attachment {
                name: one_line(part.attachment_name().unwrap_or("(名前なし)")),
                content_type: part
                    .content_type()
                    .map(|c| match c.subtype() {
                        Some(sub) => format!("{}/{sub}", c.ctype()),
                        None => c.ctype().to_string(),
                    })
                    .map(|t| one_line(&t).to_lowercase())
                    .unwrap_or_else(|| "application/octet-stream".into()),
                size: content.len(),
                sha256: sha256(content),
            }
        })
        .collect();
    Report {
        message_id: inner.message_id().map(clean_id).filter(|s| !s.is_empty()),
        subject: one_line(inner.subject().unwrap_or("")),
        from: address(inner.from()),
        return_path: inner.return_address().map(|a| one_line(a).to_lowercase()),
        reply_to: address(inner.reply_to()),
        received,
        urls,
        domains,
        attachments,
    }
}

/// Distinct URLs in `text` and their host names.
fn urls_in(text: &str) -> (Vec<String>, Vec<String>) {
    let mut urls: Vec<String> = Vec::new();
    let mut domains: Vec<String> = Vec::new();
    for m in URL.find_iter(text) {
        let url = one_line(m.as_str().trim_end_matches(['.', ',', '。', '、']));
        if urls.len() >= URLS_MAX || urls.contains(&url) {
            continue;
        }
        let host = url
            .split_once("://")
            .map(|(_, rest)| rest)
            .unwrap_or("")
            .split(['/', '?', '#'])
            .next()
            .unwrap_or("")
            .rsplit('@')
            .next()
            .unwrap_or("")
            .split(':')
            .next()
            .unwrap_or("")
            .to_lowercase();
        if !host.is_empty() && !domains.contains(&host) {
            domains.push(host);
        }
        urls.push(url);
    }
    (urls, domains)
}

/// Markers mail clients put above an inline forward, in English and Japanese.
const FORWARD_MARKERS: [&str; 3] = [
    "---------- Forwarded message ---------",
    "-------- 転送されたメッセージ --------",
    "-------- Forwarded Message --------",
];
/// Markers that also head a quoted reply: a forward only when the subject says so.
const ORIGINAL_MARKERS: [&str; 2] = [
    "-------- Original Message --------",
    "-----Original Message-----",
];

/// A forward pasted into the body: the header lines after the marker, and the rest as the body.
fn inline_forward(subject: &str, text: &str) -> Option<Report> {
    let lower = subject.to_lowercase();
    let forwarded_subject = ["fwd:", "fw:", "転送:", "転送："]
        .iter()
        .any(|p| lower.starts_with(p));
    let markers = FORWARD_MARKERS
        .iter()
        .chain(ORIGINAL_MARKERS.iter().filter(|_| forwarded_subject));
    let start = markers
        .filter_map(|m| text.find(m).map(|i| i + m.len()))
        .min()?;
    let rest = &text[start..];
    let mut report = Report::default();
    let mut body_start = rest.len();
    let mut seen_header = false;
    let mut offset = 0;
    for line in rest.split_inclusive('\n') {
        let trimmed = line.trim();
        offset += line.len();
        if trimmed.is_empty() {
            if seen_header {
                body_start = offset;
                break;
            }
            continue;
        }
        let Some((name, value)) = trimmed.split_once(':') else {
            body_start = offset - line.len();
            break;
        };
        seen_header = true;
        let value = one_line(value.trim());
        match name.trim().to_lowercase().as_str() {
            "from" | "差出人" | "送信者" => {
                report.from = Some(
                    value
                        .rsplit_once('<')
                        .map(|(_, a)| a.trim_end_matches('>').to_string())
                        .unwrap_or(value)
                        .to_lowercase(),
                )
            }
            "subject" | "件名" => report.subject = value,
            "reply-to" => report.reply_to = Some(value.to_lowercase()),
            "message-id" => report.message_id = Some(clean_id(&value)),
            _ => {}
        }
    }
    if !seen_header {
        return None;
    }
    let (urls, domains) = urls_in(&rest[body_start.min(rest.len())..]);
    report.urls = urls;
    report.domains = domains;
    Some(report)
}

/// A Message-ID without its angle brackets, on one line.
fn clean_id(id: &str) -> String {
    one_line(id.trim().trim_start_matches('<').trim_end_matches('>'))
}

/// Text from a header, safe anywhere: on one line, at most `LINE_MAX` characters.
pub fn one_line(s: &str) -> String {
    crate::text::flatten(s, LINE_MAX)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn corpus(name: &str) -> Vec<u8> {
        let path = std::path::Path::new(env!("CARGO_MANIFEST_DIR"))
            .join("tests/fixtures/mail")
            .join(name);
        std::fs::read(&path).unwrap_or_else(|e| panic!("{}: {e}", path.display()))
    }

    fn parsed(name: &str) -> ParsedMail {
        parse(&corpus(name), Limits::default()).unwrap_or_else(|e| panic!("{name}: {e}"))
    }

    #[test]
    fn japanese_charsets_decode_with_their_machine_dependent_characters() {
        let jis = parsed("iso2022jp.eml");
        assert_eq!(jis.subject, "USBメモリを紛失しました");
        assert!(jis.text.contains("ｶﾀｶﾅ課"), "{}", jis.text);
        let sjis = parsed("shift_jis.eml");
        assert_eq!(sjis.subject, "①㈱北上システム～障害連絡");
        assert!(
            sjis.text
                .contains("㈱北上システムより連絡：①サーバ停止～復旧"),
            "{}",
            sjis.text
        );
        let euc = parsed("euc_jp.eml");
        assert_eq!(euc.subject, "ウイルス検知のお知らせ");
        let utf8 = parsed("utf8_plain.eml");
        assert_eq!(utf8.key, "utf8-0001@city.kitakami.example.jp");
        assert_eq!(
            utf8.from.as_deref(),
            Some("kouhou@city.kitakami.example.jp")
        );
        assert!(utf8.report.is_none());
    }

    #[test]
    fn a_forwarded_message_yields_its_indicators() {
        let mail = parsed("report_staff1.eml");
        let report = mail.report.expect("a report");
        assert_eq!(
            report.message_id.as_deref(),
            Some("phish-0001@mail.attacker.example")
        );
        assert_eq!(report.subject, "【至急】マイナンバー関連書類のご確認");
        assert_eq!(report.from.as_deref(), Some("soumu@iwate-pref.example.com"));
        assert_eq!(
            report.return_path.as_deref(),
            Some("bounce@attacker.example")
        );
        assert_eq!(report.reply_to.as_deref(), Some("reply@attacker.example"));
        assert!(
            report.received.contains(&"198.51.100.23".to_string()),
            "{:?}",
            report.received
        );
        assert!(
            report.received.contains(&"203.0.113.77".to_string()),
            "{:?}",
            report.received
        );
        assert_eq!(
            report.urls,
            [
                "https://login.iwate-pref.example.com.attacker.example/verify?id=4711",
                "http://198.51.100.23/doc.php"
            ]
        );
        assert_eq!(
            report.domains,
            [
                "login.iwate-pref.example.com.attacker.example",
                "198.51.100.23"
            ]
        );
        assert_eq!(report.attachments.len(), 1);
        let zip = &report.attachments[0];
        assert_eq!(zip.name, "請求書.pdf.zip");
        assert_eq!(zip.content_type, "application/zip");
        assert_eq!(zip.size, 4 + 1024);
        assert_eq!(zip.sha256.len(), 64);
        let other = parsed("report_staff2.eml").report.expect("a report");
        assert_eq!(other.attachments[0].sha256, zip.sha256);
    }

    #[test]
    fn an_inline_forward_is_a_report_too() {
        let report = parsed("report_inline.eml").report.expect("a report");
        assert_eq!(
            report.from.as_deref(),
            Some("keiri@invoice-kitakami.example.net")
        );
        assert_eq!(report.subject, "請求書の送付");
        assert_eq!(report.domains, ["invoice-kitakami.example.net"]);
    }

    #[test]
    fn hostile_headers_end_up_on_one_clean_line() {
        let mail = parsed("crlf_escape_subject.eml");
        assert!(
            !mail.subject.chars().any(|c| c.is_control()),
            "{:?}",
            mail.subject
        );
        assert!(
            mail.subject.starts_with("調査 Bcc: victim@example.jp"),
            "{:?}",
            mail.subject
        );
        let nul = parse(&corpus("nul_bytes.eml"), Limits::default()).expect("parsed");
        assert!(!nul.subject.contains('\0') && !nul.text.contains('\0'));
        let eight = parsed("eightbit_headers.eml");
        assert_eq!(eight.subject, "生のUTF-8ヘッダ");
        for name in [
            "broken_boundary.eml",
            "unknown_charset.eml",
            "truncated_base64.eml",
            "broken_encoded_word.eml",
        ] {
            let mail = parsed(name);
            assert!(!mail.key.is_empty(), "{name}");
        }
    }

    #[test]
    fn what_is_not_mail_or_breaks_a_limit_is_refused_with_a_reason() {
        assert!(matches!(
            parse(&corpus("not_mail.eml"), Limits::default()),
            Err(Refusal::NotMail(_))
        ));
        assert_eq!(
            parse(b"  \r\n", Limits::default()).err(),
            Some(Refusal::Empty)
        );
        let small = Limits {
            max_size: 100,
            ..Limits::default()
        };
        assert!(matches!(
            parse(&corpus("report_staff1.eml"), small),
            Err(Refusal::TooLarge { limit: 100, .. })
        ));
        let few = Limits {
            max_parts: 2,
            ..Limits::default()
        };
        assert!(matches!(
            parse(&corpus("report_staff1.eml"), few),
            Err(Refusal::TooManyParts { limit: 2, .. })
        ));
    }

    #[test]
    fn a_deep_chain_of_attached_messages_is_refused_before_parsing() {
        let mut raw = b"From: a@example.jp\r\nSubject: deep\r\n".to_vec();
        for _ in 0..5000 {
            raw.extend_from_slice(b"Content-Type: message/rfc822\r\n\r\n");
        }
        raw.extend_from_slice(b"From: b@example.jp\r\n\r\nbody\r\n");
        assert!(matches!(
            parse(&raw, Limits::default()),
            Err(Refusal::TooDeep { limit: 10, .. })
        ));
    }

    #[test]
    fn machines_are_recognised_and_quoted_replies_are_not_forwards() {
        let bounce = b"From: MAILER-DAEMON@mx.example.jp\r\nSubject: Undelivered Mail\r\n\
            Content-Type: multipart/report; report-type=delivery-status; boundary=b\r\n\r\n--b\r\n\
            Content-Type: text/plain\r\n\r\ngone\r\n--b--\r\n";
        assert!(parse(bounce, Limits::default()).expect("parsed").automatic);
        let vacation = b"From: taro@example.jp\r\nSubject: Out of office\r\nAuto-Submitted: auto-replied\r\n\r\naway\r\n";
        assert!(
            parse(vacation, Limits::default())
                .expect("parsed")
                .automatic
        );
        let person =
            b"From: taro@example.jp\r\nSubject: Re: x\r\nAuto-Submitted: no\r\n\r\nhello\r\n";
        assert!(!parse(person, Limits::default()).expect("parsed").automatic);
        let quoted = "From: taro@example.jp\r\nSubject: Re: USB\r\n\r\nUSBメモリを紛失しました。\r\n\r\n\
            -----Original Message-----\r\nFrom: hanako@example.jp\r\nSubject: USB\r\n\r\nhttps://example.jp/\r\n";
        assert!(
            parse(quoted.as_bytes(), Limits::default())
                .expect("parsed")
                .report
                .is_none()
        );
        let forwarded = quoted.replace("Subject: Re: USB", "Subject: FW: USB");
        assert!(
            parse(forwarded.as_bytes(), Limits::default())
                .expect("parsed")
                .report
                .is_some()
        );
    }
}
