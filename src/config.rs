//! The daemon's and CLI's configuration: typed, strict, checked before anything starts.
//!
//! Relative paths are taken from the working directory, as a shell user expects; the packaged
//! config uses absolute paths. Secrets (SMTP and IMAP passwords, a password in the store URL) are
//! redacted from `Debug`; a config that holds one inline, or a `password_file`, is refused when
//! other users can read it.

use crate::duration::Span;
use crate::toml_file::{self, TomlError};
use chrono_tz::Tz;
use serde::{Deserialize, Deserializer};
use std::collections::BTreeMap;
use std::fmt;
use std::path::{Path, PathBuf};
use toml::Spanned;

/// Where the packaged configuration lives.
pub const DEFAULT_PATH: &str = "/etc/csirt/csirt.toml";

/// A validated configuration.
#[derive(Deserialize, Debug)]
#[serde(deny_unknown_fields)]
pub struct Config {
    /// Time zone for display, schedules and RFC 3164 timestamps.
    #[serde(default = "default_timezone", deserialize_with = "de_timezone")]
    pub timezone: Tz,
    /// This daemon's name among several on one store; default the host name.
    #[serde(default)]
    pub node: Option<String>,
    /// The playbook directory.
    #[serde(default = "default_playbooks")]
    pub playbooks: PathBuf,
    /// The rules file of personal-information incidents (`/etc/csirt/pii-rules.toml` in the
    /// package); without it, the rules built into this csirt.
    #[serde(default)]
    pub pii_rules: Option<PathBuf>,
    /// The `[contacts]` group told at once when an incident requires a report to
    /// 個人情報保護委員会, and sent its statutory reminders besides `[notify] to`; default `ciso`
    /// (when `[contacts]` has it).
    #[serde(default)]
    pub pii_ciso: Option<Spanned<String>>,
    /// `[levels]`: the city's level (L0-L3) of each severity; default low L0 … critical L3.
    #[serde(default)]
    pub levels: Option<LevelsTable>,
    /// Log level for the daemon (`error`, `warn`, `info`, `debug`, `trace`); `RUST_LOG` wins.
    #[serde(default)]
    pub log_level: Option<String>,
    pub store: StoreConfig,
    #[serde(default)]
    pub logs: Vec<LogSource>,
    /// `[[journal]]`: entries of the systemd journal.
    #[serde(default)]
    pub journal: Vec<JournalSource>,
    #[serde(default)]
    pub intake: Option<Intake>,
    pub notify: Notify,
    #[serde(default)]
    pub smtp: Option<Smtp>,
    /// Named lists of addresses that `[notify] to` and escalations refer to.
    #[serde(default)]
    pub contacts: BTreeMap<String, Vec<Spanned<String>>>,
    /// `[networks]`: the city's own address ranges, which playbooks' `[context]` judge by.
    #[serde(default)]
    pub networks: Option<Networks>,
    /// `[[schedule]]`: digests of open incidents and evaluation reports on a cron schedule.
    #[serde(default)]
    pub schedule: Vec<Schedule>,
    /// `[retention]`: how long the store keeps raw mail and old evidence (housekeeping).
    #[serde(default)]
    pub retention: Retention,
    /// Where this file holds a secret or names a secret file, for the permission check.
    #[serde(skip)]
    secret_sites: Vec<SecretSite>,
    /// What is accepted but looks like a mistake, as `file:line: message`.
    #[serde(skip)]
    warnings: Vec<String>,
}

/// `[levels]` as written: a severity left out keeps its default level.
#[derive(Deserialize, Debug, Clone, Default, PartialEq, Eq)]
#[serde(deny_unknown_fields)]
pub struct LevelsTable {
    #[serde(default)]
    pub critical: Option<Spanned<crate::level::Level>>,
    #[serde(default)]
    pub high: Option<Spanned<crate::level::Level>>,
    #[serde(default)]
    pub medium: Option<Spanned<crate::level::Level>>,
    #[serde(default)]
    pub low: Option<Spanned<crate::level::Level>>,
}

impl LevelsTable {
    fn entry(&self, severity: crate::model::Severity) -> Option<&Spanned<crate::level::Level>> {
        use crate::model::Severity;
        match severity {
            Severity::Critical => self.critical.as_ref(),
            Severity::High => self.high.as_ref(),
            Severity::Medium => self.medium.as_ref(),
            Severity::Low => self.low.as_ref(),
        }
    }

    /// The validated mapping, or the key to blame (its span, when written) and why.
    fn levels(&self) -> Result<crate::level::Levels, (Option<std::ops::Range<usize>>, String)> {
        crate::level::Levels::new(|s| self.entry(s).map(|l| *l.get_ref()))
            .map_err(|(s, m)| (self.entry(s).map(Spanned::span), m))
    }
}

/// The contact group `pii_ciso` names when the config leaves it out.
pub const DEFAULT_PII_CISO: &str = "ciso";

/// A secret the config file holds inline, or a file it names that holds one, and the line.
#[derive(Debug, Clone)]
struct SecretSite {
    line: usize,
    /// `[store] url`, `[smtp] password`, `[smtp] password_file`...
    key: &'static str,
    /// The secret file for `password_file`; `None` for a secret inline in the config.
    file: Option<PathBuf>,
}

/// The keys that hold or name a secret, with their spans: a second, lenient reading of the
/// text (the typed config keeps plain values for the code that uses them).
#[derive(Deserialize, Default)]
struct SecretSpans {
    #[serde(default)]
    store: Option<SectionSpans>,
    #[serde(default)]
    smtp: Option<SectionSpans>,
    #[serde(default)]
    intake: Option<IntakeSpans>,
}

#[derive(Deserialize, Default)]
struct IntakeSpans {
    #[serde(default)]
    imap: Option<SectionSpans>,
}

#[derive(Deserialize, Default)]
struct SectionSpans {
    #[serde(default)]
    url: Option<Spanned<String>>,
    #[serde(default)]
    password: Option<Spanned<String>>,
    #[serde(default)]
    password_file: Option<Spanned<String>>,
}

/// What a `[[schedule]]` sends.
#[derive(Deserialize, Debug, Clone, Copy, Default, PartialEq, Eq)]
#[serde(rename_all = "lowercase")]
pub enum ScheduleKind {
    /// The open incidents, their escalation and the deadlines coming up.
    #[default]
    Digest,
    /// The evaluation report (`csirt report`) of the last whole month or fiscal year: the
    /// summary in the body, the HTML attached.
    Report,
}

/// Which period a `kind = "report"` schedule reports on.
#[derive(Deserialize, Debug, Clone, Copy, Default, PartialEq, Eq)]
#[serde(rename_all = "kebab-case")]
pub enum ReportPeriod {
    /// The month before the run (on the 1st unless `cron` says otherwise).
    #[default]
    Month,
    /// The fiscal year that ended before the run (in April unless `cron` says otherwise).
    FiscalYear,
}

impl ReportPeriod {
    /// When the report goes out unless `cron` says otherwise: 09:00 on the 1st of each month,
    /// or on April 1 (the fiscal year ended the day before).
    pub fn default_cron(self) -> &'static str {
        match self {
            ReportPeriod::Month => "0 0 9 1 * *",
            ReportPeriod::FiscalYear => "0 0 9 1 4 *",
        }
    }
}

/// `[[schedule]]`: `cron` has six fields (seconds first), evaluated in `timezone`. A report
/// schedule may leave `cron` out (its period's default); a digest needs one.
#[derive(Deserialize, Debug)]
#[serde(deny_unknown_fields)]
pub struct Schedule {
    pub name: Spanned<String>,
    #[serde(default)]
    pub cron: Option<Spanned<String>>,
    #[serde(default)]
    pub kind: ScheduleKind,
    /// For `kind = "report"`: `month` (default) or `fiscal-year`.
    #[serde(default)]
    pub period: Option<Spanned<ReportPeriod>>,
    pub to: Spanned<Vec<Spanned<String>>>,
}

impl Schedule {
    /// The cron expression: the configured one, or a report period's default.
    pub fn cron_text(&self) -> Option<&str> {
        match (&self.cron, self.kind) {
            (Some(cron), _) => Some(cron.get_ref()),
            (None, ScheduleKind::Report) => Some(self.report_period().default_cron()),
            (None, ScheduleKind::Digest) => None,
        }
    }

    /// The period of a report schedule.
    pub fn report_period(&self) -> ReportPeriod {
        self.period
            .as_ref()
            .map(|p| *p.get_ref())
            .unwrap_or_default()
    }

    /// The parsed cron expression (validated at load).
    pub fn parsed(&self) -> Result<cron::Schedule, String> {
        match self.cron_text() {
            Some(text) => parse_cron(text),
            None => {
                Err("a digest needs cron (six fields, seconds first: \"0 0 9 * * Mon-Fri\")".into())
            }
        }
    }
}

/// Parses a six- or seven-field cron expression, with a hint for the classic five fields.
pub fn parse_cron(expr: &str) -> Result<cron::Schedule, String> {
    use std::str::FromStr;
    cron::Schedule::from_str(expr).map_err(|e| {
        let fields = expr.split_whitespace().count();
        if fields == 5 {
            format!(
                "`{expr}` has five fields; csirt's cron has six, seconds first \
                 (for 09:00 on weekdays: \"0 0 9 * * Mon-Fri\")"
            )
        } else {
            format!("`{expr}`: {e} (six fields, seconds first: \"0 0 9 * * Mon-Fri\")")
        }
    })
}

/// `[store]`.
#[derive(Deserialize, Debug, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct StoreConfig {
    pub url: StoreUrl,
    /// How many below-threshold keys keep their threshold window in memory (about 100 bytes
    /// each); past it the oldest are read from the store again when their keys come back:
    /// slower, never wrong. A reload applies it.
    #[serde(default = "default_window_keys")]
    pub window_keys: usize,
}

fn default_window_keys() -> usize {
    crate::store::WINDOW_KEYS
}

/// A `sqlite://` or `postgres://` URL; `Debug` and `Display` hide any password in it.
#[derive(Clone, PartialEq, Eq)]
pub struct StoreUrl(String);

impl StoreUrl {
    /// Checks the scheme and, for PostgreSQL, that the URL parses as one: a password with an
    /// unencoded `@`, `/`, `?` or `#` would otherwise connect to the wrong host or show the
    /// password where the host should be. The store opens it later.
    pub fn parse(url: &str) -> Result<Self, String> {
        let scheme = url.split_once("://").map(|(s, _)| s);
        match scheme {
            Some("sqlite") => Ok(StoreUrl(url.to_string())),
            Some("postgres" | "postgresql") => match parse_postgres_url(url) {
                Ok(_) => Ok(StoreUrl(url.to_string())),
                Err(why) => Err(format!(
                    "the PostgreSQL store URL {}: {why}",
                    redact_url(url)
                )),
            },
            Some(other) => Err(format!(
                "unsupported store URL scheme `{other}`: use sqlite://PATH or postgres://USER@HOST/DB"
            )),
            // Without a scheme nothing tells where a password would be: the URL is not shown.
            None => Err(
                "the store URL has no scheme: use sqlite://PATH or postgres://USER@HOST/DB".into(),
            ),
        }
    }

    /// The URL including any password, for connecting only.
    pub fn expose(&self) -> &str {
        &self.0
    }

    /// True when the URL carries a password (in the user part or as `?password=`).
    pub fn has_password(&self) -> bool {
        parse_postgres_url(&self.0).is_ok_and(|u| {
            u.password().is_some() || u.query_pairs().any(|(k, _)| is_password_key(&k))
        })
    }
}

/// Query parameters of a PostgreSQL URL that carry a secret (libpq's names, which sqlx reads).
fn is_password_key(key: &str) -> bool {
    key.eq_ignore_ascii_case("password") || key.eq_ignore_ascii_case("sslpassword")
}

/// Parses a PostgreSQL URL, refusing one whose `@` lies outside the user part: that is a
/// password with an unencoded `/` (`postgres://u:12/x@db/csirt` parses as host `u`, port 12).
fn parse_postgres_url(raw: &str) -> Result<url::Url, String> {
    const HINT: &str =
        "percent-encode @ : / ? # in the user name and password (%40 %3A %2F %3F %23)";
    let url = url::Url::parse(raw).map_err(|e| format!("does not parse ({e}); {HINT}"))?;
    let stray_at = url.path().contains('@')
        || url.query().is_some_and(|q| q.contains('@'))
        || url.fragment().is_some();
    if stray_at {
        return Err(format!(
            "has an `@` or `#` after the host, as when a password holds `/` or `?`; {HINT}"
        ));
    }
    Ok(url)
}

impl fmt::Display for StoreUrl {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&redact_url(&self.0))
    }
}

impl fmt::Debug for StoreUrl {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "StoreUrl({self})")
    }
}

impl<'de> Deserialize<'de> for StoreUrl {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let s = String::deserialize(d)?;
        StoreUrl::parse(&s).map_err(serde::de::Error::custom)
    }
}

/// The URL as it may be shown: a password, in the user part or in a `password`/`sslpassword`
/// query parameter, becomes `***`. The URL is parsed, not searched: a search cannot tell
/// where a password that holds `?`, `/` or `@` ends. A URL that does not parse cleanly is shown
/// as its scheme only. URLs without a password (all `sqlite://` ones) are returned unchanged.
pub fn redact_url(raw: &str) -> String {
    let Some((scheme, _)) = raw.split_once("://") else {
        return "(a URL without a scheme, hidden)".into();
    };
    if scheme == "sqlite" {
        return raw.to_string();
    }
    let hidden = || format!("{scheme}://*** (hidden: the URL does not parse cleanly)");
    let Ok(mut url) = parse_postgres_url(raw) else {
        return hidden();
    };
    let query_secret = url.query_pairs().any(|(k, _)| is_password_key(&k));
    if url.password().is_none() && !query_secret {
        return raw.to_string();
    }
    if url.password().is_some() && url.set_password(Some("***")).is_err() {
        return hidden();
    }
    if query_secret {
        let pairs: Vec<(String, String)> = url
            .query_pairs()
            .map(|(k, v)| {
                let v = if is_password_key(&k) {
                    "***".into()
                } else {
                    v.into_owned()
                };
                (k.into_owned(), v)
            })
            .collect();
        url.query_pairs_mut().clear().extend_pairs(pairs);
    }
    url.to_string()
}

/// Where to start reading a file that exists when the daemon first sees it.
#[derive(Deserialize, Debug, Clone, Copy, Default, PartialEq, Eq)]
#[serde(rename_all = "lowercase")]
pub enum StartAt {
    #[default]
    End,
    Beginning,
}

/// How a log source's bytes are decoded.
#[derive(Deserialize, Debug, Clone, Copy, Default, PartialEq, Eq)]
pub enum Encoding {
    #[default]
    #[serde(rename = "utf-8")]
    Utf8,
    #[serde(rename = "shift_jis")]
    ShiftJis,
}

/// `[[logs]]`: files and globs to watch.
#[derive(Deserialize, Debug, Clone, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct LogSource {
    pub paths: Vec<Spanned<String>>,
    #[serde(default)]
    pub start_at: StartAt,
    #[serde(default)]
    pub encoding: Encoding,
}

/// `[networks]`: the city's own ranges (`internal = ["10.0.0.0/8", "2001:db8:c17::/48"]`).
#[derive(Deserialize, Debug, Clone)]
#[serde(deny_unknown_fields)]
pub struct Networks {
    pub internal: Vec<Spanned<String>>,
    /// The city's hosts that face the internet, by the name they log under (syslog header,
    /// journald `_HOSTNAME`): failures from outside against any other host are the perimeter's
    /// failure (`[context] unexposed`).
    #[serde(default)]
    pub exposed: Vec<Spanned<String>>,
}

/// `[[journal]]`: entries of the systemd journal, read through `journalctl`. A fresh Debian
/// server has no rsyslog: sshd writes only to the journal.
#[derive(Deserialize, Debug, Clone, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct JournalSource {
    /// The source's name in `csirt status` and the store, and the file name the rules' `files`
    /// globs see: `auth.log` lets the SSH playbook read sshd's entries. Default `journal`.
    #[serde(default = "default_journal_name")]
    pub name: Spanned<String>,
    /// journalctl matches, `FIELD=value` (`_SYSTEMD_UNIT=ssh.service`); `+` between groups.
    /// Prefer fields journald sets itself (leading `_`): any local user can write
    /// `SYSLOG_IDENTIFIER=sshd` with `logger -t sshd`.
    #[serde(default)]
    pub matches: Vec<Spanned<String>>,
    /// Journal files elsewhere than the system journal (`journalctl --directory`).
    #[serde(default)]
    pub directory: Option<PathBuf>,
    /// Where to start the first time (no cursor stored yet): `end` (default) or `beginning`.
    #[serde(default)]
    pub start_at: StartAt,
}

fn default_journal_name() -> Spanned<String> {
    Spanned::new(0..0, "journal".to_string())
}

/// A journalctl match: `+`, or `FIELD=value` with a field name of capitals, digits and `_`.
fn check_journal_match(m: &str) -> Result<(), String> {
    if m == "+" {
        return Ok(());
    }
    let Some((field, _)) = m.split_once('=') else {
        return Err(format!(
            "`{m}` is not FIELD=value (e.g. _SYSTEMD_UNIT=ssh.service)"
        ));
    };
    let valid = !field.is_empty()
        && !field.starts_with(|c: char| c.is_ascii_digit())
        && field
            .chars()
            .all(|c| c.is_ascii_uppercase() || c.is_ascii_digit() || c == '_');
    if valid {
        Ok(())
    } else {
        Err(format!(
            "`{field}` is not a journal field name (capitals, digits and _, e.g. _SYSTEMD_UNIT)"
        ))
    }
}

/// `[intake]`: the mailbox staff forward suspicious mail to.
#[derive(Deserialize, Debug, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct Intake {
    pub maildir: Option<PathBuf>,
    /// Larger messages are quarantined unread (bytes; default 25 MiB).
    #[serde(default = "default_max_size")]
    pub max_size: usize,
    /// More MIME parts than this (nested messages' parts included) and a message is quarantined.
    #[serde(default = "default_max_parts")]
    pub max_parts: usize,
    /// Deeper MIME nesting than this and a message is quarantined.
    #[serde(default = "default_max_depth")]
    pub max_depth: usize,
    /// `[intake.imap]`: a mailbox read over IMAP.
    #[serde(default)]
    pub imap: Option<Imap>,
    /// The authserv-id of the city's own mail server's Authentication-Results headers: when
    /// set, a mail command acts only if that server found DKIM or SPF passing for the From
    /// domain, besides the reply code. Set it only if the server also removes such headers
    /// from incoming mail.
    #[serde(default)]
    pub authserv_id: Option<String>,
}

/// `[intake.imap]`. The password comes from `password_file`, else
/// `$CREDENTIALS_DIRECTORY/imap-password` (systemd `LoadCredential=`); never inline.
#[derive(Deserialize, Debug, Clone, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct Imap {
    pub host: String,
    #[serde(default = "default_imap_port")]
    pub port: u16,
    /// `tls` (993, the default), `starttls` (143), or `none` (loopback only).
    #[serde(default = "default_imap_tls")]
    pub tls: Tls,
    pub username: String,
    #[serde(default)]
    pub password_file: Option<PathBuf>,
    #[serde(default = "default_mailbox")]
    pub mailbox: String,
    /// A PEM file of CA certificates to trust besides the system's.
    #[serde(default)]
    pub ca_file: Option<PathBuf>,
}

fn default_imap_port() -> u16 {
    993
}

fn default_imap_tls() -> Tls {
    Tls::Tls
}

fn default_mailbox() -> String {
    "INBOX".into()
}

impl Intake {
    /// The parser's limits.
    pub fn limits(&self) -> crate::intake::parse::Limits {
        crate::intake::parse::Limits {
            max_size: self.max_size,
            max_parts: self.max_parts,
            max_depth: self.max_depth,
        }
    }
}

fn default_max_size() -> usize {
    25 * 1024 * 1024
}

fn default_max_parts() -> usize {
    500
}

fn default_max_depth() -> usize {
    10
}

/// How notification mail leaves.
#[derive(Deserialize, Debug, Clone, Copy, Default, PartialEq, Eq)]
#[serde(rename_all = "lowercase")]
pub enum Transport {
    Smtp,
    Sendmail,
    #[default]
    File,
}

/// `[notify]`.
#[derive(Deserialize, Debug)]
#[serde(deny_unknown_fields)]
pub struct Notify {
    /// Addresses or `[contacts]` names that hear of every new incident.
    pub to: Spanned<Vec<Spanned<String>>>,
    pub from: Spanned<String>,
    #[serde(default = "default_transport")]
    pub transport: Spanned<Transport>,
    /// Where `transport = "file"` writes messages.
    #[serde(default)]
    pub dir: Option<PathBuf>,
    /// At most one update mail per open incident per interval.
    #[serde(default = "default_update_interval")]
    pub update_interval: Span,
    /// At most this many mails per recipient group (the exact recipient list) per
    /// `rate_window`, of every kind; the rest are folded into one digest that lists them.
    #[serde(default)]
    pub rate: Option<Spanned<u32>>,
    #[serde(default = "default_rate_window")]
    pub rate_window: Span,
    /// The higher ceiling for mails about critical incidents (and raises), counting every mail
    /// of the group: no flood of ordinary mail can hold one back. Default: three times `rate`.
    #[serde(default)]
    pub critical_rate: Option<Spanned<u32>>,
    /// The old name of `rate` (it counted new-incident mails waiting at one moment); read as
    /// `rate`, with a warning.
    #[serde(default)]
    pub flood: Option<Spanned<u32>>,
    /// The first retry delay after a temporary failure; it doubles per attempt up to an hour.
    #[serde(default = "default_retry_after")]
    pub retry_after: Span,
    /// Quarantined intake mail is announced to `to` in one notice at most this often (the
    /// first at once); each quarantine is listed exactly once.
    #[serde(default = "default_quarantine_notice")]
    pub quarantine_notice: Span,
}

/// TLS on the SMTP connection.
#[derive(Deserialize, Debug, Clone, Copy, Default, PartialEq, Eq)]
#[serde(rename_all = "lowercase")]
pub enum Tls {
    None,
    #[default]
    Starttls,
    Tls,
}

/// `[smtp]`.
#[derive(Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct Smtp {
    pub host: String,
    #[serde(default = "default_smtp_port")]
    pub port: u16,
    #[serde(default = "default_smtp_tls")]
    pub tls: Spanned<Tls>,
    #[serde(default)]
    pub username: Option<String>,
    #[serde(default)]
    pub password_file: Option<PathBuf>,
    /// Inline password: allowed, but the config file must then not be readable by others.
    #[serde(default)]
    pub password: Option<String>,
    /// A PEM file of CA certificates to trust besides the system's (the city's own CA).
    #[serde(default)]
    pub ca_file: Option<PathBuf>,
}

impl fmt::Debug for Smtp {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Smtp")
            .field("host", &self.host)
            .field("port", &self.port)
            .field("tls", &self.tls)
            .field("username", &self.username)
            .field("password_file", &self.password_file)
            .field("password", &self.password.as_ref().map(|_| "***"))
            .field("ca_file", &self.ca_file)
            .finish()
    }
}

/// `[retention]`: what housekeeping (the daemon's task and `csirt db prune`) removes, and when.
/// Below-threshold evidence and its counters have no setting: they go once the longest window
/// of their playbook has passed, the only point from which they can no longer count.
#[derive(Deserialize, Debug, Clone, Copy)]
#[serde(deny_unknown_fields)]
pub struct Retention {
    /// The raw bytes of intake mail older than this are blanked; the row (hash, incident,
    /// sender, subject) stays. Never for a mail of an incident that is not closed.
    #[serde(default = "default_retain_mails")]
    pub mails: Span,
    /// Quarantined mail older than this (and announced) is deleted.
    #[serde(default = "default_retain_quarantine")]
    pub quarantine: Span,
    /// Incidents closed longer ago than this keep only their first and last evidence events.
    #[serde(default = "default_retain_events")]
    pub events: Span,
    /// How often the daemon's housekeeping runs; the first run is one interval after the start,
    /// so that a daemon restarted in a loop does not spend its starts pruning.
    #[serde(default = "default_housekeeping_interval")]
    pub interval: Span,
}

impl Default for Retention {
    fn default() -> Retention {
        Retention {
            mails: default_retain_mails(),
            quarantine: default_retain_quarantine(),
            events: default_retain_events(),
            interval: default_housekeeping_interval(),
        }
    }
}

fn default_retain_mails() -> Span {
    Span::from_secs(400 * 86_400)
}

fn default_retain_quarantine() -> Span {
    Span::from_secs(90 * 86_400)
}

fn default_retain_events() -> Span {
    Span::from_secs(400 * 86_400)
}

fn default_housekeeping_interval() -> Span {
    Span::from_secs(10 * 60)
}

fn default_timezone() -> Tz {
    chrono_tz::Asia::Tokyo
}

fn default_playbooks() -> PathBuf {
    PathBuf::from("/etc/csirt/playbooks")
}

fn default_transport() -> Spanned<Transport> {
    Spanned::new(0..0, Transport::File)
}

fn default_update_interval() -> Span {
    Span::from_secs(15 * 60)
}

fn default_retry_after() -> Span {
    Span::from_secs(30)
}

fn default_quarantine_notice() -> Span {
    Span::from_secs(60 * 60)
}

fn default_rate_window() -> Span {
    Span::from_secs(10 * 60)
}

/// `[notify] rate` when neither it nor `flood` is given.
const DEFAULT_RATE: u32 = 10;

impl Notify {
    /// Mails per recipient group per window (`rate`, or the deprecated `flood`).
    pub fn rate(&self) -> u32 {
        self.rate
            .as_ref()
            .or(self.flood.as_ref())
            .map(|r| *r.get_ref())
            .unwrap_or(DEFAULT_RATE)
    }

    /// The ceiling for critical mails.
    pub fn critical_rate(&self) -> u32 {
        self.critical_rate
            .as_ref()
            .map(|r| *r.get_ref())
            .unwrap_or_else(|| self.rate().saturating_mul(3))
    }

    /// The bounds the notifier applies.
    pub fn rate_limit(&self) -> crate::engine::rate::RateLimit {
        crate::engine::rate::RateLimit {
            rate: self.rate(),
            critical_rate: self.critical_rate(),
            window: self.rate_window.to_chrono(),
        }
    }
}

fn default_smtp_tls() -> Spanned<Tls> {
    Spanned::new(0..0, Tls::Starttls)
}

fn default_smtp_port() -> u16 {
    587
}

fn de_timezone<'de, D: Deserializer<'de>>(d: D) -> Result<Tz, D::Error> {
    let name = String::deserialize(d)?;
    name.parse::<Tz>().map_err(|_| {
        serde::de::Error::custom(format!(
            "unknown time zone `{name}` (use an IANA name such as Asia/Tokyo)"
        ))
    })
}

/// Why a configuration was refused.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    #[error(transparent)]
    Toml(#[from] TomlError),
    /// A secret others can read: inline in a config file they can read, or in a
    /// `password_file` they can read.
    #[error(
        "{location}: {key} {holds}, and {} is readable by other users (mode {mode:o}): \
         run `chmod 640 {}` (owner root, group csirt){alternative}",
        exposed.display(), exposed.display()
    )]
    SecretExposed {
        location: toml_file::Location,
        key: &'static str,
        holds: &'static str,
        exposed: PathBuf,
        mode: u32,
        alternative: &'static str,
    },
    #[error("{location}: {key} {}: {source}", file.display())]
    SecretFile {
        location: toml_file::Location,
        key: &'static str,
        file: PathBuf,
        #[source]
        source: std::io::Error,
    },
}

impl Config {
    /// Reads, parses and validates the config at `path`.
    pub fn load(path: &Path) -> Result<Config, ConfigError> {
        let text = toml_file::read(path)?;
        Ok(Self::from_text(path, &text)?)
    }

    /// Parses and validates `text` as if read from `path`.
    pub fn from_text(path: &Path, text: &str) -> Result<Config, TomlError> {
        let mut config: Config = toml_file::parse(path, text)?;
        config.validate(path, text)?;
        config.secret_sites = secret_sites(path, text, &config)?;
        config.warnings = config.address_warnings(path, text);
        config.warnings.extend(config.rate_warnings(path, text));
        if config.pii_ciso().is_none() {
            // No span to point at: the key is absent.
            config.warnings.push(format!(
                "{}: [contacts] has no `{DEFAULT_PII_CISO}` and pii_ciso is not set: an incident that \
                 requires a report to 個人情報保護委員会 is told to [notify] to only (add \
                 {DEFAULT_PII_CISO} = [\"…\"] to [contacts], or pii_ciso = \"group\")",
                path.display()
            ));
        }
        Ok(config)
    }

    /// The config that the CLI uses when only `--database` is given: defaults for everything.
    pub fn for_database(url: StoreUrl) -> Config {
        Config {
            timezone: default_timezone(),
            node: None,
            playbooks: default_playbooks(),
            pii_rules: None,
            pii_ciso: None,
            levels: None,
            log_level: None,
            store: StoreConfig {
                url,
                window_keys: default_window_keys(),
            },
            logs: Vec::new(),
            journal: Vec::new(),
            intake: None,
            notify: Notify {
                to: Spanned::new(0..0, Vec::new()),
                from: Spanned::new(0..0, String::new()),
                transport: Spanned::new(0..0, Transport::File),
                dir: None,
                update_interval: default_update_interval(),
                rate: None,
                rate_window: default_rate_window(),
                critical_rate: None,
                flood: None,
                retry_after: default_retry_after(),
                quarantine_notice: default_quarantine_notice(),
            },
            smtp: None,
            contacts: BTreeMap::new(),
            networks: None,
            schedule: Vec::new(),
            retention: Retention::default(),
            secret_sites: Vec::new(),
            warnings: Vec::new(),
        }
    }

    fn validate(&self, path: &Path, text: &str) -> Result<(), TomlError> {
        let invalid = |span, msg: String| TomlError::invalid(path, text, span, msg);
        for (name, addresses) in &self.contacts {
            for address in addresses {
                check_address(address.get_ref())
                    .map_err(|m| invalid(address.span(), format!("[contacts] {name}: {m}")))?;
            }
        }
        check_address(self.notify.from.get_ref())
            .map_err(|m| invalid(self.notify.from.span(), format!("[notify] from: {m}")))?;
        if self.notify.to.get_ref().is_empty() {
            return Err(invalid(
                self.notify.to.span(),
                "[notify] to is empty: nobody would hear of an incident".into(),
            ));
        }
        for to in self.notify.to.get_ref() {
            self.check_recipient(to)
                .map_err(|m| invalid(to.span(), format!("[notify] to: {m}")))?;
        }
        self.validate_rate(path, text)?;
        if let Some(levels) = &self.levels {
            levels.levels().map_err(|(span, m)| {
                // A default level has no line of its own; the message names the severity.
                invalid(span.unwrap_or(0..0), format!("[levels]: {m}"))
            })?;
        }
        if let Some(ciso) = &self.pii_ciso
            && !self.contacts.contains_key(ciso.get_ref())
        {
            return Err(invalid(
                ciso.span(),
                format!(
                    "pii_ciso: `{}` is not a name in [contacts] (the group told when a report to \
                     個人情報保護委員会 is required)",
                    ciso.get_ref()
                ),
            ));
        }
        let mut names = std::collections::HashSet::new();
        for schedule in &self.schedule {
            let name = schedule.name.get_ref();
            if !names.insert(name.clone()) {
                return Err(invalid(
                    schedule.name.span(),
                    format!("[[schedule]] name `{name}` is used twice"),
                ));
            }
            let span = schedule
                .cron
                .as_ref()
                .map_or_else(|| schedule.name.span(), |c| c.span());
            schedule
                .parsed()
                .map_err(|m| invalid(span, format!("[[schedule]] cron: {m}")))?;
            if let (Some(period), ScheduleKind::Digest) = (&schedule.period, schedule.kind) {
                return Err(invalid(
                    period.span(),
                    format!("[[schedule]] `{name}`: period is for kind = \"report\""),
                ));
            }
            if schedule.to.get_ref().is_empty() {
                return Err(invalid(
                    schedule.to.span(),
                    format!("[[schedule]] `{name}`: to is empty"),
                ));
            }
            for to in schedule.to.get_ref() {
                self.check_recipient(to)
                    .map_err(|m| invalid(to.span(), format!("[[schedule]] to: {m}")))?;
            }
        }
        // An omitted transport has no span of its own: point at the [notify] section instead.
        let transport_span = match self.notify.transport.span() {
            s if s.is_empty() => self.notify.from.span(),
            s => s,
        };
        match self.notify.transport.get_ref() {
            Transport::File if self.notify.dir.is_none() => Err(invalid(
                transport_span.clone(),
                "[notify] transport = \"file\" needs dir = \"/path/to/maildir\"".into(),
            )),
            Transport::Smtp if self.smtp.is_none() => Err(invalid(
                transport_span,
                "[notify] transport = \"smtp\" needs an [smtp] section with host".into(),
            )),
            _ => Ok(()),
        }?;
        if let Some(smtp) = &self.smtp
            && smtp.password.is_some()
            && smtp.password_file.is_some()
        {
            return Err(TomlError::Invalid {
                location: toml_file::Location {
                    path: path.to_path_buf(),
                    line: 0,
                },
                message: "[smtp] has both password and password_file: keep one".into(),
            });
        }
        // AUTH over a connection without TLS hands the password to anyone on the path; on
        // loopback there is no path. lettre would send it without asking.
        if let Some(smtp) = &self.smtp
            && *smtp.tls.get_ref() == Tls::None
            && smtp.username.is_some()
            && !is_loopback(&smtp.host)
        {
            return Err(invalid(
                smtp.tls.span(),
                format!(
                    "[smtp] tls = \"none\" with a username would send the password in clear to {}: \
                     use tls = \"starttls\" (port 587) or \"tls\" (port 465); \"none\" with AUTH is for a \
                     relay on 127.0.0.1 or ::1 only, and without username for a relay that needs no AUTH",
                    smtp.host
                ),
            ));
        }
        if let Some(imap) = self.intake.as_ref().and_then(|i| i.imap.as_ref())
            && imap.tls == Tls::None
            && !is_loopback(&imap.host)
        {
            return Err(TomlError::Invalid {
                location: toml_file::Location {
                    path: path.to_path_buf(),
                    line: 0,
                },
                message: format!(
                    "[intake.imap] tls = \"none\" would send the password in clear to {}: use \"tls\" or \"starttls\" (\"none\" is for 127.0.0.1 only)",
                    imap.host
                ),
            });
        }
        if let Some(networks) = &self.networks {
            for range in &networks.internal {
                range
                    .get_ref()
                    .parse::<crate::playbook::cidr::Cidr>()
                    .map_err(|e| invalid(range.span(), format!("[networks] internal: {e}")))?;
            }
            for host in &networks.exposed {
                let name = host.get_ref();
                if name.is_empty() || name.chars().any(|c| c.is_whitespace() || c.is_control()) {
                    return Err(invalid(
                        host.span(),
                        format!(
                            "[networks] exposed: {name:?} is not a host name (the name a host logs under, e.g. \"www1\")"
                        ),
                    ));
                }
            }
        }
        let mut names = std::collections::HashSet::new();
        for source in &self.journal {
            let name = source.name.get_ref();
            let ok = !name.is_empty()
                && name.len() <= 100
                && name
                    .chars()
                    .all(|c| c.is_ascii_alphanumeric() || matches!(c, '.' | '-' | '_'));
            if !ok {
                return Err(invalid(
                    source.name.span(),
                    format!(
                        "[[journal]] name `{name}`: use letters, digits, `.`, `-` and `_` (it is also the file name the rules' `files` globs see)"
                    ),
                ));
            }
            if !names.insert(name.clone()) {
                return Err(invalid(
                    source.name.span(),
                    format!(
                        "[[journal]] name `{name}` is used twice: each source keeps its own position under its name"
                    ),
                ));
            }
            for m in &source.matches {
                check_journal_match(m.get_ref())
                    .map_err(|e| invalid(m.span(), format!("[[journal]] matches: {e}")))?;
            }
        }
        for source in &self.logs {
            for pattern in &source.paths {
                glob::Pattern::new(pattern.get_ref()).map_err(|e| {
                    invalid(
                        pattern.span(),
                        format!("[[logs]] paths: `{}`: {e}", pattern.get_ref()),
                    )
                })?;
            }
        }
        Ok(())
    }

    /// The `[networks] internal` ranges, when the config names them (checked at load).
    pub fn internal_networks(&self) -> Option<Vec<crate::playbook::cidr::Cidr>> {
        self.networks.as_ref().map(|n| {
            n.internal
                .iter()
                .filter_map(|r| r.get_ref().parse().ok())
                .collect()
        })
    }

    /// The `[networks] exposed` host names, when the config names them.
    pub fn exposed_hosts(&self) -> Option<Vec<String>> {
        self.networks
            .as_ref()
            .filter(|n| !n.exposed.is_empty())
            .map(|n| n.exposed.iter().map(|h| h.get_ref().clone()).collect())
    }

    /// Loads and validates the personal-information rules this config names (or the built-in).
    pub fn pii_rules(&self) -> Result<crate::pii::rules::Rules, TomlError> {
        crate::pii::rules::Rules::load(self.pii_rules.as_deref())
    }

    /// The city's level of each severity (`[levels]`, validated at load).
    pub fn levels(&self) -> crate::level::Levels {
        self.levels
            .as_ref()
            .and_then(|l| l.levels().ok())
            .unwrap_or_default()
    }

    /// The `[contacts]` group told when an incident requires a report to 個人情報保護委員会:
    /// `pii_ciso`, or `ciso` when `[contacts]` has it; `None` when there is none (then only
    /// `[notify] to` hears, and `config check` warns).
    pub fn pii_ciso(&self) -> Option<&str> {
        match &self.pii_ciso {
            Some(name) => Some(name.get_ref().as_str()),
            None => self
                .contacts
                .contains_key(DEFAULT_PII_CISO)
                .then_some(DEFAULT_PII_CISO),
        }
    }

    /// What was accepted but looks like a mistake (`file:line: message`): `config check` prints
    /// these and the daemon logs them.
    pub fn warnings(&self) -> &[String] {
        &self.warnings
    }

    fn validate_rate(&self, path: &Path, text: &str) -> Result<(), TomlError> {
        let invalid = |span, msg: String| TomlError::invalid(path, text, span, msg);
        let n = &self.notify;
        if let (Some(_), Some(flood)) = (&n.rate, &n.flood) {
            return Err(invalid(
                flood.span(),
                "[notify] flood is the old name of rate: keep rate only".into(),
            ));
        }
        if let Some(rate) = n.rate.as_ref().or(n.flood.as_ref())
            && *rate.get_ref() == 0
        {
            return Err(invalid(
                rate.span(),
                "[notify] rate = 0 would hold every mail back: use at least 1".into(),
            ));
        }
        if let Some(critical) = &n.critical_rate
            && *critical.get_ref() < n.rate()
        {
            return Err(invalid(
                critical.span(),
                format!(
                    "[notify] critical_rate = {} is below rate = {}: critical mail must have the higher bound",
                    critical.get_ref(),
                    n.rate()
                ),
            ));
        }
        Ok(())
    }

    /// The deprecated `[notify] flood`, when used.
    fn rate_warnings(&self, path: &Path, text: &str) -> Vec<String> {
        self.notify
            .flood
            .iter()
            .map(|flood| {
                let location = toml_file::Location::of_span(path, text, flood.span());
                format!(
                    "{location}: [notify] flood is deprecated: it is read as rate = {} mails per \
                     recipient group per rate_window ({}); rename it to rate",
                    flood.get_ref(),
                    self.notify.rate_window
                )
            })
            .collect()
    }

    fn address_warnings(&self, path: &Path, text: &str) -> Vec<String> {
        let mut addresses: Vec<(String, &Spanned<String>)> = Vec::new();
        for (name, list) in &self.contacts {
            addresses.extend(list.iter().map(|a| (format!("[contacts] {name}"), a)));
        }
        addresses.push(("[notify] from".into(), &self.notify.from));
        addresses.extend(
            self.notify
                .to
                .get_ref()
                .iter()
                .map(|a| ("[notify] to".into(), a)),
        );
        for schedule in &self.schedule {
            addresses.extend(
                schedule
                    .to
                    .get_ref()
                    .iter()
                    .map(|a| ("[[schedule]] to".into(), a)),
            );
        }
        addresses
            .into_iter()
            .filter_map(|(key, address)| {
                let warning = dotless_domain(address.get_ref())?;
                let location = toml_file::Location::of_span(path, text, address.span());
                Some(format!("{location}: {key}: {warning}"))
            })
            .collect()
    }

    /// A recipient is an address or a name in `[contacts]`.
    fn check_recipient(&self, to: &Spanned<String>) -> Result<(), String> {
        let to = to.get_ref();
        if to.contains('@') {
            check_address(to)
        } else if self.contacts.contains_key(to) {
            Ok(())
        } else {
            Err(format!(
                "`{to}` is neither an address nor a name in [contacts]"
            ))
        }
    }

    /// Refuses a config file that holds a secret inline (an SMTP password, a password in the
    /// store URL) and is readable by other users, and a `password_file` readable by them. The
    /// rule is the one the package installs: 0640, owner root, group csirt; any permission
    /// for others is refused. Credentials that systemd passes are its to protect.
    pub fn check_secret_permissions(&self, path: &Path) -> Result<(), ConfigError> {
        use std::os::unix::fs::PermissionsExt;
        for site in &self.secret_sites {
            let location = toml_file::Location {
                path: path.to_path_buf(),
                line: site.line,
            };
            let exposed = site.file.as_deref().unwrap_or(path);
            let mode = match std::fs::metadata(exposed) {
                Ok(meta) => meta.permissions().mode(),
                Err(source) => {
                    return Err(ConfigError::SecretFile {
                        location,
                        key: site.key,
                        file: exposed.to_path_buf(),
                        source,
                    });
                }
            };
            if mode & 0o007 == 0 {
                continue;
            }
            let (holds, alternative) = match (site.key, &site.file) {
                (_, Some(_)) => ("names a secret file", ""),
                ("[store] url", None) => (
                    "holds a password",
                    ", or take the password out of the URL and give it to the daemon as the \
                     systemd credential store-password \
                     (LoadCredential=store-password:/etc/csirt/credentials/store-password)",
                ),
                _ => (
                    "is inline",
                    ", or move the password to password_file (mode 640) or to the systemd \
                     credential (LoadCredential=)",
                ),
            };
            return Err(ConfigError::SecretExposed {
                location,
                key: site.key,
                holds,
                exposed: exposed.to_path_buf(),
                mode: mode & 0o7777,
                alternative,
            });
        }
        Ok(())
    }

    /// This daemon's node name: the configured one or the host name.
    pub fn node_name(&self) -> String {
        self.node.clone().unwrap_or_else(|| {
            nix::unistd::gethostname()
                .ok()
                .and_then(|h| h.into_string().ok())
                .unwrap_or_else(|| "localhost".into())
        })
    }

    /// The addresses a `[contacts]` name or a literal address stands for.
    pub fn resolve_recipients(&self, name_or_address: &str) -> Vec<String> {
        match self.contacts.get(name_or_address) {
            Some(list) => list.iter().map(|a| a.get_ref().clone()).collect(),
            None => vec![name_or_address.to_string()],
        }
    }
}

/// True for a host name that cannot leave this machine: `localhost`, 127.0.0.0/8, `::1`.
fn is_loopback(host: &str) -> bool {
    let bare = host.trim_start_matches('[').trim_end_matches(']');
    bare.eq_ignore_ascii_case("localhost")
        || bare
            .parse::<std::net::IpAddr>()
            .is_ok_and(|ip| ip.is_loopback())
}

/// Where `text` holds a secret inline or names a secret file, by line.
fn secret_sites(path: &Path, text: &str, config: &Config) -> Result<Vec<SecretSite>, TomlError> {
    let spans: SecretSpans = toml_file::parse(path, text)?;
    let line = |span: std::ops::Range<usize>| toml_file::Location::of_span(path, text, span).line;
    let mut sites = Vec::new();
    if config.store.url.has_password()
        && let Some(url) = spans.store.as_ref().and_then(|s| s.url.as_ref())
    {
        sites.push(SecretSite {
            line: line(url.span()),
            key: "[store] url",
            file: None,
        });
    }
    if let Some(password) = spans.smtp.as_ref().and_then(|s| s.password.as_ref()) {
        sites.push(SecretSite {
            line: line(password.span()),
            key: "[smtp] password",
            file: None,
        });
    }
    let imap = spans.intake.as_ref().and_then(|i| i.imap.as_ref());
    for (key, section) in [
        ("[smtp] password_file", spans.smtp.as_ref()),
        ("[intake.imap] password_file", imap),
    ] {
        if let Some(file) = section.and_then(|s| s.password_file.as_ref()) {
            sites.push(SecretSite {
                line: line(file.span()),
                key,
                file: Some(PathBuf::from(file.get_ref())),
            });
        }
    }
    Ok(sites)
}

/// The systemd credential `name` (`LoadCredential=name:…`), trimmed of its final line break;
/// `None` outside systemd, when it is not there, or when it is empty. An empty one counts as
/// absent: the package's tmpfiles.d creates the credential files empty, and an empty file must
/// not replace a password configured elsewhere with nothing.
pub fn credential(name: &str) -> Result<Option<String>, std::io::Error> {
    match std::env::var_os("CREDENTIALS_DIRECTORY") {
        Some(dir) => credential_in(Path::new(&dir), name),
        None => Ok(None),
    }
}

/// `credential` with the directory given (tests cannot set the environment safely).
pub fn credential_in(dir: &Path, name: &str) -> Result<Option<String>, std::io::Error> {
    match std::fs::read_to_string(dir.join(name)) {
        Ok(text) => {
            let secret = text.trim_end_matches(['\r', '\n']);
            Ok((!secret.is_empty()).then(|| secret.to_string()))
        }
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(None),
        Err(e) => Err(e),
    }
}

/// A plausibility check for an address: lettre parses it properly when sending. This refuses
/// what would otherwise surface only at 3 a.m.: empty, no `@`, spaces, control characters.
fn check_address(address: &str) -> Result<(), String> {
    let ok = match address.split_once('@') {
        Some((local, domain)) => {
            !local.is_empty()
                && !domain.is_empty()
                && !domain.starts_with('.')
                && !address.chars().any(|c| c.is_whitespace() || c.is_control())
        }
        None => false,
    };
    if ok {
        Ok(())
    } else {
        Err(format!("`{address}` is not a mail address"))
    }
}

/// An address on a domain without a dot (`root@localhost`, `csirt@mailhost`) is legal and has
/// its uses (a local mailbox, a relay's own name), so it is accepted; but it is also what a
/// missing `.lg.jp` looks like, so it is pointed out.
fn dotless_domain(address: &str) -> Option<String> {
    let (_, domain) = address.rsplit_once('@')?;
    (!domain.contains('.')).then(|| {
        format!(
            "`{address}` has no dot in its domain: mail to it stays on this machine or its \
             local network; check that the domain is complete"
        )
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    const MINIMAL: &str = r#"
[store]
url = "sqlite://./var/csirt.db"

[notify]
to = ["csirt"]
from = "csirt@example.jp"
transport = "file"
dir = "./var/mail"

[contacts]
csirt = ["duty@example.jp"]
"#;

    fn load(text: &str) -> Result<Config, TomlError> {
        Config::from_text(Path::new("csirt.toml"), text)
    }

    #[test]
    fn notify_rate_defaults_alias_and_bounds() -> Result<(), TomlError> {
        let c = load(MINIMAL)?;
        let limit = c.notify.rate_limit();
        assert_eq!((limit.rate, limit.critical_rate), (10, 30));
        assert_eq!(limit.window, chrono::TimeDelta::minutes(10));
        let with = |lines: &str| MINIMAL.replace("[notify]\n", &format!("[notify]\n{lines}\n"));
        let c = load(&with("rate = 4\nrate_window = \"1h\"\ncritical_rate = 5"))?;
        let limit = c.notify.rate_limit();
        assert_eq!((limit.rate, limit.critical_rate), (4, 5));
        assert_eq!(limit.window, chrono::TimeDelta::hours(1));
        // The old key still works, as rate, and says so.
        let c = load(&with("flood = 7"))?;
        assert_eq!((c.notify.rate(), c.notify.critical_rate()), (7, 21));
        assert!(
            c.warnings().iter().any(|w| w.contains("csirt.toml:6:")
                && w.contains("flood is deprecated")
                && w.contains("rate = 7")),
            "{:?}",
            c.warnings()
        );
        for (lines, says) in [
            ("rate = 0", "use at least 1"),
            (
                "rate = 5\ncritical_rate = 4",
                "critical_rate = 4 is below rate = 5",
            ),
            ("rate = 5\nflood = 5", "keep rate only"),
        ] {
            let err = load(&with(lines)).expect_err(lines).to_string();
            assert!(err.contains(says) && err.contains("csirt.toml:"), "{err}");
        }
        Ok(())
    }

    #[test]
    fn minimal_config_gets_defaults() -> Result<(), TomlError> {
        let c = load(MINIMAL)?;
        assert_eq!(c.timezone, chrono_tz::Asia::Tokyo);
        assert_eq!(c.notify.update_interval.as_secs(), 900);
        assert_eq!(
            c.resolve_recipients("csirt"),
            vec!["duty@example.jp".to_string()]
        );
        Ok(())
    }

    #[test]
    fn report_schedules_default_their_cron_by_period() -> Result<(), TomlError> {
        let c = load(&format!(
            "{MINIMAL}[[schedule]]\nname = \"m\"\nkind = \"report\"\nto = [\"csirt\"]\n\
             [[schedule]]\nname = \"y\"\nkind = \"report\"\nperiod = \"fiscal-year\"\nto = [\"csirt\"]\n\
             [[schedule]]\nname = \"z\"\nkind = \"report\"\nperiod = \"month\"\ncron = \"0 30 8 2 * *\"\nto = [\"csirt\"]\n"
        ))?;
        let cron: Vec<_> = c.schedule.iter().map(|s| s.cron_text()).collect();
        assert_eq!(
            cron,
            [
                Some("0 0 9 1 * *"),
                Some("0 0 9 1 4 *"),
                Some("0 30 8 2 * *")
            ]
        );
        assert_eq!(c.schedule[1].report_period(), ReportPeriod::FiscalYear);
        for bad in [
            // A digest has no default time, and no period.
            "[[schedule]]\nname = \"d\"\nto = [\"csirt\"]\n",
            "[[schedule]]\nname = \"d\"\ncron = \"0 0 9 * * *\"\nperiod = \"month\"\nto = [\"csirt\"]\n",
            "[[schedule]]\nname = \"r\"\nkind = \"report\"\nperiod = \"week\"\nto = [\"csirt\"]\n",
        ] {
            assert!(load(&format!("{MINIMAL}{bad}")).is_err(), "{bad}");
        }
        Ok(())
    }

    #[test]
    fn refusals_name_the_line() {
        let cases = [
            (
                MINIMAL.replace("[contacts]", "bogus = 1\n[contacts]"),
                11,
                "bogus",
            ),
            (
                MINIMAL.replace("sqlite://", "mysql://"),
                3,
                "unsupported store URL scheme `mysql`",
            ),
            (
                format!("timezone = \"Mars/Olympus\"\n{MINIMAL}"),
                1,
                "Mars/Olympus",
            ),
            (
                MINIMAL.replace("[\"csirt\"]", "[\"nobody\"]"),
                6,
                "neither an address nor a name",
            ),
            (MINIMAL.replace("dir = \"./var/mail\"", ""), 8, "needs dir"),
            (
                MINIMAL.replace("duty@example.jp", "duty at example"),
                12,
                "not a mail address",
            ),
            (
                format!(
                    "{MINIMAL}[[schedule]]\nname = \"d\"\ncron = \"0 9 * * 1-5\"\nto = [\"csirt\"]\n"
                ),
                15,
                "has five fields; csirt's cron has six",
            ),
            (
                format!(
                    "{MINIMAL}[[schedule]]\nname = \"d\"\ncron = \"0 0 9 * * Mon-Fri\"\nto = [\"ciso\"]\n"
                ),
                16,
                "`ciso` is neither an address nor a name",
            ),
            (
                format!("{MINIMAL}[networks]\ninternal = [\"10.0.0.0/33\"]\n"),
                14,
                "[networks] internal",
            ),
            (
                format!("{MINIMAL}[networks]\ninternal = []\nexposed = [\"www1\", \"db 01\"]\n"),
                15,
                "[networks] exposed",
            ),
            (
                format!("{MINIMAL}[[journal]]\nmatches = [\"_SYSTEMD_UNIT\"]\n"),
                14,
                "is not FIELD=value",
            ),
            (
                format!("{MINIMAL}[[journal]]\nmatches = [\"unit=ssh.service\"]\n"),
                14,
                "`unit` is not a journal field name",
            ),
            (
                format!(
                    "{MINIMAL}[[journal]]\nname = \"auth.log\"\n[[journal]]\nname = \"auth.log\"\n"
                ),
                16,
                "used twice",
            ),
        ];
        for (text, line, needle) in cases {
            let err = load(&text).expect_err(needle);
            let msg = err.to_string();
            assert_eq!(err.location().line, line, "{msg}");
            assert!(msg.contains(needle), "{msg}");
        }
    }

    #[test]
    fn passwords_never_reach_debug_output() -> Result<(), TomlError> {
        let text = format!("{MINIMAL}\n[smtp]\nhost = \"mx\"\npassword = \"hunter2\"\n").replace(
            "sqlite://./var/csirt.db",
            "postgres://csirt:s3cret@db/csirt",
        );
        let c = load(&text)?;
        let debug = format!("{c:?}");
        assert!(
            !debug.contains("hunter2") && !debug.contains("s3cret"),
            "{debug}"
        );
        assert_eq!(c.store.url.to_string(), "postgres://csirt:***@db/csirt");
        Ok(())
    }

    #[test]
    fn redaction_parses_the_url() {
        let cases = [
            (
                "postgres://csirt:s3cret@db/csirt",
                "postgres://csirt:***@db/csirt",
            ),
            // libpq's query parameters carry passwords too.
            (
                "postgres://csirt@db/csirt?sslmode=require&password=s3cret",
                "postgres://csirt@db/csirt?sslmode=require&password=***",
            ),
            (
                "postgres://csirt@db/csirt?PassWord=s3cret&sslpassword=s3cret",
                "postgres://csirt@db/csirt?PassWord=***&sslpassword=***",
            ),
            // Encoded, a password may hold any character and still ends where the URL says.
            (
                "postgres://csirt:s3%3Fc%2Fr%40et@db:5432/csirt",
                "postgres://csirt:***@db:5432/csirt",
            ),
            // Raw `@` in the password: the last `@` before the path ends the user part.
            (
                "postgres://csirt:s3@cret@db/csirt",
                "postgres://csirt:***@db/csirt",
            ),
            // Raw `?`, `/` or `#`: unparsable or misparsed, so nothing of it is shown.
            (
                "postgres://csirt:s3?cret@db/csirt",
                "postgres://*** (hidden",
            ),
            (
                "postgres://csirt:12/s3cret@db/csirt",
                "postgres://*** (hidden",
            ),
            (
                "postgres://csirt:s3#cret@db/csirt",
                "postgres://*** (hidden",
            ),
            ("postgres://csirt@db/csirt", "postgres://csirt@db/csirt"),
            (
                "sqlite://./var/北上/csirt.db",
                "sqlite://./var/北上/csirt.db",
            ),
            ("csirt:s3cret@db/csirt", "(a URL without a scheme, hidden)"),
        ];
        for (raw, shown) in cases {
            let redacted = redact_url(raw);
            assert!(redacted.starts_with(shown), "{raw} -> {redacted}");
            assert!(!redacted.contains("s3"), "{raw} -> {redacted}");
        }
    }

    #[test]
    fn postgres_urls_that_hide_their_host_are_refused() {
        for raw in [
            "postgres://csirt:s3?cret@db/csirt",
            "postgres://csirt:12/s3cret@db/csirt",
        ] {
            let err = StoreUrl::parse(raw).expect_err(raw);
            assert!(err.contains("percent-encode"), "{err}");
            assert!(!err.contains("s3"), "{err}");
        }
        assert!(
            StoreUrl::parse("postgres://csirt:s3@db/csirt?password=x")
                .is_ok_and(|u| u.has_password())
        );
        assert!(
            StoreUrl::parse("postgres://csirt@db/csirt?password=x").is_ok_and(|u| u.has_password())
        );
        assert!(StoreUrl::parse("postgres://csirt@db/csirt").is_ok_and(|u| !u.has_password()));
    }

    #[test]
    fn inline_secret_in_world_readable_file_is_refused() -> Result<(), Box<dyn std::error::Error>> {
        use std::os::unix::fs::PermissionsExt;
        let dir = tempfile::tempdir()?;
        let path = dir.path().join("csirt.toml");
        let secret_file = dir.path().join("smtp-password");
        std::fs::write(&secret_file, "x\n")?;
        std::fs::set_permissions(&secret_file, std::fs::Permissions::from_mode(0o640))?;
        let cases = [
            (
                format!("{MINIMAL}\n[smtp]\nhost = \"mx\"\npassword = \"x\"\n"),
                16,
                "[smtp] password is inline",
            ),
            (
                MINIMAL.replace("sqlite://./var/csirt.db", "postgres://csirt:x@db/csirt"),
                3,
                "[store] url holds a password",
            ),
            (
                MINIMAL.replace(
                    "sqlite://./var/csirt.db",
                    "postgres://csirt@db/csirt?password=x",
                ),
                3,
                "[store] url holds a password",
            ),
        ];
        for (text, line, needle) in cases {
            std::fs::write(&path, text)?;
            std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o644))?;
            let c = Config::load(&path)?;
            let err = c.check_secret_permissions(&path).expect_err(needle);
            let msg = err.to_string();
            assert!(
                msg.starts_with(&format!("{}:{line}: {needle}", path.display())),
                "{msg}"
            );
            assert!(
                msg.contains(&format!("chmod 640 {}", path.display())),
                "{msg}"
            );
            std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o640))?;
            c.check_secret_permissions(&path)?;
        }
        // A password_file others can read is refused even in a private config.
        std::fs::write(
            &path,
            format!(
                "{MINIMAL}\n[smtp]\nhost = \"mx\"\npassword_file = \"{}\"\n",
                secret_file.display()
            ),
        )?;
        let c = Config::load(&path)?;
        c.check_secret_permissions(&path)?;
        std::fs::set_permissions(&secret_file, std::fs::Permissions::from_mode(0o644))?;
        let msg = c
            .check_secret_permissions(&path)
            .expect_err("0644 secret")
            .to_string();
        assert!(
            msg.contains(&format!("chmod 640 {}", secret_file.display())),
            "{msg}"
        );
        assert!(msg.contains(":16: [smtp] password_file"), "{msg}");
        Ok(())
    }

    /// Issue #12: `user@localhost` was refused as "not a mail address".
    #[test]
    fn a_dotless_domain_is_accepted_with_a_warning() -> Result<(), TomlError> {
        // With the CISO group, whose absence is a warning of its own.
        let minimal = format!("{MINIMAL}ciso = [\"ciso@example.jp\"]\n");
        let c = load(&minimal.replace("duty@example.jp", "root@localhost"))?;
        assert_eq!(c.warnings().len(), 1, "{:?}", c.warnings());
        assert!(
            c.warnings()[0]
                .starts_with("csirt.toml:12: [contacts] csirt: `root@localhost` has no dot"),
            "{:?}",
            c.warnings()
        );
        assert!(load(&minimal)?.warnings().is_empty());
        Ok(())
    }

    /// Issue #12: SMTP AUTH over tls = "none" was allowed to any host.
    #[test]
    fn smtp_auth_without_tls_only_to_loopback() {
        let smtp = |host: &str, extra: &str| {
            load(&format!(
                "{MINIMAL}\n[smtp]\nhost = \"{host}\"\ntls = \"none\"\n{extra}"
            ))
        };
        let err = smtp("mail.example.jp", "username = \"csirt\"\n").expect_err("AUTH in clear");
        assert_eq!(err.location().line, 16, "{err}");
        assert!(
            err.to_string()
                .contains("send the password in clear to mail.example.jp"),
            "{err}"
        );
        for host in ["127.0.0.1", "127.0.0.53", "::1", "[::1]", "localhost"] {
            assert!(smtp(host, "username = \"csirt\"\n").is_ok(), "{host}");
        }
        // No username, no AUTH: a relay that trusts the sender's address may be anywhere.
        assert!(smtp("mail.example.jp", "").is_ok());
    }

    /// Issue #12: the package creates the credential files empty; an empty one replaced the
    /// configured password with nothing.
    #[test]
    fn an_empty_credential_is_no_credential() -> Result<(), std::io::Error> {
        let dir = tempfile::tempdir()?;
        assert_eq!(credential_in(dir.path(), "smtp-password")?, None);
        std::fs::write(dir.path().join("smtp-password"), "")?;
        assert_eq!(credential_in(dir.path(), "smtp-password")?, None);
        std::fs::write(dir.path().join("smtp-password"), "\n")?;
        assert_eq!(credential_in(dir.path(), "smtp-password")?, None);
        std::fs::write(dir.path().join("smtp-password"), "s3cret\n")?;
        assert_eq!(
            credential_in(dir.path(), "smtp-password")?.as_deref(),
            Some("s3cret")
        );
        Ok(())
    }

    /// #16: the city's levels are a validated table; the CISO group is checked against
    /// [contacts] when named, and its absence by default is a warning, not a silent gap.
    #[test]
    fn levels_and_the_pii_ciso_group() -> Result<(), TomlError> {
        use crate::level::Level;
        use crate::model::Severity;
        let c = load(MINIMAL)?;
        assert_eq!(c.levels(), crate::level::Levels::default());
        assert_eq!(c.pii_ciso(), None);
        assert!(
            c.warnings()
                .iter()
                .any(|w| w.contains("[contacts] has no `ciso`")),
            "{:?}",
            c.warnings()
        );
        let with_ciso = format!("{MINIMAL}ciso = [\"ciso@example.jp\"]\n");
        let c = load(&with_ciso)?;
        assert_eq!(c.pii_ciso(), Some("ciso"));
        assert!(c.warnings().is_empty(), "{:?}", c.warnings());
        let c = load(&format!("pii_ciso = \"csirt\"\n{MINIMAL}"))?;
        assert_eq!(c.pii_ciso(), Some("csirt"));
        let err = load(&format!("pii_ciso = \"cisoo\"\n{with_ciso}")).expect_err("unknown group");
        assert!(
            err.to_string().starts_with("csirt.toml:1:") && err.to_string().contains("`cisoo`"),
            "{err}"
        );
        let c = load(&format!("{MINIMAL}[levels]\nhigh = \"L3\"\n"))?;
        assert_eq!(c.levels().of(Severity::High), Level::L3);
        assert_eq!(c.levels().floor(Level::L3), Severity::High);
        let err = load(&format!("{MINIMAL}\n[levels]\nlow = \"L2\"\n")).expect_err("inverted");
        assert!(
            err.to_string().starts_with("csirt.toml:15:")
                && err
                    .to_string()
                    .contains("[levels]: medium is L1 but the milder low is L2"),
            "{err}"
        );
        let err = load(&format!("{MINIMAL}[levels]\nlow = \"L5\"\n")).expect_err("no such level");
        assert!(err.to_string().contains("L5"), "{err}");
        Ok(())
    }
}
