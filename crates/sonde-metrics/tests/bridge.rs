//! The bridge with the real runtime: app metrics reach reports only when the
//! operator allows them, with bounded cardinality.

#![allow(clippy::unwrap_used, reason = "tests")]

use std::sync::Arc;

use sonde::{Manifest, MetricValue, Telemetry};
use sonde_metrics::{MAX_SERIES, OVERFLOW_NAME, SondeRecorder};
use sonde_tests::write_manifest;

fn start(dir: &std::path::Path, allowed: bool) -> Telemetry {
    let path = write_manifest(
        dir,
        &format!("mode = \"local\"\nstate_dir = \"s\"\napp_metrics = {allowed}"),
        &[],
    );
    Telemetry::builder(Manifest::load(&path).unwrap()).start().unwrap()
}

#[test]
fn application_metrics_reach_reports_when_the_operator_allows_them() {
    let dir = tempfile::tempdir().unwrap();
    let t = start(dir.path(), true);
    let recorder = SondeRecorder::new();
    assert!(t.attach("metrics", Arc::new(recorder.clone())));
    metrics::with_local_recorder(&recorder, || {
        metrics::counter!("jobs.done", "queue" => "mail").increment(3);
        metrics::counter!("jobs.done", "queue" => "mail").increment(2);
        metrics::gauge!("queue.depth").set(7.5);
        for v in [1.0, 3.0, 100.0] {
            metrics::histogram!("job.ms").record(v);
        }
    });
    let r = t.report().unwrap();
    assert_eq!(r.sources.len(), 1);
    let s = &r.sources[0];
    assert_eq!((s.name.as_str(), s.overflow_series), ("metrics", 0));
    let find = |name: &str| s.metrics.iter().find(|m| m.name == name).unwrap();
    assert_eq!(find("jobs.done").value, MetricValue::Scalar { value: 5.0 });
    assert_eq!(find("jobs.done").labels["queue"], "mail");
    assert_eq!(find("queue.depth").value, MetricValue::Scalar { value: 7.5 });
    let MetricValue::Histogram { count, sum, buckets, .. } = &find("job.ms").value else {
        panic!("histogram")
    };
    assert_eq!((*count, *sum), (3, 104.0));
    assert_eq!((buckets[0], buckets[1], buckets[4]), (1, 1, 1), "1 ≤ 1, 3 ≤ 4, 100 ≤ 256");
}

#[test]
fn without_the_operators_consent_nothing_is_reported() {
    let dir = tempfile::tempdir().unwrap();
    let t = start(dir.path(), false);
    let recorder = SondeRecorder::new();
    t.attach("metrics", Arc::new(recorder.clone()));
    metrics::with_local_recorder(&recorder, || metrics::counter!("secret.count").increment(1));
    assert!(t.report().unwrap().sources.is_empty());
}

#[test]
fn label_explosions_fold_into_one_counted_overflow_series() {
    let dir = tempfile::tempdir().unwrap();
    let t = start(dir.path(), true);
    let recorder = SondeRecorder::new();
    t.attach("metrics", Arc::new(recorder.clone()));
    metrics::with_local_recorder(&recorder, || {
        for i in 0..MAX_SERIES + 50 {
            metrics::counter!("requests", "user" => i.to_string()).increment(1);
        }
    });
    let s = &t.report().unwrap().sources[0];
    assert_eq!(s.overflow_series, 50);
    assert_eq!(s.metrics.len(), MAX_SERIES + 1);
    let overflow = s.metrics.iter().find(|m| m.name == OVERFLOW_NAME).unwrap();
    assert_eq!(overflow.value, MetricValue::Scalar { value: 50.0 });
}
