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
use crate::playbook::{Playbook, PlaybookSet};
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
    /// The statutory reports' deadlines (`statutory::read`, filled in after `Tally::finish`).
    pub statutory: super::statutory::Statutory,
    pub phishing: Phishing,
    /// /24 (IPv4) and /48 (IPv6) networks by incidents, most first.
    pub attacking_networks: Vec<Count>,
    pub targeted_accounts: Vec<Count>,
    pub open_over_30_days: Lingering,
    pub false_positives: Vec<FalsePositives>,
}

/// What the store gave for one period besides its incidents.
pub struct Rows {
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

/// How an incident came in, as its place in `SOURCES`: a staff report (the report path records
/// its reporters), else its channel (the hit that opened it, or its first evidence).
fn source_of(i: &ReportedIncident<'_>) -> usize {
    if !i.reporters.is_empty() {
        return 3;
    }
    match i.origin.as_deref() {
        Some("log") => 0,
        Some("journal") => 1,
        Some("mail") => 2,
        _ => 4,
    }
}

/// The incidents of one playbook and category: what the tally counts by either, counted once
/// per incident in one place (a report of a million incidents has a few dozen of these; eight
/// map updates per incident were a sixth of its work).
struct Slot<'a> {
    playbook: String,
    category: String,
    /// The playbook as loaded, for its deadlines (None: not loaded, or gone).
    loaded: Option<&'a Playbook>,
    /// Incidents in the period, and per month of it.
    total: i64,
    months: Vec<i64>,
    /// Closed by `now`, and of those closed as false positives.
    closed: i64,
    false_positive: i64,
}

/// The place of `s` in `Severity::ALL`.
fn severity_index(s: Severity) -> usize {
    Severity::ALL.iter().position(|a| *a == s).unwrap_or(0)
}

/// The counts of one month by severity (`Severity::ALL`'s order) and by source (`SOURCES`').
#[derive(Default, Clone, Copy)]
struct MonthCounts {
    severities: [i64; 4],
    sources: [i64; SOURCES.len()],
}

/// A /24 (IPv4) or /48 (IPv6) network, as the ranking counts them: a few bytes to hash per
/// incident, written out only for the networks that can be listed.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
enum Network {
    V4([u8; 3]),
    V6([u16; 3]),
}

impl Network {
    /// The network an address belongs to (an IPv4-mapped IPv6 address to its IPv4 /24); None
    /// for what is not an address.
    fn of(text: &str) -> Option<Network> {
        let addr: IpAddr = text
            .trim()
            .trim_start_matches('[')
            .trim_end_matches(']')
            .parse()
            .ok()?;
        let v4 = |v4: std::net::Ipv4Addr| {
            let [a, b, c, _] = v4.octets();
            Network::V4([a, b, c])
        };
        Some(match addr {
            IpAddr::V4(addr) => v4(addr),
            IpAddr::V6(addr) => match addr.to_ipv4_mapped() {
                Some(addr) => v4(addr),
                None => {
                    let s = addr.segments();
                    Network::V6([s[0], s[1], s[2]])
                }
            },
        })
    }
}

impl std::fmt::Display for Network {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match *self {
            Network::V4([a, b, c]) => write!(f, "{a}.{b}.{c}.0/24"),
            Network::V6([a, b, c]) => {
                write!(f, "{}/48", std::net::Ipv6Addr::new(a, b, c, 0, 0, 0, 0, 0))
            }
        }
    }
}

/// The /24 or /48 an address belongs to; None for what is not an address.
pub fn network_of(text: &str) -> Option<String> {
    Network::of(text).map(|n| n.to_string())
}

/// The `TOP` networks with the most incidents, ties by name, like `ranked`: only the networks
/// that can be among them (as many incidents as the TOPth at least) are written out.
fn ranked_networks(counts: HashMap<Network, i64>) -> Vec<Count> {
    let mut all: Vec<i64> = counts.values().copied().collect();
    let least = match all.len().checked_sub(TOP) {
        Some(_) if TOP > 0 => *all.select_nth_unstable_by(TOP - 1, |a, b| b.cmp(a)).1,
        _ => 0,
    };
    ranked(
        counts
            .into_iter()
            .filter(|(_, n)| *n >= least)
            .map(|(net, n)| (net.to_string(), n))
            .collect(),
        TOP,
    )
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

/// The maps the tally counts in, keyed by owned text and looked up by `&str`.
trait CountMap {
    /// Adds one to `key`'s count, copying the key only the first time it is seen.
    fn bump(&mut self, key: &str);
}

macro_rules! count_map {
    ($($map:ident),+) => {$(
        impl CountMap for $map<String, i64> {
            fn bump(&mut self, key: &str) {
                match self.get_mut(key) {
                    Some(n) => *n += 1,
                    None => {
                        self.insert(key.to_string(), 1);
                    }
                }
            }
        }
    )+};
}
count_map!(HashMap);

/// A missed deadline before its incident's title is known, with what orders the list: the
/// incident's opening, its id, the deadline's place in its playbook.
type Missed = ((DateTime<Utc>, i64, usize), MissedDeadline);

/// The figures of one period, counted incident by incident (`add`) in any order, then
/// finished with what the store says about the period as a whole (`finish`).
pub struct Tally<'a> {
    period: &'a Period,
    playbooks: Option<&'a PlaybookSet>,
    /// Each severity is shown with the city's level beside it.
    levels: &'a crate::level::Levels,
    now: DateTime<Utc>,
    incidents: i64,
    months: Vec<Month>,
    month_counts: Vec<MonthCounts>,
    slots: Vec<Slot<'a>>,
    /// Each playbook's slots (one per category it had): one lookup per incident.
    slot_of: HashMap<String, Vec<usize>>,
    /// The slot of the incident before, tried first.
    last_slot: Option<usize>,
    /// The period's counts by severity and by source.
    totals: MonthCounts,
    ack: BTreeMap<Severity, Vec<f64>>,
    close: BTreeMap<Severity, Vec<f64>>,
    never: NeverAcknowledged,
    networks: HashMap<Network, i64>,
    accounts: HashMap<String, i64>,
    phishing_ack: Vec<f64>,
    campaigns: i64,
    reports: i64,
    reporters: BTreeSet<String>,
    deadlines: Deadlines,
    missed: Vec<Missed>,
}

impl<'a> Tally<'a> {
    /// An empty tally of `period` at `now`; the deadlines need `playbooks`, the severities'
    /// labels `levels`.
    pub fn new(
        period: &'a Period,
        playbooks: Option<&'a PlaybookSet>,
        levels: &'a crate::level::Levels,
        now: DateTime<Utc>,
    ) -> Self {
        Tally {
            period,
            playbooks,
            levels,
            now,
            incidents: 0,
            months: period
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
                .collect(),
            month_counts: vec![MonthCounts::default(); period.months().len()],
            slots: Vec::new(),
            slot_of: HashMap::new(),
            last_slot: None,
            totals: MonthCounts::default(),
            ack: BTreeMap::new(),
            close: BTreeMap::new(),
            never: NeverAcknowledged::default(),
            networks: HashMap::new(),
            accounts: HashMap::new(),
            phishing_ack: Vec::new(),
            campaigns: 0,
            reports: 0,
            reporters: BTreeSet::new(),
            deadlines: Deadlines {
                evaluated: playbooks.is_some(),
                met: 0,
                missed: 0,
                running: 0,
                compliance_rate: None,
                missed_incidents: Vec::new(),
            },
            missed: Vec::new(),
        }
    }

    /// The slot of `playbook` and `category`, made the first time they are seen.
    fn slot(&mut self, playbook: &str, category: &str) -> usize {
        let is = |s: &Slot<'_>| s.playbook == playbook && s.category == category;
        if let Some(last) = self.last_slot
            && is(&self.slots[last])
        {
            return last;
        }
        let found = self
            .slot_of
            .get(playbook)
            .and_then(|of| of.iter().copied().find(|n| is(&self.slots[*n])));
        let n = match found {
            Some(n) => n,
            None => {
                let n = self.slots.len();
                self.slots.push(Slot {
                    playbook: playbook.to_string(),
                    category: category.to_string(),
                    loaded: self.playbooks.and_then(|p| p.get(playbook)),
                    total: 0,
                    months: vec![0; self.months.len()],
                    closed: 0,
                    false_positive: 0,
                });
                self.slot_of
                    .entry(playbook.to_string())
                    .or_default()
                    .push(n);
                n
            }
        };
        self.last_slot = Some(n);
        n
    }

    /// Counts incident `i`, opened in the period's `month`th month (`Period::month_spans`).
    pub fn add(&mut self, month: usize, i: &ReportedIncident<'_>) {
        let now = self.now;
        let source = source_of(i);
        self.incidents += 1;
        let slot = self.slot(&i.playbook, &i.category);
        self.slots[slot].total += 1;
        self.totals.severities[severity_index(i.severity)] += 1;
        self.totals.sources[source] += 1;
        if let (Some(m), Some(counts)) =
            (self.months.get_mut(month), self.month_counts.get_mut(month))
        {
            m.incidents += 1;
            self.slots[slot].months[month] += 1;
            counts.severities[severity_index(i.severity)] += 1;
            counts.sources[source] += 1;
        }
        let closed = i.closed_at.filter(|c| *c <= now);
        match i.first_ack.filter(|a| *a <= now) {
            Some(at) => self
                .ack
                .entry(i.severity)
                .or_default()
                .push(seconds(i.opened_at, at)),
            None => {
                self.never.total += 1;
                if closed.is_some() {
                    self.never.closed_without_ack += 1;
                } else {
                    self.never.still_open += 1;
                }
            }
        }
        if let Some(at) = closed {
            self.close
                .entry(i.severity)
                .or_default()
                .push(seconds(i.opened_at, at));
            let slot = &mut self.slots[slot];
            slot.closed += 1;
            slot.false_positive += i64::from(i.resolution == Some(Resolution::FalsePositive));
        }
        if let Some(net) = i.ip.as_deref().and_then(Network::of) {
            *self.networks.entry(net).or_insert(0) += 1;
        }
        if let Some(user) = &i.user {
            self.accounts.bump(user);
        }
        if i.playbook == PHISHING {
            self.campaigns += 1;
            self.reports += i.event_count.max(1);
            let staff = match &i.from {
                Some(from) if i.reporters.is_empty() => std::slice::from_ref(from),
                _ => &[],
            };
            for who in staff
                .iter()
                .map(AsRef::as_ref)
                .chain(i.reporters.iter().map(String::as_str))
            {
                let who = who.to_lowercase();
                if !self.reporters.contains(&who) {
                    self.reporters.insert(who);
                }
            }
            if let Some(at) = i.first_ack.filter(|a| *a <= now) {
                self.phishing_ack.push(seconds(i.opened_at, at));
            }
        }
        let loaded = self.slots[slot].loaded;
        self.add_deadlines(loaded, i, closed);
    }

    /// Each deadline of the incident's playbook, judged at `now`: met when the incident was
    /// closed by then, missed when it was not, running while it has not come.
    fn add_deadlines(
        &mut self,
        playbook: Option<&Playbook>,
        i: &ReportedIncident<'_>,
        closed: Option<DateTime<Utc>>,
    ) {
        let Some(playbook) = playbook else {
            return;
        };
        for (n, deadline) in playbook.deadlines.iter().enumerate() {
            let due = i.opened_at + deadline.within.to_chrono();
            match closed {
                Some(at) if at <= due => self.deadlines.met += 1,
                None if self.now <= due => self.deadlines.running += 1,
                _ => {
                    self.deadlines.missed += 1;
                    self.missed.push((
                        (i.opened_at, i.id, n),
                        MissedDeadline {
                            incident: i.id,
                            title: String::new(),
                            playbook: i.playbook.to_string(),
                            deadline: deadline.name.clone(),
                            due,
                            closed_at: closed,
                        },
                    ));
                    // The list keeps the first MISSED_LISTED in order of opening, whatever
                    // order the incidents come in; the count covers all.
                    if self.missed.len() >= 4 * MISSED_LISTED {
                        self.keep_first_missed();
                    }
                }
            }
        }
    }

    fn keep_first_missed(&mut self) {
        self.missed.sort_by_key(|m| m.0);
        self.missed.truncate(MISSED_LISTED);
    }

    /// The incidents whose missed deadlines the report lists: their titles are wanted.
    pub fn listed_missed(&mut self) -> Vec<i64> {
        self.keep_first_missed();
        let mut ids: Vec<i64> = self.missed.iter().map(|m| m.1.incident).collect();
        ids.dedup();
        ids
    }

    /// The figures, with the period's escalations and lingering incidents, and the `titles` of
    /// `listed_missed`.
    pub fn finish(mut self, rows: Rows, titles: &HashMap<i64, String>) -> Figures {
        self.keep_first_missed();
        // The counts by playbook and by category, the period's and each month's, from the slots.
        let mut categories: HashMap<String, i64> = HashMap::new();
        let mut playbook_counts: HashMap<String, i64> = HashMap::new();
        let mut fp: BTreeMap<String, (i64, i64)> = BTreeMap::new();
        for slot in &self.slots {
            *categories.entry(slot.category.clone()).or_default() += slot.total;
            *playbook_counts.entry(slot.playbook.clone()).or_default() += slot.total;
            for (month, n) in self.months.iter_mut().zip(&slot.months) {
                if *n > 0 {
                    *month.by_category.entry(slot.category.clone()).or_default() += n;
                    *month.by_playbook.entry(slot.playbook.clone()).or_default() += n;
                }
            }
            if slot.closed > 0 {
                let (closed, false_positive) = fp.entry(slot.playbook.clone()).or_default();
                *closed += slot.closed;
                *false_positive += slot.false_positive;
            }
        }
        for (month, counts) in self.months.iter_mut().zip(&self.month_counts) {
            for (s, n) in Severity::ALL.iter().zip(counts.severities) {
                if n > 0 {
                    month.by_severity.insert(s.as_str().to_string(), n);
                }
            }
            for ((key, _), n) in SOURCES.iter().zip(counts.sources) {
                if n > 0 {
                    month.by_source.insert((*key).to_string(), n);
                }
            }
        }
        // Each severity as the reader sees it: its name with the city's level beside it.
        let levels = self.levels;
        let label = |s: Severity| format!("{} ({})", s.label_ja(), levels.of(s));
        let mut response: Vec<Response> = Severity::ALL
            .iter()
            .map(|s| Response {
                severity: s.as_str().to_string(),
                label: label(*s),
                acknowledge: Times::of(self.ack.get(s).cloned().unwrap_or_default()),
                close: Times::of(self.close.get(s).cloned().unwrap_or_default()),
            })
            .collect();
        response.push(Response {
            severity: "all".into(),
            label: "全体".into(),
            acknowledge: Times::of(self.ack.into_values().flatten().collect()),
            close: Times::of(self.close.into_values().flatten().collect()),
        });
        let mut false_positives: Vec<FalsePositives> = fp
            .into_iter()
            .map(|(playbook, (closed, false_positive))| FalsePositives {
                playbook,
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
        let mut deadlines = self.deadlines;
        deadlines.compliance_rate = ratio(deadlines.met, deadlines.met + deadlines.missed);
        deadlines.missed_incidents = self
            .missed
            .into_iter()
            .map(|(_, mut m)| {
                m.title = titles.get(&m.incident).cloned().unwrap_or_default();
                m
            })
            .collect();
        Figures {
            period: PeriodInfo::of(self.period),
            incidents: self.incidents,
            months: self.months,
            by_category: ranked(categories, usize::MAX),
            by_severity: Severity::ALL
                .iter()
                .map(|s| Count {
                    key: s.as_str().into(),
                    label: label(*s),
                    count: self.totals.severities[severity_index(*s)],
                })
                .collect(),
            by_playbook: ranked(playbook_counts, usize::MAX),
            by_source: SOURCES
                .iter()
                .zip(self.totals.sources)
                .map(|((key, label), count)| Count {
                    key: (*key).into(),
                    label: (*label).into(),
                    count,
                })
                .collect(),
            response,
            escalations: rows.escalations.into_iter().collect(),
            never_acknowledged: self.never,
            deadlines,
            statutory: Default::default(),
            phishing: Phishing {
                campaigns: self.campaigns,
                reports: self.reports,
                reporters: self.reporters.len() as i64,
                first_report_to_ack: Times::of(self.phishing_ack),
            },
            attacking_networks: ranked_networks(self.networks),
            targeted_accounts: ranked(self.accounts, TOP),
            open_over_30_days: Lingering {
                as_of: rows.lingering_as_of,
                count: rows.lingering.0,
                oldest: rows
                    .lingering
                    .1
                    .into_iter()
                    .map(|a| AgedIncident {
                        level: a.severity.parse().ok().map(|s| self.levels.of(s)),
                        ..a
                    })
                    .collect(),
            },
            false_positives,
        }
    }
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
        assert_eq!(network_of("[::1]").as_deref(), Some("::/48"));
    }

    #[test]
    fn the_network_ranking_writes_out_only_what_it_can_list() {
        // Twelve networks: two ahead, then ten tied at 3 (of which the first eight by name
        // make the list), and many with fewer.
        let mut counts = HashMap::new();
        counts.insert(Network::V4([10, 0, 0]), 9);
        counts.insert(Network::V6([0x2001, 0xdb8, 1]), 7);
        for c in 0..10 {
            counts.insert(Network::V4([192, 0, c]), 3);
        }
        for c in 0..200 {
            counts.insert(Network::V4([198, 51, c]), 1);
        }
        let listed: Vec<(String, i64)> = ranked_networks(counts.clone())
            .into_iter()
            .map(|c| (c.key, c.count))
            .collect();
        let all: HashMap<String, i64> = counts
            .into_iter()
            .map(|(n, c)| (n.to_string(), c))
            .collect();
        let expected: Vec<(String, i64)> = ranked(all, TOP)
            .into_iter()
            .map(|c| (c.key, c.count))
            .collect();
        assert_eq!(listed, expected);
        assert_eq!(listed.len(), TOP);
        assert_eq!(listed[0], ("10.0.0.0/24".to_string(), 9));
        assert_eq!(listed[1], ("2001:db8:1::/48".to_string(), 7));
        assert_eq!(listed[9], ("192.0.7.0/24".to_string(), 3));
        assert!(ranked_networks(HashMap::new()).is_empty());
    }
}
