//! The statutory deadlines in the report: the reports and notifications 個人情報保護法 and 番号法
//! require of the period's personal-information incidents (#16's clocks, from 覚知), judged from
//! the reports recorded with `csirt incidents reported`.
//!
//! Never computes a deadline: the clocks are the ones `pii::assess` derived under the rules file
//! and the store kept (`store::statutory`); this module only says, at the report's time, which
//! were met, which missed and by how long, which still run. Pure apart from `read`.
//!
//! - met: the report was recorded by its deadline (速やかに, which has no statutory number of
//!   days, once it was recorded);
//! - missed: recorded after its deadline (late by the difference), or not recorded and the
//!   deadline passed (late until the report's time, and still outstanding);
//! - running: not recorded, its deadline not come (or 速やかに, reminded from its warning).

use super::figures::{Figures, MISSED_LISTED};
use super::period::Period;
use super::stats::ratio;
use super::tables::{Cell, Row, Section, Table, compared, compared_table, strings};
use crate::pii::{Clock, ClockState, Kind, Party};
use crate::store::statutory::IncidentClock;
use crate::store::{Store, StoreError};
use chrono::{DateTime, Utc};
use serde::Serialize;

/// How one clock stands at the report's time.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Judgement {
    Met,
    /// Due at `due`, late by these many seconds; `outstanding` when the report is still not
    /// recorded.
    Missed {
        due: DateTime<Utc>,
        late_seconds: i64,
        outstanding: bool,
    },
    Running,
}

/// Judges `clock` at `now`. A report recorded after `now` (a report made for an earlier time)
/// is not yet made, as an incident closed after `now` is not yet closed.
pub fn judge(clock: &Clock, now: DateTime<Utc>) -> Judgement {
    let done = clock.done_at.filter(|d| *d <= now);
    match (done, clock.due_at) {
        (Some(done), Some(due)) if done > due => Judgement::Missed {
            due,
            late_seconds: (done - due).num_seconds(),
            outstanding: false,
        },
        (Some(_), _) => Judgement::Met,
        (None, due) => {
            let pending = Clock {
                done_at: None,
                ..clock.clone()
            };
            match (pending.state(now), due) {
                (ClockState::Overdue, Some(due)) => Judgement::Missed {
                    due,
                    late_seconds: (now - due).num_seconds(),
                    outstanding: true,
                },
                _ => Judgement::Running,
            }
        }
    }
}

/// A required report that was late, or is overdue and not made.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct MissedReport {
    pub incident: i64,
    pub title: String,
    /// The report's name in the rules (`個人情報保護委員会への確報`).
    pub report: String,
    pub to: Party,
    pub kind: Kind,
    pub due_at: DateTime<Utc>,
    /// When it was made; None while it is not.
    pub done_at: Option<DateTime<Utc>>,
    /// How late: until it was made, or until the report's time when it is not.
    pub late_seconds: i64,
}

/// A required report not made yet whose deadline has not come.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct RunningReport {
    pub incident: i64,
    pub title: String,
    pub report: String,
    pub to: Party,
    pub kind: Kind,
    /// When the reminder comes (or came).
    pub warn_at: DateTime<Utc>,
    /// None for 速やかに.
    pub due_at: Option<DateTime<Utc>>,
}

/// The figures of one kind of report (by its name in the rules).
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct ReportCounts {
    pub report: String,
    pub to: Party,
    pub kind: Kind,
    pub met: i64,
    pub missed: i64,
    pub running: i64,
}

/// The statutory deadlines of the period's incidents.
#[derive(Debug, Clone, Default, PartialEq, Serialize)]
pub struct Statutory {
    /// Incidents with at least one statutory clock.
    pub incidents: i64,
    pub met: i64,
    pub missed: i64,
    pub running: i64,
    /// `met / (met + missed)`; None when no deadline has come.
    pub compliance_rate: Option<f64>,
    /// Missed ones not made to this day (part of `missed`): what still needs doing.
    pub outstanding: i64,
    /// Per report, in the order of the party and kind (速報 before 確報).
    pub by_report: Vec<ReportCounts>,
    /// The first `MISSED_LISTED`, in order of opening (the counts cover all).
    pub missed_reports: Vec<MissedReport>,
    /// The first `MISSED_LISTED`, in order of opening.
    pub running_reports: Vec<RunningReport>,
}

impl Statutory {
    /// Whether any incident of the period had a statutory clock.
    pub fn any(&self) -> bool {
        self.met + self.missed + self.running > 0
    }
}

/// Counts `clocks` (in order of their incidents' opening) at `now`.
pub fn tally(clocks: &[IncidentClock], now: DateTime<Utc>) -> Statutory {
    let mut s = Statutory::default();
    let mut last_incident = None;
    for c in clocks {
        if last_incident != Some(c.incident) {
            s.incidents += 1;
            last_incident = Some(c.incident);
        }
        let at = match s.by_report.iter().position(|r| r.report == c.clock.name) {
            Some(at) => at,
            None => {
                s.by_report.push(ReportCounts {
                    report: c.clock.name.clone(),
                    to: c.clock.to,
                    kind: c.clock.kind,
                    met: 0,
                    missed: 0,
                    running: 0,
                });
                s.by_report.len() - 1
            }
        };
        let counts = &mut s.by_report[at];
        match judge(&c.clock, now) {
            Judgement::Met => {
                s.met += 1;
                counts.met += 1;
            }
            Judgement::Missed {
                due,
                late_seconds,
                outstanding,
            } => {
                s.missed += 1;
                counts.missed += 1;
                s.outstanding += i64::from(outstanding);
                if s.missed_reports.len() < MISSED_LISTED {
                    s.missed_reports.push(MissedReport {
                        incident: c.incident,
                        title: c.title.clone(),
                        report: c.clock.name.clone(),
                        to: c.clock.to,
                        kind: c.clock.kind,
                        due_at: due,
                        done_at: c.clock.done_at.filter(|_| !outstanding),
                        late_seconds,
                    });
                }
            }
            Judgement::Running => {
                s.running += 1;
                counts.running += 1;
                if s.running_reports.len() < MISSED_LISTED {
                    s.running_reports.push(RunningReport {
                        incident: c.incident,
                        title: c.title.clone(),
                        report: c.clock.name.clone(),
                        to: c.clock.to,
                        kind: c.clock.kind,
                        warn_at: c.clock.warn_at,
                        due_at: c.clock.due_at,
                    });
                }
            }
        }
    }
    s.by_report
        .sort_by(|a, b| (a.to, a.kind, &a.report).cmp(&(b.to, b.kind, &b.report)));
    s.compliance_rate = ratio(s.met, s.met + s.missed);
    s
}

/// The statutory deadlines of the incidents opened in `period`, judged at `now`.
pub async fn read(
    store: &Store,
    period: &Period,
    now: DateTime<Utc>,
) -> Result<Statutory, StoreError> {
    let clocks = store
        .report_statutory_clocks(period.start, period.end)
        .await?;
    Ok(tally(&clocks, now))
}

/// The deadlines section's tables of the statutory reports, beside the previous year's.
pub fn tables(f: &Figures, p: Option<&Figures>) -> Vec<Table> {
    let row = |label: &str, value: &dyn Fn(&Statutory) -> Cell| {
        compared(label, f, p, |f: &Figures| value(&f.statutory))
    };
    vec![
        compared_table(
            Section::Deadlines,
            "法定の報告期限 (個人情報保護法・番号法)",
            vec![
                row("対象のインシデント", &|s| Cell::Count(s.incidents)),
                row("期限内に報告・通知", &|s| Cell::Count(s.met)),
                row("超過", &|s| Cell::Count(s.missed)),
                row("うち未報告", &|s| Cell::Count(s.outstanding)),
                row("進行中", &|s| Cell::Count(s.running)),
                row("遵守率", &|s| Cell::Rate(s.compliance_rate)),
            ],
        ),
        Table {
            section: Section::Deadlines,
            name: "法定の報告 (報告別)",
            columns: strings(["", "報告先", "種別", "期限内", "超過", "進行中"]),
            rows: f
                .statutory
                .by_report
                .iter()
                .map(|r| Row {
                    label: r.report.clone(),
                    cells: vec![
                        Cell::Text(r.to.label_ja().into()),
                        Cell::Text(r.kind.as_str().into()),
                        Cell::Count(r.met),
                        Cell::Count(r.missed),
                        Cell::Count(r.running),
                    ],
                })
                .collect(),
        },
        Table {
            section: Section::Deadlines,
            name: "法定の報告期限を超過したもの",
            columns: strings(["", "インシデント", "報告", "期日", "報告日", "遅れ"]),
            rows: f
                .statutory
                .missed_reports
                .iter()
                .map(|m| Row {
                    label: format!("#{}", m.incident),
                    cells: vec![
                        Cell::Text(m.title.clone()),
                        Cell::Text(m.report.clone()),
                        Cell::Time(m.due_at),
                        m.done_at.map_or(Cell::Text("未報告".into()), Cell::Time),
                        Cell::Duration(Some(m.late_seconds)),
                    ],
                })
                .collect(),
        },
        Table {
            section: Section::Deadlines,
            name: "進行中の法定の報告",
            columns: strings(["", "インシデント", "報告", "期日", "リマインダー"]),
            rows: f
                .statutory
                .running_reports
                .iter()
                .map(|r| Row {
                    label: format!("#{}", r.incident),
                    cells: vec![
                        Cell::Text(r.title.clone()),
                        Cell::Text(r.report.clone()),
                        r.due_at.map_or(Cell::Text("速やかに".into()), Cell::Time),
                        Cell::Time(r.warn_at),
                    ],
                })
                .collect(),
        },
    ]
}

#[cfg(test)]
mod tests {
    use super::*;
    use chrono::TimeDelta;

    fn t(s: &str) -> DateTime<Utc> {
        DateTime::parse_from_rfc3339(s).expect("time").to_utc()
    }

    fn clock(name: &str, kind: Kind, due: Option<&str>, done: Option<&str>) -> Clock {
        Clock {
            duty: "ppc".into(),
            name: name.into(),
            to: Party::Ppc,
            kind,
            warn_at: t("2026-07-04T00:00:00Z"),
            due_at: due.map(t),
            source: "規則".into(),
            done_at: done.map(t),
        }
    }

    #[test]
    fn each_clock_is_met_missed_or_running() {
        let now = t("2026-08-10T00:00:00Z");
        let day = TimeDelta::days(1).num_seconds();
        for (due, done, expected) in [
            (
                Some("2026-07-06T00:00:00Z"),
                Some("2026-07-06T00:00:00Z"),
                Judgement::Met,
            ),
            (
                Some("2026-07-31T00:00:00Z"),
                Some("2026-08-05T00:00:00Z"),
                Judgement::Missed {
                    due: t("2026-07-31T00:00:00Z"),
                    late_seconds: 5 * day,
                    outstanding: false,
                },
            ),
            (
                Some("2026-07-31T00:00:00Z"),
                None,
                Judgement::Missed {
                    due: t("2026-07-31T00:00:00Z"),
                    late_seconds: 10 * day,
                    outstanding: true,
                },
            ),
            (Some("2026-08-31T00:00:00Z"), None, Judgement::Running),
            // 速やかに: no number of days to miss.
            (None, None, Judgement::Running),
            (None, Some("2026-12-01T00:00:00Z"), Judgement::Running),
            (None, Some("2026-07-02T00:00:00Z"), Judgement::Met),
            // Made after the report's time: not made yet, and overdue.
            (
                Some("2026-08-09T00:00:00Z"),
                Some("2026-08-11T00:00:00Z"),
                Judgement::Missed {
                    due: t("2026-08-09T00:00:00Z"),
                    late_seconds: day,
                    outstanding: true,
                },
            ),
        ] {
            assert_eq!(
                judge(&clock("r", Kind::Final, due, done), now),
                expected,
                "due {due:?} done {done:?}"
            );
        }
    }

    #[test]
    fn the_tally_counts_per_report_and_lists_what_was_missed() {
        let now = t("2026-08-10T00:00:00Z");
        let of = |incident: i64, clock: Clock| IncidentClock {
            incident,
            title: format!("#{incident}"),
            opened_at: t("2026-07-01T00:00:00Z"),
            clock,
        };
        let clocks = [
            of(
                5,
                clock(
                    "速報",
                    Kind::Preliminary,
                    Some("2026-07-06T00:00:00Z"),
                    Some("2026-07-03T00:00:00Z"),
                ),
            ),
            of(
                5,
                clock(
                    "確報",
                    Kind::Final,
                    Some("2026-07-31T00:00:00Z"),
                    Some("2026-08-05T00:00:00Z"),
                ),
            ),
            of(
                6,
                clock(
                    "速報",
                    Kind::Preliminary,
                    Some("2026-07-06T00:00:00Z"),
                    None,
                ),
            ),
            of(
                6,
                clock("確報", Kind::Final, Some("2026-08-31T00:00:00Z"), None),
            ),
        ];
        let s = tally(&clocks, now);
        assert_eq!(
            (s.incidents, s.met, s.missed, s.running, s.outstanding),
            (2, 1, 2, 1, 1)
        );
        assert_eq!(s.compliance_rate, Some(1.0 / 3.0));
        let by: Vec<(&str, i64, i64, i64)> = s
            .by_report
            .iter()
            .map(|r| (r.report.as_str(), r.met, r.missed, r.running))
            .collect();
        assert_eq!(by, [("速報", 1, 1, 0), ("確報", 0, 1, 1)]);
        let missed: Vec<(i64, &str, Option<DateTime<Utc>>)> = s
            .missed_reports
            .iter()
            .map(|m| (m.incident, m.report.as_str(), m.done_at))
            .collect();
        assert_eq!(
            missed,
            [
                (5, "確報", Some(t("2026-08-05T00:00:00Z"))),
                (6, "速報", None)
            ]
        );
        assert_eq!(s.running_reports.len(), 1);
        // Nothing at all: no rate, nothing to divide.
        let none = tally(&[], now);
        assert!(!none.any());
        assert_eq!(none.compliance_rate, None);
    }
}
