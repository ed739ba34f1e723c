//! Collectors written in Python, JavaScript and C (`plugins/http-status-py`,
//! `-js`, `-c`, built by `cargo xtask plugins` with the SDKs under `sdk/`)
//! against the Rust `http-status`: same world, no WASI, the same series.

use std::collections::BTreeMap;

use sonde::{Manifest, MetricValue, PluginReport, PluginState, Report, Telemetry};
use sonde_tests::{Entry, plugin, plugin_report, share_compile_cache, write_manifest};

/// The ports, by manifest name: (name, file, version).
const PORTS: [(&str, &str, &str); 3] = [
    ("http-status-py", "http_status_py.wasm", "0.1.0-python"),
    ("http-status-js", "http_status_js.wasm", "0.1.0-js"),
    ("http-status-c", "http_status_c.wasm", "0.1.0-c"),
];

fn entries() -> Vec<Entry> {
    let mut entries = vec![Entry::new("http-status", plugin("http_status.wasm"))];
    entries.extend(PORTS.iter().map(|(name, file, _)| Entry::new(name, plugin(file))));
    entries
}

/// The example events through all four plugins, flushed every `chunk`
/// events, in a host whose compile cache holds the ports already.
fn report(chunk: usize) -> Report {
    let dir = tempfile::tempdir().unwrap();
    let entries = entries();
    share_compile_cache(&dir.path().join("s"), &entries[1..]);
    let path = write_manifest(dir.path(), "mode = \"local\"\nstate_dir = \"s\"", &entries);
    let t = Telemetry::builder(Manifest::load(&path).unwrap()).start().unwrap();
    // From the shared cache: loading is deserializing, but a busy machine
    // may take seconds, and events recorded meanwhile wait for it.
    assert!(t.wait_until_loaded(std::time::Duration::from_secs(600)).unwrap());
    sonde_tests::report_for_example_events(&t, chunk)
}

/// Every series of a plugin: `metric{labels}` -> value.
fn series(p: &PluginReport) -> BTreeMap<String, MetricValue> {
    p.metrics
        .iter()
        .map(|m| {
            let labels: Vec<String> = m.labels.iter().map(|(k, v)| format!("{k}={v}")).collect();
            (format!("{}{{{}}}", m.name, labels.join(",")), m.value.clone())
        })
        .collect()
}

#[test]
fn python_javascript_and_c_collectors_report_the_rust_plugins_series_exactly() {
    for chunk in [40, 7] {
        let r = report(chunk);
        let rust = plugin_report(&r, "http-status");
        assert_eq!(rust.state, PluginState::Running);
        let want = series(rust);
        assert_eq!(want.len(), 15, "the example events make 15 series");
        for (name, _, version) in PORTS {
            let p = plugin_report(&r, name);
            assert_eq!(p.state, PluginState::Running, "{name}: {:?}", p.reason);
            assert_eq!(p.version, version, "{name}: its own version");
            assert_eq!(p.cost.events, 40, "{name}");
            assert_eq!(
                p.cost.failures + p.cost.invalid_points + p.cost.overflow_points,
                0,
                "{name}: {:?}",
                p.cost
            );
            assert_eq!(series(p), want, "{name}, chunk {chunk}");
        }
    }
}

#[test]
fn a_port_is_cumulative_across_collections_like_the_rust_plugin() {
    // Deltas: each collect returns what changed since the previous one, and
    // the host adds them up (Python keeps the state at module level).
    let dir = tempfile::tempdir().unwrap();
    let entries = entries();
    share_compile_cache(&dir.path().join("s"), &entries[1..]);
    let path = write_manifest(dir.path(), "mode = \"local\"\nstate_dir = \"s\"", &entries);
    let t = Telemetry::builder(Manifest::load(&path).unwrap()).start().unwrap();
    // From the shared cache: loading is deserializing, but a busy machine
    // may take seconds, and events recorded meanwhile wait for it.
    assert!(t.wait_until_loaded(std::time::Duration::from_secs(600)).unwrap());
    static HTTP: sonde::EventKind = sonde::EventKind::new("http.request", &["method", "status"]);
    let get = |r: &Report, name: &str| {
        series(plugin_report(r, name))
            .get("http.requests{method=GET,status_class=2xx}")
            .cloned()
            .unwrap_or_else(|| panic!("{name}: no GET 2xx series"))
    };
    for round in 1..=3u32 {
        for _ in 0..round {
            t.record(HTTP.event().str("method", "GET").int("status", 200));
        }
        t.flush().unwrap();
        let r = t.report().unwrap();
        let total = f64::from(round * (round + 1) / 2);
        for name in ["http-status", "http-status-py", "http-status-js", "http-status-c"] {
            assert_eq!(
                get(&r, name),
                MetricValue::Scalar { value: total },
                "{name}, round {round}"
            );
        }
    }
}
