//! `sonde bench`: one plugin's cost before it is deployed.
//!
//! Runs the plugin alone, in the production host path (ring, dispatcher,
//! fuel metered for a deterministic figure,
//! columnar batches, deadlines and limits from the manifest), over the events
//! file replayed until enough events went through. Each batch is recorded and
//! flushed on its own, so the flush time is one batch's latency end to end.

use std::path::Path;
use std::process::ExitCode;
use std::time::{Duration, Instant};

use anyhow::{Context, Result, bail};
use serde::Serialize;
use sonde::{Manifest, Mode, PluginState, Telemetry};

use crate::{Common, Format, load};

/// Events per recorded batch: the dispatcher's batch size.
const BATCH: usize = 1024;

#[derive(Debug, Serialize)]
struct BenchResult {
    plugin: String,
    events: u64,
    batches: usize,
    ns_per_event_in_plugin: f64,
    fuel_per_event: f64,
    ns_per_event_end_to_end: f64,
    batch_latency_us: Percentiles,
    peak_memory_bytes: u64,
    failures: u64,
    state: PluginState,
}

#[derive(Debug, Serialize)]
struct Percentiles {
    p50: f64,
    p90: f64,
    p99: f64,
    max: f64,
}

fn percentiles(mut samples: Vec<Duration>) -> Percentiles {
    samples.sort();
    let at = |q: f64| {
        let i = ((samples.len() as f64 - 1.0) * q).round() as usize;
        samples.get(i).map_or(0.0, |d| d.as_secs_f64() * 1e6)
    };
    Percentiles { p50: at(0.5), p90: at(0.9), p99: at(0.99), max: at(1.0) }
}

pub(crate) fn bench(
    c: &Common,
    plugin: &str,
    events: &Path,
    min_events: usize,
) -> Result<ExitCode> {
    let mut manifest: Manifest = load(&c.manifest)?;
    if manifest.plugin(plugin).is_none() {
        bail!("{}: no plugin named `{plugin}`", c.manifest.display());
    }
    manifest.plugins.retain(|p| p.name == plugin);
    manifest.plugins[0].allow = true;
    let records = sonde_core::read_events_file(events)?;
    let events =
        sonde::events_from_records(&records).with_context(|| events.display().to_string())?;
    if events.is_empty() {
        bail!("no events to replay");
    }
    let wait = Duration::from_secs(manifest.plugins[0].limits.compile_timeout_secs + 30);
    let telemetry =
        Telemetry::builder(manifest).mode(Mode::Local).ephemeral(true).fuel(true).start()?;
    telemetry.wait_until_loaded(wait)?;
    let state = telemetry.plugins()?[0].clone();
    if state.state != PluginState::Running {
        bail!("`{plugin}` does not run: {}", state.reason.unwrap_or_default());
    }
    let mut latencies = Vec::new();
    let mut sent = 0;
    let start = Instant::now();
    let replay = events.iter().cycle();
    let mut replay = replay.take(min_events.max(events.len()));
    loop {
        let mut n = 0;
        for e in replay.by_ref().take(BATCH) {
            telemetry.record(e);
            n += 1;
        }
        if n == 0 {
            break;
        }
        let t = Instant::now();
        telemetry.flush()?;
        latencies.push(t.elapsed());
        sent += n;
    }
    let wall = start.elapsed();
    let report = telemetry.report()?;
    let p = &report.plugins[0];
    let result = BenchResult {
        plugin: plugin.to_string(),
        events: p.cost.events,
        batches: latencies.len(),
        ns_per_event_in_plugin: p.cost.busy_us as f64 * 1000.0 / p.cost.events.max(1) as f64,
        fuel_per_event: p.cost.fuel as f64 / p.cost.events.max(1) as f64,
        ns_per_event_end_to_end: wall.as_nanos() as f64 / sent.max(1) as f64,
        batch_latency_us: percentiles(latencies),
        peak_memory_bytes: p.cost.peak_memory_bytes,
        failures: p.cost.failures,
        state: p.state,
    };
    match c.format {
        Format::Json => crate::output::print_json(&result),
        Format::Text => {
            let l = &result.batch_latency_us;
            println!(
                "{} over {} events in {} batches of up to {BATCH}",
                crate::output::e(&result.plugin),
                result.events,
                result.batches
            );
            println!("  in the plugin:  {:.1} ns per event", result.ns_per_event_in_plugin);
            println!("  fuel:           {:.1} per event (deterministic)", result.fuel_per_event);
            println!(
                "  end to end:     {:.1} ns per event (record, dispatch, call, flush)",
                result.ns_per_event_end_to_end
            );
            println!(
                "  batch latency:  p50 {:.0} µs, p90 {:.0} µs, p99 {:.0} µs, max {:.0} µs",
                l.p50, l.p90, l.p99, l.max
            );
            println!("  peak memory:    {} KiB", result.peak_memory_bytes / 1024);
            println!("  failures:       {} (state: {})", result.failures, result.state.as_str());
        }
    }
    Ok(if result.failures == 0 { ExitCode::SUCCESS } else { ExitCode::from(1) })
}
