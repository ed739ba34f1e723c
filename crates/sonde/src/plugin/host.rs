//! What a plugin's Store holds, and the two functions sonde grants: `log`
//! and `config`.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::{Duration, Instant};

use wasmtime::component::Linker;
use wasmtime::{ResourceLimiter, StoreContextMut};

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
const TYPES_INTERFACE: &str = "sonde:collector/types@0.2.0";
/// The interface of the functions sonde grants.
const HOST_INTERFACE: &str = "sonde:collector/host@0.2.0";

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

/// Memories, tables and instances one plugin instance may have. The caps on
/// bytes and elements below are totals over all of them, so these counts
/// only bound the per-item overhead (a reservation and guard pages per
/// memory). The shape check (`plugin/shape.rs`) refuses more at load.
pub(crate) const MAX_STORE_MEMORIES: usize = super::shape::MAX_MEMORIES;
/// See [`MAX_STORE_MEMORIES`].
pub(crate) const MAX_STORE_TABLES: usize = super::shape::MAX_TABLES;
/// See [`MAX_STORE_MEMORIES`].
pub(crate) const MAX_STORE_INSTANCES: usize = super::shape::MAX_INSTANCES;

/// The plugin's resource limiter: one memory cap for all of the plugin's
/// linear memories together (`limits.memory_mb`), one element cap for all
/// its tables together ([`MAX_PLUGIN_TABLE_ELEMENTS`](super::MAX_PLUGIN_TABLE_ELEMENTS)),
/// counts of memories, tables and instances; plus the peak memory reached
/// (the total over all memories) and the last growth it refused (for cost
/// and failure reports). A growth past a cap traps the call.
pub(crate) struct Limiter {
    memory_cap: usize,
    table_cap: usize,
    /// Bytes of all linear memories of this Store together.
    memory: usize,
    /// Elements of all tables of this Store together.
    elements: usize,
    pub(crate) peak_memory: usize,
    pub(crate) refused: Option<String>,
}

impl Limiter {
    pub(crate) fn new(memory_cap: usize, table_cap: usize) -> Limiter {
        Limiter { memory_cap, table_cap, memory: 0, elements: 0, peak_memory: 0, refused: None }
    }

    /// Books a growth of one item from `current` to `desired` against the
    /// running `total` and its `cap`.
    fn grow(total: &mut usize, cap: usize, current: usize, desired: usize) -> bool {
        let after = total.saturating_sub(current.min(*total)).saturating_add(desired);
        if after > cap {
            return false;
        }
        *total = after;
        true
    }
}

impl ResourceLimiter for Limiter {
    fn memory_growing(
        &mut self,
        current: usize,
        desired: usize,
        maximum: Option<usize>,
    ) -> wasmtime::Result<bool> {
        let fits = maximum.is_none_or(|m| desired <= m);
        if fits && Limiter::grow(&mut self.memory, self.memory_cap, current, desired) {
            self.peak_memory = self.peak_memory.max(self.memory);
            return Ok(true);
        }
        let note = format!(
            "memory limit: wanted {} more bytes with {} in use by all its memories, cap {}",
            desired.saturating_sub(current),
            self.memory,
            self.memory_cap
        );
        self.refused = Some(note.clone());
        wasmtime::bail!("{note}")
    }

    fn table_growing(
        &mut self,
        current: usize,
        desired: usize,
        maximum: Option<usize>,
    ) -> wasmtime::Result<bool> {
        let fits = maximum.is_none_or(|m| desired <= m);
        if fits && Limiter::grow(&mut self.elements, self.table_cap, current, desired) {
            return Ok(true);
        }
        let note = format!(
            "table limit: wanted {} more elements with {} in all its tables, cap {}",
            desired.saturating_sub(current),
            self.elements,
            self.table_cap
        );
        self.refused = Some(note.clone());
        wasmtime::bail!("{note}")
    }

    fn instances(&self) -> usize {
        MAX_STORE_INSTANCES
    }

    fn tables(&self) -> usize {
        MAX_STORE_TABLES
    }

    fn memories(&self) -> usize {
        MAX_STORE_MEMORIES
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
        limiter: Limiter,
        plugin: Arc<str>,
        config: Arc<BTreeMap<String, String>>,
        lines_per_window: u32,
    ) -> HostState {
        HostState {
            limiter,
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
        // One line, whatever the plugin wrote: CR, LF, ESC and the other
        // controls become visible escapes, so a plugin cannot forge a log
        // line or rewrite the terminal.
        let line = sonde_core::text::escape_control(super::info::clip_to(message, MAX_LOG_LINE));
        let plugin = &*self.plugin;
        match level {
            host::Level::Error => tracing::error!(target: "sonde::plugin", plugin, "{line}"),
            host::Level::Warn => tracing::warn!(target: "sonde::plugin", plugin, "{line}"),
            host::Level::Info => tracing::info!(target: "sonde::plugin", plugin, "{line}"),
            host::Level::Debug => tracing::debug!(target: "sonde::plugin", plugin, "{line}"),
        }
    }
}

#[cfg(test)]
mod limiter_tests {
    use super::*;

    #[test]
    fn the_cap_covers_every_memory_together_and_the_peak_is_the_total() {
        let mib = 1 << 20;
        let mut l = Limiter::new(10 * mib, 100);
        // Three memories created at 3 MiB each: 9 MiB in all.
        for _ in 0..3 {
            assert!(l.memory_growing(0, 3 * mib, None).is_ok_and(|ok| ok));
        }
        assert_eq!(l.peak_memory, 9 * mib);
        // A fourth of 3 MiB, or one of them growing by 2 MiB, is past 10.
        assert!(l.memory_growing(0, 3 * mib, None).is_err());
        assert!(l.memory_growing(3 * mib, 5 * mib, None).is_err());
        assert!(l.refused.as_deref().is_some_and(|n| n.contains("in use by all its memories")));
        // Growing one by 1 MiB fits.
        assert!(l.memory_growing(3 * mib, 4 * mib, None).is_ok_and(|ok| ok));
        assert_eq!(l.peak_memory, 10 * mib);
        // Tables: one element cap for all of them.
        assert!(l.table_growing(0, 60, None).is_ok_and(|ok| ok));
        assert!(l.table_growing(0, 60, None).is_err());
    }
}
