//! Sessions: the lines one process writes about one client, tied together by host, program and
//! pid. sshd logs some failures without the client's address ("Disconnecting: Too many
//! authentication failures", "User root not allowed because account is locked"); the address
//! is in another line of the same process, before ("Connection from H port P") or after
//! ("Received disconnect from H"). A rule with `session = "pid"` takes a dedupe field it lacks
//! from the session, or waits in it for the next line that brings it; a `learn` rule is no hit
//! and only teaches the session.
//!
//! Bounded: at most `MAX_SESSIONS` sessions (the least recently used is forgotten) and
//! `MAX_WAITING` waiting hits per session. Only fields from lines of the same process are
//! used, and those lines' own patterns are anchored like any other, so a client cannot supply
//! another session's address.

use crate::model::Fields;
use std::collections::{HashMap, VecDeque};
use std::hash::{Hash, Hasher};

/// Sessions kept at once, per source (a log file, a journal source).
pub const MAX_SESSIONS: usize = 4_096;
/// Hits waiting for their address, per session.
pub const MAX_WAITING: usize = 8;

/// A session's identity: a hash of host, program and pid (computed without allocating; two
/// processes sharing one of 2^64 values is not a concern next to pid reuse).
pub(super) type SessionId = u64;

/// The identity of the session of `host`, `program`, `pid`.
pub(super) fn session_id(host: Option<&str>, program: &str, pid: &str) -> SessionId {
    let mut h = std::collections::hash_map::DefaultHasher::new();
    (host.unwrap_or("-"), program, pid).hash(&mut h);
    h.finish()
}

/// A hit waiting for the fields its session will bring.
#[derive(Debug, Clone)]
pub(super) struct Waiting {
    pub playbook: String,
    pub rule: String,
    pub fields: Fields,
}

#[derive(Debug, Default)]
pub(super) struct Session {
    pub fields: Fields,
    pub waiting: Vec<Waiting>,
}

/// The sessions of one source.
#[derive(Debug, Default)]
pub struct Sessions {
    map: HashMap<SessionId, Session>,
    order: VecDeque<SessionId>,
    /// Hits waiting in all sessions.
    waiting_total: usize,
}

impl Sessions {
    /// Whether a hit of session `id` waits for its address.
    pub(super) fn waiting(&self, id: SessionId) -> bool {
        self.map.get(&id).is_some_and(|s| !s.waiting.is_empty())
    }

    /// Whether any hit waits at all (most of the time none does, and no line needs hashing).
    pub(super) fn any_waiting(&self) -> bool {
        self.waiting_total > 0
    }

    /// Records that a session's waiting hits went from `before` to `after`.
    pub(super) fn waiting_changed(&mut self, before: usize, after: usize) {
        self.waiting_total = (self.waiting_total + after).saturating_sub(before);
    }

    /// The session `id`, created if new (forgetting the least recently created when full).
    pub(super) fn get(&mut self, id: SessionId) -> &mut Session {
        if !self.map.contains_key(&id) {
            while self.map.len() >= MAX_SESSIONS {
                match self.order.pop_front() {
                    Some(old) => {
                        if let Some(gone) = self.map.remove(&old) {
                            self.waiting_total -= gone.waiting.len().min(self.waiting_total);
                        }
                    }
                    None => break,
                }
            }
            self.order.push_back(id);
        }
        self.map.entry(id).or_default()
    }

    /// How many sessions are kept.
    #[cfg(test)]
    fn len(&self) -> usize {
        self.map.len()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sessions_are_bounded() {
        let mut s = Sessions::default();
        for pid in 0..(MAX_SESSIONS + 10) {
            s.get(session_id(Some("h"), "sshd", &pid.to_string()));
        }
        assert_eq!(s.len(), MAX_SESSIONS);
    }
}
