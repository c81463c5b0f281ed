//! The jails of a `jail.conf`/`jail.local` (`--jail`): for each filter, the `maxretry` and
//! `findtime` that become the playbook's threshold, the filter mode a jail asks for
//! (`filter = sshd[mode=aggressive]`, or `mode = …`), and the logs it reads (`logpath`, or the
//! journal with `backend = systemd` and the `journalmatch`). Values a jail lacks come from the
//! file's `[DEFAULT]`, then from fail2ban's own defaults (5 within 10 minutes).
//!
//! `jail.conf` or `jail.local` is read as fail2ban reads its jails: `jail.conf`, `jail.d/*.conf`,
//! `jail.local`, `jail.d/*.local` of that directory, in that order, each with its includes
//! (`paths-debian.conf`, where `%(sshd_log)s` is defined). Any other file is read alone.

use super::ini::{Config, IniError};
use super::{DEFAULT_FINDTIME, DEFAULT_MAXRETRY};
use crate::duration::Span;
use std::collections::BTreeMap;
use std::path::Path;

/// What one jail (or the defaults) says about a filter.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct JailFor {
    pub maxretry: Option<u32>,
    pub findtime: Option<Span>,
    pub mode: Option<String>,
    /// The jail's name (its section), when a jail uses the filter.
    pub name: Option<String>,
    /// The files it reads (`logpath`, one per line, without fail2ban's `head`/`tail` option).
    pub logpath: Vec<String>,
    /// `backend` (`auto`, `systemd`, …).
    pub backend: Option<String>,
    /// The jail's own `journalmatch` (over the filter's).
    pub journalmatch: Option<String>,
}

impl JailFor {
    /// Whether the jail reads the systemd journal (fail2ban then ignores `logpath`).
    pub fn reads_journal(&self) -> bool {
        self.backend
            .as_deref()
            .is_some_and(|b| b.trim().starts_with("systemd"))
    }
}

impl JailFor {
    /// `(maxretry, findtime)` with fail2ban's defaults for what is unset.
    pub fn limits(&self) -> (u32, Span) {
        (
            self.maxretry.unwrap_or(DEFAULT_MAXRETRY),
            self.findtime.unwrap_or(DEFAULT_FINDTIME),
        )
    }
}

/// The jails of one file, by the filter each uses.
#[derive(Debug, Clone, Default)]
pub struct Jails {
    defaults: JailFor,
    by_filter: BTreeMap<String, JailFor>,
}

impl Jails {
    /// Reads a jail file (with its includes), or fail2ban's whole jail set when it is
    /// `jail.conf` or `jail.local`.
    pub fn read(path: &Path) -> Result<Jails, String> {
        let config = Config::read_set(&jail_files(path)).map_err(|e| e.to_string())?;
        let none = BTreeMap::new();
        let get = |section: &str,
                   key: &str,
                   vars: &BTreeMap<String, String>|
         -> Result<Option<String>, IniError> { config.get(section, key, vars) };
        let defaults = JailFor {
            maxretry: parse_count(get("DEFAULT", "maxretry", &none).ok().flatten())?,
            findtime: parse_time(get("DEFAULT", "findtime", &none).ok().flatten())?,
            ..JailFor::default()
        };
        let mut by_filter: BTreeMap<String, JailFor> = BTreeMap::new();
        for section in config.sections() {
            if section == "INCLUDES" || section.starts_with("KNOWN/") {
                continue;
            }
            let vars = BTreeMap::from([("__name__".to_string(), section.clone())]);
            let value = |key: &str| get(&section, key, &vars).map_err(|e| e.to_string());
            let enabled =
                value("enabled")?.is_some_and(|v| matches!(v.trim(), "true" | "yes" | "1" | "on"));
            let filter = value("filter")?.unwrap_or_else(|| section.clone());
            let (name, options) = split_filter(&filter);
            let jail = JailFor {
                maxretry: parse_count(value("maxretry")?)?,
                findtime: parse_time(value("findtime")?)?,
                mode: options
                    .get("mode")
                    .cloned()
                    .or(value("mode")?)
                    .filter(|m| !m.is_empty()),
                name: Some(section.clone()),
                logpath: value("logpath")?.map(|v| logpaths(&v)).unwrap_or_default(),
                backend: value("backend")?.filter(|b| !b.trim().is_empty()),
                journalmatch: value("journalmatch")?.filter(|m| !m.trim().is_empty()),
            };
            // An enabled jail wins over a disabled one for the same filter.
            if enabled || !by_filter.contains_key(&name) {
                by_filter.insert(name, jail);
            }
        }
        Ok(Jails {
            defaults,
            by_filter,
        })
    }

    /// What the jails say for `filter`.
    pub fn for_filter(&self, filter: &str) -> JailFor {
        let jail = self.by_filter.get(filter);
        JailFor {
            maxretry: jail.and_then(|j| j.maxretry).or(self.defaults.maxretry),
            findtime: jail.and_then(|j| j.findtime).or(self.defaults.findtime),
            mode: jail.and_then(|j| j.mode.clone()),
            name: jail.and_then(|j| j.name.clone()),
            logpath: jail.map(|j| j.logpath.clone()).unwrap_or_default(),
            backend: jail.and_then(|j| j.backend.clone()),
            journalmatch: jail.and_then(|j| j.journalmatch.clone()),
        }
    }
}

/// The files fail2ban reads for the jail file `path`: its whole set for `jail.conf` or
/// `jail.local` (`jail.conf`, `jail.d/*.conf`, `jail.local`, `jail.d/*.local`, those that
/// exist: Debian ships no `jail.local`), else `path` alone.
fn jail_files(path: &Path) -> Vec<std::path::PathBuf> {
    let name = path.file_name().and_then(|n| n.to_str()).unwrap_or("");
    let Some(dir) = path
        .parent()
        .filter(|_| matches!(name, "jail.conf" | "jail.local"))
    else {
        return vec![path.to_path_buf()];
    };
    let in_d = |ext: &str| -> Vec<std::path::PathBuf> {
        let mut found: Vec<_> = std::fs::read_dir(dir.join("jail.d"))
            .into_iter()
            .flatten()
            .flatten()
            .map(|e| e.path())
            .filter(|p| p.extension().is_some_and(|e| e == ext) && p.is_file())
            .collect();
        found.sort();
        found
    };
    let mut files = Vec::new();
    let conf = dir.join("jail.conf");
    if conf.is_file() {
        files.push(conf);
    }
    files.extend(in_d("conf"));
    let local = dir.join("jail.local");
    if local.is_file() {
        files.push(local);
    }
    files.extend(in_d("local"));
    // None of the set exists: reading `path` says so.
    if files.is_empty() {
        files.push(path.to_path_buf());
    }
    files
}

/// `logpath`'s files, one per line, each without fail2ban's trailing ` head`/` tail`.
fn logpaths(value: &str) -> Vec<String> {
    value
        .lines()
        .map(str::trim)
        .filter(|l| !l.is_empty())
        .map(|l| match l.rsplit_once(' ') {
            Some((path, "head" | "tail")) => path.trim().to_string(),
            _ => l.to_string(),
        })
        .collect()
}

/// `sshd[mode=aggressive, port=22]` → `sshd` and its options.
fn split_filter(value: &str) -> (String, BTreeMap<String, String>) {
    let value = value.lines().next().unwrap_or("").trim();
    let Some((name, rest)) = value.split_once('[') else {
        return (value.to_string(), BTreeMap::new());
    };
    let inner = rest.rsplit_once(']').map_or(rest, |(i, _)| i);
    let options = inner
        .split(',')
        .filter_map(|kv| kv.split_once('='))
        .map(|(k, v)| {
            (
                k.trim().to_string(),
                v.trim().trim_matches(['"', '\'']).to_string(),
            )
        })
        .collect();
    (name.trim().to_string(), options)
}

fn parse_count(value: Option<String>) -> Result<Option<u32>, String> {
    match value {
        None => Ok(None),
        Some(v) => v
            .trim()
            .parse::<u32>()
            .ok()
            .filter(|n| *n > 0)
            .map(Some)
            .ok_or_else(|| format!("maxretry = {v} is not a positive number")),
    }
}

fn parse_time(value: Option<String>) -> Result<Option<Span>, String> {
    match value {
        None => Ok(None),
        Some(v) => seconds(&v)
            .and_then(|s| format!("{s}s").parse::<Span>().ok())
            .map(Some)
            .ok_or_else(|| format!("findtime = {v} is not a time fail2ban would read")),
    }
}

/// fail2ban's time spans (`MyTime.str2seconds`): a number of seconds, or numbers with units
/// (`10m`, `1h 30m`, `2d`, `1w`, `1mo`, `1y`).
pub fn seconds(text: &str) -> Option<u64> {
    let text = text.trim().to_ascii_lowercase();
    if let Ok(n) = text.parse::<u64>() {
        return Some(n);
    }
    let mut total = 0u64;
    let mut rest = text.as_str();
    while !rest.trim_start().is_empty() {
        rest = rest.trim_start();
        let digits = rest
            .find(|c: char| !c.is_ascii_digit())
            .unwrap_or(rest.len());
        let n: u64 = rest[..digits].parse().ok()?;
        rest = rest[digits..].trim_start();
        let unit_len = rest
            .find(|c: char| !c.is_ascii_alphabetic())
            .unwrap_or(rest.len());
        let unit = &rest[..unit_len];
        let factor = match unit {
            "" | "s" | "sec" | "secs" | "second" | "seconds" => 1,
            "m" | "mi" | "min" | "mins" | "minute" | "minutes" => 60,
            "h" | "hour" | "hours" => 3_600,
            "d" | "day" | "days" => 86_400,
            "w" | "week" | "weeks" => 604_800,
            "mo" | "mon" | "month" | "months" => 2_629_800,
            "y" | "year" | "years" => 31_557_600,
            _ => return None,
        };
        total = total.checked_add(n.checked_mul(factor)?)?;
        rest = &rest[unit_len..];
    }
    Some(total)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn fail2bans_time_spans() {
        for (text, secs) in [
            ("600", Some(600)),
            ("10m", Some(600)),
            ("1h 30m", Some(5400)),
            ("2d", Some(172_800)),
            ("1w", Some(604_800)),
            ("ten", None),
        ] {
            assert_eq!(seconds(text), secs, "{text}");
        }
    }

    #[test]
    fn jails_give_thresholds_and_modes_by_filter() -> Result<(), String> {
        let dir = tempfile::tempdir().map_err(|e| e.to_string())?;
        let path = dir.path().join("jail.local");
        std::fs::write(
            &path,
            "[DEFAULT]\nmaxretry = 3\nfindtime = 1h\n[sshd]\nenabled = true\nmode = aggressive\nmaxretry = 4\n[postfix-sasl]\nfilter = postfix[mode=auth]\nfindtime = 600\n[dovecot]\nenabled = false\n",
        )
        .map_err(|e| e.to_string())?;
        let jails = Jails::read(&path)?;
        let ssh = jails.for_filter("sshd");
        assert_eq!(ssh.limits(), (4, Span::from_secs(3600)));
        assert_eq!(ssh.mode.as_deref(), Some("aggressive"));
        let postfix = jails.for_filter("postfix");
        assert_eq!(postfix.limits(), (3, Span::from_secs(600)));
        assert_eq!(postfix.mode.as_deref(), Some("auth"));
        assert_eq!(
            jails.for_filter("nginx-http-auth").limits(),
            (3, Span::from_secs(3600))
        );
        assert_eq!(
            JailFor::default().limits(),
            (DEFAULT_MAXRETRY, DEFAULT_FINDTIME)
        );
        Ok(())
    }

    /// `jail.local` is read with `jail.conf`, `jail.d/*.conf` and `jail.d/*.local` in fail2ban's
    /// order, each with its includes (`paths-*.conf`, where the log paths are).
    #[test]
    fn jails_give_their_logs() -> Result<(), String> {
        let dir = tempfile::tempdir().map_err(|e| e.to_string())?;
        let write = |name: &str, text: &str| std::fs::write(dir.path().join(name), text);
        std::fs::create_dir(dir.path().join("jail.d")).map_err(|e| e.to_string())?;
        write("paths-common.conf", "[DEFAULT]\nsyslog_authpriv = /var/log/auth.log\nsshd_log = %(syslog_authpriv)s\nsshd_backend = auto\n")
            .map_err(|e| e.to_string())?;
        write(
            "jail.conf",
            "[INCLUDES]\nbefore = paths-common.conf\n[DEFAULT]\nmaxretry = 5\n[sshd]\nlogpath = %(sshd_log)s\nbackend = %(sshd_backend)s\n[postfix]\nlogpath = /var/log/mail.log\n           /var/log/mail.warn tail\n[apache-auth]\nlogpath = /var/log/apache2/*error.log\n",
        )
        .map_err(|e| e.to_string())?;
        write(
            "jail.d/debian.conf",
            "[sshd]\nenabled = true\nmaxretry = 4\n",
        )
        .map_err(|e| e.to_string())?;
        write("jail.local", "[dovecot]\nenabled = true\nbackend = systemd\njournalmatch = _SYSTEMD_UNIT=dovecot.service\n")
            .map_err(|e| e.to_string())?;
        write("jail.d/late.local", "[sshd]\nmaxretry = 3\n").map_err(|e| e.to_string())?;
        let jails = Jails::read(&dir.path().join("jail.local"))?;
        assert!(Jails::read(&dir.path().join("nowhere/jail.local")).is_err());
        let ssh = jails.for_filter("sshd");
        assert_eq!(ssh.logpath, ["/var/log/auth.log"]);
        assert_eq!(ssh.maxretry, Some(3), "jail.d/*.local last");
        assert!(!ssh.reads_journal());
        assert_eq!(
            jails.for_filter("postfix").logpath,
            ["/var/log/mail.log", "/var/log/mail.warn"]
        );
        let dovecot = jails.for_filter("dovecot");
        assert!(dovecot.reads_journal());
        assert_eq!(
            dovecot.journalmatch.as_deref(),
            Some("_SYSTEMD_UNIT=dovecot.service")
        );
        assert_eq!(jails.for_filter("nothing").name, None);
        // Another name is read alone.
        std::fs::copy(dir.path().join("jail.local"), dir.path().join("mine.conf"))
            .map_err(|e| e.to_string())?;
        let alone = Jails::read(&dir.path().join("mine.conf"))?;
        assert_eq!(alone.for_filter("sshd").name, None);
        Ok(())
    }
}
