//! Delivery settings: where reports go, how often, and the limits that keep
//! telemetry polite. All live in the manifest's `[telemetry]` table.
//!
//! ```toml
//! [telemetry]
//! mode = "on"
//! endpoint = "https://telemetry.example.com/v1/reports"  # http:// only for loopback
//! interval = "1h"              # between reports; the first one is jittered
//! min_interval = "5m"          # the endpoint's next_update_secs is clamped
//! max_interval = "24h"         #   into [min_interval, max_interval]
//! max_requests_per_hour = 12   # in any sliding hour
//! max_bytes_per_day = 16777216 # gzip bytes in any sliding day
//! max_batch_bytes = 1048576    # uncompressed JSON per request
//! spool_max_files = 500        # reports kept while the endpoint is away
//! spool_max_bytes = 52428800
//! sent_log_max_files = 100     # requests kept in the record of what left
//! sent_log_max_bytes = 16777216
//! connect_timeout = "10s"
//! request_timeout = "30s"
//! retry_initial = "30s"        # first backoff; doubles, full jitter, up to max_interval
//! proxy = "http://user:pass@proxy:3128"  # optional; credentials never logged
//! protocol = "sonde"           # or "otlp": OTLP/HTTP protobuf to an existing metrics engine
//! service_name = "sonde"       # OTLP only: the resource's `service.name`
//!
//! [telemetry.headers]          # optional request headers, e.g. a token; never logged
//! Authorization = "Bearer ..."
//! ```

use std::collections::BTreeMap;
use std::time::Duration;

use serde::{Deserialize, Serialize};

/// Shortest interval, timeout or backoff the manifest may set. Low enough for
/// tests on loopback; production manifests use minutes.
pub const MIN_DURATION: Duration = Duration::from_millis(100);
/// Longest interval the manifest may set: a week.
pub const MAX_DURATION: Duration = Duration::from_secs(7 * 24 * 3600);
/// Most requests per hour the manifest may allow.
pub const MAX_REQUESTS_PER_HOUR_LIMIT: u32 = 3600;
/// Largest request body (uncompressed) a batch may have: what a collector
/// decodes at most.
pub const MAX_BATCH_BYTES_LIMIT: u64 = crate::report::MAX_UPLOAD_DECODED_BYTES;
/// Most spool files the manifest may allow.
pub const MAX_SPOOL_FILES_LIMIT: u32 = 100_000;
/// Most requests the record of what left may keep (`sent_log_max_files`).
pub const MAX_SENT_LOG_FILES_LIMIT: u32 = 100_000;
/// Fewest bytes the record of what left may be given
/// (`sent_log_max_bytes`): room for the largest request
/// ([`MAX_UPLOAD_BYTES`](crate::MAX_UPLOAD_BYTES)) with the largest answer
/// kept ([`MAX_RESPONSE_BYTES`](crate::MAX_RESPONSE_BYTES)), so the newest
/// request is always kept.
pub const MIN_SENT_LOG_BYTES: u64 = 2 * 1024 * 1024;
/// Most bytes the record of what left may be given: 4 GiB.
pub const MAX_SENT_LOG_BYTES: u64 = 4 * 1024 * 1024 * 1024;

/// Longest `service_name`, in bytes.
pub const MAX_SERVICE_NAME: usize = 128;
/// Most entries in `[telemetry.headers]`.
pub const MAX_HEADERS: usize = 16;
/// Longest header name plus value in `[telemetry.headers]`, in bytes.
pub const MAX_HEADER_BYTES: usize = 4096;

/// What the endpoint speaks.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Protocol {
    /// Batches of sonde reports as gzip JSON, to `sonde-collector` or
    /// anything speaking its protocol; the answer may carry directives.
    #[default]
    Sonde,
    /// OTLP/HTTP: the same metrics as a gzip protobuf
    /// `ExportMetricsServiceRequest`, to any OTLP receiver (an OpenTelemetry
    /// Collector, VictoriaMetrics, ...). Such endpoints send no directives.
    Otlp,
}

impl Protocol {
    /// `sonde` or `otlp`.
    pub fn as_str(self) -> &'static str {
        match self {
            Protocol::Sonde => "sonde",
            Protocol::Otlp => "otlp",
        }
    }
}

/// Where and how reports are sent.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DeliverySettings {
    /// `endpoint`: required when `mode = "on"`.
    pub endpoint: Option<url::Url>,
    /// `interval`, default 1 h.
    pub interval: Duration,
    /// `min_interval`, default 5 min.
    pub min_interval: Duration,
    /// `max_interval`, default 24 h.
    pub max_interval: Duration,
    /// `max_requests_per_hour`, default 12.
    pub max_requests_per_hour: u32,
    /// `max_bytes_per_day` (compressed), default 16 MiB.
    pub max_bytes_per_day: u64,
    /// `max_batch_bytes` (uncompressed), default 1 MiB.
    pub max_batch_bytes: u64,
    /// `spool_max_files`, default 500.
    pub spool_max_files: u32,
    /// `spool_max_bytes`, default 50 MiB.
    pub spool_max_bytes: u64,
    /// `sent_log_max_files`, default 100: requests kept in the state
    /// directory's record of what left (`sonde sent`), oldest out first.
    pub sent_log_max_files: u32,
    /// `sent_log_max_bytes`, default 16 MiB (at least
    /// [`MIN_SENT_LOG_BYTES`]).
    pub sent_log_max_bytes: u64,
    /// `connect_timeout`, default 10 s.
    pub connect_timeout: Duration,
    /// `request_timeout` (whole request), default 30 s.
    pub request_timeout: Duration,
    /// `retry_initial`, default 30 s.
    pub retry_initial: Duration,
    /// `proxy`, default none (no system proxy is used either).
    pub proxy: Option<url::Url>,
    /// `installation_id`, default false: add an installation id to reports,
    /// derived from the random salt in the state directory (copy that salt to
    /// several hosts to group them). Never derived from host facts.
    pub installation_id: bool,
    /// `app_metrics`, default false: include metrics the host application
    /// records itself (attached sources such as the `metrics` bridge).
    pub app_metrics: bool,
    /// `protocol`, default `sonde`.
    pub protocol: Protocol,
    /// `service_name`, default `sonde`: the OTLP resource's `service.name`
    /// (at most [`MAX_SERVICE_NAME`] bytes, printable).
    pub service_name: String,
    /// `[telemetry.headers]`: extra request headers (at most
    /// [`MAX_HEADERS`]), e.g. credentials for an OTLP receiver. Never logged.
    pub headers: BTreeMap<String, String>,
}

impl Default for DeliverySettings {
    fn default() -> Self {
        DeliverySettings {
            endpoint: None,
            interval: Duration::from_secs(3600),
            min_interval: Duration::from_secs(300),
            max_interval: Duration::from_secs(24 * 3600),
            max_requests_per_hour: 12,
            max_bytes_per_day: 16 * 1024 * 1024,
            max_batch_bytes: 1024 * 1024,
            spool_max_files: 500,
            spool_max_bytes: 50 * 1024 * 1024,
            sent_log_max_files: 100,
            sent_log_max_bytes: 16 * 1024 * 1024,
            connect_timeout: Duration::from_secs(10),
            request_timeout: Duration::from_secs(30),
            retry_initial: Duration::from_secs(30),
            proxy: None,
            installation_id: false,
            app_metrics: false,
            protocol: Protocol::Sonde,
            service_name: "sonde".to_string(),
            headers: BTreeMap::new(),
        }
    }
}

/// A URL as it may be logged: scheme, host, port and path, never
/// credentials or query.
pub fn redact(url: &url::Url) -> String {
    let host = url.host_str().unwrap_or("?");
    match url.port() {
        Some(p) => format!("{}://{host}:{p}{}", url.scheme(), url.path()),
        None => format!("{}://{host}{}", url.scheme(), url.path()),
    }
}

/// Whether `url` points at this machine (`localhost`, 127.0.0.0/8, `::1`).
pub fn is_loopback(url: &url::Url) -> bool {
    match url.host() {
        Some(url::Host::Domain(d)) => d.eq_ignore_ascii_case("localhost"),
        Some(url::Host::Ipv4(ip)) => ip.is_loopback(),
        Some(url::Host::Ipv6(ip)) => ip.is_loopback(),
        None => false,
    }
}
