//! What a plugin's Store holds, and the two functions sonde grants: `log`
//! and `config`.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::{Duration, Instant};

use wasmtime::{ResourceLimiter, StoreLimits};

use crate::bindings::sonde::collector::{host, types};

/// The window of the log budget (`limits.log_lines_per_minute`): lines past
/// it are dropped and counted, so a chatty plugin cannot fill the host's logs.
pub(crate) const LOG_WINDOW: Duration = Duration::from_secs(60);
/// Longest log line kept; longer ones are cut.
pub(crate) const MAX_LOG_LINE: usize = 512;

/// The plugin's resource limiter: wasmtime's [`StoreLimits`], plus the peak
/// memory reached and the last growth it refused (for cost and failure
/// reports).
pub(crate) struct Limiter {
    limits: StoreLimits,
    pub(crate) peak_memory: usize,
    pub(crate) refused: Option<String>,
}

impl ResourceLimiter for Limiter {
    fn memory_growing(
        &mut self,
        current: usize,
        desired: usize,
        maximum: Option<usize>,
    ) -> wasmtime::Result<bool> {
        let result = self.limits.memory_growing(current, desired, maximum);
        match &result {
            Ok(true) => self.peak_memory = self.peak_memory.max(desired),
            _ => self.refused = Some(format!("memory limit: wanted {desired} bytes, at {current}")),
        }
        result
    }

    fn table_growing(
        &mut self,
        current: usize,
        desired: usize,
        maximum: Option<usize>,
    ) -> wasmtime::Result<bool> {
        let result = self.limits.table_growing(current, desired, maximum);
        if !matches!(result, Ok(true)) {
            self.refused = Some(format!("table limit: wanted {desired} elements, at {current}"));
        }
        result
    }

    fn instances(&self) -> usize {
        self.limits.instances()
    }

    fn tables(&self) -> usize {
        self.limits.tables()
    }

    fn memories(&self) -> usize {
        self.limits.memories()
    }
}

pub(crate) struct HostState {
    pub(crate) limiter: Limiter,
    pub(crate) plugin: Arc<str>,
    pub(crate) config: Arc<BTreeMap<String, String>>,
    window_start: Instant,
    lines_in_window: u32,
    lines_per_window: u32,
    pub(crate) logs_dropped: u64,
    /// Fuel burnt by this instance's calls (when fuel is metered).
    pub(crate) fuel_used: u64,
}

impl HostState {
    pub(crate) fn new(
        limits: StoreLimits,
        plugin: Arc<str>,
        config: Arc<BTreeMap<String, String>>,
        lines_per_window: u32,
    ) -> HostState {
        HostState {
            limiter: Limiter { limits, peak_memory: 0, refused: None },
            plugin,
            config,
            window_start: Instant::now(),
            lines_in_window: 0,
            lines_per_window,
            logs_dropped: 0,
            fuel_used: 0,
        }
    }
}

impl types::Host for HostState {}

impl host::Host for HostState {
    fn log(&mut self, level: host::Level, message: String) {
        if self.window_start.elapsed() >= LOG_WINDOW {
            self.window_start = Instant::now();
            self.lines_in_window = 0;
        }
        if self.lines_in_window >= self.lines_per_window {
            self.logs_dropped += 1;
            return;
        }
        self.lines_in_window += 1;
        // One line, whatever the plugin wrote: CR, LF, ESC and the other
        // controls become visible escapes, so a plugin cannot forge a log
        // line or rewrite the terminal.
        let line = sonde_core::text::escape_control(super::info::clip_to(&message, MAX_LOG_LINE));
        let plugin = &*self.plugin;
        match level {
            host::Level::Error => tracing::error!(target: "sonde::plugin", plugin, "{line}"),
            host::Level::Warn => tracing::warn!(target: "sonde::plugin", plugin, "{line}"),
            host::Level::Info => tracing::info!(target: "sonde::plugin", plugin, "{line}"),
            host::Level::Debug => tracing::debug!(target: "sonde::plugin", plugin, "{line}"),
        }
    }

    fn config(&mut self, key: String) -> Option<String> {
        self.config.get(&key).cloned()
    }
}
