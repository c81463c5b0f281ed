//! Does a hit join an open incident, wait below its threshold, or open one? The decision in
//! plain values, shared by the store's ingest transaction (where the window is the stored
//! pending events, so several daemons on one PostgreSQL agree and a restart loses no partial
//! count) and by the dry run of `csirt playbooks test` (where the window is in memory).

use super::Hit;
use crate::playbook::Threshold;
use chrono::{DateTime, Utc};
use std::collections::{HashMap, VecDeque};

/// The first step for a hit, before its threshold window is looked at.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Step<Id> {
    /// An incident with the hit's playbook and key is open: the hit is one more event of it.
    Join(Id),
    /// The rule has a threshold: add the hit to the key's window (dropping what is older than
    /// `since`, which can never count again) and ask `after_window`.
    Count { since: DateTime<Utc>, needed: u32 },
    /// No threshold: the hit opens an incident on its own.
    Open,
}

/// What to do with `hit` given the open incident of its key, if any.
pub fn on_hit<Id>(open: Option<Id>, hit: &Hit) -> Step<Id> {
    if let Some(id) = open {
        return Step::Join(id);
    }
    match hit.threshold {
        Some(Threshold { count, window }) if count > 1 => Step::Count {
            since: hit.observed_at - window.to_chrono(),
            needed: count,
        },
        _ => Step::Open,
    }
}

/// After the hit joined its key's window of `count` hits (the earliest at `first`): does it open
/// the incident now (with every hit of the window as its events), or stay pending?
pub fn after_window(needed: u32, count: i64, first: DateTime<Utc>) -> Option<(i64, DateTime<Utc>)> {
    (count >= i64::from(needed)).then_some((count, first))
}

/// An incident the dry run would open.
#[derive(Debug, Clone, PartialEq, serde::Serialize)]
pub struct DryIncident {
    pub playbook: String,
    pub title: String,
    pub dedupe_key: String,
    pub first_seen: DateTime<Utc>,
    pub last_seen: DateTime<Utc>,
    pub event_count: u64,
}

/// A key's hits below its threshold: when each was seen, and how many it stands for.
type Window = VecDeque<(DateTime<Utc>, u32)>;

/// The correlation of the store's ingest, in memory, for one run over a file (no incident is
/// ever closed during it): the same `on_hit` and `after_window` decisions.
#[derive(Default)]
pub struct DryRun {
    /// Per key, the window's hits.
    windows: HashMap<(String, String), Window>,
    open: HashMap<(String, String), usize>,
    pub incidents: Vec<DryIncident>,
}

impl DryRun {
    /// Applies one hit.
    pub fn add(&mut self, hit: &Hit) {
        let key = (hit.playbook.clone(), hit.dedupe_key.clone());
        let (count, first_seen) = match on_hit(self.open.get(&key).copied(), hit) {
            Step::Join(index) => {
                let incident = &mut self.incidents[index];
                incident.event_count += u64::from(hit.weight);
                incident.last_seen = incident.last_seen.max(hit.observed_at);
                incident.first_seen = incident.first_seen.min(hit.observed_at);
                return;
            }
            Step::Count { since, needed } => {
                let window = self.windows.entry(key.clone()).or_default();
                window.push_back((hit.observed_at, hit.weight));
                window.retain(|(at, _)| *at >= since);
                let first = window
                    .iter()
                    .map(|(at, _)| *at)
                    .min()
                    .unwrap_or(hit.observed_at);
                let count: i64 = window.iter().map(|(_, w)| i64::from(*w)).sum();
                let Some(opened) = after_window(needed, count, first) else {
                    return;
                };
                self.windows.remove(&key);
                opened
            }
            Step::Open => (i64::from(hit.weight), hit.observed_at),
        };
        self.open.insert(key, self.incidents.len());
        self.incidents.push(DryIncident {
            playbook: hit.playbook.clone(),
            title: hit.title.clone(),
            dedupe_key: hit.dedupe_key.clone(),
            first_seen,
            last_seen: hit.observed_at,
            event_count: count as u64,
        });
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::duration::Span;
    use crate::model::Severity;

    fn hit(at: i64, threshold: Option<(u32, u64)>) -> Hit {
        Hit {
            playbook: "ssh-bruteforce".into(),
            category: "不正アクセス".into(),
            severity: Severity::High,
            title: "SSH総当たり攻撃 (203.0.113.5)".into(),
            dedupe_key: "ip=203.0.113.5".into(),
            rule: "failed-password".into(),
            threshold: threshold.map(|(count, secs)| Threshold {
                count,
                window: Span::from_secs(secs),
            }),
            kind: "log",
            source: "auth.log".into(),
            locator: at.to_string(),
            observed_at: DateTime::<Utc>::UNIX_EPOCH + chrono::TimeDelta::seconds(at),
            text: String::new(),
            fields: Default::default(),
            weight: 1,
        }
    }

    #[test]
    fn an_open_incident_takes_the_hit_whatever_the_threshold() {
        assert_eq!(on_hit(Some(7), &hit(0, Some((5, 600)))), Step::Join(7));
        assert_eq!(on_hit(None::<i64>, &hit(0, None)), Step::Open);
        assert_eq!(on_hit(None::<i64>, &hit(0, Some((1, 600)))), Step::Open);
        assert_eq!(
            on_hit(None::<i64>, &hit(1000, Some((5, 600)))),
            Step::Count {
                since: DateTime::<Utc>::UNIX_EPOCH + chrono::TimeDelta::seconds(400),
                needed: 5
            }
        );
    }

    #[test]
    fn the_window_opens_at_its_count_with_its_earliest_hit() {
        let first = DateTime::<Utc>::UNIX_EPOCH;
        assert_eq!(after_window(5, 4, first), None);
        assert_eq!(after_window(5, 5, first), Some((5, first)));
        assert_eq!(after_window(5, 7, first), Some((7, first)));
    }

    #[test]
    fn the_dry_run_opens_at_the_threshold_and_joins_after() {
        let mut dry = DryRun::default();
        // Four hits, then a gap longer than the window: the window starts again.
        for at in [0, 10, 20, 30, 1000, 1010, 1020, 1030, 1040, 1050] {
            dry.add(&hit(at, Some((5, 600))));
        }
        assert_eq!(dry.incidents.len(), 1);
        assert_eq!(dry.incidents[0].event_count, 6);
        assert_eq!(dry.incidents[0].first_seen.timestamp(), 1000);
    }

    #[test]
    fn a_repeated_line_counts_for_each_repetition() {
        let mut dry = DryRun::default();
        dry.add(&hit(0, Some((5, 600))).times(3));
        assert!(dry.incidents.is_empty(), "3 of 5");
        dry.add(&hit(10, Some((5, 600))).times(2));
        assert_eq!(dry.incidents.len(), 1);
        assert_eq!(dry.incidents[0].event_count, 5);
        dry.add(&hit(20, Some((5, 600))).times(4));
        assert_eq!(dry.incidents[0].event_count, 9);
    }
}
