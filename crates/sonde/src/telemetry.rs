//! The [`Telemetry`] handle the host keeps, and its builder.

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering::Relaxed};
use std::sync::mpsc::{SyncSender, sync_channel};
use std::time::SystemTime;

use sonde_core::{BufferStats, HostFacts, Manifest, Mode, REPORT_SCHEMA_VERSION, Report};
use uuid::Uuid;

use crate::cache::CompileCache;
use crate::dispatch::{COMMAND_QUEUE, Command, Dispatcher};
use crate::engine;
use crate::error::Error;
use crate::event::Event;
use crate::overview::PluginOverview;
use crate::plugin::Loader;
use crate::ring::Ring;
use crate::state::StateDir;

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
}

impl TelemetryBuilder {
    /// Runs in `mode` instead of the manifest's. Used by `sonde preview` to
    /// show what an `off` manifest would report; pair it with
    /// [`ephemeral`](Self::ephemeral) so nothing is written.
    pub fn mode(mut self, mode: Mode) -> Self {
        self.mode = Some(mode);
        self
    }

    /// Writes nothing to the state directory: a fresh instance id each time
    /// and no compile cache.
    pub fn ephemeral(mut self, ephemeral: bool) -> Self {
        self.ephemeral = ephemeral;
        self
    }

    /// Starts the runtime. In `off` mode nothing is started and nothing is
    /// written: `record()` returns at once. Otherwise the plugins load on the
    /// dispatcher thread, so this returns before they are compiled.
    pub fn start(self) -> Result<Telemetry, Error> {
        let mode = self
            .mode
            .unwrap_or_else(|| effective_mode(&self.manifest).0);
        if mode == Mode::Off {
            return Ok(Telemetry::off());
        }
        let settings = &self.manifest.telemetry;
        let engine = engine::new_engine()?;
        let (instance_id, cache) = if self.ephemeral {
            (Uuid::new_v4(), None)
        } else {
            let state = StateDir::open(&settings.state_dir)?;
            let cache = CompileCache::new(state.cache_dir()?, state.secret()?, &engine);
            (state.instance_id()?, Some(cache))
        };
        let loader =
            Loader::new(engine.clone(), cache).map_err(|e| Error::Engine(format!("{e:#}")))?;
        let ticker = engine::start_ticker(&engine)?;
        let ring = Arc::new(Ring::new(settings.buffer_capacity));
        let processed = Arc::new(AtomicU64::new(0));
        let (tx, rx) = sync_channel(COMMAND_QUEUE);
        let specs = self.manifest.plugins.clone();
        let (r, p) = (ring.clone(), processed.clone());
        std::thread::Builder::new()
            .name("sonde-dispatch".into())
            .spawn(move || Dispatcher::run(r, p, specs, loader, rx))
            .map_err(|e| Error::Engine(format!("cannot start the dispatcher thread: {e}")))?;
        Ok(Telemetry {
            inner: Arc::new(Inner {
                ring: Some(ring),
                mode,
                commands: Some(tx),
                processed,
                instance_id,
                _ticker: Some(ticker),
            }),
        })
    }
}

/// The host's handle on the telemetry runtime. Cheap to clone; the runtime
/// stops when the last clone is dropped.
#[derive(Clone, Debug)]
pub struct Telemetry {
    inner: Arc<Inner>,
}

#[derive(Debug)]
struct Inner {
    ring: Option<Arc<Ring>>,
    mode: Mode,
    commands: Option<SyncSender<Command>>,
    processed: Arc<AtomicU64>,
    instance_id: Uuid,
    _ticker: Option<Arc<()>>,
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
                _ticker: None,
            }),
        }
    }

    /// Records `event`. Never blocks, never allocates, never logs: when the
    /// ring is full the event is dropped and counted.
    #[inline]
    pub fn record(&self, event: Event) {
        if let Some(ring) = &self.inner.ring {
            ring.push(event);
        }
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

    /// Waits until every event recorded before this call has been handed to
    /// the plugins. For tools and tests; a server never needs it.
    pub fn flush(&self) -> Result<(), Error> {
        self.ask(Command::Flush)
    }

    /// Every plugin in the manifest with its state, once loading is done.
    pub fn plugins(&self) -> Result<Vec<PluginOverview>, Error> {
        self.ask(Command::Plugins)
    }

    /// Builds a report: drains the ring, collects from every plugin, and
    /// returns what would be sent.
    pub fn report(&self) -> Result<Report, Error> {
        let plugins = self.ask(Command::Report)?;
        let ring = self.inner.ring.as_ref().ok_or(Error::Off)?;
        let processed = self.inner.processed.load(Relaxed);
        let dropped = ring.dropped();
        Ok(Report {
            schema: REPORT_SCHEMA_VERSION,
            report_id: Uuid::new_v4(),
            instance_id: self.inner.instance_id,
            timestamp: humantime::format_rfc3339_seconds(SystemTime::now()).to_string(),
            host: host_facts(),
            buffer: BufferStats {
                capacity: ring.capacity() as u64,
                recorded: processed + dropped + ring.len() as u64,
                processed,
                dropped,
                truncated: ring.truncated(),
                invalid_fields: ring.invalid(),
            },
            plugins,
            delivery: Default::default(),
        })
    }
}

fn host_facts() -> HostFacts {
    HostFacts {
        sonde_version: env!("CARGO_PKG_VERSION").to_string(),
        os: std::env::consts::OS.to_string(),
        arch: std::env::consts::ARCH.to_string(),
        cpus: std::thread::available_parallelism().map_or(1, |n| n.get() as u32),
    }
}
