//! Helpers shared by sonde's integration tests: where the built plugins are,
//! and manifests written into temporary folders with real hashes.

#![allow(clippy::unwrap_used, reason = "test helpers: a failure is a test failure")]

use std::fmt::Write as _;
use std::path::{Path, PathBuf};

use sha2::{Digest, Sha256};

mod collector;
mod endpoint;
mod faulty;
mod langs;
mod logs;
pub use collector::Collector;
pub use endpoint::{Received, Reply, ScriptedEndpoint};
pub use faulty::{Attempt, Fault, FaultyEndpoint, free_port};
pub use langs::{LANG_COMPILE_TIMEOUT, share_compile_cache};
pub use logs::{capture_logs, log_lines, warnings};

/// Accepts connections on `listener` forever (on its own thread), serving
/// each on a thread of its own with `serve(stream, shared, started)`.
pub(crate) fn accept_forever<S: Send + Sync + 'static>(
    listener: std::net::TcpListener,
    shared: std::sync::Arc<S>,
    serve: fn(std::net::TcpStream, &S, std::time::Instant),
) {
    let start = std::time::Instant::now();
    std::thread::spawn(move || {
        for stream in listener.incoming().flatten() {
            let s = shared.clone();
            std::thread::spawn(move || serve(stream, &s, start));
        }
    });
}

/// The `[telemetry]` body of the SIGKILL tests: sending to `endpoint` (a
/// proxy in front of a collector), a report every 100 ms, quick retries and
/// a long request timeout, so a kill can land while a send is in flight.
pub fn crash_telemetry(endpoint: &str) -> String {
    format!(
        "mode = \"on\"\nendpoint = \"{endpoint}\"\nstate_dir = \"state\"\ninterval = \"100ms\"\n\
         min_interval = \"100ms\"\nmax_interval = \"300ms\"\nretry_initial = \"100ms\"\n\
         max_requests_per_hour = 3600\nrequest_timeout = \"60s\""
    )
}

/// The folder `cargo xtask plugins` builds into.
pub fn plugins_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../target/plugins")
}

/// The built plugin `file` (e.g. `http_status.wasm`); panics with the fix if
/// the plugins were not built.
pub fn plugin(file: &str) -> PathBuf {
    let path = plugins_dir().join(file);
    assert!(path.exists(), "{} is missing: run `cargo xtask plugins` first", path.display());
    path
}

/// A hostile fixture built by `cargo xtask fixtures` (e.g. `hostile.wasm`).
pub fn fixture(file: &str) -> PathBuf {
    let path = Path::new(env!("CARGO_MANIFEST_DIR")).join("../target/fixtures").join(file);
    assert!(path.exists(), "{} is missing: run `cargo xtask fixtures` first", path.display());
    path
}

/// A manifest entry running the hostile fixture in `mode`.
pub fn hostile(name: &str, mode: &str) -> Entry {
    Entry::new(name, fixture("hostile.wasm")).config("mode", mode)
}

/// The part of `report` about plugin `name`; panics if there is none.
pub fn plugin_report<'a>(
    report: &'a sonde_core::Report,
    name: &str,
) -> &'a sonde_core::PluginReport {
    report.plugins.iter().find(|p| p.name == name).unwrap()
}

/// The sum over a plugin's series of `metric` (all metrics when `None`):
/// counter and gauge values, histogram counts.
pub fn total(p: &sonde_core::PluginReport, metric: Option<&str>) -> f64 {
    p.metrics
        .iter()
        .filter(|m| metric.is_none_or(|name| m.name == name))
        .map(|m| match m.value {
            sonde_core::MetricValue::Scalar { value } => value,
            sonde_core::MetricValue::Histogram { count, .. } => count as f64,
            // Only a reader makes these (a newer host's value): not a host's.
            sonde_core::MetricValue::Other(_) => f64::NAN,
        })
        .sum()
}

/// The repository's `examples/` folder.
pub fn examples_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../examples")
}

/// Records `examples/events.jsonl` into `t`, flushing after every `chunk`
/// events (so batch boundaries move), and returns the report.
pub fn report_for_example_events(t: &sonde::Telemetry, chunk: usize) -> sonde_core::Report {
    let records = sonde_core::read_events_file(&examples_dir().join("events.jsonl")).unwrap();
    let events = sonde::events_from_records(&records).unwrap();
    for c in events.chunks(chunk) {
        for e in c {
            t.record(e);
        }
        t.flush().unwrap();
    }
    t.report().unwrap()
}

/// Lower-case hex SHA-256 of a file.
pub fn sha256_file(path: &Path) -> String {
    hex::encode(Sha256::digest(std::fs::read(path).unwrap()))
}

/// One `[[plugin]]` entry of a test manifest.
#[derive(Debug, Clone)]
pub struct Entry {
    /// Name.
    pub name: String,
    /// File.
    pub path: PathBuf,
    /// Pinned hash; `None` pins the file's real hash.
    pub sha256: Option<String>,
    /// Allowed.
    pub allow: bool,
    /// Granted event kinds.
    pub events: Vec<String>,
    /// Config values.
    pub config: Vec<(String, String)>,
    /// `[plugin.limits]` lines, e.g. `max_failures = 2`.
    pub limits: Vec<String>,
    /// `deny_metrics`.
    pub deny: Vec<String>,
}

impl Entry {
    /// An allowed entry for `path`, granted `http.request`, pinned to its hash.
    pub fn new(name: &str, path: PathBuf) -> Entry {
        Entry {
            name: name.into(),
            path,
            sha256: None,
            allow: true,
            events: vec!["http.request".into()],
            config: vec![],
            limits: vec![],
            deny: vec![],
        }
    }

    /// Denying `metric` (`deny_metrics`).
    pub fn deny(mut self, metric: &str) -> Entry {
        self.deny.push(metric.into());
        self
    }

    /// With a `[plugin.limits]` line.
    pub fn limit(mut self, line: &str) -> Entry {
        self.limits.push(line.into());
        self
    }

    /// With a config value.
    pub fn config(mut self, key: &str, value: &str) -> Entry {
        self.config.push((key.into(), value.into()));
        self
    }
}

/// The three example collectors with the example configuration.
pub fn example_entries() -> Vec<Entry> {
    vec![
        Entry::new("http-status", plugin("http_status.wasm")),
        Entry::new("user-agent", plugin("user_agent.wasm")).config("top_n", "5"),
        Entry::new("route-latency", plugin("route_latency.wasm"))
            .config("routes", "/users/{id},/orders,/health"),
    ]
}

/// Writes `sonde.toml` into `dir` with `telemetry` as the body of the
/// `[telemetry]` table and `entries`; returns its path.
pub fn write_manifest(dir: &Path, telemetry: &str, entries: &[Entry]) -> PathBuf {
    let mut text = format!("[telemetry]\n{telemetry}\n");
    for e in entries {
        let sha = e
            .sha256
            .clone()
            .unwrap_or_else(|| if e.path.exists() { sha256_file(&e.path) } else { "0".repeat(64) });
        let _ = write!(
            text,
            "\n[[plugin]]\nname = {:?}\npath = {:?}\nsha256 = {:?}\nallow = {}\nevents = {:?}\n",
            e.name,
            e.path.display().to_string(),
            sha,
            e.allow,
            e.events
        );
        if !e.deny.is_empty() {
            let _ = writeln!(text, "deny_metrics = {:?}", e.deny);
        }
        if !e.config.is_empty() {
            text.push_str("[plugin.config]\n");
            for (k, v) in &e.config {
                let _ = writeln!(text, "{k} = {v:?}");
            }
        }
        if !e.limits.is_empty() {
            text.push_str("[plugin.limits]\n");
            for l in &e.limits {
                let _ = writeln!(text, "{l}");
            }
        }
    }
    let path = dir.join("sonde.toml");
    std::fs::write(&path, text).unwrap();
    path
}

/// Writes the component (or module) in WAT `text` to `dir/name`.
pub fn write_wat(dir: &Path, name: &str, text: &str) -> PathBuf {
    let path = dir.join(name);
    std::fs::write(&path, wat::parse_str(text).unwrap()).unwrap();
    path
}

/// A component whose one core module has `functions` functions, each with
/// `locals` locals read inside loops nested `depth` deep: valid WebAssembly
/// that is slow and memory-hungry for Cranelift (time grows with locals² ×
/// depth, see `crates/sonde/src/plugin/shape.rs`). It exports nothing: a
/// host must refuse it, and the test is *why* and *when*.
pub fn compile_bomb(functions: usize, locals: u32, depth: usize) -> Vec<u8> {
    let mut body = "(loop ".repeat(depth);
    body.push_str("(local.set 0 (i32.const 1))");
    for l in 0..locals {
        let _ = write!(body, "(local.set 0 (i32.add (local.get 0) (local.get {l})))");
    }
    body.push_str("(br_if 0 (local.get 0))");
    body.push_str(&")".repeat(depth));
    let func = format!("(func (local {}) {body})", "i32 ".repeat(locals as usize));
    let wat = format!("(component (core module {}))", func.repeat(functions));
    wat::parse_str(wat).unwrap()
}
