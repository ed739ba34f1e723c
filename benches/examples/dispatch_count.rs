//! Records `N` server-shaped events (argument 1) through the three example
//! plugins and flushes (with `uniform` as argument 2, all `N` are the same
//! event, as in the whole-server benchmark): a fixed workload for `valgrind --tool=callgrind`,
//! whose instruction counts, unlike timings on a shared VM, repeat exactly.
//! Both runs first record the same 70,000 warm-up events (every ring slot
//! used once), so two runs with different `N` give the steady-state
//! instructions per event:
//!
//! ```sh
//! cargo build --release -p sonde-benches --example dispatch_count
//! valgrind --tool=callgrind target/release/examples/dispatch_count 20000
//! valgrind --tool=callgrind target/release/examples/dispatch_count 80000
//! ```
//!
//! It prints on stdout what the report says each plugin counted, a line
//! `recorded N events` (N with the warm-up) and one `plugin NAME: delivered D, counted C, state
//! S` per plugin (C: the totals of its counters and histograms, which for
//! the example plugins are one per event), and exits with 1 unless every
//! plugin counted all N: `cargo xtask bench` checks both.
#![allow(clippy::unwrap_used, reason = "a measuring tool")]

use sonde::Event;
use sonde_benches::{runtime, server_event};
use sonde_core::{MetricKind, MetricValue};
use sonde_tests::example_entries;

fn main() {
    let n: usize = std::env::args().nth(1).map_or(20_000, |a| a.parse().unwrap());
    // `DISPATCH_COUNT_DIR=<dir>`: the manifest and state directory there,
    // so that a first run's compile cache serves the next (under valgrind
    // a plugin then loads from the cache instead of compiling in a child
    // process that valgrind also runs).
    let temp = tempfile::tempdir().unwrap();
    let dir = std::env::var_os("DISPATCH_COUNT_DIR").map_or(temp.path().to_owned(), Into::into);
    std::fs::create_dir_all(&dir).unwrap();
    // `ONLY=<plugin>` runs one of the three.
    let only = std::env::var("ONLY").ok();
    let entries: Vec<_> = example_entries()
        .into_iter()
        .filter(|e| only.as_ref().is_none_or(|o| *o == e.name))
        .collect();
    let t = runtime(&dir, 65_536, &entries, true);
    let uniform = std::env::args().nth(2).is_some_and(|a| a == "uniform");
    let events: Vec<Event> =
        (0..10_000).map(|i| server_event(if uniform { 0 } else { i })).collect();
    // Warm-up, the same in every run (so it cancels out of the difference of
    // two runs): more events than the ring has slots, so that every slot has
    // been written once. A slot's first use initializes it (a 344-byte
    // memset in `push_ref`); a run of 20,000 events touches 20,000 slots and
    // one of 80,000 all 65,536, which put 27 instructions per event of
    // one-time set-up into the difference.
    const WARM_UP: usize = 70_000;
    let mut left = n + WARM_UP;
    while left > 0 {
        let k = left.min(events.len());
        for e in &events[..k] {
            t.record(e);
        }
        t.flush().unwrap();
        left -= k;
    }
    let report = t.report().unwrap();
    println!("recorded {} events", n + WARM_UP);
    let mut all = !report.plugins.is_empty();
    for p in &report.plugins {
        let counted: f64 = p
            .metrics
            .iter()
            .map(|m| match (&m.kind, &m.value) {
                (MetricKind::Counter, MetricValue::Scalar { value }) => *value,
                (MetricKind::Histogram, MetricValue::Histogram { count, .. }) => *count as f64,
                _ => 0.0,
            })
            .sum();
        println!(
            "plugin {}: delivered {}, counted {counted}, state {:?}{}",
            p.name,
            p.cost.events,
            p.state,
            p.reason.as_deref().map(|r| format!(" ({r})")).unwrap_or_default()
        );
        all &= counted == (n + WARM_UP) as f64;
    }
    if !all {
        eprintln!("dispatch_count: a plugin did not count every event");
        std::process::exit(1);
    }
}
