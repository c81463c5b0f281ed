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
    pub raw: Vec<u8>,
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
