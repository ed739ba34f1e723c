//! Shared pieces of sonde's benchmarks: the event every benchmark records,
//! runtimes on the example plugins, and a timer for one or more threads.

#![allow(clippy::unwrap_used, reason = "benchmarks: a failure is a broken setup")]

use std::path::Path;
use std::sync::Barrier;
use std::time::{Duration, Instant};

use sonde::{Event, EventKind, Manifest, Telemetry};
use sonde_tests::{Entry, example_entries, write_manifest};

/// An HTTP request with three fields: the same shape as the three
/// attributes or labels the peers record.
pub static HTTP: EventKind = EventKind::new("http.request", &["method", "route", "status"]);

/// The event every `record` benchmark records.
#[inline]
pub fn event() -> Event {
    HTTP.event().str("method", "GET").str("route", "/users/{id}").int("status", 200)
}

/// Events for the dispatch benchmark: methods and statuses vary the way a
/// server's do.
pub fn mixed_event(i: usize) -> Event {
    const METHODS: [&str; 4] = ["GET", "GET", "POST", "DELETE"];
    const STATUS: [i64; 5] = [200, 200, 204, 404, 503];
    HTTP.event()
        .str("method", METHODS[i % 4])
        .str("route", "/users/{id}")
        .int("status", STATUS[i % 5])
}

/// A `local` runtime in `dir` with `buffer_capacity` and the given plugins.
/// `dispatch = false` starts it without a dispatcher: the ring fills and
/// stays full.
pub fn runtime(dir: &Path, capacity: usize, entries: &[Entry], dispatch: bool) -> Telemetry {
    let telemetry = format!(
        "mode = \"local\"\nstate_dir = \"state\"\nbuffer_capacity = {capacity}\napp_metrics = true"
    );
    let path = write_manifest(dir, &telemetry, entries);
    let builder = Telemetry::builder(Manifest::load(&path).unwrap());
    let builder = if dispatch { builder } else { builder.without_dispatcher_for_benchmarks() };
    builder.start().unwrap()
}

/// The `http-status` plugin alone.
pub fn http_status() -> Vec<Entry> {
    example_entries().into_iter().filter(|e| e.name == "http-status").collect()
}

/// Runs `op` `per_thread` times on each of `threads` threads, in chunks of
/// `chunk` per thread with `between` called (untimed) after each chunk;
/// returns the summed wall time of the chunks, each the slowest thread's
/// time. With one thread, the time per op; with more, the time per op per
/// thread.
pub fn timed<F: Fn() + Sync>(
    threads: usize,
    per_thread: u64,
    chunk: u64,
    op: &F,
    mut between: impl FnMut(),
) -> Duration {
    let mut total = Duration::ZERO;
    let mut left = per_thread;
    while left > 0 {
        let n = left.min(chunk);
        left -= n;
        let run = || {
            let start = Instant::now();
            for _ in 0..n {
                op();
            }
            start.elapsed()
        };
        total += if threads == 1 {
            run()
        } else {
            let barrier = Barrier::new(threads);
            std::thread::scope(|s| {
                let handles: Vec<_> = (0..threads)
                    .map(|_| {
                        s.spawn(|| {
                            barrier.wait();
                            run()
                        })
                    })
                    .collect();
                handles.into_iter().map(|h| h.join().unwrap()).max().unwrap_or_default()
            })
        };
        between();
    }
    total
}
