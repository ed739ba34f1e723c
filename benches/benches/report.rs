//! A report with 10,000 series: built (plugins collected, sources read),
//! serialized and gzip-compressed as the uploader does.

#![allow(clippy::unwrap_used, reason = "benchmarks")]

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

use criterion::{Criterion, criterion_group, criterion_main};
use sonde::{Metric, MetricKind, MetricSource, MetricValue};
use sonde_benches::{mixed_event, runtime};
use sonde_tests::example_entries;

/// Series the report carries, besides the plugins' own.
const SERIES: usize = 10_000;

/// An application source with a fixed set of series (the shape the
/// `sonde-metrics` bridge reports: name, unit, labels, a value).
#[derive(Debug)]
struct Many(Vec<Metric>);

impl MetricSource for Many {
    fn snapshot(&self) -> (Vec<Metric>, u64) {
        (self.0.clone(), 0)
    }
}

/// The uploader's compression of a JSON body.
fn gzip(body: &[u8]) -> Vec<u8> {
    sonde::__bench::gzip(body, sonde::Protocol::Sonde)
}

fn report(c: &mut Criterion) {
    let dir = tempfile::tempdir().unwrap();
    let t = runtime(dir.path(), 65_536, &example_entries(), true);
    for i in 0..10_000 {
        t.record(&mixed_event(i));
    }
    let metrics = (0..SERIES)
        .map(|i| Metric {
            name: format!("app.metric_{}", i % 50),
            kind: if i % 3 == 0 { MetricKind::Gauge } else { MetricKind::Counter },
            unit: "1".into(),
            labels: BTreeMap::from([
                ("shard".to_string(), format!("{}", i / 50)),
                ("region".to_string(), "eu-west-1".to_string()),
            ]),
            value: MetricValue::Scalar { value: i as f64 * 1.5 },
        })
        .collect();
    assert!(t.attach("app", Arc::new(Many(metrics))));
    let r = t.report().unwrap();
    let series: usize = r.plugins.iter().map(|p| p.metrics.len()).sum::<usize>()
        + r.sources.iter().map(|s| s.metrics.len()).sum::<usize>();
    assert!(series >= SERIES, "{series} series");
    let json = r.to_json();
    if let Ok(path) = std::env::var("SONDE_DUMP_REPORT") {
        std::fs::write(&path, &json).unwrap();
        std::fs::write(format!("{path}.pb"), sonde::otlp_body(std::slice::from_ref(&r), "bench"))
            .unwrap();
    }
    eprintln!(
        "report: {series} series, {} bytes JSON, {} bytes gzip",
        json.len(),
        gzip(&json).len()
    );

    let mut g = c.benchmark_group("report/10k series");
    g.measurement_time(Duration::from_secs(5)).sample_size(20);
    // The report is dropped outside the timing: freeing 10k series is the
    // caller's, and it made "build" alone look slower than all three steps.
    g.bench_function("build", |b| b.iter_with_large_drop(|| t.report().unwrap()));
    g.bench_function("serialize", |b| b.iter(|| r.to_json()));
    g.bench_function("gzip", |b| b.iter(|| gzip(&json)));
    g.bench_function("build + serialize + gzip", |b| {
        b.iter(|| gzip(&t.report().unwrap().to_json()))
    });
    g.finish();
}

criterion_group!(benches, report);
criterion_main!(benches);
