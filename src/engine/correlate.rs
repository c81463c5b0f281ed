//! Does a hit join an open incident, wait below its threshold, or open one? The decision in
//! plain values, shared by the store's ingest transaction (where the window is the stored
//! pending events, so several daemons on one PostgreSQL agree and a restart loses no partial
//! count) and by the dry run of `csirt playbooks test` (where the window is in memory).

use super::Hit;
use crate::playbook::{Raise, Threshold};
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

/// What a raising hit (a login after failures) does, given the open incident of its key, the
/// one closed most recently within `closed_within`, and the key's failures still below the
/// threshold within the raise's window.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RaiseStep<Id> {
    /// Raise the open incident.
    Raise(Id),
    /// Reopen the recently closed incident, raised.
    Reopen(Id),
    /// Open an incident now, raised, from the pending failures (`count`, the earliest `first`).
    Open { count: i64, first: DateTime<Utc> },
    /// An ordinary login: nothing to record.
    Nothing,
}

/// The decision for a raising hit.
pub fn on_raise<Id>(
    raise: &Raise,
    open: Option<Id>,
    recently_closed: Option<Id>,
    pending: i64,
    first_pending: Option<DateTime<Utc>>,
) -> RaiseStep<Id> {
    match (open, recently_closed, first_pending) {
        (Some(id), _, _) => RaiseStep::Raise(id),
        (None, Some(id), _) => RaiseStep::Reopen(id),
        (None, None, Some(first)) if pending >= i64::from(raise.pending_at_least) => {
            RaiseStep::Open {
                count: pending,
                first,
            }
        }
        _ => RaiseStep::Nothing,
    }
}

/// The title of a raised incident: ` (mark)` added once; `None` when it is already there (a
/// second success raises nothing new: it is evidence and a timeline entry, not another alarm).
pub fn raised_title(title: &str, mark: &str) -> Option<String> {
    let suffix = format!(" ({mark})");
    (!title.ends_with(&suffix)).then(|| format!("{title}{suffix}"))
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
    /// A raising hit (a login after failures) raised it.
    pub raised: bool,
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
    /// Every dedupe key a hit was added for (of any playbook): `knows` without a lookup key
    /// to build.
    seen: std::collections::HashSet<String>,
    pub incidents: Vec<DryIncident>,
}

impl DryRun {
    /// Whether the run has seen a hit of this key (a window or an incident): a raising hit of
    /// a key it has not seen changes nothing, so the caller need not make one.
    pub fn knows(&self, playbook: &str, dedupe_key: &str) -> bool {
        if !self.seen.contains(dedupe_key) {
            return false;
        }
        let key = (playbook.to_string(), dedupe_key.to_string());
        self.windows.contains_key(&key) || self.open.contains_key(&key)
    }

    /// Applies one hit.
    pub fn add(&mut self, hit: &Hit) {
        if !self.seen.contains(&hit.dedupe_key) {
            self.seen.insert(hit.dedupe_key.clone());
        }
        let key = (hit.playbook.clone(), hit.dedupe_key.clone());
        if let Some(raise) = &hit.raise {
            let since = hit.observed_at - raise.window.to_chrono();
            let window = self.windows.get(&key);
            let pending: i64 = window.map_or(0, |w| {
                w.iter()
                    .filter(|(at, _)| *at >= since)
                    .map(|(_, n)| i64::from(*n))
                    .sum()
            });
            let first =
                window.and_then(|w| w.iter().map(|(at, _)| *at).filter(|at| *at >= since).min());
            match on_raise(raise, self.open.get(&key).copied(), None, pending, first) {
                RaiseStep::Raise(index) | RaiseStep::Reopen(index) => {
                    self.incidents[index].raised = true;
                }
                RaiseStep::Open { count, first } => {
                    self.windows.remove(&key);
                    self.open.insert(key, self.incidents.len());
                    self.incidents.push(DryIncident {
                        playbook: hit.playbook.clone(),
                        title: hit.title.clone(),
                        dedupe_key: hit.dedupe_key.clone(),
                        first_seen: first,
                        last_seen: hit.observed_at,
                        event_count: count as u64,
                        raised: true,
                    });
                }
                RaiseStep::Nothing => {}
            }
            return;
        }
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
            raised: false,
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
            raise: None,
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
    fn a_login_raises_the_open_incident_or_three_pending_failures() {
        let raise = Raise {
            severity: crate::model::Severity::Critical,
            mark: "ログイン成功".into(),
            closed_within: Span::from_secs(86_400),
            pending_at_least: 3,
            window: Span::from_secs(600),
        };
        let t = DateTime::<Utc>::UNIX_EPOCH;
        assert_eq!(
            on_raise(&raise, Some(1), Some(2), 0, None),
            RaiseStep::Raise(1)
        );
        assert_eq!(
            on_raise(&raise, None, Some(2), 9, Some(t)),
            RaiseStep::Reopen(2)
        );
        assert_eq!(
            on_raise::<i64>(&raise, None, None, 3, Some(t)),
            RaiseStep::Open { count: 3, first: t }
        );
        assert_eq!(
            on_raise::<i64>(&raise, None, None, 2, Some(t)),
            RaiseStep::Nothing
        );
        assert_eq!(
            on_raise::<i64>(&raise, None, None, 0, None),
            RaiseStep::Nothing
        );
        assert_eq!(
            raised_title("SSH総当たり攻撃 (192.0.2.1)", "ログイン成功").as_deref(),
            Some("SSH総当たり攻撃 (192.0.2.1) (ログイン成功)")
        );
        assert_eq!(raised_title("x (ログイン成功)", "ログイン成功"), None);
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
