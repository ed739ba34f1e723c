//! Hot reload: plugins come, go and change while the runtime keeps running.

use sonde::{Manifest, PluginState, Telemetry};
use sonde_tests::{Entry, plugin, write_manifest};

static HTTP: sonde::EventKind =
    sonde::EventKind::new("http.request", &["method", "status", "user_agent"]);

fn load(dir: &std::path::Path, entries: &[Entry]) -> Manifest {
    Manifest::load(&write_manifest(dir, "mode = \"local\"\nstate_dir = \"s\"", entries)).unwrap()
}

fn total(report: &sonde::Report, name: &str) -> f64 {
    sonde_tests::total(sonde_tests::plugin_report(report, name), None)
}

#[test]
fn reload_adds_keeps_replaces_and_removes_plugins_without_stopping() {
    let dir = tempfile::tempdir().unwrap();
    let status = Entry::new("http-status", plugin("http_status.wasm"));
    let agent = Entry::new("user-agent", plugin("user_agent.wasm"));
    let t = Telemetry::builder(load(dir.path(), std::slice::from_ref(&status))).start().unwrap();
    let record = || {
        t.record(HTTP.event().str("method", "GET").int("status", 200).str("user_agent", "curl/8"))
    };
    record();

    // Add a plugin: the unchanged one keeps its numbers.
    let changes = t.reload(&load(dir.path(), &[status.clone(), agent.clone()])).unwrap();
    assert_eq!(changes, vec!["added `user-agent`: running".to_string()]);
    record();
    let r = t.report().unwrap();
    assert_eq!((total(&r, "http-status"), total(&r, "user-agent")), (2.0, 1.0));

    // A changed plugin whose new file is refused keeps running the old one.
    let bad = Entry { sha256: Some("ab".repeat(32)), ..agent.clone() };
    let changes = t.reload(&load(dir.path(), &[status.clone(), bad])).unwrap();
    assert_eq!(changes.len(), 1);
    assert!(changes[0].starts_with("kept the running version of `user-agent`"), "{changes:?}");
    record();
    let r = t.report().unwrap();
    assert_eq!(total(&r, "user-agent"), 2.0);

    // Denied now: it stops receiving events.
    let denied = Entry { allow: false, ..agent.clone() };
    let changes = t.reload(&load(dir.path(), &[status.clone(), denied])).unwrap();
    assert_eq!(changes, vec!["replaced `user-agent`: now denied".to_string()]);
    record();
    let r = t.report().unwrap();
    assert_eq!(r.plugins[1].state, PluginState::Denied);
    assert_eq!(total(&r, "http-status"), 4.0);

    // Removed from the manifest: gone from reports.
    let changes = t.reload(&load(dir.path(), std::slice::from_ref(&status))).unwrap();
    assert_eq!(changes, vec!["removed `user-agent`".to_string()]);
    let r = t.report().unwrap();
    assert_eq!(r.plugins.len(), 1);
    assert_eq!(r.buffer.dropped, 0);
}
