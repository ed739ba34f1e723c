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
}
