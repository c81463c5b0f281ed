//! The MIME structure of a message, read from its header fields alone before mail-parser builds
//! its tree: how many parts, how deep (multipart and message/rfc822 levels alike), and which
//! header fields would make the tree large (a forward carrying 300,000 `Received:` fields, one
//! field of megabytes).
//!
//! mail-parser keeps every part and every header field it reads: 5.2 million empty parts in a
//! 25 MiB mail took 925 MB before the part limit could be checked on its result. This walk holds
//! only the open multipart boundaries (at most `max_depth`, borrowed from the raw bytes) and stops
//! at the first limit passed, so it never allocates in proportion to the mail's parts or depth.
//! It follows mail-parser's own rules where they matter for counting: a delimiter is `--boundary`
//! wherever it occurs (not only at a line start), the last Content-Type field wins, and a
//! message/rfc822 part with a transfer encoding is decoded and parsed as a message of its own.
//! Only header fields are read: words such as `message/rfc822` in a body count for nothing.

use super::parse::{Limits, Refusal};
use memchr::memmem;

/// `Received:` fields kept per header block for parsing; csirt records at most 30 of them, and
/// the trace of a real mail rarely has more than 20.
pub const RECEIVED_KEPT: usize = 100;
/// A header field larger than this (folded lines included) is left out of parsing: no address,
/// subject or content type of a real mail comes near it.
pub const FIELD_MAX: usize = 64 * 1024;
/// Header fields a block may keep (after the above are left out); more is refused.
pub const FIELDS_MAX: usize = 2_000;

/// What the walk found: the byte ranges of header fields to leave out of parsing (merged, in
/// order). The raw message is stored whole; only mail-parser's copy goes without them.
#[derive(Debug, Default)]
pub struct Shape {
    pub parts: usize,
    pub depth: usize,
    pub omit: Vec<(usize, usize)>,
}

impl Shape {
    /// `raw` without the omitted ranges, or None when nothing is omitted.
    pub fn trimmed(&self, raw: &[u8]) -> Option<Vec<u8>> {
        if self.omit.is_empty() {
            return None;
        }
        let left_out: usize = self.omit.iter().map(|(a, b)| b - a).sum();
        let mut out = Vec::with_capacity(raw.len().saturating_sub(left_out));
        let mut at = 0;
        for &(start, end) in &self.omit {
            out.extend_from_slice(raw.get(at..start).unwrap_or_default());
            at = end;
        }
        out.extend_from_slice(raw.get(at..).unwrap_or_default());
        Some(out)
    }
}

/// Walks `raw`'s MIME structure within `limits`.
pub fn walk(raw: &[u8], limits: Limits) -> Result<Shape, Refusal> {
    let mut shape = Shape::default();
    walk_at(raw, limits, 0, true, &mut shape)?;
    Ok(shape)
}

enum Frame<'a> {
    Multipart(&'a [u8]),
    Message,
}

/// One message (the top one, or a decoded message/rfc822 part at `base` levels down). Omitted
/// ranges are only possible in the top one (`trim`): a decoded message is parsed from bytes
/// csirt does not hand over, so a field that would have to be left out refuses it instead.
fn walk_at(
    raw: &[u8],
    limits: Limits,
    base: usize,
    trim: bool,
    shape: &mut Shape,
) -> Result<(), Refusal> {
    let mut stack: Vec<Frame<'_>> = Vec::new();
    let mut pos = 0;
    'part: loop {
        shape.parts += 1;
        if shape.parts > limits.max_parts {
            return Err(Refusal::TooManyParts {
                parts: shape.parts,
                limit: limits.max_parts,
            });
        }
        let (head, body) = header_block(raw, pos, trim, shape)?;
        let depth = base + stack.len();
        shape.depth = shape.depth.max(depth);
        if depth > limits.max_depth {
            return Err(Refusal::TooDeep {
                depth,
                limit: limits.max_depth,
            });
        }
        let kind = ContentType::read(head.content_type);
        if kind.multipart
            && let Some(boundary) = kind.boundary
            && let Some(at) = delimiter(raw, body, boundary)
        {
            stack.push(Frame::Multipart(boundary));
            pos = line_end(raw, at + 2 + boundary.len());
            continue 'part;
        }
        if kind.message {
            match head.encoding.map(trim_ascii) {
                Some(e) if e.eq_ignore_ascii_case(b"base64") => {
                    let end = part_end(raw, body, &stack);
                    let bytes = mail_parser::decoders::base64::base64_decode(&raw[body..end]);
                    if let Some(bytes) = bytes {
                        walk_at(&bytes, limits, depth + 1, false, shape)?;
                    }
                }
                Some(e) if e.eq_ignore_ascii_case(b"quoted-printable") => {
                    let end = part_end(raw, body, &stack);
                    let bytes = mail_parser::decoders::quoted_printable::quoted_printable_decode(
                        &raw[body..end],
                    );
                    if let Some(bytes) = bytes {
                        walk_at(&bytes, limits, depth + 1, false, shape)?;
                    }
                }
                _ => {
                    stack.push(Frame::Message);
                    pos = body;
                    continue 'part;
                }
            }
        }
        // A leaf: it ends at the next delimiter of the innermost multipart, which either opens
        // that multipart's next part or closes it (and every message inside it).
        let mut from = body;
        loop {
            let Some(index) = stack.iter().rposition(|f| matches!(f, Frame::Multipart(_))) else {
                return Ok(());
            };
            let Some(Frame::Multipart(boundary)) = stack.get(index) else {
                return Ok(());
            };
            let boundary = *boundary;
            let Some(at) = delimiter(raw, from, boundary) else {
                return Ok(());
            };
            let after = at + 2 + boundary.len();
            if raw.get(after..after + 2) == Some(b"--") {
                stack.truncate(index);
                from = after + 2;
                continue;
            }
            stack.truncate(index + 1);
            pos = line_end(raw, after);
            continue 'part;
        }
    }
}

/// The fields of one header block that the walk needs.
struct Head<'a> {
    content_type: Option<&'a [u8]>,
    encoding: Option<&'a [u8]>,
}

/// Reads the header block at `pos`: its Content-Type and Content-Transfer-Encoding (the last of
/// each, as mail-parser takes them), and the offset of the body after the empty line.
fn header_block<'a>(
    raw: &'a [u8],
    mut pos: usize,
    trim: bool,
    shape: &mut Shape,
) -> Result<(Head<'a>, usize), Refusal> {
    let mut head = Head {
        content_type: None,
        encoding: None,
    };
    let mut received = 0;
    let mut kept = 0;
    let mut field: Option<usize> = None;
    loop {
        let end = line_end(raw, pos);
        let line = &raw[pos..end];
        let continued = matches!(line.first(), Some(b' ' | b'\t'));
        if !continued {
            if let Some(start) = field.take() {
                let omitted = take_field(raw, start, pos, &mut head, &mut received, trim, shape)?;
                if !omitted {
                    kept += 1;
                    if kept > FIELDS_MAX {
                        return Err(Refusal::TooManyFields { limit: FIELDS_MAX });
                    }
                }
            }
            if line.is_empty() || line == b"\n" || line == b"\r\n" {
                return Ok((head, end));
            }
            field = Some(pos);
        }
        pos = end;
    }
}

/// Looks at the field `raw[start..end]`; true when it is left out of parsing.
fn take_field<'a>(
    raw: &'a [u8],
    start: usize,
    end: usize,
    head: &mut Head<'a>,
    received: &mut usize,
    trim: bool,
    shape: &mut Shape,
) -> Result<bool, Refusal> {
    let text = &raw[start..end];
    let (name, value) = match memchr::memchr(b':', text) {
        Some(colon) => (trim_ascii(&text[..colon]), &text[colon + 1..]),
        None => (&b""[..], text),
    };
    let is_received = name.eq_ignore_ascii_case(b"received");
    if is_received {
        *received += 1;
    }
    let too_large = text.len() > FIELD_MAX;
    if too_large || (is_received && *received > RECEIVED_KEPT) {
        if !trim {
            return Err(if too_large {
                Refusal::FieldTooLarge {
                    size: text.len(),
                    limit: FIELD_MAX,
                }
            } else {
                Refusal::TooManyFields {
                    limit: RECEIVED_KEPT,
                }
            });
        }
        match shape.omit.last_mut() {
            Some(last) if last.1 == start => last.1 = end,
            _ => shape.omit.push((start, end)),
        }
        return Ok(true);
    }
    if name.eq_ignore_ascii_case(b"content-type") {
        head.content_type = Some(value);
    } else if name.eq_ignore_ascii_case(b"content-transfer-encoding") {
        head.encoding = Some(value);
    }
    Ok(false)
}

/// What the walk needs of a Content-Type value.
struct ContentType<'a> {
    multipart: bool,
    message: bool,
    boundary: Option<&'a [u8]>,
}

impl<'a> ContentType<'a> {
    fn read(value: Option<&'a [u8]>) -> ContentType<'a> {
        let Some(value) = value else {
            return ContentType {
                multipart: false,
                message: false,
                boundary: None,
            };
        };
        let mut params = value.split(|&b| b == b';');
        let media = params.next().map(trim_ascii).unwrap_or_default();
        let (kind, sub) = match memchr::memchr(b'/', media) {
            Some(i) => (trim_ascii(&media[..i]), trim_ascii(&media[i + 1..])),
            None => (media, &b""[..]),
        };
        let multipart = kind.eq_ignore_ascii_case(b"multipart");
        let message = kind.eq_ignore_ascii_case(b"message")
            && (sub.eq_ignore_ascii_case(b"rfc822") || sub.eq_ignore_ascii_case(b"global"));
        // A quoted boundary may hold a `;`: find the parameter in the whole value instead.
        let boundary = param(value, b"boundary").filter(|b| !b.is_empty());
        ContentType {
            multipart,
            message,
            boundary,
        }
    }
}

/// The value of parameter `name` in a Content-Type value (quoted or not).
fn param<'a>(value: &'a [u8], name: &[u8]) -> Option<&'a [u8]> {
    let mut from = 0;
    while let Some(i) = memmem::find(&value[from..], b"=").map(|i| i + from) {
        let before = trim_ascii(&value[from..i]);
        let key_start = before
            .iter()
            .rposition(|&b| b == b';' || b.is_ascii_whitespace())
            .map_or(0, |p| p + 1);
        let key = &before[key_start..];
        let rest = &value[i + 1..];
        let lead = rest.len() - rest.trim_ascii_start().len();
        let rest = &rest[lead..];
        let (found, used) = if let Some(quoted) = rest.strip_prefix(b"\"") {
            let close = memchr::memchr(b'"', quoted).unwrap_or(quoted.len());
            (&quoted[..close], 1 + close + 1)
        } else {
            let stop = rest
                .iter()
                .position(|&b| b == b';' || b.is_ascii_whitespace())
                .unwrap_or(rest.len());
            (&rest[..stop], stop)
        };
        if key.eq_ignore_ascii_case(name) {
            return Some(found);
        }
        from = (i + 1 + lead + used).min(value.len());
    }
    None
}

/// The offset of the next `--boundary` at or after `from`, wherever it stands (mail-parser does
/// not require it at a line start).
fn delimiter(raw: &[u8], from: usize, boundary: &[u8]) -> Option<usize> {
    let finder = memmem::Finder::new(boundary);
    let mut at = from;
    while at < raw.len() {
        let found = at + finder.find(&raw[at..])?;
        if found >= from + 2 && raw.get(found - 2..found) == Some(b"--") {
            return Some(found - 2);
        }
        at = found + 1;
    }
    None
}

/// Where a leaf part starting at `body` ends: the innermost multipart's next delimiter, or the end.
fn part_end(raw: &[u8], body: usize, stack: &[Frame<'_>]) -> usize {
    stack
        .iter()
        .rev()
        .find_map(|f| match f {
            Frame::Multipart(b) => Some(*b),
            Frame::Message => None,
        })
        .and_then(|b| delimiter(raw, body, b))
        .unwrap_or(raw.len())
}

/// The offset after the line that contains `pos` (after its LF), or the end.
fn line_end(raw: &[u8], pos: usize) -> usize {
    if pos >= raw.len() {
        return raw.len();
    }
    memchr::memchr(b'\n', &raw[pos..]).map_or(raw.len(), |i| pos + i + 1)
}

fn trim_ascii(b: &[u8]) -> &[u8] {
    b.trim_ascii()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn limits() -> Limits {
        Limits::default()
    }

    #[test]
    fn a_forward_is_three_levels_and_words_in_bodies_count_for_nothing() {
        let comment = "<!-- message/rfc822 -->".repeat(11);
        let raw = format!(
            "From: a@example.jp\r\nContent-Type: multipart/mixed; boundary=\"o\"\r\n\r\n\
             --o\r\nContent-Type: text/plain\r\n\r\nsee below\r\n\
             --o\r\nContent-Type: message/rfc822\r\n\r\n\
             From: p@attacker.example\r\nContent-Type: multipart/alternative; boundary=i\r\n\r\n\
             --i\r\nContent-Type: text/html\r\n\r\n{comment}\r\n--i--\r\n--o--\r\n"
        );
        let shape = walk(raw.as_bytes(), limits()).expect("within limits");
        assert_eq!(shape.depth, 3);
        assert_eq!(shape.parts, 5);
    }

    #[test]
    fn plain_multipart_nesting_is_limited_like_attached_messages() {
        let mut raw =
            b"From: a@example.jp\r\nContent-Type: multipart/mixed; boundary=b0\r\n\r\n".to_vec();
        for i in 0..12 {
            raw.extend_from_slice(
                format!(
                    "--b{i}\r\nContent-Type: multipart/mixed; boundary=b{}\r\n\r\n",
                    i + 1
                )
                .as_bytes(),
            );
        }
        assert!(matches!(
            walk(&raw, limits()),
            Err(Refusal::TooDeep { limit: 10, .. })
        ));
    }

    #[test]
    fn many_empty_parts_stop_the_walk_at_the_limit() {
        let mut raw =
            b"From: a@example.jp\r\nContent-Type: multipart/mixed; boundary=b\r\n\r\n".to_vec();
        raw.extend(b"--b\n\n".repeat(100_000));
        assert!(matches!(
            walk(&raw, limits()),
            Err(Refusal::TooManyParts { limit: 500, .. })
        ));
    }

    #[test]
    fn excess_received_fields_and_huge_fields_are_left_out_of_parsing() {
        let mut raw = b"Received: from a\r\n".repeat(1_000);
        raw.extend_from_slice(b"X-Huge: ");
        raw.extend(b"a\r\n ".repeat(FIELD_MAX));
        raw.extend_from_slice(b"\r\nFrom: a@example.jp\r\nSubject: s\r\n\r\nbody\r\n");
        let shape = walk(&raw, limits()).expect("within limits");
        let trimmed = shape.trimmed(&raw).expect("trimmed");
        let text = String::from_utf8(trimmed).expect("ascii");
        assert_eq!(text.matches("Received:").count(), RECEIVED_KEPT);
        assert!(!text.contains("X-Huge"));
        assert!(text.ends_with("From: a@example.jp\r\nSubject: s\r\n\r\nbody\r\n"));
    }

    #[test]
    fn a_quoted_boundary_and_an_encoded_attached_message_are_followed() {
        use std::fmt::Write as _;
        let mut inner = String::from(
            "From: x@example.jp\r\nContent-Type: multipart/mixed; boundary=\"a;b\"\r\n\r\n",
        );
        for _ in 0..600 {
            let _ = write!(inner, "--a;b\r\n\r\n");
        }
        let b64 = base64_encode(inner.as_bytes());
        let raw = format!(
            "From: a@example.jp\r\nContent-Type: multipart/mixed; boundary=o\r\n\r\n--o\r\n\
             Content-Type: message/rfc822\r\nContent-Transfer-Encoding: base64\r\n\r\n{b64}\r\n--o--\r\n"
        );
        assert!(matches!(
            walk(raw.as_bytes(), limits()),
            Err(Refusal::TooManyParts { .. })
        ));
    }

    fn base64_encode(bytes: &[u8]) -> String {
        const A: &[u8; 64] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
        let mut out = String::new();
        for chunk in bytes.chunks(3) {
            let n = chunk
                .iter()
                .enumerate()
                .fold(0u32, |n, (i, &b)| n | u32::from(b) << (16 - 8 * i));
            for i in 0..4 {
                if i <= chunk.len() {
                    out.push(A[(n >> (18 - 6 * i) & 63) as usize] as char);
                } else {
                    out.push('=');
                }
            }
        }
        out
    }
}
