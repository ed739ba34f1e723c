//! The one wasmtime [`Engine`] and the thread that advances its epoch.
//!
//! Every plugin call runs with an epoch deadline; a background ticker bumps
//! the epoch every [`EPOCH_TICK`] while calls happen (see [`Ticker`]), so a
//! call that runs past its deadline traps instead of holding the dispatcher.

use std::sync::atomic::{AtomicBool, AtomicU64, Ordering::SeqCst};
use std::sync::{Arc, OnceLock};
use std::thread::Thread;
use std::time::Duration;

use wasmtime::{Config, Engine, OptLevel};

use crate::error::Error;

/// How often the epoch advances: the granularity of call deadlines.
pub(crate) const EPOCH_TICK: Duration = Duration::from_millis(10);

/// Native stack a plugin may use. Deep recursion traps with a stack overflow
/// long before it could touch the host's own stack.
pub(crate) const MAX_WASM_STACK: usize = 512 * 1024;

/// Fuel given to a call when fuel is metered: far more than any call can
/// burn before its deadline, so fuel only measures and never stops a call.
pub(crate) const FUEL_PER_CALL: u64 = u64::MAX / 4;

/// Builds the shared engine; `fuel` meters instructions (deterministic cost
/// for `sonde bench` and tests, a few per cent slower).
pub(crate) fn new_engine(fuel: bool) -> Result<Engine, Error> {
    let mut config = Config::new();
    config.consume_fuel(fuel);
    config
        .wasm_component_model(true)
        .epoch_interruption(true)
        .max_wasm_stack(MAX_WASM_STACK)
        .cranelift_opt_level(OptLevel::Speed)
        // Plugins are synchronous; without concurrency support a call's
        // fixed cost drops from ~640 ns to ~200 ns.
        .concurrency_support(false);
    Engine::new(&config).map_err(|e| Error::Engine(format!("{e:#}")))
}

/// Ticks in which no plugin call ran or started, after which the ticker
/// parks: 1 s.
/// An idle runtime then wakes nobody; a busy one (a call every few
/// milliseconds) never pays for a wake-up.
pub(crate) const QUIET_TICKS: u64 = 100;

/// The epoch ticker's state, shared with whoever starts plugin calls.
///
/// The ticker advances the epoch every [`EPOCH_TICK`] while calls happen,
/// and parks after [`QUIET_TICKS`] ticks in which no call ran or started;
/// the next [`Ticker::call`] wakes it. A call's deadline counts ticks from
/// the call's start, and the ticker never parks while a call runs, so
/// parking never stretches or shortens a deadline.
#[derive(Debug, Default)]
pub(crate) struct Ticker {
    /// Calls started so far.
    calls: AtomicU64,
    /// Calls ended so far.
    ended: AtomicU64,
    /// The ticker is parked (or about to park): the next call unparks it.
    parked: AtomicBool,
    stop: AtomicBool,
    /// Epoch increments so far (read by tests).
    ticks: AtomicU64,
    thread: OnceLock<Thread>,
}

impl Ticker {
    /// Tells the ticker a plugin call is about to run, until the returned
    /// guard is dropped. A few atomic operations per call (not per event)
    /// when the ticker is awake; wakes it when parked.
    pub(crate) fn call(self: &Arc<Self>) -> Call {
        self.calls.fetch_add(1, SeqCst);
        if self.parked.load(SeqCst)
            && let Some(t) = self.thread.get()
        {
            t.unpark();
        }
        Call(Arc::clone(self))
    }

    /// Epoch increments so far.
    #[cfg(test)]
    pub(crate) fn ticks(&self) -> u64 {
        self.ticks.load(SeqCst)
    }

    fn run(&self, engine: &Engine) {
        let mut seen = self.calls.load(SeqCst);
        let mut quiet = 0;
        while !self.stop.load(SeqCst) {
            std::thread::sleep(EPOCH_TICK);
            engine.increment_epoch();
            self.ticks.fetch_add(1, SeqCst);
            let calls = self.calls.load(SeqCst);
            let running = calls != self.ended.load(SeqCst);
            quiet = if calls == seen && !running { quiet + 1 } else { 0 };
            seen = calls;
            if quiet < QUIET_TICKS {
                continue;
            }
            // Announce the park, then look once more: a call that started
            // in between either sees `parked` and unparks us (the token
            // makes `park` return at once) or is seen here.
            self.parked.store(true, SeqCst);
            while self.calls.load(SeqCst) == seen && !self.stop.load(SeqCst) {
                std::thread::park();
            }
            self.parked.store(false, SeqCst);
            quiet = 0;
        }
    }
}

/// A plugin call in progress (see [`Ticker::call`]).
#[derive(Debug)]
pub(crate) struct Call(Arc<Ticker>);

impl Drop for Call {
    fn drop(&mut self) {
        self.0.ended.fetch_add(1, SeqCst);
    }
}

/// Stops the ticker when dropped.
#[derive(Debug)]
pub(crate) struct TickerGuard(Arc<Ticker>);

impl Drop for TickerGuard {
    fn drop(&mut self) {
        self.0.stop.store(true, SeqCst);
        if let Some(t) = self.0.thread.get() {
            t.unpark();
        }
    }
}

/// Starts the thread that advances `engine`'s epoch (see [`Ticker`]) until
/// the returned guard is dropped.
pub(crate) fn start_ticker(engine: &Engine) -> Result<(TickerGuard, Arc<Ticker>), Error> {
    let ticker = Arc::new(Ticker::default());
    let engine = engine.clone();
    let own = Arc::clone(&ticker);
    let handle = std::thread::Builder::new()
        .name("sonde-epoch".into())
        .spawn(move || own.run(&engine))
        .map_err(|e| Error::Engine(format!("cannot start the epoch thread: {e}")))?;
    let _ = ticker.thread.set(handle.thread().clone());
    Ok((TickerGuard(Arc::clone(&ticker)), ticker))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_ticker_parks_when_no_call_starts_and_wakes_for_the_next() {
        let engine = new_engine(false).expect("engine");
        let (guard, ticker) = start_ticker(&engine).expect("ticker thread");
        let quiet = EPOCH_TICK * (QUIET_TICKS as u32);
        // Idle: it parks after QUIET_TICKS ticks (scheduling may stretch
        // each tick, never shorten it).
        let deadline = std::time::Instant::now() + quiet * 20;
        while !ticker.parked.load(SeqCst) {
            assert!(std::time::Instant::now() < deadline, "the ticker never parked");
            std::thread::sleep(EPOCH_TICK);
        }
        let parked_at = ticker.ticks();
        assert!(parked_at >= QUIET_TICKS, "parked after {parked_at} ticks");
        std::thread::sleep(EPOCH_TICK * 10);
        assert_eq!(ticker.ticks(), parked_at, "a parked ticker does not tick");
        // A call starts: it ticks again, and keeps ticking while the call
        // runs, however long.
        let call = ticker.call();
        let deadline = std::time::Instant::now() + quiet;
        while ticker.ticks() == parked_at {
            assert!(std::time::Instant::now() < deadline, "the ticker did not wake");
            std::thread::sleep(EPOCH_TICK);
        }
        let woke_at = ticker.ticks();
        while ticker.ticks() < woke_at + QUIET_TICKS + 20 {
            std::thread::sleep(EPOCH_TICK * 5);
            assert!(!ticker.parked.load(SeqCst), "parked during a call");
        }
        drop(call);
        // Calls keep it awake; the guard stops it.
        for _ in 0..5 {
            drop(ticker.call());
            std::thread::sleep(EPOCH_TICK);
            assert!(!ticker.parked.load(SeqCst));
        }
        drop(guard);
        let stopped_at = ticker.ticks();
        std::thread::sleep(EPOCH_TICK * 5);
        assert!(ticker.ticks() <= stopped_at + 1, "the ticker stops with its guard");
    }
}
