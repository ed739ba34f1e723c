//! Reports: what leaves the host, and what `sonde preview` shows.
//!
//! A report is serialized once, by [`Report::to_json`], and those bytes are
//! both what `preview --format json` prints and what an uploader sends.
//! Values are cumulative since the host started, so a lost report loses no
//! counts: the next one carries them.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};
use uuid::Uuid;

use crate::limits::{MAX_IDENT_CONTACT, MAX_IDENT_DESCRIPTION};

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
    /// The ident channel: who runs this installation, only when the
    /// operator's manifest sets `[telemetry.ident]` (off by default).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ident: Option<Ident>,
}

/// What the operator chose to say about the installation
/// (`[telemetry.ident]`): identifying on purpose, so off unless set, and
/// sent only as set. Bounded: [`MAX_IDENT_CONTACT`],
/// [`MAX_IDENT_DESCRIPTION`], no control characters.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Ident {
    /// How to reach whoever runs it (an e-mail address, a URL).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub contact: Option<String>,
    /// What the installation is.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub description: Option<String>,
}

impl Ident {
    /// What keeps this ident out of a report, if anything: a field past its
    /// limit, or holding a control character.
    pub fn problem(&self) -> Option<&'static str> {
        let bad = |s: &Option<String>, max: usize| {
            s.as_ref().is_some_and(|s| s.len() > max || s.chars().any(char::is_control))
        };
        if bad(&self.contact, MAX_IDENT_CONTACT) {
            Some("ident contact is too long or holds a control character")
        } else if bad(&self.description, MAX_IDENT_DESCRIPTION) {
            Some("ident description is too long or holds a control character")
        } else {
            None
        }
    }
}

/// Metrics from a source inside the host application.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct SourceReport {
    /// The source's name, e.g. `metrics`.
    pub name: String,
    /// Registrations folded into overflow series (cardinality cap).
    pub overflow_series: u64,
    /// Values the source itself refused since it started, as it counts them
    /// (`sonde::MetricSource::dropped_values`; the `metrics` bridge counts NaN or infinite gauge values and observations,
    /// and observations that would have made a histogram's sum infinite).
    #[serde(default)]
    pub dropped_values: u64,
    /// Series left out of this report because they held something a report
    /// cannot carry (see [`Metric::problem`]): a NaN or infinite value, or a
    /// histogram whose buckets do not fit its bounds. Counted per report, not
    /// cumulatively: a source that keeps such a series is counted each time.
    #[serde(default)]
    pub invalid_series: u64,
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
            ident: None,
        }
    }

    /// The report as sent: compact JSON.
    ///
    /// Never bytes that [`Report::from_json`] would refuse: a report that
    /// fails [`Report::validate`] (which the host's own checks prevent) is
    /// written as a [`sanitize`](Report::sanitize)d copy, without the series
    /// that would fail and with them counted.
    pub fn to_json(&self) -> Vec<u8> {
        // A valid Report holds only strings, integers, maps with string keys
        // and finite floats, so serializing it cannot fail.
        if self.validate().is_ok() {
            return serde_json::to_vec(self).unwrap_or_default();
        }
        let mut clean = self.clone();
        clean.sanitize();
        serde_json::to_vec(&clean).unwrap_or_default()
    }

    /// Reads a report from its JSON, as every reader does (the host's spool,
    /// a collector): it must decode and pass [`Report::validate`].
    pub fn from_json(json: &[u8]) -> Result<Report, ReportError> {
        let report: Report = serde_json::from_slice(json).map_err(ReportError::Json)?;
        report.validate()?;
        Ok(report)
    }

    /// Checks what a reader requires of a report beyond its shape: every
    /// series passes [`Metric::problem`], and the ident, if any,
    /// [`Ident::problem`]. The writer's side of the same check is
    /// [`Report::sanitize`].
    pub fn validate(&self) -> Result<(), ReportError> {
        if let Some(problem) = self.ident.as_ref().and_then(Ident::problem) {
            return Err(ReportError::Invalid { series: "ident".into(), problem });
        }
        let plugins = self.plugins.iter().map(|p| ("plugin", &p.name, &p.metrics));
        let sources = self.sources.iter().map(|s| ("source", &s.name, &s.metrics));
        for (what, name, metrics) in plugins.chain(sources) {
            for m in metrics {
                if let Some(problem) = m.problem() {
                    return Err(ReportError::Invalid {
                        series: format!(
                            "{what} `{}`, metric `{}`",
                            crate::text::escape_control(name),
                            crate::text::escape_control(&m.name)
                        ),
                        problem,
                    });
                }
            }
        }
        Ok(())
    }

    /// Drops every series that would fail [`Report::validate`], counting each
    /// in its plugin's `cost.invalid_points` or its source's
    /// `invalid_series`; returns how many were dropped. An ident that fails
    /// [`Ident::problem`] (which the manifest's checks prevent) is left out.
    /// The last check before a report is written: afterwards it always
    /// validates.
    pub fn sanitize(&mut self) -> u64 {
        if self.ident.as_ref().is_some_and(|i| i.problem().is_some()) {
            self.ident = None;
        }
        let mut dropped = 0;
        for p in &mut self.plugins {
            let n = drop_invalid(&mut p.metrics);
            p.cost.invalid_points = p.cost.invalid_points.saturating_add(n);
            dropped += n;
        }
        for s in &mut self.sources {
            let n = drop_invalid(&mut s.metrics);
            s.invalid_series = s.invalid_series.saturating_add(n);
            dropped += n;
        }
        dropped
    }
}

/// Removes the series of `metrics` that have a [`Metric::problem`]; returns
/// how many.
fn drop_invalid(metrics: &mut Vec<Metric>) -> u64 {
    let before = metrics.len();
    metrics.retain(|m| m.problem().is_none());
    (before - metrics.len()) as u64
}

impl ReportBatch {
    /// Reads a batch from its JSON: it must decode and every report in it
    /// pass [`Report::validate`].
    pub fn from_json(json: &[u8]) -> Result<ReportBatch, ReportError> {
        let batch: ReportBatch = serde_json::from_slice(json).map_err(ReportError::Json)?;
        for r in &batch.reports {
            r.validate()?;
        }
        Ok(batch)
    }
}

/// A report (or batch) that cannot be read.
#[derive(Debug, thiserror::Error)]
pub enum ReportError {
    /// Not the JSON of a report: malformed, a missing field, a `null` where
    /// a number belongs (which is how JSON writers spell NaN and infinity).
    #[error("not a report: {0}")]
    Json(serde_json::Error),
    /// Decodes, but holds a series no report may carry.
    #[error("{series}: {problem}")]
    Invalid {
        /// Which series: plugin or source and metric name (escaped).
        series: String,
        /// What is wrong with it ([`Metric::problem`]).
        problem: &'static str,
    },
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
    /// A state this reader does not know: a newer host wrote it. Readers
    /// (a collector) keep such a report rather than refuse it; this host
    /// never writes it.
    #[serde(other)]
    Unknown,
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
            PluginState::Unknown => "unknown",
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
    /// Metrics the operator's manifest denies (`deny_metrics`): never in
    /// any report, whatever an endpoint says; their points are counted in
    /// `cost.denied_points`.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub denied_metrics: Vec<String>,
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
    /// Metric points dropped because they did not match the declaration
    /// (wrong kind or labels, NaN, an infinity, a negative counter delta,
    /// ...). Also counts series the last check before a report is written
    /// ([`Report::sanitize`]) left out, which the host's own validation
    /// makes unreachable.
    pub invalid_points: u64,
    /// Metric points dropped because folding them into their series would
    /// have made a cumulative total infinite: a counter's total or a
    /// histogram's sum past the largest finite number (`f64::MAX`), though
    /// each delta alone was finite. The total stays what it was.
    #[serde(default)]
    pub non_finite_totals: u64,
    /// Metric points dropped because one `collect` returned more than
    /// `limits.max_points_per_collect`.
    #[serde(default)]
    pub excess_points: u64,
    /// Metric points folded into the overflow series (label cardinality).
    pub overflow_points: u64,
    /// Metric points of a metric the operator denies (`deny_metrics`),
    /// dropped where they leave the plugin, before any series holds them.
    #[serde(default)]
    pub denied_points: u64,
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
    /// A kind this reader does not know: a newer host wrote it, with a
    /// scalar, a histogram or a value of a new shape
    /// ([`MetricValue::Other`]). Readers keep it; this host never writes it.
    #[serde(other)]
    Unknown,
}

impl MetricKind {
    /// The lower-case name used in reports and the CLI.
    pub fn as_str(self) -> &'static str {
        match self {
            MetricKind::Counter => "counter",
            MetricKind::Gauge => "gauge",
            MetricKind::Histogram => "histogram",
            MetricKind::Unknown => "unknown",
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

impl Metric {
    /// What keeps this series out of a report, if anything: a value or
    /// histogram sum that is NaN or infinite (JSON has no such numbers; a
    /// writer would put `null` there and every reader refuse the report), or
    /// a histogram whose bounds are not finite and strictly ascending or
    /// whose buckets are not one more than its bounds. A value of another
    /// shape ([`MetricValue::Other`]) is only taken under a kind this reader
    /// does not know ([`MetricKind::Unknown`]): under a known kind it is a
    /// broken value (e.g. `null` where a number belongs).
    pub fn problem(&self) -> Option<&'static str> {
        match &self.value {
            MetricValue::Other(_) if self.kind == MetricKind::Unknown => None,
            MetricValue::Other(_) => Some("value does not have the shape its kind needs"),
            MetricValue::Scalar { value } if !value.is_finite() => {
                Some("value is not a finite number")
            }
            MetricValue::Scalar { .. } => None,
            MetricValue::Histogram { sum, bounds, buckets, .. } => {
                if !sum.is_finite() {
                    Some("histogram sum is not a finite number")
                } else if bounds.iter().any(|b| !b.is_finite())
                    || bounds.windows(2).any(|w| w[0] >= w[1])
                {
                    Some("histogram bounds are not finite and strictly ascending")
                } else if buckets.len() != bounds.len() + 1 {
                    Some("histogram buckets are not one more than its bounds")
                } else {
                    None
                }
            }
        }
    }
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
    /// A value of a shape this reader does not know, as its fields were
    /// written (a newer host's new kind, e.g. a summary with quantiles).
    /// Only valid under [`MetricKind::Unknown`] ([`Metric::problem`]); this
    /// host never writes it.
    Other(serde_json::Map<String, serde_json::Value>),
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
                denied_metrics: vec!["d".into()],
                last_failure: None,
                cost: PluginCost { denied_points: 3, ..PluginCost::default() },
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
            ident: Some(Ident { contact: Some("ops@example.com".into()), description: None }),
        };
        let bytes = report.to_json();
        let back: Report = serde_json::from_slice(&bytes).expect("decodes");
        assert_eq!(back, report);
        let text = String::from_utf8(bytes).expect("utf8");
        assert!(text.contains(r#""labels":{"k":"v"},"value":2.0"#), "{text}");
        assert!(text.contains(r#""ident":{"contact":"ops@example.com"}"#), "{text}");
        assert!(text.contains(r#""denied_metrics":["d"]"#), "{text}");
    }

    #[test]
    fn an_ident_is_sent_only_when_set_and_only_within_its_bounds() {
        let mut report = Report::new(Uuid::nil(), BufferStats::default(), vec![]);
        let json = String::from_utf8(report.to_json()).expect("utf8");
        assert!(!json.contains("ident"), "off unless set: {json}");
        report.ident = Some(Ident {
            contact: Some("x".repeat(MAX_IDENT_CONTACT + 1)),
            description: Some("fine".into()),
        });
        let raw = serde_json::to_vec(&report).expect("serializes");
        let err = Report::from_json(&raw).expect_err("a reader refuses it");
        assert!(err.to_string().starts_with("ident: ident contact"), "{err}");
        let written = Report::from_json(&report.to_json()).expect("the writer leaves it out");
        assert_eq!(written.ident, None);
        report.ident = Some(Ident { contact: None, description: Some("a\u{1b}[2K".into()) });
        assert!(report.validate().is_err(), "a control character is refused");
        report.ident = Some(Ident { contact: None, description: Some("é".repeat(512)) });
        assert!(report.validate().is_ok(), "1024 bytes of text are fine");
    }

    fn series(name: &str, value: MetricValue) -> Metric {
        Metric {
            name: name.into(),
            kind: MetricKind::Gauge,
            unit: String::new(),
            labels: BTreeMap::new(),
            value,
        }
    }

    fn hist(sum: f64, bounds: Vec<f64>, buckets: Vec<u64>) -> MetricValue {
        MetricValue::Histogram { count: buckets.iter().sum(), sum, bounds, buckets }
    }

    #[test]
    fn what_a_reader_refuses_the_writer_never_writes() {
        let plugin = |name: &str, metrics| PluginReport {
            name: name.into(),
            version: String::new(),
            state: PluginState::Running,
            reason: None,
            until: None,
            last_failure: None,
            disabled_metrics: vec![],
            denied_metrics: vec![],
            cost: PluginCost::default(),
            metrics,
        };
        let good = series("good", MetricValue::Scalar { value: f64::MAX });
        let mut report = Report::new(
            Uuid::nil(),
            BufferStats::default(),
            vec![
                plugin("neighbour", vec![good.clone()]),
                plugin(
                    "bad\u{1b}",
                    vec![
                        series("inf", MetricValue::Scalar { value: f64::INFINITY }),
                        good.clone(),
                        series("nan-sum", hist(f64::NAN, vec![1.0], vec![1, 0])),
                        series("short", hist(1.0, vec![1.0], vec![1])),
                        series("unsorted", hist(1.0, vec![2.0, 1.0], vec![1, 0, 0])),
                        series("inf-bound", hist(1.0, vec![f64::INFINITY], vec![1, 0])),
                    ],
                ),
            ],
        );
        report.sources.push(SourceReport {
            name: "metrics".into(),
            overflow_series: 0,
            dropped_values: 0,
            invalid_series: 0,
            metrics: vec![series("nan", MetricValue::Scalar { value: f64::NAN }), good.clone()],
        });
        let err = report.validate().expect_err("invalid");
        assert!(err.to_string().starts_with(r"plugin `bad\u{1b}`, metric `inf`"), "{err}");

        // Written as it is, NaN and infinity would be `null`, which no
        // reader takes under a kind it knows.
        let raw = serde_json::to_vec(&report).expect("serializes");
        let err = Report::from_json(&raw).expect_err("refused");
        assert!(err.to_string().contains("metric `inf`: value does not have the shape"), "{err}");

        // to_json never writes that: it writes the report without them.
        let written = report.to_json();
        let back = Report::from_json(&written).expect("a written report is readable");
        assert_eq!(back.plugins[0].metrics, vec![good.clone()]);
        assert_eq!(back.plugins[1].metrics, vec![good.clone()]);
        assert_eq!(back.plugins[1].cost.invalid_points, 5);
        assert_eq!(back.plugins[0].cost.invalid_points, 0);
        assert_eq!(back.sources[0].metrics, vec![good]);
        assert_eq!(back.sources[0].invalid_series, 1);

        // sanitize is the same pass, in place.
        assert_eq!(report.sanitize(), 6);
        assert!(report.validate().is_ok());
        assert_eq!(report.to_json(), serde_json::to_vec(&report).expect("serializes"));
        let batch = format!(r#"{{"reports":[{}]}}"#, String::from_utf8_lossy(&written));
        assert_eq!(ReportBatch::from_json(batch.as_bytes()).expect("batch").reports.len(), 1);
    }

    #[test]
    fn a_decoded_report_with_an_impossible_histogram_is_refused() {
        let mut report = Report::new(Uuid::nil(), BufferStats::default(), vec![]);
        report.sources.push(SourceReport {
            name: "m".into(),
            overflow_series: 0,
            dropped_values: 0,
            invalid_series: 0,
            metrics: vec![series("h", hist(1.0, vec![1.0, 2.0], vec![1]))],
        });
        let json = serde_json::to_vec(&report).expect("serializes");
        let err = Report::from_json(&json).expect_err("refused");
        assert!(matches!(err, ReportError::Invalid { .. }), "{err}");
        let batch = format!(r#"{{"reports":[{}]}}"#, String::from_utf8_lossy(&json));
        assert!(ReportBatch::from_json(batch.as_bytes()).is_err());
    }

    /// A report as a newer host could write it: a plugin state, a metric
    /// kind and a value shape this reader does not know, and a field it has
    /// never heard of.
    const NEWER: &str = r#"{"schema":1,"report_id":"6f1c1f5e-8d59-4a8e-9f57-0d0c4c5e9a01",
        "instance_id":"0b0c6a43-2d1a-4f7e-a2c1-8f5b2f0c7e11","timestamp":"2027-01-01T00:00:00Z",
        "host":{"sonde_version":"9.0.0","os":"linux","arch":"riscv64","cpus":64,"numa":2},
        "buffer":{"capacity":16,"recorded":0,"processed":0,"dropped":0,"truncated":0,"invalid_fields":0},
        "plugins":[{"name":"p","version":"2","state":"hibernating","cost":{"events":1,"calls":1,
          "busy_us":1,"failures":0,"restarts":0,"invalid_points":0,"overflow_points":0,"logs_dropped":0},
          "metrics":[
            {"name":"c","kind":"counter","unit":"1","labels":{},"value":3.0},
            {"name":"g","kind":"gauge_delta","unit":"1","labels":{},"value":-1.5},
            {"name":"s","kind":"summary","unit":"ms","labels":{"q":"x"},"count":3,"quantiles":{"0.5":2.0}}
          ]}]}"#;

    #[test]
    fn a_newer_host_s_unknown_state_kind_and_value_shape_are_read_not_refused() {
        let report = Report::from_json(NEWER.as_bytes()).expect("a newer report is read");
        let p = &report.plugins[0];
        assert_eq!(p.state, PluginState::Unknown);
        assert_eq!(p.state.as_str(), "unknown");
        assert_eq!(p.metrics[0].kind, MetricKind::Counter);
        assert_eq!(p.metrics[1].kind, MetricKind::Unknown);
        assert_eq!(p.metrics[1].value, MetricValue::Scalar { value: -1.5 });
        assert_eq!(p.metrics[2].kind, MetricKind::Unknown);
        let MetricValue::Other(fields) = &p.metrics[2].value else {
            panic!("{:?}", p.metrics[2].value);
        };
        assert_eq!(fields["count"], 3);
        assert_eq!(fields["quantiles"]["0.5"], 2.0);
        // What was read is written back with the unknown value's fields
        // as they were.
        let back = Report::from_json(&serde_json::to_vec(&report).expect("writes")).expect("reads");
        assert_eq!(back, report);
    }

    #[test]
    fn a_known_kind_with_a_value_of_another_shape_is_still_refused() {
        let broken = NEWER.replace(r#""kind":"summary""#, r#""kind":"histogram""#);
        let err = Report::from_json(broken.as_bytes()).expect_err("refused");
        assert!(err.to_string().contains("metric `s`: value does not have the shape"), "{err}");
    }

    #[test]
    fn this_host_never_writes_the_reader_only_variants() {
        // Serialized, the reader-only variants would be a state and a kind
        // named `unknown`; a host report's states and kinds are its own.
        let json = serde_json::to_string(&PluginState::Unknown).expect("serializes");
        assert_eq!(json, r#""unknown""#);
        let report = Report::new(Uuid::nil(), BufferStats::default(), vec![]);
        let text = String::from_utf8(report.to_json()).expect("utf8");
        assert!(!text.contains("unknown"), "{text}");
    }
}
