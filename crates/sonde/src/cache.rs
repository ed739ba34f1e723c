//! The compile cache: plugin artifacts compiled once, reused across restarts.
//!
//! Deserializing a wasmtime artifact runs native code, so only artifacts this
//! host wrote are ever loaded. Each file is `MAGIC || HMAC-SHA256(secret,
//! artifact) || artifact`, keyed by the wasm's SHA-256 and the engine's
//! compatibility hash; the secret lives in the state directory (mode 0600). A
//! file that is short, foreign, corrupt or stale is ignored and rewritten.

use std::hash::{DefaultHasher, Hash, Hasher};
use std::path::PathBuf;

use hmac::{Hmac, Mac};
use sha2::Sha256;
use wasmtime::Engine;
use wasmtime::component::Component;

const MAGIC: &[u8; 8] = b"SONDEC1\0";
const MAC_LEN: usize = 32;

pub(crate) struct CompileCache {
    dir: PathBuf,
    secret: [u8; 32],
    engine_key: String,
}

/// Corrupt cache files kept in `cache/bad/` for an operator to look at.
const MAX_BAD_FILES: usize = 4;

/// Where a component came from, for the operator's view.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Origin {
    Compiled,
    Cached,
}

impl CompileCache {
    pub(crate) fn new(dir: PathBuf, secret: [u8; 32], engine: &Engine) -> CompileCache {
        let mut h = DefaultHasher::new();
        engine.precompile_compatibility_hash().hash(&mut h);
        CompileCache { dir, secret, engine_key: format!("{:016x}", h.finish()) }
    }

    fn mac(&self) -> Hmac<Sha256> {
        // HMAC accepts keys of any length.
        Hmac::<Sha256>::new_from_slice(&self.secret).expect("any key length is valid")
    }

    fn path(&self, sha256: &str) -> PathBuf {
        self.dir.join(format!("{sha256}-{}.cwasm", self.engine_key))
    }

    /// The component for `wasm` (whose SHA-256 is `sha256`), from the cache
    /// when a valid artifact is there, else built by `compile` (an
    /// artifact of `Engine::precompile_component`) and written back.
    pub(crate) fn load(
        &self,
        engine: &Engine,
        wasm: &[u8],
        sha256: &str,
        compile: impl FnOnce(&[u8]) -> Result<Vec<u8>, String>,
    ) -> Result<(Component, Origin), String> {
        let path = self.path(sha256);
        if let Some(component) = self.read(engine, &path) {
            return Ok((component, Origin::Cached));
        }
        let artifact = compile(wasm)?;
        let mut mac = self.mac();
        mac.update(&artifact);
        let mut file = Vec::with_capacity(MAGIC.len() + MAC_LEN + artifact.len());
        file.extend_from_slice(MAGIC);
        file.extend_from_slice(&mac.finalize().into_bytes());
        file.extend_from_slice(&artifact);
        if let Err(e) = crate::state::write_private(&path, &file) {
            tracing::debug!(error = %e, "cannot write the compile cache; continuing without it");
        }
        let component = deserialize(engine, &artifact).map_err(|e| {
            let e = format!("{e:#}");
            format!("its compiled code does not load: {}", sonde_core::text::escape_control(&e))
        })?;
        Ok((component, Origin::Compiled))
    }

    fn read(&self, engine: &Engine, path: &PathBuf) -> Option<Component> {
        let file = std::fs::read(path).ok()?;
        let rest = file.strip_prefix(MAGIC.as_slice());
        let valid = rest.filter(|r| r.len() > MAC_LEN).and_then(|r| {
            let (tag, artifact) = r.split_at(MAC_LEN);
            let mut mac = self.mac();
            mac.update(artifact);
            mac.verify_slice(tag).ok().map(|()| artifact)
        });
        let Some(artifact) = valid else {
            tracing::warn!(path = %path.display(), "ignoring a compile-cache file this host did not write; moved to bad/");
            crate::state::set_aside(path, MAX_BAD_FILES);
            return None;
        };
        match deserialize(engine, artifact) {
            Ok(c) => Some(c),
            Err(e) => {
                tracing::debug!(path = %path.display(), error = %e, "stale compile-cache file");
                None
            }
        }
    }
}

/// Loads an artifact that this process compiled (in its compile child, see
/// `compile.rs`) or whose MAC it verified.
#[allow(unsafe_code, reason = "deserializing a host-written, authenticated artifact")]
pub(crate) fn deserialize(engine: &Engine, artifact: &[u8]) -> wasmtime::Result<Component> {
    // SAFETY: `artifact` was produced by `Engine::precompile_component` in
    // this process or its compile child (a fork of it, writing to a pipe
    // only it holds), or read back from a file whose HMAC under this host's
    // private secret verifies, i.e. that this host wrote. Wasmtime checks the
    // engine compatibility header itself.
    unsafe { Component::deserialize(engine, artifact) }
}
