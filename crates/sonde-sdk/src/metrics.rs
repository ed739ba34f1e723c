//! Delta accumulators: what a collector keeps between two `collect` calls.
//!
//! `collect` returns what changed since the previous `collect`: increments
//! for counters and histograms, the current value for gauges. Each
//! accumulator here gathers updates keyed by *series* (metric index plus label
//! values) and `drain`s them into [`MetricPoint`]s, forgetting them: the host
//! keeps the cumulative series, so a series untouched during a window costs
//! the plugin nothing.
//!
//! Drained points come out in a deterministic order: by metric index, then by
//! label values (lexicographically, value by value).

use crate::bindings::sonde::collector::types::{
    HistogramDelta, MetricKind, MetricPoint, MetricValue, PluginInfo,
};
use std::collections::BTreeMap;

/// Series keyed by (metric, labels) without allocating on a hit.
///
/// The key is the metric index (big-endian) followed by each label's bytes,
/// with `0x00` escaped as `0x00 0x01` and each label terminated by
/// `0x00 0x00`: an injective encoding whose byte order is the order of
/// (metric, labels).
#[derive(Debug, Clone)]
struct SeriesMap<V> {
    map: BTreeMap<Vec<u8>, (u32, Vec<String>, V)>,
    scratch: Vec<u8>,
}

impl<V> Default for SeriesMap<V> {
    fn default() -> Self {
        Self { map: BTreeMap::new(), scratch: Vec::new() }
    }
}

impl<V> SeriesMap<V> {
    fn update(
        &mut self,
        metric: u32,
        labels: &[&str],
        init: impl FnOnce() -> V,
        f: impl FnOnce(&mut V),
    ) {
        self.scratch.clear();
        self.scratch.extend_from_slice(&metric.to_be_bytes());
        for label in labels {
            for &b in label.as_bytes() {
                if b == 0 {
                    self.scratch.extend_from_slice(&[0, 1]);
                } else {
                    self.scratch.push(b);
                }
            }
            self.scratch.extend_from_slice(&[0, 0]);
        }
        match self.map.get_mut(self.scratch.as_slice()) {
            Some((_, _, v)) => f(v),
            None => {
                let mut v = init();
                f(&mut v);
                let labels = labels.iter().map(|s| (*s).to_owned()).collect();
                self.map.insert(self.scratch.clone(), (metric, labels, v));
            }
        }
    }

    fn is_empty(&self) -> bool {
        self.map.is_empty()
    }

    fn len(&self) -> usize {
        self.map.len()
    }

    fn drain(&mut self, out: &mut Vec<MetricPoint>, mut value: impl FnMut(V) -> MetricValue) {
        let map = std::mem::take(&mut self.map);
        out.reserve(map.len());
        for (_, (metric, labels, v)) in map {
            out.push(MetricPoint { metric, labels, value: value(v) });
        }
    }
}

/// Counter increments per series since the last [`Counters::drain`].
///
/// ```
/// # use sonde_sdk::{Counters, MetricValue};
/// let mut c = Counters::new();
/// c.add(0, &["GET", "2xx"], 2.0);
/// c.add(0, &["GET", "2xx"], 1.0);
/// let mut out = Vec::new();
/// c.drain(&mut out);
/// assert_eq!(out[0].value, MetricValue::Counter(3.0));
/// c.drain(&mut out); // nothing new since
/// assert_eq!(out.len(), 1);
/// ```
#[derive(Debug, Clone, Default)]
pub struct Counters {
    series: SeriesMap<f64>,
}

impl Counters {
    /// No series yet.
    pub fn new() -> Self {
        Self::default()
    }

    /// Adds `delta` to the counter `metric` (index into the declared metrics)
    /// with `labels` (values in the metric's `label_keys` order).
    ///
    /// A `delta` that is negative, NaN or infinite is ignored: counters only
    /// go up. Adding `0.0` creates the series, so the next drain reports it
    /// with a zero increment.
    pub fn add(&mut self, metric: u32, labels: &[&str], delta: f64) {
        if !(delta.is_finite() && delta >= 0.0) {
            return;
        }
        self.series.update(metric, labels, || 0.0, |total| *total += delta);
    }

    /// Adds 1 to a series; see [`Counters::add`].
    pub fn inc(&mut self, metric: u32, labels: &[&str]) {
        self.add(metric, labels, 1.0);
    }

    /// Whether nothing was added since the last drain.
    pub fn is_empty(&self) -> bool {
        self.series.is_empty()
    }

    /// Number of series with pending increments.
    pub fn len(&self) -> usize {
        self.series.len()
    }

    /// Appends one [`MetricValue::Counter`] point per series added to since
    /// the last drain, then forgets them.
    pub fn drain(&mut self, out: &mut Vec<MetricPoint>) {
        self.series.drain(out, MetricValue::Counter);
    }
}

/// Current gauge values per series, set since the last [`Gauges::drain`].
#[derive(Debug, Clone, Default)]
pub struct Gauges {
    series: SeriesMap<f64>,
}

impl Gauges {
    /// No series yet.
    pub fn new() -> Self {
        Self::default()
    }

    /// Sets the gauge `metric` with `labels` to `value`. Non-finite values are
    /// ignored.
    pub fn set(&mut self, metric: u32, labels: &[&str], value: f64) {
        if !value.is_finite() {
            return;
        }
        self.series.update(metric, labels, || value, |v| *v = value);
    }

    /// Whether nothing was set since the last drain.
    pub fn is_empty(&self) -> bool {
        self.series.is_empty()
    }

    /// Number of series set since the last drain.
    pub fn len(&self) -> usize {
        self.series.len()
    }

    /// Appends one [`MetricValue::Gauge`] point per series set since the last
    /// drain (its last value), then forgets them. A series not set again is
    /// not reported again; the host keeps its last value.
    pub fn drain(&mut self, out: &mut Vec<MetricPoint>) {
        self.series.drain(out, MetricValue::Gauge);
    }
}

/// Histogram increments per series since the last [`Histograms::drain`].
///
/// Each histogram metric must be declared with its bucket bounds, either from
/// the plugin's own [`PluginInfo`] ([`Histograms::from_info`]) or one by one
/// ([`Histograms::declare`]). A value `v` falls in the first bucket whose
/// bound `b` satisfies `v <= b`, or in the overflow bucket past the last
/// bound.
///
/// ```
/// # use sonde_sdk::{Histograms, HistogramDelta, MetricValue};
/// let mut h = Histograms::new();
/// h.declare(0, &[10.0, 100.0]);
/// h.observe(0, &["/users/{id}"], 10.0);
/// h.observe(0, &["/users/{id}"], 500.0);
/// let mut out = Vec::new();
/// h.drain(&mut out);
/// assert_eq!(
///     out[0].value,
///     MetricValue::Histogram(HistogramDelta { buckets: vec![1, 0, 1], count: 2, sum: 510.0 })
/// );
/// ```
#[derive(Debug, Clone, Default)]
pub struct Histograms {
    bounds: BTreeMap<u32, Vec<f64>>,
    series: SeriesMap<HistogramDelta>,
}

impl Histograms {
    /// No histogram declared yet.
    pub fn new() -> Self {
        Self::default()
    }

    /// Declares every histogram metric of `info` with its buckets (metric
    /// indices are positions in `info.metrics`).
    pub fn from_info(info: &PluginInfo) -> Self {
        let mut h = Self::new();
        for (i, m) in info.metrics.iter().enumerate() {
            if m.kind == MetricKind::Histogram {
                h.declare(i as u32, &m.buckets);
            }
        }
        h
    }

    /// Declares (or redeclares) histogram `metric` with `bounds`: ascending
    /// upper bounds, as in its `MetricDecl`.
    pub fn declare(&mut self, metric: u32, bounds: &[f64]) {
        self.bounds.insert(metric, bounds.to_vec());
    }

    /// Records one observation of `value` in histogram `metric` with `labels`.
    ///
    /// Ignored if `metric` was not declared or `value` is NaN or infinite.
    pub fn observe(&mut self, metric: u32, labels: &[&str], value: f64) {
        self.observe_n(metric, labels, value, 1);
    }

    /// Records `n` observations of the same `value`; see
    /// [`Histograms::observe`].
    pub fn observe_n(&mut self, metric: u32, labels: &[&str], value: f64, n: u64) {
        self.record(metric, labels, [(value, n)]);
    }

    /// Records every value of `values` in histogram `metric` with `labels`,
    /// finding the series once: the cheap way to record a batch's values
    /// grouped by label (one lookup per group instead of one per event).
    ///
    /// Values that are NaN or infinite are skipped, as by
    /// [`Histograms::observe`]; nothing is recorded (and no series made) if
    /// none is left or `metric` was not declared.
    pub fn observe_all(
        &mut self,
        metric: u32,
        labels: &[&str],
        values: impl IntoIterator<Item = f64>,
    ) {
        self.record(metric, labels, values.into_iter().map(|v| (v, 1)));
    }

    /// Records every `(value, n)` of `values`, `n` observations of `value`
    /// each, in histogram `metric` with `labels`, finding the series once:
    /// [`Histograms::observe_all`] for weighted rows (`Batch::weight`).
    /// Non-finite values and zero counts are skipped.
    pub fn observe_weighted(
        &mut self,
        metric: u32,
        labels: &[&str],
        values: impl IntoIterator<Item = (f64, u64)>,
    ) {
        self.record(metric, labels, values);
    }

    /// Adds observations already sorted into buckets to one series:
    /// `buckets[i]` observations in bucket `i` (the layout of
    /// [`HistogramDelta::buckets`]: one per bound, then the overflow bucket),
    /// `sum` their total. For a plugin that buckets values itself, in a loop
    /// of its own, and records each series once per batch.
    ///
    /// Ignored if `metric` was not declared, `buckets` has not one entry per
    /// bucket, no bucket holds an observation, or `sum` is not finite.
    pub fn add_buckets(&mut self, metric: u32, labels: &[&str], buckets: &[u64], sum: f64) {
        let Some(bounds) = self.bounds.get(&metric) else {
            return;
        };
        let count: u64 = buckets.iter().sum();
        if buckets.len() != bounds.len() + 1 || count == 0 || !sum.is_finite() {
            return;
        }
        self.series.update(
            metric,
            labels,
            || HistogramDelta { buckets: vec![0; buckets.len()], count: 0, sum: 0.0 },
            |h| {
                for (slot, n) in h.buckets.iter_mut().zip(buckets) {
                    *slot += n;
                }
                h.count += count;
                h.sum += sum;
            },
        );
    }

    /// The bucket histogram `metric` puts `value` in (the first bound `b`
    /// with `value <= b`, or the overflow bucket); `None` if `metric` was not
    /// declared or `value` is NaN or infinite.
    pub fn bucket_of(&self, metric: u32, value: f64) -> Option<usize> {
        let bounds = self.bounds.get(&metric)?;
        value.is_finite().then(|| bounds.partition_point(|b| *b < value))
    }

    /// Adds `(value, times)` observations to one series, skipping non-finite
    /// values and zero counts; makes no series if nothing is left.
    fn record(
        &mut self,
        metric: u32,
        labels: &[&str],
        values: impl IntoIterator<Item = (f64, u64)>,
    ) {
        let Some(bounds) = self.bounds.get(&metric) else {
            return;
        };
        let mut values = values.into_iter().filter(|(v, n)| v.is_finite() && *n > 0).peekable();
        if values.peek().is_none() {
            return;
        }
        let buckets = bounds.len() + 1;
        self.series.update(
            metric,
            labels,
            || HistogramDelta { buckets: vec![0; buckets], count: 0, sum: 0.0 },
            |h| {
                for (value, n) in values {
                    let bucket = bounds.partition_point(|b| *b < value);
                    if let Some(slot) = h.buckets.get_mut(bucket) {
                        *slot += n;
                    }
                    h.count += n;
                    h.sum += value * n as f64;
                }
            },
        );
    }

    /// Whether nothing was observed since the last drain.
    pub fn is_empty(&self) -> bool {
        self.series.is_empty()
    }

    /// Number of series with pending observations.
    pub fn len(&self) -> usize {
        self.series.len()
    }

    /// Appends one [`MetricValue::Histogram`] point per series observed since
    /// the last drain, then forgets them.
    pub fn drain(&mut self, out: &mut Vec<MetricPoint>) {
        self.series.drain(out, MetricValue::Histogram);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::{EventDecl, MetricDecl};

    fn labels(p: &MetricPoint) -> Vec<&str> {
        p.labels.iter().map(String::as_str).collect()
    }

    #[test]
    fn counters_report_increments_and_reset() {
        let mut c = Counters::new();
        c.inc(0, &["GET", "2xx"]);
        c.add(0, &["GET", "2xx"], 2.0);
        c.inc(0, &["POST", "5xx"]);
        c.inc(1, &["a"]);
        c.add(0, &["GET", "2xx"], -1.0);
        c.add(0, &["GET", "2xx"], f64::NAN);
        c.add(0, &["GET", "2xx"], f64::INFINITY);
        assert_eq!(c.len(), 3);
        let mut out = Vec::new();
        c.drain(&mut out);
        assert!(c.is_empty());
        let got: Vec<_> = out.iter().map(|p| (p.metric, labels(p), p.value.clone())).collect();
        assert_eq!(
            got,
            [
                (0, vec!["GET", "2xx"], MetricValue::Counter(3.0)),
                (0, vec!["POST", "5xx"], MetricValue::Counter(1.0)),
                (1, vec!["a"], MetricValue::Counter(1.0)),
            ]
        );
        out.clear();
        c.drain(&mut out);
        assert!(out.is_empty());
        c.inc(0, &["GET", "2xx"]);
        c.add(0, &["HEAD", "2xx"], 0.0);
        c.drain(&mut out);
        assert_eq!(out.len(), 2);
        assert_eq!(out[0].value, MetricValue::Counter(1.0));
        assert_eq!(out[1].value, MetricValue::Counter(0.0));
    }

    #[test]
    fn series_keys_are_injective_and_ordered() {
        let mut c = Counters::new();
        // Would collide under naive concatenation or separator joins.
        c.inc(0, &["ab", "c"]);
        c.inc(0, &["a", "bc"]);
        c.inc(0, &["a\0", "bc"]);
        c.inc(0, &["a", "\0bc"]);
        c.inc(0, &["abc"]);
        c.inc(0, &[]);
        c.inc(2, &[]);
        c.inc(1, &["z"]);
        let mut out = Vec::new();
        c.drain(&mut out);
        assert_eq!(out.len(), 8);
        let got: Vec<_> = out.iter().map(|p| (p.metric, labels(p))).collect();
        assert_eq!(
            got,
            [
                (0, vec![]),
                (0, vec!["a", "\0bc"]),
                (0, vec!["a", "bc"]),
                (0, vec!["a\0", "bc"]),
                (0, vec!["ab", "c"]),
                (0, vec!["abc"]),
                (1, vec!["z"]),
                (2, vec![]),
            ]
        );
    }

    #[test]
    fn histograms_bucket_inclusively() {
        let mut h = Histograms::new();
        h.declare(3, &[100.0, 250.0]);
        for v in [0.0, 100.0, 100.5, 250.0, 251.0, 1e9] {
            h.observe(3, &["r"], v);
        }
        h.observe(3, &["r"], f64::NAN);
        h.observe(3, &["r"], f64::INFINITY);
        h.observe(4, &["r"], 1.0); // undeclared
        h.observe_n(3, &["s"], 300.0, 4);
        let mut out = Vec::new();
        h.drain(&mut out);
        assert_eq!(out.len(), 2);
        assert_eq!(
            out[0].value,
            MetricValue::Histogram(HistogramDelta {
                buckets: vec![2, 2, 2],
                count: 6,
                sum: 0.0 + 100.0 + 100.5 + 250.0 + 251.0 + 1e9,
            })
        );
        assert_eq!(
            out[1].value,
            MetricValue::Histogram(HistogramDelta {
                buckets: vec![0, 0, 4],
                count: 4,
                sum: 1200.0,
            })
        );
        out.clear();
        h.drain(&mut out);
        assert!(out.is_empty());
        assert!(h.is_empty());
    }

    #[test]
    fn observe_all_equals_one_observe_per_value() {
        let values = [0.0, 100.0, f64::NAN, 100.5, 250.0, f64::INFINITY, 251.0, 1e9];
        let (mut one, mut all) = (Histograms::new(), Histograms::new());
        for h in [&mut one, &mut all] {
            h.declare(3, &[100.0, 250.0]);
        }
        for v in values {
            one.observe(3, &["r"], v);
        }
        all.observe_all(3, &["r"], values);
        all.observe_all(3, &["empty"], [f64::NAN]);
        all.observe_all(4, &["undeclared"], [1.0]);
        let (mut a, mut b) = (Vec::new(), Vec::new());
        one.drain(&mut a);
        all.drain(&mut b);
        assert_eq!(a, b);
        assert_eq!(b.len(), 1);
    }

    #[test]
    fn observe_weighted_equals_n_observes_per_value() {
        let rows = [(50.0, 3), (100.0, 0), (f64::NAN, 2), (300.0, 1), (120.0, 4)];
        let (mut each, mut weighted) = (Histograms::new(), Histograms::new());
        for h in [&mut each, &mut weighted] {
            h.declare(1, &[100.0, 250.0]);
        }
        for (v, n) in rows {
            for _ in 0..n {
                each.observe(1, &["r"], v);
            }
        }
        weighted.observe_weighted(1, &["r"], rows);
        weighted.observe_weighted(1, &["zero"], [(1.0, 0)]);
        let (mut a, mut b) = (Vec::new(), Vec::new());
        each.drain(&mut a);
        weighted.drain(&mut b);
        assert_eq!(a, b);
        assert_eq!(b.len(), 1, "no series for zero counts");
    }

    #[test]
    fn add_buckets_equals_observing_each_value() {
        let values = [50.0, 100.0, 101.0, 250.0, 251.0, 1e9];
        let (mut each, mut bucketed) = (Histograms::new(), Histograms::new());
        for h in [&mut each, &mut bucketed] {
            h.declare(1, &[100.0, 250.0]);
        }
        let mut buckets = [0; 3];
        for v in values {
            each.observe(1, &["r"], v);
            buckets[bucketed.bucket_of(1, v).expect("a finite value")] += 1;
        }
        assert_eq!(buckets, [2, 2, 2]);
        bucketed.add_buckets(1, &["r"], &buckets, values.iter().sum());
        // Wrong length, nothing in any bucket, undeclared metric: ignored.
        bucketed.add_buckets(1, &["short"], &[1, 2], 3.0);
        bucketed.add_buckets(1, &["empty"], &[0, 0, 0], 0.0);
        bucketed.add_buckets(7, &["r"], &[1, 0, 0], 1.0);
        assert_eq!(bucketed.bucket_of(1, f64::NAN), None);
        assert_eq!(bucketed.bucket_of(7, 1.0), None);
        let (mut a, mut b) = (Vec::new(), Vec::new());
        each.drain(&mut a);
        bucketed.drain(&mut b);
        assert_eq!(a, b);
    }

    #[test]
    fn histograms_from_info() {
        let info = PluginInfo {
            name: "x".into(),
            version: "0".into(),
            description: String::new(),
            events: vec![EventDecl::new("e", &[])],
            metrics: vec![
                MetricDecl::counter("c", "1", "", &[]),
                MetricDecl::histogram("h", "us", "", &[], &[1.0]),
            ],
        };
        let mut h = Histograms::from_info(&info);
        h.observe(0, &[], 1.0); // a counter: not declared as histogram
        h.observe(1, &[], 2.0);
        let mut out = Vec::new();
        h.drain(&mut out);
        assert_eq!(out.len(), 1);
        assert_eq!(out[0].metric, 1);
    }

    #[test]
    fn gauges_keep_last_value() {
        let mut g = Gauges::new();
        g.set(0, &[], 1.0);
        g.set(0, &[], 5.0);
        g.set(0, &[], f64::NAN);
        let mut out = Vec::new();
        g.drain(&mut out);
        assert_eq!(out[0].value, MetricValue::Gauge(5.0));
        assert!(g.is_empty());
    }
}
