//! `protocol = "otlp"`: the same reports as OTLP/HTTP protobuf, against a
//! scripted endpoint (what each answer means, per the OTLP spec) and against
//! a real receiver, VictoriaMetrics, whose stored values are queried back.

use std::io::{Read, Write};
use std::net::TcpStream;
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use opentelemetry_proto::tonic::collector::metrics::v1::{
    ExportMetricsPartialSuccess, ExportMetricsServiceRequest, ExportMetricsServiceResponse,
};
use opentelemetry_proto::tonic::metrics::v1::{metric::Data, number_data_point};
use prost::Message;
use sonde::Telemetry;
use sonde_tests::{Entry, Received, Reply, ScriptedEndpoint, example_entries};

use crate::delivery::{on, record};

static TIMED: sonde::EventKind =
    sonde::EventKind::new("http.request", &["route", "status", "duration_us"]);

const WAIT: Duration = Duration::from_secs(10);
const OTLP: &str = "protocol = \"otlp\"\nmax_requests_per_hour = 3600";

fn decode(r: &Received) -> ExportMetricsServiceRequest {
    ExportMetricsServiceRequest::decode(r.body.as_slice()).expect("an OTLP protobuf request")
}

/// The value of `http.requests{status_class="2xx"}` in the request's last
/// resource.
fn requests_2xx(req: &ExportMetricsServiceRequest) -> Option<f64> {
    let rm = req.resource_metrics.last()?;
    let scope = rm
        .scope_metrics
        .iter()
        .find(|s| s.scope.as_ref().is_some_and(|s| s.name == "http-status"))?;
    let metric = scope.metrics.iter().find(|m| m.name == "http.requests")?;
    let Some(Data::Sum(sum)) = &metric.data else { return None };
    sum.data_points
        .iter()
        .filter(|p| p.attributes.iter().any(|a| a.key == "status_class"))
        .find_map(|p| match p.value {
            Some(number_data_point::Value::AsDouble(v)) => Some(v),
            _ => None,
        })
}

fn rejected(t: &Telemetry) -> (u64, u64, u64) {
    let d = t.report().unwrap().delivery;
    (d.sent, d.rejected, d.rejected_points)
}

/// The delivery counters once `done` holds (or after [`WAIT`]): an answer is
/// booked just after the endpoint sent it.
fn settled(t: &Telemetry, done: impl Fn((u64, u64, u64)) -> bool) -> (u64, u64, u64) {
    let deadline = Instant::now() + WAIT;
    loop {
        let now = rejected(t);
        if done(now) || Instant::now() > deadline {
            return now;
        }
        std::thread::sleep(Duration::from_millis(20));
    }
}

#[test]
fn otlp_sends_gzip_protobuf_with_the_plugins_numbers_and_the_operators_headers() {
    let dir = tempfile::tempdir().unwrap();
    let endpoint = ScriptedEndpoint::start(vec![], Some(Reply::protobuf(vec![])));
    let extra = format!("{OTLP}\n[telemetry.headers]\nAuthorization = \"Bearer s3cret\"");
    let t = on(dir.path(), &endpoint.url, &extra, &example_entries()[..1]);
    record(&t, 10);
    let got = endpoint.wait_for(1, WAIT);
    let first = got.first().expect("a request");
    assert_eq!(first.content_type.as_deref(), Some("application/x-protobuf"));
    assert_eq!(first.encoding.as_deref(), Some("gzip"));
    assert_eq!(first.authorization.as_deref(), Some("Bearer s3cret"));
    let req = decode(first);
    let resource = req.resource_metrics[0].resource.as_ref().unwrap();
    let instance = resource.attributes.iter().find(|a| a.key == "service.instance.id").unwrap();
    assert!(format!("{:?}", instance.value).contains(&t.instance_id().to_string()));
    assert_eq!(requests_2xx(&req), Some(10.0));
    assert!(settled(&t, |(sent, _, _)| sent >= 1).0 >= 1);
}

/// Reports in every request the endpoint received.
fn reports_received(endpoint: &ScriptedEndpoint) -> u64 {
    endpoint.received().iter().map(|r| decode(r).resource_metrics.len() as u64).sum()
}

/// (sent, refused, received) once every report the endpoint received is
/// booked as sent or refused (or after [`WAIT`]). A report sent twice is
/// received more often than it is booked, and never settles.
fn received_and_booked(t: &Telemetry, endpoint: &ScriptedEndpoint) -> (u64, u64, u64) {
    let deadline = Instant::now() + WAIT;
    loop {
        let (sent, refused, _) = rejected(t);
        let received = reports_received(endpoint);
        if received == sent + refused || Instant::now() > deadline {
            return (sent, refused, received);
        }
        std::thread::sleep(Duration::from_millis(20));
    }
}

#[test]
fn otlp_never_retries_400_413_or_500() {
    for status in [400, 413, 500] {
        let dir = tempfile::tempdir().unwrap();
        let endpoint =
            ScriptedEndpoint::start(vec![Reply::status(status)], Some(Reply::protobuf(vec![])));
        let t = on(dir.path(), &endpoint.url, OTLP, &[]);
        assert!(endpoint.wait_for(3, WAIT).len() >= 3, "{status}: reports go on after a refusal");
        let (sent, refused, received) = received_and_booked(&t, &endpoint);
        assert_eq!(refused, 1, "{status}: the refused report is counted");
        assert_eq!(received, sent + refused, "{status}: each report sent once");
    }
}

#[test]
fn otlp_retries_429_with_retry_after_and_the_gateway_errors() {
    let dir = tempfile::tempdir().unwrap();
    let script = vec![
        Reply::status(429).header("Retry-After", "1"),
        Reply::status(502),
        Reply::status(503),
        Reply::status(504),
    ];
    let endpoint = ScriptedEndpoint::start(script, Some(Reply::protobuf(vec![])));
    let t = on(dir.path(), &endpoint.url, OTLP, &[]);
    let got = endpoint.wait_for(5, WAIT);
    assert!(got.len() >= 5, "{} requests", got.len());
    let gap = got[1].at - got[0].at;
    assert!(gap >= Duration::from_millis(950), "retried after {gap:?}; Retry-After said 1 s");
    // The first report is in every request until one succeeds.
    let first = format!("{:?}", decode(&got[0]).resource_metrics[0]);
    for r in &got[1..5] {
        assert_eq!(format!("{:?}", decode(r).resource_metrics[0]), first, "the same report again");
    }
    // The fifth answer is a success; the uploader books it just after.
    let (sent, refused, _) = settled(&t, |(sent, _, _)| sent >= 1);
    assert!(sent >= 1 && refused == 0, "sent {sent}, refused {refused}");
}

#[test]
fn otlp_partial_success_is_counted_and_not_retried() {
    let dir = tempfile::tempdir().unwrap();
    let partial = ExportMetricsServiceResponse {
        partial_success: Some(ExportMetricsPartialSuccess {
            rejected_data_points: 3,
            error_message: "names too long".into(),
        }),
    };
    let endpoint = ScriptedEndpoint::start(
        vec![Reply::protobuf(partial.encode_to_vec())],
        Some(Reply::protobuf(vec![])),
    );
    let t = on(dir.path(), &endpoint.url, OTLP, &[]);
    let got = endpoint.wait_for(2, WAIT);
    assert!(got.len() >= 2);
    let (sent, refused, received) = received_and_booked(&t, &endpoint);
    assert_eq!((refused, rejected(&t).2), (0, 3), "the rejected points are counted");
    assert_eq!(received, sent, "the partly accepted report is not sent again");
}

/// VictoriaMetrics on a free loopback port with its data in a temp folder;
/// killed on drop.
struct Victoria {
    child: Child,
    addr: String,
    _data: tempfile::TempDir,
}

impl Drop for Victoria {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// The VictoriaMetrics binary: `SONDE_VICTORIA_METRICS`, set by
/// `cargo xtask test` after `.ci/install-victoria-metrics` installs it.
fn victoria_binary() -> Option<PathBuf> {
    std::env::var_os("SONDE_VICTORIA_METRICS").map(PathBuf::from).filter(|p| p.exists())
}

impl Victoria {
    fn start(binary: &PathBuf) -> Victoria {
        let port = std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port();
        let addr = format!("127.0.0.1:{port}");
        let data = tempfile::tempdir().unwrap();
        let child = Command::new(binary)
            .arg(format!("-httpListenAddr={addr}"))
            .arg(format!("-storageDataPath={}", data.path().display()))
            .arg("-search.latencyOffset=0s")
            .arg("-loggerLevel=ERROR")
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("VictoriaMetrics starts");
        let vm = Victoria { child, addr, _data: data };
        let deadline = Instant::now() + Duration::from_secs(20);
        while get(&vm.addr, "/health").is_none_or(|(s, _)| s != 200) {
            assert!(Instant::now() < deadline, "VictoriaMetrics did not become healthy");
            std::thread::sleep(Duration::from_millis(100));
        }
        vm
    }

    /// The value of an instant query, if it returns exactly one series.
    fn query(&self, promql: &str) -> Option<f64> {
        let _ = get(&self.addr, "/internal/force_flush");
        let q: String = promql
            .bytes()
            .map(|b| match b {
                b'a'..=b'z' | b'A'..=b'Z' | b'0'..=b'9' | b'_' | b'.' => (b as char).to_string(),
                _ => format!("%{b:02X}"),
            })
            .collect();
        let (_, body) = get(&self.addr, &format!("/api/v1/query?query={q}"))?;
        let v: serde_json::Value = serde_json::from_slice(&body).ok()?;
        let result = v["data"]["result"].as_array()?;
        if result.len() != 1 {
            return None;
        }
        result[0]["value"][1].as_str()?.parse().ok()
    }
}

/// A plain HTTP/1.1 GET on loopback: (status, body).
fn get(addr: &str, path: &str) -> Option<(u16, Vec<u8>)> {
    let mut s = TcpStream::connect(addr).ok()?;
    s.set_read_timeout(Some(Duration::from_secs(5))).ok()?;
    write!(s, "GET {path} HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\n\r\n").ok()?;
    let mut raw = Vec::new();
    s.read_to_end(&mut raw).ok()?;
    let split = raw.windows(4).position(|w| w == b"\r\n\r\n")?;
    let head = String::from_utf8_lossy(&raw[..split]);
    let status = head.split_whitespace().nth(1)?.parse().ok()?;
    let mut body = raw[split + 4..].to_vec();
    if head.to_ascii_lowercase().contains("transfer-encoding: chunked") {
        body = unchunk(&body);
    }
    Some((status, body))
}

fn unchunk(mut raw: &[u8]) -> Vec<u8> {
    let mut out = Vec::new();
    while let Some(eol) = raw.windows(2).position(|w| w == b"\r\n") {
        let size = std::str::from_utf8(&raw[..eol])
            .ok()
            .and_then(|s| usize::from_str_radix(s.trim(), 16).ok())
            .unwrap_or(0);
        if size == 0 || raw.len() < eol + 2 + size {
            break;
        }
        out.extend_from_slice(&raw[eol + 2..eol + 2 + size]);
        raw = &raw[(eol + 4 + size).min(raw.len())..];
    }
    out
}

#[test]
fn victoria_metrics_stores_what_sonde_sends_over_otlp() {
    let Some(binary) = victoria_binary() else {
        assert!(
            std::env::var_os("CI").is_none(),
            "SONDE_VICTORIA_METRICS is not set: CI must run this test (cargo xtask test installs it)"
        );
        eprintln!("skipped: SONDE_VICTORIA_METRICS not set; `cargo xtask test` installs it");
        return;
    };
    let vm = Victoria::start(&binary);
    let dir = tempfile::tempdir().unwrap();
    let url = format!("http://{}/opentelemetry/v1/metrics", vm.addr);
    let entries: Vec<Entry> =
        example_entries().into_iter().filter(|e| e.name != "user-agent").collect();
    let t = on(
        dir.path(),
        &url,
        &format!("{OTLP}\ninterval = \"1h\"\nmax_interval = \"2h\"\nservice_name = \"e2e\""),
        &entries,
    );
    record(&t, 12);
    for us in [150, 2_500, 2_600, 900_000] {
        t.record(TIMED.event().str("route", "/orders").int("status", 200).int("duration_us", us));
    }
    t.flush().unwrap();
    let outcome = t.send_now().expect("an uploader");
    assert!(outcome.status.is_some_and(|s| (200..300).contains(&s)), "{outcome:?}");
    let instance = t.instance_id().to_string();
    let selector = |name: &str, extra: &str| {
        format!("{name}{{service.name=\"e2e\",service.instance.id=\"{instance}\"{extra}}}")
    };
    let deadline = Instant::now() + WAIT;
    let requests = loop {
        let q = selector("http.requests", ",method=\"GET\",status_class=\"2xx\"");
        match vm.query(&q) {
            Some(v) => break v,
            None if Instant::now() < deadline => std::thread::sleep(Duration::from_millis(200)),
            None => {
                let names = get(&vm.addr, "/api/v1/series?match[]=%7B__name__%3D~%22.%2B%22%7D")
                    .map(|(_, b)| b);
                panic!(
                    "{q} not found; names: {:?}",
                    names.map(|b| String::from_utf8_lossy(&b).into_owned())
                );
            }
        }
    };
    assert_eq!(requests, 12.0, "the plugin's counter, stored by VictoriaMetrics");
    assert_eq!(vm.query(&selector("sonde.events.recorded", "")), Some(16.0));
    // The histogram arrives as Prometheus-style buckets, cumulative by `le`.
    let route = ",route=\"/orders\"";
    assert_eq!(vm.query(&selector("http.route.duration_us_count", route)), Some(4.0));
    assert_eq!(vm.query(&selector("http.route.duration_us_sum", route)), Some(905_250.0));
    let le = |bound: &str| {
        vm.query(&selector("http.route.duration_us_bucket", &format!("{route},le=\"{bound}\"")))
    };
    assert_eq!(le("+Inf"), Some(4.0));
    assert_eq!(le("250"), Some(1.0));
    assert_eq!(vm.query(&selector("sonde.events.dropped", "")), Some(0.0));
}
