//! `record()` on the request path, side by side with the floor (a bare
//! `ArrayQueue` push of the same event) and the peers a user would pick
//! instead: the OpenTelemetry SDK's `Counter::add` with three attributes and
//! `metrics::counter!` with three labels through the Prometheus recorder.
//! One and two threads; the buffer not full and full.

#![allow(clippy::unwrap_used, reason = "benchmarks")]

use std::hint::black_box;
use std::time::Duration;

use criterion::{Criterion, criterion_group, criterion_main};
use crossbeam_queue::ArrayQueue;
use opentelemetry::KeyValue;
use opentelemetry::metrics::MeterProvider;
use opentelemetry_sdk::metrics::{ManualReader, SdkMeterProvider};
use sonde::Event;
use sonde_benches::{event, runtime, timed};

const CAPACITY: usize = 65_536;
/// Events per thread between drains: two threads stay under the capacity.
const CHUNK: u64 = 16_384;
/// A ring that fits the caches (1.4 MB instead of 22.5 MB).
const SMALL: usize = 4_096;

fn record(c: &mut Criterion) {
    let dir = tempfile::tempdir().unwrap();
    let sonde = runtime(dir.path(), CAPACITY, &[], true);
    let full_dir = tempfile::tempdir().unwrap();
    let sonde_full = runtime(full_dir.path(), CAPACITY, &[], false);
    for _ in 0..CAPACITY {
        sonde_full.record(event());
    }
    let small_dir = tempfile::tempdir().unwrap();
    let sonde_small = runtime(small_dir.path(), SMALL, &[], true);
    let floor_small: ArrayQueue<Event> = ArrayQueue::new(SMALL);
    let floor: ArrayQueue<Event> = ArrayQueue::new(CAPACITY);
    let floor_full: ArrayQueue<Event> = ArrayQueue::new(CAPACITY);
    while floor_full.push(event()).is_ok() {}

    let provider = SdkMeterProvider::builder().with_reader(ManualReader::builder().build()).build();
    let otel = provider.meter("bench").u64_counter("http.requests").build();
    let recorder = metrics_exporter_prometheus::PrometheusBuilder::new().build_recorder();
    let handle = recorder.handle();
    metrics::set_global_recorder(recorder).unwrap();

    for threads in [1, 2] {
        let mut g = c.benchmark_group(format!("record/{threads}t"));
        g.measurement_time(Duration::from_secs(3)).sample_size(30);
        g.bench_function("sonde record, not full", |b| {
            b.iter_custom(|n| {
                timed(threads, n, CHUNK, &|| sonde.record(event()), || sonde.flush().unwrap())
            })
        });
        g.bench_function("floor ArrayQueue push, not full", |b| {
            b.iter_custom(|n| {
                let push = || {
                    let _ = black_box(floor.push(event()));
                };
                timed(threads, n, CHUNK, &push, || while floor.pop().is_some() {})
            })
        });
        g.bench_function("sonde record, not full, 4k ring", |b| {
            b.iter_custom(|n| {
                let drain = || sonde_small.flush().unwrap();
                timed(threads, n, SMALL as u64 / 4, &|| sonde_small.record(event()), drain)
            })
        });
        g.bench_function("floor ArrayQueue push, not full, 4k ring", |b| {
            b.iter_custom(|n| {
                let push = || {
                    let _ = black_box(floor_small.push(event()));
                };
                timed(threads, n, SMALL as u64 / 4, &push, || while floor_small.pop().is_some() {})
            })
        });
        g.bench_function("sonde record, full", |b| {
            b.iter_custom(|n| timed(threads, n, u64::MAX, &|| sonde_full.record(event()), || {}))
        });
        g.bench_function("floor ArrayQueue push, full", |b| {
            b.iter_custom(|n| {
                let push = || {
                    let _ = black_box(floor_full.push(event()));
                };
                timed(threads, n, u64::MAX, &push, || {})
            })
        });
        g.bench_function("opentelemetry Counter::add, 3 attributes", |b| {
            b.iter_custom(|n| {
                let add = || {
                    otel.add(
                        1,
                        &[
                            KeyValue::new("method", "GET"),
                            KeyValue::new("route", "/users/{id}"),
                            KeyValue::new("status", 200),
                        ],
                    )
                };
                timed(threads, n, u64::MAX, &add, || {})
            })
        });
        g.bench_function("metrics counter!, 3 labels, prometheus recorder", |b| {
            b.iter_custom(|n| {
                let add = || {
                    metrics::counter!("http_requests", "method" => "GET", "route" => "/users/{id}", "status" => "200")
                        .increment(1)
                };
                timed(threads, n, u64::MAX, &add, || {})
            })
        });
        g.finish();
    }
    // Keep the recorder's state alive to the end, as an exporter would.
    black_box(handle.render());
}

criterion_group!(benches, record);
criterion_main!(benches);
