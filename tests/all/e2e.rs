//! The whole loop over loopback: the real host, the real example plugins,
//! the real `sonde-collector`.

use std::collections::BTreeSet;
use std::time::{Duration, Instant};

use sonde::{Manifest, PluginState, Telemetry};
use sonde_tests::{Collector, example_entries, write_manifest};

static HTTP: sonde::EventKind = sonde::EventKind::new(
    "http.request",
    &["method", "route", "status", "duration_us", "user_agent"],
);

/// The user-agent plugin is "expensive" for this policy; the others are not
/// judged.
const POLICY: &str = "[[rule]]\nplugin = \"user-agent\"\nmax_busy_us_per_event = 0.0001\n\
                      min_events = 10\ndisable_for = \"1h\"\nreason = \"expensive: {busy_us_per_event} µs per event\"\n";

fn record(t: &Telemetry, n: usize) {
    for i in 0..n {
        t.record(
            HTTP.event()
                .str("method", "GET")
                .str("route", "/users/{id}")
                .int("status", 200)
                .int("duration_us", 100 + i as i64)
                .str("user_agent", "curl/8.5.0"),
        );
    }
}

fn wait_until(what: &str, mut done: impl FnMut() -> bool) {
    let deadline = Instant::now() + Duration::from_secs(15);
    while !done() {
        assert!(Instant::now() < deadline, "timed out waiting for {what}");
        std::thread::sleep(Duration::from_millis(50));
    }
}

#[test]
fn the_collector_stores_each_report_once_and_its_cost_policy_switches_off_an_expensive_plugin() {
    let dir = tempfile::tempdir().unwrap();
    let collector = Collector::start(dir.path(), POLICY);
    let telemetry = format!(
        "mode = \"on\"\nendpoint = \"{}\"\nstate_dir = \"state\"\ninterval = \"300ms\"\n\
         min_interval = \"100ms\"\nmax_interval = \"2s\"\nretry_initial = \"100ms\"\nmax_requests_per_hour = 3600",
        collector.url
    );
    let path = write_manifest(dir.path(), &telemetry, &example_entries());
    let t = Telemetry::builder(Manifest::load(&path).unwrap()).start().unwrap();
    let id = t.instance_id();
    record(&t, 40);

    // The first report shows user-agent running and over the threshold; the
    // collector's answer to it disables the plugin.
    wait_until("user-agent to be disabled", || {
        t.report().unwrap().plugins[1].state == PluginState::Disabled
    });
    let disabled = t.report().unwrap();
    let ua = &disabled.plugins[1];
    assert!(ua.reason.as_deref().unwrap_or_default().starts_with("expensive"), "{ua:?}");
    assert_eq!(ua.cost.events, 40);

    record(&t, 40);
    t.flush().unwrap();
    let later = t.report().unwrap();
    assert_eq!(later.plugins[1].cost.events, 40, "a disabled plugin gets no more events");
    assert_eq!(later.plugins[0].cost.events, 80, "the others keep counting");
    assert_eq!(later.plugins[0].state, PluginState::Running);

    // The collector sees the plugin disabled, and stores each report once.
    wait_until("a stored report showing the plugin disabled", || {
        collector.reports(id).iter().any(|r| r.plugins[1].state == PluginState::Disabled)
    });
    t.shutdown(Duration::from_secs(3));
    let stored = collector.reports(id);
    let ids: BTreeSet<_> = stored.iter().map(|r| r.report_id).collect();
    assert_eq!(ids.len(), stored.len(), "no report stored twice");
    let status = sonde::status(&Manifest::load(&path).unwrap());
    assert_eq!(status.upload.spooled, 0, "everything was delivered: {status:?}");
    let newest = &stored[0];
    assert_eq!(newest.plugins[0].cost.events, 80);
    assert!(newest.delivery.sent >= 1);
}
