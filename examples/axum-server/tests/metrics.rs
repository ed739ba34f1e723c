//! The site owner's local view: `sonde-example-server --metrics` in `local`
//! mode, scraped by a real Prometheus (Debian's `prometheus` package,
//! started here on loopback with its own configuration and data folder),
//! whose stored values are queried back through its HTTP API.

#![allow(clippy::unwrap_used, reason = "tests")]

use std::io::{BufRead, BufReader, Read, Write};
use std::net::TcpStream;
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use sonde_tests::{Entry, example_entries, hostile, write_manifest};

/// The Prometheus binary: `SONDE_PROMETHEUS` (set by `cargo xtask test`,
/// which installs the Debian package), else Debian's path.
fn prometheus_binary() -> Option<PathBuf> {
    std::env::var_os("SONDE_PROMETHEUS")
        .map(PathBuf::from)
        .or_else(|| Some(PathBuf::from("/usr/bin/prometheus")))
        .filter(|p| p.exists())
}

/// A child process killed when dropped.
struct Killed(Child);

impl Drop for Killed {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// `GET path` on `addr`: status, headers and body.
fn get(addr: &str, path: &str) -> Option<(u16, String, Vec<u8>)> {
    let mut s = TcpStream::connect(addr).ok()?;
    s.set_read_timeout(Some(Duration::from_secs(10))).ok()?;
    write!(
        s,
        "GET {path} HTTP/1.1\r\nHost: {addr}\r\nUser-Agent: curl/8.5\r\nConnection: close\r\n\r\n"
    )
    .ok()?;
    let mut raw = Vec::new();
    s.read_to_end(&mut raw).ok()?;
    let end = raw.windows(4).position(|w| w == b"\r\n\r\n")?;
    let head = String::from_utf8_lossy(&raw[..end]).into_owned();
    let status = head.split(' ').nth(1)?.parse().ok()?;
    let mut body = raw[end + 4..].to_vec();
    if head.to_ascii_lowercase().contains("transfer-encoding: chunked") {
        body = unchunk(&body);
    }
    Some((status, head, body))
}

fn unchunk(mut data: &[u8]) -> Vec<u8> {
    let mut out = Vec::new();
    while let Some(eol) = data.windows(2).position(|w| w == b"\r\n") {
        let size =
            usize::from_str_radix(std::str::from_utf8(&data[..eol]).unwrap_or("0").trim(), 16)
                .unwrap_or(0);
        if size == 0 {
            break;
        }
        out.extend_from_slice(&data[eol + 2..eol + 2 + size]);
        data = &data[eol + 2 + size + 2..];
    }
    out
}

fn encode(q: &str) -> String {
    q.bytes()
        .map(|b| match b {
            b'a'..=b'z' | b'A'..=b'Z' | b'0'..=b'9' | b'_' | b'.' => (b as char).to_string(),
            _ => format!("%{b:02X}"),
        })
        .collect()
}

/// The series an instant query returns: (labels, value).
fn query(prometheus: &str, promql: &str) -> Vec<(serde_json::Value, f64)> {
    let Some((200, _, body)) = get(prometheus, &format!("/api/v1/query?query={}", encode(promql)))
    else {
        return Vec::new();
    };
    let v: serde_json::Value = serde_json::from_slice(&body).unwrap();
    v["data"]["result"]
        .as_array()
        .unwrap()
        .iter()
        .map(|r| (r["metric"].clone(), r["value"][1].as_str().unwrap().parse().unwrap()))
        .collect()
}

/// The one value of `promql` once Prometheus has it (or panics after a
/// minute).
fn value(prometheus: &str, promql: &str) -> f64 {
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        if let [(_, v)] = query(prometheus, promql).as_slice() {
            return *v;
        }
        assert!(Instant::now() < deadline, "no single value for {promql}");
        std::thread::sleep(Duration::from_millis(200));
    }
}

#[test]
fn a_real_prometheus_scrapes_the_local_view_and_reads_back_every_value() {
    let Some(binary) = prometheus_binary() else {
        assert!(
            std::env::var_os("CI").is_none(),
            "Prometheus is missing: CI must run this test (cargo xtask test installs it)"
        );
        eprintln!(
            "skipped: no Prometheus; `cargo xtask test` installs it (apt-get install prometheus)"
        );
        return;
    };
    let dir = tempfile::tempdir().unwrap();
    let mut entries = example_entries();
    entries[1] = entries[1].clone().deny("http.user_agents");
    // Hostile text: a label value with CR, ESC, LF and a C1 CSI, and HELP
    // text with ESC and BEL.
    let entries: Vec<Entry> =
        entries.into_iter().chain([hostile("ansi-log", "ansi-log")]).collect();
    let manifest = write_manifest(dir.path(), "mode = \"local\"\nstate_dir = \"state\"", &entries);
    let mut server = Killed(
        Command::new(env!("CARGO_BIN_EXE_sonde-example-server"))
            .args(["--listen", "127.0.0.1:0", "--metrics", "--user-agents", "--manifest"])
            .arg(&manifest)
            .stdout(Stdio::piped())
            .spawn()
            .unwrap(),
    );
    let mut line = String::new();
    BufReader::new(server.0.stdout.take().unwrap()).read_line(&mut line).unwrap();
    let addr = line.trim().strip_prefix("listening on ").unwrap().to_string();

    // The plugins load off the request path: wait until all four run.
    let deadline = Instant::now() + Duration::from_secs(120);
    while !all_running(&addr, 4) {
        assert!(Instant::now() < deadline, "the plugins did not load");
        std::thread::sleep(Duration::from_millis(200));
    }
    for path in [
        "/users/1",
        "/users/2",
        "/users/3",
        "/users/4",
        "/users/5",
        "/orders",
        "/orders",
        "/orders",
        "/nope",
        "/nope?x=1",
    ] {
        assert!(get(&addr, path).is_some());
    }
    // A page within a second of the last one shows that one's collection.
    std::thread::sleep(sonde::MIN_VIEW_INTERVAL + Duration::from_millis(100));
    let (status, head, body) = get(&addr, "/metrics").unwrap();
    assert_eq!(status, 200);
    assert!(
        head.to_ascii_lowercase().contains("content-type: text/plain; version=0.0.4"),
        "{head}"
    );
    let page = String::from_utf8(body).unwrap();
    assert!(page.contains("# TYPE http_requests_total counter"), "{page}");
    assert!(!page.contains("http_user_agents"), "a denied metric is not shown:\n{page}");

    // Prometheus scrapes it every second.
    let data = tempfile::tempdir().unwrap();
    let config = data.path().join("prometheus.yml");
    std::fs::write(
        &config,
        format!(
            "global:\n  scrape_interval: 1s\n  evaluation_interval: 1s\nscrape_configs:\n  - job_name: sonde\n    metrics_path: /metrics\n    static_configs:\n      - targets: [\"{addr}\"]\n"
        ),
    )
    .unwrap();
    let listen = sonde_tests::free_port().to_string();
    let _prometheus = Killed(
        Command::new(&binary)
            .arg(format!("--config.file={}", config.display()))
            .arg(format!("--storage.tsdb.path={}", data.path().join("tsdb").display()))
            .arg(format!("--web.listen-address={listen}"))
            .arg("--log.level=error")
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("prometheus starts"),
    );

    assert_eq!(value(&listen, "up{job=\"sonde\"}"), 1.0, "the page parsed");
    assert_eq!(value(&listen, "sum(http_requests_total{sonde_plugin=\"http-status\"})"), 10.0);
    assert_eq!(value(&listen, "http_route_duration_us_count{route=\"/users/{id}\"}"), 5.0);
    assert_eq!(value(&listen, "http_route_duration_us_count{route=\"/orders\"}"), 3.0);
    assert_eq!(value(&listen, "sonde_events_recorded_total"), 10.0, "/metrics is not recorded");
    assert_eq!(value(&listen, "sonde_events_dropped_total"), 0.0);
    assert!(value(&listen, "sonde_plugin_points_denied_total{sonde_plugin=\"user-agent\"}") > 0.0);
    assert!(query(&listen, "http_user_agents_total").is_empty(), "denied: never shown");
    // The hostile label value came through exact.
    let gauge = query(&listen, "hostile_gauge");
    assert_eq!(gauge.len(), 1, "{gauge:?}");
    assert_eq!(gauge[0].0["key"], "k\r\u{1b}[2K\n\u{9b}31m");
    assert_eq!(gauge[0].0["sonde_plugin"], "ansi-log");
    assert_eq!(gauge[0].1, 1.0);
}

/// Whether the page shows `n` plugins, all running.
fn all_running(addr: &str, n: usize) -> bool {
    let Some((200, _, page)) = get(addr, "/metrics") else { return false };
    let page = String::from_utf8_lossy(&page);
    let running: Vec<&str> =
        page.lines().filter(|l| l.starts_with("sonde_plugin_running{")).collect();
    running.len() == n && running.iter().all(|l| l.ends_with(" 1"))
}
