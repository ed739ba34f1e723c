//! Collectors in Python, JavaScript and C share one compile cache across the
//! tests of a run: a 12-18 MB component takes tens of seconds to compile in
//! a debug build, so each is compiled once, in a state directory of its own
//! under `target/`, and every test starts from a copy of that cache (the
//! artifacts are authenticated by the state directory's secret, which is
//! copied with them).

use std::path::{Path, PathBuf};
use std::sync::Mutex;
use std::time::Duration;

use crate::{Entry, write_manifest};

/// The state directory whose compile cache the tests share.
fn shared_state() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../target/test-state/languages")
}

/// Compile budget for the warm-up: generous, because the machine running
/// the tests may be busy (a Python collector needs ~30 s of CPU in a debug
/// build); a test asserts what loads, never how fast.
pub const LANG_COMPILE_TIMEOUT: &str = "compile_timeout_secs = 600";

/// Makes sure the shared cache holds the components of `entries` (compiling
/// those it lacks, two at a time), then gives `state_dir` the shared secret
/// and a hard link (or copy) of every cached artifact, so that a host
/// started on `state_dir` loads them from the cache.
pub fn share_compile_cache(state_dir: &Path, entries: &[Entry]) {
    static WARMING: Mutex<()> = Mutex::new(());
    let _one_at_a_time = WARMING.lock().unwrap_or_else(|e| e.into_inner());
    let shared = shared_state();
    std::fs::create_dir_all(&shared).unwrap();
    let warm: Vec<Entry> = entries
        .iter()
        .enumerate()
        .map(|(i, e)| {
            let mut e = e.clone();
            e.name = format!("warm-{i}");
            e.config.clear();
            e.limits = vec![LANG_COMPILE_TIMEOUT.into()];
            e
        })
        .collect();
    let manifest = write_manifest(&shared, "mode = \"local\"\nstate_dir = \".\"", &warm);
    let t = sonde::Telemetry::builder(sonde::Manifest::load(&manifest).unwrap()).start().unwrap();
    assert!(t.wait_until_loaded(Duration::from_secs(1200)).unwrap(), "the warm-up loads end");
    drop(t);
    let cache = state_dir.join("cache");
    std::fs::create_dir_all(&cache).unwrap();
    std::fs::copy(shared.join("secret"), state_dir.join("secret")).unwrap();
    for file in std::fs::read_dir(shared.join("cache")).unwrap() {
        let file = file.unwrap().path();
        if file.extension().is_some_and(|e| e == "cwasm") {
            let to = cache.join(file.file_name().unwrap());
            if std::fs::hard_link(&file, &to).is_err() {
                std::fs::copy(&file, &to).unwrap();
            }
        }
    }
}
