//! The endpoint fault suite: real HTTP servers on loopback that go down, fail,
//! throttle, hang, trickle, answer garbage, truncated or 10 MB bodies,
//! redirect, or fail the TLS handshake, and come back. For each: requests
//! never exceed `max_requests_per_hour`, the operator gets one warning (not
//! one per attempt), every spooled report is delivered once the endpoint is
//! back (or, past the spool quota, dropped and counted), and what is kept in
//! memory and on disk stays bounded. `record()` latency under each fault is
//! measured by `cargo xtask reliability`, not here (no timings in tests).

use std::collections::BTreeSet;
use std::path::Path;
use std::time::Duration;

use sonde::{Manifest, Mode, Report, Telemetry};
use sonde_tests::{
    Entry, Fault, FaultyEndpoint, capture_logs, free_port, log_lines, plugin, warnings,
};
use uuid::Uuid;

use crate::delivery::{on, record};

/// `max_requests_per_hour` in these tests: small enough that the limit is
/// reached within a second once reports flow every 100 ms.
const LIMIT: usize = 8;
const WAIT: Duration = Duration::from_secs(15);
const SPOOL_MAX_FILES: usize = 200;

fn settings(limit: usize) -> String {
    format!(
        "interval = \"100ms\"\nmax_interval = \"400ms\"\nretry_initial = \"100ms\"\n\
         request_timeout = \"500ms\"\nconnect_timeout = \"500ms\"\n\
         max_requests_per_hour = {limit}\nspool_max_files = {SPOOL_MAX_FILES}"
    )
}

/// [`settings`] with some lines replaced (same key) or added.
fn settings_with(limit: usize, overrides: &str) -> String {
    let key = |l: &str| l.split('=').next().unwrap_or("").trim().to_string();
    let replaced: Vec<String> = overrides.lines().map(key).collect();
    let base = settings(limit);
    let mut lines: Vec<&str> = base.lines().filter(|l| !replaced.contains(&key(l))).collect();
    lines.extend(overrides.lines());
    lines.join("\n")
}

fn entries() -> Vec<Entry> {
    vec![Entry::new("http-status", plugin("http_status.wasm"))]
}

/// The report ids in the spool, read from the file names
/// (`<millis>-<seq>-<report_id>.json`).
pub(crate) fn spooled(state: &Path) -> BTreeSet<Uuid> {
    let Ok(dir) = std::fs::read_dir(state.join("spool")) else { return BTreeSet::new() };
    dir.filter_map(|e| {
        let name = e.ok()?.file_name().to_string_lossy().into_owned();
        let stem = name.strip_suffix(".json")?;
        stem.splitn(3, '-').nth(2)?.parse().ok()
    })
    .collect()
}

/// Files and bytes in the spool (not counting `bad/`).
fn spool_usage(state: &Path) -> (usize, u64) {
    let Ok(dir) = std::fs::read_dir(state.join("spool")) else { return (0, 0) };
    dir.filter_map(|e| e.ok()?.metadata().ok())
        .filter(|m| m.is_file())
        .fold((0, 0), |(n, b), m| (n + 1, b + m.len()))
}

fn wait_until(timeout: Duration, mut done: impl FnMut() -> bool) -> bool {
    let deadline = std::time::Instant::now() + timeout;
    while !done() {
        if std::time::Instant::now() > deadline {
            return false;
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    true
}

fn report(t: &Telemetry) -> Report {
    t.report().unwrap()
}

/// The endpoint's `host:port`, as it appears in sonde's log lines.
fn tag(endpoint: &FaultyEndpoint) -> String {
    endpoint.addr.to_string()
}

/// Runs `fault` until the host failed twice, then heals the endpoint, and
/// checks: the spool is delivered, the limit holds exactly, one warning and
/// one recovery line, the spool stayed in quota. Returns the endpoint and the
/// last report for fault-specific checks.
fn survive(fault: Fault) -> (FaultyEndpoint, Report) {
    survive_with(fault, "")
}

/// [`survive`] with settings `overrides`.
fn survive_with(fault: Fault, overrides: &str) -> (FaultyEndpoint, Report) {
    capture_logs();
    let dir = tempfile::tempdir().unwrap();
    let state = dir.path().join("state");
    let endpoint = FaultyEndpoint::start(fault.clone());
    let t = on(dir.path(), &endpoint.url, &settings_with(LIMIT, overrides), &entries());
    record(&t, 50);
    assert!(
        wait_until(WAIT, || report(&t).delivery.failed_attempts >= 2),
        "{fault:?}: the host kept trying"
    );
    let outage = spooled(&state);
    assert!(!outage.is_empty(), "{fault:?}: reports wait in the spool");
    assert!(spool_usage(&state).0 <= SPOOL_MAX_FILES);

    endpoint.set(Fault::Healthy);
    assert!(
        endpoint.wait(WAIT, |e| {
            let got: BTreeSet<Uuid> = e.delivered().into_iter().collect();
            outage.is_subset(&got)
        }),
        "{fault:?}: every report spooled during the outage is delivered once the endpoint is back"
    );
    // Reports keep coming every 100 ms: the hourly budget runs out, and then
    // not one request more.
    assert!(endpoint.wait(WAIT, |e| e.attempts().len() >= LIMIT), "{fault:?}: budget used");
    std::thread::sleep(Duration::from_millis(800));
    assert_eq!(
        endpoint.attempts().len(),
        LIMIT,
        "{fault:?}: requests never exceed max_requests_per_hour"
    );
    let last = report(&t);
    assert_eq!(last.delivery.spool_dropped, 0, "{fault:?}: nothing dropped under quota");
    assert!(spool_usage(&state).0 <= SPOOL_MAX_FILES);
    drop(t);

    let warned = warnings(&tag(&endpoint));
    assert_eq!(warned.len(), 1, "{fault:?}: one warning, not a flood:\n{warned:#?}");
    assert!(warned[0].contains("telemetry delivery failing"), "{warned:?}");
    let recovered = log_lines(&tag(&endpoint))
        .into_iter()
        .filter(|l| l.contains("telemetry delivery recovered"))
        .count();
    assert_eq!(recovered, 1, "{fault:?}: one line when it recovers");
    (endpoint, last)
}

#[test]
fn a_500_is_retried_quietly_until_the_endpoint_is_back() {
    let (endpoint, last) = survive(Fault::Status(500, None));
    let failed = endpoint.attempts().iter().filter(|a| a.fault != Fault::Healthy).count();
    assert!(failed >= 2);
    assert_eq!(last.delivery.rejected, 0, "a 5xx never drops a report");
}

#[test]
fn a_503_is_retried_quietly_until_the_endpoint_is_back() {
    survive(Fault::Status(503, None));
}

#[test]
fn a_429_with_retry_after_waits_and_delivers() {
    // With max_interval = 2 s, Retry-After: 1 is taken as it is; without
    // it, the first backoffs would be at most 100, 200, 400 ms.
    let (endpoint, _) = survive_with(Fault::Status(429, Some("1".into())), "max_interval = \"2s\"");
    let attempts = endpoint.attempts();
    let gaps: Vec<Duration> = attempts
        .windows(2)
        .filter(|w| w[0].fault != Fault::Healthy)
        .map(|w| w[1].at - w[0].at)
        .collect();
    assert!(gaps.len() >= 2);
    assert!(gaps.iter().all(|g| *g >= Duration::from_millis(900)), "{gaps:?}");
}

#[test]
fn a_hanging_endpoint_times_out_and_is_retried() {
    survive(Fault::Hang);
}

#[test]
fn a_trickling_endpoint_times_out_and_is_retried() {
    survive(Fault::Trickle);
}

#[test]
fn a_garbage_answer_is_a_failure_and_is_retried() {
    survive(Fault::Garbage);
}

#[test]
fn a_truncated_answer_is_a_failure_and_is_retried() {
    survive(Fault::Truncated);
}

#[test]
fn a_closed_connection_is_a_failure_and_is_retried() {
    survive(Fault::Close);
}

#[test]
fn a_redirect_is_not_followed_its_reports_wait_and_the_warning_names_the_target() {
    let elsewhere = FaultyEndpoint::start(Fault::Healthy);
    let (endpoint, last) = survive(Fault::Redirect(elsewhere.url.clone()));
    assert!(elsewhere.attempts().is_empty(), "the redirect was followed");
    let redirected: BTreeSet<Uuid> = endpoint
        .attempts()
        .iter()
        .filter(|a| matches!(a.fault, Fault::Redirect(_)))
        .flat_map(|a| a.report_ids.iter().copied())
        .collect();
    assert!(!redirected.is_empty());
    let delivered: BTreeSet<Uuid> = endpoint.delivered().into_iter().collect();
    assert!(redirected.is_subset(&delivered), "redirected reports are delivered once fixed");
    assert_eq!(last.delivery.rejected, 0, "a redirect never drops a report");
    let warned = warnings(&tag(&endpoint));
    assert!(
        warned[0].contains(&format!("redirecting to {}", elsewhere.url))
            && warned[0].contains("does not follow redirects"),
        "{warned:?}"
    );
}

/// An answer that is `200` but not what sonde expects: delivered, directives
/// ignored and counted, no warning, and the limit still holds.
fn delivered_despite(fault: Fault) -> (FaultyEndpoint, Report, tempfile::TempDir) {
    capture_logs();
    let dir = tempfile::tempdir().unwrap();
    let endpoint = FaultyEndpoint::start(fault.clone());
    let t = on(dir.path(), &endpoint.url, &settings(LIMIT), &entries());
    record(&t, 20);
    assert!(endpoint.wait(WAIT, |e| e.attempts().len() >= LIMIT), "{fault:?}: budget used");
    std::thread::sleep(Duration::from_millis(800));
    assert_eq!(endpoint.attempts().len(), LIMIT, "{fault:?}: never over the limit");
    let last = report(&t);
    assert_eq!(t.mode(), Mode::On);
    drop(t);
    assert!(last.delivery.sent >= 1, "{fault:?}: a 2xx delivers");
    assert!(last.delivery.directives_ignored >= 1, "{fault:?}: the body was ignored and counted");
    assert_eq!(last.delivery.failed_attempts, 0);
    assert!(warnings(&tag(&endpoint)).is_empty(), "{fault:?}: a 2xx is not a failure");
    (endpoint, last, dir)
}

#[test]
fn a_garbage_body_with_a_200_delivers_and_its_directives_are_ignored() {
    delivered_despite(Fault::GarbageBody);
}

#[test]
fn a_10_mb_answer_is_cut_at_the_cap_and_never_parsed() {
    let (endpoint, _, dir) = delivered_despite(Fault::HugeBody(10 << 20));
    // The body holds a valid `stop` directive: had the host read and parsed
    // all 10 MB, telemetry would have stopped for good.
    let status = sonde::status(&Manifest::load(&dir.path().join("sonde.toml")).unwrap());
    assert!(status.stopped.is_none(), "{status:?}");
    assert!(!dir.path().join("state/stopped").exists());
    assert!(!endpoint.huge_bytes_written().is_empty());
}

#[test]
fn an_endpoint_that_is_down_then_comes_back_gets_every_report() {
    capture_logs();
    let dir = tempfile::tempdir().unwrap();
    let state = dir.path().join("state");
    let addr = free_port();
    let url = format!("http://{addr}/v1/reports");
    let t = on(dir.path(), &url, &settings(LIMIT), &entries());
    record(&t, 10);
    assert!(wait_until(WAIT, || report(&t).delivery.failed_attempts >= 3), "connection refused");
    let outage = spooled(&state);
    let failed = report(&t).delivery.failed_attempts as usize;
    assert!(failed < LIMIT);

    let endpoint = FaultyEndpoint::start_on(addr, Fault::Healthy);
    assert!(
        endpoint.wait(WAIT, |e| outage.is_subset(&e.delivered().into_iter().collect())),
        "every report spooled while the endpoint was down is delivered"
    );
    let last = report(&t);
    assert!(endpoint.wait(WAIT, |e| e.attempts().len() + failed >= LIMIT));
    std::thread::sleep(Duration::from_millis(800));
    let failed = report(&t).delivery.failed_attempts as usize;
    assert_eq!(endpoint.attempts().len() + failed, LIMIT, "refused connections count too");
    drop(t);
    assert_eq!(last.delivery.spool_dropped, 0);
    let warned = warnings(&addr.to_string());
    assert_eq!(warned.len(), 1, "{warned:#?}");
    assert_eq!(log_lines(&addr.to_string()).iter().filter(|l| l.contains("recovered")).count(), 1);
}

#[test]
fn a_tls_handshake_failure_is_retried_within_the_limit_and_the_spool_survives_a_fix() {
    capture_logs();
    let dir = tempfile::tempdir().unwrap();
    let state = dir.path().join("state");
    let endpoint = FaultyEndpoint::start(Fault::Healthy);
    let https = format!("https://{}/v1/reports", endpoint.addr);
    let t = on(dir.path(), &https, &settings(LIMIT), &entries());
    record(&t, 10);
    assert!(endpoint.wait(WAIT, |e| e.attempts().len() >= LIMIT), "handshakes attempted");
    std::thread::sleep(Duration::from_millis(800));
    let attempts = endpoint.attempts();
    assert_eq!(attempts.len(), LIMIT, "handshakes count against max_requests_per_hour");
    assert!(attempts.iter().all(|a| a.tls), "each attempt was a TLS handshake");
    let last = report(&t);
    assert_eq!((last.delivery.sent, last.delivery.spool_dropped), (0, 0));
    drop(t);
    let warned = warnings(&tag(&endpoint));
    assert_eq!(warned.len(), 1, "{warned:#?}");

    // The operator fixes the URL and restarts: nothing was lost.
    let kept = spooled(&state);
    assert!(kept.len() >= 5, "{} spooled", kept.len());
    let t = on(dir.path(), &endpoint.url, &settings(3600), &entries());
    assert!(
        endpoint.wait(WAIT, |e| kept.is_subset(&e.delivered().into_iter().collect())),
        "every report kept through the TLS failure is delivered after the fix"
    );
    t.shutdown(Duration::from_secs(3));
    assert!(!state.join("spool/bad").exists(), "nothing was corrupt");
}

#[test]
fn past_the_spool_quota_the_oldest_reports_are_dropped_and_counted_never_silently() {
    capture_logs();
    let dir = tempfile::tempdir().unwrap();
    let state = dir.path().join("state");
    let endpoint = FaultyEndpoint::start(Fault::Status(500, None));
    let extra = "interval = \"100ms\"\nmax_interval = \"300ms\"\nretry_initial = \"100ms\"\n\
                 max_requests_per_hour = 3600\nspool_max_files = 5\nspool_max_bytes = 1048576";
    let t = on(dir.path(), &endpoint.url, extra, &entries());
    record(&t, 10);
    let mut peak = (0, 0);
    assert!(
        wait_until(WAIT, || {
            let usage = spool_usage(&state);
            peak = (peak.0.max(usage.0), peak.1.max(usage.1));
            report(&t).delivery.spool_dropped >= 10
        }),
        "the quota drops reports"
    );
    // The oldest is dropped before a new report is written: never over.
    assert!(peak.0 <= 5 && peak.1 <= 1 << 20, "the spool stays in its quota: {peak:?}");
    endpoint.set(Fault::Healthy);
    assert!(endpoint.wait(WAIT, |e| !e.delivered().is_empty()));
    t.shutdown(Duration::from_secs(3));

    // The last report built (at shutdown, sent last) counts every report
    // built before it: acknowledged, still spooled, dropped or rejected.
    let attempts = endpoint.attempts();
    let final_request = attempts.iter().rev().find(|a| a.fault == Fault::Healthy).unwrap();
    let last = final_request.reports.last().unwrap().delivery;
    let delivered: BTreeSet<Uuid> = endpoint.delivered().into_iter().collect();
    assert!(last.spool_dropped >= 10, "{last:?}");
    assert_eq!(
        delivered.len() as u64,
        last.sent + last.spooled + 1,
        "every report built is delivered or counted as dropped: {last:?}"
    );
    assert_eq!(spooled(&state).len(), 0, "the spool is empty after a clean shutdown");
}
