//! Batches: events in, one columnar `event-batch` per subscription out.
//!
//! A [`KindBatch`] belongs to one event kind: every event of that kind is
//! taken apart once into the columns that any subscribed plugin declared
//! (the union), strings dictionary-encoded once. When it is full, each
//! subscription's [`View`] builds that plugin's batch from it: only the
//! columns the plugin declared, and identical rows over those columns
//! merged into one weighted row (`event-batch.weights`, see `wit/`), so a
//! plugin reading low-cardinality fields works per distinct value. Every
//! vector keeps its capacity between batches: steady-state dispatch
//! allocates nothing.

use std::collections::HashMap;
use std::hash::{BuildHasherDefault, Hasher};

use crate::bindings::{Column, ColumnData, EventBatch, FieldType, StrColumn};
use crate::event::MAX_FIELDS;
use crate::event::Slot;

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

/// A string column's dictionary: the values (concatenated, with end
/// offsets, as the WIT carries them), a full-hash map from value to code, and in
/// front of it a small cache of recent values indexed by a cheap fingerprint
/// of their [`Words`]. A batch usually holds a few distinct values per
/// column, so most lookups end in the cache: a string of up to 16 bytes is
/// identified by its words alone, a longer one with one compare, instead of
/// hashing every byte and probing the map. A value has two candidate
/// slots, each holding one value, so crafted strings that share fingerprints
/// cost at most two compares before the map.
#[derive(Default)]
struct Dict {
    bytes: Vec<u8>,
    ends: Vec<u32>,
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
        self.bytes.clear();
        self.ends.clear();
        self.map.clear();
        self.recent = [Recent::default(); RECENT];
    }

    /// The code of `value`, adding it if new.
    fn intern(&mut self, value: &[u8]) -> u32 {
        let words = Words::of(value);
        let slots = words.slots();
        for slot in slots {
            let recent = self.recent[slot];
            if recent.code != 0
                && recent.words == words
                && (value.len() <= WORDS_COVER || self.is_entry(recent.code - 1, value))
            {
                return recent.code - 1;
            }
        }
        let code = self.lookup(value);
        // The first slot unless it is taken and the second is free.
        let slot = if self.recent[slots[0]].code != 0 && self.recent[slots[1]].code == 0 {
            slots[1]
        } else {
            slots[0]
        };
        self.recent[slot] = Recent { words, code: code + 1 };
        code
    }

    /// The code of `value` by its full hash, adding it if new. On the (rare)
    /// hash collision with a different string, a second entry is added:
    /// codes stay correct, the dictionary just holds one more value.
    fn lookup(&mut self, value: &[u8]) -> u32 {
        let hash = hash(value);
        if let Some(&code) = self.map.get(&hash)
            && self.entry(code) == value
        {
            return code;
        }
        // At most BATCH_SIZE values of at most MAX_EVENT_TEXT bytes: fits a
        // u32 (and so does code + 1).
        let code = self.ends.len() as u32;
        self.bytes.extend_from_slice(value);
        self.ends.push(self.bytes.len() as u32);
        self.map.insert(hash, code);
        code
    }

    /// Whether entry `code` is `value`. Out of line: inlined, its loads of
    /// the dictionary were hoisted into every lookup (callgrind,
    /// `dispatch_count`: 31 more instructions per event with repeating
    /// events).
    #[inline(never)]
    fn is_entry(&self, code: u32, value: &[u8]) -> bool {
        self.entry(code) == value
    }

    /// The bytes of entry `code`.
    fn entry(&self, code: u32) -> &[u8] {
        let code = code as usize;
        let end = self.ends[code] as usize;
        let start = if code == 0 { 0 } else { self.ends[code - 1] as usize };
        &self.bytes[start..end]
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

/// Union columns of one kind: one per (field, type) some subscription
/// declared. Every key there can be fits: `MAX_FIELDS` fields and the
/// fields the kind lacks (one key, `None`), each in three types; so a
/// row's missing columns fit a `u32` mask.
const MAX_UNION: usize = 3 * (MAX_FIELDS + 1);
const _: () = assert!(MAX_UNION <= 32);

/// One union column: the field's index in the event kind (`None` when the
/// kind has no such field: every row misses it), the type it is read as,
/// and one value per row as 64 bits (an int's or float's bits, a string's
/// dictionary code), so rows compare and hash alike whatever the type.
struct UnionColumn {
    field: Option<u8>,
    ty: FieldType,
    /// How [`KindBatch::push`] reads it, decided once.
    read: Read,
    values: Vec<u64>,
    /// String columns only.
    dict: Dict,
}

/// What a union column takes from a slot: field `usize` as a string, an
/// int or a float, or nothing (the kind has no such field).
#[derive(Clone, Copy)]
enum Read {
    Str(usize),
    Int(usize),
    Float(usize),
    Absent,
}

/// The events of one kind since the last delivery, in the union of the
/// columns its subscriptions declared.
pub(crate) struct KindBatch {
    len: usize,
    columns: Vec<UnionColumn>,
    /// Per row: bit `c` set when the row lacks union column `c`.
    missing: Vec<u32>,
    /// The union of `missing`.
    any_missing: u32,
}

/// A union column's key: the field's index in the kind and its type.
pub(crate) type ColumnKey = (Option<u8>, FieldType);

impl KindBatch {
    /// An empty batch with no columns.
    pub(crate) fn new() -> KindBatch {
        KindBatch { len: 0, columns: Vec::new(), missing: Vec::new(), any_missing: 0 }
    }

    /// The union column for `key`, added if new; `None` past
    /// [`MAX_UNION`] (cannot happen: that is every key a kind has).
    pub(crate) fn column(&mut self, key: ColumnKey) -> Option<u8> {
        if let Some(c) = self.columns.iter().position(|c| (c.field, c.ty) == key) {
            return Some(c as u8);
        }
        if self.columns.len() >= MAX_UNION {
            return None;
        }
        let read = match key {
            (Some(i), FieldType::Str) => Read::Str(usize::from(i)),
            (Some(i), FieldType::Int) => Read::Int(usize::from(i)),
            (Some(i), FieldType::Float) => Read::Float(usize::from(i)),
            (None, _) => Read::Absent,
        };
        self.columns.push(UnionColumn {
            field: key.0,
            ty: key.1,
            read,
            values: Vec::with_capacity(BATCH_SIZE),
            dict: Dict::default(),
        });
        self.missing.reserve(BATCH_SIZE);
        Some((self.columns.len() - 1) as u8)
    }

    /// Events in the batch.
    pub(crate) fn len(&self) -> usize {
        self.len
    }

    /// Appends `event`: each union column's value, strings interned.
    pub(crate) fn push(&mut self, event: &Slot) {
        let mut missing = 0u32;
        for (c, column) in self.columns.iter_mut().enumerate() {
            let bits = match column.read {
                Read::Str(i) => event.text(i).map(|x| u64::from(column.dict.intern(x))),
                Read::Int(i) => event.int_bits(i),
                Read::Float(i) => event.float_bits(i),
                Read::Absent => None,
            };
            column.values.push(bits.unwrap_or_else(|| {
                missing |= 1 << c;
                // Strings mark a missing value by its code.
                if column.ty == FieldType::Str { u64::from(MISSING_CODE) } else { 0 }
            }));
        }
        self.missing.push(missing);
        self.any_missing |= missing;
        self.len += 1;
    }

    /// Empties the batch, keeping its allocations.
    pub(crate) fn clear(&mut self) {
        self.len = 0;
        self.missing.clear();
        self.any_missing = 0;
        for c in &mut self.columns {
            c.values.clear();
            c.dict.clear();
        }
    }
}

/// Rows hashed before a view decides whether merging pays: if more than
/// [`PROBE_DISTINCT`] of the first [`PROBE_ROWS`] rows are distinct, the
/// rest of the batch is copied row for row (a plugin that reads a
/// per-event field, such as a duration, merges nothing and should not pay
/// for hashing every row).
const PROBE_ROWS: usize = 256;
const PROBE_DISTINCT: usize = PROBE_ROWS * 3 / 4;

/// Slots of a view's merge table: twice the rows of a batch, a power of two.
const TABLE: usize = (2 * BATCH_SIZE).next_power_of_two();

/// One subscription's batch, built from its kind's [`KindBatch`]: the
/// columns it declared, identical rows merged.
pub(crate) struct View {
    /// The union column of each declared column.
    columns: Vec<u8>,
    /// The union columns' bits in a row's missing mask.
    bits: u32,
    batch: EventBatch,
    /// Merge table: output row + 1 per slot, 0 for empty (all empty
    /// between builds).
    table: Vec<u32>,
    /// The slots of `table` the current build filled.
    slots: Vec<u32>,
    /// The shared row each merged output row copies.
    rows: Vec<u32>,
    /// Single string column: output row + 1 per dictionary code (the last
    /// entry for a missing string).
    by_code: Vec<u32>,
}

impl View {
    /// A view for declared kind `kind` whose declared columns are the
    /// union columns `columns` of `shared`.
    pub(crate) fn new(kind: u32, columns: Vec<u8>, shared: &KindBatch) -> View {
        let bits = columns.iter().fold(0, |b, &c| b | 1 << c);
        let out = columns
            .iter()
            .map(|&c| Column {
                data: match shared.columns[usize::from(c)].ty {
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
        View {
            columns,
            bits,
            batch: EventBatch { kind, len: 0, columns: out, weights: Vec::new() },
            table: Vec::new(),
            slots: Vec::new(),
            rows: Vec::new(),
            by_code: Vec::new(),
        }
    }

    /// This subscription's batch of the events in `shared`.
    pub(crate) fn build(&mut self, shared: &KindBatch) -> &EventBatch {
        let n = shared.len;
        self.rows.clear();
        self.batch.weights.clear();
        // Rows `0..merged` were merged into `self.rows` (with their
        // weights); rows `merged..n` are copied one for one.
        let merged = match self.columns[..] {
            [] => {
                // Nothing declared: every event is the same row.
                if n > 0 {
                    self.rows.push(0);
                    self.batch.weights.push(n as u32);
                }
                n
            }
            [c] if shared.columns[usize::from(c)].ty == FieldType::Str => {
                self.merge_codes(shared, usize::from(c));
                n
            }
            _ => self.merge_rows(shared),
        };
        if self.rows.len() == merged {
            // Nothing merged: the batch is the shared rows as they are.
            self.rows.clear();
            self.batch.weights.clear();
            self.copy(shared, 0);
        } else {
            self.batch.weights.resize(self.rows.len() + (n - merged), 1);
            self.copy(shared, merged);
        }
        &self.batch
    }

    /// Merges rows by their one string column's code.
    fn merge_codes(&mut self, shared: &KindBatch, c: usize) {
        let column = &shared.columns[c];
        let none = column.dict.ends.len();
        self.by_code.clear();
        self.by_code.resize(none + 1, 0);
        for (row, &code) in column.values[..shared.len].iter().enumerate() {
            let slot = if code == u64::from(MISSING_CODE) { none } else { code as usize };
            match self.by_code.get(slot).copied() {
                Some(0) => {
                    self.rows.push(row as u32);
                    self.batch.weights.push(1);
                    self.by_code[slot] = self.rows.len() as u32;
                }
                Some(out) => self.batch.weights[out as usize - 1] += 1,
                None => unreachable_code(),
            }
        }
    }

    /// Merges rows by all declared columns (values and missing bits), until
    /// the first [`PROBE_ROWS`] rows show that merging does not pay;
    /// returns how many rows were merged.
    fn merge_rows(&mut self, shared: &KindBatch) -> usize {
        if self.table.len() != TABLE {
            self.table = vec![0; TABLE];
        }
        // A fixed number of columns (unused ones read as a column of zeros,
        // the same in every row) lets the compiler unroll the per-row hash
        // and compare: http-status and route-latency declare two.
        let merged = match self.columns.len() {
            ..=2 => self.merge_rows_into_table::<2>(shared),
            3..=4 => self.merge_rows_into_table::<4>(shared),
            _ => self.merge_rows_into_table::<MAX_UNION>(shared),
        };
        // Empty the table again, slot by slot: the rows it took are usually a
        // few dozen of its 2,048 slots.
        for &slot in &self.slots {
            self.table[slot as usize] = 0;
        }
        self.slots.clear();
        merged
    }

    /// [`View::merge_rows`] on an empty table over at most `N` declared
    /// columns, noting each slot it fills in `self.slots`.
    fn merge_rows_into_table<const N: usize>(&mut self, shared: &KindBatch) -> usize {
        static ZEROS: [u64; BATCH_SIZE] = [0; BATCH_SIZE];
        let n = shared.len.min(BATCH_SIZE);
        let values: [&[u64]; N] = std::array::from_fn(|i| {
            self.columns
                .get(i)
                .map_or(&ZEROS[..n], |&c| &shared.columns[usize::from(c)].values[..n])
        });
        let missing_rows = &shared.missing[..n];
        let key_of = |row: usize| missing_rows[row] & self.bits;
        for row in 0..n {
            if row == PROBE_ROWS && self.rows.len() > PROBE_DISTINCT {
                return row;
            }
            let missing = key_of(row);
            let mut h = u64::from(missing);
            for v in values {
                h = (h.rotate_left(5) ^ v[row]).wrapping_mul(0x9E37_79B9_7F4A_7C15);
            }
            let mut slot = (h >> (64 - TABLE.trailing_zeros())) as usize;
            loop {
                let out = self.table[slot];
                if out == 0 {
                    self.rows.push(row as u32);
                    self.batch.weights.push(1);
                    self.table[slot] = self.rows.len() as u32;
                    self.slots.push(slot as u32);
                    break;
                }
                let first = self.rows[out as usize - 1] as usize;
                if key_of(first) == missing && values.iter().all(|v| v[first] == v[row]) {
                    self.batch.weights[out as usize - 1] += 1;
                    break;
                }
                slot = (slot + 1) % TABLE;
            }
        }
        n
    }

    /// Writes the output columns: the rows in `self.rows`, then the shared
    /// rows from `from` on, one for one.
    fn copy(&mut self, shared: &KindBatch, from: usize) {
        let n = shared.len;
        let rows = &self.rows;
        for (out, &c) in self.batch.columns.iter_mut().zip(&self.columns) {
            let column = &shared.columns[usize::from(c)];
            let values = &column.values[..n];
            let picked =
                || rows.iter().map(|&r| values[r as usize]).chain(values[from..].iter().copied());
            match &mut out.data {
                ColumnData::Int(v) => {
                    v.clear();
                    v.extend(picked().map(|b| b as i64));
                }
                ColumnData::Float(v) => {
                    v.clear();
                    v.extend(picked().map(f64::from_bits));
                }
                ColumnData::Str(s) => {
                    s.codes.clear();
                    s.codes.extend(picked().map(|b| b as u32));
                    s.dict_bytes.clear();
                    s.dict_bytes.extend_from_slice(&column.dict.bytes);
                    s.dict_ends.clear();
                    s.dict_ends.extend_from_slice(&column.dict.ends);
                }
            }
            out.missing.clear();
            let bit = 1u32 << c;
            // Strings mark a missing value by its code.
            if shared.any_missing & bit != 0 && column.ty != FieldType::Str {
                let missing = &shared.missing[..n];
                let all = rows.iter().map(|&r| r as usize).chain(from..n);
                for (i, r) in all.enumerate() {
                    if missing[r] & bit != 0 {
                        out.missing.push(i as u32);
                    }
                }
            }
        }
        // At most BATCH_SIZE rows (plus the last push): fits a u32.
        self.batch.len = (rows.len() + (n - from)) as u32;
    }
}

/// A dictionary code past the dictionary: cannot happen (codes are the
/// dictionary's own indices); kept out of the loop.
#[cold]
fn unreachable_code() {
    debug_assert!(false, "a code past its dictionary");
}

#[cfg(test)]
#[allow(clippy::unwrap_used, reason = "tests")]
mod tests {
    use super::*;
    use crate::event::{Event, EventKind};

    fn slot(event: &Event<'_>) -> Slot {
        Slot::of(event)
    }

    static K: EventKind = EventKind::new("k", &["s", "n", "f"]);

    /// A view over `shared` of the fields `fields` (name, type) of `K`.
    fn view(shared: &mut KindBatch, fields: &[(&str, FieldType)]) -> View {
        let columns = fields
            .iter()
            .map(|(f, t)| shared.column((K.field_index(f).map(|i| i as u8), *t)).unwrap())
            .collect();
        View::new(0, columns, shared)
    }

    fn str_column(batch: &EventBatch, c: usize) -> &StrColumn {
        let ColumnData::Str(s) = &batch.columns[c].data else { panic!("str column") };
        s
    }

    /// Row `row` of string column `c`, decoded through the dictionary.
    fn text(batch: &EventBatch, c: usize, row: usize) -> Option<String> {
        let s = str_column(batch, c);
        let code = s.codes[row];
        (code != MISSING_CODE).then(|| {
            let code = code as usize;
            let start = if code == 0 { 0 } else { s.dict_ends[code - 1] as usize };
            String::from_utf8(s.dict_bytes[start..s.dict_ends[code] as usize].to_vec()).unwrap()
        })
    }

    fn weight(batch: &EventBatch, row: usize) -> u32 {
        if batch.weights.is_empty() { 1 } else { batch.weights[row] }
    }

    #[test]
    fn strings_are_dictionary_encoded_and_missing_values_listed() {
        let mut shared = KindBatch::new();
        let mut v = view(
            &mut shared,
            &[("s", FieldType::Str), ("n", FieldType::Int), ("f", FieldType::Float)],
        );
        shared.push(&slot(K.event().str("s", "GET").int("n", 7).int("f", 2)));
        shared.push(&slot(K.event().str("s", "POST")));
        shared.push(&slot(K.event().str("s", "GET").str("n", "oops").float("f", 0.5)));
        let batch = v.build(&shared);
        assert_eq!(batch.len, 3);
        assert!(batch.weights.is_empty(), "three distinct rows: no weights");
        let s = str_column(batch, 0);
        assert_eq!(s.dict_bytes, b"GETPOST");
        assert_eq!(s.dict_ends, vec![3, 7]);
        assert_eq!(s.codes, vec![0, 1, 0]);
        let ColumnData::Int(n) = &batch.columns[1].data else { panic!("int column") };
        assert_eq!(n, &vec![7, 0, 0]);
        assert_eq!(batch.columns[1].missing, vec![1, 2]);
        let ColumnData::Float(f) = &batch.columns[2].data else { panic!("float column") };
        assert_eq!(f, &vec![2.0, 0.0, 0.5]);
        assert_eq!(batch.columns[2].missing, vec![1]);
        shared.clear();
        assert_eq!(shared.len(), 0);
        shared.push(&slot(K.event().str("s", "PUT")));
        let batch = v.build(&shared);
        let s = str_column(batch, 0);
        assert_eq!((s.dict_bytes.as_slice(), s.codes.as_slice()), (&b"PUT"[..], &[0][..]));
        assert_eq!(batch.columns[1].missing, vec![0]);
    }

    #[test]
    fn identical_rows_over_the_declared_fields_become_one_weighted_row() {
        let mut shared = KindBatch::new();
        let mut pair = view(&mut shared, &[("s", FieldType::Str), ("n", FieldType::Int)]);
        let mut one = view(&mut shared, &[("s", FieldType::Str)]);
        let mut none = view(&mut shared, &[]);
        // `n` missing and `n` = 0 are different rows; so are a missing and
        // an empty string.
        let events = [
            *K.event().str("s", "GET").int("n", 200),
            *K.event().str("s", "GET").int("n", 200),
            *K.event().str("s", "POST").int("n", 200),
            *K.event().str("s", "GET"),
            *K.event().str("s", "GET").int("n", 0),
            *K.event().str("s", "GET").int("n", 200).float("f", 1.0),
            *K.event().int("n", 200),
            *K.event().str("s", "").int("n", 200),
            *K.event().str("s", "GET"),
        ];
        for e in &events {
            shared.push(&slot(e));
        }
        let batch = pair.build(&shared);
        let rows: Vec<(Option<String>, Option<i64>, u32)> = (0..batch.len as usize)
            .map(|r| {
                let ColumnData::Int(n) = &batch.columns[1].data else { panic!("int column") };
                let missing = batch.columns[1].missing.contains(&(r as u32));
                (text(batch, 0, r), (!missing).then_some(n[r]), weight(batch, r))
            })
            .collect();
        let get = Some("GET".to_string());
        assert_eq!(
            rows,
            vec![
                (get.clone(), Some(200), 3),
                (Some("POST".into()), Some(200), 1),
                (get.clone(), None, 2),
                (get.clone(), Some(0), 1),
                (None, Some(200), 1),
                (Some(String::new()), Some(200), 1),
            ]
        );
        let batch = one.build(&shared);
        let rows: Vec<_> =
            (0..batch.len as usize).map(|r| (text(batch, 0, r), weight(batch, r))).collect();
        assert_eq!(
            rows,
            vec![(get, 6), (Some("POST".into()), 1), (None, 1), (Some(String::new()), 1)]
        );
        let batch = none.build(&shared);
        assert_eq!((batch.len, batch.weights.clone()), (1, vec![9]));
    }

    /// A tiny xorshift, so the property test is the same on every run.
    fn rng(seed: &mut u64) -> u64 {
        *seed ^= *seed << 13;
        *seed ^= *seed >> 7;
        *seed ^= *seed << 17;
        *seed
    }

    #[test]
    fn every_view_carries_exactly_the_events_of_the_batch() {
        // Random batches of up to BATCH_SIZE events over few or many
        // distinct values; each view's rows, expanded by their weights,
        // are the events' values over its fields, as a multiset.
        let mut seed = 0x5eed_u64;
        for round in 0..40 {
            let mut shared = KindBatch::new();
            let mut views = [
                view(&mut shared, &[("s", FieldType::Str), ("n", FieldType::Int)]),
                view(&mut shared, &[("n", FieldType::Int), ("f", FieldType::Float)]),
                view(&mut shared, &[("s", FieldType::Str)]),
                view(&mut shared, &[("n", FieldType::Float)]),
                view(
                    &mut shared,
                    &[("s", FieldType::Str), ("n", FieldType::Int), ("f", FieldType::Float)],
                ),
                // Five columns (past the unrolled merges); a string and a
                // float read as ints are missing in every row.
                view(
                    &mut shared,
                    &[
                        ("s", FieldType::Str),
                        ("n", FieldType::Int),
                        ("f", FieldType::Float),
                        ("s", FieldType::Int),
                        ("f", FieldType::Int),
                    ],
                ),
            ];
            let distinct = [2, 5, 40, 2000][round % 4];
            let len = 1 + rng(&mut seed) as usize % BATCH_SIZE;
            let mut expected: Vec<[Option<String>; 3]> = Vec::new();
            let names: Vec<String> = (0..distinct).map(|i| format!("value-{i}")).collect();
            for _ in 0..len {
                let (a, b, c) = (rng(&mut seed), rng(&mut seed), rng(&mut seed));
                let mut e = K.event();
                let s = (a % 7 != 0).then(|| names[a as usize % distinct].clone());
                let n = (b % 5 != 0).then(|| (b % distinct as u64) as i64);
                let f = (c % 3 != 0).then(|| (c % distinct as u64) as f64 / 2.0);
                if let Some(s) = &s {
                    e.str("s", s);
                }
                if let Some(n) = n {
                    e.int("n", n);
                }
                if let Some(f) = f {
                    e.float("f", f);
                }
                shared.push(&slot(&e));
                expected.push([s, n.map(|n| n.to_string()), f.map(|f| format!("{f:?}"))]);
            }
            let project = |fields: &[usize]| {
                let mut v: Vec<Vec<Option<String>>> = expected
                    .iter()
                    .map(|e| fields.iter().map(|&i| e[i].clone()).collect())
                    .collect();
                v.sort();
                v
            };
            let int_as_float = |e: &[Option<String>; 3]| {
                vec![e[1].as_ref().map(|n| format!("{:?}", n.parse::<f64>().unwrap()))]
            };
            let five = {
                let mut v: Vec<Vec<Option<String>>> = expected
                    .iter()
                    .map(|e| {
                        let f_as_int = None;
                        vec![e[0].clone(), e[1].clone(), e[2].clone(), None, f_as_int]
                    })
                    .collect();
                v.sort();
                v
            };
            let wanted = [
                project(&[0, 1]),
                project(&[1, 2]),
                project(&[0]),
                {
                    let mut v: Vec<_> = expected.iter().map(int_as_float).collect();
                    v.sort();
                    v
                },
                project(&[0, 1, 2]),
                five,
            ];
            for (k, (v, wanted)) in views.iter_mut().zip(wanted).enumerate() {
                let batch = v.build(&shared);
                let mut got = Vec::new();
                for r in 0..batch.len as usize {
                    let row: Vec<Option<String>> = batch
                        .columns
                        .iter()
                        .enumerate()
                        .map(|(c, col)| {
                            let missing = col.missing.contains(&(r as u32));
                            match &col.data {
                                ColumnData::Str(_) => text(batch, c, r),
                                ColumnData::Int(n) => (!missing).then(|| n[r].to_string()),
                                ColumnData::Float(f) => (!missing).then(|| format!("{:?}", f[r])),
                            }
                        })
                        .collect();
                    for _ in 0..weight(batch, r) {
                        got.push(row.clone());
                    }
                }
                got.sort();
                assert_eq!(got, wanted, "round {round}, view {k}, {distinct} distinct");
                if distinct <= 5 {
                    // At most six values per field (five and missing), and
                    // the five-column view reads three fields.
                    let most = 6usize.pow(batch.columns.len().min(3) as u32);
                    assert!(batch.len as usize <= most, "few values merge: {} rows", batch.len);
                }
            }
        }
    }

    #[test]
    fn a_per_event_field_is_copied_row_for_row_after_the_probe() {
        let mut shared = KindBatch::new();
        let mut v = view(&mut shared, &[("s", FieldType::Str), ("n", FieldType::Int)]);
        for i in 0..BATCH_SIZE {
            shared.push(&slot(K.event().str("s", "GET").int("n", i as i64)));
        }
        let batch = v.build(&shared);
        assert_eq!(batch.len as usize, BATCH_SIZE);
        assert!(batch.weights.is_empty());
        let ColumnData::Int(n) = &batch.columns[1].data else { panic!("int column") };
        assert!(n.iter().enumerate().all(|(i, &x)| x == i as i64));
        // Duplicates only after the probe gave up stay separate rows, each
        // of weight one: correct, not merged.
        shared.clear();
        for i in 0..BATCH_SIZE {
            shared.push(&slot(K.event().str("s", "GET").int("n", (i % 300) as i64)));
        }
        let batch = v.build(&shared);
        assert_eq!(batch.len as usize, BATCH_SIZE);
    }

    #[test]
    fn every_field_in_every_type_and_every_lacking_field_gets_a_column() {
        static WIDE: EventKind =
            EventKind::new("wide", &["f0", "f1", "f2", "f3", "f4", "f5", "f6", "f7"]);
        assert_eq!(WIDE.fields().len(), MAX_FIELDS);
        let mut shared = KindBatch::new();
        let mut keys: Vec<ColumnKey> = (0..MAX_FIELDS as u8)
            .map(Some)
            .chain([None])
            .flat_map(|f| [FieldType::Str, FieldType::Int, FieldType::Float].map(|t| (f, t)))
            .collect();
        // Plugins declaring the same keys again add nothing.
        keys.extend(keys.clone());
        let columns: Vec<Option<u8>> = keys.iter().map(|&k| shared.column(k)).collect();
        assert!(columns.iter().all(Option::is_some), "{columns:?}");
        assert_eq!(shared.columns.len(), MAX_UNION);
        assert_eq!(columns[..MAX_UNION], columns[MAX_UNION..]);
    }

    #[test]
    fn one_field_read_as_two_types_is_two_union_columns() {
        let mut shared = KindBatch::new();
        let mut int = view(&mut shared, &[("n", FieldType::Int)]);
        let mut float = view(&mut shared, &[("n", FieldType::Float)]);
        assert_eq!(shared.columns.len(), 2);
        shared.push(&slot(K.event().int("n", 3)));
        let ColumnData::Int(n) = &int.build(&shared).columns[0].data else { panic!("int") };
        assert_eq!(n, &vec![3]);
        let ColumnData::Float(f) = &float.build(&shared).columns[0].data else { panic!("float") };
        assert_eq!(f, &vec![3.0]);
    }

    #[test]
    fn every_value_keeps_one_code_when_more_values_than_cache_slots_alternate() {
        let mut dict = Dict::default();
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
        let codes: Vec<u32> = order.iter().map(|&i| dict.intern(values[i].as_bytes())).collect();
        assert_eq!(dict.ends.len(), 100, "one entry per distinct value");
        for (row, &i) in order.iter().enumerate() {
            assert_eq!(dict.entry(codes[row]), values[i].as_bytes(), "row {row}");
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
        let mut shared = KindBatch::new();
        let columns = vec![shared.column((None, FieldType::Str)).unwrap()];
        let mut v = View::new(0, columns, &shared);
        shared.push(&slot(K.event().str("s", "x")));
        assert_eq!(str_column(v.build(&shared), 0).codes, vec![MISSING_CODE]);
    }
}
