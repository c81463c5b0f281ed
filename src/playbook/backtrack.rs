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

    /// A linear-time pattern that matches every line this one matches (and more): look-around
    /// dropped, backreferences (`\k<name>`, `\1`, `(?P=name)`) as `.*?`, conditionals and atomic groups as plain groups. Lines
    /// it does not match are passed over without backtracking. `None` when it cannot be made.
    pub fn relaxed(&self) -> Option<String> {
        let p = self.regex.as_str();
        let b = p.as_bytes();
        let mut out = String::with_capacity(p.len());
        let mut i = 0;
        let mut in_class = false;
        // Whether the last thing written is a quantifier (so a `+` after it is possessive).
        let mut quantified = false;
        while i < b.len() {
            let rest = &p[i..];
            let was_quantified = std::mem::replace(&mut quantified, false);
            if b[i] == b'\\' {
                let next = rest[1..].chars().next()?;
                if !in_class && next == 'k' && rest[2..].starts_with('<') {
                    let close = rest.find('>')?;
                    out.push_str("(?:.*?)");
                    i += close + 1;
                } else if !in_class && next.is_ascii_digit() && next != '0' {
                    let digits = rest[1..].bytes().take_while(u8::is_ascii_digit).count();
                    out.push_str("(?:.*?)");
                    i += 1 + digits;
                } else {
                    out.push('\\');
                    out.push(next);
                    i += 1 + next.len_utf8();
                }
                continue;
            }
            if in_class {
                in_class = b[i] != b']';
                out.push(b[i] as char);
                i += 1;
                continue;
            }
            match b[i] {
                b'[' => {
                    in_class = true;
                    out.push('[');
                    i += 1;
                    // A `]` first in a class is a literal.
                    for lead in ["^]", "]", "^"] {
                        if p[i..].starts_with(lead) {
                            out.push_str(lead);
                            i += lead.len();
                            break;
                        }
                    }
                }
                b'(' if ["(?=", "(?!", "(?<=", "(?<!"]
                    .iter()
                    .any(|l| rest.starts_with(l)) =>
                {
                    i += group_len(rest)?;
                }
                b'(' if rest.starts_with("(?P=") => {
                    let close = rest.find(')')?;
                    out.push_str("(?:.*?)");
                    i += close + 1;
                }
                b'(' if rest.starts_with("(?(") => {
                    let close = rest[3..].find(')')?;
                    out.push_str("(?:");
                    i += 3 + close + 1;
                }
                b'(' if rest.starts_with("(?>") => {
                    out.push_str("(?:");
                    i += 3;
                }
                b'+' if was_quantified => i += 1,
                c if c.is_ascii() => {
                    quantified = matches!(c, b'*' | b'+' | b'?' | b'}');
                    out.push(c as char);
                    i += 1;
                }
                _ => {
                    let c = rest.chars().next()?;
                    out.push(c);
                    i += c.len_utf8();
                }
            }
        }
        Some(out)
    }

    /// Lines on which the step limit was reached so far.
    pub fn exceeded(&self) -> u64 {
        self.state.exceeded.load(Ordering::Relaxed)
    }
}

/// The length of the group that opens `s` (to its matching `)`), in bytes (Rust syntax).
pub(crate) fn group_len(s: &str) -> Option<usize> {
    let b = s.as_bytes();
    let (mut depth, mut i, mut in_class) = (0usize, 0usize, false);
    while i < b.len() {
        match b[i] {
            b'\\' => i += 1,
            b'[' if !in_class => in_class = true,
            b']' if in_class => in_class = false,
            b'(' if !in_class => depth += 1,
            b')' if !in_class => {
                depth = depth.checked_sub(1)?;
                if depth == 0 {
                    return Some(i + 1);
                }
            }
            _ => {}
        }
        i += 1;
    }
    None
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_relaxed_pattern_matches_at_least_what_the_pattern_matches() -> Result<(), String> {
        let b = Backtrack::new(
            r"^(?P<c>x )?Failed (?!publickey)(?P<u>\S+)(?(c) a| b) \k<u> [(?=]+ (?<= )(?>y)z++(?P=c)?$",
            1 << 20,
        )?;
        let relaxed = b.relaxed().ok_or("no relaxed pattern")?;
        let linear = regex::Regex::new(&relaxed).map_err(|e| format!("{relaxed}: {e}"))?;
        for line in [
            "x Failed bob a bob (= yz",
            "Failed bob b bob = yzz",
            "Failed publickey b publickey ( yz",
        ] {
            assert!(linear.is_match(line), "{relaxed} on {line}");
        }
        assert!(b.captures("Failed bob b bob = yzz").is_some());
        assert!(!linear.is_match("Accepted bob b bob = yz"));
        Ok(())
    }

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
