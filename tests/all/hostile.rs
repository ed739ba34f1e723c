//! The hostile-plugin suite: every fixture mode of `tests/fixtures/hostile`
//! next to a well-behaved plugin. For each: the host keeps running, the
//! neighbour's numbers stay exact, and the report names the offender, its
//! state and why.

use std::time::{Duration, Instant};

use sonde::{Manifest, PluginReport, PluginState, Report, Telemetry};
use sonde_tests::{Entry, fixture, hostile, plugin, write_manifest};

static HTTP: sonde::EventKind = sonde::EventKind::new("http.request", &["method", "status"]);

fn start(dir: &std::path::Path, entries: &[Entry]) -> Telemetry {
    let path = write_manifest(dir, "mode = \"local\"\nstate_dir = \"s\"", entries);
    Telemetry::builder(Manifest::load(&path).unwrap()).start().unwrap()
}

fn record(t: &Telemetry, n: usize) {
    for i in 0..n {
        t.record(HTTP.event().str("method", "GET").int("status", 200 + (i % 2) as i64));
    }
    t.flush().unwrap();
}

use sonde_tests::plugin_report as find;

fn scalar(p: &PluginReport, metric: &str) -> f64 {
    sonde_tests::total(p, Some(metric))
}

/// The well-behaved neighbour counted every event.
fn neighbour_is_exact(r: &Report, events: u64) {
    let good = find(r, "http-status");
    assert_eq!(good.state, PluginState::Running);
    assert_eq!(scalar(good, "http.requests"), events as f64, "the neighbour's numbers");
    assert_eq!(good.cost.failures, 0);
}

#[test]
fn traps_are_contained_classified_and_named() {
    let dir = tempfile::tempdir().unwrap();
    let entries = [
        Entry::new("http-status", plugin("http_status.wasm")),
        hostile("loop", "loop").limit("call_timeout_ms = 50"),
        hostile("loop-collect", "loop-collect").limit("call_timeout_ms = 50"),
        hostile("grow", "grow").limit("memory_mb = 16"),
        hostile("recurse", "recurse"),
        hostile("panic", "panic").limit("max_failures = 2"),
        hostile("trap-collect", "trap-collect"),
        hostile("well", "well"),
    ];
    let t = start(dir.path(), &entries);
    record(&t, 3000);
    let r = t.report().unwrap();
    neighbour_is_exact(&r, 3000);
    assert_eq!(scalar(find(&r, "well"), "hostile.events"), 3000.0);

    type Count = fn(&sonde::FailureCounts) -> u64;
    let cases: [(&str, Count, &str); 6] = [
        ("loop", |f| f.cpu, "ran past its deadline of 50 ms"),
        ("loop-collect", |f| f.cpu, "ran past its deadline"),
        ("grow", |f| f.memory, "ran out of memory (memory limit"),
        ("recurse", |f| f.stack, "overflowed its stack"),
        ("panic", |f| f.panic, "panicked"),
        ("trap-collect", |f| f.panic, "panicked"),
    ];
    for (name, kind, words) in cases {
        let p = find(&r, name);
        assert!(kind(&p.cost.failure_kinds) >= 1, "{name}: {:?}", p.cost);
        let last = p.last_failure.as_deref().unwrap_or_default();
        assert!(last.contains(words), "{name}: {last}");
    }
    let grow = find(&r, "grow");
    assert!(
        grow.cost.peak_memory_bytes <= 16 << 20,
        "the cap held: {}",
        grow.cost.peak_memory_bytes
    );
    let panic = find(&r, "panic");
    assert_eq!(panic.state, PluginState::Failed);
    assert!(
        panic.reason.as_deref().unwrap_or_default().starts_with("failed 2 times within 300 s"),
        "{panic:?}"
    );
    assert!(
        find(&r, "loop").cost.events_skipped > 0 || find(&r, "loop").state == PluginState::Failed
    );

    // The host still takes events and the neighbour still counts them.
    record(&t, 500);
    neighbour_is_exact(&t.report().unwrap(), 3500);
}

#[test]
fn bad_output_is_dropped_and_counted_per_plugin() {
    let dir = tempfile::tempdir().unwrap();
    let entries = [
        Entry::new("http-status", plugin("http_status.wasm")),
        hostile("flood", "flood"),
        hostile("cardinality", "cardinality"),
        hostile("nan", "nan"),
        hostile("undeclared", "undeclared"),
        hostile("huge-strings", "huge-strings"),
        hostile("log-spam", "log-spam"),
    ];
    let t = start(dir.path(), &entries);
    record(&t, 40);
    let r = t.report().unwrap();
    neighbour_is_exact(&r, 40);

    let flood = find(&r, "flood");
    assert_eq!(flood.cost.excess_points, 40_000, "{:?}", flood.cost);
    let card = find(&r, "cardinality");
    assert_eq!(card.cost.overflow_points, 4000);
    assert_eq!(card.metrics.len(), 1001, "1000 series and the overflow series");
    assert!(card.metrics.iter().any(|m| m.labels.values().any(|v| v == "__overflow__")));
    let nan = find(&r, "nan");
    assert_eq!(nan.cost.invalid_points, 3);
    assert_eq!(scalar(nan, "hostile.events"), 40.0, "the valid point is kept");
    let undeclared = find(&r, "undeclared");
    assert_eq!(undeclared.cost.invalid_points, 4);
    assert_eq!(scalar(undeclared, "hostile.events"), 40.0);
    let huge = find(&r, "huge-strings");
    assert!(huge.cost.invalid_points >= 1);
    assert!(huge.cost.logs_dropped >= 90, "{:?}", huge.cost);
    assert!(r.to_json().len() < 1 << 20, "no megabyte label reached the report");
    assert!(find(&r, "log-spam").cost.logs_dropped >= 990);
    for p in &r.plugins {
        assert_eq!(p.state, PluginState::Running, "{}: bad output does not stop a plugin", p.name);
    }
}

#[test]
fn plugins_that_cannot_be_trusted_are_refused_at_load() {
    let dir = tempfile::tempdir().unwrap();
    let entries = [
        Entry::new("http-status", plugin("http_status.wasm")),
        hostile("huge-info", "huge-info"),
        Entry::new("other-wit", fixture("other_wit.wasm")),
    ];
    let t = start(dir.path(), &entries);
    record(&t, 10);
    let r = t.report().unwrap();
    neighbour_is_exact(&r, 10);
    let info = find(&r, "huge-info");
    assert_eq!(info.state, PluginState::Refused);
    assert!(
        info.reason.as_deref().unwrap_or_default().contains("declares 10000 metrics, at most 64")
    );
    let other = find(&r, "other-wit");
    assert_eq!(other.state, PluginState::Refused);
    let reason = other.reason.as_deref().unwrap_or_default();
    assert!(reason.contains("another version of the sonde:collector WIT"), "{reason}");
}

#[test]
fn a_slow_plugin_is_switched_off_locally_when_over_its_cpu_budget() {
    let dir = tempfile::tempdir().unwrap();
    let entries = [
        Entry::new("http-status", plugin("http_status.wasm")),
        hostile("slow", "slow")
            .config("slow_rounds", "20000")
            .limit("cpu_ms_per_sec = 5")
            .limit("over_budget_secs = 1")
            .limit("disable_secs = 600"),
    ];
    let t = start(dir.path(), &entries);
    let deadline = Instant::now() + Duration::from_secs(20);
    let mut sent = 0;
    let slow = loop {
        record(&t, 256);
        sent += 256;
        let r = t.report().unwrap();
        let slow = find(&r, "slow").clone();
        if slow.state == PluginState::Disabled || Instant::now() > deadline {
            neighbour_is_exact(&r, sent);
            break slow;
        }
    };
    assert_eq!(slow.state, PluginState::Disabled, "{slow:?}");
    assert!(slow.reason.as_deref().unwrap_or_default().starts_with("expensive:"), "{slow:?}");
    assert!(slow.until.is_some());
    assert_eq!(slow.cost.failures, 0, "slow but correct: no failure");
    assert_eq!(scalar(&slow, "hostile.events"), slow.cost.events as f64, "its numbers were right");
    let status = sonde::status(&Manifest::load(&dir.path().join("sonde.toml")).unwrap());
    assert_eq!(status.switched_off.len(), 1);
    assert_eq!(status.switched_off[0].source, sonde::Source::Local);
}

#[test]
fn record_never_waits_for_a_stuck_plugin() {
    // A plugin that loops for up to 1.5 s per call holds the dispatcher; the
    // host's record() must not notice: it fills the ring and counts drops.
    let dir = tempfile::tempdir().unwrap();
    let entries = [hostile("loop", "loop").limit("call_timeout_ms = 1500")];
    let path = write_manifest(
        dir.path(),
        "mode = \"local\"\nbuffer_capacity = 1024\nstate_dir = \"s\"",
        &entries,
    );
    let t = Telemetry::builder(Manifest::load(&path).unwrap()).start().unwrap();
    t.plugins().unwrap();
    for i in 0..200_000 {
        t.record(HTTP.event().str("method", "GET").int("status", 200 + (i % 2) as i64));
    }
    // All 200 000 calls returned while the plugin was still stuck in its
    // first 1.5 s call: most events were dropped and counted, none blocked.
    let r = t.report().unwrap();
    assert_eq!(r.buffer.recorded, 200_000);
    assert_eq!(r.buffer.processed + r.buffer.dropped, 200_000);
    assert!(r.buffer.dropped >= 200_000 - 3 * 1024, "{:?}", r.buffer);
    assert!(find(&r, "loop").cost.failure_kinds.cpu >= 1);
}

// ---------------------------------------------------------------------------
// Copies out of the guest (`tests/fixtures/raw-abi`): answers whose lists all
// point at the same bytes, so that the guest's memory stays small while an
// eager lift would materialise millions of strings.
// ---------------------------------------------------------------------------

/// A manifest entry running the raw-ABI fixture in `mode`.
fn raw(name: &str, mode: &str) -> Entry {
    Entry::new(name, fixture("raw_abi.wasm")).config("mode", mode)
}

/// This process's resident set (`/proc/self/statm`, in pages of 4 KiB).
fn rss() -> u64 {
    let statm = std::fs::read_to_string("/proc/self/statm").unwrap();
    let pages: u64 = statm.split_whitespace().nth(1).unwrap().parse().unwrap();
    pages * 4096
}

/// How much the resident set grew while `f` ran, sampled every millisecond
/// on another thread (an eager copy can be freed again before `f` returns,
/// and tests running beside this one only ever add to it).
fn rss_growth<R>(f: impl FnOnce() -> R) -> (R, u64) {
    let before = rss();
    let done = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
    let sampler = {
        let done = done.clone();
        std::thread::spawn(move || {
            let mut peak = rss();
            while !done.load(std::sync::atomic::Ordering::SeqCst) {
                peak = peak.max(rss());
                std::thread::sleep(Duration::from_millis(1));
            }
            peak.max(rss())
        })
    };
    let result = f();
    done.store(true, std::sync::atomic::Ordering::SeqCst);
    let peak = sampler.join().unwrap();
    (result, peak.saturating_sub(before))
}

const MIB: u64 = 1 << 20;

#[test]
fn aliased_points_past_the_cap_are_counted_not_copied() {
    // A million points (48 MB of guest memory: the outer list cannot alias)
    // sharing one labels list of one byte: copying them all would cost the
    // host ~150 MB; only max_points_per_collect (10 000) are lifted.
    let dir = tempfile::tempdir().unwrap();
    let entries = [
        Entry::new("http-status", plugin("http_status.wasm")),
        raw("alias-points", "alias-points").limit("memory_mb = 128"),
    ];
    let t = start(dir.path(), &entries);
    record(&t, 100);
    let (r, grew) = rss_growth(|| t.report().unwrap());
    neighbour_is_exact(&r, 100);
    let p = find(&r, "alias-points");
    assert_eq!(p.state, PluginState::Running, "{p:?}");
    assert_eq!(p.cost.failures, 0, "{:?}", p.last_failure);
    assert_eq!(p.cost.excess_points, 1_000_000 - 10_000);
    assert_eq!(p.cost.invalid_points, 0);
    assert_eq!(scalar(p, "raw.points"), 10_000.0, "the lifted points are all counted");
    assert!(grew < (48 + 40) * MIB, "the host grew by {} MiB", grew / MIB);
}

#[test]
fn a_labels_list_aliased_millions_of_times_is_invalid_without_a_copy() {
    // 10 000 points whose labels are all the same list of two million
    // entries, each the same byte (16 MB of guest memory): 20 billion
    // strings if lifted. A point has at most 8 labels: each is invalid, and
    // nothing of its labels is copied.
    let dir = tempfile::tempdir().unwrap();
    let entries = [
        Entry::new("http-status", plugin("http_status.wasm")),
        raw("alias-labels", "alias-labels"),
    ];
    let t = start(dir.path(), &entries);
    record(&t, 100);
    let (r, grew) = rss_growth(|| t.report().unwrap());
    neighbour_is_exact(&r, 100);
    let p = find(&r, "alias-labels");
    assert_eq!(p.state, PluginState::Running, "{p:?}");
    assert_eq!(p.cost.failures, 0, "{:?}", p.last_failure);
    assert_eq!(p.cost.invalid_points, 10_000);
    assert_eq!(p.cost.excess_points, 0);
    assert!(p.metrics.is_empty(), "{:?}", p.metrics);
    assert!(grew < (16 + 40) * MIB, "the host grew by {} MiB", grew / MIB);

    // It keeps answering the same way, and the neighbour keeps counting.
    record(&t, 50);
    let r = t.report().unwrap();
    neighbour_is_exact(&r, 150);
    assert_eq!(find(&r, "alias-labels").cost.invalid_points, 20_000);
}

#[test]
fn an_info_with_aliased_lists_is_refused_without_a_copy() {
    // 200 000 metric declarations sharing one name and one list of two
    // million label keys (25 MB of guest memory; 400 billion strings if
    // lifted): refused for its count, as today, having lifted 64 of them.
    let dir = tempfile::tempdir().unwrap();
    let entries =
        [Entry::new("http-status", plugin("http_status.wasm")), raw("alias-info", "alias-info")];
    let (t, grew) = rss_growth(|| {
        let t = start(dir.path(), &entries);
        t.plugins().unwrap();
        t
    });
    record(&t, 10);
    let r = t.report().unwrap();
    neighbour_is_exact(&r, 10);
    let p = find(&r, "alias-info");
    assert_eq!(p.state, PluginState::Refused);
    let reason = p.reason.as_deref().unwrap_or_default();
    assert!(reason.contains("invalid info: declares 200000 metrics, at most 64"), "{reason}");
    // Compiling both plugins is part of this: a few tens of MiB.
    assert!(grew < (25 + 80) * MIB, "the host grew by {} MiB", grew / MIB);
}

#[test]
fn a_huge_log_line_is_cut_before_it_is_copied() {
    // A 16 MiB line, three times per collect; an `é` straddles byte 512, so
    // the cut falls back to 511 bytes. Invalid UTF-8 inside the prefix
    // still fails the call, as the canonical ABI requires.
    sonde_tests::capture_logs();
    let dir = tempfile::tempdir().unwrap();
    let entries = [
        Entry::new("http-status", plugin("http_status.wasm")),
        raw("huge-log-c7", "huge-log"),
        raw("bad-utf8-log", "bad-utf8-log").limit("max_failures = 1"),
    ];
    let t = start(dir.path(), &entries);
    record(&t, 10);
    let r = t.report().unwrap();
    neighbour_is_exact(&r, 10);
    let p = find(&r, "huge-log-c7");
    assert_eq!(p.state, PluginState::Running, "{p:?}");
    assert_eq!(p.cost.failures, 0, "{:?}", p.last_failure);
    assert_eq!(scalar(p, "raw.points"), 1.0);
    let lines = sonde_tests::log_lines("huge-log-c7");
    let logged: Vec<&String> = lines.iter().filter(|l| l.contains("aaaa")).collect();
    assert_eq!(logged.len(), 3, "{lines:?}");
    for line in logged {
        let longest = line.split(|c| c != 'a').map(str::len).max().unwrap_or(0);
        assert_eq!(longest, 511, "cut at the character boundary before byte 512");
        assert!(!line.contains('é') && !line.contains('\u{fffd}'), "{line}");
    }

    let bad = find(&r, "bad-utf8-log");
    assert_eq!(bad.state, PluginState::Failed, "{bad:?}");
    assert_eq!(bad.cost.failure_kinds.other, 1, "{:?}", bad.cost);
    let last = bad.last_failure.as_deref().unwrap_or_default();
    assert!(last.contains("utf-8"), "{last}");
}
