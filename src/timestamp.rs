//! When a log line says it happened: RFC 3164 (syslog without a year), RFC 5424, ISO 8601 and
//! the web servers' access-log format. Thresholds count in this time, so a backlog read after
//! an outage correlates as it happened, not as it was read. A line without a readable time takes
//! its arrival time.

use chrono::{
    DateTime, Datelike, FixedOffset, LocalResult, NaiveDate, NaiveDateTime, TimeZone, Utc,
};
use chrono_tz::Tz;

/// The time a line carries, or `arrival` when it carries none that we read.
pub fn line_time(line: &str, tz: Tz, arrival: DateTime<Utc>) -> DateTime<Utc> {
    parse(line, tz, arrival).unwrap_or(arrival)
}

/// The time at the start of a syslog or ISO-stamped line, or in an access log's `[...]`.
pub fn parse(line: &str, tz: Tz, arrival: DateTime<Utc>) -> Option<DateTime<Utc>> {
    let mut rest = line.trim_start_matches('\u{feff}');
    // `<PRI>` of syslog on the wire, then RFC 5424's version.
    if let Some(after) = rest.strip_prefix('<')
        && let Some(close) = after.find('>').filter(|i| *i <= 3)
    {
        rest = &after[close + 1..];
        if let Some(v5424) = rest.strip_prefix("1 ") {
            rest = v5424;
        }
    }
    // JSON-lines logs that lead with their time, as Suricata's eve.json does.
    if let Some(json) = rest.strip_prefix("{\"timestamp\":\"") {
        return iso8601(json.split('"').next().unwrap_or(""), tz);
    }
    iso8601(rest, tz)
        .or_else(|| rfc3164(rest, tz, arrival))
        .or_else(|| access_log(line))
}

/// `2026-11-25T12:00:00.123+09:00`, `...Z`, `...+0900`, or `2026-11-25 12:00:00` (local time).
fn iso8601(s: &str, tz: Tz) -> Option<DateTime<Utc>> {
    let b = s.as_bytes();
    if b.len() < 19 || !b[..4].iter().all(u8::is_ascii_digit) || b[4] != b'-' || b[7] != b'-' {
        return None;
    }
    let token_end = if b[10] == b' ' {
        // "YYYY-MM-DD HH:MM:SS[.fff]" has a space inside; the token ends at the next one.
        s[11..].find(' ').map_or(s.len(), |i| i + 11)
    } else {
        s.find(' ').unwrap_or(s.len())
    };
    let token = &s[..token_end];
    if let Ok(t) = DateTime::parse_from_rfc3339(token) {
        return Some(t.to_utc());
    }
    let normalized = token.replacen(' ', "T", 1);
    for format in ["%Y-%m-%dT%H:%M:%S%.f%z", "%Y-%m-%dT%H:%M:%S%z"] {
        if let Ok(t) = DateTime::<FixedOffset>::parse_from_str(&normalized, format) {
            return Some(t.to_utc());
        }
    }
    let naive = NaiveDateTime::parse_from_str(&normalized, "%Y-%m-%dT%H:%M:%S%.f").ok()?;
    local(naive, tz)
}

/// `Nov  3 15:35:12`: no year. A syslog line is written before it is read, so its year is the
/// latest that does not put it more than a day after its arrival (clocks of several servers
/// disagree by minutes, not days). `Dec 10` read on December 1 is last year's; a December line
/// read on the 1st of January too; `Jan  1 00:00:01` read at 23:59:59 on December 31 is next
/// year's.
fn rfc3164(s: &str, tz: Tz, arrival: DateTime<Utc>) -> Option<DateTime<Utc>> {
    let stamp = s.get(..15)?;
    let b = stamp.as_bytes();
    if b[3] != b' ' || b[6] != b' ' || b[9] != b':' || b[12] != b':' {
        return None;
    }
    let month = match &stamp[..3] {
        "Jan" => 1,
        "Feb" => 2,
        "Mar" => 3,
        "Apr" => 4,
        "May" => 5,
        "Jun" => 6,
        "Jul" => 7,
        "Aug" => 8,
        "Sep" => 9,
        "Oct" => 10,
        "Nov" => 11,
        "Dec" => 12,
        _ => return None,
    };
    let day: u32 = stamp[4..6].trim_start().parse().ok()?;
    let (h, m, sec): (u32, u32, u32) = (
        stamp[7..9].parse().ok()?,
        stamp[10..12].parse().ok()?,
        stamp[13..15].parse().ok()?,
    );
    let year = arrival.with_timezone(&tz).year();
    latest_not_after(year, arrival, |y: i32| {
        local(
            NaiveDate::from_ymd_opt(y, month, day)?.and_hms_opt(h, m, sec)?,
            tz,
        )
    })
}

/// A date without a year placed by its arrival (in `year`, the arrival's year where it was
/// read): the latest year that does not put it more than a day after its arrival, next year's
/// for a January line read a moment early at New Year, back to the last Feb 29.
pub(crate) fn latest_not_after(
    year: i32,
    arrival: DateTime<Utc>,
    at: impl Fn(i32) -> Option<DateTime<Utc>>,
) -> Option<DateTime<Utc>> {
    (year - 4..=year + 1)
        .rev()
        .filter_map(at)
        .find(|t| *t <= arrival + chrono::TimeDelta::days(1))
}

/// `[25/Nov/2026:12:00:00 +0900]` anywhere in the line (common and combined log formats).
fn access_log(line: &str) -> Option<DateTime<Utc>> {
    let open = line.find('[')?;
    let inner = line.get(open + 1..open + 27)?;
    if !inner.ends_with(|c: char| c.is_ascii_digit()) || inner.as_bytes().get(2) != Some(&b'/') {
        return None;
    }
    DateTime::parse_from_str(inner, "%d/%b/%Y:%H:%M:%S %z")
        .ok()
        .map(|t| t.to_utc())
}

/// A wall-clock time in `tz`; in the repeated hour of a DST change, the earlier one.
pub(crate) fn local(naive: NaiveDateTime, tz: Tz) -> Option<DateTime<Utc>> {
    match tz.from_local_datetime(&naive) {
        LocalResult::Single(t) => Some(t.to_utc()),
        LocalResult::Ambiguous(earlier, _) => Some(earlier.to_utc()),
        LocalResult::None => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use chrono_tz::Asia::Tokyo;

    fn utc(s: &str) -> DateTime<Utc> {
        DateTime::parse_from_rfc3339(s).expect("test time").to_utc()
    }

    #[test]
    fn a_date_ahead_of_its_reading_is_last_years() {
        let dec1 = utc("2026-12-01T00:00:00Z");
        let t = |line: &str, arrival| parse(line, Tokyo, arrival).map(|t| t.to_rfc3339());
        assert_eq!(
            t("Dec 10 10:00:00 h x", dec1).as_deref(),
            Some("2025-12-10T01:00:00+00:00"),
            "ten days ahead is last year"
        );
        assert_eq!(
            t("Dec  1 23:00:00 h x", dec1).as_deref(),
            Some("2026-12-01T14:00:00+00:00"),
            "within a day ahead is a skewed clock, this year"
        );
        let jan1 = utc("2027-01-01T00:30:00Z");
        assert_eq!(
            t("Dec 31 23:59:00 h x", jan1).as_deref(),
            Some("2026-12-31T14:59:00+00:00")
        );
        let leap_read = utc("2027-03-01T00:00:00Z");
        assert_eq!(
            t("Feb 29 12:00:00 h x", leap_read).as_deref(),
            Some("2024-02-29T03:00:00+00:00"),
            "the last Feb 29"
        );
    }

    #[test]
    fn formats_in_the_wild() {
        let arrival = utc("2026-11-25T03:00:00Z");
        let cases = [
            (
                "Nov  3 15:35:12 ktk-gw01 sshd[1234]: Failed password",
                "2026-11-03T06:35:12Z",
            ),
            ("Nov 25 11:59:59 host x", "2026-11-25T02:59:59Z"),
            (
                "<34>Oct 11 22:14:15 mymachine su: 'su root' failed",
                "2026-10-11T13:14:15Z",
            ),
            (
                "<165>1 2026-11-25T12:00:00.003+09:00 host app - - - msg",
                "2026-11-25T03:00:00.003Z",
            ),
            (
                "2026-11-25T12:00:00Z host sshd[1]: x",
                "2026-11-25T12:00:00Z",
            ),
            (
                "2026-11-25T12:00:00.123456+0900 x",
                "2026-11-25T03:00:00.123456Z",
            ),
            ("2026-11-25 12:00:00 ERROR x", "2026-11-25T03:00:00Z"),
            (
                "2026-11-25 12:00:00.250 ERROR x",
                "2026-11-25T03:00:00.250Z",
            ),
            (
                r#"203.0.113.5 - - [25/Nov/2026:12:00:00 +0900] "GET /../../etc/passwd HTTP/1.1" 404 0"#,
                "2026-11-25T03:00:00Z",
            ),
        ];
        for (line, expected) in cases {
            assert_eq!(parse(line, Tokyo, arrival), Some(utc(expected)), "{line}");
        }
    }

    #[test]
    fn year_rolls_over_at_new_year() {
        // A line stamped 31 Dec 23:59:58 JST read at 00:00:03 JST on 1 January.
        let arrival = utc("2026-12-31T15:00:03Z");
        assert_eq!(
            parse("Dec 31 23:59:58 h x", Tokyo, arrival),
            Some(utc("2026-12-31T14:59:58Z"))
        );
        let arrival = utc("2027-01-01T00:00:03Z");
        assert_eq!(
            parse("Dec 31 23:59:58 h x", Tokyo, arrival),
            Some(utc("2026-12-31T14:59:58Z"))
        );
        // And a January line read a few seconds early by a skewed clock stays in January.
        let arrival = utc("2026-12-31T14:59:59Z");
        assert_eq!(
            parse("Jan  1 00:00:01 h x", Tokyo, arrival),
            Some(utc("2026-12-31T15:00:01Z"))
        );
    }

    #[test]
    fn no_readable_time_means_arrival() {
        let arrival = utc("2026-11-25T03:00:00Z");
        for line in [
            "",
            "hello",
            "Foo 31 99:99:99 x",
            "2026-13-45T00:00:00Z x",
            "\u{1b}[31mNov  3",
            "[not/a/date]",
        ] {
            assert_eq!(line_time(line, Tokyo, arrival), arrival, "{line:?}");
        }
    }
}
