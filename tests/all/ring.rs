//! The ring buffer under pressure: every event is either processed or
//! counted as dropped, exactly.

use sonde::{Manifest, MetricValue, Telemetry};
use sonde_tests::{Entry, plugin, write_manifest};

static HTTP: sonde::EventKind = sonde::EventKind::new("http.request", &["method", "status"]);

#[test]
fn record_from_several_threads_with_a_full_buffer_counts_every_drop() {
    const THREADS: u64 = 4;
    const PER_THREAD: u64 = 50_000;
    let dir = tempfile::tempdir().unwrap();
    let entries = [Entry::new("http-status", plugin("http_status.wasm"))];
    let path = write_manifest(
        dir.path(),
        "mode = \"local\"\nbuffer_capacity = 16\nstate_dir = \"s\"",
        &entries,
    );
    let t = Telemetry::builder(Manifest::load(&path).unwrap()).start().unwrap();
    t.plugins().unwrap(); // loaded
    std::thread::scope(|s| {
        for _ in 0..THREADS {
            let t = t.clone();
            s.spawn(move || {
                for i in 0..PER_THREAD {
                    t.record(HTTP.event().str("method", "GET").int("status", 200 + (i % 2) as i64));
                }
            });
        }
    });
    let report = t.report().unwrap();
    let b = report.buffer;
    assert_eq!(b.capacity, 16);
    assert_eq!(b.recorded, THREADS * PER_THREAD);
    assert_eq!(b.processed + b.dropped, b.recorded, "{b:?}");
    assert!(b.dropped > 0, "a 16-slot ring under 4 writers must overflow: {b:?}");
    let counted: f64 = report.plugins[0]
        .metrics
        .iter()
        .map(|m| match m.value {
            MetricValue::Scalar { value } => value,
            MetricValue::Histogram { .. } | MetricValue::Other(_) => panic!("counter expected"),
        })
        .sum();
    assert_eq!(counted, b.processed as f64, "the plugin saw exactly the processed events");
    assert_eq!(report.plugins[0].cost.events, b.processed);
}
