//! The time stamp fail2ban cuts out of a line before its failregex sees it, as a `strip`
//! pattern: the filter's `datepattern` (strftime codes, `{^LN-BEG}`, `{DATE}`, `EPOCH`,
//! `TAI64N`) or fail2ban's default templates, in Rust syntax, with the date as group 1.
//!
//! fail2ban tries its templates one by one and keeps the one found nearest the line's start;
//! one alternation searched leftmost-first finds the same stamp on the lines real programs
//! write. Each part of the date is a group named for its strftime code (`(?P<Y>…)`, repeats
//! `Y__2`, …: `crate::stamp`), from which the hit's time is read as fail2ban reads it.

use super::pyre::{self, Mode, Names};

/// An ASCII word boundary: dates are ASCII, and Unicode's word tables would make the
/// alternation of all templates larger than a pattern may compile to.
const WB: &str = r"(?-u:\b)";
/// fail2ban's `{^LN-BEG}`: up to two non-word characters before the stamp (`[`, `<`).
const LEAD: &str = "(?:[^0-9A-Za-z_]{0,2})?";

/// A filter's `datepattern` as a strip pattern; `Ok(None)` for `{NONE}` (no time stamp to cut).
/// Several lines are several templates, tried as one alternation (each with its group).
pub fn strip_pattern(datepattern: Option<&str>) -> Result<Option<String>, String> {
    Ok(templates(datepattern)?.map(|strip| date_groups(&strip)))
}

/// The strip pattern of `datepattern`, its named groups not yet made unique.
fn templates(datepattern: Option<&str>) -> Result<Option<String>, String> {
    let lines: Vec<&str> = datepattern
        .unwrap_or("")
        .lines()
        .map(str::trim)
        .filter(|l| !l.is_empty())
        .collect();
    if lines.len() < 2 {
        return one_template(lines.first().copied());
    }
    let mut alternatives = Vec::new();
    for line in lines {
        match one_template(Some(line))? {
            Some(regex) => alternatives.push(regex),
            None => return Ok(None),
        }
    }
    Ok(Some(format!("(?:{})", alternatives.join("|"))))
}

/// One date template as a strip pattern.
fn one_template(datepattern: Option<&str>) -> Result<Option<String>, String> {
    let Some(pattern) = datepattern.map(str::trim).filter(|p| !p.is_empty()) else {
        return Ok(Some(format!("({})", defaults(true))));
    };
    let upper = pattern.to_ascii_uppercase();
    match upper.as_str() {
        "{NONE}" => return Ok(None),
        "{^LN-BEG}" => return Ok(Some(format!(r"^{LEAD}({})", defaults(false)))),
        "{DEFAULT}" => return Ok(Some(format!("({})", defaults(true)))),
        "EPOCH" | "{^LN-BEG}EPOCH" | "^EPOCH" => {
            return Ok(Some(
                r"(?:^\[?|\baudit\()(?P<s>\d{10,11}(?:\.\d{3,6})?)\b".into(),
            ));
        }
        "LEPOCH" | "{^LN-BEG}LEPOCH" | "^LEPOCH" => {
            return Ok(Some(
                r"(?:^\[?|\baudit\()(?P<s>\d{13}(?:\.\d{3,6})?)\b".into(),
            ));
        }
        "TAI64N" | "{^LN-BEG}TAI64N" | "^TAI64N" => {
            return Ok(Some(r"^(?P<tai64n>@[0-9a-fA-F]{24})".into()));
        }
        _ => {}
    }
    let (line_begin, body) = match pattern.strip_prefix("{^LN-BEG}") {
        Some(rest) => (true, rest),
        None => (false, pattern),
    };
    let (bounds, body) = match body.strip_prefix("{UNB}") {
        Some(rest) => (false, rest),
        None => (true, body),
    };
    // fail2ban cuts group 1; a pattern without a group of its own is wrapped in one (after
    // `^`). Decided before the date's named parts are groups.
    let grouped = has_capturing_group(&without_sep(body));
    let body = body.replace("{DATE}", &format!("(?:{})", defaults(false)));
    let body = strftime(&body)?;
    let body = without_sep(&body);
    let (caret, inner) = match body.strip_prefix('^') {
        Some(rest) => ("^", rest.to_string()),
        None => ("", body.clone()),
    };
    let inner = inner.replace("**", "");
    let wrapped = if grouped {
        format!("{caret}{inner}")
    } else {
        format!("{caret}({inner})")
    };
    let translated = pyre::translate(&wrapped, Mode::default(), &mut Names::default())
        .map_err(|e| format!("datepattern `{pattern}`: {e}"))?;
    if translated.backtrack {
        return Err(format!(
            "datepattern `{pattern}` needs look-around or backreferences"
        ));
    }
    let mut regex = translated.pattern;
    if line_begin {
        regex = format!(r"^{LEAD}{regex}");
    } else if bounds && caret.is_empty() && starts_with_word(&inner) {
        regex = format!(r"{WB}{regex}");
    }
    Ok(Some(regex))
}

/// fail2ban's default templates (`datedetector.py`), most specific first, as one alternation
/// (no groups); `bounded` puts word boundaries and line anchors on each as fail2ban does when
/// it searches the whole line.
fn defaults(bounded: bool) -> String {
    const TEMPLATES: &[(&str, bool)] = &[
        (
            r"%ExY[-/.]%m[-/.]%d(?:T|  ?)%H:%M:%S(?:[.,]%f)?(?:[ 	]*%z)?",
            false,
        ),
        (r"(?:%a )?%b %d %k:%M:%S(?:\.%f)?(?: %ExY)?", false),
        (r"(?:%a )?%b %d %ExY %k:%M:%S(?:\.%f)?", false),
        (r"%d[-/]%m[-/](?:%ExY|%Exy) %k:%M:%S", false),
        (r"%d[-/]%b[-/]%ExY[ :]?%H:%M:%S(?:\.%f)?(?: %z)?", false),
        (r"%m/%d/%ExY:%H:%M:%S", false),
        (r"%m-%d-%ExY %k:%M:%S(?:\.%f)?", false),
        (r"^<%m/%d/%Exy@%H:%M:%S>", true),
        (r"%Exy%Exm%Exd  ?%H:%M:%S", false),
        (r"%b %d, %ExY %I:%M:%S %p", false),
        (r"^%b-%d-%Exy %k:%M:%S", true),
        (
            r"%ExY%Exm%Exd(?:T|  ?)%ExH%ExM%ExS(?:[.,]%f)?(?:[ 	]*%z)?",
            false,
        ),
        (r"(?:%Z )?(?:%a )?%b %d %k:%M:%S(?:\.%f)?(?: %ExY)?", false),
        (r"(?:%z )?(?:%a )?%b %d %k:%M:%S(?:\.%f)?(?: %ExY)?", false),
        (r"^%H:%M:%S", true),
    ];
    let mut out = Vec::new();
    for (template, anchored) in TEMPLATES {
        // The templates are ours and every code in them is known.
        let Ok(body) = strftime(template) else {
            continue;
        };
        let body = match (bounded, anchored) {
            (_, true) if !bounded => body.trim_start_matches('^').to_string(),
            (true, false) => format!(r"{WB}{body}{WB}"),
            _ => body,
        };
        out.push(body);
    }
    out.join("|")
}

/// Each named group of a strip pattern made one that `crate::stamp` reads: a date part keeps
/// its code, numbered when it repeats (`d`, `d__2`: one per template), and a group of any
/// other name (a filter's own) becomes a plain group, still counted where fail2ban counts it.
fn date_groups(pattern: &str) -> String {
    let mut out = String::with_capacity(pattern.len() + 64);
    let mut seen: std::collections::BTreeMap<&str, usize> = std::collections::BTreeMap::new();
    let (mut rest, mut escaped, mut in_class) = (pattern, false, false);
    while let Some(c) = rest.chars().next() {
        let opens = ["(?P<", "(?<"]
            .iter()
            .find(|o| rest.starts_with(**o) && !rest[o.len()..].starts_with(['=', '!']));
        match (escaped, in_class, c, opens) {
            (false, false, '(', Some(open)) => {
                let after = &rest[open.len()..];
                let Some(close) = after.find('>') else {
                    out.push_str(rest);
                    break;
                };
                let name = &after[..close];
                let base = name.split_once("__").map_or(name, |(b, _)| b);
                match crate::stamp::NAMES.iter().find(|n| **n == base) {
                    Some(code) => {
                        let n = seen.entry(code).or_insert(0);
                        *n += 1;
                        if *n == 1 {
                            out.push_str(&format!("(?P<{code}>"));
                        } else {
                            out.push_str(&format!("(?P<{code}__{n}>"));
                        }
                    }
                    None => out.push('('),
                }
                rest = &after[close + 1..];
                continue;
            }
            (true, _, _, _) => escaped = false,
            (false, _, '\\', _) => escaped = true,
            (false, false, '[', _) => in_class = true,
            (false, true, ']', _) => in_class = false,
            _ => {}
        }
        out.push(c);
        rest = &rest[c.len_utf8()..];
    }
    out
}

/// strftime codes as fail2ban's `strptime.py` spells them, each part of the date a group named
/// for its code (the names `crate::stamp` reads; weekdays, fractions and week numbers are not
/// read, and stay unnamed).
fn strftime(pattern: &str) -> Result<String, String> {
    const MONTHS: &str = "(?i:jan(?:uary)?|feb(?:ruary)?|mar(?:ch)?|apr(?:il)?|may|june?|july?|aug(?:ust)?|sep(?:tember)?|oct(?:ober)?|nov(?:ember)?|dec(?:ember)?)";
    const DAYS: &str = "(?i:mon(?:day)?|tue(?:sday)?|wed(?:nesday)?|thu(?:rsday)?|fri(?:day)?|sat(?:urday)?|sun(?:day)?)";
    let mut out = String::with_capacity(pattern.len() * 4);
    let mut rest = pattern;
    while let Some(at) = rest.find('%') {
        out.push_str(&rest[..at]);
        let after = &rest[at + 1..];
        let (code, len) = if let Some(x) = after.strip_prefix("Ex") {
            (format!("Ex{}", x.chars().next().unwrap_or(' ')), 3)
        } else {
            (
                after.chars().next().map(String::from).unwrap_or_default(),
                1,
            )
        };
        let regex = match code.as_str() {
            "%" => "%",
            "a" | "A" => DAYS,
            "b" | "B" | "h" => MONTHS,
            "d" => r"(?:[1-2][0-9]|[0 ]?[1-9]|3[0-1])",
            "Exd" => r"(?:[1-2][0-9]|0[1-9]|3[0-1])",
            "m" => r"(?:0?[1-9]|1[0-2])",
            "Exm" => r"(?:0[1-9]|1[0-2])",
            "Y" | "ExY" => r"[0-9]{4}",
            "y" | "Exy" => r"[0-9]{2}",
            "H" => r"(?:[0-1]?[0-9]|2[0-3])",
            "ExH" => r"(?:[0-1][0-9]|2[0-3])",
            "k" | "Exk" => r" ?(?:[0-1]?[0-9]|2[0-3])",
            "I" => r"(?:1[0-2]|0?[1-9])",
            "l" | "Exl" => r" ?(?:1[0-2]|[0-9])",
            "M" => r"[0-5]?[0-9]",
            "ExM" => r"[0-5][0-9]",
            "S" => r"(?:[0-5]?[0-9]|6[0-1])",
            "ExS" => r"(?:[0-5][0-9]|6[0-1])",
            "f" => r"[0-9]{1,6}",
            "p" => r"(?i:am|pm)",
            "z" => r"(?:Z|UTC|GMT|[+-][01][0-9](?::?[0-9]{2})?)",
            "Exz" => r"(?:[A-Z]{3,5}|(?:[A-Z]{3,5})?[+-][01][0-9](?::?[0-9]{2})?)",
            "Z" | "ExZ" => r"(?:Z|[A-Z]{3,5})",
            "j" => r"[0-9]{1,3}",
            "U" | "W" => r"(?:5[0-3]|[0-4]?[0-9])",
            "w" => r"[0-6]",
            "s" => r"[0-9]{9,11}",
            other => return Err(format!("the date code %{other}")),
        };
        // The stamp's name for what the code holds (`crate::stamp::NAMES`).
        let name = match code.as_str() {
            "b" | "B" | "h" => Some("b"),
            "d" | "Exd" => Some("d"),
            "m" | "Exm" => Some("m"),
            "Y" | "ExY" => Some("Y"),
            "y" | "Exy" => Some("y"),
            "H" | "ExH" | "k" | "Exk" => Some("H"),
            "I" | "l" | "Exl" => Some("I"),
            "M" | "ExM" => Some("M"),
            "S" | "ExS" => Some("S"),
            "p" => Some("p"),
            "z" | "Exz" => Some("z"),
            "Z" | "ExZ" => Some("Z"),
            "s" => Some("s"),
            _ => None,
        };
        if let Some(name) = name {
            out.push_str(&format!("(?P<{name}>{regex})"));
            rest = &after[len..];
            continue;
        }
        out.push_str(regex);
        rest = &after[len..];
    }
    out.push_str(rest);
    Ok(out)
}

/// fail2ban's `(?P<_sep>[-/.])…(?P=_sep)` (the same separator twice) as the class twice: the
/// stamp is only cut, never parsed, so a mixed separator costs nothing.
fn without_sep(pattern: &str) -> String {
    let Some(start) = pattern.find("(?P<_sep>") else {
        return pattern.to_string();
    };
    let inner_start = start + "(?P<_sep>".len();
    let Some(len) = pattern[inner_start..].find(')') else {
        return pattern.to_string();
    };
    let class = &pattern[inner_start..inner_start + len];
    let mut out = String::new();
    out.push_str(&pattern[..start]);
    out.push_str(class);
    out.push_str(&pattern[inner_start + len + 1..]);
    out.replace("(?P=_sep)", class)
}

/// Whether the pattern has a capturing group: `(` not escaped and not followed by `?`.
fn has_capturing_group(pattern: &str) -> bool {
    let b = pattern.as_bytes();
    let mut escaped = false;
    let mut in_class = false;
    for (i, c) in b.iter().enumerate() {
        match (escaped, *c) {
            (true, _) => escaped = false,
            (false, b'\\') => escaped = true,
            (false, b'[') => in_class = true,
            (false, b']') => in_class = false,
            (false, b'(') if !in_class && b.get(i + 1) != Some(&b'?') => return true,
            (false, b'(')
                if !in_class && b.get(i + 2) == Some(&b'P') && b.get(i + 3) == Some(&b'<') =>
            {
                return true;
            }
            _ => {}
        }
    }
    false
}

/// Whether the date text starts with a word character (then fail2ban's look-ahead boundary is a
/// plain `\b`).
fn starts_with_word(pattern: &str) -> bool {
    let p = pattern.trim_start_matches('(').trim_start_matches("?:");
    p.starts_with(|c: char| c.is_alphanumeric() || c == '\\')
        && !p.starts_with("\\[")
        && !p.starts_with("\\s")
}

#[cfg(test)]
mod tests {
    use super::*;

    fn cut(datepattern: Option<&str>, line: &str) -> String {
        let strip = strip_pattern(datepattern).expect("pattern").expect("some");
        let re = regex::Regex::new(&strip).expect(&strip);
        let Some(caps) = re.captures(line) else {
            return line.to_string();
        };
        let m = caps
            .iter()
            .skip(1)
            .flatten()
            .next()
            .or_else(|| caps.get(0))
            .expect("group");
        format!("{}{}", &line[..m.start()], &line[m.end()..])
    }

    #[test]
    fn default_templates_cut_the_common_stamps() {
        for (line, left) in [
            ("Nov  3 15:35:12 gw sshd[7]: x", " gw sshd[7]: x"),
            ("2005-01-23T21:59:59.981746+0900 h x", " h x"),
            ("2013/11/05 13:10:00 [error] x", " [error] x"),
            (
                "[Sun Jun 09 07:57:47 2013] [error] [client 1.2.3.4] x",
                "[] [error] [client 1.2.3.4] x",
            ),
            (
                "1.2.3.4 - - [31/Oct/2006:09:22:55 -0000] \"GET /\"",
                "1.2.3.4 - - [] \"GET /\"",
            ),
        ] {
            assert_eq!(cut(None, line), left, "{line}");
        }
        // {^LN-BEG}: only at the start of the line.
        assert_eq!(
            cut(
                Some("{^LN-BEG}"),
                "1.2.3.4 - - [31/Oct/2006:09:22:55 -0000] x"
            ),
            "1.2.3.4 - - [31/Oct/2006:09:22:55 -0000] x"
        );
        assert_eq!(cut(Some("{^LN-BEG}"), "Nov  3 15:35:12 gw x"), " gw x");
    }

    #[test]
    fn custom_patterns_epoch_and_groups() {
        assert_eq!(
            cut(
                Some("^%Y-%m-%d %H:%M:%S"),
                "2020-01-02 03:04:05 login failed"
            ),
            " login failed"
        );
        assert_eq!(
            cut(Some(r"^[^\[]*\[({DATE})"), "x [2020-01-02 03:04:05] y"),
            "x [] y"
        );
        assert_eq!(
            cut(Some("{^LN-BEG}Epoch"), "1395484032.137 host x"),
            " host x"
        );
        assert_eq!(
            cut(
                Some("{^LN-BEG}%ExY(?P<_sep>[-/.])%m(?P=_sep)%d[T ]%H:%M:%S(?:[.,]%f)?(?:\\s*%z)?"),
                "2020-01-02T03:04:05.123Z rest"
            ),
            " rest"
        );
        assert_eq!(
            cut(
                Some("{^LN-BEG}TAI64N\n{^LN-BEG}"),
                "@400000004c91b044077a9e94 imap-login: x"
            ),
            " imap-login: x"
        );
        assert_eq!(
            cut(Some("{^LN-BEG}TAI64N\n{^LN-BEG}"), "Nov  3 15:35:12 gw x"),
            " gw x"
        );
        assert_eq!(strip_pattern(Some("{NONE}")), Ok(None));
        assert!(strip_pattern(Some("%c")).is_err());
    }

    /// The hit's time comes from the strip's named parts, as fail2ban's test suite reads its
    /// logs (in CET, on 14 August 2005 at noon).
    #[test]
    fn the_time_is_read_from_the_named_parts() {
        let read_at = chrono::DateTime::parse_from_rfc3339("2005-08-14T10:00:00Z")
            .expect("time")
            .to_utc();
        let read = |datepattern: Option<&str>, line: &str| -> Option<String> {
            let strip = strip_pattern(datepattern).expect("pattern").expect("some");
            let re = regex::Regex::new(&strip).expect(&strip);
            let caps = re.captures(line)?;
            crate::stamp::Stamp::from_groups(
                re.capture_names()
                    .enumerate()
                    .filter_map(|(i, n)| Some((n?, caps.get(i)?.as_str()))),
            )?
            .resolve(chrono_tz::CET, read_at)
            .map(|t| t.to_rfc3339())
        };
        for (datepattern, line, time) in [
            (
                None,
                "Feb 1 00:00:00 myhost proftpd[1]: x",
                "2005-01-31T23:00:00+00:00",
            ),
            (
                None,
                "[22-Jan-2013 22:28:21 +0200]: FAILED login",
                "2013-01-22T20:28:21+00:00",
            ),
            (
                Some("{^LN-BEG}"),
                "2013-11-16 21:59:30,121 novo proftpd[1]",
                "2013-11-16T20:59:30+00:00",
            ),
            (
                Some("^%Y-%m-%d %H:%M:%S"),
                "2020-01-02 03:04:05 login failed",
                "2020-01-02T02:04:05+00:00",
            ),
            (
                Some(r"^[^\[]*\[({DATE})"),
                "x [2020-01-02 03:04:05] y",
                "2020-01-02T02:04:05+00:00",
            ),
            (
                Some("{^LN-BEG}Epoch"),
                "1395484032.137 host x",
                "2014-03-22T10:27:12.137+00:00",
            ),
            (
                Some("{^LN-BEG}TAI64N\n{^LN-BEG}"),
                "@400000004c91b044077a9e94 imap-login: x",
                "2010-09-16T05:51:00+00:00",
            ),
            (
                Some("{^LN-BEG}TAI64N\n{^LN-BEG}"),
                "Jul  3 20:56:53 h x",
                "2005-07-03T18:56:53+00:00",
            ),
        ] {
            assert_eq!(read(datepattern, line).as_deref(), Some(time), "{line}");
        }
        // A filter's own named group is a plain group: still the one cut, never a time part.
        let strip = strip_pattern(Some(r"^(?P<stamp>%H:%M:%S) "))
            .expect("p")
            .expect("s");
        assert!(strip.starts_with("^((?P<H>"), "{strip}");
    }
}
