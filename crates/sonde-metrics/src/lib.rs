//! # The `metrics` crate, into sonde reports
//!
//! An application that already uses [`metrics`] (`counter!`, `gauge!`,
//! `histogram!`) installs a [`SondeRecorder`] and attaches it to its
//! [`sonde::Telemetry`]; its series then appear in reports under
//! `sources[name = "metrics"]`, when the operator's manifest says
//! `app_metrics = true`.
//!
//! Registration (once per call site, cached by `metrics`) takes a lock;
//! recording is an atomic operation on the returned handle. Series are
//! capped at [`MAX_SERIES`]: further label sets share one overflow series per
//! kind (name `__overflow__`) and are counted.
//!
//! Every number it reports is finite: a NaN or infinite gauge value or
//! observation, and an observation that would make a histogram's sum
//! infinite, is dropped (the gauge keeps its last value) and counted as the
//! source's `dropped_values`, since a report cannot carry it.
//!
//! ```no_run
//! # fn main() -> Result<(), Box<dyn std::error::Error>> {
//! let telemetry = sonde::Telemetry::builder(sonde::Manifest::load("sonde.toml".as_ref())?).start()?;
//! let recorder = sonde_metrics::SondeRecorder::new();
//! telemetry.attach("metrics", std::sync::Arc::new(recorder.clone()));
//! metrics::set_global_recorder(recorder)?;
//! metrics::counter!("jobs.done", "queue" => "mail").increment(1);
//! # Ok(()) }
//! ```

#![deny(missing_docs)]

use std::collections::BTreeMap;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering::Relaxed};

use metrics::{
    Counter, Gauge, GaugeFn, Histogram, HistogramFn, Key, KeyName, Metadata, SharedString, Unit,
};
use parking_lot::Mutex;
use sonde::{Metric, MetricKind, MetricValue};

/// Most series (name + label set) the bridge keeps across all kinds.
pub const MAX_SERIES: usize = 1000;

/// Name of the series that takes every registration past [`MAX_SERIES`].
pub const OVERFLOW_NAME: &str = "__overflow__";

/// Histogram bucket upper bounds: powers of 4 from 1 to 4^12, wide enough for
/// microseconds, bytes or counts; a last bucket takes the rest.
const BOUNDS: [f64; 13] = [
    1.0, 4.0, 16.0, 64.0, 256.0, 1024.0, 4096.0, 16384.0, 65536.0, 262144.0, 1048576.0, 4194304.0,
    16777216.0,
];

/// Adds `delta` to the f64 in `bits` unless the result would not be
/// finite; false (and `bits` unchanged) when it would not.
fn add_finite(bits: &AtomicU64, delta: f64) -> bool {
    bits.fetch_update(Relaxed, Relaxed, |old| {
        let new = f64::from_bits(old) + delta;
        new.is_finite().then_some(new.to_bits())
    })
    .is_ok()
}

#[derive(Debug, Default)]
struct Buckets {
    counts: [AtomicU64; BOUNDS.len() + 1],
    sum_bits: AtomicU64,
    /// The recorder's count of refused values.
    dropped: Arc<AtomicU64>,
}

impl HistogramFn for Buckets {
    fn record(&self, value: f64) {
        // The sum first: an observation that would make it infinite is not
        // counted in a bucket either.
        if !value.is_finite() || !add_finite(&self.sum_bits, value) {
            self.dropped.fetch_add(1, Relaxed);
            return;
        }
        let i = BOUNDS.iter().position(|b| value <= *b).unwrap_or(BOUNDS.len());
        self.counts[i].fetch_add(1, Relaxed);
    }
}

/// A gauge that only ever holds a finite value: a change that would make it
/// NaN or infinite is dropped and counted.
#[derive(Debug, Default)]
struct FiniteGauge {
    bits: AtomicU64,
    /// The recorder's count of refused values.
    dropped: Arc<AtomicU64>,
}

impl FiniteGauge {
    fn refused(&self, ok: bool) {
        if !ok {
            self.dropped.fetch_add(1, Relaxed);
        }
    }
}

impl GaugeFn for FiniteGauge {
    fn increment(&self, value: f64) {
        self.refused(add_finite(&self.bits, value));
    }

    fn decrement(&self, value: f64) {
        self.refused(add_finite(&self.bits, -value));
    }

    fn set(&self, value: f64) {
        if value.is_finite() {
            self.bits.store(value.to_bits(), Relaxed);
        }
        self.refused(value.is_finite());
    }
}

#[derive(Debug, Clone)]
enum Handle {
    Counter(Arc<AtomicU64>),
    Gauge(Arc<FiniteGauge>),
    Histogram(Arc<Buckets>),
}

/// A series: kind, name and label pairs.
type SeriesId = (MetricKind, String, Vec<(String, String)>);

#[derive(Debug, Default)]
struct Registry {
    series: BTreeMap<SeriesId, Handle>,
    overflow: BTreeMap<MetricKind, Handle>,
    overflowed: u64,
}

/// A [`metrics::Recorder`] that keeps bounded series for sonde reports.
/// Cheap to clone: clones share the series.
#[derive(Debug, Clone, Default)]
pub struct SondeRecorder {
    registry: Arc<Mutex<Registry>>,
    overflowed: Arc<AtomicU64>,
    /// Values refused because a report could not carry them.
    dropped: Arc<AtomicU64>,
}

impl SondeRecorder {
    /// An empty recorder.
    pub fn new() -> SondeRecorder {
        SondeRecorder::default()
    }

    fn handle(&self, kind: MetricKind, key: &Key, make: impl Fn() -> Handle) -> Handle {
        let labels: Vec<(String, String)> =
            key.labels().map(|l| (l.key().to_string(), l.value().to_string())).collect();
        let id = (kind, key.name().to_string(), labels);
        let mut r = self.registry.lock();
        if let Some(h) = r.series.get(&id) {
            return h.clone();
        }
        if r.series.len() >= MAX_SERIES {
            r.overflowed += 1;
            self.overflowed.fetch_add(1, Relaxed);
            return r.overflow.entry(kind).or_insert_with(make).clone();
        }
        let h = make();
        r.series.insert(id, h.clone());
        h
    }
}

impl metrics::Recorder for SondeRecorder {
    fn describe_counter(&self, _: KeyName, _: Option<Unit>, _: SharedString) {}
    fn describe_gauge(&self, _: KeyName, _: Option<Unit>, _: SharedString) {}
    fn describe_histogram(&self, _: KeyName, _: Option<Unit>, _: SharedString) {}

    fn register_counter(&self, key: &Key, _: &Metadata<'_>) -> Counter {
        match self.handle(MetricKind::Counter, key, || Handle::Counter(Arc::default())) {
            Handle::Counter(c) => Counter::from_arc(c),
            _ => Counter::noop(),
        }
    }

    fn register_gauge(&self, key: &Key, _: &Metadata<'_>) -> Gauge {
        let make = || {
            Handle::Gauge(Arc::new(FiniteGauge {
                bits: AtomicU64::new(0),
                dropped: self.dropped.clone(),
            }))
        };
        match self.handle(MetricKind::Gauge, key, make) {
            Handle::Gauge(g) => Gauge::from_arc(g),
            _ => Gauge::noop(),
        }
    }

    fn register_histogram(&self, key: &Key, _: &Metadata<'_>) -> Histogram {
        let make = || {
            Handle::Histogram(Arc::new(Buckets {
                dropped: self.dropped.clone(),
                ..Buckets::default()
            }))
        };
        match self.handle(MetricKind::Histogram, key, make) {
            Handle::Histogram(h) => Histogram::from_arc(h),
            _ => Histogram::noop(),
        }
    }
}

fn metric(kind: MetricKind, name: &str, labels: &[(String, String)], h: &Handle) -> Metric {
    let value = match h {
        Handle::Counter(c) => MetricValue::Scalar { value: c.load(Relaxed) as f64 },
        Handle::Gauge(g) => MetricValue::Scalar { value: f64::from_bits(g.bits.load(Relaxed)) },
        Handle::Histogram(b) => {
            let buckets: Vec<u64> = b.counts.iter().map(|c| c.load(Relaxed)).collect();
            MetricValue::Histogram {
                count: buckets.iter().sum(),
                sum: f64::from_bits(b.sum_bits.load(Relaxed)),
                bounds: BOUNDS.to_vec(),
                buckets,
            }
        }
    };
    Metric {
        name: name.to_string(),
        kind,
        unit: String::new(),
        labels: labels.iter().cloned().collect(),
        value,
    }
}

impl sonde::MetricSource for SondeRecorder {
    fn snapshot(&self) -> (Vec<Metric>, u64) {
        let r = self.registry.lock();
        let mut out: Vec<Metric> = r
            .series
            .iter()
            .map(|((kind, name, labels), h)| metric(*kind, name, labels, h))
            .collect();
        out.extend(r.overflow.iter().map(|(kind, h)| metric(*kind, OVERFLOW_NAME, &[], h)));
        (out, r.overflowed)
    }

    fn dropped_values(&self) -> u64 {
        self.dropped.load(Relaxed)
    }
}
