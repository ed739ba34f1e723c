//! The operator's controls through the `sonde` binary: per-metric deny, the
//! ident channel, the record of what left, re-consent on upgrade and a pin
//! that validates first.

use std::path::Path;
use std::process::Output;

use sonde_core::{PluginState, Report};
use sonde_tests::{Entry, Reply, ScriptedEndpoint, example_entries, examples_dir, write_manifest};

use super::{sonde, text};

fn ok(out: &Output) -> String {
    assert!(out.status.success(), "{}{}", text(&out.stdout), text(&out.stderr));
    text(&out.stdout)
}

fn local(dir: &Path, entries: &[Entry]) -> String {
    write_manifest(dir, "mode = \"local\"\nstate_dir = \"state\"", entries).display().to_string()
}

fn events() -> String {
    examples_dir().join("events.jsonl").display().to_string()
}

/// The 1-based line of the first line of `path` that starts with `prefix`.
fn line_of(path: &str, prefix: &str) -> usize {
    let text = std::fs::read_to_string(path).unwrap();
    text.lines().position(|l| l.starts_with(prefix)).unwrap() + 1
}

#[test]
fn a_denied_metric_never_leaves_and_list_and_preview_say_so() {
    let dir = tempfile::tempdir().unwrap();
    let mut entries = example_entries();
    entries[1] = entries[1].clone().deny("http.user_agents");
    let m = local(dir.path(), &entries);
    assert_eq!(sonde(&["check", "-m", &m]).status.code(), Some(0));

    let out = ok(&sonde(&["list", "-m", &m]));
    assert!(
        out.contains("  - http.user_agents (counter, 1) by family: ")
            && out.contains("[denied by the operator: never reported]"),
        "{out}"
    );
    let v: serde_json::Value =
        serde_json::from_slice(&sonde(&["list", "-m", &m, "--format", "json"]).stdout).unwrap();
    assert_eq!(v[1]["deny_metrics"][0], "http.user_agents");
    assert_eq!(v[1]["metrics"][0]["denied"], true);
    assert_eq!(v[0]["metrics"][0]["denied"], false);

    let out = sonde(&["preview", "-m", &m, "--events", &events(), "--format", "json"]);
    let report = Report::from_json(&out.stdout).unwrap();
    let agents = sonde_tests::plugin_report(&report, "user-agent");
    assert_eq!(agents.state, PluginState::Running);
    assert!(agents.metrics.is_empty(), "{:?}", agents.metrics);
    assert!(agents.cost.denied_points > 0, "counted: {:?}", agents.cost);
    assert_eq!(agents.denied_metrics, ["http.user_agents"]);
    assert!(!String::from_utf8_lossy(&out.stdout).contains("\"family\""), "no trace of the series");
    let status = sonde_tests::plugin_report(&report, "http-status");
    assert_eq!(sonde_tests::total(status, None), 40.0, "the neighbours are untouched");
    assert_eq!(status.cost.denied_points, 0);

    let out = ok(&sonde(&["preview", "-m", &m, "--events", &events()]));
    assert!(
        out.contains(&format!(
            "  denied by the operator: http.user_agents ({} points dropped, never reported)",
            agents.cost.denied_points
        )),
        "{out}"
    );
}

#[test]
fn denying_a_metric_the_plugin_does_not_declare_names_file_line_and_key() {
    let dir = tempfile::tempdir().unwrap();
    let mut entries = example_entries();
    entries[1] = entries[1].clone().deny("http.user_agent");
    let m = local(dir.path(), &entries);
    let out = sonde(&["check", "-m", &m]);
    assert_eq!(out.status.code(), Some(1), "{}", text(&out.stdout));
    let line = line_of(&m, "deny_metrics");
    let want = format!(
        "REFUSED user-agent: {m}:{line}: key `plugin[1].deny_metrics`: `http.user_agent` is not a metric this plugin declares (it declares: http.user_agents)"
    );
    assert!(text(&out.stdout).contains(&want), "{}", text(&out.stdout));
    // Not a metric name at all: the manifest itself is refused (exit 2).
    std::fs::write(&m, std::fs::read_to_string(&m).unwrap().replace("http.user_agent", "Agents!"))
        .unwrap();
    let out = sonde(&["check", "-m", &m]);
    assert_eq!(out.status.code(), Some(2));
    assert!(
        text(&out.stderr).contains(&format!("{m}:{line}: key `plugin[1].deny_metrics`")),
        "{}",
        text(&out.stderr)
    );
}

#[test]
fn the_ident_channel_is_off_by_default_and_preview_shows_it_when_set() {
    let dir = tempfile::tempdir().unwrap();
    let m = local(dir.path(), &example_entries()[..1]);
    let out = ok(&sonde(&["preview", "-m", &m, "--events", &events()]));
    assert!(out.contains("  ident: none sent (no [telemetry.ident] in the manifest)"), "{out}");
    let out = sonde(&["preview", "-m", &m, "--events", &events(), "--format", "json"]);
    assert!(!text(&out.stdout).contains("ident"), "off by default");

    let telemetry = "mode = \"local\"\nstate_dir = \"state\"\n[telemetry.ident]\n\
                     contact = \"ops@example.com\"\ndescription = \"shop \\u001b[2K frontend\"";
    let m = write_manifest(dir.path(), telemetry, &example_entries()[..1]).display().to_string();
    let out = sonde(&["check", "-m", &m]);
    assert_eq!(out.status.code(), Some(2), "a control character is refused");
    assert!(
        text(&out.stderr).contains("key `telemetry.ident.description`"),
        "{}",
        text(&out.stderr)
    );
    let telemetry = telemetry.replace(" \\u001b[2K", "");
    let m = write_manifest(dir.path(), &telemetry, &example_entries()[..1]).display().to_string();
    let out = ok(&sonde(&["preview", "-m", &m, "--events", &events()]));
    assert!(
        out.contains("  ident: contact \"ops@example.com\", description \"shop frontend\""),
        "{out}"
    );
    let out = sonde(&["preview", "-m", &m, "--events", &events(), "--format", "json"]);
    let report = Report::from_json(&out.stdout).unwrap();
    let ident = report.ident.unwrap();
    assert_eq!(
        (ident.contact.as_deref(), ident.description.as_deref()),
        (Some("ops@example.com"), Some("shop frontend"))
    );
}

fn on_manifest(dir: &Path, url: &str) -> String {
    let telemetry = format!(
        "mode = \"on\"\nendpoint = \"{url}\"\nstate_dir = \"state\"\ninterval = \"1h\"\nmax_interval = \"2h\"\nsent_log_max_files = 2"
    );
    write_manifest(dir, &telemetry, &example_entries()).display().to_string()
}

#[test]
fn sent_prints_byte_for_byte_what_the_endpoint_received() {
    let dir = tempfile::tempdir().unwrap();
    let answer = r#"{"accepted":1,"next_update_secs":3600}"#;
    let endpoint = ScriptedEndpoint::start(vec![Reply::ok(answer)], Some(Reply::status(503)));
    let m = on_manifest(dir.path(), &endpoint.url);
    let out = ok(&sonde(&["sent", "-m", &m]));
    assert!(out.starts_with("nothing has been sent"), "{out}");
    ok(&sonde(&["send", "-m", &m, "--events", &events()]));
    let got = endpoint.received();
    assert_eq!(got.len(), 1);

    let v: serde_json::Value =
        serde_json::from_slice(&sonde(&["sent", "-m", &m, "--format", "json"]).stdout).unwrap();
    let listed = v.as_array().unwrap();
    assert_eq!(listed.len(), 1);
    let r = &listed[0];
    assert_eq!((r["status"].as_u64(), r["reports"].as_u64()), (Some(200), Some(1)));
    assert_eq!(r["endpoint"], endpoint.url.as_str());
    assert_eq!(r["protocol"], "sonde");
    assert_eq!(r["body_bytes"].as_u64(), Some(got[0].raw.len() as u64));
    let id = r["id"].as_str().unwrap().to_string();

    let body = ok(&sonde(&["sent", "-m", &m, "--show", &id]));
    assert_eq!(body.as_bytes(), got[0].body.as_slice(), "what the endpoint decoded");
    let wire = sonde(&["sent", "-m", &m, "--show", &id, "--gzip"]);
    assert_eq!(wire.stdout, got[0].raw, "what went over the wire");
    let back = sonde(&["sent", "-m", &m, "--show", "last", "--answer"]);
    assert_eq!(back.stdout, answer.as_bytes());
    let batch: sonde_core::ReportBatch = serde_json::from_str(&body).unwrap();
    assert_eq!(batch.reports[0].buffer.processed, 40);

    // A refused request is kept too, with its answer; the oldest go first.
    for _ in 0..2 {
        let out = sonde(&["send", "-m", &m]);
        assert_eq!(out.status.code(), Some(1), "{}", text(&out.stdout));
    }
    let out = ok(&sonde(&["sent", "-m", &m]));
    assert_eq!(out.matches(" 503 ").count(), 2, "{out}");
    assert!(!out.contains(&id), "the oldest went first (sent_log_max_files = 2): {out}");
    assert!(out.contains("2 request(s) kept in"), "{out}");
    let out = ok(&sonde(&["sent", "-m", &m, "--last", "1", "--format", "json"]));
    assert_eq!(
        serde_json::from_str::<serde_json::Value>(&out).unwrap().as_array().unwrap().len(),
        1
    );
    let out = sonde(&["sent", "-m", &m, "--show", "0000-nope"]);
    assert_eq!(out.status.code(), Some(2));
    assert!(text(&out.stderr).contains("no request `0000-nope`"), "{}", text(&out.stderr));
}

#[test]
fn local_and_off_modes_keep_no_record_of_what_left() {
    let dir = tempfile::tempdir().unwrap();
    let m = local(dir.path(), &example_entries()[..1]);
    ok(&sonde(&["preview", "-m", &m, "--events", &events()]));
    assert!(dir.path().join("state").exists());
    assert!(!dir.path().join("state/sent").exists(), "local mode sends nothing");
    let out = ok(&sonde(&["sent", "-m", &m]));
    assert!(out.starts_with("nothing has been sent"), "{out}");
}

fn read(path: &str) -> String {
    std::fs::read_to_string(path).unwrap()
}

#[test]
fn pin_refuses_an_invalid_manifest_with_checks_error_and_writes_nothing() {
    let dir = tempfile::tempdir().unwrap();
    let mut entries = example_entries();
    for e in &mut entries {
        e.sha256 = Some("0".repeat(64));
    }
    let m = local(dir.path(), &entries);
    for (what, key, edit) in [
        (
            "under [telemetry]",
            "telemetry.colour",
            ("state_dir = \"state\"", "state_dir = \"state\"\ncolour = \"red\""),
        ),
        (
            "under [[plugin]]",
            "plugin[1].colour",
            ("name = \"user-agent\"", "name = \"user-agent\"\ncolour = \"red\""),
        ),
    ] {
        let bad = read(&m).replacen(edit.0, edit.1, 1);
        std::fs::write(&m, &bad).unwrap();
        let line = line_of(&m, "colour");
        let check = sonde(&["check", "-m", &m]);
        assert_eq!(check.status.code(), Some(2), "{what}");
        let pin = sonde(&["pin", "-m", &m]);
        assert_eq!(pin.status.code(), Some(2), "{what}: {}", text(&pin.stdout));
        let want = format!("{m}:{line}: key `{key}`: unknown field `colour`");
        assert!(text(&check.stderr).contains(&want), "{what}: {}", text(&check.stderr));
        assert!(text(&pin.stderr).contains(&want), "{what}: the same error: {}", text(&pin.stderr));
        assert_eq!(read(&m), bad, "{what}: nothing written");
        assert!(!dir.path().join("sonde.accepted.json").exists());
        std::fs::write(&m, bad.replacen("\ncolour = \"red\"", "", 1)).unwrap();
    }
    // Valid again: pin writes.
    ok(&sonde(&["pin", "-m", &m]));
    assert_eq!(sonde(&["check", "-m", &m]).status.code(), Some(0));
}

#[test]
fn pin_asks_again_when_an_upgrade_declares_more_and_check_reports_a_difference() {
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("collector.wasm");
    let v1 = sonde_tests::plugin("http_status.wasm");
    let v2 = sonde_tests::plugin("user_agent.wasm");
    std::fs::copy(&v1, &file).unwrap();
    let entry = Entry { sha256: Some("0".repeat(64)), ..Entry::new("collector", file.clone()) };
    let m = local(dir.path(), &[entry]);
    let accepted = dir.path().join("sonde.accepted.json");

    // First pin: what it declares is shown and recorded.
    let out = ok(&sonde(&["pin", "-m", &m]));
    assert!(out.contains("collector: first pin: accepting what it declares:"), "{out}");
    assert!(out.contains("  + metric http.requests (counter) by method, status_class"), "{out}");
    assert!(
        out.contains("  + event kind http.request, reading method (str), status (int)"),
        "{out}"
    );
    assert!(read(&m).contains(&sonde_tests::sha256_file(&v1)));
    let record: serde_json::Value =
        serde_json::from_str(&read(accepted.to_str().unwrap())).unwrap();
    assert_eq!(
        record["plugins"]["collector"]["metrics"]["http.requests"]["label_keys"][1],
        "status_class"
    );
    assert_eq!(sonde(&["check", "-m", &m]).status.code(), Some(0));

    // An upgrade that reads user agents: shown, and not pinned without --accept.
    std::fs::copy(&v2, &file).unwrap();
    let before = (read(&m), read(accepted.to_str().unwrap()));
    let out = sonde(&["pin", "-m", &m]);
    assert_eq!(out.status.code(), Some(1), "{}", text(&out.stdout));
    let stdout = text(&out.stdout);
    assert!(stdout.contains("collector: NOT PINNED: its declarations grew since"), "{stdout}");
    assert!(stdout.contains("  + field user_agent (str) of http.request"), "{stdout}");
    assert!(stdout.contains("  + metric http.user_agents (counter) by family"), "{stdout}");
    assert!(stdout.contains("  - metric http.requests"), "{stdout}");
    assert_eq!((read(&m), read(accepted.to_str().unwrap())), before, "nothing written");
    assert_eq!(sonde(&["check", "-m", &m]).status.code(), Some(1), "the new file is not pinned");

    let out = ok(&sonde(&["pin", "-m", &m, "--accept"]));
    assert!(out.contains("1 pin(s) written, 1 declaration record(s) updated"), "{out}");
    assert!(read(&m).contains(&sonde_tests::sha256_file(&v2)));
    assert_eq!(sonde(&["check", "-m", &m]).status.code(), Some(0));

    // Pinned by hand, past `sonde pin`: check says the declarations differ.
    std::fs::copy(&v1, &file).unwrap();
    std::fs::write(
        &m,
        read(&m).replace(&sonde_tests::sha256_file(&v2), &sonde_tests::sha256_file(&v1)),
    )
    .unwrap();
    let out = sonde(&["check", "-m", &m]);
    assert_eq!(out.status.code(), Some(1));
    let stdout = text(&out.stdout);
    assert!(stdout.contains("ok      collector"), "{stdout}");
    assert!(
        stdout.contains("CHANGED collector: declares other than what was accepted at its pin:"),
        "{stdout}"
    );
    assert!(
        stdout.contains("+ metric http.requests (counter) by method, status_class"),
        "{stdout}"
    );
    let v: serde_json::Value =
        serde_json::from_slice(&sonde(&["check", "-m", &m, "--format", "json"]).stdout).unwrap();
    assert_eq!(v["ok"], false);
    assert_eq!(v["declarations"][0]["status"], "differs");
    assert_eq!(v["declarations"][0]["changes"][0]["grows"], true);
    // Reviewed and accepted: check is content again.
    assert_eq!(sonde(&["pin", "-m", &m]).status.code(), Some(1));
    ok(&sonde(&["pin", "-m", &m, "--accept"]));
    assert_eq!(sonde(&["check", "-m", &m]).status.code(), Some(0));
}
