//! The long reliability runs behind `cargo xtask reliability` (which builds
//! this in release and writes RELIABILITY.md from its output): `record()`
//! latency under each endpoint fault, tens of seconds of overload, the
//! collector under load from many simulated instances, and a SIGKILL loop.
//! Each section prints Markdown on stdout and fails (exit 1) if what it
//! checks does not hold.
//!
//! ```text
//! sonde-reliability faults [--secs 3]
//! sonde-reliability overload [--secs 20] [--threads 4]
//! sonde-reliability collector [--instances 200] [--reports 10]
//! sonde-reliability crashes [--kills 30]
//! sonde-reliability hostile
//! sonde-reliability fleet [--instances 100] [--reports 10]
//! ```

#![allow(clippy::unwrap_used, reason = "a test runner: a failure is a failed run")]

use std::collections::{BTreeMap, BTreeSet};
use std::io::{BufRead, BufReader, Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering::Relaxed};
use std::sync::{Arc, Barrier, Mutex};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use anyhow::{Context, Result, bail, ensure};
use sonde::{Manifest, Report, Telemetry};
use sonde_tests::{
    Collector, Entry, Fault, FaultyEndpoint, capture_logs, crash_telemetry, example_entries,
    examples_dir, free_port, plugin, plugin_report, total, warnings, write_manifest,
};
use uuid::Uuid;

mod fleet;
mod hostile;

static HTTP: sonde::EventKind = sonde::EventKind::new(
    "http.request",
    &["method", "route", "status", "duration_us", "user_agent"],
);

fn main() {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let result = match args.first().map(String::as_str) {
        Some("faults") => faults(flag(&args, "--secs", 3)),
        Some("overload") => overload(flag(&args, "--secs", 20), flag(&args, "--threads", 4)),
        Some("collector") => {
            collector(flag(&args, "--instances", 200), flag(&args, "--reports", 10))
        }
        Some("crashes") => crashes(flag(&args, "--kills", 30)),
        Some("hostile") => hostile::table(),
        Some("fleet") => fleet::table(
            flag(&args, "--instances", 100) as usize,
            flag(&args, "--reports", 10) as usize,
        ),
        Some("hostile-case") => hostile::case(args.get(1).map_or("baseline", String::as_str)),
        _ => Err(anyhow::anyhow!(
            "usage: sonde-reliability faults|overload|collector|crashes|hostile|fleet"
        )),
    };
    if let Err(e) = result {
        eprintln!("error: {e:#}");
        std::process::exit(1);
    }
}

fn flag(args: &[String], name: &str, default: u64) -> u64 {
    args.windows(2).find(|w| w[0] == name).and_then(|w| w[1].parse().ok()).unwrap_or(default)
}

/// Percentile `p` (0..=100) of sorted `v`.
fn pct(v: &[u64], p: f64) -> u64 {
    if v.is_empty() {
        return 0;
    }
    v[((v.len() - 1) as f64 * p / 100.0).round() as usize]
}

/// Resident memory of this process, in MiB.
fn rss_mib() -> f64 {
    let status = std::fs::read_to_string("/proc/self/status").unwrap_or_default();
    let kib: f64 = status
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.split_whitespace().next()?.parse().ok())
        .unwrap_or(0.0);
    kib / 1024.0
}

fn spool_files(state: &Path) -> usize {
    std::fs::read_dir(state.join("spool"))
        .map(|d| d.filter_map(|e| e.ok()?.metadata().ok()).filter(|m| m.is_file()).count())
        .unwrap_or(0)
}

fn spooled(state: &Path) -> BTreeSet<Uuid> {
    let Ok(dir) = std::fs::read_dir(state.join("spool")) else { return BTreeSet::new() };
    dir.filter_map(|e| {
        let name = e.ok()?.file_name().to_string_lossy().into_owned();
        name.strip_suffix(".json")?.splitn(3, '-').nth(2)?.parse().ok()
    })
    .collect()
}

fn event(i: i64) -> sonde::Event<'static> {
    *HTTP
        .event()
        .str("method", "GET")
        .str("route", "/users/{id}")
        .int("status", 200 + (i % 3) * 100)
        .int("duration_us", 100 + i % 5000)
        .str("user_agent", "curl/8.0")
}

fn start(dir: &Path, url: &str, limit: u32) -> Result<Telemetry> {
    let telemetry = format!(
        "mode = \"on\"\nendpoint = \"{url}\"\nstate_dir = \"state\"\ninterval = \"100ms\"\n\
         min_interval = \"100ms\"\nmax_interval = \"1s\"\nretry_initial = \"100ms\"\n\
         request_timeout = \"1s\"\nconnect_timeout = \"1s\"\nmax_requests_per_hour = {limit}\n\
         spool_max_files = 100"
    );
    let path = write_manifest(dir, &telemetry, &example_entries());
    let t = Telemetry::builder(Manifest::load(&path)?).start()?;
    t.plugins()?;
    Ok(t)
}

/// Times every `record()` call for `secs`, paced at about 100,000 events/s.
fn timed_records(t: &Telemetry, secs: u64) -> Vec<u64> {
    let mut lat = Vec::with_capacity(secs as usize * 120_000);
    let until = Instant::now() + Duration::from_secs(secs);
    let mut i = 0i64;
    while Instant::now() < until {
        for _ in 0..100 {
            let e = event(i);
            let s = Instant::now();
            t.record(&e);
            lat.push(s.elapsed().as_nanos() as u64);
            i += 1;
        }
        std::thread::sleep(Duration::from_millis(1));
    }
    lat.sort_unstable();
    lat
}

struct FaultCase {
    name: &'static str,
    fault: Option<Fault>,
    tls: bool,
}

/// `record()` latency and the delivery checks under each endpoint fault.
fn faults(secs: u64) -> Result<()> {
    capture_logs();
    const LIMIT: u32 = 60;
    let elsewhere = FaultyEndpoint::start(Fault::Healthy);
    let cases = [
        FaultCase { name: "none (healthy endpoint)", fault: Some(Fault::Healthy), tls: false },
        FaultCase { name: "endpoint down (closed port), then back", fault: None, tls: false },
        FaultCase { name: "500", fault: Some(Fault::Status(500, None)), tls: false },
        FaultCase { name: "503", fault: Some(Fault::Status(503, None)), tls: false },
        FaultCase {
            name: "429 + Retry-After: 1",
            fault: Some(Fault::Status(429, Some("1".into()))),
            tls: false,
        },
        FaultCase { name: "hang (no answer)", fault: Some(Fault::Hang), tls: false },
        FaultCase {
            name: "slow trickle (1 byte / 50 ms)",
            fault: Some(Fault::Trickle),
            tls: false,
        },
        FaultCase { name: "garbage (not HTTP)", fault: Some(Fault::Garbage), tls: false },
        FaultCase { name: "truncated body", fault: Some(Fault::Truncated), tls: false },
        FaultCase { name: "connection closed", fault: Some(Fault::Close), tls: false },
        FaultCase { name: "200 + garbage body", fault: Some(Fault::GarbageBody), tls: false },
        FaultCase { name: "200 + 10 MB body", fault: Some(Fault::HugeBody(10 << 20)), tls: false },
        FaultCase {
            name: "307 redirect",
            fault: Some(Fault::Redirect(elsewhere.url.clone())),
            tls: false,
        },
        FaultCase { name: "TLS handshake failure", fault: Some(Fault::Healthy), tls: true },
    ];
    println!(
        "`record()` latency while the endpoint misbehaves for {secs} s (one thread recording \
         about 100,000 events/s, three plugins, reports every 100 ms, \
         `max_requests_per_hour = {LIMIT}`); then the endpoint heals and the reports spooled \
         meanwhile must arrive.\n"
    );
    println!(
        "| fault | record() p50 | p99 | p99.9 | max | requests / limit | warnings | \
         spool peak (files) | RSS peak | spooled reports delivered after |"
    );
    println!("|---|---|---|---|---|---|---|---|---|---|");
    let mut failures = Vec::new();
    for case in cases {
        let dir = tempfile::tempdir()?;
        let state = dir.path().join("state");
        let (endpoint, addr) = match &case.fault {
            Some(f) => {
                let e = FaultyEndpoint::start(f.clone());
                let a = e.addr;
                (Some(e), a)
            }
            None => (None, free_port()),
        };
        let scheme = if case.tls { "https" } else { "http" };
        let url = format!("{scheme}://{addr}/v1/reports");
        let t = start(dir.path(), &url, LIMIT)?;
        let stop = Arc::new(AtomicBool::new(false));
        let peaks = Arc::new(Mutex::new((0usize, 0f64)));
        let sampler = {
            let (stop, peaks, state) = (stop.clone(), peaks.clone(), state.clone());
            std::thread::spawn(move || {
                while !stop.load(Relaxed) {
                    let mut p = peaks.lock().unwrap();
                    p.0 = p.0.max(spool_files(&state));
                    p.1 = p.1.max(rss_mib());
                    drop(p);
                    std::thread::sleep(Duration::from_millis(25));
                }
            })
        };
        let lat = timed_records(&t, secs);
        // Heal: the same server answers 200, or a server comes up on the
        // closed port, or (TLS) the operator fixes the URL and restarts.
        let outage = spooled(&state);
        let healed_at = Instant::now();
        let (endpoint, t) = match (endpoint, case.tls) {
            (Some(e), false) => {
                e.set(Fault::Healthy);
                (e, t)
            }
            (Some(e), true) => {
                drop(t);
                let t = start(dir.path(), &e.url, LIMIT)?;
                (e, t)
            }
            (None, _) => (FaultyEndpoint::start_on(addr, Fault::Healthy), t),
        };
        let delivered = endpoint.wait(Duration::from_secs(20), |e| {
            let got: BTreeSet<Uuid> = e.delivered().into_iter().collect();
            outage.is_subset(&got)
        });
        let recovery = healed_at.elapsed();
        let report = t.report()?;
        let requests = endpoint.attempts().len();
        stop.store(true, Relaxed);
        let _ = sampler.join();
        drop(t);
        let (spool_peak, rss_peak) = *peaks.lock().unwrap();
        let warned = warnings(&addr.to_string()).len();
        // The TLS case restarts the host: two processes' worth of budget.
        let limit = if case.tls { 2 * LIMIT as usize } else { LIMIT as usize };
        // No fault here is a reason to drop a report.
        let ok = delivered
            && report.delivery.rejected == 0
            && requests <= limit
            && warned <= if case.tls { 2 } else { 1 }
            && spool_peak <= 101;
        if !ok {
            failures.push(case.name);
        }
        let after = if delivered {
            format!("all {} in {:.0?}", outage.len(), recovery)
        } else {
            format!("NOT ALL of {}", outage.len())
        };
        println!(
            "| {} | {} ns | {} ns | {} ns | {:.1} µs | {requests} / {limit} | {warned} | {spool_peak} | \
             {rss_peak:.0} MiB | {after} |",
            case.name,
            pct(&lat, 50.0),
            pct(&lat, 99.0),
            pct(&lat, 99.9),
            *lat.last().unwrap_or(&0) as f64 / 1000.0,
        );
    }
    if !failures.is_empty() {
        bail!("faults not survived: {failures:?}");
    }
    Ok(())
}

/// Several threads recording at full speed into a small ring.
fn overload(secs: u64, threads: u64) -> Result<()> {
    let dir = tempfile::tempdir()?;
    let entries = [
        Entry::new("http-status", plugin("http_status.wasm")),
        Entry::new("route-latency", plugin("route_latency.wasm")).config("routes", "/users/{id}"),
    ];
    let path = write_manifest(
        dir.path(),
        "mode = \"local\"\nbuffer_capacity = 1024\nstate_dir = \"s\"",
        &entries,
    );
    let t = Telemetry::builder(Manifest::load(&path)?).start()?;
    t.plugins()?;
    let calls = AtomicU64::new(0);
    let stop = AtomicBool::new(false);
    let started = Instant::now();
    std::thread::scope(|s| {
        for _ in 0..threads {
            let (t, calls, stop) = (t.clone(), &calls, &stop);
            s.spawn(move || {
                let mut n = 0u64;
                while !stop.load(Relaxed) {
                    for i in 0..1024 {
                        t.record(&event(i));
                    }
                    n += 1024;
                }
                calls.fetch_add(n, Relaxed);
            });
        }
        std::thread::sleep(Duration::from_secs(secs));
        stop.store(true, Relaxed);
    });
    let elapsed = started.elapsed().as_secs_f64();
    t.flush()?;
    let report = t.report()?;
    let b = report.buffer;
    let calls = calls.load(Relaxed);
    let status = plugin_report(&report, "http-status");
    let latency = plugin_report(&report, "route-latency");
    let counted = total(status, Some("http.requests")) as u64;
    let timed = total(latency, None) as u64;
    println!(
        "{threads} threads calling `record()` in a loop for {secs} s into a {}-slot ring, \
         plugins `http-status` and `route-latency`:\n",
        b.capacity
    );
    println!("| | events | per second |\n|---|---|---|");
    for (what, n) in [
        ("record() calls", calls),
        ("report: recorded", b.recorded),
        ("report: processed", b.processed),
        ("report: dropped (ring full, counted)", b.dropped),
        ("http-status: counted", counted),
        ("route-latency: observed", timed),
    ] {
        println!("| {what} | {n} | {:.0} |", n as f64 / elapsed);
    }
    let exact = calls == b.recorded && b.recorded == b.processed + b.dropped;
    let agree = counted == b.processed && timed == b.processed;
    println!(
        "\nrecorded = processed + dropped: **{}**; plugins agree with processed: **{}**",
        if exact { "exact" } else { "NO" },
        if agree { "yes" } else { "NO" }
    );
    ensure!(exact && agree, "overload counts do not add up: {b:?}, {counted}, {timed}");
    Ok(())
}

/// One keep-alive HTTP/1.1 connection to the collector.
struct Conn {
    reader: BufReader<TcpStream>,
    addr: SocketAddr,
}

impl Conn {
    fn open(addr: SocketAddr) -> Result<Conn> {
        let s = TcpStream::connect(addr)?;
        s.set_nodelay(true)?;
        Ok(Conn { reader: BufReader::new(s), addr })
    }

    /// POSTs a gzip body; returns (status, body).
    fn post(&mut self, gzip: &[u8]) -> Result<(u16, String)> {
        let head = format!(
            "POST /v1/reports HTTP/1.1\r\nhost: {}\r\ncontent-type: application/json\r\n\
             content-encoding: gzip\r\ncontent-length: {}\r\n\r\n",
            self.addr,
            gzip.len()
        );
        let s = self.reader.get_mut();
        s.write_all(head.as_bytes())?;
        s.write_all(gzip)?;
        self.response()
    }

    /// GETs `path`; returns (status, body).
    fn get(&mut self, path: &str) -> Result<(u16, String)> {
        let head = format!("GET {path} HTTP/1.1\r\nhost: {}\r\n\r\n", self.addr);
        self.reader.get_mut().write_all(head.as_bytes())?;
        self.response()
    }

    /// Reads one response: (status, body).
    fn response(&mut self) -> Result<(u16, String)> {
        let mut status = String::new();
        self.reader.read_line(&mut status)?;
        let code: u16 =
            status.split_whitespace().nth(1).context("no status")?.parse().context("status")?;
        let mut len = 0usize;
        loop {
            let mut line = String::new();
            self.reader.read_line(&mut line)?;
            if line == "\r\n" || line.is_empty() {
                break;
            }
            if let Some((k, v)) = line.split_once(':')
                && k.eq_ignore_ascii_case("content-length")
            {
                len = v.trim().parse()?;
            }
        }
        let mut body = vec![0; len];
        self.reader.read_exact(&mut body)?;
        Ok((code, String::from_utf8_lossy(&body).into_owned()))
    }
}

fn gzip(bytes: &[u8]) -> Vec<u8> {
    let mut enc = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::default());
    enc.write_all(bytes).unwrap();
    enc.finish().unwrap()
}

/// A realistic report: the example plugins over the example events.
fn sample_report() -> Result<Report> {
    let dir = tempfile::tempdir()?;
    let path =
        write_manifest(dir.path(), "mode = \"local\"\nstate_dir = \"s\"", &example_entries());
    let t = Telemetry::builder(Manifest::load(&path)?).start()?;
    let text = std::fs::read_to_string(examples_dir().join("events.jsonl"))?;
    let records = sonde_core::parse_events_jsonl(&text, Path::new("events.jsonl"))?;
    for e in sonde::events_from_records(&records)? {
        t.record(&e);
    }
    Ok(t.report()?)
}

/// Many simulated instances posting reports to a real collector at once.
fn collector(instances: u64, reports: u64) -> Result<()> {
    const GREEDY: u64 = 10;
    const GREEDY_POSTS: u64 = 60;
    const BURST: u64 = 20;
    let dir = tempfile::tempdir()?;
    let policy = format!("[rate_limit]\nreports_per_minute = 600\nburst = {BURST}\n");
    let c = Collector::start(dir.path(), &policy);
    let addr = c.addr;
    let template = sample_report()?;
    let total_threads = (instances + GREEDY) as usize;
    let barrier = Arc::new(Barrier::new(total_threads));
    let started = Instant::now();
    let deadline = started + Duration::from_secs(120);
    let mut handles = Vec::new();
    for n in 0..instances + GREEDY {
        let greedy = n >= instances;
        let posts = if greedy { GREEDY_POSTS } else { reports };
        let (barrier, template) = (barrier.clone(), template.clone());
        handles.push(std::thread::spawn(move || -> Result<Outcome> {
            let instance = Uuid::new_v4();
            let mut conn = Conn::open(addr)?;
            let mut out = Outcome { instance, greedy, ..Outcome::default() };
            barrier.wait();
            for _ in 0..posts {
                if Instant::now() > deadline {
                    break;
                }
                let mut r = template.clone();
                r.instance_id = instance;
                r.report_id = Uuid::new_v4();
                let body = gzip(
                    format!("{{\"reports\":[{}]}}", String::from_utf8(r.to_json())?).as_bytes(),
                );
                let s = Instant::now();
                let (code, text) = conn.post(&body)?;
                out.latencies.push(s.elapsed().as_micros() as u64);
                match code {
                    200 => {
                        let v: serde_json::Value = serde_json::from_str(&text)?;
                        ensure!(v["accepted"] == 1, "a new report must be accepted: {text}");
                        out.accepted.push((r.report_id, body));
                    }
                    429 => out.throttled += 1,
                    other => bail!("unexpected {other}: {text}"),
                }
            }
            Ok(out)
        }));
    }
    let mut outcomes = Vec::new();
    for h in handles {
        outcomes.push(h.join().map_err(|_| anyhow::anyhow!("a client panicked"))??);
    }
    let elapsed = started.elapsed().as_secs_f64();
    let mut lat: Vec<u64> = outcomes.iter().flat_map(|o| o.latencies.iter().copied()).collect();
    lat.sort_unstable();
    let requests = lat.len();
    let accepted: usize = outcomes.iter().map(|o| o.accepted.len()).sum();
    let throttled_normal: u64 = outcomes.iter().filter(|o| !o.greedy).map(|o| o.throttled).sum();
    let throttled_greedy: u64 = outcomes.iter().filter(|o| o.greedy).map(|o| o.throttled).sum();

    // Nothing lost: each instance has exactly the reports it got a 200 for.
    let mut lost = 0usize;
    for o in &outcomes {
        let stored: BTreeSet<Uuid> = c.reports(o.instance).iter().map(|r| r.report_id).collect();
        let sent: BTreeSet<Uuid> = o.accepted.iter().map(|(id, _)| *id).collect();
        lost += sent.difference(&stored).count() + stored.difference(&sent).count();
    }
    // Duplicates: the same bodies again are answered 200 with accepted = 0
    // (or 429 when over the limit) and store nothing.
    let before: usize = outcomes.iter().map(|o| c.reports(o.instance).len()).sum();
    let mut dup_accepted = 0usize;
    let mut dup_posts = 0usize;
    for o in outcomes.iter().filter(|o| !o.greedy).take(100) {
        let mut conn = Conn::open(addr)?;
        let (_, body) = &o.accepted[0];
        let (code, text) = conn.post(body)?;
        dup_posts += 1;
        if code == 200 {
            let v: serde_json::Value = serde_json::from_str(&text)?;
            dup_accepted += v["accepted"].as_u64().unwrap_or(1) as usize;
        }
    }
    let after: usize = outcomes.iter().map(|o| c.reports(o.instance).len()).sum();

    println!(
        "{instances} simulated instances posting {reports} reports each (one per request, \
         gzip, {} bytes of JSON) plus {GREEDY} greedy instances posting {GREEDY_POSTS} \
         back to back, all at once on loopback, to an in-process `sonde-collector` (SQLite \
         on disk, rate limit 600/min with a burst of {BURST}):\n",
        template.to_json().len()
    );
    println!("| figure | value |\n|---|---|");
    println!("| requests | {requests} in {elapsed:.1} s |");
    println!("| sustained | {:.0} requests/s |", requests as f64 / elapsed);
    println!(
        "| latency p50 / p99 / max | {:.1} / {:.1} / {:.1} ms |",
        pct(&lat, 50.0) as f64 / 1000.0,
        pct(&lat, 99.0) as f64 / 1000.0,
        *lat.last().unwrap_or(&0) as f64 / 1000.0
    );
    println!("| reports accepted (200) | {accepted} |");
    println!("| accepted but not stored, or stored but not accepted | {lost} |");
    println!("| 429 to instances within their limit | {throttled_normal} |");
    println!("| 429 to the greedy instances | {throttled_greedy} |");
    println!(
        "| duplicates re-posted / accepted / stored | {dup_posts} / {dup_accepted} / {} |",
        after - before
    );
    ensure!(lost == 0, "reports lost");
    ensure!(throttled_normal == 0, "instances within their limit were throttled");
    ensure!(
        outcomes.iter().filter(|o| o.greedy).all(|o| o.throttled > 0),
        "every instance over its limit gets 429s"
    );
    ensure!(dup_accepted == 0 && after == before, "a duplicate was stored");
    Ok(())
}

#[derive(Default)]
struct Outcome {
    instance: Uuid,
    greedy: bool,
    latencies: Vec<u64>,
    accepted: Vec<(Uuid, Vec<u8>)>,
    throttled: u64,
}

/// SIGKILL loop against the crash child (built next to this binary).
fn crashes(kills: u64) -> Result<()> {
    let exe = std::env::current_exe()?.with_file_name("sonde-crash-child");
    ensure!(exe.exists(), "{} is missing: build the tests package's bins", exe.display());
    let dir = tempfile::tempdir()?;
    let state = dir.path().join("state");
    let c =
        Collector::start(dir.path(), "[rate_limit]\nreports_per_minute = 60000\nburst = 10000\n");
    let to = c.addr;
    let proxy = FaultyEndpoint::start(Fault::Status(503, None));
    let telemetry = format!("{}\nspool_max_files = 100000", crash_telemetry(&proxy.url));
    let manifest = write_manifest(dir.path(), &telemetry, &example_entries());
    let spawn = || -> Result<(Child, Uuid)> {
        let mut child = Command::new(&exe)
            .arg(&manifest)
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .spawn()?;
        let mut line = String::new();
        BufReader::new(child.stdout.take().context("stdout")?).read_line(&mut line)?;
        let id = line.trim().strip_prefix("started ").context("not started")?.parse()?;
        Ok((child, id))
    };
    let mut kept = BTreeSet::new();
    let mut corrupt = 0usize;
    let mut lost = 0usize;
    let mut instance = None;
    let started = Instant::now();
    // Half the kills while reports are spooled, half with a send in flight.
    for k in 0..kills {
        let in_flight = k % 2 == 1;
        proxy.set(if in_flight {
            Fault::Forward { to, hold: true }
        } else {
            Fault::Status(503, None)
        });
        let held = proxy.held();
        let (mut child, id) = spawn()?;
        ensure!(*instance.get_or_insert(id) == id, "the instance id changed");
        if in_flight {
            proxy.wait(Duration::from_secs(20), |p| p.held() > held);
        } else {
            let nanos = SystemTime::now().duration_since(UNIX_EPOCH)?.subsec_nanos() as u64;
            std::thread::sleep(Duration::from_millis(150 + nanos % 500));
        }
        child.kill()?;
        child.wait()?;
        let mut now = BTreeSet::new();
        for e in std::fs::read_dir(state.join("spool"))? {
            let p = e?.path();
            if p.extension().is_some_and(|x| x == "json") {
                match serde_json::from_slice::<Report>(&std::fs::read(&p)?) {
                    Ok(r) => {
                        now.insert(r.report_id);
                    }
                    Err(_) => corrupt += 1,
                }
            }
        }
        // Delivered reports leave the spool; anything else that left it is lost.
        let stored: BTreeSet<Uuid> = c.reports(id).iter().map(|r| r.report_id).collect();
        lost += kept.iter().filter(|r| !now.contains(r) && !stored.contains(r)).count();
        kept = now;
    }
    let instance = instance.context("no run")?;
    proxy.set(Fault::Forward { to, hold: false });
    let (mut child, _) = spawn()?;
    let deadline = Instant::now() + Duration::from_secs(60);
    while Instant::now() < deadline {
        let stored: BTreeSet<Uuid> = c.reports(instance).iter().map(|r| r.report_id).collect();
        if kept.is_subset(&stored) {
            break;
        }
        std::thread::sleep(Duration::from_millis(100));
    }
    drop(child.stdin.take());
    ensure!(child.wait()?.success(), "the last run did not exit cleanly");
    let rows = c.reports(instance);
    let mut per_id: BTreeMap<Uuid, usize> = BTreeMap::new();
    for r in &rows {
        *per_id.entry(r.report_id).or_default() += 1;
    }
    let duplicates = per_id.values().filter(|&&n| n > 1).count();
    let missing = kept.iter().filter(|id| !per_id.contains_key(id)).count();
    let resent = proxy
        .attempts()
        .iter()
        .filter(|a| matches!(a.fault, Fault::Forward { hold: true, .. }))
        .count();
    let bad = std::fs::read_dir(state.join("spool/bad")).map(|d| d.count()).unwrap_or(0);
    println!(
        "{kills} SIGKILLs of a host process (`sonde-crash-child`, three plugins, reports every \
         100 ms): {} while reports were built and spooled at a random moment, {} after the \
         collector had stored a batch whose answer was withheld; then a restart and a clean \
         stop, {:.0} s in all:\n",
        kills.div_ceil(2),
        kills / 2,
        started.elapsed().as_secs_f64()
    );
    println!("| figure | value |\n|---|---|");
    println!("| reports stored by the collector | {} |", rows.len());
    println!("| batches stored whose answer was lost (resent after restart) | {resent} |");
    println!("| spooled reports lost | {} |", lost + missing);
    println!("| spool files corrupt after a kill / set aside | {corrupt} / {bad} |");
    println!("| reports stored more than once | {duplicates} |");
    ensure!(
        lost + missing == 0 && corrupt == 0 && bad == 0 && duplicates == 0,
        "crash loop failed"
    );
    Ok(())
}
