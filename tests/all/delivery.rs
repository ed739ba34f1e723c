//! Delivery against scripted endpoints on loopback: schedule, gzip, spool,
//! rate limits, Retry-After, 410, directives, graceful shutdown.

use std::collections::BTreeSet;
use std::path::Path;
use std::time::Duration;

use sonde::{Manifest, Mode, PluginState, Telemetry};
use sonde_tests::{Entry, Reply, ScriptedEndpoint, example_entries, plugin, write_manifest};
use uuid::Uuid;

static HTTP: sonde::EventKind = sonde::EventKind::new("http.request", &["method", "status"]);

/// Starts an `on` runtime sending to `url`; `extra` lines override the
/// test defaults (short intervals and backoff).
pub(crate) fn on(dir: &Path, url: &str, extra: &str, entries: &[Entry]) -> Telemetry {
    let defaults = format!(
        "mode = \"on\"\nendpoint = \"{url}\"\nstate_dir = \"state\"\ninterval = \"300ms\"\n\
         min_interval = \"100ms\"\nmax_interval = \"2s\"\nretry_initial = \"100ms\""
    );
    let key = |l: &str| l.split('=').next().unwrap_or("").trim().to_string();
    let overridden: Vec<String> = extra.lines().map(key).collect();
    let mut lines: Vec<&str> = defaults.lines().filter(|l| !overridden.contains(&key(l))).collect();
    lines.extend(extra.lines());
    let telemetry = lines.join("\n");
    let path = write_manifest(dir, &telemetry, entries);
    Telemetry::builder(Manifest::load(&path).unwrap()).start().unwrap()
}

pub(crate) fn record(t: &Telemetry, n: usize) {
    for i in 0..n {
        t.record(HTTP.event().str("method", "GET").int("status", 200 + (i % 3) as i64));
    }
}

const WAIT: Duration = Duration::from_secs(10);

#[test]
fn reports_are_sent_gzipped_on_schedule_with_the_plugins_numbers() {
    let dir = tempfile::tempdir().unwrap();
    let endpoint = ScriptedEndpoint::start(vec![], None);
    let t = on(dir.path(), &endpoint.url, "", &example_entries());
    record(&t, 10);
    let got = endpoint.wait_for(2, WAIT);
    assert!(got.len() >= 2, "two reports within 10 s at a 300 ms interval");
    assert!(got.iter().all(|r| r.encoding.as_deref() == Some("gzip")));
    let first = &got[0].batch.reports[0];
    assert_eq!(first.instance_id, t.instance_id());
    let status = first.plugins.iter().find(|p| p.name == "http-status").unwrap();
    let total: f64 = status
        .metrics
        .iter()
        .map(|m| match m.value {
            sonde::MetricValue::Scalar { value } => value,
            sonde::MetricValue::Histogram { .. } | sonde::MetricValue::Other(_) => 0.0,
        })
        .sum();
    assert_eq!(total, 10.0);
    let ids: BTreeSet<Uuid> =
        got.iter().flat_map(|r| r.batch.reports.iter().map(|r| r.report_id)).collect();
    assert_eq!(
        ids.len(),
        got.iter().map(|r| r.batch.reports.len()).sum::<usize>(),
        "report ids are unique"
    );
    assert!(t.report().unwrap().delivery.sent >= 2);
}

#[test]
fn an_endpoint_that_fails_loses_no_report_and_gets_them_all_when_back() {
    let dir = tempfile::tempdir().unwrap();
    let failing = vec![Reply::status(500); 4];
    let endpoint = ScriptedEndpoint::start(failing, None);
    let t = on(dir.path(), &endpoint.url, "max_requests_per_hour = 3600", &example_entries()[..1]);
    record(&t, 5);
    let got = endpoint.wait_for(6, WAIT);
    assert!(got.len() >= 6, "{} requests", got.len());
    t.shutdown(Duration::from_secs(3));
    let got = endpoint.received();
    let delivered: BTreeSet<Uuid> =
        got[4..].iter().flat_map(|r| r.batch.reports.iter().map(|r| r.report_id)).collect();
    let failed: BTreeSet<Uuid> =
        got[..4].iter().flat_map(|r| r.batch.reports.iter().map(|r| r.report_id)).collect();
    assert!(failed.is_subset(&delivered), "every report of a failed request was delivered later");
    let status = sonde::status(&Manifest::load(&dir.path().join("sonde.toml")).unwrap());
    assert_eq!(status.upload.spooled, 0, "{status:?}");
    assert!(status.upload.failing_since.is_none(), "recovered: {status:?}");
    assert!(got[4].batch.reports.len() > 1, "the spool is flushed in batches");
}

#[test]
fn requests_never_exceed_max_requests_per_hour() {
    let dir = tempfile::tempdir().unwrap();
    let endpoint = ScriptedEndpoint::start(vec![], None);
    let t = on(dir.path(), &endpoint.url, "max_requests_per_hour = 3\ninterval = \"100ms\"", &[]);
    std::thread::sleep(Duration::from_millis(2500));
    assert_eq!(
        endpoint.received().len(),
        3,
        "reports are built every 100 ms, requests capped at 3"
    );
    let status = sonde::status(&Manifest::load(&dir.path().join("sonde.toml")).unwrap());
    assert!(status.upload.spooled >= 10, "the rest waits in the spool: {status:?}");
    drop(t);
}

#[test]
fn retry_after_is_honoured() {
    let dir = tempfile::tempdir().unwrap();
    let endpoint =
        ScriptedEndpoint::start(vec![Reply::status(429).header("Retry-After", "1")], None);
    let _t = on(dir.path(), &endpoint.url, "max_requests_per_hour = 3600", &[]);
    let got = endpoint.wait_for(2, WAIT);
    assert!(got.len() >= 2);
    let gap = got[1].at - got[0].at;
    assert!(
        gap >= Duration::from_millis(950),
        "second request after {gap:?}, Retry-After said 1 s"
    );
}

#[test]
fn gone_stops_telemetry_for_good_across_restarts() {
    let dir = tempfile::tempdir().unwrap();
    let endpoint = ScriptedEndpoint::start(vec![Reply::status(410)], None);
    let t = on(dir.path(), &endpoint.url, "", &example_entries());
    assert_eq!(endpoint.wait_for(1, WAIT).len(), 1);
    std::thread::sleep(Duration::from_millis(1000));
    assert_eq!(endpoint.received().len(), 1, "nothing after 410");
    record(&t, 3);
    let report = t.report().unwrap();
    assert!(report.plugins.iter().all(|p| p.state == PluginState::Disabled));
    drop(t);
    let manifest = Manifest::load(&dir.path().join("sonde.toml")).unwrap();
    let status = sonde::status(&manifest);
    assert!(status.stopped.as_deref().unwrap_or_default().contains("410"), "{status:?}");
    let again = Telemetry::builder(manifest).start().unwrap();
    assert_eq!(again.mode(), Mode::Off, "a restart stays stopped");
    std::thread::sleep(Duration::from_millis(700));
    assert_eq!(endpoint.received().len(), 1);
}

#[test]
fn a_rejected_report_is_dropped_and_counted_not_retried() {
    let dir = tempfile::tempdir().unwrap();
    let endpoint = ScriptedEndpoint::start(vec![Reply::status(400)], None);
    let t = on(dir.path(), &endpoint.url, "max_requests_per_hour = 3600", &[]);
    let got = endpoint.wait_for(2, WAIT);
    assert!(got.len() >= 2);
    let rejected = got[0].batch.reports[0].report_id;
    assert!(got[1..].iter().all(|r| r.batch.reports.iter().all(|r| r.report_id != rejected)));
    assert_eq!(t.report().unwrap().delivery.rejected, 1);
}

#[test]
fn a_disable_directive_stops_events_to_the_plugin_and_survives_a_restart() {
    let dir = tempfile::tempdir().unwrap();
    let directive = r#"{"directives":[
        {"action":"disable_plugin","plugin":"http-status","for_secs":3600,"reason":"expensive"},
        {"action":"enable_plugin","plugin":"denied-one"},
        {"action":"disable_plugin","plugin":"no-such-plugin","for_secs":60}]}"#;
    let endpoint = ScriptedEndpoint::start(vec![Reply::ok(directive)], None);
    let mut entries = vec![Entry::new("http-status", plugin("http_status.wasm"))];
    entries.push(Entry { allow: false, ..Entry::new("denied-one", plugin("user_agent.wasm")) });
    let t = on(
        dir.path(),
        &endpoint.url,
        "interval = \"1h\"\nmin_interval = \"1s\"\nmax_interval = \"2h\"",
        &entries,
    );
    record(&t, 4);
    let outcome = t.send_now().unwrap();
    assert_eq!(outcome.status, Some(200));
    assert_eq!(
        outcome.applied,
        vec!["disabled plugin `http-status` for 3600 s: expensive".to_string()]
    );
    let before = t.report().unwrap();
    let p = &before.plugins[0];
    assert_eq!((p.state, p.reason.as_deref()), (PluginState::Disabled, Some("expensive")));
    assert!(p.until.is_some());
    assert_eq!(p.cost.events, 4);
    record(&t, 6);
    let after = t.report().unwrap();
    assert_eq!(after.plugins[0].cost.events, 4, "a disabled plugin receives no events");
    assert_eq!(
        after.plugins[1].state,
        PluginState::Denied,
        "the endpoint cannot enable a denied plugin"
    );
    drop(t);
    let t = on(
        dir.path(),
        &endpoint.url,
        "interval = \"1h\"\nmin_interval = \"1s\"\nmax_interval = \"2h\"",
        &entries,
    );
    let again = t.report().unwrap();
    assert_eq!(again.plugins[0].state, PluginState::Disabled, "switches persist");
}

#[test]
fn shutdown_sends_a_last_report() {
    let dir = tempfile::tempdir().unwrap();
    let endpoint = ScriptedEndpoint::start(vec![], None);
    let t = on(
        dir.path(),
        &endpoint.url,
        "interval = \"1h\"\nmax_interval = \"2h\"",
        &example_entries()[..1],
    );
    record(&t, 7);
    t.shutdown(Duration::from_secs(5));
    let got = endpoint.received();
    assert_eq!(got.len(), 1);
    assert_eq!(got[0].batch.reports[0].buffer.processed, 7);
}

#[test]
fn a_413_halves_the_batch_and_loses_nothing() {
    let dir = tempfile::tempdir().unwrap();
    let mut script = vec![Reply::status(500); 3];
    script.push(Reply::status(413));
    let endpoint = ScriptedEndpoint::start(script, None);
    let t =
        on(dir.path(), &endpoint.url, "max_requests_per_hour = 3600\ninterval = \"100ms\"", &[]);
    let got = endpoint.wait_for(6, WAIT);
    assert!(got.len() >= 6);
    t.shutdown(Duration::from_secs(3));
    let got = endpoint.received();
    let refused = &got[3].batch.reports;
    assert!(refused.len() > 1, "the 413 was for a batch");
    assert!(got[4].batch.reports.len() <= refused.len() / 2, "the next batch is at most half");
    let delivered: BTreeSet<Uuid> =
        got[4..].iter().flat_map(|r| r.batch.reports.iter().map(|r| r.report_id)).collect();
    assert!(
        refused.iter().all(|r| delivered.contains(&r.report_id)),
        "nothing of the 413 was lost"
    );
}
