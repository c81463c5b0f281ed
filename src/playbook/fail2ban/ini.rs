//! fail2ban's configuration files read as fail2ban reads them (Python's `configparser` with
//! fail2ban's additions): sections, `key = value` with indented continuation lines, `#`/`;`
//! comment lines and ` ;` inline comments, `[INCLUDES] before/after` (recursively, each file
//! followed by its `.local`), later files overriding earlier ones while the overridden value
//! stays reachable as `%(known/key)s`, and `%(key)s`, `%(section/key)s` interpolation with
//! `[DEFAULT]` as the fallback.
//!
//! Only reads files; a loop of includes or an interpolation that does not end is an error,
//! never a hang.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

/// Sections (by name) of key → value; keys are lower-case as configparser makes them.
type Sections = BTreeMap<String, BTreeMap<String, String>>;

/// Why a filter's files could not be read.
#[derive(Debug, thiserror::Error)]
pub enum IniError {
    #[error("cannot read {path}: {source}")]
    Read {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("{path}:{line}: {message}")]
    Syntax {
        path: PathBuf,
        line: usize,
        message: String,
    },
    #[error("interpolation of `{key}` in [{section}]: {message}")]
    Interpolation {
        section: String,
        key: String,
        message: String,
    },
}

/// A filter's configuration: its file and every include, merged in fail2ban's order.
#[derive(Debug, Default, Clone)]
pub struct Config {
    defaults: BTreeMap<String, String>,
    sections: Sections,
    /// The files read, in order (for messages).
    pub files: Vec<PathBuf>,
}

/// How deep `%(…)s` may nest (configparser's MAX_INTERPOLATION_DEPTH).
const MAX_DEPTH: usize = 10;

impl Config {
    /// Reads `path` with its includes, as fail2ban's `SafeConfigParserWithIncludes` does.
    pub fn read(path: &Path) -> Result<Config, IniError> {
        Config::read_set(&[path.to_path_buf()])
    }

    /// Reads `files` in order, each with its includes, as fail2ban reads a set such as
    /// `jail.conf`, `jail.d/*.conf`, `jail.local`, `jail.d/*.local`: a `.conf`'s `.local` is
    /// read right after it unless the set lists it itself.
    pub fn read_set(files: &[PathBuf]) -> Result<Config, IniError> {
        let mut order = Vec::new();
        for file in files {
            includes(file, &mut Vec::new(), &mut order, files)?;
        }
        let mut config = Config::default();
        for file in order {
            let parsed = parse_file(&file)?;
            for (name, options) in parsed {
                if name == "DEFAULT" {
                    config.defaults.extend(options);
                    continue;
                }
                match config.sections.get_mut(&name) {
                    Some(existing) => {
                        let known: BTreeMap<String, String> = existing
                            .iter()
                            .filter(|(k, _)| options.contains_key(*k))
                            .map(|(k, v)| (k.clone(), v.clone()))
                            .collect();
                        existing.extend(options);
                        config
                            .sections
                            .entry(format!("KNOWN/{name}"))
                            .or_default()
                            .extend(known);
                    }
                    None => {
                        config.sections.insert(name, options);
                    }
                }
            }
            config.files.push(file);
        }
        Ok(config)
    }

    /// The names of the sections (without `[DEFAULT]`), in name order.
    pub fn sections(&self) -> Vec<String> {
        self.sections.keys().cloned().collect()
    }

    /// Whether the section itself (not `[DEFAULT]`) sets `key`.
    pub fn defines(&self, section: &str, key: &str) -> bool {
        self.sections
            .get(section)
            .is_some_and(|s| s.contains_key(&key.to_ascii_lowercase()))
    }

    /// Whether the section exists.
    pub fn has_section(&self, section: &str) -> bool {
        self.sections.contains_key(section)
    }

    /// The option names of a section (without `[DEFAULT]`'s).
    pub fn keys(&self, section: &str) -> Vec<String> {
        self.sections
            .get(section)
            .map(|s| s.keys().cloned().collect())
            .unwrap_or_default()
    }

    /// The raw value of `key`: `vars` first, then the section, then `[DEFAULT]`; `sec/key`
    /// reads another section (`known/key`: the value this section's key had before a later file
    /// overrode it, else `[DEFAULT]`'s).
    fn raw(&self, section: &str, key: &str, vars: &BTreeMap<String, String>) -> Option<String> {
        if let Some((sec, opt)) = key.split_once('/') {
            let lower = sec.to_ascii_lowercase();
            let found = if lower == "known" {
                self.sections
                    .get(&format!("KNOWN/{section}"))
                    .and_then(|s| s.get(opt))
            } else if lower == "default" {
                None
            } else {
                self.sections.get(sec).and_then(|s| s.get(opt))
            };
            if let Some(v) = found {
                return Some(v.clone());
            }
            return self.defaults.get(opt).cloned();
        }
        vars.get(key)
            .or_else(|| self.sections.get(section).and_then(|s| s.get(key)))
            .or_else(|| self.defaults.get(key))
            .cloned()
    }

    /// The value of `key` in `section`, `%(…)s` interpolated; `None` when it is not set.
    pub fn get(
        &self,
        section: &str,
        key: &str,
        vars: &BTreeMap<String, String>,
    ) -> Result<Option<String>, IniError> {
        let Some(raw) = self.raw(section, key, vars) else {
            return Ok(None);
        };
        self.interpolate(section, key, &raw, vars, 1).map(Some)
    }

    fn interpolate(
        &self,
        section: &str,
        key: &str,
        value: &str,
        vars: &BTreeMap<String, String>,
        depth: usize,
    ) -> Result<String, IniError> {
        let err = |message: String| IniError::Interpolation {
            section: section.to_string(),
            key: key.to_string(),
            message,
        };
        if depth > MAX_DEPTH {
            return Err(err(format!("nested deeper than {MAX_DEPTH}")));
        }
        let mut out = String::with_capacity(value.len());
        let mut rest = value;
        while let Some(at) = rest.find('%') {
            out.push_str(&rest[..at]);
            let after = &rest[at + 1..];
            if let Some(tail) = after.strip_prefix('%') {
                out.push('%');
                rest = tail;
            } else if let Some(tail) = after.strip_prefix('(') {
                let Some((name, tail)) = tail.split_once(")s") else {
                    return Err(err(format!("bad interpolation syntax in `{value}`")));
                };
                let name = name.to_ascii_lowercase();
                let raw = self
                    .raw(section, &name, vars)
                    .ok_or_else(|| err(format!("`%({name})s` names no option")))?;
                out.push_str(&self.interpolate(section, &name, &raw, vars, depth + 1)?);
                rest = tail;
            } else {
                return Err(err("'%' must be followed by '%' or '('".into()));
            }
        }
        out.push_str(rest);
        Ok(out)
    }
}

/// The files of `path` in reading order: its `before` includes, itself, its `.local`, its
/// `after` includes; an include already on the way to this file is skipped (a loop).
fn includes(
    path: &Path,
    seen: &mut Vec<PathBuf>,
    order: &mut Vec<PathBuf>,
    set: &[PathBuf],
) -> Result<(), IniError> {
    let mut with_local = vec![path.to_path_buf()];
    if path.extension().is_some_and(|e| e == "conf") {
        let local = path.with_extension("local");
        if local.is_file() && !set.contains(&local) {
            with_local.push(local);
        }
    }
    for file in with_local {
        if !file.is_file() {
            // fail2ban reads missing includes (common.local) as nothing.
            if file == path && seen.is_empty() {
                return Err(IniError::Read {
                    path: file,
                    source: std::io::Error::from(std::io::ErrorKind::NotFound),
                });
            }
            continue;
        }
        let parsed = parse_file(&file)?;
        let dir = file.parent().unwrap_or(Path::new(".")).to_path_buf();
        let listed = |which: &str| -> Vec<PathBuf> {
            parsed
                .get("INCLUDES")
                .and_then(|s| s.get(which))
                .map(|v| {
                    v.lines()
                        .map(str::trim)
                        .filter(|l| !l.is_empty())
                        .map(|l| dir.join(l))
                        .collect()
                })
                .unwrap_or_default()
        };
        seen.push(file.clone());
        for before in listed("before") {
            if !seen.contains(&before) {
                includes(&before, seen, order, set)?;
            }
        }
        order.push(file.clone());
        for after in listed("after") {
            if !seen.contains(&after) {
                includes(&after, seen, order, set)?;
            }
        }
        seen.pop();
    }
    Ok(())
}

/// One file's sections, as configparser reads them (values joined by newlines).
fn parse_file(path: &Path) -> Result<Sections, IniError> {
    let bytes = std::fs::read(path).map_err(|source| IniError::Read {
        path: path.to_path_buf(),
        source,
    })?;
    parse(path, &String::from_utf8_lossy(&bytes))
}

/// Parses configparser's syntax; `path` only names the file in errors.
pub fn parse(path: &Path, text: &str) -> Result<Sections, IniError> {
    let mut sections: Sections = BTreeMap::new();
    let mut section: Option<String> = None;
    // The option being read and its lines; its indentation.
    let mut option: Option<(String, Vec<String>)> = None;
    let mut indent_level = 0usize;
    let flush = |sections: &mut Sections,
                 section: &Option<String>,
                 option: &mut Option<(String, Vec<String>)>| {
        if let (Some(s), Some((key, lines))) = (section, option.take()) {
            let value = lines.join("\n").trim_end().to_string();
            sections.entry(s.clone()).or_default().insert(key, value);
        }
    };
    for (number, line) in text.lines().enumerate() {
        let line = line.strip_suffix('\r').unwrap_or(line);
        let mut comment_start = None;
        // An inline comment starts at ';' at the line's start or after whitespace.
        for (i, c) in line.char_indices() {
            if c == ';' && (i == 0 || line[..i].ends_with(char::is_whitespace)) {
                comment_start = Some(i);
                break;
            }
        }
        let stripped = line.trim();
        if stripped.starts_with('#') || stripped.starts_with(';') {
            comment_start = Some(0);
        }
        let value = line[..comment_start.unwrap_or(line.len())].trim();
        if value.is_empty() {
            // An empty line stays in a multi-line value (configparser's empty_lines_in_values)
            // unless it held a comment.
            if comment_start.is_none()
                && let Some((_, lines)) = option.as_mut()
            {
                lines.push(String::new());
            }
            continue;
        }
        let indent = line.len() - line.trim_start().len();
        if option.is_some() && indent > indent_level {
            if let Some((_, lines)) = option.as_mut() {
                lines.push(value.to_string());
            }
            continue;
        }
        indent_level = indent;
        if let Some(header) = value.strip_prefix('[').and_then(|v| v.strip_suffix(']')) {
            flush(&mut sections, &section, &mut option);
            sections.entry(header.to_string()).or_default();
            section = Some(header.to_string());
            continue;
        }
        if section.is_none() {
            return Err(IniError::Syntax {
                path: path.to_path_buf(),
                line: number + 1,
                message: "an option before any [section]".into(),
            });
        }
        let Some(split) = value.find(['=', ':']) else {
            return Err(IniError::Syntax {
                path: path.to_path_buf(),
                line: number + 1,
                message: format!("neither `key = value` nor a [section]: {value}"),
            });
        };
        flush(&mut sections, &section, &mut option);
        let key = value[..split].trim_end().to_ascii_lowercase();
        let first = value[split + 1..].trim().to_string();
        option = Some((key, vec![first]));
    }
    flush(&mut sections, &section, &mut option);
    Ok(sections)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn write(dir: &Path, name: &str, text: &str) -> PathBuf {
        let path = dir.join(name);
        std::fs::write(&path, text).expect("write");
        path
    }

    #[test]
    fn continuation_lines_comments_and_inline_comments() -> Result<(), IniError> {
        let s = parse(
            Path::new("x.conf"),
            "# head\n[Definition]\nfailregex = ^a <HOST>$\n            ^b ; why\n  # note\n            ^c;d\nkey: v\n",
        )?;
        assert_eq!(s["Definition"]["failregex"], "^a <HOST>$\n^b\n^c;d");
        assert_eq!(s["Definition"]["key"], "v");
        Ok(())
    }

    #[test]
    fn includes_order_known_values_and_interpolation() -> Result<(), IniError> {
        let dir = tempfile::tempdir().map_err(|source| IniError::Read {
            path: PathBuf::new(),
            source,
        })?;
        write(
            dir.path(),
            "common.conf",
            "[INCLUDES]\nafter = common.local\n[DEFAULT]\n_daemon = \\S*\n__prefix = <_daemon>: %(_host)s\n_host = \\S+\n[Definition]\nfailregex = ^base <HOST>$\n",
        );
        let filter = write(
            dir.path(),
            "f.conf",
            "[INCLUDES]\nbefore = common.conf\n[DEFAULT]\n_daemon = f\n[Definition]\nfailregex = %(known/failregex)s\n            ^%(__prefix)s 100%% <HOST>$\nmode = %(other/mode)s\n[other]\nmode = ddos\n",
        );
        write(dir.path(), "f.local", "[Definition]\nextra = 1\n");
        let config = Config::read(&filter)?;
        assert_eq!(config.files.len(), 3, "{:?}", config.files);
        let vars = BTreeMap::new();
        assert_eq!(
            config.get("Definition", "failregex", &vars)?.as_deref(),
            Some("^base <HOST>$\n^<_daemon>: \\S+ 100% <HOST>$")
        );
        assert_eq!(
            config.get("Definition", "mode", &vars)?.as_deref(),
            Some("ddos")
        );
        assert_eq!(
            config.get("Definition", "extra", &vars)?.as_deref(),
            Some("1")
        );
        let vars = BTreeMap::from([("_host".to_string(), "H".to_string())]);
        assert_eq!(
            config.get("Definition", "failregex", &vars)?.as_deref(),
            Some("^base <HOST>$\n^<_daemon>: H 100% <HOST>$")
        );
        Ok(())
    }

    #[test]
    fn self_reference_and_include_loops_end() -> Result<(), IniError> {
        let dir = tempfile::tempdir().map_err(|source| IniError::Read {
            path: PathBuf::new(),
            source,
        })?;
        let a = write(
            dir.path(),
            "a.conf",
            "[INCLUDES]\nbefore = b.conf\n[Definition]\nx = %(x)s\n",
        );
        write(dir.path(), "b.conf", "[INCLUDES]\nbefore = a.conf\n");
        let config = Config::read(&a)?;
        let err = config
            .get("Definition", "x", &BTreeMap::new())
            .expect_err("loop");
        assert!(err.to_string().contains("deeper"), "{err}");
        Ok(())
    }
}
