//! Quiet failure, in a test binary of its own because it installs the
//! process-wide log subscriber: a failing endpoint gets one warning, then
//! silence, then one line when it recovers.

#![allow(clippy::unwrap_used, reason = "tests")]

use std::time::Duration;

use sonde::{Manifest, Telemetry};
use sonde_tests::{Reply, ScriptedEndpoint, capture_logs, log_lines, write_manifest};

#[test]
fn a_failing_endpoint_gets_one_warning_not_a_flood() {
    capture_logs();
    let endpoint = ScriptedEndpoint::start(vec![], Some(Reply::status(500)));
    let dir = tempfile::tempdir().unwrap();
    let telemetry = format!(
        "mode = \"on\"\nendpoint = \"{}\"\nstate_dir = \"state\"\ninterval = \"100ms\"\n\
         min_interval = \"100ms\"\nmax_interval = \"300ms\"\nretry_initial = \"100ms\"\n\
         max_requests_per_hour = 3600",
        endpoint.url
    );
    let path = write_manifest(dir.path(), &telemetry, &[]);
    let t = Telemetry::builder(Manifest::load(&path).unwrap()).start().unwrap();
    let failed = endpoint.wait_for(8, Duration::from_secs(15));
    assert!(failed.len() >= 8, "the endpoint kept being tried");
    endpoint.rescript(vec![], None);
    let n = failed.len();
    endpoint.wait_for(n + 2, Duration::from_secs(15));
    std::thread::sleep(Duration::from_millis(300));
    drop(t);
    // The only test in this binary: every captured line is its own.
    let text = log_lines("").join("\n");
    let warnings = text.lines().filter(|l| l.contains("WARN")).count();
    assert_eq!(warnings, 1, "one warning for {n} failures:\n{text}");
    assert!(text.contains("telemetry delivery failing"), "{text}");
    assert_eq!(text.matches("telemetry delivery recovered").count(), 1, "{text}");
}
