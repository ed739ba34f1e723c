//! The [`Telemetry`] handle the host keeps, and its builder.

use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering::Relaxed};
use std::sync::mpsc::{SyncSender, sync_channel};
use std::sync::{Arc, OnceLock, Weak};
use std::time::Duration;

use sonde_core::{BufferStats, Ident, Manifest, Mode, PluginReport, Report, SourceReport};
use uuid::Uuid;

use crate::cache::CompileCache;
use crate::dispatch::{COMMAND_QUEUE, Command, Dispatcher};
use crate::engine;
use crate::error::Error;
use crate::event::Event;
use crate::overview::PluginOverview;
use crate::plugin::Loader;
use crate::ring::Ring;
use crate::source::{MAX_SOURCES, Source};
use crate::state::StateDir;
use crate::upload::{self, SendOutcome};

/// The mode telemetry really runs in, and why when an environment kill
/// switch overrides the manifest: `SONDE_TELEMETRY=off` or `DO_NOT_TRACK`
/// set to anything but `0` or empty turn it off, whatever the manifest says.
pub fn effective_mode(manifest: &Manifest) -> (Mode, Option<&'static str>) {
    let var = |name| std::env::var(name).ok().filter(|v| !v.is_empty());
    if var("SONDE_TELEMETRY").is_some_and(|v| v.eq_ignore_ascii_case("off")) {
        return (Mode::Off, Some("SONDE_TELEMETRY=off"));
    }
    if var("DO_NOT_TRACK").is_some_and(|v| v != "0") {
        return (Mode::Off, Some("DO_NOT_TRACK is set"));
    }
    (manifest.telemetry.mode, None)
}

/// Builds a [`Telemetry`] from a manifest.
///
/// Defaults: the mode is the manifest's (after the environment kill
/// switches, see [`effective_mode`]); the state directory is used for the
/// instance id and the compile cache unless the mode is `off`.
#[derive(Debug)]
pub struct TelemetryBuilder {
    manifest: Manifest,
    mode: Option<Mode>,
    ephemeral: bool,
    shared_cache: bool,
    fuel: bool,
    dispatch: bool,
}

impl TelemetryBuilder {
    /// Benchmarks only: start without the dispatcher thread, so the ring is
    /// never drained and fills up (to measure `record()` on a full buffer).
    /// Commands such as `flush` and `report` then fail with `Stopped`.
    #[doc(hidden)]
    pub fn without_dispatcher_for_benchmarks(mut self) -> Self {
        self.dispatch = false;
        self
    }

    /// Runs in `mode` instead of the manifest's. Used by `sonde preview` to
    /// show what an `off` manifest would report; pair it with
    /// [`ephemeral`](Self::ephemeral) so nothing is written.
    pub fn mode(mut self, mode: Mode) -> Self {
        self.mode = Some(mode);
        self
    }

    /// Meters every plugin call in fuel (WebAssembly instructions, roughly):
    /// a deterministic cost, reported as `cost.fuel`. Off by default: it
    /// slows plugins by a few per cent. `sonde bench` turns it on.
    pub fn fuel(mut self, fuel: bool) -> Self {
        self.fuel = fuel;
        self
    }

    /// Writes nothing to the state directory: a fresh instance id each time
    /// and no compile cache.
    pub fn ephemeral(mut self, ephemeral: bool) -> Self {
        self.ephemeral = ephemeral;
        self
    }

    /// With [`ephemeral`](Self::ephemeral): still use (and fill) the state
    /// directory's compile cache, when it can be opened, so that inspecting
    /// a manifest (`sonde check`, `list`, `preview`) does not compile again
    /// what the server already compiled. Nothing else is written.
    pub fn shared_compile_cache(mut self, shared: bool) -> Self {
        self.shared_cache = shared;
        self
    }

    /// Starts the runtime. In `off` mode nothing is started and nothing is
    /// written: `record()` returns at once. Otherwise the plugins load on
    /// loader threads (each compile in a child process under its budget), so
    /// this returns before they are compiled; for up to 10 s, while the ring
    /// is less than half full, recorded events wait in the ring for plugins
    /// still loading. It does
    /// write every ring slot once (a few ms for the default 65,536 events),
    /// so that the request path never takes the ring's first page faults.
    pub fn start(self) -> Result<Telemetry, Error> {
        let mode = self.mode.unwrap_or_else(|| effective_mode(&self.manifest).0);
        if mode == Mode::Off {
            return Ok(Telemetry::off());
        }
        let settings = &self.manifest.telemetry;
        if !self.ephemeral
            && let Some(reason) = crate::status::stopped_reason(&settings.state_dir)
        {
            tracing::info!(
                "telemetry stays off: {reason} (remove {} to resume)",
                settings.state_dir.join(crate::status::STOPPED_FILE).display()
            );
            return Ok(Telemetry::off());
        }
        let engine = engine::new_engine(self.fuel)?;
        let mut installation_id = None;
        let (instance_id, cache) = if self.ephemeral {
            let shared = || {
                let state = StateDir::open(&settings.state_dir).ok()?;
                Some(CompileCache::new(state.cache_dir().ok()?, state.secret().ok()?, &engine))
            };
            (Uuid::new_v4(), if self.shared_cache { shared() } else { None })
        } else {
            let state = StateDir::open(&settings.state_dir)?;
            let cache = CompileCache::new(state.cache_dir()?, state.secret()?, &engine);
            if settings.delivery.installation_id {
                installation_id = Some(state.installation_id()?);
            }
            (state.instance_id()?, Some(cache))
        };
        let (ticker, ticks) = engine::start_ticker(&engine)?;
        let loader = Loader::new(engine.clone(), self.fuel, cache, Some(ticks))
            .map_err(|e| Error::Engine(format!("{e:#}")))?;
        let ring = Arc::new(Ring::new(settings.buffer_capacity));
        let processed = Arc::new(AtomicU64::new(0));
        let (tx, rx) = sync_channel(COMMAND_QUEUE);
        let specs = self.manifest.plugins.clone();
        let (r, p) = (ring.clone(), processed.clone());
        let state_dir = (!self.ephemeral).then(|| settings.state_dir.clone());
        let dispatcher_state = state_dir.clone();
        if self.dispatch {
            std::thread::Builder::new()
                .name("sonde-dispatch".into())
                .spawn(move || Dispatcher::run(r, p, specs, loader, rx, dispatcher_state))
                .map_err(|e| Error::Engine(format!("cannot start the dispatcher thread: {e}")))?;
        }
        let counters = Arc::new(upload::Counters::default());
        let telemetry = Telemetry {
            inner: Arc::new(Inner {
                ring: Some(ring),
                mode,
                commands: Some(tx),
                processed,
                instance_id,
                installation_id,
                counters: counters.clone(),
                uploader: OnceLock::new(),
                sources: parking_lot::Mutex::new(Vec::new()),
                app_metrics: settings.delivery.app_metrics,
                ident: settings.ident.clone(),
                view: parking_lot::Mutex::new(None),
                started: humantime::format_rfc3339_seconds(std::time::SystemTime::now())
                    .to_string(),
                _ticker: Some(ticker),
            }),
        };
        if mode == Mode::On {
            let delivery = settings.delivery.clone();
            let endpoint = delivery
                .endpoint
                .clone()
                .ok_or_else(|| Error::Engine("mode = \"on\" needs an endpoint".into()))?;
            let state_dir = state_dir.ok_or_else(|| {
                Error::Engine("an ephemeral runtime cannot send: it has no spool".into())
            })?;
            let transport = upload::Http::new(&delivery, endpoint).map_err(Error::Engine)?;
            let handle =
                upload::start(delivery, state_dir, transport, telemetry.downgrade(), counters)?;
            let _ = telemetry.inner.uploader.set(handle);
        }
        Ok(telemetry)
    }
}

/// The host's handle on the telemetry runtime. Cheap to clone; the runtime
/// stops when the last clone is dropped.
#[derive(Clone, Debug)]
pub struct Telemetry {
    inner: Arc<Inner>,
}

/// A collection made for the local view, reused by scrapes that come within
/// [`MIN_VIEW_INTERVAL`] of it.
#[derive(Debug)]
struct LocalView {
    at: std::time::Instant,
    plugins: Vec<PluginReport>,
    /// Declared descriptions by (plugin, metric), for `# HELP` lines.
    help: HashMap<(String, String), String>,
}

/// How often the local Prometheus view collects from the plugins at most: a
/// scrape sooner than this after the last one shows the same collection.
/// Scraping, however often, can then never make plugins work harder than
/// one collection a second (nor push them over their CPU budget).
pub const MIN_VIEW_INTERVAL: Duration = Duration::from_secs(1);

#[derive(Debug)]
struct Inner {
    ring: Option<Arc<Ring>>,
    mode: Mode,
    commands: Option<SyncSender<Command>>,
    processed: Arc<AtomicU64>,
    instance_id: Uuid,
    installation_id: Option<String>,
    counters: Arc<upload::Counters>,
    uploader: OnceLock<upload::Handle>,
    sources: parking_lot::Mutex<Vec<(String, Arc<dyn Source>)>>,
    app_metrics: bool,
    /// `[telemetry.ident]`, put in every report when set.
    ident: Option<Ident>,
    /// The last collection the local Prometheus view made, and when.
    view: parking_lot::Mutex<Option<LocalView>>,
    /// When the runtime started: the start of every cumulative value.
    started: String,
    _ticker: Option<engine::TickerGuard>,
}

impl Drop for Inner {
    fn drop(&mut self) {
        // The uploader holds only a weak handle; tell it to stop now rather
        // than at its next wake-up. Its spool keeps what was not sent.
        if let Some(u) = self.uploader.get() {
            u.request_stop();
        }
    }
}

/// A handle that does not keep the runtime alive (for the upload thread).
#[derive(Debug, Clone)]
pub(crate) struct WeakTelemetry(Weak<Inner>);

impl WeakTelemetry {
    pub(crate) fn upgrade(&self) -> Option<Telemetry> {
        self.0.upgrade().map(|inner| Telemetry { inner })
    }
}

impl std::fmt::Debug for Ring {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Ring")
            .field("capacity", &self.capacity())
            .field("len", &self.len())
            .finish()
    }
}

impl Telemetry {
    /// A builder for the runtime `manifest` describes.
    pub fn builder(manifest: Manifest) -> TelemetryBuilder {
        TelemetryBuilder {
            manifest,
            mode: None,
            ephemeral: false,
            shared_cache: false,
            fuel: false,
            dispatch: true,
        }
    }

    /// A handle that records nothing.
    pub fn off() -> Telemetry {
        Telemetry {
            inner: Arc::new(Inner {
                ring: None,
                mode: Mode::Off,
                commands: None,
                processed: Arc::new(AtomicU64::new(0)),
                instance_id: Uuid::nil(),
                installation_id: None,
                counters: Arc::default(),
                uploader: OnceLock::new(),
                sources: parking_lot::Mutex::new(Vec::new()),
                app_metrics: false,
                ident: None,
                view: parking_lot::Mutex::new(None),
                started: String::new(),
                _ticker: None,
            }),
        }
    }

    /// Records `event`. Never blocks, never allocates, never logs: when the
    /// ring is full the event is dropped and counted.
    #[inline(always)]
    pub fn record(&self, event: &Event<'_>) {
        if let Some(ring) = &self.inner.ring {
            ring.push(event);
        }
    }

    /// Whether [`record`](Self::record) keeps events: `false` when
    /// telemetry is off. Integrations check it once per request to skip
    /// gathering an event's fields when nothing will read them.
    pub fn is_recording(&self) -> bool {
        self.inner.ring.is_some()
    }

    /// The mode the runtime runs in.
    pub fn mode(&self) -> Mode {
        self.inner.mode
    }

    /// The instance id (nil when off).
    pub fn instance_id(&self) -> Uuid {
        self.inner.instance_id
    }

    fn ask<R>(&self, make: impl FnOnce(SyncSender<R>) -> Command) -> Result<R, Error> {
        let commands = self.inner.commands.as_ref().ok_or(Error::Off)?;
        let (tx, rx) = sync_channel(1);
        commands.send(make(tx)).map_err(|_| Error::Stopped)?;
        rx.recv().map_err(|_| Error::Stopped)
    }

    pub(crate) fn downgrade(&self) -> WeakTelemetry {
        WeakTelemetry(Arc::downgrade(&self.inner))
    }

    /// Applies endpoint directives; returns what was applied, in words.
    pub(crate) fn apply(&self, directives: Vec<sonde_core::Directive>) -> Vec<String> {
        self.ask(|reply| Command::Apply(directives, reply)).unwrap_or_default()
    }

    /// Switches every plugin off for good.
    pub(crate) fn stop_all(&self, reason: String) {
        if let Some(commands) = &self.inner.commands {
            let _ = commands.send(Command::StopAll(reason));
        }
    }

    /// Builds a report now and tries to send it with whatever is spooled
    /// (rate limits still apply). `mode = "on"` only.
    pub fn send_now(&self) -> Result<SendOutcome, Error> {
        let uploader = self.inner.uploader.get().ok_or(Error::NotSending)?;
        uploader.send_now().ok_or(Error::Stopped)
    }

    /// Stops gracefully: builds a last report and sends what it can before
    /// `deadline`; what it cannot send stays in the spool for the next start.
    /// Recording after this is a no-op for delivery.
    pub fn shutdown(&self, deadline: Duration) {
        if let Some(u) = self.inner.uploader.get() {
            u.shutdown(deadline);
        }
    }

    /// Re-reads the plugin list from `manifest`: new or changed plugins are
    /// loaded beside the running ones and swapped in, removed and denied ones
    /// are dropped, and a changed plugin whose new version fails to load keeps
    /// its old version running. Returns what changed, in words. Only the
    /// `[[plugin]]` entries are reloaded; `[telemetry]` changes need a restart.
    ///
    /// Waits until every new or changed plugin has loaded, which may take
    /// as long as its compile budget (`limits.compile_timeout_secs`): call it
    /// off an async runtime's workers. The running plugins keep receiving
    /// events meanwhile; the swap itself happens on the dispatcher thread.
    pub fn reload(&self, manifest: &Manifest) -> Result<Vec<String>, Error> {
        let specs = manifest.plugins.clone();
        self.ask(|reply| Command::Reload(specs, reply))
    }

    /// Attaches a source of application metrics under `name`. Its series
    /// are read when a report is built, and sent only if the manifest says
    /// `app_metrics = true`. At most [`MAX_SOURCES`] sources; returns false
    /// past that (or when telemetry is off).
    pub fn attach(&self, name: &str, source: Arc<dyn Source>) -> bool {
        if self.inner.ring.is_none() {
            return false;
        }
        let mut sources = self.inner.sources.lock();
        if sources.len() >= MAX_SOURCES {
            return false;
        }
        sources.push((name.to_string(), source));
        true
    }

    /// Every attached source's series now.
    fn sources(&self) -> Vec<SourceReport> {
        let sources = self.inner.sources.lock().clone();
        sources
            .iter()
            .map(|(name, s)| {
                let (metrics, overflow_series) = s.snapshot();
                SourceReport {
                    name: name.clone(),
                    overflow_series,
                    dropped_values: s.dropped_values(),
                    invalid_series: 0,
                    metrics,
                }
            })
            .collect()
    }

    /// Waits until every event recorded before this call has been handed to
    /// the plugins. For tools and tests; a server never needs it.
    pub fn flush(&self) -> Result<(), Error> {
        self.ask(Command::Flush)
    }

    /// CPU time (user and system) that sonde's dispatcher thread has used
    /// since the runtime started: taking events off the ring, building
    /// batches and every plugin call, that is what telemetry costs this
    /// process beyond `record()` itself. Waits for the dispatcher to answer,
    /// like [`Telemetry::flush`]. `None` where the platform has no
    /// per-thread CPU clock (it is read on unix).
    pub fn dispatcher_cpu_time(&self) -> Result<Option<Duration>, Error> {
        self.ask(Command::CpuTime)
    }

    /// Waits until no plugin is loading (compiling and checking its code,
    /// see [`PluginState::Loading`](sonde_core::PluginState::Loading)), at
    /// most `timeout`; true when none is. A server need not wait: plugins
    /// that load late miss (and count) the events recorded before. Tools
    /// that want every plugin's verdict (`sonde check`, `list`, `preview`)
    /// wait, as long as the longest compile budget in the manifest.
    pub fn wait_until_loaded(&self, timeout: Duration) -> Result<bool, Error> {
        let commands = self.inner.commands.as_ref().ok_or(Error::Off)?;
        let (tx, rx) = sync_channel(1);
        commands.send(Command::WhenLoaded(tx)).map_err(|_| Error::Stopped)?;
        match rx.recv_timeout(timeout) {
            Ok(()) => Ok(true),
            Err(std::sync::mpsc::RecvTimeoutError::Timeout) => Ok(false),
            Err(std::sync::mpsc::RecvTimeoutError::Disconnected) => Err(Error::Stopped),
        }
    }

    /// Every plugin in the manifest with its state (plugins still being
    /// compiled are `loading`; see [`Telemetry::wait_until_loaded`]).
    pub fn plugins(&self) -> Result<Vec<PluginOverview>, Error> {
        self.ask(Command::Plugins)
    }

    /// Builds a report: drains the ring, collects from every plugin, and
    /// returns what would be sent. It always passes
    /// [`Report::validate`]: a series that would not (an application source's
    /// NaN gauge, say) is left out and counted ([`Report::sanitize`]).
    pub fn report(&self) -> Result<Report, Error> {
        let plugins = self.ask(Command::Report)?;
        let sources = if self.inner.app_metrics { self.sources() } else { Vec::new() };
        self.assemble(plugins, sources)
    }

    /// A report around `plugins` and `sources`: the ring's and delivery's
    /// counters now, this runtime's ids and ident, sanitized.
    fn assemble(
        &self,
        plugins: Vec<PluginReport>,
        sources: Vec<SourceReport>,
    ) -> Result<Report, Error> {
        let ring = self.inner.ring.as_ref().ok_or(Error::Off)?;
        let processed = self.inner.processed.load(Relaxed);
        let dropped = ring.dropped();
        let buffer = BufferStats {
            capacity: ring.capacity() as u64,
            recorded: processed + dropped + ring.len() as u64,
            processed,
            dropped,
            truncated: ring.truncated(),
            invalid_fields: ring.invalid(),
        };
        let mut report = Report::new(self.inner.instance_id, buffer, plugins);
        report.installation_id = self.inner.installation_id.clone();
        report.started = Some(self.inner.started.clone());
        report.delivery = self.inner.counters.snapshot();
        report.sources = sources;
        report.ident = self.inner.ident.clone();
        // Plugin series are finite by construction (plugin/series.rs);
        // sources are the host application's code, checked here.
        report.sanitize();
        Ok(report)
    }

    /// The site owner's own view of this process, in the Prometheus text
    /// exposition format (version 0.0.4, content type
    /// [`PROMETHEUS_CONTENT_TYPE`](crate::PROMETHEUS_CONTENT_TYPE)): every
    /// plugin's current cumulative series (labelled `sonde_plugin`), the
    /// application's own metrics from attached sources (such as the
    /// `sonde-metrics` bridge; shown here whatever `app_metrics` says, since
    /// this view never leaves the process unless the host serves it), and
    /// sonde's own counters (`sonde_events_*`, `sonde_plugin_*`,
    /// `sonde_delivery_*`). Metrics the operator denies are not in it: their
    /// points were dropped where they left the plugin.
    ///
    /// Works in `local` mode: nothing is sent anywhere. Names and labels
    /// that plugins choose are sanitized and escaped so that no plugin can
    /// break the page or pose as another metric (see the module docs of
    /// `prometheus.rs`). Collects from the plugins at most once per
    /// [`MIN_VIEW_INTERVAL`]; waits for the dispatcher like
    /// [`Telemetry::report`], so call it off an async runtime's workers
    /// (`sonde_axum::metrics_handler` does). Fails with [`Error::Off`] when
    /// telemetry is off.
    pub fn prometheus_text(&self) -> Result<String, Error> {
        if self.inner.ring.is_none() {
            return Err(Error::Off);
        }
        let mut view = self.inner.view.lock();
        let fresh = view.as_ref().is_some_and(|v| v.at.elapsed() < MIN_VIEW_INTERVAL);
        if !fresh {
            let plugins = self.ask(Command::Report)?;
            let help = self
                .plugins()?
                .into_iter()
                .flat_map(|p| {
                    let name = p.name;
                    p.metrics.into_iter().map(move |m| ((name.clone(), m.name), m.description))
                })
                .collect();
            *view = Some(LocalView { at: std::time::Instant::now(), plugins, help });
        }
        let Some(v) = view.as_ref() else { return Err(Error::Stopped) };
        let report = self.assemble(v.plugins.clone(), self.sources())?;
        Ok(crate::prometheus::render(&report, &v.help))
    }
}
