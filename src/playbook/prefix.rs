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

use std::cmp::Reverse;

use aho_corasick::{AhoCorasick, MatchKind};
use regex_syntax::hir::literal::{ExtractKind, Extractor};
use regex_syntax::hir::{Hir, HirKind};

/// Literals shorter than this say too little (`e` starts half the messages): a rule whose
/// pattern can start with one is always tried.
pub(crate) const MIN_LEN: usize = 3;

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

/// Literals one of which occurs somewhere in every match of a whole-line rule's `pattern`
/// (an access-log rule is anchored at the line's start, where the client's address is, so its
/// first words say nothing), ASCII-lowercased for a filter that ignores ASCII case; `None` when
/// no such list is known.
///
/// A pattern holds several such lists (the log format's ` HTTP/`, the attack's `../` or
/// `union`); the one kept is an alternation of words if there is one (what the rule looks for:
/// the format's fixed text is in every line of the file), else the longest word. Each literal
/// is cut at its first byte that is not ASCII (`(?i)k` also matches the Kelvin sign, whose
/// bytes differ between encodings): a line holding the literal holds its start.
pub fn inner_literals(pattern: &str) -> Option<Vec<Box<[u8]>>> {
    inner_literals_with(pattern, &|literal| Some(vec![literal.into()]))
}

/// What a line must hold for one literal of a pattern (folded, as `inner_literals` makes it)
/// to occur in the text the pattern sees: the literal itself, or words that stand for it
/// (`None`: nothing short of every line).
pub type Stand<'a> = &'a dyn Fn(&[u8]) -> Option<Vec<Box<[u8]>>>;

/// `inner_literals`, each literal replaced by the words `stand` gives for it before the lists
/// are compared, for a pattern that sees a changed line (an imported rule's line without its
/// time stamp: `cut`).
pub fn inner_literals_with(pattern: &str, stand: Stand<'_>) -> Option<Vec<Box<[u8]>>> {
    let hir = regex_syntax::Parser::new().parse(pattern).ok()?;
    let mut found = Vec::new();
    required(&hir, 0, stand, &mut found);
    if let Some(set) = folded_prefixes(&hir, stand) {
        found.push(set);
    }
    found.into_iter().max_by_key(|set| preference(set))
}

/// Which list of required literals filters best, without a sample of the file: an alternation
/// of words first, then the longest shortest word, then the fewest words.
fn preference(set: &[Box<[u8]>]) -> (bool, usize, Reverse<usize>) {
    let shortest = set.iter().map(|l| l.len()).min().unwrap_or(0);
    (set.len() > 1, shortest.min(FILTER_LEN), Reverse(set.len()))
}

/// The literals every match of `hir` starts with, folded as `inner_literals` says, each
/// replaced by what `stand` gives for it.
fn folded_prefixes(hir: &Hir, stand: Stand<'_>) -> Option<Vec<Box<[u8]>>> {
    let mut extractor = Extractor::new();
    extractor.kind(ExtractKind::Prefix);
    let seq = extractor.extract(hir);
    let literals = seq.literals()?;
    if literals.is_empty() {
        return None;
    }
    let mut set = Vec::with_capacity(literals.len());
    for literal in literals {
        let bytes = literal.as_bytes();
        let ascii = bytes
            .iter()
            .position(|b| !b.is_ascii())
            .unwrap_or(bytes.len());
        // A separator that starts most tokens of any line (` /wp-login` after `GET`) makes
        // the searcher stop at every token: the rest of the word is as good and rarer.
        let mut start = 0;
        while start < ascii && ascii - start > MIN_LEN && COMMON_LEAD.contains(&bytes[start]) {
            start += 1;
        }
        if ascii - start < MIN_LEN {
            return None;
        }
        set.extend(stand(&bytes[start..ascii].to_ascii_lowercase())?);
    }
    set.sort_unstable();
    set.dedup();
    Some(set)
}

/// Bytes dropped from the start of an inner literal: separators found before most tokens.
const COMMON_LEAD: &[u8] = b" /\"=?&:[(";

/// Parts of a concatenation tried as the start of a required list: enough for any rule a
/// person writes, a bound for a generated one.
const MAX_PARTS: usize = 64;

/// Every list of literals found in `hir` one of which any match of it must hold: the start of
/// each tail of a concatenation, what a group or a repetition of at least one requires, and
/// for an alternation the union of what each branch requires.
fn required(hir: &Hir, depth: usize, stand: Stand<'_>, out: &mut Vec<Vec<Box<[u8]>>>) {
    if depth > 16 {
        return;
    }
    match hir.kind() {
        HirKind::Capture(capture) => required(&capture.sub, depth + 1, stand, out),
        HirKind::Repetition(repetition) if repetition.min >= 1 => {
            required(&repetition.sub, depth + 1, stand, out)
        }
        HirKind::Concat(parts) => {
            for (i, part) in parts.iter().enumerate().take(MAX_PARTS) {
                if let Some(set) = folded_prefixes(&Hir::concat(parts[i..].to_vec()), stand) {
                    out.push(set);
                }
                required(part, depth + 1, stand, out);
            }
        }
        HirKind::Alternation(branches) => {
            let mut union: Vec<Box<[u8]>> = Vec::new();
            for branch in branches {
                let mut sets = Vec::new();
                required(branch, depth + 1, stand, &mut sets);
                if let Some(set) = folded_prefixes(branch, stand) {
                    sets.push(set);
                }
                let Some(best) = sets.into_iter().max_by_key(|set| preference(set)) else {
                    return;
                };
                union.extend(best);
            }
            union.sort_unstable();
            union.dedup();
            if !union.is_empty() {
                out.push(union);
            }
        }
        _ => {}
    }
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

/// How much of each literal a case-ignoring filter looks for. Its words come from alternations
/// that a rule spells out in full (`union+select`, `union%20select`, `union/**/select`): cut
/// short they collapse into one (`unio`), and the city's web rules fit the searcher's fastest
/// path (at most 32 words; measured on 200,000 access-log lines: 257 M instructions with 12
/// bytes, fat Teddy, against the figure in the README with 4).
const FOLD_FILTER_LEN: usize = 12;

/// The most words the searcher keeps on a vectorised (Teddy) path.
const FAST_WORDS: usize = 64;

/// How much text a case-ignoring filter lowercases at a time.
const FOLD_WINDOW: usize = 4096;

thread_local! {
    /// The lowercased window of a case-ignoring search (one per thread, reused).
    static FOLDED: std::cell::RefCell<Vec<u8>> = const { std::cell::RefCell::new(Vec::new()) };
}

fn contains(haystack: &[u8], needle: &[u8]) -> bool {
    haystack.windows(needle.len()).any(|w| w == needle)
}

/// A search for any of the literals of a selection's rules in a whole line (or a run of lines):
/// a line without any cannot match one of those rules.
#[derive(Debug)]
pub struct LineFilter {
    searcher: AhoCorasick,
    /// ASCII case is ignored: the literals are lowercase, and the text is lowercased (a window at
    /// a time) before it is searched. The searcher's own case-insensitive mode has no
    /// vectorised path: measured on 200,000 access-log lines, 3,200 instructions a line against
    /// a few hundred this way.
    fold: bool,
    /// Every literal is ASCII: an ASCII word of the decoded text is the same bytes in the file,
    /// in UTF-8 (lossy) and Shift_JIS alike, so the raw bytes can be searched before decoding.
    ascii: bool,
}

impl LineFilter {
    /// Whether `line` holds one of the literals.
    pub fn is_match(&self, line: &str) -> bool {
        if self.fold {
            self.find_in(line.as_bytes()).is_some()
        } else {
            self.searcher.is_match(line)
        }
    }

    /// Where the first literal in `haystack` starts.
    pub fn find_in(&self, haystack: &[u8]) -> Option<usize> {
        if !self.fold {
            return self.searcher.find(haystack).map(|m| m.start());
        }
        FOLDED.with(|folded| {
            let mut folded = folded.borrow_mut();
            let mut start = 0;
            while start < haystack.len() {
                // A literal starting in the window ends within FOLD_FILTER_LEN bytes after it (a
                // case-ignoring filter's words are cut to that), so the first found is the
                // leftmost; each call lowercases at most a window past it.
                let end = (start + FOLD_WINDOW).min(haystack.len());
                let past = (end + FOLD_FILTER_LEN).min(haystack.len());
                folded.clear();
                folded.extend_from_slice(&haystack[start..past]);
                folded.make_ascii_lowercase();
                if let Some(m) = self.searcher.find(&folded[..]) {
                    return Some(start + m.start());
                }
                start = end;
            }
            None
        })
    }

    pub fn ascii(&self) -> bool {
        self.ascii
    }
}

/// The filter for rules with these literals; `None` when some rule has none (every line must be
/// looked at). With `fold`, ASCII case is ignored: the literals are lowercased, and a line
/// matches whatever the case of its letters.
pub fn line_filter<'a>(
    literals: impl IntoIterator<Item = Option<&'a [Box<[u8]>]>>,
    fold: bool,
) -> Option<LineFilter> {
    let mut folded: Vec<Vec<u8>> = Vec::new();
    let mut whole: Vec<&[u8]> = Vec::new();
    for rule in literals {
        let rule = rule?;
        if fold {
            folded.extend(rule.iter().map(|l| l.to_ascii_lowercase()));
        } else {
            whole.extend(rule.iter().map(|l| &l[..]));
        }
    }
    if fold {
        whole.extend(folded.iter().map(|l| &l[..]));
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
        .map(|l| &l[..l.len().min(if fold { FOLD_FILTER_LEN } else { FILTER_LEN })])
        .collect();
    // Sorted, a literal that another starts with comes right after it, and is redundant: a
    // line holding it holds the shorter one.
    all.sort_unstable();
    all.dedup_by(|later, kept| later.starts_with(kept));
    // Beyond 64 words the searcher has no vectorised path at all: the two words with the
    // longest common start become that start (`%27or%20` and `%27or+` become `%27or`), which
    // any line holding either holds, until they fit or no two share MIN_LEN bytes. (Merging
    // down to 32, the slim path, was slower on access logs: short words of letters match
    // everywhere.)
    while all.len() > FAST_WORDS {
        let shared = |i: usize| {
            let (a, b) = (all[i], all[i + 1]);
            a.iter().zip(b).take_while(|(x, y)| x == y).count()
        };
        let Some((at, len)) = (0..all.len() - 1)
            .map(|i| (i, shared(i)))
            .max_by_key(|(i, len)| (*len, Reverse(*i)))
            .filter(|(_, len)| *len >= MIN_LEN)
        else {
            break;
        };
        all[at] = &all[at][..len];
        all.remove(at + 1);
        all.dedup_by(|later, kept| later.starts_with(kept));
    }
    if all.is_empty() {
        return None;
    }
    let ascii = all.iter().all(|l| l.is_ascii());
    // Only whether one occurs matters: leftmost-first lets the searcher stop at the first.
    let searcher = AhoCorasick::builder()
        .match_kind(MatchKind::LeftmostFirst)
        .build(all)
        .ok()?;
    Some(LineFilter {
        searcher,
        fold,
        ascii,
    })
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
        let filter = line_filter([Some(&failed[..])], false).expect("filter");
        assert!(filter.is_match("Nov  3 gw sshd[1]: Failed password for x"));
        assert!(!filter.is_match("Nov  3 gw sshd[1]: session opened for x"));
        assert_eq!(filter.find_in(b"a\nb Failed password"), Some(4));
        assert!(filter.ascii());
        assert!(line_filter([Some(&failed[..]), None], false).is_none());
        // A word that is not ASCII has other bytes in Shift_JIS than in the decoded text: such a
        // filter may search decoded lines only, never a file's raw bytes.
        let japanese = prefixes("^認証失敗: ").expect("literals");
        assert!(
            !line_filter([Some(&japanese[..])], false)
                .expect("filter")
                .ascii()
        );
    }

    fn inner(pattern: &str) -> Option<Vec<String>> {
        inner_literals(pattern).map(|ls| {
            ls.iter()
                .map(|l| String::from_utf8_lossy(l).into_owned())
                .collect()
        })
    }

    const ACCESS: &str =
        r#"^(?P<ip>[0-9A-Fa-f:.]+) \S+ \S+ \[[^\]]+\] "[A-Z]{3,7} (?P<path>[^" ]*"#;

    #[test]
    fn a_whole_line_rule_is_filtered_by_what_it_looks_for_not_by_the_format() {
        let traversal = format!(
            r#"{ACCESS}(?:\.\./|\.\.%2[fF]|%2[eE]%2[eE]|%252[eE]|\.\.\\)[^" ]*) HTTP/[0-9.]+" (?P<status>\d{{3}})"#
        );
        let words = inner(&traversal).expect("literals");
        assert!(words.contains(&"../".to_string()), "{words:?}");
        assert!(words.contains(&"%2e%2e".to_string()), "{words:?}");
        assert!(!words.iter().any(|w| w.contains("http")), "{words:?}");
        // Without an alternation, the longest fixed word.
        let error = inner(r"^\d+ \[error\] \d+ x: (?P<ip>\S+)$").expect("literals");
        assert_eq!(error, ["error] "], "the separators before it dropped");
        assert_eq!(inner(r"^(?P<ip>\S+) .*$"), None);
        assert_eq!(inner(r"^(?P<ip>\S+)(?:a|bc)"), None, "too short");
    }

    /// Every line a pattern matches holds one of its filter's words, whatever the case and
    /// however a case-insensitive letter is written.
    #[test]
    fn the_inner_filter_never_drops_a_matching_line() {
        let sqli = format!(
            r#"{ACCESS}(?i:union(?:\+|%20|/\*\*/)+(?:all(?:\+|%20)+)?select|%27(?:\+|%20)*or(?:\+|%20)*%27?1|sleep%28\d|benchmark%28|information_schema|xp_cmdshell)[^" ]*) HTTP/[0-9.]+" (?P<status>\d{{3}})"#
        );
        let scanner = format!(
            r#"{ACCESS}/(?:\.env|\.git/|wp-login\.php|HNAP1|config\.json)[^" ]*) HTTP/[0-9.]+" (?P<status>\d{{3}})"#
        );
        let head = r#"192.0.2.7 - - [25/Nov/2026:16:00:00 +0900] "GET "#;
        let tail = r#" HTTP/1.1" 200"#;
        let cases = [
            (&sqli, "/a?id=1+UNION+ALL+SELECT+1"),
            (&sqli, "/a?id=1%20uNiOn/**/sElEcT"),
            (&sqli, "/a?q=%27%20OR%20%271"),
            (&sqli, "/a?q=SLEEP%285)"),
            (&sqli, "/a?q=\u{17F}leep%285)"),
            (&sqli, "/a?q=BENCHMAR\u{212A}%28"),
            (&sqli, "/a?q=INFORMATION_\u{17F}CHEMA"),
            (&sqli, "/a?q=xp_cmd\u{17F}hell"),
            (&scanner, "/.env"),
            (&scanner, "/HNAP1"),
            (&scanner, "/wp-login.php?x"),
        ];
        for (pattern, path) in cases {
            let regex = regex::Regex::new(pattern).expect("pattern");
            let line = format!("{head}{path}{tail}");
            assert!(regex.is_match(&line), "the case itself: {line}");
            let words = inner_literals(pattern).expect("literals");
            let filter = line_filter([Some(&words[..])], true).expect("filter");
            assert!(filter.is_match(&line), "dropped {line} ({words:?})");
            assert!(filter.ascii());
        }
        let words = inner_literals(&sqli).expect("literals");
        let filter = line_filter([Some(&words[..])], true).expect("filter");
        assert!(!filter.is_match(&format!("{head}/kurashi/gomi/calendar.html{tail}")));
    }

    /// The case-ignoring search lowercases a window at a time: a word across a window's end is
    /// found, and the first of several is the one reported.
    #[test]
    fn a_case_ignoring_search_finds_words_across_its_windows() {
        let words: Vec<Box<[u8]>> = vec![b"union".to_vec().into(), b"../".to_vec().into()];
        let filter = line_filter([Some(&words[..])], true).expect("filter");
        for at in [
            0,
            1,
            FOLD_WINDOW - 3,
            FOLD_WINDOW - 1,
            FOLD_WINDOW,
            3 * FOLD_WINDOW + 7,
        ] {
            let mut text = vec![b'x'; at];
            text.extend_from_slice(b"UnIoN");
            text.extend(std::iter::repeat_n(b'y', 100));
            text.extend_from_slice(b"../");
            assert_eq!(filter.find_in(&text), Some(at), "at {at}");
        }
        assert_eq!(filter.find_in(&vec![b'z'; 3 * FOLD_WINDOW]), None);
        assert!(filter.is_match("GET /a?q=1+UNION+SELECT"));
        assert!(!filter.is_match("GET /kurashi/"));
    }
}
