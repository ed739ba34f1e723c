//! The fleet as figures: instances active in a window by sonde version, OS
//! and arch; reports per hour; per plugin, the instances running it, those
//! that have it off (and who switched it off, and why) and its cost
//! percentiles; per metric, fleet totals by label.
//!
//! Both backends hand over the same rows ([`Store::fleet`]); the figures
//! are computed here, once. Everything is bounded: the window is at most
//! [`MAX_WINDOW`], at most [`MAX_FLEET_ROWS`] rows of each kind are read
//! (newest first; `truncated` says when the oldest were left out), and the
//! lists are capped ([`MAX_REASONS`], [`MAX_METRIC_GROUPS`]).
//!
//! ## Who switched a plugin off
//!
//! From each instance's latest report in the window: state `denied` is the
//! operator's manifest (`allow = false`); state `disabled` is the admin or a
//! policy rule when a `disable_plugin` for that plugin was delivered to the
//! instance (the latest one decides), else the host itself (its own cost
//! breaker, or another endpoint). `failed`, `refused` and `loading` are
//! counted as they are; `reasons` lists why, as the hosts wrote it.
//!
//! ## Cost percentiles
//!
//! One sample per instance: busy microseconds per event over the window
//! (the sum of the interval changes of `busy_us` over those of `events`),
//! the latest peak memory, and the failures in the window. Percentiles are
//! nearest-rank.
//!
//! ## Metric totals
//!
//! By origin, owner, name, kind, unit and labels: counters and histograms
//! add up their changes over the window (what the fleet counted in it;
//! histograms count observations); gauges add up each instance's latest
//! level. Series of other kinds are not totalled.
//!
//! ## k-anonymity (Dropsonde's rule)
//!
//! With `k` (what pages without the admin token and `export --public`
//! show), no figure covers fewer than `k` instances: groups (versions, OS,
//! arch, plugins, reasons, label sets) under `k` are folded into one
//! `other` group, and when `other` is still under `k` the smallest shown
//! groups join it until it is not (or, when the whole is under `k`,
//! nothing is shown). Counts under `k` inside a group are shown as `null`
//! ("fewer than k"); an hour with fewer than `k` instances reporting shows
//! `null`; percentiles need `k` samples and leave out p99 and the maximum,
//! which on a few instances are one instance's value. Instance ids never
//! appear in the figures.
//!
//! [`Store::fleet`]: crate::Store::fleet

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use serde::Serialize;
use sonde_core::Directive;
use uuid::Uuid;

use crate::store::{DirectiveSource, WindowRows};

/// The window figures cover when not told otherwise.
pub const DEFAULT_WINDOW: Duration = Duration::from_secs(24 * 3600);
/// The longest window: 31 days, 744 hourly buckets.
pub const MAX_WINDOW: Duration = Duration::from_secs(31 * 24 * 3600);
/// Rows of each kind (reports, plugin rows, metric rows, deliveries) read
/// for one set of figures: a few tens of MiB in memory at most. Past it
/// the oldest rows of the window are left out and `truncated` is set.
pub const MAX_FLEET_ROWS: u32 = 200_000;
/// Reasons listed per plugin, most common first.
pub const MAX_REASONS: usize = 10;
/// Metric groups (one label set of one metric) listed, most instances
/// first; the rest are counted in `metrics_left_out`.
pub const MAX_METRIC_GROUPS: usize = 1000;
/// The k of k-anonymity when not told otherwise.
pub const DEFAULT_K: u32 = 5;
/// The smallest k accepted: 1 would publish single instances.
pub const MIN_K: u32 = 2;

const HOUR_MS: i64 = 3_600_000;

/// The fleet's figures over a window.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Fleet {
    /// Start of the window, RFC 3339.
    pub since: String,
    /// End of the window, RFC 3339.
    pub until: String,
    /// `Some(k)`: k-anonymous figures (see the module documentation).
    pub k: Option<u32>,
    /// A row limit ([`MAX_FLEET_ROWS`]) was reached: the oldest rows of the
    /// window are not counted.
    pub truncated: bool,
    /// Instances that reported in the window (`null`: fewer than k).
    pub instances: Option<u64>,
    /// Reports received in the window (`null`: from fewer than k instances).
    pub reports: Option<u64>,
    /// Active instances by the sonde version of their latest report.
    pub by_version: Vec<Group>,
    /// Active instances by OS.
    pub by_os: Vec<Group>,
    /// Active instances by CPU architecture.
    pub by_arch: Vec<Group>,
    /// Every hour of the window, oldest first.
    pub reports_per_hour: Vec<Hour>,
    /// Plugins, most instances first.
    pub plugins: Vec<PluginFigures>,
    /// Metric totals, most instances first.
    pub metrics: Vec<MetricTotal>,
    /// Metric groups past [`MAX_METRIC_GROUPS`], not listed.
    pub metrics_left_out: u64,
}

/// Instances with one value of a fact.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Group {
    /// The value (empty for `other`).
    pub key: String,
    /// The groups folded together for k-anonymity.
    pub other: bool,
    /// Instances in the group.
    pub instances: u64,
}

/// One hour of the window.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Hour {
    /// Its start, RFC 3339.
    pub start: String,
    /// Reports received in it (`null`: from fewer than k instances).
    pub reports: Option<u64>,
    /// Instances that reported in it (`null`: fewer than k).
    pub instances: Option<u64>,
}

/// One plugin across the fleet.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct PluginFigures {
    /// Its name (empty for `other`).
    pub plugin: String,
    /// The plugins folded together for k-anonymity.
    pub other: bool,
    /// Instances whose latest report lists it.
    pub instances: u64,
    /// Instances by the plugin's state (`running`, `disabled`, `denied`,
    /// `failed`, `refused`, `loading`, or a newer host's word); `null`:
    /// fewer than k.
    pub states: BTreeMap<String, Option<u64>>,
    /// Who switched it off, where it is `disabled` or `denied`.
    pub disabled_by: DisabledBy,
    /// Why it is not running, as the hosts wrote it, most instances first.
    pub reasons: Vec<Reason>,
    /// Busy microseconds per event, one sample per instance with events.
    pub busy_us_per_event: Option<Percentiles>,
    /// Peak memory in bytes, one sample per instance.
    pub peak_memory_bytes: Option<Percentiles>,
    /// Failed calls in the window, one sample per instance.
    pub failures: Option<Percentiles>,
}

/// Instances where a plugin is off, by who switched it off (`null`: fewer
/// than k).
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
pub struct DisabledBy {
    /// A directive posted by the collector's admin.
    pub admin: Option<u64>,
    /// A directive issued by a cost rule of the policy.
    pub rule: Option<u64>,
    /// The operator's manifest (`allow = false`: state `denied`).
    pub operator: Option<u64>,
    /// The host itself (its cost breaker) or another endpoint.
    pub host: Option<u64>,
}

/// A reason a plugin is not running.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Reason {
    /// As the host wrote it (empty for `other`).
    pub reason: String,
    /// The reasons folded together for k-anonymity.
    pub other: bool,
    /// Instances giving it.
    pub instances: u64,
}

/// Nearest-rank percentiles of one sample per instance.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Percentiles {
    /// Samples (instances).
    pub samples: u64,
    /// Median.
    pub p50: f64,
    /// 90th percentile.
    pub p90: f64,
    /// 99th percentile (`null` in k-anonymous figures).
    pub p99: Option<f64>,
    /// Largest sample (`null` in k-anonymous figures).
    pub max: Option<f64>,
}

/// A metric's fleet total for one label set.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct MetricTotal {
    /// `plugin` or `source`.
    pub origin: String,
    /// The plugin's or source's name.
    pub owner: String,
    /// The metric's name.
    pub name: String,
    /// `counter`, `gauge` or `histogram`.
    pub kind: String,
    /// Its unit.
    pub unit: String,
    /// The label set (empty for `other`).
    pub labels: BTreeMap<String, String>,
    /// The label sets folded together for k-anonymity.
    pub other: bool,
    /// Instances reporting it.
    pub instances: u64,
    /// Counters and histograms: the change over the window, summed;
    /// gauges: the latest levels, summed.
    pub total: f64,
}

/// Something grouped by instances, that can absorb another group.
trait Grouped {
    fn members(&self) -> &BTreeSet<Uuid>;
    fn absorb(&mut self, other: Self);
}

/// Groups (key, value), sorted by instances (most first) then key; with
/// `k`, folded as the module documentation says. The bool marks `other`.
fn fold<T: Grouped + Default>(groups: Vec<(String, T)>, k: Option<u32>) -> Vec<(String, bool, T)> {
    let mut groups = groups;
    groups.sort_by(|a, b| b.1.members().len().cmp(&a.1.members().len()).then(a.0.cmp(&b.0)));
    let Some(k) = k.map(|k| k as usize) else {
        return groups.into_iter().map(|(key, g)| (key, false, g)).collect();
    };
    let mut keep: Vec<(String, T)> = Vec::with_capacity(groups.len());
    let mut other: Option<T> = None;
    for (key, g) in groups {
        if g.members().len() >= k {
            keep.push((key, g));
        } else {
            other.get_or_insert_with(T::default).absorb(g);
        }
    }
    let mut out: Vec<(String, bool, T)> = Vec::new();
    if let Some(mut other) = other {
        while other.members().len() < k {
            match keep.pop() {
                Some((_, g)) => other.absorb(g),
                None => break,
            }
        }
        out.extend(keep.into_iter().map(|(key, g)| (key, false, g)));
        if other.members().len() >= k {
            out.push((String::new(), true, other));
        }
    } else {
        out.extend(keep.into_iter().map(|(key, g)| (key, false, g)));
    }
    out
}

/// A count, or `None` when k-anonymity hides it (0 < n < k).
fn count(n: usize, k: Option<u32>) -> Option<u64> {
    match k {
        Some(k) if n > 0 && n < k as usize => None,
        _ => Some(n as u64),
    }
}

#[derive(Debug, Default)]
struct Members(BTreeSet<Uuid>);

impl Grouped for Members {
    fn members(&self) -> &BTreeSet<Uuid> {
        &self.0
    }
    fn absorb(&mut self, other: Members) {
        self.0.extend(other.0);
    }
}

#[derive(Debug, Default)]
struct PluginAcc {
    instances: BTreeSet<Uuid>,
    states: BTreeMap<String, BTreeSet<Uuid>>,
    by: [BTreeSet<Uuid>; 4],
    reasons: BTreeMap<String, BTreeSet<Uuid>>,
    busy_per_event: Vec<f64>,
    peak_memory: Vec<f64>,
    failures: Vec<f64>,
}

impl Grouped for PluginAcc {
    fn members(&self) -> &BTreeSet<Uuid> {
        &self.instances
    }
    fn absorb(&mut self, o: PluginAcc) {
        self.instances.extend(o.instances);
        for (s, m) in o.states {
            self.states.entry(s).or_default().extend(m);
        }
        for (mine, theirs) in self.by.iter_mut().zip(o.by) {
            mine.extend(theirs);
        }
        for (r, m) in o.reasons {
            self.reasons.entry(r).or_default().extend(m);
        }
        self.busy_per_event.extend(o.busy_per_event);
        self.peak_memory.extend(o.peak_memory);
        self.failures.extend(o.failures);
    }
}

#[derive(Debug, Default)]
struct MetricAcc {
    instances: BTreeSet<Uuid>,
    total: f64,
}

impl Grouped for MetricAcc {
    fn members(&self) -> &BTreeSet<Uuid> {
        &self.instances
    }
    fn absorb(&mut self, o: MetricAcc) {
        self.instances.extend(o.instances);
        self.total += o.total;
    }
}

/// Per (plugin, instance): the sums over the window.
#[derive(Debug, Default, Clone, Copy)]
struct CostSums {
    events: i64,
    busy_us: i64,
    failures: i64,
    peak_memory: i64,
}

fn percentiles(mut samples: Vec<f64>, k: Option<u32>) -> Option<Percentiles> {
    if samples.is_empty() || k.is_some_and(|k| samples.len() < k as usize) {
        return None;
    }
    samples.sort_by(f64::total_cmp);
    let n = samples.len();
    let at = |q: f64| samples[((q * n as f64).ceil() as usize).clamp(1, n) - 1];
    let public = k.is_some();
    Some(Percentiles {
        samples: n as u64,
        p50: at(0.5),
        p90: at(0.9),
        p99: (!public).then(|| at(0.99)),
        max: (!public).then(|| samples[n - 1]),
    })
}

fn groups_of(members: BTreeMap<String, BTreeSet<Uuid>>, k: Option<u32>) -> Vec<Group> {
    let groups = members.into_iter().map(|(key, m)| (key, Members(m))).collect();
    fold(groups, k)
        .into_iter()
        .map(|(key, other, m)| Group { key, other, instances: m.0.len() as u64 })
        .collect()
}

fn rfc3339_ms(ms: i64) -> String {
    let t = UNIX_EPOCH + Duration::from_millis(u64::try_from(ms).unwrap_or(0));
    humantime::format_rfc3339_seconds(t).to_string()
}

fn ms_of(t: SystemTime) -> i64 {
    t.duration_since(UNIX_EPOCH).map_or(0, |d| i64::try_from(d.as_millis()).unwrap_or(i64::MAX))
}

impl Fleet {
    /// The figures of `rows` (received in `since..=until`); with `k`,
    /// k-anonymous.
    pub(crate) fn from_rows(
        rows: &WindowRows,
        since: SystemTime,
        until: SystemTime,
        k: Option<u32>,
    ) -> Fleet {
        let k = k.map(|k| k.max(MIN_K));
        // Each instance's latest report (rows are newest first).
        let mut latest: HashMap<Uuid, &crate::store::ReportFact> = HashMap::new();
        for r in &rows.reports {
            latest.entry(r.instance_id).or_insert(r);
        }
        let mut versions: BTreeMap<String, BTreeSet<Uuid>> = BTreeMap::new();
        let mut oses: BTreeMap<String, BTreeSet<Uuid>> = BTreeMap::new();
        let mut arches: BTreeMap<String, BTreeSet<Uuid>> = BTreeMap::new();
        for (id, r) in &latest {
            versions.entry(r.sonde_version.clone()).or_default().insert(*id);
            oses.entry(r.os.clone()).or_default().insert(*id);
            arches.entry(r.arch.clone()).or_default().insert(*id);
        }
        let shown = count(latest.len(), k);

        // Reports per hour, every hour of the window.
        let (first, last) = (ms_of(since).div_euclid(HOUR_MS), ms_of(until).div_euclid(HOUR_MS));
        let mut hours: BTreeMap<i64, (u64, BTreeSet<Uuid>)> =
            (first..=last).map(|h| (h, (0, BTreeSet::new()))).collect();
        for r in &rows.reports {
            if let Some((n, m)) = hours.get_mut(&r.received_ms.div_euclid(HOUR_MS)) {
                *n += 1;
                m.insert(r.instance_id);
            }
        }
        let reports_per_hour = hours
            .into_iter()
            .map(|(h, (n, m))| {
                let shown = count(m.len(), k).is_some();
                Hour {
                    start: rfc3339_ms(h * HOUR_MS),
                    reports: shown.then_some(n),
                    instances: shown.then_some(m.len() as u64),
                }
            })
            .collect();

        Fleet {
            since: rfc3339_ms(ms_of(since)),
            until: rfc3339_ms(ms_of(until)),
            k,
            truncated: rows.truncated,
            instances: shown,
            reports: shown.map(|_| rows.reports.len() as u64),
            by_version: groups_of(versions, k),
            by_os: groups_of(oses, k),
            by_arch: groups_of(arches, k),
            reports_per_hour,
            plugins: plugins(rows, &latest, k),
            metrics: Vec::new(),
            metrics_left_out: 0,
        }
        .with_metrics(rows, k)
    }

    fn with_metrics(mut self, rows: &WindowRows, k: Option<u32>) -> Fleet {
        type Metric = (String, String, String, String, String);
        let mut by_metric: BTreeMap<Metric, BTreeMap<String, MetricAcc>> = BTreeMap::new();
        let mut gauge_seen: BTreeSet<(Uuid, Metric, String)> = BTreeSet::new();
        for m in &rows.metrics {
            let labels: BTreeMap<String, String> =
                serde_json::from_str(&m.labels).unwrap_or_default();
            let labels = serde_json::to_string(&labels).unwrap_or_default();
            let key: Metric =
                (m.origin.clone(), m.owner.clone(), m.name.clone(), m.kind.clone(), m.unit.clone());
            let add = match m.kind.as_str() {
                "counter" | "histogram" => m.delta.unwrap_or(0.0),
                "gauge" => {
                    // Newest first: the first row of an instance is its latest.
                    if !gauge_seen.insert((m.instance_id, key.clone(), labels.clone())) {
                        continue;
                    }
                    m.value.unwrap_or(0.0)
                }
                _ => continue,
            };
            let acc = by_metric.entry(key).or_default().entry(labels).or_default();
            acc.instances.insert(m.instance_id);
            acc.total += add;
        }
        let mut totals = Vec::new();
        for ((origin, owner, name, kind, unit), groups) in by_metric {
            for (labels, other, acc) in fold(groups.into_iter().collect(), k) {
                totals.push(MetricTotal {
                    origin: origin.clone(),
                    owner: owner.clone(),
                    name: name.clone(),
                    kind: kind.clone(),
                    unit: unit.clone(),
                    labels: if other {
                        BTreeMap::new()
                    } else {
                        serde_json::from_str(&labels).unwrap_or_default()
                    },
                    other,
                    instances: acc.instances.len() as u64,
                    total: acc.total,
                });
            }
        }
        totals.sort_by_key(|t| std::cmp::Reverse(t.instances));
        self.metrics_left_out = totals.len().saturating_sub(MAX_METRIC_GROUPS) as u64;
        totals.truncate(MAX_METRIC_GROUPS);
        self.metrics = totals;
        self
    }
}

fn plugins(
    rows: &WindowRows,
    latest: &HashMap<Uuid, &crate::store::ReportFact>,
    k: Option<u32>,
) -> Vec<PluginFigures> {
    // The latest disable of each (instance, plugin) delivered.
    let mut disabled_by: HashMap<(Uuid, &str), DirectiveSource> = HashMap::new();
    for d in &rows.disables {
        if let Directive::DisablePlugin { plugin, .. } = &d.directive {
            disabled_by.entry((d.instance_id, plugin.as_str())).or_insert(d.source);
        }
    }
    let mut sums: BTreeMap<(&str, Uuid), CostSums> = BTreeMap::new();
    let mut accs: BTreeMap<String, PluginAcc> = BTreeMap::new();
    for p in &rows.plugins {
        // Newest first: an instance's first row has its latest peak memory.
        let s = sums
            .entry((p.plugin.as_str(), p.instance_id))
            .or_insert(CostSums { peak_memory: p.peak_memory_bytes, ..CostSums::default() });
        s.events += p.d_events.unwrap_or(0);
        s.busy_us += p.d_busy_us.unwrap_or(0);
        s.failures += p.d_failures.unwrap_or(0);
        // Its state: from the instance's latest report only.
        if latest.get(&p.instance_id).is_none_or(|r| r.report != p.report) {
            continue;
        }
        let acc = accs.entry(p.plugin.clone()).or_default();
        acc.instances.insert(p.instance_id);
        acc.states.entry(p.state.clone()).or_default().insert(p.instance_id);
        let who = match p.state.as_str() {
            "denied" => Some(2),
            "disabled" => Some(match disabled_by.get(&(p.instance_id, p.plugin.as_str())) {
                Some(DirectiveSource::Admin) => 0,
                Some(DirectiveSource::Rule) => 1,
                None => 3,
            }),
            _ => None,
        };
        if let Some(i) = who {
            acc.by[i].insert(p.instance_id);
        }
        if let Some(reason) = p.reason.as_ref().filter(|r| !r.is_empty() && p.state != "running") {
            acc.reasons.entry(reason.clone()).or_default().insert(p.instance_id);
        }
    }
    for ((plugin, instance), s) in sums {
        let Some(acc) = accs.get_mut(plugin).filter(|a| a.instances.contains(&instance)) else {
            continue;
        };
        if s.events > 0 {
            acc.busy_per_event.push(s.busy_us as f64 / s.events as f64);
        }
        acc.peak_memory.push(s.peak_memory as f64);
        acc.failures.push(s.failures as f64);
    }
    fold(accs.into_iter().collect(), k)
        .into_iter()
        .map(|(plugin, other, acc)| {
            let reasons = acc.reasons.into_iter().map(|(r, m)| (r, Members(m))).collect();
            let mut reasons: Vec<Reason> = fold(reasons, k)
                .into_iter()
                .map(|(reason, other, m)| Reason { reason, other, instances: m.0.len() as u64 })
                .collect();
            reasons.truncate(MAX_REASONS);
            let [admin, rule, operator, host] = acc.by.map(|m| count(m.len(), k));
            PluginFigures {
                plugin,
                other,
                instances: acc.instances.len() as u64,
                states: acc.states.into_iter().map(|(s, m)| (s, count(m.len(), k))).collect(),
                disabled_by: DisabledBy { admin, rule, operator, host },
                reasons,
                busy_us_per_event: percentiles(acc.busy_per_event, k),
                peak_memory_bytes: percentiles(acc.peak_memory, k),
                failures: percentiles(acc.failures, k),
            }
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn members(n: u128) -> Members {
        Members((0..n).map(|i| Uuid::from_u128(i + (n << 64))).collect())
    }

    fn sizes(groups: &[(String, bool, Members)]) -> Vec<(String, bool, usize)> {
        groups.iter().map(|(k, o, m)| (k.clone(), *o, m.0.len())).collect()
    }

    #[test]
    fn small_groups_are_folded_into_other_and_other_grows_until_it_reaches_k() {
        let g =
            vec![("a".to_string(), members(9)), ("b".into(), members(2)), ("c".into(), members(1))];
        // 2 + 1 = 3 < 5: the smallest kept group (a) would have to join, so
        // everything becomes `other`.
        let folded = fold(g, Some(5));
        assert_eq!(sizes(&folded), [(String::new(), true, 12)]);
        let g = vec![
            ("a".to_string(), members(9)),
            ("b".into(), members(6)),
            ("c".into(), members(4)),
            ("d".into(), members(3)),
        ];
        let folded = fold(g, Some(5));
        assert_eq!(
            sizes(&folded),
            [("a".into(), false, 9), ("b".into(), false, 6), (String::new(), true, 7)]
        );
        // The whole under k: nothing is shown.
        assert!(fold(vec![("a".to_string(), members(4))], Some(5)).is_empty());
        // Without k, everything, most instances first.
        let g = vec![("x".to_string(), members(1)), ("y".into(), members(3))];
        assert_eq!(sizes(&fold(g, None)), [("y".into(), false, 3), ("x".into(), false, 1)]);
    }

    #[test]
    fn percentiles_are_nearest_rank_and_k_anonymous_ones_leave_out_the_tail() {
        let samples: Vec<f64> = (1..=100).map(f64::from).collect();
        let p = percentiles(samples.clone(), None).expect("samples");
        assert_eq!((p.p50, p.p90, p.p99, p.max), (50.0, 90.0, Some(99.0), Some(100.0)));
        let p = percentiles(samples, Some(5)).expect("samples");
        assert_eq!((p.p99, p.max), (None, None));
        assert_eq!(percentiles(vec![1.0, 2.0], Some(5)), None);
    }
}
