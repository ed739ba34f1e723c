//! Crashes and corrupt state: a host process SIGKILLed while it spools and
//! while a send is in flight loses nothing and the collector stores each
//! report once; a corrupt spool file or compile-cache file is set aside with
//! a warning, never trusted, never fatal.

use std::collections::{BTreeMap, BTreeSet};
use std::io::{BufRead, BufReader};
use std::path::Path;
use std::process::{Child, ChildStdout, Command, Stdio};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use sonde::{BufferStats, Manifest, Mode, PluginState, Report, Telemetry};
use sonde_tests::{
    Collector, Entry, Fault, FaultyEndpoint, capture_logs, crash_telemetry, plugin, warnings,
    write_manifest,
};
use uuid::Uuid;

use crate::delivery::{on, record};
use crate::faults::spooled;

const WAIT: Duration = Duration::from_secs(20);

/// A host process running `manifest`, started and ready.
struct Host {
    child: Child,
    _stdout: BufReader<ChildStdout>,
    instance: Uuid,
}

impl Host {
    fn start(manifest: &Path) -> Host {
        let mut child = Command::new(env!("CARGO_BIN_EXE_sonde-crash-child"))
            .arg(manifest)
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .spawn()
            .unwrap();
        let mut stdout = BufReader::new(child.stdout.take().unwrap());
        let mut line = String::new();
        stdout.read_line(&mut line).unwrap();
        let instance = line.trim().strip_prefix("started ").unwrap_or_else(|| panic!("{line:?}"));
        Host { instance: instance.parse().unwrap(), child, _stdout: stdout }
    }

    /// SIGKILL, and reap.
    fn kill(mut self) {
        self.child.kill().unwrap();
        self.child.wait().unwrap();
    }

    /// Closes stdin: the host shuts down gracefully; waits for it.
    fn stop(mut self) {
        drop(self.child.stdin.take());
        let status = self.child.wait().unwrap();
        assert!(status.success(), "a clean exit after the crashes: {status}");
    }
}

/// A pseudo-random delay in `[min, min + spread)` ms.
fn jitter(min: u64, spread: u64) -> Duration {
    let nanos = SystemTime::now().duration_since(UNIX_EPOCH).unwrap().subsec_nanos() as u64;
    Duration::from_millis(min + nanos.wrapping_mul(2_654_435_761) % spread)
}

/// Every spooled file decodes as a report of `instance`; returns their ids.
fn intact_spool(state: &Path, instance: Uuid) -> BTreeSet<Uuid> {
    for entry in std::fs::read_dir(state.join("spool")).unwrap() {
        let path = entry.unwrap().path();
        if path.extension().is_some_and(|e| e == "json") {
            let bytes = std::fs::read(&path).unwrap();
            let report: Report = serde_json::from_slice(&bytes)
                .unwrap_or_else(|e| panic!("{} is corrupt after a kill: {e}", path.display()));
            assert_eq!(report.instance_id, instance);
            assert!(path.to_string_lossy().contains(&report.report_id.to_string()));
        }
    }
    spooled(state)
}

#[test]
fn sigkill_while_spooling_and_while_sending_loses_nothing_and_stores_each_report_once() {
    let dir = tempfile::tempdir().unwrap();
    let state = dir.path().join("state");
    let collector =
        Collector::start(dir.path(), "[rate_limit]\nreports_per_minute = 60000\nburst = 10000\n");
    let collector_addr = collector.addr;
    // The endpoint refuses (503) while we kill the host as it spools.
    let proxy = FaultyEndpoint::start(Fault::Status(503, None));
    let telemetry = crash_telemetry(&proxy.url);
    let manifest = write_manifest(
        dir.path(),
        &telemetry,
        &[Entry::new("http-status", plugin("http_status.wasm"))],
    );

    // 1. SIGKILL at random moments while reports are built and spooled every
    // 100 ms: each file under a real name is whole, and none disappears.
    let mut kept = BTreeSet::new();
    let mut instance = None;
    for _ in 0..5 {
        let host = Host::start(&manifest);
        assert_eq!(*instance.get_or_insert(host.instance), host.instance, "the id survives");
        std::thread::sleep(jitter(250, 400));
        let id = host.instance;
        host.kill();
        let now = intact_spool(&state, id);
        assert!(kept.is_subset(&now), "a kill lost spooled reports");
        kept = now;
    }
    let instance = instance.unwrap();
    assert!(kept.len() >= 5, "{} reports spooled over five runs", kept.len());

    // 2. SIGKILL while a send is in flight: the collector has stored the
    // batch, the host never got the answer.
    proxy.set(Fault::Forward { to: collector_addr, hold: true });
    let host = Host::start(&manifest);
    assert!(proxy.wait(WAIT, |p| p.held() >= 1), "a send reached the collector");
    let in_flight: BTreeSet<Uuid> = proxy
        .attempts()
        .iter()
        .filter(|a| matches!(a.fault, Fault::Forward { hold: true, .. }))
        .flat_map(|a| a.report_ids.clone())
        .collect();
    host.kill();
    let after = intact_spool(&state, instance);
    assert!(!in_flight.is_empty());
    assert!(in_flight.is_subset(&after), "unacknowledged reports stay spooled");
    assert!(kept.is_subset(&after));
    let stored_before: BTreeSet<Uuid> =
        collector.reports(instance).iter().map(|r| r.report_id).collect();
    assert!(in_flight.is_subset(&stored_before), "the collector had taken the batch");

    // 3. Restart against a working endpoint, then stop cleanly.
    proxy.set(Fault::Forward { to: collector_addr, hold: false });
    let host = Host::start(&manifest);
    let deadline = Instant::now() + WAIT;
    let stored = loop {
        let stored: BTreeSet<Uuid> =
            collector.reports(instance).iter().map(|r| r.report_id).collect();
        if after.is_subset(&stored) || Instant::now() > deadline {
            break stored;
        }
        std::thread::sleep(Duration::from_millis(50));
    };
    assert!(after.is_subset(&stored), "every spooled report reaches the collector");
    host.stop();

    let rows = collector.reports(instance);
    let mut per_id: BTreeMap<Uuid, usize> = BTreeMap::new();
    for r in &rows {
        *per_id.entry(r.report_id).or_default() += 1;
        assert_eq!(r.instance_id, instance);
    }
    assert!(per_id.values().all(|&n| n == 1), "each report stored exactly once");
    let resent = proxy
        .attempts()
        .iter()
        .filter(|a| matches!(a.fault, Fault::Forward { hold: false, .. }))
        .flat_map(|a| a.report_ids.clone())
        .filter(|id| in_flight.contains(id))
        .count();
    assert_eq!(resent, in_flight.len(), "the in-flight batch was sent again, and deduplicated");
    assert!(spooled(&state).is_empty(), "the spool is empty after a clean stop");
    assert!(!state.join("spool/bad").exists(), "no spooled file was ever corrupt");
}

#[test]
fn a_corrupt_spool_file_is_set_aside_with_a_warning_and_the_rest_is_delivered() {
    capture_logs();
    let dir = tempfile::tempdir().unwrap();
    let spool = dir.path().join("state/spool");
    std::fs::create_dir_all(&spool).unwrap();
    let good = Report::new(Uuid::new_v4(), BufferStats::default(), vec![]);
    let name = |n: u32, id: Uuid| format!("{n:016}-{n:08}-{id}.json");
    std::fs::write(spool.join(name(1, good.report_id)), good.to_json()).unwrap();
    let cut = Report::new(Uuid::new_v4(), BufferStats::default(), vec![]);
    let json = cut.to_json();
    std::fs::write(spool.join(name(2, cut.report_id)), &json[..json.len() / 2]).unwrap();
    let garbage = Uuid::new_v4();
    std::fs::write(spool.join(name(3, garbage)), b"\x00\xff{\"reports\":[1,2,").unwrap();
    std::fs::write(spool.join("leftover.json.tmp4242"), &json[..10]).unwrap();

    let endpoint = FaultyEndpoint::start(Fault::Healthy);
    let t = on(dir.path(), &endpoint.url, "max_requests_per_hour = 3600", &[]);
    record(&t, 3);
    assert!(
        endpoint.wait(WAIT, |e| e.delivered().contains(&good.report_id) && e.attempts().len() >= 3),
        "the good report is delivered, and sending goes on"
    );
    assert_eq!(t.mode(), Mode::On);
    drop(t);
    let sent: BTreeSet<Uuid> = endpoint.delivered().into_iter().collect();
    assert!(!sent.contains(&cut.report_id) && !sent.contains(&garbage), "never trusted");
    assert!(endpoint.attempts().iter().all(|a| !a.undecodable), "every body sent was valid");
    assert!(spool.join("bad").join(name(2, cut.report_id)).exists());
    assert!(spool.join("bad").join(name(3, garbage)).exists());
    assert!(!spool.join("leftover.json.tmp4242").exists(), "an interrupted write is removed");
    let warned = warnings(&spool.display().to_string());
    assert_eq!(warned.len(), 2, "one warning per corrupt file: {warned:#?}");
    assert!(warned.iter().all(|w| w.contains("spooled report is corrupt")), "{warned:#?}");
}

#[test]
fn a_corrupt_compile_cache_file_is_ignored_with_a_warning_and_rebuilt() {
    capture_logs();
    let dir = tempfile::tempdir().unwrap();
    let entries = [Entry::new("http-status", plugin("http_status.wasm"))];
    let path = write_manifest(dir.path(), "mode = \"local\"\nstate_dir = \"state\"", &entries);
    let start = || Telemetry::builder(Manifest::load(&path).unwrap()).start().unwrap();
    drop(start().plugins().unwrap());
    let cache = dir.path().join("state/cache");
    let files: Vec<_> = std::fs::read_dir(&cache).unwrap().map(|e| e.unwrap().path()).collect();
    assert_eq!(files.len(), 1);
    let file = &files[0];
    let written = std::fs::read(file).unwrap();

    // Truncated (a crash mid-write by another tool), then not ours at all.
    for corrupt in [written[..40].to_vec(), b"\x7fELF not a cache file".to_vec()] {
        std::fs::write(file, &corrupt).unwrap();
        let t = start();
        let plugins = t.plugins().unwrap();
        assert_eq!(plugins[0].state, PluginState::Running, "never fatal: {plugins:?}");
        assert!(!plugins[0].from_cache, "never trusted");
        record_and_count(&t);
        drop(t);
        let rewritten = std::fs::read(file).unwrap();
        assert_ne!(rewritten, corrupt, "rebuilt");
        let set_aside = std::fs::read(cache.join("bad").join(file.file_name().unwrap())).unwrap();
        assert_eq!(set_aside, corrupt, "the corrupt file is set aside in cache/bad/");
    }
    let warned = warnings(&file.display().to_string());
    assert_eq!(warned.len(), 2, "one warning per corrupt file: {warned:#?}");
    assert!(warned.iter().all(|w| w.contains("compile-cache")), "{warned:#?}");
    let t = start();
    assert!(t.plugins().unwrap()[0].from_cache, "the rebuilt file is used again");
}

fn record_and_count(t: &Telemetry) {
    record(t, 7);
    let report = t.report().unwrap();
    assert_eq!(report.plugins[0].cost.events, 7);
}
