//! The dispatcher: the one thread that takes events off the ring, batches
//! them per plugin, and calls the plugins.
//!
//! It owns every plugin and its Store, so no lock guards them. The host talks
//! to it through a small bounded command channel (flush, report, list).
//! Routes from an event kind to the plugins that may see it are computed the
//! first time the kind is seen and cached.

use rustc_hash::FxHashMap;
use std::collections::VecDeque;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering::Relaxed};
use std::sync::mpsc::{Receiver, RecvTimeoutError, Sender, SyncSender, TryRecvError};
use std::time::{Duration, Instant};

use std::path::PathBuf;
use std::time::SystemTime;

use sonde_core::{Directive, MAX_DIRECTIVE_METRICS, PluginReport, PluginSpec};

use crate::event::{EventKind, Slot};
use crate::overview::PluginOverview;
use crate::plugin::{BATCH_SIZE, KindBatch, Loader, Plugin, View};
use crate::ring::Ring;
use crate::switches::{FOREVER_UNIX, Off, Source, Switches, unix};
use sonde_core::PluginState;

/// The longest the dispatcher sleeps when the ring is empty or holds less
/// than a batch (`record()` never wakes it). Bounds the delay before a
/// partial batch reaches the plugins. Measured on the example server (side
/// by side, 30 bursts): 2 ms and 5 ms cost the host the same; 20 ms cost it
/// 0.8 % more throughput, as the events written 20 ms earlier have left the
/// core's cache by the time the dispatcher reads them.
const MAX_IDLE: Duration = Duration::from_millis(5);

/// The shortest sleep, when events come fast enough to fill half the ring
/// in less than [`MAX_IDLE`].
const MIN_IDLE: Duration = Duration::from_millis(1);

/// The longest sleep once nothing has been recorded for a while.
const MAX_QUIET_IDLE: Duration = Duration::from_millis(100);

/// The lowest event rate a quiet dispatcher assumes could start at any
/// moment, events per second: its sleep stays short enough that a burst at
/// this rate (or at twice the fastest rate seen) fills at most half the
/// ring before it wakes.
const ASSUMED_BURST: f64 = 1_000_000.0;

/// How long to sleep after a round that took events at `rate` (events per
/// second since the previous round; 0 if it took none).
///
/// After a round that took events: as long as [`MAX_IDLE`], but short
/// enough that, at that rate, a ring of `capacity` is at most half full
/// when the dispatcher wakes. After `quiet` rounds in a row that took
/// nothing: twice as long each round, from [`MAX_IDLE`] up to
/// [`MAX_QUIET_IDLE`], and never longer than a burst at twice `peak` (the
/// fastest rate seen, events per second) or [`ASSUMED_BURST`] would take to
/// fill half the ring. An idle runtime with the default ring wakes about 30
/// times a second instead of 200.
fn idle_for(capacity: usize, rate: f64, quiet: u32, peak: f64) -> Duration {
    let half_full = |rate: f64| Duration::from_secs_f64(capacity as f64 / 2.0 / rate.max(1.0));
    if rate > 0.0 {
        return half_full(rate).clamp(MIN_IDLE, MAX_IDLE);
    }
    let backoff = MAX_IDLE.saturating_mul(1 << quiet.min(8));
    backoff.min(half_full((2.0 * peak).max(ASSUMED_BURST))).clamp(MAX_IDLE, MAX_QUIET_IDLE)
}

/// How long a starting dispatcher keeps recorded events in the ring for
/// plugins still loading, at most (less once the ring is half full): a
/// plugin that loads from the compile cache, or compiles in a second or
/// two, then sees the events recorded since the start; one that takes
/// longer misses them (counted in its `events_skipped`) while its
/// neighbours get theirs.
pub(crate) const LOAD_HOLD: Duration = Duration::from_secs(10);

/// Events taken per round before the command channel is looked at again.
const DRAIN_PER_ROUND: usize = 8 * BATCH_SIZE;

/// Pending commands; callers block when it is full.
pub(crate) const COMMAND_QUEUE: usize = 16;

pub(crate) enum Command {
    Flush(SyncSender<()>),
    Report(SyncSender<Vec<PluginReport>>),
    Plugins(SyncSender<Vec<PluginOverview>>),
    /// The dispatcher thread's CPU time so far.
    CpuTime(SyncSender<Option<Duration>>),
    /// Apply endpoint directives; replies with what was applied.
    Apply(Vec<Directive>, SyncSender<Vec<String>>),
    /// Stop every plugin: telemetry was stopped for good.
    StopAll(String),
    /// Load a new set of plugin specs beside the running ones and swap.
    Reload(Vec<PluginSpec>, SyncSender<Vec<String>>),
    /// Reply once no plugin is loading.
    WhenLoaded(SyncSender<()>),
}

/// A load finished on a loader thread.
struct Loaded {
    id: u64,
    plugin: Plugin,
}

/// A reload waiting for its new plugins to load.
struct PendingReload {
    specs: Vec<PluginSpec>,
    /// Per spec: the load started for it, or `None` when the running
    /// plugin of that name is the same plugin and stays.
    ids: Vec<Option<u64>>,
    done: FxHashMap<u64, Plugin>,
    reply: SyncSender<Vec<String>>,
}

/// Plugin loads under way on loader threads (compiling never happens on
/// the dispatcher thread: `plugin/mod.rs`, `compile.rs`).
struct Loads {
    loader: Arc<Loader>,
    tx: Sender<Loaded>,
    rx: Receiver<Loaded>,
    next_id: u64,
    pending: usize,
    reload: Option<PendingReload>,
    queued: VecDeque<(Vec<PluginSpec>, SyncSender<Vec<String>>)>,
    waiters: Vec<SyncSender<()>>,
}

impl Loads {
    fn new(loader: Loader) -> Loads {
        let (tx, rx) = std::sync::mpsc::channel();
        Loads {
            loader: Arc::new(loader),
            tx,
            rx,
            next_id: 1,
            pending: 0,
            reload: None,
            queued: VecDeque::new(),
            waiters: Vec::new(),
        }
    }

    /// Starts loading `spec` on a loader thread; returns the load's id.
    fn start(&mut self, spec: PluginSpec) -> u64 {
        let id = self.next_id;
        self.next_id += 1;
        self.pending += 1;
        let (loader, tx) = (Arc::clone(&self.loader), self.tx.clone());
        let (fallback, keep) = (spec.clone(), spec.clone());
        // Loads compile in the order they start here (manifest order).
        let ticket = self.loader.lanes().ticket();
        let spawned = std::thread::Builder::new().name("sonde-load".into()).spawn(move || {
            let plugin = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
                crate::compile::with_ticket(ticket, || Plugin::load(spec, &loader))
            }))
            .unwrap_or_else(|_| {
                Plugin::refused(fallback, "loading it panicked in the host".into())
            });
            // The dispatcher may be gone: the runtime stopped.
            let _ = tx.send(Loaded { id, plugin });
        });
        if let Err(e) = spawned {
            tracing::warn!(plugin = %keep.name, "cannot start a loader thread: {e}");
            let plugin = Plugin::refused(keep, format!("cannot start a loader thread: {e}"));
            let _ = self.tx.send(Loaded { id, plugin });
        }
        id
    }
}

/// A subscription an event kind feeds: the plugin, its subscription
/// (`None` for a plugin still loading, which only counts what it misses),
/// and the view that builds its batches.
struct Route {
    plugin: usize,
    sub: Option<(usize, View)>,
}

/// An event kind's pending events, in one batch shared by every
/// subscription to the kind, and where they go.
struct KindRoutes {
    shared: KindBatch,
    routes: Vec<Route>,
}

pub(crate) struct Dispatcher {
    ring: Arc<Ring>,
    processed: Arc<AtomicU64>,
    plugins: Vec<Plugin>,
    /// Routes of each event kind seen, keyed by the kind's address.
    routes: Routes,
    switches: Switches,
    /// Where switches persist; `None` for an ephemeral runtime.
    state_dir: Option<PathBuf>,
    last_expiry_check: u64,
    loads: Loads,
    /// Set by `StopAll`: plugins that finish loading later stop too.
    stopped: Option<String>,
}

impl Dispatcher {
    /// Loads the plugins (on this thread, off the host's), then serves until
    /// every `Telemetry` handle is gone.
    pub(crate) fn run(
        ring: Arc<Ring>,
        processed: Arc<AtomicU64>,
        specs: Vec<PluginSpec>,
        loader: Loader,
        commands: Receiver<Command>,
        state_dir: Option<PathBuf>,
    ) {
        let mut loads = Loads::new(loader);
        let plugins = specs
            .into_iter()
            .map(|spec| {
                if !spec.allow {
                    return Plugin::load(spec, &loads.loader);
                }
                let id = loads.start(spec.clone());
                Plugin::loading(spec, id)
            })
            .collect();
        let switches = state_dir.as_deref().map(Switches::load).unwrap_or_default();
        let mut d = Dispatcher {
            ring,
            processed,
            plugins,
            routes: Routes::default(),
            switches,
            state_dir,
            last_expiry_check: 0,
            loads,
            stopped: None,
        };
        d.sync_switches();
        let capacity = d.ring.capacity();
        // Keep what is recorded meanwhile in the ring for the plugins still
        // loading, for a while (see LOAD_HOLD); commands wait.
        let hold = Instant::now() + LOAD_HOLD;
        while d.loads.pending > 0 && Instant::now() < hold && d.ring.len() < capacity / 2 {
            if let Ok(loaded) = d.loads.rx.recv_timeout(MAX_IDLE) {
                d.install(loaded);
            }
        }
        let mut last_round = Instant::now();
        // Rounds in a row that took nothing, and the fastest rate seen.
        let (mut quiet, mut peak) = (0u32, 0f64);
        loop {
            d.take_loads();
            d.expire_switches();
            d.tick_plugins();
            let taken = d.drain(DRAIN_PER_ROUND);
            let now = Instant::now();
            let rate = taken as f64 / (now - last_round).as_secs_f64().max(1e-6);
            last_round = now;
            if taken > 0 {
                quiet = 0;
                // A round that emptied the ring took what was recorded
                // since the last one; a round cut at DRAIN_PER_ROUND was
                // draining a backlog, at the dispatcher's speed, not the
                // host's rate.
                if taken < DRAIN_PER_ROUND {
                    peak = peak.max(rate);
                }
            } else {
                quiet = quiet.saturating_add(1);
            }
            let idle = idle_for(capacity, rate, quiet, peak);
            let command = match commands.try_recv() {
                Ok(c) => Some(c),
                Err(TryRecvError::Disconnected) => break,
                // Under load, go straight on; a trickle (less than a batch)
                // waits for more, so plugins get fuller batches and the
                // dispatcher does not spin beside the host's threads.
                // Partial batches go out only once the ring is empty (and on
                // flush and report), so batch sizes do not depend on timing.
                Err(TryRecvError::Empty) if taken >= BATCH_SIZE => None,
                Err(TryRecvError::Empty) => {
                    if taken == 0 {
                        d.send_partial();
                    }
                    match commands.recv_timeout(idle) {
                        Ok(c) => Some(c),
                        Err(RecvTimeoutError::Timeout) => None,
                        Err(RecvTimeoutError::Disconnected) => break,
                    }
                }
            };
            if let Some(c) = command {
                d.handle(c);
            }
        }
        // The runtime is gone: its plugins, their Stores and (usually the
        // last reference) the ring go now. The ring's tens of MB come from
        // the heap once glibc has raised its mmap threshold: give them back
        // to the system rather than keep them in this thread's arena.
        drop(d);
        give_back_freed_memory();
    }

    fn handle(&mut self, command: Command) {
        // A reply the caller stopped waiting for is not an error.
        match command {
            Command::Flush(reply) => {
                self.drain_now();
                let _ = reply.send(());
            }
            Command::Report(reply) => {
                self.drain_now();
                for p in &mut self.plugins {
                    p.collect();
                }
                let reports: Vec<PluginReport> = self.plugins.iter().map(Plugin::report).collect();
                if let Some(dir) = &self.state_dir {
                    crate::status::save_plugins(dir, &reports);
                }
                let _ = reply.send(reports);
            }
            Command::Plugins(reply) => {
                let _ = reply.send(self.plugins.iter().map(Plugin::overview).collect());
            }
            Command::CpuTime(reply) => {
                let _ = reply.send(thread_cpu_time());
            }
            Command::Apply(directives, reply) => {
                let applied = self.apply(directives);
                let _ = reply.send(applied);
            }
            Command::Reload(specs, reply) => {
                if self.loads.reload.is_some() {
                    self.loads.queued.push_back((specs, reply));
                } else {
                    self.begin_reload(specs, reply);
                }
            }
            Command::WhenLoaded(reply) => {
                if self.loads.pending == 0 {
                    let _ = reply.send(());
                } else {
                    self.loads.waiters.push(reply);
                }
            }
            Command::StopAll(reason) => {
                self.stopped = Some(reason);
                self.drain_now();
                self.apply_stop();
                self.reroute();
            }
        }
    }

    /// Takes every finished load.
    fn take_loads(&mut self) {
        while let Ok(loaded) = self.loads.rx.try_recv() {
            self.install(loaded);
        }
    }

    /// A load finished: the plugin takes its placeholder's place, or joins
    /// the reload it belongs to.
    fn install(&mut self, Loaded { id, mut plugin }: Loaded) {
        self.loads.pending = self.loads.pending.saturating_sub(1);
        let for_reload = self.loads.reload.as_ref().is_some_and(|r| r.ids.contains(&Some(id)));
        if for_reload {
            if let Some(r) = self.loads.reload.as_mut() {
                r.done.insert(id, plugin);
            }
        } else if let Some(at) = self.plugins.iter().position(|p| p.load_id == Some(id)) {
            // What is pending goes to the plugins as they were.
            self.send_partial();
            let slot = &mut self.plugins[at];
            plugin.cost.events_skipped += slot.cost.events_skipped;
            *slot = plugin;
            self.apply_stop();
            // Routes name plugins by index and subscription: recompute.
            self.sync_switches();
        }
        if self
            .loads
            .reload
            .as_ref()
            .is_some_and(|r| r.done.len() == r.ids.iter().flatten().count())
            && let Some(r) = self.loads.reload.take()
        {
            self.finish_reload(r);
        }
        if self.loads.pending == 0 {
            give_back_freed_memory();
            for waiter in self.loads.waiters.drain(..) {
                let _ = waiter.send(());
            }
        }
    }

    /// Starts loading, beside the running plugins, every plugin of `specs`
    /// that is new or changed; the swap happens when all have loaded
    /// (`finish_reload`), and `reply` then gets the changes. Events keep
    /// flowing to the running plugins meanwhile.
    fn begin_reload(&mut self, specs: Vec<PluginSpec>, reply: SyncSender<Vec<String>>) {
        let ids = specs
            .iter()
            .map(|spec| {
                let same = self
                    .plugins
                    .iter()
                    .any(|p| p.spec.name == spec.name && p.spec.same_plugin(spec));
                (!same).then(|| self.loads.start(spec.clone()))
            })
            .collect();
        self.loads.reload = Some(PendingReload { specs, ids, done: FxHashMap::default(), reply });
        if self.loads.reload.as_ref().is_some_and(|r| r.ids.iter().all(Option::is_none))
            && let Some(r) = self.loads.reload.take()
        {
            self.finish_reload(r);
        }
    }

    /// Swaps in a new set of plugins: unchanged ones keep running (and
    /// their numbers), changed or new ones were loaded beside them (`done`,
    /// by the load id `ids` gives each spec), and a changed plugin whose new
    /// version cannot load keeps its old version.
    fn finish_reload(&mut self, r: PendingReload) {
        let PendingReload { specs, ids, mut done, reply } = r;
        self.drain_now();
        let mut old: Vec<Option<Plugin>> =
            std::mem::take(&mut self.plugins).into_iter().map(Some).collect();
        let mut changes = Vec::new();
        for (spec, id) in specs.into_iter().zip(ids) {
            let name = spec.name.clone();
            let previous = old
                .iter_mut()
                .find(|p| p.as_ref().is_some_and(|p| p.spec.name == name))
                .and_then(Option::take);
            let new = id.and_then(|id| done.remove(&id));
            match (previous, new) {
                (Some(mut p), None) => {
                    p.spec = spec; // new line numbers, same plugin
                    self.plugins.push(p);
                }
                (None, None) => {
                    // Cannot happen: a spec without a load had a running
                    // plugin of its name. Load it now rather than lose it.
                    let id = self.loads.start(spec.clone());
                    self.plugins.push(Plugin::loading(spec, id));
                }
                (previous, Some(fresh)) => {
                    let keep_old = previous.as_ref().is_some_and(Plugin::is_switchable)
                        && matches!(fresh.state, PluginState::Refused | PluginState::Failed);
                    match previous {
                        Some(p) if keep_old => {
                            let why = fresh.reason.clone().unwrap_or_default();
                            changes.push(format!("kept the running version of `{name}`: the new one was refused: {why}"));
                            self.plugins.push(p);
                        }
                        Some(_) => {
                            changes
                                .push(format!("replaced `{name}`: now {}", fresh.state.as_str()));
                            self.plugins.push(fresh);
                        }
                        None => {
                            changes.push(format!("added `{name}`: {}", fresh.state.as_str()));
                            self.plugins.push(fresh);
                        }
                    }
                }
            }
        }
        for p in old.into_iter().flatten() {
            changes.push(format!("removed `{}`", p.spec.name));
        }
        self.apply_stop();
        self.sync_switches();
        let _ = reply.send(changes);
        if let Some((specs, reply)) = self.loads.queued.pop_front() {
            self.begin_reload(specs, reply);
        }
    }

    /// After `StopAll`, every plugin that may be switched is off for good,
    /// those that loaded or were reloaded since included.
    fn apply_stop(&mut self) {
        let Some(reason) = &self.stopped else { return };
        for p in &mut self.plugins {
            if p.is_switchable() && p.off.as_ref().is_none_or(|o| o.until_unix != FOREVER_UNIX) {
                p.off = Some(Off {
                    until_unix: FOREVER_UNIX,
                    reason: reason.clone(),
                    source: Source::Endpoint,
                });
            }
        }
    }

    /// Applies endpoint directives to the switches; unknown plugins and
    /// plugins the operator did not let run are left alone.
    fn apply(&mut self, directives: Vec<Directive>) -> Vec<String> {
        let mut applied = Vec::new();
        for d in directives {
            let plugin = match &d {
                Directive::DisablePlugin { plugin, .. }
                | Directive::EnablePlugin { plugin }
                | Directive::DisableMetrics { plugin, .. }
                | Directive::EnableMetrics { plugin, .. } => plugin.clone(),
                Directive::Stop { .. } => continue,
            };
            // A plugin still loading takes switches too: they apply once it runs.
            let switchable = |p: &Plugin| p.is_switchable() || p.state == PluginState::Loading;
            if !self.plugins.iter().any(|p| p.spec.name == plugin && switchable(p)) {
                continue;
            }
            let from_endpoint = |o: &Off| o.source == Source::Endpoint;
            match d {
                Directive::DisablePlugin { for_secs, reason, .. } => {
                    let reason =
                        if reason.is_empty() { "disabled by the endpoint".into() } else { reason };
                    applied.push(format!("disabled plugin `{plugin}` for {for_secs} s: {reason}"));
                    self.switches
                        .plugins
                        .insert(plugin, Off::new(for_secs, reason, Source::Endpoint));
                }
                Directive::EnablePlugin { .. } => {
                    if self.switches.plugins.get(&plugin).is_some_and(from_endpoint) {
                        self.switches.plugins.remove(&plugin);
                        applied.push(format!("re-enabled plugin `{plugin}`"));
                    }
                }
                Directive::DisableMetrics { metrics, for_secs, reason, .. } => {
                    let reason =
                        if reason.is_empty() { "disabled by the endpoint".into() } else { reason };
                    let muted = self.switches.metrics.entry(plugin.clone()).or_default();
                    for m in metrics.into_iter().take(MAX_DIRECTIVE_METRICS) {
                        applied
                            .push(format!("disabled metric `{m}` of `{plugin}` for {for_secs} s"));
                        muted.insert(m, Off::new(for_secs, reason.clone(), Source::Endpoint));
                    }
                }
                Directive::EnableMetrics { metrics, .. } => {
                    if let Some(muted) = self.switches.metrics.get_mut(&plugin) {
                        for m in metrics {
                            if muted.get(&m).is_some_and(from_endpoint) {
                                muted.remove(&m);
                                applied.push(format!("re-enabled metric `{m}` of `{plugin}`"));
                            }
                        }
                    }
                }
                Directive::Stop { .. } => {}
            }
        }
        if !applied.is_empty() {
            self.drain_now();
            self.sync_switches();
            if let Some(dir) = &self.state_dir {
                self.switches.save(dir);
            }
        }
        applied
    }

    /// Restarts plugins whose backoff is over, and lets the local breaker
    /// switch off a plugin that stayed over its CPU budget.
    fn tick_plugins(&mut self) {
        let now = Instant::now();
        let mut tripped = false;
        for p in &mut self.plugins {
            if let Some(reason) = p.tick(now) {
                tracing::warn!(plugin = %p.spec.name, "plugin switched off locally: {reason}");
                let off = Off::new(p.spec.limits.disable_secs, reason, Source::Local);
                self.switches.plugins.insert(p.spec.name.clone(), off);
                tripped = true;
            }
        }
        if tripped {
            self.sync_switches();
            if let Some(dir) = &self.state_dir {
                self.switches.save(dir);
            }
        }
    }

    /// Drops expired switches, at most once a second.
    fn expire_switches(&mut self) {
        let now = unix(SystemTime::now());
        if now == self.last_expiry_check {
            return;
        }
        self.last_expiry_check = now;
        if self.switches.expire(now) {
            self.sync_switches();
            if let Some(dir) = &self.state_dir {
                self.switches.save(dir);
            }
        }
    }

    /// Mirrors the switches onto the plugins, and recomputes the routes
    /// (a plugin switched off costs no batch building).
    fn sync_switches(&mut self) {
        self.send_partial();
        for p in &mut self.plugins {
            if p.off.as_ref().is_some_and(|o| o.until_unix == FOREVER_UNIX) {
                continue; // stopped for good
            }
            let off =
                self.switches.plugins.get(&p.spec.name).filter(|_| p.is_switchable()).cloned();
            if off.is_some() && p.off.is_none() {
                // Last collection before it goes quiet: what it counted
                // from the events it already received stays in reports.
                p.collect();
            }
            p.off = off;
            p.muted = self.switches.metrics.get(&p.spec.name).cloned().unwrap_or_default();
        }
        self.routes.clear();
    }

    /// Everything recorded before this call reaches the plugins.
    fn drain_now(&mut self) {
        let pending = self.ring.len();
        let mut taken = 0;
        while taken < pending {
            let n = self.drain(pending - taken);
            if n == 0 {
                break;
            }
            taken += n;
        }
        self.send_partial();
    }

    /// Takes up to `max` events off the ring; returns how many.
    fn drain(&mut self, max: usize) -> usize {
        let ring = Arc::clone(&self.ring);
        let taken = ring.drain(max, |slot| self.dispatch(slot));
        if taken > 0 {
            self.processed.fetch_add(taken as u64, Relaxed);
        }
        taken
    }

    fn dispatch(&mut self, event: &Slot) {
        let set = self.routes.of(event.kind(), &self.plugins);
        if set.routes.is_empty() {
            // No plugin subscribes to this kind, or is loading with it granted.
            return;
        }
        set.shared.push(event);
        if set.shared.len() >= BATCH_SIZE {
            deliver(set, &mut self.plugins);
        }
    }

    /// Sends every non-empty batch.
    fn send_partial(&mut self) {
        for set in &mut self.routes.sets {
            deliver(set, &mut self.plugins);
        }
    }

    /// Sends what is pending, then forgets every route: the plugins, their
    /// states or their switches changed.
    fn reroute(&mut self) {
        self.send_partial();
        self.routes.clear();
    }
}

/// Sends a kind's pending events to each subscription (a plugin that is
/// not running only counts them, as skipped, if it is loading or about to
/// restart), then empties the shared batch.
fn deliver(set: &mut KindRoutes, plugins: &mut [Plugin]) {
    let events = set.shared.len() as u64;
    if events == 0 {
        return;
    }
    for r in &mut set.routes {
        let plugin = &mut plugins[r.plugin];
        match &mut r.sub {
            Some((sub, view)) if plugin.is_running() => {
                plugin.deliver(*sub, view.build(&set.shared), events);
            }
            _ if plugin.is_restarting() => plugin.cost.events_skipped += events,
            _ => {}
        }
    }
    set.shared.clear();
}

/// Returns the heap that loading plugins freed to the system. Compiling a
/// plugin (on a first start, or after an upgrade) leaves freed memory in
/// this thread's glibc arena: on the example server with three plugins,
/// RSS after a first start went from 44.4 to 42.6 MiB with this call (a
/// start from the compile cache: 34.1 MiB; most of the rest is the
/// compiler's own code, paged in from the binary).
fn give_back_freed_memory() {
    #[cfg(all(target_os = "linux", target_env = "gnu"))]
    #[allow(unsafe_code, reason = "malloc_trim only releases free memory")]
    // SAFETY: `malloc_trim` takes no pointers; it walks glibc's own arenas
    // under their locks and returns unused pages to the kernel.
    unsafe {
        libc::malloc_trim(0);
    }
}

/// The CPU time the calling thread has used (user and system), where the
/// platform has per-thread CPU clocks. A system call: asked on request,
/// never per event or per round.
fn thread_cpu_time() -> Option<Duration> {
    #[cfg(unix)]
    #[allow(unsafe_code, reason = "clock_gettime writes only into `ts`")]
    {
        let mut ts = libc::timespec { tv_sec: 0, tv_nsec: 0 };
        // SAFETY: `ts` is a valid, writable timespec for the call's duration.
        let ok = unsafe { libc::clock_gettime(libc::CLOCK_THREAD_CPUTIME_ID, &mut ts) } == 0;
        let secs = u64::try_from(ts.tv_sec).ok()?;
        let nanos = u32::try_from(ts.tv_nsec).ok()?;
        ok.then(|| Duration::new(secs, nanos))
    }
    #[cfg(not(unix))]
    None
}

/// The routes of every event kind seen, computed on first sight. Looked up
/// once per event: consecutive events are usually of one kind, so the last
/// kind's routes are kept at hand (callgrind: 30 of the 166 instructions
/// `dispatch` took per event went to the hash map).
#[derive(Default)]
struct Routes {
    /// Index into `sets` by the kind's address (Fx: no untrusted keys).
    index: FxHashMap<usize, usize>,
    sets: Vec<KindRoutes>,
    /// The last kind looked up (its address, 0 for none) and its set.
    last: (usize, usize),
}

impl Routes {
    fn of(&mut self, kind: &'static EventKind, plugins: &[Plugin]) -> &mut KindRoutes {
        let key = kind as *const EventKind as usize;
        if self.last.0 != key {
            let next = self.sets.len();
            let set = *self.index.entry(key).or_insert(next);
            if set == next {
                self.sets.push(routes_for(kind, plugins));
            }
            self.last = (key, set);
        }
        &mut self.sets[self.last.1]
    }

    /// Forgets every route (pending events must have been sent).
    fn clear(&mut self) {
        *self = Routes::default();
    }
}

/// The routes of `kind`: every subscription to it of a plugin that is not
/// switched off, and every plugin still loading that was granted it.
fn routes_for(kind: &EventKind, plugins: &[Plugin]) -> KindRoutes {
    let mut shared = KindBatch::new();
    let mut routes = Vec::new();
    for (pi, p) in plugins.iter().enumerate() {
        // A plugin still loading has no subscriptions yet: a route to it
        // only counts the events it misses.
        if p.state == PluginState::Loading && p.spec.events.iter().any(|e| e == kind.name()) {
            routes.push(Route { plugin: pi, sub: None });
        }
        if p.off.is_some() {
            continue;
        }
        for (si, s) in p.subs.iter().enumerate() {
            if s.kind == kind.name() {
                let columns: Option<Vec<u8>> = s
                    .fields
                    .iter()
                    .zip(&s.types)
                    // MAX_FIELDS is 8: an index fits a u8; every (field,
                    // type) a kind can be asked for fits the union.
                    .map(|(f, t)| shared.column((kind.field_index(f).map(|i| i as u8), *t)))
                    .collect();
                // A column missing would shift every later one: no batch
                // rather than a wrong one (cannot happen, see above).
                if let Some(columns) = columns {
                    let view = View::new(s.index, columns, &shared);
                    routes.push(Route { plugin: pi, sub: Some((si, view)) });
                }
            }
        }
    }
    KindRoutes { shared, routes }
}

#[cfg(test)]
mod tests {
    use super::*;

    static A: EventKind = EventKind::new("a", &["x"]);
    static B: EventKind = EventKind::new("b", &["x"]);

    #[test]
    fn routes_are_computed_once_per_kind_and_forgotten_on_clear() {
        let mut routes = Routes::default();
        for kind in [&A, &B, &A, &A, &B] {
            assert!(routes.of(kind, &[]).routes.is_empty());
        }
        assert_eq!((routes.sets.len(), routes.index.len()), (2, 2));
        assert_eq!(
            routes.last,
            (&B as *const EventKind as usize, routes.index[&(&B as *const EventKind as usize)])
        );
        routes.clear();
        assert!(routes.sets.is_empty() && routes.last == (0, 0));
    }

    #[test]
    fn the_idle_sleep_is_long_unless_the_ring_would_fill_past_half() {
        let ms = Duration::from_millis;
        // Nothing came in the first quiet round: twice the busy sleep.
        assert_eq!(idle_for(65_536, 0.0, 1, 0.0), ms(10));
        // 100k events/s into 65,536 slots: half full after 330 ms.
        assert_eq!(idle_for(65_536, 1e5, 0, 1e5), MAX_IDLE);
        // 200k events/s into 1,024 slots: half full after 2.56 ms.
        let idle = idle_for(1_024, 2e5, 0, 2e5);
        assert!(idle > ms(2) && idle < ms(3), "{idle:?}");
        // Faster than that: never below the shortest sleep.
        assert_eq!(idle_for(16, 1e7, 0, 1e7), MIN_IDLE);
    }

    #[test]
    fn a_quiet_dispatcher_backs_off_only_as_far_as_a_burst_allows() {
        let ms = Duration::from_millis;
        let quiet = |capacity, rounds, peak| idle_for(capacity, 0.0, rounds, peak);
        // Doubling per quiet round, from the busy sleep.
        assert_eq!(quiet(65_536, 0, 0.0), MAX_IDLE);
        assert_eq!(quiet(65_536, 2, 0.0), ms(20));
        // The default ring: a 1M events/s burst fills half of it in 32.8 ms.
        let cap = quiet(65_536, 30, 0.0);
        assert!(cap > ms(32) && cap < ms(33), "{cap:?}");
        // A bigger ring may sleep up to the quiet maximum...
        assert_eq!(quiet(1 << 20, 30, 0.0), MAX_QUIET_IDLE);
        // ...unless events came faster than the assumed burst before.
        let seen = quiet(1 << 20, 30, 1e7);
        assert!(seen > ms(26) && seen < ms(27), "{seen:?}");
        // A small ring never sleeps less than a busy dispatcher would.
        assert_eq!(quiet(1_024, 30, 1e7), MAX_IDLE);
    }
}
