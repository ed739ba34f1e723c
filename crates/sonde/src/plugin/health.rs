//! A plugin's health: why its calls fail ([`Failure::of`], the host's one
//! classification of a failed call), when to restart it, when to give up,
//! and whether it stays within its CPU budget. Pure bookkeeping over errors
//! and instants the caller passes in, so it is tested without a plugin.

use std::collections::VecDeque;
use std::time::{Duration, Instant};

use sonde_core::{FailureCounts, PluginLimits};
use wasmtime::Trap;

/// Longest wait before restarting a failing plugin.
pub(crate) const MAX_RESTART_DELAY: Duration = Duration::from_secs(30);
/// Wait before the second restart in a window; doubles for each further one.
pub(crate) const FIRST_RESTART_DELAY: Duration = Duration::from_millis(100);
/// The span over which CPU use is measured against the budget.
const CPU_WINDOW: Duration = Duration::from_secs(1);

/// Why a call failed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum FailureKind {
    Cpu,
    Memory,
    Stack,
    Panic,
    Other,
}

/// How far below linear address 0 a store may land and still be read as a
/// shadow-stack overflow: a 32-bit stack pointer that runs below 0 wraps to
/// the top of the 32-bit address space, `2^32 - frame`. 16 MiB is far more
/// than any stack frame (Rust's whole shadow stack is 1 MiB) and far above
/// any memory a plugin may have ([`super::MAX_PLUGIN_MEMORY`], 1 GiB), so no
/// access to real memory is taken for one.
pub(crate) const SHADOW_STACK_WRAP: u64 = 16 << 20;

/// The prefix wasmtime 48 gives the context it attaches to a trap caught
/// from a memory fault (`wasmtime::vm::WasmFault`, not public API: only its
/// `Display` is reachable), followed by the wasm address in hex and
/// [`FAULT_SIZE`].
const FAULT_PREFIX: &str = "memory fault at wasm address 0x";
/// What follows the address in that context: the memory's size in hex.
const FAULT_SIZE: &str = " in linear memory of size 0x";

/// The wasm address of the memory fault wasmtime attached to `e`, if any.
///
/// Every element of an error's chain is made by wasmtime or the host; a
/// plugin's own names appear only inside the backtrace element, whose text
/// starts with `error while executing at wasm backtrace`, so a plugin cannot
/// forge this element. Needs signals-based traps (wasmtime's default where
/// the platform has them: a fault is caught from the guard region with its
/// address); without them there is no such element and this is `None`.
fn fault_address(e: &wasmtime::Error) -> Option<u64> {
    e.chain().find_map(|c| {
        let text = c.to_string();
        let rest = text.strip_prefix(FAULT_PREFIX)?;
        let (addr, size) = rest.split_once(FAULT_SIZE)?;
        u64::from_str_radix(size, 16).ok()?;
        u64::from_str_radix(addr, 16).ok()
    })
}

/// Whether an out-of-bounds access at wasm address `addr` is what a shadow
/// stack that ran below address 0 produces: a store just below `2^32`
/// (within [`SHADOW_STACK_WRAP`]), or just past it (a store's static offset
/// added to a wrapped pointer).
fn is_shadow_stack_wrap(addr: u64) -> bool {
    const TOP: u64 = 1 << 32;
    (TOP - SHADOW_STACK_WRAP..TOP + (1 << 16)).contains(&addr)
}

/// Frames of one function in a backtrace from which an out-of-bounds access
/// is read as the end of a runaway recursion (see [`runaway_recursion`]).
const RECURSION_FRAMES: usize = 8;

/// Whether the wasm backtrace wasmtime attached to `e` is that of a runaway
/// recursion: at least [`RECURSION_FRAMES`] frames of the function that
/// trapped. wasmtime keeps the innermost 20 frames.
///
/// The second signal of a shadow-stack overflow, for the accesses that carry
/// no fault address: a bounds check wasmtime makes itself (`memory.fill`,
/// `memory.copy`, which Rust uses to copy a frame's arrays with the
/// bulk-memory feature) traps with the same `MemoryOutOfBounds` but without
/// a [`fault_address`]. Only the call structure counts (function indices,
/// which the host reads from the real stack), never a name; a plugin that
/// recurses this deep and then strays out of bounds is told it overflowed
/// its stack, which is what it did.
fn runaway_recursion(e: &wasmtime::Error) -> bool {
    let Some(backtrace) = e.downcast_ref::<wasmtime::WasmBacktrace>() else { return false };
    let frames = backtrace.frames();
    let Some(top) = frames.first() else { return false };
    frames.iter().filter(|f| f.func_index() == top.func_index()).count() >= RECURSION_FRAMES
}

/// Longest detail of a host error quoted in a failure reason.
const MAX_DETAIL: usize = 200;

/// A failed call, classified by the host: its kind and a one-line reason
/// that starts with the host's own words.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Failure {
    pub(crate) kind: FailureKind,
    pub(crate) reason: String,
}

impl Failure {
    /// Classifies a failed call. `refused_growth` is the limiter's note when
    /// it refused a memory or table growth during the call; `timeout_ms` the
    /// call's deadline.
    ///
    /// The kind and the start of the reason come only from what the host
    /// knows: wasmtime's typed [`Trap`], the limiter, the fault address.
    /// Nothing the plugin named (its functions in the backtrace wasmtime
    /// attaches, symbol names) decides or leads the reason; the backtrace is
    /// left out, and the one detail quoted after a fixed prefix, the root
    /// cause of a non-trap error (wasmtime's or the host's own error, e.g. an
    /// invalid string crossing the boundary), is escaped and clipped.
    pub(crate) fn of(
        e: &wasmtime::Error,
        refused_growth: Option<&str>,
        timeout_ms: u64,
    ) -> Failure {
        let trap = e.downcast_ref::<Trap>().copied();
        let (kind, reason) = match (trap, refused_growth) {
            (Some(Trap::Interrupt), _) => {
                (FailureKind::Cpu, format!("ran past its deadline of {timeout_ms} ms"))
            }
            (Some(Trap::StackOverflow), _) => (FailureKind::Stack, "overflowed its stack".into()),
            (_, Some(note)) => (
                FailureKind::Memory,
                format!("ran out of memory ({})", sonde_core::text::escape_control(note)),
            ),
            (Some(Trap::MemoryOutOfBounds), _)
                if fault_address(e).is_some_and(is_shadow_stack_wrap) || runaway_recursion(e) =>
            {
                (
                    FailureKind::Stack,
                    "overflowed its stack (its shadow stack in linear memory ran out)".into(),
                )
            }
            (Some(Trap::UnreachableCodeReached), _) => {
                (FailureKind::Panic, "panicked (trap: unreachable)".into())
            }
            (Some(trap), _) => {
                // wasmtime's words for the trap kind, e.g. "wasm trap: out of
                // bounds memory access".
                let text = trap.to_string();
                let kind = text.strip_prefix("wasm trap: ").unwrap_or(&text);
                (FailureKind::Other, format!("trapped: {kind}"))
            }
            (None, _) => {
                let root = e.root_cause().to_string();
                let detail =
                    sonde_core::text::escape_control(super::info::clip_to(&root, MAX_DETAIL))
                        .into_owned();
                (
                    FailureKind::Other,
                    format!(
                        "failed outside wasm code (an invalid value at the plugin boundary, or a host error): {detail}"
                    ),
                )
            }
        };
        Failure { kind, reason }
    }
}

impl FailureKind {
    pub(crate) fn count(self, counts: &mut FailureCounts) {
        match self {
            FailureKind::Cpu => counts.cpu += 1,
            FailureKind::Memory => counts.memory += 1,
            FailureKind::Stack => counts.stack += 1,
            FailureKind::Panic => counts.panic += 1,
            FailureKind::Other => counts.other += 1,
        }
    }
}

/// What to do after a failure.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum AfterFailure {
    /// Restart after this delay.
    Restart(Duration),
    /// Too many failures in the window: stop for good.
    GiveUp(usize),
}

pub(crate) struct Health {
    limits: PluginLimits,
    failures: VecDeque<Instant>,
    /// Failures since the last successful call: drives the restart delay.
    in_a_row: u32,
    window_start: Instant,
    busy_in_window: Duration,
    over_since: Option<Instant>,
}

impl Health {
    pub(crate) fn new(limits: PluginLimits, now: Instant) -> Health {
        Health {
            limits,
            failures: VecDeque::new(),
            in_a_row: 0,
            window_start: now,
            busy_in_window: Duration::ZERO,
            over_since: None,
        }
    }

    /// Books a failure at `now`.
    pub(crate) fn failed(&mut self, now: Instant) -> AfterFailure {
        let window = Duration::from_secs(self.limits.failure_window_secs);
        while self.failures.front().is_some_and(|&t| now.saturating_duration_since(t) >= window) {
            self.failures.pop_front();
        }
        self.failures.push_back(now);
        self.in_a_row += 1;
        let n = self.failures.len();
        if n >= self.limits.max_failures as usize {
            return AfterFailure::GiveUp(n);
        }
        // The delay grows with failures in a row, so a plugin that fails now
        // and then is restarted at once; the window decides when to give up.
        let delay = match self.in_a_row as usize {
            0 | 1 => Duration::ZERO,
            n => FIRST_RESTART_DELAY.saturating_mul(1 << (n - 2).min(16)).min(MAX_RESTART_DELAY),
        };
        AfterFailure::Restart(delay)
    }

    /// Books a successful call.
    pub(crate) fn succeeded(&mut self) {
        self.in_a_row = 0;
    }

    /// Books `busy` time spent in the plugin.
    pub(crate) fn busy(&mut self, busy: Duration) {
        self.busy_in_window += busy;
    }

    /// Closes CPU windows up to `now`; returns the breaker's reason once the
    /// plugin has been over its budget for longer than allowed.
    pub(crate) fn over_budget(&mut self, now: Instant) -> Option<String> {
        let elapsed = now.saturating_duration_since(self.window_start);
        if elapsed >= CPU_WINDOW {
            let ms_per_sec = self.busy_in_window.as_secs_f64() * 1000.0 / elapsed.as_secs_f64();
            if ms_per_sec > self.limits.cpu_ms_per_sec as f64 {
                let since = *self.over_since.get_or_insert(self.window_start);
                if now.saturating_duration_since(since)
                    >= Duration::from_secs(self.limits.over_budget_secs)
                {
                    self.over_since = None;
                    self.window_start = now;
                    self.busy_in_window = Duration::ZERO;
                    return Some(format!(
                        "expensive: {ms_per_sec:.0} ms CPU per second, over its budget of {} ms for {} s",
                        self.limits.cpu_ms_per_sec, self.limits.over_budget_secs
                    ));
                }
            } else {
                self.over_since = None;
            }
            self.window_start = now;
            self.busy_in_window = Duration::ZERO;
        }
        None
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The error of calling `run` in the core module `wat`, under the
    /// runtime's own engine configuration; `fail` is a host function that
    /// returns an error whose text is `message`. With `expired`, the call's
    /// epoch deadline is over before it starts.
    fn failure_of(wat: &str, message: &'static str, expired: bool) -> wasmtime::Error {
        let engine = crate::engine::new_engine(false).expect("engine");
        let module = wasmtime::Module::new(&engine, wat).expect("module");
        let mut linker = wasmtime::Linker::new(&engine);
        linker
            .func_wrap("host", "fail", move || -> wasmtime::Result<()> {
                Err(wasmtime::Error::msg(message))
            })
            .expect("link");
        let mut store = wasmtime::Store::new(&engine, ());
        store.set_epoch_deadline(1_000_000);
        let instance = linker.instantiate(&mut store, &module).expect("instance");
        let run = instance.get_typed_func::<(), ()>(&mut store, "run").expect("run");
        if expired {
            store.set_epoch_deadline(0);
        }
        run.call(&mut store, ()).expect_err("fails")
    }

    /// A module with one page of memory whose `run` calls
    /// `$ran_out_of_memory_memory_limit`, which does `body`: the function's
    /// name is in the name section, so wasmtime puts it in the backtrace.
    fn module(body: &str) -> String {
        format!(
            r#"(module
                (import "host" "fail" (func $fail))
                (memory 1)
                (func $ran_out_of_memory_memory_limit {body})
                (func (export "run") call $ran_out_of_memory_memory_limit))"#
        )
    }

    fn classify(body: &str) -> Failure {
        Failure::of(&failure_of(&module(body), "no", body.contains("loop")), None, 50)
    }

    #[test]
    fn the_kind_and_the_reason_come_from_the_host_alone() {
        let cases = [
            ("(loop br 0)", FailureKind::Cpu, "ran past its deadline of 50 ms"),
            ("call $ran_out_of_memory_memory_limit", FailureKind::Stack, "overflowed its stack"),
            ("unreachable", FailureKind::Panic, "panicked (trap: unreachable)"),
            (
                "i32.const 65552 i32.const 0 i32.store",
                FailureKind::Other,
                "trapped: out of bounds memory access",
            ),
            (
                "i32.const 0 i32.const 0 i32.div_u drop",
                FailureKind::Other,
                "trapped: integer divide by zero",
            ),
        ];
        for (body, kind, reason) in cases {
            let failure = classify(body);
            assert_eq!(failure, Failure { kind, reason: reason.into() }, "{body}");
        }
    }

    #[test]
    fn a_store_just_below_address_zero_is_a_shadow_stack_overflow() {
        // What a wrapped stack pointer does: `sp - frame` below 0 is
        // 0xffff_fff0, and the frame's first store lands there.
        for body in [
            "i32.const -16 i32.const 0 i32.store",
            "i32.const -4 i64.const 0 i64.store offset=8",
            "i32.const -1048576 i32.const 0 i32.store8",
        ] {
            let failure = classify(body);
            assert_eq!(failure.kind, FailureKind::Stack, "{body}: {failure:?}");
            assert!(failure.reason.starts_with("overflowed its stack"), "{failure:?}");
        }
        // A wild pointer far from the top of the address space is not.
        let failure = classify("i32.const 0x80000000 i32.const 0 i32.store");
        assert_eq!(failure.kind, FailureKind::Other, "{failure:?}");
        assert!(!is_shadow_stack_wrap(0x8000_0000) && !is_shadow_stack_wrap(65_552));
        assert!(is_shadow_stack_wrap(0xffff_fff0) && is_shadow_stack_wrap((1 << 32) + 4));
    }

    #[test]
    fn an_out_of_bounds_fill_at_the_end_of_a_deep_recursion_is_a_stack_overflow() {
        // `memory.fill` is bounds-checked by wasmtime itself: no fault
        // address, only the recursion in the backtrace tells.
        let wat = |depth: u32| {
            format!(
                r#"(module
                (import "host" "fail" (func $fail))
                (memory 1)
                (func $f (param i32)
                    local.get 0
                    if
                        local.get 0 i32.const 1 i32.sub call $f
                    else
                        i32.const -16 i32.const 0 i32.const 32 memory.fill
                    end)
                (func (export "run") i32.const {depth} call $f))"#
            )
        };
        let deep = Failure::of(&failure_of(&wat(100), "no", false), None, 50);
        assert_eq!(deep.kind, FailureKind::Stack, "{deep:?}");
        assert!(deep.reason.starts_with("overflowed its stack"), "{deep:?}");
        let shallow = Failure::of(&failure_of(&wat(2), "no", false), None, 50);
        assert_eq!(shallow.kind, FailureKind::Other, "{shallow:?}");
    }

    #[test]
    fn plugin_names_never_lead_or_reach_a_reason() {
        // A host error raised inside the plugin's call: wasmtime attaches the
        // backtrace, which names the plugin's function.
        let e = failure_of(&module("call $fail"), "invalid utf-8 sequence\r\u{1b}[2K", false);
        assert!(format!("{e:#}").contains("ran_out_of_memory_memory_limit"), "{e:#}");
        let failure = Failure::of(&e, None, 50);
        assert_eq!(failure.kind, FailureKind::Other);
        assert!(
            failure.reason.starts_with("failed outside wasm code (an invalid value at the plugin boundary, or a host error): "),
            "{failure:?}"
        );
        assert!(!failure.reason.contains("ran_out_of_memory"), "{failure:?}");
        assert!(!failure.reason.contains("backtrace"), "{failure:?}");
        assert!(failure.reason.ends_with(r"invalid utf-8 sequence\r\u{1b}[2K"), "{failure:?}");
        // A trap names only its kind.
        let failure = classify("unreachable");
        assert!(!failure.reason.contains("ran_out_of_memory"), "{failure:?}");
        // The limiter's note decides `memory`, whatever the trap.
        let e = failure_of(&module("unreachable"), "no", false);
        let failure = Failure::of(&e, Some("memory limit: wanted 2 bytes, at 1"), 50);
        assert_eq!(failure.kind, FailureKind::Memory);
        assert_eq!(failure.reason, "ran out of memory (memory limit: wanted 2 bytes, at 1)");
    }

    fn limits() -> PluginLimits {
        PluginLimits {
            max_failures: 4,
            failure_window_secs: 10,
            cpu_ms_per_sec: 100,
            over_budget_secs: 2,
            ..PluginLimits::default()
        }
    }

    #[test]
    fn restarts_back_off_and_too_many_failures_in_the_window_give_up() {
        let t0 = Instant::now();
        let mut h = Health::new(limits(), t0);
        assert_eq!(h.failed(t0), AfterFailure::Restart(Duration::ZERO));
        assert_eq!(h.failed(t0), AfterFailure::Restart(FIRST_RESTART_DELAY));
        assert_eq!(h.failed(t0), AfterFailure::Restart(FIRST_RESTART_DELAY * 2));
        assert_eq!(h.failed(t0), AfterFailure::GiveUp(4));
        let mut h = Health::new(limits(), t0);
        assert_eq!(h.failed(t0), AfterFailure::Restart(Duration::ZERO));
        h.succeeded();
        assert_eq!(
            h.failed(t0),
            AfterFailure::Restart(Duration::ZERO),
            "a success resets the delay"
        );
        let mut h = Health::new(limits(), t0);
        for i in 0..10 {
            // One failure every 5 s never fills a 10 s window of 4.
            let verdict = h.failed(t0 + Duration::from_secs(5 * i));
            assert!(matches!(verdict, AfterFailure::Restart(_)), "{i}: {verdict:?}");
        }
    }

    #[test]
    fn the_breaker_trips_only_after_a_sustained_overrun() {
        let t0 = Instant::now();
        let mut h = Health::new(limits(), t0);
        let sec = Duration::from_secs(1);
        // 300 ms per second: over the 100 ms budget.
        h.busy(Duration::from_millis(300));
        assert_eq!(h.over_budget(t0 + sec), None);
        // One cheap second resets the streak.
        h.busy(Duration::from_millis(10));
        assert_eq!(h.over_budget(t0 + sec * 2), None);
        // Over budget from second 2 on: the breaker trips when that has
        // lasted `over_budget_secs` (2 s), at second 4.
        h.busy(Duration::from_millis(300));
        assert_eq!(h.over_budget(t0 + sec * 3), None, "1 s over budget");
        h.busy(Duration::from_millis(300));
        let reason = h.over_budget(t0 + sec * 4).expect("tripped after 2 s over budget");
        assert!(reason.starts_with("expensive: 300 ms CPU per second"), "{reason}");
    }
}
