//! The one wasmtime [`Engine`] and the thread that advances its epoch.
//!
//! Every plugin call runs with an epoch deadline; a background ticker bumps
//! the epoch every [`EPOCH_TICK`], so a call that runs past its deadline traps
//! instead of holding the dispatcher.

use std::sync::{Arc, Weak};
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

/// Advances `engine`'s epoch every [`EPOCH_TICK`] until the returned guard is
/// dropped.
pub(crate) fn start_ticker(engine: &Engine) -> Result<Arc<()>, Error> {
    let guard = Arc::new(());
    let alive: Weak<()> = Arc::downgrade(&guard);
    let engine = engine.clone();
    std::thread::Builder::new()
        .name("sonde-epoch".into())
        .spawn(move || {
            while alive.strong_count() > 0 {
                std::thread::sleep(EPOCH_TICK);
                engine.increment_epoch();
            }
        })
        .map_err(|e| Error::Engine(format!("cannot start the epoch thread: {e}")))?;
    Ok(guard)
}
