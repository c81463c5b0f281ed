//! Tailing one log file: complete lines only, from a known byte offset, with the file's identity.
//!
//! A file is known by its device and inode plus a fingerprint of its first bytes (an inode is
//! reused after a delete, so an inode alone can name a different file). The offset kept is the
//! one after the last complete line: a partial last line waits for its newline, and after a
//! crash the reader resumes exactly at a line boundary. A line longer than the limit is cut at
//! the limit, the rest of it skipped up to its newline, and counted; nothing is ever buffered
//! beyond the limit. Reading is plain blocking I/O: the caller runs it on a thread of its own.

use crate::engine::Checkpoint;
use crate::playbook::prefix::LineFilter;
use std::fs::File;
use std::io;
use std::os::unix::fs::{FileExt, MetadataExt};
use std::path::{Path, PathBuf};

/// How many leading bytes make a file's fingerprint.
pub const FINGERPRINT_BYTES: usize = 256;

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
        Ok(Tail {
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
        })
    }

    /// The byte offset after the last complete line delivered.
    pub fn offset(&self) -> u64 {
        self.offset
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
        self.offset = 0;
        self.line_no = 0;
        self.read_pos = 0;
        self.pending.clear();
        self.skipping = false;
        self.id.fingerprint = fingerprint(&self.file)?;
        Ok(())
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
        // The fingerprint of a file shorter than FINGERPRINT_BYTES grows with it.
        if !self
            .id
            .fingerprint
            .starts_with(&format!("{FINGERPRINT_BYTES}:"))
        {
            self.id.fingerprint = fingerprint(&self.file)?;
        }
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
            let chunk_start = self.read_pos;
            self.read_pos += n as u64;
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
        Ok(total)
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
        let n = read_full_at(file, &mut buf, pos)?;
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
}
