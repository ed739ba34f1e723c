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

#[test]
fn the_installation_id_comes_from_the_salt_in_the_state_dir_and_is_opt_in() {
    let dir = tempfile::tempdir().unwrap();
    let plain = write_manifest(dir.path(), "mode = \"local\"\nstate_dir = \"a\"", &[]);
    let t = Telemetry::builder(Manifest::load(&plain).unwrap()).start().unwrap();
    assert_eq!(t.report().unwrap().installation_id, None, "off unless asked for");
    assert!(!dir.path().join("a/installation_salt").exists());

    let start = |state: &str| {
        let text = format!("mode = \"local\"\nstate_dir = \"{state}\"\ninstallation_id = true");
        let path = write_manifest(dir.path(), &text, &[]);
        Telemetry::builder(Manifest::load(&path).unwrap()).start().unwrap().report().unwrap()
    };
    let first = start("b");
    let id = first.installation_id.clone().unwrap();
    assert_eq!(id.len(), 32);
    assert_eq!(start("b").installation_id.as_ref(), Some(&id), "stable across restarts");
    assert_ne!(start("c").installation_id.as_ref(), Some(&id), "another salt, another id");
    std::fs::create_dir_all(dir.path().join("d")).unwrap();
    std::fs::copy(dir.path().join("b/installation_salt"), dir.path().join("d/installation_salt"))
        .unwrap();
    let grouped = start("d");
    assert_eq!(grouped.installation_id.as_ref(), Some(&id), "a copied salt groups hosts");
    assert_ne!(grouped.instance_id, first.instance_id, "instances stay distinct");
}

#[test]
fn the_dispatchers_cpu_time_grows_with_the_work_it_does_and_is_unavailable_when_off() {
    let dir = tempfile::tempdir().unwrap();
    let path =
        write_manifest(dir.path(), "mode = \"local\"\nstate_dir = \"state\"", &example_entries());
    let t = Telemetry::builder(Manifest::load(&path).unwrap()).ephemeral(true).start().unwrap();
    t.plugins().unwrap(); // loaded: compiling counts too
    let loaded = t.dispatcher_cpu_time().unwrap().expect("a per-thread CPU clock on unix");
    assert!(loaded > std::time::Duration::ZERO, "loading three plugins took CPU");
    for i in 0..50_000 {
        t.record(HTTP.event().int("status", 200 + (i % 3)));
    }
    t.flush().unwrap();
    let worked = t.dispatcher_cpu_time().unwrap().unwrap();
    assert!(
        worked > loaded,
        "50,000 events through three plugins took CPU: {loaded:?} → {worked:?}"
    );
    assert_eq!(t.report().unwrap().buffer.processed, 50_000);

    let off = Telemetry::off();
    assert!(matches!(off.dispatcher_cpu_time(), Err(sonde::Error::Off)));
}
