//! Watching the `[[logs]]` patterns: which files to read, from where, through rotation.
//!
//! One reader thread owns every open file (reads are blocking I/O). inotify (through `notify`)
//! only wakes it; on each wake-up, and at least every `POLL_INTERVAL` in any case, it sweeps:
//! globs the patterns, notices new, rotated, truncated and deleted files, and reads each open
//! file to its end. Where inotify cannot watch (NFS, exhausted watches) the periodic sweep is the
//! polling fallback, and the log says so once.
//!
//! Position is kept per file identity (device, inode, head fingerprint), not per path: a file
//! renamed by logrotate is the same file under its new name, read to its end before it is let go,
//! and a glob that also matches `auth.log.1` does not read it twice. Matched lines travel to the
//! store in batches that carry the checkpoints of the files they came from; a full channel blocks
//! the reader (back-pressure), it never drops. Nothing here advances a checkpoint in the store:
//! only the store's transaction does, together with the hits.
//!
//! A copy is not a new file. logrotate's `copytruncate` (and a plain `cp`) makes a new inode
//! holding what was already read; where the glob matches it (`auth.log*`), reading it from its
//! beginning would count every line twice. A new file is opened, but nothing is read from it
//! until its bytes say what it is (`copy_of`): while it is a byte-for-byte prefix of a file being
//! read it is held back (that file hands out these lines); a file that holds what was handed out
//! of a file up to that file's offset is read on from there; anything less is no proof, and the
//! file is read from its beginning: a duplicate is visible, a skipped line is not.
//!
//! How each race with logrotate is closed (none may hand out a line twice):
//! - The path renamed over between its `stat` and its `open` (auth.log onto auth.log.1 while
//!   auth.log.1 is looked at): a file is known by the `(dev, inode)` of the descriptor opened,
//!   so a file being read is never opened a second time as a new one.
//! - Truncated and written again between a sweep's check and its read: every chunk is checked
//!   against the head fingerprint after it is read (`logfile`); a chunk of the new content is
//!   dropped unread and the file restarted, its old content's last state kept for its copy.
//! - The copy seen while it is made, or made and not yet followed by the truncation: a prefix of
//!   the intact original, held back. Once the original is truncated it can hand out nothing more
//!   of the old content, so its last state is final, and that is what the copy is judged by: the
//!   decision and the copy's checkpoint go out in the batch order after every line of it read
//!   from the original.
//! - The writer appends between the copy and the truncation, and those lines are read from the
//!   original: the copy ends before the offset, where the stored tail fingerprint is not. The
//!   last `WINDOW_BYTES` read, kept in memory, prove it a copy up to its end, and it is read from
//!   there (nothing of it).
//! - A checkpoint older than what was handed out: `known` follows every recorded checkpoint, not
//!   only the sent ones, and a file being read is judged by its reader's state, not the store's.
//!
//! Limits (in the README): what is only in the store after a restart is the 256-byte tail
//! fingerprint, so a copy that ends before a stored offset is read from its beginning; a file
//! that shares the head and the compared bytes with one read is taken for its copy.

use super::logfile::{self, Delivered, Start, Tail};
use super::{Notice, Running, Source, SourceContext};
use crate::config::{Encoding, LogSource, StartAt};
use crate::engine::{Batch, Checkpoint, Hit, RaiseGate};
use crate::live::Live;
use crate::model::now;
use crate::playbook::matcher::{FileRules, Matcher};
use crate::playbook::session::Sessions;
use chrono_tz::Tz;
use notify::{RecursiveMode, Watcher};
use std::borrow::Cow;
use std::collections::{HashMap, HashSet, VecDeque};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::mpsc::{Receiver, RecvTimeoutError, SyncSender, TrySendError};
use std::time::{Duration, Instant};
use tokio_util::sync::CancellationToken;
use tracing::{debug, info, warn};

/// The longest wait between sweeps, whatever inotify says.
pub const POLL_INTERVAL: Duration = Duration::from_millis(1000);

/// A rotated-away file is read until it has not grown for this long, then let go.
pub const DRAIN_GRACE: Duration = Duration::from_secs(5);

/// Lines longer than this are cut and counted.
pub const MAX_LINE: usize = 64 * 1024;

/// Bytes read from one file before the batch is considered for sending. Small enough that a
/// file of nothing but matching lines cannot overfill a batch far past `BATCH_HITS` (memory is
/// bounded by the batches in flight), large enough to amortise the per-call bookkeeping.
const READ_BUDGET: usize = 64 * 1024;

/// A batch is sent once it holds this many hits...
const BATCH_HITS: usize = 2_000;

/// ...and checkpoint-only progress (lines that matched nothing) at most this often: re-reading
/// non-matching lines after a crash is harmless, so it need not cost a transaction each time.
const CHECKPOINT_EVERY: Duration = Duration::from_secs(1);

/// How many checkpoints (with their windows) of truncated or let-go files are kept for
/// recognising their copies. A copy is judged in the sweep that sees its original truncated, or
/// the next: this only has to outnumber the files one logrotate run truncates (memory: at most
/// this many `WINDOW_BYTES`).
const RECENT_CHECKPOINTS: usize = 256;

/// Rotated files compressed by logrotate: never read (their lines were read before rotation).
pub(crate) const COMPRESSED: [&str; 7] = [".gz", ".xz", ".zst", ".bz2", ".lz4", ".zip", ".Z"];

/// What the reader starts from (loaded from the store by the daemon).
pub struct Resume {
    pub checkpoints: Vec<Checkpoint>,
    pub started_patterns: Vec<String>,
}

/// One configured pattern.
struct PatternSpec {
    pattern: String,
    start_at: StartAt,
    encoding: Encoding,
}

/// A new file found to be a copy of (a prefix of) a file being read.
#[derive(Debug, Clone)]
struct Shadow {
    /// Its first `len` bytes equal those of `of`...
    len: u64,
    of: (u64, u64),
    /// ...as it was while it had this head fingerprint (a truncation gives it another: what was
    /// compared then says nothing about the new content).
    of_fingerprint: String,
}

/// What a new file is, compared with the files read.
#[derive(Debug)]
enum CopyOf {
    /// Nothing shows it is a copy: read it as a new file.
    No,
    /// A prefix of a file being read: nothing is read from it (yet).
    HeldBack,
    /// A copy of what was read up to here: read on from there.
    ReadFrom {
        offset: u64,
        line_no: u64,
        of: PathBuf,
    },
}

struct Open {
    tail: Tail,
    encoding: Encoding,
    rules: FileRules,
    /// The processes whose lines this file holds (sshd's multi-line failures).
    sessions: Sessions,
    /// The matcher generation `rules` was computed for.
    generation: usize,
    last_growth: Instant,
    warned_truncation: bool,
    /// Opened from its beginning as a new file, and not yet compared with the files read:
    /// nothing is read from it before (see `decide`).
    undecided: bool,
}

/// The reader thread's state.
pub struct LogReader {
    node: String,
    tz: Tz,
    gate: Arc<RaiseGate>,
    specs: Vec<PatternSpec>,
    matcher: Live<Matcher>,
    matcher_seen: Arc<Matcher>,
    generation: usize,
    /// Backtracking rules whose step limit was reached and already reported (`playbook/rule`;
    /// at most one entry per rule).
    step_limit_reported: HashSet<String>,
    /// Files being read, by the path they are read at.
    open: HashMap<PathBuf, Open>,
    /// Files rotated or deleted away, read to their end before they are let go.
    draining: Vec<Open>,
    /// Where each known file identity stands: from the store at start, then as the reader
    /// records each checkpoint (the batch that carries it is committed before any later one, so
    /// the reader's own view is the one to resume from; a view that lagged it would read again).
    known: HashMap<(u64, u64), Checkpoint>,
    /// What was handed out of files just before they were truncated or let go, newest last: a
    /// copy found later resumes from one of them.
    recent: VecDeque<Delivered>,
    /// New files held back because all their bytes so far are a prefix of a file being read
    /// (a copy in progress, or made and not yet followed by the truncation): how much of each
    /// was compared, and with which file.
    shadowed: HashMap<(u64, u64), Shadow>,
    /// The identities met in the current sweep (for forgetting the `shadowed` that are gone).
    met: HashSet<(u64, u64)>,
    started: HashSet<String>,
    batch: Batch,
    last_sent: Instant,
    sender: tokio::sync::mpsc::Sender<Batch>,
    notices: tokio::sync::mpsc::Sender<Notice>,
    /// Paths with a problem already reported, and the problem, so each is logged once.
    reported: HashMap<PathBuf, String>,
    watcher: Option<notify::RecommendedWatcher>,
    watched: HashMap<PathBuf, (u64, u64)>,
    polling_reported: HashSet<PathBuf>,
    wake_tx: SyncSender<()>,
    wake_rx: Receiver<()>,
    cancel: CancellationToken,
    /// The store writer is gone: nothing read could be committed any more.
    writer_gone: bool,
    /// Busy while sweeping, idle while waiting for a wake-up or for the writer.
    health: Option<crate::systemd::Worker>,
    /// Told once every file present at the start has been opened (for READY=1).
    opened: Option<tokio::sync::oneshot::Sender<()>>,
}

impl LogReader {
    /// A reader for `sources`, resuming from `resume`, with the context's matcher, channels
    /// and cancellation.
    fn new(sources: &[LogSource], resume: Resume, ctx: &SourceContext) -> LogReader {
        let node = ctx.node.clone();
        let tz = ctx.timezone;
        let matcher = ctx.matcher.clone();
        let sender = ctx.batches.clone();
        let notices = ctx.notices.clone();
        let cancel = ctx.cancel.clone();
        let specs = sources
            .iter()
            .flat_map(|s| {
                s.paths.iter().map(|p| PatternSpec {
                    pattern: p.get_ref().clone(),
                    start_at: s.start_at,
                    encoding: s.encoding,
                })
            })
            .collect();
        let (wake_tx, wake_rx) = std::sync::mpsc::sync_channel(1);
        let current = matcher.get();
        LogReader {
            node: node.clone(),
            tz,
            gate: Arc::clone(&ctx.gate),
            specs,
            matcher,
            matcher_seen: current,
            generation: 0,
            step_limit_reported: HashSet::new(),
            open: HashMap::new(),
            draining: Vec::new(),
            known: resume
                .checkpoints
                .into_iter()
                .map(|c| ((c.dev, c.inode), c))
                .collect(),
            recent: VecDeque::new(),
            shadowed: HashMap::new(),
            met: HashSet::new(),
            started: resume.started_patterns.into_iter().collect(),
            batch: Batch {
                node,
                ..Batch::default()
            },
            last_sent: Instant::now(),
            sender,
            notices,
            reported: HashMap::new(),
            watcher: None,
            watched: HashMap::new(),
            polling_reported: HashSet::new(),
            wake_tx: wake_tx.clone(),
            wake_rx,
            cancel,
            writer_gone: false,
            health: None,
            opened: None,
        }
    }

    /// Resolves once the first sweep has opened every file present (before reading them, which
    /// may take long with a backlog).
    pub fn opened(&mut self) -> tokio::sync::oneshot::Receiver<()> {
        let (tx, rx) = tokio::sync::oneshot::channel();
        self.opened = Some(tx);
        rx
    }

    /// Reports to the daemon's watchdog health.
    pub fn watched_by(&mut self, worker: crate::systemd::Worker) {
        self.health = Some(worker);
    }

    /// Asked to stop, or nothing it reads could be committed any more.
    fn stopping(&self) -> bool {
        self.writer_gone || self.cancel.is_cancelled()
    }

    /// A handle that interrupts the reader's wait (on cancellation).
    fn waker(&self) -> SyncSender<()> {
        self.wake_tx.clone()
    }

    fn busy(&self, busy: bool) {
        if let Some(w) = &self.health {
            if busy { w.busy() } else { w.idle() }
        }
    }

    /// Runs until stopped: sweep, send, wait for a wake-up or the poll interval.
    pub fn run(mut self) {
        let wake = self.wake_tx.clone();
        match notify::recommended_watcher(move |event: notify::Result<notify::Event>| {
            // Our own reads (and the glob's directory listing) raise access events: waking on
            // them would make the reader its own cause and spin a core while idle.
            if let Ok(notify::Event {
                kind: notify::EventKind::Access(_),
                ..
            }) = event
            {
                return;
            }
            // Events only wake the reader; it looks at the files itself. A full slot means a
            // wake-up is already pending, which is all that is needed.
            if let Err(TrySendError::Disconnected(_)) = wake.try_send(()) {
                debug!("log reader gone; dropping inotify event");
            }
        }) {
            Ok(w) => self.watcher = Some(w),
            Err(e) => self.notice(
                "logs",
                format!(
                    "inotify unavailable ({e}); polling every {}s",
                    POLL_INTERVAL.as_secs()
                ),
            ),
        }
        info!(patterns = self.specs.len(), "log reader started");
        loop {
            self.busy(true);
            self.sweep();
            if self.stopping() {
                break;
            }
            self.busy(false);
            match self.wake_rx.recv_timeout(POLL_INTERVAL) {
                Ok(()) | Err(RecvTimeoutError::Timeout) => {}
                Err(RecvTimeoutError::Disconnected) => break,
            }
        }
        self.send(true);
        info!("log reader stopped");
    }

    fn notice(&mut self, component: &'static str, message: String) {
        warn!("{message}");
        if let Err(e) = self.notices.try_send(Notice { component, message }) {
            debug!("notice not recorded: {e}");
        }
    }

    /// Reports, once per rule, a backtracking rule (an imported fail2ban pattern) that gave up
    /// on a line at its step limit: in the log and in `csirt status`.
    fn report_step_limit(&mut self, matcher: &Matcher, path: &Path) {
        for (rule, lines) in matcher.step_limit_reached() {
            if self.step_limit_reported.insert(rule.clone()) {
                self.notice(
                    "logs",
                    format!(
                        "{rule}: a backtracking pattern reached its step limit on {lines} line(s) (first in {}); such lines count as no match (csirt playbooks test shows them)",
                        path.display()
                    ),
                );
            }
        }
    }

    /// Logs a problem with `path` once (until it changes or clears).
    fn report(&mut self, path: &Path, problem: String) {
        if self.reported.get(path) != Some(&problem) {
            self.reported.insert(path.to_path_buf(), problem.clone());
            self.notice("logs", format!("{}: {problem}", path.display()));
        }
    }

    fn clear_report(&mut self, path: &Path) {
        if self.reported.remove(path).is_some() {
            info!(path = %path.display(), "readable again");
        }
    }

    fn sweep(&mut self) {
        self.refresh_matcher();
        self.watch_dirs();
        let mut present: HashSet<PathBuf> = HashSet::new();
        self.met.clear();
        for index in 0..self.specs.len() {
            for path in self.expand(index) {
                present.insert(path.clone());
                self.check(index, &path);
            }
        }
        if let Some(opened) = self.opened.take() {
            let _ = opened.send(());
        }
        // Paths that no longer match (deleted, or renamed to a name outside the patterns):
        // read their files to the end before letting go.
        let gone: Vec<PathBuf> = self
            .open
            .keys()
            .filter(|p| !present.contains(*p))
            .cloned()
            .collect();
        for path in gone {
            if let Some(mut open) = self.open.remove(&path) {
                debug!(path = %path.display(), "file gone from its path; draining");
                // The grace starts now: a writer may still append to the old file for a moment.
                open.last_growth = Instant::now();
                self.draining.push(open);
            }
        }
        // Held-back files that are gone are forgotten; one renamed away is still drained.
        let met = std::mem::take(&mut self.met);
        let draining: HashSet<(u64, u64)> = self
            .draining
            .iter()
            .map(|o| (o.tail.id.dev, o.tail.id.inode))
            .collect();
        self.shadowed
            .retain(|id, _| met.contains(id) || draining.contains(id));
        self.met = met;
        // Rotated-away files first: their lines were written before the new file's, and a
        // threshold counted in log time must see them in that order.
        let mut draining = std::mem::take(&mut self.draining);
        draining.retain_mut(|open| {
            let keep = self.read_to_end(open);
            if keep && open.last_growth.elapsed() < DRAIN_GRACE {
                return true;
            }
            let tz = self.tz;
            let matcher = Arc::clone(&self.matcher_seen);
            let mut hits = Vec::new();
            let path = open.tail.path.clone();
            let encoding = open.encoding;
            let rules = open.rules.clone();
            let sessions = &mut open.sessions;
            let reading = Reading {
                matcher: &matcher,
                rules: &rules,
                gate: &self.gate,
                path: &path,
                encoding,
                tz,
            };
            open.tail
                .finish(|line| collect_hits(&reading, sessions, &line, &mut hits));
            self.batch.hits.extend(hits);
            self.record_checkpoint(open.tail.checkpoint());
            self.remember(open.tail.delivered());
            info!(path = %open.tail.path.display(), offset = open.tail.offset(), "rotated file read to its end; let go");
            false
        });
        self.draining = draining;
        let paths: Vec<PathBuf> = self.open.keys().cloned().collect();
        for path in paths {
            if self.stopping() {
                return;
            }
            if let Some(mut open) = self.open.remove(&path) {
                let keep = self.read_to_end(&mut open);
                if keep {
                    self.open.insert(path, open);
                }
            }
        }
        self.send(false);
        for index in 0..self.specs.len() {
            let pattern = self.specs[index].pattern.clone();
            if self.started.insert(pattern.clone()) {
                self.batch.patterns.push(pattern);
            }
        }
    }

    /// Picks up a new matcher after a reload; each file's rules are recomputed lazily.
    fn refresh_matcher(&mut self) {
        let current = self.matcher.get();
        if !Arc::ptr_eq(&current, &self.matcher_seen) {
            self.matcher_seen = current;
            self.generation += 1;
        }
    }

    /// The files a pattern matches now, compressed rotations left out.
    fn expand(&mut self, index: usize) -> Vec<PathBuf> {
        let pattern = self.specs[index].pattern.clone();
        let paths = match glob::glob(&pattern) {
            Ok(paths) => paths,
            Err(e) => {
                self.report(Path::new(&pattern), format!("bad pattern: {e}"));
                return Vec::new();
            }
        };
        let mut out = Vec::new();
        for entry in paths {
            match entry {
                Ok(path) => {
                    let name = path.to_string_lossy();
                    if COMPRESSED.iter().any(|ext| name.ends_with(ext)) || !path.is_file() {
                        continue;
                    }
                    out.push(path);
                }
                Err(e) => {
                    let path = e.path().to_path_buf();
                    self.report(&path, format!("cannot list: {}", e.error()));
                }
            }
        }
        out
    }

    /// Opens a path not read yet, or follows a rotation or truncation of one that is.
    fn check(&mut self, index: usize, path: &Path) {
        let meta = match std::fs::metadata(path) {
            Ok(m) => m,
            Err(e) => {
                self.report(path, format!("cannot stat: {e}"));
                return;
            }
        };
        use std::os::unix::fs::MetadataExt;
        let id = (meta.dev(), meta.ino());
        self.met.insert(id);
        if let Some(open) = self.open.get_mut(path) {
            if (open.tail.id.dev, open.tail.id.inode) == id {
                // A copytruncate shows as a file shorter than the offset, or, when the writer
                // has already written more than was there, as a head that changed.
                let rewritten =
                    meta.len() < open.tail.offset() || open.tail.rewritten().unwrap_or(false);
                if rewritten {
                    let before = restart_truncated(open, meta.len());
                    self.remember(before);
                }
                return;
            }
            // Rename-and-create: the old file is drained under its old state, the new one read
            // from its beginning.
            if let Some(mut old) = self.open.remove(path) {
                info!(path = %path.display(), "file rotated; draining the old one, reading the new one from its beginning");
                old.last_growth = Instant::now();
                self.draining.push(old);
            }
        }
        // Being read under another name (our own rotated file, matched by the glob too): no need
        // to open it. (Skipping it is safe even if the path is renamed over right after the stat:
        // the next sweep sees the new file.)
        if self.is_busy(id) {
            return;
        }
        let file = match std::fs::File::open(path) {
            Ok(f) => f,
            Err(e) => {
                self.report(path, format!("cannot open: {e}"));
                return;
            }
        };
        // From here on the file is known by what was opened, not by what the path named a moment
        // ago: logrotate may have renamed another file onto the path in between (auth.log onto
        // auth.log.1 while auth.log.1 was looked at), and a file already being read, opened a
        // second time as a new one, would be read twice.
        let (id, size) = match file.metadata() {
            Ok(m) => ((m.dev(), m.ino()), m.len()),
            Err(e) => {
                self.report(path, format!("cannot stat: {e}"));
                return;
            }
        };
        self.met.insert(id);
        // Opened after all as a file being read: the path was renamed over since the stat.
        if self.is_busy(id) {
            return;
        }
        let spec = &self.specs[index];
        let encoding = spec.encoding;
        let fingerprint_ok =
            |c: &Checkpoint| logfile::fingerprint_matches(&file, &c.fingerprint).unwrap_or(false);
        let start_at = spec.start_at;
        let started = self.started.contains(&spec.pattern);
        let start = match self.known.get(&id) {
            // Resumed where it was read to. (Nothing read yet says nothing: decided below.)
            Some(c) if c.offset > 0 && c.offset <= size && fingerprint_ok(c) => Start::At {
                offset: c.offset,
                line_no: c.line_no,
            },
            // The inode was reused by a different file, or the file is new to us. A known file
            // with a new head was truncated while we were away: its copy may still turn up.
            known => {
                if let Some(c) = known.filter(|c| c.offset > 0).cloned() {
                    self.remember(Delivered::of(c));
                }
                match start_at {
                    _ if started => Start::Beginning,
                    StartAt::End => Start::End,
                    StartAt::Beginning => Start::Beginning,
                }
            }
        };
        match Tail::from_file(path, file, start, MAX_LINE) {
            Ok(tail) => {
                self.clear_report(path);
                info!(path = %path.display(), ?start, "reading");
                // The starting position is committed even before a line arrives: a file positioned
                // at its end must not be read from its beginning after a restart.
                self.record_checkpoint(tail.checkpoint());
                let rules = self.matcher_seen.rules_for(path);
                self.open.insert(
                    path.to_path_buf(),
                    Open {
                        tail,
                        encoding,
                        rules,
                        sessions: Sessions::default(),
                        generation: self.generation,
                        last_growth: Instant::now(),
                        warned_truncation: false,
                        // Whether it is a copy shows only in its bytes, which logrotate's
                        // copytruncate writes after creating the file empty.
                        undecided: start == Start::Beginning,
                    },
                );
            }
            Err(e) => self.report(path, format!("cannot read: {e}")),
        }
    }

    /// Whether the file `id` is being read (open or draining), under whatever name.
    fn is_busy(&self, id: (u64, u64)) -> bool {
        self.open
            .values()
            .chain(&self.draining)
            .any(|o| (o.tail.id.dev, o.tail.id.inode) == id)
    }

    /// Reads one file to its current end, sending batches as they fill. Returns false when the
    /// file cannot be read any more (it is dropped; a later sweep reopens it from its checkpoint).
    fn read_to_end(&mut self, open: &mut Open) -> bool {
        if open.undecided && !self.decide(open) {
            return true;
        }
        if open.generation != self.generation {
            open.rules = self.matcher_seen.rules_for(&open.tail.path);
            open.generation = self.generation;
        }
        let matcher = Arc::clone(&self.matcher_seen);
        let tz = self.tz;
        loop {
            let mut hits = Vec::new();
            let path = open.tail.path.clone();
            let (encoding, rules, sessions) = (open.encoding, &open.rules, &mut open.sessions);
            let reading = Reading {
                matcher: &matcher,
                rules,
                gate: &self.gate,
                path: &path,
                encoding,
                tz,
            };
            let read = open
                .tail
                .read_lines_where(READ_BUDGET, rules.raw_filter(), |line| {
                    collect_hits(&reading, sessions, &line, &mut hits)
                });
            if open.tail.take_rewritten() {
                // Truncated and written again since this sweep's check: what was read before
                // the change stands (its hits and checkpoint go out now); the rest of the file is
                // new content, read from its beginning on the next pass of this loop.
                self.batch.hits.extend(hits);
                self.record_checkpoint(open.tail.checkpoint());
                let size = open.tail.size().unwrap_or(0);
                let before = restart_truncated(open, size);
                self.remember(before);
                continue;
            }
            match read {
                Ok(0) => return true,
                Ok(_) => {
                    open.last_growth = Instant::now();
                    if open.tail.truncated_lines > 0 && !open.warned_truncation {
                        open.warned_truncation = true;
                        self.notice(
                            "logs",
                            format!(
                                "{}: lines longer than {} KiB are cut (first at line ~{})",
                                path.display(),
                                MAX_LINE / 1024,
                                open.tail.checkpoint().line_no
                            ),
                        );
                    }
                    self.report_step_limit(&matcher, &path);
                    self.batch.hits.extend(hits);
                    self.record_checkpoint(open.tail.checkpoint());
                    if self.batch.hits.len() >= BATCH_HITS {
                        self.send(true);
                    }
                    if self.stopping() {
                        return true;
                    }
                }
                Err(e) => {
                    self.report(&path, format!("read failed: {e}"));
                    return false;
                }
            }
        }
    }

    /// Keeps what was handed out of a file about to be truncated or let go, for its copies.
    fn remember(&mut self, delivered: Delivered) {
        if delivered.checkpoint.offset == 0 {
            return;
        }
        if self.recent.len() >= RECENT_CHECKPOINTS {
            self.recent.pop_front();
        }
        self.recent.push_back(delivered);
    }

    /// Decides, once a new file has bytes, whether it is a copy of a file read, and positions it
    /// after what was read if so. False while it must not be read yet: empty, or held back as a
    /// prefix of a file being read.
    fn decide(&mut self, open: &mut Open) -> bool {
        let Ok(size) = open.tail.size() else {
            // The read reports it.
            return true;
        };
        if size == 0 {
            return false;
        }
        let id = (open.tail.id.dev, open.tail.id.inode);
        match self.copy_of(open.tail.file(), id, size) {
            CopyOf::HeldBack => return false,
            CopyOf::ReadFrom {
                offset,
                line_no,
                of,
            } => {
                info!(path = %open.tail.path.display(), of = %of.display(), offset, line_no, "a copy of a file already read; reading on from where that one was read to");
                if let Err(e) = open.tail.restart_at(offset, line_no) {
                    // Not positioned: reading it from its beginning counts lines twice, which
                    // shows; skipping them would not.
                    warn!(path = %open.tail.path.display(), "cannot position the copy: {e}");
                }
                self.record_checkpoint(open.tail.checkpoint());
            }
            CopyOf::No => {
                info!(path = %open.tail.path.display(), size, "a new file (no copy of anything read); reading it from its beginning");
            }
        }
        self.shadowed.remove(&id);
        open.undecided = false;
        true
    }

    /// Whether the new file `file` (identity `id`, `size` bytes) is a copy of a file read.
    ///
    /// Two questions, in this order. Is it, so far, a prefix of a file still being read? Then
    /// that file hands out these lines (or has), and the copy may still be growing: held back.
    /// (Compared byte for byte, only what was not compared at the last sweep.) Otherwise, does it
    /// hold what was handed out of some file up to its offset (`logfile::copy_resumes_at`)? Then
    /// it is read on from there. The second question is asked only of what can no longer grow
    /// under the same content: a file being read that is not a prefix-holder of the copy was
    /// truncated (or is another file), a truncated or let-go file's last state, the store's.
    fn copy_of(&mut self, file: &std::fs::File, id: (u64, u64), size: u64) -> CopyOf {
        if size == 0 {
            return CopyOf::No;
        }
        // Read once: the store may hold many checkpoints, and many files may be open.
        let head = match logfile::Head::of(file) {
            Ok(head) => head,
            // Looked at again at the next sweep; reading it now might read it twice.
            Err(_) => return CopyOf::HeldBack,
        };
        let shadow = self.shadowed.get(&id).cloned().filter(|s| s.len <= size);
        for o in self.open.values().chain(&self.draining) {
            let of = (o.tail.id.dev, o.tail.id.inode);
            // An undecided file delivers nothing yet: two copies must not hold each other back.
            if of == id
                || o.undecided
                || head.contradicts(&o.tail.id.fingerprint)
                || o.tail.size().map_or(true, |s| s < size)
            {
                continue;
            }
            let from = shadow
                .as_ref()
                .filter(|s| s.of == of && s.of_fingerprint == o.tail.id.fingerprint)
                .map_or(0, |s| s.len);
            match logfile::same_bytes(file, o.tail.file(), from, size) {
                Ok(true) => {
                    debug!(path = %o.tail.path.display(), size, "a new file is a prefix of this one; held back");
                    let of_fingerprint = o.tail.id.fingerprint.clone();
                    self.shadowed.insert(
                        id,
                        Shadow {
                            len: size,
                            of,
                            of_fingerprint,
                        },
                    );
                    return CopyOf::HeldBack;
                }
                Ok(false) => {}
                // Not knowing is no proof: looked at again at the next sweep.
                Err(_) => return CopyOf::HeldBack,
            }
        }
        // All of it equalled a file being read at the last sweep (and it has not grown since).
        let held_whole = shadow.filter(|s| s.len == size);
        let live: HashSet<(u64, u64)> = self
            .open
            .values()
            .chain(&self.draining)
            .map(|o| (o.tail.id.dev, o.tail.id.inode))
            .collect();
        // What was handed out: of the files being read (decided ones; an undecided file handed
        // out nothing), of those truncated or let go, and the store's for files not open (a
        // file being read stands where its reader is, not where the store last saw it).
        let candidates = self
            .open
            .values()
            .chain(&self.draining)
            .filter(|o| !o.undecided)
            .map(|o| (o.tail.checkpoint(), o.tail.delivered_window()))
            .chain(
                self.recent
                    .iter()
                    .map(|d| (d.checkpoint.clone(), &d.window[..])),
            )
            .chain(
                self.known
                    .values()
                    .filter(|c| !live.contains(&(c.dev, c.inode)))
                    .map(|c| (c.clone(), &[][..])),
            );
        let mut best: Option<(u64, u64, String)> = None;
        for (c, window) in candidates {
            if (c.dev, c.inode) == id || c.offset == 0 {
                continue;
            }
            let start = match &held_whole {
                // Read (under the same head) beyond the copy's end: all of it was handed out.
                Some(s)
                    if s.of == (c.dev, c.inode)
                        && c.offset >= size
                        && head.matches(&c.fingerprint) =>
                {
                    match logfile::lines_in(file, size) {
                        Ok(line_no) => Some((size, line_no)),
                        Err(_) => None,
                    }
                }
                _ => logfile::copy_resumes_at(&c, window, &head, file, size).unwrap_or(None),
            };
            if let Some((offset, line_no)) = start
                && best.as_ref().is_none_or(|(b, ..)| *b < offset)
            {
                best = Some((offset, line_no, c.path));
            }
        }
        match best {
            Some((offset, line_no, of)) => CopyOf::ReadFrom {
                offset,
                line_no,
                of: PathBuf::from(of),
            },
            None => CopyOf::No,
        }
    }

    fn record_checkpoint(&mut self, checkpoint: Checkpoint) {
        self.batch
            .checkpoints
            .retain(|c| (c.dev, c.inode) != (checkpoint.dev, checkpoint.inode));
        self.known
            .insert((checkpoint.dev, checkpoint.inode), checkpoint.clone());
        self.batch.checkpoints.push(checkpoint);
    }

    /// Sends the batch when it has hits, or checkpoint progress that is due (or `force`).
    fn send(&mut self, force: bool) {
        let has_hits = !self.batch.hits.is_empty();
        let has_progress = !self.batch.checkpoints.is_empty() || !self.batch.patterns.is_empty();
        if !has_hits && !(has_progress && (force || self.last_sent.elapsed() >= CHECKPOINT_EVERY)) {
            return;
        }
        let batch = std::mem::replace(
            &mut self.batch,
            Batch {
                node: self.node.clone(),
                ..Batch::default()
            },
        );
        self.last_sent = Instant::now();
        // Blocks while the store writer is behind: reading slows down, nothing is dropped. The
        // writer answers for its own health meanwhile.
        self.busy(false);
        let sent = self.sender.blocking_send(batch);
        self.busy(true);
        if sent.is_err() {
            warn!("store writer gone; stopping the log reader");
            self.writer_gone = true;
        }
    }

    /// Keeps an inotify watch on each pattern's directory; where none can be set, the periodic
    /// sweep polls, and the log says so once per directory.
    fn watch_dirs(&mut self) {
        let Some(watcher) = self.watcher.as_mut() else {
            return;
        };
        let mut failures = Vec::new();
        for spec in &self.specs {
            let (dir, mode) = watch_root(&spec.pattern);
            use std::os::unix::fs::MetadataExt;
            let Ok(meta) = std::fs::metadata(&dir) else {
                // Gone (or not there yet): forget the watch so it is set again when it returns.
                if self.watched.remove(&dir).is_some() {
                    let _ = watcher.unwatch(&dir);
                }
                continue;
            };
            let id = (meta.dev(), meta.ino());
            if self.watched.get(&dir) == Some(&id) {
                continue;
            }
            let _ = watcher.unwatch(&dir);
            match watcher.watch(&dir, mode) {
                Ok(()) => {
                    self.watched.insert(dir.clone(), id);
                    debug!(dir = %dir.display(), "watching");
                }
                Err(e) => failures.push((dir, e)),
            }
        }
        for (dir, e) in failures {
            if self.polling_reported.insert(dir.clone()) {
                self.notice(
                    "logs",
                    format!(
                        "{}: inotify watch failed ({e}); polling every {}s",
                        dir.display(),
                        POLL_INTERVAL.as_secs()
                    ),
                );
            }
        }
    }
}

/// A file truncated in place (copytruncate), possibly written again since: what was handed out of
/// its old content is returned for its copy to be recognised by, and it is read again from its
/// beginning. Lines written between the copy and the truncation are lost by the method itself.
fn restart_truncated(open: &mut Open, size: u64) -> Delivered {
    let path = open.tail.path.clone();
    info!(path = %path.display(), size, offset = open.tail.offset(), "file truncated; reading it from its beginning");
    let before = open.tail.delivered();
    if let Err(e) = open.tail.restart_after_truncation() {
        warn!(path = %path.display(), "cannot re-read after truncation: {e}");
    }
    before
}

/// The `[[logs]]` patterns as a source: one reader thread for all of them.
pub struct LogFiles {
    logs: Vec<LogSource>,
}

impl LogFiles {
    pub fn new(logs: Vec<LogSource>) -> LogFiles {
        LogFiles { logs }
    }
}

impl Source for LogFiles {
    fn name(&self) -> &'static str {
        "log reader"
    }

    fn run(self: Box<Self>, ctx: SourceContext) -> Running {
        Box::pin(async move {
            let store = &ctx.store;
            let node = &ctx.node;
            let mut checkpoints = store.log_checkpoints(node).await?;
            let present = present_identities(&self.logs);
            let gone: Vec<(u64, u64)> = checkpoints
                .iter()
                .map(|c| (c.dev, c.inode))
                .filter(|id| !present.contains(id))
                .collect();
            let pruned = store
                .prune_log_checkpoints(node, &gone, now() - chrono::TimeDelta::days(30))
                .await?;
            if pruned > 0 {
                info!(
                    pruned,
                    "forgot the checkpoints of log files gone for 30 days"
                );
                checkpoints = store.log_checkpoints(node).await?;
            }
            let resume = Resume {
                checkpoints,
                started_patterns: store.log_patterns(node).await?,
            };
            let mut reader = LogReader::new(&self.logs, resume, &ctx);
            reader.watched_by(ctx.health.clone());
            let opened = reader.opened();
            let waker = reader.waker();
            let thread = std::thread::Builder::new()
                .name("csirt-logs".into())
                .spawn(move || reader.run())?;
            // The batch and notice senders now belong to the thread alone: the writer ends
            // when it does.
            drop(ctx.batches);
            drop(ctx.notices);
            let cancel = ctx.cancel.clone();
            tokio::spawn(async move {
                cancel.cancelled().await;
                let _ = waker.try_send(());
            });
            // READY=1 waits for the files to be open, not for a backlog to be read.
            if tokio::time::timeout(std::time::Duration::from_secs(30), opened)
                .await
                .is_err()
            {
                warn!("the log files were not all opened within 30 s; reporting ready anyway");
            }
            let _ = ctx.ready.send(());
            tokio::task::spawn_blocking(move || thread.join())
                .await?
                .map_err(|_| anyhow::anyhow!("the log reader thread panicked"))?;
            if !ctx.cancel.is_cancelled() {
                anyhow::bail!("the log reader stopped: the store writer is gone");
            }
            Ok(())
        })
    }
}

/// The identities of the files the patterns match now.
pub fn present_identities(sources: &[LogSource]) -> HashSet<(u64, u64)> {
    use std::os::unix::fs::MetadataExt;
    sources
        .iter()
        .flat_map(|s| s.paths.iter())
        .filter_map(|p| glob::glob(p.get_ref()).ok())
        .flat_map(|paths| paths.filter_map(Result::ok))
        .filter_map(|path| std::fs::metadata(path).ok())
        .map(|m| (m.dev(), m.ino()))
        .collect()
}

/// The directory to watch for a pattern: the part before the first glob character, recursively
/// when the pattern goes deeper than one level below it.
fn watch_root(pattern: &str) -> (PathBuf, RecursiveMode) {
    let meta = pattern.find(['*', '?', '[']).unwrap_or(pattern.len());
    let fixed = &pattern[..meta];
    let dir = match fixed.rfind('/') {
        Some(i) => PathBuf::from(if i == 0 { "/" } else { &fixed[..i] }),
        None => PathBuf::from("."),
    };
    let rest = &pattern[fixed.rfind('/').map_or(0, |i| i + 1)..];
    let mode = if rest.contains('/') {
        RecursiveMode::Recursive
    } else {
        RecursiveMode::NonRecursive
    };
    (dir, mode)
}

/// Decodes a line and appends the hits it makes.
/// What reading one file's lines needs besides the lines.
struct Reading<'a> {
    matcher: &'a Matcher,
    rules: &'a FileRules,
    gate: &'a RaiseGate,
    path: &'a Path,
    encoding: Encoding,
    tz: Tz,
}

fn collect_hits(
    reading: &Reading<'_>,
    sessions: &mut Sessions,
    line: &logfile::Line<'_>,
    hits: &mut Vec<Hit>,
) {
    let Reading {
        matcher,
        rules,
        gate,
        path,
        encoding,
        tz,
    } = *reading;
    let text: Cow<'_, str> = match encoding {
        Encoding::Utf8 => crate::text::utf8_lossy(line.bytes),
        Encoding::ShiftJis => {
            encoding_rs::SHIFT_JIS
                .decode_without_bom_handling(line.bytes)
                .0
        }
    };
    let mut matches = Vec::new();
    let structure = matcher.structure(rules, &text);
    matcher.scan_in_session(rules, &text, structure, sessions, &mut matches);
    if matches.is_empty() {
        return;
    }
    let mut observed_at = None;
    for m in matches {
        let hit = super::through_gate(gate, m, |m| {
            let at = m
                .stamp
                .and_then(|s| s.resolve(tz, crate::model::now()))
                .unwrap_or_else(|| {
                    *observed_at.get_or_insert_with(|| {
                        crate::timestamp::line_time(&text, tz, crate::model::now())
                    })
                });
            Hit::of_log_match(
                m,
                path.display().to_string(),
                line.line_no.to_string(),
                at,
                text.clone().into_owned(),
            )
        });
        hits.extend(hit);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn watch_roots() {
        assert_eq!(
            watch_root("/var/log/*.log"),
            (PathBuf::from("/var/log"), RecursiveMode::NonRecursive)
        );
        assert_eq!(
            watch_root("/var/log/nginx/access.log*"),
            (PathBuf::from("/var/log/nginx"), RecursiveMode::NonRecursive)
        );
        assert_eq!(
            watch_root("./var/log/**/*.log"),
            (PathBuf::from("./var/log"), RecursiveMode::Recursive)
        );
        assert_eq!(
            watch_root("/var/log/auth.log"),
            (PathBuf::from("/var/log"), RecursiveMode::NonRecursive)
        );
        assert_eq!(
            watch_root("auth.log"),
            (PathBuf::from("."), RecursiveMode::NonRecursive)
        );
    }
}
