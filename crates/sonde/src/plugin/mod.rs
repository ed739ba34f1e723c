//! One plugin from the manifest: loading, calling, failing, reporting.
//!
//! Loading checks, in order: the operator allowed it; the file is a regular
//! file within `limits.file_mb`, read once; the SHA-256 of the bytes read is
//! the pinned one; it is a component; unless the compile cache has it, the
//! shape of its code is within the limits of `shape.rs` and it compiles in a
//! child process within its compile budget (`compile.rs`); it imports
//! nothing but `sonde:collector`; it exports the collector interface of our
//! WIT version; its `info` is valid. Any failure refuses this plugin only.
//! Loading runs on a loader thread, never on the dispatcher's.
//!
//! Each plugin has its own [`Store`]. A trap poisons a Store, so after a
//! failed call the Store is dropped and a new instance made from the
//! `InstancePre`; after [`MAX_CONSECUTIVE_FAILURES`] the plugin is `failed`.

mod batch;
pub(crate) mod bench;
mod health;
mod host;
mod info;
mod lift;
mod series;
pub(crate) mod shape;

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::{Duration, Instant};

use sha2::{Digest, Sha256};
use sonde_core::text::escape_control;
use sonde_core::{DisabledMetric, PluginCost, PluginReport, PluginSpec, PluginState};
use wasmtime::component::{Component, Linker};
use wasmtime::{Engine, Store};

pub(crate) use self::batch::{BATCH_SIZE, KindBatch, View};
use self::health::{AfterFailure, Failure, FailureKind, Health};
use self::host::HostState;
use self::series::Series;
use crate::bindings::{
    ALLOWED_IMPORTS, EventBatch, FieldType, MetricCollector, MetricCollectorPre, PluginInfo,
    REQUIRED_EXPORT,
};
use crate::cache::{CompileCache, Origin};
use crate::engine::{EPOCH_TICK, FUEL_PER_CALL, Ticker};
use crate::overview::{DeclaredEvent, DeclaredField, DeclaredMetric, PluginOverview};
use crate::switches::Off;

/// Largest plugin file a manifest may allow (`limits.file_mb` caps at 256
/// MiB; the default is 32 MiB). Our Rust collectors are ~20-60 KB, a
/// JavaScript or Python one 12-18 MB.
pub const MAX_PLUGIN_BYTES: u64 = 256 * 1024 * 1024;

/// Most linear memory a manifest may grant a plugin, all its memories
/// together (`limits.memory_mb` caps at 1 GiB); the default is 64 MiB.
pub const MAX_PLUGIN_MEMORY: usize = 1024 * 1024 * 1024;

/// Table elements one plugin instance may have, all its tables together:
/// Rust components need a few hundred; this stops a table-growth bomb.
pub const MAX_PLUGIN_TABLE_ELEMENTS: usize = 20_000;

/// What loading needs, built once per runtime and shared with the loader
/// threads.
pub(crate) struct Loader {
    pub(crate) engine: Engine,
    /// Whether `engine` meters fuel: the compile child builds the same.
    fuel: bool,
    /// This runtime's compile lanes.
    lanes: crate::compile::Lanes,
    linker: Linker<HostState>,
    cache: Option<CompileCache>,
    /// The epoch ticker, told of every call (none in benchmarks: calls
    /// there run without deadlines).
    ticker: Option<Arc<Ticker>>,
}

impl Loader {
    /// `engine` must be `engine::new_engine(fuel)`.
    pub(crate) fn new(
        engine: Engine,
        fuel: bool,
        cache: Option<CompileCache>,
        ticker: Option<Arc<Ticker>>,
    ) -> wasmtime::Result<Loader> {
        let mut linker = Linker::new(&engine);
        host::add_to_linker(&mut linker)?;
        Ok(Loader { engine, fuel, lanes: crate::compile::Lanes::default(), linker, cache, ticker })
    }

    /// This runtime's compile lanes.
    pub(crate) fn lanes(&self) -> &crate::compile::Lanes {
        &self.lanes
    }
}

/// An event kind the plugin both declared and was granted.
pub(crate) struct Subscription {
    pub(crate) kind: String,
    /// The declared kind's index in the plugin's `info`.
    pub(crate) index: u32,
    pub(crate) fields: Vec<String>,
    pub(crate) types: Vec<FieldType>,
}

struct Live {
    store: Store<HostState>,
    /// The generated bindings: `on-events` (a batch is only lowered into
    /// the guest, nothing is lifted out).
    bindings: MetricCollector,
    /// `collect`, lifting its result within the plugin's bounds.
    collect: lift::CollectFunc,
    /// Epoch ticks one call may take (`limits.call_timeout_ms`).
    deadline_ticks: u64,
    /// `limits.call_timeout_ms`: the wall time one call, its results'
    /// lift included, may take.
    timeout: Duration,
    /// Told of every call, so that it ticks while calls run.
    ticker: Option<Arc<Ticker>>,
}

pub(crate) struct Plugin {
    pub(crate) spec: PluginSpec,
    pub(crate) state: PluginState,
    pub(crate) reason: Option<String>,
    pub(crate) cost: PluginCost,
    pub(crate) subs: Vec<Subscription>,
    origin: Option<Origin>,
    info: Option<PluginInfo>,
    series: Series,
    live: Option<Live>,
    pre: Option<MetricCollectorPre<HostState>>,
    ticker: Option<Arc<Ticker>>,
    health: Health,
    /// When a failed instance is due to be replaced.
    restart_at: Option<Instant>,
    logs_dropped_before: u64,
    fuel_before: u64,
    last_failure: Option<String>,
    /// Switched off for a while (endpoint directive or local breaker).
    pub(crate) off: Option<Off>,
    /// Metrics left out of reports for a while.
    pub(crate) muted: BTreeMap<String, Off>,
    /// The load under way for this placeholder (state `loading`).
    pub(crate) load_id: Option<u64>,
}

impl Plugin {
    fn new(spec: PluginSpec, state: PluginState, reason: Option<String>) -> Plugin {
        let limits = spec.limits;
        Plugin {
            spec,
            state,
            reason,
            cost: PluginCost::default(),
            subs: Vec::new(),
            origin: None,
            info: None,
            series: Series::new(Vec::new(), limits, &[]),
            health: Health::new(limits, Instant::now()),
            live: None,
            pre: None,
            ticker: None,
            restart_at: None,
            logs_dropped_before: 0,
            fuel_before: 0,
            last_failure: None,
            off: None,
            muted: BTreeMap::new(),
            load_id: None,
        }
    }

    /// A placeholder for a plugin whose load `id` is under way on a loader
    /// thread.
    pub(crate) fn loading(spec: PluginSpec, id: u64) -> Plugin {
        let mut p =
            Plugin::new(spec, PluginState::Loading, Some("being compiled and checked".into()));
        p.load_id = Some(id);
        p
    }

    /// A plugin refused for `reason`.
    pub(crate) fn refused(spec: PluginSpec, reason: String) -> Plugin {
        Plugin::new(spec, PluginState::Refused, Some(reason))
    }

    /// Loads `spec`; never fails: a plugin that cannot run is `denied` or
    /// `refused` with the reason. May take as long as the compile budget:
    /// never called on the dispatcher thread.
    pub(crate) fn load(spec: PluginSpec, loader: &Loader) -> Plugin {
        if !spec.allow {
            let reason = format!("denied by the operator ({})", spec.at);
            return Plugin::new(spec, PluginState::Denied, Some(reason));
        }
        let loaded = Plugin::try_load(&spec, loader).and_then(|(pre, live, info, origin)| {
            undeclared_denial(&spec, &info)?;
            Ok((pre, live, info, origin))
        });
        match loaded {
            Ok((pre, live, info, origin)) => {
                let mut plugin = Plugin::new(spec, PluginState::Running, None);
                plugin.subs = subscriptions(&info, &plugin.spec.events);
                let limits = plugin.spec.limits;
                plugin.series =
                    Series::new(info.metrics.clone(), limits, &plugin.spec.deny_metrics);
                plugin.info = Some(info);
                plugin.origin = Some(origin);
                plugin.live = Some(live);
                plugin.pre = Some(pre);
                plugin.ticker = loader.ticker.clone();
                plugin
            }
            Err(reason) => {
                let shown = escape_control(&reason);
                tracing::warn!(plugin = %escape_control(&spec.name), "plugin refused: {shown}");
                Plugin::new(spec, PluginState::Refused, Some(reason))
            }
        }
    }

    fn try_load(
        spec: &PluginSpec,
        loader: &Loader,
    ) -> Result<(MetricCollectorPre<HostState>, Live, PluginInfo, Origin), String> {
        let wasm = read_plugin_file(spec)?;
        let sha = hex::encode(Sha256::digest(&wasm));
        if sha != spec.sha256 {
            return Err(format!(
                "{}: {} has SHA-256 {sha}, the manifest pins {} (run `sonde pin` if the new file is trusted)",
                spec.sha256_at,
                spec.path.display(),
                spec.sha256
            ));
        }
        if wasm.get(..8) == Some(b"\0asm\x01\0\0\0".as_slice()) {
            return Err("is a core WebAssembly module, not a component: build it with `cargo xtask plugins`, which componentizes it".into());
        }
        if wasm.get(..4) != Some(b"\0asm".as_slice()) {
            return Err("is not a WebAssembly component (no `\\0asm` header)".into());
        }
        let engine = &loader.engine;
        let limits = &spec.limits;
        let budget = crate::compile::Budget {
            time: std::time::Duration::from_secs(limits.compile_timeout_secs),
            memory_bytes: limits.compile_memory_bytes,
        };
        // Only code that is not in the cache is checked and compiled: what
        // the cache holds passed both when this host compiled it.
        let compile = |wasm: &[u8]| {
            // Refused by name before anything is compiled: a Python or
            // JavaScript collector built with its toolchain's WASI costs
            // tens of seconds of compile for nothing.
            for name in top_level_imports(wasm) {
                check_import(name)?;
            }
            shape::check(wasm)?;
            crate::compile::precompile(wasm, loader.fuel, budget, &loader.lanes)
                .map_err(|e| e.to_string())
        };
        let (component, origin) = match &loader.cache {
            Some(cache) => cache.load(engine, &wasm, &sha, compile)?,
            None => {
                let artifact = compile(&wasm)?;
                let component = crate::cache::deserialize(engine, &artifact).map_err(|e| {
                    format!(
                        "its compiled code does not load: {}",
                        escape_control(&format!("{e:#}"))
                    )
                })?;
                (component, Origin::Compiled)
            }
        };
        check_world(&component, engine)?;
        let pre =
            loader.linker.instantiate_pre(&component).and_then(MetricCollectorPre::new).map_err(
                |e| {
                    let e = format!("{e:#}");
                    format!("does not match the sonde:collector world: {}", escape_control(&e))
                },
            )?;
        let (live, info) = instantiate(&pre, spec, loader.ticker.clone()).map_err(|e| match e {
            StartError::Call(e) => e,
            StartError::Invalid(e) => format!("invalid info: {e}"),
        })?;
        Ok((pre, live, info, origin))
    }

    /// Whether the plugin takes calls: loaded, healthy and not switched off.
    pub(crate) fn is_running(&self) -> bool {
        self.state == PluginState::Running && self.live.is_some() && self.off.is_none()
    }

    /// Whether a switch may touch it: only plugins the operator allowed and
    /// that loaded (a denied, refused or failed plugin stays as it is).
    pub(crate) fn is_switchable(&self) -> bool {
        self.state == PluginState::Running
    }

    /// Whether events for it are being skipped (and counted) while it waits
    /// for a restart or for its load to finish.
    pub(crate) fn is_restarting(&self) -> bool {
        (self.restart_at.is_some() || self.state == PluginState::Loading) && self.off.is_none()
    }

    /// Restarts a failed instance when its backoff is over; returns the
    /// local breaker's reason when the plugin has been over its CPU budget
    /// for too long.
    pub(crate) fn tick(&mut self, now: Instant) -> Option<String> {
        if self.restart_at.is_some_and(|t| now >= t) {
            self.restart_at = None;
            self.restart();
        }
        if self.state == PluginState::Running && self.off.is_none() {
            self.health.over_budget(now)
        } else {
            None
        }
    }

    /// Sends `batch`, built for subscription `sub` from `events` events.
    pub(crate) fn deliver(&mut self, sub: usize, batch: &EventBatch, events: u64) {
        if sub >= self.subs.len() || !self.is_running() {
            return;
        }
        self.cost.events += events;
        let result = self.live.as_mut().map(|live| {
            run(live, |l| {
                l.bindings.sonde_collector_collector().call_on_events(&mut l.store, batch)
            })
        });
        self.settle(result);
    }

    /// Asks the plugin for its deltas and folds them into the series.
    ///
    /// Only what the plugin's limits allow is copied out of it: points past
    /// `max_points_per_collect` are counted as excess without being read,
    /// points with an over-long label or list as invalid without being
    /// copied (see `lift`).
    pub(crate) fn collect(&mut self) {
        if !self.is_running() {
            return;
        }
        let limits = self.spec.limits;
        let caps = lift::CollectCaps {
            points: limits.max_points_per_collect as usize,
            label: limits.max_label_len as usize,
        };
        let result = self.live.as_mut().map(|live| {
            run(live, |l| {
                lift::with_caps(caps, || l.collect.call(&mut l.store, ()))
                    .map(|(points,)| lift::collected(points))
            })
        });
        if let Some(collected) = self.settle(result) {
            self.cost.excess_points += collected.excess;
            self.cost.invalid_points += collected.invalid;
            self.series.apply(collected.points, &mut self.cost);
        }
    }

    /// Books one call's outcome: time, memory, logs, failures.
    fn settle<R>(&mut self, result: Option<(wasmtime::Result<R>, u64)>) -> Option<R> {
        let (result, busy_us) = result?;
        self.cost.calls += 1;
        self.cost.busy_us += busy_us;
        self.health.busy(std::time::Duration::from_micros(busy_us));
        let live = self.live.as_ref()?;
        let data = live.store.data();
        self.cost.logs_dropped = self.logs_dropped_before + data.logs_dropped;
        let peak = data.limiter.peak_memory as u64;
        self.cost.peak_memory_bytes = self.cost.peak_memory_bytes.max(peak);
        self.cost.fuel = self.fuel_before + data.fuel_used;
        match result {
            Ok(r) => {
                self.health.succeeded();
                Some(r)
            }
            Err(e) => {
                let refused = data.limiter.refused.as_deref();
                let failure = Failure::of(&e, refused, self.spec.limits.call_timeout_ms);
                self.fail(failure.kind, failure.reason);
                None
            }
        }
    }

    /// A call failed: the Store is poisoned, drop it; restart now, later, or
    /// never, as the failure window says.
    fn fail(&mut self, kind: FailureKind, reason: String) {
        // Host-made (Failure::of); escaped again for the log all the same.
        let shown = escape_control(&reason).into_owned();
        let name = escape_control(&self.spec.name).into_owned();
        self.cost.failures += 1;
        self.last_failure = Some(reason.clone());
        kind.count(&mut self.cost.failure_kinds);
        if let Some(old) = self.live.take() {
            self.logs_dropped_before += old.store.data().logs_dropped;
            self.fuel_before += old.store.data().fuel_used;
        }
        match self.health.failed(Instant::now()) {
            AfterFailure::GiveUp(n) => {
                let window = self.spec.limits.failure_window_secs;
                tracing::warn!(plugin = %name, "plugin stopped after {n} failures in {window} s: {shown}");
                self.stop(format!("failed {n} times within {window} s; last: {reason}"));
            }
            AfterFailure::Restart(delay) if delay.is_zero() => {
                tracing::debug!(plugin = %name, "plugin call failed, restarting: {shown}");
                self.restart();
            }
            AfterFailure::Restart(delay) => {
                tracing::debug!(plugin = %name, "plugin call failed, restarting in {delay:?}: {shown}");
                self.restart_at = Some(Instant::now() + delay);
            }
        }
    }

    /// A fresh instance from the `InstancePre`, which must say the same
    /// `info` as the first one.
    fn restart(&mut self) {
        let Some(pre) = &self.pre else { return };
        match instantiate(pre, &self.spec, self.ticker.clone()) {
            Ok((live, info)) if Some(&info) == self.info.as_ref() => {
                self.cost.restarts += 1;
                self.live = Some(live);
            }
            Ok(_) => self.stop("its `info` changed after a restart".into()),
            Err(e) => self.stop(format!("could not be restarted: {e}")),
        }
    }

    fn stop(&mut self, reason: String) {
        self.state = PluginState::Failed;
        self.reason = Some(reason);
        self.live = None;
        self.pre = None;
        self.restart_at = None;
    }

    /// This plugin's part of a report.
    pub(crate) fn report(&self) -> PluginReport {
        let (state, reason, until) = match (&self.off, self.state) {
            (Some(off), PluginState::Running) => {
                (PluginState::Disabled, Some(off.reason.clone()), Some(off.until_rfc3339()))
            }
            _ => (self.state, self.reason.clone(), None),
        };
        let mut metrics = self.series.metrics();
        metrics.retain(|m| !self.muted.contains_key(&m.name));
        PluginReport {
            name: self.spec.name.clone(),
            version: self.info.as_ref().map(|i| i.version.clone()).unwrap_or_default(),
            state,
            reason,
            until,
            disabled_metrics: self
                .muted
                .iter()
                .map(|(name, off)| DisabledMetric {
                    name: name.clone(),
                    reason: off.reason.clone(),
                    until: off.until_rfc3339(),
                })
                .collect(),
            denied_metrics: self.spec.deny_metrics.clone(),
            last_failure: self.last_failure.clone(),
            cost: self.cost,
            metrics,
        }
    }

    /// What the operator sees in `sonde list`.
    pub(crate) fn overview(&self) -> PluginOverview {
        let info = self.info.as_ref();
        let disabled = self.off.as_ref().filter(|_| self.state == PluginState::Running);
        PluginOverview {
            name: self.spec.name.clone(),
            path: self.spec.path.clone(),
            state: if disabled.is_some() { PluginState::Disabled } else { self.state },
            reason: disabled.map(|o| o.reason.clone()).or_else(|| self.reason.clone()),
            until: disabled.map(Off::until_rfc3339),
            version: info.map(|i| i.version.clone()).unwrap_or_default(),
            description: info.map(|i| i.description.clone()).unwrap_or_default(),
            granted_events: self.spec.events.clone(),
            subscribed_events: self.subs.iter().map(|s| s.kind.clone()).collect(),
            from_cache: self.origin == Some(Origin::Cached),
            metrics: info
                .map(|i| {
                    i.metrics
                        .iter()
                        .map(|m| DeclaredMetric {
                            name: m.name.clone(),
                            kind: series::kind_of(m.kind),
                            unit: m.unit.clone(),
                            description: m.description.clone(),
                            label_keys: m.label_keys.clone(),
                            buckets: m.buckets.clone(),
                            denied: self.spec.deny_metrics.contains(&m.name),
                        })
                        .collect()
                })
                .unwrap_or_default(),
            events: info
                .map(|i| {
                    i.events
                        .iter()
                        .map(|e| DeclaredEvent {
                            kind: e.kind.clone(),
                            fields: e
                                .fields
                                .iter()
                                .map(|f| DeclaredField {
                                    name: f.name.clone(),
                                    ty: field_type(f.type_),
                                })
                                .collect(),
                        })
                        .collect()
                })
                .unwrap_or_default(),
            deny_metrics: self.spec.deny_metrics.clone(),
            limits: self.spec.limits,
            cost: self.cost,
        }
    }
}

/// Runs one call under the deadline; returns its result and the µs it took.
///
/// The epoch deadline stops wasm, but not the host code that lifts the
/// call's results after it returns (nor `f`'s own work on them); so a call
/// whose whole run took longer than `limits.call_timeout_ms` fails as a
/// deadline failure too, even if the wasm finished in time. (Without a
/// ticker, in benchmarks, calls have no deadline.)
fn run<R>(
    live: &mut Live,
    f: impl FnOnce(&mut Live) -> wasmtime::Result<R>,
) -> (wasmtime::Result<R>, u64) {
    let _call = live.ticker.as_ref().map(Ticker::call);
    live.store.set_epoch_deadline(live.deadline_ticks);
    live.store.data_mut().limiter.refused = None;
    // get_fuel fails when the engine does not meter fuel.
    let metered = live.store.get_fuel().is_ok();
    if metered {
        let _ = live.store.set_fuel(FUEL_PER_CALL);
    }
    let start = Instant::now();
    let result = f(live);
    let took = start.elapsed();
    if metered {
        let left = live.store.get_fuel().unwrap_or(FUEL_PER_CALL);
        live.store.data_mut().fuel_used += FUEL_PER_CALL - left;
    }
    let result = match result {
        Ok(_) if live.ticker.is_some() && took > live.timeout => Err(past_deadline()),
        result => result,
    };
    (result, u64::try_from(took.as_micros()).unwrap_or(u64::MAX))
}

/// The error of a call that ran past its deadline, as the epoch deadline's
/// trap reads (so it is classified and described the same way).
fn past_deadline() -> wasmtime::Error {
    wasmtime::Error::new(wasmtime::Trap::Interrupt)
}

/// Why a new instance could not be started.
enum StartError {
    /// Instantiating or the `info` call failed (trap, deadline, ...).
    Call(String),
    /// `info` answered, but the answer breaks a limit.
    Invalid(String),
}

impl std::fmt::Display for StartError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            StartError::Call(e) | StartError::Invalid(e) => f.write_str(e),
        }
    }
}

/// The plugin file's bytes: a regular file within `limits.file_mb`, opened
/// and read once (see `sonde_core::limits::read_file_capped`); these bytes
/// are hashed and compiled.
fn read_plugin_file(spec: &PluginSpec) -> Result<Vec<u8>, String> {
    let max = spec.limits.file_bytes.min(MAX_PLUGIN_BYTES);
    sonde_core::limits::read_file_capped(&spec.path, max).map_err(|e| match e.kind() {
        std::io::ErrorKind::FileTooLarge => format!(
            "{}: {} is over the limit of {max} bytes (limits.file_mb)",
            spec.path_at,
            spec.path.display()
        ),
        std::io::ErrorKind::InvalidInput => format!(
            "{}: {} is not a regular file (a device, FIFO or directory is never read)",
            spec.path_at,
            spec.path.display()
        ),
        _ => format!("{}: cannot read {}: {e}", spec.path_at, spec.path.display()),
    })
}

/// Refuses a component that imports anything but our world, or lacks our
/// export, naming the offending item.
/// Refuses an import outside the contract, naming it (and, for another
/// version of the contract, the version the plugin was built for).
fn check_import(name: &str) -> Result<(), String> {
    if name.starts_with("sonde:collector/") && !ALLOWED_IMPORTS.contains(&name) {
        let built_for = name.rsplit_once('@').map_or("an unversioned contract", |(_, v)| v);
        return Err(format!(
            "was built against another version of the sonde:collector WIT, {} (it imports `{}`); this host speaks sonde:collector@0.2.0: rebuild the plugin with the current sonde-sdk",
            escape_control(info::clip_to(built_for, 40)),
            escape_control(info::clip_to(name, 200))
        ));
    }
    if !ALLOWED_IMPORTS.contains(&name) {
        return Err(format!(
            "imports `{}`, which sonde never grants (plugins may import only sonde:collector/host@0.2.0)",
            escape_control(info::clip_to(name, 200))
        ));
    }
    Ok(())
}

/// The names a component imports from its host, read from its bytes
/// without compiling them (nested components' and modules' imports are
/// satisfied inside it and are not listed). A parse error ends the list: the
/// shape check and the compiler name it.
fn top_level_imports(wasm: &[u8]) -> Vec<&str> {
    use wasmparser::{Parser, Payload};
    let mut names = Vec::new();
    let mut depth = 0usize;
    for payload in Parser::new(0).parse_all(wasm) {
        let Ok(payload) = payload else { break };
        match payload {
            Payload::Version { .. } => depth += 1,
            Payload::End(_) => depth = depth.saturating_sub(1),
            Payload::ComponentImportSection(reader) if depth == 1 => {
                for import in reader {
                    let Ok(import) = import else { break };
                    names.push(import.name.name);
                }
            }
            _ => {}
        }
    }
    names
}

fn check_world(component: &Component, engine: &Engine) -> Result<(), String> {
    let ty = component.component_type();
    for (name, _) in ty.imports(engine) {
        check_import(name)?;
    }
    if !ty.exports(engine).any(|(name, _)| name == REQUIRED_EXPORT) {
        let found: Vec<_> = ty
            .exports(engine)
            .map(|(n, _)| escape_control(info::clip_to(n, 200)))
            .take(8)
            .collect();
        return Err(format!(
            "does not export `{REQUIRED_EXPORT}` (exports: {}); was it built against another WIT version?",
            if found.is_empty() { "nothing".to_string() } else { found.join(", ") }
        ));
    }
    Ok(())
}

/// A new instance in a new Store under `spec`'s limits, and its `info`,
/// lifted within the `info` limits and validated.
fn instantiate(
    pre: &MetricCollectorPre<HostState>,
    spec: &PluginSpec,
    ticker: Option<Arc<Ticker>>,
) -> Result<(Live, PluginInfo), StartError> {
    let limits = &spec.limits;
    // At most 1 GiB by the manifest's range: fits a usize.
    let store_limits = host::Limiter::new(limits.memory_bytes as usize, MAX_PLUGIN_TABLE_ELEMENTS);
    let config = Arc::new(spec.config.clone());
    let state = HostState::new(
        store_limits,
        Arc::from(spec.name.as_str()),
        config,
        limits.log_lines_per_minute,
    );
    let mut store = Store::new(pre.engine(), state);
    // Fails harmlessly when the engine does not meter fuel.
    let _ = store.set_fuel(FUEL_PER_CALL);
    store.limiter(|s| &mut s.limiter);
    let tick = EPOCH_TICK.as_millis() as u64;
    let deadline_ticks = limits.call_timeout_ms.div_ceil(tick).max(1);
    let _call = ticker.as_ref().map(Ticker::call);
    store.set_epoch_deadline(deadline_ticks);
    let timeout = limits.call_timeout_ms;
    // The same classification as a failed call's (`Failure::of`); a
    // memory or table past the plugin's cap (all of them together) fails
    // the instantiation itself.
    let reason = |store: &Store<HostState>, e: &wasmtime::Error| {
        Failure::of(e, store.data().limiter.refused.as_deref(), timeout).reason
    };
    let instance = match pre.instance_pre().instantiate(&mut store) {
        Ok(instance) => instance,
        Err(e) => {
            let why = reason(&store, &e);
            return Err(StartError::Call(format!("could not be instantiated: {why}")));
        }
    };
    let failed = |store: &Store<HostState>, e: wasmtime::Error| {
        StartError::Call(format!("`info` failed: {}", reason(store, &e)))
    };
    let bindings = MetricCollector::new(&mut store, &instance).map_err(|e| failed(&store, e))?;
    let export = |store: &mut Store<HostState>, name: &str| {
        let interface = instance.get_export_index(&mut *store, None, REQUIRED_EXPORT);
        instance
            .get_export_index(&mut *store, interface.as_ref(), name)
            .ok_or_else(|| StartError::Call(format!("does not export `{name}`")))
    };
    let info_index = export(&mut store, "info")?;
    let collect_index = export(&mut store, "collect")?;
    let info_fn: lift::InfoFunc = match instance.get_typed_func(&mut store, info_index) {
        Ok(f) => f,
        Err(e) => return Err(failed(&store, e)),
    };
    let collect = match instance.get_typed_func(&mut store, collect_index) {
        Ok(f) => f,
        Err(e) => return Err(failed(&store, e)),
    };
    let mut live = Live {
        store,
        bindings,
        collect,
        deadline_ticks,
        timeout: Duration::from_millis(timeout),
        ticker,
    };
    let start = Instant::now();
    let raw = match info_fn.call(&mut live.store, ()) {
        Ok(raw) => raw,
        Err(e) => return Err(failed(&live.store, e)),
    };
    // The lift ran after the wasm returned, beyond the epoch deadline's reach.
    if live.ticker.is_some() && start.elapsed() > live.timeout {
        return Err(failed(&live.store, past_deadline()));
    }
    let info = lift::plugin_info(raw.0).map_err(StartError::Invalid)?;
    info::validate(&info).map_err(StartError::Invalid)?;
    Ok((live, info))
}

/// Refuses a plugin whose manifest entry denies a metric it does not
/// declare: a typo, or a new version that renamed the metric, which would
/// otherwise be reported under its new name against the operator's word.
fn undeclared_denial(spec: &PluginSpec, info: &PluginInfo) -> Result<(), String> {
    let Some(unknown) =
        spec.deny_metrics.iter().find(|d| !info.metrics.iter().any(|m| &m.name == *d))
    else {
        return Ok(());
    };
    let declared: Vec<&str> = info.metrics.iter().map(|m| m.name.as_str()).collect();
    Err(format!(
        "{}: `{unknown}` is not a metric this plugin declares (it declares: {})",
        spec.deny_metrics_at,
        if declared.is_empty() { "none".to_string() } else { declared.join(", ") }
    ))
}

/// A field type's name in the operator's views.
fn field_type(t: FieldType) -> &'static str {
    match t {
        FieldType::Int => "int",
        FieldType::Float => "float",
        FieldType::Str => "str",
    }
}

/// The declared event kinds the manifest grants.
fn subscriptions(info: &PluginInfo, granted: &[String]) -> Vec<Subscription> {
    info.events
        .iter()
        .enumerate()
        .filter(|(_, e)| granted.contains(&e.kind))
        .map(|(i, e)| Subscription {
            kind: e.kind.clone(),
            // At most MAX_EVENT_DECLS kinds: fits a u32.
            index: i as u32,
            fields: e.fields.iter().map(|f| f.name.clone()).collect(),
            types: e.fields.iter().map(|f| f.type_).collect(),
        })
        .collect()
}

#[cfg(test)]
#[allow(clippy::unwrap_used, reason = "tests")]
mod tests {
    use super::*;

    #[test]
    fn imports_are_read_from_the_bytes_top_level_only() {
        let wasm = wat::parse_str(
            r#"(component
                (import "sonde:collector/host@0.2.0" (instance))
                (component (import "wasi:io/poll@0.2.0" (instance)))
                (import "wasi:cli/environment@0.2.0" (instance)))"#,
        )
        .unwrap();
        let names = top_level_imports(&wasm);
        assert_eq!(names, ["sonde:collector/host@0.2.0", "wasi:cli/environment@0.2.0"]);
        assert!(check_import(names[0]).is_ok());
        let refused = check_import(names[1]).unwrap_err();
        assert!(refused.contains("imports `wasi:cli/environment@0.2.0`"), "{refused}");
        let old = check_import("sonde:collector/host@0.1.0").unwrap_err();
        assert!(old.contains("another version of the sonde:collector WIT, 0.1.0"), "{old}");
        assert!(top_level_imports(b"\0asm garbage").is_empty());
    }
}
