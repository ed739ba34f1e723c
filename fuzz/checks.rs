#![allow(dead_code, reason = "each fuzz target uses one of these")]

//! What each fuzz target asserts about one input, shared with the regression
//! tests of the main workspace (`tests/all/fuzz_regressions.rs` includes this
//! file), so a crashing input saved under `fuzz/regressions/<target>/` is
//! replayed by every `cargo test`.
//!
//! Beyond "never panics": a parser's answer stays within its documented
//! limits, and its errors point inside the input.

use std::path::Path;

use sonde_core::limits::{
    MAX_BUFFER_CAPACITY, MAX_CONFIG_ENTRIES, MAX_EVENT_FIELDS, MAX_GRANTED_EVENTS, MAX_PLUGINS,
    MIN_BUFFER_CAPACITY,
};
use sonde_core::{
    Directive, EndpointResponse, MAX_DIRECTIVE_TEXT, MAX_DIRECTIVES, MAX_DISABLE_SECS,
    MAX_RESPONSE_BYTES, MIN_DISABLE_SECS, Manifest, parse_events_jsonl,
};

/// The manifest parser: a valid manifest is within every limit; an error
/// names a line of the file (or 0 for the whole file) and says something.
pub fn manifest(data: &[u8]) {
    let Ok(text) = std::str::from_utf8(data) else { return };
    match Manifest::parse(text, Path::new("fuzz.toml")) {
        Ok(m) => {
            let t = &m.telemetry;
            assert!((MIN_BUFFER_CAPACITY..=MAX_BUFFER_CAPACITY).contains(&t.buffer_capacity));
            let d = &t.delivery;
            assert!(d.min_interval <= d.interval && d.interval <= d.max_interval, "{d:?}");
            assert!(m.plugins.len() <= MAX_PLUGINS);
            for p in &m.plugins {
                assert!(p.events.len() <= MAX_GRANTED_EVENTS);
                assert!(p.config.len() <= MAX_CONFIG_ENTRIES);
                assert_eq!(p.sha256.len(), 64);
            }
        }
        Err(e) => {
            let lines = text.lines().count().max(1);
            assert!(e.at.line <= lines + 1, "line {} of {lines}: {e}", e.at.line);
            assert!(!e.message.is_empty());
        }
    }
}

/// The endpoint-response (directive) parser: at most [`MAX_DIRECTIVES`],
/// every duration clamped, every text clipped.
pub fn response(data: &[u8]) {
    let Ok(parsed) = EndpointResponse::parse(data) else { return };
    assert!(data.len() <= MAX_RESPONSE_BYTES || data.iter().all(u8::is_ascii_whitespace));
    let directives = &parsed.response.directives;
    assert!(directives.len() <= MAX_DIRECTIVES);
    for d in directives {
        match d {
            Directive::DisablePlugin { plugin, for_secs, reason }
            | Directive::DisableMetrics { plugin, for_secs, reason, .. } => {
                assert!((MIN_DISABLE_SECS..=MAX_DISABLE_SECS).contains(for_secs));
                assert!(reason.len() <= MAX_DIRECTIVE_TEXT && plugin.len() <= MAX_DIRECTIVE_TEXT);
            }
            Directive::EnablePlugin { plugin } | Directive::EnableMetrics { plugin, .. } => {
                assert!(plugin.len() <= MAX_DIRECTIVE_TEXT);
            }
            Directive::Stop { reason } => assert!(reason.len() <= MAX_DIRECTIVE_TEXT),
        }
    }
}

/// The events-file parser: each record has a kind and at most
/// [`MAX_EVENT_FIELDS`] fields; an error names the file and a line.
pub fn events(data: &[u8]) {
    let Ok(text) = std::str::from_utf8(data) else { return };
    match parse_events_jsonl(text, Path::new("fuzz.jsonl")) {
        Ok(records) => {
            assert!(records.len() <= text.lines().count());
            for r in &records {
                assert!(r.fields.len() <= MAX_EVENT_FIELDS, "{r:?}");
            }
        }
        Err(e) => assert!(e.to_string().starts_with("fuzz.jsonl:"), "{e}"),
    }
}

/// The collector's upload decoder, plain and gzip: what it accepts is 1 to
/// 100 reports of one instance and the current schema.
pub fn collector_decode(data: &[u8]) {
    use sonde_collector::upload::{Encoding, decode};
    for encoding in [Encoding::Plain, Encoding::Gzip] {
        if let Ok(reports) = decode(data, encoding) {
            assert!((1..=sonde_collector::MAX_REPORTS_PER_BATCH).contains(&reports.len()));
            let first = &reports[0].report;
            assert!(reports.iter().all(|r| r.report.instance_id == first.instance_id));
            assert!(reports.iter().all(|r| r.report.schema == sonde_core::REPORT_SCHEMA_VERSION));
            // What is stored (the text as received) reads back as the
            // report decoded from it.
            assert!(reports.iter().all(|r| {
                sonde_core::Report::from_json(r.json.as_bytes()).ok().as_ref() == Some(&r.report)
            }));
        }
    }
}
