//! The site owner's local view: the current cumulative series in the
//! Prometheus text exposition format (version 0.0.4), for
//! [`Telemetry::prometheus_text`](crate::Telemetry::prometheus_text).
//!
//! What is shown: sonde's own numbers (`own.rs`, as `sonde_*`), every
//! plugin's series with a `sonde_plugin` label naming the plugin, and the
//! application's own metrics (attached sources) under their own names.
//! Nothing here is sent anywhere.
//!
//! Plugins and sources choose their metric names, label keys, label values
//! and descriptions, so nothing they choose is trusted to be valid here:
//!
//! - names become `[a-zA-Z_][a-zA-Z0-9_]*` (every other character is `_`, a
//!   leading digit gets a `_` in front); counters get `_total`;
//! - a family is one name with one type: a name already taken by another
//!   metric (another kind, another origin, sonde's own, a histogram's
//!   `_bucket`/`_sum`/`_count`, or Prometheus's own `up` and `scrape_*`)
//!   gets the first free `_2`, `_3`, ... suffix, so nobody can pose as
//!   sonde's counters or break another family;
//! - label keys are sanitized the same way; one that collides with
//!   `sonde_plugin`, `le`, a reserved `__` name or an earlier key gets an
//!   `exported_` prefix (and a suffix if need be);
//! - label values and `# HELP` text are escaped as the format says (`\\`,
//!   `\"`, `\n`) and otherwise kept exact: Prometheus stores what the plugin
//!   reported;
//! - a series whose labels repeat another's in the same family is left out
//!   and counted in `sonde_prometheus_series_dropped`.

use std::collections::{HashMap, HashSet};
use std::fmt::Write as _;

use sonde_core::{Metric, MetricKind, MetricValue, Report};

use crate::own::{PLUGIN_ATTRIBUTE, own_metrics};

/// The response's `Content-Type`.
pub const PROMETHEUS_CONTENT_TYPE: &str = "text/plain; version=0.0.4; charset=utf-8";

/// Most `_2`, `_3`, ... suffixes tried for one name before its metric is
/// left out (and counted): more metrics than any report may carry.
const MAX_SUFFIX: usize = 10_000;

/// Names a scrape adds itself; no family may take them.
const SCRAPE_NAMES: &[&str] = &[
    "up",
    "scrape_duration_seconds",
    "scrape_samples_scraped",
    "scrape_samples_post_metric_relabeling",
    "scrape_series_added",
];

#[derive(Clone, Copy, PartialEq, Eq, Hash)]
enum Origin {
    Own,
    Plugin,
    Source,
}

#[derive(Clone, Copy, PartialEq, Eq, Hash)]
enum Type {
    Counter,
    Gauge,
    Histogram,
}

impl Type {
    /// `None` for a kind only a newer host's report can carry (this host's
    /// own report never does).
    fn of(kind: MetricKind) -> Option<Type> {
        match kind {
            MetricKind::Counter => Some(Type::Counter),
            MetricKind::Gauge => Some(Type::Gauge),
            MetricKind::Histogram => Some(Type::Histogram),
            MetricKind::Unknown => None,
        }
    }

    fn as_str(self) -> &'static str {
        match self {
            Type::Counter => "counter",
            Type::Gauge => "gauge",
            Type::Histogram => "histogram",
        }
    }
}

/// One series' rendered label pairs (`k="v",...`) and its value.
enum Sample {
    Scalar(f64),
    Histogram { count: u64, sum: f64, bounds: Vec<f64>, buckets: Vec<u64> },
}

struct Family {
    name: String,
    ty: Type,
    help: String,
    series: Vec<(String, Sample)>,
    seen: HashSet<String>,
}

#[derive(Default)]
struct Exposition {
    families: Vec<Family>,
    /// (origin, original name, type) → index in `families`.
    index: HashMap<(Origin, String, Type), usize>,
    /// Every series name a family emits.
    taken: HashSet<String>,
    dropped: u64,
}

impl Exposition {
    /// The family for metric `original` of `origin` and type `ty`,
    /// created under the first free name when new; `None` when no name is
    /// free (never, in practice).
    fn family(&mut self, origin: Origin, original: &str, ty: Type, help: &str) -> Option<usize> {
        let key = (origin, original.to_string(), ty);
        if let Some(&i) = self.index.get(&key) {
            return Some(i);
        }
        let base = metric_name(original);
        let name = (1..=MAX_SUFFIX).find_map(|n| {
            let stem = if n == 1 { base.clone() } else { format!("{base}_{n}") };
            let name = if ty == Type::Counter { format!("{stem}_total") } else { stem };
            let emitted = emitted_names(&name, ty);
            emitted.iter().all(|e| !self.taken.contains(e)).then_some((name, emitted))
        });
        let (name, emitted) = name?;
        self.taken.extend(emitted);
        self.families.push(Family {
            name,
            ty,
            help: help.to_string(),
            series: Vec::new(),
            seen: HashSet::new(),
        });
        self.index.insert(key, self.families.len() - 1);
        Some(self.families.len() - 1)
    }

    /// Adds one series; `labels` in order, the first ones sonde's own.
    fn add(
        &mut self,
        origin: Origin,
        original: &str,
        ty: Type,
        help: &str,
        labels: &[(&str, &str)],
        sample: Sample,
    ) {
        let Some(i) = self.family(origin, original, ty, help) else {
            self.dropped += 1;
            return;
        };
        let reserved: &[&str] = if ty == Type::Histogram { &["le"] } else { &[] };
        let rendered = label_pairs(labels, reserved);
        let family = &mut self.families[i];
        if !family.seen.insert(rendered.clone()) {
            self.dropped += 1;
            return;
        }
        family.series.push((rendered, sample));
    }

    fn render(mut self) -> String {
        self.add(
            Origin::Own,
            "sonde_prometheus_series_dropped",
            Type::Gauge,
            "Series left out of this page: a name with no free suffix, or labels repeating another series'.",
            &[],
            Sample::Scalar(self.dropped as f64),
        );
        let mut out = String::new();
        for f in &self.families {
            if f.series.is_empty() {
                continue;
            }
            if !f.help.is_empty() {
                let _ = writeln!(out, "# HELP {} {}", f.name, escape_help(&f.help));
            }
            let _ = writeln!(out, "# TYPE {} {}", f.name, f.ty.as_str());
            for (labels, sample) in &f.series {
                match sample {
                    Sample::Scalar(v) => line(&mut out, &f.name, "", labels, "", *v),
                    Sample::Histogram { count, sum, bounds, buckets } => {
                        let bucket = format!("{}_bucket", f.name);
                        let mut cumulative = 0u64;
                        for (i, n) in buckets.iter().enumerate() {
                            cumulative = cumulative.saturating_add(*n);
                            let le =
                                bounds.get(i).map_or_else(|| "+Inf".to_string(), |b| number(*b));
                            let le = format!("le=\"{le}\"");
                            line(&mut out, &bucket, "", labels, &le, cumulative as f64);
                        }
                        line(&mut out, &f.name, "_sum", labels, "", *sum);
                        line(&mut out, &f.name, "_count", labels, "", *count as f64);
                    }
                }
            }
        }
        out
    }
}

/// One sample line: `name{labels,extra} value`.
fn line(out: &mut String, name: &str, suffix: &str, labels: &str, extra: &str, value: f64) {
    let sep = if labels.is_empty() || extra.is_empty() { "" } else { "," };
    if labels.is_empty() && extra.is_empty() {
        let _ = writeln!(out, "{name}{suffix} {}", number(value));
    } else {
        let _ = writeln!(out, "{name}{suffix}{{{labels}{sep}{extra}}} {}", number(value));
    }
}

/// A sample value as Prometheus reads it.
fn number(v: f64) -> String {
    if v.is_nan() {
        "NaN".into()
    } else if v.is_infinite() {
        if v > 0.0 { "+Inf".into() } else { "-Inf".into() }
    } else {
        format!("{v}")
    }
}

/// The series names a family called `name` emits.
fn emitted_names(name: &str, ty: Type) -> Vec<String> {
    match ty {
        Type::Histogram => vec![
            name.to_string(),
            format!("{name}_bucket"),
            format!("{name}_sum"),
            format!("{name}_count"),
        ],
        _ => vec![name.to_string()],
    }
}

/// `s` as a metric or label name: `[a-zA-Z_][a-zA-Z0-9_]*`.
fn sanitize(s: &str) -> String {
    let mut out: String =
        s.chars().map(|c| if c.is_ascii_alphanumeric() || c == '_' { c } else { '_' }).collect();
    if out.is_empty() || out.starts_with(|c: char| c.is_ascii_digit()) {
        out.insert(0, '_');
    }
    out
}

/// A metric's name in the exposition (before any suffix).
fn metric_name(original: &str) -> String {
    let name = sanitize(original);
    // `__` names are Prometheus's own.
    if name.starts_with("__") { format!("x{name}") } else { name }
}

/// `k="v",...` for `labels`, keys sanitized and made unique, values
/// escaped; keys in `reserved` (and `__` ones) are never used as they are.
fn label_pairs(labels: &[(&str, &str)], reserved: &[&str]) -> String {
    let mut used: HashSet<String> = reserved.iter().map(|r| r.to_string()).collect();
    let mut pairs = Vec::with_capacity(labels.len());
    for (key, value) in labels {
        let mut k = sanitize(key);
        if used.contains(&k) || k.starts_with("__") {
            k = format!("exported_{}", k.trim_start_matches('_'));
        }
        let stem = k.clone();
        let mut n = 2;
        while used.contains(&k) {
            k = format!("{stem}_{n}");
            n += 1;
        }
        pairs.push(format!("{k}=\"{}\"", escape_value(value)));
        used.insert(k);
    }
    pairs.join(",")
}

/// A label value as the format quotes it.
fn escape_value(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for c in s.chars() {
        match c {
            '\\' => out.push_str("\\\\"),
            '"' => out.push_str("\\\""),
            '\n' => out.push_str("\\n"),
            c => out.push(c),
        }
    }
    out
}

/// `# HELP` text as the format escapes it.
fn escape_help(s: &str) -> String {
    s.replace('\\', "\\\\").replace('\n', "\\n")
}

/// `m`'s type and sample; `None` for a kind or value of a newer host's
/// report, which this host never writes.
fn typed_sample(m: &Metric) -> Option<(Type, Sample)> {
    let sample = match &m.value {
        MetricValue::Scalar { value } => Sample::Scalar(*value),
        MetricValue::Histogram { count, sum, bounds, buckets } => Sample::Histogram {
            count: *count,
            sum: *sum,
            bounds: bounds.clone(),
            buckets: buckets.clone(),
        },
        MetricValue::Other(_) => return None,
    };
    Some((Type::of(m.kind)?, sample))
}

/// `report` as a Prometheus text exposition page.
pub(crate) fn render(report: &Report, help: &HashMap<(String, String), String>) -> String {
    let mut x = Exposition::default();
    x.taken.extend(SCRAPE_NAMES.iter().map(|s| s.to_string()));
    for o in own_metrics(report) {
        let ty = if o.counter { Type::Counter } else { Type::Gauge };
        let name = o.name.replace('.', "_");
        let labels: Vec<(&str, &str)> = o.label.iter().map(|(k, v)| (*k, *v)).collect();
        x.add(Origin::Own, &name, ty, o.help, &labels, Sample::Scalar(o.value as f64));
    }
    for p in &report.plugins {
        for m in &p.metrics {
            let Some((ty, sample)) = typed_sample(m) else { continue };
            let help = help.get(&(p.name.clone(), m.name.clone())).map_or("", String::as_str);
            let mut labels = vec![(PLUGIN_ATTRIBUTE, p.name.as_str())];
            labels.extend(m.labels.iter().map(|(k, v)| (k.as_str(), v.as_str())));
            x.add(Origin::Plugin, &m.name, ty, help, &labels, sample);
        }
    }
    for s in &report.sources {
        for m in &s.metrics {
            let Some((ty, sample)) = typed_sample(m) else { continue };
            let labels: Vec<(&str, &str)> =
                m.labels.iter().map(|(k, v)| (k.as_str(), v.as_str())).collect();
            x.add(Origin::Source, &m.name, ty, "", &labels, sample);
        }
    }
    x.render()
}

#[cfg(test)]
mod tests {
    use sonde_core::{BufferStats, PluginCost, PluginReport, PluginState, SourceReport};
    use uuid::Uuid;

    use super::*;

    fn metric(name: &str, kind: MetricKind, labels: &[(&str, &str)], value: MetricValue) -> Metric {
        Metric {
            name: name.into(),
            kind,
            unit: "1".into(),
            labels: labels.iter().map(|(k, v)| (k.to_string(), v.to_string())).collect(),
            value,
        }
    }

    fn plugin(name: &str, metrics: Vec<Metric>) -> PluginReport {
        PluginReport {
            name: name.into(),
            version: "1".into(),
            state: PluginState::Running,
            reason: None,
            until: None,
            last_failure: None,
            disabled_metrics: vec![],
            denied_metrics: vec![],
            cost: PluginCost { events: 5, ..PluginCost::default() },
            metrics,
        }
    }

    fn scalar(v: f64) -> MetricValue {
        MetricValue::Scalar { value: v }
    }

    fn page(plugins: Vec<PluginReport>, sources: Vec<SourceReport>) -> String {
        let buffer = BufferStats { recorded: 9, processed: 9, ..BufferStats::default() };
        let mut r = Report::new(Uuid::nil(), buffer, plugins);
        r.sources = sources;
        let help = HashMap::from([(
            ("http-status".to_string(), "http.requests".to_string()),
            "Requests by \\ and\nclass".to_string(),
        )]);
        render(&r, &help)
    }

    /// Every non-comment line: `name{labels} value` with a valid name.
    fn assert_well_formed(page: &str) {
        let mut types = HashSet::new();
        for l in page.lines() {
            if let Some(rest) = l.strip_prefix("# TYPE ") {
                let name = rest.split(' ').next().unwrap_or_default();
                assert!(types.insert(name.to_string()), "one TYPE per family: {name}\n{page}");
                continue;
            }
            if l.starts_with("# HELP ") {
                continue;
            }
            let name_end = l.find(['{', ' ']).unwrap_or(l.len());
            let name = &l[..name_end];
            assert!(
                !name.is_empty()
                    && name.chars().all(|c| c.is_ascii_alphanumeric() || c == '_')
                    && !name.starts_with(|c: char| c.is_ascii_digit()),
                "bad name in {l:?}"
            );
        }
    }

    #[test]
    fn series_keep_their_numbers_with_a_label_naming_the_plugin() {
        let hist = MetricValue::Histogram {
            count: 3,
            sum: 12.5,
            bounds: vec![5.0, 10.0],
            buckets: vec![2, 0, 1],
        };
        let p = plugin(
            "http-status",
            vec![
                metric(
                    "http.requests",
                    MetricKind::Counter,
                    &[("status_class", "2xx")],
                    scalar(7.0),
                ),
                metric("http.route.duration_us", MetricKind::Histogram, &[("route", "/a")], hist),
            ],
        );
        let text = page(vec![p], vec![]);
        assert_well_formed(&text);
        for needle in [
            "# HELP http_requests_total Requests by \\\\ and\\nclass\n",
            "# TYPE http_requests_total counter\n",
            "http_requests_total{sonde_plugin=\"http-status\",status_class=\"2xx\"} 7\n",
            "# TYPE http_route_duration_us histogram\n",
            "http_route_duration_us_bucket{sonde_plugin=\"http-status\",route=\"/a\",le=\"5\"} 2\n",
            "http_route_duration_us_bucket{sonde_plugin=\"http-status\",route=\"/a\",le=\"10\"} 2\n",
            "http_route_duration_us_bucket{sonde_plugin=\"http-status\",route=\"/a\",le=\"+Inf\"} 3\n",
            "http_route_duration_us_sum{sonde_plugin=\"http-status\",route=\"/a\"} 12.5\n",
            "http_route_duration_us_count{sonde_plugin=\"http-status\",route=\"/a\"} 3\n",
            "sonde_events_recorded_total 9\n",
            "sonde_plugin_events_total{sonde_plugin=\"http-status\"} 5\n",
            "sonde_plugin_running{sonde_plugin=\"http-status\"} 1\n",
            "sonde_prometheus_series_dropped 0\n",
        ] {
            assert!(text.contains(needle), "{needle:?} missing from:\n{text}");
        }
    }

    #[test]
    fn hostile_names_labels_and_values_cannot_break_the_page_or_pose_as_sonde() {
        let p = plugin(
            "evil",
            vec![
                // Poses as sonde's own counter and as Prometheus's `up`.
                metric("sonde.events.recorded", MetricKind::Counter, &[], scalar(1e9)),
                metric("up", MetricKind::Gauge, &[], scalar(0.0)),
                // Sanitize to the same name; different kinds.
                metric(
                    "a.b",
                    MetricKind::Gauge,
                    &[("sonde.plugin", "x"), ("le", "y")],
                    scalar(1.0),
                ),
                metric(
                    "a-b",
                    MetricKind::Histogram,
                    &[("le", "1")],
                    MetricValue::Histogram {
                        count: 1,
                        sum: 1.0,
                        bounds: vec![1.0],
                        buckets: vec![1, 0],
                    },
                ),
                metric("9lives", MetricKind::Gauge, &[("k", "a\"b\\c\nd}\u{1b}[2K")], scalar(2.0)),
                // Claims a histogram's own series names.
                metric(
                    "h",
                    MetricKind::Histogram,
                    &[],
                    MetricValue::Histogram {
                        count: 0,
                        sum: 0.0,
                        bounds: vec![1.0],
                        buckets: vec![0, 0],
                    },
                ),
                metric("h.count", MetricKind::Gauge, &[], scalar(3.0)),
            ],
        );
        let text = page(vec![p], vec![]);
        assert_well_formed(&text);
        assert!(text.contains("\nsonde_events_recorded_total 9\n"), "the real counter:\n{text}");
        assert!(
            text.contains("\nsonde_events_recorded_2_total{sonde_plugin=\"evil\"} 1000000000\n"),
            "{text}"
        );
        assert!(!text.contains("\nup ") && !text.contains("\nup{"), "{text}");
        assert!(text.contains("\nup_2{sonde_plugin=\"evil\"} 0\n"), "{text}");
        assert!(
            text.contains("\na_b{sonde_plugin=\"evil\",le=\"y\",exported_sonde_plugin=\"x\"} 1\n"),
            "{text}"
        );
        assert!(
            text.contains("\na_b_2_bucket{sonde_plugin=\"evil\",exported_le=\"1\",le=\"1\"} 1\n"),
            "{text}"
        );
        assert!(
            text.contains("\n_9lives{sonde_plugin=\"evil\",k=\"a\\\"b\\\\c\\nd}\u{1b}[2K\"} 2\n"),
            "{text}"
        );
        assert!(text.contains("\nh_count{sonde_plugin=\"evil\"} 0\n"), "{text}");
        assert!(text.contains("\nh_count_2{sonde_plugin=\"evil\"} 3\n"), "{text}");
    }

    #[test]
    fn plugins_share_a_family_and_repeated_series_are_counted_out() {
        let a = plugin("a", vec![metric("x", MetricKind::Counter, &[("k", "1")], scalar(1.0))]);
        let b = plugin("b", vec![metric("x", MetricKind::Counter, &[("k", "1")], scalar(2.0))]);
        let app = SourceReport {
            name: "metrics".into(),
            overflow_series: 0,
            dropped_values: 0,
            invalid_series: 0,
            metrics: vec![
                metric("jobs", MetricKind::Gauge, &[("q", "a")], scalar(4.0)),
                // Its labels sanitize to the first one's.
                metric("jobs", MetricKind::Gauge, &[("q", "a")], scalar(5.0)),
            ],
        };
        let text = page(vec![a, b], vec![app]);
        assert_well_formed(&text);
        assert_eq!(text.matches("# TYPE x_total counter").count(), 1, "{text}");
        assert!(text.contains("x_total{sonde_plugin=\"a\",k=\"1\"} 1\n"), "{text}");
        assert!(text.contains("x_total{sonde_plugin=\"b\",k=\"1\"} 2\n"), "{text}");
        assert!(text.contains("\njobs{q=\"a\"} 4\n"), "app metrics under their own names:\n{text}");
        assert!(text.contains("sonde_prometheus_series_dropped 1\n"), "{text}");
        assert!(
            text.contains("sonde_source_overflow_total{sonde_source=\"metrics\"} 0\n"),
            "{text}"
        );
    }
}
