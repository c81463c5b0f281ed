//! fail2ban's regular expressions made into ours: first its tags (`<HOST>`, `<ADDR>`, `<F-USER>`
//! …) expanded as `failregex.py` expands them, then Python's `re` syntax rewritten for the Rust
//! engines, token by token.
//!
//! What changes on the way: `<HOST>`'s three groups (IPv4, IPv6, host name) all fill the `ip`
//! field (`ip`, `ip__6`, `ip__dns`: see `playbook::field_name`), `alt_user` fills `user`, a
//! name used twice gets a `__N` suffix, `\Z` is `\z`, a `{` that is no repetition is escaped, a
//! character class is spelled so that Rust's nested classes and set operators cannot read it
//! differently, and global flags move to the front where Python applies them. Look-around,
//! backreferences, conditionals, atomic groups and possessive repetitions are kept and mark the
//! pattern for the backtracking engine. Anything else Python accepts that we cannot say the same
//! way is an error naming it, never a silent change of meaning.

use std::collections::BTreeMap;

/// fail2ban's address patterns (`server/ipdns.py`, `server/failregex.py`). IPv6's final
/// `(?<=:):` is always preceded by a `:` there (every repeated unit ends with one), so `:`
/// alone says the same without look-behind.
const IP4: &str = r"(?:\d{1,3}\.){3}\d{1,3}";
const IP6: &str = r"(?:[0-9a-fA-F]{1,4}::?|::){1,7}(?:[0-9a-fA-F]{1,4}|:)";
const DNS: &str = r"[\w\-.^_]*\w";

/// A translated pattern.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Translated {
    pub pattern: String,
    /// It needs the backtracking engine.
    pub backtrack: bool,
    /// Python's pattern started with `^` (after its flags).
    pub anchored: bool,
    /// Capturing groups before the `content` group (for a prefregex), else all of them.
    pub groups_before_content: Option<usize>,
    /// It holds `<SKIPLINES>` (a multi-line pattern).
    pub multiline: bool,
}

/// How to translate.
#[derive(Debug, Clone, Copy, Default)]
pub struct Mode {
    /// The pattern is a failregex matched inside a prefregex's `<F-CONTENT>`: its `^` is the
    /// content's start, which the combined pattern has already reached.
    pub in_content: bool,
    /// Added to numbered group references (the groups of the prefregex before the content).
    pub group_offset: usize,
}

/// The group names already used in one combined pattern (Python's → ours).
#[derive(Debug, Default, Clone)]
pub struct Names {
    map: BTreeMap<String, String>,
    used: BTreeMap<String, usize>,
}

impl Names {
    /// Our name for a new Python group `name`.
    fn define(&mut self, name: &str) -> String {
        let base = field_of(name);
        let n = self.used.entry(base.clone()).or_insert(0);
        *n += 1;
        let ours = match (*n, name) {
            (1, _) => base,
            (_, "ip6") => format!("{base}__6"),
            (_, "dns") => format!("{base}__dns"),
            (k, _) => format!("{base}__{k}"),
        };
        self.map.insert(name.to_string(), ours.clone());
        ours
    }

    /// Our name for a reference to Python group `name`.
    fn refer(&self, name: &str) -> String {
        self.map
            .get(name)
            .cloned()
            .unwrap_or_else(|| field_of(name))
    }
}

/// The field a Python group fills: `<HOST>`'s groups fill `ip`, `alt_X_N` fills `X`.
fn field_of(name: &str) -> String {
    let name = match name {
        "ip4" | "ip6" | "dns" => "ip",
        // A login that succeeded (sshd's `Accepted`): fail2ban counts it as no failure.
        "mlfgained" => "nofail",
        other => other,
    };
    let name = name
        .strip_prefix("alt_")
        .map(|rest| rest.trim_end_matches(|c: char| c.is_ascii_digit()))
        .map(|rest| rest.trim_end_matches('_'))
        .filter(|rest| !rest.is_empty())
        .unwrap_or(name);
    let mut out: String = name
        .chars()
        .map(|c| if c.is_ascii_alphanumeric() { c } else { '_' })
        .collect();
    while out.contains("__") {
        out = out.replace("__", "_");
    }
    if out.is_empty() || out.starts_with(|c: char| c.is_ascii_digit()) {
        out.insert(0, 'g');
    }
    out
}

/// fail2ban's tags expanded (`Regex._resolveHostTag` with `usedns` other than `no`); the
/// result is still Python syntax.
pub fn expand_tags(regex: &str) -> String {
    let host4 = format!(r"(?:::f{{4,6}}:)?(?P<ip4>{IP4})");
    let host6 = format!(r"(?P<ip6>{IP6})");
    let addr = format!(r"\[?(?:{host4}|{host6})\]?");
    let host = format!(r"(?:{addr}|(?P<dns>{DNS}))");
    let cidr = r"(?P<cidr>\d+)";
    let subnet = format!(r"\[?(?:{host4}|{host6})(?:/{cidr})?\]?");
    let mut open: Vec<String> = Vec::new();
    let mut out = String::with_capacity(regex.len() * 2);
    let mut rest = regex;
    while let Some(at) = rest.find('<') {
        out.push_str(&rest[..at]);
        let after = &rest[at..];
        let Some((tag, len)) = tag_at(after) else {
            out.push('<');
            rest = &after[1..];
            continue;
        };
        let replacement = match tag {
            "HOST" => host.clone(),
            "ADDR" | "F-ADDR/" => addr.clone(),
            "IP4" | "F-IP4/" => format!("(?P<ip4>{IP4})"),
            "IP6" | "F-IP6/" => host6.clone(),
            "DNS" | "F-DNS/" => format!("(?P<dns>{DNS})"),
            "CIDR" | "F-CIDR/" => cidr.to_string(),
            "SUBNET" | "F-SUBNET/" => subnet.clone(),
            "F-ID/" => r"(?P<fid>\S+)".to_string(),
            "F-PORT/" => r"(?P<fport>\w+)".to_string(),
            "SKIPLINES" => SKIPLINES.to_string(),
            other => match custom(other) {
                Some((true, name)) if open.contains(&name) => ")".to_string(),
                Some((true, _)) => after[..len].to_string(),
                Some((false, name)) => {
                    open.push(name.clone());
                    let group = match name.as_str() {
                        "id" => "fid".to_string(),
                        "port" => "fport".to_string(),
                        n => n.to_ascii_lowercase(),
                    };
                    format!("(?P<{group}>")
                }
                None => after[..len].to_string(),
            },
        };
        out.push_str(&replacement);
        rest = &after[len..];
    }
    out.push_str(rest);
    out
}

/// What `<SKIPLINES>` becomes; its presence marks a multi-line pattern.
const SKIPLINES: &str = "\u{0}SKIPLINES\u{0}";

/// The tag at the start of `s` (`<NAME>`, `</NAME>`, `<NAME/>`, NAME of `[\w-]+`) and its
/// length.
fn tag_at(s: &str) -> Option<(&str, usize)> {
    let inner = s.strip_prefix('<')?;
    let end = inner.find('>')?;
    let tag = &inner[..end];
    let core = tag.strip_prefix('/').unwrap_or(tag);
    let core = core.strip_suffix('/').unwrap_or(core);
    let ok = !core.is_empty()
        && core
            .chars()
            .all(|c| c.is_alphanumeric() || c == '_' || c == '-');
    ok.then_some((tag, end + 2))
}

/// `F-NAME` (open) or `/F-NAME` (close): (closing, NAME).
fn custom(tag: &str) -> Option<(bool, String)> {
    let (closing, rest) = match tag.strip_prefix('/') {
        Some(rest) => (true, rest),
        None => (false, tag),
    };
    let name = rest.strip_prefix("F-")?;
    let ok = !name.is_empty()
        && name
            .chars()
            .all(|c| c.is_ascii_uppercase() || c.is_ascii_digit() || c == '_' || c == '-');
    ok.then(|| (closing, name.to_string()))
}

/// Python `re` syntax (tags already expanded) as Rust syntax.
pub fn translate(python: &str, mode: Mode, names: &mut Names) -> Result<Translated, String> {
    let multiline = python.contains(SKIPLINES);
    let chars: Vec<char> = python.chars().collect();
    let mut t = Translator {
        chars: &chars,
        i: 0,
        out: String::with_capacity(python.len() * 2),
        flags: String::new(),
        backtrack: false,
        groups: 0,
        groups_before_content: None,
        mode,
        names,
        started: false,
        anchored: false,
    };
    t.run()?;
    let mut pattern = t.out;
    if !t.flags.is_empty() {
        pattern = format!("(?{}){pattern}", t.flags);
    }
    Ok(Translated {
        pattern,
        backtrack: t.backtrack,
        anchored: t.anchored,
        groups_before_content: t.groups_before_content,
        multiline,
    })
}

struct Translator<'a> {
    chars: &'a [char],
    i: usize,
    out: String,
    /// Global flags, hoisted to the front.
    flags: String,
    backtrack: bool,
    groups: usize,
    groups_before_content: Option<usize>,
    mode: Mode,
    names: &'a mut Names,
    /// Whether anything but flags was read (for `anchored`).
    started: bool,
    anchored: bool,
}

impl Translator<'_> {
    fn peek(&self, k: usize) -> Option<char> {
        self.chars.get(self.i + k).copied()
    }

    fn rest_starts_with(&self, s: &str) -> bool {
        s.chars().enumerate().all(|(k, c)| self.peek(k) == Some(c))
    }

    fn run(&mut self) -> Result<(), String> {
        while let Some(c) = self.peek(0) {
            if c != '(' || !self.is_global_flags() {
                if !self.started {
                    self.anchored = c == '^';
                }
                self.started = true;
            }
            match c {
                '\\' => self.escape()?,
                '[' => self.class()?,
                '(' => self.group()?,
                '{' => self.brace(),
                '}' | ']' => {
                    self.out.push('\\');
                    self.out.push(c);
                    self.i += 1;
                }
                '^' if self.mode.in_content => self.i += 1,
                '*' | '+' | '?' => {
                    self.out.push(c);
                    self.i += 1;
                    self.lazy_or_possessive();
                }
                '\u{0}' if self.rest_starts_with(SKIPLINES) => {
                    self.out.push_str(r"\n(?:.*\n)*?");
                    self.i += SKIPLINES.chars().count();
                }
                _ => {
                    self.out.push(c);
                    self.i += 1;
                }
            }
        }
        Ok(())
    }

    /// After a quantifier: `?` (lazy) is kept, `+` (possessive) needs backtracking.
    fn lazy_or_possessive(&mut self) {
        match self.peek(0) {
            Some('?') => {
                self.out.push('?');
                self.i += 1;
            }
            Some('+') => {
                self.out.push('+');
                self.backtrack = true;
                self.i += 1;
            }
            _ => {}
        }
    }

    /// `{m,n}` as Python reads it: a repetition when it has that form, else a literal `{`.
    fn brace(&mut self) {
        let mut k = 1;
        let mut lo = String::new();
        let mut hi = String::new();
        while let Some(d) = self.peek(k).filter(char::is_ascii_digit) {
            lo.push(d);
            k += 1;
        }
        let comma = self.peek(k) == Some(',');
        if comma {
            k += 1;
            while let Some(d) = self.peek(k).filter(char::is_ascii_digit) {
                hi.push(d);
                k += 1;
            }
        }
        if self.peek(k) != Some('}') {
            self.out.push_str("\\{");
            self.i += 1;
            return;
        }
        self.i += k + 1;
        let lo = if lo.is_empty() { "0".to_string() } else { lo };
        if comma {
            self.out.push_str(&format!("{{{lo},{hi}}}"));
        } else if lo == "0" && self.chars[self.i - 2] == '{' {
            // `{}`: Python reads it as "any number".
            self.out.push('*');
        } else {
            self.out.push_str(&format!("{{{lo}}}"));
        }
        self.lazy_or_possessive();
    }

    /// Whether a `(?flags)` (global flags) starts here.
    fn is_global_flags(&self) -> bool {
        if self.peek(1) != Some('?') {
            return false;
        }
        let mut k = 2;
        while self.peek(k).is_some_and(|c| c.is_ascii_alphabetic()) {
            k += 1;
        }
        k > 2 && self.peek(k) == Some(')')
    }

    fn group(&mut self) -> Result<(), String> {
        // fail2ban turns `((?i)…)` and `(?:(?i)…)` into the scoped `(?i:…)`.
        for lead in ["((?", "(?:(?"] {
            if self.rest_starts_with(lead) {
                let mut k = lead.chars().count();
                let mut flags = String::new();
                while let Some(c) = self.peek(k).filter(char::is_ascii_alphabetic) {
                    flags.push(c);
                    k += 1;
                }
                if !flags.is_empty() && self.peek(k) == Some(')') {
                    let flags = rust_flags(&flags)?;
                    self.out.push_str(&format!("(?{flags}:"));
                    self.i += k + 1;
                    return Ok(());
                }
            }
        }
        if self.peek(1) != Some('?') {
            self.groups += 1;
            self.out.push('(');
            self.i += 1;
            return Ok(());
        }
        let after = |t: &Self, k: usize| t.peek(2 + k);
        match after(self, 0) {
            Some('P') if after(self, 1) == Some('<') => {
                let (name, len) = self.name_until(4, '>')?;
                self.groups += 1;
                if name == "content" && self.groups_before_content.is_none() {
                    self.groups_before_content = Some(self.groups - 1);
                }
                let ours = self.names.define(&name);
                self.out.push_str(&format!("(?P<{ours}>"));
                self.i += 4 + len + 1;
            }
            Some('P') if after(self, 1) == Some('=') => {
                let (name, len) = self.name_until(4, ')')?;
                self.out
                    .push_str(&format!(r"\k<{}>", self.names.refer(&name)));
                self.backtrack = true;
                self.i += 4 + len + 1;
            }
            Some(':') => {
                self.out.push_str("(?:");
                self.i += 3;
            }
            Some('=') | Some('!') | Some('>') => {
                self.out.push_str(&format!("(?{}", self.chars[self.i + 2]));
                self.backtrack = true;
                self.i += 3;
            }
            Some('<') if matches!(after(self, 1), Some('=') | Some('!')) => {
                self.out.push_str(&format!("(?<{}", self.chars[self.i + 3]));
                self.backtrack = true;
                self.i += 4;
            }
            Some('#') => {
                while self.peek(0).is_some_and(|c| c != ')') {
                    self.i += 1;
                }
                self.i += 1;
            }
            Some('(') => {
                let (cond, len) = self.name_until(3, ')')?;
                let target = match cond.parse::<usize>() {
                    Ok(n) => (n + self.mode.group_offset).to_string(),
                    Err(_) => format!("<{}>", self.names.refer(&cond)),
                };
                self.out.push_str(&format!("(?({target})"));
                self.backtrack = true;
                self.i += 3 + len + 1;
            }
            _ => {
                // Flags: `(?i)` global, `(?i:` or `(?i-s:` scoped.
                let mut k = 2;
                let mut on = String::new();
                while let Some(c) = self
                    .peek(k)
                    .filter(|c| c.is_ascii_alphabetic() || *c == '-')
                {
                    on.push(c);
                    k += 1;
                }
                match self.peek(k) {
                    Some(')') if !on.contains('-') && !on.is_empty() => {
                        for f in rust_flags(&on)?.chars() {
                            if !self.flags.contains(f) {
                                self.flags.push(f);
                            }
                        }
                        self.i += k + 1;
                    }
                    Some(':') if !on.is_empty() => {
                        let (plus, minus) = on.split_once('-').unwrap_or((&on, ""));
                        let mut flags = rust_flags(plus)?;
                        if !minus.is_empty() {
                            flags.push('-');
                            flags.push_str(&rust_flags(minus)?);
                        }
                        self.out.push_str(&format!("(?{flags}:"));
                        self.i += k + 1;
                    }
                    _ => {
                        let shown: String = self.chars[self.i..].iter().take(8).collect();
                        return Err(format!("unsupported group syntax `{shown}`"));
                    }
                }
            }
        }
        Ok(())
    }

    /// The name from offset `from` to `end`, and its length in chars.
    fn name_until(&self, from: usize, end: char) -> Result<(String, usize), String> {
        let mut name = String::new();
        let mut k = from;
        loop {
            match self.peek(k) {
                Some(c) if c == end => return Ok((name.clone(), name.chars().count())),
                Some(c) => name.push(c),
                None => return Err("an unterminated group name".into()),
            }
            k += 1;
        }
    }

    fn escape(&mut self) -> Result<(), String> {
        let Some(c) = self.peek(1) else {
            return Err("a pattern ending in a backslash".into());
        };
        self.i += 2;
        match c {
            'd' | 'D' | 'w' | 'W' | 's' | 'S' | 'b' | 'B' | 'A' | 'n' | 't' | 'r' | 'f' | 'v' => {
                self.out.push('\\');
                self.out.push(c);
            }
            'Z' => self.out.push_str(r"\z"),
            'a' => self.out.push_str(r"\x07"),
            '0' => {
                let n = self.octal(0);
                self.out.push_str(&format!(r"\x{{{n:x}}}"));
            }
            '1'..='9' => {
                let mut n = c.to_digit(10).unwrap_or(0) as usize;
                if let Some(d) = self.peek(0).and_then(|d| d.to_digit(10)) {
                    n = n * 10 + d as usize;
                    self.i += 1;
                }
                self.out
                    .push_str(&format!("\\{}", n + self.mode.group_offset));
                self.backtrack = true;
            }
            'x' | 'u' | 'U' => {
                let len = match c {
                    'x' => 2,
                    'u' => 4,
                    _ => 8,
                };
                let hex: String = self.chars[self.i..].iter().take(len).collect();
                if hex.len() != len || !hex.chars().all(|h| h.is_ascii_hexdigit()) {
                    return Err(format!(r"a bad \{c} escape"));
                }
                self.i += len;
                self.out.push_str(&format!(r"\x{{{hex}}}"));
            }
            c if c.is_ascii_alphabetic() => {
                return Err(format!(
                    r"the escape \{c} (Python rejects or we cannot say it)"
                ));
            }
            c => push_literal(&mut self.out, c),
        }
        Ok(())
    }

    /// Up to two more octal digits after a `\0` (already consumed); their value.
    fn octal(&mut self, start: u32) -> u32 {
        let mut n = start;
        for _ in 0..2 {
            match self.peek(0).and_then(|d| d.to_digit(8)) {
                Some(d) => {
                    n = n * 8 + d;
                    self.i += 1;
                }
                None => break,
            }
        }
        n
    }

    /// A character class, respelled item by item.
    fn class(&mut self) -> Result<(), String> {
        self.i += 1;
        let mut out = String::from("[");
        if self.peek(0) == Some('^') {
            out.push('^');
            self.i += 1;
        }
        let mut first = true;
        loop {
            let Some(c) = self.peek(0) else {
                return Err("an unterminated character class".into());
            };
            if c == ']' && !first {
                self.i += 1;
                break;
            }
            first = false;
            let item = self.class_item()?;
            // A range: a single character, `-`, a single character (not `]`).
            if let ClassItem::Char(lo) = item
                && self.peek(0) == Some('-')
                && self.peek(1).is_some_and(|n| n != ']')
            {
                self.i += 1;
                match self.class_item()? {
                    ClassItem::Char(hi) => {
                        push_literal(&mut out, lo);
                        out.push('-');
                        push_literal(&mut out, hi);
                    }
                    ClassItem::Escape(_) => {
                        return Err("a range that ends in a class escape".into());
                    }
                }
                continue;
            }
            match item {
                ClassItem::Char(ch) => push_literal(&mut out, ch),
                ClassItem::Escape(e) => out.push_str(&e),
            }
        }
        out.push(']');
        self.out.push_str(&out);
        Ok(())
    }

    fn class_item(&mut self) -> Result<ClassItem, String> {
        let Some(c) = self.peek(0) else {
            return Err("an unterminated character class".into());
        };
        self.i += 1;
        if c != '\\' {
            return Ok(ClassItem::Char(c));
        }
        let Some(e) = self.peek(0) else {
            return Err("a pattern ending in a backslash".into());
        };
        self.i += 1;
        Ok(match e {
            'd' | 'D' | 'w' | 'W' | 's' | 'S' => ClassItem::Escape(format!("\\{e}")),
            'n' => ClassItem::Char('\n'),
            't' => ClassItem::Char('\t'),
            'r' => ClassItem::Char('\r'),
            'f' => ClassItem::Char('\u{c}'),
            'v' => ClassItem::Char('\u{b}'),
            'a' => ClassItem::Char('\u{7}'),
            'b' => ClassItem::Char('\u{8}'),
            '0'..='7' => {
                let n = self.octal(e.to_digit(8).unwrap_or(0));
                ClassItem::Char(char::from_u32(n).unwrap_or('\0'))
            }
            'x' | 'u' | 'U' => {
                let len = match e {
                    'x' => 2,
                    'u' => 4,
                    _ => 8,
                };
                let hex: String = self.chars[self.i..].iter().take(len).collect();
                self.i += len;
                let n = u32::from_str_radix(&hex, 16).map_err(|_| format!(r"a bad \{e} escape"))?;
                ClassItem::Char(char::from_u32(n).ok_or(format!(r"a bad \{e} escape"))?)
            }
            e if e.is_ascii_alphabetic() => {
                return Err(format!(r"the escape \{e} in a class"));
            }
            e => ClassItem::Char(e),
        })
    }
}

enum ClassItem {
    Char(char),
    /// `\d`, `\w`, `\s` and their negations.
    Escape(String),
}

/// A literal character, escaped where Rust's syntax gives it a meaning (in or out of a class).
fn push_literal(out: &mut String, c: char) {
    match c {
        '\n' => out.push_str(r"\n"),
        '\t' => out.push_str(r"\t"),
        '\r' => out.push_str(r"\r"),
        c if c.is_ascii_control() => out.push_str(&format!(r"\x{:02x}", c as u32)),
        c if regex_syntax::is_meta_character(c) => {
            out.push('\\');
            out.push(c);
        }
        c => out.push(c),
    }
}

/// Python's inline flags as Rust's; the ASCII and locale flags have no counterpart.
fn rust_flags(python: &str) -> Result<String, String> {
    let mut out = String::new();
    for f in python.chars() {
        match f {
            'i' | 'm' | 's' | 'x' => out.push(f),
            'u' => {}
            other => return Err(format!("the inline flag `{other}`")),
        }
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn rust(python: &str) -> Translated {
        translate(&expand_tags(python), Mode::default(), &mut Names::default()).expect(python)
    }

    #[test]
    fn host_fills_one_field_from_any_of_its_groups() -> Result<(), Box<dyn std::error::Error>> {
        let t = rust(r"^Failed for <F-USER>.*</F-USER> from <HOST>( port \d+)?$");
        assert!(!t.backtrack && t.anchored);
        let re = regex::Regex::new(&t.pattern)?;
        let names: Vec<&str> = re.capture_names().flatten().collect();
        assert_eq!(names, ["user", "ip", "ip__6", "ip__dns"]);
        for (line, ip) in [
            ("Failed for bob from 192.0.2.7 port 22", "ip"),
            ("Failed for bob from ::ffff:192.0.2.7", "ip"),
            ("Failed for bob from 2001:db8::1", "ip__6"),
            ("Failed for bob from gw.example.jp", "ip__dns"),
        ] {
            let caps = re.captures(line).ok_or(line)?;
            assert!(caps.name(ip).is_some(), "{line}: {ip}");
        }
        Ok(())
    }

    #[test]
    fn python_only_spellings_are_respelled() -> Result<(), Box<dyn std::error::Error>> {
        for (python, line, matches) in [
            (r"^a{x}\Z", "a{x}", true),
            (r"^[[]x[]]$", "[x]", true),
            (r"^[\w-.]+$", "a-b.c", true),
            (r"^[a&&b]$", "&", true),
            (r"^x{,2}y$", "xxy", true),
            (r"^\<x\>$", "<x>", true),
            (r"^(?:(?i)abc)$", "ABC", true),
            (r"^a(?#comment)b$", "ab", true),
            (r"^a\x41\u0042$", "aAB", true),
            (r"^(:?error)$", ":error", true),
        ] {
            let t = rust(python);
            assert!(!t.backtrack, "{python}");
            let re = regex::Regex::new(&t.pattern).map_err(|e| format!("{python}: {e}"))?;
            assert_eq!(re.is_match(line), matches, "{python} → {}", t.pattern);
        }
        Ok(())
    }

    #[test]
    fn global_flags_apply_to_the_whole_pattern() -> Result<(), Box<dyn std::error::Error>> {
        let t = rust(r"^user (?i)x$");
        assert!(t.pattern.starts_with("(?i)"), "{}", t.pattern);
        assert!(regex::Regex::new(&t.pattern)?.is_match("USER X"));
        Ok(())
    }

    #[test]
    fn look_around_backreferences_and_conditionals_need_backtracking()
    -> Result<(), Box<dyn std::error::Error>> {
        let t = rust(
            r"^Failed (?P<cond_inv>invalid user )?<F-USER>(?P<cond_user>\S+)|(?(cond_inv)(?:(?! from ).)*?|[^:]+)</F-USER> from <HOST>(?(cond_user): |$)",
        );
        assert!(t.backtrack);
        let re = fancy_regex::Regex::new(&t.pattern)?;
        let caps = re
            .captures("Failed invalid user a from b from 192.0.2.9")?
            .ok_or("no match")?;
        assert_eq!(caps.name("ip").map(|m| m.as_str()), Some("192.0.2.9"));
        let t = rust(r#"^(?P<q>['"])(?P<u>.*)(?P=q) from <ADDR>$"#);
        assert!(t.backtrack && t.pattern.contains(r"\k<q>"), "{}", t.pattern);
        let t = rust(r"^(a)\1 <HOST>");
        assert!(t.backtrack);
        Ok(())
    }

    #[test]
    fn alt_groups_and_repeated_names_fill_their_field() -> Result<(), Box<dyn std::error::Error>> {
        let t = rust(
            r"^(?:<F-USER>\S+</F-USER> x|<F-ALT_USER1>\S+</F-ALT_USER1> y|(?P<user>z)) <HOST>",
        );
        let re = regex::Regex::new(&t.pattern)?;
        let names: Vec<&str> = re.capture_names().flatten().collect();
        assert_eq!(&names[..3], ["user", "user__2", "user__3"]);
        Ok(())
    }

    #[test]
    fn in_content_the_caret_is_where_the_content_starts() -> Result<(), Box<dyn std::error::Error>>
    {
        let mut names = Names::default();
        let pref = translate(
            &expand_tags(r"^(\S+) <F-MLFID>x</F-MLFID> <F-CONTENT>.+</F-CONTENT>$"),
            Mode::default(),
            &mut names,
        )?;
        assert_eq!(pref.groups_before_content, Some(2));
        let fail = translate(
            &expand_tags(r"^Failed from <HOST>$|^(a)\1 <HOST>"),
            Mode {
                in_content: true,
                group_offset: 2,
            },
            &mut names,
        )?;
        assert!(fail.pattern.starts_with("Failed"), "{}", fail.pattern);
        assert!(fail.pattern.contains(r"(a)\3"), "{}", fail.pattern);
        assert!(fail.pattern.contains("?P<ip__4>"), "{}", fail.pattern);
        Ok(())
    }

    #[test]
    fn what_cannot_be_said_is_an_error() {
        for python in [r"^a\q", r"^(?L)a", r"^[a", r"^a\"] {
            assert!(
                translate(python, Mode::default(), &mut Names::default()).is_err(),
                "{python}"
            );
        }
    }
}
