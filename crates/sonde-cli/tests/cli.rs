//! The `sonde` binary as an operator uses it.

#![allow(clippy::unwrap_used, reason = "tests")]

use std::path::Path;
use std::process::{Command, Output};

use sonde_core::{PluginState, Report};
use sonde_tests::{Entry, example_entries, examples_dir, write_manifest};

/// The operator's controls: deny, ident, the record of what left, pin.
#[path = "operator/mod.rs"]
mod operator;

fn sonde(args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_sonde"))
        .args(args)
        .env_remove("SONDE_TELEMETRY")
        .env_remove("DO_NOT_TRACK")
        .output()
        .unwrap()
}

fn text(bytes: &[u8]) -> String {
    String::from_utf8_lossy(bytes).into_owned()
}

fn manifest(dir: &Path, entries: &[Entry]) -> String {
    write_manifest(dir, "mode = \"local\"\nstate_dir = \"state\"", entries).display().to_string()
}

#[test]
fn preview_json_prints_exactly_the_report_bytes() {
    let dir = tempfile::tempdir().unwrap();
    let m = manifest(dir.path(), &example_entries());
    let events = examples_dir().join("events.jsonl");
    let out =
        sonde(&["preview", "-m", &m, "--events", events.to_str().unwrap(), "--format", "json"]);
    assert!(out.status.success(), "{}", text(&out.stderr));
    let report: Report = serde_json::from_slice(&out.stdout).unwrap();
    // Re-serializing the decoded report gives the same bytes: nothing was
    // added around the report, and the report is its own canonical form.
    assert_eq!(report.to_json(), out.stdout);
    let lines =
        std::fs::read_to_string(&events).unwrap().lines().filter(|l| !l.trim().is_empty()).count();
    assert_eq!(report.buffer.recorded, lines as u64);
    assert_eq!(report.buffer.dropped, 0);
    assert_eq!(report.plugins.len(), 3);
    assert!(
        report.plugins.iter().all(|p| p.state == PluginState::Running && !p.metrics.is_empty())
    );
    let id = std::fs::read_to_string(dir.path().join("state/instance_id")).unwrap();
    assert_eq!(
        report.instance_id.to_string(),
        id.trim(),
        "the instance id is the one kept in the state dir"
    );
}

#[test]
fn preview_otlp_prints_the_protobuf_an_otlp_endpoint_receives() {
    use opentelemetry_proto::tonic::collector::metrics::v1::ExportMetricsServiceRequest;
    use prost::Message;
    let dir = tempfile::tempdir().unwrap();
    let m = manifest(dir.path(), &example_entries());
    let events = examples_dir().join("events.jsonl");
    let out = sonde(&["preview", "-m", &m, "--events", events.to_str().unwrap(), "--otlp"]);
    assert!(out.status.success(), "{}", text(&out.stderr));
    let request = ExportMetricsServiceRequest::decode(out.stdout.as_slice()).unwrap();
    let [resource] = request.resource_metrics.as_slice() else {
        panic!("one report, one resource")
    };
    let scopes: Vec<&str> = resource
        .scope_metrics
        .iter()
        .filter_map(|s| s.scope.as_ref().map(|s| s.name.as_str()))
        .collect();
    assert_eq!(scopes, ["sonde", "http-status", "user-agent", "route-latency"]);
    assert!(resource.scope_metrics[1..].iter().all(|s| !s.metrics.is_empty()));
}

#[test]
fn preview_text_shows_each_plugin_and_its_series() {
    let dir = tempfile::tempdir().unwrap();
    let m = manifest(dir.path(), &example_entries());
    let events = examples_dir().join("events.jsonl");
    let out = sonde(&["preview", "-m", &m, "--events", events.to_str().unwrap()]);
    assert!(out.status.success(), "{}", text(&out.stderr));
    let stdout = text(&out.stdout);
    for needle in [
        "http-status 0.1.0 [running]",
        "http.requests{method=\"GET\"",
        "http.route.duration_us{route=\"other\"}",
    ] {
        assert!(stdout.contains(needle), "{needle} missing from:\n{stdout}");
    }
}

#[test]
fn preview_of_an_off_manifest_says_so_and_writes_nothing() {
    let dir = tempfile::tempdir().unwrap();
    let m = write_manifest(dir.path(), "mode = \"off\"\nstate_dir = \"state\"", &example_entries());
    let events = examples_dir().join("events.jsonl");
    let out = sonde(&["preview", "-m", m.to_str().unwrap(), "--events", events.to_str().unwrap()]);
    assert!(out.status.success());
    assert!(text(&out.stderr).contains("telemetry is off"), "{}", text(&out.stderr));
    assert!(!dir.path().join("state").exists());
}

#[test]
fn check_exits_1_naming_a_refused_plugin_and_0_when_all_is_well() {
    let dir = tempfile::tempdir().unwrap();
    let good = manifest(dir.path(), &example_entries());
    let out = sonde(&["check", "-m", &good]);
    assert_eq!(out.status.code(), Some(0), "{}{}", text(&out.stdout), text(&out.stderr));
    let mut entries = example_entries();
    entries[2].sha256 = Some("0".repeat(64));
    let bad = manifest(dir.path(), &entries);
    let out = sonde(&["check", "-m", &bad, "--format", "json"]);
    assert_eq!(out.status.code(), Some(1));
    let v: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(v["ok"], false);
    assert_eq!(v["plugins"][2]["state"], "refused");
    assert!(v["plugins"][2]["reason"].as_str().unwrap().contains("key `plugin[2].sha256`"));
}

#[test]
fn an_invalid_manifest_exits_2_with_file_line_and_key() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("sonde.toml");
    std::fs::write(&path, "[telemetry]\nmode = \"local\"\nbufer_capacity = 10\n").unwrap();
    let out = sonde(&["list", "-m", path.to_str().unwrap()]);
    assert_eq!(out.status.code(), Some(2));
    let err = text(&out.stderr);
    assert!(
        err.contains(&format!("{}:3: key `telemetry.bufer_capacity`", path.display())),
        "{err}"
    );
    assert!(err.contains("unknown field"), "{err}");
}

#[test]
fn pin_writes_the_real_hashes_and_keeps_comments() {
    let dir = tempfile::tempdir().unwrap();
    let mut entries = example_entries();
    for e in &mut entries {
        e.sha256 = Some("0".repeat(64));
    }
    let m = manifest(dir.path(), &entries);
    let mut text_before = std::fs::read_to_string(&m).unwrap();
    text_before.insert_str(0, "# operator's note\n");
    std::fs::write(&m, &text_before).unwrap();
    assert_eq!(sonde(&["check", "-m", &m]).status.code(), Some(1));
    let out = sonde(&["pin", "-m", &m]);
    assert!(out.status.success(), "{}", text(&out.stderr));
    assert!(text(&out.stdout).contains("3 pin(s) written"));
    let after = std::fs::read_to_string(&m).unwrap();
    assert!(after.starts_with("# operator's note\n"));
    assert_eq!(sonde(&["check", "-m", &m]).status.code(), Some(0));
}

#[test]
fn list_json_shows_declared_metrics_and_denials() {
    let dir = tempfile::tempdir().unwrap();
    let mut entries = example_entries();
    entries[0].allow = false;
    let m = manifest(dir.path(), &entries);
    let out = sonde(&["list", "-m", &m, "--format", "json"]);
    assert!(out.status.success());
    let v: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(v[0]["state"], "denied");
    assert_eq!(
        v[0]["metrics"].as_array().unwrap().len(),
        0,
        "a denied plugin is never instantiated"
    );
    assert_eq!(v[2]["metrics"][0]["name"], "http.route.duration_us");
    assert_eq!(v[2]["metrics"][0]["kind"], "histogram");
    assert_eq!(v[2]["metrics"][0]["label_keys"][0], "route");
}

#[test]
fn help_lists_every_command() {
    let out = sonde(&["--help"]);
    let help = text(&out.stdout);
    for c in ["check", "pin", "list", "preview"] {
        assert!(help.contains(c), "{help}");
    }
}

fn sonde_env(args: &[&str], env: &[(&str, &str)]) -> Output {
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_sonde"));
    cmd.args(args).env_remove("SONDE_TELEMETRY").env_remove("DO_NOT_TRACK");
    for (k, v) in env {
        cmd.env(k, v);
    }
    cmd.output().unwrap()
}

fn on_manifest(dir: &Path, url: &str) -> String {
    let telemetry = format!(
        "mode = \"on\"\nendpoint = \"{url}\"\nstate_dir = \"state\"\ninterval = \"1h\"\nmax_interval = \"2h\""
    );
    write_manifest(dir, &telemetry, &example_entries()).display().to_string()
}

#[test]
fn kill_switches_win_over_the_manifest_and_nothing_is_sent_or_written() {
    let endpoint = sonde_tests::ScriptedEndpoint::start(vec![], None);
    for env in [("DO_NOT_TRACK", "1"), ("SONDE_TELEMETRY", "off")] {
        let dir = tempfile::tempdir().unwrap();
        let m = on_manifest(dir.path(), &endpoint.url);
        let events = examples_dir().join("events.jsonl");
        let out = sonde_env(&["send", "-m", &m, "--events", events.to_str().unwrap()], &[env]);
        assert_eq!(out.status.code(), Some(2), "{env:?}");
        assert!(text(&out.stderr).contains("nothing is sent"), "{}", text(&out.stderr));
        let out = sonde_env(&["status", "-m", &m], &[env]);
        assert!(text(&out.stdout).contains("mode:        off"), "{}", text(&out.stdout));
        assert!(!dir.path().join("state").exists(), "{env:?} wrote the state dir");
    }
    assert!(endpoint.received().is_empty());
}

#[test]
fn send_prints_the_answer_and_status_shows_what_happened() {
    let dir = tempfile::tempdir().unwrap();
    let answer = r#"{"accepted":1,"directives":[{"action":"disable_plugin","plugin":"user-agent","for_secs":600,"reason":"too costly"}]}"#;
    let endpoint = sonde_tests::ScriptedEndpoint::start(vec![sonde_tests::Reply::ok(answer)], None);
    let m = on_manifest(dir.path(), &endpoint.url);
    let events = examples_dir().join("events.jsonl");
    let out = sonde(&["send", "-m", &m, "--events", events.to_str().unwrap()]);
    let stdout = text(&out.stdout);
    assert!(out.status.success(), "{stdout}{}", text(&out.stderr));
    assert!(stdout.contains("sent 1 report(s): endpoint answered 200"), "{stdout}");
    assert!(
        stdout.contains("applied: disabled plugin `user-agent` for 600 s: too costly"),
        "{stdout}"
    );
    let got = endpoint.received();
    assert_eq!(got.len(), 1);
    assert_eq!(got[0].batch.reports[0].buffer.processed, 40);

    let out = sonde(&["status", "-m", &m]);
    let stdout = text(&out.stdout);
    assert!(stdout.contains("mode:        on"), "{stdout}");
    assert!(stdout.contains("switched off: plugin user-agent until"), "{stdout}");
    assert!(stdout.contains("too costly"), "{stdout}");
    assert!(stdout.contains("plugin http-status: running"), "{stdout}");
    assert!(stdout.contains("cost as of") && stdout.contains("40 events"), "{stdout}");
    assert!(stdout.contains("limits: 64 MiB memory, 200 ms per call"), "{stdout}");
    let out = sonde(&["status", "-m", &m, "--format", "json"]);
    let v: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert!(v["upload"]["last_success"].is_string(), "{v}");
    assert_eq!(v["upload"]["spooled"], 0);
    assert_eq!(v["switched_off"][0]["plugin"], "user-agent");
    assert!(v["endpoint"].as_str().unwrap().starts_with("http://127.0.0.1:"));
}

#[test]
fn send_in_local_mode_explains_why_nothing_is_sent() {
    let dir = tempfile::tempdir().unwrap();
    let m = manifest(dir.path(), &example_entries());
    let out = sonde(&["send", "-m", &m]);
    assert_eq!(out.status.code(), Some(2));
    assert!(text(&out.stderr).contains("mode = \"local\""), "{}", text(&out.stderr));
}

#[test]
fn bench_measures_one_plugin_in_the_host_path() {
    let dir = tempfile::tempdir().unwrap();
    let m = manifest(dir.path(), &example_entries());
    let events = examples_dir().join("events.jsonl");
    let args =
        ["bench", "-m", &m, "--plugin", "route-latency", "--events", events.to_str().unwrap()];
    let out = sonde(&[&args[..], &["--min-events", "5000", "--format", "json"]].concat());
    assert!(out.status.success(), "{}", text(&out.stderr));
    let v: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(v["plugin"], "route-latency");
    assert_eq!(v["events"], 5000);
    assert_eq!(v["batches"], 5);
    assert!(v["ns_per_event_in_plugin"].as_f64().unwrap() > 0.0);
    let fuel = v["fuel_per_event"].as_f64().unwrap();
    assert!(fuel > 1.0, "fuel is metered: {fuel}");
    // Fuel is deterministic: the same run burns the same fuel.
    let again = sonde(&[&args[..], &["--min-events", "5000", "--format", "json"]].concat());
    let again: serde_json::Value = serde_json::from_slice(&again.stdout).unwrap();
    assert_eq!(again["fuel_per_event"].as_f64().unwrap(), fuel);
    assert!(
        v["batch_latency_us"]["p99"].as_f64().unwrap()
            >= v["batch_latency_us"]["p50"].as_f64().unwrap()
    );
    assert!(v["peak_memory_bytes"].as_u64().unwrap() > 0);
    let out = sonde(&["bench", "-m", &m, "--plugin", "nope", "--events", events.to_str().unwrap()]);
    assert_eq!(out.status.code(), Some(2));
}

#[test]
fn plugin_new_scaffolds_a_crate_and_joins_the_workspace() {
    let dir = tempfile::tempdir().unwrap();
    let ws = dir.path().join("plugins");
    std::fs::create_dir_all(&ws).unwrap();
    std::fs::write(ws.join("Cargo.toml"), "# mine\n[workspace]\nmembers = [\"a\"]\n").unwrap();
    let ws_arg = ws.to_str().unwrap();
    let out = sonde(&["plugin", "new", "my-counter", "--dir", ws_arg]);
    assert!(out.status.success(), "{}", text(&out.stderr));
    let workspace = std::fs::read_to_string(ws.join("Cargo.toml")).unwrap();
    assert!(workspace.starts_with("# mine\n"), "comments kept: {workspace}");
    assert!(workspace.contains("members = [\"a\", \"my-counter\"]"), "{workspace}");
    let lib = std::fs::read_to_string(ws.join("my-counter/src/lib.rs")).unwrap();
    assert!(
        lib.contains("name: \"my-counter\".into()") && lib.contains("my_counter.requests"),
        "{lib}"
    );
    assert!(lib.contains("sonde_sdk::export_plugin!(Plugin);"));
    let again = sonde(&["plugin", "new", "my-counter", "--dir", ws_arg]);
    assert_eq!(again.status.code(), Some(2), "an existing plugin is not overwritten");
    let bad = sonde(&["plugin", "new", "Bad_Name", "--dir", ws_arg]);
    assert!(text(&bad.stderr).contains("is not a plugin name"));
}

/// Runs `sonde` with warnings logged (uncoloured) to stderr.
fn sonde_logging(args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_sonde"))
        .args(args)
        .env_remove("SONDE_TELEMETRY")
        .env_remove("DO_NOT_TRACK")
        .env("SONDE_LOG", "warn")
        .env("NO_COLOR", "1")
        .output()
        .unwrap()
}

/// No byte a terminal would act on reaches it: only the output's own line
/// ends.
fn assert_terminal_safe(what: &str, bytes: &[u8]) {
    let s = std::str::from_utf8(bytes).unwrap();
    let raw: Vec<char> =
        s.chars().filter(|c| *c != '\n' && sonde_core::text::needs_escape(*c)).collect();
    assert!(raw.is_empty(), "{what}: raw {raw:?} in:\n{s}");
}

#[test]
fn plugin_text_reaches_the_terminal_escaped_and_json_exact() {
    let dir = tempfile::tempdir().unwrap();
    let entries = [
        Entry::new("http-status", sonde_tests::plugin("http_status.wasm")),
        sonde_tests::hostile("ansi-text", "ansi-text"),
        sonde_tests::hostile("ansi-log", "ansi-log"),
    ];
    let m = manifest(dir.path(), &entries);
    let events = examples_dir().join("events.jsonl");
    let events = events.to_str().unwrap();

    // check: the refused plugin stays REFUSED, on its own line.
    let out = sonde_logging(&["check", "-m", &m]);
    assert_eq!(out.status.code(), Some(1), "{}", text(&out.stderr));
    assert_terminal_safe("check stdout", &out.stdout);
    assert_terminal_safe("check stderr", &out.stderr);
    let stdout = text(&out.stdout);
    let lines: Vec<&str> = stdout.lines().collect();
    let refused: Vec<&&str> = lines.iter().filter(|l| l.contains("ansi-text")).collect();
    assert_eq!(refused.len(), 1, "{stdout}");
    assert!(
        refused[0].starts_with(
            r"REFUSED ansi-text: invalid info: metric name `\r\u{1b}[2Kok      ansi-text\u{1b}[8m`"
        ),
        "{stdout}"
    );
    assert!(lines.iter().any(|l| l.starts_with("ok      ansi-log")), "{stdout}");
    assert!(text(&out.stderr).contains("plugin refused"), "the warning was logged, escaped");

    // list: the metric's label keys stay on its line; no fake line.
    let out = sonde_logging(&["list", "-m", &m]);
    assert!(out.status.success(), "{}", text(&out.stderr));
    assert_terminal_safe("list stdout", &out.stdout);
    assert_terminal_safe("list stderr", &out.stderr);
    let stdout = text(&out.stdout);
    assert!(stdout.contains(r"ansi-log 6.6.6\r\u{1b}[2K\u{202e}1.0 [running]"), "{stdout}");
    let events_line = stdout
        .lines()
        .find(|l| l.starts_with(r"  - hostile.events (counter, 1\r\u{1b}[2K"))
        .unwrap_or_else(|| panic!("the ansi-log metric line: {stdout}"));
    assert!(events_line.contains(") by mode: "), "label keys shown: {events_line}");
    assert!(!stdout.lines().any(|l| l.starts_with("  - hostile.fake")), "{stdout}");

    // list --format json: the plugin's strings exactly as it declared them.
    let out = sonde(&["list", "-m", &m, "--format", "json"]);
    let v: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    let ansi = &v[2];
    assert_eq!(ansi["name"], "ansi-log");
    assert_eq!(ansi["version"], "6.6.6\r\u{1b}[2K\u{202e}1.0");
    assert_eq!(ansi["description"], "Fine.\n  - hostile.fake (counter, 1): not there\r\u{1b}[2K");
    assert_eq!(ansi["metrics"][0]["unit"], "1\r\u{1b}[2K  - hostile.events (counter, 1");
    assert_eq!(v[1]["state"], "refused");

    // preview, text: escaped; JSON: the exact bytes of the report.
    let out = sonde_logging(&["preview", "-m", &m, "--events", events]);
    assert!(out.status.success(), "{}", text(&out.stderr));
    assert_terminal_safe("preview stdout", &out.stdout);
    assert_terminal_safe("preview stderr", &out.stderr);
    let stdout = text(&out.stdout);
    assert!(stdout.contains(r#"hostile.gauge{key="k\r\u{1b}[2K\n\u{9b}31m"} 1"#), "{stdout}");
    let out = sonde(&["preview", "-m", &m, "--events", events, "--format", "json"]);
    let report = Report::from_json(&out.stdout).unwrap();
    let ansi = report.plugins.iter().find(|p| p.name == "ansi-log").unwrap();
    assert_eq!(ansi.version, "6.6.6\r\u{1b}[2K\u{202e}1.0");
    assert!(
        ansi.metrics
            .iter()
            .any(|m| m.labels.get("key").map(String::as_str) == Some("k\r\u{1b}[2K\n\u{9b}31m"))
    );
}

#[test]
fn check_and_list_share_the_compile_cache_and_write_no_instance_state() {
    let dir = tempfile::tempdir().unwrap();
    let m = manifest(dir.path(), &example_entries());
    let from_cache = || {
        let out = sonde(&["list", "-m", &m, "--format", "json"]);
        assert!(out.status.success(), "{}", text(&out.stderr));
        let plugins: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
        let plugins = plugins.as_array().unwrap().clone();
        assert_eq!(plugins.len(), 3);
        plugins.iter().map(|p| p["from_cache"] == true).collect::<Vec<_>>()
    };
    // The first look compiles (and fills the state dir's cache)...
    let out = sonde(&["check", "-m", &m]);
    assert!(out.status.success(), "{}", text(&out.stdout));
    // ...the next ones load what it compiled.
    assert_eq!(from_cache(), vec![true; 3]);
    assert!(dir.path().join("state/cache").is_dir());
    assert!(!dir.path().join("state/instance_id").exists(), "inspecting is not an instance");
}
