//! Journal files for tests without systemd as PID 1, and the journal source read from them.
//!
//! Entries are written in the journal export format (https://systemd.io/JOURNAL_EXPORT_FORMATS/:
//! `FIELD=value` lines, the binary-safe form `FIELD\n<le64 size><bytes>\n` for values with a
//! newline or other control bytes, a blank line after each entry) and piped into Debian's
//! `systemd-journal-remote --output=DIR/NAME.journal -`; `journalctl --directory=DIR` reads the
//! result. What these tests rely on, checked against systemd 252 (Debian 12):
//! - `__REALTIME_TIMESTAMP` is the one mandatory field, whatever the format's page says about
//!   writers not caring for double-underscore fields: an entry without it is dropped ("Entry is
//!   invalid, ignoring") and the writer still exits 0, so [`append`] checks the count it reports.
//!   `_BOOT_ID` defaults to zeros and `__MONOTONIC_TIMESTAMP` to 0; a `__CURSOR` in the input is
//!   ignored (the file gives each entry its own).
//! - Running the writer again on the same output file appends to it: the same seqnum ID, the
//!   sequence numbers go on. When the file's header limits are reached (about 75,000 sshd entries,
//!   38 MB) it is archived as `NAME@….journal` and a new `NAME.journal` begun: read the directory.
//!   Realtime timestamps older than the file's last entry are accepted as they come.
//! - A `journalctl --directory=DIR --follow` already running sees appended entries through
//!   inotify, by the time the writer has exited: the story test read two appended entries about
//!   0.1 ms after a writer run of 5-8 ms (it prints what it sees; `--nocapture`).
//! - A cursor taken before an append still resumes exactly after its entry.
//!
//! Skipped, with a line on stderr, only where systemd-journal-remote is not installed; on CI
//! (`CI` set) its absence is a failure, so the suite cannot silently shrink.

use csirt::source::journal::{
    JournalEntry, JournalError, JournalQuery, JournalTail, SkipReason, syslog_line,
};
use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::atomic::{AtomicI64, Ordering};
use std::time::{Duration, Instant};

/// Where Debian puts the writer (usr-merged or not).
const JOURNAL_REMOTE: [&str; 2] = [
    "/usr/lib/systemd/systemd-journal-remote",
    "/lib/systemd/systemd-journal-remote",
];

/// How long a test waits for entries it expects before failing.
const PATIENCE: Duration = Duration::from_secs(10);

/// systemd-journal-remote, or `None` (after saying why) when it is not installed. Panics on CI.
pub fn journal_remote() -> Option<PathBuf> {
    if let Some(found) = JOURNAL_REMOTE
        .iter()
        .map(PathBuf::from)
        .find(|p| p.exists())
    {
        return Some(found);
    }
    if std::env::var_os("CI").is_some() {
        panic!(
            "CI is set but systemd-journal-remote is not installed (apt-get install systemd-journal-remote)"
        );
    }
    eprintln!(
        "skipped: systemd-journal-remote is not installed (apt-get install systemd-journal-remote)"
    );
    None
}

/// One entry to write, its fields in order.
#[derive(Debug, Clone)]
pub struct Entry {
    fields: Vec<(String, Vec<u8>)>,
}

/// The last realtime handed out, so that entries written in one test run are in time order.
static LAST_REALTIME: AtomicI64 = AtomicI64::new(0);

fn next_realtime() -> i64 {
    let now = chrono::Utc::now().timestamp_micros();
    let mut last = LAST_REALTIME.load(Ordering::Relaxed);
    loop {
        let t = now.max(last + 1);
        match LAST_REALTIME.compare_exchange(last, t, Ordering::Relaxed, Ordering::Relaxed) {
            Ok(_) => return t,
            Err(seen) => last = seen,
        }
    }
}

impl Entry {
    /// An entry with this MESSAGE and the current time.
    pub fn new(message: impl Into<Vec<u8>>) -> Entry {
        Entry {
            fields: vec![
                (
                    "__REALTIME_TIMESTAMP".into(),
                    next_realtime().to_string().into_bytes(),
                ),
                ("MESSAGE".into(), message.into()),
            ],
        }
    }

    /// An sshd failure as OpenSSH logs it, from `_SYSTEMD_UNIT=ssh.service`.
    pub fn sshd(pid: u32, ip: &str) -> Entry {
        Entry::new(format!("Failed password for root from {ip} port 22 ssh2"))
            .field("_HOSTNAME", "web1")
            .field("SYSLOG_IDENTIFIER", "sshd")
            .field("_COMM", "sshd")
            .field("_PID", pid.to_string())
            .field("_SYSTEMD_UNIT", "ssh.service")
    }

    /// Adds a field (a second one of the same name makes a repeated field).
    pub fn field(mut self, name: &str, value: impl Into<Vec<u8>>) -> Entry {
        self.fields.push((name.into(), value.into()));
        self
    }

    /// Sets a field that must appear once (the realtime, the boot ID).
    pub fn set(mut self, name: &str, value: impl Into<Vec<u8>>) -> Entry {
        self.fields.retain(|(n, _)| n != name);
        self.fields.push((name.into(), value.into()));
        self
    }
}

/// The export-format stream of `entries`.
pub fn export(entries: &[Entry]) -> Vec<u8> {
    let mut out = Vec::new();
    for entry in entries {
        for (name, value) in &entry.fields {
            // The text form cannot carry a newline; other control bytes are put in the binary
            // form too, so that what the writer stores is exactly the bytes given.
            if value.iter().any(|&b| b < 0x20) {
                out.extend_from_slice(name.as_bytes());
                out.push(b'\n');
                out.extend_from_slice(&(value.len() as u64).to_le_bytes());
                out.extend_from_slice(value);
                out.push(b'\n');
            } else {
                out.extend_from_slice(name.as_bytes());
                out.push(b'=');
                out.extend_from_slice(value);
                out.push(b'\n');
            }
        }
        out.push(b'\n');
    }
    out
}

/// Pipes `stream` into systemd-journal-remote writing (or appending to) `journal`; its stderr.
pub fn write_raw(writer: &Path, journal: &Path, stream: &[u8]) -> String {
    let mut child = Command::new(writer)
        .arg(format!("--output={}", journal.display()))
        .arg("-")
        .stdin(Stdio::piped())
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .expect("start systemd-journal-remote");
    child
        .stdin
        .take()
        .expect("stdin is piped")
        .write_all(stream)
        .expect("write the export stream");
    let out = child.wait_with_output().expect("systemd-journal-remote");
    let stderr = String::from_utf8_lossy(&out.stderr).into_owned();
    assert!(out.status.success(), "systemd-journal-remote: {stderr}");
    stderr
}

/// Appends `entries` to `journal`, checking that the writer kept every one.
pub fn append(writer: &Path, journal: &Path, entries: &[Entry]) {
    let stderr = write_raw(writer, journal, &export(entries));
    let want = format!("Finishing after writing {} entries", entries.len());
    assert!(stderr.contains(&want), "wanted `{want}`: {stderr}");
}

/// A directory with one journal file and the writer to append to it.
pub struct TestJournal {
    pub dir: tempfile::TempDir,
    writer: PathBuf,
}

impl TestJournal {
    /// `None` when systemd-journal-remote is missing (see [`journal_remote`]).
    pub fn new() -> Option<TestJournal> {
        Some(TestJournal {
            writer: journal_remote()?,
            dir: tempfile::tempdir().expect("temp dir"),
        })
    }

    pub fn file(&self) -> PathBuf {
        self.dir.path().join("test.journal")
    }

    pub fn append(&self, entries: &[Entry]) {
        append(&self.writer, &self.file(), entries)
    }

    /// A query over this directory, from its end.
    pub fn query(&self) -> JournalQuery {
        JournalQuery {
            directory: Some(self.dir.path().to_path_buf()),
            ..JournalQuery::default()
        }
    }

    /// A query over this directory, strictly after `cursor`.
    pub fn query_after(&self, cursor: String) -> JournalQuery {
        JournalQuery {
            after_cursor: Some(cursor),
            ..self.query()
        }
    }

    /// journalctl reading every entry of this directory, then following it.
    pub fn tail_from_start(&self) -> JournalTail {
        spawn(JournalQuery {
            from_start: true,
            ..self.query()
        })
    }

    /// journalctl reading this directory strictly after `cursor`, then following it.
    pub fn tail_after(&self, cursor: String) -> JournalTail {
        spawn(self.query_after(cursor))
    }
}

/// Starts journalctl for `q`.
pub fn spawn(q: JournalQuery) -> JournalTail {
    JournalTail::spawn(&q).expect("spawn journalctl")
}

/// Reads until `n` entries have come, failing after `PATIENCE` with what came.
async fn collect(tail: &mut JournalTail, n: usize) -> Vec<JournalEntry> {
    let mut got = Vec::new();
    let deadline = tokio::time::Instant::now() + PATIENCE;
    while got.len() < n {
        // Asking for exactly what is missing returns as soon as it is there (no linger).
        let batch = tail.next_batch(n - got.len(), Duration::from_millis(50));
        match tokio::time::timeout_at(deadline, batch).await {
            Ok(Ok(batch)) => got.extend(batch),
            Ok(Err(e)) => panic!("reader failed after {} entries: {e}", got.len()),
            Err(_) => panic!("{} of {n} entries within {PATIENCE:?}: {got:#?}", got.len()),
        }
    }
    got
}

/// Asserts that nothing arrives for `wait`.
async fn nothing_within(tail: &mut JournalTail, wait: Duration) {
    if let Ok(batch) =
        tokio::time::timeout(wait, tail.next_batch(100, Duration::from_millis(50))).await
    {
        panic!("expected nothing, got {batch:#?}");
    }
}

fn messages(entries: &[JournalEntry]) -> Vec<&str> {
    entries.iter().map(|e| e.message.as_str()).collect()
}

#[tokio::test]
async fn read_from_start_follow_appends_and_resume_after_the_last_cursor() {
    let Some(j) = TestJournal::new() else { return };
    j.append(&[
        Entry::sshd(101, "203.0.113.1"),
        Entry::sshd(102, "203.0.113.2"),
        Entry::sshd(103, "203.0.113.3"),
    ]);

    let mut tail = j.tail_from_start();
    let first = collect(&mut tail, 3).await;
    assert_eq!(
        first.iter().map(syslog_line).collect::<Vec<_>>(),
        [1, 2, 3].map(|i| format!(
            "web1 sshd[10{i}]: Failed password for root from 203.0.113.{i} port 22 ssh2"
        ))
    );
    assert_eq!(first[0].unit.as_deref(), Some("ssh.service"));
    let mut cursors: Vec<_> = first.iter().map(|e| e.cursor.clone()).collect();
    cursors.dedup();
    assert_eq!(cursors.len(), 3, "one cursor per entry");

    // Appended by a second run of the writer while journalctl follows.
    let started = Instant::now();
    j.append(&[
        Entry::sshd(104, "203.0.113.4"),
        Entry::sshd(105, "203.0.113.5"),
    ]);
    let written = started.elapsed();
    let second = collect(&mut tail, 2).await;
    eprintln!(
        "follow latency: the writer ran {written:?}; both entries read {:?} after it started",
        started.elapsed()
    );
    assert_eq!(second[1].pid, Some(105));
    // The second run continued the file: same seqnum ID, so the same sequence of cursors.
    let seqnum_id = |c: &str| c.split(';').next().map(str::to_owned);
    assert_eq!(seqnum_id(&second[0].cursor), seqnum_id(&first[0].cursor));
    tail.stop().await.expect("stop journalctl");

    // Restarted strictly after the last cursor: nothing old, then only what is new.
    let last = second[1].cursor.clone();
    let mut tail = spawn(JournalQuery {
        // The cursor wins over from_start.
        from_start: true,
        ..j.query_after(last)
    });
    nothing_within(&mut tail, Duration::from_millis(700)).await;
    j.append(&[Entry::sshd(106, "203.0.113.6")]);
    let third = collect(&mut tail, 1).await;
    assert_eq!(third[0].pid, Some(106));
    nothing_within(&mut tail, Duration::from_millis(300)).await;
    tail.stop().await.expect("stop journalctl");
}

#[tokio::test]
async fn from_the_end_reads_only_new_entries() {
    let Some(j) = TestJournal::new() else { return };
    j.append(&[Entry::new("old 1"), Entry::new("old 2")]);
    let mut tail = spawn(j.query());
    // journalctl must have seeked to the end before the append, or "new" could be read as old;
    // the quiet wait also proves the old entries are not delivered.
    nothing_within(&mut tail, Duration::from_millis(700)).await;
    j.append(&[Entry::new("new")]);
    assert_eq!(messages(&collect(&mut tail, 1).await), ["new"]);
    tail.stop().await.expect("stop journalctl");
}

/// Regression for what `--follow --after-cursor` does on its own: journalctl 252 implies
/// `--lines=10`, printed 10 of the 28 entries after the cursor and held the rest until something
/// new was written.
#[tokio::test]
async fn resume_reads_the_whole_backlog_without_new_writes() {
    let Some(j) = TestJournal::new() else { return };
    let entries: Vec<_> = (1..=30).map(|i| Entry::new(format!("m{i}"))).collect();
    j.append(&entries);
    let cursor = cursor_of(&j, "m2").await;
    let mut tail = j.tail_after(cursor);
    let got = collect(&mut tail, 28).await;
    assert_eq!(got[0].message, "m3");
    assert_eq!(got[27].message, "m30");
    tail.stop().await.expect("stop journalctl");
}

/// Regression for systemd#30288 (fixed in 255): `--after-cursor` with a match skipped the first
/// matching entry when the cursor's own entry did not match.
#[tokio::test]
async fn resume_with_a_match_loses_no_entry() {
    let Some(j) = TestJournal::new() else { return };
    let unit = |i: u32| {
        if i.is_multiple_of(2) {
            "b.service"
        } else {
            "a.service"
        }
    };
    let entries: Vec<_> = (1..=6)
        .map(|i| Entry::new(format!("m{i}")).field("_SYSTEMD_UNIT", unit(i)))
        .collect();
    j.append(&entries);
    let cursor = cursor_of(&j, "m1").await;
    let mut tail = spawn(JournalQuery {
        matches: vec!["_SYSTEMD_UNIT=b.service".into()],
        ..j.query_after(cursor)
    });
    assert_eq!(messages(&collect(&mut tail, 3).await), ["m2", "m4", "m6"]);
    tail.stop().await.expect("stop journalctl");
}

/// Regression for `--follow` implying `--boot` (systemd 250 on): a cursor from before a reboot
/// must resume with the rest of that boot and then the next, and a directory whose boots are
/// not this machine's must be readable at all.
#[tokio::test]
async fn resume_crosses_a_reboot() {
    let Some(j) = TestJournal::new() else { return };
    let boot = |b: &str, m: &str| Entry::new(m).set("_BOOT_ID", b);
    let (one, two) = (
        "11111111111111111111111111111111",
        "22222222222222222222222222222222",
    );
    j.append(&[boot(one, "boot1 a"), boot(one, "boot1 b")]);
    j.append(&[boot(two, "boot2 a")]);
    let cursor = cursor_of(&j, "boot1 a").await;
    let mut tail = j.tail_after(cursor);
    assert_eq!(
        messages(&collect(&mut tail, 2).await),
        ["boot1 b", "boot2 a"]
    );
    tail.stop().await.expect("stop journalctl");
}

#[tokio::test]
async fn hostile_messages_arrive_safe_and_oversized_ones_are_skipped() {
    let Some(j) = TestJournal::new() else { return };
    let long = "L".repeat(5000);
    j.append(&[
        Entry::new(b"line1\nsshd[1]: Accepted password for root\r\x1b[2J\x00end".to_vec())
            .field("SYSLOG_IDENTIFIER", "evil"),
        Entry::new(b"bad \xff\xfe utf8".to_vec()),
        // At 4096 bytes and more, journalctl writes null unless --all is given.
        Entry::new(long.clone()),
        // More JSON than MAX_LINE: skipped, and the next entry still comes.
        Entry::new("x".repeat(2 * 1024 * 1024)),
        Entry::new("after"),
    ]);
    let mut tail = j.tail_from_start();
    let got = collect(&mut tail, 4).await;
    assert_eq!(
        syslog_line(&got[0]),
        "- evil: line1\u{240a}sshd[1]: Accepted password for root\u{240d}\u{241b}[2J\u{2400}end"
    );
    assert_eq!(got[1].message, "bad \u{fffd}\u{fffd} utf8");
    assert_eq!(got[2].message, long);
    assert_eq!(got[3].message, "after");
    let skipped = tail.take_skipped();
    assert_eq!(skipped.len(), 1, "{skipped:?}");
    assert!(matches!(skipped[0].reason, SkipReason::TooLong { .. }));
    assert!(skipped[0].bytes > 2 * 1024 * 1024, "{}", skipped[0]);
    tail.stop().await.expect("stop journalctl");
}

#[tokio::test]
async fn a_missing_directory_is_reported_in_journalctls_words() {
    let Some(_) = journal_remote() else { return };
    let mut tail = spawn(JournalQuery {
        directory: Some(PathBuf::from("/nonexistent/csirt-journal")),
        ..JournalQuery::default()
    });
    let error = tokio::time::timeout(PATIENCE, tail.next_batch(10, Duration::from_millis(50)))
        .await
        .expect("journalctl exits at once");
    match error {
        Err(e @ JournalError::Exited { .. }) => {
            let text = e.to_string();
            assert!(text.contains("/nonexistent/csirt-journal"), "{text}");
            assert!(text.contains("No such file or directory"), "{text}");
        }
        other => panic!("not Exited: {other:?}"),
    }
}

#[test]
fn the_writer_drops_an_entry_without_realtime_and_still_succeeds() {
    let Some(j) = TestJournal::new() else { return };
    let stderr = write_raw(
        &j.writer,
        &j.file(),
        b"_BOOT_ID=0123456789abcdef0123456789abcdef\nMESSAGE=no time\n\n",
    );
    assert!(
        stderr.contains("Finishing after writing 0 entries"),
        "{stderr}"
    );
}

/// The cursor of the entry whose message is `message`, read with journalctl from the start.
async fn cursor_of(j: &TestJournal, message: &str) -> String {
    let mut tail = j.tail_from_start();
    let deadline = tokio::time::Instant::now() + PATIENCE;
    loop {
        let batch =
            tokio::time::timeout_at(deadline, tail.next_batch(100, Duration::from_millis(50)))
                .await
                .unwrap_or_else(|_| panic!("no entry `{message}` within {PATIENCE:?}"))
                .expect("read journal");
        if let Some(e) = batch.into_iter().find(|e| e.message == message) {
            tail.stop().await.expect("stop journalctl");
            return e.cursor;
        }
    }
}
