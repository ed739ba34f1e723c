//! The collector's own metrics: counters of what it did since it started,
//! served at `GET /metrics` (admin) in the Prometheus text format. Each
//! replica counts its own; sum them across replicas.

use std::fmt::Write as _;
use std::sync::atomic::{AtomicU64, Ordering::Relaxed};

use crate::retention::Pruned;
use crate::store::Ingested;

/// Counters since start. All are monotonic.
#[derive(Debug, Default)]
pub struct Stats {
    uploads: AtomicU64,
    reports_stored: AtomicU64,
    reports_duplicate: AtomicU64,
    throttled: AtomicU64,
    refused: AtomicU64,
    failed: AtomicU64,
    directives_delivered: AtomicU64,
    rules_issued: AtomicU64,
    prune_runs: AtomicU64,
    prune_skipped: AtomicU64,
    prune_failures: AtomicU64,
    pruned_reports: AtomicU64,
    pruned_by_size: AtomicU64,
    pruned_instances: AtomicU64,
}

impl Stats {
    /// An upload was stored (new reports and duplicates) and answered.
    pub fn ingested(&self, i: &Ingested) {
        self.uploads.fetch_add(1, Relaxed);
        self.reports_stored.fetch_add(u64::from(i.accepted), Relaxed);
        self.reports_duplicate.fetch_add(u64::from(i.duplicates), Relaxed);
        self.directives_delivered.fetch_add(u64::from(i.delivered), Relaxed);
        self.rules_issued.fetch_add(u64::from(i.issued), Relaxed);
    }

    /// An upload was refused with 429.
    pub fn throttled(&self) {
        self.throttled.fetch_add(1, Relaxed);
    }

    /// An upload was refused as invalid (400, 413, 415).
    pub fn refused(&self) {
        self.refused.fetch_add(1, Relaxed);
    }

    /// An upload failed on the collector's side (500).
    pub fn failed(&self) {
        self.failed.fetch_add(1, Relaxed);
    }

    /// A pruning round finished.
    pub fn pruned(&self, p: &Pruned) {
        self.prune_runs.fetch_add(1, Relaxed);
        self.prune_skipped.fetch_add(u64::from(p.skipped), Relaxed);
        self.pruned_reports.fetch_add(p.reports, Relaxed);
        self.pruned_by_size.fetch_add(p.by_size, Relaxed);
        self.pruned_instances.fetch_add(p.instances, Relaxed);
    }

    /// A pruning round failed.
    pub fn prune_failed(&self) {
        self.prune_failures.fetch_add(1, Relaxed);
    }

    /// Every counter: (name, help, value).
    pub fn counters(&self) -> [(&'static str, &'static str, u64); 14] {
        let v = |c: &AtomicU64| c.load(Relaxed);
        [
            ("sonde_collector_uploads_total", "Uploads stored and answered.", v(&self.uploads)),
            (
                "sonde_collector_reports_stored_total",
                "New reports stored.",
                v(&self.reports_stored),
            ),
            (
                "sonde_collector_reports_duplicate_total",
                "Reports received again (report_id stored already) and not stored.",
                v(&self.reports_duplicate),
            ),
            (
                "sonde_collector_uploads_throttled_total",
                "Uploads refused with 429.",
                v(&self.throttled),
            ),
            (
                "sonde_collector_uploads_refused_total",
                "Uploads refused as invalid (400, 413, 415).",
                v(&self.refused),
            ),
            (
                "sonde_collector_uploads_failed_total",
                "Uploads that failed on the collector's side (500).",
                v(&self.failed),
            ),
            (
                "sonde_collector_directives_delivered_total",
                "Directives delivered (first delivery to an instance).",
                v(&self.directives_delivered),
            ),
            (
                "sonde_collector_rule_directives_total",
                "disable_plugin directives issued by the cost rules.",
                v(&self.rules_issued),
            ),
            ("sonde_collector_prune_runs_total", "Pruning rounds run.", v(&self.prune_runs)),
            (
                "sonde_collector_prune_skipped_total",
                "Pruning rounds skipped because another replica was pruning.",
                v(&self.prune_skipped),
            ),
            (
                "sonde_collector_prune_failures_total",
                "Pruning rounds that failed.",
                v(&self.prune_failures),
            ),
            (
                "sonde_collector_pruned_reports_total",
                "Reports deleted for their age (--retain).",
                v(&self.pruned_reports),
            ),
            (
                "sonde_collector_pruned_by_size_total",
                "Reports deleted for the size bound (--max-db-size).",
                v(&self.pruned_by_size),
            ),
            (
                "sonde_collector_pruned_instances_total",
                "Instances deleted (not seen within --retain).",
                v(&self.pruned_instances),
            ),
        ]
    }

    /// The counters in the Prometheus text exposition format, with the
    /// backend as a label.
    pub fn render(&self, backend: &str) -> String {
        let mut out = String::new();
        for (name, help, value) in self.counters() {
            let _ = writeln!(out, "# HELP {name} {help}\n# TYPE {name} counter");
            let _ = writeln!(out, "{name}{{backend=\"{backend}\"}} {value}");
        }
        out
    }
}
