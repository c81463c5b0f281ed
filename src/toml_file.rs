//! Strict TOML loading shared by the config and the playbooks: every error names the file and the
//! line (and, for unknown keys, the key), in the `file:line: message` form editors jump to.

use serde::de::DeserializeOwned;
use std::fmt;
use std::ops::Range;
use std::path::{Path, PathBuf};

/// A place in a TOML file.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Location {
    pub path: PathBuf,
    /// 1-based; 0 when the error has no position (an unreadable file).
    pub line: usize,
}

impl Location {
    /// The location of byte `offset` in `text`.
    pub fn at(path: &Path, text: &str, offset: usize) -> Self {
        let end = offset.min(text.len());
        let line = text.as_bytes()[..end]
            .iter()
            .filter(|&&b| b == b'\n')
            .count()
            + 1;
        Location {
            path: path.to_path_buf(),
            line,
        }
    }

    /// The location of a span, as `toml::Spanned::span()` gives it.
    pub fn of_span(path: &Path, text: &str, span: Range<usize>) -> Self {
        Self::at(path, text, span.start)
    }
}

impl fmt::Display for Location {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.line == 0 {
            write!(f, "{}", self.path.display())
        } else {
            write!(f, "{}:{}", self.path.display(), self.line)
        }
    }
}

/// A TOML file that could not be read or parsed, or a value in it that was refused.
#[derive(Debug, thiserror::Error)]
pub enum TomlError {
    #[error("{}: cannot read{}: {source}", path.display(), as_whom(source))]
    Read {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("{location}: {message}")]
    Invalid { location: Location, message: String },
}

impl TomlError {
    /// A refused value at `span` of `text`.
    pub fn invalid(
        path: &Path,
        text: &str,
        span: Range<usize>,
        message: impl Into<String>,
    ) -> Self {
        TomlError::Invalid {
            location: Location::of_span(path, text, span),
            message: message.into(),
        }
    }

    /// Where the error is, for tests and callers that group errors by file.
    pub fn location(&self) -> Location {
        match self {
            TomlError::Read { path, .. } => Location {
                path: path.clone(),
                line: 0,
            },
            TomlError::Invalid { location, .. } => location.clone(),
        }
    }
}

/// Reads `path` as UTF-8 text.
pub fn read(path: &Path) -> Result<String, TomlError> {
    std::fs::read_to_string(path).map_err(|source| TomlError::Read {
        path: path.to_path_buf(),
        source,
    })
}

/// " as user nobody (uid 65534)" when the read was denied: a config readable by `csirt` but
/// not by the user an MTA runs `csirt intake` as must say who was refused.
fn as_whom(e: &std::io::Error) -> String {
    if e.kind() == std::io::ErrorKind::PermissionDenied {
        format!(" as user {}", crate::access::effective_user())
    } else {
        String::new()
    }
}

/// Parses `text` (the contents of `path`) into `T`, mapping the parser's error to `file:line`.
pub fn parse<T: DeserializeOwned>(path: &Path, text: &str) -> Result<T, TomlError> {
    toml::from_str(text).map_err(|e| {
        // The toml error's Display carries a multi-line snippet; the message alone is what fits
        // on the `file:line:` line. Collapse its own newlines so one error stays one line.
        let message = e.message().split_whitespace().collect::<Vec<_>>().join(" ");
        let offset = e.span().map(|s| s.start).unwrap_or(0);
        TomlError::Invalid {
            location: Location::at(path, text, offset),
            message,
        }
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[derive(serde::Deserialize, Debug)]
    #[serde(deny_unknown_fields)]
    #[allow(dead_code)]
    struct Sample {
        name: String,
    }

    #[test]
    fn unknown_key_names_file_line_and_key() {
        let text = "name = \"a\"\n\nnmae = \"b\"\n";
        let err = parse::<Sample>(Path::new("x.toml"), text).expect_err("unknown key");
        let msg = err.to_string();
        assert!(msg.starts_with("x.toml:3: "), "{msg}");
        assert!(msg.contains("nmae"), "{msg}");
    }

    #[test]
    fn syntax_error_has_a_line() {
        let err = parse::<Sample>(Path::new("y.toml"), "# comment\nname = = \"a\"\n")
            .expect_err("syntax");
        assert_eq!(err.location().line, 2, "{err}");
    }
}
