//! What a plugin's Store holds, and the two functions sonde grants: `log`
//! and `config`.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::{Duration, Instant};

use wasmtime::component::Linker;
use wasmtime::{ResourceLimiter, StoreContextMut, StoreLimits};

use super::lift::{ConfigKey, Line, Text};
use crate::bindings::sonde::collector::host;

/// The window of the log budget (`limits.log_lines_per_minute`): lines past
/// it are dropped and counted, so a chatty plugin cannot fill the host's logs.
pub(crate) const LOG_WINDOW: Duration = Duration::from_secs(60);
/// Longest log line kept; longer ones are cut, before they are copied out
/// of the plugin (see `lift::Line`).
pub(crate) const MAX_LOG_LINE: usize = 512;

/// The interface holding the contract's types (no functions, but a plugin
/// imports it, so the linker defines it).
const TYPES_INTERFACE: &str = "sonde:collector/types@0.1.0";
/// The interface of the functions sonde grants.
const HOST_INTERFACE: &str = "sonde:collector/host@0.1.0";

/// Defines `log` and `config` for plugins, by hand rather than with the
/// generated `add_to_linker`: the generated functions lift their string
/// arguments whole before the host sees them, so a plugin could make the
/// host copy its whole memory per call. Here a log line is cut to
/// [`MAX_LOG_LINE`] and a config key longer than any key the manifest may
/// hold is not copied at all.
pub(crate) fn add_to_linker(linker: &mut Linker<HostState>) -> wasmtime::Result<()> {
    linker.instance(TYPES_INTERFACE)?;
    let mut host = linker.instance(HOST_INTERFACE)?;
    host.func_wrap(
        "log",
        |mut store: StoreContextMut<'_, HostState>, (level, line): (host::Level, Line)| {
            store.data_mut().log(level, &line.0);
            Ok(())
        },
    )?;
    host.func_wrap(
        "config",
        |store: StoreContextMut<'_, HostState>, (key,): (Text<ConfigKey>,)| {
            // An over-long key names no entry (the manifest refuses such keys).
            let value = key.fits().and_then(|k| store.data().config.get(k).cloned());
            Ok((value,))
        },
    )?;
    Ok(())
}

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

impl HostState {
    /// `log`: a line of at most [`MAX_LOG_LINE`] bytes, within the budget.
    fn log(&mut self, level: host::Level, message: &str) {
        if self.window_start.elapsed() >= LOG_WINDOW {
            self.window_start = Instant::now();
            self.lines_in_window = 0;
        }
        if self.lines_in_window >= self.lines_per_window {
            self.logs_dropped += 1;
            return;
        }
        self.lines_in_window += 1;
        let line = super::info::clip_to(message, MAX_LOG_LINE);
        let plugin = &*self.plugin;
        match level {
            host::Level::Error => tracing::error!(target: "sonde::plugin", plugin, "{line}"),
            host::Level::Warn => tracing::warn!(target: "sonde::plugin", plugin, "{line}"),
            host::Level::Info => tracing::info!(target: "sonde::plugin", plugin, "{line}"),
            host::Level::Debug => tracing::debug!(target: "sonde::plugin", plugin, "{line}"),
        }
    }
}
