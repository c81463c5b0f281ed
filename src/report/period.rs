//! The periods a report covers, in the configured time zone: a fiscal year (April 1 to March
//! 31, as Japanese local government counts it), a month, or a range of days; the same period a
//! year before; and their Japanese labels (令和8年度 = FY2026, with the Western year beside).
//!
//! Pure: times in, times out. A period is half-open, `[start, end)`, in UTC instants computed
//! from local midnights in the configured zone: an incident at 08:30 UTC on April 1 is in the new
//! fiscal year, and one at 23:59 JST on March 31 (14:59 UTC) in the old one, whatever the
//! server's own zone.

use chrono::{DateTime, Datelike, Months, NaiveDate, TimeZone, Utc};
use chrono_tz::Tz;
use std::fmt;

/// What a report covers, as the command line or a schedule names it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Span {
    /// Fiscal year `Y`: April 1 of `Y` to March 31 of `Y + 1`.
    FiscalYear(i32),
    /// One calendar month.
    Month { year: i32, month: u32 },
    /// Days `from` to `to`, both included.
    Days { from: NaiveDate, to: NaiveDate },
}

/// Why a period cannot be made.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum PeriodError {
    #[error("`{0}` is not a month (write it as YYYY-MM, e.g. 2026-11)")]
    Month(String),
    #[error("`{0}` is not a date (write it as YYYY-MM-DD, e.g. 2026-04-01)")]
    Date(String),
    #[error("--from {from} is after --to {to}")]
    Reversed { from: NaiveDate, to: NaiveDate },
    #[error("{0} is outside the years csirt reports on (1989 to 9998)")]
    Year(i32),
    #[error("local midnight of {0} does not exist in the configured time zone")]
    Midnight(NaiveDate),
}

/// The first instant of a span of time and the first after it.
pub type Instants = (DateTime<Utc>, DateTime<Utc>);

/// A span made concrete in a time zone.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Period {
    pub span: Span,
    pub tz: Tz,
    /// The first instant in the period.
    pub start: DateTime<Utc>,
    /// The first instant after it.
    pub end: DateTime<Utc>,
}

/// The fiscal year a local date falls in: April to December belong to their own year,
/// January to March to the year before.
pub fn fiscal_year_of(date: NaiveDate) -> i32 {
    if date.month() >= 4 {
        date.year()
    } else {
        date.year() - 1
    }
}

/// Parses `YYYY-MM`.
pub fn parse_month(text: &str) -> Result<Span, PeriodError> {
    let bad = || PeriodError::Month(text.to_string());
    let (y, m) = text.trim().split_once('-').ok_or_else(bad)?;
    let (year, month): (i32, u32) = (y.parse().map_err(|_| bad())?, m.parse().map_err(|_| bad())?);
    if y.len() != 4 || !(1..=2).contains(&m.len()) || !(1..=12).contains(&month) {
        return Err(bad());
    }
    check_year(year)?;
    Ok(Span::Month { year, month })
}

/// Parses `YYYY-MM-DD`.
pub fn parse_date(text: &str) -> Result<NaiveDate, PeriodError> {
    let date = NaiveDate::parse_from_str(text.trim(), "%Y-%m-%d")
        .map_err(|_| PeriodError::Date(text.to_string()))?;
    check_year(date.year())?;
    Ok(date)
}

fn check_year(year: i32) -> Result<i32, PeriodError> {
    if (1989..=9998).contains(&year) {
        Ok(year)
    } else {
        Err(PeriodError::Year(year))
    }
}

/// The UTC instant of local midnight at the start of `date` in `tz`.
fn midnight(date: NaiveDate, tz: Tz) -> Result<DateTime<Utc>, PeriodError> {
    let local = date.and_time(chrono::NaiveTime::MIN);
    tz.from_local_datetime(&local)
        .earliest()
        // A zone that skips midnight (a DST change at 00:00) starts the day an hour later.
        .or_else(|| {
            tz.from_local_datetime(&(local + chrono::TimeDelta::hours(1)))
                .earliest()
        })
        .map(|t| t.with_timezone(&Utc))
        .ok_or(PeriodError::Midnight(date))
}

fn first_of(year: i32, month: u32) -> Result<NaiveDate, PeriodError> {
    NaiveDate::from_ymd_opt(year, month, 1).ok_or(PeriodError::Year(year))
}

impl Span {
    /// The first day and the day after the last.
    fn days(self) -> Result<(NaiveDate, NaiveDate), PeriodError> {
        let next = |d: NaiveDate, months: u32| {
            d.checked_add_months(Months::new(months))
                .ok_or(PeriodError::Year(d.year()))
        };
        match self {
            Span::FiscalYear(year) => {
                let from = first_of(check_year(year)?, 4)?;
                Ok((from, next(from, 12)?))
            }
            Span::Month { year, month } => {
                let from = first_of(check_year(year)?, month)?;
                Ok((from, next(from, 1)?))
            }
            Span::Days { from, to } => {
                if from > to {
                    return Err(PeriodError::Reversed { from, to });
                }
                let after = to.succ_opt().ok_or(PeriodError::Year(to.year()))?;
                Ok((from, after))
            }
        }
    }

    /// The same span a year before (February 29 becomes the 28th).
    pub fn year_before(self) -> Span {
        let back = |d: NaiveDate| d.checked_sub_months(Months::new(12)).unwrap_or(d);
        match self {
            Span::FiscalYear(year) => Span::FiscalYear(year - 1),
            Span::Month { year, month } => Span::Month {
                year: year - 1,
                month,
            },
            Span::Days { from, to } => Span::Days {
                from: back(from),
                to: back(to),
            },
        }
    }

    /// The last whole month or fiscal year that ended by `now` in `tz` (what a schedule that
    /// runs on the 1st, or in April, reports on).
    pub fn last_complete(fiscal_year: bool, now: DateTime<Utc>, tz: Tz) -> Span {
        let today = now.with_timezone(&tz).date_naive();
        if fiscal_year {
            Span::FiscalYear(fiscal_year_of(today) - 1)
        } else {
            let last = today
                .with_day(1)
                .and_then(|d| d.checked_sub_months(Months::new(1)))
                .unwrap_or(today);
            Span::Month {
                year: last.year(),
                month: last.month(),
            }
        }
    }

    /// A short name for files and mail subjects: `fy2026`, `2026-11`, `2026-04-01_2026-06-30`.
    pub fn slug(self) -> String {
        match self {
            Span::FiscalYear(y) => format!("fy{y}"),
            Span::Month { year, month } => format!("{year}-{month:02}"),
            Span::Days { from, to } => format!("{from}_{to}"),
        }
    }
}

impl Period {
    /// `span` in `tz`.
    pub fn new(span: Span, tz: Tz) -> Result<Period, PeriodError> {
        let (from, after) = span.days()?;
        Ok(Period {
            span,
            tz,
            start: midnight(from, tz)?,
            end: midnight(after, tz)?,
        })
    }

    /// The same period a year before.
    pub fn year_before(&self) -> Result<Period, PeriodError> {
        Period::new(self.span.year_before(), self.tz)
    }

    /// Whether `t` falls in the period.
    pub fn contains(&self, t: DateTime<Utc>) -> bool {
        self.start <= t && t < self.end
    }

    /// The calendar months the period touches, in order: `(year, month)`.
    pub fn months(&self) -> Vec<(i32, u32)> {
        let Ok((from, after)) = self.span.days() else {
            return Vec::new();
        };
        let mut months = Vec::new();
        let mut d = from.with_day(1).unwrap_or(from);
        while d < after {
            months.push((d.year(), d.month()));
            match d.checked_add_months(Months::new(1)) {
                Some(next) => d = next,
                None => break,
            }
        }
        months
    }

    /// The part of the period in each of `months()`, in order: `[start, end)` in UTC, the
    /// first and last clipped to the period. Together they cover the period exactly, and an
    /// instant is in the `n`th when `month_index` says `n` (both count by local midnights).
    pub fn month_spans(&self) -> Result<Vec<Instants>, PeriodError> {
        self.months()
            .into_iter()
            .map(|(year, month)| {
                let first = first_of(year, month)?;
                let next = first
                    .checked_add_months(Months::new(1))
                    .ok_or(PeriodError::Year(year))?;
                Ok((
                    midnight(first, self.tz)?.max(self.start),
                    midnight(next, self.tz)?.min(self.end),
                ))
            })
            .collect()
    }

    /// Which of `months()` the instant `t` falls in (None outside the period).
    pub fn month_index(&self, t: DateTime<Utc>) -> Option<usize> {
        if !self.contains(t) {
            return None;
        }
        let local = t.with_timezone(&self.tz).date_naive();
        let (from, _) = self.span.days().ok()?;
        let first = from.with_day(1).unwrap_or(from);
        let index =
            (local.year() - first.year()) * 12 + local.month() as i32 - first.month() as i32;
        usize::try_from(index).ok()
    }

    /// The Japanese label: `令和8年度 (2026年度)`, `令和8年 (2026年) 11月`,
    /// `2026年4月1日～2026年6月30日`.
    pub fn label(&self) -> String {
        self.span.to_string()
    }
}

/// The Japanese era year of a fiscal year or a date's year: 令和 from 2019 (May 1 for dates; a
/// fiscal year 2019 is 令和元年度 by custom), 平成 before. 元 for the first year.
fn era(year: i32, reiwa: bool) -> String {
    let (name, n) = if reiwa {
        ("令和", year - 2018)
    } else {
        ("平成", year - 1988)
    };
    if n == 1 {
        format!("{name}元")
    } else {
        format!("{name}{n}")
    }
}

/// 令和 for a month when its first day is in 令和 (May 2019 on), else 平成.
fn month_era(year: i32, month: u32) -> String {
    era(year, (year, month) >= (2019, 5))
}

impl fmt::Display for Span {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match *self {
            Span::FiscalYear(y) => write!(f, "{}年度 ({y}年度)", era(y, y >= 2019)),
            Span::Month { year, month } => {
                write!(f, "{}年 ({year}年) {month}月", month_era(year, month))
            }
            Span::Days { from, to } => write!(
                f,
                "{}年{}月{}日～{}年{}月{}日",
                from.year(),
                from.month(),
                from.day(),
                to.year(),
                to.month(),
                to.day()
            ),
        }
    }
}

/// A month's column heading: `2026年4月`.
pub fn month_label((year, month): (i32, u32)) -> String {
    format!("{year}年{month}月")
}

#[cfg(test)]
mod tests {
    use super::*;
    use chrono_tz::Asia::Tokyo;

    fn date(y: i32, m: u32, d: u32) -> NaiveDate {
        NaiveDate::from_ymd_opt(y, m, d).expect("date")
    }

    fn utc(text: &str) -> DateTime<Utc> {
        text.parse().expect("RFC 3339")
    }

    #[test]
    fn fiscal_year_runs_from_april_in_the_configured_zone() {
        let fy = Period::new(Span::FiscalYear(2026), Tokyo).expect("period");
        assert_eq!(fy.start, utc("2026-03-31T15:00:00Z"));
        assert_eq!(fy.end, utc("2027-03-31T15:00:00Z"));
        // 2026-03-31 23:59:59 in Tokyo is still fiscal 2025; 2026-04-01 00:00 is 2026.
        assert!(!fy.contains(utc("2026-03-31T14:59:59Z")));
        assert!(fy.contains(utc("2026-03-31T15:00:00Z")));
        assert!(fy.contains(utc("2027-03-31T14:59:59.999999Z")));
        assert!(!fy.contains(utc("2027-03-31T15:00:00Z")));
        assert_eq!(fiscal_year_of(date(2026, 3, 31)), 2025);
        assert_eq!(fiscal_year_of(date(2026, 4, 1)), 2026);
        assert_eq!(fiscal_year_of(date(2027, 1, 15)), 2026);
        assert_eq!(fy.months().len(), 12);
        assert_eq!(fy.months()[0], (2026, 4));
        assert_eq!(fy.months()[11], (2027, 3));
        assert_eq!(fy.month_index(utc("2026-03-31T15:00:00Z")), Some(0));
        assert_eq!(fy.month_index(utc("2026-04-30T15:00:00Z")), Some(1));
        assert_eq!(fy.month_index(utc("2027-03-31T14:00:00Z")), Some(11));
        assert_eq!(fy.month_index(utc("2026-03-31T14:59:59Z")), None);
        let spans = fy.month_spans().expect("spans");
        assert_eq!(spans.len(), 12);
        assert_eq!(spans[0], (fy.start, utc("2026-04-30T15:00:00Z")));
        assert_eq!(spans[11], (utc("2027-02-28T15:00:00Z"), fy.end));
        for (n, pair) in spans.windows(2).enumerate() {
            assert_eq!(pair[0].1, pair[1].0, "month {n} ends where the next begins");
            assert_eq!(fy.month_index(pair[0].0), Some(n));
            assert_eq!(
                fy.month_index(pair[0].1 - chrono::TimeDelta::microseconds(1)),
                Some(n)
            );
        }
    }

    #[test]
    fn labels_are_japanese_with_the_western_year_beside() {
        assert_eq!(Span::FiscalYear(2026).to_string(), "令和8年度 (2026年度)");
        assert_eq!(Span::FiscalYear(2019).to_string(), "令和元年度 (2019年度)");
        assert_eq!(Span::FiscalYear(2018).to_string(), "平成30年度 (2018年度)");
        assert_eq!(
            Span::Month {
                year: 2026,
                month: 11
            }
            .to_string(),
            "令和8年 (2026年) 11月"
        );
        assert_eq!(
            Span::Month {
                year: 2019,
                month: 4
            }
            .to_string(),
            "平成31年 (2019年) 4月"
        );
        assert_eq!(
            Span::Month {
                year: 2019,
                month: 5
            }
            .to_string(),
            "令和元年 (2019年) 5月"
        );
        assert_eq!(
            Span::Days {
                from: date(2026, 4, 1),
                to: date(2026, 6, 30)
            }
            .to_string(),
            "2026年4月1日～2026年6月30日"
        );
    }

    #[test]
    fn the_previous_year_and_the_last_complete_period() {
        assert_eq!(Span::FiscalYear(2026).year_before(), Span::FiscalYear(2025));
        assert_eq!(
            Span::Days {
                from: date(2028, 2, 29),
                to: date(2028, 3, 1)
            }
            .year_before(),
            Span::Days {
                from: date(2027, 2, 28),
                to: date(2027, 3, 1)
            }
        );
        // April 1, 09:00 in Tokyo: the fiscal year that just ended, and March.
        let april = utc("2026-04-01T00:00:00Z");
        assert_eq!(
            Span::last_complete(true, april, Tokyo),
            Span::FiscalYear(2025)
        );
        assert_eq!(
            Span::last_complete(false, april, Tokyo),
            Span::Month {
                year: 2026,
                month: 3
            }
        );
        // 08:59 on April 1 in Tokyo is 23:59 UTC on March 31: the zone decides, not UTC.
        assert_eq!(
            Span::last_complete(false, utc("2026-03-31T23:59:00Z"), Tokyo),
            Span::Month {
                year: 2026,
                month: 3
            }
        );
        assert_eq!(
            Span::last_complete(false, utc("2026-01-01T00:00:00Z"), Tokyo),
            Span::Month {
                year: 2025,
                month: 12
            }
        );
    }

    #[test]
    fn arguments_parse_or_say_what_is_wrong() {
        assert_eq!(
            parse_month("2026-11"),
            Ok(Span::Month {
                year: 2026,
                month: 11
            })
        );
        for bad in [
            "2026-13", "2026/11", "26-11", "2026-", "november", "2026-1-1",
        ] {
            assert!(parse_month(bad).is_err(), "{bad}");
        }
        assert_eq!(parse_date("2026-04-01"), Ok(date(2026, 4, 1)));
        assert!(parse_date("2026-02-30").is_err());
        assert_eq!(
            Period::new(
                Span::Days {
                    from: date(2026, 5, 1),
                    to: date(2026, 4, 1)
                },
                Tokyo
            ),
            Err(PeriodError::Reversed {
                from: date(2026, 5, 1),
                to: date(2026, 4, 1)
            })
        );
        let days = Period::new(
            Span::Days {
                from: date(2026, 4, 15),
                to: date(2026, 6, 2),
            },
            Tokyo,
        )
        .expect("days");
        assert_eq!(days.months(), vec![(2026, 4), (2026, 5), (2026, 6)]);
        // The first and last months are cut to the days asked for.
        let spans = days.month_spans().expect("spans");
        assert_eq!(
            spans[0],
            (utc("2026-04-14T15:00:00Z"), utc("2026-04-30T15:00:00Z"))
        );
        assert_eq!(spans[2], (utc("2026-05-31T15:00:00Z"), days.end));
        assert_eq!(days.end, utc("2026-06-02T15:00:00Z"));
    }
}
