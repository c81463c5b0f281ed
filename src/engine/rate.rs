//! Flood control (`[notify] rate`): which due mails go out on their own and which are folded
//! into one digest, decided from how many mails each recipient group was sent in the window.
//!
//! A recipient group is the exact recipient list of an outbox row (its stored JSON text): the
//! new-incident mails and updates to `[notify] to` are one group, an escalation to `lead` plus
//! `[notify] to` another. Counting by group keeps the rule in one place and lets a digest go to
//! exactly the people whose mails it replaces.
//!
//! Nothing is ever dropped here: a mail is sent, folded into a digest that lists it, or held
//! (left pending) until the window has room again. Critical mails (a critical incident, or an
//! incident just raised) have a higher ceiling of their own, so that no flood of ordinary mail
//! can hold back the one that matters.

use chrono::TimeDelta;
use std::collections::BTreeMap;

/// The bounds from `[notify] rate`, `critical_rate` and `rate_window`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RateLimit {
    /// Mails per recipient group per window (at least 1).
    pub rate: u32,
    /// How many mails of a group, counting every kind, may be sent in the window before a
    /// critical one waits too (at least `rate`).
    pub critical_rate: u32,
    pub window: TimeDelta,
}

impl Default for RateLimit {
    fn default() -> RateLimit {
        RateLimit {
            rate: 10,
            critical_rate: 30,
            window: TimeDelta::minutes(10),
        }
    }
}

/// How a waiting mail is treated.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Class {
    /// A digest of folded mails (waiting again after a failed attempt), or a scheduled report
    /// (its attached HTML would not survive a fold): never folded itself.
    Digest,
    /// About a critical incident, or an incident just raised.
    Critical,
    Ordinary,
}

/// The outbox kind of the digests that `plan` asks for.
pub const FOLD_KIND: &str = "flood";

/// The outbox kind of scheduled reports (`[[schedule]] kind = "report"`).
pub const REPORT_KIND: &str = "report";

/// The class of an outbox row of `kind` about an incident of `severity` (None: no incident).
pub fn classify(kind: &str, severity: Option<&str>) -> Class {
    if kind == FOLD_KIND || kind == REPORT_KIND {
        Class::Digest
    } else if kind == "raised" || severity == Some("critical") {
        Class::Critical
    } else {
        Class::Ordinary
    }
}

/// A due outbox row, in id order.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Waiting {
    pub id: i64,
    /// The recipient group (the row's stored recipient list).
    pub group: String,
    pub class: Class,
}

/// What to do with the waiting rows; rows in neither list stay pending.
#[derive(Debug, Default, PartialEq, Eq)]
pub struct Plan {
    /// Rows to send on their own, in id order.
    pub send: Vec<i64>,
    /// Per group, the rows to fold into one new digest (which takes one place in the window).
    pub fold: Vec<(String, Vec<i64>)>,
}

/// Decides `waiting` (in id order) given `sent`, the mails each group was sent in the window
/// (including those being sent now).
///
/// Per group: digests first, while the group is under `rate`; then critical rows while it is
/// under `critical_rate`; then the rest: all on their own when they fit under `rate`, otherwise
/// all into one digest if one more mail fits, otherwise held. (A critical row over its ceiling
/// is held, never folded: by the time the group is under `rate` again, it is under
/// `critical_rate` too and goes out on its own.) Folding the whole rest rather than
/// filling the window first turns a backlog (a restart after a power cut) into one mail at once
/// instead of a few single mails and a digest.
pub fn plan(waiting: &[Waiting], sent: &BTreeMap<String, i64>, limit: RateLimit) -> Plan {
    let mut groups: BTreeMap<&str, Vec<&Waiting>> = BTreeMap::new();
    for w in waiting {
        groups.entry(&w.group).or_default().push(w);
    }
    let rate = i64::from(limit.rate);
    let critical_rate = i64::from(limit.critical_rate.max(limit.rate));
    let mut out = Plan::default();
    for (group, rows) in groups {
        let mut count = sent.get(group).copied().unwrap_or(0);
        for w in rows.iter().filter(|w| w.class == Class::Digest) {
            if count < rate {
                out.send.push(w.id);
                count += 1;
            }
        }
        let mut rest = Vec::new();
        for w in rows.iter().filter(|w| w.class != Class::Digest) {
            if w.class == Class::Critical && count < critical_rate {
                out.send.push(w.id);
                count += 1;
            } else {
                rest.push(w.id);
            }
        }
        let room = (rate - count).max(0);
        if rest.len() as i64 <= room {
            out.send.extend(rest);
        } else if room >= 1 {
            out.fold.push((group.to_string(), rest));
        }
    }
    out.send.sort_unstable();
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    const LIMIT: RateLimit = RateLimit {
        rate: 3,
        critical_rate: 5,
        window: TimeDelta::minutes(10),
    };

    fn rows(spec: &[(i64, &str, Class)]) -> Vec<Waiting> {
        spec.iter()
            .map(|(id, group, class)| Waiting {
                id: *id,
                group: group.to_string(),
                class: *class,
            })
            .collect()
    }

    fn sent(spec: &[(&str, i64)]) -> BTreeMap<String, i64> {
        spec.iter().map(|(g, n)| (g.to_string(), *n)).collect()
    }

    use Class::{Critical as C, Digest as D, Ordinary as O};

    #[test]
    fn what_fits_goes_out_on_its_own() {
        let p = plan(
            &rows(&[(1, "a", O), (2, "a", O)]),
            &sent(&[("a", 1)]),
            LIMIT,
        );
        assert_eq!(p.send, [1, 2]);
        assert!(p.fold.is_empty());
    }

    #[test]
    fn a_backlog_over_the_rate_becomes_one_digest() {
        let w = rows(&[(1, "a", O), (2, "a", O), (3, "a", O), (4, "a", O)]);
        let p = plan(&w, &sent(&[]), LIMIT);
        assert!(p.send.is_empty());
        assert_eq!(p.fold, [("a".to_string(), vec![1, 2, 3, 4])]);
    }

    #[test]
    fn a_full_window_holds_ordinary_mail_and_lets_critical_mail_through() {
        let w = rows(&[(1, "a", O), (2, "a", C), (3, "a", O), (4, "a", C)]);
        let p = plan(&w, &sent(&[("a", 3)]), LIMIT);
        assert_eq!(p.send, [2, 4], "critical mails under critical_rate");
        assert!(p.fold.is_empty(), "no room for a digest: held");
        // At the critical ceiling a critical mail waits with the rest.
        let p = plan(&w, &sent(&[("a", 5)]), LIMIT);
        assert_eq!(p, Plan::default());
    }

    #[test]
    fn critical_mail_is_never_folded_and_the_ordinary_rest_is() {
        let w = rows(&[(1, "a", O), (2, "a", C), (3, "a", O)]);
        let p = plan(&w, &sent(&[("a", 1)]), LIMIT);
        assert_eq!(p.send, [2]);
        assert_eq!(p.fold, [("a".to_string(), vec![1, 3])]);
    }

    #[test]
    fn groups_are_counted_apart_and_digests_are_never_folded() {
        let w = rows(&[
            (1, "a", O),
            (2, "b", O),
            (3, "a", D),
            (4, "b", O),
            (5, "a", O),
        ]);
        let p = plan(&w, &sent(&[("a", 1), ("b", 2)]), LIMIT);
        // a: the digest takes a place, then 1 and 5 do not fit in the one left: folded.
        // b: 2 and 4 do not fit in one place: folded.
        assert_eq!(p.send, [3]);
        assert_eq!(
            p.fold,
            [("a".to_string(), vec![1, 5]), ("b".to_string(), vec![2, 4])]
        );
        // A waiting digest in a full window waits too.
        let p = plan(&rows(&[(3, "a", D)]), &sent(&[("a", 3)]), LIMIT);
        assert_eq!(p, Plan::default());
    }

    #[test]
    fn classes() {
        assert_eq!(classify("flood", None), D);
        assert_eq!(classify("raised", Some("high")), C);
        assert_eq!(classify("update", Some("critical")), C);
        assert_eq!(classify("escalation", Some("high")), O);
        assert_eq!(classify("digest", None), O);
        // A report's attachment would be lost in a fold: held instead, never folded.
        assert_eq!(classify("report", None), D);
    }
}
