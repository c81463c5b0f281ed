//! Text helpers that every layer shares: making outside text safe for a terminal or a header,
//! flattening it to one line, formatting times and durations for people, and error chains.
//!
//! Pure functions over strings; never does I/O and never imports another csirt module, so the
//! store, the notifier, the daemon and the CLI can all use it without pointing upwards.

use chrono::{DateTime, Utc};
use chrono_tz::Tz;
use std::borrow::Cow;

/// Formats an error and its causes on one line, each cause once. (anyhow's `{:#}` repeats a
/// cause whose Display already includes its source, as sqlx's errors do.)
pub fn error_chain(e: &anyhow::Error) -> String {
    let mut out = String::new();
    for cause in e.chain() {
        let text = cause.to_string();
        if out.contains(&text) {
            continue;
        }
        if !out.is_empty() {
            out.push_str(": ");
        }
        out.push_str(&text);
    }
    // Multi-line errors (a playbook set's list) keep their lines; each line is made safe.
    out.lines()
        .map(|l| sanitize(l).into_owned())
        .collect::<Vec<_>>()
        .join("\n")
}

/// True for characters that must not reach a terminal as they are: C0 and C1 controls, DEL, and
/// the invisible format characters that reorder or hide text.
pub fn is_unsafe(c: char) -> bool {
    c.is_control() || is_invisible_format(c)
}

/// Unicode general category Cf (format), as of Unicode 16: bidi overrides and isolates, the
/// Arabic letter mark (U+061C), LRM/RLM, zero-width characters, the BOM, interlinear
/// annotation, tags. Every one of them is invisible yet changes how text reads: a list of the
/// bidi overrides alone let U+061C and U+2066 through. Sorted, for the binary search; a test
/// compares it with the regex crate's own `\p{Cf}` table.
const FORMAT: &[(char, char)] = &[
    ('\u{00AD}', '\u{00AD}'),
    ('\u{0600}', '\u{0605}'),
    ('\u{061C}', '\u{061C}'),
    ('\u{06DD}', '\u{06DD}'),
    ('\u{070F}', '\u{070F}'),
    ('\u{0890}', '\u{0891}'),
    ('\u{08E2}', '\u{08E2}'),
    ('\u{180E}', '\u{180E}'),
    ('\u{200B}', '\u{200F}'),
    ('\u{202A}', '\u{202E}'),
    ('\u{2060}', '\u{2064}'),
    ('\u{2066}', '\u{206F}'),
    ('\u{FEFF}', '\u{FEFF}'),
    ('\u{FFF9}', '\u{FFFB}'),
    ('\u{110BD}', '\u{110BD}'),
    ('\u{110CD}', '\u{110CD}'),
    ('\u{13430}', '\u{1343F}'),
    ('\u{1BCA0}', '\u{1BCA3}'),
    ('\u{1D173}', '\u{1D17A}'),
    ('\u{E0001}', '\u{E0001}'),
    ('\u{E0020}', '\u{E007F}'),
];

/// JSON text with the invisible format characters escaped too (`\u202e`): serde_json leaves
/// them as they are, which is valid JSON, but JSON output lands on terminals (`| jq -r`) and in
/// files a reader opens, where they reorder or hide text. Escapes are UTF-16 units: a tag
/// character (U+E0001) becomes a surrogate pair.
pub fn escape_invisible_json(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    for c in text.chars() {
        if is_invisible_format(c) {
            for unit in c.encode_utf16(&mut [0; 2]) {
                out.push_str(&format!("\\u{unit:04x}"));
            }
        } else {
            out.push(c);
        }
    }
    out
}

/// True for a format character (category Cf): it reorders or hides text on screen.
pub fn is_invisible_format(c: char) -> bool {
    FORMAT
        .binary_search_by(|&(lo, hi)| {
            if hi < c {
                std::cmp::Ordering::Less
            } else if lo > c {
                std::cmp::Ordering::Greater
            } else {
                std::cmp::Ordering::Equal
            }
        })
        .is_ok()
}

/// Makes text safe for a terminal: unsafe characters become visible escapes (`\x1b`, `\u{202e}`),
/// so the evidence stays readable and nothing is executed.
pub fn sanitize(s: &str) -> Cow<'_, str> {
    if !s.chars().any(is_unsafe) {
        return Cow::Borrowed(s);
    }
    let mut out = String::with_capacity(s.len() + 8);
    for c in s.chars() {
        match c {
            '\t' => out.push_str("\\t"),
            '\n' => out.push_str("\\n"),
            '\r' => out.push_str("\\r"),
            c if is_unsafe(c) && (c as u32) < 0x100 => {
                out.push_str(&format!("\\x{:02x}", c as u32))
            }
            c if is_unsafe(c) => out.push_str(&format!("\\u{{{:04x}}}", c as u32)),
            c => out.push(c),
        }
    }
    Cow::Owned(out)
}

/// Bytes read from a log as text: borrowed when they are valid UTF-8 (checked with the standard
/// library's fast validator, several times quicker on ASCII than the lossy decoder's chunk
/// walk), else decoded with U+FFFD for what is not.
pub fn utf8_lossy(bytes: &[u8]) -> Cow<'_, str> {
    match std::str::from_utf8(bytes) {
        Ok(text) => Cow::Borrowed(text),
        Err(_) => String::from_utf8_lossy(bytes),
    }
}

/// Text from outside on one line: every control character (CR, LF, ESC, NUL...) and whitespace
/// becomes a space, runs of spaces collapse, the ends are trimmed, and at most `max` characters
/// are kept. A CR/LF must not even show as an escape in a header.
pub fn flatten(s: &str, max: usize) -> String {
    let mut out = String::with_capacity(s.len().min(max.saturating_mul(4)));
    let mut kept = 0;
    let mut space = false;
    for c in s.chars() {
        let c = if c.is_control() || c.is_whitespace() {
            ' '
        } else {
            c
        };
        if c == ' ' {
            if space || out.is_empty() {
                continue;
            }
            space = true;
        } else {
            space = false;
        }
        out.push(c);
        kept += 1;
        if kept >= max {
            break;
        }
    }
    out.truncate(out.trim_end().len());
    out
}

/// A time in the configured zone, to the minute (tables).
pub fn short_time(t: DateTime<Utc>, tz: Tz) -> String {
    t.with_timezone(&tz).format("%Y-%m-%d %H:%M").to_string()
}

/// A time in the configured zone with seconds and zone name (detail views).
pub fn long_time(t: DateTime<Utc>, tz: Tz) -> String {
    t.with_timezone(&tz)
        .format("%Y-%m-%d %H:%M:%S %Z")
        .to_string()
}

/// "3分前", "2時間前": how long ago, for heartbeats.
pub fn ago(t: DateTime<Utc>, now: DateTime<Utc>) -> String {
    let secs = (now - t).num_seconds().max(0);
    match secs {
        s if s < 60 => format!("{s}秒前"),
        s if s < 3_600 => format!("{}分前", s / 60),
        s if s < 86_400 => format!("{}時間前", s / 3_600),
        s => format!("{}日前", s / 86_400),
    }
}

/// "残り2日3時間" or "3時間超過": how far a deadline is.
pub fn remaining(due: DateTime<Utc>, now: DateTime<Utc>) -> String {
    let secs = (due - now).num_seconds();
    let span = |s: i64| match s {
        s if s < 3_600 => format!("{}分", s / 60),
        s if s < 86_400 => format!("{}時間", s / 3_600),
        s => format!("{}日{}時間", s / 86_400, (s % 86_400) / 3_600),
    };
    if secs >= 0 {
        format!("残り{}", span(secs))
    } else {
        format!("{}超過", span(-secs))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn escape_sequences_are_neutralised() {
        let hostile = "root\u{1b}]0;pwned\u{7}\u{1b}[2J user\u{202e}gnp.exe\u{9b}31m";
        let safe = sanitize(hostile);
        assert!(!safe.chars().any(is_unsafe), "{safe}");
        assert_eq!(
            safe,
            "root\\x1b]0;pwned\\x07\\x1b[2J user\\u{202e}gnp.exe\\x9b31m"
        );
        assert!(matches!(sanitize("北上市 ssh"), Cow::Borrowed(_)));
    }

    /// Issue #12: only the bidi overrides and zero-width characters were neutralised; U+061C,
    /// U+2066 and the other format characters reached the terminal.
    #[test]
    fn every_format_character_is_neutralised() {
        let cf = regex::Regex::new(r"^\p{Cf}$").expect("regex");
        let mut buf = [0u8; 4];
        let differ: Vec<String> = (0..=0x10FFFF_u32)
            .filter_map(char::from_u32)
            .filter(|&c| cf.is_match(c.encode_utf8(&mut buf)) != is_invisible_format(c))
            .map(|c| format!("U+{:04X}", c as u32))
            .collect();
        assert!(
            differ.is_empty(),
            "FORMAT differs from \\p{{Cf}} at {differ:?}"
        );
        assert_eq!(
            sanitize("a\u{61c}b\u{200e}c\u{2066}d\u{feff}e\u{e0041}"),
            "a\\u{061c}b\\u{200e}c\\u{2066}d\\u{feff}e\\u{e0041}"
        );
    }

    #[test]
    fn deadlines_read_naturally() {
        let now = DateTime::<Utc>::UNIX_EPOCH;
        assert_eq!(
            remaining(now + chrono::TimeDelta::hours(51), now),
            "残り2日3時間"
        );
        assert_eq!(
            remaining(now - chrono::TimeDelta::minutes(90), now),
            "1時間超過"
        );
    }

    #[test]
    fn flattened_text_is_one_trimmed_line_within_its_limit() {
        assert_eq!(flatten("  a \t\r\n b\x1b[2J  ", 100), "a b [2J");
        assert_eq!(flatten("長長長長", 2), "長長");
        assert_eq!(flatten("\r\n", 10), "");
    }
}
