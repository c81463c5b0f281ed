//! The bounded backtracking engine for the few patterns the linear-time `regex` cannot run:
//! look-around, backreferences and conditionals, as imported fail2ban filters use them
//! (`engine = "backtrack"` on a rule).
//!
//! A backtracking engine can take exponential time on a crafted line. Each search here stops
//! after `STEP_LIMIT` backtracking steps: the line is then no match, the rule's counter goes up
//! and the first time it happens a warning names the rule. It never stalls the reader. Patterns
//! that the `regex` crate accepts never come here.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};

/// Backtracking steps one search of one line may take. Real fail2ban patterns need a few hundred
/// on a real line; a pattern that needs more on a line of at most `MAX_LINE` bytes is being
/// blown up by the line.
pub const STEP_LIMIT: usize = 100_000;

/// A compiled backtracking pattern and how often it gave up.
#[derive(Debug, Clone)]
pub struct Backtrack {
    regex: fancy_regex::Regex,
    state: Arc<State>,
}

#[derive(Debug, Default)]
struct State {
    /// Lines on which the step limit was reached (each counted as no match).
    exceeded: AtomicU64,
    warned: AtomicBool,
    /// `playbook/rule`, for the warning.
    what: std::sync::OnceLock<String>,
}

impl Backtrack {
    /// Compiles `pattern` with the step limit; the error text says what is wrong.
    pub fn new(pattern: &str, size_limit: usize) -> Result<Backtrack, String> {
        let regex = fancy_regex::RegexBuilder::new(pattern)
            .backtrack_limit(STEP_LIMIT)
            .delegate_size_limit(size_limit)
            .build()
            .map_err(|e| e.to_string())?;
        Ok(Backtrack {
            regex,
            state: Arc::default(),
        })
    }

    /// Names the rule in the warning of its first exceeded limit (`playbook/rule`).
    pub fn name(&self, what: String) {
        let _ = self.state.what.set(what);
    }

    /// The pattern as written.
    pub fn as_str(&self) -> &str {
        self.regex.as_str()
    }

    /// The names of the capture groups, in order (`None` for unnamed ones).
    pub fn capture_names(&self) -> impl Iterator<Item = Option<&str>> {
        self.regex.capture_names()
    }

    /// The captures of the first match in `haystack`; `None` for no match, and for a search
    /// that reached the step limit (counted, and warned about once).
    pub fn captures<'h>(&self, haystack: &'h str) -> Option<fancy_regex::Captures<'h, str>> {
        match self.regex.captures(haystack) {
            Ok(found) => found,
            Err(e) => {
                self.state.exceeded.fetch_add(1, Ordering::Relaxed);
                if !self.state.warned.swap(true, Ordering::Relaxed) {
                    let what = self.state.what.get().map_or("?", String::as_str);
                    tracing::warn!(
                        rule = what,
                        limit = STEP_LIMIT,
                        "a backtracking pattern gave up on a line ({e}); such lines count as no match (shown once per rule, counted in `csirt playbooks test`)"
                    );
                }
                None
            }
        }
    }

    /// Lines on which the step limit was reached so far.
    pub fn exceeded(&self) -> u64 {
        self.state.exceeded.load(Ordering::Relaxed)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn look_around_and_backreferences_match() -> Result<(), String> {
        let b = Backtrack::new(
            r"^(?P<q>['\x22])(?P<user>(?:(?!(?P=q)).)*)(?P=q) from (?P<ip>\S+)$",
            1 << 20,
        )?;
        let caps = b.captures("'bob' from 192.0.2.1").ok_or("no match")?;
        assert_eq!(&caps["user"], "bob");
        assert_eq!(&caps["ip"], "192.0.2.1");
        assert!(b.captures("'bob\" from 192.0.2.1").is_none());
        assert_eq!(b.exceeded(), 0);
        Ok(())
    }

    #[test]
    fn a_line_crafted_to_blow_up_backtracking_is_no_match_and_counted() -> Result<(), String> {
        // (a|a)* with a backreference after it forces the backtracking VM, and the failing tail
        // makes it try every way of splitting the a's: 2^n without a limit.
        let b = Backtrack::new(r"^(?P<x>a|a)*(?P=x)b$", 1 << 20)?;
        b.name("test/blowup".into());
        let line = "a".repeat(64);
        assert!(b.captures(&line).is_none());
        assert_eq!(b.exceeded(), 1);
        assert!(b.captures(&line).is_none());
        assert_eq!(b.exceeded(), 2);
        Ok(())
    }
}
