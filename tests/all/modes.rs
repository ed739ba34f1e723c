//! `off` means off.

use sonde::{Manifest, Mode, Telemetry};
use sonde_tests::{example_entries, write_manifest};

static HTTP: sonde::EventKind = sonde::EventKind::new("http.request", &["status"]);

#[test]
fn off_mode_starts_nothing_and_writes_nothing() {
    let dir = tempfile::tempdir().unwrap();
    let path =
        write_manifest(dir.path(), "mode = \"off\"\nstate_dir = \"state\"", &example_entries());
    let t = Telemetry::builder(Manifest::load(&path).unwrap()).start().unwrap();
    assert_eq!(t.mode(), Mode::Off);
    t.record(HTTP.event().int("status", 200));
    assert!(matches!(t.report(), Err(sonde::Error::Off)));
    assert!(!dir.path().join("state").exists(), "off mode must not create the state dir");
}

#[test]
fn a_manifest_without_a_telemetry_table_is_off() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("sonde.toml");
    std::fs::write(&path, "").unwrap();
    let t = Telemetry::builder(Manifest::load(&path).unwrap()).start().unwrap();
    assert_eq!(t.mode(), Mode::Off);
    assert!(!dir.path().join(".sonde").exists());
}

#[test]
fn an_ephemeral_runtime_writes_nothing() {
    let dir = tempfile::tempdir().unwrap();
    let path =
        write_manifest(dir.path(), "mode = \"local\"\nstate_dir = \"state\"", &example_entries());
    let t = Telemetry::builder(Manifest::load(&path).unwrap()).ephemeral(true).start().unwrap();
    t.record(HTTP.event().int("status", 200));
    let report = t.report().unwrap();
    assert_eq!(report.buffer.processed, 1);
    assert!(!dir.path().join("state").exists());
}
