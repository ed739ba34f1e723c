//! Start costs of one plugin file, for `cargo xtask bench --languages`:
//! compiling it (as the runtime does: shape check, then Cranelift in a child
//! process), loading it from the compile cache, and instantiating it (new
//! store, instance and the `info` call). Prints one JSON object:
//! `{"compile_ms": [...], "cache_load_us": [...], "instantiate_us": [...]}`,
//! every run's figure.
//!
//! Usage: `lang_start FILE [COMPILE_RUNS]` (default 3).

use std::time::{Duration, Instant};

use anyhow::{Context, Result, ensure};
use sonde::__bench::PluginStart;
use sonde::Manifest;
use sonde_tests::{Entry, write_manifest};

fn main() -> Result<()> {
    let mut args = std::env::args().skip(1);
    let file = std::path::PathBuf::from(args.next().context("usage: lang_start FILE [RUNS]")?);
    let runs: usize = args.next().map_or(Ok(3), |r| r.parse())?;
    let dir = tempfile::tempdir()?;
    // The compile budget is not what is measured here.
    let entry = Entry::new("subject", file.canonicalize()?).limit("compile_timeout_secs = 600");
    let path = write_manifest(dir.path(), "mode = \"local\"", &[entry]);
    let spec = Manifest::load(&path)?.plugins.remove(0);
    let ms = |d: Duration| d.as_secs_f64() * 1e3;
    let us = |d: Duration| d.as_secs_f64() * 1e6;
    let mut compile = Vec::new();
    for _ in 0..runs {
        let mut start = PluginStart::new(spec.clone(), None)?;
        let t = Instant::now();
        ensure!(!start.load().map_err(anyhow::Error::msg)?, "compiled, not cached");
        compile.push(ms(t.elapsed()));
    }
    let cache = tempfile::tempdir()?;
    let mut cached = PluginStart::new(spec.clone(), Some(cache.path().to_path_buf()))?;
    ensure!(!cached.load().map_err(anyhow::Error::msg)?, "the first load fills the cache");
    let mut cache_load = Vec::new();
    for _ in 0..20 {
        let mut again = PluginStart::new(spec.clone(), Some(cache.path().to_path_buf()))?;
        let t = Instant::now();
        ensure!(again.load().map_err(anyhow::Error::msg)?, "from the cache");
        cache_load.push(us(t.elapsed()));
    }
    let mut instantiate = Vec::new();
    for _ in 0..100 {
        let t = Instant::now();
        cached.instantiate().map_err(anyhow::Error::msg)?;
        instantiate.push(us(t.elapsed()));
    }
    println!(
        "{}",
        serde_json::json!({
            "compile_ms": compile,
            "cache_load_us": cache_load,
            "instantiate_us": instantiate,
        })
    );
    Ok(())
}
