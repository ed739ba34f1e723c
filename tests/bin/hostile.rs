//! `sonde-reliability hostile`: every attack class of the hostile suite,
//! each in a process of its own (so that its peak RSS is its own), beside
//! the well-behaved `http-status` plugin. For each: how it was contained,
//! how long from `start()` until it was, the host's peak RSS, and whether
//! the neighbour's numbers stayed exact. `tests/all/hostile.rs` asserts the
//! same containment without timings.

use std::path::Path;
use std::process::Command;
use std::time::{Duration, Instant};

use anyhow::{Context, Result, bail};
use sonde::{Manifest, PluginReport, PluginState, Report, Telemetry};
use sonde_tests::{Entry, fixture, hostile, plugin, plugin_report, total, write_manifest};

static HTTP: sonde::EventKind = sonde::EventKind::new("http.request", &["method", "status"]);

/// How long a case may take to be contained before it counts as not.
const CASE_LIMIT: Duration = Duration::from_secs(90);

/// Events recorded per round while waiting for containment.
const ROUND: u64 = 200;

struct Case {
    name: &'static str,
    class: &'static str,
    /// The attacker's manifest entry, given the case's folder.
    entry: fn(&Path) -> Entry,
    /// How it is contained, once it is: a description from its report.
    contained: fn(&PluginReport) -> Option<String>,
}

fn refused(p: &PluginReport) -> Option<String> {
    (p.state == PluginState::Refused).then(|| format!("refused: {}", clip(p.reason.as_deref())))
}

/// Refused for a reason that names `limit`: refused for another reason is
/// not this attack contained.
fn refused_naming(p: &PluginReport, limit: &str) -> Option<String> {
    refused(p).filter(|_| p.reason.as_deref().is_some_and(|r| r.contains(limit)))
}

fn failed_as(p: &PluginReport) -> Option<String> {
    let f = &p.cost.failure_kinds;
    let kinds = [("cpu", f.cpu), ("memory", f.memory), ("stack", f.stack), ("panic", f.panic)];
    let (kind, _) = kinds.iter().find(|(_, n)| *n > 0)?;
    Some(format!(
        "failure `{kind}`, {} restart(s): {}",
        p.cost.restarts,
        clip(p.last_failure.as_deref())
    ))
}

fn clip(s: Option<&str>) -> String {
    let s = s.unwrap_or_default();
    let cut: String = s.chars().take(90).collect();
    let cut = cut.replace('|', "\\|");
    if cut.len() < s.len() { format!("{cut}…") } else { cut }
}

/// The language fixture `file` in `mode`, its compiled code shared from the
/// tests' cache into the case's state directory.
fn lang(dir: &Path, file: &str, mode: &str) -> Entry {
    let entry = Entry::new("attacker", fixture(file)).config("mode", mode);
    sonde_tests::share_compile_cache(&dir.join("s"), std::slice::from_ref(&entry));
    entry
}

fn bomb(dir: &Path, name: &str, wasm: Vec<u8>) -> std::path::PathBuf {
    let path = dir.join(name);
    std::fs::write(&path, wasm).expect("write the bomb");
    path
}

fn cases() -> Vec<Case> {
    vec![
        Case {
            name: "compile time",
            class: "4 functions of 2,000 locals in loops 250 deep (~7 s of Cranelift in \
                    release, ~35 s in debug), `compile_timeout_secs = 3`",
            entry: |d| {
                Entry::new("attacker", bomb(d, "b.wasm", sonde_tests::compile_bomb(4, 2000, 250)))
                    .limit("compile_timeout_secs = 3")
            },
            contained: |p| refused_naming(p, "compile_timeout_secs"),
        },
        Case {
            name: "compile memory",
            class: "the same bomb, `compile_memory_mb = 64`",
            entry: |d| {
                Entry::new("attacker", bomb(d, "b.wasm", sonde_tests::compile_bomb(4, 2000, 250)))
                    .limit("compile_memory_mb = 64")
            },
            contained: |p| refused_naming(p, "compile_memory_mb"),
        },
        Case {
            name: "compile shape",
            class: "one function of 3,000 locals in loops 500 deep (locals² × depth 4.5 × the limit)",
            entry: |d| {
                Entry::new("attacker", bomb(d, "b.wasm", sonde_tests::compile_bomb(1, 3000, 500)))
            },
            contained: |p| refused_naming(p, "too complex to compile"),
        },
        Case {
            name: "many memories",
            class: "40 linear memories",
            entry: |_| Entry::new("attacker", fixture("hostile_memories_40.wasm")),
            contained: |p| refused_naming(p, "memories 41, at most 16"),
        },
        Case {
            name: "memories past the cap",
            class: "8 more memories of 8 MiB, `memory_mb = 64`",
            entry: |_| Entry::new("attacker", fixture("hostile_memories_8x8mib.wasm")),
            contained: |p| refused_naming(p, "ran out of memory"),
        },
        Case {
            name: "endless loop",
            class: "`loop`: never returns from `on-events`",
            entry: |_| hostile("attacker", "loop").limit("call_timeout_ms = 50"),
            contained: failed_as,
        },
        Case {
            name: "memory growth",
            class: "`grow`: allocates until refused",
            entry: |_| hostile("attacker", "grow"),
            contained: failed_as,
        },
        Case {
            name: "deep recursion",
            class: "`recurse`: wasm stack",
            entry: |_| hostile("attacker", "recurse"),
            contained: failed_as,
        },
        Case {
            name: "shadow-stack overflow",
            class: "`recurse-shadow`: Rust's stack in linear memory",
            entry: |_| hostile("attacker", "recurse-shadow"),
            contained: failed_as,
        },
        Case {
            name: "infinite totals",
            class: "`max-delta`: `f64::MAX` deltas every collect",
            entry: |_| hostile("attacker", "max-delta"),
            contained: |p| {
                (p.cost.non_finite_totals > 0)
                    .then(|| format!("{} deltas dropped and counted", p.cost.non_finite_totals))
            },
        },
        Case {
            name: "terminal escapes",
            class: "`ansi-text`: CR and ANSI in a metric name",
            entry: |_| hostile("attacker", "ansi-text"),
            contained: |p| refused_naming(p, "invalid info"),
        },
        Case {
            name: "lying function name",
            class: "`lying-name`: fails in a function named like a host reason",
            entry: |_| hostile("attacker", "lying-name"),
            contained: |p| (p.cost.failures > 0).then(|| clip(p.last_failure.as_deref())),
        },
        Case {
            name: "point flood",
            class: "`flood`: 50,000 points per collect",
            entry: |_| hostile("attacker", "flood"),
            contained: |p| {
                (p.cost.excess_points > 0)
                    .then(|| format!("{} excess points counted", p.cost.excess_points))
            },
        },
        Case {
            name: "aliased points",
            class: "raw ABI: 1,000,000 points sharing one labels list",
            entry: |_| {
                Entry::new("attacker", fixture("raw_abi.wasm"))
                    .config("mode", "alias-points")
                    .limit("memory_mb = 128")
            },
            contained: |p| {
                (p.cost.excess_points > 0)
                    .then(|| format!("{} points not lifted, counted", p.cost.excess_points))
            },
        },
        Case {
            name: "aliased labels",
            class: "raw ABI: labels all one list of 2,000,000 entries",
            entry: |_| {
                Entry::new("attacker", fixture("raw_abi.wasm")).config("mode", "alias-labels")
            },
            contained: |p| {
                (p.cost.invalid_points > 0)
                    .then(|| format!("{} points invalid, not copied", p.cost.invalid_points))
            },
        },
        Case {
            name: "aliased info",
            class: "raw ABI: `info` with 200,000 aliased metric decls",
            entry: |_| Entry::new("attacker", fixture("raw_abi.wasm")).config("mode", "alias-info"),
            contained: |p| refused_naming(p, "at most 64"),
        },
        Case {
            name: "device as plugin file",
            class: "the plugin path is a symlink to `/dev/zero`",
            entry: |d| {
                let path = d.join("zero.wasm");
                let _ = std::os::unix::fs::symlink("/dev/zero", &path);
                Entry { sha256: Some("0".repeat(64)), ..Entry::new("attacker", path) }
            },
            contained: |p| refused_naming(p, "not a regular file"),
        },
        // The same attacks from collectors in other languages
        // (`tests/fixtures/hostile-py`, `-js`, `-c`), compiled once into a
        // shared cache first: what is timed is containment, not the 15-40 s
        // compile of a Python or JavaScript component.
        Case {
            name: "Python: endless loop",
            class: "`hostile-py` `loop`: `while True` in `on_events`",
            entry: |d| lang(d, "hostile_py.wasm", "loop").limit("call_timeout_ms = 50"),
            contained: failed_as,
        },
        Case {
            name: "Python: memory growth",
            class: "`hostile-py` `grow`: keeps 1 MiB objects",
            entry: |d| lang(d, "hostile_py.wasm", "grow").limit("call_timeout_ms = 5000"),
            contained: failed_as,
        },
        Case {
            name: "Python: WASI",
            class: "`hostile-py` built without `--stub-wasi` (18 MB)",
            entry: |_| Entry::new("attacker", fixture("hostile_py_wasi.wasm")),
            contained: |p| refused_naming(p, "which sonde never grants"),
        },
        Case {
            name: "JavaScript: endless loop",
            class: "`hostile-js` `loop`: `for (;;)` in `onEvents`",
            entry: |d| lang(d, "hostile_js.wasm", "loop").limit("call_timeout_ms = 50"),
            contained: failed_as,
        },
        Case {
            name: "JavaScript: memory growth",
            class: "`hostile-js` `grow`: keeps 1 MiB arrays",
            entry: |d| lang(d, "hostile_js.wasm", "grow").limit("call_timeout_ms = 5000"),
            contained: failed_as,
        },
        Case {
            name: "JavaScript: WASI",
            class: "`hostile-js` built with componentize-js's default features (12 MB)",
            entry: |_| Entry::new("attacker", fixture("hostile_js_wasi.wasm")),
            contained: |p| refused_naming(p, "which sonde never grants"),
        },
        Case {
            name: "C: endless loop",
            class: "`hostile-c` `loop`",
            entry: |d| lang(d, "hostile_c.wasm", "loop").limit("call_timeout_ms = 50"),
            contained: failed_as,
        },
        Case {
            name: "C: memory growth",
            class: "`hostile-c` `grow`: mallocs and touches 1 MiB blocks",
            entry: |d| lang(d, "hostile_c.wasm", "grow").limit("call_timeout_ms = 5000"),
            contained: failed_as,
        },
        Case {
            name: "C: forbidden import",
            class: "`hostile-c` built against a world adding `wasi:cli/environment`",
            entry: |_| Entry::new("attacker", fixture("hostile_c_env.wasm")),
            contained: |p| refused_naming(p, "imports `wasi:cli/environment@0.2.0`"),
        },
        Case {
            name: "FIFO as plugin file",
            class: "the plugin path is a FIFO nobody writes",
            entry: |d| {
                let path = d.join("fifo.wasm");
                let _ = Command::new("mkfifo").arg(&path).status();
                Entry { sha256: Some("0".repeat(64)), ..Entry::new("attacker", path) }
            },
            contained: |p| refused_naming(p, "not a regular file"),
        },
    ]
}

/// Runs every case in a child process; prints the Markdown table. Fails if
/// any case was not contained or left the neighbour inexact.
pub(crate) fn table() -> Result<()> {
    let exe = std::env::current_exe()?;
    let baseline = run_child(&exe, "baseline")?;
    println!(
        "Each case runs in a process of its own, beside `http-status`, recording {ROUND} events \
         per round and building a report after each, until the attacker is contained (at most \
         {} s). *Time* is from `Telemetry::start` to the first report that shows it contained; \
         *peak RSS* is the process's high-water mark (`VmHWM`), against {:.0} MiB for `http-status` \
         alone under the same load. *Neighbour* compares `http-status`'s count with the events \
         recorded, in every report.\n",
        CASE_LIMIT.as_secs(),
        baseline.peak_mib
    );
    println!("| attack | what it does | contained as | time | peak RSS | neighbour |");
    println!("|---|---|---|---|---|---|");
    let mut failed = Vec::new();
    for (i, case) in cases().iter().enumerate() {
        let out = run_child(&exe, &i.to_string())?;
        println!(
            "| {} | {} | {} | {} | {:.0} MiB | {} |",
            case.name,
            case.class,
            out.contained.as_deref().unwrap_or("**not contained**"),
            if out.contained.is_some() { format!("{} ms", out.ms) } else { "-".into() },
            out.peak_mib,
            if out.exact { "exact" } else { "**off**" }
        );
        if out.contained.is_none() || !out.exact {
            failed.push(case.name);
        }
    }
    if !failed.is_empty() {
        bail!("not contained or neighbour off: {failed:?}");
    }
    Ok(())
}

struct Outcome {
    contained: Option<String>,
    ms: u128,
    exact: bool,
    peak_mib: f64,
}

fn run_child(exe: &Path, case: &str) -> Result<Outcome> {
    let out = Command::new(exe).args(["hostile-case", case]).output().context("a hostile case")?;
    let text = String::from_utf8_lossy(&out.stdout);
    let line = text.lines().last().unwrap_or_default();
    let v: serde_json::Value = serde_json::from_str(line)
        .with_context(|| format!("case {case}: {line} {}", String::from_utf8_lossy(&out.stderr)))?;
    Ok(Outcome {
        contained: v["contained"].as_str().map(str::to_string),
        ms: v["ms"].as_u64().unwrap_or(0).into(),
        exact: v["exact"].as_bool().unwrap_or(false),
        peak_mib: v["peak_kib"].as_f64().unwrap_or(0.0) / 1024.0,
    })
}

fn peak_kib() -> u64 {
    let status = std::fs::read_to_string("/proc/self/status").unwrap_or_default();
    status
        .lines()
        .find_map(|l| l.strip_prefix("VmHWM:"))
        .and_then(|v| v.split_whitespace().next()?.parse().ok())
        .unwrap_or(0)
}

/// One case (an index into [`cases`], or `baseline`), in this process:
/// prints one JSON line.
pub(crate) fn case(which: &str) -> Result<()> {
    let dir = tempfile::tempdir()?;
    let cases = cases();
    let case = which.parse::<usize>().ok().and_then(|i| cases.get(i));
    let mut entries = vec![Entry::new("http-status", plugin("http_status.wasm"))];
    if let Some(c) = case {
        entries.push((c.entry)(dir.path()));
    }
    let path = write_manifest(dir.path(), "mode = \"local\"\nstate_dir = \"s\"", &entries);
    let started = Instant::now();
    let t = Telemetry::builder(Manifest::load(&path)?).start()?;
    let (mut sent, mut exact, mut contained, mut ms) = (0u64, true, None, 0);
    while started.elapsed() < CASE_LIMIT {
        for i in 0..ROUND {
            t.record(HTTP.event().str("method", "GET").int("status", 200 + (i % 2) as i64));
        }
        sent += ROUND;
        let r: Report = t.report()?;
        exact &= total(plugin_report(&r, "http-status"), Some("http.requests")) == sent as f64
            && r.buffer.dropped == 0;
        let Some(c) = case else {
            if sent >= 20 * ROUND {
                break;
            }
            continue;
        };
        if let Some(how) = (c.contained)(plugin_report(&r, "attacker")) {
            contained = Some(how);
            ms = started.elapsed().as_millis();
            break;
        }
    }
    println!(
        "{}",
        serde_json::json!({
            "contained": contained,
            "ms": ms as u64,
            "exact": exact,
            "peak_kib": peak_kib(),
        })
    );
    Ok(())
}
