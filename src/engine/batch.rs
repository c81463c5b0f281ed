//! What a source hands to the store: hits with the checkpoints that cover them (and, for mail,
//! the message itself), committed together in one transaction — the exactly-once point.

use super::Hit;
use chrono::{DateTime, Utc};

/// Where a log source stands after the lines of a batch: the file's identity and the offset
/// after its last consumed line.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Checkpoint {
    pub dev: u64,
    pub inode: u64,
    pub fingerprint: String,
    pub path: String,
    pub offset: u64,
    pub line_no: u64,
    /// `"<length>:<hash>"` of the bytes just before `offset`: with `fingerprint`, what tells a
    /// copy of this file (logrotate's `copytruncate`) from a file that only starts the same way.
    /// Empty when unknown (checkpoints written before it was kept).
    pub tail_fingerprint: String,
}

/// Where a `[[journal]]` source stands after the entries of a batch: the journal's cursor of the
/// last entry read, and that entry's time.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct JournalCursor {
    /// The `[[journal]]` source's name.
    pub source: String,
    pub cursor: String,
    pub entry_at: DateTime<Utc>,
}

/// What one transaction commits: hits and the checkpoints that cover them.
#[derive(Debug, Clone, Default)]
pub struct Batch {
    pub node: String,
    pub hits: Vec<Hit>,
    pub checkpoints: Vec<Checkpoint>,
    /// Journal positions covering the hits from the journal.
    pub cursors: Vec<JournalCursor>,
    /// `[[logs]]` patterns started with this batch (their pre-existing files were positioned
    /// by `start_at`); recorded with the checkpoints so that a crash before it cannot re-apply it.
    pub patterns: Vec<String>,
    /// The intake mail these hits came from: stored in the same transaction, and a redelivery
    /// of it (same key and hash) makes the whole batch a no-op.
    pub mail: Option<MailRecord>,
}

/// An intake mail as the store keeps it: its identity, where it came from, its raw bytes.
#[derive(Debug, Clone)]
pub struct MailRecord {
    /// Message-ID, or `sha256:<hash>` when it has none.
    pub key: String,
    pub hash: String,
    /// `maildir:<file>`, `stdin`, `imap:<uid>`.
    pub source: String,
    pub size: i64,
    /// The message as it arrived (empty when it was too large to keep; the file is then kept
    /// in the quarantine folder).
    pub raw: RawMail,
}

/// The raw bytes of a mail, handed to the store once. Taking them lets the store move them into
/// its statement: sqlx copies a borrowed blob for its SQLite worker thread, and with SQLite's
/// own copy and record that made four copies of a 25 MiB mail in memory at once.
#[derive(Debug, Default)]
pub struct RawMail(std::sync::Mutex<Vec<u8>>);

impl RawMail {
    pub fn new(bytes: Vec<u8>) -> RawMail {
        RawMail(std::sync::Mutex::new(bytes))
    }

    /// The bytes, leaving none behind (a lock poisoned by a panic elsewhere still holds them).
    pub fn take(&self) -> Vec<u8> {
        std::mem::take(
            &mut *self
                .0
                .lock()
                .unwrap_or_else(std::sync::PoisonError::into_inner),
        )
    }
}

impl Clone for RawMail {
    fn clone(&self) -> RawMail {
        RawMail::new(
            self.0
                .lock()
                .unwrap_or_else(std::sync::PoisonError::into_inner)
                .clone(),
        )
    }
}

/// What a batch changed.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct IngestOutcome {
    /// The batch's mail was stored before: nothing was changed.
    pub duplicate: bool,
    /// Incidents this batch opened.
    pub opened: Vec<i64>,
    /// Open incidents this batch added events to.
    pub joined: Vec<i64>,
    /// Hits stored below their threshold.
    pub pending: usize,
    /// Incidents a later event raised (a login after failures).
    pub raised: Vec<i64>,
}
