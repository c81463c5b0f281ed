//! A filter's options as fail2ban's `FilterReader` resolves them: `[Definition]` values with
//! `%(…)s` interpolated, `[Init]` values over them, the caller's options (`mode`, from `--mode`
//! or the jail's `filter = name[mode=…]`) over both, then `<tag>` references to other options
//! substituted recursively (`<mdre-<mode>>` becomes `<mdre-normal>`, then its value). Tags that
//! name no option (`<HOST>`, `<F-USER>`) stay for the regex translation.

use super::ini::{Config, IniError};
use std::collections::BTreeMap;

/// The options a filter's failure detection is made of.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct FilterOptions {
    pub prefregex: Option<String>,
    /// One regex per line, empty lines dropped.
    pub failregex: Vec<String>,
    pub ignoreregex: Vec<String>,
    pub datepattern: Option<String>,
    pub maxlines: Option<String>,
    pub mode: Option<String>,
    /// What the filter reads from the systemd journal (`_SYSTEMD_UNIT=sshd.service + _COMM=sshd`).
    pub journalmatch: Option<String>,
    /// Whether the filter sets its own `logtype` in `[Definition]` (then a jail's backend does
    /// not choose it).
    pub own_logtype: bool,
}

/// fail2ban's cap on how often one tag may be replaced inside one value (a loop otherwise).
const MAX_TAG_REPLACE_COUNT: usize = 25;

/// The options of the filter in `config`, with `overrides` (e.g. `mode`) taking precedence.
pub fn resolve(
    config: &Config,
    overrides: &BTreeMap<String, String>,
) -> Result<FilterOptions, IniError> {
    let mut combined: BTreeMap<String, String> = BTreeMap::new();
    for key in [
        "prefregex",
        "failregex",
        "ignoreregex",
        "datepattern",
        "maxlines",
        "journalmatch",
    ] {
        if let Some(v) = config.get("Definition", key, overrides)? {
            combined.insert(key.to_string(), v);
        }
    }
    if config.has_section("Init") {
        for key in config.keys("Init") {
            if let Some(v) = config.get("Init", &key, overrides)? {
                combined.entry(format!("known/{key}")).or_insert(v.clone());
                combined.insert(key, v);
            }
        }
    }
    combined.extend(overrides.iter().map(|(k, v)| (k.clone(), v.clone())));
    let lookup =
        |name: &str, done: &BTreeMap<String, String>| -> Result<Option<String>, IniError> {
            if let Some(v) = done.get(name) {
                return Ok(Some(v.clone()));
            }
            config.get("Definition", name, overrides)
        };
    let mut resolved = BTreeMap::new();
    for (key, value) in &combined {
        let v = substitute(key, value, &|name| lookup(name, &combined))?;
        resolved.insert(key.clone(), v);
    }
    let lines = |key: &str| -> Vec<String> {
        resolved
            .get(key)
            .map(|v| {
                v.split('\n')
                    .filter(|l| !l.is_empty())
                    .map(str::to_string)
                    .collect()
            })
            .unwrap_or_default()
    };
    let text = |key: &str| resolved.get(key).filter(|v| !v.trim().is_empty()).cloned();
    Ok(FilterOptions {
        prefregex: text("prefregex"),
        failregex: lines("failregex"),
        ignoreregex: lines("ignoreregex"),
        datepattern: text("datepattern"),
        maxlines: text("maxlines"),
        mode: resolved
            .get("mode")
            .cloned()
            .or(config.get("Definition", "mode", overrides)?),
        journalmatch: text("journalmatch"),
        own_logtype: config.defines("Definition", "logtype"),
    })
}

/// `value` with each `<name>` that `lookup` knows replaced (everywhere in the value), and
/// searched again from there, so that nested tags resolve; unknown tags stay.
fn substitute(
    key: &str,
    value: &str,
    lookup: &dyn Fn(&str) -> Result<Option<String>, IniError>,
) -> Result<String, IniError> {
    let mut value = value.to_string();
    let mut counts: BTreeMap<String, usize> = BTreeMap::new();
    // Passes until one replaces nothing: a replacement inside a tag (`<mdre-<mode>>`) makes a
    // tag that starts before where the pass had got to.
    loop {
        let before = value.clone();
        let mut from = 0;
        while let Some((start, name)) = next_tag(&value, from) {
            let count = counts.get(&name).copied().unwrap_or(0);
            if name == key || count >= MAX_TAG_REPLACE_COUNT {
                return Err(IniError::Interpolation {
                    section: "Definition".into(),
                    key: key.to_string(),
                    message: format!("<{name}> refers to itself"),
                });
            }
            match lookup(&name)? {
                Some(replacement) => {
                    value = value.replace(&format!("<{name}>"), &replacement);
                    counts.insert(name, count + 1);
                    from = start;
                }
                None => from = start + name.len() + 2,
            }
        }
        if value == before {
            return Ok(value);
        }
    }
}

/// The next `<name>` (no space, `<` or `>` inside) at or after byte `from`.
fn next_tag(value: &str, from: usize) -> Option<(usize, String)> {
    let bytes = value.as_bytes();
    let mut i = from;
    while i < bytes.len() {
        if bytes[i] == b'<' {
            let rest = &value[i + 1..];
            let end = rest.find(['>', '<', ' ']);
            if let Some(end) = end
                && end > 0
                && rest.as_bytes()[end] == b'>'
            {
                return Some((i, rest[..end].to_string()));
            }
        }
        i += 1;
    }
    None
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::path::Path;

    fn config(text: &str) -> Config {
        let dir = tempfile::tempdir().expect("dir");
        let path = dir.path().join("f.conf");
        std::fs::write(&path, text).expect("write");
        Config::read(&path).expect("read")
    }

    #[test]
    fn mode_selects_the_variant_through_nested_tags() -> Result<(), IniError> {
        let c = config(
            "[Definition]\nmode = normal\nmdre-normal = ^n <HOST>\nmdre-ddos = ^d <HOST>\n              ^e <HOST>\nfailregex = ^common <HOST>\n            <mdre-<mode>>\nignoreregex =\n",
        );
        let normal = resolve(&c, &BTreeMap::new())?;
        assert_eq!(normal.failregex, ["^common <HOST>", "^n <HOST>"]);
        assert!(normal.ignoreregex.is_empty());
        let ddos = resolve(&c, &BTreeMap::from([("mode".into(), "ddos".into())]))?;
        assert_eq!(ddos.failregex, ["^common <HOST>", "^d <HOST>", "^e <HOST>"]);
        assert_eq!(ddos.mode.as_deref(), Some("ddos"));
        Ok(())
    }

    #[test]
    fn init_overrides_definition_and_unknown_tags_stay() -> Result<(), IniError> {
        let c = config(
            "[Definition]\n_port = 21\nfailregex = ^(?P<x>a) <F-USER>u</F-USER> <port> <HOST>\nport = <_port>\n[Init]\nport = 2121\n",
        );
        let o = resolve(&c, &BTreeMap::new())?;
        assert_eq!(o.failregex, ["^(?P<x>a) <F-USER>u</F-USER> 2121 <HOST>"]);
        Ok(())
    }

    #[test]
    fn a_tag_that_refers_to_itself_is_an_error() {
        let c = config("[Definition]\na = <b>\nb = <a>\nfailregex = <a>\n");
        assert!(resolve(&c, &BTreeMap::new()).is_err());
        let _ = Path::new("");
    }
}
