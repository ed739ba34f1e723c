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
}
