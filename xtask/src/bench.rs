//! `cargo xtask bench`: every benchmark, side by side with its peers,
//! written to BENCHMARKS.md.
//!
//! 1. The criterion benchmarks of `benches/` (record, dispatch, start,
//!    report), `--runs N` times (default 1): each figure is the median of
//!    the runs' medians (read from `target/criterion` after each run), shown
//!    with every run's, and goals are judged on it.
//! 2. Instructions per event of `benches/examples/dispatch_count` under
//!    callgrind (Debian's valgrind): two runs with different event counts,
//!    parsed here; their difference over the difference in events cancels
//!    everything that does not scale with the events (start, compile,
//!    flush). A run where a plugin did not count every event fails.
//! 3. `sonde-bench-server` (the example server's routes and handlers, with
//!    sonde's layer or a peer's) under wrk (Debian's package): throughput
//!    of pairs measured side by side (both servers sharing one core at the
//!    same time, so the VM's speed swings hit both), and latency from
//!    rotating rounds of one server at a time.
//! 4. The servers' steady RSS after the load.
//!
//! `benches/NOTES.md` (what was profiled, what changed and what it bought)
//! is appended as it is.

use std::collections::{BTreeMap, HashMap};
use std::ffi::OsString;
use std::fmt::Write as _;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use anyhow::{Context, Result, bail, ensure};

/// Rotating rounds of one-server bursts for latency (see [`rotating`]).
const ROUNDS: usize = 16;
/// wrk connections.
const CONNECTIONS: u32 = 16;
/// Seconds per burst, side by side and one server at a time.
const BURST_SECS: u32 = 2;
/// The side-by-side pairs, in the order they run: subject, base, bursts.
/// The first starts a sonde server on the fresh compile cache, so every
/// later one (and the RSS read in [`rotating`]) loads the plugins from it,
/// as every start after the first does.
const PAIRS: [(Variant, Variant, usize); 6] = [
    (Variant::Sonde, Variant::Off, 30),
    (Variant::AxumPrometheus, Variant::Off, 20),
    (Variant::Otel, Variant::Off, 20),
    (Variant::Sonde, Variant::AxumPrometheus, 20),
    (Variant::Sonde, Variant::Otel, 20),
    (Variant::Off, Variant::Off, 16),
];
/// Events of the two callgrind runs of `dispatch_count`.
const CALLGRIND_EVENTS: [usize; 2] = [20_000, 80_000];
/// Plugins `dispatch_count` runs (the three example plugins).
const CALLGRIND_PLUGINS: usize = 3;
/// Goal: instructions per event, three plugins, varying events.
const INSTRUCTIONS_GOAL: f64 = 700.0;
/// Functions shown in the callgrind table.
const TOP_FUNCTIONS: usize = 8;
/// The callgrind row that stands for the JIT-compiled plugin code, which
/// callgrind, knowing no symbol or file for it, puts in object `???` and
/// names by bare address (`0x…`), a name per function.
const JIT_ROW: &str = "the plugins' WebAssembly (JIT code, all addresses)";

struct Guard(Child);

impl Drop for Guard {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// What `cargo xtask bench` was asked to do.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct Options {
    /// A short run that checks the harness, not the figures.
    quick: bool,
    /// Only the wrk runs, printed.
    server_only: bool,
    /// Criterion runs.
    runs: usize,
}

const USAGE: &str =
    "usage: cargo xtask bench [--quick | --server | --languages | --callgrind] [--runs N]";

fn parse_args(args: &[String]) -> Result<Options> {
    let mut o = Options { quick: false, server_only: false, runs: 1 };
    let mut args = args.iter();
    while let Some(a) = args.next() {
        match a.as_str() {
            "--quick" => o.quick = true,
            "--server" => o.server_only = true,
            "--runs" => {
                let n = args.next().context(USAGE)?;
                o.runs = n.parse().ok().filter(|n| *n >= 1).with_context(|| {
                    format!("--runs takes a number of runs ≥ 1, not {n:?}\n{USAGE}")
                })?;
            }
            _ => bail!("{USAGE}"),
        }
    }
    ensure!(!(o.quick && o.server_only), "{USAGE}");
    Ok(o)
}

pub(crate) fn run(root: &Path, args: &[String]) -> Result<()> {
    if args == ["--languages"] {
        return crate::bench_langs::run(root);
    }
    if args == ["--callgrind"] {
        return callgrind_only(root);
    }
    let o = parse_args(args)?;
    let started = Instant::now();
    crate::print_built(root, &crate::build_components(root, &crate::PLUGINS)?);
    crate::cargo(root, &["build", "--release", "--quiet", "-p", "sonde-cli"])?;
    crate::cargo(
        root,
        &[
            "build",
            "--release",
            "--quiet",
            "-p",
            "sonde-benches",
            "--bin",
            "sonde-bench-server",
            "--example",
            "dispatch_count",
        ],
    )?;
    let servers = Servers {
        binary: root.join("target/release/sonde-bench-server"),
        wrk: ensure_apt("wrk", "/usr/bin/wrk")?,
        manifest: pinned_manifest(root)?,
    };
    if o.server_only {
        return server_rounds(&servers);
    }
    let valgrind = ensure_apt("valgrind", "/usr/bin/valgrind")?;

    let criterion = criterion_runs(root, o.quick, o.runs)?;
    let instructions = Instructions {
        varying: callgrind(root, &valgrind, false)?,
        uniform: callgrind(root, &valgrind, true)?,
    };
    let mut pairs = Vec::with_capacity(PAIRS.len());
    for (subject, base, bursts) in PAIRS {
        let bursts = if o.quick { 2 } else { bursts };
        pairs.push(Pair { subject, base, ratios: side_by_side(&servers, subject, base, bursts)? });
    }
    let latency = rotating(&servers, if o.quick { 2 } else { ROUNDS })?;
    let text = render(root, &criterion, o.runs, &instructions, &pairs, &latency)?;
    std::fs::write(root.join("BENCHMARKS.md"), text)?;
    if !o.quick {
        crate::print_built(root, &crate::build_lang_plugins(root, &crate::PLUGINS)?);
        crate::bench_langs::rewrite(root)?;
    }
    println!("BENCHMARKS.md written in {:.0?}", started.elapsed());
    Ok(())
}

/// `--callgrind`: only the instructions per event, measured again and
/// written over that subsection of BENCHMARKS.md (the rest is left as it
/// is, with a line saying when the subsection was measured).
fn callgrind_only(root: &Path) -> Result<()> {
    crate::print_built(root, &crate::build_components(root, &crate::PLUGINS)?);
    crate::cargo(
        root,
        &["build", "--release", "--quiet", "-p", "sonde-benches", "--example", "dispatch_count"],
    )?;
    let valgrind = ensure_apt("valgrind", "/usr/bin/valgrind")?;
    let instructions = Instructions {
        varying: callgrind(root, &valgrind, false)?,
        uniform: callgrind(root, &valgrind, true)?,
    };
    let mut section = String::new();
    render_callgrind(&mut section, &instructions)?;
    let date = crate::reliability::output_of("date", &["-u", "+%Y-%m-%d %H:%M UTC"]);
    let commit = crate::reliability::output_of(
        "git",
        &["-C", &root.display().to_string(), "rev-parse", "--short", "HEAD"],
    );
    writeln!(
        section,
        "\nThis subsection was measured again by `cargo xtask bench --callgrind` on {date}, commit {commit}."
    )?;
    let path = root.join("BENCHMARKS.md");
    let text = std::fs::read_to_string(&path)?;
    let at = text.find(CALLGRIND_HEADING).context("BENCHMARKS.md has no callgrind subsection")?;
    let rest = &text[at + CALLGRIND_HEADING.len()..];
    let end = rest.find("\n## ").map_or(text.len(), |i| at + CALLGRIND_HEADING.len() + i);
    std::fs::write(&path, format!("{}{section}{}", &text[..at], &text[end..]))?;
    println!(
        "instructions per event: varying {:.0}, uniform {:.0} (BENCHMARKS.md rewritten)",
        instructions.varying.total, instructions.uniform.total
    );
    Ok(())
}

/// `--server`: only the wrk runs, printed (for profiling and trying
/// changes; BENCHMARKS.md is left alone).
fn server_rounds(servers: &Servers) -> Result<()> {
    for (subject, base, bursts) in PAIRS {
        let pair = Pair { subject, base, ratios: side_by_side(servers, subject, base, bursts)? };
        let (lo, mid, hi) = spread(&pair.ratios);
        println!(
            "side by side, {}: median {:.1} % (middle half {:.1}-{:.1} %) over {bursts} bursts: {}",
            pair.label(),
            mid * 100.0,
            lo * 100.0,
            hi * 100.0,
            percents(&pair.ratios)
        );
    }
    let latency = rotating(servers, ROUNDS)?;
    for (round, loads) in latency.rounds.iter().enumerate() {
        for (v, l) in Variant::ALL.iter().zip(loads) {
            println!(
                "round {} {:15}: {:.0} req/s, p99 {:.0} µs, {:.2} µs CPU/request ({:.2} on sonde threads), RSS {:.1} MiB",
                round + 1,
                v.label(),
                l.requests_per_sec,
                l.p99_us,
                l.cpu_us_per_request,
                l.sonde_threads_us_per_request,
                l.rss_kib / 1024.0
            );
        }
    }
    for v in Variant::ALL {
        let m = median_load(&latency.of(v));
        println!(
            "median {:15}: {:.0} req/s, p99 {:.0} µs, p99 / off {:.2} (median of the rounds), {:.2} µs CPU/request ({:.2} on sonde threads)",
            v.label(),
            m.requests_per_sec,
            m.p99_us,
            latency.p99_ratio(v),
            m.cpu_us_per_request,
            m.sonde_threads_us_per_request
        );
    }
    Ok(())
}

/// `path`, from Debian's package `pkg` (installed when missing, as root).
pub(crate) fn ensure_apt(pkg: &str, path: &str) -> Result<PathBuf> {
    let found = || Path::new(path).exists().then(|| PathBuf::from(path));
    if let Some(p) = found() {
        return Ok(p);
    }
    let install = || {
        eprintln!("+ apt-get install -y {pkg}");
        Command::new("apt-get")
            .args(["install", "-y", "-qq", pkg])
            .env("DEBIAN_FRONTEND", "noninteractive")
            .status()
            .is_ok_and(|s| s.success())
    };
    if !install() {
        let _ = Command::new("apt-get").args(["update", "-qq"]).status();
        ensure!(install(), "cannot install {pkg} (apt-get install {pkg})");
    }
    found().with_context(|| format!("{pkg} was installed but {path} is missing"))
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

// ---------------------------------------------------------------- criterion

/// One criterion figure over the runs: each run's median.
#[derive(Debug, Clone, PartialEq)]
struct Figure(Vec<f64>);

impl Figure {
    /// The median of the runs: what goals are judged on.
    fn median(&self) -> f64 {
        median(self.0.clone())
    }

    /// Every run's value through `f`.
    fn map(&self, f: impl Fn(f64) -> f64) -> Figure {
        Figure(self.0.iter().map(|&v| f(v)).collect())
    }

    /// Run by run, `self / other` (both measured in the same run).
    fn over(&self, other: &Figure) -> Figure {
        Figure(self.0.iter().zip(&other.0).map(|(a, b)| a / b).collect())
    }

    /// The median with `decimals`, then every run's when there are
    /// several: `37.4 [36.1 / 37.4 / 39.0]`.
    fn show(&self, decimals: usize) -> String {
        self.show_in(decimals, "")
    }

    /// [`Figure::show`] with `unit` after the median: `2.7× [2.6 / 2.7 / 2.9]`.
    fn show_in(&self, decimals: usize, unit: &str) -> String {
        let mut s = format!("{:.decimals$}{unit}", self.median());
        if self.0.len() > 1 {
            let runs: Vec<String> = self.0.iter().map(|v| format!("{v:.decimals$}")).collect();
            write!(s, " [{}]", runs.join(" / ")).expect("writing to a String");
        }
        s
    }
}

/// Runs the criterion benchmarks `runs` times; every benchmark's medians,
/// keyed `group/function` as the benchmarks name them.
fn criterion_runs(root: &Path, quick: bool, runs: usize) -> Result<BTreeMap<String, Figure>> {
    let dir = root.join("target/criterion");
    let mut bench = vec!["bench", "-p", "sonde-benches"];
    if quick {
        bench.extend(["--", "--warm-up-time", "1", "--measurement-time", "1"]);
    }
    let mut all: BTreeMap<String, Vec<f64>> = BTreeMap::new();
    for run in 0..runs {
        eprintln!("criterion run {}/{runs}", run + 1);
        let _ = std::fs::remove_dir_all(&dir);
        crate::cargo(root, &bench)?;
        for (id, ns) in criterion_medians(&dir)? {
            all.entry(id).or_default().push(ns);
        }
    }
    Ok(all.into_iter().map(|(id, runs)| (id, Figure(runs))).collect())
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

// ---------------------------------------------------------------- callgrind

/// Instruction counts of one callgrind run: the program's total and each
/// function's own (exclusive) count, the JIT code's addresses summed into
/// [`JIT_ROW`].
#[derive(Debug, Default, Clone, PartialEq)]
struct Callgrind {
    total: u64,
    functions: BTreeMap<String, u64>,
}

/// Whether callgrind's name for a function is a bare address (`0x…`): code
/// it has no symbol for.
fn is_address(name: &str) -> bool {
    name.strip_prefix("0x")
        .is_some_and(|hex| !hex.is_empty() && hex.bytes().all(|b| b.is_ascii_hexdigit()))
}

/// A name of callgrind's compressed form, `(id) name` (defining `id` in
/// `names`), `(id)` (using it) or a plain name.
fn compressed_name(names: &mut HashMap<String, String>, spec: &str) -> String {
    let spec = spec.trim();
    if let Some((id, name)) = spec.strip_prefix('(').and_then(|s| s.split_once(')')) {
        let name = name.trim();
        if name.is_empty() {
            return names.get(id).cloned().unwrap_or_else(|| format!("({id})"));
        }
        names.insert(id.to_string(), name.to_string());
        return name.to_string();
    }
    spec.to_string()
}

/// Parses a `callgrind.out` file (format of the Callgrind manual's
/// "Callgrind Format Specification"): the `Ir` total from the `totals:`
/// line (or `summary:`), and per function the cost lines under its `fn=`,
/// leaving out the line after each `calls=`, which is the inclusive cost of
/// a call made from it. Code in no file callgrind knows (object `???`)
/// has no symbols, so each of its functions is named by its address: the
/// JIT-compiled plugins, summed into [`JIT_ROW`].
fn parse_callgrind(text: &str) -> Result<Callgrind> {
    // Compressed names: objects (`ob=`, `cob=`) and functions (`fn=`,
    // `cfn=`) have a table each.
    let (mut objects, mut functions) = (HashMap::new(), HashMap::new());
    let mut ir = 0;
    let mut positions = 1;
    let (mut totals, mut summary) = (None, None);
    let mut object = String::new();
    let mut current = String::new();
    let mut after_calls = false;
    let mut out = Callgrind::default();
    let nth = |v: &str, n: usize| v.split_whitespace().nth(n).and_then(|c| c.parse::<u64>().ok());
    for line in text.lines() {
        if line.starts_with(|c: char| c.is_ascii_digit() || matches!(c, '+' | '-' | '*')) {
            if std::mem::take(&mut after_calls) {
                continue;
            }
            // A cost line: positions, then the events' costs (trailing
            // zeros may be left out).
            let cost = nth(line, positions + ir).unwrap_or(0);
            *out.functions.entry(current.clone()).or_default() += cost;
        } else if let Some(v) = line.strip_prefix("fn=") {
            let name = compressed_name(&mut functions, v);
            current = if object == "???" && is_address(&name) { JIT_ROW.to_string() } else { name };
        } else if let Some(v) = line.strip_prefix("cfn=") {
            compressed_name(&mut functions, v);
        } else if let Some(v) = line.strip_prefix("ob=") {
            object = compressed_name(&mut objects, v);
        } else if let Some(v) = line.strip_prefix("cob=") {
            compressed_name(&mut objects, v);
        } else if line.starts_with("calls=") {
            after_calls = true;
        } else if let Some(v) = line.strip_prefix("events:") {
            ir = v.split_whitespace().position(|e| e == "Ir").context("no Ir event")?;
        } else if let Some(v) = line.strip_prefix("positions:") {
            positions = v.split_whitespace().count();
        } else if let Some(v) = line.strip_prefix("totals:") {
            totals = nth(v, ir);
        } else if let Some(v) = line.strip_prefix("summary:") {
            summary = nth(v, ir);
        }
    }
    out.total = totals.or(summary).context("no totals: or summary: line")?;
    out.functions.retain(|_, v| *v > 0);
    let sum: u64 = out.functions.values().sum();
    ensure!(sum == out.total, "functions' costs sum to {sum}, totals say {}", out.total);
    Ok(out)
}

/// Instructions per event between two runs, and the functions' shares.
#[derive(Debug, Clone, PartialEq)]
struct PerEvent {
    /// Instructions per event, all of the program.
    total: f64,
    /// The functions with the most instructions per event, most first.
    top: Vec<(String, f64)>,
}

/// `(b - a) / events` for the totals and for every function (the top
/// `top` kept).
fn per_event(a: &Callgrind, b: &Callgrind, events: f64, top: usize) -> PerEvent {
    let mut functions: Vec<(String, f64)> = b
        .functions
        .iter()
        .map(|(name, &cost)| {
            let before = a.functions.get(name).copied().unwrap_or(0);
            (name.clone(), (cost as f64 - before as f64) / events)
        })
        .collect();
    functions.sort_by(|x, y| y.1.total_cmp(&x.1).then_with(|| x.0.cmp(&y.0)));
    functions.truncate(top);
    PerEvent { total: (b.total as f64 - a.total as f64) / events, top: functions }
}

/// Checks the report `dispatch_count` printed: `recorded N events` and one
/// `plugin NAME: delivered D, counted C, state S` line per plugin. Fails
/// unless there are `plugins` plugins and every one counted all N events.
fn check_counted(stdout: &str, plugins: usize) -> Result<()> {
    let recorded: u64 = stdout
        .lines()
        .find_map(|l| l.strip_prefix("recorded ")?.strip_suffix(" events")?.parse().ok())
        .context("dispatch_count printed no `recorded N events` line")?;
    let mut seen = 0;
    for line in stdout.lines().filter(|l| l.starts_with("plugin ")) {
        seen += 1;
        let counted: Option<u64> =
            line.split_once(", counted ").and_then(|(_, r)| r.split(',').next()?.parse().ok());
        ensure!(
            counted == Some(recorded),
            "a plugin did not count every one of the {recorded} events: {line}"
        );
    }
    ensure!(seen == plugins, "dispatch_count reported {seen} plugins, not {plugins}:\n{stdout}");
    Ok(())
}

/// Instructions per event of `dispatch_count` (three plugins), with
/// varying events and with one event repeated.
#[derive(Debug)]
struct Instructions {
    varying: PerEvent,
    uniform: PerEvent,
}

/// Runs `dispatch_count` under callgrind at both [`CALLGRIND_EVENTS`]
/// (`uniform`: every event the same), checks that every plugin counted
/// every event, and returns the instructions per event.
fn callgrind(root: &Path, valgrind: &Path, uniform: bool) -> Result<PerEvent> {
    let exe = root.join("target/release/examples/dispatch_count");
    let dir = root.join("target/bench/callgrind");
    std::fs::create_dir_all(&dir)?;
    let mode = if uniform { "uniform" } else { "varying" };
    // One run first, into a state directory the measured runs share: they
    // then load the plugins from its compile cache instead of compiling in
    // a forked child that valgrind also runs (50 times slower, and with
    // valgrind's own memory inside the compile budget). That run is under
    // valgrind too (`--tool=none`, no instrumentation): the compile cache
    // is keyed by the CPU's features, and valgrind's emulated CPU has other
    // features than the real one, so a cache filled outside valgrind missed
    // in the first measured run, which then compiled every plugin (its
    // in-process shape check and loading counted against it: the figure
    // came out about 150 instructions per event too low).
    let state = dir.join(format!("state.{mode}"));
    let _ = std::fs::remove_dir_all(&state);
    let mut warm = Command::new(valgrind);
    warm.args(["--tool=none", "-q"])
        .arg(&exe)
        .arg("1000")
        .env("DISPATCH_COUNT_DIR", &state)
        .env_remove("ONLY");
    if uniform {
        warm.arg("uniform");
    }
    let out = warm.output()?;
    ensure!(
        out.status.success(),
        "dispatch_count (filling the compile cache) failed ({}):\n{}{}",
        out.status,
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    let mut runs = Vec::new();
    for n in CALLGRIND_EVENTS {
        eprintln!("callgrind: dispatch_count, {n} events, {mode}");
        let out_file = dir.join(format!("callgrind.{mode}.{n}"));
        let mut cmd = Command::new(valgrind);
        cmd.args(["--tool=callgrind", "-q"])
            .arg(format!("--callgrind-out-file={}", out_file.display()))
            .arg(&exe)
            .arg(n.to_string());
        if uniform {
            cmd.arg("uniform");
        }
        let out = cmd
            .env_remove("ONLY")
            .env("SONDE_LOG", "error")
            .env("DISPATCH_COUNT_DIR", &state)
            .output()?;
        let stdout = String::from_utf8_lossy(&out.stdout);
        ensure!(
            out.status.success(),
            "dispatch_count under callgrind failed ({}):\n{stdout}{}",
            out.status,
            String::from_utf8_lossy(&out.stderr)
        );
        check_counted(&stdout, CALLGRIND_PLUGINS)?;
        let text = std::fs::read_to_string(&out_file)?;
        runs.push(parse_callgrind(&text).with_context(|| out_file.display().to_string())?);
    }
    let events = (CALLGRIND_EVENTS[1] - CALLGRIND_EVENTS[0]) as f64;
    same_loading(&runs[0], &runs[1], events)?;
    Ok(per_event(&runs[0], &runs[1], events, TOP_FUNCTIONS))
}

/// Fails unless both runs loaded the plugins the same way: a run that
/// compiled one (a compile-cache miss) spends millions of instructions more
/// in the shape check and the wasm parser, which do not scale with the
/// events and would come out of the difference as a negative cost.
fn same_loading(a: &Callgrind, b: &Callgrind, events: f64) -> Result<()> {
    let loading = |c: &Callgrind| -> u64 {
        c.functions
            .iter()
            .filter(|(name, _)| {
                name.starts_with("wasmparser::") || name.starts_with("sonde::plugin::shape::")
            })
            .map(|(_, cost)| cost)
            .sum()
    };
    let (a, b) = (loading(a), loading(b));
    let per_event = (b as f64 - a as f64) / events;
    ensure!(
        per_event.abs() < 1.0,
        "the two callgrind runs loaded the plugins differently ({a} against {b} instructions in \
         the wasm parser and the shape check: {per_event:.0} per event): one of them compiled a \
         plugin instead of loading it from the compile cache"
    );
    Ok(())
}

// ------------------------------------------------------------------ servers

/// A server configuration under wrk; every one is `sonde-bench-server`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Variant {
    /// sonde's layer with `Telemetry::off()`: the limit.
    Off,
    /// sonde on: the three example plugins, user agents recorded.
    Sonde,
    /// `axum-prometheus`'s `PrometheusMetricLayer`.
    AxumPrometheus,
    /// `opentelemetry-instrumentation-tower`'s metrics layer.
    Otel,
}

impl Variant {
    /// Every variant, in the order of the tables.
    const ALL: [Variant; 4] =
        [Variant::Off, Variant::Sonde, Variant::AxumPrometheus, Variant::Otel];

    fn label(self) -> &'static str {
        match self {
            Variant::Off => "off",
            Variant::Sonde => "sonde",
            Variant::AxumPrometheus => "axum-prometheus",
            Variant::Otel => "otel",
        }
    }

    fn index(self) -> usize {
        Variant::ALL.iter().position(|v| *v == self).expect("every variant is in ALL")
    }

    /// `sonde-bench-server`'s arguments for this variant.
    fn args(self, manifest: &Path) -> Vec<OsString> {
        match self {
            Variant::Off => vec![],
            Variant::Sonde => {
                vec!["--manifest".into(), manifest.into(), "--user-agents".into()]
            }
            Variant::AxumPrometheus => vec!["--peer".into(), "axum-prometheus".into()],
            Variant::Otel => vec!["--peer".into(), "otel".into()],
        }
    }
}

/// What every server run needs.
#[derive(Debug)]
struct Servers {
    /// `sonde-bench-server`.
    binary: PathBuf,
    wrk: PathBuf,
    /// The pinned example manifest (sonde's variant).
    manifest: PathBuf,
}

/// Figures of one wrk run against the server.
#[derive(Debug, Clone, Copy, Default, PartialEq)]
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

/// A running bench server.
struct Server {
    child: Guard,
    url: String,
}

/// Starts `sonde-bench-server` as `variant`, pinned to CPU 0, and waits
/// until it accepts connections. `own_session` starts it in a new session:
/// with the kernel's autogroup scheduling, each session is one group that
/// gets an equal share of a busy CPU whatever its thread count.
fn start_server(servers: &Servers, variant: Variant, own_session: bool) -> Result<Server> {
    let addr = std::net::TcpListener::bind("127.0.0.1:0")?.local_addr()?.to_string();
    let mut cmd = Command::new(if own_session { "setsid" } else { "taskset" });
    if own_session {
        cmd.arg("taskset");
    }
    cmd.args(["-c", "0"])
        .arg(&servers.binary)
        .args(["--listen", &addr])
        .args(variant.args(&servers.manifest));
    let child = Guard(
        cmd.env("SONDE_LOG", "error")
            .stdout(Stdio::null())
            .stderr(Stdio::inherit())
            .spawn()
            .context("starting sonde-bench-server")?,
    );
    let deadline = Instant::now() + Duration::from_secs(20);
    while std::net::TcpStream::connect(&addr).is_err() {
        ensure!(
            Instant::now() < deadline,
            "sonde-bench-server ({}) did not start",
            variant.label()
        );
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

/// One-server bursts, round by round, each round's loads in
/// [`Variant::ALL`] order.
#[derive(Debug)]
struct Latency {
    rounds: Vec<[Load; 4]>,
}

impl Latency {
    /// `variant`'s bursts, round by round.
    fn of(&self, variant: Variant) -> Vec<Load> {
        self.rounds.iter().map(|r| r[variant.index()]).collect()
    }

    /// The median of the rounds' ratios of `variant`'s p99 to off's.
    fn p99_ratio(&self, variant: Variant) -> f64 {
        let off = Variant::Off.index();
        median(self.rounds.iter().map(|r| r[variant.index()].p99_us / r[off].p99_us).collect())
    }
}

/// Latency (and CPU time, RSS) of one server at a time: four warm servers
/// (off, sonde, each peer), pinned to CPU 0, loaded in turn by wrk on CPU 1
/// in `rounds` rounds of one [`BURST_SECS`] burst each, the order rotating
/// from round to round, so that only one is busy at a time and each takes
/// each place equally often. Many short rounds instead of a few long ones:
/// this VM's speed swings within seconds, and one round's bursts see
/// mostly the same swing.
fn rotating(servers: &Servers, rounds: usize) -> Result<Latency> {
    let mut running = Vec::with_capacity(4);
    for v in Variant::ALL {
        running.push(start_server(servers, v, false)?);
    }
    let us_per_tick = 1e6 / ticks_per_sec();
    let burst = |s: &Server, secs: u32| -> Result<Load> {
        let pid = s.child.0.id();
        let before = cpu_ticks(pid)?;
        let mut load = wrk_run(&servers.wrk, &s.url, secs, false)?;
        let after = cpu_ticks(pid)?;
        load.rss_kib = rss_kib(pid).unwrap_or(0.0);
        load.cpu_us_per_request = (after.0 - before.0) as f64 * us_per_tick / load.requests;
        load.sonde_threads_us_per_request =
            (after.1 - before.1) as f64 * us_per_tick / load.requests;
        Ok(load)
    };
    // Warm-up: connections, allocator, plugin caches.
    for s in &running {
        burst(s, 2)?;
    }
    let mut out = Latency { rounds: Vec::with_capacity(rounds) };
    for round in 0..rounds {
        eprintln!("one-server round {}/{rounds}", round + 1);
        let mut loads = [Load::default(); 4];
        for k in 0..4 {
            let i = (round + k) % 4;
            loads[i] = burst(&running[i], BURST_SECS)?;
        }
        out.rounds.push(loads);
    }
    Ok(out)
}

/// Side-by-side ratios of one pair: `subject`'s requests/s over `base`'s,
/// burst by burst.
#[derive(Debug)]
struct Pair {
    subject: Variant,
    base: Variant,
    ratios: Vec<f64>,
}

impl Pair {
    fn label(&self) -> String {
        let control = if self.subject == self.base { " (control)" } else { "" };
        format!("{} / {}{control}", self.subject.label(), self.base.label())
    }

    /// The goal on the median, as (percent, strictly above): ≥ 98 % of
    /// off for sonde, > 100 % of each peer.
    fn goal(&self) -> Option<(f64, bool)> {
        match (self.subject, self.base) {
            (Variant::Sonde, Variant::Off) => Some((98.0, false)),
            (Variant::Sonde, Variant::AxumPrometheus | Variant::Otel) => Some((100.0, true)),
            _ => None,
        }
    }
}

/// Throughput of `subject` beside `base`, at the same time: both pinned
/// to CPU 0, each in its own session (so the scheduler splits the core
/// evenly between the two servers, not between their threads), each loaded
/// by its own wrk on CPU 1, in `bursts` bursts of [`BURST_SECS`]. Returns
/// each burst's ratio of the two servers' requests/s.
///
/// Run one after the other, rounds of the same server on this VM differ by
/// up to ±15 % (its speed swings within seconds), far more than the 2 %
/// the goal is about; side by side, both servers see the same swings, and
/// off beside off gives ratios within a few percent of 1.
fn side_by_side(
    servers: &Servers,
    subject: Variant,
    base: Variant,
    bursts: usize,
) -> Result<Vec<f64>> {
    if !std::fs::read_to_string("/proc/sys/kernel/sched_autogroup_enabled")
        .is_ok_and(|v| v.trim() == "1")
    {
        eprintln!(
            "warning: autogroup scheduling is off (/proc/sys/kernel/sched_autogroup_enabled): the servers share CPU 0 by threads, which favours the one with more"
        );
    }
    let base_server = start_server(servers, base, true)?;
    let subject_server = start_server(servers, subject, true)?;
    // `swap` alternates which wrk starts first (the control showed a bias
    // of about 1 % towards one side when the order was fixed).
    let both = |secs: u32, swap: bool| -> Result<(Load, Load)> {
        let (first, second) = if swap {
            (&subject_server.url, &base_server.url)
        } else {
            (&base_server.url, &subject_server.url)
        };
        let (x, y) = std::thread::scope(|scope| {
            let x = scope.spawn(|| wrk_run(&servers.wrk, first, secs, true));
            let y = wrk_run(&servers.wrk, second, secs, true);
            let x = x.join().map_err(|_| anyhow::anyhow!("wrk thread panicked"))?;
            anyhow::Ok((x?, y?))
        })?;
        Ok(if swap { (y, x) } else { (x, y) })
    };
    both(2, false)?; // warm-up
    let mut ratios = Vec::with_capacity(bursts);
    for burst in 0..bursts {
        let (b, s) = both(BURST_SECS, burst % 2 == 1)?;
        eprintln!(
            "side-by-side {} / {}, burst {}/{bursts}: {:.0} vs {:.0} req/s",
            subject.label(),
            base.label(),
            burst + 1,
            s.requests_per_sec,
            b.requests_per_sec
        );
        ratios.push(s.requests_per_sec / b.requests_per_sec);
    }
    Ok(ratios)
}

/// Lower quartile, median and upper quartile.
fn spread(v: &[f64]) -> (f64, f64, f64) {
    let mut v = v.to_vec();
    v.sort_by(f64::total_cmp);
    let at = |q: f64| {
        v.get((v.len().saturating_sub(1) as f64 * q).round() as usize).copied().unwrap_or(0.0)
    };
    (at(0.25), median(v.clone()), at(0.75))
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

/// The median (of an even count, the mean of the middle two); 0 when
/// empty.
pub(crate) fn median(mut v: Vec<f64>) -> f64 {
    v.sort_by(f64::total_cmp);
    match v.len() {
        0 => 0.0,
        n if n % 2 == 1 => v[n / 2],
        n => (v[n / 2 - 1] + v[n / 2]) / 2.0,
    }
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

// ------------------------------------------------------------------- render

/// "met", or "**missed by {by}**".
fn verdict(met: bool, by: impl FnOnce() -> String) -> String {
    if met { "met".into() } else { format!("**missed by {}**", by()) }
}

/// The peers' names as the text gives them.
const AXUM_PROMETHEUS: &str = "`axum-prometheus` 0.10.1";
const OTEL_TOWER: &str = "`opentelemetry-instrumentation-tower` 0.19.0";

fn render(
    root: &Path,
    m: &BTreeMap<String, Figure>,
    runs: usize,
    instructions: &Instructions,
    pairs: &[Pair],
    latency: &Latency,
) -> Result<String> {
    let get = |id: &str| -> Result<&Figure> {
        m.get(id).with_context(|| format!("no criterion result for {id}"))
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
    if runs > 1 {
        writeln!(
            s,
            "- Criterion medians (release profile), {runs} runs (`--runs {runs}`): each figure is the median of the runs' medians, each run's in brackets `[a / b / c]`; ratios are the median of the runs' ratios (both sides measured in the same run); goals are judged on the median."
        )?;
    } else {
        writeln!(s, "- Criterion medians (release profile), one run.")?;
    }
    writeln!(s, "- Every peer is measured in the same run, same process kind, same machine.\n")?;

    render_record(&mut s, &get)?;
    render_dispatch(&mut s, &get, instructions)?;
    render_server(&mut s, pairs, latency)?;
    render_start(&mut s, &get)?;
    render_memory(&mut s, latency)?;
    render_report(&mut s, &get)?;

    writeln!(s, "\n## Reproduce\n")?;
    writeln!(
        s,
        "```sh\ncargo xtask bench              # everything above, rewrites this file (about 30 minutes)\ncargo xtask bench --runs 3     # the criterion benchmarks three times, medians of the runs (about 40)\ncargo xtask bench --callgrind  # only the instructions per event, rewritten in place (under a minute)\ncargo xtask bench --languages  # only the collectors in other languages, rewritten in place\ncargo bench -p sonde-benches --bench record   # one criterion group\n```\n"
    )?;
    if let Ok(notes) = std::fs::read_to_string(root.join("benches/NOTES.md")) {
        s.push_str(&notes);
    }
    Ok(s)
}

/// A criterion result by id.
type Get<'a> = dyn Fn(&str) -> Result<&'a Figure> + 'a;

fn render_record(s: &mut String, get: &Get<'_>) -> Result<()> {
    writeln!(s, "## 1. `record()` on the request path\n")?;
    writeln!(
        s,
        "ns per event (per thread with 2 threads), the event `http.request` with method, route and status. Floor (the goal's): a bare `crossbeam_queue::ArrayQueue` push of the same event as an owned 344-byte value. In-place floor: a bare `thingbuf` slot (one queue, no sonde) with the same bytes written into it, which is what sonde's ring does per shard. Peers: OpenTelemetry SDK 0.33 `Counter::add` with 3 attributes (ManualReader), `metrics` 0.24 `counter!` with 3 labels through `metrics-exporter-prometheus` 0.18's recorder. The ≥ 3× goals are for 1 thread, buffer not full (the request path of a server whose dispatcher keeps up); the other rows are shown for comparison.\n"
    )?;
    writeln!(
        s,
        "| threads | buffer | sonde | floor | sonde / floor (goal ≤ 1.5) | in-place floor | sonde / in-place | OpenTelemetry | OTel / sonde | metrics | metrics / sonde |"
    )?;
    writeln!(s, "|---|---|---|---|---|---|---|---|---|---|---|")?;
    for t in [1, 2] {
        let otel = get(&format!("record/{t}t/opentelemetry Counter::add, 3 attributes"))?;
        let metrics = get(&format!("record/{t}t/metrics counter!, 3 labels, prometheus recorder"))?;
        for fill in ["not full", "full"] {
            let sonde = get(&format!("record/{t}t/sonde record, {fill}"))?;
            let floor = get(&format!("record/{t}t/floor ArrayQueue push, {fill}"))?;
            let in_place = get(&format!("record/{t}t/floor thingbuf in place, {fill}"))?;
            let r = sonde.over(floor);
            let goal = t == 1 && fill == "not full";
            // OTel and metrics over sonde, with the goal on the judged row.
            let peer = |p: &Figure| {
                let x = p.over(sonde);
                let m = x.median();
                if goal {
                    format!(
                        "{} (goal ≥ 3×: {})",
                        x.show_in(1, "×"),
                        verdict(m >= 3.0, || format!("{:.1}×", 3.0 - m))
                    )
                } else {
                    x.show_in(1, "×")
                }
            };
            writeln!(
                s,
                "| {t} | {fill} | {} | {} | {} ({}) | {} | {} | {} | {} | {} | {} |",
                sonde.show(1),
                floor.show(1),
                r.show(2),
                verdict(r.median() <= 1.5, || format!("{:.2}×", r.median() - 1.5)),
                in_place.show(1),
                sonde.over(in_place).show(2),
                otel.show(1),
                peer(otel),
                metrics.show(1),
                peer(metrics),
            )?;
        }
    }
    Ok(())
}

fn render_dispatch(s: &mut String, get: &Get<'_>, instructions: &Instructions) -> Result<()> {
    writeln!(s, "\n## 2. Plugin dispatch\n")?;
    writeln!(s, "### Through `http-status`\n")?;
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
    writeln!(
        s,
        "| native Rust, record to counted | {} | {} | 1× | |",
        native.show(1),
        native.map(|ns| 1e3 / ns).show(1)
    )?;
    for (name, ns) in [
        ("sonde, record to counted (two threads)", e2e),
        ("sonde, dispatcher CPU (per core)", cpu),
        ("sonde, of which busy in plugin", busy),
    ] {
        let rate = ns.map(|ns| 1e3 / ns);
        let r = ns.over(native);
        writeln!(
            s,
            "| {name} | {} | {} | {} ({}) | {} |",
            ns.show(1),
            rate.show(1),
            r.show_in(2, "×"),
            verdict(r.median() <= 3.0, || format!("{:.1}×", r.median() - 3.0)),
            verdict(rate.median() >= 10.0, || format!("{:.1} M/s", 10.0 - rate.median())),
        )?;
    }
    let three = get("dispatch/sonde three example plugins, record to counted")?;
    let three_cpu = get("dispatch/sonde three example plugins, dispatcher CPU")?;
    writeln!(
        s,
        "\nThe example server's load (method, route, status, duration and real user agents) through all three example plugins: record to counted {} ns per event ({} M events/s); dispatcher CPU {} ns per event ({} M events/s per core: host batching and the three plugins' WebAssembly code).",
        three.show(1),
        three.map(|ns| 1e3 / ns).show(1),
        three_cpu.show(1),
        three_cpu.map(|ns| 1e3 / ns).show(1),
    )?;

    render_callgrind(s, instructions)
}

/// The heading [`render_callgrind`] writes its subsection under.
const CALLGRIND_HEADING: &str = "\n### Instructions per event (callgrind)\n";

/// The callgrind subsection of the dispatch section.
fn render_callgrind(s: &mut String, instructions: &Instructions) -> Result<()> {
    let [a, b] = CALLGRIND_EVENTS;
    writeln!(s, "{CALLGRIND_HEADING}")?;
    writeln!(
        s,
        "`benches/examples/dispatch_count` records server-shaped events (method, route, status, duration, user agent) through the three example plugins and flushes, under `valgrind --tool=callgrind`, once with {a} events and once with {b}, each after the same 70,000 warm-up events (every ring slot used once, so one-time slot set-up cancels): (instructions({b}) − instructions({a})) / {} is what each event costs the recording thread's `record()` plus the dispatcher (taking it off the ring, batching, the plugins' WebAssembly), everything that does not scale with the events (start, compile, flush) cancelling. Instruction counts repeat to within a few per event (the dispatcher's polls of an empty ring depend on how valgrind interleaves the threads) where timings on this VM move by ±20 %; the plugins are loaded from a compile cache filled under valgrind, and the two runs must have loaded them alike. Every run checks that each plugin counted every event (its counters' and histograms' totals in the report). *Varying*: methods, routes, statuses, durations and four user agents vary as in the dispatch benchmark; *uniform*: one event repeated, as in the whole-server benchmark.\n",
        b - a
    )?;
    writeln!(s, "| events | instructions per event | goal ≤ {INSTRUCTIONS_GOAL:.0} |")?;
    writeln!(s, "|---|---|---|")?;
    let v = instructions.varying.total;
    writeln!(
        s,
        "| varying (three plugins) | **{v:.0}** | {} |",
        verdict(v <= INSTRUCTIONS_GOAL, || format!("{:.0} instructions", v - INSTRUCTIONS_GOAL))
    )?;
    writeln!(s, "| uniform (three plugins) | {:.0} | |", instructions.uniform.total)?;
    writeln!(
        s,
        "\nWhere they go, varying events: the {TOP_FUNCTIONS} functions with the most instructions of their own per event (exclusive cost; what callgrind cannot name, the JIT-compiled WebAssembly at bare addresses, summed into one row).\n"
    )?;
    writeln!(s, "| function | instructions per event | share |")?;
    writeln!(s, "|---|---|---|")?;
    for (name, per) in &instructions.varying.top {
        writeln!(
            s,
            "| `{}` | {per:.0} | {:.0} % |",
            name.replace('|', "\\|").replace('`', "'"),
            per / v * 100.0
        )?;
    }
    let shown: f64 = instructions.varying.top.iter().map(|(_, per)| per).sum();
    writeln!(s, "| everything else | {:.0} | {:.0} % |", v - shown, (v - shown) / v * 100.0)?;
    Ok(())
}

/// A peer's description for the text.
fn described(v: Variant) -> &'static str {
    match v {
        Variant::Off => "off: sonde's layer with `Telemetry::off()` (the limit)",
        Variant::Sonde => {
            "sonde: the three example plugins, user agents recorded, `mode = \"local\"` (the report path runs only on request)"
        }
        Variant::AxumPrometheus => {
            "axum-prometheus: `PrometheusMetricLayer::pair()` (a counter, a histogram and a gauge per route, method and status, through `metrics-exporter-prometheus` 0.18)"
        }
        Variant::Otel => {
            "otel: `http::server::LayerBuilder` with tracing off (the `http.server.*` histograms and up-down counter per route, method, status, scheme and protocol), into an OpenTelemetry SDK 0.33 `SdkMeterProvider` with a `ManualReader`"
        }
    }
}

fn render_server(s: &mut String, pairs: &[Pair], latency: &Latency) -> Result<()> {
    writeln!(s, "\n## 3. Whole server: `sonde-bench-server` under wrk\n")?;
    writeln!(
        s,
        "`benches/src/bin/server.rs`: the routes and handlers of `examples/axum-server` (`GET /users/{{id}}`, `/orders`, `/health`), with sonde's layer or a peer's route-metrics layer on the same three routes ({AXUM_PROMETHEUS}, {OTEL_TOWER}; how each is wired: `benches/NOTES.md`). `GET /users/42` with a browser user agent, wrk -t1 -c{CONNECTIONS} --latency pinned to CPU 1, the server pinned to CPU 0 (so sonde's dispatcher shares the server's core and its cost shows). The servers:\n"
    )?;
    for v in Variant::ALL {
        writeln!(s, "- {}", described(v))?;
    }
    writeln!(
        s,
        "\n**Throughput, side by side.** Both servers of a pair run at once on CPU 0, each in its own session (the kernel's autogroup scheduling then splits the core evenly between the two servers, not between their threads, so sonde's dispatcher runs on sonde's half), each loaded by its own wrk on CPU 1, in bursts of {BURST_SECS} s, the wrk started first alternating. Each burst's ratio of the two servers' requests/s is the first server's throughput relative to the second at the same CPU, measured at the same moment: this VM's speed swings by up to ±15 % within seconds, which one-after-the-other rounds cannot separate from a 2 % cost. Off beside off shows the instrument's own spread.\n"
    )?;
    writeln!(s, "| pair | median | middle half | bursts |")?;
    writeln!(s, "|---|---|---|---|")?;
    for pair in pairs {
        let (lo, mid, hi) = spread(&pair.ratios);
        let mid = mid * 100.0;
        let median = match pair.goal() {
            Some((goal, strict)) => {
                let met = if strict { mid > goal } else { mid >= goal };
                format!(
                    "**{mid:.1} %** (goal {} {goal:.0} %: {})",
                    if strict { ">" } else { "≥" },
                    verdict(met, || format!("{:.1} points", goal - mid))
                )
            }
            None => format!("{mid:.1} %"),
        };
        writeln!(
            s,
            "| {} | {median} | {:.1}-{:.1} % | {} |",
            pair.label(),
            lo * 100.0,
            hi * 100.0,
            percents(&pair.ratios)
        )?;
    }

    let rounds = latency.rounds.len();
    writeln!(
        s,
        "\n**Latency, one server at a time.** Latency needs a server alone on its core: four warm servers (off, sonde, each peer) loaded in turn in {rounds} rounds of one {BURST_SECS} s burst each (only one busy at a time, the order rotating so that each takes each place equally often); the table gives the medians of the bursts, the p99 ratio to off is the median of the rounds' ratios (each round's bursts see mostly the same speed of the VM).\n"
    )?;
    writeln!(s, "| server | requests/s | p50 µs | p90 µs | p99 µs | p99 / off | CPU µs/request |")?;
    writeln!(s, "|---|---|---|---|---|---|---|")?;
    for v in Variant::ALL {
        let l = median_load(&latency.of(v));
        writeln!(
            s,
            "| {} | {:.0} | {:.0} | {:.0} | {:.0} | {:.2}× | {:.2} |",
            v.label(),
            l.requests_per_sec,
            l.p50_us,
            l.p90_us,
            l.p99_us,
            latency.p99_ratio(v),
            l.cpu_us_per_request
        )?;
    }
    let sonde = latency.p99_ratio(Variant::Sonde);
    let judged: Vec<String> = [Variant::AxumPrometheus, Variant::Otel]
        .into_iter()
        .map(|peer| {
            let p = latency.p99_ratio(peer);
            format!(
                "{}'s {p:.2}× ({})",
                peer.label(),
                verdict(sonde <= p, || format!("{:.2}×", sonde - p))
            )
        })
        .collect();
    writeln!(
        s,
        "\nGoal: sonde's p99 / off ≤ each peer's. sonde {sonde:.2}× against {}.",
        judged.join(", ")
    )?;
    // `off: a, b, c; sonde: ...` of one figure, round by round.
    let rounds_of = |figure: fn(&Load) -> f64, decimals: usize| {
        Variant::ALL
            .iter()
            .map(|&v| {
                let values: Vec<String> =
                    latency.of(v).iter().map(|l| format!("{:.decimals$}", figure(l))).collect();
                format!("{}: {}", v.label(), values.join(", "))
            })
            .collect::<Vec<_>>()
            .join("; ")
    };
    writeln!(
        s,
        "\nEach round, p99 µs: {}. Requests/s: {} (one-server throughput moves with the VM; the side-by-side figures above are the ones to read).",
        rounds_of(|l| l.p99_us, 0),
        rounds_of(|l| l.requests_per_sec, 0),
    )?;
    let (off, on) =
        (median_load(&latency.of(Variant::Off)), median_load(&latency.of(Variant::Sonde)));
    writeln!(
        s,
        "\nWhere the time goes: the server's CPU time per request (all threads, user + system, from `/proc/<pid>/task/*/stat` around each burst; table above): sonde {:+.1} % over off, of which sonde's own threads (the dispatcher with the three plugins, the epoch ticker) {:.2} µs; the rest of the difference is on the tokio worker (the Layer, `record()`, cache effects). The peers do all their work on the worker. It follows requests/s (the server's core is saturated either way; a slow burst is slow in CPU time too). Each round, µs per request: {}.",
        (on.cpu_us_per_request / off.cpu_us_per_request - 1.0) * 100.0,
        on.sonde_threads_us_per_request,
        rounds_of(|l| l.cpu_us_per_request, 2),
    )?;
    Ok(())
}

fn render_start(s: &mut String, get: &Get<'_>) -> Result<()> {
    writeln!(s, "\n## 4. Plugin start\n")?;
    writeln!(
        s,
        "| plugin | compile ms | load from cache ms (goal ≤ 5) | instantiate µs (goal ≤ 50) |"
    )?;
    writeln!(s, "|---|---|---|---|")?;
    for plugin in ["http-status", "user-agent", "route-latency"] {
        let compile = get(&format!("start/{plugin}/compile"))?.map(|ns| ns / 1e6);
        let cache = get(&format!("start/{plugin}/load from cache"))?.map(|ns| ns / 1e6);
        let inst = get(&format!("start/{plugin}/instantiate"))?.map(|ns| ns / 1e3);
        writeln!(
            s,
            "| {plugin} | {} | {} ({}) | {} ({}) |",
            compile.show(1),
            cache.show(2),
            verdict(cache.median() <= 5.0, || format!("{:.1} ms", cache.median() - 5.0)),
            inst.show(1),
            verdict(inst.median() <= 50.0, || format!("{:.1} µs", inst.median() - 50.0)),
        )?;
    }
    writeln!(
        s,
        "\nLoad from cache is everything a restart does for a plugin: read and hash the file, check the cached artifact's HMAC, deserialize, link, instantiate and call `info`. Instantiate is a new store with its limits, the instance and the `info` call."
    )?;
    Ok(())
}

fn render_memory(s: &mut String, latency: &Latency) -> Result<()> {
    writeln!(s, "\n## 5. Memory\n")?;
    let rss = |v: Variant| median_load(&latency.of(v)).rss_kib / 1024.0;
    let off = rss(Variant::Off);
    writeln!(
        s,
        "Steady RSS of each server after each one-server burst (median), and its difference from off.\n"
    )?;
    writeln!(s, "| server | RSS | over off |")?;
    writeln!(s, "|---|---|---|")?;
    writeln!(s, "| off | {off:.1} MiB | |")?;
    for v in [Variant::Sonde, Variant::AxumPrometheus, Variant::Otel] {
        let (r, d) = (rss(v), rss(v) - off);
        let goal = if v == Variant::Sonde {
            format!(
                " (goal ≤ 32 MiB with 3 plugins and a 65,536-event buffer: {})",
                verdict(d <= 32.0, || format!("{:.1} MiB", d - 32.0))
            )
        } else {
            String::new()
        };
        writeln!(s, "| {} | {r:.1} MiB | {d:.1} MiB{goal} |", v.label())?;
    }
    Ok(())
}

fn render_report(s: &mut String, get: &Get<'_>) -> Result<()> {
    writeln!(s, "\n## 6. Report with 10,000 series\n")?;
    writeln!(s, "| step | ms |")?;
    writeln!(s, "|---|---|")?;
    for step in ["build", "serialize", "gzip"] {
        let ms = get(&format!("report/10k series/{step}"))?.map(|ns| ns / 1e6);
        writeln!(s, "| {step} | {} |", ms.show(2))?;
    }
    let all = get("report/10k series/build + serialize + gzip")?.map(|ns| ns / 1e6);
    writeln!(
        s,
        "| **build + serialize + gzip** | **{}** (goal ≤ 10: {}) |",
        all.show(2),
        verdict(all.median() <= 10.0, || format!("{:.1} ms", all.median() - 10.0))
    )?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A real `wrk -t1 -c16 -d1s --latency` against `sonde-bench-server`.
    const WRK: &str = "Running 1s test @ http://127.0.0.1:39412/users/42
  1 threads and 16 connections
  Thread Stats   Avg      Stdev     Max   +/- Stdev
    Latency   261.97us  442.04us   5.68ms   95.85%
    Req/Sec    63.58k    17.82k   97.19k    70.00%
  Latency Distribution
     50%  173.00us
     75%  235.00us
     90%  328.00us
     99%    2.79ms
  63309 requests in 1.00s, 8.09MB read
Requests/sec:  63205.66
Transfer/sec:      8.08MB
";

    #[test]
    fn reads_wrk_output() {
        let l = parse_wrk(WRK).expect("parses");
        assert_eq!(l.requests_per_sec, 63205.66);
        assert_eq!(l.requests, 63309.0);
        assert_eq!((l.p50_us, l.p90_us, l.p99_us), (173.0, 328.0, 2790.0));
        assert_eq!(micros("2.5s"), Some(2.5e6));
        assert_eq!(micros("12.00us"), Some(12.0));
        assert_eq!(micros("3.1m"), None);
        assert!(parse_wrk("garbage").is_none());
        // A run that failed to connect has no requests: refused.
        assert!(parse_wrk(&WRK.replace("63309 requests", "0 requests")).is_none());
    }

    #[test]
    fn spread_is_quartiles_and_median() {
        let v = [1.04, 0.90, 0.95, 1.00, 0.97];
        assert_eq!(spread(&v), (0.95, 0.97, 1.00));
        assert_eq!(percents(&[0.955, 1.0]), "95.5, 100.0");
        assert_eq!(spread(&[]), (0.0, 0.0, 0.0));
        assert_eq!(median(vec![3.0, 1.0, 2.0]), 2.0);
        assert_eq!(median(vec![4.0, 1.0, 3.0, 2.0]), 2.5);
        assert_eq!(median(vec![]), 0.0);
    }

    #[test]
    fn figures_show_their_runs() {
        let one = Figure(vec![37.44]);
        assert_eq!(one.show(1), "37.4");
        let three = Figure(vec![39.0, 36.1, 37.4]);
        assert_eq!(three.median(), 37.4);
        assert_eq!(three.show(1), "37.4 [39.0 / 36.1 / 37.4]");
        assert_eq!(three.show_in(0, " ns"), "37 ns [39 / 36 / 37]");
        // Ratios are taken run by run, then their median.
        let peer = Figure(vec![117.0, 108.3, 112.2]);
        assert_eq!(peer.over(&three).show(1), "3.0 [3.0 / 3.0 / 3.0]");
        assert_eq!(three.map(|ns| ns / 10.0).show(2), "3.74 [3.90 / 3.61 / 3.74]");
        assert_eq!(verdict(true, || unreachable!()), "met");
        assert_eq!(verdict(false, || "0.3×".into()), "**missed by 0.3×**");
    }

    #[test]
    fn parses_arguments() {
        let args = |a: &[&str]| parse_args(&a.iter().map(|s| s.to_string()).collect::<Vec<_>>());
        let ok = |a: &[&str]| args(a).expect("valid arguments");
        assert_eq!(ok(&[]), Options { quick: false, server_only: false, runs: 1 });
        assert_eq!(ok(&["--runs", "3"]).runs, 3);
        assert_eq!(
            ok(&["--quick", "--runs", "2"]),
            Options { quick: true, server_only: false, runs: 2 }
        );
        assert!(ok(&["--server"]).server_only);
        assert!(args(&["--runs", "0"]).is_err());
        assert!(args(&["--runs"]).is_err());
        assert!(args(&["--quick", "--server"]).is_err());
        assert!(args(&["--fast"]).is_err());
    }

    /// Lines of a real `callgrind.out` of `dispatch_count` (callgrind
    /// 3.19): its header, a function of the binary with inlined code
    /// (`fi=`/`fe=`, relative and `*` positions) calling into the JIT code,
    /// the JIT code itself (object `???`, functions named by address, first
    /// named by `cfn=`), an unnamed PLT stub in a library, and the totals
    /// (those of this excerpt).
    const CALLGRIND: &str = "# callgrind format
version: 1
creator: callgrind-3.19.0
pid: 27511
cmd:  /work/main/target/release/examples/dispatch_count 20000
part: 1


desc: I1 cache: 
desc: D1 cache: 
desc: LL cache: 

desc: Timerange: Basic block 0 - 12599539
desc: Trigger: Program termination

positions: line
events: Ir
summary: 1176


ob=(7) /work/main/target/release/examples/dispatch_count
fl=(7) /work/main/crates/sonde/src/plugin/batch.rs
fn=(9694) sonde::plugin::batch::KindBatch::push
76 100
+10 50
fi=(131) /rustc/59807616e1fa2540724bfbac14d7976d7e4a3860/library/alloc/src/vec/mod.rs
-41 20
fe=(7)
+31 5
cob=(2) ???
cfi=(52) ???
cfn=(7440) 0x0000000006cda6c4
calls=1 -49 
* 3000
* 7

ob=(2)
fl=(52)
fn=(7440)
0 17
cfn=(7442) 0x0000000006ccf200
calls=1 0 
0 4489
0 12

fn=(7442)
0 38
cfn=(7450) 0x0000000006ccc000
calls=1 0 
0 16
0 6

fn=(7450)
0 16

ob=(6) /usr/lib/x86_64-linux-gnu/libgcc_s.so.1
fl=(60) ???
fn=(15426) 0x0000000000001050
0 5

ob=(7)
fl=(7)
fn=(9694)
+2 900

totals: 1176
";

    #[test]
    fn runs_that_loaded_the_plugins_differently_are_refused() {
        let run = |parser: u64, shape: u64, push: u64| Callgrind {
            total: parser + shape + push,
            functions: BTreeMap::from([
                ("wasmparser::binary_reader::BinaryReader::visit_operator".to_string(), parser),
                ("sonde::plugin::shape::check".to_string(), shape),
                ("sonde::plugin::batch::KindBatch::push".to_string(), push),
            ]),
        };
        // The same loading, more events: fine.
        assert!(
            same_loading(&run(3_000_000, 2_000_000, 1), &run(3_000_000, 2_000_030, 9), 60_000.0)
                .is_ok()
        );
        // The shorter run compiled a plugin (a cache miss): refused.
        let err =
            same_loading(&run(6_100_000, 4_200_000, 1), &run(3_000_000, 2_000_000, 9), 60_000.0)
                .expect_err("a run that compiled a plugin")
                .to_string();
        assert!(err.contains("compiled a plugin"), "{err}");
    }

    #[test]
    fn reads_callgrind_output() {
        let cg = parse_callgrind(CALLGRIND).expect("parses");
        assert_eq!(cg.total, 1176);
        // Own cost only: the lines after `calls=` (3000, 4489, 16) are the
        // callees' inclusive costs.
        assert_eq!(cg.functions["sonde::plugin::batch::KindBatch::push"], 1082);
        assert_eq!(cg.functions[JIT_ROW], 17 + 12 + 38 + 6 + 16);
        // An address outside `???` is not the JIT's.
        assert_eq!(cg.functions["0x0000000000001050"], 5);
        assert_eq!(cg.functions.len(), 3);
        // A parser that counted a call's cost as the caller's would not sum
        // to the totals: refused.
        assert!(parse_callgrind(&CALLGRIND.replace("totals: 1176", "totals: 4176")).is_err());
        assert!(parse_callgrind("events: Ir\n").is_err());
    }

    #[test]
    fn instructions_per_event_cancel_the_fixed_costs() {
        let a = Callgrind {
            total: 1_000_000 + 20_000 * 500,
            functions: [("start".to_string(), 1_000_000), ("push".to_string(), 20_000 * 400)]
                .into_iter()
                .chain([(JIT_ROW.to_string(), 20_000 * 100)])
                .collect(),
        };
        let b = Callgrind {
            total: 1_000_000 + 80_000 * 500,
            functions: [("start".to_string(), 1_000_000), ("push".to_string(), 80_000 * 400)]
                .into_iter()
                .chain([(JIT_ROW.to_string(), 80_000 * 100)])
                .collect(),
        };
        let p = per_event(&a, &b, 60_000.0, 2);
        assert_eq!(p.total, 500.0);
        assert_eq!(p.top, vec![("push".to_string(), 400.0), (JIT_ROW.to_string(), 100.0)]);
    }

    /// What `dispatch_count 20000` printed.
    const COUNTED: &str = "recorded 20000 events
plugin http-status: delivered 20000, counted 20000, state Running
plugin user-agent: delivered 20000, counted 20000, state Running
plugin route-latency: delivered 20000, counted 20000, state Running
";

    #[test]
    fn every_plugin_must_count_every_event() {
        check_counted(COUNTED, 3).expect("all counted");
        let short = COUNTED.replace(
            "counted 20000, state Running\nplugin route",
            "counted 19999, state Running\nplugin route",
        );
        let e = check_counted(&short, 3).expect_err("one short");
        assert!(e.to_string().contains("user-agent"), "{e}");
        assert!(check_counted(COUNTED, 4).is_err(), "a plugin missing");
        assert!(check_counted("plugin x: delivered 1, counted 1, state Running", 1).is_err());
    }

    #[test]
    fn latency_ratios_are_per_round() {
        let load = |p99_us| Load { p99_us, ..Load::default() };
        let latency = Latency {
            rounds: vec![
                [load(100.0), load(110.0), load(150.0), load(120.0)],
                [load(200.0), load(210.0), load(260.0), load(250.0)],
                [load(400.0), load(440.0), load(600.0), load(480.0)],
            ],
        };
        assert_eq!(latency.p99_ratio(Variant::Off), 1.0);
        assert_eq!(latency.p99_ratio(Variant::Sonde), 1.1);
        assert_eq!(latency.p99_ratio(Variant::AxumPrometheus), 1.5);
        assert_eq!(latency.p99_ratio(Variant::Otel), 1.2);
        assert_eq!(latency.of(Variant::Otel)[1].p99_us, 250.0);
    }
}
