//! What falls due on an open incident at `now`, from its stored times alone: an update mail
//! (new events since the last mail, once `update_interval` has passed), an escalation level
//! (while unacknowledged), deadline reminders. Pure: the store's escalator pass applies it, with
//! at-most-once guaranteed by its keys, so a restart neither loses nor repeats a step.

use crate::model::{Incident, Status};
use crate::pii::Clock;
use crate::playbook::{Escalation, Playbook};
use chrono::{DateTime, TimeDelta, Utc};

/// Everything due on one incident.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Due {
    /// Events since the last mail, when an update mail is due.
    pub update: Option<i64>,
    /// The levels to record as fired (those skipped while no daemon ran are recorded with the
    /// highest, which alone is mailed: never a burst of stale ones) and whom it reaches.
    pub escalation: Option<LevelDue>,
    /// Deadlines within their reminder period: `(name, due)`.
    pub reminders: Vec<(String, DateTime<Utc>)>,
}

/// An escalation level that fell due.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LevelDue {
    /// Levels `from..=level` are recorded as fired.
    pub from: i64,
    pub level: i64,
    pub to: Vec<String>,
}

/// What the notification state of an incident says: how many events the last mail covered and
/// when the last update went out.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Notified {
    pub events: i64,
    pub last_update_at: Option<DateTime<Utc>>,
}

/// What is due on `incident` at `now`. Without its playbook (removed since it opened) only
/// updates are.
pub fn due(
    incident: &Incident,
    notified: Notified,
    playbook: Option<&Playbook>,
    now: DateTime<Utc>,
    update_interval: TimeDelta,
) -> Due {
    let mut due = Due::default();
    let since = notified.last_update_at.unwrap_or(incident.opened_at);
    if incident.event_count > notified.events && now - since >= update_interval {
        due.update = Some(incident.event_count - notified.events);
    }
    let Some(playbook) = playbook else {
        return due;
    };
    let levels = levels_of(incident, playbook);
    if incident.status == Status::Open
        && let Some((level, to)) = due_level(levels, incident.opened_at, now)
        && level > incident.escalation_level
    {
        due.escalation = Some(LevelDue {
            from: incident.escalation_level + 1,
            level,
            to,
        });
    }
    for deadline in &playbook.deadlines {
        let at = incident.opened_at + deadline.within.to_chrono();
        let before = deadline
            .remind_before
            .map(|s| s.to_chrono())
            .unwrap_or(TimeDelta::days(1));
        if now >= at - before && now <= at {
            due.reminders.push((deadline.name.clone(), at));
        }
    }
    due
}

/// The escalation levels that apply to `incident`: an incident from outside the city's networks
/// escalates only as far as its playbook's [context] allows (0: the duty list's own mails and
/// digests only), unless it targets an account the host has (`[context] existing_account`).
fn levels_of<'p>(incident: &Incident, playbook: &'p Playbook) -> &'p [Escalation] {
    let field = |name: &str| incident.fields.get(name).and_then(|v| v.as_str());
    let external = field("network") == Some("external")
        && field("account") != Some("exists")
        && field("exposed") != Some("no");
    match playbook.context.as_ref().and_then(|c| c.external_levels) {
        Some(n) if external => {
            &playbook.escalations[..(n as usize).min(playbook.escalations.len())]
        }
        _ => &playbook.escalations[..],
    }
}

/// The earliest time after `now` at which [`due`] has something new for `incident` as it stands
/// once what was due at `now` is done (pass the state after the pass: the level it fired, the
/// events its update covered); `None` when nothing can fall due until the incident changes.
/// The store keeps this in `incidents.due_at` so that a pass reads only what is due instead of
/// every open incident. It must never be later than the real time (an escalation would be
/// late), so it is derived from the same rules as `due`; a time at or before `now` (something due
/// that this pass did not do) comes back as just after `now`, for the next pass to retry, never as
/// `now` itself, which would make the pass select the incident again and again.
pub fn next_due(
    incident: &Incident,
    notified: Notified,
    playbook: Option<&Playbook>,
    now: DateTime<Utc>,
    update_interval: TimeDelta,
) -> Option<DateTime<Utc>> {
    let mut times: Vec<DateTime<Utc>> = Vec::new();
    if incident.event_count > notified.events {
        let since = notified.last_update_at.unwrap_or(incident.opened_at);
        times.push(since + update_interval);
    }
    if let Some(playbook) = playbook {
        if incident.status == Status::Open
            && let Some(at) = level_at(
                levels_of(incident, playbook),
                incident.opened_at,
                incident.escalation_level + 1,
            )
        {
            times.push(at);
        }
        for deadline in &playbook.deadlines {
            let at = incident.opened_at + deadline.within.to_chrono();
            let before = deadline
                .remind_before
                .map(|s| s.to_chrono())
                .unwrap_or(TimeDelta::days(1));
            // Within the window the reminder is due now (and recorded at most once by its key);
            // after it, never again.
            if at - before > now {
                times.push(at - before);
            }
        }
    }
    let earliest = times.into_iter().min()?;
    Some(earliest.max(now + TimeDelta::milliseconds(1)))
}

/// The reminders of statutory clocks (`pii`) due at `now`: a clock past its deadline is
/// reminded as overdue, once a day (under `Clock::overdue_name(days)`) until its report is
/// recorded, else one past its warning is reminded under its name. Unlike a playbook
/// deadline's, a clock's reminder still comes when the daemon was down through its window (one
/// mail for the days missed, not a burst): a statutory report late is still owed. A clock with
/// a report made is never reminded. At most once per name, by the store's key.
pub fn clock_reminders(clocks: &[Clock], now: DateTime<Utc>) -> Vec<(String, DateTime<Utc>)> {
    clocks
        .iter()
        .filter(|c| c.done_at.is_none())
        .filter_map(|c| match c.due_at {
            Some(due) if now >= due => Some((c.overdue_name((now - due).num_days()), due)),
            _ if now >= c.warn_at => Some((c.name.clone(), c.due_at.unwrap_or(c.warn_at))),
            _ => None,
        })
        .collect()
}

/// The earliest time after `now` at which a pending clock has a new reminder (its warning, its
/// deadline, then each further day overdue), as `next_due` says it for the rest; `None` when
/// none will.
pub fn next_clock_due(clocks: &[Clock], now: DateTime<Utc>) -> Option<DateTime<Utc>> {
    clocks
        .iter()
        .filter(|c| c.done_at.is_none())
        .filter_map(|c| match c.due_at {
            Some(due) if now >= due => {
                Some(due + TimeDelta::days((now - due).num_days().saturating_add(1)))
            }
            Some(due) if now >= c.warn_at => Some(due),
            _ => Some(c.warn_at).filter(|t| *t > now),
        })
        .min()
}

/// When level `level` (counting from 1) falls due for an incident opened at `opened`, by the
/// rule of [`due_level`]: the levels are reached in order, so level n needs the largest `after`
/// of the first n; past the last, a `repeat` adds a level per period.
fn level_at(levels: &[Escalation], opened: DateTime<Utc>, level: i64) -> Option<DateTime<Utc>> {
    let n = usize::try_from(level).ok().filter(|n| *n >= 1)?;
    if n <= levels.len() {
        let after = levels[..n].iter().map(|l| l.after.to_chrono()).max()?;
        return Some(opened + after);
    }
    let last = levels.last()?;
    let repeat = last.repeat?.to_chrono();
    if repeat <= TimeDelta::zero() {
        return None;
    }
    let reached = levels.iter().map(|l| l.after.to_chrono()).max()?;
    let periods = i64::try_from(n - levels.len()).ok()?;
    let step = repeat.num_seconds().max(1).checked_mul(periods)?;
    Some(opened + reached.max(last.after.to_chrono() + TimeDelta::try_seconds(step)?))
}

/// The highest escalation level due `now` for an incident opened at `opened`, with whom it
/// reaches. Levels count from 1; a `repeat` on the last level adds a level per period.
pub fn due_level(
    levels: &[Escalation],
    opened: DateTime<Utc>,
    now: DateTime<Utc>,
) -> Option<(i64, Vec<String>)> {
    let elapsed = now - opened;
    let reached = levels
        .iter()
        .take_while(|l| elapsed >= l.after.to_chrono())
        .count();
    if reached == 0 {
        return None;
    }
    let last = &levels[reached - 1];
    let mut level = reached as i64;
    if reached == levels.len()
        && let Some(repeat) = last.repeat
        && repeat.to_chrono() > TimeDelta::zero()
    {
        let over = elapsed - last.after.to_chrono();
        level += over.num_seconds() / repeat.to_chrono().num_seconds().max(1);
    }
    Some((level, last.to.clone()))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::duration::Span;

    fn level(after: u64, to: &str, repeat: Option<u64>) -> Escalation {
        Escalation {
            after: Span::from_secs(after),
            to: vec![to.into()],
            repeat: repeat.map(Span::from_secs),
        }
    }

    #[test]
    fn levels_fall_due_in_order_and_repeat_on_the_last() {
        let opened = DateTime::parse_from_rfc3339("2026-11-25T00:00:00Z")
            .expect("time")
            .to_utc();
        let at = |s: i64| opened + TimeDelta::seconds(s);
        let levels = [level(1800, "lead", None), level(7200, "ciso", Some(3600))];
        assert_eq!(due_level(&levels, opened, at(1799)), None);
        assert_eq!(
            due_level(&levels, opened, at(1800)),
            Some((1, vec!["lead".into()]))
        );
        assert_eq!(due_level(&levels, opened, at(7199)).map(|l| l.0), Some(1));
        assert_eq!(
            due_level(&levels, opened, at(7200)),
            Some((2, vec!["ciso".into()]))
        );
        assert_eq!(
            due_level(&levels, opened, at(7200 + 3599)).map(|l| l.0),
            Some(2)
        );
        assert_eq!(
            due_level(&levels, opened, at(7200 + 3600)).map(|l| l.0),
            Some(3)
        );
        assert_eq!(
            due_level(&levels, opened, at(7200 + 3 * 3600)).map(|l| l.0),
            Some(5)
        );
        assert_eq!(due_level(&[], opened, at(99_999)), None);
    }

    fn incident(opened: DateTime<Utc>, status: Status, events: i64, level: i64) -> Incident {
        Incident {
            id: 1,
            title: "t".into(),
            playbook: "p".into(),
            category: "c".into(),
            severity: crate::model::Severity::High,
            status,
            resolution: None,
            dedupe_key: String::new(),
            fields: Default::default(),
            event_count: events,
            first_seen: opened,
            last_seen: opened,
            opened_at: opened,
            acknowledged_at: None,
            closed_at: None,
            assignee: None,
            escalation_level: level,
        }
    }

    fn playbook() -> Playbook {
        Playbook {
            id: "p".into(),
            title: "t".into(),
            category: "c".into(),
            severity: crate::model::Severity::High,
            description: None,
            dedupe: Vec::new(),
            rules: Vec::new(),
            steps: Vec::new(),
            escalations: vec![level(1800, "lead", None), level(7200, "ciso", None)],
            deadlines: vec![crate::playbook::Deadline {
                name: "速報".into(),
                within: Span::from_secs(3 * 86_400),
                remind_before: None,
            }],
            ignore: None,
            ignore_cidrs: Vec::new(),
            context: None,
            internal_networks: None,
            exposed_hosts: None,
            path: Default::default(),
        }
    }

    #[test]
    fn what_falls_due_comes_from_stored_times_alone() {
        let opened = DateTime::<Utc>::UNIX_EPOCH;
        let at = |s: i64| opened + TimeDelta::seconds(s);
        let quiet = Notified {
            events: 5,
            last_update_at: None,
        };
        let pb = playbook();
        let interval = TimeDelta::minutes(10);
        // Nothing new, nothing late.
        let i = incident(opened, Status::Open, 5, 0);
        assert_eq!(due(&i, quiet, Some(&pb), at(60), interval), Due::default());
        // New events: an update once the interval has passed since the last mail.
        let i = incident(opened, Status::Open, 9, 0);
        assert_eq!(due(&i, quiet, Some(&pb), at(599), interval).update, None);
        assert_eq!(due(&i, quiet, Some(&pb), at(600), interval).update, Some(4));
        // Down for three hours: both levels are recorded, the highest mailed.
        let late = due(&i, quiet, Some(&pb), at(3 * 3600), interval);
        assert_eq!(
            late.escalation,
            Some(LevelDue {
                from: 1,
                level: 2,
                to: vec!["ciso".into()]
            })
        );
        // Acknowledged incidents do not escalate; a level already fired is not due again.
        let acked = incident(opened, Status::Acknowledged, 5, 0);
        assert_eq!(
            due(&acked, quiet, Some(&pb), at(3 * 3600), interval).escalation,
            None
        );
        let fired = incident(opened, Status::Open, 5, 2);
        assert_eq!(
            due(&fired, quiet, Some(&pb), at(3 * 3600), interval).escalation,
            None
        );
        // The deadline's reminder runs from a day before it until it passes.
        assert!(
            due(&i, quiet, Some(&pb), at(2 * 86_400 - 1), interval)
                .reminders
                .is_empty()
        );
        assert_eq!(
            due(&i, quiet, Some(&pb), at(2 * 86_400), interval).reminders,
            vec![("速報".to_string(), at(3 * 86_400))]
        );
        assert!(
            due(&i, quiet, Some(&pb), at(3 * 86_400 + 1), interval)
                .reminders
                .is_empty()
        );
        // A playbook removed since: updates only.
        let gone = due(&i, quiet, None, at(3 * 86_400), interval);
        assert_eq!((gone.update, gone.escalation), (Some(4), None));
    }

    /// `next_due` is exactly when `due` first has something new: never later (an escalation
    /// would be late), and not earlier than needed, over levels, a repeat, an update and a
    /// deadline window, for open and acknowledged incidents at several levels.
    #[test]
    fn next_due_is_when_due_first_has_something_new() {
        let opened = DateTime::<Utc>::UNIX_EPOCH;
        let mut pb = playbook();
        pb.escalations = vec![level(1800, "lead", None), level(7200, "ciso", Some(3600))];
        let interval = TimeDelta::minutes(15);
        let step = TimeDelta::seconds(30);
        for status in [Status::Open, Status::Acknowledged] {
            for fired in [0, 1, 2, 4] {
                for (events, notified) in [(5, 5), (9, 5)] {
                    for start in [0, 600, 1799, 5000, 3 * 86_400 - 100, 2 * 86_400 + 10] {
                        let now = opened + TimeDelta::seconds(start);
                        let i = incident(opened, status, events, fired);
                        let seen = Notified {
                            events: notified,
                            last_update_at: Some(now),
                        };
                        // What is already due at `now` counts as done.
                        let old: Vec<_> = due(&i, seen, Some(&pb), now, interval).reminders;
                        let new_at = |t| {
                            let d = due(&i, seen, Some(&pb), t, interval);
                            d.update.is_some()
                                || d.escalation.is_some()
                                || d.reminders.iter().any(|r| !old.contains(r))
                        };
                        let next = next_due(&i, seen, Some(&pb), now, interval);
                        let case = format!("{status:?} level {fired} events {events} at {start}");
                        let horizon = now + TimeDelta::days(4);
                        let mut t = now + step;
                        while t < next.unwrap_or(horizon).min(horizon) {
                            assert!(!new_at(t), "{case}: due at {t} before next_due {next:?}");
                            t += step;
                        }
                        if let Some(next) = next {
                            assert!(next > now, "{case}");
                            assert!(new_at(next), "{case}: nothing due at next_due {next}");
                        }
                    }
                }
            }
        }
        // Without its playbook only an update can fall due.
        let i = incident(opened, Status::Open, 9, 0);
        let seen = Notified {
            events: 5,
            last_update_at: None,
        };
        assert_eq!(
            next_due(&i, seen, None, opened, interval),
            Some(opened + interval)
        );
        let quiet = Notified {
            events: 9,
            last_update_at: None,
        };
        assert_eq!(next_due(&i, quiet, None, opened, interval), None);
    }

    fn clock(warn: i64, due: Option<i64>, done: bool) -> Clock {
        let t = |d: i64| DateTime::<Utc>::UNIX_EPOCH + TimeDelta::days(d);
        Clock {
            duty: "ppc".into(),
            name: "速報".into(),
            to: crate::pii::Party::Ppc,
            kind: crate::pii::Kind::Preliminary,
            warn_at: t(warn),
            due_at: due.map(t),
            source: "施行規則 第44条第1項".into(),
            done_at: done.then(|| t(1)),
        }
    }

    /// A statutory clock warns from its warning time, is reminded as overdue from its deadline
    /// (however late the pass), never once its report is made; `next_clock_due` is exactly when
    /// `clock_reminders` has something new.
    #[test]
    fn statutory_clocks_warn_then_remind_overdue_until_reported() {
        let day = |d: i64| DateTime::<Utc>::UNIX_EPOCH + TimeDelta::days(d);
        let sokuhou = [clock(3, Some(5), false)];
        assert!(clock_reminders(&sokuhou, day(3) - TimeDelta::seconds(1)).is_empty());
        assert_eq!(
            clock_reminders(&sokuhou, day(3)),
            vec![("速報".to_string(), day(5))]
        );
        assert_eq!(
            clock_reminders(&sokuhou, day(5)),
            vec![("速報 (期限超過)".to_string(), day(5))]
        );
        assert_eq!(
            clock_reminders(&sokuhou, day(7)),
            vec![("速報 (期限超過 2日)".to_string(), day(5))]
        );
        // Down for a month: still owed, reminded once for the days missed.
        assert_eq!(
            clock_reminders(&sokuhou, day(40)),
            vec![("速報 (期限超過 35日)".to_string(), day(5))]
        );
        assert!(clock_reminders(&[clock(3, Some(5), true)], day(4)).is_empty());
        // 速やかに: a warning only, named for the warning time.
        assert_eq!(
            clock_reminders(&[clock(3, None, false)], day(9)),
            vec![("速報".to_string(), day(3))]
        );
        for (start, next) in [
            (0, Some(3)),
            (3, Some(5)),
            (4, Some(5)),
            (5, Some(6)),
            (9, Some(10)),
        ] {
            assert_eq!(
                next_clock_due(&sokuhou, day(start)),
                next.map(day),
                "from day {start}"
            );
        }
        assert_eq!(next_clock_due(&[clock(3, Some(5), true)], day(0)), None);
        // What is new at each next time is what the store records once.
        let mut seen: Vec<String> = Vec::new();
        let mut now = day(0);
        while let Some(next) = next_clock_due(&sokuhou, now).filter(|t| *t <= day(8)) {
            let new: Vec<String> = clock_reminders(&sokuhou, next)
                .into_iter()
                .map(|(n, _)| n)
                .filter(|n| !seen.contains(n))
                .collect();
            assert_eq!(new.len(), 1, "at {next}: {new:?}");
            seen.extend(new);
            now = next;
        }
        assert_eq!(
            seen,
            [
                "速報",
                "速報 (期限超過)",
                "速報 (期限超過 1日)",
                "速報 (期限超過 2日)",
                "速報 (期限超過 3日)"
            ]
        );
    }
}
