//! Positions in operator files, for error messages.

use std::fmt;
use std::path::{Path, PathBuf};

/// A place in a file: the file and a 1-based line, plus the key when known.
///
/// Displays as `path:line: key` so editors and terminals can jump to it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Location {
    /// The file.
    pub path: PathBuf,
    /// 1-based line number, 0 when unknown.
    pub line: usize,
    /// Dotted key (`telemetry.buffer_capacity`, `plugin[2].sha256`), if known.
    pub key: Option<String>,
}

impl Location {
    /// A location at `line` of `path`.
    pub fn new(path: &Path, line: usize, key: Option<String>) -> Self {
        Location { path: path.to_path_buf(), line, key }
    }

    /// The 1-based line of byte `offset` in `text`.
    pub fn line_of(text: &str, offset: usize) -> usize {
        let end = offset.min(text.len());
        text.as_bytes()[..end].iter().filter(|&&b| b == b'\n').count() + 1
    }
}

impl fmt::Display for Location {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}", self.path.display())?;
        if self.line > 0 {
            write!(f, ":{}", self.line)?;
        }
        if let Some(key) = &self.key {
            write!(f, ": key `{key}`")?;
        }
        Ok(())
    }
}
