//! Typed views over a columnar [`EventBatch`].

use crate::bindings::sonde::collector::types::{ColumnData, EventBatch};

/// A read-only view over an [`EventBatch`].
///
/// A batch holds [`Batch::len`] *rows*; row `i` stands for
/// [`Batch::weight`]`(i)` events that were identical over the fields this
/// plugin declared (the host merges them, so a plugin reading a few
/// low-cardinality fields does its work per distinct value). Count events
/// with the weights, never with the rows: [`Batch::events`] is their sum.
/// Two rows may carry the same values; add their weights.
///
/// Column `i` is field `i` of the event kind's declared `fields`, in declared
/// order. Asking for a column with the wrong accessor (say [`Batch::int`] on a
/// string column), or for a column index past the end, never panics: it yields
/// a column in which every event is missing. The same holds for malformed
/// input (short columns, dictionary codes out of range, string values that are
/// not UTF-8): the affected entries read as missing.
#[derive(Debug, Clone, Copy)]
pub struct Batch<'a> {
    raw: &'a EventBatch,
}

impl<'a> Batch<'a> {
    /// Wraps a batch received by `on-events`.
    pub fn new(raw: &'a EventBatch) -> Self {
        Self { raw }
    }

    /// The underlying batch.
    pub fn raw(&self) -> &'a EventBatch {
        self.raw
    }

    /// Index of the batch's event kind in the `events` the plugin declared.
    pub fn kind(&self) -> u32 {
        self.raw.kind
    }

    /// Number of rows in the batch (each stands for [`Batch::weight`]
    /// events).
    pub fn len(&self) -> usize {
        self.raw.len as usize
    }

    /// Whether the batch holds no row.
    pub fn is_empty(&self) -> bool {
        self.raw.len == 0
    }

    /// How many events row `i` stands for: at least 1 for a row of the
    /// batch, 0 past its end. A malformed weight of 0 counts as 1 (a row is
    /// at least one event).
    pub fn weight(&self, i: usize) -> u64 {
        if i >= self.len() {
            return 0;
        }
        match self.raw.weights.get(i) {
            Some(&w) => u64::from(w.max(1)),
            None => 1,
        }
    }

    /// The weight of every row, in order.
    pub fn weights(&self) -> Weights<'a> {
        Weights { weights: self.raw.weights.iter(), left: self.len() }
    }

    /// Whether every row stands for one event (the host merged nothing):
    /// a loop over the rows may then leave the weights out.
    pub fn is_unweighted(&self) -> bool {
        self.raw.weights.is_empty()
    }

    /// The number of events in the batch: the sum of the rows' weights.
    pub fn events(&self) -> u64 {
        if self.raw.weights.is_empty() { self.len() as u64 } else { self.weights().sum() }
    }

    /// Column `col` as integers. Every entry is missing if the column does not
    /// exist or is not an `int` column.
    pub fn int(&self, col: usize) -> IntColumn<'a> {
        match self.raw.columns.get(col) {
            Some(c) => match &c.data {
                ColumnData::Int(values) => NumColumn::new(self.len(), values, &c.missing),
                _ => NumColumn::absent(self.len()),
            },
            None => NumColumn::absent(self.len()),
        }
    }

    /// Column `col` as floats. Every entry is missing if the column does not
    /// exist or is not a `float` column.
    pub fn float(&self, col: usize) -> FloatColumn<'a> {
        match self.raw.columns.get(col) {
            Some(c) => match &c.data {
                ColumnData::Float(values) => NumColumn::new(self.len(), values, &c.missing),
                _ => NumColumn::absent(self.len()),
            },
            None => NumColumn::absent(self.len()),
        }
    }

    /// Column `col` as strings. Every entry is missing if the column does not
    /// exist or is not a `str` column.
    pub fn str(&self, col: usize) -> StrColumn<'a> {
        match self.raw.columns.get(col) {
            Some(c) => match &c.data {
                ColumnData::Str(s) => {
                    StrColumn::new(self.len(), &s.dict_bytes, &s.dict_ends, &s.codes)
                }
                _ => StrColumn::absent(self.len()),
            },
            None => StrColumn::absent(self.len()),
        }
    }
}

/// A column of `int` values. See [`NumColumn`].
pub type IntColumn<'a> = NumColumn<'a, i64>;

/// A column of `float` values. See [`NumColumn`].
pub type FloatColumn<'a> = NumColumn<'a, f64>;

/// A numeric column of a [`Batch`]: one value per event, or `None` where the
/// event lacks the field.
#[derive(Debug, Clone)]
pub struct NumColumn<'a, T> {
    len: usize,
    values: &'a [T],
    /// Bit `i` set: event `i` is missing. Empty when nothing is missing.
    missing: Vec<u64>,
}

impl<'a, T: Copy> NumColumn<'a, T> {
    fn new(len: usize, values: &'a [T], missing: &[u32]) -> Self {
        let mut bits = Vec::new();
        if !missing.is_empty() {
            bits = vec![0u64; len.div_ceil(64)];
            for &i in missing {
                let i = i as usize;
                if let Some(word) = bits.get_mut(i / 64) {
                    *word |= 1 << (i % 64);
                }
            }
        }
        Self { len, values, missing: bits }
    }

    fn absent(len: usize) -> Self {
        Self { len, values: &[], missing: Vec::new() }
    }

    /// Number of entries: the batch length.
    pub fn len(&self) -> usize {
        self.len
    }

    /// Whether the column has no entry (the batch is empty).
    pub fn is_empty(&self) -> bool {
        self.len == 0
    }

    /// The value for event `i`, or `None` if the event lacks the field (or `i`
    /// is out of range).
    pub fn get(&self, i: usize) -> Option<T> {
        if i >= self.len {
            return None;
        }
        if let Some(word) = self.missing.get(i / 64)
            && word & (1 << (i % 64)) != 0
        {
            return None;
        }
        self.values.get(i).copied()
    }

    /// Every row's value as one slice, when no row lacks the field (and the
    /// column is well formed): the fast path for a loop over a per-event
    /// field such as a duration. `None` when some row is missing; use
    /// [`NumColumn::iter`] then.
    pub fn complete(&self) -> Option<&'a [T]> {
        if self.missing.is_empty() { self.values.get(..self.len) } else { None }
    }

    /// The values of every row, in order.
    pub fn iter(&self) -> NumIter<'_, T> {
        let values = &self.values[..self.values.len().min(self.len)];
        NumIter { values: values.iter(), missing: &self.missing, row: 0, len: self.len }
    }
}

/// Iterator returned by [`NumColumn::iter`]: one `Option` per row.
#[derive(Debug, Clone)]
pub struct NumIter<'c, T> {
    /// The values of the rows not yet read (fewer than the rows if the
    /// column is short: those read as missing).
    values: std::slice::Iter<'c, T>,
    missing: &'c [u64],
    row: usize,
    len: usize,
}

impl<T: Copy> Iterator for NumIter<'_, T> {
    type Item = Option<T>;

    #[inline]
    fn next(&mut self) -> Option<Option<T>> {
        let row = self.row;
        if row >= self.len {
            return None;
        }
        self.row = row + 1;
        let value = self.values.next().copied();
        if !self.missing.is_empty()
            && self.missing.get(row / 64).is_some_and(|word| word & (1 << (row % 64)) != 0)
        {
            return Some(None);
        }
        Some(value)
    }

    fn size_hint(&self) -> (usize, Option<usize>) {
        let left = self.len - self.row;
        (left, Some(left))
    }
}

impl<T: Copy> ExactSizeIterator for NumIter<'_, T> {}

/// Iterator returned by [`Batch::weights`]: each row's weight (at least 1).
#[derive(Debug, Clone)]
pub struct Weights<'a> {
    /// The weights not yet read; empty when every row is 1.
    weights: std::slice::Iter<'a, u32>,
    left: usize,
}

impl Iterator for Weights<'_> {
    type Item = u64;

    #[inline]
    fn next(&mut self) -> Option<u64> {
        if self.left == 0 {
            return None;
        }
        self.left -= 1;
        // No weights: every row is one event; a malformed 0 reads as 1.
        Some(self.weights.next().map_or(1, |&w| u64::from(w.max(1))))
    }

    fn size_hint(&self) -> (usize, Option<usize>) {
        (self.left, Some(self.left))
    }
}

impl ExactSizeIterator for Weights<'_> {}

/// A string column of a [`Batch`], dictionary-encoded: each event refers to
/// one of the batch's distinct values by its code.
///
/// The dictionary is decoded (and checked for UTF-8) once when the view is
/// built; an entry that is not valid UTF-8 or whose bounds are inconsistent
/// reads as missing.
#[derive(Debug, Clone)]
pub struct StrColumn<'a> {
    len: usize,
    dict: Vec<Option<&'a str>>,
    codes: &'a [u32],
}

impl<'a> StrColumn<'a> {
    fn new(len: usize, bytes: &'a [u8], ends: &'a [u32], codes: &'a [u32]) -> Self {
        let mut dict = Vec::with_capacity(ends.len());
        let mut start = 0usize;
        for &end in ends {
            let end = end as usize;
            let value = bytes.get(start..end).and_then(|b| std::str::from_utf8(b).ok());
            dict.push(value);
            start = end;
        }
        Self { len, dict, codes }
    }

    fn absent(len: usize) -> Self {
        Self { len, dict: Vec::new(), codes: &[] }
    }

    /// Number of entries: the batch length.
    pub fn len(&self) -> usize {
        self.len
    }

    /// Whether the column has no entry (the batch is empty).
    pub fn is_empty(&self) -> bool {
        self.len == 0
    }

    /// The dictionary code of event `i`: an index into [`StrColumn::dict`],
    /// or `None` if the event lacks the field.
    pub fn code(&self, i: usize) -> Option<u32> {
        if i >= self.len {
            return None;
        }
        let code = *self.codes.get(i)?;
        ((code as usize) < self.dict.len()).then_some(code)
    }

    /// The value of event `i`, or `None` if the event lacks the field.
    pub fn get(&self, i: usize) -> Option<&'a str> {
        self.code(i).and_then(|c| self.dict_value(c))
    }

    /// Every row's dictionary code, as sent: an index into
    /// [`StrColumn::dict`], or any code past it (4294967295 for a row that
    /// lacks the field) to be read as missing. With a table built once per
    /// batch from [`StrColumn::dict`], the fast path for a tight loop:
    ///
    /// ```
    /// # use sonde_sdk::{Batch, Column, ColumnData, EventBatch, RawStrColumn};
    /// # let raw = EventBatch { kind: 0, len: 3, columns: vec![Column {
    /// #     data: ColumnData::Str(RawStrColumn { dict_bytes: b"GETPOST".to_vec(), dict_ends: vec![3, 7], codes: vec![0, 1, u32::MAX] }),
    /// #     missing: vec![] }], weights: vec![] };
    /// let column = Batch::new(&raw).str(0);
    /// let lens: Vec<usize> = column.dict().iter().map(|v| v.map_or(0, str::len)).collect();
    /// let per_row: Vec<usize> =
    ///     column.codes().iter().map(|&c| lens.get(c as usize).copied().unwrap_or(0)).collect();
    /// assert_eq!(per_row, [3, 4, 0]);
    /// ```
    pub fn codes(&self) -> &'a [u32] {
        &self.codes[..self.codes.len().min(self.len)]
    }

    /// The distinct values of the batch, indexed by code. `None` marks an
    /// entry that could not be decoded.
    pub fn dict(&self) -> &[Option<&'a str>] {
        &self.dict
    }

    /// Dictionary entry `code`.
    pub fn dict_value(&self, code: u32) -> Option<&'a str> {
        self.dict.get(code as usize).copied().flatten()
    }

    /// The values of every row, in order.
    pub fn iter(&self) -> impl Iterator<Item = Option<&'a str>> + '_ {
        (0..self.len).map(|i| self.get(i))
    }

    /// Maps every event's value through `f`, calling `f` once per distinct
    /// value (and once for "missing") rather than once per event.
    ///
    /// This is the cheap way to classify a string column: a batch of 10 000
    /// requests usually carries a few dozen distinct user agents.
    ///
    /// ```
    /// # use sonde_sdk::{Batch, Column, ColumnData, EventBatch, RawStrColumn};
    /// # let raw = EventBatch { kind: 0, len: 3, columns: vec![Column {
    /// #     data: ColumnData::Str(RawStrColumn { dict_bytes: b"GETPOST".to_vec(), dict_ends: vec![3, 7], codes: vec![0, 1, u32::MAX] }),
    /// #     missing: vec![] }], weights: vec![] };
    /// let batch = Batch::new(&raw);
    /// let lens: Vec<usize> = batch.str(0).map_distinct(|v| v.map_or(0, str::len)).collect();
    /// assert_eq!(lens, [3, 4, 0]);
    /// ```
    pub fn map_distinct<T, F>(&self, mut f: F) -> MapDistinct<'_, 'a, T>
    where
        T: Clone,
        F: FnMut(Option<&'a str>) -> T,
    {
        let table = self.dict.iter().map(|v| f(*v)).collect();
        let none = f(None);
        MapDistinct { column: self, table, none, next: 0 }
    }
}

/// Iterator returned by [`StrColumn::map_distinct`]: one mapped value per
/// event.
#[derive(Debug, Clone)]
pub struct MapDistinct<'c, 'a, T> {
    column: &'c StrColumn<'a>,
    table: Vec<T>,
    none: T,
    next: usize,
}

impl<T: Clone> Iterator for MapDistinct<'_, '_, T> {
    type Item = T;

    #[inline]
    fn next(&mut self) -> Option<T> {
        let i = self.next;
        if i >= self.column.len {
            return None;
        }
        self.next = i + 1;
        // The table has one entry per dictionary value: a code past it (or
        // the missing code) maps to `none`, as `StrColumn::code` reads it.
        let mapped = self
            .column
            .codes
            .get(i)
            .and_then(|&c| self.table.get(c as usize))
            .unwrap_or(&self.none);
        Some(mapped.clone())
    }

    fn size_hint(&self) -> (usize, Option<usize>) {
        let left = self.column.len - self.next;
        (left, Some(left))
    }
}

impl<T: Clone> ExactSizeIterator for MapDistinct<'_, '_, T> {}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::bindings::sonde::collector::types::{Column, StrColumn as RawStr};

    const MISSING: u32 = u32::MAX;

    fn str_col(values: &[Option<&str>]) -> Column {
        let mut dict: Vec<&str> = Vec::new();
        let mut codes = Vec::new();
        for v in values {
            codes.push(match v {
                None => MISSING,
                Some(s) => match dict.iter().position(|d| d == s) {
                    Some(p) => p as u32,
                    None => {
                        dict.push(s);
                        (dict.len() - 1) as u32
                    }
                },
            });
        }
        let mut bytes = Vec::new();
        let mut ends = Vec::new();
        for d in &dict {
            bytes.extend_from_slice(d.as_bytes());
            ends.push(bytes.len() as u32);
        }
        Column {
            data: ColumnData::Str(RawStr { dict_bytes: bytes, dict_ends: ends, codes }),
            missing: vec![],
        }
    }

    fn sample() -> EventBatch {
        EventBatch {
            kind: 0,
            len: 4,
            columns: vec![
                str_col(&[Some("GET"), Some("POST"), None, Some("GET")]),
                Column { data: ColumnData::Int(vec![200, 0, 503, 404]), missing: vec![1] },
                Column { data: ColumnData::Float(vec![1.5, 2.5, 0.0, 4.0]), missing: vec![2] },
            ],
            weights: vec![],
        }
    }

    #[test]
    fn reads_each_column_type() {
        let raw = sample();
        let b = Batch::new(&raw);
        assert_eq!(b.len(), 4);
        assert_eq!(b.kind(), 0);
        assert!(!b.is_empty());
        let m: Vec<_> = b.str(0).iter().collect();
        assert_eq!(m, [Some("GET"), Some("POST"), None, Some("GET")]);
        let s: Vec<_> = b.int(1).iter().collect();
        assert_eq!(s, [Some(200), None, Some(503), Some(404)]);
        let d: Vec<_> = b.float(2).iter().collect();
        assert_eq!(d, [Some(1.5), Some(2.5), None, Some(4.0)]);
        assert_eq!(b.str(0).dict(), &[Some("GET"), Some("POST")]);
        assert_eq!(b.str(0).code(3), Some(0));
        assert_eq!(b.str(0).code(2), None);
    }

    #[test]
    fn rows_stand_for_their_weights() {
        let mut raw = sample();
        let b = Batch::new(&raw);
        assert_eq!((b.events(), b.weights().collect::<Vec<_>>()), (4, vec![1, 1, 1, 1]));
        raw.weights = vec![3, 1, 0, 7];
        let b = Batch::new(&raw);
        // A malformed 0 counts as one event.
        assert_eq!(b.weights().collect::<Vec<_>>(), [3, 1, 1, 7]);
        assert_eq!((b.events(), b.weight(0), b.weight(4)), (12, 3, 0));
        // Weights shorter than the rows: the rest weigh one.
        raw.weights = vec![5];
        let b = Batch::new(&raw);
        assert_eq!((b.events(), b.weight(3)), (8, 1));
    }

    #[test]
    fn type_mismatch_and_bad_index_read_as_missing() {
        let raw = sample();
        let b = Batch::new(&raw);
        assert!(b.int(0).iter().all(|v| v.is_none()));
        assert_eq!(b.int(0).len(), 4);
        assert!(b.str(1).iter().all(|v| v.is_none()));
        assert!(b.float(1).iter().all(|v| v.is_none()));
        assert!(b.int(2).iter().all(|v| v.is_none()));
        assert!(b.int(99).iter().all(|v| v.is_none()));
        assert_eq!(b.str(99).iter().count(), 4);
        assert_eq!(b.int(1).get(4), None);
        assert_eq!(b.str(0).get(100), None);
    }

    #[test]
    fn malformed_input_never_panics() {
        let raw = EventBatch {
            kind: 0,
            len: 5,
            columns: vec![
                Column {
                    data: ColumnData::Str(RawStr {
                        // "ok", then an invalid UTF-8 entry, then an end past the bytes.
                        dict_bytes: vec![b'o', b'k', 0xff, 0xfe],
                        dict_ends: vec![2, 4, 99],
                        codes: vec![0, 1, 2, 7], // short and out of range
                    }),
                    missing: vec![],
                },
                Column {
                    data: ColumnData::Int(vec![1, 2]), // short
                    missing: vec![0, 1000],            // out of range index
                },
            ],
            weights: vec![],
        };
        let b = Batch::new(&raw);
        let s: Vec<_> = b.str(0).iter().collect();
        assert_eq!(s, [Some("ok"), None, None, None, None]);
        let i: Vec<_> = b.int(1).iter().collect();
        assert_eq!(i, [None, Some(2), None, None, None]);
    }

    #[test]
    fn map_distinct_calls_once_per_value() {
        let values: Vec<Option<&str>> = (0..1000)
            .map(|i| match i % 3 {
                0 => Some("a"),
                1 => Some("bb"),
                _ => None,
            })
            .collect();
        let raw = EventBatch {
            kind: 0,
            len: values.len() as u32,
            columns: vec![str_col(&values)],
            weights: vec![],
        };
        let b = Batch::new(&raw);
        let mut calls = 0;
        let col = b.str(0);
        let lens: Vec<usize> = col
            .map_distinct(|v| {
                calls += 1;
                v.map_or(0, str::len)
            })
            .collect();
        assert_eq!(calls, 3);
        assert_eq!(&lens[..4], &[1, 2, 0, 1]);
        assert_eq!(lens.len(), 1000);
    }

    #[test]
    fn many_missing_entries() {
        let len = 200;
        let raw = EventBatch {
            kind: 0,
            len,
            columns: vec![Column {
                data: ColumnData::Int((0..len as i64).collect()),
                missing: (0..len).filter(|i| i % 7 == 0).collect(),
            }],
            weights: vec![],
        };
        let b = Batch::new(&raw);
        let col = b.int(0);
        for i in 0..len as usize {
            let expect = if i % 7 == 0 { None } else { Some(i as i64) };
            assert_eq!(col.get(i), expect, "event {i}");
        }
        assert_eq!(col.iter().flatten().count(), 200 - 29);
    }
}
