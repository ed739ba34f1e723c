//! Plugin dispatch: events through the `http-status` plugin in batches (the
//! ring, the dispatcher, columnar batches, the WebAssembly call), next to the
//! same counting written in native Rust over a bare queue of owned events.

#![allow(clippy::unwrap_used, reason = "benchmarks")]

use std::hint::black_box;
use std::time::{Duration, Instant};

use criterion::{Criterion, criterion_group, criterion_main};
use crossbeam_queue::ArrayQueue;
use sonde::{Event, Telemetry};
use sonde_benches::{OwnedEvent, http_status, mixed_event, runtime, server_event};
use sonde_tests::example_entries;

const CAPACITY: usize = 65_536;
/// Events per round: under the capacity, so nothing is dropped.
const ROUND: u64 = 60_000;

/// Runs rounds of `ROUND` events until `n`; `round` returns its time.
fn rounds(n: u64, mut round: impl FnMut(usize) -> Duration) -> Duration {
    let mut total = Duration::ZERO;
    let mut left = n;
    while left > 0 {
        let k = left.min(ROUND);
        left -= k;
        total += round(k as usize);
    }
    total
}

/// Records `events` and waits until the plugins have them all.
fn record_and_flush(t: &Telemetry, events: &[Event]) {
    for e in events {
        t.record(e);
    }
    t.flush().unwrap();
}

fn busy_us(t: &Telemetry) -> u64 {
    t.report().unwrap().plugins[0].cost.busy_us
}

fn dispatcher_cpu(t: &Telemetry) -> Duration {
    t.dispatcher_cpu_time().unwrap().expect("a per-thread CPU clock")
}

/// Rounds of `events` measured by the dispatcher thread's CPU time: one
/// core's cost of taking events off the ring, batching and the plugin calls.
fn dispatcher_cpu_per_round(t: &Telemetry, events: &[Event], n: u64) -> Duration {
    rounds(n, |k| {
        let before = dispatcher_cpu(t);
        record_and_flush(t, &events[..k]);
        dispatcher_cpu(t) - before
    })
}

/// `http-status`'s logic, natively: method and status class tallies.
struct Native {
    counts: [[u64; 6]; 10],
}

impl Native {
    const METHODS: [&'static str; 9] =
        ["GET", "HEAD", "POST", "PUT", "DELETE", "PATCH", "OPTIONS", "CONNECT", "TRACE"];

    fn count(&mut self, e: &OwnedEvent) {
        let method = match e.str_at(0) {
            Some(m) => Self::METHODS.iter().position(|k| *k == m).unwrap_or(9),
            None => 9,
        };
        let class = match e.int_at(2) {
            Some(s) if (100..600).contains(&s) => (s / 100 - 1) as usize,
            _ => 5,
        };
        self.counts[method][class] += 1;
    }
}

fn dispatch(c: &mut Criterion) {
    let dir = tempfile::tempdir().unwrap();
    let t = runtime(dir.path(), CAPACITY, &http_status(), true);
    let events: Vec<Event> = (0..ROUND as usize).map(mixed_event).collect();
    let mut g = c.benchmark_group("dispatch");
    g.measurement_time(Duration::from_secs(5)).sample_size(20);
    g.bench_function("sonde http-status plugin, record to counted", |b| {
        b.iter_custom(|n| {
            rounds(n, |k| {
                let start = Instant::now();
                record_and_flush(&t, &events[..k]);
                start.elapsed()
            })
        })
    });
    g.bench_function("sonde http-status plugin, dispatcher CPU", |b| {
        b.iter_custom(|n| dispatcher_cpu_per_round(&t, &events, n))
    });
    g.bench_function("sonde http-status plugin, busy time on the dispatcher", |b| {
        b.iter_custom(|n| {
            rounds(n, |k| {
                let before = busy_us(&t);
                record_and_flush(&t, &events[..k]);
                Duration::from_micros(busy_us(&t) - before)
            })
        })
    });
    // The example server's load: every event through all three plugins. The
    // dispatcher is the slower side of the pipeline, so this is its cost
    // per event (host batching and the three calls).
    let all_dir = tempfile::tempdir().unwrap();
    let all = runtime(all_dir.path(), CAPACITY, &example_entries(), true);
    let server_events: Vec<Event> = (0..ROUND as usize).map(server_event).collect();
    g.bench_function("sonde three example plugins, record to counted", |b| {
        b.iter_custom(|n| {
            rounds(n, |k| {
                let start = Instant::now();
                record_and_flush(&all, &server_events[..k]);
                start.elapsed()
            })
        })
    });
    g.bench_function("sonde three example plugins, dispatcher CPU", |b| {
        b.iter_custom(|n| dispatcher_cpu_per_round(&all, &server_events, n))
    });
    let queue: ArrayQueue<OwnedEvent> = ArrayQueue::new(CAPACITY);
    let mut native = Native { counts: [[0; 6]; 10] };
    g.bench_function("native Rust, record to counted", |b| {
        b.iter_custom(|n| {
            rounds(n, |k| {
                let start = Instant::now();
                for e in &events[..k] {
                    let _ = queue.push(OwnedEvent::of(e));
                }
                while let Some(e) = queue.pop() {
                    native.count(&e);
                }
                start.elapsed()
            })
        })
    });
    g.finish();
    black_box(native.counts);
    for t in [&t, &all] {
        let report = t.report().unwrap();
        assert_eq!(report.buffer.dropped, 0, "the benchmark dropped events");
    }
}

criterion_group!(benches, dispatch);
criterion_main!(benches);
