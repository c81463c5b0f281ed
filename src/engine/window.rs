//! The threshold windows of below-threshold keys, in memory: per (playbook, dedupe key), the
//! hits still inside its window, so that a spray of addresses that never reach their threshold
//! costs no read per hit. Never touches the store; the store's ingest transaction consults and
//! feeds it, and the pending events it writes in the same transaction stay the durable truth.
//!
//! What makes it exact:
//!
//! - Keys are held by a 64-bit hash of (playbook, key), 8 bytes instead of the strings. Two keys
//!   with one hash share a window, whose count is then at least each key's own: the memory may
//!   count too much, never too little. So "below the threshold" in memory is below in the store,
//!   and a window that reaches its threshold is confirmed against the store's pending events
//!   before anything opens (a crossing is once per incident, the read is cheap there).
//! - A key not held may still have pending events in the store: its window was dropped (passed,
//!   or spilled under the bound), or was written before this process started, or by another
//!   daemon. `forgotten` is the newest hit of any window not held; a hit whose window starts
//!   after it cannot meet any of them, and needs no read. Otherwise the store's pending events
//!   of the key are loaded (for the whole batch in one statement) before the hit is added.
//!   Until the store told the newest pending event (`set_forgotten`), every key is read.
//! - When another daemon writes to the same store (`shared`), its hits are not in this memory:
//!   every key of a batch is loaded from the store, under the key's lock.
//!
//! Bounded: windows whose span has passed are dropped as the log's time moves on; past
//! `bound` windows the oldest (by newest hit) are spilled — forgotten here, still in the store.

use super::gate::SlotMap;
use chrono::{DateTime, Utc};

/// One key's window, 24 bytes: its newest hit inline (a spray's key mostly has one), older
/// hits still inside it in `Windows::older`.
#[derive(Debug, Clone, Copy)]
struct Window {
    /// Hits older than this were dropped (the old store deleted them): the store's rows before
    /// it never count again for this key.
    floor: i64,
    /// The newest hit's time (µs); meaningless while `weight` is 0 (a window loaded empty).
    newest: i64,
    weight: u32,
    /// The rule's window in whole seconds (rounded up; the longest of the key's rules): the
    /// window has passed once `newest` is older than this.
    span: u32,
}

impl Window {
    fn newest(&self) -> i64 {
        if self.weight == 0 {
            self.floor
        } else {
            self.newest
        }
    }

    fn expires(&self) -> i64 {
        self.newest()
            .saturating_add(i64::from(self.span) * 1_000_000)
    }
}

/// A span in whole seconds, rounded up (keeping a window a little longer is always right).
fn span_secs(span: chrono::TimeDelta) -> u32 {
    let us = span.num_microseconds().unwrap_or(i64::MAX).max(0);
    u32::try_from(us / 1_000_000 + i64::from(us % 1_000_000 != 0)).unwrap_or(u32::MAX)
}

/// What a window holds after a hit was added: its weight and its earliest hit.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Tally {
    pub count: i64,
    pub first: DateTime<Utc>,
    /// The oldest time still counted (the store's pending events before it are stale).
    pub floor: DateTime<Utc>,
}

/// The windows of one store's ingest.
#[derive(Debug)]
pub struct Windows {
    map: SlotMap<Window>,
    /// The hits of a window other than its newest, for the keys that have them.
    older: SlotMap<Vec<(i64, u32)>>,
    hasher: std::hash::RandomState,
    bound: usize,
    /// The newest hit (µs) of any window the store may hold that is not in `map`; `None` while
    /// the store has not said (then every key is read).
    forgotten: Option<i64>,
    /// Another daemon writes to the store: every key is read.
    shared: bool,
    /// The newest hit time seen: windows that expired before it are dropped.
    clock: i64,
    /// How many windows there were after the last sweep, so sweeps cost amortised O(1).
    swept_at: usize,
    /// Windows spilled under the bound since the start (for the log and tests).
    spilled: u64,
}

/// The smallest number of windows before a sweep is worth its pass.
const SWEEP_MIN: usize = 4096;

fn micros(at: DateTime<Utc>) -> i64 {
    at.timestamp_micros()
}

fn time(us: i64) -> DateTime<Utc> {
    DateTime::<Utc>::from_timestamp_micros(us).unwrap_or(DateTime::<Utc>::MIN_UTC)
}

impl Windows {
    /// Empty, holding at most `bound` windows (at least 1).
    pub fn new(bound: usize) -> Windows {
        Windows {
            map: SlotMap::default(),
            older: SlotMap::default(),
            hasher: std::hash::RandomState::new(),
            bound: bound.max(1),
            forgotten: None,
            shared: false,
            clock: i64::MIN,
            swept_at: 0,
            spilled: 0,
        }
    }

    fn slot(&self, playbook: &str, key: &str) -> u64 {
        super::gate::slot(&self.hasher, playbook, key)
    }

    /// A new bound (a reload); takes effect at the next `settle`.
    pub fn set_bound(&mut self, bound: usize) {
        self.bound = bound.max(1);
    }

    /// Whether another daemon writes to the store.
    pub fn set_shared(&mut self, shared: bool) {
        self.shared = shared;
    }

    /// Whether the store must say its newest pending event before keys can be trusted.
    pub fn needs_forgotten(&self) -> bool {
        self.forgotten.is_none()
    }

    /// The store's newest pending event (None: there is none).
    pub fn set_forgotten(&mut self, newest: Option<DateTime<Utc>>) {
        self.forgotten = Some(newest.map_or(i64::MIN, micros));
    }

    /// Whether a hit of `key` whose window starts at `since` must first load the key's pending
    /// events from the store.
    pub fn needs_load(&self, playbook: &str, key: &str, since: DateTime<Utc>) -> bool {
        if self.shared {
            return true;
        }
        if self.map.contains_key(&self.slot(playbook, key)) {
            return false;
        }
        self.forgotten.is_none_or(|f| f >= micros(since))
    }

    /// Replaces the key's window by the store's pending events at or after `since` (time,
    /// weight), `span` being the rule's window.
    pub fn load(
        &mut self,
        playbook: &str,
        key: &str,
        since: DateTime<Utc>,
        span: chrono::TimeDelta,
        hits: impl IntoIterator<Item = (DateTime<Utc>, u32)>,
    ) {
        let slot = self.slot(playbook, key);
        let floor = micros(since);
        let mut hits: Vec<(i64, u32)> = hits
            .into_iter()
            .map(|(at, w)| (micros(at), w.max(1)))
            .filter(|(at, _)| *at >= floor)
            .collect();
        let mut window = Window {
            floor,
            newest: i64::MIN,
            weight: 0,
            span: span_secs(span),
        };
        if let Some(i) = (0..hits.len()).max_by_key(|&i| hits[i].0) {
            let (at, w) = hits.swap_remove(i);
            (window.newest, window.weight) = (at, w);
        }
        self.map.insert(slot, window);
        if hits.is_empty() {
            self.older.remove(&slot);
        } else {
            self.older.insert(slot, hits);
        }
    }

    /// Adds a hit of `weight` at `at` to the key's window, dropping what is older than `since`
    /// (`at` minus the rule's window); what the window then holds.
    pub fn add(
        &mut self,
        playbook: &str,
        key: &str,
        at: DateTime<Utc>,
        weight: u32,
        since: DateTime<Utc>,
    ) -> Tally {
        let slot = self.slot(playbook, key);
        let span = span_secs(at - since);
        let (at, since, weight) = (micros(at), micros(since), weight.max(1));
        self.clock = self.clock.max(at);
        let window = self.map.entry(slot).or_insert(Window {
            floor: since,
            newest: i64::MIN,
            weight: 0,
            span,
        });
        window.floor = window.floor.max(since);
        window.span = window.span.max(span);
        let floor = window.floor;
        // The newest stays inline; the other goes to `older`.
        let displaced = if window.weight == 0 {
            (window.newest, window.weight) = (at, weight);
            None
        } else if at >= window.newest {
            let old = (window.newest, window.weight);
            (window.newest, window.weight) = (at, weight);
            Some(old)
        } else {
            Some((at, weight))
        };
        let window = *window;
        let older = match displaced {
            Some(hit) => {
                let older = self.older.entry(slot).or_default();
                older.push(hit);
                older.retain(|(t, _)| *t >= floor);
                older.as_slice()
            }
            None => match self.older.get_mut(&slot) {
                Some(older) => {
                    older.retain(|(t, _)| *t >= floor);
                    older.as_slice()
                }
                None => &[],
            },
        };
        // The newest hit is never before the floor: the floor is its own window's start or an
        // earlier hit's, and `at` is the newest.
        let count =
            i64::from(window.weight) + older.iter().map(|(_, w)| i64::from(*w)).sum::<i64>();
        let first = older
            .iter()
            .map(|(t, _)| *t)
            .min()
            .map_or(window.newest, |t| t.min(window.newest));
        if older.is_empty() {
            self.older.remove(&slot);
        }
        Tally {
            count,
            first: time(first),
            floor: time(floor),
        }
    }

    /// The key's window is done with (an incident opened from it, or the store said what it
    /// holds): the next hit starts anew, from the store if `forgotten` says so.
    pub fn remove(&mut self, playbook: &str, key: &str) {
        let slot = self.slot(playbook, key);
        self.map.remove(&slot);
        self.older.remove(&slot);
    }

    /// Forgets every window (a batch that did not commit changed them): the store is read again.
    pub fn forget_all(&mut self) {
        self.map = SlotMap::default();
        self.older = SlotMap::default();
        self.forgotten = None;
        self.swept_at = 0;
    }

    /// After a batch: drops the windows whose span passed before the newest hit seen, and past
    /// the bound spills the oldest.
    pub fn settle(&mut self) {
        if self.map.len() > self.bound
            || self.map.len() >= self.swept_at.saturating_mul(2).max(SWEEP_MIN)
        {
            self.sweep();
        }
        if self.map.len() > self.bound {
            self.spill();
        }
    }

    fn forget(&mut self, newest: i64) {
        self.forgotten = Some(self.forgotten.map_or(newest, |f| f.max(newest)));
    }

    fn sweep(&mut self) {
        let clock = self.clock;
        let mut newest_gone = None::<i64>;
        self.map.retain(|_, w| {
            let keep = w.expires() >= clock;
            if !keep {
                let n = w.newest();
                newest_gone = Some(newest_gone.map_or(n, |g| g.max(n)));
            }
            keep
        });
        let map = &self.map;
        self.older.retain(|slot, _| map.contains_key(slot));
        if let Some(n) = newest_gone
            && self.forgotten.is_some()
        {
            self.forget(n);
        }
        self.swept_at = self.map.len();
    }

    /// Spills the oldest windows down to three quarters of the bound, so that a spray over the
    /// bound spills in steps rather than at every batch.
    fn spill(&mut self) {
        let target = self.bound - self.bound / 4;
        let excess = self.map.len().saturating_sub(target);
        if excess == 0 {
            return;
        }
        let mut newest: Vec<i64> = self.map.values().map(Window::newest).collect();
        let (_, cutoff, _) = newest.select_nth_unstable(excess - 1);
        let cutoff = *cutoff;
        let before = self.map.len();
        self.map.retain(|_, w| w.newest() > cutoff);
        let map = &self.map;
        self.older.retain(|slot, _| map.contains_key(slot));
        self.spilled += (before - self.map.len()) as u64;
        if self.forgotten.is_some() {
            self.forget(cutoff);
        }
        self.swept_at = self.map.len();
    }

    /// How many windows are held.
    pub fn len(&self) -> usize {
        self.map.len()
    }

    pub fn is_empty(&self) -> bool {
        self.map.is_empty()
    }

    /// How many windows were spilled under the bound since the start.
    pub fn spilled(&self) -> u64 {
        self.spilled
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use chrono::TimeDelta;

    const SPAN: TimeDelta = TimeDelta::minutes(10);

    fn at(s: i64) -> DateTime<Utc> {
        DateTime::<Utc>::UNIX_EPOCH + TimeDelta::days(20_000) + TimeDelta::seconds(s)
    }

    fn add(w: &mut Windows, key: &str, s: i64) -> i64 {
        w.add("ssh", key, at(s), 1, at(s) - SPAN).count
    }

    fn ready(bound: usize) -> Windows {
        let mut w = Windows::new(bound);
        w.set_forgotten(None);
        w
    }

    #[test]
    fn a_window_counts_its_hits_and_drops_those_older_than_its_span() {
        let mut w = ready(10);
        assert_eq!(add(&mut w, "ip=a", 0), 1);
        assert_eq!(add(&mut w, "ip=a", 100), 2);
        assert_eq!(add(&mut w, "ip=b", 100), 1, "keys are apart");
        let t = w.add("ssh", "ip=a", at(650), 3, at(650) - SPAN);
        assert_eq!(t.count, 4, "the hit at 0 left the window; weights count");
        assert_eq!(t.first, at(100));
        assert_eq!(t.floor, at(50));
        assert_eq!(
            w.add("web", "ip=a", at(650), 1, at(50)).count,
            1,
            "per playbook"
        );
    }

    #[test]
    fn until_the_store_says_its_newest_pending_event_every_key_is_read() {
        let w = Windows::new(10);
        assert!(w.needs_forgotten());
        assert!(w.needs_load("ssh", "ip=a", at(0)));
        let mut w = Windows::new(10);
        w.set_forgotten(Some(at(100)));
        assert!(
            w.needs_load("ssh", "ip=a", at(100)),
            "its window may hold that event"
        );
        assert!(!w.needs_load("ssh", "ip=a", at(101)));
        w.load("ssh", "ip=a", at(50), SPAN, [(at(40), 1), (at(60), 2)]);
        assert!(!w.needs_load("ssh", "ip=a", at(0)), "held now");
        assert_eq!(
            add(&mut w, "ip=a", 70),
            3,
            "the event before the window's start is not loaded"
        );
        w.set_shared(true);
        assert!(
            w.needs_load("ssh", "ip=a", at(0)),
            "another daemon may have added to it"
        );
    }

    #[test]
    fn windows_whose_span_passed_are_dropped_and_remembered_as_forgotten() {
        let mut w = ready(1_000_000);
        for i in 0..SWEEP_MIN as i64 {
            add(&mut w, &format!("ip={i}"), 0);
        }
        // One key stays alive; the clock moves past everyone else's span.
        add(&mut w, "ip=alive", 500);
        add(&mut w, "ip=late", 700);
        w.settle();
        assert_eq!(w.len(), 2, "only the windows still open are held");
        assert_eq!(w.spilled(), 0, "dropping a passed window is not spilling");
        // A dropped key's hit in order needs no read; one whose window reaches back does.
        assert!(!w.needs_load("ssh", "ip=7", at(700) - SPAN));
        assert!(w.needs_load("ssh", "ip=7", at(0) - SPAN));
    }

    #[test]
    fn past_the_bound_the_oldest_windows_spill_and_their_keys_are_read_again() {
        let mut w = ready(100);
        for i in 0..150 {
            add(&mut w, &format!("ip={i}"), i);
        }
        w.settle();
        assert_eq!(w.len(), 75, "down to three quarters of the bound");
        assert_eq!(w.spilled(), 75);
        assert!(
            w.needs_load("ssh", "ip=3", at(200) - SPAN),
            "spilled: in the store only"
        );
        assert!(
            !w.needs_load("ssh", "ip=149", at(200) - SPAN),
            "the newest stay"
        );
        assert!(
            w.needs_load("ssh", "ip=new", at(200) - SPAN),
            "a key never seen may be a spilled one"
        );
        assert!(!w.needs_load("ssh", "ip=new", at(75) + TimeDelta::seconds(1)));
    }

    #[test]
    fn an_opened_key_starts_anew_and_a_failed_batch_forgets_everything() {
        let mut w = ready(10);
        add(&mut w, "ip=a", 0);
        add(&mut w, "ip=a", 1);
        w.remove("ssh", "ip=a");
        assert_eq!(add(&mut w, "ip=a", 2), 1);
        w.forget_all();
        assert!(w.is_empty());
        assert!(w.needs_forgotten());
        assert!(w.needs_load("ssh", "ip=a", at(1000)));
    }
}
