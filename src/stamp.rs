//! A line's time read by a pattern's named groups, as fail2ban reads it with a filter's
//! `datepattern`: each group named for a strftime code (`Y`, `m`, `d`, `H`, …; a `__x` suffix
//! tells repeats apart) holds that part of the time. An imported rule's `strip` carries these
//! groups, so the time of its hits is the one fail2ban would give the line, in the formats
//! csirt's own reader (`timestamp`) does not know.
//!
//! What a stamp lacks is taken as fail2ban takes it: no year, the latest that does not put the
//! line more than a day after it was read; no date, the day it was read (the day before, when
//! that would be later than the reading); no zone, the configured one. Fractions of a second are
//! dropped, as fail2ban drops them, except in seconds since the epoch.

use chrono::{DateTime, Datelike, FixedOffset, NaiveDate, NaiveTime, TimeZone, Utc};
use chrono_tz::Tz;

/// The group names a stamp is read from (a `__x` suffix aside): `strip` may name no others.
pub const NAMES: &[&str] = &[
    "Y", "y", "m", "b", "d", "H", "I", "p", "M", "S", "z", "Z", "s", "tai64n",
];

/// A time read from a line, before what it lacks is filled in.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Stamp {
    /// An instant (seconds since the epoch, TAI64N).
    At(DateTime<Utc>),
    /// A wall-clock time.
    Wall {
        year: Option<i32>,
        /// Month and day.
        date: Option<(u32, u32)>,
        time: NaiveTime,
        /// The line's own zone (`+0200`, `UTC`, `CEST`).
        offset: Option<FixedOffset>,
    },
}

impl Stamp {
    /// The stamp the named groups that took part make (name without its `__x` suffix, text);
    /// `None` when they make no time (no time of day, or a part out of range).
    pub fn from_groups<'a>(groups: impl IntoIterator<Item = (&'a str, &'a str)>) -> Option<Stamp> {
        let mut g: [Option<&str>; 14] = [None; 14];
        for (name, text) in groups {
            let base = name.split_once("__").map_or(name, |(n, _)| n);
            if let Some(i) = NAMES.iter().position(|n| *n == base) {
                g[i].get_or_insert(text);
            }
        }
        let [
            y4,
            y2,
            m,
            b,
            d,
            h24,
            h12,
            ampm,
            min,
            sec,
            z,
            zone,
            epoch,
            tai,
        ] = g;
        if let Some(s) = epoch {
            return epoch_seconds(s).map(Stamp::At);
        }
        if let Some(t) = tai {
            // fail2ban reads 15 hex digits after `@4`: the seconds, less TAI64's 2^62 label.
            let secs = i64::from_str_radix(t.get(2..17)?, 16).ok()?;
            return DateTime::from_timestamp(secs, 0).map(Stamp::At);
        }
        let number = |t: Option<&str>| t.and_then(|t| t.trim().parse::<u32>().ok());
        let year = match (y4, y2) {
            (Some(y), _) => Some(y.trim().parse::<i32>().ok()?),
            // fail2ban puts two-digit years in this century.
            (None, Some(y)) => Some(y.trim().parse::<i32>().ok()? + 2000),
            (None, None) => None,
        };
        let month = match (m, b) {
            (Some(m), _) => number(Some(m)),
            (None, Some(name)) => month_of(name),
            (None, None) => None,
        };
        let date = match (month, number(d)) {
            (Some(month), Some(day)) => Some((month, day)),
            (None, None) => None,
            _ => return None,
        };
        let hour = match (number(h24), number(h12)) {
            (Some(h), _) => h,
            (None, Some(h)) => {
                let pm = ampm.is_some_and(|p| p.eq_ignore_ascii_case("pm"));
                match (h, pm) {
                    (12, false) => 0,
                    (12, true) => 12,
                    (h, true) => h + 12,
                    (h, false) => h,
                }
            }
            (None, None) => return None,
        };
        // Out of range (a leap second, hour 24) is no time, as Python's datetime refuses it.
        let time =
            NaiveTime::from_hms_opt(hour, number(min).unwrap_or(0), number(sec).unwrap_or(0))?;
        let offset = match (z, zone) {
            (Some(z), _) => Some(offset_of(z)?),
            (None, Some(name)) => Some(abbreviation(name)?),
            (None, None) => None,
        };
        Some(Stamp::Wall {
            year,
            date,
            time,
            offset,
        })
    }

    /// The instant this stamp names, read at `arrival` in zone `tz`; `None` for a date that
    /// does not exist (30 February, a wall time skipped by a DST change).
    pub fn resolve(&self, tz: Tz, arrival: DateTime<Utc>) -> Option<DateTime<Utc>> {
        let (year, date, time, offset) = match *self {
            Stamp::At(at) => return Some(at),
            Stamp::Wall {
                year,
                date,
                time,
                offset,
            } => (year, date, time, offset),
        };
        let at = |y: i32, (month, day): (u32, u32)| {
            let naive = NaiveDate::from_ymd_opt(y, month, day)?.and_time(time);
            match offset {
                Some(o) => o.from_local_datetime(&naive).single().map(|t| t.to_utc()),
                None => crate::timestamp::local(naive, tz),
            }
        };
        let local_arrival = arrival.with_timezone(&tz);
        match (year, date) {
            (Some(y), Some(md)) => at(y, md),
            (None, Some(md)) => {
                crate::timestamp::latest_not_after(local_arrival.year(), arrival, |y| at(y, md))
            }
            (_, None) => {
                // A time of day alone: today's, or yesterday's if today's is still to come.
                let today = local_arrival.date_naive();
                let t = at(today.year(), (today.month(), today.day()))?;
                if t > arrival {
                    let yesterday = today.pred_opt()?;
                    at(yesterday.year(), (yesterday.month(), yesterday.day()))
                } else {
                    Some(t)
                }
            }
        }
    }
}

/// Seconds since the epoch as fail2ban reads them: 13 digits or more are milliseconds (16 or
/// more without a point, microseconds).
fn epoch_seconds(text: &str) -> Option<DateTime<Utc>> {
    let text = text.trim();
    let (whole, fraction) = text.split_once('.').unwrap_or((text, ""));
    if whole.is_empty() || !whole.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    if !fraction.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    let digits = format!("{whole}{fraction}");
    let value: i128 = digits.parse().ok()?;
    // The value in nanoseconds: `whole.fraction` scaled by the unit the length says.
    let unit_exp: u32 = match (whole.len(), fraction.is_empty()) {
        (16.., true) => 3,
        (13.., _) => 6,
        _ => 9,
    };
    let nanos = value * 10i128.pow(unit_exp) / 10i128.pow(u32::try_from(fraction.len()).ok()?);
    let secs = i64::try_from(nanos.div_euclid(1_000_000_000)).ok()?;
    let sub = u32::try_from(nanos.rem_euclid(1_000_000_000)).ok()?;
    DateTime::from_timestamp(secs, sub)
}

/// `jan`, `January`, `sept`: the month by its first three letters (English, any case).
fn month_of(name: &str) -> Option<u32> {
    const MONTHS: [&str; 12] = [
        "jan", "feb", "mar", "apr", "may", "jun", "jul", "aug", "sep", "oct", "nov", "dec",
    ];
    let head = name.trim().get(..3)?.to_ascii_lowercase();
    MONTHS
        .iter()
        .position(|m| *m == head)
        .and_then(|i| u32::try_from(i + 1).ok())
}

/// `Z`, `UTC`, `GMT`, `+02`, `+0200`, `-04:00`, or a zone abbreviation with or without an
/// offset after it (`CET+0100`), as fail2ban's `zone2offset` reads them.
fn offset_of(text: &str) -> Option<FixedOffset> {
    let text = text.trim();
    let sign_at = text.find(['+', '-']).unwrap_or(text.len());
    let (name, rest) = text.split_at(sign_at);
    let base = if name.is_empty() {
        0
    } else {
        abbreviation(name)?.local_minus_utc()
    };
    if rest.is_empty() {
        return FixedOffset::east_opt(base);
    }
    let sign = if rest.starts_with('-') { -1 } else { 1 };
    let digits: String = rest[1..].chars().filter(|c| *c != ':').collect();
    if !digits.bytes().all(|b| b.is_ascii_digit()) || !matches!(digits.len(), 2 | 4) {
        return None;
    }
    let hours: i32 = digits[..2].parse().ok()?;
    let minutes: i32 = digits.get(2..).map_or(Ok(0), str::parse).ok()?;
    FixedOffset::east_opt(base + sign * (hours * 3600 + minutes * 60))
}

/// fail2ban's zone abbreviations (`strptime.TZ_STR`), each a fixed offset (CET is +01:00
/// whatever the season, as in fail2ban).
fn abbreviation(name: &str) -> Option<FixedOffset> {
    const ZONES: &[(i32, &str)] = &[
        (-720, "Y"),
        (-660, "X NUT SST"),
        (-600, "W CKT HAST HST TAHT TKT"),
        (-540, "V AKST GAMT GIT HADT HNY"),
        (-480, "U AKDT CIST HAY HNP PST PT"),
        (-420, "T HAP HNR MST PDT"),
        (-360, "S CST EAST GALT HAR HNC MDT"),
        (-300, "R CDT COT EASST ECT EST ET HAC HNE PET"),
        (-240, "Q AST BOT CLT COST EDT FKT GYT HAE HNA PYT"),
        (
            -180,
            "P ADT ART BRT CLST FKST GFT HAA PMST PYST SRT UYT WGT",
        ),
        (-120, "O BRST FNT PMDT UYST WGST"),
        (-60, "N AZOT CVT EGT"),
        (0, "Z EGST GMT UTC WET WT"),
        (60, "A CET DFT WAT WEDT WEST"),
        (120, "B CAT CEDT CEST EET SAST WAST"),
        (180, "C EAT EEDT EEST IDT MSK"),
        (240, "D AMT AZT GET GST KUYT MSD MUT RET SAMT SCT"),
        (
            300,
            "E AMST AQTT AZST HMT MAWT MVT PKT TFT TJT TMT UZT YEKT",
        ),
        (360, "F ALMT BIOT BTT IOT KGT NOVT OMST YEKST"),
        (420, "G CXT DAVT HOVT ICT KRAT NOVST OMSST THA WIB"),
        (
            480,
            "H ACT AWST BDT BNT CAST HKT IRKT KRAST MYT PHT SGT ULAT WITA WST",
        ),
        (540, "I AWDT IRKST JST KST PWT TLT WDT WIT YAKT"),
        (600, "K AEST ChST PGT VLAT YAKST YAPT"),
        (660, "L AEDT LHDT MAGT NCT PONT SBT VLAST VUT"),
        (
            720,
            "M ANAST ANAT FJT GILT MAGST MHT NZST PETST PETT TVT WFT",
        ),
        (780, "FJST NZDT"),
        (690, "NFT"),
        (630, "ACDT LHST"),
        (570, "ACST"),
        (390, "CCT MMT"),
        (345, "NPT"),
        (330, "SLT"),
        (270, "AFT IRDT"),
        (210, "IRST"),
        (-150, "HAT NDT"),
        (-210, "HNT NST NT"),
        (-270, "HLV VET"),
        (-570, "MART MIT"),
    ];
    let minutes = ZONES
        .iter()
        .find(|(_, names)| names.split(' ').any(|n| n == name))?
        .0;
    FixedOffset::east_opt(minutes * 60)
}

#[cfg(test)]
mod tests {
    use super::*;
    use chrono_tz::Europe::Zurich;

    fn utc(s: &str) -> DateTime<Utc> {
        DateTime::parse_from_rfc3339(s).expect("test time").to_utc()
    }

    /// fail2ban's test suite reads its logs on 14 August 2005 at noon in Zurich.
    const READ: &str = "2005-08-14T10:00:00Z";

    fn read(groups: &[(&str, &str)]) -> Option<String> {
        Stamp::from_groups(groups.iter().copied())?
            .resolve(Zurich, utc(READ))
            .map(|t| t.to_rfc3339())
    }

    #[test]
    fn wall_times_with_and_without_year_and_zone() {
        // (the named groups, the time they make, why)
        type Case<'a> = (&'a [(&'a str, &'a str)], &'a str, &'a str);
        let cases: &[Case] = &[
            (
                &[
                    ("b", "Feb"),
                    ("d", " 1"),
                    ("H", "00"),
                    ("M", "00"),
                    ("S", "00"),
                ],
                "2005-01-31T23:00:00+00:00",
                "syslog: this year, CET",
            ),
            (
                &[
                    ("b", "Dec"),
                    ("d", "5"),
                    ("H", "15"),
                    ("M", "44"),
                    ("S", "32"),
                ],
                "2004-12-05T14:44:32+00:00",
                "a date ahead of the reading is last year's",
            ),
            (
                &[
                    ("d", "22"),
                    ("b__2", "Jan"),
                    ("Y__2", "2013"),
                    ("H", "22"),
                    ("M", "28"),
                    ("S", "21"),
                    ("z", "+0200"),
                ],
                "2013-01-22T20:28:21+00:00",
                "the line's own offset; repeats by their suffix",
            ),
            (
                &[
                    ("b", "Oct"),
                    ("d", "27"),
                    ("Y", "2015"),
                    ("I", "12"),
                    ("M", "05"),
                    ("S", "00"),
                    ("p", "AM"),
                ],
                "2015-10-26T23:05:00+00:00",
                "12 AM is midnight",
            ),
            (
                &[
                    ("y", "13"),
                    ("m", "11"),
                    ("d", "05"),
                    ("H", "13"),
                    ("M", "10"),
                    ("S", "00"),
                ],
                "2013-11-05T12:10:00+00:00",
                "two-digit years in this century",
            ),
            (
                &[
                    ("Y", "2014"),
                    ("m", "1"),
                    ("d", "2"),
                    ("H", "3"),
                    ("M", "4"),
                    ("S", "5"),
                    ("Z", "CEST"),
                ],
                "2014-01-02T01:04:05+00:00",
                "an abbreviation is a fixed offset",
            ),
            (
                &[("H", "09"), ("M", "00"), ("S", "00")],
                "2005-08-14T07:00:00+00:00",
                "a time alone is today's",
            ),
            (
                &[("H", "23"), ("M", "00"), ("S", "00")],
                "2005-08-13T21:00:00+00:00",
                "or yesterday's when today's is still to come",
            ),
        ];
        for (groups, time, why) in cases {
            assert_eq!(read(groups).as_deref(), Some(*time), "{why}");
        }
    }

    #[test]
    fn instants() {
        assert_eq!(
            read(&[("s", "1387288694")]).as_deref(),
            Some("2013-12-17T13:58:14+00:00")
        );
        assert_eq!(
            read(&[("s", "1386543323.250")]).as_deref(),
            Some("2013-12-08T22:55:23.250+00:00")
        );
        assert_eq!(
            read(&[("s", "1387288694123")]).as_deref(),
            Some("2013-12-17T13:58:14.123+00:00"),
            "milliseconds"
        );
        assert_eq!(
            read(&[("tai64n", "@400000004c91b044077a9e94")]).as_deref(),
            Some("2010-09-16T05:51:00+00:00")
        );
    }

    #[test]
    fn what_is_no_time() {
        assert_eq!(read(&[]), None);
        assert_eq!(
            read(&[("Y", "2005"), ("b", "Foo"), ("d", "1"), ("H", "1")]),
            None
        );
        assert_eq!(read(&[("b", "Feb"), ("d", "30"), ("H", "1")]), None);
        assert_eq!(read(&[("H", "25")]), None);
        assert_eq!(read(&[("H", "1"), ("z", "+99x")]), None);
        assert_eq!(read(&[("s", "12a")]), None);
        assert_eq!(
            read(&[("Y", "2005"), ("d", "1"), ("H", "1")]),
            None,
            "a day without a month"
        );
    }
}
