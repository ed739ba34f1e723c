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

#[test]
fn a_reload_compiles_beside_the_running_plugins_which_keep_counting() {
    let dir = tempfile::tempdir().unwrap();
    let status = Entry::new("http-status", plugin("http_status.wasm"));
    let t = Telemetry::builder(load(dir.path(), std::slice::from_ref(&status))).start().unwrap();
    // A plugin that takes Cranelift tens of seconds, under a 6 s budget.
    let bomb = dir.path().join("bomb.wasm");
    std::fs::write(&bomb, sonde_tests::compile_bomb(4, 2_000, 250)).unwrap();
    let slow = Entry::new("slow", bomb).limit("compile_timeout_secs = 6");
    let manifest = load(dir.path(), &[status.clone(), slow]);
    let reloading = {
        let t = t.clone();
        std::thread::spawn(move || t.reload(&manifest).unwrap())
    };
    // While it compiles, events reach the running plugin and reports come.
    let mut sent = 0.0;
    while !reloading.is_finished() {
        for _ in 0..100 {
            t.record(HTTP.event().str("method", "GET").int("status", 200).str("user_agent", "x"));
        }
        sent += 100.0;
        let r = t.report().unwrap();
        assert_eq!(total(&r, "http-status"), sent, "counted while the other compiles");
        assert!(r.plugins.iter().all(|p| p.name != "slow"), "not swapped in before it loads");
        std::thread::sleep(std::time::Duration::from_millis(200));
    }
    assert!(sent >= 1_000.0, "the reload took its budget, and reports came meanwhile: {sent}");
    let changes = reloading.join().unwrap();
    assert_eq!(changes.len(), 1, "{changes:?}");
    assert!(changes[0].starts_with("added `slow`: refused"), "{changes:?}");
    let r = t.report().unwrap();
    assert_eq!(sonde_tests::plugin_report(&r, "slow").state, PluginState::Refused);
    assert_eq!(total(&r, "http-status"), sent);
}
