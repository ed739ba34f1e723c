//! Retention: pruning old reports (and the rows derived from them) on a
//! schedule, counted in the collector's own metrics.
//!
//! `--retain 30d` deletes reports received longer ago than that, with their
//! plugin and metric rows, and instances not seen since. `--max-db-size`
//! (SQLite only) then deletes the oldest reports until the data the file
//! holds is under the bound (SQLite reuses the freed pages; the file itself
//! does not shrink). Every `--prune-every` the collector prunes once; on
//! PostgreSQL one replica at a time (a transaction-level advisory lock: the
//! others skip that round). Directives and their deliveries are kept: a
//! returning instance must not receive a directive twice.
//!
//! What each round pruned is added to the counters served at `GET /metrics`
//! ([`crate::stats`]).

use std::sync::Arc;
use std::time::{Duration, SystemTime};

use crate::stats::Stats;
use crate::store::Store;

/// Shortest `--retain`: an hour. `m` is minutes and `M` months in a
/// duration; a typo should not empty the database.
pub const MIN_RETAIN: Duration = Duration::from_secs(3600);
/// Smallest `--max-db-size`: 1 MiB.
pub const MIN_DB_SIZE: u64 = 1024 * 1024;
/// How often pruning runs when `--prune-every` is not given.
pub const DEFAULT_PRUNE_EVERY: Duration = Duration::from_secs(600);
/// Reports deleted per statement, so that a large prune does not hold
/// the database for long in one go.
pub const PRUNE_CHUNK: i64 = 2000;

/// What to keep.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct Retention {
    /// Reports older than this (by `received_at`) are deleted.
    pub max_age: Option<Duration>,
    /// SQLite: the oldest reports are deleted while the data is over this
    /// many bytes.
    pub max_bytes: Option<u64>,
}

impl Retention {
    /// Whether there is anything to prune by.
    pub fn is_set(&self) -> bool {
        self.max_age.is_some() || self.max_bytes.is_some()
    }
}

/// What one round pruned.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct Pruned {
    /// Reports deleted for their age.
    pub reports: u64,
    /// Reports deleted for the size bound.
    pub by_size: u64,
    /// Instances deleted (not seen within the retention).
    pub instances: u64,
    /// Another replica was pruning: this round did nothing.
    pub skipped: bool,
}

/// Reads a size such as `512MiB`, `2GiB`, `1GB` or `1048576` (bytes).
pub fn parse_size(text: &str) -> Result<u64, String> {
    let t = text.trim();
    let split = t.find(|c: char| !c.is_ascii_digit()).unwrap_or(t.len());
    let (digits, unit) = t.split_at(split);
    let n: u64 = digits.parse().map_err(|_| format!("`{text}` is not a size such as 512MiB"))?;
    let mult: u64 = match unit.trim().to_ascii_lowercase().as_str() {
        "" | "b" => 1,
        "kb" => 1000,
        "kib" | "k" => 1 << 10,
        "mb" => 1000 * 1000,
        "mib" | "m" => 1 << 20,
        "gb" => 1000 * 1000 * 1000,
        "gib" | "g" => 1 << 30,
        "tb" => 1000 * 1000 * 1000 * 1000,
        "tib" | "t" => 1 << 40,
        other => return Err(format!("unknown size unit `{other}` (use B, KiB, MiB, GiB, TiB)")),
    };
    n.checked_mul(mult).ok_or_else(|| format!("`{text}` is too large"))
}

/// Prunes once now and then every `every`, for as long as the runtime runs.
/// Failures are counted and logged (a warning for the first of a streak,
/// then quiet until a round succeeds).
pub fn spawn(
    store: Store,
    retention: Retention,
    every: Duration,
    stats: Arc<Stats>,
) -> tokio::task::JoinHandle<()> {
    tokio::spawn(async move {
        let mut ticks = tokio::time::interval(every);
        ticks.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        let mut failing = false;
        loop {
            ticks.tick().await;
            match store.prune(&retention, SystemTime::now()).await {
                Ok(p) => {
                    stats.pruned(&p);
                    failing = false;
                    if p.reports + p.by_size + p.instances > 0 {
                        tracing::info!(
                            reports = p.reports,
                            by_size = p.by_size,
                            instances = p.instances,
                            "pruned"
                        );
                    }
                }
                Err(e) => {
                    stats.prune_failed();
                    if !failing {
                        tracing::warn!("pruning failed (retried every {every:?}): {e}");
                    }
                    failing = true;
                }
            }
        }
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sizes_read_with_their_units() {
        assert_eq!(parse_size("512MiB"), Ok(512 << 20));
        assert_eq!(parse_size("2 GiB"), Ok(2 << 30));
        assert_eq!(parse_size("1GB"), Ok(1_000_000_000));
        assert_eq!(parse_size("4096"), Ok(4096));
        assert!(parse_size("lots").is_err());
        assert!(parse_size("1PB").is_err());
        assert!(parse_size("99999999999TiB").is_err());
    }
}
