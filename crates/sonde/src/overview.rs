//! The operator's view of plugins, for `sonde list` and `sonde check`.

use std::path::PathBuf;

use serde::Serialize;
use sonde_core::{MetricKind, PluginCost, PluginLimits, PluginState};

/// One plugin as the operator sees it.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct PluginOverview {
    /// Name from the manifest.
    pub name: String,
    /// The component file.
    pub path: PathBuf,
    /// Running, denied, refused or failed.
    pub state: PluginState,
    /// Why it is not running.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub reason: Option<String>,
    /// When a disabled plugin comes back, RFC 3339.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub until: Option<String>,
    /// Declared version (empty unless it loaded).
    pub version: String,
    /// Declared description (empty unless it loaded).
    pub description: String,
    /// Event kinds the manifest grants.
    pub granted_events: Vec<String>,
    /// Granted kinds the plugin also declared: what it will receive.
    pub subscribed_events: Vec<String>,
    /// Whether its compiled code came from the compile cache.
    pub from_cache: bool,
    /// Declared metrics.
    pub metrics: Vec<DeclaredMetric>,
    /// Declared event kinds, with the fields each reads (empty unless it
    /// loaded).
    pub events: Vec<DeclaredEvent>,
    /// The manifest's `deny_metrics`: never reported.
    pub deny_metrics: Vec<String>,
    /// The limits it runs under.
    pub limits: PluginLimits,
    /// What it has cost so far.
    pub cost: PluginCost,
}

/// A metric a plugin declares.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct DeclaredMetric {
    /// Name, e.g. `http.requests`.
    pub name: String,
    /// Counter, gauge or histogram.
    pub kind: MetricKind,
    /// Unit.
    pub unit: String,
    /// What it measures.
    pub description: String,
    /// Label keys.
    pub label_keys: Vec<String>,
    /// Histogram bucket bounds.
    pub buckets: Vec<f64>,
    /// Denied by the operator (`deny_metrics`): its points are dropped
    /// where they leave the plugin and never reported.
    pub denied: bool,
}

/// An event kind a plugin declares it reads.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct DeclaredEvent {
    /// The kind, e.g. `http.request`.
    pub kind: String,
    /// The fields it reads.
    pub fields: Vec<DeclaredField>,
}

/// A field of an event kind a plugin reads.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct DeclaredField {
    /// Field name, e.g. `status`.
    pub name: String,
    /// `int`, `float` or `str`.
    #[serde(rename = "type")]
    pub ty: &'static str,
}
