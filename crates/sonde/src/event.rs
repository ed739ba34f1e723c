//! Events: fixed-size values that `record()` copies into the ring buffer.
//!
//! An [`Event`] never allocates. Its kind and field names come from an
//! [`EventKind`] declared once (usually a `static`), its values live inline:
//! up to [`MAX_FIELDS`] integers, floats or strings, with all string bytes of
//! one event sharing [`MAX_EVENT_TEXT`] bytes. A string that does not fit is
//! cut at a character boundary and the event is counted as truncated; a field
//! name the kind does not declare is counted as invalid and ignored.

use std::collections::{BTreeMap, BTreeSet};
use std::fmt;

use parking_lot::Mutex;
use sonde_core::{EventRecord, FieldValue};

use crate::error::Error;

/// Most fields an event may carry.
pub const MAX_FIELDS: usize = sonde_core::limits::MAX_EVENT_FIELDS;

/// Bytes shared by all string values of one event. Real browser user agents
/// run 110-140 bytes and the family tokens (`Edg/`) come last, so a method,
/// a route template and a user agent need more than 128; with 256 a slot is
/// 344 bytes and the default 64 Ki-event ring 22 MiB.
pub const MAX_EVENT_TEXT: usize = 256;

/// Most event kinds created at run time by [`EventKind::intern`] (from events
/// files or dynamic sources). Interned kinds live for the whole process.
pub const MAX_INTERNED_KINDS: usize = 256;

/// The kind of an event and the names of its fields, declared once.
///
/// ```
/// use sonde::EventKind;
/// static HTTP: EventKind = EventKind::new(
///     "http.request",
///     &["method", "route", "status", "duration_us", "user_agent"],
/// );
/// let event = HTTP.event().str("method", "GET").int("status", 200);
/// assert_eq!(event.kind().name(), "http.request");
/// ```
#[derive(Debug)]
pub struct EventKind {
    name: &'static str,
    fields: &'static [&'static str],
}

impl EventKind {
    /// Declares a kind. Panics at compile time (in a `static`) with more than
    /// [`MAX_FIELDS`] fields.
    pub const fn new(name: &'static str, fields: &'static [&'static str]) -> EventKind {
        assert!(fields.len() <= MAX_FIELDS, "an event kind has at most MAX_FIELDS fields");
        EventKind { name, fields }
    }

    /// A kind made at run time, e.g. from an events file. The same name and
    /// fields give back the same kind; at most [`MAX_INTERNED_KINDS`] exist.
    pub fn intern(name: &str, fields: &[&str]) -> Result<&'static EventKind, Error> {
        static KINDS: Mutex<Vec<&'static EventKind>> = Mutex::new(Vec::new());
        if fields.len() > MAX_FIELDS {
            return Err(Error::Event(format!(
                "event kind `{name}` has {} fields, at most {MAX_FIELDS} are allowed",
                fields.len()
            )));
        }
        let mut kinds = KINDS.lock();
        if let Some(k) = kinds.iter().find(|k| k.name == name && k.fields == fields) {
            return Ok(k);
        }
        if kinds.len() >= MAX_INTERNED_KINDS {
            return Err(Error::Event(format!(
                "more than {MAX_INTERNED_KINDS} event kinds were created at run time"
            )));
        }
        let leak = |s: &str| -> &'static str { Box::leak(s.to_owned().into_boxed_str()) };
        let fields: Vec<&'static str> = fields.iter().map(|f| leak(f)).collect();
        let kind: &'static EventKind = Box::leak(Box::new(EventKind {
            name: leak(name),
            fields: Box::leak(fields.into_boxed_slice()),
        }));
        kinds.push(kind);
        Ok(kind)
    }

    /// The kind's name, e.g. `http.request`.
    pub fn name(&self) -> &'static str {
        self.name
    }

    /// The declared field names, in order.
    pub fn fields(&self) -> &'static [&'static str] {
        self.fields
    }

    /// The position of field `name`.
    #[inline(always)]
    pub fn field_index(&self, name: &str) -> Option<usize> {
        self.fields
            .iter()
            .position(|f| (f.as_ptr() == name.as_ptr() && f.len() == name.len()) || *f == name)
    }

    /// An event of this kind with no fields set.
    #[inline(always)]
    pub fn event(&'static self) -> Event {
        Event {
            kind: self,
            tags: [Tag::Absent; MAX_FIELDS],
            values: [0; MAX_FIELDS],
            text_len: 0,
            truncated: false,
            invalid: false,
            text: [0; MAX_EVENT_TEXT],
        }
    }
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[repr(u8)]
enum Tag {
    Absent,
    Int,
    Float,
    Str,
}

/// One event: a kind and up to [`MAX_FIELDS`] values, stored inline.
#[derive(Clone, Copy)]
pub struct Event {
    kind: &'static EventKind,
    tags: [Tag; MAX_FIELDS],
    /// Int: the i64's bits; Float: the f64's bits; Str: `start << 16 | len`.
    values: [u64; MAX_FIELDS],
    text_len: u16,
    truncated: bool,
    invalid: bool,
    text: [u8; MAX_EVENT_TEXT],
}

/// A field value read back from an [`Event`].
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum Value<'a> {
    /// An integer (booleans are 0 or 1).
    Int(i64),
    /// A float.
    Float(f64),
    /// A string, possibly cut to fit the event.
    Str(&'a str),
}

impl Event {
    /// Sets integer field `name`.
    #[inline(always)]
    #[must_use]
    pub fn int(mut self, name: &str, value: i64) -> Event {
        if let Some(i) = self.slot(name) {
            self.tags[i] = Tag::Int;
            self.values[i] = value as u64;
        }
        self
    }

    /// Sets boolean field `name`, delivered as the integer 0 or 1.
    #[inline(always)]
    #[must_use]
    pub fn bool(self, name: &str, value: bool) -> Event {
        self.int(name, i64::from(value))
    }

    /// Sets float field `name`.
    #[inline(always)]
    #[must_use]
    pub fn float(mut self, name: &str, value: f64) -> Event {
        if let Some(i) = self.slot(name) {
            self.tags[i] = Tag::Float;
            self.values[i] = value.to_bits();
        }
        self
    }

    /// Sets string field `name`, cut to the room left in the event.
    #[inline(always)]
    #[must_use]
    pub fn str(mut self, name: &str, value: &str) -> Event {
        if let Some(i) = self.slot(name) {
            let start = usize::from(self.text_len);
            let room = MAX_EVENT_TEXT - start;
            let mut len = value.len().min(room);
            if len < value.len() {
                self.truncated = true;
                while !value.is_char_boundary(len) {
                    len -= 1;
                }
            }
            self.text[start..start + len].copy_from_slice(&value.as_bytes()[..len]);
            // Fits a u16: MAX_EVENT_TEXT is 256.
            self.text_len = (start + len) as u16;
            self.tags[i] = Tag::Str;
            self.values[i] = ((start as u64) << 16) | len as u64;
        }
        self
    }

    #[inline(always)]
    fn slot(&mut self, name: &str) -> Option<usize> {
        let slot = self.kind.field_index(name);
        self.invalid |= slot.is_none();
        slot
    }

    /// The event's kind.
    pub fn kind(&self) -> &'static EventKind {
        self.kind
    }

    /// The value of the field at `index` in the kind's field list.
    #[inline]
    pub fn get(&self, index: usize) -> Option<Value<'_>> {
        let v = *self.values.get(index)?;
        match self.tags[index] {
            Tag::Absent => None,
            Tag::Int => Some(Value::Int(v as i64)),
            Tag::Float => Some(Value::Float(f64::from_bits(v))),
            Tag::Str => {
                let start = (v >> 16) as usize;
                let len = (v & 0xffff) as usize;
                // Written from a &str and cut at a char boundary.
                std::str::from_utf8(&self.text[start..start + len]).ok().map(Value::Str)
            }
        }
    }

    /// The value of field `name`.
    pub fn field(&self, name: &str) -> Option<Value<'_>> {
        self.get(self.kind.field_index(name)?)
    }

    /// Whether a string value was cut to fit.
    pub fn is_truncated(&self) -> bool {
        self.truncated
    }

    /// Whether a field name the kind does not declare was set (and ignored).
    pub fn has_invalid_field(&self) -> bool {
        self.invalid
    }
}

impl fmt::Debug for Event {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let mut m = f.debug_map();
        m.entry(&"kind", &self.kind.name);
        for (i, name) in self.kind.fields.iter().enumerate() {
            if let Some(v) = self.get(i) {
                m.entry(name, &v);
            }
        }
        m.finish()
    }
}

/// Turns events read from a file into [`Event`]s: one interned kind per
/// event kind, whose fields are every field name that kind uses in `records`.
pub fn events_from_records(records: &[EventRecord]) -> Result<Vec<Event>, Error> {
    let mut names: BTreeMap<&str, BTreeSet<&str>> = BTreeMap::new();
    for r in records {
        names.entry(&r.kind).or_default().extend(r.fields.keys().map(String::as_str));
    }
    let mut kinds = BTreeMap::new();
    for (kind, fields) in &names {
        let fields: Vec<&str> = fields.iter().copied().collect();
        kinds.insert(*kind, EventKind::intern(kind, &fields)?);
    }
    Ok(records
        .iter()
        .map(|r| {
            let kind = kinds[r.kind.as_str()];
            r.fields.iter().fold(kind.event(), |e, (k, v)| match v {
                FieldValue::Int(i) => e.int(k, *i),
                FieldValue::Float(x) => e.float(k, *x),
                FieldValue::Str(s) => e.str(k, s),
                FieldValue::Bool(b) => e.bool(k, *b),
            })
        })
        .collect())
}

#[cfg(test)]
mod tests {
    use super::*;

    static K: EventKind = EventKind::new("k", &["a", "b", "c"]);

    #[test]
    fn values_read_back_as_written() {
        let e = K.event().int("a", -5).str("b", "héllo").float("c", 2.5);
        assert_eq!(e.field("a"), Some(Value::Int(-5)));
        assert_eq!(e.field("b"), Some(Value::Str("héllo")));
        assert_eq!(e.field("c"), Some(Value::Float(2.5)));
        assert!(!e.is_truncated() && !e.has_invalid_field());
    }

    #[test]
    fn long_strings_are_cut_at_a_char_boundary_and_flagged() {
        let long = "é".repeat(200); // 400 bytes
        let e = K.event().str("a", &long).str("b", "x");
        let Some(Value::Str(a)) = e.field("a") else { panic!("a is a string") };
        assert_eq!(a.len(), MAX_EVENT_TEXT);
        assert_eq!(e.field("b"), Some(Value::Str("")));
        assert!(e.is_truncated());
    }

    #[test]
    fn undeclared_fields_are_flagged_not_stored() {
        let e = K.event().int("zzz", 1);
        assert!(e.has_invalid_field());
        assert_eq!(e.field("zzz"), None);
    }

    #[test]
    fn an_event_slot_stays_small() {
        assert!(std::mem::size_of::<Event>() <= 344, "{}", std::mem::size_of::<Event>());
    }

    #[test]
    fn interned_kinds_are_shared() {
        let a = EventKind::intern("dyn.kind", &["x"]).expect("room");
        let b = EventKind::intern("dyn.kind", &["x"]).expect("room");
        assert!(std::ptr::eq(a, b));
        assert!(
            EventKind::intern("dyn.kind", &["1", "2", "3", "4", "5", "6", "7", "8", "9"]).is_err()
        );
    }
}
