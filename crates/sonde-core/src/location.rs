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

/// The dotted key a TOML parse error at byte `offset` of `text` is about,
/// for errors that carry only a position: the key on that line (or the
/// missing field `message` names), prefixed by the table the line sits in.
/// Arrays of tables are indexed (`plugin[2].sha256`), and a sub-table of one
/// belongs to its latest entry (`plugin[2].config.top_n`).
pub fn toml_key_at(text: &str, offset: usize, message: &str) -> Option<String> {
    let offset = offset.min(text.len());
    let line_start = text[..offset].rfind('\n').map_or(0, |i| i + 1);
    let line = text[line_start..].lines().next().unwrap_or("");
    let missing = message
        .strip_prefix("missing field `")
        .and_then(|rest| rest.split('`').next())
        .map(str::to_string);
    let own_key = line
        .split_once('=')
        .map(|(k, _)| k.trim().trim_matches('"').to_string())
        .filter(|k| !k.is_empty() && !k.starts_with('['));
    // The table this line sits in: the last header at or before it.
    let mut table: Option<String> = None;
    let mut arrays: std::collections::HashMap<String, usize> = std::collections::HashMap::new();
    let mut current_array: Option<(String, usize)> = None;
    for l in text[..line_start + line.len()].lines() {
        let l = l.trim();
        if !l.starts_with('[') {
            continue;
        }
        let name = l.trim_matches(|c| c == '[' || c == ']').trim().to_string();
        if l.starts_with("[[") {
            let n = arrays.entry(name.clone()).or_insert(0);
            table = Some(format!("{name}[{n}]"));
            current_array = Some((name, *n));
            *n += 1;
        } else {
            table = Some(match &current_array {
                Some((array, i)) if name.starts_with(&format!("{array}.")) => {
                    format!("{array}[{i}]{}", &name[array.len()..])
                }
                _ => name,
            });
        }
    }
    match (table, missing.or(own_key)) {
        (Some(t), Some(leaf)) => Some(format!("{t}.{leaf}")),
        (None, leaf) => leaf,
        (Some(t), None) => Some(t),
    }
}
