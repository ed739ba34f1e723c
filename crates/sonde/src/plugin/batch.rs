//! Column builders: events in, one columnar `event-batch` out.
//!
//! A builder belongs to one (plugin, declared event kind). Its vectors keep
//! their capacity between batches, so steady-state dispatch allocates
//! nothing. Strings are dictionary-encoded per batch (see `wit/`).

use std::collections::HashMap;
use std::hash::{BuildHasherDefault, Hasher};

use crate::bindings::{Column, ColumnData, EventBatch, FieldType, StrColumn};
use crate::event::{Raw, Slot};

/// Events per batch. Large enough that the fixed cost of a call (~200 ns)
/// is noise per event, small enough that a batch's columns stay in cache.
pub(crate) const BATCH_SIZE: usize = 1024;

/// The code of a missing string (see `wit/collector.wit`).
const MISSING_CODE: u32 = u32::MAX;

/// The keys are already hashes of the string, so hash them as is.
#[derive(Default)]
struct PassThrough(u64);

impl Hasher for PassThrough {
    fn finish(&self) -> u64 {
        self.0
    }
    fn write(&mut self, bytes: &[u8]) {
        for &b in bytes {
            self.0 = (self.0 << 8) | u64::from(b);
        }
    }
    fn write_u64(&mut self, n: u64) {
        self.0 = n;
    }
}

/// The dictionary key of a string: Fx hashes eight bytes a step (user
/// agents run to 140 bytes, and every string of every event is hashed once
/// per subscribed column).
fn hash(bytes: &[u8]) -> u64 {
    use std::hash::BuildHasher;
    rustc_hash::FxBuildHasher.hash_one(bytes)
}

/// Slots of the cache in front of a column's dictionary: 32. A value may
/// sit in either of two slots, so a few values (the usual batch) rarely
/// evict each other: with one slot of 16, the benchmark's three to four
/// values per column collided often enough that 1.2 of the three lookups
/// per event missed.
const RECENT_BITS: u32 = 5;
const RECENT: usize = 1 << RECENT_BITS;

/// A string column's dictionary: full-hash map from value to code, and in
/// front of it a small cache of recent values indexed by a cheap fingerprint
/// of their [`Words`]. A batch usually holds a few distinct values per
/// column, so most lookups end in the cache: a string of up to 16 bytes is
/// identified by its words alone, a longer one with one compare, instead of
/// hashing every byte and probing the map. A value has two candidate
/// slots, each holding one value, so crafted strings that share fingerprints
/// cost at most two compares before the map.
#[derive(Default)]
struct Dict {
    map: HashMap<u64, u32, BuildHasherDefault<PassThrough>>,
    recent: [Recent; RECENT],
}

/// A cache slot: the words of the value last seen with this fingerprint,
/// and its code + 1 (0: empty).
#[derive(Default, Clone, Copy)]
struct Recent {
    words: Words,
    code: u32,
}

impl Dict {
    fn clear(&mut self) {
        self.map.clear();
        self.recent = [Recent::default(); RECENT];
    }
}

/// A string's length and two words that, for strings of up to 16 bytes,
/// hold every byte (so equal words and lengths mean equal strings), and
/// for longer ones their first and last eight bytes.
#[derive(Default, Clone, Copy, PartialEq, Eq)]
struct Words {
    len: u64,
    head: u64,
    tail: u64,
}

/// Strings up to this long are identified by their [`Words`] alone.
const WORDS_COVER: usize = 16;

impl Words {
    fn of(value: &[u8]) -> Words {
        let n = value.len();
        let (head, tail) = match n {
            8.. => (load8(value, 0), load8(value, n - 8)),
            // Two overlapping four-byte loads cover every byte.
            4..8 => (load4(value, 0) | load4(value, n - 4) << 32, 0),
            1..4 => {
                let b = |i: usize| u64::from(value[i]);
                (b(0) | b(n / 2) << 8 | b(n - 1) << 16, 0)
            }
            0 => (0, 0),
        };
        Words { len: n as u64, head, tail }
    }

    /// The two cache slots the value may sit in: length, head and tail
    /// mixed by one multiplication (user agents share their first bytes,
    /// `Mozilla/5.0`, and differ at the end), then two sets of its top bits.
    fn slots(&self) -> [usize; 2] {
        let mixed =
            (self.head ^ self.tail.rotate_left(29) ^ self.len).wrapping_mul(0x9E37_79B9_7F4A_7C15);
        let top = |shift: u32| (mixed >> (64 - RECENT_BITS - shift)) as usize % RECENT;
        [top(0), top(RECENT_BITS)]
    }
}

fn load8(bytes: &[u8], at: usize) -> u64 {
    u64::from_le_bytes(bytes[at..at + 8].try_into().expect("eight bytes"))
}

fn load4(bytes: &[u8], at: usize) -> u64 {
    u64::from(u32::from_le_bytes(bytes[at..at + 4].try_into().expect("four bytes")))
}

pub(crate) struct BatchBuilder {
    batch: EventBatch,
    dicts: Vec<Dict>,
}

impl BatchBuilder {
    /// A builder for declared kind `kind` whose fields have `types`.
    pub(crate) fn new(kind: u32, types: &[FieldType]) -> BatchBuilder {
        let columns = types
            .iter()
            .map(|t| Column {
                data: match t {
                    FieldType::Int => ColumnData::Int(Vec::new()),
                    FieldType::Float => ColumnData::Float(Vec::new()),
                    FieldType::Str => ColumnData::Str(StrColumn {
                        dict_bytes: Vec::new(),
                        dict_ends: Vec::new(),
                        codes: Vec::new(),
                    }),
                },
                missing: Vec::new(),
            })
            .collect();
        BatchBuilder {
            batch: EventBatch { kind, len: 0, columns },
            dicts: types.iter().map(|_| Dict::default()).collect(),
        }
    }

    pub(crate) fn len(&self) -> usize {
        self.batch.len as usize
    }

    /// Appends `event`; `fields[i]` is the event-kind field index of declared
    /// column `i`, if the event kind has it.
    pub(crate) fn push(&mut self, event: &Slot, fields: &[Option<u8>]) {
        let row = self.batch.len;
        for ((column, dict), field) in
            self.batch.columns.iter_mut().zip(&mut self.dicts).zip(fields)
        {
            let value = field.and_then(|i| event.raw(usize::from(i)));
            match (&mut column.data, value) {
                (ColumnData::Int(v), Some(Raw::Int(x))) => v.push(x),
                (ColumnData::Int(v), _) => {
                    v.push(0);
                    column.missing.push(row);
                }
                (ColumnData::Float(v), Some(Raw::Float(x))) => v.push(x),
                (ColumnData::Float(v), Some(Raw::Int(x))) => v.push(x as f64),
                (ColumnData::Float(v), _) => {
                    v.push(0.0);
                    column.missing.push(row);
                }
                (ColumnData::Str(s), Some(Raw::Text(x))) => {
                    let code = intern(s, dict, x);
                    s.codes.push(code);
                }
                (ColumnData::Str(s), _) => s.codes.push(MISSING_CODE),
            }
        }
        self.batch.len += 1;
    }

    /// The batch built so far.
    pub(crate) fn batch(&self) -> &EventBatch {
        &self.batch
    }

    /// Empties the builder, keeping its allocations.
    pub(crate) fn clear(&mut self) {
        self.batch.len = 0;
        for (column, dict) in self.batch.columns.iter_mut().zip(&mut self.dicts) {
            column.missing.clear();
            dict.clear();
            match &mut column.data {
                ColumnData::Int(v) => v.clear(),
                ColumnData::Float(v) => v.clear(),
                ColumnData::Str(s) => {
                    s.dict_bytes.clear();
                    s.dict_ends.clear();
                    s.codes.clear();
                }
            }
        }
    }
}

/// The dictionary code of `value` in `column`, adding it if new. On the
/// (rare) hash collision with a different string, a second entry is added:
/// codes stay correct, the dictionary just holds one more value.
fn intern(column: &mut StrColumn, dict: &mut Dict, value: &[u8]) -> u32 {
    let words = Words::of(value);
    let slots = words.slots();
    for slot in slots {
        let recent = dict.recent[slot];
        if recent.code != 0
            && recent.words == words
            && (value.len() <= WORDS_COVER || is_entry(column, recent.code - 1, value))
        {
            return recent.code - 1;
        }
    }
    let code = lookup(column, &mut dict.map, value);
    // The first slot unless it is taken and the second is free.
    let slot = if dict.recent[slots[0]].code != 0 && dict.recent[slots[1]].code == 0 {
        slots[1]
    } else {
        slots[0]
    };
    dict.recent[slot] = Recent { words, code: code + 1 };
    code
}

/// The dictionary code of `value` by its full hash, adding it if new.
fn lookup(
    column: &mut StrColumn,
    map: &mut HashMap<u64, u32, BuildHasherDefault<PassThrough>>,
    value: &[u8],
) -> u32 {
    let hash = hash(value);
    if let Some(&code) = map.get(&hash)
        && entry(column, code) == value
    {
        return code;
    }
    // At most BATCH_SIZE values of at most MAX_EVENT_TEXT bytes: fits a u32
    // (and so does code + 1).
    let code = column.dict_ends.len() as u32;
    column.dict_bytes.extend_from_slice(value);
    column.dict_ends.push(column.dict_bytes.len() as u32);
    map.insert(hash, code);
    code
}

/// Whether dictionary entry `code` is `value`. Out of line: inlined, its
/// loads of the dictionary were hoisted into every lookup (callgrind,
/// `dispatch_count`: 31 more instructions per event with repeating events).
#[inline(never)]
fn is_entry(column: &StrColumn, code: u32, value: &[u8]) -> bool {
    entry(column, code) == value
}

/// The bytes of dictionary entry `code`.
fn entry(column: &StrColumn, code: u32) -> &[u8] {
    let code = code as usize;
    let end = column.dict_ends[code] as usize;
    let start = if code == 0 { 0 } else { column.dict_ends[code - 1] as usize };
    &column.dict_bytes[start..end]
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::event::{Event, EventKind};

    fn slot(event: &Event<'_>) -> Slot {
        Slot::of(event)
    }

    static K: EventKind = EventKind::new("k", &["s", "n", "f"]);

    #[test]
    fn strings_are_dictionary_encoded_and_missing_values_listed() {
        let mut b = BatchBuilder::new(0, &[FieldType::Str, FieldType::Int, FieldType::Float]);
        let map = [Some(0), Some(1), Some(2)];
        b.push(&slot(K.event().str("s", "GET").int("n", 7).int("f", 2)), &map);
        b.push(&slot(K.event().str("s", "POST")), &map);
        b.push(&slot(K.event().str("s", "GET").str("n", "oops").float("f", 0.5)), &map);
        let batch = b.batch();
        assert_eq!(batch.len, 3);
        let ColumnData::Str(s) = &batch.columns[0].data else { panic!("str column") };
        assert_eq!(s.dict_bytes, b"GETPOST");
        assert_eq!(s.dict_ends, vec![3, 7]);
        assert_eq!(s.codes, vec![0, 1, 0]);
        let ColumnData::Int(n) = &batch.columns[1].data else { panic!("int column") };
        assert_eq!(n, &vec![7, 0, 0]);
        assert_eq!(batch.columns[1].missing, vec![1, 2]);
        let ColumnData::Float(f) = &batch.columns[2].data else { panic!("float column") };
        assert_eq!(f, &vec![2.0, 0.0, 0.5]);
        assert_eq!(batch.columns[2].missing, vec![1]);
        b.clear();
        assert_eq!(b.len(), 0);
        b.push(&slot(K.event().str("s", "PUT")), &map);
        let ColumnData::Str(s) = &b.batch().columns[0].data else { panic!("str column") };
        assert_eq!((s.dict_bytes.as_slice(), s.codes.as_slice()), (&b"PUT"[..], &[0][..]));
    }

    #[test]
    fn every_value_keeps_one_code_when_more_values_than_cache_slots_alternate() {
        let mut b = BatchBuilder::new(0, &[FieldType::Str]);
        let map = [Some(0)];
        // 100 values (so cache slots are shared), short and long, some
        // differing only in the middle, in three interleaved passes.
        let values: Vec<String> = (0..100)
            .map(|i| match i % 3 {
                0 => format!("{i}"),
                1 => format!("Mozilla/5.0 ({i}) Firefox/120.0"),
                _ => format!("Mozilla/5.0 (X11; Linux x86_64; rv:{i:03}) Gecko/20100101"),
            })
            .collect();
        let order: Vec<usize> = (0..300).map(|k| (k * 37) % 100).collect();
        for &i in &order {
            b.push(&slot(K.event().str("s", &values[i])), &map);
        }
        let ColumnData::Str(s) = &b.batch().columns[0].data else { panic!("str column") };
        assert_eq!(s.dict_ends.len(), 100, "one entry per distinct value");
        for (row, &i) in order.iter().enumerate() {
            let code = s.codes[row] as usize;
            let end = s.dict_ends[code] as usize;
            let start = if code == 0 { 0 } else { s.dict_ends[code - 1] as usize };
            assert_eq!(&s.dict_bytes[start..end], values[i].as_bytes(), "row {row}");
        }
    }

    #[test]
    fn strings_up_to_sixteen_bytes_are_identified_by_their_words() {
        // Every string over a small alphabet up to 4 bytes, and strings of
        // 5 to 16 bytes differing in one byte at each position: no two
        // share words (lengths included).
        let mut seen = HashMap::new();
        let mut check = |v: Vec<u8>| {
            let w = Words::of(&v);
            if let Some(other) = seen.insert((w.len, w.head, w.tail), v.clone()) {
                assert_eq!(other, v, "two strings share words");
            }
        };
        let alphabet = [0u8, 1, b'a', 0xff];
        for n in 0..=4u32 {
            for k in 0..alphabet.len().pow(n) {
                check(
                    (0..n).map(|i| alphabet[k / alphabet.len().pow(i) % alphabet.len()]).collect(),
                );
            }
        }
        for n in 5..=WORDS_COVER {
            for at in 0..n {
                for b in [0u8, 1, 0x80] {
                    let mut v = vec![b'x'; n];
                    v[at] = b;
                    check(v);
                }
            }
        }
    }

    #[test]
    fn a_field_the_event_kind_lacks_is_missing() {
        let mut b = BatchBuilder::new(0, &[FieldType::Str]);
        b.push(&slot(K.event().str("s", "x")), &[None]);
        let ColumnData::Str(s) = &b.batch().columns[0].data else { panic!("str column") };
        assert_eq!(s.codes, vec![MISSING_CODE]);
    }
}
