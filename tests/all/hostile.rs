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

/// Waits (up to two minutes) until plugin `name` runs.
fn wait_running(t: &Telemetry, name: &str) {
    let deadline = Instant::now() + Duration::from_secs(120);
    while !t.plugins().unwrap().iter().any(|p| p.name == name && p.state == PluginState::Running) {
        assert!(Instant::now() < deadline, "{name} did not load");
        std::thread::sleep(Duration::from_millis(20));
    }
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
        // What is checked here is what happens to its output, not its
        // deadline: a debug build on a busy machine took 239 ms to collect
        // the flood, past the default 200 ms.
        hostile("flood", "flood").limit("call_timeout_ms = 5000"),
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
    assert!(reason.contains("another version of the sonde:collector WIT, 0.1.0"), "{reason}");
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

/// The reason a plugin was refused or failed with, or "" if none.
fn reason(r: &Report, name: &str) -> String {
    find(r, name).reason.clone().unwrap_or_default()
}

#[test]
fn compiling_has_a_budget_and_never_holds_the_neighbours() {
    // Four functions, each at the shape limit (2,000 locals in loops 250
    // deep); one such function took Cranelift 9 s in a debug build and
    // between 64 and 128 MiB.
    let dir = tempfile::tempdir().unwrap();
    let bomb = dir.path().join("bomb.wasm");
    std::fs::write(&bomb, sonde_tests::compile_bomb(4, 2_000, 250)).unwrap();
    // One function far past it: refused before the compiler sees it.
    let complex = dir.path().join("complex.wasm");
    std::fs::write(&complex, sonde_tests::compile_bomb(1, 3_000, 500)).unwrap();
    let entries = [
        Entry::new("http-status", plugin("http_status.wasm")),
        Entry::new("slow-compile", bomb.clone()).limit("compile_timeout_secs = 20"),
        Entry::new("hungry-compile", bomb).limit("compile_memory_mb = 16"),
        Entry::new("complex", complex),
    ];
    let t = start(dir.path(), &entries);
    // The neighbour has loaded (on a busy machine its own compile can take
    // longer than the start-up hold, and what it then misses is skipped,
    // which is not what this test is about) while the bombs compile.
    wait_running(&t, "http-status");
    record(&t, 3000);
    // The bombs are still compiling, in child processes: the report is
    // built and the neighbour got every event.
    let r = t.report().unwrap();
    neighbour_is_exact(&r, 3000);
    let slow = find(&r, "slow-compile");
    assert_eq!(slow.state, PluginState::Loading, "{slow:?}");
    assert_eq!(slow.cost.events_skipped, 3000, "what it missed is counted");
    assert_eq!(find(&r, "complex").state, PluginState::Refused);
    assert!(
        reason(&r, "complex").contains("3000 locals in loops nested 500 deep"),
        "{}",
        reason(&r, "complex")
    );

    assert!(t.wait_until_loaded(Duration::from_secs(120)).unwrap(), "every load ends");
    record(&t, 500);
    let r = t.report().unwrap();
    neighbour_is_exact(&r, 3500);
    for (name, words) in
        [("slow-compile", "compile_timeout_secs"), ("hungry-compile", "compile_memory_mb")]
    {
        let p = find(&r, name);
        assert_eq!(p.state, PluginState::Refused, "{p:?}");
        assert!(reason(&r, name).contains(words), "{name}: {}", reason(&r, name));
    }
}

#[test]
fn one_memory_cap_covers_all_of_a_plugins_memories() {
    let dir = tempfile::tempdir().unwrap();
    let memories = |file: &str| Entry::new(file, fixture(&format!("hostile_memories_{file}.wasm")));
    let entries = [
        Entry::new("http-status", plugin("http_status.wasm")),
        // 40 extra memories: refused by the shape check.
        memories("40"),
        // 8 more memories of 8 MiB: with its own, past 64 MiB together.
        memories("8x8mib").limit("memory_mb = 64"),
        // 3 more of 4 MiB: under the default cap; runs, with its total.
        memories("3x4mib"),
        // The same under a 12 MiB cap: 12 MiB plus its own is too much.
        Entry::new("3x4mib-capped", fixture("hostile_memories_3x4mib.wasm"))
            .limit("memory_mb = 12"),
    ];
    let t = start(dir.path(), &entries);
    record(&t, 100);
    let r = t.report().unwrap();
    neighbour_is_exact(&r, 100);
    assert!(reason(&r, "40").contains("memories 41, at most 16"), "{}", reason(&r, "40"));
    for name in ["8x8mib", "3x4mib-capped"] {
        let p = find(&r, name);
        assert_eq!(p.state, PluginState::Refused, "{p:?}");
        assert!(reason(&r, name).contains("ran out of memory"), "{name}: {}", reason(&r, name));
    }
    let runs = find(&r, "3x4mib");
    assert_eq!(runs.state, PluginState::Running, "{runs:?}");
    assert_eq!(scalar(runs, "hostile.events"), 100.0);
    assert!(
        runs.cost.peak_memory_bytes > 12 << 20,
        "peak memory is the plugin's total: {}",
        runs.cost.peak_memory_bytes
    );
}

#[cfg(unix)]
#[test]
fn a_plugin_path_must_be_a_regular_file_read_once() {
    let dir = tempfile::tempdir().unwrap();
    let zero = dir.path().join("zero.wasm");
    std::os::unix::fs::symlink("/dev/zero", &zero).unwrap();
    let fifo = dir.path().join("fifo.wasm");
    assert!(std::process::Command::new("mkfifo").arg(&fifo).status().unwrap().success());
    let big = dir.path().join("big.wasm");
    std::fs::write(&big, vec![0u8; 2 << 20]).unwrap();
    let entries = [
        Entry::new("http-status", plugin("http_status.wasm")),
        Entry { sha256: Some("0".repeat(64)), ..Entry::new("zero", zero) },
        Entry { sha256: Some("0".repeat(64)), ..Entry::new("fifo", fifo) },
        Entry::new("big", big).limit("file_mb = 1"),
    ];
    let t = start(dir.path(), &entries);
    record(&t, 10);
    let r = t.report().unwrap();
    neighbour_is_exact(&r, 10);
    for name in ["zero", "fifo"] {
        assert_eq!(find(&r, name).state, PluginState::Refused);
        assert!(reason(&r, name).contains("is not a regular file"), "{name}: {}", reason(&r, name));
    }
    assert!(reason(&r, "big").contains("over the limit of 1048576 bytes"), "{}", reason(&r, "big"));
}

/// A series' value in a report: `metric{label=value}` of plugin `p`.
fn series<'a>(p: &'a PluginReport, metric: &str, label: Option<&str>) -> &'a sonde::MetricValue {
    let found = p
        .metrics
        .iter()
        .find(|m| m.name == metric && label.is_none_or(|l| m.labels.values().any(|v| v == l)));
    &found
        .unwrap_or_else(|| panic!("{}: no {metric}{{{label:?}}} in {:?}", p.name, p.metrics))
        .value
}

#[test]
fn deltas_that_add_up_to_infinity_never_make_a_report_undeliverable() {
    use sonde::MetricValue;
    let dir = tempfile::tempdir().unwrap();
    let collector = sonde_tests::Collector::start(
        dir.path(),
        "[rate_limit]\nreports_per_minute = 60000\nburst = 10000\n",
    );
    let entries =
        [Entry::new("http-status", plugin("http_status.wasm")), hostile("max-delta", "max-delta")];
    let t =
        crate::delivery::on(dir.path(), &collector.url, "max_requests_per_hour = 3600", &entries);
    for round in 1..=4u64 {
        record(&t, 10);
        let r = t.report().unwrap();
        neighbour_is_exact(&r, 10 * round);
        r.validate().unwrap();
        let back = Report::from_json(&r.to_json()).expect("a report the host wrote is readable");
        assert_eq!(back, r, "and reads back as it was");
        let max = find(&r, "max-delta");
        assert_eq!(max.state, PluginState::Running);
        assert_eq!(
            *series(max, "hostile.events", Some("max")),
            MetricValue::Scalar { value: f64::MAX }
        );
        assert_eq!(
            *series(max, "hostile.events", Some("max-delta")),
            MetricValue::Scalar { value: (10 * round) as f64 },
            "its own valid point is exact"
        );
        let MetricValue::Histogram { count, sum, .. } = series(max, "hostile.hist", None) else {
            panic!("histogram")
        };
        assert_eq!((*count, *sum), (1, f64::MAX));
        // Every collect after the first (reports are also built on the
        // upload interval) drops two points.
        if round > 1 {
            assert!(max.cost.non_finite_totals >= 2 * (round - 1), "{:?}", max.cost);
        }
        assert_eq!(max.cost.invalid_points, 0, "each delta alone is valid");
    }
    // The uploader sends on its own interval (300 ms): wait for one report
    // besides the last one shutdown sends.
    let deadline = Instant::now() + Duration::from_secs(20);
    while collector.reports(t.instance_id()).is_empty() && Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(50));
    }
    t.shutdown(Duration::from_secs(5));
    let stored = collector.reports(t.instance_id());
    assert!(stored.len() >= 2, "{} reports delivered", stored.len());
    let newest = &stored[0];
    neighbour_is_exact(newest, 40);
    assert_eq!(newest.delivery.rejected, 0);
    assert_eq!(newest.delivery.spool_dropped, 0);
    for r in &stored {
        r.validate().unwrap();
        assert_eq!(
            *series(find(r, "max-delta"), "hostile.events", Some("max")),
            MetricValue::Scalar { value: f64::MAX }
        );
    }
    let status = sonde::status(&Manifest::load(&dir.path().join("sonde.toml")).unwrap());
    assert_eq!(status.upload.spooled, 0, "everything was delivered: {status:?}");
    assert!(
        !dir.path().join("state/spool/bad").exists(),
        "no spooled report was set aside as corrupt"
    );
}

#[test]
fn guest_log_lines_and_refusals_reach_the_log_as_one_escaped_line() {
    sonde_tests::capture_logs();
    let dir = tempfile::tempdir().unwrap();
    let entries = [
        Entry::new("http-status", plugin("http_status.wasm")),
        hostile("ansi-log-capture", "ansi-log"),
        hostile("ansi-text-capture", "ansi-text"),
    ];
    let t = start(dir.path(), &entries);
    record(&t, 5);
    let r = t.report().unwrap();
    neighbour_is_exact(&r, 5);
    let logged = sonde_tests::log_lines("ansi-log-capture");
    let line = logged
        .iter()
        .find(|l| l.contains("ansi-log line"))
        .unwrap_or_else(|| panic!("the guest's line was logged: {logged:?}"));
    assert!(
        line.contains(
            r"ansi-log line\r\n2026-01-01T00:00:00Z  INFO sonde: forged line\u{1b}[2K\u{202e}"
        ),
        "one line, escaped: {line:?}"
    );
    let all = sonde_tests::log_lines("");
    assert!(
        !all.iter().any(|l| l.starts_with("2026-01-01T00:00:00Z  INFO sonde: forged line")),
        "no forged line"
    );
    let refused = sonde_tests::warnings("ansi-text-capture");
    let refused = refused
        .iter()
        .find(|l| l.contains("plugin refused"))
        .unwrap_or_else(|| panic!("the refusal was logged: {refused:?}"));
    assert!(refused.contains(r"metric name `\r\u{1b}[2Kok      ansi-text\u{1b}[8m`"), "{refused}");
    for l in logged.iter().chain([refused]) {
        assert!(!l.chars().any(sonde_core::text::needs_escape), "a raw control: {l:?}");
    }
    // The report keeps the plugin's text as it was (JSON escapes it
    // exactly); only host-made reasons quote it escaped.
    let ansi = find(&r, "ansi-log-capture");
    assert_eq!(ansi.version, "6.6.6\r\u{1b}[2K\u{202e}1.0");
    assert!(ansi.metrics.iter().any(|m| m.labels.values().any(|v| v == "k\r\u{1b}[2K\n\u{9b}31m")));
    let text = find(&r, "ansi-text-capture");
    assert_eq!(text.state, PluginState::Refused);
    assert!(
        !text.reason.as_deref().unwrap_or_default().chars().any(sonde_core::text::needs_escape)
    );
}

#[test]
fn failure_reasons_are_the_hosts_classification_not_the_plugins_words() {
    // The attack is real: the fixture's name section keeps the function
    // named like a host reason.
    let wasm = std::fs::read(fixture("hostile.wasm")).unwrap();
    let name = b"ran_out_of_memory_memory_limit";
    assert!(wasm.windows(name.len()).any(|w| w == name), "the name survived the build");

    let dir = tempfile::tempdir().unwrap();
    let entries = [
        Entry::new("http-status", plugin("http_status.wasm")),
        hostile("lying-name", "lying-name"),
        hostile("recurse-shadow", "recurse-shadow"),
    ];
    let t = start(dir.path(), &entries);
    record(&t, 300);
    let r = t.report().unwrap();
    neighbour_is_exact(&r, 300);

    let lying = find(&r, "lying-name");
    let f = &lying.cost.failure_kinds;
    assert!(f.other >= 1 && f.memory == 0, "{:?}", lying.cost);
    let last = lying.last_failure.as_deref().unwrap_or_default();
    assert!(
        last.starts_with(
            "failed outside wasm code (an invalid value at the plugin boundary, or a host error): "
        ),
        "{last}"
    );
    assert!(last.contains("utf-8"), "the host's detail: {last}");
    for word in ["ran_out_of_memory", "ran out of memory", "backtrace", "\n"] {
        assert!(!last.contains(word), "{word:?} in {last}");
    }

    let shadow = find(&r, "recurse-shadow");
    let f = &shadow.cost.failure_kinds;
    assert!(f.stack >= 1 && f.other == 0, "a shadow-stack overflow is `stack`: {:?}", shadow.cost);
    let last = shadow.last_failure.as_deref().unwrap_or_default();
    assert!(last.starts_with("overflowed its stack"), "{last}");
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
