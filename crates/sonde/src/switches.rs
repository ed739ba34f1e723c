//! Switches an endpoint (or, later, the local cost breaker) may flip *off*:
//! a plugin for a while, some metrics for a while. Persisted in the state
//! directory so a restart does not undo them.
//!
//! The operator's manifest always wins: a denied, refused or failed plugin is
//! never touched, and "enable" only lifts what a "disable" from the same
//! source set.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use serde::{Deserialize, Serialize};

/// File in the state directory holding the switches.
pub(crate) const SWITCHES_FILE: &str = "switches.json";
/// Largest switches file read back.
const MAX_SWITCHES_FILE: u64 = 1024 * 1024;

/// "Until" of something switched off for good: the last second of 9999, the
/// latest instant RFC 3339 can write.
pub(crate) const FOREVER_UNIX: u64 = 253_402_300_799;

/// Who flipped a switch.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Source {
    /// A directive from the collector endpoint.
    Endpoint,
    /// The host's own cost breaker.
    Local,
}

/// One switched-off item.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Off {
    /// When it comes back, seconds since the Unix epoch.
    pub until_unix: u64,
    /// Why.
    pub reason: String,
    /// Who.
    pub source: Source,
}

impl Off {
    pub(crate) fn new(for_secs: u64, reason: String, source: Source) -> Off {
        let until = unix(SystemTime::now()).saturating_add(for_secs).min(FOREVER_UNIX);
        Off { until_unix: until, reason, source }
    }

    pub(crate) fn active(&self, now_unix: u64) -> bool {
        now_unix < self.until_unix
    }

    /// `until` as RFC 3339.
    pub fn until_rfc3339(&self) -> String {
        humantime::format_rfc3339_seconds(UNIX_EPOCH + Duration::from_secs(self.until_unix))
            .to_string()
    }
}

pub(crate) fn unix(t: SystemTime) -> u64 {
    t.duration_since(UNIX_EPOCH).map_or(0, |d| d.as_secs())
}

/// Everything switched off, by plugin name.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Switches {
    /// Plugins switched off.
    #[serde(default)]
    pub plugins: BTreeMap<String, Off>,
    /// Metrics switched off, by plugin then metric name.
    #[serde(default)]
    pub metrics: BTreeMap<String, BTreeMap<String, Off>>,
}

impl Switches {
    /// Reads the switches kept in `state_dir`; missing or unreadable is empty.
    pub fn load(state_dir: &Path) -> Switches {
        let path = state_dir.join(SWITCHES_FILE);
        let ok = std::fs::metadata(&path).is_ok_and(|m| m.len() <= MAX_SWITCHES_FILE);
        let read = ok.then(|| std::fs::read(&path).ok()).flatten();
        match read.map(|b| serde_json::from_slice(&b)) {
            Some(Ok(s)) => s,
            Some(Err(e)) => {
                tracing::warn!(file = %path.display(), "ignoring an unreadable switches file: {e}");
                Switches::default()
            }
            None => Switches::default(),
        }
    }

    pub(crate) fn save(&self, state_dir: &Path) {
        let path: PathBuf = state_dir.join(SWITCHES_FILE);
        let bytes = serde_json::to_vec_pretty(self).unwrap_or_default();
        if let Err(e) = crate::state::write_private(&path, &bytes) {
            tracing::debug!("cannot save switches: {e}");
        }
    }

    /// Drops what has expired; returns whether anything did.
    pub(crate) fn expire(&mut self, now_unix: u64) -> bool {
        let before = self.plugins.len() + self.metrics.values().map(BTreeMap::len).sum::<usize>();
        self.plugins.retain(|_, o| o.active(now_unix));
        for m in self.metrics.values_mut() {
            m.retain(|_, o| o.active(now_unix));
        }
        self.metrics.retain(|_, m| !m.is_empty());
        before != self.plugins.len() + self.metrics.values().map(BTreeMap::len).sum::<usize>()
    }
}
