//! `record()` on the request path, side by side with two floors (a bare
//! `ArrayQueue` push of the same event as an owned value, and a bare
//! `thingbuf` slot written in place, as sonde's ring does) and the peers a user would pick
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
use sonde_benches::{Overwrite, OwnedEvent, record_one, runtime, timed};
use thingbuf::ThingBuf;

const CAPACITY: usize = 65_536;
/// Events per thread between drains: two threads stay under the capacity.
const CHUNK: u64 = 16_384;

fn record(c: &mut Criterion) {
    let dir = tempfile::tempdir().unwrap();
    let sonde = runtime(dir.path(), CAPACITY, &[], true);
    let full_dir = tempfile::tempdir().unwrap();
    let sonde_full = runtime(full_dir.path(), CAPACITY, &[], false);
    for _ in 0..CAPACITY {
        record_one(&sonde_full);
    }
    let floor: ArrayQueue<OwnedEvent> = ArrayQueue::new(CAPACITY);
    let floor_full: ArrayQueue<OwnedEvent> = ArrayQueue::new(CAPACITY);
    while floor_full.push(OwnedEvent::new()).is_ok() {}
    let in_place = ThingBuf::with_recycle(CAPACITY, Overwrite);
    let in_place_full = ThingBuf::with_recycle(CAPACITY, Overwrite);
    while let Ok(mut slot) = in_place_full.push_ref() {
        slot.fill();
    }

    let provider = SdkMeterProvider::builder().with_reader(ManualReader::builder().build()).build();
    let otel = provider.meter("bench").u64_counter("http.requests").build();
    let recorder = metrics_exporter_prometheus::PrometheusBuilder::new().build_recorder();
    let handle = recorder.handle();
    metrics::set_global_recorder(recorder).unwrap();

    for threads in [1, 2] {
        let mut g = c.benchmark_group(format!("record/{threads}t"));
        g.measurement_time(Duration::from_secs(3)).sample_size(30);
        for (fill, full) in [("not full", false), ("full", true)] {
            g.bench_function(format!("sonde record, {fill}"), |b| {
                let t = if full { &sonde_full } else { &sonde };
                let chunk = if full { u64::MAX } else { CHUNK };
                b.iter_custom(|n| {
                    timed(threads, n, chunk, &|| record_one(t), || {
                        if !full {
                            t.flush().unwrap()
                        }
                    })
                })
            });
            g.bench_function(format!("floor ArrayQueue push, {fill}"), |b| {
                let q = if full { &floor_full } else { &floor };
                let chunk = if full { u64::MAX } else { CHUNK };
                let push = || {
                    let _ = black_box(q.push(OwnedEvent::new()));
                };
                b.iter_custom(|n| {
                    timed(threads, n, chunk, &push, || {
                        if !full {
                            while q.pop().is_some() {}
                        }
                    })
                })
            });
            g.bench_function(format!("floor thingbuf in place, {fill}"), |b| {
                let q = if full { &in_place_full } else { &in_place };
                let chunk = if full { u64::MAX } else { CHUNK };
                let push = || {
                    if let Ok(mut slot) = q.push_ref() {
                        slot.fill();
                    }
                };
                b.iter_custom(|n| {
                    timed(threads, n, chunk, &push, || {
                        if !full {
                            while let Some(e) = q.pop_ref() {
                                black_box(e.status());
                            }
                        }
                    })
                })
            });
        }
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
