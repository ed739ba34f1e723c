//! A report as rows for analysis, the same for both backends: the
//! instance's runtime facts, one row per plugin (state and cost), one row
//! per metric series, each with its change since the instance's previous
//! report.
//!
//! Values in a report are cumulative since the host's runtime started
//! (`started`). The change over an interval (`d_*` columns, `delta`) is
//! taken against the previous stored report of the same run; the first
//! report of a run counts everything since the start; a value that went
//! down (a plugin reloaded) starts over. When the previous report is not
//! there any more (pruned), the change is unknown (`NULL`), not guessed.

use std::collections::HashMap;

use serde::Deserialize;
use sonde_core::{Metric, MetricKind, MetricValue, PluginCost, PluginState, Report};

/// The facts of one report kept in columns of `reports`.
#[derive(Debug, Clone)]
pub(crate) struct ReportRow<'a> {
    pub(crate) report: &'a Report,
    /// The report's JSON as received.
    pub(crate) body: &'a str,
}

impl ReportRow<'_> {
    pub(crate) fn events_recorded(&self) -> i64 {
        int(self.report.buffer.recorded)
    }

    pub(crate) fn events_dropped(&self) -> i64 {
        int(self.report.buffer.dropped)
    }
}

/// What the interval rows are computed against: the instance's previous
/// report.
#[derive(Debug, Clone, Default)]
pub(crate) enum Previous {
    /// The instance never reported before: this report starts a run.
    #[default]
    None,
    /// It did, but that report is no longer stored: changes are unknown.
    Gone,
    /// Its previous report.
    Report(Snapshot),
}

/// The cumulative values of one report, to compute the next one's changes.
#[derive(Debug, Clone, Default)]
pub(crate) struct Snapshot {
    pub(crate) started: Option<String>,
    pub(crate) plugins: HashMap<String, Cost>,
    pub(crate) series: HashMap<SeriesKey, Point>,
}

/// The cost figures whose interval change is kept.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub(crate) struct Cost {
    pub(crate) events: u64,
    pub(crate) calls: u64,
    pub(crate) busy_us: u64,
    pub(crate) failures: u64,
}

impl Cost {
    fn of(c: &PluginCost) -> Cost {
        Cost { events: c.events, calls: c.calls, busy_us: c.busy_us, failures: c.failures }
    }

    /// The change from `prev` (same run); a figure that went down starts over.
    fn since(self, prev: Cost) -> Cost {
        let d = |now: u64, then: u64| if now >= then { now - then } else { now };
        Cost {
            events: d(self.events, prev.events),
            calls: d(self.calls, prev.calls),
            busy_us: d(self.busy_us, prev.busy_us),
            failures: d(self.failures, prev.failures),
        }
    }

    /// As a [`PluginCost`] for the policy (the other figures zero).
    pub(crate) fn as_plugin_cost(self) -> PluginCost {
        PluginCost {
            events: self.events,
            calls: self.calls,
            busy_us: self.busy_us,
            failures: self.failures,
            ..PluginCost::default()
        }
    }
}

/// Where a series comes from, its name and its labels (canonical JSON).
pub(crate) type SeriesKey = (Origin, String, String, String);

/// A series' cumulative value.
#[derive(Debug, Clone, Copy, Default, PartialEq)]
pub(crate) struct Point {
    pub(crate) value: Option<f64>,
    pub(crate) count: Option<i64>,
    pub(crate) sum: Option<f64>,
}

/// Whose series it is.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub(crate) enum Origin {
    /// A plugin's.
    Plugin,
    /// An application source's (`sources`).
    Source,
}

impl Origin {
    pub(crate) fn as_str(self) -> &'static str {
        match self {
            Origin::Plugin => "plugin",
            Origin::Source => "source",
        }
    }

    pub(crate) fn parse(s: &str) -> Origin {
        if s == "source" { Origin::Source } else { Origin::Plugin }
    }
}

/// One plugin of one report.
#[derive(Debug, Clone, PartialEq)]
pub(crate) struct PluginRow {
    pub(crate) report: i64,
    pub(crate) plugin: String,
    pub(crate) version: String,
    /// As the host wrote it (a newer host's state too).
    pub(crate) state: String,
    pub(crate) reason: Option<String>,
    pub(crate) until: Option<String>,
    pub(crate) last_failure: Option<String>,
    pub(crate) cost: PluginCost,
    /// The change since the previous report of the run (all of it for the
    /// first report of a run); `None` when unknown.
    pub(crate) interval: Option<Cost>,
}

/// One metric series of one report.
#[derive(Debug, Clone, PartialEq)]
pub(crate) struct MetricRow {
    pub(crate) report: i64,
    pub(crate) origin: Origin,
    pub(crate) owner: String,
    pub(crate) name: String,
    /// As the host wrote it (a newer host's kind too).
    pub(crate) kind: String,
    pub(crate) unit: String,
    /// JSON object, keys sorted.
    pub(crate) labels: String,
    /// Counter total or gauge level.
    pub(crate) value: Option<f64>,
    /// Counter: its change over the interval; histogram: its count's.
    pub(crate) delta: Option<f64>,
    pub(crate) count: Option<i64>,
    pub(crate) sum: Option<f64>,
    /// Histogram: its sum's change over the interval.
    pub(crate) d_sum: Option<f64>,
    /// Histogram bounds and buckets, JSON arrays.
    pub(crate) bounds: Option<String>,
    pub(crate) buckets: Option<String>,
    /// A value of a shape this collector does not know, as a JSON object.
    pub(crate) fields: Option<String>,
}

/// The rows of `report` (stored as row `id`) after `prev`, and the snapshot
/// the next report of the instance is compared with.
pub(crate) fn rows(
    id: i64,
    row: &ReportRow<'_>,
    prev: &Previous,
) -> (Vec<PluginRow>, Vec<MetricRow>, Snapshot) {
    let report = row.report;
    // Compared with the previous report of the same run, the first of a run
    // with nothing, and with an unknown previous report not at all.
    let base: Option<Option<&Snapshot>> = match prev {
        Previous::None => Some(None),
        Previous::Gone => None,
        Previous::Report(s) if s.started == report.started => Some(Some(s)),
        Previous::Report(_) => Some(None),
    };
    let names = Names::of(row);
    let mut next = Snapshot { started: report.started.clone(), ..Snapshot::default() };
    let mut plugins = Vec::with_capacity(report.plugins.len());
    let mut metrics = Vec::new();
    for (i, p) in report.plugins.iter().enumerate() {
        let cost = Cost::of(&p.cost);
        let interval = base.map(|b| match b.and_then(|s| s.plugins.get(&nul_free(&p.name))) {
            Some(then) => cost.since(*then),
            None => cost,
        });
        next.plugins.insert(nul_free(&p.name), cost);
        plugins.push(PluginRow {
            report: id,
            plugin: nul_free(&p.name),
            version: nul_free(&p.version),
            state: match p.state {
                PluginState::Unknown => names.state(i),
                known => known.as_str().to_string(),
            },
            reason: p.reason.as_deref().map(nul_free),
            until: p.until.as_deref().map(nul_free),
            last_failure: p.last_failure.as_deref().map(nul_free),
            cost: p.cost,
            interval,
        });
        for (j, m) in p.metrics.iter().enumerate() {
            let kind = || names.plugin_kind(i, j);
            metrics.push(metric(id, Origin::Plugin, &p.name, m, kind, base, &mut next));
        }
    }
    for (i, s) in report.sources.iter().enumerate() {
        for (j, m) in s.metrics.iter().enumerate() {
            let kind = || names.source_kind(i, j);
            metrics.push(metric(id, Origin::Source, &s.name, m, kind, base, &mut next));
        }
    }
    (plugins, metrics, next)
}

fn metric(
    id: i64,
    origin: Origin,
    owner: &str,
    m: &Metric,
    unknown_kind: impl Fn() -> String,
    base: Option<Option<&Snapshot>>,
    next: &mut Snapshot,
) -> MetricRow {
    let labels: std::collections::BTreeMap<String, String> =
        m.labels.iter().map(|(k, v)| (nul_free(k), nul_free(v))).collect();
    let labels = serde_json::to_string(&labels).unwrap_or_else(|_| "{}".into());
    let (owner, name) = (nul_free(owner), nul_free(&m.name));
    let key: SeriesKey = (origin, owner.clone(), name.clone(), labels.clone());
    let then = base.map(|b| b.and_then(|s| s.series.get(&key)).copied().unwrap_or_default());
    let change = |now: f64, then: Option<f64>| match then {
        Some(t) if now >= t => now - t,
        _ => now,
    };
    let mut row = MetricRow {
        report: id,
        origin,
        owner,
        name,
        kind: match m.kind {
            MetricKind::Unknown => unknown_kind(),
            known => known.as_str().to_string(),
        },
        unit: nul_free(&m.unit),
        labels,
        value: None,
        delta: None,
        count: None,
        sum: None,
        d_sum: None,
        bounds: None,
        buckets: None,
        fields: None,
    };
    let point = match &m.value {
        MetricValue::Scalar { value } => {
            row.value = Some(*value);
            if m.kind == MetricKind::Counter {
                row.delta = then.map(|t| change(*value, t.value));
            }
            Point { value: Some(*value), ..Point::default() }
        }
        MetricValue::Histogram { count, sum, bounds, buckets } => {
            let count = int(*count);
            row.count = Some(count);
            row.sum = Some(*sum);
            row.delta = then.map(|t| change(count as f64, t.count.map(|c| c as f64)));
            row.d_sum = then.map(|t| change(*sum, t.sum));
            row.bounds = serde_json::to_string(bounds).ok();
            row.buckets = serde_json::to_string(buckets).ok();
            Point { value: None, count: Some(count), sum: Some(*sum) }
        }
        MetricValue::Other(fields) => {
            row.fields = serde_json::to_string(fields).ok();
            Point::default()
        }
    };
    next.series.insert(key, point);
    row
}

/// `s` without NUL characters (replaced by U+FFFD), which PostgreSQL text
/// cannot hold. Rows are made of this on both backends, so they agree.
pub(crate) fn nul_free(s: &str) -> String {
    if s.contains('\0') { s.replace('\0', "\u{fffd}") } else { s.to_string() }
}

/// u64 as a database integer (they are signed 64-bit in both backends).
pub(crate) fn int(v: u64) -> i64 {
    i64::try_from(v).unwrap_or(i64::MAX)
}

/// Longest state or kind name kept from a newer host (they are words).
const MAX_UNKNOWN_NAME: usize = 64;

/// The names a newer host wrote where this collector read `unknown`, read
/// again from the report's text only when there is such a name.
#[derive(Debug, Default, Deserialize)]
struct Names {
    #[serde(default)]
    plugins: Vec<PluginNames>,
    #[serde(default)]
    sources: Vec<SourceNames>,
}

#[derive(Debug, Deserialize)]
struct PluginNames {
    state: String,
    #[serde(default)]
    metrics: Vec<KindName>,
}

#[derive(Debug, Deserialize)]
struct SourceNames {
    #[serde(default)]
    metrics: Vec<KindName>,
}

#[derive(Debug, Deserialize)]
struct KindName {
    kind: String,
}

impl Names {
    fn of(row: &ReportRow<'_>) -> Names {
        let r = row.report;
        let any =
            r.plugins.iter().any(|p| {
                p.state == PluginState::Unknown
                    || p.metrics.iter().any(|m| m.kind == MetricKind::Unknown)
            }) || r.sources.iter().any(|s| s.metrics.iter().any(|m| m.kind == MetricKind::Unknown));
        if !any {
            return Names::default();
        }
        serde_json::from_str(row.body).unwrap_or_default()
    }

    fn clip(name: Option<&String>) -> String {
        match name {
            Some(n) if !n.is_empty() => {
                nul_free(&n.chars().take(MAX_UNKNOWN_NAME).collect::<String>())
            }
            _ => "unknown".to_string(),
        }
    }

    fn state(&self, plugin: usize) -> String {
        Names::clip(self.plugins.get(plugin).map(|p| &p.state))
    }

    fn plugin_kind(&self, plugin: usize, metric: usize) -> String {
        Names::clip(self.plugins.get(plugin).and_then(|p| p.metrics.get(metric)).map(|m| &m.kind))
    }

    fn source_kind(&self, source: usize, metric: usize) -> String {
        Names::clip(self.sources.get(source).and_then(|s| s.metrics.get(metric)).map(|m| &m.kind))
    }
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeMap;

    use sonde_core::{BufferStats, PluginReport};
    use uuid::Uuid;

    use super::*;

    fn counter(value: f64) -> Metric {
        Metric {
            name: "requests".into(),
            kind: MetricKind::Counter,
            unit: "1".into(),
            labels: BTreeMap::from([("status".into(), "200".into())]),
            value: MetricValue::Scalar { value },
        }
    }

    fn report(started: &str, events: u64, busy_us: u64, value: f64) -> Report {
        let mut r = Report::new(
            Uuid::nil(),
            BufferStats::default(),
            vec![PluginReport {
                name: "p".into(),
                version: "1".into(),
                state: PluginState::Running,
                reason: None,
                until: None,
                last_failure: None,
                disabled_metrics: vec![],
                denied_metrics: vec![],
                cost: PluginCost { events, busy_us, ..PluginCost::default() },
                metrics: vec![counter(value)],
            }],
        );
        r.started = Some(started.into());
        r
    }

    fn run(r: &Report, prev: &Previous) -> (Vec<PluginRow>, Vec<MetricRow>, Snapshot) {
        let body = String::from_utf8(r.to_json()).expect("utf8");
        rows(7, &ReportRow { report: r, body: &body }, prev)
    }

    #[test]
    fn changes_are_taken_against_the_previous_report_of_the_same_run() {
        let (p, m, snap) = run(&report("t0", 1000, 90_000, 10.0), &Previous::None);
        // The first report of a run: everything since its start.
        assert_eq!(p[0].interval, Some(Cost { events: 1000, busy_us: 90_000, ..Cost::default() }));
        assert_eq!(m[0].delta, Some(10.0));
        assert_eq!((m[0].labels.as_str(), m[0].report), (r#"{"status":"200"}"#, 7));
        let (p, m, snap) = run(&report("t0", 3000, 92_000, 25.0), &Previous::Report(snap));
        assert_eq!(p[0].interval, Some(Cost { events: 2000, busy_us: 2_000, ..Cost::default() }));
        assert_eq!(m[0].delta, Some(15.0));
        // A new run (the host restarted): from its start again.
        let (p, m, _) = run(&report("t1", 500, 1_000, 4.0), &Previous::Report(snap.clone()));
        assert_eq!(p[0].interval.map(|c| c.events), Some(500));
        assert_eq!(m[0].delta, Some(4.0));
        // Same run, but a value went down (the plugin was reloaded).
        let (p, m, _) = run(&report("t0", 10, 10, 1.0), &Previous::Report(snap));
        assert_eq!(p[0].interval.map(|c| (c.events, c.busy_us)), Some((10, 10)));
        assert_eq!(m[0].delta, Some(1.0));
        // The previous report was pruned: unknown, not guessed.
        let (p, m, _) = run(&report("t0", 10, 10, 1.0), &Previous::Gone);
        assert_eq!((p[0].interval, m[0].delta), (None, None));
    }

    #[test]
    fn a_newer_host_s_state_and_kind_names_are_kept_in_the_rows() {
        let mut r = report("t0", 1, 1, 1.0);
        r.plugins[0].state = PluginState::Unknown;
        r.plugins[0].metrics[0].kind = MetricKind::Unknown;
        let body = String::from_utf8(r.to_json())
            .expect("utf8")
            .replace(r#""state":"unknown""#, r#""state":"hibernating""#)
            .replace(r#""kind":"unknown""#, r#""kind":"summary""#);
        let (p, m, _) = rows(1, &ReportRow { report: &r, body: &body }, &Previous::None);
        assert_eq!((p[0].state.as_str(), m[0].kind.as_str()), ("hibernating", "summary"));
        // An unknown kind's scalar is no counter: no change is computed.
        assert_eq!((m[0].value, m[0].delta), (Some(1.0), None));
    }
}
