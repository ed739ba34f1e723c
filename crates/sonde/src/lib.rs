//! # sonde: in-process telemetry with sandboxed collectors
//!
//! A server records events on its request path; sonde batches them to
//! third-party metric collectors running as WebAssembly components, and
//! builds reports the operator can preview byte for byte.
//!
//! - [`Telemetry`]: the handle. [`Telemetry::record`] never blocks, never
//!   allocates and never logs; a full ring drops and counts.
//! - [`EventKind`] and [`Event`]: declare a kind once, record events that
//!   are written straight into preallocated ring slots.
//! - [`TelemetryBuilder`]: start the runtime from a [`Manifest`].
//! - [`Telemetry::report`]: the [`Report`] that would leave the host.
//! - [`PluginOverview`]: what the operator sees per plugin.
//! - [`sent_requests`] and [`sent_record`]: the record of every request
//!   that left the host (`sonde sent`).
//! - [`Telemetry::prometheus_text`]: the site owner's local view, in the
//!   Prometheus text format.
//!
//! ```no_run
//! use sonde::{EventKind, Manifest, Telemetry};
//! static HTTP: EventKind = EventKind::new("http.request", &["method", "status"]);
//! # fn main() -> Result<(), Box<dyn std::error::Error>> {
//! let manifest = Manifest::load("sonde.toml".as_ref())?;
//! let telemetry = Telemetry::builder(manifest).start()?;
//! telemetry.record(HTTP.event().str("method", "GET").int("status", 200));
//! let report = telemetry.report()?;
//! println!("{}", String::from_utf8_lossy(&report.to_json()));
//! # Ok(()) }
//! ```
//!
//! Data flows one way: `event` → `ring` → `dispatch` → `plugin` (batch,
//! call, validate into series) → report.

#![deny(missing_docs)]

mod bindings;
mod cache;
mod compile;
mod dispatch;
mod engine;
mod error;
mod event;
mod overview;
mod own;
mod plugin;
mod prometheus;
mod ring;
mod source;
mod state;
mod status;
mod switches;
mod telemetry;
mod upload;

pub use error::Error;
pub use event::{
    Event, EventKind, MAX_EVENT_TEXT, MAX_FIELDS, MAX_INTERNED_KINDS, Value, events_from_records,
};
pub use overview::{DeclaredEvent, DeclaredField, DeclaredMetric, PluginOverview};
pub use plugin::{MAX_PLUGIN_BYTES, MAX_PLUGIN_MEMORY, MAX_PLUGIN_TABLE_ELEMENTS};
pub use prometheus::PROMETHEUS_CONTENT_TYPE;
pub use sonde_core::{
    BufferStats, EventRecord, FailureCounts, Manifest, ManifestError, Metric, MetricKind,
    MetricValue, Mode, PluginCost, PluginLimits, PluginReport, PluginState, Protocol, Report,
};
pub use source::{MAX_SOURCES, Source as MetricSource};
pub use status::{
    PluginSummary, STOPPED_FILE, Status, SwitchedOff, UploadStatus, status, stopped_reason,
};
pub use switches::{Off, Source, Switches};
pub use telemetry::{MIN_VIEW_INTERVAL, Telemetry, TelemetryBuilder, effective_mode};
pub use upload::SendOutcome;
pub use upload::sent::{SentRecord, SentRequest, sent_record, sent_requests};

/// Benchmark plumbing (`benches/`); not a stable API.
#[doc(hidden)]
pub mod __bench {
    pub use crate::plugin::bench::PluginStart;
    pub use crate::upload::transport::gzip;
}
pub use upload::otlp::encode_reports as otlp_body;
