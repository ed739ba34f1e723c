//! What a plugin's Store holds, and the two functions sonde grants: `log`
//! and `config`.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::{Duration, Instant};

use wasmtime::StoreLimits;

use crate::bindings::sonde::collector::{host, types};

/// Log lines a plugin may write per [`LOG_WINDOW`]; the rest are dropped and
/// counted. A chatty plugin must not fill the host's logs.
pub(crate) const LOG_LINES_PER_WINDOW: u32 = 10;
/// The window of the log budget.
pub(crate) const LOG_WINDOW: Duration = Duration::from_secs(60);
/// Longest log line kept; longer ones are cut.
pub(crate) const MAX_LOG_LINE: usize = 512;

pub(crate) struct HostState {
    pub(crate) limits: StoreLimits,
    pub(crate) plugin: Arc<str>,
    pub(crate) config: Arc<BTreeMap<String, String>>,
    window_start: Instant,
    lines_in_window: u32,
    pub(crate) logs_dropped: u64,
}

impl HostState {
    pub(crate) fn new(
        limits: StoreLimits,
        plugin: Arc<str>,
        config: Arc<BTreeMap<String, String>>,
    ) -> HostState {
        HostState {
            limits,
            plugin,
            config,
            window_start: Instant::now(),
            lines_in_window: 0,
            logs_dropped: 0,
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
        if self.lines_in_window >= LOG_LINES_PER_WINDOW {
            self.logs_dropped += 1;
            return;
        }
        self.lines_in_window += 1;
        let line = super::info::clip_to(&message, MAX_LOG_LINE);
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
