//! Tailing one log file: complete lines only, from a known byte offset, with the file's identity.
//!
//! A file is known by its device and inode plus a fingerprint of its first bytes (an inode is
//! reused after a delete, so an inode alone can name a different file). The offset kept is the
//! one after the last complete line: a partial last line waits for its newline, and after a
//! crash the reader resumes exactly at a line boundary. A line longer than the limit is cut at
//! the limit, the rest of it skipped up to its newline, and counted; nothing is ever buffered
//! beyond the limit. Reading is plain blocking I/O: the caller runs it on a thread of its own.
//!
//! Every chunk read is checked against the head fingerprint *after* the read: a file truncated and
//! written again between two reads (copytruncate) would otherwise hand out the new content's bytes
//! as if they continued the old, at the old offset. A chunk read from a file whose head changed is
//! dropped unread, and the caller is told (`take_rewritten`).
//!
//! Besides the head, a file being read keeps the last `WINDOW_BYTES` it read, in memory, and a
//! fingerprint of the bytes just before its offset (the tail fingerprint, which the store keeps).
//! What was handed out of a file (`Delivered`: its checkpoint and that window) is what a new file
//! is compared with to tell a copy (logrotate's `copytruncate`) from a file that only starts the
//! same way (`copy_resumes_at`).

use crate::engine::Checkpoint;
use crate::playbook::prefix::LineFilter;
use std::fs::File;
use std::io;
use std::os::unix::fs::{FileExt, MetadataExt};
use std::path::{Path, PathBuf};

/// How many leading bytes make a file's fingerprint.
pub const FINGERPRINT_BYTES: usize = 256;

/// How many bytes before the offset make the tail fingerprint.
pub const TAIL_BYTES: usize = 256;

/// How many of the last bytes read a file keeps in memory: they prove a copy that ends before the
/// offset (the writer appended between logrotate's copy and its truncation, and those lines were
/// read from the original) to be a copy, where the 256 bytes of the tail fingerprint at the
/// offset are not in the copy at all.
pub const WINDOW_BYTES: usize = 32 * 1024;

/// Bytes read per system call.
const CHUNK: usize = 64 * 1024;

/// A file's identity: `(dev, inode)` and the fingerprint of its head.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Identity {
    pub dev: u64,
    pub inode: u64,
    pub fingerprint: String,
}

/// `"<length>:<FNV-1a 64 of those bytes>"` of the file's first bytes (at most
/// `FINGERPRINT_BYTES`). FNV is enough: this tells files apart, it is not a security boundary.
pub fn fingerprint(file: &File) -> io::Result<String> {
    let mut head = [0u8; FINGERPRINT_BYTES];
    let n = read_full_at(file, &mut head, 0)?;
    Ok(format!("{n}:{:016x}", fnv1a(&head[..n])))
}

/// Whether `file` still starts with the bytes a stored fingerprint was taken of. A file that has
/// grown since is the same file when its first `length` bytes are unchanged.
pub fn fingerprint_matches(file: &File, stored: &str) -> io::Result<bool> {
    let Some((len, hash)) = stored.split_once(':') else {
        return Ok(false);
    };
    let Ok(len) = len.parse::<usize>() else {
        return Ok(false);
    };
    let mut head = vec![0u8; len.min(FINGERPRINT_BYTES)];
    let n = read_full_at(file, &mut head, 0)?;
    Ok(n == head.len() && format!("{:016x}", fnv1a(&head)) == hash)
}

/// The tail fingerprint at `offset`: `"<length>:<FNV-1a 64>"` of the (at most `TAIL_BYTES`)
/// bytes before it. Empty (matching nothing) when the file no longer holds them: it was
/// truncated under us, and a fingerprint of fewer bytes would vouch for bytes never seen.
pub fn tail_fingerprint(file: &File, offset: u64) -> io::Result<String> {
    let len = offset.min(TAIL_BYTES as u64) as usize;
    let mut buf = [0u8; TAIL_BYTES];
    let n = read_full_at(file, &mut buf[..len], offset - len as u64)?;
    Ok(if n == len {
        tail_of(&buf[..len])
    } else {
        String::new()
    })
}

fn tail_of(bytes: &[u8]) -> String {
    format!("{}:{:016x}", bytes.len(), fnv1a(bytes))
}

/// Whether the bytes of `file` just before `offset` are those a stored tail fingerprint was
/// taken of. An empty or malformed fingerprint matches nothing.
pub fn tail_matches(file: &File, offset: u64, stored: &str) -> io::Result<bool> {
    if stored.is_empty() {
        return Ok(false);
    }
    Ok(tail_fingerprint(file, offset)? == stored)
}

/// A file's first bytes, read once to be checked against many stored fingerprints.
pub struct Head(Vec<u8>);

impl Head {
    pub fn of(file: &File) -> io::Result<Head> {
        let mut head = vec![0u8; FINGERPRINT_BYTES];
        let n = read_full_at(file, &mut head, 0)?;
        head.truncate(n);
        Ok(Head(head))
    }

    /// `fingerprint_matches` without reading the file again.
    pub fn matches(&self, stored: &str) -> bool {
        let Some((len, hash)) = stored.split_once(':') else {
            return false;
        };
        match len.parse::<usize>() {
            Ok(len) if len <= self.0.len() => format!("{:016x}", fnv1a(&self.0[..len])) == hash,
            _ => false,
        }
    }

    /// Whether this head shows that the file is not the one `stored` was taken of: it holds at
    /// least as many bytes and they differ. (A shorter head may still be a prefix of it.)
    pub fn contradicts(&self, stored: &str) -> bool {
        let len = stored
            .split_once(':')
            .and_then(|(l, _)| l.parse::<usize>().ok());
        len.is_some_and(|len| len <= self.0.len()) && !self.matches(stored)
    }
}

fn fnv1a(bytes: &[u8]) -> u64 {
    bytes.iter().fold(0xcbf2_9ce4_8422_2325, |h, b| {
        (h ^ u64::from(*b)).wrapping_mul(0x0100_0000_01b3)
    })
}

fn read_full_at(file: &File, buf: &mut [u8], at: u64) -> io::Result<usize> {
    let mut n = 0;
    while n < buf.len() {
        match file.read_at(&mut buf[n..], at + n as u64) {
            Ok(0) => break,
            Ok(k) => n += k,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            Err(e) => return Err(e),
        }
    }
    Ok(n)
}

/// Whether `a` and `b` hold the same bytes in `from..to` (both must hold all of them).
pub fn same_bytes(a: &File, b: &File, from: u64, to: u64) -> io::Result<bool> {
    let mut x = vec![0u8; CHUNK.min(to.saturating_sub(from) as usize)];
    let mut y = vec![0u8; x.len()];
    let mut at = from;
    while at < to {
        let len = x.len().min((to - at) as usize);
        let n = read_full_at(a, &mut x[..len], at)?;
        let m = read_full_at(b, &mut y[..len], at)?;
        if n != len || m != len || x[..len] != y[..len] {
            return Ok(false);
        }
        at += len as u64;
    }
    Ok(true)
}

/// The number of lines in the first `size` bytes of `file`, a last line without its newline
/// included: the line number after reading all of them.
pub fn lines_in(file: &File, size: u64) -> io::Result<u64> {
    let (boundary, lines) = last_line_boundary(file, size)?;
    Ok(lines + u64::from(size > boundary))
}

/// The identity of an open file.
pub fn identity(file: &File) -> io::Result<Identity> {
    let meta = file.metadata()?;
    Ok(Identity {
        dev: meta.dev(),
        inode: meta.ino(),
        fingerprint: fingerprint(file)?,
    })
}

/// Where to start reading a file.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Start {
    Beginning,
    /// After the last complete line present now.
    End,
    /// At a checkpoint's offset and line number.
    At {
        offset: u64,
        line_no: u64,
    },
}

/// One complete line as read.
#[derive(Debug)]
pub struct Line<'a> {
    /// The line without its newline (and without a trailing CR, or leading NULs that a
    /// copytruncate hole leaves).
    pub bytes: &'a [u8],
    /// 1-based line number in the file.
    pub line_no: u64,
    /// Whether the line was cut at the length limit.
    pub truncated: bool,
}

/// A file being read.
pub struct Tail {
    pub path: PathBuf,
    file: File,
    pub id: Identity,
    /// After the last complete line delivered.
    offset: u64,
    line_no: u64,
    /// Where the next read starts (past `offset` by the pending partial line).
    read_pos: u64,
    /// The pending partial line, at most `max_line` bytes.
    pending: Vec<u8>,
    /// In a line longer than `max_line`: discard bytes until its newline.
    skipping: bool,
    max_line: usize,
    chunk: Vec<u8>,
    /// Lines cut at the limit so far.
    pub truncated_lines: u64,
    /// The tail fingerprint at `offset`, kept as lines are consumed: it has to be taken while
    /// the bytes are there, since a copytruncate removes them before the copy is found.
    tail_fp: String,
    /// The last (at most `WINDOW_BYTES`) bytes read, ending at `read_pos`, each checked against
    /// the head after it was read.
    window: Vec<u8>,
    /// A read found the head changed (truncated and written again): nothing of that read was
    /// handed out, and the caller must start the file again.
    rewritten_seen: bool,
}

/// What was handed out of one content of a file: its checkpoint and the bytes just before the
/// checkpoint's offset that are still known (none for a checkpoint from the store).
#[derive(Debug, Clone)]
pub struct Delivered {
    pub checkpoint: Checkpoint,
    /// The bytes that end at `checkpoint.offset` (at most `WINDOW_BYTES`).
    pub window: Vec<u8>,
}

impl Delivered {
    /// A stored checkpoint: only its fingerprints are known.
    pub fn of(checkpoint: Checkpoint) -> Delivered {
        Delivered {
            checkpoint,
            window: Vec::new(),
        }
    }
}

impl Tail {
    /// Opens `path` and positions it at `start`.
    pub fn open(path: &Path, start: Start, max_line: usize) -> io::Result<Tail> {
        let file = File::open(path)?;
        Self::from_file(path, file, start, max_line)
    }

    /// Positions an already open file at `start`.
    pub fn from_file(path: &Path, file: File, start: Start, max_line: usize) -> io::Result<Tail> {
        let id = identity(&file)?;
        let size = file.metadata()?.len();
        let (offset, line_no) = match start {
            Start::Beginning => (0, 0),
            Start::At { offset, line_no } if offset <= size => (offset, line_no),
            // The file is shorter than the checkpoint: it was truncated while we were away.
            Start::At { .. } => (0, 0),
            Start::End => last_line_boundary(&file, size)?,
        };
        let mut tail = Tail {
            path: path.to_path_buf(),
            file,
            id,
            offset,
            line_no,
            read_pos: offset,
            pending: Vec::new(),
            skipping: false,
            max_line,
            chunk: vec![0; CHUNK],
            truncated_lines: 0,
            tail_fp: String::new(),
            window: Vec::new(),
            rewritten_seen: false,
        };
        tail.fill_window()?;
        Ok(tail)
    }

    /// Takes the window and the tail fingerprint at `offset` (= `read_pos`) from the file: at
    /// opening and at a restart, where no chunk in memory holds them. Read before the head is
    /// checked, so that bytes of a content written since are never taken for the old one's.
    fn fill_window(&mut self) -> io::Result<()> {
        let len = self.offset.min(WINDOW_BYTES as u64) as usize;
        let mut window = vec![0u8; len];
        let n = read_full_at(&self.file, &mut window, self.offset - len as u64)?;
        if n == len && self.head_intact()? {
            self.window = window;
            self.tail_fp = self.tail_fp_from_window().unwrap_or_default();
        } else {
            // Truncated under us: the bytes are gone, and vouch for nothing.
            self.window.clear();
            self.tail_fp.clear();
        }
        Ok(())
    }

    /// Whether the file still starts with the bytes of its fingerprint.
    fn head_intact(&self) -> io::Result<bool> {
        fingerprint_matches(&self.file, &self.id.fingerprint)
    }

    /// The tail fingerprint at `offset`, from the window when it holds the bytes before it.
    fn tail_fp_from_window(&self) -> Option<String> {
        let len = self.offset.min(TAIL_BYTES as u64) as usize;
        let end = self
            .window
            .len()
            .checked_sub((self.read_pos - self.offset) as usize)?;
        let start = end.checked_sub(len)?;
        Some(tail_of(&self.window[start..end]))
    }

    /// What was handed out so far: the checkpoint and the window up to the offset.
    pub fn delivered(&self) -> Delivered {
        Delivered {
            checkpoint: self.checkpoint(),
            window: self.delivered_window().to_vec(),
        }
    }

    /// The bytes of the window that were handed out (those before the offset).
    pub fn delivered_window(&self) -> &[u8] {
        let pending = (self.read_pos - self.offset) as usize;
        self.window
            .len()
            .checked_sub(pending)
            .map_or(&[], |end| &self.window[..end])
    }

    /// Whether a read since the last call found the file rewritten in place (and handed out
    /// nothing of it). Cleared by the call.
    pub fn take_rewritten(&mut self) -> bool {
        std::mem::take(&mut self.rewritten_seen)
    }

    /// The byte offset after the last complete line delivered.
    pub fn offset(&self) -> u64 {
        self.offset
    }

    /// The open file (which may no longer be at `path`).
    pub fn file(&self) -> &File {
        &self.file
    }

    /// The current size of the open file (which may no longer be at `path`).
    pub fn size(&self) -> io::Result<u64> {
        Ok(self.file.metadata()?.len())
    }

    /// Whether bytes past what was read are waiting.
    pub fn has_unread(&self) -> io::Result<bool> {
        Ok(self.size()? > self.read_pos)
    }

    /// Whether the file no longer starts with the bytes it was fingerprinted by: truncated and
    /// written again in place.
    pub fn rewritten(&self) -> io::Result<bool> {
        Ok(!fingerprint_matches(&self.file, &self.id.fingerprint)?)
    }

    /// The file was truncated in place (copytruncate): start again from its beginning.
    pub fn restart_after_truncation(&mut self) -> io::Result<()> {
        self.restart_at(0, 0)
    }

    /// Reads on from `offset` (line `line_no`), forgetting any partial line: where a copy of a
    /// file read that far continues.
    pub fn restart_at(&mut self, offset: u64, line_no: u64) -> io::Result<()> {
        self.id.fingerprint = fingerprint(&self.file)?;
        self.offset = offset;
        self.line_no = line_no;
        self.read_pos = offset;
        self.pending.clear();
        self.skipping = false;
        self.rewritten_seen = false;
        self.fill_window()
    }

    /// Where the file stands, for the store.
    pub fn checkpoint(&self) -> Checkpoint {
        Checkpoint {
            dev: self.id.dev,
            inode: self.id.inode,
            fingerprint: self.id.fingerprint.clone(),
            path: self.path.display().to_string(),
            offset: self.offset,
            line_no: self.line_no,
            tail_fingerprint: self.tail_fp.clone(),
        }
    }

    /// Reads up to about `budget` bytes and hands each complete line to `on_line`. Returns the
    /// number of bytes read; 0 means the end of the file for now.
    pub fn read_lines(
        &mut self,
        budget: usize,
        on_line: impl FnMut(Line<'_>),
    ) -> io::Result<usize> {
        self.read_lines_where(budget, None, on_line)
    }

    /// `read_lines`, handing out only the lines in which `wanted` finds something: the others
    /// are counted (line numbers, offsets, cut lines) and passed over. The search runs over the
    /// whole chunk, not line by line, which is what makes passing over cheap.
    pub fn read_lines_where(
        &mut self,
        budget: usize,
        wanted: Option<&LineFilter>,
        mut on_line: impl FnMut(Line<'_>),
    ) -> io::Result<usize> {
        if self.rewritten_seen {
            return Ok(0);
        }
        // The fingerprint of a file shorter than FINGERPRINT_BYTES grows with it, as long as
        // what it was taken of is still there (else the file was rewritten, not grown).
        if !self.full_fingerprint() {
            if !self.head_intact()? {
                self.rewritten_seen = true;
                return Ok(0);
            }
            self.id.fingerprint = fingerprint(&self.file)?;
        }
        let offset_before = self.offset;
        let mut total = 0;
        while total < budget {
            let n = match self.file.read_at(&mut self.chunk, self.read_pos) {
                Ok(n) => n,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
                Err(e) => return Err(e),
            };
            if n == 0 {
                break;
            }
            // Checked after the read: if the head is still the one read so far, the file was
            // not truncated before this chunk was read, so the chunk continues what was read.
            if !self.head_intact()? {
                self.rewritten_seen = true;
                break;
            }
            let chunk_start = self.read_pos;
            self.read_pos += n as u64;
            keep_last(&mut self.window, &self.chunk[..n]);
            if !self.full_fingerprint() && self.window.len() as u64 == self.read_pos {
                // The window holds the file from its start: the fingerprint grows from bytes
                // that were checked, not from a second read that a rewrite could slip under.
                let len = self.window.len().min(FINGERPRINT_BYTES);
                self.id.fingerprint = format!("{len}:{:016x}", fnv1a(&self.window[..len]));
            }
            total += n;
            let mut start = 0;
            loop {
                // At a line's start (nothing pending): the complete lines before the next place
                // of interest cannot match, and are only counted.
                let mut nothing_further = false;
                if let Some(wanted) = wanted
                    && self.pending.is_empty()
                    && !self.skipping
                {
                    let next = wanted.find_in(&self.chunk[start..n]).map(|p| start + p);
                    nothing_further = next.is_none();
                    let until = next.unwrap_or(n);
                    if let Some(last) = memchr::memrchr(b'\n', &self.chunk[start..until]) {
                        let skipped_to = start + last + 1;
                        self.pass_over(start, skipped_to, chunk_start);
                        start = skipped_to;
                    }
                }
                if nothing_further {
                    break;
                }
                let Some(nl) = memchr::memchr(b'\n', &self.chunk[start..n]) else {
                    break;
                };
                let end = start + nl;
                let truncated = self.skipping || self.pending.len() + (end - start) > self.max_line;
                let line: &[u8] = if self.pending.is_empty() && !self.skipping {
                    &self.chunk[start..end.min(start + self.max_line)]
                } else {
                    let room = self.max_line.saturating_sub(self.pending.len());
                    if !self.skipping {
                        self.pending
                            .extend_from_slice(&self.chunk[start..end.min(start + room)]);
                    }
                    &self.pending
                };
                self.line_no += 1;
                self.offset = chunk_start + end as u64 + 1;
                if truncated {
                    self.truncated_lines += 1;
                }
                // A line completed from the previous chunk was not searched with the rest.
                if wanted.is_none_or(|w| w.find_in(line).is_some()) {
                    on_line(Line {
                        bytes: clean(line),
                        line_no: self.line_no,
                        truncated,
                    });
                }
                self.pending.clear();
                self.skipping = false;
                start = end + 1;
            }
            // The rest of the chunk is a partial line: keep it, up to the limit.
            if !self.skipping {
                let room = self.max_line.saturating_sub(self.pending.len());
                let rest = &self.chunk[start..n];
                self.pending
                    .extend_from_slice(&rest[..rest.len().min(room)]);
                self.skipping = rest.len() > room;
            }
        }
        if self.offset != offset_before {
            self.update_tail_fp()?;
        }
        Ok(total)
    }

    fn full_fingerprint(&self) -> bool {
        self.id
            .fingerprint
            .starts_with(&format!("{FINGERPRINT_BYTES}:"))
    }

    /// Takes the tail fingerprint at the new offset from the window (the common case: no system
    /// call, and the bytes were checked against the head), else (a partial line longer than the
    /// window pending) from the file, checked the same way.
    fn update_tail_fp(&mut self) -> io::Result<()> {
        if let Some(fp) = self.tail_fp_from_window() {
            self.tail_fp = fp;
            return Ok(());
        }
        let fp = tail_fingerprint(&self.file, self.offset)?;
        self.tail_fp = if self.head_intact()? {
            fp
        } else {
            String::new()
        };
        Ok(())
    }

    /// Counts the complete lines of `chunk[from..to]` (`to` just after a newline) as read
    /// without handing them out.
    fn pass_over(&mut self, from: usize, to: usize, chunk_start: u64) {
        let mut line_start = from;
        for nl in memchr::memchr_iter(b'\n', &self.chunk[from..to]) {
            let end = from + nl;
            self.line_no += 1;
            if end - line_start > self.max_line {
                self.truncated_lines += 1;
            }
            line_start = end + 1;
        }
        self.offset = chunk_start + to as u64;
    }

    /// The file has gone away (rotated and drained): deliver a last line without a newline as a
    /// line, since nothing will ever complete it.
    pub fn finish(&mut self, mut on_line: impl FnMut(Line<'_>)) {
        if self.pending.is_empty() && !self.skipping {
            return;
        }
        self.line_no += 1;
        self.offset = self.read_pos;
        // Nothing will be read after this; an unreadable tail only means a copy is not found.
        if self.update_tail_fp().is_err() {
            self.tail_fp.clear();
        }
        let truncated = self.skipping;
        on_line(Line {
            bytes: clean(&self.pending),
            line_no: self.line_no,
            truncated,
        });
        self.pending.clear();
        self.skipping = false;
    }
}

/// Appends `bytes` to `window`, keeping its last `WINDOW_BYTES`.
fn keep_last(window: &mut Vec<u8>, bytes: &[u8]) {
    if bytes.len() >= WINDOW_BYTES {
        window.clear();
        window.extend_from_slice(&bytes[bytes.len() - WINDOW_BYTES..]);
        return;
    }
    let excess = (window.len() + bytes.len()).saturating_sub(WINDOW_BYTES);
    window.drain(..excess);
    window.extend_from_slice(bytes);
}

/// Where reading `file` (a new file of `size` bytes whose first bytes are `head`) goes on, if it
/// is a copy of what was handed out up to checkpoint `c` (`window`: the bytes that end at its
/// offset, if still known): its bytes up to `min(size, offset)` are those handed out. The proof
/// is the window where it reaches back far enough (byte for byte, and with the head fingerprint
/// unless the window starts at the file's start), else, for a copy that holds the whole offset,
/// the head and tail fingerprints. A copy that ends before the offset (the original was read past
/// the copy's end before its truncation) is positioned at its end, its line number counted back
/// from the window.
pub fn copy_resumes_at(
    c: &Checkpoint,
    window: &[u8],
    head: &Head,
    file: &File,
    size: u64,
) -> io::Result<Option<(u64, u64)>> {
    let offset = c.offset;
    if offset == 0 || size == 0 {
        return Ok(None);
    }
    let target = size.min(offset);
    let window_start = offset.saturating_sub(window.len() as u64);
    let proven = if window_start < target
        && target - window_start >= target.min(TAIL_BYTES as u64)
        && (window_start == 0 || head.matches(&c.fingerprint))
    {
        let mut bytes = vec![0u8; (target - window_start) as usize];
        read_full_at(file, &mut bytes, window_start)? == bytes.len()
            && bytes[..] == window[..bytes.len()]
    } else if target == offset && head.matches(&c.fingerprint) {
        tail_matches(file, offset, &c.tail_fingerprint)?
    } else {
        false
    };
    if !proven {
        return Ok(None);
    }
    if target == offset {
        return Ok(Some((offset, c.line_no)));
    }
    let at = (target - window_start) as usize;
    let after = memchr::memchr_iter(b'\n', &window[at..]).count() as u64;
    // A copy ending inside a line counts that line: it was read whole from the original.
    let inside_a_line = window[at - 1] != b'\n';
    Ok(Some((
        target,
        c.line_no.saturating_sub(after) + u64::from(inside_a_line),
    )))
}

/// Without a trailing CR (CRLF logs) and leading NULs (the hole a copytruncate leaves when the
/// writer does not use O_APPEND).
fn clean(line: &[u8]) -> &[u8] {
    let line = line.strip_suffix(b"\r").unwrap_or(line);
    let first = line.iter().position(|b| *b != 0).unwrap_or(line.len());
    &line[first..]
}

/// The offset after the last newline of the file and the number of lines before it: where
/// `start_at = "end"` begins, so that a line being written is read whole when it completes.
fn last_line_boundary(file: &File, size: u64) -> io::Result<(u64, u64)> {
    let mut buf = vec![0u8; CHUNK];
    let mut pos = 0u64;
    let mut lines = 0u64;
    let mut boundary = 0u64;
    while pos < size {
        // Not past `size`: the file may be growing, and what lies beyond is not counted.
        let want = (size - pos).min(CHUNK as u64) as usize;
        let n = read_full_at(file, &mut buf[..want], pos)?;
        if n == 0 {
            break;
        }
        for nl in memchr::memchr_iter(b'\n', &buf[..n]) {
            lines += 1;
            boundary = pos + nl as u64 + 1;
        }
        pos += n as u64;
    }
    Ok((boundary, lines))
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::Write;

    fn lines(tail: &mut Tail) -> Vec<(String, u64, bool)> {
        let mut out = Vec::new();
        while tail
            .read_lines(1 << 20, |l| {
                out.push((
                    String::from_utf8_lossy(l.bytes).into_owned(),
                    l.line_no,
                    l.truncated,
                ))
            })
            .expect("read")
            > 0
        {}
        out
    }

    #[test]
    fn partial_lines_wait_for_their_newline() -> io::Result<()> {
        let dir = tempfile::tempdir()?;
        let path = dir.path().join("a.log");
        let mut f = File::create(&path)?;
        f.write_all(b"one\r\ntw")?;
        let mut tail = Tail::open(&path, Start::Beginning, 1024)?;
        assert_eq!(lines(&mut tail), [("one".into(), 1, false)]);
        assert_eq!(tail.offset(), 5);
        f.write_all(b"o\nthree\n")?;
        assert_eq!(
            lines(&mut tail),
            [("two".into(), 2, false), ("three".into(), 3, false)]
        );
        assert_eq!(tail.offset(), 15);
        Ok(())
    }

    #[test]
    fn lines_the_filter_passes_over_are_counted_not_lost() -> io::Result<()> {
        let dir = tempfile::tempdir()?;
        let path = dir.path().join("a.log");
        let mut f = File::create(&path)?;
        let words = crate::playbook::prefix::prefixes("^Failed password ").expect("literals");
        let filter =
            crate::playbook::prefix::line_filter([Some(&words[..])], false).expect("filter");
        // Enough lines to span several chunks, a wanted line across a chunk boundary, an
        // over-long unwanted line (counted as cut), and a wanted line still being written.
        let mut body = Vec::new();
        let mut wanted = Vec::new();
        for i in 1..=20_000u64 {
            if i % 997 == 0 {
                body.extend_from_slice(format!("sshd[{i}]: Failed password {i}\n").as_bytes());
                wanted.push(i);
            } else if i == 5_000 {
                body.extend_from_slice(&vec![b'y'; 3000]);
                body.push(b'\n');
            } else {
                body.extend_from_slice(format!("cron[{i}]: session opened {i}\n").as_bytes());
            }
        }
        body.extend_from_slice(b"sshd[1]: Failed pass");
        f.write_all(&body)?;
        let mut tail = Tail::open(&path, Start::Beginning, 2048)?;
        let mut seen = Vec::new();
        while tail.read_lines_where(1 << 20, Some(&filter), |l| seen.push(l.line_no))? > 0 {}
        assert_eq!(seen, wanted);
        assert_eq!(tail.checkpoint().line_no, 20_000);
        assert_eq!(
            tail.offset(),
            (body.len() - b"sshd[1]: Failed pass".len()) as u64
        );
        assert_eq!(tail.truncated_lines, 1);
        f.write_all(b"word\n")?;
        seen.clear();
        while tail.read_lines_where(1 << 20, Some(&filter), |l| seen.push(l.line_no))? > 0 {}
        assert_eq!(seen, [20_001], "the line completed later is handed out");
        Ok(())
    }

    #[test]
    fn overlong_lines_are_cut_and_counted_without_buffering_them() -> io::Result<()> {
        let dir = tempfile::tempdir()?;
        let path = dir.path().join("a.log");
        let mut f = File::create(&path)?;
        let long = vec![b'x'; 10 << 20];
        f.write_all(b"before\n")?;
        f.write_all(&long)?;
        let mut tail = Tail::open(&path, Start::Beginning, 64 * 1024)?;
        assert_eq!(
            lines(&mut tail).len(),
            1,
            "the 10 MiB line waits for its newline"
        );
        assert!(tail.pending.len() <= 64 * 1024);
        f.write_all(b"\nafter\n")?;
        let got = lines(&mut tail);
        assert_eq!(got.len(), 2);
        assert_eq!((got[0].0.len(), got[0].2), (64 * 1024, true));
        assert_eq!(got[1], ("after".into(), 3, false));
        assert_eq!(tail.truncated_lines, 1);
        Ok(())
    }

    #[test]
    fn start_at_end_begins_after_the_last_complete_line() -> io::Result<()> {
        let dir = tempfile::tempdir()?;
        let path = dir.path().join("a.log");
        let mut f = File::create(&path)?;
        f.write_all(b"old 1\nold 2\nbeing writ")?;
        let mut tail = Tail::open(&path, Start::End, 1024)?;
        f.write_all(b"ten\nnew\n")?;
        assert_eq!(
            lines(&mut tail),
            [("being written".into(), 3, false), ("new".into(), 4, false)]
        );
        Ok(())
    }

    #[test]
    fn checkpoint_resumes_exactly_and_fingerprints_tell_files_apart() -> io::Result<()> {
        let dir = tempfile::tempdir()?;
        let path = dir.path().join("a.log");
        std::fs::write(&path, b"a\nb\nc\n")?;
        let mut tail = Tail::open(&path, Start::Beginning, 1024)?;
        let _ = lines(&mut tail);
        let cp = tail.checkpoint();
        let file = File::open(&path)?;
        assert!(fingerprint_matches(&file, &cp.fingerprint)?);
        let mut resumed = Tail::open(
            &path,
            Start::At {
                offset: 4,
                line_no: 2,
            },
            1024,
        )?;
        assert_eq!(lines(&mut resumed), [("c".into(), 3, false)]);
        std::fs::write(dir.path().join("b.log"), b"x\nb\nc\n")?;
        assert!(!fingerprint_matches(
            &File::open(dir.path().join("b.log"))?,
            &cp.fingerprint
        )?);
        Ok(())
    }

    #[test]
    fn copytruncate_hole_and_binary_garbage() -> io::Result<()> {
        let dir = tempfile::tempdir()?;
        let path = dir.path().join("a.log");
        std::fs::write(&path, b"\0\0\0\0after hole\n\xff\xfe\x00garbage\n")?;
        let mut tail = Tail::open(&path, Start::Beginning, 1024)?;
        let got = lines(&mut tail);
        assert_eq!(got[0].0, "after hole");
        assert_eq!(got.len(), 2);
        Ok(())
    }

    #[test]
    fn a_head_rewritten_in_place_is_seen_even_when_the_file_grew() -> io::Result<()> {
        let dir = tempfile::tempdir()?;
        let path = dir.path().join("a.log");
        std::fs::write(&path, b"")?;
        let mut tail = Tail::open(&path, Start::Beginning, 1024)?;
        // The fingerprint of an empty file grows with the lines read.
        std::fs::write(&path, b"first line\nsecond line\n")?;
        assert_eq!(lines(&mut tail).len(), 2);
        assert!(!tail.rewritten()?);
        // copytruncate, then more written than was there: longer than the offset, new head.
        std::fs::write(&path, b"new first line, longer than before\n")?;
        assert!(tail.size()? > tail.offset());
        assert!(tail.rewritten()?);
        tail.restart_after_truncation()?;
        assert!(!tail.rewritten()?);
        assert_eq!(
            lines(&mut tail),
            [("new first line, longer than before".into(), 1, false)]
        );
        Ok(())
    }

    /// The race of the first version of copy detection (reverted as 827cfaf): a file truncated and
    /// written again past the old offset between two reads handed out the new content's bytes at
    /// the old offset as if they continued the old, then the whole new content again once the
    /// changed head was seen.
    #[test]
    fn a_read_from_a_file_rewritten_in_place_hands_out_nothing() -> io::Result<()> {
        let dir = tempfile::tempdir()?;
        let path = dir.path().join("a.log");
        let old: String = (0..20)
            .map(|i| format!("old line {i:03} of the first content\n"))
            .collect();
        std::fs::write(&path, &old)?;
        let mut tail = Tail::open(&path, Start::Beginning, 1024)?;
        assert_eq!(lines(&mut tail).len(), 20);
        let before = tail.delivered();
        let new: String = (0..40)
            .map(|i| format!("new line {i:03} of the second content\n"))
            .collect();
        // The same inode, truncated and written again (std::fs::write truncates).
        std::fs::write(&path, &new)?;
        assert!(
            lines(&mut tail).is_empty(),
            "the new content at the old offset"
        );
        assert!(tail.take_rewritten());
        assert!(!tail.take_rewritten(), "told once");
        assert_eq!(tail.checkpoint(), before.checkpoint, "nothing moved");
        tail.restart_after_truncation()?;
        let got = lines(&mut tail);
        assert_eq!(got.len(), 40);
        assert_eq!(
            got[0],
            ("new line 000 of the second content".into(), 1, false)
        );

        // A file shorter than the fingerprint: its fingerprint grows only while its head stays.
        std::fs::write(&path, b"first\n")?;
        let mut tail = Tail::open(&path, Start::Beginning, 1024)?;
        assert_eq!(lines(&mut tail).len(), 1);
        std::fs::write(&path, b"another first line, longer than the first\n")?;
        assert!(lines(&mut tail).is_empty());
        assert!(tail.take_rewritten());
        Ok(())
    }

    #[test]
    fn a_copy_resumes_where_what_was_handed_out_ends() -> io::Result<()> {
        let dir = tempfile::tempdir()?;
        let path = dir.path().join("a.log");
        let line = |i: usize| {
            format!(
                "sshd[{i}]: Failed password for root from 192.0.2.{}\n",
                i % 250
            )
        };
        let body: Vec<u8> = (0..2_000).flat_map(|i| line(i).into_bytes()).collect();
        let boundary = |n: usize| (0..n).map(|i| line(i).len()).sum::<usize>();
        let mut f = File::create(&path)?;
        f.write_all(&body)?;
        f.write_all(b"a partial line")?;
        let mut tail = Tail::open(&path, Start::Beginning, 1024)?;
        let _ = lines(&mut tail);
        let d = tail.delivered();
        let offset = d.checkpoint.offset;
        assert_eq!(offset, body.len() as u64);
        assert_eq!(d.window.len(), WINDOW_BYTES - b"a partial line".len());
        assert!(
            body.ends_with(&d.window),
            "the window ends at the offset, not at the partial line"
        );
        let judge = |bytes: &[u8], window: &[u8]| -> io::Result<Option<(u64, u64)>> {
            let p = dir.path().join("copy");
            std::fs::write(&p, bytes)?;
            let copy = File::open(&p)?;
            copy_resumes_at(
                &d.checkpoint,
                window,
                &Head::of(&copy)?,
                &copy,
                bytes.len() as u64,
            )
        };
        let w = &d.window[..];
        // The whole of it, and more written before the copy: read on from the offset.
        let mut longer = body.clone();
        longer.extend_from_slice(b"sshd[1]: written after the last read\n");
        assert_eq!(judge(&body, w)?, Some((offset, 2_000)));
        assert_eq!(judge(&longer, w)?, Some((offset, 2_000)));
        // Read past the copy's end before the truncation: the copy is read to its end, at a line
        // boundary or inside a line (which was read whole).
        let cut = boundary(1_900);
        assert_eq!(judge(&body[..cut], w)?, Some((cut as u64, 1_900)));
        assert_eq!(judge(&body[..cut + 5], w)?, Some((cut as u64 + 5, 1_901)));
        // Further back than the window: no proof, read from its beginning.
        assert_eq!(judge(&body[..boundary(100)], w)?, None);
        // A byte changed before the copy's end, or in its head: another file.
        let mut changed = body[..cut].to_vec();
        changed[cut - 10] ^= 1;
        assert_eq!(judge(&changed, w)?, None);
        let mut head = body.clone();
        head[3] ^= 1;
        assert_eq!(judge(&head, w)?, None);
        // From the store (no window): the tail fingerprint proves only a copy that holds the
        // whole offset.
        assert_eq!(judge(&longer, &[])?, Some((offset, 2_000)));
        assert_eq!(judge(&body[..cut], &[])?, None);
        // A file read from its start within the window is compared whole, head included: a
        // copy shorter than the head fingerprint is recognised too.
        let small = dir.path().join("small.log");
        std::fs::write(&small, &body[..boundary(3)])?;
        let mut tail = Tail::open(&small, Start::Beginning, 1024)?;
        let _ = lines(&mut tail);
        let d = tail.delivered();
        let p = dir.path().join("small-copy");
        std::fs::write(&p, &body[..boundary(2)])?;
        let copy = File::open(&p)?;
        assert_eq!(
            copy_resumes_at(
                &d.checkpoint,
                &d.window,
                &Head::of(&copy)?,
                &copy,
                boundary(2) as u64
            )?,
            Some((boundary(2) as u64, 2))
        );
        Ok(())
    }

    #[test]
    fn the_tail_fingerprint_follows_the_offset_and_tells_a_copy_from_a_lookalike() -> io::Result<()>
    {
        let dir = tempfile::tempdir()?;
        let path = dir.path().join("a.log");
        let mut f = File::create(&path)?;
        // Small appends (the fingerprint comes from the file) and then more than a chunk at once
        // (it comes from the chunk in memory): both must give what the file holds there.
        let mut body = Vec::new();
        let mut tail = Tail::open(&path, Start::Beginning, 1024)?;
        let r = File::open(&path)?;
        assert_eq!(tail.checkpoint().tail_fingerprint, tail_of(b""));
        for i in 0..50 {
            let line = format!("sshd[{i}]: Failed password for root from 192.0.2.{i}\n");
            f.write_all(line.as_bytes())?;
            body.extend_from_slice(line.as_bytes());
            let _ = lines(&mut tail);
            let cp = tail.checkpoint();
            assert_eq!(cp.tail_fingerprint, tail_fingerprint(&r, cp.offset)?);
        }
        for i in 0..5_000 {
            body.extend_from_slice(format!("cron[{i}]: session opened\n").as_bytes());
        }
        body.extend_from_slice(b"partial");
        std::fs::write(&path, &body)?;
        let _ = lines(&mut tail);
        let cp = tail.checkpoint();
        assert_eq!(cp.offset, (body.len() - b"partial".len()) as u64);
        assert_eq!(cp.tail_fingerprint, tail_fingerprint(&r, cp.offset)?);

        // logrotate's copy holds the same bytes: the same head, the same tail at the offset,
        // and the fingerprint taken before the truncation still describes them.
        let copy = dir.path().join("a.log.1");
        std::fs::copy(&path, &copy)?;
        std::fs::write(&path, b"")?;
        let copy = File::open(&copy)?;
        assert!(fingerprint_matches(&copy, &cp.fingerprint)?);
        assert!(Head::of(&copy)?.matches(&cp.fingerprint));
        assert!(tail_matches(&copy, cp.offset, &cp.tail_fingerprint)?);
        assert_eq!(
            tail_fingerprint(&r, cp.offset)?,
            "",
            "gone bytes vouch for nothing"
        );

        // Same head, one byte different just before the offset: not a copy.
        let mut lookalike = body.clone();
        lookalike[cp.offset as usize - 3] ^= 1;
        let other = dir.path().join("b.log");
        std::fs::write(&other, &lookalike)?;
        let other = File::open(&other)?;
        assert!(fingerprint_matches(&other, &cp.fingerprint)?);
        assert!(Head::of(&other)?.matches(&cp.fingerprint));
        assert!(!tail_matches(&other, cp.offset, &cp.tail_fingerprint)?);
        let mut stranger = body.clone();
        stranger[10] ^= 1;
        std::fs::write(dir.path().join("c.log"), &stranger)?;
        let stranger = Head::of(&File::open(dir.path().join("c.log"))?)?;
        assert!(!stranger.matches(&cp.fingerprint) && stranger.contradicts(&cp.fingerprint));
        std::fs::write(dir.path().join("d.log"), &body[..100])?;
        let short = Head::of(&File::open(dir.path().join("d.log"))?)?;
        assert!(
            !short.matches(&cp.fingerprint),
            "100 bytes do not vouch for 256"
        );
        assert!(
            !short.contradicts(&cp.fingerprint),
            "but may be a copy in progress"
        );
        assert!(
            !tail_matches(&copy, cp.offset, "")?,
            "unknown matches nothing"
        );
        Ok(())
    }
}
