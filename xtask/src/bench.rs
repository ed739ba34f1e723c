//! `cargo xtask bench`: every benchmark, side by side with its peer, written
//! to BENCHMARKS.md.
//!
//! 1. The criterion benchmarks of `benches/` (record, dispatch, start,
//!    report); their medians are read from `target/criterion`.
//! 2. The example axum server under wrk (Debian's package): throughput
//!    with telemetry on against off measured side by side (both servers
//!    sharing one core at the same time, so the VM's speed swings hit both),
//!    and latency from alternating short bursts of one server at a time.
//! 3. The server's steady RSS after the load, off and on.
//!
//! `benches/NOTES.md` (what was profiled, what changed and what it bought)
//! is appended as it is.

use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use anyhow::{Context, Result, bail, ensure};

/// Pairs of one-server bursts (off, on) for latency (see [`alternating`]).
const PAIRS: usize = 20;
/// wrk connections.
const CONNECTIONS: u32 = 16;
/// Side-by-side bursts of telemetry on beside off (see [`side_by_side`]).
const BURSTS: usize = 30;
/// Side-by-side bursts of off beside off: the instrument's own spread.
const CONTROL_BURSTS: usize = 16;
/// Seconds per side-by-side burst.
const BURST_SECS: u32 = 2;

struct Guard(Child);

impl Drop for Guard {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

pub(crate) fn run(root: &Path, args: &[String]) -> Result<()> {
    let (quick, server_only) = match args {
        [] => (false, false),
        [flag] if flag == "--quick" => (true, false),
        [flag] if flag == "--server" => (false, true),
        _ => bail!("usage: cargo xtask bench [--quick | --server]"),
    };
    let started = Instant::now();
    crate::print_built(root, &crate::build_components(root, &crate::PLUGINS)?);
    crate::cargo(
        root,
        &["build", "--release", "--quiet", "-p", "sonde-cli", "-p", "sonde-example-server"],
    )?;
    let wrk = ensure_wrk()?;
    if server_only {
        return server_rounds(root, &wrk);
    }

    let criterion_dir = root.join("target/criterion");
    let _ = std::fs::remove_dir_all(&criterion_dir);
    let mut bench = vec!["bench", "-p", "sonde-benches"];
    if quick {
        bench.extend(["--", "--warm-up-time", "1", "--measurement-time", "1"]);
    }
    crate::cargo(root, &bench)?;
    let medians = criterion_medians(&criterion_dir)?;

    let manifest = pinned_manifest(root)?;
    let server = root.join("target/release/sonde-example-server");
    let bursts = if quick { 3 } else { BURSTS };
    let control = if quick { 2 } else { CONTROL_BURSTS };
    // Side by side first: its on-server compiles the plugins into the fresh
    // cache, so the servers whose RSS is read load them from it (a process
    // that compiled keeps ~8 MiB more: the compiler's code pages, 5 MiB, and
    // heap its arena keeps).
    let pairs = SideBySide {
        on: side_by_side(&server, &wrk, Some(&manifest), bursts)?,
        control: side_by_side(&server, &wrk, None, control)?,
    };
    let (off, on) = alternating(&server, &wrk, &manifest, if quick { 2 } else { PAIRS })?;
    let text = render(root, &medians, (&off, &on), &pairs)?;
    std::fs::write(root.join("BENCHMARKS.md"), text)?;
    println!("BENCHMARKS.md written in {:.0?}", started.elapsed());
    Ok(())
}

/// `--server`: only the wrk runs, printed (for profiling and trying
/// changes; BENCHMARKS.md is left alone).
fn server_rounds(root: &Path, wrk: &Path) -> Result<()> {
    let manifest = pinned_manifest(root)?;
    let server = root.join("target/release/sonde-example-server");
    for (label, manifest, bursts) in [
        ("on beside off", Some(manifest.as_path()), BURSTS),
        ("off beside off", None, CONTROL_BURSTS),
    ] {
        let ratios = side_by_side(&server, wrk, manifest, bursts)?;
        let (lo, mid, hi) = spread(&ratios);
        println!(
            "side by side, {label}: median {:.1} % (middle half {:.1}-{:.1} %) over {bursts} bursts: {}",
            mid * 100.0,
            lo * 100.0,
            hi * 100.0,
            percents(&ratios)
        );
    }
    let (off, on) = alternating(&server, wrk, &manifest, PAIRS)?;
    for (pair, (off, on)) in off.iter().zip(&on).enumerate() {
        for (label, l) in [("off", off), ("on", on)] {
            println!(
                "pair {} telemetry {label:3}: {:.0} req/s, p99 {:.0} µs, {:.2} µs CPU/request ({:.2} on sonde threads), RSS {:.1} MiB",
                pair + 1,
                l.requests_per_sec,
                l.p99_us,
                l.cpu_us_per_request,
                l.sonde_threads_us_per_request,
                l.rss_kib / 1024.0
            );
        }
    }
    println!("p99 on/off, median of the pairs: {:.2}", paired_p99(&off, &on));
    let (off, on) = (median_load(&off), median_load(&on));
    println!(
        "median: throughput on/off {:.1} %, p99 on/off {:.2}, CPU/request off {:.2} µs, on {:.2} µs ({:.2} on sonde threads)",
        on.requests_per_sec / off.requests_per_sec * 100.0,
        on.p99_us / off.p99_us,
        off.cpu_us_per_request,
        on.cpu_us_per_request,
        on.sonde_threads_us_per_request
    );
    Ok(())
}

/// wrk from Debian's packages (installed when missing, as root).
fn ensure_wrk() -> Result<PathBuf> {
    let found = |p: &str| Path::new(p).exists().then(|| PathBuf::from(p));
    if let Some(p) = found("/usr/bin/wrk") {
        return Ok(p);
    }
    eprintln!("+ apt-get install -y wrk");
    let ok = Command::new("apt-get")
        .args(["install", "-y", "-qq", "wrk"])
        .env("DEBIAN_FRONTEND", "noninteractive")
        .status()
        .is_ok_and(|s| s.success());
    if !ok {
        let _ = Command::new("apt-get").args(["update", "-qq"]).status();
        let status = Command::new("apt-get")
            .args(["install", "-y", "-qq", "wrk"])
            .env("DEBIAN_FRONTEND", "noninteractive")
            .status()?;
        ensure!(status.success(), "cannot install wrk (apt-get install wrk)");
    }
    found("/usr/bin/wrk").context("wrk was installed but /usr/bin/wrk is missing")
}

/// A copy of examples/sonde.toml under target/bench, re-pinned with the
/// release `sonde` (the example's pins hold for one toolchain).
fn pinned_manifest(root: &Path) -> Result<PathBuf> {
    let dir = root.join("target/bench");
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir)?;
    let text = std::fs::read_to_string(root.join("examples/sonde.toml"))?
        .replace("\"../target/plugins/", "\"../plugins/")
        .replace("\"../target/sonde-state\"", "\"state\"");
    let path = dir.join("sonde.toml");
    std::fs::write(&path, text)?;
    let status = Command::new(root.join("target/release/sonde"))
        .args(["pin", "-m"])
        .arg(&path)
        .stdout(Stdio::null())
        .status()?;
    ensure!(status.success(), "sonde pin failed");
    Ok(path)
}

/// Figures of one wrk run against the server.
#[derive(Debug, Clone, Copy, Default)]
struct Load {
    requests_per_sec: f64,
    p50_us: f64,
    p90_us: f64,
    p99_us: f64,
    rss_kib: f64,
    /// Requests wrk completed in the measured run.
    requests: f64,
    /// The server's CPU time (user + system, all threads) per request, µs.
    cpu_us_per_request: f64,
    /// The part of it spent on sonde's own threads (dispatcher, epoch
    /// ticker), µs per request.
    sonde_threads_us_per_request: f64,
}

/// CPU time (user + system, in clock ticks) of process `pid`: all threads,
/// and the threads whose name starts with `sonde-`.
fn cpu_ticks(pid: u32) -> Result<(u64, u64)> {
    let mut all = 0;
    let mut sonde = 0;
    for entry in std::fs::read_dir(format!("/proc/{pid}/task"))? {
        let stat = std::fs::read_to_string(entry?.path().join("stat"))?;
        // `pid (comm) state ...`: comm may hold spaces, so split after ')'.
        let (head, rest) = stat.rsplit_once(')').context("malformed /proc stat")?;
        let comm = head.split_once('(').map_or("", |(_, c)| c);
        let fields: Vec<&str> = rest.split_whitespace().collect();
        // utime and stime are fields 14 and 15 of the line, 12 and 13 after ')'.
        let ticks: u64 = fields.get(11).and_then(|v| v.parse::<u64>().ok()).unwrap_or(0)
            + fields.get(12).and_then(|v| v.parse::<u64>().ok()).unwrap_or(0);
        all += ticks;
        if comm.starts_with("sonde-") {
            sonde += ticks;
        }
    }
    Ok((all, sonde))
}

/// Clock ticks per second (`getconf CLK_TCK`; 100 on Linux).
fn ticks_per_sec() -> f64 {
    crate::reliability::output_of("getconf", &["CLK_TCK"]).trim().parse().unwrap_or(100.0)
}

/// A running example server.
struct Server {
    child: Guard,
    url: String,
}

/// Starts the example server pinned to CPU 0 (telemetry on with
/// `manifest`, user agents recorded) and waits until it accepts
/// connections. `own_session` starts it in a new session: with the
/// kernel's autogroup scheduling, each session is one group that gets an
/// equal share of a busy CPU whatever its thread count.
fn start_server(server: &Path, manifest: Option<&Path>, own_session: bool) -> Result<Server> {
    let addr = std::net::TcpListener::bind("127.0.0.1:0")?.local_addr()?.to_string();
    let mut cmd = Command::new(if own_session { "setsid" } else { "taskset" });
    if own_session {
        cmd.arg("taskset");
    }
    cmd.args(["-c", "0"]).arg(server).args(["--listen", &addr]);
    if let Some(m) = manifest {
        cmd.arg("--manifest").arg(m).arg("--user-agents");
    }
    let child = Guard(
        cmd.env("SONDE_LOG", "error")
            .stdout(Stdio::null())
            .stderr(Stdio::inherit())
            .spawn()
            .context("starting the example server")?,
    );
    let deadline = Instant::now() + Duration::from_secs(20);
    while std::net::TcpStream::connect(&addr).is_err() {
        ensure!(Instant::now() < deadline, "the example server did not start");
        std::thread::sleep(Duration::from_millis(50));
    }
    Ok(Server { child, url: format!("http://{addr}/users/42") })
}

/// Runs wrk (pinned to CPU 1, in its own session when `own_session`)
/// against `url` for `secs`.
fn wrk_run(wrk: &Path, url: &str, secs: u32, own_session: bool) -> Result<Load> {
    let mut cmd = Command::new(if own_session { "setsid" } else { "taskset" });
    if own_session {
        cmd.arg("taskset");
    }
    let out = cmd
        .args(["-c", "1"])
        .arg(wrk)
        .args(["-t1", &format!("-c{CONNECTIONS}"), &format!("-d{secs}s"), "--latency"])
        .args(["-H", "User-Agent: Mozilla/5.0 (X11; Linux x86_64; rv:120.0) Firefox/120.0"])
        .arg(url)
        .output()
        .context("running wrk")?;
    ensure!(out.status.success(), "wrk failed: {}", String::from_utf8_lossy(&out.stderr));
    let text = String::from_utf8_lossy(&out.stdout);
    parse_wrk(&text).with_context(|| format!("unexpected wrk output:\n{text}"))
}

/// Latency (and CPU time, RSS) of one server at a time: two warm servers,
/// off and on, pinned to CPU 0, loaded in turn by wrk on CPU 1 in `pairs`
/// pairs of [`BURST_SECS`] bursts (the order alternating), so that only one
/// is busy at a time. Many short pairs instead of a few long rounds: this
/// VM's speed swings within seconds, and a pair's two bursts see mostly the
/// same swing. Returns the off and on bursts, pair by pair.
fn alternating(
    server: &Path,
    wrk: &Path,
    manifest: &Path,
    pairs: usize,
) -> Result<(Vec<Load>, Vec<Load>)> {
    let off = start_server(server, None, false)?;
    let on = start_server(server, Some(manifest), false)?;
    let us_per_tick = 1e6 / ticks_per_sec();
    let burst = |s: &Server, secs: u32| -> Result<Load> {
        let pid = s.child.0.id();
        let before = cpu_ticks(pid)?;
        let mut load = wrk_run(wrk, &s.url, secs, false)?;
        let after = cpu_ticks(pid)?;
        load.rss_kib = rss_kib(pid).unwrap_or(0.0);
        load.cpu_us_per_request = (after.0 - before.0) as f64 * us_per_tick / load.requests;
        load.sonde_threads_us_per_request =
            (after.1 - before.1) as f64 * us_per_tick / load.requests;
        Ok(load)
    };
    // Warm-up: connections, allocator, plugin caches.
    burst(&off, 2)?;
    burst(&on, 2)?;
    let (mut offs, mut ons) = (Vec::with_capacity(pairs), Vec::with_capacity(pairs));
    for pair in 0..pairs {
        eprintln!("one-server pair {}/{pairs}", pair + 1);
        if pair % 2 == 0 {
            offs.push(burst(&off, BURST_SECS)?);
            ons.push(burst(&on, BURST_SECS)?);
        } else {
            ons.push(burst(&on, BURST_SECS)?);
            offs.push(burst(&off, BURST_SECS)?);
        }
    }
    Ok((offs, ons))
}

/// The median of the pairs' p99 ratios, on / off.
fn paired_p99(off: &[Load], on: &[Load]) -> f64 {
    median(off.iter().zip(on).map(|(off, on)| on.p99_us / off.p99_us).collect())
}

/// Throughput of a server with `manifest` (telemetry off without one)
/// beside a server with telemetry off, at the same time: both pinned to
/// CPU 0, each in its own session (so the scheduler splits the core evenly
/// between the two servers, not between their threads), each loaded by its
/// own wrk on CPU 1, in `bursts` bursts of [`BURST_SECS`]. Returns each
/// burst's ratio of the two servers' requests/s.
///
/// Run one after the other, rounds of the same server on this VM differ by
/// up to ±15 % (its speed swings within seconds), far more than the 2 %
/// the goal is about; side by side, both servers see the same swings, and
/// off beside off gives ratios within a few percent of 1.
fn side_by_side(
    server: &Path,
    wrk: &Path,
    manifest: Option<&Path>,
    bursts: usize,
) -> Result<Vec<f64>> {
    if !std::fs::read_to_string("/proc/sys/kernel/sched_autogroup_enabled")
        .is_ok_and(|v| v.trim() == "1")
    {
        eprintln!(
            "warning: autogroup scheduling is off (/proc/sys/kernel/sched_autogroup_enabled): the servers share CPU 0 by threads, which favours the one with more"
        );
    }
    let off = start_server(server, None, true)?;
    let other = start_server(server, manifest, true)?;
    // `swap` alternates which wrk starts first (the control showed a bias
    // of about 1 % towards one side when the order was fixed).
    let both = |secs: u32, swap: bool| -> Result<(Load, Load)> {
        let (first, second) = if swap { (&other.url, &off.url) } else { (&off.url, &other.url) };
        let (x, y) = std::thread::scope(|scope| {
            let x = scope.spawn(|| wrk_run(wrk, first, secs, true));
            let y = wrk_run(wrk, second, secs, true);
            let x = x.join().map_err(|_| anyhow::anyhow!("wrk thread panicked"))?;
            anyhow::Ok((x?, y?))
        })?;
        Ok(if swap { (y, x) } else { (x, y) })
    };
    both(2, false)?; // warm-up
    let mut ratios = Vec::with_capacity(bursts);
    for burst in 0..bursts {
        let (a, b) = both(BURST_SECS, burst % 2 == 1)?;
        eprintln!(
            "side-by-side burst {}/{bursts}: {:.0} vs {:.0} req/s",
            burst + 1,
            b.requests_per_sec,
            a.requests_per_sec
        );
        ratios.push(b.requests_per_sec / a.requests_per_sec);
    }
    Ok(ratios)
}

/// The side-by-side ratios (telemetry on / off, and off / off).
struct SideBySide {
    on: Vec<f64>,
    control: Vec<f64>,
}

/// Lower quartile, median and upper quartile.
fn spread(v: &[f64]) -> (f64, f64, f64) {
    let mut v = v.to_vec();
    v.sort_by(f64::total_cmp);
    let at = |q: f64| {
        v.get((v.len().saturating_sub(1) as f64 * q).round() as usize).copied().unwrap_or(0.0)
    };
    (at(0.25), at(0.5), at(0.75))
}

/// Ratios as percentages, comma-separated.
fn percents(v: &[f64]) -> String {
    v.iter().map(|r| format!("{:.1}", r * 100.0)).collect::<Vec<_>>().join(", ")
}

fn parse_wrk(text: &str) -> Option<Load> {
    let mut load = Load::default();
    for line in text.lines().map(str::trim) {
        let mut words = line.split_whitespace();
        match (words.next(), words.next()) {
            (Some("Requests/sec:"), Some(v)) => load.requests_per_sec = v.parse().ok()?,
            (Some("50%"), Some(v)) => load.p50_us = micros(v)?,
            (Some("90%"), Some(v)) => load.p90_us = micros(v)?,
            (Some("99%"), Some(v)) => load.p99_us = micros(v)?,
            (Some(n), Some("requests")) => load.requests = n.parse().ok()?,
            _ => {}
        }
    }
    (load.requests_per_sec > 0.0 && load.p99_us > 0.0 && load.requests > 0.0).then_some(load)
}

/// wrk's `123.45us`, `1.20ms`, `2.00s` in microseconds.
fn micros(v: &str) -> Option<f64> {
    let split = v.find(|c: char| c.is_ascii_alphabetic())?;
    let (n, unit) = v.split_at(split);
    let n: f64 = n.parse().ok()?;
    Some(match unit {
        "us" => n,
        "ms" => n * 1e3,
        "s" => n * 1e6,
        _ => return None,
    })
}

fn rss_kib(pid: u32) -> Option<f64> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    let line = status.lines().find(|l| l.starts_with("VmRSS:"))?;
    line.split_whitespace().nth(1)?.parse().ok()
}

fn median(mut v: Vec<f64>) -> f64 {
    v.sort_by(f64::total_cmp);
    v.get(v.len() / 2).copied().unwrap_or(0.0)
}

fn median_load(runs: &[Load]) -> Load {
    let m = |f: fn(&Load) -> f64| median(runs.iter().map(f).collect());
    Load {
        requests_per_sec: m(|l| l.requests_per_sec),
        p50_us: m(|l| l.p50_us),
        p90_us: m(|l| l.p90_us),
        p99_us: m(|l| l.p99_us),
        rss_kib: m(|l| l.rss_kib),
        requests: m(|l| l.requests),
        cpu_us_per_request: m(|l| l.cpu_us_per_request),
        sonde_threads_us_per_request: m(|l| l.sonde_threads_us_per_request),
    }
}

/// Criterion's median time per iteration (ns) for every benchmark, keyed
/// `group/function` as the benchmarks name them.
fn criterion_medians(dir: &Path) -> Result<BTreeMap<String, f64>> {
    let mut out = BTreeMap::new();
    let mut stack = vec![dir.to_path_buf()];
    while let Some(d) = stack.pop() {
        for entry in std::fs::read_dir(&d).with_context(|| d.display().to_string())? {
            let path = entry?.path();
            if path.is_dir() {
                stack.push(path);
                continue;
            }
            if !path.ends_with("new/benchmark.json") {
                continue;
            }
            let meta: serde_json::Value = serde_json::from_slice(&std::fs::read(&path)?)?;
            let est_path = path.with_file_name("estimates.json");
            let est: serde_json::Value = serde_json::from_slice(&std::fs::read(&est_path)?)?;
            let id = meta["full_id"].as_str().context("benchmark.json without full_id")?;
            let ns = est["median"]["point_estimate"].as_f64().context("no median")?;
            out.insert(id.to_string(), ns);
        }
    }
    ensure!(!out.is_empty(), "no criterion results under {}", dir.display());
    Ok(out)
}

/// `goal` met, or missed by how much.
fn verdict(met: bool, miss: impl FnOnce() -> String) -> String {
    if met { "met".into() } else { format!("**missed**: {}", miss()) }
}

fn render(
    root: &Path,
    m: &BTreeMap<String, f64>,
    (off_runs, on_runs): (&[Load], &[Load]),
    pairs: &SideBySide,
) -> Result<String> {
    let (off, on) = (&median_load(off_runs), &median_load(on_runs));
    let rounds = off_runs.len();
    let get = |id: &str| -> Result<f64> {
        m.get(id).copied().with_context(|| format!("no criterion result for {id}"))
    };
    let mut s = String::new();
    let date = crate::reliability::output_of("date", &["-u", "+%Y-%m-%d %H:%M UTC"]);
    let commit = crate::reliability::output_of(
        "git",
        &["-C", &root.display().to_string(), "rev-parse", "--short", "HEAD"],
    );
    writeln!(s, "# Benchmarks\n")?;
    writeln!(
        s,
        "Written by `cargo xtask bench` (do not edit by hand; notes go to `benches/NOTES.md`).\n"
    )?;
    writeln!(s, "- Machine: {}", crate::reliability::hardware())?;
    writeln!(
        s,
        "- Date: {date}; commit {commit}; {}",
        crate::reliability::output_of("rustc", &["-V"])
    )?;
    writeln!(
        s,
        "- Criterion medians (release profile); every peer is measured in the same run, same process kind, same machine.\n"
    )?;

    writeln!(s, "## 1. `record()` on the request path\n")?;
    writeln!(
        s,
        "ns per event (per thread with 2 threads), the event `http.request` with method, route and status. Floor (the goal's): a bare `crossbeam_queue::ArrayQueue` push of the same event as an owned 344-byte value. In-place floor: a bare `thingbuf` slot (one queue, no sonde) with the same bytes written into it, which is what sonde's ring does per shard. Peers: OpenTelemetry SDK 0.33 `Counter::add` with 3 attributes (ManualReader), `metrics` 0.24 `counter!` with 3 labels through `metrics-exporter-prometheus` 0.18's recorder.\n"
    )?;
    writeln!(
        s,
        "| threads | buffer | sonde | floor | sonde / floor (goal ≤ 1.5) | in-place floor | sonde / in-place | OpenTelemetry | OTel / sonde (goal ≥ 3) | metrics | metrics / sonde (goal ≥ 3) |"
    )?;
    writeln!(s, "|---|---|---|---|---|---|---|---|---|---|---|")?;
    for t in [1, 2] {
        let otel = get(&format!("record/{t}t/opentelemetry Counter::add, 3 attributes"))?;
        let metrics = get(&format!("record/{t}t/metrics counter!, 3 labels, prometheus recorder"))?;
        for fill in ["not full", "full"] {
            let sonde = get(&format!("record/{t}t/sonde record, {fill}"))?;
            let floor = get(&format!("record/{t}t/floor ArrayQueue push, {fill}"))?;
            let in_place = get(&format!("record/{t}t/floor thingbuf in place, {fill}"))?;
            let r = sonde / floor;
            writeln!(
                s,
                "| {t} | {fill} | {sonde:.1} | {floor:.1} | {r:.2} ({}) | {in_place:.1} | {:.2} | {otel:.1} | {:.1}× ({}) | {metrics:.1} | {:.1}× ({}) |",
                verdict(r <= 1.5, || format!("{r:.2}× the floor")),
                sonde / in_place,
                otel / sonde,
                verdict(otel / sonde >= 3.0, || format!("{:.1}×", otel / sonde)),
                metrics / sonde,
                verdict(metrics / sonde >= 3.0, || format!("{:.1}×", metrics / sonde)),
            )?;
        }
    }

    writeln!(s, "\n## 2. Plugin dispatch through `http-status`\n")?;
    let e2e = get("dispatch/sonde http-status plugin, record to counted")?;
    let busy = get("dispatch/sonde http-status plugin, busy time on the dispatcher")?;
    let cpu = get("dispatch/sonde http-status plugin, dispatcher CPU")?;
    let native = get("dispatch/native Rust, record to counted")?;
    writeln!(
        s,
        "Rounds of 60,000 events (4 methods, 5 statuses). *Record to counted*: wall time from the first `record()` to `flush()` returning, all events counted (sonde pipelines `record()` and the dispatcher on two threads; native Rust does push, pop and count on one; both move 20 MB of events through memory per round). *Dispatcher CPU*: the dispatcher thread's CPU time per event (`Telemetry::dispatcher_cpu_time`: taking events off the ring, building batches, the plugin calls): what one core does, the per-core figure (`record()`'s own cost is part 1). *Busy*: the part of it inside the plugin calls (batch lowering, the WebAssembly call), as the host measures it for `cost.busy_us`.\n"
    )?;
    writeln!(
        s,
        "| figure | ns/event | M events/s | vs native (goal ≤ 3×) | goal ≥ 10 M/s per core |"
    )?;
    writeln!(s, "|---|---|---|---|---|")?;
    writeln!(s, "| native Rust, record to counted | {native:.1} | {:.1} | 1× | |", 1e3 / native)?;
    for (name, ns) in [
        ("sonde, record to counted (two threads)", e2e),
        ("sonde, dispatcher CPU (per core)", cpu),
        ("sonde, of which busy in plugin", busy),
    ] {
        writeln!(
            s,
            "| {name} | {ns:.1} | {:.1} | {:.2}× ({}) | {} |",
            1e3 / ns,
            ns / native,
            verdict(ns / native <= 3.0, || format!("{:.1}× native", ns / native)),
            verdict(1e3 / ns >= 10.0, || format!("{:.1} M/s", 1e3 / ns)),
        )?;
    }
    let three = get("dispatch/sonde three example plugins, record to counted")?;
    let three_cpu = get("dispatch/sonde three example plugins, dispatcher CPU")?;
    writeln!(
        s,
        "\nThe example server's load (method, route, status, duration and real user agents) through all three example plugins: record to counted {three:.1} ns per event ({:.1} M events/s); dispatcher CPU {three_cpu:.1} ns per event ({:.1} M events/s per core: host batching and the three plugins' WebAssembly code; the split is in the notes below).",
        1e3 / three,
        1e3 / three_cpu
    )?;

    writeln!(s, "\n## 3. Whole server: `examples/axum-server` under wrk\n")?;
    writeln!(
        s,
        "`GET /users/42` with a browser user agent, wrk -t1 -c{CONNECTIONS} --latency pinned to CPU 1, the server pinned to CPU 0 (so sonde's dispatcher shares the server's core and its cost shows). Telemetry on: the three example plugins, user agents recorded, `mode = \"local\"` (the report path runs only on request); off: the same server and Layer with `Telemetry::off()`.\n"
    )?;
    let (lo, tput, hi) = spread(&pairs.on);
    let (clo, cmid, chi) = spread(&pairs.control);
    writeln!(
        s,
        "**Throughput, side by side.** Both servers run at once on CPU 0, each in its own session (the kernel's autogroup scheduling then splits the core evenly between the two servers, not between their threads, so sonde's dispatcher runs on the on-server's half), each loaded by its own wrk on CPU 1, in {} bursts of {BURST_SECS} s. Each burst's ratio of the two servers' requests/s is the on server's throughput relative to off at the same CPU, measured at the same moment: this VM's speed swings by up to ±15 % within seconds, which one-after-the-other rounds cannot separate from a 2 % cost. The same bursts with two off servers show the instrument's own spread.\n",
        pairs.on.len()
    )?;
    writeln!(s, "| pair | median | middle half | bursts |")?;
    writeln!(s, "|---|---|---|---|")?;
    writeln!(
        s,
        "| on / off | **{:.1} %** (goal ≥ 98 %: {}) | {:.1}-{:.1} % | {} |",
        tput * 100.0,
        verdict(tput >= 0.98, || format!("{:.1} %", tput * 100.0)),
        lo * 100.0,
        hi * 100.0,
        percents(&pairs.on)
    )?;
    writeln!(
        s,
        "| off / off (control) | {:.1} % | {:.1}-{:.1} % | {} |",
        cmid * 100.0,
        clo * 100.0,
        chi * 100.0,
        percents(&pairs.control)
    )?;
    writeln!(
        s,
        "\n**Latency, one server at a time.** Latency needs a server alone on its core: two warm servers, off and on, loaded in turn in {rounds} pairs of {BURST_SECS} s bursts (the order alternating, only one busy at a time); the table gives the medians of the bursts, the p99 ratio is the median of the pairs' ratios.\n"
    )?;
    writeln!(s, "| telemetry | requests/s | p50 µs | p90 µs | p99 µs |")?;
    writeln!(s, "|---|---|---|---|---|")?;
    for (label, l) in [("off", off), ("on", on)] {
        writeln!(
            s,
            "| {label} | {:.0} | {:.0} | {:.0} | {:.0} |",
            l.requests_per_sec, l.p50_us, l.p90_us, l.p99_us
        )?;
    }
    let list = |values: &mut dyn Iterator<Item = f64>, decimals: usize| {
        values.map(|v| format!("{v:.decimals$}")).collect::<Vec<_>>().join(", ")
    };
    let p99 = paired_p99(off_runs, on_runs);
    // `off/on` of one figure, pair by pair.
    let per_pair = |figure: fn(&Load) -> f64| {
        off_runs
            .iter()
            .zip(on_runs)
            .map(|(a, b)| format!("{:.0}/{:.0}", figure(a), figure(b)))
            .collect::<Vec<_>>()
            .join(", ")
    };
    writeln!(
        s,
        "\nOn / off p99: {p99:.2}× (goal ≤ 1.05×: {}). Each pair, p99 µs off / on: {}. Requests/s off / on: {} (one-server throughput moves with the VM; the side-by-side figure above is the one to read).",
        verdict(p99 <= 1.05, || format!("{p99:.2}×")),
        per_pair(|l| l.p99_us),
        per_pair(|l| l.requests_per_sec),
    )?;
    let cpu = |runs: &[Load]| list(&mut runs.iter().map(|l| l.cpu_us_per_request), 2);
    writeln!(
        s,
        "\nWhere the time goes: the server's CPU time per request (all threads, user + system, from `/proc/<pid>/task/*/stat` around each burst): off {:.2} µs, on {:.2} µs ({:+.1} %), of which sonde's own threads (the dispatcher with the three plugins, the epoch ticker) {:.2} µs; the rest of the difference is on the tokio worker (the Layer, `record()`, cache effects). It follows requests/s (the server's core is saturated either way; a slow burst is slow in CPU time too). Each burst, off: {}; on: {}.",
        off.cpu_us_per_request,
        on.cpu_us_per_request,
        (on.cpu_us_per_request / off.cpu_us_per_request - 1.0) * 100.0,
        on.sonde_threads_us_per_request,
        cpu(off_runs),
        cpu(on_runs),
    )?;

    writeln!(s, "\n## 4. Plugin start\n")?;
    writeln!(
        s,
        "| plugin | compile ms | load from cache ms (goal ≤ 5) | instantiate µs (goal ≤ 50) |"
    )?;
    writeln!(s, "|---|---|---|---|")?;
    for plugin in ["http-status", "user-agent", "route-latency"] {
        let compile = get(&format!("start/{plugin}/compile"))? / 1e6;
        let cache = get(&format!("start/{plugin}/load from cache"))? / 1e6;
        let inst = get(&format!("start/{plugin}/instantiate"))? / 1e3;
        writeln!(
            s,
            "| {plugin} | {compile:.1} | {cache:.2} ({}) | {inst:.1} ({}) |",
            verdict(cache <= 5.0, || format!("{cache:.1} ms")),
            verdict(inst <= 50.0, || format!("{inst:.0} µs")),
        )?;
    }
    writeln!(
        s,
        "\nLoad from cache is everything a restart does for a plugin: read and hash the file, check the cached artifact's HMAC, deserialize, link, instantiate and call `info`. Instantiate is a new store with its limits, the instance and the `info` call."
    )?;

    writeln!(s, "\n## 5. Memory\n")?;
    let diff_mib = (on.rss_kib - off.rss_kib) / 1024.0;
    writeln!(s, "Steady RSS of the example server after each one-server burst (median).\n")?;
    writeln!(
        s,
        "| telemetry off | telemetry on (3 plugins, 65,536-event buffer) | difference (goal ≤ 32 MiB) |"
    )?;
    writeln!(s, "|---|---|---|")?;
    writeln!(
        s,
        "| {:.1} MiB | {:.1} MiB | {diff_mib:.1} MiB ({}) |",
        off.rss_kib / 1024.0,
        on.rss_kib / 1024.0,
        verdict(diff_mib <= 32.0, || format!("{diff_mib:.1} MiB")),
    )?;

    writeln!(s, "\n## 6. Report with 10,000 series\n")?;
    writeln!(s, "| step | ms |")?;
    writeln!(s, "|---|---|")?;
    for step in ["build", "serialize", "gzip"] {
        writeln!(s, "| {step} | {:.2} |", get(&format!("report/10k series/{step}"))? / 1e6)?;
    }
    let all = get("report/10k series/build + serialize + gzip")? / 1e6;
    writeln!(
        s,
        "| **build + serialize + gzip** | **{all:.2}** (goal ≤ 10: {}) |",
        verdict(all <= 10.0, || format!("{all:.1} ms"))
    )?;

    writeln!(s, "\n## Reproduce\n")?;
    writeln!(
        s,
        "```sh\ncargo xtask bench            # everything above, rewrites this file (about 10 minutes)\ncargo bench -p sonde-benches --bench record   # one criterion group\n```\n"
    )?;
    if let Ok(notes) = std::fs::read_to_string(root.join("benches/NOTES.md")) {
        s.push_str(&notes);
    }
    Ok(s)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_wrk_output() {
        let text = "Running 10s test @ http://127.0.0.1:1/users/42\n  Latency Distribution\n     50%  210.00us\n     75%  300.00us\n     90%  400.50us\n     99%    1.20ms\n  100 requests in 10.00s\nRequests/sec:  45000.12\nTransfer/sec:      5.00MB\n";
        let l = parse_wrk(text).expect("parses");
        assert_eq!(l.requests_per_sec, 45000.12);
        assert_eq!((l.p50_us, l.p90_us, l.p99_us), (210.0, 400.5, 1200.0));
        assert_eq!(micros("2.5s"), Some(2.5e6));
        assert!(parse_wrk("garbage").is_none());
    }

    #[test]
    fn spread_is_quartiles_and_median() {
        let v = [1.04, 0.90, 0.95, 1.00, 0.97];
        assert_eq!(spread(&v), (0.95, 0.97, 1.00));
        assert_eq!(percents(&[0.955, 1.0]), "95.5, 100.0");
        assert_eq!(spread(&[]), (0.0, 0.0, 0.0));
    }
}
