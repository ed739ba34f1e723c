//! Entry points for the benchmarks (`benches/`): plugin start measured in
//! its parts. Hidden from the docs; not a stable API.

use std::path::PathBuf;

use sonde_core::PluginSpec;

use super::{HostState, Loader, Plugin, instantiate};
use crate::bindings::MetricCollectorPre;
use crate::cache::{CompileCache, Origin};
use crate::engine;
use crate::error::Error;

/// One plugin, loaded the way the runtime loads it.
#[allow(missing_debug_implementations, reason = "benchmark plumbing")]
pub struct PluginStart {
    loader: Loader,
    spec: PluginSpec,
    pre: Option<MetricCollectorPre<HostState>>,
}

impl PluginStart {
    /// A loader for `spec` with the runtime's engine settings; with
    /// `cache_dir`, a compile cache in that folder (fixed secret).
    pub fn new(spec: PluginSpec, cache_dir: Option<PathBuf>) -> Result<PluginStart, Error> {
        let engine = engine::new_engine(false)?;
        let cache = cache_dir.map(|dir| CompileCache::new(dir, [7; 32], &engine));
        let loader =
            Loader::new(engine, false, cache, None).map_err(|e| Error::Engine(format!("{e:#}")))?;
        Ok(PluginStart { loader, spec, pre: None })
    }

    /// Everything the runtime does to start the plugin: read and hash the
    /// file, compile it (or load it from the cache), link, instantiate and
    /// call `info`. True when it came from the cache.
    pub fn load(&mut self) -> Result<bool, String> {
        let (pre, _live, _info, origin) = Plugin::try_load(&self.spec, &self.loader)?;
        self.pre = Some(pre);
        Ok(origin == Origin::Cached)
    }

    /// A fresh instance of the loaded plugin: new store with its limits,
    /// instantiation and the `info` call (what a restart after a trap costs).
    pub fn instantiate(&self) -> Result<(), String> {
        let pre = self.pre.as_ref().ok_or("not loaded")?;
        instantiate(pre, &self.spec, None).map(drop).map_err(|e| e.to_string())
    }
}
