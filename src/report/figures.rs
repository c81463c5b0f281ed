//! The figures of one period, tallied from the rows the store returns. Pure: rows, the period,
//! the playbooks and `now` in; numbers out. The same function makes the previous year's
//! figures, so the two always mean the same thing.
//!
//! What counts: the incidents *opened* in the period, each as it stands at `now` (an incident
//! opened on March 31 and acknowledged on April 1 counts its response time in the year it
//! opened); the escalations *fired* in the period; the incidents open at the period's end (or
//! now, for a period not over yet) and older than 30 days.

use super::period::{Period, month_label};
use super::stats::{Times, ratio};
use crate::model::{Resolution, Severity};
use crate::playbook::PlaybookSet;
use crate::store::report::{AgedIncident, ReportedIncident};
use chrono::{DateTime, TimeDelta, Utc};
use serde::Serialize;
use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::net::IpAddr;

/// How many rows a ranking (networks, accounts) keeps.
pub const TOP: usize = 10;
/// How many missed deadlines are listed (the count covers all).
pub const MISSED_LISTED: usize = 100;
/// How old an open incident must be to be listed as lingering.
pub const LINGERING: TimeDelta = TimeDelta::days(30);
/// How many lingering incidents are listed (the count covers all).
pub const LINGERING_LISTED: i64 = 100;

/// The playbook of suspicious-mail reports (`crate::intake::REPORT_PLAYBOOK`).
const PHISHING: &str = crate::intake::REPORT_PLAYBOOK;

/// Where the period starts and ends, as the report states it.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct PeriodInfo {
    /// `令和8年度 (2026年度)`.
    pub label: String,
    /// `fy2026`, `2026-11`.
    pub slug: String,
    pub start: DateTime<Utc>,
    pub end: DateTime<Utc>,
}

impl PeriodInfo {
    pub fn of(period: &Period) -> PeriodInfo {
        PeriodInfo {
            label: period.label(),
            slug: period.span.slug(),
            start: period.start,
            end: period.end,
        }
    }
}

/// A count under a key (`high`, `log`, `不正アクセス`), with the label a reader sees.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Count {
    pub key: String,
    pub label: String,
    pub count: i64,
}

/// One month of the period.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Month {
    /// `2026-04`.
    pub month: String,
    /// `2026年4月`.
    pub label: String,
    pub incidents: i64,
    pub by_category: BTreeMap<String, i64>,
    pub by_severity: BTreeMap<String, i64>,
    pub by_playbook: BTreeMap<String, i64>,
    pub by_source: BTreeMap<String, i64>,
}

/// Response times of one severity (or `all`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Response {
    pub severity: String,
    pub label: String,
    /// From opening to the first acknowledgement.
    pub acknowledge: Times,
    /// From opening to closing.
    pub close: Times,
}

/// Incidents nobody acknowledged.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize)]
pub struct NeverAcknowledged {
    pub total: i64,
    /// Closed without an acknowledgement (a false positive closed at once, for instance).
    pub closed_without_ack: i64,
    /// Neither acknowledged nor closed.
    pub still_open: i64,
}

/// A playbook deadline that passed before its incident was closed.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct MissedDeadline {
    pub incident: i64,
    pub title: String,
    pub playbook: String,
    pub deadline: String,
    pub due: DateTime<Utc>,
    pub closed_at: Option<DateTime<Utc>>,
}

/// The playbooks' `[[deadline]]`s of the period's incidents. A deadline is met when its incident
/// was closed by then, missed when it was not, running while it has not come.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Deadlines {
    /// False when the playbooks could not be read (nothing was counted).
    pub evaluated: bool,
    pub met: i64,
    pub missed: i64,
    pub running: i64,
    /// `met / (met + missed)`; None when no deadline has come.
    pub compliance_rate: Option<f64>,
    pub missed_incidents: Vec<MissedDeadline>,
}

/// Reports of suspicious mail by staff.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Phishing {
    /// `phishing-report` incidents: one per campaign (reports of one mail join one incident).
    pub campaigns: i64,
    /// Reports received (each joins its campaign as one event).
    pub reports: i64,
    /// Distinct staff who reported (the plan's indicator of staff awareness).
    pub reporters: i64,
    /// From the first report of a campaign to its acknowledgement.
    pub first_report_to_ack: Times,
}

/// Incidents still open after 30 days.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Lingering {
    /// Open at this time (the period's end, or now for a period not over).
    pub as_of: DateTime<Utc>,
    pub count: i64,
    /// The oldest, at most `LINGERING_LISTED`.
    pub oldest: Vec<AgedIncident>,
}

/// False positives among a playbook's closed incidents: which playbook needs tuning.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct FalsePositives {
    pub playbook: String,
    pub closed: i64,
    pub false_positive: i64,
    pub rate: Option<f64>,
}

/// Everything the report says about one period.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Figures {
    pub period: PeriodInfo,
    pub incidents: i64,
    pub months: Vec<Month>,
    pub by_category: Vec<Count>,
    pub by_severity: Vec<Count>,
    pub by_playbook: Vec<Count>,
    pub by_source: Vec<Count>,
    /// Per severity, most severe first, then `all`.
    pub response: Vec<Response>,
    /// Escalation levels fired in the period: `level` → count.
    pub escalations: BTreeMap<i64, i64>,
    pub never_acknowledged: NeverAcknowledged,
    pub deadlines: Deadlines,
    pub phishing: Phishing,
    /// /24 (IPv4) and /48 (IPv6) networks by incidents, most first.
    pub attacking_networks: Vec<Count>,
    pub targeted_accounts: Vec<Count>,
    pub open_over_30_days: Lingering,
    pub false_positives: Vec<FalsePositives>,
}

/// What the store gave for one period.
pub struct Rows {
    pub incidents: Vec<ReportedIncident>,
    pub escalations: Vec<(i64, i64)>,
    pub lingering: (i64, Vec<AgedIncident>),
    pub lingering_as_of: DateTime<Utc>,
}

/// The source keys, in the order tables show them, with their labels.
pub const SOURCES: [(&str, &str); 5] = [
    ("log", "ログ"),
    ("journal", "ジャーナル"),
    ("mail", "メールの規則"),
    ("report", "職員の報告"),
    ("unknown", "証跡なし"),
];

/// How an incident came in: a staff report (the report path records its reporters), else what
/// its first evidence was.
fn source_of(i: &ReportedIncident) -> &'static str {
    if !i.reporters.is_empty() {
        return "report";
    }
    match i.origin.as_deref() {
        Some("log") => "log",
        Some("journal") => "journal",
        Some("mail") => "mail",
        _ => "unknown",
    }
}

/// The /24 or /48 an address belongs to; None for what is not an address.
pub fn network_of(text: &str) -> Option<String> {
    let addr: IpAddr = text
        .trim()
        .trim_start_matches('[')
        .trim_end_matches(']')
        .parse()
        .ok()?;
    Some(match addr {
        IpAddr::V4(v4) => {
            let [a, b, c, _] = v4.octets();
            format!("{a}.{b}.{c}.0/24")
        }
        IpAddr::V6(v6) => match v6.to_ipv4_mapped() {
            Some(v4) => return network_of(&v4.to_string()),
            None => {
                let s = v6.segments();
                let net = std::net::Ipv6Addr::new(s[0], s[1], s[2], 0, 0, 0, 0, 0);
                format!("{net}/48")
            }
        },
    })
}

fn seconds(from: DateTime<Utc>, to: DateTime<Utc>) -> f64 {
    (to - from).num_milliseconds().max(0) as f64 / 1000.0
}

/// Counts sorted most first, then by key.
fn ranked(counts: HashMap<String, i64>, keep: usize) -> Vec<Count> {
    let mut list: Vec<Count> = counts
        .into_iter()
        .map(|(key, count)| Count {
            label: key.clone(),
            key,
            count,
        })
        .collect();
    list.sort_by(|a, b| b.count.cmp(&a.count).then_with(|| a.key.cmp(&b.key)));
    list.truncate(keep);
    list
}

/// The figures of `period` from `rows`, at `now`.
pub fn tally(
    period: &Period,
    rows: Rows,
    playbooks: Option<&PlaybookSet>,
    levels: &crate::level::Levels,
    now: DateTime<Utc>,
) -> Figures {
    // Each severity as the reader sees it: its name with the city's level beside it.
    let label = |s: Severity| format!("{} ({})", s.label_ja(), levels.of(s));
    let incidents = &rows.incidents;
    let mut months: Vec<Month> = period
        .months()
        .into_iter()
        .map(|(y, m)| Month {
            month: format!("{y}-{m:02}"),
            label: month_label((y, m)),
            incidents: 0,
            by_category: BTreeMap::new(),
            by_severity: BTreeMap::new(),
            by_playbook: BTreeMap::new(),
            by_source: BTreeMap::new(),
        })
        .collect();
    let (mut categories, mut playbook_counts) = (HashMap::new(), HashMap::new());
    let mut severities: BTreeMap<Severity, i64> = BTreeMap::new();
    let mut sources: HashMap<&str, i64> = HashMap::new();
    let mut ack: BTreeMap<Severity, Vec<f64>> = BTreeMap::new();
    let mut close: BTreeMap<Severity, Vec<f64>> = BTreeMap::new();
    let mut never = NeverAcknowledged::default();
    let (mut networks, mut accounts) = (HashMap::new(), HashMap::new());
    let mut fp: BTreeMap<&str, (i64, i64)> = BTreeMap::new();
    let mut phishing_ack = Vec::new();
    let (mut campaigns, mut reports) = (0, 0);
    let mut reporters: BTreeSet<String> = BTreeSet::new();
    for i in incidents {
        let source = source_of(i);
        *categories.entry(i.category.clone()).or_insert(0) += 1;
        *playbook_counts.entry(i.playbook.clone()).or_insert(0) += 1;
        *severities.entry(i.severity).or_insert(0) += 1;
        *sources.entry(source).or_insert(0) += 1;
        if let Some(month) = period
            .month_index(i.opened_at)
            .and_then(|m| months.get_mut(m))
        {
            month.incidents += 1;
            *month.by_category.entry(i.category.clone()).or_insert(0) += 1;
            *month
                .by_severity
                .entry(i.severity.as_str().to_string())
                .or_insert(0) += 1;
            *month.by_playbook.entry(i.playbook.clone()).or_insert(0) += 1;
            *month.by_source.entry(source.to_string()).or_insert(0) += 1;
        }
        let closed = i.closed_at.filter(|c| *c <= now);
        match i.first_ack.filter(|a| *a <= now) {
            Some(at) => ack
                .entry(i.severity)
                .or_default()
                .push(seconds(i.opened_at, at)),
            None => {
                never.total += 1;
                if closed.is_some() {
                    never.closed_without_ack += 1;
                } else {
                    never.still_open += 1;
                }
            }
        }
        if let Some(at) = closed {
            close
                .entry(i.severity)
                .or_default()
                .push(seconds(i.opened_at, at));
            let entry = fp.entry(i.playbook.as_str()).or_insert((0, 0));
            entry.0 += 1;
            if i.resolution == Some(Resolution::FalsePositive) {
                entry.1 += 1;
            }
        }
        if let Some(net) = i.ip.as_deref().and_then(network_of) {
            *networks.entry(net).or_insert(0) += 1;
        }
        if let Some(user) = &i.user {
            *accounts.entry(user.clone()).or_insert(0) += 1;
        }
        if i.playbook == PHISHING {
            campaigns += 1;
            reports += i.event_count.max(1);
            if i.reporters.is_empty() {
                reporters.extend(i.from.iter().map(|f| f.to_lowercase()));
            } else {
                reporters.extend(i.reporters.iter().map(|r| r.to_lowercase()));
            }
            if let Some(at) = i.first_ack.filter(|a| *a <= now) {
                phishing_ack.push(seconds(i.opened_at, at));
            }
        }
    }
    let mut response: Vec<Response> = Severity::ALL
        .iter()
        .map(|s| Response {
            severity: s.as_str().to_string(),
            label: label(*s),
            acknowledge: Times::of(ack.get(s).cloned().unwrap_or_default()),
            close: Times::of(close.get(s).cloned().unwrap_or_default()),
        })
        .collect();
    response.push(Response {
        severity: "all".into(),
        label: "全体".into(),
        acknowledge: Times::of(ack.into_values().flatten().collect()),
        close: Times::of(close.into_values().flatten().collect()),
    });
    let mut false_positives: Vec<FalsePositives> = fp
        .into_iter()
        .map(|(playbook, (closed, false_positive))| FalsePositives {
            playbook: playbook.to_string(),
            closed,
            false_positive,
            rate: ratio(false_positive, closed),
        })
        .collect();
    false_positives.sort_by(|a, b| {
        b.rate
            .unwrap_or(0.0)
            .total_cmp(&a.rate.unwrap_or(0.0))
            .then_with(|| b.closed.cmp(&a.closed))
            .then_with(|| a.playbook.cmp(&b.playbook))
    });
    let categories_all = ranked(categories, usize::MAX);
    Figures {
        period: PeriodInfo::of(period),
        incidents: incidents.len() as i64,
        months,
        by_category: categories_all,
        by_severity: Severity::ALL
            .iter()
            .map(|s| Count {
                key: s.as_str().into(),
                label: label(*s),
                count: severities.get(s).copied().unwrap_or(0),
            })
            .collect(),
        by_playbook: ranked(playbook_counts, usize::MAX),
        by_source: SOURCES
            .iter()
            .map(|(key, label)| Count {
                key: (*key).into(),
                label: (*label).into(),
                count: sources.get(key).copied().unwrap_or(0),
            })
            .collect(),
        response,
        escalations: rows.escalations.into_iter().collect(),
        never_acknowledged: never,
        deadlines: deadlines(incidents, playbooks, now),
        phishing: Phishing {
            campaigns,
            reports,
            reporters: reporters.len() as i64,
            first_report_to_ack: Times::of(phishing_ack),
        },
        attacking_networks: ranked(networks, TOP),
        targeted_accounts: ranked(accounts, TOP),
        open_over_30_days: Lingering {
            as_of: rows.lingering_as_of,
            count: rows.lingering.0,
            oldest: rows.lingering.1,
        },
        false_positives,
    }
}

/// Each deadline of each incident's playbook, judged at `now`.
fn deadlines(
    incidents: &[ReportedIncident],
    playbooks: Option<&PlaybookSet>,
    now: DateTime<Utc>,
) -> Deadlines {
    let mut d = Deadlines {
        evaluated: playbooks.is_some(),
        met: 0,
        missed: 0,
        running: 0,
        compliance_rate: None,
        missed_incidents: Vec::new(),
    };
    let Some(playbooks) = playbooks else {
        return d;
    };
    for i in incidents {
        let Some(playbook) = playbooks.get(&i.playbook) else {
            continue;
        };
        let closed = i.closed_at.filter(|c| *c <= now);
        for deadline in &playbook.deadlines {
            let due = i.opened_at + deadline.within.to_chrono();
            match closed {
                Some(at) if at <= due => d.met += 1,
                None if now <= due => d.running += 1,
                _ => {
                    d.missed += 1;
                    if d.missed_incidents.len() < MISSED_LISTED {
                        d.missed_incidents.push(MissedDeadline {
                            incident: i.id,
                            title: i.title.clone(),
                            playbook: i.playbook.clone(),
                            deadline: deadline.name.clone(),
                            due,
                            closed_at: closed,
                        });
                    }
                }
            }
        }
    }
    d.compliance_rate = ratio(d.met, d.met + d.missed);
    d
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn networks_are_slash_24_and_slash_48() {
        assert_eq!(
            network_of("203.0.113.77").as_deref(),
            Some("203.0.113.0/24")
        );
        assert_eq!(
            network_of("2001:db8:1234:5678::1").as_deref(),
            Some("2001:db8:1234::/48")
        );
        assert_eq!(
            network_of("::ffff:192.0.2.9").as_deref(),
            Some("192.0.2.0/24")
        );
        assert_eq!(network_of("not an address"), None);
        assert_eq!(network_of("<script>"), None);
    }
}
