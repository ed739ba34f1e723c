//! Per-plugin resource limits: the `[plugin.limits]` table.
//!
//! ```toml
//! [plugin.limits]
//! memory_mb = 64                 # linear memory per instance
//! call_timeout_ms = 200          # one call (a batch, a collect) at most
//! cpu_ms_per_sec = 50            # rolling CPU budget (busy time per second of wall time)
//! over_budget_secs = 60          # over budget this long: disabled locally, reason "expensive"
//! disable_secs = 3600            #   for this long
//! max_failures = 5               # failures within failure_window_secs: the plugin is `failed`
//! failure_window_secs = 300
//! max_points_per_collect = 10000
//! max_series_per_metric = 1000   # label cardinality; the excess folds into an overflow series
//! max_label_len = 128
//! log_lines_per_minute = 10
//! file_mb = 32                   # largest plugin file read
//! compile_timeout_secs = 120     # compiling it (a child process, killed past this)
//! compile_memory_mb = 2048       # memory the compiler may use for it
//! ```
//!
//! Every value has a safe default and a hard range; a plugin cannot be given
//! more than the ranges allow, so a typo cannot hand a plugin the host.

use std::ops::RangeInclusive;

use serde::{Deserialize, Serialize};
use toml::Spanned;

/// The limits one plugin runs under.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
pub struct PluginLimits {
    /// Linear memory per instance, bytes. Default 64 MiB: a collector keeps
    /// counters, not data; range 1 MiB..=1 GiB.
    pub memory_bytes: u64,
    /// Wall time one call may take, ms. Default 200 ms: a 1024-event batch
    /// takes microseconds; range 10..=10000.
    pub call_timeout_ms: u64,
    /// Rolling CPU budget, ms of plugin time per second of wall time. Default
    /// 50 (5 % of a core); range 1..=1000.
    pub cpu_ms_per_sec: u64,
    /// How long a plugin may stay over its CPU budget before the local
    /// breaker disables it. Default 60 s; range 1..=86400.
    pub over_budget_secs: u64,
    /// How long the breaker disables it. Default 1 h; range 60..=30 days.
    pub disable_secs: u64,
    /// Failures within `failure_window_secs` after which the plugin is
    /// `failed` for good. Default 5; range 1..=1000.
    pub max_failures: u32,
    /// The failure window. Default 300 s; range 1..=86400.
    pub failure_window_secs: u64,
    /// Metric points one `collect` may return. Default 10 000; range 1..=1 000 000.
    pub max_points_per_collect: u32,
    /// Distinct label sets per metric. Default 1000; range 1..=100 000.
    pub max_series_per_metric: u32,
    /// Longest label value, bytes. Default 128; range 1..=4096.
    pub max_label_len: u32,
    /// Log lines per minute. Default 10; range 0..=10 000.
    pub log_lines_per_minute: u32,
    /// Largest plugin file read, bytes. Default 32 MiB: a Rust collector is
    /// tens of KB, a JavaScript or Python one 12-18 MB; range 1 MiB..=256 MiB.
    pub file_bytes: u64,
    /// Wall time compiling the plugin may take, seconds; past it the
    /// compiler process is killed and the plugin refused. Default 120 s:
    /// measured here, a 12 MB JavaScript collector compiles in 18 s (release
    /// build; 25-29 s for a whole debug `sonde check`), an 18 MB Python one
    /// in 15 s; range 1..=600.
    pub compile_timeout_secs: u64,
    /// Memory the compiler process may add while compiling the plugin,
    /// bytes; past it the compile fails and the plugin is refused. Default
    /// 2 GiB: those two collectors add 307-327 MB (the JavaScript one fails
    /// at 256 MiB, loads at 384); range 16 MiB..=16 GiB.
    pub compile_memory_bytes: u64,
}

impl Default for PluginLimits {
    fn default() -> Self {
        PluginLimits {
            memory_bytes: 64 << 20,
            call_timeout_ms: 200,
            cpu_ms_per_sec: 50,
            over_budget_secs: 60,
            disable_secs: 3600,
            max_failures: 5,
            failure_window_secs: 300,
            max_points_per_collect: 10_000,
            max_series_per_metric: 1000,
            max_label_len: 128,
            log_lines_per_minute: 10,
            file_bytes: 32 << 20,
            compile_timeout_secs: 120,
            compile_memory_bytes: 2048 << 20,
        }
    }
}

#[derive(Deserialize, Default)]
#[serde(deny_unknown_fields)]
pub(crate) struct RawLimits {
    memory_mb: Option<Spanned<u64>>,
    call_timeout_ms: Option<Spanned<u64>>,
    cpu_ms_per_sec: Option<Spanned<u64>>,
    over_budget_secs: Option<Spanned<u64>>,
    disable_secs: Option<Spanned<u64>>,
    max_failures: Option<Spanned<u64>>,
    failure_window_secs: Option<Spanned<u64>>,
    max_points_per_collect: Option<Spanned<u64>>,
    max_series_per_metric: Option<Spanned<u64>>,
    max_label_len: Option<Spanned<u64>>,
    log_lines_per_minute: Option<Spanned<u64>>,
    file_mb: Option<Spanned<u64>>,
    compile_timeout_secs: Option<Spanned<u64>>,
    compile_memory_mb: Option<Spanned<u64>>,
}

/// A value out of its range: the byte offset, the key and the message.
pub(crate) struct OutOfRange {
    pub(crate) offset: usize,
    pub(crate) key: &'static str,
    pub(crate) message: String,
}

fn pick(
    v: &Option<Spanned<u64>>,
    key: &'static str,
    range: RangeInclusive<u64>,
    default: u64,
) -> Result<u64, OutOfRange> {
    let Some(v) = v else { return Ok(default) };
    if !range.contains(v.get_ref()) {
        return Err(OutOfRange {
            offset: v.span().start,
            key,
            message: format!("{} is outside {}..={}", v.get_ref(), range.start(), range.end()),
        });
    }
    Ok(*v.get_ref())
}

impl RawLimits {
    /// The limits with defaults filled in; every value inside its range.
    pub(crate) fn resolve(&self) -> Result<PluginLimits, OutOfRange> {
        let d = PluginLimits::default();
        // Each range below fits its field's type.
        Ok(PluginLimits {
            memory_bytes: pick(&self.memory_mb, "memory_mb", 1..=1024, d.memory_bytes >> 20)? << 20,
            call_timeout_ms: pick(
                &self.call_timeout_ms,
                "call_timeout_ms",
                10..=10_000,
                d.call_timeout_ms,
            )?,
            cpu_ms_per_sec: pick(
                &self.cpu_ms_per_sec,
                "cpu_ms_per_sec",
                1..=1000,
                d.cpu_ms_per_sec,
            )?,
            over_budget_secs: pick(
                &self.over_budget_secs,
                "over_budget_secs",
                1..=86_400,
                d.over_budget_secs,
            )?,
            disable_secs: pick(
                &self.disable_secs,
                "disable_secs",
                60..=30 * 86_400,
                d.disable_secs,
            )?,
            max_failures: pick(&self.max_failures, "max_failures", 1..=1000, d.max_failures.into())?
                as u32,
            failure_window_secs: pick(
                &self.failure_window_secs,
                "failure_window_secs",
                1..=86_400,
                d.failure_window_secs,
            )?,
            max_points_per_collect: pick(
                &self.max_points_per_collect,
                "max_points_per_collect",
                1..=1_000_000,
                d.max_points_per_collect.into(),
            )? as u32,
            max_series_per_metric: pick(
                &self.max_series_per_metric,
                "max_series_per_metric",
                1..=100_000,
                d.max_series_per_metric.into(),
            )? as u32,
            max_label_len: pick(
                &self.max_label_len,
                "max_label_len",
                1..=4096,
                d.max_label_len.into(),
            )? as u32,
            log_lines_per_minute: pick(
                &self.log_lines_per_minute,
                "log_lines_per_minute",
                0..=10_000,
                d.log_lines_per_minute.into(),
            )? as u32,
            file_bytes: pick(&self.file_mb, "file_mb", 1..=256, d.file_bytes >> 20)? << 20,
            compile_timeout_secs: pick(
                &self.compile_timeout_secs,
                "compile_timeout_secs",
                1..=600,
                d.compile_timeout_secs,
            )?,
            compile_memory_bytes: pick(
                &self.compile_memory_mb,
                "compile_memory_mb",
                16..=16_384,
                d.compile_memory_bytes >> 20,
            )? << 20,
        })
    }
}
