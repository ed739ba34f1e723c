//! What `sonde status` shows, read from the state directory without
//! starting anything or writing anything.

use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};
use sonde_core::{Manifest, Mode, redact};

use crate::switches::{Source, Switches, unix};

/// File in the state directory that records a stop for good (its reason).
/// Delete it to let telemetry run again.
pub const STOPPED_FILE: &str = "stopped";
/// File in the state directory with the uploader's last known state.
pub(crate) const STATUS_FILE: &str = "status.json";
/// File in the state directory with each plugin's state and cost as of the
/// last report.
pub(crate) const PLUGINS_FILE: &str = "plugins.json";
/// Largest status or stop file read back.
const MAX_STATE_FILE: u64 = 64 * 1024;

/// The uploader's state, as last written (times in RFC 3339).
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct UploadStatus {
    /// Last report built.
    pub last_report: Option<String>,
    /// Last upload attempt.
    pub last_attempt: Option<String>,
    /// Last upload the endpoint accepted.
    pub last_success: Option<String>,
    /// Next report due.
    pub next_report: Option<String>,
    /// Since when delivery has been failing, if it is.
    pub failing_since: Option<String>,
    /// The last failure.
    pub last_error: Option<String>,
    /// Why telemetry was stopped for good, if it was.
    pub stopped: Option<String>,
    /// Reports in the spool.
    pub spooled: u64,
    /// Bytes in the spool.
    pub spool_bytes: u64,
}

fn read_small(path: &Path) -> Option<Vec<u8>> {
    let meta = std::fs::metadata(path).ok()?;
    (meta.len() <= MAX_STATE_FILE).then(|| std::fs::read(path).ok()).flatten()
}

impl UploadStatus {
    pub(crate) fn load(state_dir: &Path) -> UploadStatus {
        read_small(&state_dir.join(STATUS_FILE))
            .and_then(|b| serde_json::from_slice(&b).ok())
            .unwrap_or_default()
    }

    pub(crate) fn save(&self, state_dir: &Path) {
        let bytes = serde_json::to_vec_pretty(self).unwrap_or_default();
        if let Err(e) = crate::state::write_private(&state_dir.join(STATUS_FILE), &bytes) {
            tracing::debug!("cannot save the upload status: {e}");
        }
    }
}

/// Why telemetry was stopped for good, if it was.
pub fn stopped_reason(state_dir: &Path) -> Option<String> {
    read_small(&state_dir.join(STOPPED_FILE))
        .map(|b| String::from_utf8_lossy(&b).trim().to_string())
}

/// One thing switched off.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct SwitchedOff {
    /// The plugin.
    pub plugin: String,
    /// The metric, when only a metric is off.
    pub metric: Option<String>,
    /// Why.
    pub reason: String,
    /// Until when, RFC 3339.
    pub until: String,
    /// Who switched it off.
    pub source: Source,
}

/// Everything `sonde status` reports.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Status {
    /// The mode in effect.
    pub mode: Mode,
    /// Why it is off when an environment kill switch says so.
    pub off_because: Option<String>,
    /// The endpoint, without credentials.
    pub endpoint: Option<String>,
    /// What the endpoint speaks.
    pub protocol: sonde_core::Protocol,
    /// The state directory.
    pub state_dir: PathBuf,
    /// The instance id, once one was created.
    pub instance_id: Option<String>,
    /// Why telemetry was stopped for good, if it was.
    pub stopped: Option<String>,
    /// The uploader's last known state.
    pub upload: UploadStatus,
    /// Plugins and metrics switched off right now.
    pub switched_off: Vec<SwitchedOff>,
    /// Each plugin as of the last report built (state, reason, cost).
    pub plugins: Vec<PluginSummary>,
}

/// One plugin as of the last report: what `sonde status` shows.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct PluginSummary {
    /// Manifest name.
    pub name: String,
    /// State then.
    pub state: sonde_core::PluginState,
    /// Why it was not running.
    pub reason: Option<String>,
    /// Until when it is disabled.
    pub until: Option<String>,
    /// The last failed call.
    pub last_failure: Option<String>,
    /// Its cost so far.
    pub cost: sonde_core::PluginCost,
    /// When this was written, RFC 3339.
    pub at: String,
}

impl PluginSummary {
    pub(crate) fn of(p: &sonde_core::PluginReport, at: &str) -> PluginSummary {
        PluginSummary {
            name: p.name.clone(),
            state: p.state,
            reason: p.reason.clone(),
            until: p.until.clone(),
            last_failure: p.last_failure.clone(),
            cost: p.cost,
            at: at.to_string(),
        }
    }
}

/// Keeps the plugin summaries of a report in the state directory.
pub(crate) fn save_plugins(state_dir: &Path, plugins: &[sonde_core::PluginReport]) {
    let at = humantime::format_rfc3339_seconds(std::time::SystemTime::now()).to_string();
    let summaries: Vec<PluginSummary> = plugins.iter().map(|p| PluginSummary::of(p, &at)).collect();
    let bytes = serde_json::to_vec_pretty(&summaries).unwrap_or_default();
    if let Err(e) = crate::state::write_private(&state_dir.join(PLUGINS_FILE), &bytes) {
        tracing::debug!("cannot save plugin summaries: {e}");
    }
}

/// Reads the status of the runtime `manifest` describes. Writes nothing.
pub fn status(manifest: &Manifest) -> Status {
    let dir = &manifest.telemetry.state_dir;
    let (mode, why) = crate::effective_mode(manifest);
    let mut switches = Switches::load(dir);
    switches.expire(unix(std::time::SystemTime::now()));
    let mut switched_off: Vec<SwitchedOff> = switches
        .plugins
        .iter()
        .map(|(p, o)| SwitchedOff {
            plugin: p.clone(),
            metric: None,
            reason: o.reason.clone(),
            until: o.until_rfc3339(),
            source: o.source,
        })
        .collect();
    for (p, metrics) in &switches.metrics {
        for (m, o) in metrics {
            switched_off.push(SwitchedOff {
                plugin: p.clone(),
                metric: Some(m.clone()),
                reason: o.reason.clone(),
                until: o.until_rfc3339(),
                source: o.source,
            });
        }
    }
    Status {
        mode,
        off_because: why.map(str::to_string),
        endpoint: manifest.telemetry.delivery.endpoint.as_ref().map(redact),
        protocol: manifest.telemetry.delivery.protocol,
        state_dir: dir.clone(),
        instance_id: read_small(&dir.join("instance_id"))
            .map(|b| String::from_utf8_lossy(&b).trim().to_string()),
        stopped: stopped_reason(dir),
        upload: UploadStatus::load(dir),
        switched_off,
        plugins: std::fs::metadata(dir.join(PLUGINS_FILE))
            .ok()
            .filter(|m| m.len() <= 16 * MAX_STATE_FILE)
            .and_then(|_| std::fs::read(dir.join(PLUGINS_FILE)).ok())
            .and_then(|b| serde_json::from_slice(&b).ok())
            .unwrap_or_default(),
    }
}
