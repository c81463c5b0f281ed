//! A log line's syslog structure, parsed once: the host, the program that wrote the line, its
//! pid, and where its message starts. Rules that name a `program` see only that program's lines
//! and match the message from its first character, so text further along that a client wrote
//! (a user name, a disconnect text, a HELO) can never be where a capture starts.
//!
//! The shapes read, as syslog daemons and journald write them:
//! - RFC 3164: `Nov  3 15:35:12 host sshd[123]: message`, also without the host
//!   (`Nov 23 21:50:37 sshd[8148]: …`), without a pid, or with the tag in brackets
//!   (`Mar  3 00:17:22 [sshd]: …`, `Jun 25 23:53:34 [sshd] …`); an optional `<PRI>` first;
//! - ISO 8601 stamps as rsyslog's high-precision format writes them
//!   (`2015-04-16T18:02:50.321974+00:00 host sshd[2716]: …`);
//! - RFC 5424: `<38>1 2019-07-08T17:40:16.954167-04:00 host sshd 57915 - [sd…] message`;
//! - Solaris' `[ID 800047 auth.info] ` before the message, which the logger adds;
//! - rsyslog's `message repeated N times: [ message]`: the inner message, N times.
//!
//! Only the parts before the message are read: they are written by the logging system, not by
//! the program's clients. A line that has none of these shapes has no structure, and only rules
//! without a `program` see it. Never allocates.

/// The structure of one syslog line.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Syslog<'a> {
    pub host: Option<&'a str>,
    pub program: &'a str,
    pub pid: Option<&'a str>,
    /// The message, after any `[ID …]` prefix and inside `message repeated N times: [ … ]`.
    pub message: &'a str,
    /// How many times the message was logged (rsyslog's repeat compression), at least 1.
    pub repeated: u32,
}

/// rsyslog's repeat counts are small; a larger claim is cut here so that one line can never
/// stand for an unbounded number of failures.
pub const MAX_REPEATED: u32 = 10_000;

/// The structure of `line`, or `None` when it has no syslog shape.
pub fn parse(line: &str) -> Option<Syslog<'_>> {
    let mut rest = skip_bom(line);
    if let Some(after) = rest.strip_prefix('<') {
        let close = byte_at(after, b'>').filter(|i| (1..=3).contains(i))?;
        if !after[..close].bytes().all(|b| b.is_ascii_digit()) {
            return None;
        }
        rest = &after[close + 1..];
        if let Some(v5424) = rest.strip_prefix("1 ") {
            return rfc5424(v5424);
        }
    }
    // Without a time it is only `host tag: message` (a relay that dropped it, or a line a tool
    // rendered), and then only when the tag carries a pid or brackets: `word word: text` alone
    // is too common in other logs to be taken for syslog.
    let (rest, stamped) = match skip_timestamp(rest) {
        Some(rest) => (rest, true),
        None => (rest, false),
    };
    let (host, tag_and_message) = split_host(rest)?;
    if !stamped && !tag_and_message.starts_with('[') {
        let first =
            &tag_and_message[..byte_at(tag_and_message, b' ').unwrap_or(tag_and_message.len())];
        if !first.ends_with("]:") {
            return None;
        }
    }
    let (program, pid, message) = tag(tag_and_message)?;
    Some(finish(host, program, pid, message))
}

/// A structure given by the source itself (the journal's fields), with the message unwrapped as
/// a parsed line's would be.
pub fn from_parts<'a>(
    host: Option<&'a str>,
    program: &'a str,
    pid: Option<&'a str>,
    message: &'a str,
) -> Syslog<'a> {
    finish(host, program, pid, message)
}

fn finish<'a>(
    host: Option<&'a str>,
    program: &'a str,
    pid: Option<&'a str>,
    message: &'a str,
) -> Syslog<'a> {
    let message = strip_solaris_id(message);
    let (message, repeated) = unwrap_repeated(message);
    Syslog {
        host,
        program,
        pid,
        message,
        repeated,
    }
}

/// After `Mmm dd HH:MM:SS ` (one or two spaces before a one-digit day), or an ISO 8601 stamp.
fn skip_timestamp(s: &str) -> Option<&str> {
    let b = s.as_bytes();
    if b.len() > 16 && b[3] == b' ' && is_month(&b[..3]) {
        let spaces = b[4..].iter().take_while(|c| **c == b' ').count();
        let day = &s[4 + spaces..];
        let digits = day.bytes().take_while(u8::is_ascii_digit).count();
        if !(1..=2).contains(&digits) {
            return None;
        }
        let time = &day[digits..];
        let time = time.strip_prefix(' ')?;
        let t = time.as_bytes();
        if t.len() < 9 || t[2] != b':' || t[5] != b':' || t[8] != b' ' {
            return None;
        }
        if ![0, 1, 3, 4, 6, 7].iter().all(|&i| t[i].is_ascii_digit()) {
            return None;
        }
        return Some(&time[9..]);
    }
    if b.len() > 20 && b[..4].iter().all(u8::is_ascii_digit) && b[4] == b'-' && b[10] == b'T' {
        let end = byte_at(s, b' ')?;
        return Some(&s[end + 1..]);
    }
    None
}

/// An English month abbreviation, as syslog writes it (`Nov`).
fn is_month(b: &[u8]) -> bool {
    matches!(
        b,
        b"Jan"
            | b"Feb"
            | b"Mar"
            | b"Apr"
            | b"May"
            | b"Jun"
            | b"Jul"
            | b"Aug"
            | b"Sep"
            | b"Oct"
            | b"Nov"
            | b"Dec"
    )
}

/// Where the first `byte` (ASCII) is: a plain byte scan, as the separators are near the start
/// and a `char` search decodes every character on its way.
fn byte_at(s: &str, byte: u8) -> Option<usize> {
    s.bytes().position(|b| b == byte)
}

/// Any number of byte-order marks a relay or an editor left at the start.
fn skip_bom(mut s: &str) -> &str {
    while let Some(rest) = s.strip_prefix("\u{feff}") {
        s = rest;
    }
    s
}

/// `host tag…` or just `tag…`: the first token is the tag itself when it looks like one
/// (`sshd[1]:`, `[sshd]`, `[sshd]:`). A host-less `sshd: …` is read as a host named `sshd:`
/// and no tag, so it has no structure: rare, and safer than guessing.
fn split_host(s: &str) -> Option<(Option<&str>, &str)> {
    let first_end = byte_at(s, b' ')?;
    let first = &s[..first_end];
    if first.starts_with('[') || first.ends_with("]:") {
        return Some((None, s));
    }
    Some((Some(first), &s[first_end + 1..]))
}

/// `program[pid]: message`, `program: message`, `[program]: message`, `[program] message`.
fn tag(s: &str) -> Option<(&str, Option<&str>, &str)> {
    if let Some(inner) = s.strip_prefix('[') {
        let close = byte_at(inner, b']')?;
        let program = &inner[..close];
        if !valid_program(program) {
            return None;
        }
        let after = &inner[close + 1..];
        let message = after
            .strip_prefix(": ")
            .or_else(|| after.strip_prefix(' '))?;
        return Some((program, None, message));
    }
    // A byte scan: the separators are ASCII, and a char-array search decodes every char.
    let end = s.bytes().position(|b| matches!(b, b' ' | b'[' | b':'))?;
    let program = &s[..end];
    if !valid_program(program) {
        return None;
    }
    let after = &s[end..];
    if let Some(bracketed) = after.strip_prefix('[') {
        let close = byte_at(bracketed, b']')?;
        let pid = &bracketed[..close];
        if pid.is_empty() || pid.len() > 10 || !pid.bytes().all(|b| b.is_ascii_digit()) {
            return None;
        }
        let message = bracketed[close + 1..].strip_prefix(": ")?;
        return Some((program, Some(pid), message));
    }
    let message = after.strip_prefix(": ")?;
    Some((program, None, message))
}

/// What syslog tags are made of in practice: letters, digits and `_ . / -` (`postfix/smtpd`),
/// at most 64 characters.
fn valid_program(p: &str) -> bool {
    !p.is_empty()
        && p.len() <= 64
        && p.bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'_' | b'.' | b'/' | b'-'))
}

/// `<38>1` was read: `TIMESTAMP HOST APP PROCID MSGID SD MSG`.
fn rfc5424(s: &str) -> Option<Syslog<'_>> {
    let mut fields = s.splitn(5, ' ');
    let _timestamp = fields.next()?;
    let host = nil(fields.next()?);
    let program = fields.next()?;
    let pid = nil(fields.next()?);
    let rest = fields.next()?;
    // MSGID, then the structured data: `-` or `[id k="v" …]` groups, where a quoted value may
    // hold `]` (and `\"`).
    let (_msgid, sd) = rest.split_once(' ')?;
    let message = skip_structured_data(sd)?;
    if program == "-" || !valid_program(program) {
        return None;
    }
    Some(finish(host, program, pid, skip_bom(message)))
}

fn nil(s: &str) -> Option<&str> {
    (s != "-").then_some(s)
}

fn skip_structured_data(s: &str) -> Option<&str> {
    if let Some(rest) = s.strip_prefix("- ") {
        return Some(rest);
    }
    if s == "-" {
        return Some("");
    }
    let b = s.as_bytes();
    let mut i = 0;
    while i < b.len() && b[i] == b'[' {
        let mut quoted = false;
        i += 1;
        loop {
            match b.get(i)? {
                b'\\' if quoted => i += 1,
                b'"' => quoted = !quoted,
                b']' if !quoted => break,
                _ => {}
            }
            i += 1;
        }
        i += 1;
    }
    if i == 0 {
        return None;
    }
    Some(s[i..].strip_prefix(' ').unwrap_or(&s[i..]))
}

/// Solaris' syslogd puts `[ID 800047 auth.info] ` before the message.
fn strip_solaris_id(message: &str) -> &str {
    let Some(inner) = message.strip_prefix("[ID ") else {
        return message;
    };
    let Some(close) = inner.find("] ") else {
        return message;
    };
    let id = &inner[..close];
    match id.split_once(' ') {
        Some((number, facility))
            if number.bytes().all(|b| b.is_ascii_digit()) && !facility.contains(' ') =>
        {
            &inner[close + 2..]
        }
        _ => message,
    }
}

/// `message repeated 3 times: [ Failed password …]` is three of the inner message.
fn unwrap_repeated(message: &str) -> (&str, u32) {
    let Some(rest) = message.strip_prefix("message repeated ") else {
        return (message, 1);
    };
    let Some((count, inner)) = rest.split_once(" times: [ ") else {
        return (message, 1);
    };
    let Ok(count) = count.parse::<u32>() else {
        return (message, 1);
    };
    let Some(inner) = inner.strip_suffix(']') else {
        return (message, 1);
    };
    (inner, count.clamp(1, MAX_REPEATED))
}

#[cfg(test)]
mod tests {
    use super::*;

    type Parts<'a> = (Option<&'a str>, &'a str, Option<&'a str>, &'a str, u32);

    fn parts(line: &str) -> Option<Parts<'_>> {
        parse(line).map(|s| (s.host, s.program, s.pid, s.message, s.repeated))
    }

    #[test]
    fn the_shapes_syslog_daemons_write() {
        let cases: [(&str, Option<Parts<'_>>); 14] = [
            (
                "Nov  3 15:35:12 gw sshd[7]: Failed password for root from 192.0.2.1 port 22 ssh2",
                Some((
                    Some("gw"),
                    "sshd",
                    Some("7"),
                    "Failed password for root from 192.0.2.1 port 22 ssh2",
                    1,
                )),
            ),
            (
                "Feb 7 16:01:07 linux-m899 sshd[5106]: User root from 192.51.100.54 not allowed",
                Some((
                    Some("linux-m899"),
                    "sshd",
                    Some("5106"),
                    "User root from 192.51.100.54 not allowed",
                    1,
                )),
            ),
            (
                "Nov 23 21:50:37 sshd[8148]: Connection closed by 61.0.0.1 [preauth]",
                Some((
                    None,
                    "sshd",
                    Some("8148"),
                    "Connection closed by 61.0.0.1 [preauth]",
                    1,
                )),
            ),
            (
                "Mar  3 00:17:22 [sshd]: User root from 211.188.220.49 not allowed",
                Some((
                    None,
                    "sshd",
                    None,
                    "User root from 211.188.220.49 not allowed",
                    1,
                )),
            ),
            (
                "Jun 25 23:53:34 [sshd] User root from 1.2.3.4 not allowed",
                Some((None, "sshd", None, "User root from 1.2.3.4 not allowed", 1)),
            ),
            (
                "Nov  3 10:00:00 mx postfix/smtpd[123]: warning: unknown[192.0.2.9]: SASL LOGIN authentication failed",
                Some((
                    Some("mx"),
                    "postfix/smtpd",
                    Some("123"),
                    "warning: unknown[192.0.2.9]: SASL LOGIN authentication failed",
                    1,
                )),
            ),
            (
                "2015-04-16T18:02:50.321974+00:00 host sshd[2716]: Connection closed by 192.0.2.112 [preauth]",
                Some((
                    Some("host"),
                    "sshd",
                    Some("2716"),
                    "Connection closed by 192.0.2.112 [preauth]",
                    1,
                )),
            ),
            (
                "<38>1 2019-07-08T17:40:17.954167-04:00 h.example.com sshd 55555 - [timeQuality tzKnown=\"1\"][x@1 t=\"[brackets]\"] Failed unknown for invalid user r from 192.0.2.2 port 55555 ssh2",
                Some((
                    Some("h.example.com"),
                    "sshd",
                    Some("55555"),
                    "Failed unknown for invalid user r from 192.0.2.2 port 55555 ssh2",
                    1,
                )),
            ),
            (
                "Mar 29 05:59:23 dusky sshd[20878]: [ID 800047 auth.info] Failed keyboard-interactive for james from 205.186.180.30 port 54520 ssh2",
                Some((
                    Some("dusky"),
                    "sshd",
                    Some("20878"),
                    "Failed keyboard-interactive for james from 205.186.180.30 port 54520 ssh2",
                    1,
                )),
            ),
            (
                "Dec  1 09:00:00 gw sshd[9]: message repeated 3 times: [ Failed password for root from 192.0.2.7 port 22 ssh2]",
                Some((
                    Some("gw"),
                    "sshd",
                    Some("9"),
                    "Failed password for root from 192.0.2.7 port 22 ssh2",
                    3,
                )),
            ),
            (
                "192.0.2.1 - - [03/Nov/2026:10:00:00 +0900] \"GET / HTTP/1.1\" 200 1",
                None,
            ),
            (
                "ktk-fw01 sshd[12]: Invalid user a from 192.0.2.3",
                Some((
                    Some("ktk-fw01"),
                    "sshd",
                    Some("12"),
                    "Invalid user a from 192.0.2.3",
                    1,
                )),
            ),
            (
                "ktk-web01 nginx: 203.0.113.54 - - [25/Nov/2026:03:30:08 +0900] \"GET /\"",
                None,
            ),
            (
                "{\"timestamp\":\"2026-11-25T12:00:00\",\"event_type\":\"alert\"}",
                None,
            ),
        ];
        for (line, want) in cases {
            assert_eq!(parts(line), want, "{line}");
        }
    }

    #[test]
    fn client_text_never_becomes_structure() {
        // A disconnect text that imitates a whole syslog line stays inside the message.
        let line = "Nov  3 15:35:12 gw sshd[7]: Received disconnect from 198.51.100.1 port 5:11: sshd[1]: Failed password for root from 192.0.2.66 port 22 ssh2 [preauth]";
        let s = parse(line).expect("structure");
        assert_eq!((s.program, s.pid), ("sshd", Some("7")));
        assert!(
            s.message
                .starts_with("Received disconnect from 198.51.100.1")
        );
        // A repeat claim inside a message is not a repeat.
        let s = parse("Nov  3 15:35:12 gw sshd[7]: Invalid user message repeated 9 times: [ x] from 192.0.2.1")
            .expect("structure");
        assert_eq!(s.repeated, 1);
        // Absurd repeat counts are cut.
        let s = parse("Nov  3 15:35:12 gw sshd[7]: message repeated 4000000000 times: [ x]")
            .expect("structure");
        assert_eq!(s.repeated, MAX_REPEATED);
    }

    #[test]
    fn hostile_and_broken_lines_have_no_structure_and_no_panic() {
        for line in [
            "",
            "Nov",
            "Nov  3 15:35:12",
            "Nov  3 15:35:12 ",
            "Nov 333 15:35:12 gw sshd[7]: x",
            "Foo  3 15:35:12 gw sshd[7]: x",
            "Nov  3 15:35:12 gw sshd[x]: x",
            "Nov  3 15:35:12 gw sshd[7]x",
            "<999999>1 x",
            "<38>1 2019-07-08T17:40:17Z h sshd 1 - [unterminated",
            "\u{1b}[2J\u{0}\u{0}",
            "2026-11-25T12:00:00",
        ] {
            assert_eq!(parts(line), None, "{line:?}");
        }
    }
}
