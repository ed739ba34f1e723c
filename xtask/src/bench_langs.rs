//! `cargo xtask bench --languages`: the `http-status` collector in Rust,
//! Python, JavaScript and C side by side (component size, compile time, load
//! from the compile cache, instantiate, `sonde bench` time per event and
//! peak memory), written into BENCHMARKS.md's "Collectors in other
//! languages" section, leaving the rest of the file as it is. The full
//! `cargo xtask bench` runs it too, last.

use std::fmt::Write as _;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Instant;

use anyhow::{Context, Result, ensure};

use crate::langs::{COMPONENTIZE_JS, COMPONENTIZE_PY, WIT_BINDGEN_CLI};

/// The section's heading: everything from it to the next `## ` heading is
/// this module's.
const HEADING: &str = "## Collectors in other languages";

/// The collectors measured: (language, manifest name, file).
const SUBJECTS: [(&str, &str, &str); 4] = [
    ("Rust", "http-status", "http_status.wasm"),
    ("Python", "http-status-py", "http_status_py.wasm"),
    ("JavaScript", "http-status-js", "http_status_js.wasm"),
    ("C", "http-status-c", "http_status_c.wasm"),
];

/// Compiles per collector (each a child process; a Python one takes ~15 s).
const COMPILE_RUNS: usize = 3;
/// `sonde bench` runs per collector, and events per run.
const BENCH_RUNS: usize = 3;
const BENCH_EVENTS: &str = "20000";

/// One collector's figures, each the median of its runs.
struct Row {
    lang: &'static str,
    bytes: u64,
    compile_ms: f64,
    cache_load_us: f64,
    instantiate_us: f64,
    ns_per_event: f64,
    fuel_per_event: f64,
    peak_kib: f64,
}

/// `--languages`: builds what is needed, measures, rewrites the section.
pub(crate) fn run(root: &Path) -> Result<()> {
    let started = Instant::now();
    crate::print_built(root, &crate::build_components(root, &crate::PLUGINS)?);
    crate::print_built(root, &crate::build_lang_plugins(root, &crate::PLUGINS)?);
    crate::cargo(root, &["build", "--release", "--quiet", "-p", "sonde-cli"])?;
    rewrite(root)?;
    println!("BENCHMARKS.md ({HEADING}) written in {:.0?}", started.elapsed());
    Ok(())
}

/// Measures (the plugins and the release `sonde` built) and splices the
/// section into BENCHMARKS.md.
pub(crate) fn rewrite(root: &Path) -> Result<()> {
    crate::cargo(
        root,
        &["build", "--release", "--quiet", "-p", "sonde-benches", "--example", "lang_start"],
    )?;
    let rows = SUBJECTS.iter().map(|s| measure(root, *s)).collect::<Result<Vec<_>>>()?;
    let section = render(&rows)?;
    let path = root.join("BENCHMARKS.md");
    let text = std::fs::read_to_string(&path).unwrap_or_default();
    std::fs::write(&path, splice(&text, &section))?;
    Ok(())
}

fn median(v: Vec<f64>) -> f64 {
    crate::bench::median(v)
}

fn measure(root: &Path, (lang, name, file): (&'static str, &str, &str)) -> Result<Row> {
    let path = root.join("target/plugins").join(file);
    let bytes = std::fs::metadata(&path).with_context(|| format!("{}", path.display()))?.len();
    eprintln!("+ measuring {name} ({lang}, {bytes} bytes)");
    let out = Command::new(root.join("target/release/examples/lang_start"))
        .arg(&path)
        .arg(COMPILE_RUNS.to_string())
        .output()
        .context("running lang_start")?;
    ensure!(out.status.success(), "lang_start {file}: {}", String::from_utf8_lossy(&out.stderr));
    let start: serde_json::Value = serde_json::from_slice(&out.stdout)?;
    let figures = |key: &str| -> Vec<f64> {
        start[key].as_array().into_iter().flatten().filter_map(serde_json::Value::as_f64).collect()
    };
    let (mut ns, mut fuel, mut peak) = (Vec::new(), Vec::new(), Vec::new());
    let manifest = manifest(root, name, &path)?;
    for _ in 0..BENCH_RUNS {
        let out = Command::new(root.join("target/release/sonde"))
            .args(["bench", "--format", "json", "--plugin", name, "--min-events", BENCH_EVENTS])
            .arg("-m")
            .arg(&manifest)
            .arg("--events")
            .arg(root.join("examples/events.jsonl"))
            .output()
            .context("running sonde bench")?;
        ensure!(
            out.status.success(),
            "sonde bench {name}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        let r: serde_json::Value = serde_json::from_slice(&out.stdout)?;
        let get = |k: &str| r[k].as_f64().with_context(|| format!("sonde bench: no {k}"));
        ns.push(get("ns_per_event_in_plugin")?);
        fuel.push(get("fuel_per_event")?);
        peak.push(get("peak_memory_bytes")? / 1024.0);
    }
    Ok(Row {
        lang,
        bytes,
        compile_ms: median(figures("compile_ms")),
        cache_load_us: median(figures("cache_load_us")),
        instantiate_us: median(figures("instantiate_us")),
        ns_per_event: median(ns),
        fuel_per_event: median(fuel),
        peak_kib: median(peak),
    })
}

/// A manifest running `file` alone as `name`, under the default
/// `[plugin.limits]`: a collector these defaults do not let run fails the
/// bench.
fn manifest(root: &Path, name: &str, file: &Path) -> Result<PathBuf> {
    let dir = root.join("target/bench-langs").join(name);
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir)?;
    let sha = {
        use sha2::Digest;
        hex::encode(sha2::Sha256::digest(std::fs::read(file)?))
    };
    let path = dir.join("sonde.toml");
    std::fs::write(
        &path,
        format!(
            "[telemetry]\nmode = \"local\"\nstate_dir = \"state\"\n\n[[plugin]]\nname = \"{name}\"\n\
             path = {:?}\nsha256 = \"{sha}\"\nallow = true\nevents = [\"http.request\"]\n",
            file.display().to_string()
        ),
    )?;
    Ok(path)
}

fn render(rows: &[Row]) -> Result<String> {
    let mut s = String::new();
    writeln!(s, "{HEADING}\n")?;
    let date = crate::reliability::output_of("date", &["-u", "+%Y-%m-%d %H:%M UTC"]);
    writeln!(
        s,
        "`http-status` written four times (`plugins/http-status`, `-py`, `-js`, `-c`; identical \
         reports, `tests/all/languages.rs`), measured by `cargo xtask bench --languages` on {date} \
         with the release `sonde`: compile is the runtime's own path (shape check, Cranelift in a \
         child process), median of {COMPILE_RUNS}; load from the compile cache median of 20, \
         instantiate (new store, instance, `info`) median of 100; `sonde bench` over \
         `examples/events.jsonl` replayed to {BENCH_EVENTS} events (fuel metered, as `sonde bench` \
         runs), median of {BENCH_RUNS}, time inside the plugin per event and the plugin's peak \
         linear memory. Toolchains: componentize-py {COMPONENTIZE_PY} `--stub-wasi`, \
         componentize-js {COMPONENTIZE_JS} (every feature disabled), wit-bindgen-cli \
         {WIT_BINDGEN_CLI} + clang-16. The machine is shared with other work: timings are \
         noisy, sizes and fuel are not.\n"
    )?;
    writeln!(
        s,
        "| language | component | compile | load from cache | instantiate | in the plugin, per event | fuel per event | peak memory |"
    )?;
    writeln!(s, "|---|---:|---:|---:|---:|---:|---:|---:|")?;
    let rust = rows.first().context("no rows")?;
    for r in rows {
        let times = |v: f64, base: f64| {
            if std::ptr::eq(r, rust) { String::new() } else { format!(" ({:.1}x)", v / base) }
        };
        writeln!(
            s,
            "| {} | {} | {:.0} ms{} | {:.0} µs | {:.0} µs | {:.0} ns{} | {:.0} | {:.0} KiB |",
            r.lang,
            size(r.bytes),
            r.compile_ms,
            times(r.compile_ms, rust.compile_ms),
            r.cache_load_us,
            r.instantiate_us,
            r.ns_per_event,
            times(r.ns_per_event, rust.ns_per_event),
            r.fuel_per_event,
            r.peak_kib,
        )?;
    }
    writeln!(
        s,
        "\n`sonde bench` ran each under the default `[plugin.limits]` (`file_mb = 32`, \
         `compile_timeout_secs = 120`, `compile_memory_mb = 2048`, `memory_mb = 64`, \
         `call_timeout_ms = 200`): they let every one of them run. A Python or JavaScript \
         collector is compiled once and loaded from the cache after that.\n"
    )?;
    Ok(s)
}

fn size(bytes: u64) -> String {
    if bytes >= 1 << 20 {
        format!("{:.1} MiB", bytes as f64 / f64::from(1 << 20))
    } else {
        format!("{:.1} KiB", bytes as f64 / 1024.0)
    }
}

/// `text` with its languages section replaced by `section` (or `section`
/// inserted before `## Reproduce`, or appended, when it has none).
fn splice(text: &str, section: &str) -> String {
    if let Some(at) = text.find(HEADING) {
        let rest = &text[at + HEADING.len()..];
        let end = rest.find("\n## ").map_or(text.len(), |i| at + HEADING.len() + i + 1);
        return format!("{}{section}{}", &text[..at], &text[end..]);
    }
    if let Some(at) = text.find("## Reproduce") {
        return format!("{}{section}\n{}", &text[..at], &text[at..]);
    }
    format!("{text}\n{section}")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_section_is_replaced_in_place_or_inserted() {
        let old =
            "# B\n\n## A\n\na\n\n## Collectors in other languages\n\nold\n\n## Reproduce\n\nr\n";
        let new = splice(old, "## Collectors in other languages\n\nnew\n\n");
        assert_eq!(
            new,
            "# B\n\n## A\n\na\n\n## Collectors in other languages\n\nnew\n\n## Reproduce\n\nr\n"
        );
        let none = "# B\n\n## Reproduce\n\nr\n";
        assert_eq!(
            splice(none, "## Collectors in other languages\n\nx\n"),
            "# B\n\n## Collectors in other languages\n\nx\n\n## Reproduce\n\nr\n"
        );
        let last = "# B\n\n## Collectors in other languages\n\nold\n";
        assert_eq!(
            splice(last, "## Collectors in other languages\n\nx\n"),
            "# B\n\n## Collectors in other languages\n\nx\n"
        );
    }
}
