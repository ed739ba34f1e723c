//! sonde's own numbers in a report, named once for every view that shows
//! them beside the plugins' metrics: the `sonde` scope of an OTLP export
//! (`upload/otlp.rs`) and the local Prometheus view (`prometheus.rs`). A
//! dashboard sees drops, denials and failures as plainly as a report does.

use sonde_core::{PluginState, Report};

/// One of the runtime's own values.
#[derive(Debug, Clone, PartialEq)]
pub(crate) struct Own<'a> {
    /// Dotted name, e.g. `sonde.events.recorded`.
    pub(crate) name: &'static str,
    /// Unit, UCUM-style as OTLP writes it.
    pub(crate) unit: &'static str,
    /// What it counts, for a Prometheus `# HELP` line.
    pub(crate) help: &'static str,
    /// The one attribute, if any: `sonde.plugin` or `sonde.source` and its
    /// name.
    pub(crate) label: Option<(&'static str, &'a str)>,
    /// The value, cumulative since the runtime started for counters.
    pub(crate) value: u64,
    /// A monotonic count (else a gauge).
    pub(crate) counter: bool,
}

/// The attribute naming a plugin.
pub(crate) const PLUGIN_ATTRIBUTE: &str = "sonde.plugin";
/// The attribute naming an application source.
pub(crate) const SOURCE_ATTRIBUTE: &str = "sonde.source";

fn count<'a>(
    name: &'static str,
    unit: &'static str,
    help: &'static str,
    label: Option<(&'static str, &'a str)>,
    value: u64,
) -> Own<'a> {
    Own { name, unit, help, label, value, counter: true }
}

/// Every own value of `report`: the event ring, delivery, each plugin's
/// cost and state, each application source's overflow.
pub(crate) fn own_metrics(report: &Report) -> Vec<Own<'_>> {
    let b = &report.buffer;
    let d = &report.delivery;
    let mut out = vec![
        count("sonde.events.recorded", "{event}", "Events handed to record().", None, b.recorded),
        count(
            "sonde.events.processed",
            "{event}",
            "Events dispatched to plugins.",
            None,
            b.processed,
        ),
        count(
            "sonde.events.dropped",
            "{event}",
            "Events dropped: the ring was full.",
            None,
            b.dropped,
        ),
        count(
            "sonde.events.truncated",
            "{event}",
            "Events whose text was cut to fit a ring slot.",
            None,
            b.truncated,
        ),
        count(
            "sonde.delivery.sent",
            "{report}",
            "Reports the endpoint acknowledged.",
            None,
            d.sent,
        ),
        count(
            "sonde.delivery.spool_dropped",
            "{report}",
            "Reports dropped: the spool was over its quota.",
            None,
            d.spool_dropped,
        ),
        count(
            "sonde.delivery.rejected",
            "{report}",
            "Reports the endpoint refused.",
            None,
            d.rejected,
        ),
        count(
            "sonde.delivery.failed_attempts",
            "{request}",
            "Upload attempts that failed and will be retried.",
            None,
            d.failed_attempts,
        ),
        count(
            "sonde.delivery.rejected_points",
            "{point}",
            "Data points an OTLP endpoint rejected.",
            None,
            d.rejected_points,
        ),
    ];
    for p in &report.plugins {
        let label = Some((PLUGIN_ATTRIBUTE, p.name.as_str()));
        let c = &p.cost;
        let dropped = c.invalid_points + c.excess_points + c.overflow_points + c.non_finite_totals;
        out.extend([
            count(
                "sonde.plugin.events",
                "{event}",
                "Events delivered to the plugin.",
                label,
                c.events,
            ),
            count(
                "sonde.plugin.busy",
                "us",
                "Time spent inside the plugin, microseconds.",
                label,
                c.busy_us,
            ),
            count("sonde.plugin.failures", "{failure}", "Failed plugin calls.", label, c.failures),
            count(
                "sonde.plugin.points_dropped",
                "{point}",
                "Metric points dropped: invalid, excess, overflowed or non-finite.",
                label,
                dropped,
            ),
            count(
                "sonde.plugin.points_denied",
                "{point}",
                "Metric points of metrics the operator denies (deny_metrics).",
                label,
                c.denied_points,
            ),
            Own {
                name: "sonde.plugin.running",
                unit: "1",
                help: "1 while the plugin is running, else 0.",
                label,
                value: u64::from(p.state == PluginState::Running),
                counter: false,
            },
        ]);
    }
    for s in &report.sources {
        out.push(count(
            "sonde.source.overflow",
            "{series}",
            "Series folded into an application source's overflow series.",
            Some((SOURCE_ATTRIBUTE, s.name.as_str())),
            s.overflow_series,
        ));
    }
    out
}
