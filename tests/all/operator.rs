//! The operator's word against the endpoint's: a metric the manifest
//! denies stays out of every report, whatever directives say.

use std::time::Duration;

use sonde_tests::{Reply, ScriptedEndpoint, example_entries, plugin_report};

use crate::delivery::on;

static REQUEST: sonde::EventKind =
    sonde::EventKind::new("http.request", &["method", "status", "user_agent"]);

#[test]
fn no_directive_can_enable_a_metric_the_operator_denies() {
    let dir = tempfile::tempdir().unwrap();
    let enable = r#"{"directives":[
        {"action":"enable_metrics","plugin":"user-agent","metrics":["http.user_agents"]},
        {"action":"enable_plugin","plugin":"user-agent"}]}"#;
    let endpoint = ScriptedEndpoint::start(vec![Reply::ok(enable)], None);
    let mut entries = example_entries();
    entries[1] = entries[1].clone().deny("http.user_agents");
    let t = on(dir.path(), &endpoint.url, "max_requests_per_hour = 3600", &entries[..2]);
    for _ in 0..10 {
        t.record(
            REQUEST.event().str("method", "GET").int("status", 200).str("user_agent", "curl/8"),
        );
    }
    let got = endpoint.wait_for(3, Duration::from_secs(10));
    assert!(got.len() >= 3, "{} requests", got.len());
    for r in got.iter().flat_map(|r| &r.batch.reports) {
        let agents = plugin_report(r, "user-agent");
        assert!(agents.metrics.is_empty(), "{:?}", agents.metrics);
        assert_eq!(agents.denied_metrics, ["http.user_agents"]);
        assert!(agents.disabled_metrics.is_empty());
    }
    let last = got.last().unwrap().batch.reports.last().unwrap();
    let agents = plugin_report(last, "user-agent");
    assert!(agents.cost.denied_points >= 1, "counted: {:?}", agents.cost);
    assert_eq!(sonde_tests::total(plugin_report(last, "http-status"), None), 10.0);
}
