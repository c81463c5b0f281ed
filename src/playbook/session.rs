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

/// Sessions kept at once, per source (a log file, a journal source).
pub const MAX_SESSIONS: usize = 4_096;
/// Hits waiting for their address, per session.
pub const MAX_WAITING: usize = 8;

/// A session's identity: host, program, pid.
pub(super) type SessionId = (Box<str>, Box<str>, Box<str>);

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
}

impl Sessions {
    /// The session `id`, created if new (forgetting the least recently created when full).
    pub(super) fn get(&mut self, id: SessionId) -> &mut Session {
        if !self.map.contains_key(&id) {
            while self.map.len() >= MAX_SESSIONS {
                match self.order.pop_front() {
                    Some(old) => {
                        self.map.remove(&old);
                    }
                    None => break,
                }
            }
            self.order.push_back(id.clone());
        }
        self.map.entry(id).or_default()
    }

    /// How many sessions are kept.
    pub fn len(&self) -> usize {
        self.map.len()
    }

    /// Whether none is kept.
    pub fn is_empty(&self) -> bool {
        self.map.is_empty()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sessions_are_bounded() {
        let mut s = Sessions::default();
        for pid in 0..(MAX_SESSIONS + 10) {
            s.get(("h".into(), "sshd".into(), pid.to_string().into()));
        }
        assert_eq!(s.len(), MAX_SESSIONS);
    }
}
