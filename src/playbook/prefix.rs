//! The literal text a program rule's message must start with, read from its pattern.
//!
//! Program rules are anchored at the message's start (`playbooks check` proves it), and almost
//! all of them begin with fixed words (`Failed `, `Invalid user `, `warning: `). Those words
//! decide, before any regular expression runs, which rules can match a message: a message is
//! looked at by the rules whose words it starts with, and a line in which none of the words of
//! its file's rules occurs anywhere is not even parsed for its structure. Most lines of a busy
//! auth.log (session opened, cron, sudo) are dropped that way for the cost of one literal
//! search. A rule whose start is not a short list of words (`^(?P<user>\S+) …`) is simply
//! always tried: the literals are a shortcut, never a second definition of what matches.

use aho_corasick::{AhoCorasick, MatchKind};
use regex_syntax::hir::literal::{ExtractKind, Extractor};

/// Literals shorter than this say too little (`e` starts half the messages): a rule whose
/// pattern can start with one is always tried.
const MIN_LEN: usize = 3;

/// The literals one of which starts every match of `pattern` (a rule anchored at the message's
/// start), or `None` when they are unknown, unbounded or too short to be worth testing.
pub fn prefixes(pattern: &str) -> Option<Vec<Box<[u8]>>> {
    let hir = regex_syntax::Parser::new().parse(pattern).ok()?;
    let mut extractor = Extractor::new();
    extractor.kind(ExtractKind::Prefix);
    let seq = extractor.extract(&hir);
    let literals = seq.literals()?;
    // An empty, finite sequence: the pattern matches nothing. Never dispatch on that.
    if literals.is_empty() || literals.iter().any(|l| l.as_bytes().len() < MIN_LEN) {
        return None;
    }
    Some(literals.iter().map(|l| l.as_bytes().into()).collect())
}

/// Which rules of one selection can match a message, by the literals it starts with.
#[derive(Debug, Default)]
pub struct Dispatch {
    /// Rules (by the caller's index) without literals: tried on every message.
    always: Vec<usize>,
    /// For each first byte, the rules and literals that start with it.
    by_first: Vec<Vec<(usize, Box<[u8]>)>>,
}

impl Dispatch {
    /// A dispatch over `rules`: each rule's index and its literals (`None`: always tried).
    pub fn new<'a>(rules: impl IntoIterator<Item = (usize, Option<&'a [Box<[u8]>]>)>) -> Dispatch {
        let mut dispatch = Dispatch {
            always: Vec::new(),
            by_first: vec![Vec::new(); 256],
        };
        for (rule, literals) in rules {
            match literals {
                None => dispatch.always.push(rule),
                Some(literals) => {
                    for literal in literals {
                        if let Some(first) = literal.first() {
                            dispatch.by_first[usize::from(*first)].push((rule, literal.clone()));
                        }
                    }
                }
            }
        }
        dispatch
    }

    /// The rules that can match `message`: those always tried, then those with a literal it
    /// starts with. A rule may come more than once (two of its literals start the message).
    pub fn candidates<'s>(&'s self, message: &'s str) -> impl Iterator<Item = usize> + 's {
        let bytes = message.as_bytes();
        let by_literal = bytes
            .first()
            .map(|first| &self.by_first[usize::from(*first)][..])
            .unwrap_or_default();
        self.always.iter().copied().chain(
            by_literal
                .iter()
                .filter(move |(_, literal)| bytes.starts_with(literal))
                .map(|(rule, _)| *rule),
        )
    }
}

/// How much of each literal the line filter looks for: long enough that a word common to
/// many lines of other programs (`pam_u`) is not all a rule has, short enough that the
/// variants of one rule collapse (`error: Failed p…`) and the searcher stays vectorised
/// (measured on the generator's auth.log with the city's set: 5 bytes 585 M instructions,
/// 12 bytes 488 M, 16 bytes 516 M, whole literals 848 M).
const FILTER_LEN: usize = 12;

fn contains(haystack: &[u8], needle: &[u8]) -> bool {
    haystack.windows(needle.len()).any(|w| w == needle)
}

/// A search for any of the literals of a selection's rules in a whole line (or a run of lines):
/// a line without any cannot match one of those rules.
#[derive(Debug)]
pub struct LineFilter {
    searcher: AhoCorasick,
    /// Every literal is ASCII: an ASCII word of the decoded text is the same bytes in the file,
    /// in UTF-8 (lossy) and Shift_JIS alike, so the raw bytes can be searched before decoding.
    ascii: bool,
}

impl LineFilter {
    /// Whether `line` holds one of the literals.
    pub fn is_match(&self, line: &str) -> bool {
        self.searcher.is_match(line)
    }

    /// Where the first literal in `haystack` starts.
    pub fn find_in(&self, haystack: &[u8]) -> Option<usize> {
        self.searcher.find(haystack).map(|m| m.start())
    }

    pub fn ascii(&self) -> bool {
        self.ascii
    }
}

/// The filter for rules with these literals; `None` when some rule has none (every line must be
/// looked at).
pub fn line_filter<'a>(
    literals: impl IntoIterator<Item = Option<&'a [Box<[u8]>]>>,
) -> Option<LineFilter> {
    let mut whole: Vec<&[u8]> = Vec::new();
    for rule in literals {
        whole.extend(rule?.iter().map(|l| &l[..]));
    }
    // A line that holds a literal holds any part of it: a literal that contains another
    // (`error: Failed password for ` holds `Failed password for `) adds nothing, and a literal's
    // first bytes are as good a filter as all of it. Fewer, shorter words keep the searcher on
    // its fastest (vectorised, at most 32 words) path.
    let mut all: Vec<&[u8]> = whole
        .iter()
        .filter(|l| {
            !whole
                .iter()
                .any(|other| other.len() < l.len() && contains(l, other))
        })
        .map(|l| &l[..l.len().min(FILTER_LEN)])
        .collect();
    // Sorted, a literal that another starts with comes right after it, and is redundant: a
    // line holding it holds the shorter one.
    all.sort_unstable();
    all.dedup_by(|later, kept| later.starts_with(kept));
    if all.is_empty() {
        return None;
    }
    let ascii = all.iter().all(|l| l.is_ascii());
    // Only whether one occurs matters: leftmost-first lets the searcher stop at the first.
    let searcher = AhoCorasick::builder()
        .match_kind(MatchKind::LeftmostFirst)
        .build(all)
        .ok()?;
    Some(LineFilter { searcher, ascii })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn strings(pattern: &str) -> Option<Vec<String>> {
        prefixes(pattern).map(|ls| {
            let mut v: Vec<String> = ls
                .iter()
                .map(|l| String::from_utf8_lossy(l).into_owned())
                .collect();
            v.sort();
            v
        })
    }

    #[test]
    fn fixed_words_at_the_start_are_the_literals() {
        assert_eq!(
            strings(r"^(?:error: )?Failed (?:password|none) for (?P<user>.*) from \S+$"),
            Some(vec![
                "Failed none for ".to_string(),
                "Failed password for ".to_string(),
                "error: Failed none for ".to_string(),
                "error: Failed password for ".to_string(),
            ])
        );
        let upper_or_lower = strings(r"^[iI]nvalid user (?P<user>.*) from").expect("literals");
        assert!(upper_or_lower.contains(&"Invalid user ".to_string()));
        assert!(upper_or_lower.contains(&"invalid user ".to_string()));
    }

    #[test]
    fn patterns_without_a_fixed_start_are_always_tried() {
        assert_eq!(strings(r"^(?P<user>\S+) from (?P<ip>\S+)$"), None);
        assert_eq!(strings(r"^.*Failed"), None);
        assert_eq!(strings(r"^(?:a|Failed )x"), None, "too short");
        assert_eq!(strings(r"^[^\s\S]"), None, "matches nothing");
        assert_eq!(
            strings(r"^(?i)failed password"),
            strings(r"^(?i)failed password")
        );
    }

    #[test]
    fn dispatch_finds_the_rules_a_message_can_match() {
        let failed = prefixes(r"^(?:Failed |Failed password)").expect("literals");
        let invalid = prefixes(r"^Invalid user ").expect("literals");
        let d = Dispatch::new([(0, Some(&failed[..])), (1, None), (2, Some(&invalid[..]))]);
        let found = |message: &str| {
            let mut v: Vec<usize> = d.candidates(message).collect();
            v.sort_unstable();
            v.dedup();
            v
        };
        assert_eq!(found("Failed password for root"), [0, 1]);
        assert_eq!(found("Invalid user x from 192.0.2.1"), [1, 2]);
        assert_eq!(found(""), [1]);
        assert_eq!(found("session opened"), [1]);
    }

    #[test]
    fn the_line_filter_needs_every_rule_to_have_literals() {
        let failed = prefixes(r"^Failed password ").expect("literals");
        let filter = line_filter([Some(&failed[..])]).expect("filter");
        assert!(filter.is_match("Nov  3 gw sshd[1]: Failed password for x"));
        assert!(!filter.is_match("Nov  3 gw sshd[1]: session opened for x"));
        assert_eq!(filter.find_in(b"a\nb Failed password"), Some(4));
        assert!(filter.ascii());
        assert!(line_filter([Some(&failed[..]), None]).is_none());
        // A word that is not ASCII has other bytes in Shift_JIS than in the decoded text: such a
        // filter may search decoded lines only, never a file's raw bytes.
        let japanese = prefixes("^認証失敗: ").expect("literals");
        assert!(!line_filter([Some(&japanese[..])]).expect("filter").ascii());
    }
}
