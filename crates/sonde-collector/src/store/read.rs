//! What the read and admin API list: instances and directives.

use serde::Serialize;
use sonde_core::Directive;
use uuid::Uuid;

use super::DirectiveSource;

/// One host instance the collector has heard from.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct InstanceSummary {
    /// Its `instance_id`.
    pub instance_id: Uuid,
    /// When its first report was stored, RFC 3339.
    pub first_seen: String,
    /// When its latest report was stored, RFC 3339.
    pub last_seen: String,
    /// Reports stored (duplicates excluded).
    pub reports: u64,
}

/// A directive as stored, for `GET /v1/directives`.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct StoredDirective {
    /// Its id.
    pub id: i64,
    /// The instance it is for; `None` for every instance.
    pub instance_id: Option<Uuid>,
    /// The directive, as sent.
    pub directive: Directive,
    /// Who made it.
    pub source: DirectiveSource,
    /// When, RFC 3339.
    pub created_at: String,
    /// Instances it has been delivered to.
    pub delivered: u64,
}

/// A directive delivered to an instance, for its page.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct DeliveredDirective {
    /// The directive's id.
    pub id: i64,
    /// The directive, as sent.
    pub directive: Directive,
    /// Who made it.
    pub source: DirectiveSource,
    /// When it went out, RFC 3339.
    pub delivered_at: String,
    /// The first report of the upload whose answer carried it.
    pub report_id: Uuid,
}

/// The rows of a time window the fleet figures are made of
/// ([`crate::fleet`]), each list newest first and at most the limit asked
/// for. The same on both backends: the figures are computed from these in
/// Rust, once.
#[derive(Debug, Clone, Default)]
pub(crate) struct WindowRows {
    pub(crate) reports: Vec<ReportFact>,
    pub(crate) plugins: Vec<PluginFact>,
    pub(crate) metrics: Vec<MetricFact>,
    /// `disable_plugin` directives delivered, newest first (whatever the
    /// window: a disable may last longer).
    pub(crate) disables: Vec<DisableFact>,
    /// A list was cut at the limit: the oldest rows of the window are left
    /// out.
    pub(crate) truncated: bool,
}

impl WindowRows {
    /// Cuts each list to `limit`, noting whether any was longer.
    pub(crate) fn cut(&mut self, limit: u32) {
        let limit = limit as usize;
        self.truncated = self.reports.len() > limit
            || self.plugins.len() > limit
            || self.metrics.len() > limit
            || self.disables.len() > limit;
        self.reports.truncate(limit);
        self.plugins.truncate(limit);
        self.metrics.truncate(limit);
        self.disables.truncate(limit);
    }
}

/// A report's runtime facts.
#[derive(Debug, Clone, PartialEq)]
pub(crate) struct ReportFact {
    pub(crate) instance_id: Uuid,
    /// Its row id: later reports have larger ones.
    pub(crate) report: i64,
    /// Milliseconds since the Unix epoch.
    pub(crate) received_ms: i64,
    pub(crate) sonde_version: String,
    pub(crate) os: String,
    pub(crate) arch: String,
}

/// A plugin of a report: its state and its cost over the interval.
#[derive(Debug, Clone, PartialEq)]
pub(crate) struct PluginFact {
    pub(crate) instance_id: Uuid,
    pub(crate) report: i64,
    pub(crate) plugin: String,
    pub(crate) state: String,
    pub(crate) reason: Option<String>,
    pub(crate) d_events: Option<i64>,
    pub(crate) d_busy_us: Option<i64>,
    pub(crate) d_failures: Option<i64>,
    pub(crate) peak_memory_bytes: i64,
}

/// A metric series of a report.
#[derive(Debug, Clone, PartialEq)]
pub(crate) struct MetricFact {
    pub(crate) instance_id: Uuid,
    pub(crate) report: i64,
    pub(crate) origin: String,
    pub(crate) owner: String,
    pub(crate) name: String,
    pub(crate) kind: String,
    pub(crate) unit: String,
    /// JSON object (the backends print it differently: parse it).
    pub(crate) labels: String,
    pub(crate) value: Option<f64>,
    pub(crate) delta: Option<f64>,
}

/// A `disable_plugin` directive delivered to an instance.
#[derive(Debug, Clone, PartialEq)]
pub(crate) struct DisableFact {
    pub(crate) instance_id: Uuid,
    pub(crate) source: DirectiveSource,
    pub(crate) directive: Directive,
}
