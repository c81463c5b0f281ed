//! The words a line must hold for a rule that cuts it first (`strip`: an imported fail2ban
//! filter's time stamp) to make a hit, so that such rules get the literal filter on raw bytes
//! that the city's own rules have, and a line none of them can match is passed over without
//! being decoded, cut or matched.
//!
//! The pattern sees the line without its stamp: the text before the cut joined to the text
//! after it. A word of the pattern lies in one of the two, which are in the line, or across
//! the join, which is not. What the strip pattern allows before the cut (how long, which
//! bytes) says how much of a word can lie before the join; the rest of the word is in the line.
//! A rule whose matches always carry `nofail` (fail2ban's "not a failure", `always_captures`)
//! makes no hit and needs no words. These are only shortcuts: a rule whose words are unknown
//! makes every line of its file be read, never a line missed.

use super::prefix::{self, MIN_LEN};
use regex_syntax::hir::{Class, Hir, HirKind, Look};

/// The words, folded as `prefix::inner_literals` makes them, one of which every line holds on
/// which the rule with `pattern` (a linear pattern: a backtracking rule's relaxed one) and
/// `strip` can match; `None` when no such list is known.
pub fn rule_words(pattern: &str, strip: Option<&str>) -> Option<Vec<Box<[u8]>>> {
    let Some(strip) = strip else {
        return prefix::inner_literals(pattern);
    };
    let before = Before::of(strip);
    prefix::inner_literals_with(pattern, &|literal| before.stand(literal))
}

/// Whether every match of `pattern` (a linear pattern: a backtracking rule's relaxed one,
/// which has the same groups) has a group that fills the field `name` take part: with `nofail`,
/// a rule that never makes a hit.
pub fn always_captures(pattern: &str, name: &str) -> bool {
    regex_syntax::Parser::new()
        .parse(pattern)
        .is_ok_and(|hir| captures_always(&hir, name))
}

fn captures_always(hir: &Hir, name: &str) -> bool {
    match hir.kind() {
        HirKind::Capture(c) => {
            c.name
                .as_deref()
                .is_some_and(|n| super::field_name(n) == name)
                || captures_always(&c.sub, name)
        }
        HirKind::Concat(parts) => parts.iter().any(|p| captures_always(p, name)),
        HirKind::Alternation(branches) => branches.iter().all(|b| captures_always(b, name)),
        HirKind::Repetition(r) => r.min >= 1 && captures_always(&r.sub, name),
        _ => false,
    }
}

/// A set of bytes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct Bytes([u128; 2]);

impl Bytes {
    const NONE: Bytes = Bytes([0, 0]);
    const ALL: Bytes = Bytes([u128::MAX, u128::MAX]);

    fn add(&mut self, b: u8) {
        self.0[usize::from(b >> 7)] |= 1 << (b & 127);
    }

    fn has(&self, b: u8) -> bool {
        self.0[usize::from(b >> 7)] & (1 << (b & 127)) != 0
    }

    fn union(self, other: Bytes) -> Bytes {
        Bytes([self.0[0] | other.0[0], self.0[1] | other.0[1]])
    }

    /// The bytes any match of `hir` can hold.
    fn of(hir: &Hir) -> Bytes {
        let mut set = Bytes::NONE;
        match hir.kind() {
            HirKind::Literal(l) => l.0.iter().for_each(|b| set.add(*b)),
            HirKind::Class(Class::Bytes(c)) => {
                for r in c.ranges() {
                    (r.start()..=r.end()).for_each(|b| set.add(b));
                }
            }
            HirKind::Class(Class::Unicode(c)) => {
                for r in c.ranges() {
                    let (start, end) = (u32::from(r.start()), u32::from(r.end()));
                    (start.min(128)..end.min(127) + 1).for_each(|b| set.add(b as u8));
                    if end >= 128 {
                        // Any byte of a multi-byte character: not worth being exact.
                        set.0[1] = u128::MAX;
                    }
                }
            }
            HirKind::Empty | HirKind::Look(_) => {}
            HirKind::Repetition(r) => set = Bytes::of(&r.sub),
            HirKind::Capture(c) => set = Bytes::of(&c.sub),
            HirKind::Concat(hs) | HirKind::Alternation(hs) => {
                set = hs.iter().fold(set, |s, h| s.union(Bytes::of(h)))
            }
        }
        set
    }
}

/// What the text before a strip pattern's cut can be: the line's text before the first group
/// of the match that took part (or before the match, when none did: then nothing is before it).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct Before {
    /// At most this many bytes (`None`: any number).
    most: Option<usize>,
    /// Only these bytes, ASCII case ignored (the words are folded).
    bytes: Bytes,
}

impl Before {
    const ANY: Before = Before {
        most: None,
        bytes: Bytes::ALL,
    };

    /// What may be before the cut of `strip`. Unknown, and any text, unless every match starts
    /// at the line's start.
    fn of(strip: &str) -> Before {
        let Ok(hir) = regex_syntax::Parser::new().parse(strip) else {
            return Before::ANY;
        };
        if !hir.properties().look_set_prefix().contains(Look::Start) {
            return Before::ANY;
        }
        let Some(mut before) = Before::lead(&hir) else {
            return Before::ANY;
        };
        for b in 0..=255u8 {
            if before.bytes.has(b) {
                before.bytes.add(b.to_ascii_lowercase());
            }
        }
        before
    }

    /// The text from the start of a match of `hir` to the start of its first group that took
    /// part (`None` when `hir` has a shape not followed here). A part without a group that
    /// comes before the group is all before it.
    fn lead(hir: &Hir) -> Option<Before> {
        let nothing = Before {
            most: Some(0),
            bytes: Bytes::NONE,
        };
        if hir.properties().explicit_captures_len() == 0 {
            return Some(nothing);
        }
        let join = |a: Before, b: Before| Before {
            most: a.most.zip(b.most).map(|(x, y)| x.max(y)),
            bytes: a.bytes.union(b.bytes),
        };
        match hir.kind() {
            HirKind::Capture(_) => Some(nothing),
            HirKind::Concat(parts) => {
                // The first group that takes part is in one of the parts with groups; all the
                // parts before that one are whole before it.
                let mut whole = nothing;
                let mut out = nothing;
                for part in parts {
                    if part.properties().explicit_captures_len() > 0 {
                        let lead = Before::lead(part)?;
                        out = join(
                            out,
                            Before {
                                most: whole
                                    .most
                                    .zip(lead.most)
                                    .and_then(|(a, b)| a.checked_add(b)),
                                bytes: whole.bytes.union(lead.bytes),
                            },
                        );
                    }
                    whole = Before {
                        most: whole
                            .most
                            .zip(part.properties().maximum_len())
                            .and_then(|(a, b)| a.checked_add(b)),
                        bytes: whole.bytes.union(Bytes::of(part)),
                    };
                }
                Some(out)
            }
            HirKind::Alternation(branches) => branches
                .iter()
                .filter(|b| b.properties().explicit_captures_len() > 0)
                .try_fold(nothing, |acc, b| Some(join(acc, Before::lead(b)?))),
            HirKind::Repetition(r) => {
                let lead = Before::lead(&r.sub)?;
                // The group may take part first in any repetition: those before are whole.
                let earlier = r.max.and_then(|max| {
                    usize::try_from(max.saturating_sub(1))
                        .ok()?
                        .checked_mul(r.sub.properties().maximum_len()?)
                });
                Some(Before {
                    most: earlier.zip(lead.most).and_then(|(a, b)| a.checked_add(b)),
                    bytes: Bytes::of(&r.sub).union(lead.bytes),
                })
            }
            _ => None,
        }
    }

    /// The words that stand for `literal` (folded) in the line, when the pattern sees it in
    /// the line's text with the cut taken out: if the literal lies across the join, its part
    /// before the join is text before the cut (at most `most` bytes, of `bytes` only), so what
    /// follows the longest such start of it lies after the cut, in the line. Else a literal
    /// across the join has its first or its second half wholly on one side: both halves stand
    /// for it.
    fn stand(&self, literal: &[u8]) -> Option<Vec<Box<[u8]>>> {
        let only = literal.iter().take_while(|b| self.bytes.has(**b)).count();
        let skip = self.most.map_or(only, |most| most.min(only));
        if skip < literal.len() && literal.len() - skip >= MIN_LEN {
            return Some(vec![literal[skip..].into()]);
        }
        let n = literal.len();
        let (first, second) = (&literal[..n.div_ceil(2)], &literal[n / 2..]);
        (second.len() >= MIN_LEN).then(|| vec![first.into(), second.into()])
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn words(pattern: &str, strip: Option<&str>) -> Option<Vec<String>> {
        rule_words(pattern, strip).map(|ws| {
            ws.iter()
                .map(|w| String::from_utf8_lossy(w).into_owned())
                .collect()
        })
    }

    /// fail2ban's `{^LN-BEG}`: up to two non-word characters, then the stamp.
    const LN_BEG: &str = r"^(?:[^0-9A-Za-z_]{0,2})?([A-Z][a-z]{2} [ 0-9]?[0-9] [0-9:]{8})";

    #[test]
    fn what_may_precede_the_cut() {
        let ln_beg = Before::of(LN_BEG);
        assert_eq!(ln_beg.most, Some(8), "two characters of up to 4 bytes");
        assert!(ln_beg.bytes.has(b'['));
        assert!(!ln_beg.bytes.has(b'a') && !ln_beg.bytes.has(b'0'));
        assert_eq!(Before::of(r"([A-Z][a-z]{2} [0-9:]{8})"), Before::ANY);
        assert_eq!(Before::of(r"^[^\[]*\[([0-9:]{8})").most, None);
        assert_eq!(Before::of(r"^([0-9:]{8})").most, Some(0));
        assert_eq!(Before::of(r"^x([0-9:]{8})|^(@[0-9a-f]{24})").most, Some(1));
        assert_eq!(Before::of(r"^(?:ab)?(?:(x)|y){0,3}z").most, Some(4));
        assert_eq!(
            Before::of(r"^T=[0-9]+").most,
            Some(0),
            "no group: the whole match"
        );
    }

    #[test]
    fn words_of_a_cut_line() {
        // Starting with a letter, the word cannot begin before the stamp: kept whole.
        assert_eq!(
            words(
                r"^ \S+ sshd: Failed password for (?P<ip>\S+)$",
                Some(LN_BEG)
            ),
            Some(vec!["sshd: failed password for ".to_string()])
        );
        // Starting with what may precede the stamp: its first bytes may be there.
        assert_eq!(
            words(r"^\[\] \[error\] client (?P<ip>\S+)$", Some(LN_BEG)),
            Some(vec!["error] client ".to_string()]),
        );
        assert_eq!(
            words(
                r"^\[\]:: \[error\] (?P<ip>\S+)$",
                Some(r"^(?:[^0-9A-Za-z_]{0,2})?(\d+)")
            ),
            Some(vec!["error] ".to_string()]),
            "what may precede the stamp is skipped",
        );
        // Anywhere in the line: both halves of the word.
        assert_eq!(
            words(
                r"^(?P<ip>\S+) - authentication failed$",
                Some(r"(\d\d:\d\d)")
            ),
            Some(vec!["- authentica".to_string(), "ation failed".to_string()])
        );
        assert_eq!(
            words(r"^(?P<ip>\S+) ok", Some(r"(\d\d)")),
            None,
            "halves too short"
        );
    }

    #[test]
    fn rules_whose_every_match_is_no_failure() {
        assert!(always_captures(
            r"^(?:(?P<nofail>Accepted)|(?P<nofail__2>Connection from)) (?P<ip>\S+)$",
            "nofail"
        ));
        assert!(always_captures(r"^x(?:(?P<nofail>a)b)+$", "nofail"));
        assert!(!always_captures(
            r"^Failed (?:(?P<nofail>publickey)|\S+) for (?P<ip>\S+)$",
            "nofail"
        ));
        assert!(!always_captures(r"^(?P<nofail>a)?b$", "nofail"));
        assert!(!always_captures(r"^(?P<nofailure>a)b$", "nofail"));
        assert!(!always_captures(r"(", "nofail"), "unknown: may hit");
    }

    /// Whatever the stamp is cut from and wherever, a line the rule matches after the cut
    /// holds one of the words: checked on every split of matching texts.
    #[test]
    fn a_line_whose_cut_text_matches_holds_a_word() {
        let pattern = r"^\[\] (?:Failed|Invalid) (?:password|user) from (?P<ip>\S+)$";
        let regex = regex::Regex::new(pattern).expect("pattern");
        for (strip, stamp) in [
            (LN_BEG, "Nov  3 10:00:00"),
            (r"^[^\[]*\[?(\d\d:\d\d)", "10:00"),
            (r"(\d\d:\d\d)", "10:00"),
        ] {
            let cut = regex::Regex::new(strip).expect("strip");
            let ws = rule_words(pattern, Some(strip)).expect("words");
            let filter = prefix::line_filter([Some(&ws[..])], true).expect("filter");
            for text in [
                "[] Failed password from 1.2.3.4",
                "[] Invalid user from ::1",
            ] {
                assert!(regex.is_match(text));
                for at in 0..=text.len() {
                    let line = format!("{}{stamp}{}", &text[..at], &text[at..]);
                    let Some(caps) = cut.captures(&line) else {
                        continue;
                    };
                    let m = caps.iter().skip(1).flatten().next().expect("group");
                    let seen = format!("{}{}", &line[..m.start()], &line[m.end()..]);
                    if regex.is_match(&seen) {
                        assert!(filter.is_match(&line), "{strip}: {line} ({ws:?})");
                    }
                }
            }
        }
    }
}
