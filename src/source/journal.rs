//! The systemd journal as a source, read through `journalctl` the way Vector does: the command
//! line ([`command`]), one JSON line made into a [`JournalEntry`] ([`parse_entry`]), the line the
//! playbooks match ([`syslog_line`]), and the running `journalctl --follow` read in batches
//! ([`JournalTail`]).
//!
//! This module owns the journalctl flags and the reasons for each. It never advances a
//! checkpoint: the caller stores the `cursor` of the last entry it committed and hands it back as
//! [`JournalQuery::after_cursor`]. It never panics on a line, never buffers more than
//! [`MAX_LINE`] bytes of one, and never lets a control character through into the text it returns.
//!
//! # The flags, as checked against journalctl 252 (Debian 12)
//! - `--output=json`: one entry per line; a value that is not printable UTF-8 comes as an array
//!   of byte values, a field given more than once as an array of values; every entry carries its
//!   `__CURSOR`, so `--show-cursor` (which prints the last cursor only when journalctl ends) is
//!   not needed.
//! - `--all`: without it journalctl writes `null` for any value of 4096 bytes or more (a
//!   5,000-byte MESSAGE arrived as `null`); with it a 2 MiB MESSAGE arrives whole.
//! - `--output-fields=` the fields below: journalctl adds `__CURSOR`, `__REALTIME_TIMESTAMP`,
//!   `__MONOTONIC_TIMESTAMP` and `_BOOT_ID` by itself. On 200,000 sshd entries this cut
//!   journalctl's CPU time by 14 % and its output by 19 %, and attacker-written fields we do not
//!   use never reach the parser.
//! - `--merge`: since systemd 250 `--follow` implies `--boot` (this boot only) unless `--merge` is
//!   given. Without it, a cursor from before a reboot resumes at the new boot and whatever was
//!   written between the cursor and the shutdown is never read (systemd#36102, #38912); on a
//!   `--directory` whose boot IDs are not this machine's, journalctl exits with "Data from the
//!   specified boot (+0) is not available". `--boot=all` only overrides the implication from
//!   systemd 257 on. Side effect without `--directory`: journals of other machines in
//!   /var/log/journal (`remote/` on a collector) are read too; a `_HOSTNAME=` match narrows it.
//!   Builds of 250–253 without systemd PR #27696 refuse `--merge` with `--follow` ("Using --boot
//!   or --list-boots with --merge is not supported"): that reaches the caller as
//!   [`JournalError::Exited`].
//! - `--cursor=C`, then the first entry dropped when its `__CURSOR` is `C`, instead of
//!   `--after-cursor=C`: before systemd 255 (PR #30336), `--after-cursor` with matches skips the
//!   first matching entry whenever the cursor's own entry does not match (systemd#30288; on 252 a
//!   cursor at an `a.service` entry with the match `_SYSTEMD_UNIT=b.service` lost the first
//!   `b.service` entry). With `--cursor` the cursor's entry comes back first when it still exists
//!   and matches, and only then is dropped: strictly after the cursor on every version.
//! - `--no-tail` when resuming or reading from the start: `--follow` otherwise implies
//!   `--lines=10`, and after a cursor journalctl printed the first 10 of 28 waiting entries and
//!   held the other 18 until a new entry woke it. `--lines=0` when starting at the end.
//! - `--no-pager`, stdin from /dev/null, `--` before the matches (each is checked to be
//!   `FIELD=value` anyway, so none can be taken for an option).
//! - `SYSTEMD_COLORS=0` in its environment: inherited `SYSTEMD_COLORS=1` makes journalctl colour
//!   JSON keys and values with escape sequences even into a pipe, and no line would parse.
//!
//! # Trust
//! Fields without a leading underscore are the writer's word: any local user can send
//! `SYSLOG_IDENTIFIER=sshd` with `logger -t sshd`, or any bytes in MESSAGE. `_PID`, `_COMM`,
//! `_SYSTEMD_UNIT` and `_HOSTNAME` are set by journald and cannot be forged by an unprivileged
//! writer; a query meant to read only the SSH daemon should match `_SYSTEMD_UNIT=ssh.service`,
//! not `SYSLOG_IDENTIFIER=sshd`. `pid` prefers `_PID` for that reason.
//!
//! # Permissions
//! journalctl run by a user outside the `systemd-journal` (or `adm`) group exits with "No journal
//! files were opened due to insufficient permissions." when it can open nothing, and
//! [`JournalError::Exited`] carries those words.

use chrono::{DateTime, Utc};
use serde::Deserialize;
use serde::de::{self, Deserializer, SeqAccess, Visitor};
use std::borrow::Cow;
use std::ffi::OsString;
use std::fmt;
use std::io;
use std::path::PathBuf;
use std::process::{ExitStatus, Stdio};
use std::sync::{Arc, Mutex};
use std::time::Duration;
use tokio::io::{AsyncBufReadExt, AsyncReadExt, BufReader};
use tokio::process::{Child, ChildStderr, ChildStdout, Command};
use tokio::task::JoinHandle;

/// The program run; found on `PATH`.
pub const JOURNALCTL: &str = "journalctl";

/// The fields journalctl is asked for (see the module doc for why it is asked for few).
pub const OUTPUT_FIELDS: &str =
    "MESSAGE,_HOSTNAME,SYSLOG_IDENTIFIER,_COMM,_PID,SYSLOG_PID,_SYSTEMD_UNIT";

/// A line of journalctl's output longer than this is skipped (and reported), never buffered.
/// 1 MiB of JSON holds any MESSAGE journald accepts from a stream (48 KiB lines) many times over;
/// a larger one came through the native protocol on purpose.
pub const MAX_LINE: usize = 1024 * 1024;

/// How much of journalctl's stderr is kept: its last words, for the error a sysadmin reads.
pub const STDERR_TAIL: usize = 4096;

/// Details kept of skipped lines between two [`JournalTail::take_skipped`]; the count is exact.
const SKIPPED_KEPT: usize = 64;

/// Journal field names are at most 64 characters (journald refuses longer ones, so a match on
/// one could never match).
const FIELD_NAME_MAX: usize = 64;

/// Shown for a missing host or identifier: the RFC 5424 NILVALUE, which says "unknown" instead of
/// inventing a name (a made-up `localhost` would read as this machine).
const NIL: &str = "-";

/// What to read and from where.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct JournalQuery {
    /// journalctl match arguments (`_SYSTEMD_UNIT=ssh.service`, `+` between groups), passed as
    /// given: repeated matches of one field are ORed, different fields ANDed.
    pub matches: Vec<String>,
    /// A directory of journal files instead of the system journal.
    pub directory: Option<PathBuf>,
    /// Resume strictly after this cursor (the `cursor` of the last entry committed). Wins over
    /// `from_start`.
    pub after_cursor: Option<String>,
    /// Without a cursor: every stored entry (true) or only entries written from now on (false).
    pub from_start: bool,
}

/// A query journalctl would refuse, or that could never match.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum QueryError {
    #[error(
        "journal match `{0}` is not FIELD=value with FIELD made of A-Z, 0-9 and _ (at most 64, \
         not starting with __), as in `_SYSTEMD_UNIT=ssh.service`"
    )]
    BadMatch(String),
    #[error("journal match `{0}` contains a NUL byte, which no journal value can be matched with")]
    NulInMatch(String),
    #[error(
        "`+` joins two groups of journal matches: it cannot come first, last or twice in a row"
    )]
    MisplacedOr,
    #[error(
        "the stored journal cursor `{0}` is not one journalctl writes (printable ASCII without \
         spaces); clear it to read from the start or the end again"
    )]
    BadCursor(String),
}

impl JournalQuery {
    /// Checks each match and the cursor as journalctl would, so a bad config fails at load
    /// instead of as a journalctl that exits at once.
    pub fn validate(&self) -> Result<(), QueryError> {
        let mut previous_or = true;
        for m in &self.matches {
            if m == "+" {
                if previous_or {
                    return Err(QueryError::MisplacedOr);
                }
                previous_or = true;
                continue;
            }
            previous_or = false;
            let Some((field, value)) = m.split_once('=') else {
                return Err(QueryError::BadMatch(control_pictures(m).into_owned()));
            };
            let field_ok = !field.is_empty()
                && field.len() <= FIELD_NAME_MAX
                && !field.starts_with("__")
                && field
                    .bytes()
                    .all(|b| b.is_ascii_uppercase() || b.is_ascii_digit() || b == b'_');
            if !field_ok {
                return Err(QueryError::BadMatch(control_pictures(m).into_owned()));
            }
            // An argument cannot carry NUL: spawning would fail with a message about the wrong
            // thing.
            if value.contains('\0') {
                return Err(QueryError::NulInMatch(control_pictures(m).into_owned()));
            }
        }
        if previous_or && !self.matches.is_empty() {
            return Err(QueryError::MisplacedOr);
        }
        if let Some(c) = &self.after_cursor
            && !cursor_ok(c)
        {
            return Err(QueryError::BadCursor(control_pictures(c).into_owned()));
        }
        Ok(())
    }
}

/// The `journalctl` command for `q`, ready to spawn: stdin null, stdout and stderr piped, killed
/// when dropped. It does not check `q`: [`JournalTail::spawn`] calls [`JournalQuery::validate`]
/// first.
pub fn command(q: &JournalQuery) -> Command {
    let mut cmd = Command::new(JOURNALCTL);
    cmd.arg("--output=json")
        .arg(format!("--output-fields={OUTPUT_FIELDS}"))
        .arg("--all")
        .arg("--follow")
        .arg("--merge")
        .arg("--no-pager");
    if let Some(dir) = &q.directory {
        let mut arg = OsString::from("--directory=");
        arg.push(dir);
        cmd.arg(arg);
    }
    match (&q.after_cursor, q.from_start) {
        (Some(cursor), _) => {
            cmd.arg(format!("--cursor={cursor}")).arg("--no-tail");
        }
        (None, true) => {
            cmd.arg("--no-tail");
        }
        (None, false) => {
            cmd.arg("--lines=0");
        }
    }
    cmd.arg("--").args(&q.matches);
    cmd.env("SYSTEMD_COLORS", "0");
    prepare(&mut cmd);
    cmd
}

/// Pipes and lifetime, for [`command`] and for commands handed to [`JournalTail::with_command`].
fn prepare(cmd: &mut Command) {
    cmd.stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .kill_on_drop(true)
        // Its own process group: a Ctrl-C at the terminal reaches csirt, which stops journalctl
        // in order, instead of killing journalctl first and reading as a failure mid-shutdown.
        .process_group(0);
}

/// One journal entry, its text made safe: no control character in any string.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct JournalEntry {
    /// Where this entry is; the checkpoint to store once it is committed.
    pub cursor: String,
    /// `__REALTIME_TIMESTAMP`: when journald received it.
    pub realtime: DateTime<Utc>,
    /// `_HOSTNAME`.
    pub hostname: Option<String>,
    /// `SYSLOG_IDENTIFIER`, else `_COMM` (as `journalctl -o short` shows it).
    pub identifier: Option<String>,
    /// `_PID` (set by journald), else `SYSLOG_PID` (the writer's claim).
    pub pid: Option<u32>,
    /// `_SYSTEMD_UNIT`.
    pub unit: Option<String>,
    /// MESSAGE, decoded lossily when it is not UTF-8. Empty when the entry has none (see
    /// [`parse_entry`]).
    pub message: String,
}

/// A line that is not a journal entry as journalctl writes one.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum EntryError {
    #[error("not an entry as journalctl writes one: {0}")]
    Json(String),
    #[error("entry without __CURSOR (journalctl writes one in every entry)")]
    MissingCursor,
    #[error("__CURSOR is not printable ASCII text")]
    BadCursor,
    #[error("entry without __REALTIME_TIMESTAMP")]
    MissingTimestamp,
    #[error("__REALTIME_TIMESTAMP is not a count of microseconds since 1970 within range")]
    BadTimestamp,
}

impl EntryError {
    fn json(e: serde_json::Error) -> EntryError {
        // serde's message can quote a piece of the line: cut it and make it safe for a log.
        let text = e.to_string();
        let cut: String = text.chars().take(200).collect();
        EntryError::Json(control_pictures(&cut).into_owned())
    }
}

/// Parses one line of `journalctl --output=json`.
///
/// Decisions, for lines anyone can influence:
/// - no `__CURSOR`, or one that is not printable ASCII: an error (an entry without a position
///   cannot be checkpointed; journalctl always writes one);
/// - `__REALTIME_TIMESTAMP` missing or not decimal microseconds within chrono's range: an error;
/// - MESSAGE absent or `null`: an empty message, not an error. journald stores entries without
///   MESSAGE, and each is still a position the cursor must be able to pass; `null` is what
///   journalctl writes for a large value without `--all`, which we always pass;
/// - a field given several times: the values joined by a line feed (shown as U+240A), so no
///   value is hidden (`journalctl -o short` shows the last, `-o cat` the first); `pid` is then
///   unknown;
/// - a pid that is not a decimal `u32`: unknown, not an error (`SYSLOG_PID` is the writer's word);
/// - empty host, identifier or unit: unknown;
/// - every C0 control, DEL and C1 control in the text becomes a visible character (see
///   [`control_pictures`]).
pub fn parse_entry(line: &[u8]) -> Result<JournalEntry, EntryError> {
    // serde reads a struct from a JSON array too; journalctl writes objects only.
    if line.iter().find(|b| !b.is_ascii_whitespace()) != Some(&b'{') {
        return Err(EntryError::Json("not a JSON object".into()));
    }
    let raw: RawEntry = serde_json::from_slice(line).map_err(EntryError::json)?;
    let cursor = match raw.cursor {
        Field::Null => return Err(EntryError::MissingCursor),
        Field::Text(c) if cursor_ok(&c) => c,
        _ => return Err(EntryError::BadCursor),
    };
    let realtime = match raw.realtime {
        Field::Null => return Err(EntryError::MissingTimestamp),
        Field::Text(t) => parse_micros(&t).ok_or(EntryError::BadTimestamp)?,
        _ => return Err(EntryError::BadTimestamp),
    };
    Ok(JournalEntry {
        cursor,
        realtime,
        hostname: raw.hostname.into_text(),
        identifier: raw
            .syslog_identifier
            .into_text()
            .or_else(|| raw.comm.into_text()),
        pid: raw.pid.as_pid().or_else(|| raw.syslog_pid.as_pid()),
        unit: raw.unit.into_text(),
        message: raw.message.into_text().unwrap_or_default(),
    })
}

/// `"{host} {ident}[{pid}]: {message}"`, or `"{host} {ident}: {message}"` without a pid: what
/// rsyslog writes after the date, so line patterns written for /var/log/auth.log match it. A
/// missing host or identifier is `-`. Control characters are replaced here too, so a
/// hand-built entry cannot smuggle one.
pub fn syslog_line(e: &JournalEntry) -> String {
    let host = control_pictures(non_empty(e.hostname.as_deref()).unwrap_or(NIL));
    let ident = control_pictures(non_empty(e.identifier.as_deref()).unwrap_or(NIL));
    let message = control_pictures(&e.message);
    match e.pid {
        Some(pid) => format!("{host} {ident}[{pid}]: {message}"),
        None => format!("{host} {ident}: {message}"),
    }
}

fn non_empty(s: Option<&str>) -> Option<&str> {
    s.filter(|s| !s.is_empty())
}

/// Replaces what must not reach a terminal or split a line: each C0 control by its Unicode
/// control picture (LF → U+240A ␊, ESC → U+241B ␛, NUL → U+2400 ␀), DEL by U+2421 ␡, and each C1
/// control (U+0080–U+009F, which have no pictures and which some terminals obey, as CSI U+009B)
/// by U+FFFD. Tab is a C0 control too: it becomes ␉, as rsyslog escapes it by default. Bidi and
/// zero-width characters pass; the CLI's display sanitiser deals with those.
pub fn control_pictures(s: &str) -> Cow<'_, str> {
    if !s.chars().any(is_replaced) {
        return Cow::Borrowed(s);
    }
    Cow::Owned(s.chars().map(picture).collect())
}

fn is_replaced(c: char) -> bool {
    matches!(c, '\u{0}'..='\u{1f}' | '\u{7f}'..='\u{9f}')
}

fn picture(c: char) -> char {
    match c {
        '\u{0}'..='\u{1f}' => {
            char::from_u32(0x2400 + c as u32).unwrap_or(char::REPLACEMENT_CHARACTER)
        }
        '\u{7f}' => '\u{2421}',
        '\u{80}'..='\u{9f}' => char::REPLACEMENT_CHARACTER,
        c => c,
    }
}

/// Owned text with its control characters replaced, reusing the allocation when there are none.
fn clean(s: String) -> String {
    match control_pictures(&s) {
        Cow::Borrowed(_) => s,
        Cow::Owned(o) => o,
    }
}

/// journalctl's cursors are `s=…;i=…;b=…;m=…;t=…;x=…`: printable ASCII without spaces. Anything
/// else did not come from journalctl (and would be an odd thing to store and pass back).
fn cursor_ok(c: &str) -> bool {
    !c.is_empty() && c.len() <= 1024 && c.bytes().all(|b| b.is_ascii_graphic())
}

fn parse_micros(t: &str) -> Option<DateTime<Utc>> {
    // Digits only: `parse` alone would also take a leading `+`.
    if t.is_empty() || t.len() > 19 || !t.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    DateTime::from_timestamp_micros(t.parse::<i64>().ok()?)
}

/// The fields read from a line; serde skips the others without building them.
#[derive(Deserialize)]
struct RawEntry {
    #[serde(rename = "__CURSOR", default)]
    cursor: Field,
    #[serde(rename = "__REALTIME_TIMESTAMP", default)]
    realtime: Field,
    #[serde(rename = "_HOSTNAME", default)]
    hostname: Field,
    #[serde(rename = "SYSLOG_IDENTIFIER", default)]
    syslog_identifier: Field,
    #[serde(rename = "_COMM", default)]
    comm: Field,
    #[serde(rename = "_PID", default)]
    pid: Field,
    #[serde(rename = "SYSLOG_PID", default)]
    syslog_pid: Field,
    #[serde(rename = "_SYSTEMD_UNIT", default)]
    unit: Field,
    #[serde(rename = "MESSAGE", default)]
    message: Field,
}

/// One field's value in journalctl's JSON: a string, an array of byte values (not printable
/// UTF-8), `null` (withheld, or absent), or for a field given more than once an array of those.
#[derive(Debug, Default, PartialEq, Eq)]
enum Field {
    #[default]
    Null,
    Text(String),
    Bytes(Vec<u8>),
    Many(Vec<Field>),
}

impl Field {
    /// The value as safe text; several values joined by a line feed (made visible by `clean`).
    /// Empty text is `None`.
    fn into_text(self) -> Option<String> {
        let text = match self {
            Field::Null => return None,
            Field::Text(s) => s,
            Field::Bytes(b) => lossy(b),
            Field::Many(values) => {
                let parts: Vec<String> = values.into_iter().filter_map(Field::into_text).collect();
                parts.join("\n")
            }
        };
        (!text.is_empty()).then(|| clean(text))
    }

    /// A pid: one value of 1 to 10 ASCII digits that fits a `u32`.
    fn as_pid(&self) -> Option<u32> {
        let digits: &[u8] = match self {
            Field::Text(s) => s.as_bytes(),
            Field::Bytes(b) => b,
            Field::Null | Field::Many(_) => return None,
        };
        if digits.is_empty() || digits.len() > 10 || !digits.iter().all(u8::is_ascii_digit) {
            return None;
        }
        std::str::from_utf8(digits).ok()?.parse().ok()
    }
}

/// UTF-8 without a copy when it is valid, else decoded lossily (U+FFFD for each bad sequence).
fn lossy(bytes: Vec<u8>) -> String {
    String::from_utf8(bytes).unwrap_or_else(|e| String::from_utf8_lossy(e.as_bytes()).into_owned())
}

impl<'de> Deserialize<'de> for Field {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Field, D::Error> {
        d.deserialize_any(FieldVisitor)
    }
}

struct FieldVisitor;

impl<'de> Visitor<'de> for FieldVisitor {
    type Value = Field;

    fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
        f.write_str("a journal field value (string, byte array, null or an array of these)")
    }

    fn visit_str<E: de::Error>(self, v: &str) -> Result<Field, E> {
        Ok(Field::Text(v.to_owned()))
    }

    fn visit_string<E: de::Error>(self, v: String) -> Result<Field, E> {
        Ok(Field::Text(v))
    }

    fn visit_unit<E: de::Error>(self) -> Result<Field, E> {
        Ok(Field::Null)
    }

    fn visit_none<E: de::Error>(self) -> Result<Field, E> {
        Ok(Field::Null)
    }

    fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<Field, A::Error> {
        // Either all byte values (one binary value) or all values (a repeated field).
        let mut bytes = Vec::new();
        let mut values = Vec::new();
        while let Some(elem) = seq.next_element::<Elem>()? {
            match elem {
                Elem::Byte(b) => bytes.push(b),
                Elem::Value(v) => values.push(v),
            }
            if !bytes.is_empty() && !values.is_empty() {
                return Err(de::Error::custom(
                    "an array mixes byte values and field values",
                ));
            }
        }
        Ok(if values.is_empty() {
            Field::Bytes(bytes)
        } else {
            Field::Many(values)
        })
    }
}

/// An element of a top-level array: a byte, or one value of a repeated field (never itself a
/// repeated field, so nesting stops at two levels).
enum Elem {
    Byte(u8),
    Value(Field),
}

impl<'de> Deserialize<'de> for Elem {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Elem, D::Error> {
        d.deserialize_any(ElemVisitor)
    }
}

struct ElemVisitor;

impl<'de> Visitor<'de> for ElemVisitor {
    type Value = Elem;

    fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
        f.write_str("a byte value 0-255, a string, null or an array of byte values")
    }

    fn visit_u64<E: de::Error>(self, v: u64) -> Result<Elem, E> {
        u8::try_from(v)
            .map(Elem::Byte)
            .map_err(|_| E::custom("a byte value above 255"))
    }

    fn visit_i64<E: de::Error>(self, v: i64) -> Result<Elem, E> {
        u8::try_from(v)
            .map(Elem::Byte)
            .map_err(|_| E::custom("a byte value out of 0-255"))
    }

    fn visit_str<E: de::Error>(self, v: &str) -> Result<Elem, E> {
        Ok(Elem::Value(Field::Text(v.to_owned())))
    }

    fn visit_string<E: de::Error>(self, v: String) -> Result<Elem, E> {
        Ok(Elem::Value(Field::Text(v)))
    }

    fn visit_unit<E: de::Error>(self) -> Result<Elem, E> {
        Ok(Elem::Value(Field::Null))
    }

    fn visit_none<E: de::Error>(self) -> Result<Elem, E> {
        Ok(Elem::Value(Field::Null))
    }

    fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<Elem, A::Error> {
        let mut bytes = Vec::new();
        while let Some(b) = seq.next_element::<u8>()? {
            bytes.push(b);
        }
        Ok(Elem::Value(Field::Bytes(bytes)))
    }
}

/// Why the reader stopped.
#[derive(Debug, thiserror::Error)]
pub enum JournalError {
    #[error(transparent)]
    Query(#[from] QueryError),
    #[error("cannot start `{program}`: {source} (is systemd's journalctl installed and on PATH?)")]
    Spawn {
        program: String,
        #[source]
        source: io::Error,
    },
    #[error("reading journalctl's output: {0}")]
    Read(#[source] io::Error),
    #[error("{}", exited_message(.status, .stderr))]
    Exited { status: ExitStatus, stderr: String },
}

fn exited_message(status: &ExitStatus, stderr: &str) -> String {
    let words = if stderr.is_empty() {
        "it wrote nothing on stderr".to_string()
    } else {
        format!("it said: {stderr}")
    };
    let hint = if stderr.contains("insufficient permissions") {
        "; add csirt's user to the systemd-journal group (or adm) so it can read the journal"
    } else {
        ""
    };
    format!("journalctl stopped ({status}); {words}{hint}")
}

/// A line that was skipped, and why; the lines after it keep flowing.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Skipped {
    /// The line's length in bytes (without its newline).
    pub bytes: usize,
    pub reason: SkipReason,
}

/// Why a line was skipped.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum SkipReason {
    #[error("longer than {max} bytes")]
    TooLong { max: usize },
    #[error(transparent)]
    Invalid(#[from] EntryError),
}

impl fmt::Display for Skipped {
    fn fmt(&self, f: &mut fmt::Formatter) -> fmt::Result {
        write!(
            f,
            "journal line of {} bytes skipped: {}",
            self.bytes, self.reason
        )
    }
}

/// What one read of stdout produced.
enum Read {
    /// `JournalTail::line` holds a complete line (without its newline).
    Line,
    /// A line longer than `MAX_LINE` was passed over; its length.
    TooLong(usize),
    Eof,
}

/// A running `journalctl --follow`, read in batches.
///
/// [`next_batch`](JournalTail::next_batch) is cancel-safe: a partial line and the entries of an
/// unfinished batch stay in the reader, so dropping the future (a `select!` on shutdown or a
/// timer) loses nothing; the next call returns them. Skipped lines are not errors: they are kept
/// for [`take_skipped`](JournalTail::take_skipped) and counted in
/// [`skipped_total`](JournalTail::skipped_total).
pub struct JournalTail {
    child: Child,
    stdout: BufReader<ChildStdout>,
    /// The line being assembled across reads.
    line: Vec<u8>,
    /// Inside a line longer than `MAX_LINE`: bytes passed over so far.
    discarding: Option<usize>,
    /// Entries read for the batch not yet returned.
    pending: Vec<JournalEntry>,
    /// The resume cursor: the first entry is dropped when it is this one (`--cursor` is inclusive).
    resume_cursor: Option<String>,
    skipped: Vec<Skipped>,
    /// Lines skipped since the last batch was returned (to end a batch in a flood of bad lines).
    skipped_in_batch: usize,
    skipped_total: u64,
    stderr: Arc<Mutex<Vec<u8>>>,
    stderr_task: Option<JoinHandle<()>>,
}

impl JournalTail {
    /// Checks `q` and starts journalctl for it.
    pub fn spawn(q: &JournalQuery) -> Result<JournalTail, JournalError> {
        q.validate()?;
        JournalTail::with_command(command(q), q.after_cursor.clone())
    }

    /// Starts `cmd`, which must write journalctl's JSON lines (a wrapper such as `sudo -u`, or a
    /// test's script). `resume_cursor` is the cursor `cmd` starts at inclusively, as `--cursor`:
    /// the first entry is dropped when it carries it.
    pub fn with_command(
        mut cmd: Command,
        resume_cursor: Option<String>,
    ) -> Result<JournalTail, JournalError> {
        prepare(&mut cmd);
        let program = cmd.as_std().get_program().to_string_lossy().into_owned();
        let spawn_error = |source| JournalError::Spawn {
            program: program.clone(),
            source,
        };
        let mut child = cmd.spawn().map_err(spawn_error)?;
        let no_pipe =
            || io::Error::other("no pipe to the child (the command was changed after prepare)");
        let stdout = child.stdout.take().ok_or_else(|| spawn_error(no_pipe()))?;
        let stderr_pipe = child.stderr.take().ok_or_else(|| spawn_error(no_pipe()))?;
        let stderr = Arc::new(Mutex::new(Vec::new()));
        let stderr_task = tokio::spawn(keep_tail(stderr_pipe, Arc::clone(&stderr)));
        Ok(JournalTail {
            child,
            stdout: BufReader::with_capacity(64 * 1024, stdout),
            line: Vec::new(),
            discarding: None,
            pending: Vec::new(),
            resume_cursor,
            skipped: Vec::new(),
            skipped_in_batch: 0,
            skipped_total: 0,
            stderr,
            stderr_task: Some(stderr_task),
        })
    }

    /// Waits for at least one entry, then takes entries until `max` (at least 1) or until no
    /// line arrives within `linger`. Returns an empty batch only when lines were skipped and no
    /// entry came (see [`take_skipped`](JournalTail::take_skipped)), so that skips are reported
    /// without waiting for the next good entry. Entries read before journalctl ended are
    /// returned first; the call after them returns [`JournalError::Exited`].
    pub async fn next_batch(
        &mut self,
        max: usize,
        linger: Duration,
    ) -> Result<Vec<JournalEntry>, JournalError> {
        let max = max.max(1);
        while self.pending.len() + self.skipped_in_batch < max {
            let first = self.pending.is_empty() && self.skipped_in_batch == 0;
            let read = if first {
                self.read_line().await
            } else {
                match tokio::time::timeout(linger, self.read_line()).await {
                    Ok(read) => read,
                    Err(_) => break,
                }
            };
            match read.map_err(JournalError::Read)? {
                Read::Line => self.take_line(),
                Read::TooLong(bytes) => {
                    self.resume_cursor = None;
                    self.skip(Skipped {
                        bytes,
                        reason: SkipReason::TooLong { max: MAX_LINE },
                    });
                }
                Read::Eof if first => return Err(self.exited().await),
                Read::Eof => break,
            }
        }
        self.skipped_in_batch = 0;
        Ok(std::mem::take(&mut self.pending))
    }

    /// The skipped lines since the last call (at most 64 of them in detail).
    pub fn take_skipped(&mut self) -> Vec<Skipped> {
        std::mem::take(&mut self.skipped)
    }

    /// Lines skipped since the start.
    pub fn skipped_total(&self) -> u64 {
        self.skipped_total
    }

    /// journalctl's process id while it runs.
    pub fn id(&self) -> Option<u32> {
        self.child.id()
    }

    /// The last words journalctl wrote on stderr so far (warnings it prints while it keeps
    /// running, such as a corrupted file it ignores), made safe and on one line.
    pub fn stderr_tail(&self) -> String {
        let bytes = self
            .stderr
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .clone();
        one_line(&String::from_utf8_lossy(&bytes))
    }

    /// Stops journalctl and waits for it, so that its exit is reaped before the caller goes on.
    pub async fn stop(mut self) -> io::Result<()> {
        // An error here means it has exited already; `wait` reaps it either way.
        let _ = self.child.start_kill();
        self.child.wait().await.map(|_| ())
    }

    /// Parses `self.line` into `pending`, or records why not.
    fn take_line(&mut self) {
        let bytes = self.line.len();
        let parsed = parse_entry(&self.line);
        self.line.clear();
        let resume = self.resume_cursor.take();
        match parsed {
            Ok(entry) if resume.as_deref() == Some(entry.cursor.as_str()) => {}
            Ok(entry) => self.pending.push(entry),
            Err(e) => self.skip(Skipped {
                bytes,
                reason: SkipReason::Invalid(e),
            }),
        }
    }

    fn skip(&mut self, skipped: Skipped) {
        self.skipped_total += 1;
        self.skipped_in_batch += 1;
        if self.skipped.len() < SKIPPED_KEPT {
            self.skipped.push(skipped);
        }
    }

    /// Reads up to the next newline into `self.line`, passing over lines longer than `MAX_LINE`.
    /// Cancel-safe: every byte taken from the buffer is in `self.line` (or counted) before the
    /// next await.
    async fn read_line(&mut self) -> io::Result<Read> {
        loop {
            let available = self.stdout.fill_buf().await?;
            if available.is_empty() {
                // journalctl ends each entry with a newline; a last line without one (a writer
                // killed mid-line) is still given to the parser rather than lost silently.
                if let Some(bytes) = self.discarding.take() {
                    return Ok(Read::TooLong(bytes));
                }
                if !self.line.is_empty() {
                    return Ok(Read::Line);
                }
                return Ok(Read::Eof);
            }
            let newline = memchr::memchr(b'\n', available);
            let chunk = &available[..newline.unwrap_or(available.len())];
            match &mut self.discarding {
                Some(bytes) => *bytes += chunk.len(),
                None if self.line.len() + chunk.len() > MAX_LINE => {
                    self.discarding = Some(self.line.len() + chunk.len());
                    // Give the memory back: one long line must not pin a megabyte for good.
                    self.line = Vec::new();
                }
                None => self.line.extend_from_slice(chunk),
            }
            let consumed = newline.map_or(available.len(), |i| i + 1);
            self.stdout.consume(consumed);
            if newline.is_some() {
                return Ok(match self.discarding.take() {
                    Some(bytes) => Read::TooLong(bytes),
                    None => Read::Line,
                });
            }
        }
    }

    /// journalctl's stdout ended: its status and last words.
    async fn exited(&mut self) -> JournalError {
        let status = match self.child.wait().await {
            Ok(status) => status,
            Err(e) => return JournalError::Read(e),
        };
        // Its stderr closes when it exits; the reader task then ends. The bound covers a
        // descendant that kept the pipe open.
        if let Some(task) = self.stderr_task.take() {
            let _ = tokio::time::timeout(Duration::from_secs(1), task).await;
        }
        JournalError::Exited {
            status,
            stderr: self.stderr_tail(),
        }
    }
}

/// Keeps the last `STDERR_TAIL` bytes journalctl writes on stderr.
async fn keep_tail(mut stderr: ChildStderr, tail: Arc<Mutex<Vec<u8>>>) {
    let mut chunk = [0u8; 1024];
    loop {
        match stderr.read(&mut chunk).await {
            Ok(0) | Err(_) => break,
            Ok(n) => {
                let mut kept = tail.lock().unwrap_or_else(|e| e.into_inner());
                kept.extend_from_slice(&chunk[..n]);
                if kept.len() > STDERR_TAIL {
                    let cut = kept.len() - STDERR_TAIL;
                    kept.drain(..cut);
                }
            }
        }
    }
}

/// journalctl's words on one line: its lines joined by `; `, control characters made visible.
fn one_line(text: &str) -> String {
    let joined = text
        .lines()
        .map(str::trim)
        .filter(|l| !l.is_empty())
        .collect::<Vec<_>>()
        .join("; ");
    control_pictures(&joined).into_owned()
}

#[cfg(test)]
mod tests {
    use super::*;

    const CURSOR: &str = "s=8bbac6b866e740e5a68fdb2701b8ffe2;i=1;b=0123456789abcdef0123456789abcdef;m=3e8;t=60a24181e4000;x=ec7ce398abaf0238";

    /// A journalctl-shaped line with `extra` JSON members appended.
    fn line(extra: &str) -> String {
        format!(
            r#"{{"__CURSOR":"{CURSOR}","__REALTIME_TIMESTAMP":"1700000000123456","_BOOT_ID":"0123456789abcdef0123456789abcdef"{extra}}}"#
        )
    }

    fn parse(extra: &str) -> JournalEntry {
        parse_entry(line(extra).as_bytes()).expect("a valid entry")
    }

    #[test]
    fn string_message_and_the_usual_fields() {
        let e = parse(
            r#","_HOSTNAME":"web1","SYSLOG_IDENTIFIER":"sshd","_COMM":"sshd-session","_PID":"4242","SYSLOG_PID":"1","_SYSTEMD_UNIT":"ssh.service","MESSAGE":"Failed password for root from 203.0.113.9 port 22 ssh2""#,
        );
        assert_eq!(e.cursor, CURSOR);
        assert_eq!(e.realtime.timestamp_micros(), 1_700_000_000_123_456);
        assert_eq!(e.hostname.as_deref(), Some("web1"));
        assert_eq!(e.identifier.as_deref(), Some("sshd"));
        assert_eq!(
            e.pid,
            Some(4242),
            "_PID (journald's) wins over SYSLOG_PID (the writer's)"
        );
        assert_eq!(e.unit.as_deref(), Some("ssh.service"));
        assert_eq!(
            syslog_line(&e),
            "web1 sshd[4242]: Failed password for root from 203.0.113.9 port 22 ssh2"
        );
    }

    #[test]
    fn byte_array_message_is_decoded_lossily_and_made_safe() {
        // "bad \xff\xfe utf8\n" as journalctl writes a non-UTF-8 value.
        let e = parse(r#","MESSAGE":[98,97,100,32,255,254,32,117,116,102,56,10]"#);
        assert_eq!(e.message, "bad \u{fffd}\u{fffd} utf8\u{240a}");
    }

    #[test]
    fn null_or_absent_message_is_empty() {
        assert_eq!(parse(r#","MESSAGE":null"#).message, "");
        assert_eq!(parse("").message, "");
        assert_eq!(parse(r#","MESSAGE":[]"#).message, "");
    }

    #[test]
    fn repeated_field_keeps_every_value() {
        let e = parse(
            r#","MESSAGE":["first",[115,101,99,111,110,100],null],"_PID":["1","2"],"SYSLOG_IDENTIFIER":["sshd","evil"]"#,
        );
        assert_eq!(e.message, "first\u{240a}second");
        assert_eq!(e.pid, None, "two pids are no pid");
        assert_eq!(e.identifier.as_deref(), Some("sshd\u{240a}evil"));
    }

    #[test]
    fn missing_or_bad_cursor_is_an_error() {
        let no_cursor = r#"{"__REALTIME_TIMESTAMP":"1700000000000000","MESSAGE":"x"}"#;
        assert_eq!(
            parse_entry(no_cursor.as_bytes()),
            Err(EntryError::MissingCursor)
        );
        for cursor in [
            r#""""#,
            r#""s=1 i=2""#,
            r#""s=\u001b[31m""#,
            "[115]",
            "7",
            "null",
        ] {
            let l = format!(r#"{{"__CURSOR":{cursor},"__REALTIME_TIMESTAMP":"1"}}"#);
            assert!(parse_entry(l.as_bytes()).is_err(), "cursor {cursor}");
        }
    }

    #[test]
    fn timestamp_must_be_decimal_microseconds_in_range() {
        let with = |t: &str| {
            parse_entry(format!(r#"{{"__CURSOR":"c","__REALTIME_TIMESTAMP":{t}}}"#).as_bytes())
        };
        assert_eq!(with("\"0\"").map(|e| e.realtime.timestamp()), Ok(0));
        for bad in [
            "\"\"",
            "\"+5\"",
            "\"-5\"",
            "\"1e6\"",
            "\" 5\"",
            "\"99999999999999999999\"",
            "[49]",
        ] {
            assert_eq!(with(bad), Err(EntryError::BadTimestamp), "timestamp {bad}");
        }
        // A number is not a shape journalctl writes for any field.
        assert!(matches!(with("5"), Err(EntryError::Json(_))));
        assert_eq!(
            parse_entry(br#"{"__CURSOR":"c"}"#),
            Err(EntryError::MissingTimestamp)
        );
    }

    #[test]
    fn garbage_is_an_error_never_a_panic() {
        let long_nesting = "[".repeat(10_000);
        let cases: Vec<&[u8]> = vec![
            b"",
            b"\n",
            b"not json",
            b"[]",
            b"\"string\"",
            b"{\"__CURSOR\":",
            b"\xff\xfe\x00",
            b"-- No entries --",
            long_nesting.as_bytes(),
        ];
        for case in cases {
            assert!(parse_entry(case).is_err(), "{case:?}");
        }
        // Shapes journalctl never writes.
        for extra in [
            r#","MESSAGE":5"#,
            r#","MESSAGE":{"a":1}"#,
            r#","MESSAGE":[1,"x"]"#,
            r#","MESSAGE":[256]"#,
            r#","MESSAGE":[-1]"#,
            r#","MESSAGE":[[1,"x"]]"#,
            r#","MESSAGE":[["x"]]"#,
            r#","MESSAGE":"a","MESSAGE":"b""#,
        ] {
            assert!(parse_entry(line(extra).as_bytes()).is_err(), "{extra}");
        }
        assert!(parse_entry(format!("{} trailing", line("")).as_bytes()).is_err());
    }

    #[test]
    fn error_text_is_cut_and_safe() {
        let evil = format!(r#"{{"__CURSOR":"\u001b[2J{}"}}"#, "A".repeat(5000));
        let l = format!("{evil}{{");
        let text = parse_entry(l.as_bytes())
            .expect_err("trailing junk")
            .to_string();
        assert!(text.chars().count() < 300, "{text}");
        assert!(!text.chars().any(|c| c.is_control()), "{text:?}");
    }

    #[test]
    fn huge_or_odd_pid_is_unknown_not_an_error() {
        for pid in [
            r#""4294967296""#,
            r#""99999999999999999999""#,
            r#""-1""#,
            r#""+7""#,
            r#""12a""#,
            r#""""#,
            r#"" 7""#,
        ] {
            let e = parse(&format!(r#","SYSLOG_PID":{pid}"#));
            assert_eq!(e.pid, None, "pid {pid}");
        }
        assert_eq!(parse(r#","SYSLOG_PID":"4294967295""#).pid, Some(u32::MAX));
        assert_eq!(parse(r#","_PID":"x","SYSLOG_PID":"7""#).pid, Some(7));
    }

    #[test]
    fn control_characters_in_message_become_pictures() {
        let e = parse(
            r#","MESSAGE":"ok\r\nsshd[1]: Accepted password for root\u0000\u001b[31m\t\u007f\u009b","SYSLOG_IDENTIFIER":"x\ny""#,
        );
        assert_eq!(
            e.message,
            "ok\u{240d}\u{240a}sshd[1]: Accepted password for root\u{2400}\u{241b}[31m\u{2409}\u{2421}\u{fffd}"
        );
        assert_eq!(e.identifier.as_deref(), Some("x\u{240a}y"));
        let l = syslog_line(&e);
        assert_eq!(l.lines().count(), 1);
        assert!(!l.chars().any(char::is_control), "{l:?}");
    }

    #[test]
    fn identifier_falls_back_to_comm_and_empty_is_unknown() {
        let e = parse(r#","SYSLOG_IDENTIFIER":"","_COMM":"cron","MESSAGE":"m""#);
        assert_eq!(e.identifier.as_deref(), Some("cron"));
        let e = parse(r#","_HOSTNAME":"","MESSAGE":"m""#);
        assert_eq!((e.hostname, e.identifier), (None, None));
    }

    fn entry(
        host: Option<&str>,
        ident: Option<&str>,
        pid: Option<u32>,
        message: &str,
    ) -> JournalEntry {
        JournalEntry {
            cursor: "c".into(),
            realtime: DateTime::from_timestamp_micros(0).expect("epoch"),
            hostname: host.map(Into::into),
            identifier: ident.map(Into::into),
            pid,
            unit: None,
            message: message.into(),
        }
    }

    #[test]
    fn syslog_line_shapes() {
        let cases = [
            (Some("h"), Some("sshd"), Some(7), "m", "h sshd[7]: m"),
            (Some("h"), Some("kernel"), None, "m", "h kernel: m"),
            (None, None, None, "m", "- -: m"),
            (Some(""), Some(""), Some(1), "", "- -[1]: "),
            // A hand-built entry cannot smuggle a line break or an escape through.
            (
                Some("h\n"),
                Some("a\u{1b}"),
                None,
                "x\ny",
                "h\u{240a} a\u{241b}: x\u{240a}y",
            ),
        ];
        for (host, ident, pid, message, want) in cases {
            assert_eq!(syslog_line(&entry(host, ident, pid, message)), want);
        }
    }

    #[test]
    fn syslog_line_matches_an_auth_log_pattern() {
        let re = regex::Regex::new(
            r"sshd\[\d+\]: Failed password for (?:invalid user )?\S+ from (\S+) port \d+ ssh2$",
        )
        .expect("pattern");
        let e = entry(
            Some("web1"),
            Some("sshd"),
            Some(99),
            "Failed password for root from 203.0.113.7 port 22 ssh2",
        );
        let l = syslog_line(&e);
        assert_eq!(
            re.captures(&l).map(|c| c[1].to_string()).as_deref(),
            Some("203.0.113.7")
        );
    }

    #[test]
    fn query_validation() {
        let q = |m: &[&str]| JournalQuery {
            matches: m.iter().map(|s| s.to_string()).collect(),
            ..JournalQuery::default()
        };
        for good in [
            &[][..],
            &["_SYSTEMD_UNIT=ssh.service"],
            &[
                "SYSLOG_IDENTIFIER=sshd",
                "SYSLOG_IDENTIFIER=sudo",
                "+",
                "_TRANSPORT=kernel",
            ],
            &["MESSAGE="],
            &["MESSAGE=a=b c\td"],
            &["_PID=1"],
        ] {
            assert_eq!(q(good).validate(), Ok(()), "{good:?}");
        }
        for bad in [
            &["ssh.service"][..],
            &["_systemd_unit=x"],
            &["=x"],
            &["__CURSOR=x"],
            &["FIELD-NAME=x"],
            &["-n=5"],
            &["/usr/sbin/sshd"],
            &["MESSAGE=a\0b"],
            &["+"],
            &["A=1", "+"],
            &["+", "A=1"],
            &["A=1", "+", "+", "B=2"],
        ] {
            assert!(q(bad).validate().is_err(), "{bad:?}");
        }
        let long = format!("{}=x", "A".repeat(65));
        assert!(q(&[&long]).validate().is_err());
        let with_cursor = |c: &str| JournalQuery {
            after_cursor: Some(c.into()),
            ..JournalQuery::default()
        };
        assert_eq!(with_cursor(CURSOR).validate(), Ok(()));
        for bad in ["", "s=1 i=2", "s=1\n", "s=\u{e9}"] {
            assert!(with_cursor(bad).validate().is_err(), "{bad:?}");
        }
    }

    fn args(q: &JournalQuery) -> Vec<String> {
        command(q)
            .as_std()
            .get_args()
            .map(|a| a.to_string_lossy().into_owned())
            .collect()
    }

    #[test]
    fn command_flags() {
        let q = JournalQuery {
            matches: vec!["_SYSTEMD_UNIT=ssh.service".into()],
            directory: Some(PathBuf::from("/tmp/j")),
            after_cursor: None,
            from_start: false,
        };
        let a = args(&q);
        assert_eq!(command(&q).as_std().get_program(), "journalctl");
        for flag in [
            "--output=json",
            "--all",
            "--follow",
            "--merge",
            "--no-pager",
            "--directory=/tmp/j",
            "--lines=0",
        ] {
            assert!(a.contains(&flag.to_string()), "{flag} in {a:?}");
        }
        assert_eq!(a[a.len() - 2..], ["--", "_SYSTEMD_UNIT=ssh.service"]);
        let env: Vec<_> = command(&q)
            .as_std()
            .get_envs()
            .map(|(k, v)| (k.to_owned(), v.map(|v| v.to_owned())))
            .collect();
        assert!(env.contains(&("SYSTEMD_COLORS".into(), Some("0".into()))));

        let start = args(&JournalQuery {
            from_start: true,
            ..q.clone()
        });
        assert!(
            start.contains(&"--no-tail".to_string())
                && !start.iter().any(|a| a.starts_with("--lines"))
        );

        let resume = args(&JournalQuery {
            after_cursor: Some(CURSOR.into()),
            from_start: false,
            ..q.clone()
        });
        assert!(resume.contains(&format!("--cursor={CURSOR}")));
        assert!(resume.contains(&"--no-tail".to_string()));
        assert!(
            !resume
                .iter()
                .any(|a| a.starts_with("--after-cursor") || a.starts_with("--lines"))
        );
    }

    /// A tail over `sh -c script`, standing in for journalctl.
    fn sh(script: &str, resume: Option<&str>) -> JournalTail {
        let mut cmd = Command::new("sh");
        cmd.arg("-c").arg(script);
        JournalTail::with_command(cmd, resume.map(Into::into)).expect("spawn sh")
    }

    fn json_line(i: u32) -> String {
        format!(r#"{{"__CURSOR":"c{i}","__REALTIME_TIMESTAMP":"{i}","MESSAGE":"m{i}"}}"#)
    }

    /// A shell script that prints `lines` (single quotes are not used in them).
    fn printing(lines: &[String]) -> String {
        lines
            .iter()
            .map(|l| format!("printf '%s\\n' '{l}'\n"))
            .collect()
    }

    fn messages(batch: &[JournalEntry]) -> Vec<&str> {
        batch.iter().map(|e| e.message.as_str()).collect()
    }

    const LINGER: Duration = Duration::from_millis(100);

    #[tokio::test]
    async fn bad_and_long_lines_are_skipped_and_exit_is_reported() {
        let script = format!(
            "{}echo 'not json'\nhead -c {} /dev/zero | tr '\\0' x; echo\n{}echo 'journalctl: Failed to open /x: No such file or directory' >&2\nexit 3",
            printing(&[json_line(1)]),
            MAX_LINE + 10,
            printing(&[json_line(2)]),
        );
        let mut tail = sh(&script, None);
        let mut got = Vec::new();
        let error = loop {
            match tail.next_batch(100, LINGER).await {
                Ok(batch) => got.extend(batch),
                Err(e) => break e,
            }
        };
        assert_eq!(messages(&got), ["m1", "m2"]);
        let skipped = tail.take_skipped();
        assert_eq!(tail.skipped_total(), 2);
        assert!(
            matches!(skipped[0].reason, SkipReason::Invalid(EntryError::Json(_))),
            "{skipped:?}"
        );
        assert_eq!(
            skipped[1],
            Skipped {
                bytes: MAX_LINE + 10,
                reason: SkipReason::TooLong { max: MAX_LINE }
            }
        );
        match &error {
            JournalError::Exited { status, stderr } => {
                assert_eq!(status.code(), Some(3));
                assert_eq!(
                    stderr,
                    "journalctl: Failed to open /x: No such file or directory"
                );
            }
            other => panic!("not Exited: {other:?}"),
        }
        assert!(
            error.to_string().contains("No such file or directory"),
            "{error}"
        );
        // And again: the reader stays in its final state.
        assert!(matches!(
            tail.next_batch(1, LINGER).await,
            Err(JournalError::Exited { .. })
        ));
    }

    #[tokio::test]
    async fn batch_ends_at_max_and_after_linger() {
        let script = format!(
            "{}sleep 1\n{}sleep 5",
            printing(&(1..=5).map(json_line).collect::<Vec<_>>()),
            printing(&[json_line(6)])
        );
        let mut tail = sh(&script, None);
        assert_eq!(
            messages(&tail.next_batch(2, LINGER).await.expect("batch")),
            ["m1", "m2"]
        );
        assert_eq!(
            messages(&tail.next_batch(10, LINGER).await.expect("batch")),
            ["m3", "m4", "m5"]
        );
        assert_eq!(
            messages(&tail.next_batch(10, LINGER).await.expect("batch")),
            ["m6"]
        );
        tail.stop().await.expect("stop");
    }

    #[tokio::test]
    async fn dropped_call_loses_nothing() {
        // Half a line, a pause, the rest: a caller that gives up mid-line (a select! on a timer)
        // must still get the entry whole on its next call.
        let l = json_line(1);
        let (a, b) = l.split_at(20);
        let script = format!("printf '%s' '{a}'\nsleep 0.5\nprintf '%s\\n' '{b}'\nsleep 5");
        let mut tail = sh(&script, None);
        let early =
            tokio::time::timeout(Duration::from_millis(150), tail.next_batch(10, LINGER)).await;
        assert!(early.is_err(), "nothing complete yet");
        assert_eq!(
            messages(&tail.next_batch(10, LINGER).await.expect("batch")),
            ["m1"]
        );
        tail.stop().await.expect("stop");
    }

    #[tokio::test]
    async fn resume_cursor_drops_only_its_own_entry() {
        let lines: Vec<_> = (1..=3).map(json_line).collect();
        let mut tail = sh(&format!("{}sleep 5", printing(&lines)), Some("c1"));
        assert_eq!(
            messages(&tail.next_batch(10, LINGER).await.expect("batch")),
            ["m2", "m3"]
        );
        tail.stop().await.expect("stop");
        // The cursor's entry is gone (vacuumed) or does not match: nothing is dropped.
        let mut tail = sh(&format!("{}sleep 5", printing(&lines)), Some("c0"));
        assert_eq!(
            messages(&tail.next_batch(10, LINGER).await.expect("batch")),
            ["m1", "m2", "m3"]
        );
        tail.stop().await.expect("stop");
    }

    #[tokio::test]
    async fn only_skipped_lines_still_return() {
        let mut tail = sh("echo garbage\nsleep 5", None);
        let batch = tail.next_batch(10, LINGER).await.expect("batch");
        assert!(batch.is_empty());
        assert_eq!(tail.take_skipped().len(), 1);
        tail.stop().await.expect("stop");
    }

    #[tokio::test]
    async fn missing_program_is_a_spawn_error() {
        let cmd = Command::new("/nonexistent/journalctl");
        match JournalTail::with_command(cmd, None) {
            Err(JournalError::Spawn { program, .. }) => {
                assert_eq!(program, "/nonexistent/journalctl")
            }
            Err(other) => panic!("{other:?}"),
            Ok(_) => panic!("spawned a missing program"),
        }
    }

    #[tokio::test]
    async fn stderr_tail_keeps_the_last_words() {
        let mut tail = sh(
            &format!(
                "head -c {} /dev/zero | tr '\\0' a >&2\necho >&2\necho 'last words' >&2\nexit 1",
                3 * STDERR_TAIL
            ),
            None,
        );
        match tail.next_batch(1, LINGER).await {
            Err(JournalError::Exited { stderr, .. }) => {
                assert!(stderr.ends_with("last words"), "{stderr}");
                assert!(stderr.len() <= STDERR_TAIL, "{}", stderr.len());
            }
            other => panic!("{other:?}"),
        }
    }
}
