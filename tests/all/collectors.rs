//! Each example collector's numbers, exactly, for `examples/events.jsonl`.
//!
//! The expected values were counted by hand from the events file (and
//! cross-checked in a second, independent component runtime); any change to
//! that file must update them.

use std::collections::BTreeMap;

use sonde::{Manifest, MetricValue, PluginReport, PluginState, Report, Telemetry};
use sonde_tests::{example_entries, write_manifest};

/// Runs the three example plugins over the example events, recording them
/// in `chunks` separate flushes, so batch boundaries move.
fn report_for_examples(chunk: usize) -> Report {
    let dir = tempfile::tempdir().unwrap();
    let path =
        write_manifest(dir.path(), "mode = \"local\"\nstate_dir = \"s\"", &example_entries());
    let t = Telemetry::builder(Manifest::load(&path).unwrap()).start().unwrap();
    sonde_tests::report_for_example_events(&t, chunk)
}

fn plugin<'a>(r: &'a Report, name: &str) -> &'a PluginReport {
    let p = r.plugins.iter().find(|p| p.name == name).unwrap();
    assert_eq!(p.state, PluginState::Running, "{name}: {:?}", p.reason);
    assert_eq!(
        p.cost.failures + p.cost.invalid_points + p.cost.overflow_points,
        0,
        "{name}: {:?}",
        p.cost
    );
    assert_eq!(p.cost.events, 40);
    let peak = p.cost.peak_memory_bytes;
    assert!(peak >= 64 * 1024 && peak <= sonde::MAX_PLUGIN_MEMORY as u64, "{name}: peak {peak}");
    p
}

/// Counter series as "label=value,label=value" → value.
fn counters(p: &PluginReport) -> BTreeMap<String, f64> {
    p.metrics
        .iter()
        .map(|m| {
            let labels: Vec<String> = m.labels.iter().map(|(k, v)| format!("{k}={v}")).collect();
            let MetricValue::Scalar { value } = m.value else {
                panic!("{} is not a counter", m.name)
            };
            (labels.join(","), value)
        })
        .collect()
}

fn expected(rows: &[(&str, f64)]) -> BTreeMap<String, f64> {
    rows.iter().map(|(k, v)| (k.to_string(), *v)).collect()
}

#[test]
fn the_example_events_produce_exact_numbers_whatever_the_batching() {
    for chunk in [40, 7, 1] {
        let r = report_for_examples(chunk);
        assert_eq!((r.buffer.recorded, r.buffer.processed, r.buffer.dropped), (40, 40, 0));
        assert_eq!(r.buffer.truncated, 0, "the example user agents fit an event");

        let status = plugin(&r, "http-status");
        assert!(status.metrics.iter().all(|m| m.name == "http.requests"));
        assert_eq!(
            counters(status),
            expected(&[
                ("method=DELETE,status_class=2xx", 1.0),
                ("method=DELETE,status_class=5xx", 1.0),
                ("method=GET,status_class=1xx", 1.0),
                ("method=GET,status_class=2xx", 18.0),
                ("method=GET,status_class=3xx", 1.0),
                ("method=GET,status_class=4xx", 4.0),
                ("method=GET,status_class=5xx", 3.0),
                ("method=HEAD,status_class=2xx", 1.0),
                ("method=OPTIONS,status_class=2xx", 1.0),
                ("method=OTHER,status_class=4xx", 1.0),
                ("method=PATCH,status_class=2xx", 1.0),
                ("method=POST,status_class=2xx", 2.0),
                ("method=POST,status_class=3xx", 1.0),
                ("method=POST,status_class=4xx", 2.0),
                ("method=PUT,status_class=2xx", 2.0),
            ]),
            "chunk {chunk}"
        );

        // top_n = 5: edge (3), bot (2), go, wget, none and other (1 each) fold into `other`.
        let ua = plugin(&r, "user-agent");
        assert_eq!(
            counters(ua),
            expected(&[
                ("family=chrome", 9.0),
                ("family=curl", 7.0),
                ("family=firefox", 6.0),
                ("family=other", 9.0),
                ("family=python", 4.0),
                ("family=safari", 5.0),
            ]),
            "chunk {chunk}"
        );

        let routes = plugin(&r, "route-latency");
        let bounds = vec![
            100.0, 250.0, 500.0, 1000.0, 2500.0, 5000.0, 10000.0, 25000.0, 50000.0, 100000.0,
            250000.0, 500000.0, 1000000.0,
        ];
        let want: [(&str, u64, f64, [u64; 14]); 4] = [
            ("/health", 6, 5465.0, [2, 3, 0, 0, 0, 1, 0, 0, 0, 0, 0, 0, 0, 0]),
            ("/orders", 11, 1739980.0, [0, 1, 0, 0, 0, 1, 3, 1, 1, 2, 1, 0, 0, 1]),
            ("/users/{id}", 14, 60950.0, [0, 0, 2, 2, 5, 2, 2, 0, 1, 0, 0, 0, 0, 0]),
            ("other", 9, 326280.0, [0, 2, 0, 2, 0, 0, 1, 1, 0, 2, 1, 0, 0, 0]),
        ];
        assert_eq!(routes.metrics.len(), want.len());
        for (m, (route, count, sum, buckets)) in routes.metrics.iter().zip(want) {
            assert_eq!(m.name, "http.route.duration_us");
            assert_eq!(m.labels["route"], route);
            assert_eq!(
                m.value,
                MetricValue::Histogram {
                    count,
                    sum,
                    bounds: bounds.clone(),
                    buckets: buckets.to_vec()
                },
                "{route}, chunk {chunk}"
            );
        }
    }
}

#[test]
fn no_raw_path_or_user_agent_leaves_the_host() {
    let r = report_for_examples(40);
    let json = String::from_utf8(r.to_json()).unwrap();
    for secret in ["/static/", "/login", "Mozilla/5.0", "curl/8", "PROPFIND"] {
        assert!(!json.contains(secret), "`{secret}` leaked into the report");
    }
}

#[test]
fn reports_are_cumulative_across_collections() {
    let dir = tempfile::tempdir().unwrap();
    let path =
        write_manifest(dir.path(), "mode = \"local\"\nstate_dir = \"s\"", &example_entries()[..1]);
    let t = Telemetry::builder(Manifest::load(&path).unwrap()).start().unwrap();
    static HTTP: sonde::EventKind = sonde::EventKind::new("http.request", &["method", "status"]);
    t.record(HTTP.event().str("method", "GET").int("status", 200));
    let first = t.report().unwrap();
    t.record(HTTP.event().str("method", "GET").int("status", 200));
    let second = t.report().unwrap();
    assert_eq!(counters(&first.plugins[0])["method=GET,status_class=2xx"], 1.0);
    assert_eq!(counters(&second.plugins[0])["method=GET,status_class=2xx"], 2.0);
    assert_ne!(first.report_id, second.report_id);
    assert_eq!(first.instance_id, second.instance_id);
}
