//! Events as JSON lines: the `--events FILE.jsonl` format.
//!
//! One object a line: `{"kind":"http.request","fields":{"status":200}}`.
//! Field values are integers, floats, strings or booleans (read as 0/1).

use std::collections::BTreeMap;
use std::path::Path;

use serde::{Deserialize, Serialize};

use crate::limits::{
    MAX_EVENT_FIELDS, MAX_EVENT_KIND_LEN, MAX_EVENT_LINE_BYTES, MAX_EVENTS_FILE_BYTES,
    MAX_FIELD_NAME_LEN,
};
use crate::location::Location;

/// One event as read from an events file.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct EventRecord {
    /// The event kind, e.g. `http.request`.
    pub kind: String,
    /// Named values.
    #[serde(default)]
    pub fields: BTreeMap<String, FieldValue>,
}

/// The value of one event field.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(untagged)]
pub enum FieldValue {
    /// A JSON integer that fits in `i64`.
    Int(i64),
    /// Any other JSON number.
    Float(f64),
    /// A JSON string.
    Str(String),
    /// A JSON boolean, delivered to plugins as the integer 0 or 1.
    Bool(bool),
}

/// An events file that could not be read.
#[derive(Debug, thiserror::Error)]
pub enum EventsError {
    /// The file could not be opened or read.
    #[error("{path}: {source}")]
    Io {
        /// The file.
        path: String,
        /// What the OS said.
        source: std::io::Error,
    },
    /// The file is larger than [`MAX_EVENTS_FILE_BYTES`].
    #[error(
        "{path}: {size} bytes is over the limit of {MAX_EVENTS_FILE_BYTES} bytes for an events file"
    )]
    TooLarge {
        /// The file.
        path: String,
        /// Its size.
        size: u64,
    },
    /// A line is not a valid event.
    #[error("{at}: {message}")]
    Invalid {
        /// Where.
        at: Location,
        /// What is wrong.
        message: String,
    },
}

/// Reads an events file (see the module docs for the format).
pub fn read_events_file(path: &Path) -> Result<Vec<EventRecord>, EventsError> {
    let io = |source| EventsError::Io { path: path.display().to_string(), source };
    let bytes = crate::limits::read_file_capped(path, MAX_EVENTS_FILE_BYTES).map_err(|e| {
        if e.kind() == std::io::ErrorKind::FileTooLarge {
            let size = std::fs::metadata(path).map_or(MAX_EVENTS_FILE_BYTES + 1, |m| m.len());
            EventsError::TooLarge { path: path.display().to_string(), size }
        } else {
            io(e)
        }
    })?;
    let text = String::from_utf8(bytes)
        .map_err(|_| io(std::io::Error::new(std::io::ErrorKind::InvalidData, "not UTF-8 text")))?;
    parse_events_jsonl(&text, path)
}

/// Parses events from JSON-lines `text`; `path` only names the source in errors.
///
/// Blank lines are skipped. Every other line must be one event object with at
/// most [`MAX_EVENT_FIELDS`] fields.
pub fn parse_events_jsonl(text: &str, path: &Path) -> Result<Vec<EventRecord>, EventsError> {
    let mut events = Vec::new();
    for (index, line) in text.lines().enumerate() {
        let at = |key: Option<String>| Location::new(path, index + 1, key);
        if line.trim().is_empty() {
            continue;
        }
        if line.len() > MAX_EVENT_LINE_BYTES {
            return Err(EventsError::Invalid {
                at: at(None),
                message: format!("line is over the limit of {MAX_EVENT_LINE_BYTES} bytes"),
            });
        }
        let event: EventRecord = serde_json::from_str(line)
            .map_err(|e| EventsError::Invalid { at: at(None), message: e.to_string() })?;
        if event.kind.is_empty() || event.kind.len() > MAX_EVENT_KIND_LEN {
            return Err(EventsError::Invalid {
                at: at(Some("kind".into())),
                message: format!("event kind must be 1 to {MAX_EVENT_KIND_LEN} bytes"),
            });
        }
        if event.fields.len() > MAX_EVENT_FIELDS {
            return Err(EventsError::Invalid {
                at: at(Some("fields".into())),
                message: format!(
                    "{} fields, at most {MAX_EVENT_FIELDS} are allowed",
                    event.fields.len()
                ),
            });
        }
        if let Some(name) =
            event.fields.keys().find(|k| k.is_empty() || k.len() > MAX_FIELD_NAME_LEN)
        {
            return Err(EventsError::Invalid {
                at: at(Some(format!("fields.{name}"))),
                message: format!("field names must be 1 to {MAX_FIELD_NAME_LEN} bytes"),
            });
        }
        events.push(event);
    }
    Ok(events)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn values_keep_their_json_types() {
        let text = r#"{"kind":"k","fields":{"i":3,"f":1.5,"s":"x","b":true}}"#;
        let events = parse_events_jsonl(text, Path::new("e.jsonl")).expect("valid");
        let f = &events[0].fields;
        assert_eq!(f["i"], FieldValue::Int(3));
        assert_eq!(f["f"], FieldValue::Float(1.5));
        assert_eq!(f["s"], FieldValue::Str("x".into()));
        assert_eq!(f["b"], FieldValue::Bool(true));
    }

    #[test]
    fn a_bad_line_is_reported_with_its_number() {
        let text = "{\"kind\":\"k\"}\n\n{\"kind\":\"k\",\"extra\":1}\n";
        let err = parse_events_jsonl(text, Path::new("e.jsonl")).expect_err("invalid");
        let msg = err.to_string();
        assert!(msg.starts_with("e.jsonl:3:"), "{msg}");
        assert!(msg.contains("extra"), "{msg}");
    }

    #[test]
    fn too_many_fields_are_refused() {
        let fields: Vec<String> = (0..9).map(|i| format!("\"f{i}\":1")).collect();
        let text = format!("{{\"kind\":\"k\",\"fields\":{{{}}}}}", fields.join(","));
        let err = parse_events_jsonl(&text, Path::new("e.jsonl")).expect_err("too many");
        assert!(err.to_string().contains("at most 8"), "{err}");
    }
}
