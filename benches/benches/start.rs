//! Plugin start: compiling a component, loading it from the compile cache,
//! and instantiating it (new store, instance and the `info` call), for each
//! example plugin.

#![allow(clippy::unwrap_used, reason = "benchmarks")]

use std::time::Duration;

use criterion::{Criterion, criterion_group, criterion_main};
use sonde::__bench::PluginStart;
use sonde::Manifest;
use sonde_tests::{example_entries, write_manifest};

fn start(c: &mut Criterion) {
    let dir = tempfile::tempdir().unwrap();
    let path = write_manifest(dir.path(), "mode = \"local\"", &example_entries());
    let manifest = Manifest::load(&path).unwrap();
    for spec in &manifest.plugins {
        let mut g = c.benchmark_group(format!("start/{}", spec.name));
        g.measurement_time(Duration::from_secs(3)).sample_size(10);
        let mut compiled = PluginStart::new(spec.clone(), None).unwrap();
        g.bench_function("compile", |b| b.iter(|| assert_eq!(compiled.load(), Ok(false))));
        let cache = tempfile::tempdir().unwrap();
        let mut cached = PluginStart::new(spec.clone(), Some(cache.path().to_path_buf())).unwrap();
        assert_eq!(cached.load(), Ok(false), "the first load compiles and fills the cache");
        g.sample_size(50);
        g.bench_function("load from cache", |b| b.iter(|| assert_eq!(cached.load(), Ok(true))));
        g.sample_size(100);
        g.bench_function("instantiate", |b| b.iter(|| cached.instantiate().unwrap()));
        g.finish();
    }
}

criterion_group!(benches, start);
criterion_main!(benches);
