//! Metrics the host application records itself, beside the plugins: a
//! [`Source`] attached with [`Telemetry::attach`](crate::Telemetry::attach)
//! is read when a report is built. Its series reach reports only when the
//! operator's manifest says `app_metrics = true`.

use sonde_core::Metric;

/// Most sources one runtime takes.
pub const MAX_SOURCES: usize = 8;

/// A source of application metrics (e.g. the `sonde-metrics` bridge).
pub trait Source: Send + Sync + std::fmt::Debug + 'static {
    /// The series now, cumulative, and how many registrations were folded
    /// into overflow series by the source's own cardinality cap.
    fn snapshot(&self) -> (Vec<Metric>, u64);

    /// Values the source refused since it started because a report could
    /// not carry them (NaN, infinities, an observation that would make a
    /// histogram's sum infinite), reported as `dropped_values`. Series a
    /// source returns with such a value anyway are left out of the report
    /// and counted as its `invalid_series`. Zero unless the source counts.
    fn dropped_values(&self) -> u64 {
        0
    }
}
