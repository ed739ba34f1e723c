//! Compiling a plugin under a budget, in a child process that can be killed.
//!
//! Cranelift cannot be interrupted, and some valid WebAssembly takes it
//! minutes and gigabytes. So a plugin is compiled in a forked child: the
//! child builds its own engine with the host's configuration, compiles, and
//! writes the artifact (`Engine::precompile_component`'s bytes) to a pipe.
//! Its address space may grow by at most the plugin's
//! `limits.compile_memory_mb` (`RLIMIT_AS` over what it inherited), and the
//! parent kills it at `limits.compile_timeout_secs`. Whatever Cranelift
//! allocates stays out of the host and is freed when the child exits.
//!
//! The parent never compiles in-process: the child forks from a thread that
//! only waits for it, holding none of wasmtime's locks, and the child uses a
//! fresh engine, so no lock another parent thread held at the fork is ever
//! taken in the child. Concurrent compiles are limited to
//! [`MAX_PARALLEL_COMPILES`].

use std::time::{Duration, Instant};

use parking_lot::{Condvar, Mutex};

/// Children compiling at once; the others wait for a lane. Compiling takes
/// a core each, on a machine that also serves the host.
pub(crate) const MAX_PARALLEL_COMPILES: usize = 2;

/// Why a compile failed: the reason shown to the operator.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum CompileError {
    /// Ran past its time budget and was killed.
    Time(Duration),
    /// Ran out of its memory budget (bytes).
    Memory(u64),
    /// The compiler refused the input (its message).
    Invalid(String),
    /// The child could not be started or died otherwise.
    Crashed(String),
}

impl std::fmt::Display for CompileError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            CompileError::Time(t) => write!(
                f,
                "compiling it took longer than its budget of {} s (limits.compile_timeout_secs)",
                t.as_secs()
            ),
            CompileError::Memory(b) => write!(
                f,
                "compiling it needed more than its budget of {} MiB (limits.compile_memory_mb)",
                b >> 20
            ),
            CompileError::Invalid(e) => {
                write!(f, "is not a valid component: {}", sonde_core::text::escape_control(e))
            }
            CompileError::Crashed(e) => write!(f, "the compiler process failed: {e}"),
        }
    }
}

/// A compile's budget.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Budget {
    pub(crate) time: Duration,
    pub(crate) memory_bytes: u64,
}

/// The compile lanes of one runtime: at most [`MAX_PARALLEL_COMPILES`]
/// children at once, served in ticket order. The dispatcher hands out
/// tickets as it starts loads, in manifest order, so plugins compile in
/// that order (whichever loader thread the scheduler runs first), and an
/// operator can put the plugins that matter first.
#[derive(Debug, Default)]
pub(crate) struct Lanes {
    state: Mutex<LaneState>,
    freed: Condvar,
    next: std::sync::atomic::AtomicU64,
}

#[derive(Debug, Default)]
struct LaneState {
    used: usize,
    /// Tickets of the compiles waiting for a lane.
    waiting: std::collections::BTreeSet<u64>,
}

/// A compile lane, released on drop.
struct Lane<'a>(&'a Lanes);

impl Lanes {
    /// The next ticket: a place in the queue for a lane.
    pub(crate) fn ticket(&self) -> u64 {
        self.next.fetch_add(1, std::sync::atomic::Ordering::Relaxed)
    }

    fn take(&self, ticket: u64) -> Lane<'_> {
        let mut s = self.state.lock();
        s.waiting.insert(ticket);
        while s.used >= MAX_PARALLEL_COMPILES || s.waiting.first() != Some(&ticket) {
            self.freed.wait(&mut s);
        }
        s.waiting.remove(&ticket);
        s.used += 1;
        // The next in line may fit a lane too.
        self.freed.notify_all();
        Lane(self)
    }
}

impl Drop for Lane<'_> {
    fn drop(&mut self) {
        self.0.state.lock().used -= 1;
        self.0.freed.notify_all();
    }
}

thread_local! {
    /// The ticket of the load this thread runs (see [`with_ticket`]).
    static TICKET: std::cell::Cell<Option<u64>> = const { std::cell::Cell::new(None) };
}

/// Runs `f` (a plugin's load) with `ticket` as its place in the queue for
/// a compile lane.
pub(crate) fn with_ticket<R>(ticket: u64, f: impl FnOnce() -> R) -> R {
    TICKET.with(|t| t.set(Some(ticket)));
    let r = f();
    TICKET.with(|t| t.set(None));
    r
}

/// Compiles `wasm` into an artifact for an engine built by
/// `engine::new_engine(fuel)`, under `budget`, once one of `lanes` is free.
/// Blocks the calling thread (never the dispatcher's) until the child is
/// done or killed.
pub(crate) fn precompile(
    wasm: &[u8],
    fuel: bool,
    budget: Budget,
    lanes: &Lanes,
) -> Result<Vec<u8>, CompileError> {
    let ticket = TICKET.with(std::cell::Cell::get).unwrap_or_else(|| lanes.ticket());
    let _lane = lanes.take(ticket);
    imp::precompile(wasm, fuel, budget)
}

/// What the child writes before the artifact or message: 0 ok, 1 invalid.
const OK: u8 = 0;
const INVALID: u8 = 1;

#[cfg(unix)]
#[allow(unsafe_code, reason = "fork, pipes and rlimits for the compile child")]
mod imp {
    use super::*;

    /// Exit code of a child whose compiler panicked.
    const PANICKED: i32 = 3;

    pub(super) fn precompile(
        wasm: &[u8],
        fuel: bool,
        budget: Budget,
    ) -> Result<Vec<u8>, CompileError> {
        let mut fds = [0i32; 2];
        // SAFETY: `fds` is a valid array of two ints for pipe2 to fill.
        if unsafe { libc::pipe2(fds.as_mut_ptr(), libc::O_CLOEXEC) } != 0 {
            return Err(CompileError::Crashed(format!(
                "cannot make a pipe: {}",
                std::io::Error::last_os_error()
            )));
        }
        let (read_fd, write_fd) = (fds[0], fds[1]);
        // SAFETY: fork has no preconditions; the child below only compiles
        // with a fresh engine, writes to its pipe and `_exit`s (see the
        // module docs for why no lock held by another thread is taken).
        let pid = unsafe { libc::fork() };
        if pid < 0 {
            let e = std::io::Error::last_os_error();
            // SAFETY: both descriptors were just opened by pipe2.
            unsafe {
                libc::close(read_fd);
                libc::close(write_fd);
            }
            return Err(CompileError::Crashed(format!("cannot start the compiler process: {e}")));
        }
        if pid == 0 {
            // SAFETY: the read end is ours to close; `child` never returns.
            unsafe { libc::close(read_fd) };
            child(write_fd, wasm, fuel, budget);
        }
        // SAFETY: the write end belongs to the child now.
        unsafe { libc::close(write_fd) };
        let started = Instant::now();
        let read = read_until(read_fd, started + budget.time, budget.memory_bytes);
        // SAFETY: the read end was opened above and is closed once.
        unsafe { libc::close(read_fd) };
        if read.is_err() {
            // SAFETY: `pid` is our child, not yet reaped.
            unsafe { libc::kill(pid, libc::SIGKILL) };
        }
        let status = reap(pid);
        let bytes = match read {
            Ok(bytes) => bytes,
            Err(Over::Time) => return Err(CompileError::Time(budget.time)),
            Err(Over::Size) => return Err(CompileError::Memory(budget.memory_bytes)),
            Err(Over::Io(e)) => return Err(CompileError::Crashed(e)),
        };
        match (bytes.first(), status) {
            (Some(&OK), Ok(0)) => Ok(bytes[1..].to_vec()),
            (Some(&INVALID), Ok(0)) => {
                Err(CompileError::Invalid(String::from_utf8_lossy(&bytes[1..]).into_owned()))
            }
            // An allocation that fails under RLIMIT_AS aborts the child.
            (_, Err(libc::SIGABRT)) => Err(CompileError::Memory(budget.memory_bytes)),
            (_, Err(libc::SIGXCPU)) => Err(CompileError::Time(budget.time)),
            (_, Ok(PANICKED)) => Err(CompileError::Crashed("the compiler panicked".into())),
            (_, Ok(code)) => Err(CompileError::Crashed(format!("it exited with code {code}"))),
            (_, Err(signal)) => Err(CompileError::Crashed(format!("it died of signal {signal}"))),
        }
    }

    enum Over {
        Time,
        Size,
        Io(String),
    }

    /// Reads the pipe to its end, until `deadline`, at most `max` bytes.
    fn read_until(fd: i32, deadline: Instant, max: u64) -> Result<Vec<u8>, Over> {
        let mut out = Vec::new();
        let mut buf = vec![0u8; 1 << 16];
        loop {
            let left = deadline.saturating_duration_since(Instant::now());
            if left.is_zero() {
                return Err(Over::Time);
            }
            let mut pfd = libc::pollfd { fd, events: libc::POLLIN, revents: 0 };
            let ms = left.as_millis().clamp(1, i32::MAX as u128) as i32;
            // SAFETY: `pfd` is one valid pollfd.
            let ready = unsafe { libc::poll(&mut pfd, 1, ms) };
            if ready < 0 {
                let e = std::io::Error::last_os_error();
                if e.kind() == std::io::ErrorKind::Interrupted {
                    continue;
                }
                return Err(Over::Io(format!("waiting for the compiler: {e}")));
            }
            if ready == 0 {
                continue;
            }
            // SAFETY: `buf` is valid for `buf.len()` bytes of writes.
            let n = unsafe { libc::read(fd, buf.as_mut_ptr().cast(), buf.len()) };
            if n < 0 {
                let e = std::io::Error::last_os_error();
                if e.kind() == std::io::ErrorKind::Interrupted {
                    continue;
                }
                return Err(Over::Io(format!("reading from the compiler: {e}")));
            }
            if n == 0 {
                return Ok(out);
            }
            out.extend_from_slice(&buf[..n as usize]);
            if out.len() as u64 > max {
                return Err(Over::Size);
            }
        }
    }

    /// Waits for `pid`: `Ok(exit code)` or `Err(signal)`.
    fn reap(pid: libc::pid_t) -> Result<i32, i32> {
        let mut status = 0;
        loop {
            // SAFETY: `status` is a valid int for waitpid to fill.
            let r = unsafe { libc::waitpid(pid, &mut status, 0) };
            if r == pid {
                break;
            }
            if r < 0 && std::io::Error::last_os_error().kind() != std::io::ErrorKind::Interrupted {
                return Ok(-1);
            }
        }
        if libc::WIFEXITED(status) {
            Ok(libc::WEXITSTATUS(status))
        } else {
            Err(libc::WTERMSIG(status))
        }
    }

    /// The child: caps its address space, compiles, writes, exits. Never
    /// returns.
    fn child(fd: i32, wasm: &[u8], fuel: bool, budget: Budget) -> ! {
        // Nothing the child says reaches the host's output: an allocation
        // that fails under the budget prints a message (and, with
        // RUST_BACKTRACE set, a backtrace) before it aborts.
        // SAFETY: open takes a NUL-terminated path; dup2 and close take
        // descriptors this process owns.
        unsafe {
            let null = libc::open(c"/dev/null".as_ptr(), libc::O_RDWR);
            if null >= 0 {
                libc::dup2(null, 1);
                libc::dup2(null, 2);
                libc::close(null);
            }
        }
        // SAFETY: prctl with PR_SET_PDEATHSIG takes a signal number; if the
        // parent thread waiting for us dies, so do we.
        #[cfg(target_os = "linux")]
        unsafe {
            libc::prctl(libc::PR_SET_PDEATHSIG, libc::SIGKILL);
        }
        if let Some(size) = address_space() {
            let cap = size.saturating_add(budget.memory_bytes);
            let lim = libc::rlimit { rlim_cur: cap, rlim_max: cap };
            // SAFETY: `lim` is a valid rlimit.
            unsafe { libc::setrlimit(libc::RLIMIT_AS, &lim) };
        }
        // A backstop if the parent cannot kill us: the CPU time budget.
        let secs = budget.time.as_secs().saturating_add(1);
        let cpu = libc::rlimit { rlim_cur: secs, rlim_max: secs.saturating_add(1) };
        // SAFETY: `cpu` is a valid rlimit.
        unsafe { libc::setrlimit(libc::RLIMIT_CPU, &cpu) };
        let result = std::panic::catch_unwind(|| {
            let engine = crate::engine::new_engine(fuel).map_err(|e| e.to_string())?;
            engine.precompile_component(wasm).map_err(|e| format!("{e:#}"))
        });
        let (tag, bytes) = match result {
            Ok(Ok(artifact)) => (OK, artifact),
            Ok(Err(message)) => (INVALID, message.into_bytes()),
            // SAFETY: exiting without running the parent's atexit handlers.
            Err(_) => unsafe { libc::_exit(PANICKED) },
        };
        let ok = write_all(fd, &[tag]) && write_all(fd, &bytes);
        // SAFETY: as above; the pipe closes with the process.
        unsafe { libc::_exit(if ok { 0 } else { 2 }) }
    }

    fn write_all(fd: i32, mut bytes: &[u8]) -> bool {
        while !bytes.is_empty() {
            // SAFETY: `bytes` is valid for `bytes.len()` bytes of reads.
            let n = unsafe { libc::write(fd, bytes.as_ptr().cast(), bytes.len()) };
            if n < 0 {
                if std::io::Error::last_os_error().kind() == std::io::ErrorKind::Interrupted {
                    continue;
                }
                return false;
            }
            bytes = &bytes[n as usize..];
        }
        true
    }

    /// The process's current virtual size in bytes (Linux: `/proc/self/statm`).
    fn address_space() -> Option<u64> {
        let text = std::fs::read_to_string("/proc/self/statm").ok()?;
        let pages: u64 = text.split_whitespace().next()?.parse().ok()?;
        // SAFETY: sysconf has no preconditions.
        let page = unsafe { libc::sysconf(libc::_SC_PAGESIZE) };
        Some(pages * u64::try_from(page).ok()?)
    }
}

#[cfg(not(unix))]
mod imp {
    use super::*;

    /// Without fork: compile on this thread (never the dispatcher's); the
    /// budget cannot be enforced, only reported after the fact.
    pub(super) fn precompile(
        wasm: &[u8],
        fuel: bool,
        budget: Budget,
    ) -> Result<Vec<u8>, CompileError> {
        let started = Instant::now();
        let engine =
            crate::engine::new_engine(fuel).map_err(|e| CompileError::Crashed(e.to_string()))?;
        let artifact = engine
            .precompile_component(wasm)
            .map_err(|e| CompileError::Invalid(format!("{e:#}")))?;
        if started.elapsed() > budget.time {
            return Err(CompileError::Time(budget.time));
        }
        Ok(artifact)
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used, reason = "tests")]
mod tests {
    use super::*;

    const BUDGET: Budget = Budget { time: Duration::from_secs(60), memory_bytes: 1 << 30 };

    #[test]
    fn a_component_compiles_in_a_child_into_an_artifact_the_host_loads() {
        let wasm = wat::parse_str("(component (core module (func (export \"f\"))))").unwrap();
        let artifact = precompile(&wasm, false, BUDGET, &Lanes::default()).expect("compiles");
        let engine = crate::engine::new_engine(false).unwrap();
        crate::cache::deserialize(&engine, &artifact).expect("the host engine loads it");
    }

    #[test]
    fn lanes_are_taken_in_ticket_order_at_most_two_at_a_time() {
        use std::sync::{Arc, Mutex as StdMutex};
        let lanes = Arc::new(Lanes::default());
        let tickets: Vec<u64> = (0..6).map(|_| lanes.ticket()).collect();
        let order = Arc::new(StdMutex::new(Vec::new()));
        let busy = Arc::new(std::sync::atomic::AtomicUsize::new(0));
        // Hold both lanes while the six waiters line up, in reverse order.
        let (first, second) = (lanes.take(lanes.ticket()), lanes.take(lanes.ticket()));
        let handles: Vec<_> = tickets
            .iter()
            .rev()
            .map(|&t| {
                let (lanes, order, busy) = (lanes.clone(), order.clone(), busy.clone());
                std::thread::spawn(move || {
                    let _lane = lanes.take(t);
                    let now = busy.fetch_add(1, std::sync::atomic::Ordering::SeqCst) + 1;
                    assert!(now <= MAX_PARALLEL_COMPILES, "{now} lanes in use");
                    order.lock().unwrap().push(t);
                    std::thread::sleep(Duration::from_millis(20));
                    busy.fetch_sub(1, std::sync::atomic::Ordering::SeqCst);
                })
            })
            .collect();
        while lanes.state.lock().waiting.len() < tickets.len() {
            std::thread::sleep(Duration::from_millis(5));
        }
        drop((first, second));
        for h in handles {
            h.join().unwrap();
        }
        // Two lanes: a pair may start in either order, pairs in ticket order.
        let order = order.lock().unwrap().clone();
        let pairs: Vec<u64> = order
            .chunks(2)
            .flat_map(|c| {
                let mut c = c.to_vec();
                c.sort_unstable();
                c
            })
            .collect();
        assert_eq!(pairs, tickets, "served in ticket order: {order:?}");
    }

    #[test]
    fn invalid_input_is_the_compilers_own_error() {
        let err = precompile(b"\0asm\x0d\0\x01\0\x99garbage", false, BUDGET, &Lanes::default())
            .unwrap_err();
        assert!(matches!(err, CompileError::Invalid(_)), "{err:?}");
    }

    #[cfg(unix)]
    #[test]
    fn over_time_and_over_memory_are_killed_and_named() {
        // Thousands of locals in deeply nested loops: seconds of Cranelift
        // and more than 64 MiB (see `plugin/shape.rs`).
        let bomb = crate::plugin::shape::tests::bomb(2_000, 250, "loop");
        let quick = Budget { time: Duration::from_millis(300), memory_bytes: 1 << 30 };
        let err = precompile(&bomb, false, quick, &Lanes::default()).err();
        assert_eq!(err, Some(CompileError::Time(quick.time)));
        let small = Budget { time: Duration::from_secs(120), memory_bytes: 8 << 20 };
        let err = precompile(&bomb, false, small, &Lanes::default()).err();
        assert_eq!(err, Some(CompileError::Memory(8 << 20)));
    }

    #[test]
    #[ignore = "calibration: prints compile times and memory budgets"]
    fn calibrate() {
        let engine = crate::engine::new_engine(false).unwrap();
        for (locals, depth) in [(1000, 200), (2000, 250)] {
            let wasm = crate::plugin::shape::tests::bomb(locals, depth, "loop");
            let t = Instant::now();
            let r = engine.precompile_component(&wasm);
            println!("loop locals {locals} depth {depth}: {:?} {:?}", t.elapsed(), r.err());
        }
        let plugin = std::fs::read(concat!(
            env!("CARGO_MANIFEST_DIR"),
            "/../../target/plugins/user_agent.wasm"
        ))
        .unwrap();
        let bomb = crate::plugin::shape::tests::bomb(2000, 250, "loop");
        for mb in [16u64, 32, 64, 128, 256, 512] {
            let budget = Budget { time: Duration::from_secs(60), memory_bytes: mb << 20 };
            let t = Instant::now();
            let a = precompile(&plugin, false, budget, &Lanes::default()).map(|a| a.len());
            let t1 = t.elapsed();
            let b = precompile(&bomb, false, budget, &Lanes::default()).map(|a| a.len());
            println!("{mb} MiB: user-agent {a:?} in {t1:?}; bomb {b:?} in {:?}", t.elapsed() - t1);
        }
    }
}
