//! Reports: what leaves the host, and what `sonde preview` shows.
//!
//! A report is serialized once, by [`Report::to_json`], and those bytes are
//! both what `preview --format json` prints and what an uploader sends.
//! Values are cumulative since the host started, so a lost report loses no
//! counts: the next one carries them.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};
use uuid::Uuid;

/// Version of the report schema; bumped on any incompatible change.
pub const REPORT_SCHEMA_VERSION: u32 = 1;

/// One report from one host instance.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Report {
    /// [`REPORT_SCHEMA_VERSION`] of the writer.
    pub schema: u32,
    /// Unique per report, so a collector can deduplicate retries.
    pub report_id: Uuid,
    /// Random UUID v4 kept in the host's state directory.
    pub instance_id: Uuid,
    /// With `installation_id = true`: HMAC-SHA256 of a fixed label under the
    /// random salt in the state directory, 32 hex digits.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub installation_id: Option<String>,
    /// When the report was built, RFC 3339 in UTC.
    pub timestamp: String,
    /// When the runtime started, RFC 3339 in UTC: the start of every
    /// cumulative value in the report.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub started: Option<String>,
    /// Facts about the running host that an operator accepts to share.
    pub host: HostFacts,
    /// The event ring buffer since start.
    pub buffer: BufferStats,
    /// Every plugin in the manifest, in manifest order.
    pub plugins: Vec<PluginReport>,
    /// Delivery counters since start (all zero in `local` mode).
    #[serde(default)]
    pub delivery: DeliveryStats,
    /// Metrics the host application records itself (e.g. through the
    /// `metrics` crate bridge), only with `app_metrics = true`.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub sources: Vec<SourceReport>,
}

/// Metrics from a source inside the host application.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct SourceReport {
    /// The source's name, e.g. `metrics`.
    pub name: String,
    /// Registrations folded into overflow series (cardinality cap).
    pub overflow_series: u64,
    /// Its series, sorted by name then labels.
    pub metrics: Vec<Metric>,
}

/// What happened to reports on their way out.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct DeliveryStats {
    /// Reports the endpoint acknowledged.
    pub sent: u64,
    /// Reports waiting in the spool.
    pub spooled: u64,
    /// Reports dropped because the spool was over its quota (oldest first).
    pub spool_dropped: u64,
    /// Reports the endpoint refused with a 4xx that is not retried.
    pub rejected: u64,
    /// Upload attempts that failed and will be retried.
    pub failed_attempts: u64,
    /// Endpoint directives ignored as unknown or malformed.
    pub directives_ignored: u64,
    /// Data points an OTLP endpoint accepted the request for but rejected
    /// (`partial_success`); not retried.
    #[serde(default)]
    pub rejected_points: u64,
}

impl Report {
    /// A new report from this process: fresh `report_id`, `timestamp` now,
    /// this host's facts, no start time, no installation id, no sources, zero delivery
    /// counters. The caller fills in what it knows besides.
    pub fn new(instance_id: Uuid, buffer: BufferStats, plugins: Vec<PluginReport>) -> Report {
        Report {
            schema: REPORT_SCHEMA_VERSION,
            report_id: Uuid::new_v4(),
            instance_id,
            installation_id: None,
            timestamp: humantime::format_rfc3339_seconds(std::time::SystemTime::now()).to_string(),
            started: None,
            host: HostFacts::current(),
            buffer,
            plugins,
            delivery: DeliveryStats::default(),
            sources: Vec::new(),
        }
    }

    /// The report as sent: compact JSON.
    pub fn to_json(&self) -> Vec<u8> {
        // A Report holds only strings, numbers, maps with string keys and
        // finite floats (the host rejects the rest), so this cannot fail.
        serde_json::to_vec(self).unwrap_or_default()
    }
}

/// Most reports in one upload. Bounds the work one request makes at the
/// collector; a hundred reports is hours of backlog.
pub const MAX_BATCH_REPORTS: usize = 100;
/// Largest upload body on the wire (gzip). Reports compress 10-20x, so a
/// full batch of large reports fits.
pub const MAX_UPLOAD_BYTES: usize = 1024 * 1024;
/// Largest upload body after decompression: stops a gzip bomb at the
/// collector, and caps the host's `max_batch_bytes`.
pub const MAX_UPLOAD_DECODED_BYTES: u64 = 16 * 1024 * 1024;

/// What an uploader POSTs: one or more reports, gzip-compressed JSON.
/// A collector also accepts a bare [`Report`].
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ReportBatch {
    /// The reports, oldest first.
    pub reports: Vec<Report>,
}

/// Facts about the host process.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct HostFacts {
    /// sonde's version.
    pub sonde_version: String,
    /// `linux`, `macos`, `windows`, ...
    pub os: String,
    /// `x86_64`, `aarch64`, ...
    pub arch: String,
    /// Logical CPUs available to the process.
    pub cpus: u32,
}

impl HostFacts {
    /// This process: sonde's version, OS, architecture, CPUs.
    pub fn current() -> HostFacts {
        HostFacts {
            sonde_version: env!("CARGO_PKG_VERSION").to_string(),
            os: std::env::consts::OS.to_string(),
            arch: std::env::consts::ARCH.to_string(),
            cpus: std::thread::available_parallelism().map_or(1, |n| n.get() as u32),
        }
    }
}

/// Ring buffer counters. `recorded = processed + dropped` once the buffer is
/// drained, which it is when a report is built.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct BufferStats {
    /// Slots in the ring.
    pub capacity: u64,
    /// Events handed to `record()`.
    pub recorded: u64,
    /// Events taken from the ring and dispatched.
    pub processed: u64,
    /// Events dropped because the ring was full.
    pub dropped: u64,
    /// Events whose string values were cut to fit a slot.
    pub truncated: u64,
    /// Events that set a field their kind does not declare (ignored).
    pub invalid_fields: u64,
}

/// What became of a plugin listed in the manifest.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum PluginState {
    /// Loaded and receiving events.
    Running,
    /// `allow = false` in the manifest: never read, never instantiated.
    Denied,
    /// Could not be loaded (missing file, hash mismatch, forbidden import,
    /// invalid info, ...); see `reason`.
    Refused,
    /// Was running, failed too often, and was stopped; see `reason`.
    Failed,
    /// Switched off for a while, by an endpoint directive or the local cost
    /// breaker; see `reason` and `until`. Receives no events meanwhile.
    Disabled,
    /// Allowed, and still being compiled and checked (off the thread that
    /// dispatches events, under `limits.compile_timeout_secs`). Receives no
    /// events yet; those it misses are counted in `cost.events_skipped`.
    Loading,
}

impl PluginState {
    /// The lower-case name used in reports and the CLI.
    pub fn as_str(self) -> &'static str {
        match self {
            PluginState::Running => "running",
            PluginState::Denied => "denied",
            PluginState::Refused => "refused",
            PluginState::Failed => "failed",
            PluginState::Disabled => "disabled",
            PluginState::Loading => "loading",
        }
    }
}

/// One plugin's part of a report.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct PluginReport {
    /// The name the operator gave it in the manifest.
    pub name: String,
    /// The version the plugin declares (empty if it never loaded).
    pub version: String,
    /// Its state.
    pub state: PluginState,
    /// Why it is not running, when it is not.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub reason: Option<String>,
    /// When a `disabled` plugin comes back, RFC 3339.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub until: Option<String>,
    /// The last failed call, in words (trap, deadline, memory limit).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub last_failure: Option<String>,
    /// Metrics left out of reports by an endpoint directive.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub disabled_metrics: Vec<DisabledMetric>,
    /// What it cost and what of its output was refused.
    pub cost: PluginCost,
    /// Its metrics, sorted by name then labels.
    pub metrics: Vec<Metric>,
}

/// A metric an endpoint asked to leave out of reports, for a while.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct DisabledMetric {
    /// Metric name.
    pub name: String,
    /// Why.
    pub reason: String,
    /// When it comes back, RFC 3339.
    pub until: String,
}

/// Per-plugin accounting.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct PluginCost {
    /// Events delivered to the plugin.
    pub events: u64,
    /// Calls into the plugin (batches and collections).
    pub calls: u64,
    /// Wall time spent inside the plugin, in microseconds.
    pub busy_us: u64,
    /// Traps and other failed calls.
    pub failures: u64,
    /// Times the plugin was re-instantiated after a failure.
    pub restarts: u64,
    /// Metric points dropped because they did not match the declaration.
    pub invalid_points: u64,
    /// Metric points dropped because one `collect` returned more than
    /// `limits.max_points_per_collect`.
    #[serde(default)]
    pub excess_points: u64,
    /// Metric points folded into the overflow series (label cardinality).
    pub overflow_points: u64,
    /// Log lines dropped by the rate limit.
    pub logs_dropped: u64,
    /// Highest linear memory the plugin's instances reached, in bytes.
    #[serde(default)]
    pub peak_memory_bytes: u64,
    /// `failures` by cause.
    #[serde(default)]
    pub failure_kinds: FailureCounts,
    /// Events not delivered because the plugin was waiting to be restarted.
    #[serde(default)]
    pub events_skipped: u64,
    /// Fuel burnt (about one unit per WebAssembly instruction); 0 unless
    /// the runtime meters fuel (`sonde bench`).
    #[serde(default)]
    pub fuel: u64,
}

/// Failed calls by cause.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct FailureCounts {
    /// Ran past its call deadline (epoch interruption).
    pub cpu: u64,
    /// Hit its memory or table limit.
    pub memory: u64,
    /// Overflowed its stack.
    pub stack: u64,
    /// Panicked or reached `unreachable`.
    pub panic: u64,
    /// Any other trap.
    pub other: u64,
}

/// How a metric's values combine.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum MetricKind {
    /// Monotonic count.
    Counter,
    /// Level.
    Gauge,
    /// Distribution over fixed buckets.
    Histogram,
}

impl MetricKind {
    /// The lower-case name used in reports and the CLI.
    pub fn as_str(self) -> &'static str {
        match self {
            MetricKind::Counter => "counter",
            MetricKind::Gauge => "gauge",
            MetricKind::Histogram => "histogram",
        }
    }
}

/// One series of one metric.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Metric {
    /// Declared name, e.g. `http.requests`.
    pub name: String,
    /// Declared kind.
    pub kind: MetricKind,
    /// Declared unit.
    pub unit: String,
    /// Label key to value.
    pub labels: BTreeMap<String, String>,
    /// The value.
    #[serde(flatten)]
    pub value: MetricValue,
}

/// A metric's value: a scalar for counters and gauges, buckets for histograms.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(untagged)]
pub enum MetricValue {
    /// Counter total or gauge level.
    Scalar {
        /// The value.
        value: f64,
    },
    /// Histogram totals.
    Histogram {
        /// Observations.
        count: u64,
        /// Sum of observations.
        sum: f64,
        /// Upper bounds of the buckets, ascending; the last bucket has none.
        bounds: Vec<f64>,
        /// Observations per bucket (not cumulative): `bounds.len() + 1` entries.
        buckets: Vec<u64>,
    },
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_report_round_trips_through_its_json() {
        let report = Report {
            schema: REPORT_SCHEMA_VERSION,
            report_id: Uuid::new_v4(),
            instance_id: Uuid::new_v4(),
            installation_id: None,
            timestamp: "2026-11-22T10:00:00Z".into(),
            started: Some("2026-11-22T09:00:00Z".into()),
            host: HostFacts {
                sonde_version: "0.1.0".into(),
                os: "linux".into(),
                arch: "x86_64".into(),
                cpus: 2,
            },
            buffer: BufferStats {
                capacity: 16,
                recorded: 3,
                processed: 2,
                dropped: 1,
                truncated: 0,
                invalid_fields: 0,
            },
            plugins: vec![PluginReport {
                name: "p".into(),
                version: "1".into(),
                state: PluginState::Running,
                reason: None,
                until: None,
                disabled_metrics: vec![],
                last_failure: None,
                cost: PluginCost::default(),
                metrics: vec![
                    Metric {
                        name: "c".into(),
                        kind: MetricKind::Counter,
                        unit: "1".into(),
                        labels: BTreeMap::from([("k".into(), "v".into())]),
                        value: MetricValue::Scalar { value: 2.0 },
                    },
                    Metric {
                        name: "h".into(),
                        kind: MetricKind::Histogram,
                        unit: "us".into(),
                        labels: BTreeMap::new(),
                        value: MetricValue::Histogram {
                            count: 2,
                            sum: 7.0,
                            bounds: vec![5.0],
                            buckets: vec![1, 1],
                        },
                    },
                ],
            }],
            delivery: DeliveryStats::default(),
            sources: vec![],
        };
        let bytes = report.to_json();
        let back: Report = serde_json::from_slice(&bytes).expect("decodes");
        assert_eq!(back, report);
        let text = String::from_utf8(bytes).expect("utf8");
        assert!(text.contains(r#""labels":{"k":"v"},"value":2.0"#), "{text}");
    }
}
