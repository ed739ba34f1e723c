//! The dispatcher: the one thread that takes events off the ring, batches
//! them per plugin, and calls the plugins.
//!
//! It owns every plugin and its Store, so no lock guards them. The host talks
//! to it through a small bounded command channel (flush, report, list).
//! Routes from an event kind to the plugins that may see it are computed the
//! first time the kind is seen and cached.

use std::collections::HashMap;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering::Relaxed};
use std::sync::mpsc::{Receiver, RecvTimeoutError, SyncSender, TryRecvError};
use std::time::Duration;

use sonde_core::{PluginReport, PluginSpec};

use crate::event::{Event, EventKind};
use crate::overview::PluginOverview;
use crate::plugin::{BATCH_SIZE, Loader, Plugin};
use crate::ring::Ring;

/// How long the dispatcher sleeps when the ring is empty. Bounds the delay
/// before a partial batch reaches the plugins; `record()` never wakes it.
pub(crate) const IDLE_POLL: Duration = Duration::from_millis(5);

/// Events taken per round before the command channel is looked at again.
const DRAIN_PER_ROUND: usize = 8 * BATCH_SIZE;

/// Pending commands; callers block when it is full.
pub(crate) const COMMAND_QUEUE: usize = 16;

pub(crate) enum Command {
    Flush(SyncSender<()>),
    Report(SyncSender<Vec<PluginReport>>),
    Plugins(SyncSender<Vec<PluginOverview>>),
}

/// Which subscription of which plugin an event kind feeds, and where each
/// declared field sits in the kind.
struct Route {
    plugin: usize,
    sub: usize,
    fields: Vec<Option<u8>>,
}

pub(crate) struct Dispatcher {
    ring: Arc<Ring>,
    processed: Arc<AtomicU64>,
    plugins: Vec<Plugin>,
    routes: HashMap<usize, Vec<Route>>,
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
    ) {
        let plugins = specs
            .into_iter()
            .map(|s| Plugin::load(s, &loader))
            .collect();
        let mut d = Dispatcher {
            ring,
            processed,
            plugins,
            routes: HashMap::new(),
        };
        loop {
            let taken = d.drain(DRAIN_PER_ROUND);
            let command = match commands.try_recv() {
                Ok(c) => Some(c),
                Err(TryRecvError::Disconnected) => break,
                Err(TryRecvError::Empty) if taken > 0 => None,
                Err(TryRecvError::Empty) => {
                    d.send_partial();
                    match commands.recv_timeout(IDLE_POLL) {
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
                let _ = reply.send(self.plugins.iter().map(Plugin::report).collect());
            }
            Command::Plugins(reply) => {
                let _ = reply.send(self.plugins.iter().map(Plugin::overview).collect());
            }
        }
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
        let mut taken = 0;
        while taken < max {
            let Some(event) = self.ring.pop() else { break };
            taken += 1;
            self.dispatch(&event);
        }
        if taken > 0 {
            self.processed.fetch_add(taken as u64, Relaxed);
        }
        taken
    }

    fn dispatch(&mut self, event: &Event) {
        let kind = event.kind();
        let key = kind as *const EventKind as usize;
        let plugins = &mut self.plugins;
        let routes = self
            .routes
            .entry(key)
            .or_insert_with(|| routes_for(kind, plugins));
        for r in routes.iter() {
            let plugin = &mut plugins[r.plugin];
            if !plugin.is_running() {
                continue;
            }
            let builder = &mut plugin.subs[r.sub].builder;
            builder.push(event, &r.fields);
            if builder.len() >= BATCH_SIZE {
                plugin.deliver(r.sub);
            }
        }
    }

    /// Sends every non-empty batch.
    fn send_partial(&mut self) {
        for p in &mut self.plugins {
            for sub in 0..p.subs.len() {
                p.deliver(sub);
            }
        }
    }
}

fn routes_for(kind: &EventKind, plugins: &[Plugin]) -> Vec<Route> {
    let mut routes = Vec::new();
    for (pi, p) in plugins.iter().enumerate() {
        for (si, s) in p.subs.iter().enumerate() {
            if s.kind == kind.name() {
                let fields = s
                    .fields
                    .iter()
                    // MAX_FIELDS is 8: an index fits a u8.
                    .map(|f| kind.field_index(f).map(|i| i as u8))
                    .collect();
                routes.push(Route {
                    plugin: pi,
                    sub: si,
                    fields,
                });
            }
        }
    }
    routes
}
