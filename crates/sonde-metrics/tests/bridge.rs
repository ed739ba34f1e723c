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

#[test]
fn numbers_a_report_cannot_carry_are_dropped_and_counted() {
    let dir = tempfile::tempdir().unwrap();
    let t = start(dir.path(), true);
    let recorder = SondeRecorder::new();
    t.attach("metrics", Arc::new(recorder.clone()));
    metrics::with_local_recorder(&recorder, || {
        metrics::gauge!("level").set(2.0);
        metrics::gauge!("level").set(f64::NAN);
        metrics::gauge!("level").increment(f64::INFINITY);
        metrics::gauge!("big").set(f64::MAX);
        metrics::gauge!("big").increment(f64::MAX);
        for v in [f64::MAX, f64::MAX, f64::NAN, f64::NEG_INFINITY, 1.0] {
            metrics::histogram!("sum").record(v);
        }
    });
    let r = t.report().unwrap();
    let s = &r.sources[0];
    assert_eq!(s.dropped_values, 6, "{s:?}");
    assert_eq!(s.invalid_series, 0, "the bridge itself keeps its series finite");
    let find = |name: &str| s.metrics.iter().find(|m| m.name == name).unwrap();
    assert_eq!(find("level").value, MetricValue::Scalar { value: 2.0 }, "keeps its last value");
    assert_eq!(find("big").value, MetricValue::Scalar { value: f64::MAX });
    let MetricValue::Histogram { count, sum, .. } = find("sum").value else { panic!("histogram") };
    // The second MAX and the non-finite ones were dropped; 1.0 was taken
    // (MAX + 1.0 rounds to MAX, which is finite).
    assert_eq!((count, sum), (2, f64::MAX));
    let back = sonde::Report::from_json(&r.to_json()).unwrap();
    assert_eq!(back.sources[0], *s);
}

/// A source attached by the application that returns NaN and infinities.
#[derive(Debug)]
struct Broken;

impl sonde::MetricSource for Broken {
    fn snapshot(&self) -> (Vec<sonde::Metric>, u64) {
        let series = |name: &str, value| sonde::Metric {
            name: name.into(),
            kind: sonde::MetricKind::Gauge,
            unit: String::new(),
            labels: Default::default(),
            value: MetricValue::Scalar { value },
        };
        (vec![series("nan", f64::NAN), series("inf", f64::INFINITY), series("ok", 1.0)], 0)
    }
}

#[test]
fn any_attached_source_is_checked_before_a_report_is_written() {
    let dir = tempfile::tempdir().unwrap();
    let t = start(dir.path(), true);
    assert!(t.attach("broken", Arc::new(Broken)));
    for _ in 0..2 {
        let r = t.report().unwrap();
        let s = &r.sources[0];
        assert_eq!(s.metrics.len(), 1);
        assert_eq!(s.metrics[0].name, "ok");
        assert_eq!(s.invalid_series, 2);
        let back = sonde::Report::from_json(&r.to_json()).unwrap();
        assert_eq!(back, r);
    }
}
