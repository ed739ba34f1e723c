//! Host-side metric state: every point a plugin returns is checked against
//! its declaration, then folded into cumulative series.
//!
//! Plugins return deltas; the host keeps the totals, so a plugin restart
//! loses at most one collection window. The plugin's limits cap what it may
//! return: points per collect, label length, and series per metric (past
//! `max_series_per_metric` label sets, new ones fold into a single overflow
//! series whose every label is [`OVERFLOW_LABEL`], and are counted).
//!
//! Metrics the operator denies (`deny_metrics`) are dropped here, the first
//! thing done with a point, and counted as `denied_points`: no series ever
//! holds them, so no report, preview or local view can show them, and no
//! endpoint directive can bring them back.
//!
//! Every total stays finite: each delta is checked alone (`valid`), and a
//! delta that would carry a counter's total or a histogram's sum past
//! `f64::MAX` is dropped and counted as `non_finite_totals`, leaving the
//! total as it was. A plugin cannot make its series, or the report that
//! carries them, unwritable.

use std::collections::BTreeMap;

use sonde_core::{Metric, MetricValue as ReportValue, PluginCost, PluginLimits};

use crate::bindings::{MetricDecl, MetricKind, MetricPoint, MetricValue};

/// The label value of the overflow series.
pub(crate) const OVERFLOW_LABEL: &str = "__overflow__";

enum Total {
    Scalar(f64),
    Histogram { count: u64, sum: f64, buckets: Vec<u64> },
}

pub(crate) struct Series {
    decls: Vec<MetricDecl>,
    /// Per declared metric: denied by the operator.
    denied: Vec<bool>,
    max_points: usize,
    max_series: usize,
    max_label: usize,
    totals: BTreeMap<(u32, Vec<String>), Total>,
    per_metric: Vec<usize>,
}

impl Series {
    /// Series for the metrics `decls` declares, under `limits`, dropping
    /// every point of a metric named in `deny`.
    pub(crate) fn new(decls: Vec<MetricDecl>, limits: PluginLimits, deny: &[String]) -> Series {
        let per_metric = vec![0; decls.len()];
        Series {
            denied: decls.iter().map(|d| deny.contains(&d.name)).collect(),
            decls,
            max_points: limits.max_points_per_collect as usize,
            max_series: limits.max_series_per_metric as usize,
            max_label: limits.max_label_len as usize,
            totals: BTreeMap::new(),
            per_metric,
        }
    }

    /// Checks and folds in the points of one `collect`.
    pub(crate) fn apply(&mut self, points: Vec<MetricPoint>, cost: &mut PluginCost) {
        let excess = points.len().saturating_sub(self.max_points);
        cost.excess_points += excess as u64;
        for point in points.into_iter().take(self.max_points) {
            if self.denied.get(point.metric as usize) == Some(&true) {
                cost.denied_points += 1;
                continue;
            }
            if !self.valid(&point) {
                cost.invalid_points += 1;
                continue;
            }
            let metric = point.metric;
            let mut key = (metric, point.labels);
            if !self.totals.contains_key(&key) {
                if self.per_metric[metric as usize] >= self.max_series {
                    cost.overflow_points += 1;
                    key.1 = vec![OVERFLOW_LABEL.to_string(); key.1.len()];
                } else {
                    self.per_metric[metric as usize] += 1;
                }
            }
            let entry = self.totals.entry(key).or_insert_with(|| match &point.value {
                MetricValue::Histogram(h) => {
                    Total::Histogram { count: 0, sum: 0.0, buckets: vec![0; h.buckets.len()] }
                }
                _ => Total::Scalar(0.0),
            });
            match (entry, point.value) {
                (Total::Scalar(v), MetricValue::Counter(d)) => match finite_sum(*v, d) {
                    Some(total) => *v = total,
                    None => cost.non_finite_totals += 1,
                },
                (Total::Scalar(v), MetricValue::Gauge(g)) => *v = g,
                (Total::Histogram { count, sum, buckets }, MetricValue::Histogram(h)) => {
                    let Some(total) = finite_sum(*sum, h.sum) else {
                        cost.non_finite_totals += 1;
                        continue;
                    };
                    *sum = total;
                    *count = count.saturating_add(h.count);
                    for (b, d) in buckets.iter_mut().zip(&h.buckets) {
                        *b = b.saturating_add(*d);
                    }
                }
                // `valid` checked the value against the declared kind.
                _ => cost.invalid_points += 1,
            }
        }
    }

    fn valid(&self, p: &MetricPoint) -> bool {
        let Some(decl) = self.decls.get(p.metric as usize) else {
            return false;
        };
        if p.labels.len() != decl.label_keys.len()
            || p.labels.iter().any(|l| l.len() > self.max_label || l == OVERFLOW_LABEL)
        {
            return false;
        }
        match (&p.value, decl.kind) {
            (MetricValue::Counter(d), MetricKind::Counter) => d.is_finite() && *d >= 0.0,
            (MetricValue::Gauge(g), MetricKind::Gauge) => g.is_finite(),
            (MetricValue::Histogram(h), MetricKind::Histogram) => {
                h.buckets.len() == decl.buckets.len() + 1
                    && h.sum.is_finite()
                    && h.buckets.iter().try_fold(0u64, |a, b| a.checked_add(*b)) == Some(h.count)
            }
            _ => false,
        }
    }

    /// The cumulative series, sorted by metric name then labels.
    pub(crate) fn metrics(&self) -> Vec<Metric> {
        let mut out: Vec<Metric> = self
            .totals
            .iter()
            .map(|((index, labels), total)| {
                let decl = &self.decls[*index as usize];
                let labels = decl.label_keys.iter().cloned().zip(labels.iter().cloned()).collect();
                let value = match total {
                    Total::Scalar(v) => ReportValue::Scalar { value: *v },
                    Total::Histogram { count, sum, buckets } => ReportValue::Histogram {
                        count: *count,
                        sum: *sum,
                        bounds: decl.buckets.clone(),
                        buckets: buckets.clone(),
                    },
                };
                Metric {
                    name: decl.name.clone(),
                    kind: kind_of(decl.kind),
                    unit: decl.unit.clone(),
                    labels,
                    value,
                }
            })
            .collect();
        out.sort_by(|a, b| a.name.cmp(&b.name).then_with(|| a.labels.cmp(&b.labels)));
        out
    }
}

/// `total + delta` when it is finite: two finite numbers can add up to an
/// infinity (`f64::MAX + f64::MAX`), which no report can carry.
fn finite_sum(total: f64, delta: f64) -> Option<f64> {
    Some(total + delta).filter(|t| t.is_finite())
}

pub(crate) fn kind_of(kind: MetricKind) -> sonde_core::MetricKind {
    match kind {
        MetricKind::Counter => sonde_core::MetricKind::Counter,
        MetricKind::Gauge => sonde_core::MetricKind::Gauge,
        MetricKind::Histogram => sonde_core::MetricKind::Histogram,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::bindings::sonde::collector::types::HistogramDelta;

    fn decls() -> Vec<MetricDecl> {
        vec![
            MetricDecl {
                name: "c".into(),
                kind: MetricKind::Counter,
                unit: "1".into(),
                description: String::new(),
                label_keys: vec!["k".into()],
                buckets: vec![],
            },
            MetricDecl {
                name: "h".into(),
                kind: MetricKind::Histogram,
                unit: "us".into(),
                description: String::new(),
                label_keys: vec![],
                buckets: vec![10.0],
            },
        ]
    }

    fn counter(label: &str, v: f64) -> MetricPoint {
        MetricPoint { metric: 0, labels: vec![label.into()], value: MetricValue::Counter(v) }
    }

    #[test]
    fn deltas_accumulate_and_bad_points_are_counted() {
        let mut s = Series::new(decls(), PluginLimits::default(), &[]);
        let mut cost = PluginCost::default();
        s.apply(vec![counter("a", 2.0), counter("a", 3.0), counter("b", 1.0)], &mut cost);
        let hist = |buckets: Vec<u64>, count| MetricPoint {
            metric: 1,
            labels: vec![],
            value: MetricValue::Histogram(HistogramDelta { buckets, count, sum: 12.0 }),
        };
        s.apply(
            vec![
                counter("a", f64::NAN),
                counter("a", -1.0),
                MetricPoint { metric: 9, labels: vec![], value: MetricValue::Counter(1.0) },
                MetricPoint { metric: 0, labels: vec![], value: MetricValue::Counter(1.0) },
                MetricPoint { metric: 0, labels: vec!["a".into()], value: MetricValue::Gauge(1.0) },
                hist(vec![1, 1], 2),
                hist(vec![1], 1),
                hist(vec![1, 1], 3),
            ],
            &mut cost,
        );
        assert_eq!(cost.invalid_points, 7);
        let m = s.metrics();
        assert_eq!(m.len(), 3);
        assert_eq!(m[0].value, ReportValue::Scalar { value: 5.0 });
        assert_eq!(m[0].labels["k"], "a");
        assert_eq!(m[1].value, ReportValue::Scalar { value: 1.0 });
        assert_eq!(
            m[2].value,
            ReportValue::Histogram { count: 2, sum: 12.0, bounds: vec![10.0], buckets: vec![1, 1] }
        );
    }

    #[test]
    fn a_delta_that_would_make_a_total_infinite_is_dropped_and_counted() {
        let mut s = Series::new(decls(), PluginLimits::default(), &[]);
        let mut cost = PluginCost::default();
        let hist = |sum| MetricPoint {
            metric: 1,
            labels: vec![],
            value: MetricValue::Histogram(HistogramDelta { buckets: vec![0, 1], count: 1, sum }),
        };
        for _ in 0..3 {
            s.apply(
                vec![counter("big", f64::MAX), counter("small", 1.0), hist(f64::MAX)],
                &mut cost,
            );
        }
        // The first of each fits; the next two would overflow and are dropped.
        assert_eq!(cost.non_finite_totals, 4, "{cost:?}");
        assert_eq!(cost.invalid_points, 0);
        let m = s.metrics();
        assert_eq!(m[0].value, ReportValue::Scalar { value: f64::MAX }, "the total stays");
        assert_eq!(m[1].value, ReportValue::Scalar { value: 3.0 }, "the neighbour is exact");
        assert_eq!(
            m[2].value,
            ReportValue::Histogram {
                count: 1,
                sum: f64::MAX,
                bounds: vec![10.0],
                buckets: vec![0, 1]
            },
            "a dropped histogram delta leaves count and buckets as they were too"
        );
        assert!(m.iter().all(|m| m.problem().is_none()));
        // A total near the top still takes deltas that fit.
        s.apply(vec![counter("big", 0.0), counter("big", -0.0)], &mut cost);
        assert_eq!(cost.non_finite_totals, 4);
    }

    #[test]
    fn points_of_a_denied_metric_are_dropped_first_and_counted() {
        let mut s = Series::new(decls(), PluginLimits::default(), &["c".to_string()]);
        let mut cost = PluginCost::default();
        let hist = MetricPoint {
            metric: 1,
            labels: vec![],
            value: MetricValue::Histogram(HistogramDelta {
                buckets: vec![1, 0],
                count: 1,
                sum: 2.0,
            }),
        };
        // A denied point counts as denied even when it is invalid too.
        s.apply(vec![counter("a", 2.0), counter("a", f64::NAN), hist], &mut cost);
        assert_eq!((cost.denied_points, cost.invalid_points), (2, 0));
        let m = s.metrics();
        assert_eq!(m.len(), 1);
        assert_eq!(m[0].name, "h", "the neighbour metric is kept");
    }

    #[test]
    fn label_sets_past_the_cap_fold_into_overflow() {
        let mut s = Series::new(decls(), PluginLimits::default(), &[]);
        let mut cost = PluginCost::default();
        let points = (0..1000 + 5).map(|i| counter(&i.to_string(), 1.0)).collect();
        s.apply(points, &mut cost);
        assert_eq!(cost.overflow_points, 5);
        let m = s.metrics();
        assert_eq!(m.len(), 1000 + 1);
        let overflow = m.iter().find(|m| m.labels["k"] == OVERFLOW_LABEL).expect("overflow series");
        assert_eq!(overflow.value, ReportValue::Scalar { value: 5.0 });
    }
}
