//! `cargo xtask fuzz [--secs N] [TARGET...]`: runs each cargo-fuzz target of
//! `fuzz/` for a bounded time.
//!
//! cargo-fuzz needs nightly compiler flags (`-Z sanitizer`, coverage
//! instrumentation); they are enabled on the stable toolchain with
//! `RUSTC_BOOTSTRAP=1`, set for the fuzz build only. cargo-fuzz itself is
//! installed with `cargo install cargo-fuzz --locked` when missing.
//!
//! Each target's corpus grows in `fuzz/corpus/<target>` (not committed),
//! seeded from `fuzz/seeds/<target>`; inputs saved in
//! `fuzz/regressions/<target>` are replayed on every run, and by
//! `cargo test` (`tests/all/fuzz_regressions.rs`). A crash is copied there,
//! so it becomes a regression test as soon as it is found; fix it, then
//! commit the input.

use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::Instant;

use anyhow::{Context, Result, bail, ensure};

/// Every fuzz target, with what it exercises.
pub(crate) const TARGETS: [(&str, &str); 5] = [
    ("manifest", "`Manifest::parse` (sonde.toml)"),
    ("response", "`EndpointResponse::parse` (the endpoint's answer and its directives)"),
    ("events", "`parse_events_jsonl` (events files for `sonde preview`)"),
    ("collector_decode", "`sonde_collector::upload::decode` (upload bodies, plain and gzip)"),
    ("rate_limit", "the uploader's sliding-window limits and backoff (`upload/policy.rs`)"),
];

/// What one target's run did.
#[derive(Debug)]
pub(crate) struct FuzzRun {
    pub(crate) target: &'static str,
    pub(crate) what: &'static str,
    pub(crate) secs: u64,
    /// Inputs executed.
    pub(crate) execs: u64,
    /// Corpus entries at the end.
    pub(crate) corpus: usize,
    /// Coverage points (libFuzzer's `cov`) at the end.
    pub(crate) coverage: u64,
    /// A crashing input, copied to `fuzz/regressions/<target>/`.
    pub(crate) crash: Option<PathBuf>,
}

/// `cargo xtask fuzz`.
pub(crate) fn run(root: &Path, args: &[String]) -> Result<()> {
    let mut secs = 60;
    let mut only = Vec::new();
    let mut rest = args.iter();
    while let Some(a) = rest.next() {
        match a.as_str() {
            "--secs" => {
                secs = rest.next().context("--secs needs a number")?.parse().context("--secs")?;
            }
            t if TARGETS.iter().any(|(name, _)| *name == t) => only.push(t.to_string()),
            other => bail!("unknown argument `{other}` (targets: {:?})", names()),
        }
    }
    let runs = fuzz_all(root, secs, &only)?;
    let crashed: Vec<&FuzzRun> = runs.iter().filter(|r| r.crash.is_some()).collect();
    for r in &runs {
        println!(
            "{:<17} {:>4} s {:>12} inputs  cov {:>5}  corpus {:>5}  {}",
            r.target,
            r.secs,
            r.execs,
            r.coverage,
            r.corpus,
            r.crash.as_ref().map_or("no crash".into(), |c| format!("CRASH: {}", c.display()))
        );
    }
    ensure!(
        crashed.is_empty(),
        "{} target(s) crashed; the inputs are regression tests now",
        crashed.len()
    );
    Ok(())
}

fn names() -> Vec<&'static str> {
    TARGETS.iter().map(|(n, _)| *n).collect()
}

/// Runs every target (or those in `only`) for `secs` seconds each.
pub(crate) fn fuzz_all(root: &Path, secs: u64, only: &[String]) -> Result<Vec<FuzzRun>> {
    ensure_cargo_fuzz()?;
    let dir = root.join("fuzz");
    build(&dir)?;
    let mut runs = Vec::new();
    for (target, what) in TARGETS {
        if !only.is_empty() && !only.iter().any(|o| o == target) {
            continue;
        }
        runs.push(run_target(&dir, target, what, secs)?);
    }
    Ok(runs)
}

fn ensure_cargo_fuzz() -> Result<()> {
    let cargo = std::env::var_os("CARGO").unwrap_or_else(|| "cargo".into());
    let found = Command::new(&cargo)
        .args(["fuzz", "--version"])
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status()
        .is_ok_and(|s| s.success());
    if !found {
        eprintln!("+ cargo install cargo-fuzz --locked");
        let status = Command::new(&cargo).args(["install", "cargo-fuzz", "--locked"]).status()?;
        ensure!(status.success(), "cannot install cargo-fuzz");
    }
    Ok(())
}

fn fuzz_command(dir: &Path) -> Command {
    let cargo = std::env::var_os("CARGO").unwrap_or_else(|| "cargo".into());
    let mut cmd = Command::new(cargo);
    cmd.current_dir(dir).env("RUSTC_BOOTSTRAP", "1");
    cmd
}

fn build(dir: &Path) -> Result<()> {
    eprintln!("+ RUSTC_BOOTSTRAP=1 cargo fuzz build -O (in fuzz/)");
    let status = fuzz_command(dir).args(["fuzz", "build", "-O"]).status()?;
    ensure!(status.success(), "`cargo fuzz build` failed");
    Ok(())
}

fn run_target(dir: &Path, target: &'static str, what: &'static str, secs: u64) -> Result<FuzzRun> {
    let corpus = dir.join("corpus").join(target);
    std::fs::create_dir_all(&corpus)?;
    let mut cmd = fuzz_command(dir);
    cmd.args(["fuzz", "run", "-O", target]).arg(&corpus);
    // Extra corpus folders are read, never written to.
    for extra in ["seeds", "regressions"] {
        let d = dir.join(extra).join(target);
        if d.is_dir() {
            cmd.arg(d);
        }
    }
    cmd.arg("--")
        .arg(format!("-max_total_time={secs}"))
        .arg("-timeout=10")
        .arg("-rss_limit_mb=2048")
        .arg("-max_len=65536")
        .arg("-print_final_stats=1");
    eprintln!("+ cargo fuzz run {target} -- -max_total_time={secs}");
    let started = Instant::now();
    let out = cmd.stdout(Stdio::inherit()).stderr(Stdio::piped()).output()?;
    let log = String::from_utf8_lossy(&out.stderr);
    let log_path = dir.join("corpus").join(format!("{target}.log"));
    std::fs::write(&log_path, log.as_bytes())?;
    let execs = stat(&log, "stat::number_of_executed_units:").unwrap_or(0);
    let coverage = last_cov(&log);
    let entries = std::fs::read_dir(&corpus).map(|d| d.count()).unwrap_or(0);
    let mut crash = None;
    if !out.status.success() {
        let artifact = log
            .lines()
            .find_map(|l| l.split("Test unit written to ").nth(1))
            .map(|p| dir.join(p.trim()));
        let Some(artifact) = artifact.filter(|p| p.exists()) else {
            bail!(
                "`cargo fuzz run {target}` failed without a crashing input; see {}",
                log_path.display()
            );
        };
        let keep = dir.join("regressions").join(target);
        std::fs::create_dir_all(&keep)?;
        let name = artifact.file_name().context("artifact name")?;
        std::fs::copy(&artifact, keep.join(name))?;
        crash = Some(keep.join(name));
    }
    Ok(FuzzRun {
        target,
        what,
        secs: started.elapsed().as_secs().min(secs.max(1)),
        execs,
        corpus: entries,
        coverage,
        crash,
    })
}

fn stat(log: &str, key: &str) -> Option<u64> {
    log.lines().find_map(|l| l.strip_prefix(key)).and_then(|v| v.trim().parse().ok())
}

/// The `cov: N` of libFuzzer's last status line.
fn last_cov(log: &str) -> u64 {
    log.lines()
        .rev()
        .find_map(|l| l.split("cov: ").nth(1)?.split_whitespace().next()?.parse().ok())
        .unwrap_or(0)
}
