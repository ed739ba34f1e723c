//! # The sonde data model
//!
//! The types every part of sonde agrees on, with no runtime attached: the host
//! (`sonde`), the `sonde` CLI and the reference collector all read and write
//! these, so a report serialized by one is decoded by another with the same
//! code.
//!
//! - [`Manifest`]: the operator's TOML manifest, parsed and validated, with
//!   errors that name the file, line and key ([`ManifestError`]).
//! - [`EventRecord`] and [`parse_events_jsonl`]: events as JSON lines, the
//!   format of `--events FILE.jsonl`.
//! - [`Report`], [`PluginReport`], [`Metric`]: what leaves the host, byte for
//!   byte ([`Report::to_json`]).
//!
//! Every quantity read from a file or a peer has a named limit in [`limits`].
//! Text chosen by a plugin or a peer is shown through
//! [`text::escape_control`].

#![deny(missing_docs)]

mod delivery;
mod directive;
mod event;
pub mod limits;
mod location;
mod manifest;
mod plugin_limits;
mod report;
pub mod text;

pub use delivery::{
    DeliverySettings, MAX_HEADER_BYTES, MAX_HEADERS, MAX_SENT_LOG_BYTES, MAX_SENT_LOG_FILES_LIMIT,
    MAX_SERVICE_NAME, MIN_SENT_LOG_BYTES, Protocol, is_loopback, redact,
};
pub use directive::{
    Directive, EndpointResponse, MAX_DIRECTIVE_METRICS, MAX_DIRECTIVE_TEXT, MAX_DIRECTIVES,
    MAX_DISABLE_SECS, MAX_RESPONSE_BYTES, MIN_DISABLE_SECS, ParsedResponse,
};
pub use event::{EventRecord, EventsError, FieldValue, parse_events_jsonl, read_events_file};
pub use location::{Location, toml_key_at};
pub use manifest::{Manifest, ManifestError, Mode, PluginSpec, TelemetrySettings};
pub use plugin_limits::PluginLimits;
pub use report::{
    BufferStats, DeliveryStats, DisabledMetric, FailureCounts, HostFacts, Ident, MAX_BATCH_REPORTS,
    MAX_UPLOAD_BYTES, MAX_UPLOAD_DECODED_BYTES, Metric, MetricKind, MetricValue, PluginCost,
    PluginReport, PluginState, REPORT_SCHEMA_VERSION, Report, ReportBatch, ReportError,
    SourceReport,
};
