//! `cargo xtask reliability`: the long reliability runs, and RELIABILITY.md.
//!
//! Builds the runner (`tests/bin/reliability.rs`, `sonde-reliability`) and
//! the crash child in release, runs its sections (endpoint faults with
//! `record()` latency, overload, collector under load, a SIGKILL loop) and
//! every fuzz target for a bounded time, hostile plugins, and writes RELIABILITY.md at the
//! repository root: the machine, the date, and each figure with the command
//! that reproduces it. Fails if any section fails its checks or a fuzz
//! target crashes (the file is written either way).

use std::fmt::Write as _;
use std::path::Path;
use std::process::Command;
use std::time::Instant;

use anyhow::{Context, Result, bail};

/// How long each part runs.
#[derive(Debug)]
struct Budget {
    fault_secs: u64,
    overload_secs: u64,
    instances: u64,
    kills: u64,
    fuzz_secs: u64,
}

pub(crate) fn run(root: &Path, args: &[String]) -> Result<()> {
    let mut b =
        Budget { fault_secs: 5, overload_secs: 30, instances: 200, kills: 30, fuzz_secs: 60 };
    let mut rest = args.iter();
    let mut only = None;
    while let Some(a) = rest.next() {
        if a == "--only" {
            only = Some(rest.next().context("--only needs a section: hostile or fleet")?.clone());
            continue;
        }
        let slot = match a.as_str() {
            "--fault-secs" => &mut b.fault_secs,
            "--overload-secs" => &mut b.overload_secs,
            "--instances" => &mut b.instances,
            "--kills" => &mut b.kills,
            "--fuzz-secs" => &mut b.fuzz_secs,
            other => bail!("unknown argument `{other}`"),
        };
        *slot = rest.next().with_context(|| format!("{a} needs a number"))?.parse()?;
    }
    let started = Instant::now();
    crate::print_built(root, &crate::build_components(root, &crate::PLUGINS)?);
    crate::print_built(root, &crate::build_fixtures(root)?);
    crate::cargo(
        root,
        &["build", "--release", "-p", "sonde-tests", "--bins", "-p", "sonde-collector"],
    )?;
    let runner = root.join("target/release/sonde-reliability");
    let fleet_args = || vec!["fleet".to_string(), "--instances".into(), b.instances.to_string()];

    if let Some(only) = only {
        let (title, args) = match only.as_str() {
            "hostile" => (HOSTILE, vec!["hostile".to_string()]),
            "fleet" => {
                crate::ensure_postgres()?;
                (FLEET, fleet_args())
            }
            _ => bail!("--only takes `hostile` or `fleet` (the other sections run together)"),
        };
        let (text, ok) = section(root, &runner, title, &args)?;
        let path = root.join("RELIABILITY.md");
        let doc = std::fs::read_to_string(&path).unwrap_or_else(|_| "# Reliability\n\n".into());
        std::fs::write(&path, splice(&doc, title, &text))?;
        println!("wrote the `{title}` section of RELIABILITY.md in {:.0?}", started.elapsed());
        if !ok {
            bail!("failed: {title} (see RELIABILITY.md)");
        }
        return Ok(());
    }
    crate::ensure_postgres()?;

    let sections: [(&str, Vec<String>); 6] = [
        ("Endpoint faults", vec!["faults".into(), "--secs".into(), b.fault_secs.to_string()]),
        ("Overload", vec!["overload".into(), "--secs".into(), b.overload_secs.to_string()]),
        (
            "Collector under load",
            vec!["collector".into(), "--instances".into(), b.instances.to_string()],
        ),
        (FLEET, fleet_args()),
        ("Crashes (SIGKILL)", vec!["crashes".into(), "--kills".into(), b.kills.to_string()]),
        (HOSTILE, vec!["hostile".into()]),
    ];
    let mut body = String::new();
    let mut failed = Vec::new();
    for (title, args) in &sections {
        let (text, ok) = section(root, &runner, title, args)?;
        body.push_str(&text);
        if !ok {
            failed.push(*title);
        }
    }

    let runs = crate::fuzz::fuzz_all(root, b.fuzz_secs, &[])?;
    let _ = writeln!(body, "## Fuzzing\n");
    let _ = writeln!(
        body,
        "Reproduce: `cargo xtask fuzz --secs {}` (cargo-fuzz / libFuzzer with AddressSanitizer, \
         on stable Rust through `RUSTC_BOOTSTRAP=1`; one target: `cargo xtask fuzz --secs N \
         TARGET`). Each target asserts more than \"no panic\": see `fuzz/checks.rs` and \
         `fuzz/fuzz_targets/rate_limit.rs`. Crashes are saved under `fuzz/regressions/` and \
         replayed by `cargo test`.\n",
        b.fuzz_secs
    );
    let _ =
        writeln!(body, "| target | exercises | time | inputs run | coverage | corpus | crashes |");
    let _ = writeln!(body, "|---|---|---|---|---|---|---|");
    for r in &runs {
        let _ = writeln!(
            body,
            "| `{}` | {} | {} s | {} | {} | {} | {} |",
            r.target,
            r.what,
            r.secs,
            r.execs,
            r.coverage,
            r.corpus,
            r.crash.as_ref().map_or("none".to_string(), |c| format!("**{}**", c.display()))
        );
        if r.crash.is_some() {
            failed.push(r.target);
        }
    }

    let mut doc = String::from("# Reliability\n\n");
    let _ = writeln!(
        doc,
        "Written by `cargo xtask reliability` (about {:.0} minutes with its defaults; \
         `--fault-secs`, `--overload-secs`, `--instances`, `--kills` and `--fuzz-secs` change \
         them). The fault, overload and crash behaviour asserted here is also asserted, in \
         shorter runs and without timings, by `cargo test` (`tests/all/faults.rs`, \
         `overload.rs`, `crashes.rs`).\n",
        started.elapsed().as_secs_f64() / 60.0
    );
    let _ = writeln!(doc, "{}\n", machine());
    doc.push_str(&body);
    std::fs::write(root.join("RELIABILITY.md"), doc)?;
    println!("wrote RELIABILITY.md in {:.0?}", started.elapsed());
    if !failed.is_empty() {
        bail!("failed: {failed:?} (see RELIABILITY.md)");
    }
    Ok(())
}

/// CPU model, CPU count and memory, e.g. `AMD EPYC, 2 CPUs, 24 GiB RAM`.
pub(crate) fn hardware() -> String {
    let cpuinfo = std::fs::read_to_string("/proc/cpuinfo").unwrap_or_default();
    let model = cpuinfo
        .lines()
        .find_map(|l| l.strip_prefix("model name"))
        .map(|v| v.trim_start_matches([' ', '\t', ':']).to_string())
        .unwrap_or_else(|| "unknown CPU".into());
    let cpus = std::thread::available_parallelism().map_or(1, |n| n.get());
    let meminfo = std::fs::read_to_string("/proc/meminfo").unwrap_or_default();
    let mem_gib = meminfo
        .lines()
        .find_map(|l| l.strip_prefix("MemTotal:"))
        .and_then(|v| v.split_whitespace().next()?.parse::<f64>().ok())
        .map_or(0.0, |kib| kib / 1024.0 / 1024.0);
    format!("{model}, {cpus} CPUs, {mem_gib:.0} GiB RAM")
}

/// What a command prints, trimmed; empty if it cannot run.
pub(crate) fn output_of(c: &str, a: &[&str]) -> String {
    Command::new(c)
        .args(a)
        .output()
        .map(|o| String::from_utf8_lossy(&o.stdout).trim().to_string())
        .unwrap_or_default()
}

/// The machine and the date, in a few lines.
fn machine() -> String {
    format!(
        "- machine: {}, {}\n- toolchain: {}\n- date: {}\n\
         - release builds; everything on loopback on this one machine",
        hardware(),
        output_of("uname", &["-sr"]),
        output_of("rustc", &["-V"]),
        output_of("date", &["-u", "+%Y-%m-%d %H:%M UTC"]),
    )
}

/// The title of the hostile-plugins section (`--only hostile` rewrites it
/// alone).
const HOSTILE: &str = "Hostile plugins";
/// The title of the collector replicas section (`--only fleet`).
const FLEET: &str = "Collector at fleet scale (SQLite, PostgreSQL, replicas)";

/// Runs one section of the runner; its Markdown (title, how to reproduce,
/// output) and whether it passed.
fn section(root: &Path, runner: &Path, title: &str, args: &[String]) -> Result<(String, bool)> {
    eprintln!("+ sonde-reliability {}", args.join(" "));
    let out = Command::new(runner)
        .args(args)
        .current_dir(root)
        .stderr(std::process::Stdio::inherit())
        .output()
        .with_context(|| format!("running {}", runner.display()))?;
    let mut body = String::new();
    let _ = writeln!(body, "## {title}\n");
    let _ = writeln!(
        body,
        "Reproduce: `cargo build --release -p sonde-tests --bins -p sonde-collector && \
         target/release/sonde-reliability {}`\n",
        args.join(" ")
    );
    body.push_str(String::from_utf8_lossy(&out.stdout).trim_end());
    body.push_str("\n\n");
    if !out.status.success() {
        let _ = writeln!(body, "**FAILED** (exit {})\n", out.status);
    }
    Ok((body, out.status.success()))
}

/// `doc` with its `## title` section replaced by `text` (or, when it has
/// none, `text` inserted before the fuzzing section, else at the end).
fn splice(doc: &str, title: &str, text: &str) -> String {
    let heading = format!("## {title}\n");
    let next_heading = |from: usize| doc[from..].find("\n## ").map_or(doc.len(), |i| from + i + 1);
    if let Some(at) = doc.find(&heading) {
        let end = next_heading(at + heading.len());
        return format!("{}{text}{}", &doc[..at], &doc[end..]);
    }
    match doc.find("## Fuzzing\n") {
        Some(at) => format!("{}{text}{}", &doc[..at], &doc[at..]),
        None => format!("{}\n{text}", doc.trim_end()),
    }
}
