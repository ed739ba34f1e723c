//! The example server as an operator runs it: real HTTP on loopback, a
//! reload on SIGHUP, a last report on SIGTERM.

#![allow(clippy::unwrap_used, reason = "tests")]

use std::io::{BufRead, BufReader, Read, Write};
use std::net::TcpStream;
use std::process::{Command, Stdio};
use std::time::Duration;

use sonde::PluginState;
use sonde_tests::{Entry, ScriptedEndpoint, plugin, write_manifest};

fn get(addr: &str, path: &str) -> String {
    let mut s = TcpStream::connect(addr).unwrap();
    write!(s, "GET {path} HTTP/1.1\r\nHost: x\r\nUser-Agent: curl/8\r\nConnection: close\r\n\r\n")
        .unwrap();
    let mut out = String::new();
    s.read_to_string(&mut out).unwrap();
    out
}

fn signal(pid: u32, sig: &str) {
    assert!(Command::new("kill").args(["-s", sig, &pid.to_string()]).status().unwrap().success());
}

#[test]
fn the_server_reports_its_requests_reloads_on_sighup_and_flushes_on_sigterm() {
    let dir = tempfile::tempdir().unwrap();
    let endpoint = ScriptedEndpoint::start(vec![], None);
    let telemetry = format!(
        "mode = \"on\"\nendpoint = \"{}\"\nstate_dir = \"state\"\ninterval = \"1h\"\nmax_interval = \"2h\"",
        endpoint.url
    );
    let status = Entry::new("http-status", plugin("http_status.wasm"));
    let routes = Entry::new("route-latency", plugin("route_latency.wasm"))
        .config("routes", "/users/{id},/orders");
    let manifest = write_manifest(dir.path(), &telemetry, std::slice::from_ref(&status));
    let mut child = Command::new(env!("CARGO_BIN_EXE_sonde-example-server"))
        .args(["--listen", "127.0.0.1:0", "--manifest"])
        .arg(&manifest)
        .stdout(Stdio::piped())
        .spawn()
        .unwrap();
    let mut line = String::new();
    BufReader::new(child.stdout.take().unwrap()).read_line(&mut line).unwrap();
    let addr = line.trim().strip_prefix("listening on ").unwrap().to_string();

    assert!(get(&addr, "/users/7").starts_with("HTTP/1.1 200"));
    assert!(get(&addr, "/health").contains("ok"));
    // Add a plugin while serving.
    write_manifest(dir.path(), &telemetry, &[status, routes]);
    signal(child.id(), "HUP");
    std::thread::sleep(Duration::from_millis(800));
    assert!(get(&addr, "/orders").starts_with("HTTP/1.1 200"));
    assert!(get(&addr, "/nope?secret=1").starts_with("HTTP/1.1 404"));

    signal(child.id(), "TERM");
    assert!(child.wait().unwrap().success());
    let got = endpoint.received();
    assert_eq!(got.len(), 1, "one last report on shutdown");
    let report = &got[0].batch.reports[0];
    assert_eq!(report.buffer.recorded, 4);
    assert!(report.plugins.iter().all(|p| p.state == PluginState::Running));
    let total = |name: &str| sonde_tests::total(sonde_tests::plugin_report(report, name), None);
    assert_eq!(total("http-status"), 4.0);
    assert_eq!(total("route-latency"), 2.0, "loaded by SIGHUP, it saw the two later requests");
}
