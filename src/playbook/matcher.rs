//! The playbooks' log rules compiled once into one matcher.
//!
//! Rules are selected per file (their `files` globs) and, for rules that name a `program`, per
//! syslog program: a line is parsed once (`line::parse`) and only the rules of its program see
//! its message, which their patterns match from its start. Program rules are found by the
//! literal words their patterns start with (`prefix`): a line that holds none of its file's
//! words anywhere is not parsed at all, and a message is tried only by the rules whose words it
//! starts with. The rules without a program (access logs) of each selection are one `RegexSet`,
//! tested first with `is_match`, which allocates nothing. Only the rules that can match run their
//! own regexes, which extract the named captures. Imported fail2ban rules (`strip`, the
//! backtracking engine) have words too (`cut`): a line without any is neither cut nor matched,
//! and a file read only by rules with words is searched for them in its raw bytes. JSON rules
//! (eve.json and other JSON-lines logs) parse the line only in files that have such rules. A
//! line is at most one hit per playbook (its first matching rule): counting one line twice
//! would double a threshold.

use super::cidr::canonical;
use super::cut;
use super::line::{self, Syslog};
use super::prefix::{self, Dispatch, LineFilter};
use super::session::{MAX_WAITING, Sessions, Waiting, session_id};
use super::{JsonRule, Playbook, PlaybookSet, Rule, RuleSource};
use crate::model::Fields;
use crate::stamp::Stamp;
use regex::{RegexSet, RegexSetBuilder};
use serde_json::Value;
use std::collections::HashMap;
use std::net::IpAddr;
use std::path::Path;
use std::sync::{Arc, Mutex};

/// One rule's match on a line.
#[derive(Debug)]
pub struct Match<'a> {
    pub playbook: &'a Playbook,
    pub rule: &'a Rule,
    pub fields: Fields,
    /// How many times the line stands for (rsyslog's `message repeated N times`), at least 1.
    pub repeated: u32,
    /// The host that logged the line (the syslog header's, or journald's), when it has one:
    /// written by the logging host, never by the client.
    pub host: Option<Box<str>>,
    /// The line's time as the rule's `strip` reads it (its named groups: an imported filter's
    /// `datepattern`), when it has one that does.
    pub stamp: Option<Stamp>,
}

/// Which rules read one file (decided once per file, from the rules' `files` globs), with a
/// `RegexSet` of only those text rules: a file pays for the rules that read it, not for the
/// whole set (auth.log does not run the web-attack patterns).
#[derive(Debug, Clone)]
pub struct FileRules {
    text: Vec<bool>,
    json: Vec<bool>,
    /// The selected whole-line rules that strip the line or backtrack (imported fail2ban
    /// filters): each matches on its own, after the others.
    special: Vec<bool>,
    /// The selected rules without a program: they match the whole line.
    set: Arc<RegexSet>,
    /// The matcher's text-rule index of each pattern of `set`.
    index: Arc<Vec<usize>>,
    /// Whether any selected rule names a program (only then is a line's structure parsed).
    by_program: bool,
    /// Any of the literals the selected program rules start with, searched in the whole line
    /// before it is parsed; `None` when some rule has none.
    literals: Option<Arc<LineFilter>>,
    /// Any of the literals one of which every match of a selected whole-line rule holds,
    /// searched before the set; `None` when some rule has none.
    whole: Option<Arc<LineFilter>>,
    /// Any of the words one of which every line holds on which a selected special rule can
    /// make a hit (`cut::rule_words`), searched before the line is cut; `None` when some rule
    /// has none.
    special_words: Option<Arc<LineFilter>>,
    /// What a reader may search the raw bytes for (see `raw_filter`).
    raw: Option<Arc<LineFilter>>,
    /// The dispatch of the program rules, per program seen in this file (bounded; a file has a
    /// few programs, and a short list beats hashing the name on every line).
    programs: Arc<Mutex<ProgramCache>>,
}

/// The programs seen in a file and the dispatch of the rules that read each.
type ProgramCache = Vec<(Box<str>, Arc<Dispatch>)>;

/// Distinct programs whose dispatch a file keeps; beyond, it comes from the matcher's own cache
/// (a lock and a lookup more per line, never an unbounded map: any local user can log under
/// any tag).
const PROGRAMS_PER_FILE: usize = 64;

impl PartialEq for FileRules {
    fn eq(&self, other: &FileRules) -> bool {
        self.text == other.text && self.json == other.json && self.special == other.special
    }
}

impl Eq for FileRules {}

impl FileRules {
    /// Whether any rule reads the file at all.
    pub fn any(&self) -> bool {
        self.text
            .iter()
            .chain(&self.json)
            .chain(&self.special)
            .any(|b| *b)
    }

    /// A filter a reader applies to the file's raw lines, before decoding them: a line in which
    /// it finds nothing cannot match any rule of the file. Only when every rule is a text rule
    /// (not JSON) whose words are known and ASCII; `None` otherwise (every line must be
    /// scanned).
    pub fn raw_filter(&self) -> Option<&LineFilter> {
        self.raw.as_deref()
    }
}

/// A compiled selection of text rules and the matcher's index of each of its patterns.
type CompiledSet = (Arc<RegexSet>, Arc<Vec<usize>>);

/// The compiled log rules of a playbook set.
pub struct Matcher {
    playbooks: PlaybookSet,
    /// Every text rule's pattern, in `text` order.
    patterns: Vec<String>,
    /// The compiled sets, one per distinct selection of text rules (files share them).
    sets: Mutex<HashMap<Vec<bool>, CompiledSet>>,
    /// The program rules' dispatches, one per distinct selection (programs share them).
    dispatches: Mutex<HashMap<Vec<bool>, Arc<Dispatch>>>,
    /// For each text rule with a program, the literals its pattern starts with; for each
    /// whole-line rule, the literals one of which its matches hold (`prefix::inner_literals`).
    prefixes: Vec<Option<Vec<Box<[u8]>>>>,
    /// `(playbook, rule)` indices of the text rules.
    text: Vec<(usize, usize)>,
    /// For each text rule, its program globs (empty: it reads whole lines).
    programs: Vec<Vec<glob::Pattern>>,
    /// `(playbook, rule)` indices of the JSON rules.
    json: Vec<(usize, usize)>,
    /// `(playbook, rule)` indices of the rules that strip or backtrack.
    special: Vec<(usize, usize)>,
    /// For each special rule, the words one of which a line holds on which it can make a hit.
    special_words: Vec<Option<Vec<Box<[u8]>>>>,
    /// For each special rule, which of the distinct `strip` patterns it cuts the line with.
    special_cut: Vec<Option<usize>>,
    /// For each special rule, whether every match of it is fail2ban's "no failure" (`nofail`).
    special_silent: Vec<bool>,
    /// Per playbook (by index), a set of its special rules, compiled when first needed:
    /// one pass over the stripped line says which of them can match (most lines: none).
    special_sets: Mutex<HashMap<usize, Option<Arc<SpecialSet>>>>,
}

/// The special rules of one playbook as one set (a backtracking rule by its relaxed, linear
/// pattern), and the special index of each pattern.
struct SpecialSet {
    set: RegexSet,
    rules: Vec<usize>,
}

impl Matcher {
    /// Compiles the log rules of `playbooks`.
    pub fn new(playbooks: PlaybookSet) -> Result<Matcher, regex::Error> {
        let mut text = Vec::new();
        let mut json = Vec::new();
        let mut patterns = Vec::new();
        let mut programs = Vec::new();
        let mut prefixes = Vec::new();
        let mut special = Vec::new();
        let mut special_words = Vec::new();
        let mut special_cut = Vec::new();
        let mut special_silent = Vec::new();
        let mut strips: Vec<&str> = Vec::new();
        for (p, playbook) in playbooks.iter().enumerate() {
            for (r, rule) in playbook.rules.iter().enumerate() {
                if rule.source != RuleSource::Log {
                    continue;
                }
                if rule.backtrack.is_some() || rule.strip.is_some() {
                    special.push((p, r));
                    // A backtracking rule by its relaxed pattern, which matches all it does.
                    let pattern = match (&rule.backtrack, &rule.regex) {
                        (Some(b), _) => b.relaxed(),
                        (None, Some(r)) => Some(r.as_str().to_string()),
                        (None, None) => None,
                    };
                    // A rule whose every match is "no failure" makes no hit: it needs no words.
                    let silent = pattern
                        .as_deref()
                        .is_some_and(|p| cut::always_captures(p, NOFAIL));
                    special_silent.push(silent);
                    special_words.push(match pattern {
                        _ if silent => Some(Vec::new()),
                        Some(pattern) => {
                            cut::rule_words(&pattern, rule.strip.as_ref().map(|s| s.as_str()))
                        }
                        None => None,
                    });
                    special_cut.push(rule.strip.as_ref().map(|strip| {
                        strips
                            .iter()
                            .position(|s| *s == strip.as_str())
                            .unwrap_or_else(|| {
                                strips.push(strip.as_str());
                                strips.len() - 1
                            })
                    }));
                    continue;
                }
                match (rule.json.is_some(), &rule.regex) {
                    (true, _) => json.push((p, r)),
                    (false, Some(regex)) => {
                        patterns.push(regex.as_str().to_string());
                        text.push((p, r));
                        programs.push(rule.programs.clone());
                        prefixes.push(if rule.programs.is_empty() {
                            prefix::inner_literals(regex.as_str())
                        } else {
                            prefix::prefixes(regex.as_str())
                        });
                    }
                    (false, None) => {}
                }
            }
        }
        // Each pattern passed its own size cap at load. The sets of whole-line rules are compiled
        // when a file selects them (most files select none, and compiling every pattern at once
        // would be most of a dry run's start).
        let sets = Mutex::new(HashMap::new());
        Ok(Matcher {
            playbooks,
            patterns,
            sets,
            dispatches: Mutex::new(HashMap::new()),
            prefixes,
            text,
            programs,
            json,
            special,
            special_words,
            special_cut,
            special_silent,
            special_sets: Mutex::new(HashMap::new()),
        })
    }

    /// The set of playbook `p`'s linear special rules; `None` when it has none or the set
    /// exceeds its size cap (then each rule is tried on its own).
    fn special_set(&self, p: usize) -> Option<Arc<SpecialSet>> {
        let mut sets = match self.special_sets.lock() {
            Ok(sets) => sets,
            Err(poisoned) => poisoned.into_inner(),
        };
        sets.entry(p)
            .or_insert_with(|| {
                // Linear rules by their pattern, backtracking ones by their relaxed pattern
                // (which matches all they match): a line none of them matches is passed over.
                let pattern = |i: &usize| {
                    let rule = self.rule(self.special[*i]).1;
                    match (&rule.backtrack, &rule.regex) {
                        (Some(b), _) => b.relaxed(),
                        (None, Some(r)) => Some(r.as_str().to_string()),
                        (None, None) => None,
                    }
                };
                let rules: Vec<usize> = (0..self.special.len())
                    .filter(|i| self.special[*i].0 == p)
                    .collect();
                let patterns: Vec<String> = rules.iter().filter_map(pattern).collect();
                if patterns.len() != rules.len() {
                    return None;
                }
                // The set is tested on one cut of the line: only for rules that cut alike.
                let strip = |i: &usize| {
                    self.rule(self.special[*i])
                        .1
                        .strip
                        .as_ref()
                        .map(|r| r.as_str().to_string())
                };
                let first = rules.first().map(strip)?;
                if rules.iter().any(|i| strip(i) != first) {
                    return None;
                }
                // Imported patterns are large (fail2ban's syslog prefix in each): a lazy DFA
                // cache of the default size would be cleared on nearly every line.
                let set = RegexSetBuilder::new(patterns)
                    .size_limit(64 << 20)
                    .dfa_size_limit(32 << 20)
                    .build()
                    .ok()?;
                (!rules.is_empty()).then(|| Arc::new(SpecialSet { set, rules }))
            })
            .clone()
    }

    /// The rules selected by `text`, `json` and `special`, with the compiled set of the text
    /// rules without a program.
    fn select(&self, text: Vec<bool>, json: Vec<bool>, special: Vec<bool>) -> FileRules {
        let whole_lines: Vec<bool> = (0..text.len())
            .map(|i| text[i] && self.programs[i].is_empty())
            .collect();
        let program_rules = (0..text.len()).filter(|i| text[*i] && !self.programs[*i].is_empty());
        let whole_rules = (0..text.len()).filter(|i| whole_lines[*i]);
        let by_program = program_rules.clone().next().is_some();
        let by_line = whole_rules.clone().next().is_some();
        let literals = prefix::line_filter(
            program_rules.clone().map(|i| self.prefixes[i].as_deref()),
            false,
        )
        .map(Arc::new);
        let whole = prefix::line_filter(whole_rules.map(|i| self.prefixes[i].as_deref()), true)
            .map(Arc::new);
        let special_rules = (0..special.len()).filter(|i| special[*i]);
        let by_special = special_rules.clone().next().is_some();
        let special_words = prefix::line_filter(
            special_rules
                .clone()
                .map(|i| self.special_words[i].as_deref()),
            true,
        )
        .map(Arc::new);
        // The raw bytes are searched for the words of every rule of the file: those of the
        // program rules as they are, those of the whole-line and special rules (and then all)
        // ignoring case. JSON rules have no words: every line of such a file is read.
        let raw = if json.iter().any(|b| *b) {
            None
        } else {
            match (by_program, by_line, by_special) {
                (_, false, false) => literals.clone(),
                (false, true, false) => whole.clone(),
                (false, false, true) => special_words.clone(),
                _ => prefix::line_filter(
                    program_rules
                        .chain((0..text.len()).filter(|i| whole_lines[*i]))
                        .map(|i| self.prefixes[i].as_deref())
                        .chain(special_rules.map(|i| self.special_words[i].as_deref())),
                    true,
                )
                .map(Arc::new),
            }
        }
        .filter(|f| f.ascii());
        let (set, index) = self.compiled(&whole_lines);
        FileRules {
            text,
            json,
            special,
            set,
            index,
            by_program,
            literals,
            whole,
            special_words,
            raw,
            programs: Arc::new(Mutex::new(Vec::new())),
        }
    }

    /// The dispatch of the program rules of `rules` that read `program`'s lines.
    fn program_dispatch(&self, rules: &FileRules, program: &str) -> Arc<Dispatch> {
        let mut cache = match rules.programs.lock() {
            Ok(cache) => cache,
            Err(poisoned) => poisoned.into_inner(),
        };
        if let Some((_, dispatch)) = cache.iter().find(|(name, _)| **name == *program) {
            return Arc::clone(dispatch);
        }
        let mask: Vec<bool> = (0..rules.text.len())
            .map(|i| rules.text[i] && self.programs[i].iter().any(|g| g.matches(program)))
            .collect();
        let dispatch = {
            let mut all = match self.dispatches.lock() {
                Ok(all) => all,
                Err(poisoned) => poisoned.into_inner(),
            };
            let made = all.entry(mask).or_insert_with_key(|mask| {
                Arc::new(Dispatch::new(
                    (0..mask.len())
                        .filter(|i| mask[*i])
                        .map(|i| (i, self.prefixes[i].as_deref())),
                ))
            });
            Arc::clone(made)
        };
        if cache.len() < PROGRAMS_PER_FILE {
            cache.push((program.into(), Arc::clone(&dispatch)));
        }
        dispatch
    }

    /// The compiled set of the text rules selected by `text`, shared by every file and program
    /// that selects the same rules.
    fn compiled(&self, text: &[bool]) -> CompiledSet {
        let mut sets = match self.sets.lock() {
            Ok(sets) => sets,
            Err(poisoned) => poisoned.into_inner(),
        };
        match sets.get(text) {
            Some((set, index)) => (Arc::clone(set), Arc::clone(index)),
            None => {
                let index: Vec<usize> = (0..text.len()).filter(|i| text[*i]).collect();
                let patterns = index.iter().map(|i| self.patterns[*i].as_str());
                let compiled = match RegexSetBuilder::new(patterns).size_limit(64 << 20).build() {
                    Ok(set) => (Arc::new(set), Arc::new(index)),
                    // Each pattern compiled alone at load, so a set of them fails only on the
                    // set's size cap. Then no set prefilters: every selected rule is tried with
                    // its own regex (`RegexSet::empty` never matches, `every` says try all).
                    Err(_) => (Arc::new(RegexSet::empty()), Arc::new(index)),
                };
                sets.insert(
                    text.to_vec(),
                    (Arc::clone(&compiled.0), Arc::clone(&compiled.1)),
                );
                compiled
            }
        }
    }

    /// The playbooks this matcher was built from.
    pub fn playbooks(&self) -> &PlaybookSet {
        &self.playbooks
    }

    fn rule(&self, (p, r): (usize, usize)) -> (&Playbook, &Rule) {
        let playbook = self.playbooks.by_index(p);
        (playbook, &playbook.rules[r])
    }

    /// The rules that read `path`: those without `files`, and those whose globs match the file
    /// name (or the whole path, for globs with a `/`).
    pub fn rules_for(&self, path: &Path) -> FileRules {
        let reads = |rule: &Rule| rule.reads(path);
        self.select(
            self.text.iter().map(|i| reads(self.rule(*i).1)).collect(),
            self.json.iter().map(|i| reads(self.rule(*i).1)).collect(),
            self.special
                .iter()
                .map(|i| reads(self.rule(*i).1))
                .collect(),
        )
    }

    /// Every log rule of one playbook, whatever the file (the dry run, like `fail2ban-regex`,
    /// tests a playbook against any file). `None` when there is no such playbook.
    pub fn rules_of(&self, playbook: &str) -> Option<FileRules> {
        let p = self.playbooks.iter().position(|pb| pb.id == playbook)?;
        Some(self.select(
            self.text.iter().map(|(i, _)| *i == p).collect(),
            self.json.iter().map(|(i, _)| *i == p).collect(),
            self.special.iter().map(|(i, _)| *i == p).collect(),
        ))
    }

    /// Appends the matches of `line` under `rules` to `out` (without sessions: a session rule
    /// that lacks a field is no hit).
    pub fn scan<'a>(&'a self, rules: &FileRules, line: &str, out: &mut Vec<Match<'a>>) {
        let start = out.len();
        self.scan_with(rules, line, self.structure(rules, line), false, out);
        self.settle(start, out);
    }

    /// The line's syslog structure, when some selected rule needs it: not for a line that holds
    /// none of the words the program rules start with (no program rule can match it). Where the
    /// reader applies `raw_filter`, the lines it hands out hold one, and are not searched again.
    pub fn structure<'l>(&self, rules: &FileRules, line: &'l str) -> Option<Syslog<'l>> {
        let searched = match (&rules.raw, &rules.literals) {
            (Some(raw), Some(words)) => Arc::ptr_eq(raw, words),
            _ => false,
        };
        if !rules.by_program
            || (!searched
                && rules
                    .literals
                    .as_ref()
                    .is_some_and(|words| !words.is_match(line)))
        {
            return None;
        }
        line::parse(line)
    }

    /// The matches of `line`, whose structure is `syslog` (parsed by `structure`, or given by the
    /// source, as the journal's fields), with the sessions of the line's source: learn rules teach them, session
    /// rules take their missing fields from them or wait there, and what a line brings releases
    /// the hits waiting for it.
    pub fn scan_in_session<'a>(
        &'a self,
        rules: &FileRules,
        line: &str,
        syslog: Option<Syslog<'_>>,
        sessions: &mut Sessions,
        out: &mut Vec<Match<'a>>,
    ) {
        let start = out.len();
        let waiting = sessions.any_waiting()
            && syslog
                .and_then(|s| Some(session_id(s.host, s.program, s.pid?)))
                .is_some_and(|id| sessions.waiting(id));
        self.scan_with(rules, line, syslog, waiting, out);
        // Most lines match nothing, or only ordinary rules: no session is looked at, and nothing
        // is allocated for them.
        if out[start..]
            .iter()
            .all(|m| !m.rule.learn && m.rule.session.is_none())
        {
            return;
        }
        let Some(id) = syslog.and_then(|s| Some(session_id(s.host, s.program, s.pid?))) else {
            self.settle(start, out);
            return;
        };
        let session = sessions.get(id);
        let waiting_before = session.waiting.len();
        let mut released = Vec::new();
        for m in out[start..].iter().filter(|m| m.rule.learn) {
            for (k, v) in &m.fields {
                session.fields.insert(k.clone(), v.clone());
            }
        }
        if out[start..].iter().any(|m| m.rule.learn) {
            let waiting = std::mem::take(&mut session.waiting);
            for mut w in waiting {
                let Some((playbook, rule)) = self.find(&w.playbook, &w.rule) else {
                    continue;
                };
                fill(&mut w.fields, &session.fields, &playbook.dedupe);
                if complete(&w.fields, &playbook.dedupe) {
                    if !ignored(playbook, line, &w.fields) {
                        released.push(Match {
                            playbook,
                            rule,
                            fields: w.fields,
                            repeated: 1,
                            host: syslog.and_then(|s| s.host).map(Into::into),
                            stamp: None,
                        });
                    }
                } else {
                    session.waiting.push(w);
                }
            }
        }
        let mut kept = Vec::new();
        for mut m in out.drain(start..) {
            if m.rule.learn {
                continue;
            }
            if m.rule.session.is_some() && !complete(&m.fields, &m.playbook.dedupe) {
                fill(&mut m.fields, &session.fields, &m.playbook.dedupe);
                if !complete(&m.fields, &m.playbook.dedupe) {
                    if session.waiting.len() < MAX_WAITING {
                        session.waiting.push(Waiting {
                            playbook: m.playbook.id.clone(),
                            rule: m.rule.name.clone(),
                            fields: m.fields,
                        });
                    }
                    continue;
                }
                if ignored(m.playbook, line, &m.fields) {
                    continue;
                }
            }
            kept.push(m);
        }
        let waiting_after = session.waiting.len();
        sessions.waiting_changed(waiting_before, waiting_after);
        out.extend(kept);
        out.extend(released);
    }

    /// Without a session: learn matches go, and session matches that lack a field.
    fn settle(&self, start: usize, out: &mut Vec<Match<'_>>) {
        let mut i = start;
        while i < out.len() {
            let m = &out[i];
            if m.rule.learn
                || (m.rule.session.is_some() && !complete(&m.fields, &m.playbook.dedupe))
            {
                out.remove(i);
            } else {
                i += 1;
            }
        }
    }

    /// The playbook and rule of these names, if this matcher has them.
    fn find(&self, playbook: &str, rule: &str) -> Option<(&Playbook, &Rule)> {
        let p = self.playbooks.get(playbook)?;
        let r = p.rules.iter().find(|r| r.name == rule)?;
        Some((p, r))
    }

    /// The matching itself; `waiting` lets the `learn = "waiting"` rules capture (a hit of this
    /// process waits for its address), which they otherwise skip: their lines are common and a
    /// capture costs far more than the set's test.
    fn scan_with<'a>(
        &'a self,
        rules: &FileRules,
        line: &str,
        syslog: Option<Syslog<'_>>,
        waiting: bool,
        out: &mut Vec<Match<'a>>,
    ) {
        let start = out.len();
        // Candidates from both kinds of rules, taken in rule order: the first matching rule of
        // a playbook is its hit.
        let mut candidates: Vec<(usize, &str, u32)> = Vec::new();
        if rules.index.is_empty() {
            // No whole-line rule reads this file.
        } else if rules.whole.as_ref().is_some_and(|f| !f.is_match(line)) {
            // The line holds none of the words one of which each whole-line rule needs.
        } else if rules.set.is_empty() {
            // The set did not compile (its size cap): every rule tries its own regex.
            candidates.extend(rules.index.iter().map(|i| (*i, line, 1)));
        } else if rules.set.is_match(line) {
            for found in rules.set.matches(line).iter() {
                candidates.push((rules.index[found], line, 1));
            }
        }
        if rules.by_program
            && let Some(s) = syslog
        {
            let dispatch = self.program_dispatch(rules, s.program);
            for found in dispatch.candidates(s.message) {
                candidates.push((found, s.message, s.repeated));
            }
        }
        candidates.sort_unstable_by_key(|c| c.0);
        candidates.dedup_by_key(|c| c.0);
        for (index, haystack, repeated) in candidates {
            if !rules.text[index] {
                continue;
            }
            let (playbook, rule) = self.rule(self.text[index]);
            if rule.learn_waiting && !waiting {
                continue;
            }
            // One hit per playbook and line; what a learn rule takes is no hit and blocks none.
            if !rule.learn
                && out[start..]
                    .iter()
                    .any(|m| !m.rule.learn && std::ptr::eq(m.playbook, playbook))
            {
                continue;
            }
            let Some(regex) = &rule.regex else { continue };
            let Some(caps) = regex.captures(haystack) else {
                continue;
            };
            let fields = captured(
                regex
                    .capture_names()
                    .enumerate()
                    .map(|(i, name)| (name, caps.get(i).map(|m| m.as_str()))),
            );
            if !ignored(playbook, line, &fields) {
                out.push(Match {
                    playbook,
                    rule,
                    fields,
                    repeated,
                    host: syslog.and_then(|s| s.host).map(Into::into),
                    stamp: None,
                });
            }
        }
        if rules.special.iter().any(|b| *b) {
            self.scan_special(rules, line, start, out);
        }
        if rules.json.iter().any(|b| *b) && line.trim_start().starts_with('{') {
            let Ok(object) = serde_json::from_str::<Value>(line) else {
                return;
            };
            for (index, reads) in rules.json.iter().enumerate() {
                if !reads {
                    continue;
                }
                let (playbook, rule) = self.rule(self.json[index]);
                if out[start..]
                    .iter()
                    .any(|m| std::ptr::eq(m.playbook, playbook))
                {
                    continue;
                }
                let Some(json) = &rule.json else { continue };
                if let Some(fields) = json_match(json, rule, &object, line)
                    && !ignored(playbook, line, &fields)
                {
                    out.push(Match {
                        playbook,
                        rule,
                        fields,
                        repeated: 1,
                        host: None,
                        stamp: None,
                    });
                }
            }
        }
    }
}

impl Matcher {
    /// The rules that strip the line before matching, or run on the backtracking engine
    /// (imported fail2ban filters), in rule order. A match in which a group named `nofail`
    /// took part is fail2ban's "not a failure": no hit, and the playbook's later rules do not
    /// look at the line either.
    fn scan_special<'a>(
        &'a self,
        rules: &FileRules,
        line: &str,
        start: usize,
        out: &mut Vec<Match<'a>>,
    ) {
        // A line without any of the rules' words makes no hit: not cut, not matched. Where the
        // reader searched the raw bytes for exactly these words, it is not searched again.
        if let Some(words) = &rules.special_words
            && !rules
                .raw
                .as_ref()
                .is_some_and(|raw| Arc::ptr_eq(raw, words))
            && !words.is_match(line)
        {
            return;
        }
        // Rules of one playbook share their `strip` pattern: the line is cut once for them.
        let mut cut: Option<(usize, Cut<'_>)> = None;
        let mut settled: Option<&Playbook> = None;
        // The playbook whose set was last tested, and which of its linear rules can match.
        let mut tested: Option<(usize, Option<Arc<SpecialSet>>, Vec<usize>)> = None;
        for (index, reads) in rules.special.iter().enumerate() {
            if !reads {
                continue;
            }
            let (p, _) = self.special[index];
            let (playbook, rule) = self.rule(self.special[index]);
            if settled.is_some_and(|p| std::ptr::eq(p, playbook))
                || out[start..]
                    .iter()
                    .any(|m| std::ptr::eq(m.playbook, playbook))
            {
                continue;
            }
            let haystack: &str = match (&rule.strip, self.special_cut[index]) {
                (Some(strip), Some(id)) => {
                    if cut.as_ref().is_none_or(|(cut_by, _)| *cut_by != id) {
                        cut = Some((id, strip_line(strip, line)));
                    }
                    match &cut {
                        Some((_, c)) => &c.text,
                        None => line,
                    }
                }
                _ => line,
            };
            {
                if tested.as_ref().is_none_or(|(q, _, _)| *q != p) {
                    let set = self.special_set(p);
                    let possible = match &set {
                        Some(s) if s.set.is_match(haystack) => {
                            s.set.matches(haystack).iter().map(|k| s.rules[k]).collect()
                        }
                        _ => Vec::new(),
                    };
                    tested = Some((p, set, possible));
                }
                if let Some((_, Some(_), possible)) = &tested {
                    if !possible.contains(&index) {
                        continue;
                    }
                    // The set ran this linear rule's own pattern, and every match of it is "no
                    // failure": the line is settled without taking its captures.
                    if self.special_silent[index] && rule.backtrack.is_none() {
                        settled = Some(playbook);
                        continue;
                    }
                }
            }
            let fields = match (&rule.backtrack, &rule.regex) {
                (Some(b), _) => {
                    let Some(caps) = b.captures(haystack) else {
                        continue;
                    };
                    captured(
                        b.capture_names()
                            .enumerate()
                            .map(|(i, name)| (name, caps.get(i).map(|m| m.as_str()))),
                    )
                }
                (None, Some(regex)) => {
                    let Some(caps) = regex.captures(haystack) else {
                        continue;
                    };
                    captured(
                        regex
                            .capture_names()
                            .enumerate()
                            .map(|(i, name)| (name, caps.get(i).map(|m| m.as_str()))),
                    )
                }
                (None, None) => continue,
            };
            if fields.contains_key(NOFAIL) {
                settled = Some(playbook);
                continue;
            }
            if !ignored(playbook, line, &fields) {
                // Imported filters judge no context: the logging host is not needed.
                out.push(Match {
                    playbook,
                    rule,
                    fields,
                    repeated: 1,
                    host: None,
                    stamp: match (&rule.strip, &cut) {
                        (Some(strip), Some((_, c))) => c.stamp(strip),
                        _ => None,
                    },
                });
            }
        }
    }

    /// How many lines each backtracking rule gave up on (its step limit), by `playbook/rule`;
    /// only the rules that gave up at least once.
    pub fn step_limit_reached(&self) -> Vec<(String, u64)> {
        self.special
            .iter()
            .filter_map(|ix| {
                let (playbook, rule) = self.rule(*ix);
                let n = rule.backtrack.as_ref()?.exceeded();
                (n > 0).then(|| (format!("{}/{}", playbook.id, rule.name), n))
            })
            .collect()
    }
}

/// The capture that marks a match as fail2ban's "no failure" (`<F-NOFAIL>`).
pub const NOFAIL: &str = "nofail";

/// A line cut by a rule's `strip`: the text its pattern sees, and the strip's groups.
struct Cut<'l> {
    text: std::borrow::Cow<'l, str>,
    groups: Option<regex::Captures<'l>>,
}

impl Cut<'_> {
    /// The time the strip's named groups read (see `crate::stamp`).
    fn stamp(&self, strip: &regex::Regex) -> Option<Stamp> {
        let caps = self.groups.as_ref()?;
        Stamp::from_groups(
            strip
                .capture_names()
                .enumerate()
                .filter_map(|(i, name)| Some((name?, caps.get(i)?.as_str()))),
        )
    }
}

/// `line` without the first match of `strip` (its first group that took part, when it has
/// groups), as fail2ban matches a line without its time stamp. Borrowed when the cut is at the
/// start.
fn strip_line<'l>(strip: &regex::Regex, line: &'l str) -> Cut<'l> {
    let Some(caps) = strip.captures(line) else {
        return Cut {
            text: std::borrow::Cow::Borrowed(line),
            groups: None,
        };
    };
    let Some(m) = caps.iter().skip(1).flatten().next().or_else(|| caps.get(0)) else {
        return Cut {
            text: std::borrow::Cow::Borrowed(line),
            groups: Some(caps),
        };
    };
    let text = if m.start() == 0 {
        std::borrow::Cow::Borrowed(&line[m.end()..])
    } else {
        let mut text = String::with_capacity(line.len() - m.len());
        text.push_str(&line[..m.start()]);
        text.push_str(&line[m.end()..]);
        std::borrow::Cow::Owned(text)
    };
    Cut {
        text,
        groups: Some(caps),
    }
}

/// The fields of a match from its named groups that took part: a group `name__x` fills `name`
/// when no group before it did (see `playbook::field_name`).
fn captured<'n, 'h>(groups: impl Iterator<Item = (Option<&'n str>, Option<&'h str>)>) -> Fields {
    let mut fields = Fields::new();
    for (name, value) in groups {
        if let (Some(name), Some(value)) = (name, value) {
            fields
                .entry(super::field_name(name).to_string())
                .or_insert_with(|| Value::String(normalize(value)));
        }
    }
    fields
}

/// The fields of a JSON rule's match, or `None` when a condition fails.
fn json_match(json: &JsonRule, rule: &Rule, object: &Value, line: &str) -> Option<Fields> {
    for (path, accepted) in &json.conditions {
        let value = lookup(object, path)?;
        if !accepted.contains(value) {
            return None;
        }
    }
    if let Some(regex) = &rule.regex
        && !regex.is_match(line)
    {
        return None;
    }
    let mut fields = Fields::new();
    for (name, path) in &json.fields {
        if let Some(value) = lookup(object, path) {
            let value = match value {
                Value::String(s) => Value::String(normalize(s)),
                other => other.clone(),
            };
            fields.insert(name.clone(), value);
        }
    }
    Some(fields)
}

fn lookup<'v>(mut value: &'v Value, path: &[String]) -> Option<&'v Value> {
    for key in path {
        value = value.get(key)?;
    }
    Some(value)
}

/// A captured address in the one spelling dedupe keys use (`::ffff:192.0.2.1` is `192.0.2.1`,
/// IPv6 compressed and lower-case); anything else as captured.
fn normalize(value: &str) -> String {
    // Most captures that are not addresses (user names) fail at the first byte; not parsing
    // them saves the parser's setup on every match.
    if !value
        .as_bytes()
        .first()
        .is_some_and(|b| b.is_ascii_hexdigit() || *b == b':')
    {
        return value.to_string();
    }
    match value.parse::<IpAddr>() {
        // The parser takes only the dotted decimal spelling (no leading zeros), which is the
        // canonical one: no need to print it again.
        Ok(IpAddr::V4(_)) | Err(_) => value.to_string(),
        Ok(addr) => canonical(addr).to_string(),
    }
}

/// Copies the session's values of the `wanted` fields `fields` lacks.
fn fill(fields: &mut Fields, session: &Fields, wanted: &[String]) {
    for name in wanted {
        if !fields.contains_key(name)
            && let Some(v) = session.get(name)
        {
            fields.insert(name.clone(), v.clone());
        }
    }
}

/// Whether `fields` has every one of `wanted`.
fn complete(fields: &Fields, wanted: &[String]) -> bool {
    wanted.iter().all(|name| fields.contains_key(name))
}

/// Whether the playbook ignores this line (by pattern) or this hit (the address its dedupe key
/// names is in `ignore_cidrs`). Only the dedupe fields count: an IDS alert whose destination
/// is a city server is still about its source.
fn ignored(playbook: &Playbook, line: &str, fields: &Fields) -> bool {
    if playbook
        .ignore
        .as_ref()
        .is_some_and(|set| set.is_match(line))
    {
        return true;
    }
    !playbook.ignore_cidrs.is_empty()
        && playbook
            .dedupe
            .iter()
            .filter_map(|name| fields.get(name)?.as_str())
            .filter_map(|v| v.parse::<IpAddr>().ok())
            .any(|addr| playbook.ignore_cidrs.iter().any(|c| c.contains(addr)))
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::path::Path;

    const SSH: &str = r#"
id = "ssh"
title = "SSH ({ip})"
category = "不正アクセス"
severity = "high"
dedupe = ["ip"]
ignore = ['from 10\.99\.']
ignore_cidrs = ["10.20.0.0/16", "2001:db8:c17::/48"]
[[rule]]
name = "failed"
source = "log"
files = ["auth.log*"]
program = "sshd"
pattern = '^Failed password for (?:invalid user )?.* from (?P<ip>[0-9a-fA-F:.]+) port \d+ ssh2$'
[[rule]]
name = "any-failed"
source = "log"
pattern = 'Failed password .* from (?P<ip>[0-9a-fA-F:.]+)'
anchored = false
note = "a test of a loose rule beside a program rule"
[[step]]
text = "x"
"#;

    const IDS: &str = r#"
id = "ids"
title = "IDS ({ip}) {signature}"
category = "IDS"
severity = "high"
dedupe = ["ip", "signature"]
[[rule]]
source = "log"
files = ["eve.json*"]
format = "json"
[rule.match]
event_type = "alert"
"alert.severity" = [1, 2]
[rule.fields]
ip = "src_ip"
signature = "alert.signature"
[[step]]
text = "x"
"#;

    fn matcher() -> Matcher {
        let dir = tempfile::tempdir().expect("dir");
        std::fs::write(dir.path().join("ssh.toml"), SSH).expect("write");
        std::fs::write(dir.path().join("ids.toml"), IDS).expect("write");
        Matcher::new(super::super::load(dir.path(), None).expect("playbooks")).expect("matcher")
    }

    fn ips(m: &Matcher, file: &str, line: &str) -> Vec<String> {
        let rules = m.rules_for(Path::new(file));
        let mut out = Vec::new();
        m.scan(&rules, line, &mut out);
        out.iter()
            .map(|h| {
                format!(
                    "{}:{}:{}",
                    h.playbook.id,
                    h.rule.name,
                    h.fields["ip"].as_str().unwrap_or("?")
                )
            })
            .collect()
    }

    #[test]
    fn anchored_pattern_captures_the_real_address_not_the_forged_one() {
        let m = matcher();
        let forged = "Nov  3 15:35:12 gw sshd[7]: Failed password for invalid user x from 10.0.0.1 port 1 ssh2 from 203.0.113.9 port 4242 ssh2";
        assert_eq!(
            ips(&m, "/var/log/auth.log", forged),
            ["ssh:failed:203.0.113.9"]
        );
    }

    #[test]
    fn one_hit_per_playbook_and_file_globs_apply() {
        let m = matcher();
        let line = "Nov  3 15:35:12 gw sshd[7]: Failed password for root from ::ffff:198.51.100.4 port 22 ssh2";
        assert_eq!(
            ips(&m, "/var/log/auth.log.1", line),
            ["ssh:failed:198.51.100.4"],
            "first rule wins, mapped address normalized"
        );
        assert_eq!(
            ips(&m, "/var/log/secure", line),
            ["ssh:any-failed:198.51.100.4"],
            "auth.log* rule does not read secure"
        );
    }

    #[test]
    fn a_repeated_message_is_one_match_standing_for_each_repetition() {
        let m = matcher();
        let rules = m.rules_for(Path::new("auth.log"));
        let mut out = Vec::new();
        m.scan(
            &rules,
            "Nov  3 15:35:12 gw sshd[7]: message repeated 4 times: [ Failed password for root from 192.0.2.8 port 22 ssh2]",
            &mut out,
        );
        assert_eq!(out.len(), 1);
        assert_eq!((out[0].rule.name.as_str(), out[0].repeated), ("failed", 4));
        assert_eq!(out[0].fields["ip"], "192.0.2.8");
    }

    #[test]
    fn ignores_by_pattern_and_by_address_range() {
        let m = matcher();
        let from = |ip: &str| {
            format!("Nov  3 15:35:12 gw sshd[7]: Failed password for root from {ip} port 22 ssh2")
        };
        assert!(ips(&m, "auth.log", &from("10.20.0.10")).is_empty());
        assert!(ips(&m, "auth.log", &from("10.99.1.1")).is_empty());
        assert!(ips(&m, "auth.log", &from("2001:db8:c17::5")).is_empty());
        assert_eq!(ips(&m, "auth.log", &from("10.21.0.10")).len(), 1);
    }

    #[test]
    fn json_rules_match_on_fields() {
        let m = matcher();
        let alert = r#"{"timestamp":"2026-11-25T12:00:00.000000+0900","event_type":"alert","src_ip":"203.0.113.50","alert":{"severity":1,"signature":"ET EXPLOIT x"}}"#;
        assert_eq!(
            ips(&m, "/var/log/suricata/eve.json", alert),
            ["ids:rule-1:203.0.113.50"]
        );
        let low = alert.replace("\"severity\":1", "\"severity\":3");
        assert!(ips(&m, "eve.json", &low).is_empty());
        assert!(
            ips(&m, "eve.json", r#"{"event_type":"alert","#).is_empty(),
            "broken JSON is no match"
        );
        assert!(
            ips(&m, "other.json", alert).is_empty(),
            "files glob applies"
        );
    }

    #[test]
    fn addresses_are_captured_in_one_spelling() {
        for (captured, stored) in [
            ("192.0.2.1", "192.0.2.1"),
            ("::ffff:192.0.2.1", "192.0.2.1"),
            ("2001:DB8:0:0::1", "2001:db8::1"),
            ("010.1.1.1", "010.1.1.1"),
            ("gw.example.lg.jp", "gw.example.lg.jp"),
        ] {
            assert_eq!(normalize(captured), stored, "{captured}");
        }
    }

    /// An imported fail2ban filter: the time stamp is cut before matching, one rule backtracks,
    /// a `nofail` match settles the line without a hit.
    const IMPORTED: &str = r#"
id = "f2b"
title = "fail2ban x ({ip})"
category = "不正アクセス"
severity = "low"
dedupe = ["ip"]
[[rule]]
name = "nofail"
source = "log"
strip = '^(?:[^0-9A-Za-z_]{0,2})?([A-Z][a-z]{2} [ 0-9]?[0-9] [0-9:]{8})'
pattern = '^ \S+ app: (?P<nofail>Accepted) for \S+ from (?P<ip>[0-9.]+)$'
[[rule]]
name = "quoted"
source = "log"
strip = '^(?:[^0-9A-Za-z_]{0,2})?([A-Z][a-z]{2} [ 0-9]?[0-9] [0-9:]{8})'
engine = "backtrack"
pattern = '''^ \S+ app: (?P<q>["'])(?P<user>(?:(?!(?P=q)).)*)(?P=q) failed from (?P<ip>[0-9.]+)$'''
[[rule]]
name = "blowup"
source = "log"
strip = '^(?:[^0-9A-Za-z_]{0,2})?([A-Z][a-z]{2} [ 0-9]?[0-9] [0-9:]{8})'
engine = "backtrack"
pattern = '^ \S+ app: (?:(?P<x>a)|a)*\k<x>b from (?P<ip>[0-9.]+)$'
[[rule]]
name = "plain"
source = "log"
strip = '^(?:[^0-9A-Za-z_]{0,2})?([A-Z][a-z]{2} [ 0-9]?[0-9] [0-9:]{8})'
pattern = '^ \S+ app: (?:Failed|Accepted) for (?P<user>\S+) from (?:(?P<ip>[0-9.]+)|(?P<ip__6>[0-9a-fA-F:]+))$'
[[step]]
text = "x"
"#;

    /// The matcher of `IMPORTED` alone.
    fn imported() -> Matcher {
        let dir = tempfile::tempdir().expect("dir");
        std::fs::write(dir.path().join("f2b.toml"), IMPORTED).expect("write");
        Matcher::new(super::super::load(dir.path(), None).expect("playbooks")).expect("matcher")
    }

    #[test]
    fn imported_rules_strip_backtrack_and_settle_on_nofail() {
        let m = imported();
        assert_eq!(
            ips(
                &m,
                "app.log",
                "Nov  3 15:35:12 gw app: 'bob' failed from 192.0.2.1"
            ),
            ["f2b:quoted:192.0.2.1"]
        );
        assert_eq!(
            ips(
                &m,
                "app.log",
                "Nov  3 15:35:12 gw app: Failed for bob from 2001:DB8::1"
            ),
            ["f2b:plain:2001:db8::1"],
            "ip__6 fills ip"
        );
        assert!(
            ips(
                &m,
                "app.log",
                "Nov  3 15:35:12 gw app: Accepted for bob from 192.0.2.1"
            )
            .is_empty(),
            "a nofail match is no hit and later rules do not see the line"
        );
        assert!(
            ips(&m, "app.log", "gw app: Failed for bob from 192.0.2.1").is_empty(),
            "without a time stamp to cut, the pattern's leading space is missing"
        );
        // A line crafted to make the backtracking rule try every split gives up at the step
        // limit: no match, counted, and the scan finishes.
        assert!(m.step_limit_reached().is_empty());
        // (It passes the relaxed pattern that passes lines over without backtracking.)
        let hostile = format!(
            "Nov  3 15:35:12 gw app: {}c b from 192.0.2.1",
            "a".repeat(64)
        );
        assert!(ips(&m, "app.log", &hostile).is_empty());
        assert_eq!(m.step_limit_reached(), [("f2b/blowup".to_string(), 1)]);
    }

    /// Imported rules have words: a file only they read gets a raw filter, and a line without
    /// any of their words is passed over before it is cut; a rule whose every match is "no
    /// failure" adds no words.
    #[test]
    fn imported_rules_filter_lines_by_their_words() {
        let m = imported();
        assert_eq!(m.special_silent, [true, false, false, false]);
        assert_eq!(m.special_words[0].as_deref(), Some(&[][..]));
        let rules = m.rules_for(Path::new("app.log"));
        let raw = rules.raw_filter().expect("a raw filter");
        for line in [
            "Nov  3 15:35:12 gw app: Failed for bob from 192.0.2.1",
            "Nov  3 15:35:12 gw app: 'bob' failed from 192.0.2.1",
        ] {
            assert!(raw.is_match(line), "{line}");
            assert_eq!(ips(&m, "app.log", line).len(), 1, "{line}");
        }
        let quiet = "Nov  3 15:35:12 gw cron: session opened for bob";
        assert!(!raw.is_match(quiet));
        assert!(ips(&m, "app.log", quiet).is_empty());
    }

    #[test]
    fn hostile_lines_do_not_match_or_panic() {
        let m = matcher();
        let long = "A".repeat(1 << 20);
        for line in [
            "",
            "\0\0\0",
            "\u{1b}[31mFailed password\u{1b}[0m",
            long.as_str(),
            "{\"a\":[[[[[[[[[[[[]]]]]]]]]]]]}",
        ] {
            assert!(ips(&m, "auth.log", line).is_empty());
            assert!(ips(&m, "eve.json", line).is_empty());
        }
    }
}
