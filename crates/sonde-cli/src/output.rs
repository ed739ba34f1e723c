//! Human-readable output.
//!
//! Every string a plugin, an endpoint or a state file chose (names,
//! versions, descriptions, units, label keys and values, reasons, answers)
//! goes through [`e`] before it reaches the terminal: a CR, LF, ESC or bidi
//! override in it is shown as a visible escape and cannot rewrite or forge a
//! line. JSON output ([`print_json`]) carries the exact strings instead.

use std::borrow::Cow;

use serde::Serialize;
use sonde::{MetricValue, PluginOverview, PluginState, Report, SendOutcome, Status};

/// `s` escaped for the terminal ([`sonde_core::text::escape_control`]).
pub(crate) fn e(s: &str) -> Cow<'_, str> {
    sonde_core::text::escape_control(s)
}

/// `name="value"` pairs of a series, escaped.
fn label_pairs<'a>(labels: impl IntoIterator<Item = (&'a String, &'a String)>) -> String {
    let pairs: Vec<String> =
        labels.into_iter().map(|(k, v)| format!("{}=\"{}\"", e(k), e(v))).collect();
    pairs.join(",")
}

pub(crate) fn print_json<T: Serialize>(value: &T) {
    // Our own types serialize infallibly.
    println!("{}", serde_json::to_string_pretty(value).unwrap_or_default());
}

pub(crate) fn print_plugins(plugins: &[PluginOverview]) {
    if plugins.is_empty() {
        println!("no plugins in the manifest");
    }
    for p in plugins {
        let version =
            if p.version.is_empty() { String::new() } else { format!(" {}", e(&p.version)) };
        println!("{}{} [{}]", e(&p.name), version, p.state.as_str());
        if let Some(reason) = &p.reason {
            println!("  reason: {}", e(reason));
        }
        if !p.description.is_empty() {
            println!("  {}", e(&p.description));
        }
        println!("  file: {}", e(&p.path.display().to_string()));
        if !p.deny_metrics.is_empty() && p.metrics.is_empty() {
            println!("  denied by the operator: {}", e(&p.deny_metrics.join(", ")));
        }
        if p.state == PluginState::Running {
            println!("  events granted: {}", e(&p.granted_events.join(", ")));
            println!("  events received: {}", e(&p.subscribed_events.join(", ")));
        }
        let l = &p.limits;
        println!(
            "  limits: {} MiB memory, {} ms per call, {} ms CPU/s (breaker after {} s), {} failures per {} s, {} series per metric",
            l.memory_bytes >> 20,
            l.call_timeout_ms,
            l.cpu_ms_per_sec,
            l.over_budget_secs,
            l.max_failures,
            l.failure_window_secs,
            l.max_series_per_metric
        );
        if p.cost.calls > 0 {
            let c = &p.cost;
            println!(
                "  cost so far: {} events, {} calls, {} µs, peak memory {} KiB, {} failures",
                c.events,
                c.calls,
                c.busy_us,
                c.peak_memory_bytes / 1024,
                c.failures
            );
        }
        for m in &p.metrics {
            let labels = if m.label_keys.is_empty() {
                String::new()
            } else {
                format!(" by {}", e(&m.label_keys.join(", ")))
            };
            let denied = if m.denied { " [denied by the operator: never reported]" } else { "" };
            println!(
                "  - {} ({}, {}){labels}: {}{denied}",
                e(&m.name),
                m.kind.as_str(),
                e(&m.unit),
                e(&m.description)
            );
        }
    }
}

pub(crate) fn print_report(r: &Report) {
    println!("report {} from instance {}", r.report_id, r.instance_id);
    println!(
        "  at {}, sonde {} on {}/{} ({} cpus)",
        e(&r.timestamp),
        e(&r.host.sonde_version),
        e(&r.host.os),
        e(&r.host.arch),
        r.host.cpus
    );
    match &r.ident {
        Some(i) => println!(
            "  ident: contact {}, description {}",
            i.contact.as_deref().map_or_else(|| "(none)".into(), |c| format!("\"{}\"", e(c))),
            i.description.as_deref().map_or_else(|| "(none)".into(), |d| format!("\"{}\"", e(d)))
        ),
        None => println!("  ident: none sent (no [telemetry.ident] in the manifest)"),
    }
    let b = &r.buffer;
    println!(
        "  buffer: capacity {}, recorded {}, processed {}, dropped {}, truncated {}, invalid fields {}",
        b.capacity, b.recorded, b.processed, b.dropped, b.truncated, b.invalid_fields
    );
    for p in &r.plugins {
        let version =
            if p.version.is_empty() { String::new() } else { format!(" {}", e(&p.version)) };
        println!();
        println!("{}{} [{}]", e(&p.name), version, p.state.as_str());
        if let Some(reason) = &p.reason {
            println!("  reason: {}", e(reason));
        }
        if let Some(failure) = &p.last_failure {
            println!("  last failure: {}", e(failure));
        }
        if !p.denied_metrics.is_empty() {
            println!(
                "  denied by the operator: {} ({} points dropped, never reported)",
                e(&p.denied_metrics.join(", ")),
                p.cost.denied_points
            );
        }
        for d in &p.disabled_metrics {
            println!(
                "  switched off by the endpoint: {} until {}: {}",
                e(&d.name),
                e(&d.until),
                e(&d.reason)
            );
        }
        if p.state != PluginState::Running && p.metrics.is_empty() {
            continue;
        }
        let c = &p.cost;
        println!(
            "  cost: {} events, {} calls, {} µs, peak memory {} KiB, {} failures, {} restarts, {} invalid points, {} overflow points, {} non-finite totals",
            c.events,
            c.calls,
            c.busy_us,
            c.peak_memory_bytes / 1024,
            c.failures,
            c.restarts,
            c.invalid_points,
            c.overflow_points,
            c.non_finite_totals
        );
        if c.failures > 0 {
            let f = &c.failure_kinds;
            println!(
                "  failures: {} cpu, {} memory, {} stack, {} panic, {} other; {} events skipped while restarting",
                f.cpu, f.memory, f.stack, f.panic, f.other, c.events_skipped
            );
        }
        for m in &p.metrics {
            let series = format!("{}{{{}}}", e(&m.name), label_pairs(&m.labels));
            match &m.value {
                MetricValue::Scalar { value } => println!("  {series} {value}"),
                MetricValue::Histogram { count, sum, bounds, buckets } => {
                    let cells: Vec<String> = buckets
                        .iter()
                        .enumerate()
                        .filter(|(_, n)| **n > 0)
                        .map(|(i, n)| match bounds.get(i) {
                            Some(le) => format!("≤{le}:{n}"),
                            None => format!("+Inf:{n}"),
                        })
                        .collect();
                    println!("  {series} count={count} sum={sum} [{}]", cells.join(" "));
                }
                MetricValue::Other(fields) => println!("  {series} {}", e(&fields_text(fields))),
            }
        }
    }
    print_sources(r);
}

/// A value of a shape this build does not know (from a newer host's report),
/// as its JSON fields.
fn fields_text(fields: &serde_json::Map<String, serde_json::Value>) -> String {
    serde_json::Value::Object(fields.clone()).to_string()
}

/// Application metrics attached to the runtime (`app_metrics = true`).
fn print_sources(r: &Report) {
    for source in &r.sources {
        println!();
        println!(
            "application metrics from `{}` ({} series folded into overflow, {} values dropped, {} series left out)",
            e(&source.name),
            source.overflow_series,
            source.dropped_values,
            source.invalid_series
        );
        for m in &source.metrics {
            let series = format!("{}{{{}}}", e(&m.name), label_pairs(&m.labels));
            match &m.value {
                MetricValue::Scalar { value } => println!("  {series} {value}"),
                MetricValue::Histogram { count, sum, .. } => {
                    println!("  {series} count={count} sum={sum}")
                }
                MetricValue::Other(fields) => println!("  {series} {}", e(&fields_text(fields))),
            }
        }
    }
}

pub(crate) fn print_status(s: &Status, manifest: &sonde::Manifest) {
    let or = |v: &Option<String>, none: &str| {
        v.as_deref().map_or_else(|| none.to_string(), |v| e(v).into_owned())
    };
    match &s.off_because {
        Some(why) => println!("mode:        off ({})", e(why)),
        None => println!("mode:        {}", s.mode),
    }
    println!("endpoint:    {} ({})", or(&s.endpoint, "(none)"), s.protocol.as_str());
    println!("state dir:   {}", e(&s.state_dir.display().to_string()));
    println!("instance:    {}", or(&s.instance_id, "(not created yet)"));
    if let Some(reason) = &s.stopped {
        println!(
            "STOPPED:     {}\n             (remove {} to let telemetry run again)",
            e(reason),
            e(&s.state_dir.join(sonde::STOPPED_FILE).display().to_string())
        );
    }
    let u = &s.upload;
    println!("last report: {}", or(&u.last_report, "never"));
    println!("last send:   {}", or(&u.last_success, "never"));
    println!("next report: {}", or(&u.next_report, "(not scheduled)"));
    if let Some(since) = &u.failing_since {
        println!("failing:     since {since}: {}", or(&u.last_error, "?"));
    }
    println!("spool:       {} report(s), {} bytes", u.spooled, u.spool_bytes);
    if s.switched_off.is_empty() {
        println!("switched off: nothing");
    }
    for o in &s.switched_off {
        let what = match &o.metric {
            Some(m) => format!("metric {} of {}", e(m), e(&o.plugin)),
            None => format!("plugin {}", e(&o.plugin)),
        };
        let by = match o.source {
            sonde::Source::Endpoint => "the endpoint",
            sonde::Source::Local => "the local cost breaker",
        };
        println!("switched off: {what} until {} by {by}: {}", e(&o.until), e(&o.reason));
    }
    for spec in &manifest.plugins {
        let summary = s.plugins.iter().find(|p| p.name == spec.name);
        let state =
            summary.map_or(if spec.allow { "not run yet" } else { "denied" }, |p| p.state.as_str());
        println!("plugin {}: {state}", e(&spec.name));
        if let Some(p) = summary {
            if let Some(reason) = &p.reason {
                println!(
                    "  reason: {}{}",
                    e(reason),
                    p.until.as_ref().map(|u| format!(" (until {})", e(u))).unwrap_or_default()
                );
            }
            let c = &p.cost;
            println!(
                "  cost as of {}: {} events, {} calls, {} µs, peak memory {} KiB, {} failures",
                e(&p.at),
                c.events,
                c.calls,
                c.busy_us,
                c.peak_memory_bytes / 1024,
                c.failures
            );
            if let Some(f) = &p.last_failure {
                println!("  last failure: {}", e(f));
            }
        }
        let l = &spec.limits;
        println!(
            "  limits: {} MiB memory, {} ms per call, {} ms CPU/s, {} failures per {} s",
            l.memory_bytes >> 20,
            l.call_timeout_ms,
            l.cpu_ms_per_sec,
            l.max_failures,
            l.failure_window_secs
        );
    }
}

pub(crate) fn print_send(o: &SendOutcome) {
    match (o.status, &o.error) {
        (Some(status), _) => println!("sent {} report(s): endpoint answered {status}", o.reports),
        (None, Some(why)) => println!("not sent: {}", e(why)),
        (None, None) => println!("not sent"),
    }
    if !o.body.is_empty() {
        println!("answer: {}", e(&o.body));
    }
    for a in &o.applied {
        println!("applied: {}", e(a));
    }
    println!("spooled: {} report(s) left", o.spooled);
}

/// `sonde check`'s lines about declarations that differ from the accepted
/// ones (or were never accepted).
pub(crate) fn print_declarations(declarations: &[serde_json::Value], manifest: &std::path::Path) {
    let m = e(&manifest.display().to_string()).into_owned();
    for d in declarations {
        let name = e(d["plugin"].as_str().unwrap_or("?")).into_owned();
        match d["status"].as_str() {
            Some("differs") => {
                println!("CHANGED {name}: declares other than what was accepted at its pin:");
                for c in d["changes"].as_array().into_iter().flatten() {
                    println!("          {}", e(c["what"].as_str().unwrap_or("?")));
                }
                println!("          review with `sonde pin -m {m} --plugin {name}`");
            }
            Some("unrecorded") => println!(
                "note    {name}: no accepted declarations on record (`sonde pin -m {m}` records them)"
            ),
            _ => {}
        }
    }
}
