//! Which plugins load, which are refused, and that a refusal hurts no one.

use sonde::{Manifest, PluginState, Telemetry};
use sonde_tests::{Entry, example_entries, write_manifest, write_wat};

fn start(dir: &std::path::Path, entries: &[Entry]) -> Telemetry {
    let path = write_manifest(dir, "mode = \"local\"\nstate_dir = \"state\"", entries);
    Telemetry::builder(Manifest::load(&path).unwrap()).start().unwrap()
}

fn state_of(t: &Telemetry, name: &str) -> (PluginState, String) {
    let p = t.plugins().unwrap().into_iter().find(|p| p.name == name).unwrap();
    (p.state, p.reason.unwrap_or_default())
}

static HTTP: sonde::EventKind = sonde::EventKind::new("http.request", &["method", "status"]);

/// The good plugins still count both events after the bad ones were refused.
fn assert_http_status_counts_two(t: &Telemetry) {
    t.record(HTTP.event().str("method", "GET").int("status", 200));
    t.record(HTTP.event().str("method", "GET").int("status", 201));
    let report = t.report().unwrap();
    let p = report.plugins.iter().find(|p| p.name == "http-status").unwrap();
    assert_eq!(p.state, PluginState::Running);
    assert_eq!(p.metrics.len(), 1, "{:?}", p.metrics);
    assert_eq!(p.metrics[0].value, sonde::MetricValue::Scalar { value: 2.0 });
}

#[test]
fn a_denied_plugin_is_never_read_and_the_others_run() {
    let dir = tempfile::tempdir().unwrap();
    let mut entries = example_entries();
    entries.push(Entry { allow: false, ..Entry::new("nope", dir.path().join("missing.wasm")) });
    let t = start(dir.path(), &entries);
    let (state, reason) = state_of(&t, "nope");
    assert_eq!(state, PluginState::Denied);
    assert!(reason.contains("denied by the operator"), "{reason}");
    assert_http_status_counts_two(&t);
}

#[test]
fn a_hash_mismatch_is_refused_with_file_line_and_key() {
    let dir = tempfile::tempdir().unwrap();
    let mut entries = example_entries();
    entries[1].sha256 = Some("ab".repeat(32));
    let t = start(dir.path(), &entries);
    let text = std::fs::read_to_string(dir.path().join("sonde.toml")).unwrap();
    let line = text.lines().position(|l| l.contains(&"ab".repeat(32))).unwrap() + 1;
    let (state, reason) = state_of(&t, "user-agent");
    assert_eq!(state, PluginState::Refused);
    assert!(reason.contains(&format!("sonde.toml:{line}: key `plugin[1].sha256`")), "{reason}");
    assert!(reason.contains(&"ab".repeat(32)), "{reason}");
    assert_http_status_counts_two(&t);
}

#[test]
fn a_missing_file_is_refused_naming_the_path_key() {
    let dir = tempfile::tempdir().unwrap();
    let mut entries = example_entries();
    entries.push(Entry::new("ghost", dir.path().join("ghost.wasm")));
    let t = start(dir.path(), &entries);
    let (state, reason) = state_of(&t, "ghost");
    assert_eq!(state, PluginState::Refused);
    assert!(reason.contains("key `plugin[3].path`") && reason.contains("ghost.wasm"), "{reason}");
    assert_http_status_counts_two(&t);
}

#[test]
fn forbidden_imports_are_refused_by_name() {
    let dir = tempfile::tempdir().unwrap();
    let fs = write_wat(
        dir.path(),
        "fs.wasm",
        r#"(component (import "wasi:filesystem/types@0.2.0" (instance (export "stat" (func)))))"#,
    );
    let net = write_wat(
        dir.path(),
        "net.wasm",
        r#"(component (import "wasi:sockets/tcp@0.2.0" (instance)))"#,
    );
    let mut entries = example_entries();
    entries.push(Entry::new("fs", fs));
    entries.push(Entry::new("net", net));
    let t = start(dir.path(), &entries);
    let (state, reason) = state_of(&t, "fs");
    assert_eq!(state, PluginState::Refused);
    assert!(reason.contains("imports `wasi:filesystem/types@0.2.0`"), "{reason}");
    let (state, reason) = state_of(&t, "net");
    assert_eq!(state, PluginState::Refused);
    assert!(reason.contains("imports `wasi:sockets/tcp@0.2.0`"), "{reason}");
    assert_http_status_counts_two(&t);
}

#[test]
fn core_modules_garbage_and_other_worlds_are_refused() {
    let dir = tempfile::tempdir().unwrap();
    let core = write_wat(dir.path(), "core.wasm", "(module)");
    let garbage = dir.path().join("garbage.wasm");
    std::fs::write(&garbage, b"\0asm\x0d\0\x01\0this is not a component").unwrap();
    let text = dir.path().join("text.wasm");
    std::fs::write(&text, b"#!/bin/sh\necho hi\n").unwrap();
    let other = write_wat(dir.path(), "other.wasm", "(component)");
    let mut entries = example_entries();
    for (name, path) in [("core", core), ("garbage", garbage), ("text", text), ("other", other)] {
        entries.push(Entry::new(name, path));
    }
    let t = start(dir.path(), &entries);
    let cases = [
        ("core", "core WebAssembly module, not a component"),
        ("garbage", "not a valid component"),
        ("text", "not a WebAssembly component"),
        ("other", "does not export `sonde:collector/collector@0.2.0`"),
    ];
    for (name, expected) in cases {
        let (state, reason) = state_of(&t, name);
        assert_eq!(state, PluginState::Refused, "{name}");
        assert!(reason.contains(expected), "{name}: {reason}");
    }
    assert_http_status_counts_two(&t);
}

#[test]
fn a_restart_loads_plugins_from_the_compile_cache_and_a_forged_cache_file_is_ignored() {
    let dir = tempfile::tempdir().unwrap();
    let entries = example_entries();
    let first = start(dir.path(), &entries);
    assert!(
        first.plugins().unwrap().iter().all(|p| !p.from_cache && p.state == PluginState::Running)
    );
    drop(first);
    let second = start(dir.path(), &entries);
    assert!(second.plugins().unwrap().iter().all(|p| p.from_cache), "second start uses the cache");
    drop(second);
    // Overwrite every cache file with bytes this host did not write.
    let cache = dir.path().join("state/cache");
    for f in std::fs::read_dir(&cache).unwrap() {
        let f = f.unwrap().path();
        let mut bytes = std::fs::read(&f).unwrap();
        let last = bytes.len() - 1;
        bytes[last] ^= 0xff;
        std::fs::write(&f, bytes).unwrap();
    }
    let third = start(dir.path(), &entries);
    let plugins = third.plugins().unwrap();
    assert!(
        plugins.iter().all(|p| p.state == PluginState::Running && !p.from_cache),
        "{plugins:?}"
    );
    assert_http_status_counts_two(&third);
}
