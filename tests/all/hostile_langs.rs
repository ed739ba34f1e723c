//! The hostile suite for collectors in Python, JavaScript and C
//! (`tests/fixtures/hostile-py`, `-js`, `-c`): an endless loop, a memory
//! bomb and a forbidden import per language, each beside the Rust
//! `http-status`, contained like the Rust fixtures: the host keeps running,
//! the neighbour's numbers stay exact, the report names why.

use sonde::{Manifest, PluginState, Report, Telemetry};
use sonde_tests::{
    Entry, fixture, plugin, plugin_report as find, share_compile_cache, total, write_manifest,
};

static HTTP: sonde::EventKind = sonde::EventKind::new("http.request", &["method", "status"]);

/// The three hostile fixtures, by language: (language, file).
const FIXTURES: [(&str, &str); 3] =
    [("py", "hostile_py.wasm"), ("js", "hostile_js.wasm"), ("c", "hostile_c.wasm")];

fn neighbour_is_exact(r: &Report, events: u64) {
    let good = find(r, "http-status");
    assert_eq!(good.state, PluginState::Running);
    assert_eq!(total(good, Some("http.requests")), events as f64, "the neighbour's numbers");
    assert_eq!(good.cost.failures, 0);
}

#[test]
fn loops_and_memory_bombs_in_every_language_are_contained() {
    let dir = tempfile::tempdir().unwrap();
    let mut entries = vec![Entry::new("http-status", plugin("http_status.wasm"))];
    for (lang, file) in FIXTURES {
        let entry =
            |mode: &str| Entry::new(&format!("{mode}-{lang}"), fixture(file)).config("mode", mode);
        entries.push(entry("well"));
        entries.push(entry("loop").limit("call_timeout_ms = 100").limit("max_failures = 2"));
        // A long deadline: the memory cap, not the clock, must stop it,
        // even on a busy machine.
        entries.push(
            entry("grow")
                .limit("memory_mb = 48")
                .limit("call_timeout_ms = 5000")
                .limit("max_failures = 2"),
        );
    }
    share_compile_cache(&dir.path().join("s"), &entries[1..]);
    let path = write_manifest(dir.path(), "mode = \"local\"\nstate_dir = \"s\"", &entries);
    let t = Telemetry::builder(Manifest::load(&path).unwrap()).start().unwrap();
    // From the shared cache: loading is deserializing, but a busy machine
    // may take seconds, and events recorded meanwhile wait for it.
    assert!(t.wait_until_loaded(std::time::Duration::from_secs(600)).unwrap());
    let mut sent = 0;
    for _ in 0..4 {
        for i in 0..100 {
            t.record(HTTP.event().str("method", "GET").int("status", 200 + (i % 2)));
        }
        sent += 100;
        t.flush().unwrap();
    }
    let r = t.report().unwrap();
    neighbour_is_exact(&r, sent);
    for (lang, _) in FIXTURES {
        let well = find(&r, &format!("well-{lang}"));
        assert_eq!(well.state, PluginState::Running, "{lang}: {:?}", well.reason);
        assert_eq!(
            total(well, Some("hostile.events")),
            sent as f64,
            "{lang}: counts while neighbours fail"
        );

        let looping = find(&r, &format!("loop-{lang}"));
        assert!(looping.cost.failure_kinds.cpu >= 1, "{lang}: {:?}", looping.cost);
        let last = looping.last_failure.as_deref().unwrap_or_default();
        assert!(last.contains("ran past its deadline of 100 ms"), "{lang}: {last}");

        let grow = find(&r, &format!("grow-{lang}"));
        assert!(
            grow.cost.failure_kinds.memory >= 1,
            "{lang}: {:?} {:?}",
            grow.cost,
            grow.last_failure
        );
        let last = grow.last_failure.as_deref().unwrap_or_default();
        assert!(last.contains("ran out of memory (memory limit"), "{lang}: {last}");
        assert!(
            grow.cost.peak_memory_bytes <= 48 << 20,
            "{lang}: the cap held: {}",
            grow.cost.peak_memory_bytes
        );
        for p in [looping, grow] {
            assert_eq!(p.state, PluginState::Failed, "{lang}: after max_failures: {p:?}");
        }
    }
    // The host still takes events and the neighbours still count them.
    t.record(HTTP.event().str("method", "GET").int("status", 200));
    t.flush().unwrap();
    let r = t.report().unwrap();
    neighbour_is_exact(&r, sent + 1);
    for (lang, _) in FIXTURES {
        assert_eq!(total(find(&r, &format!("well-{lang}")), None), (sent + 1) as f64, "{lang}");
    }
}

#[test]
fn collectors_importing_what_sonde_never_grants_are_refused_by_name_before_compiling() {
    // Python and JavaScript built with their toolchain's WASI, C against a
    // world that adds `wasi:cli/environment`: 18 and 12 MB components,
    // refused from their bytes, with no compile (the host's compile
    // timeout here is one second, far below what they would need).
    let dir = tempfile::tempdir().unwrap();
    let mut entries = vec![Entry::new("http-status", plugin("http_status.wasm"))];
    for (name, file) in [
        ("py", "hostile_py_wasi.wasm"),
        ("js", "hostile_js_wasi.wasm"),
        ("c", "hostile_c_env.wasm"),
    ] {
        entries.push(Entry::new(name, fixture(file)).limit("compile_timeout_secs = 1"));
    }
    let path = write_manifest(dir.path(), "mode = \"local\"\nstate_dir = \"s\"", &entries);
    let t = Telemetry::builder(Manifest::load(&path).unwrap()).start().unwrap();
    t.record(HTTP.event().str("method", "GET").int("status", 200));
    t.flush().unwrap();
    let r = t.report().unwrap();
    neighbour_is_exact(&r, 1);
    for (name, import) in
        [("py", "`wasi:"), ("js", "`wasi:"), ("c", "`wasi:cli/environment@0.2.0`")]
    {
        let p = find(&r, name);
        assert_eq!(p.state, PluginState::Refused, "{name}: {p:?}");
        let reason = p.reason.as_deref().unwrap_or_default();
        assert!(reason.starts_with("imports "), "{name}: {reason}");
        assert!(
            reason.contains(import) && reason.contains("which sonde never grants"),
            "{name}: {reason}"
        );
        assert!(
            !reason.contains("compile_timeout_secs"),
            "{name}: refused before compiling: {reason}"
        );
    }
}
