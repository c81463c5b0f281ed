//! Which raising matches are worth a hit.
//!
//! A raising rule (the SSH playbook's login after failures) matches every login, and on a busy
//! server most logins are monitoring and automation: 7% of the generator's auth.log. Each would
//! become a hit that the reader builds and the writer looks up, only for the store to find
//! nothing to raise. The store can raise only for a key that has an incident (open, or closed
//! within the rule's `closed_within`) or failures below the threshold; the gate knows those keys
//! (loaded from the store, then noted by the readers as they make each failure's hit) and lets a
//! raising match through only for them.
//!
//! It errs on the side of passing, never of dropping: before its first load, and while another
//! daemon writes to the same store (whose failures this one does not read), everything passes;
//! a key is kept for a day longer than the longest `closed_within` (at least `KEEP`) after it
//! was last noted or loaded; and the open incidents' keys are loaded again at every heartbeat
//! (an incident reopened from the CLI).

use chrono::{DateTime, TimeDelta, Utc};
use std::collections::HashMap;
use std::hash::{BuildHasher, Hasher};
use std::sync::Mutex;

/// How long a key stays at least after it was last noted or loaded.
const KEEP: TimeDelta = TimeDelta::hours(49);

/// The keys a raising match may matter for, per playbook.
#[derive(Debug, Default)]
pub struct RaiseGate {
    state: Mutex<State>,
}

#[derive(Debug, Default)]
struct State {
    /// Whether the gate filters at all (loaded, and this daemon the only writer).
    filtering: bool,
    /// Per (playbook, dedupe key), by a 64-bit hash of both, when it was last noted or loaded
    /// (Unix seconds). A spray of 100,000 addresses notes 100,000 keys: a hash and a time are
    /// 16 bytes each, the strings would be several times that. Two keys with one hash only make
    /// the gate pass more, never less.
    keys: SlotMap<i64>,
    hasher: std::hash::RandomState,
}

/// A map keyed by `slot`s. A slot is already a keyed hash (SipHash with this process's random
/// key), so the map uses it as it is instead of hashing it a second time (#13: the second SipHash
/// was a visible part of a spray's CPU).
pub(super) type SlotMap<V> = HashMap<u64, V, std::hash::BuildHasherDefault<SlotHasher>>;

/// The identity hash of a slot (see `SlotMap`).
#[derive(Debug, Default)]
pub(super) struct SlotHasher(u64);

impl std::hash::Hasher for SlotHasher {
    fn finish(&self) -> u64 {
        self.0
    }

    fn write(&mut self, bytes: &[u8]) {
        // Only u64 keys reach it; this keeps any other use a hash all the same.
        for b in bytes {
            self.0 = self.0.rotate_left(8) ^ u64::from(*b);
        }
    }

    fn write_u64(&mut self, n: u64) {
        self.0 = n;
    }
}

impl State {
    fn slot(&self, playbook: &str, key: &str) -> u64 {
        slot(&self.hasher, playbook, key)
    }
}

/// The 64-bit hash of (playbook, key) that the gate and the windows keep instead of the strings
/// (NUL apart: no playbook id holds one).
pub(super) fn slot(hasher: &std::hash::RandomState, playbook: &str, key: &str) -> u64 {
    let mut h = hasher.build_hasher();
    h.write(playbook.as_bytes());
    h.write_u8(0);
    h.write(key.as_bytes());
    h.finish()
}

impl RaiseGate {
    fn state(&self) -> std::sync::MutexGuard<'_, State> {
        match self.state.lock() {
            Ok(state) => state,
            Err(poisoned) => poisoned.into_inner(),
        }
    }

    /// Whether a raising match of `playbook` for `key` must become a hit.
    pub fn passes(&self, playbook: &str, key: &str) -> bool {
        let state = self.state();
        !state.filtering || state.keys.contains_key(&state.slot(playbook, key))
    }

    /// A failure of `key` was seen (its hit is on its way to the store).
    pub fn note(&self, playbook: &str, key: &str, now: DateTime<Utc>) {
        let mut state = self.state();
        let slot = state.slot(playbook, key);
        state.keys.insert(slot, now.timestamp());
    }

    /// The store's keys (playbook, key: incidents open or closed lately, failures pending), and
    /// whether another daemon writes to the store too. Forgets keys not noted or loaded for a
    /// day more than `closed_within` (the longest of the raising rules), and at least `KEEP`.
    pub fn load(
        &self,
        from_store: impl IntoIterator<Item = (String, String)>,
        others_writing: bool,
        now: DateTime<Utc>,
        closed_within: TimeDelta,
    ) {
        let mut state = self.state();
        for (playbook, key) in from_store {
            let slot = state.slot(&playbook, &key);
            state.keys.insert(slot, now.timestamp());
        }
        let keep = KEEP.max(closed_within + TimeDelta::days(1));
        let oldest = (now - keep).timestamp();
        state.keys.retain(|_, at| *at >= oldest);
        state.filtering = !others_writing;
    }

    /// Back to passing everything (the store could not be read: its keys are unknown).
    pub fn pass_all(&self) {
        self.state().filtering = false;
    }

    /// How many keys the gate holds (for the log).
    pub fn len(&self) -> usize {
        self.state().keys.len()
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn at(h: i64) -> DateTime<Utc> {
        DateTime::<Utc>::UNIX_EPOCH + TimeDelta::hours(1000 + h)
    }

    #[test]
    fn everything_passes_until_the_store_was_read() {
        let gate = RaiseGate::default();
        assert!(gate.passes("ssh", "ip=192.0.2.1"));
        gate.load(
            [("ssh".to_string(), "ip=192.0.2.9".to_string())],
            false,
            at(0),
            TimeDelta::hours(24),
        );
        assert!(!gate.passes("ssh", "ip=192.0.2.1"));
        assert!(gate.passes("ssh", "ip=192.0.2.9"));
        assert!(
            !gate.passes("mail", "ip=192.0.2.9"),
            "keys are per playbook"
        );
    }

    #[test]
    fn a_failure_seen_opens_the_gate_for_its_key() {
        let gate = RaiseGate::default();
        gate.load([], false, at(0), TimeDelta::hours(24));
        gate.note("ssh", "ip=192.0.2.1", at(1));
        assert!(gate.passes("ssh", "ip=192.0.2.1"));
        // Kept past any closed_within, then forgotten unless the store still has it.
        gate.load([], false, at(40), TimeDelta::hours(24));
        assert!(gate.passes("ssh", "ip=192.0.2.1"));
        gate.load([], false, at(51), TimeDelta::hours(24));
        assert!(!gate.passes("ssh", "ip=192.0.2.1"));
        assert!(gate.is_empty());
        gate.note("ssh", "ip=192.0.2.1", at(52));
        gate.load(
            [("ssh".into(), "ip=192.0.2.1".into())],
            false,
            at(200),
            TimeDelta::hours(24),
        );
        assert_eq!(gate.len(), 1, "what the store still has stays");
    }

    #[test]
    fn a_long_closed_within_keeps_keys_longer() {
        let gate = RaiseGate::default();
        gate.load([], false, at(0), TimeDelta::hours(24));
        gate.note("ssh", "ip=192.0.2.1", at(0));
        gate.load([], false, at(100), TimeDelta::hours(96));
        assert!(gate.passes("ssh", "ip=192.0.2.1"), "96 h + a day");
        gate.load([], false, at(121), TimeDelta::hours(96));
        assert!(!gate.passes("ssh", "ip=192.0.2.1"));
    }

    #[test]
    fn another_writer_or_an_unread_store_lets_everything_pass() {
        let gate = RaiseGate::default();
        gate.load([], true, at(0), TimeDelta::hours(24));
        assert!(gate.passes("ssh", "ip=192.0.2.1"));
        gate.load([], false, at(0), TimeDelta::hours(24));
        assert!(!gate.passes("ssh", "ip=192.0.2.1"));
        gate.pass_all();
        assert!(gate.passes("ssh", "ip=192.0.2.1"));
    }
}
