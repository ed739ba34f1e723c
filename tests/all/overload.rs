//! Overload: several threads recording as fast as they can into a small ring
//! for a few seconds, reports taken while they run. Every event handed to
//! `record()` is processed or counted as dropped, exactly, and each plugin
//! saw exactly the processed events. (The tens-of-seconds run is in
//! `cargo xtask reliability`.)

use std::sync::atomic::{AtomicBool, AtomicU64, Ordering::Relaxed};
use std::time::{Duration, Instant};

use sonde::{Manifest, Telemetry};
use sonde_tests::{Entry, plugin, plugin_report, total, write_manifest};

static HTTP: sonde::EventKind =
    sonde::EventKind::new("http.request", &["method", "route", "status", "duration_us"]);

#[test]
fn threads_at_full_speed_into_a_small_ring_lose_nothing_uncounted() {
    const THREADS: usize = 4;
    const RUN: Duration = Duration::from_secs(3);
    let dir = tempfile::tempdir().unwrap();
    let entries = [
        Entry::new("http-status", plugin("http_status.wasm")),
        Entry::new("route-latency", plugin("route_latency.wasm")).config("routes", "/orders"),
    ];
    let path = write_manifest(
        dir.path(),
        "mode = \"local\"\nbuffer_capacity = 64\nstate_dir = \"s\"",
        &entries,
    );
    let t = Telemetry::builder(Manifest::load(&path).unwrap()).start().unwrap();
    t.plugins().unwrap(); // loaded
    let calls = AtomicU64::new(0);
    let stop = AtomicBool::new(false);
    let mut snapshots = Vec::new();
    std::thread::scope(|s| {
        for n in 0..THREADS {
            let (t, calls, stop) = (t.clone(), &calls, &stop);
            s.spawn(move || {
                let mut mine = 0u64;
                while !stop.load(Relaxed) {
                    for i in 0..256 {
                        t.record(
                            HTTP.event()
                                .str("method", ["GET", "POST", "PUT", "DELETE"][n])
                                .str("route", "/orders")
                                .int("status", 200 + (i % 4) * 100)
                                .int("duration_us", i * 37),
                        );
                    }
                    mine += 256;
                }
                calls.fetch_add(mine, Relaxed);
            });
        }
        let start = Instant::now();
        while start.elapsed() < RUN {
            std::thread::sleep(Duration::from_millis(300));
            // A report while the writers run: its counts are a consistent
            // lower bound, never more processed than recorded.
            let b = t.report().unwrap().buffer;
            assert!(b.processed + b.dropped <= b.recorded, "{b:?}");
            snapshots.push(b);
        }
        stop.store(true, Relaxed);
    });
    for pair in snapshots.windows(2) {
        let (a, b) = (pair[0], pair[1]);
        assert!(b.recorded >= a.recorded && b.processed >= a.processed && b.dropped >= a.dropped);
    }
    t.flush().unwrap();
    let report = t.report().unwrap();
    let b = report.buffer;
    let calls = calls.load(Relaxed);
    assert_eq!(b.recorded, calls, "every record() call is counted");
    assert_eq!(b.processed + b.dropped, b.recorded, "recorded = processed + dropped: {b:?}");
    assert!(b.dropped > 0 && b.processed > 0, "a 64-slot ring under {THREADS} writers: {b:?}");
    let status = plugin_report(&report, "http-status");
    assert_eq!(total(status, Some("http.requests")), b.processed as f64);
    assert_eq!(status.cost.events, b.processed);
    let latency = plugin_report(&report, "route-latency");
    assert_eq!(total(latency, None), b.processed as f64, "every processed event has a latency");
    assert_eq!(latency.cost.events, b.processed);
}
