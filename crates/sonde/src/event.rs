//! Events: what `record()` takes, and the slots it writes them into.
//!
//! An [`Event`] is a small value built on the caller's stack: a kind, and up
//! to [`MAX_FIELDS`] integers, floats or borrowed strings. It never
//! allocates. `record()` writes it straight into a preallocated ring slot
//! ([`Slot`]), copying only the fields that are set and the string bytes,
//! which all strings of one event share: [`MAX_EVENT_TEXT`] bytes. A string
//! that does not fit is cut at a character boundary and the event is counted
//! as truncated; a field name the kind does not declare is counted as
//! invalid and ignored.

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
/// // Record in one expression: `telemetry.record(HTTP.event().str(..).int(..))`,
/// // or bind the event first and set fields on it:
/// let mut event = HTTP.event();
/// event.str("method", "GET").int("status", 200);
/// assert_eq!(event.kind().name(), "http.request");
/// ```
#[derive(Debug)]
pub struct EventKind {
    name: &'static str,
    fields: &'static [&'static str],
    /// [`name_key`] of each field: finding a field by name compares two
    /// words per field instead of strings.
    keys: [NameKey; MAX_FIELDS],
}

/// A field name's first 15 bytes and its length, as two words: equal keys
/// mean equal names for names up to 15 bytes (longer ones are compared in
/// full after their keys match).
type NameKey = [u64; 2];

/// Names longer than this are compared in full when their keys match.
const KEY_BYTES: usize = 15;

/// The [`NameKey`] of `name`. For a literal name this folds to a constant.
#[inline(always)]
const fn name_key(name: &str) -> NameKey {
    let b = name.as_bytes();
    let mut key = [0u64; 2];
    let mut i = 0;
    while i < b.len() && i < KEY_BYTES {
        key[i / 8] |= (b[i] as u64) << ((i % 8) * 8);
        i += 1;
    }
    // The length goes in the last byte (saturated: longer names are
    // compared in full anyway).
    let len = if b.len() > 255 { 255 } else { b.len() as u64 };
    key[1] |= len << 56;
    key
}

const fn name_keys(fields: &[&str]) -> [NameKey; MAX_FIELDS] {
    let mut keys = [[0; 2]; MAX_FIELDS];
    let mut i = 0;
    while i < fields.len() {
        keys[i] = name_key(fields[i]);
        i += 1;
    }
    keys
}

impl EventKind {
    /// Declares a kind. Panics at compile time (in a `static`) with more than
    /// [`MAX_FIELDS`] fields.
    pub const fn new(name: &'static str, fields: &'static [&'static str]) -> EventKind {
        assert!(fields.len() <= MAX_FIELDS, "an event kind has at most MAX_FIELDS fields");
        EventKind { name, fields, keys: name_keys(fields) }
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
        let fields: &'static [&'static str] = Box::leak(fields.into_boxed_slice());
        let kind: &'static EventKind =
            Box::leak(Box::new(EventKind { name: leak(name), fields, keys: name_keys(fields) }));
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
        let key = name_key(name);
        let i = self.keys[..self.fields.len()].iter().position(|k| *k == key)?;
        if name.len() <= KEY_BYTES || self.fields[i] == name {
            return Some(i);
        }
        // Same first 15 bytes and length, different name: look on.
        self.fields.iter().position(|f| *f == name)
    }

    /// An event of this kind with no fields set. Set them in place, then
    /// pass it to `record()`:
    ///
    /// ```
    /// # use sonde::EventKind;
    /// # static HTTP: EventKind = EventKind::new("http.request", &["method", "status"]);
    /// let mut event = HTTP.event();
    /// event.str("method", "GET").int("status", 200);
    /// ```
    #[inline(always)]
    pub fn event<'a>(&'static self) -> Event<'a> {
        Event {
            kind: self,
            tags: [Tag::Absent; MAX_FIELDS],
            bits: [0; MAX_FIELDS],
            strs: [""; MAX_FIELDS],
            str_set: 0,
            invalid: false,
        }
    }
}

/// The kind nothing is recorded as: what an unused ring slot holds.
static UNUSED: EventKind = EventKind::new("", &[]);

/// One event: a kind and up to [`MAX_FIELDS`] values. Strings are borrowed
/// until `record()` copies them into the ring.
///
/// The setters work in place (`&mut self`), so building an event on the
/// stack never moves it: a chain of setters costs a few stores.
#[derive(Clone, Copy)]
pub struct Event<'a> {
    kind: &'static EventKind,
    /// Laid out as a [`Slot`]'s, so `record()` copies them as blocks.
    tags: [Tag; MAX_FIELDS],
    /// Int: the i64's bits; Float: the f64's bits; Str: unused.
    bits: [u64; MAX_FIELDS],
    strs: [&'a str; MAX_FIELDS],
    /// Bit `i` is set when field `i` is a string: `record()` copies those.
    str_set: u8,
    invalid: bool,
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

impl<'a> Event<'a> {
    /// Sets integer field `name`.
    #[inline(always)]
    pub fn int(&mut self, name: &str, value: i64) -> &mut Event<'a> {
        self.set(name, Value::Int(value))
    }

    /// Sets boolean field `name`, delivered as the integer 0 or 1.
    #[inline(always)]
    pub fn bool(&mut self, name: &str, value: bool) -> &mut Event<'a> {
        self.int(name, i64::from(value))
    }

    /// Sets float field `name`.
    #[inline(always)]
    pub fn float(&mut self, name: &str, value: f64) -> &mut Event<'a> {
        self.set(name, Value::Float(value))
    }

    /// Sets string field `name`. The string is borrowed until the event is
    /// recorded; there it is cut to the room left in the event.
    #[inline(always)]
    pub fn str(&mut self, name: &str, value: &'a str) -> &mut Event<'a> {
        self.set(name, Value::Str(value))
    }

    #[inline(always)]
    fn set(&mut self, name: &str, value: Value<'a>) -> &mut Event<'a> {
        let Some(i) = self.kind.field_index(name) else {
            self.invalid = true;
            return self;
        };
        (self.tags[i], self.bits[i]) = match value {
            Value::Int(x) => (Tag::Int, x as u64),
            Value::Float(x) => (Tag::Float, x.to_bits()),
            Value::Str(s) => {
                self.strs[i] = s;
                (Tag::Str, 0)
            }
        };
        // A field set twice keeps only its last value, string or not.
        if self.tags[i] == Tag::Str {
            self.str_set |= 1 << i;
        } else {
            self.str_set &= !(1 << i);
        }
        self
    }

    /// The event's kind.
    pub fn kind(&self) -> &'static EventKind {
        self.kind
    }

    /// The value of the field at `index` in the kind's field list, as set
    /// (strings are cut only when recorded).
    #[inline]
    pub fn get(&self, index: usize) -> Option<Value<'a>> {
        let bits = *self.bits.get(index)?;
        match self.tags[index] {
            Tag::Absent => None,
            Tag::Int => Some(Value::Int(bits as i64)),
            Tag::Float => Some(Value::Float(f64::from_bits(bits))),
            Tag::Str => Some(Value::Str(self.strs[index])),
        }
    }

    /// The value of field `name`.
    pub fn field(&self, name: &str) -> Option<Value<'a>> {
        self.get(self.kind.field_index(name)?)
    }

    /// Whether the strings set add up to more than [`MAX_EVENT_TEXT`] bytes,
    /// so that recording will cut them.
    pub fn is_truncated(&self) -> bool {
        let text: usize = (0..MAX_FIELDS)
            .filter(|i| self.str_set & (1 << i) != 0)
            .map(|i| self.strs[i].len())
            .sum();
        text > MAX_EVENT_TEXT
    }

    /// Whether a field name the kind does not declare was set (and ignored).
    pub fn has_invalid_field(&self) -> bool {
        self.invalid
    }
}

impl fmt::Debug for Event<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        debug_fields(f, self.kind, |i| self.get(i))
    }
}

fn debug_fields<'v>(
    f: &mut fmt::Formatter<'_>,
    kind: &EventKind,
    get: impl Fn(usize) -> Option<Value<'v>>,
) -> fmt::Result {
    let mut m = f.debug_map();
    m.entry(&"kind", &kind.name);
    for (i, name) in kind.fields.iter().enumerate() {
        if let Some(v) = get(i) {
            m.entry(name, &v);
        }
    }
    m.finish()
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[repr(u8)]
enum Tag {
    Absent,
    Int,
    Float,
    Str,
}

/// A recorded event, owned: one preallocated ring slot. `record()` writes
/// an [`Event`] into it in place; the dispatcher reads it there.
#[derive(Clone)]
pub(crate) struct Slot {
    kind: &'static EventKind,
    tags: [Tag; MAX_FIELDS],
    /// Int: the i64's bits; Float: the f64's bits; Str: `start << 16 | len`.
    values: [u64; MAX_FIELDS],
    text: [u8; MAX_EVENT_TEXT],
}

impl Default for Slot {
    fn default() -> Slot {
        Slot {
            kind: &UNUSED,
            tags: [Tag::Absent; MAX_FIELDS],
            values: [0; MAX_FIELDS],
            text: [0; MAX_EVENT_TEXT],
        }
    }
}

impl Slot {
    /// A slot holding `event` (`record()` writes in place instead).
    #[cfg(test)]
    pub(crate) fn of(event: &Event<'_>) -> Slot {
        let mut slot = Slot::default();
        slot.write(event);
        slot
    }

    #[cfg(test)]
    fn rewritten(mut self, event: &Event<'_>) -> Slot {
        self.write(event);
        self
    }

    /// Overwrites this slot with `event`, copying only what is set.
    #[inline(always)]
    pub(crate) fn write(&mut self, event: &Event<'_>) -> Written {
        self.kind = event.kind;
        self.tags = event.tags;
        self.values = event.bits;
        let mut used = 0;
        let mut truncated = false;
        let mut strs = event.str_set;
        while strs != 0 {
            let i = strs.trailing_zeros() as usize;
            strs &= strs - 1;
            let s = event.strs[i];
            let mut len = s.len().min(MAX_EVENT_TEXT - used);
            if len < s.len() {
                truncated = true;
                while !s.is_char_boundary(len) {
                    len -= 1;
                }
            }
            self.text[used..used + len].copy_from_slice(&s.as_bytes()[..len]);
            self.values[i] = ((used as u64) << 16) | len as u64;
            used += len;
        }
        Written { truncated, end: std::mem::offset_of!(Slot, text) + used }
    }

    /// The recorded event's kind.
    pub(crate) fn kind(&self) -> &'static EventKind {
        self.kind
    }

    /// The value of the field at `index` in the kind's field list.
    pub(crate) fn get(&self, index: usize) -> Option<Value<'_>> {
        Some(match self.raw(index)? {
            Raw::Int(x) => Value::Int(x),
            Raw::Float(x) => Value::Float(x),
            // Written from a &str and cut at a char boundary.
            Raw::Text(bytes) => Value::Str(std::str::from_utf8(bytes).ok()?),
        })
    }

    /// The bytes of string field `index`; `None` unless it holds a string.
    #[inline]
    pub(crate) fn text(&self, index: usize) -> Option<&[u8]> {
        let v = *self.values.get(index)?;
        if self.tags[index] != Tag::Str {
            return None;
        }
        let start = (v >> 16) as usize;
        self.text.get(start..start + (v & 0xffff) as usize)
    }

    /// The bits of integer field `index`; `None` unless it holds an int.
    #[inline]
    pub(crate) fn int_bits(&self, index: usize) -> Option<u64> {
        let v = *self.values.get(index)?;
        (self.tags[index] == Tag::Int).then_some(v)
    }

    /// The bits of field `index` read as a float (an int converts); `None`
    /// unless it holds a number.
    #[inline]
    pub(crate) fn float_bits(&self, index: usize) -> Option<u64> {
        let v = *self.values.get(index)?;
        match self.tags[index] {
            Tag::Float => Some(v),
            Tag::Int => Some((v as i64 as f64).to_bits()),
            Tag::Absent | Tag::Str => None,
        }
    }

    /// The value of the field at `index`, strings as their bytes: the
    /// dispatcher copies them into batches as bytes, so it skips checking
    /// that they are UTF-8 (they are: written from a `&str`, cut at a char
    /// boundary), which was 4 % of its time.
    #[inline]
    pub(crate) fn raw(&self, index: usize) -> Option<Raw<'_>> {
        let v = *self.values.get(index)?;
        match self.tags[index] {
            Tag::Absent => None,
            Tag::Int => Some(Raw::Int(v as i64)),
            Tag::Float => Some(Raw::Float(f64::from_bits(v))),
            Tag::Str => {
                let start = (v >> 16) as usize;
                let len = (v & 0xffff) as usize;
                self.text.get(start..start + len).map(Raw::Text)
            }
        }
    }
}

/// What [`Slot::write`] did.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Written {
    /// A string was cut to fit.
    pub(crate) truncated: bool,
    /// The slot's bytes from its start to past the last one written.
    pub(crate) end: usize,
}

/// A recorded value as [`Slot::raw`] reads it.
#[derive(Debug, Clone, Copy, PartialEq)]
pub(crate) enum Raw<'a> {
    Int(i64),
    Float(f64),
    /// A string's UTF-8 bytes.
    Text(&'a [u8]),
}

impl fmt::Debug for Slot {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        debug_fields(f, self.kind, |i| self.get(i))
    }
}

/// Turns events read from a file into [`Event`]s: one interned kind per
/// event kind, whose fields are every field name that kind uses in `records`.
pub fn events_from_records(records: &[EventRecord]) -> Result<Vec<Event<'_>>, Error> {
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
            let mut e = kinds[r.kind.as_str()].event();
            for (k, v) in &r.fields {
                match v {
                    FieldValue::Int(i) => e.int(k, *i),
                    FieldValue::Float(x) => e.float(k, *x),
                    FieldValue::Str(s) => e.str(k, s),
                    FieldValue::Bool(b) => e.bool(k, *b),
                };
            }
            e
        })
        .collect())
}

#[cfg(test)]
mod tests {
    use super::*;

    static K: EventKind = EventKind::new("k", &["a", "b", "c"]);

    #[test]
    fn values_read_back_as_written() {
        let e = *K.event().int("a", -5).str("b", "héllo").float("c", 2.5);
        for slot in [Slot::of(&e), Slot::of(K.event().str("a", "x")).rewritten(&e)] {
            assert_eq!(slot.get(0), Some(Value::Int(-5)));
            assert_eq!(slot.get(1), Some(Value::Str("héllo")));
            assert_eq!(slot.get(2), Some(Value::Float(2.5)));
        }
        assert_eq!(e.field("b"), Some(Value::Str("héllo")));
        assert!(!e.is_truncated() && !e.has_invalid_field());
    }

    #[test]
    fn long_strings_are_cut_at_a_char_boundary_and_flagged() {
        let long = "é".repeat(200); // 400 bytes
        let e = *K.event().str("a", &long).str("b", "x");
        assert!(e.is_truncated());
        let mut slot = Slot::default();
        assert!(slot.write(&e).truncated);
        let Some(Value::Str(a)) = slot.get(0) else { panic!("a is a string") };
        assert_eq!(a.len(), MAX_EVENT_TEXT);
        assert_eq!(slot.get(1), Some(Value::Str("")));
        assert!(!slot.write(K.event().str("a", "short")).truncated);
    }

    #[test]
    fn a_field_set_twice_keeps_its_last_value() {
        let mut e = K.event();
        e.str("a", "gone").int("a", 7).int("b", 1).str("b", "kept");
        let slot = Slot::of(&e);
        assert_eq!((slot.get(0), slot.get(1)), (Some(Value::Int(7)), Some(Value::Str("kept"))));
        assert_eq!(e.get(0), Some(Value::Int(7)));
    }

    #[test]
    fn undeclared_fields_are_flagged_not_stored() {
        let e = *K.event().int("zzz", 1);
        assert!(e.has_invalid_field());
        assert_eq!(e.field("zzz"), None);
        let slot = Slot::of(&e);
        assert_eq!((0..3).filter_map(|i| slot.get(i)).count(), 0);
    }

    #[test]
    fn a_slot_stays_small() {
        assert!(std::mem::size_of::<Slot>() <= 344, "{}", std::mem::size_of::<Slot>());
    }

    #[test]
    fn fields_are_found_by_name_whatever_their_length() {
        static LONG: EventKind = EventKind::new(
            "long",
            &["a", "abcdefghijklmno_one", "abcdefghijklmno_two", "abcdefghijklmnop", "é"],
        );
        let index = |name: &str| LONG.field_index(name);
        assert_eq!(index("a"), Some(0));
        assert_eq!(index("abcdefghijklmno_two"), Some(2));
        assert_eq!(index("abcdefghijklmno_one"), Some(1));
        assert_eq!(index("abcdefghijklmnop"), Some(3));
        assert_eq!(index(&String::from("é")), Some(4));
        for absent in ["", "b", "abcdefghijklmno_", "abcdefghijklmno_three", "abcdefghijklmnoq"] {
            assert_eq!(index(absent), None, "{absent}");
        }
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
