//! A plugin's health: why its calls fail, when to restart it, when to give
//! up, and whether it stays within its CPU budget. Pure bookkeeping over
//! instants the caller passes in, so it is tested without a plugin.

use std::collections::VecDeque;
use std::time::{Duration, Instant};

use sonde_core::{FailureCounts, PluginLimits};
use wasmtime::Trap;

/// Longest wait before restarting a failing plugin.
pub(crate) const MAX_RESTART_DELAY: Duration = Duration::from_secs(30);
/// Wait before the second restart in a window; doubles for each further one.
pub(crate) const FIRST_RESTART_DELAY: Duration = Duration::from_millis(100);
/// The span over which CPU use is measured against the budget.
const CPU_WINDOW: Duration = Duration::from_secs(1);

/// Why a call failed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum FailureKind {
    Cpu,
    Memory,
    Stack,
    Panic,
    Other,
}

impl FailureKind {
    /// Classifies a failed call; `refused_growth` is the limiter's note when
    /// it refused a memory or table growth during the call.
    pub(crate) fn of(e: &wasmtime::Error, refused_growth: bool) -> FailureKind {
        match e.downcast_ref::<Trap>() {
            Some(Trap::Interrupt) => FailureKind::Cpu,
            Some(Trap::StackOverflow) => FailureKind::Stack,
            _ if refused_growth => FailureKind::Memory,
            Some(Trap::UnreachableCodeReached) => FailureKind::Panic,
            _ => FailureKind::Other,
        }
    }

    pub(crate) fn count(self, counts: &mut FailureCounts) {
        match self {
            FailureKind::Cpu => counts.cpu += 1,
            FailureKind::Memory => counts.memory += 1,
            FailureKind::Stack => counts.stack += 1,
            FailureKind::Panic => counts.panic += 1,
            FailureKind::Other => counts.other += 1,
        }
    }
}

/// What to do after a failure.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum AfterFailure {
    /// Restart after this delay.
    Restart(Duration),
    /// Too many failures in the window: stop for good.
    GiveUp(usize),
}

pub(crate) struct Health {
    limits: PluginLimits,
    failures: VecDeque<Instant>,
    /// Failures since the last successful call: drives the restart delay.
    in_a_row: u32,
    window_start: Instant,
    busy_in_window: Duration,
    over_since: Option<Instant>,
}

impl Health {
    pub(crate) fn new(limits: PluginLimits, now: Instant) -> Health {
        Health {
            limits,
            failures: VecDeque::new(),
            in_a_row: 0,
            window_start: now,
            busy_in_window: Duration::ZERO,
            over_since: None,
        }
    }

    /// Books a failure at `now`.
    pub(crate) fn failed(&mut self, now: Instant) -> AfterFailure {
        let window = Duration::from_secs(self.limits.failure_window_secs);
        while self.failures.front().is_some_and(|&t| now.saturating_duration_since(t) >= window) {
            self.failures.pop_front();
        }
        self.failures.push_back(now);
        self.in_a_row += 1;
        let n = self.failures.len();
        if n >= self.limits.max_failures as usize {
            return AfterFailure::GiveUp(n);
        }
        // The delay grows with failures in a row, so a plugin that fails now
        // and then is restarted at once; the window decides when to give up.
        let delay = match self.in_a_row as usize {
            0 | 1 => Duration::ZERO,
            n => FIRST_RESTART_DELAY.saturating_mul(1 << (n - 2).min(16)).min(MAX_RESTART_DELAY),
        };
        AfterFailure::Restart(delay)
    }

    /// Books a successful call.
    pub(crate) fn succeeded(&mut self) {
        self.in_a_row = 0;
    }

    /// Books `busy` time spent in the plugin.
    pub(crate) fn busy(&mut self, busy: Duration) {
        self.busy_in_window += busy;
    }

    /// Closes CPU windows up to `now`; returns the breaker's reason once the
    /// plugin has been over its budget for longer than allowed.
    pub(crate) fn over_budget(&mut self, now: Instant) -> Option<String> {
        let elapsed = now.saturating_duration_since(self.window_start);
        if elapsed >= CPU_WINDOW {
            let ms_per_sec = self.busy_in_window.as_secs_f64() * 1000.0 / elapsed.as_secs_f64();
            if ms_per_sec > self.limits.cpu_ms_per_sec as f64 {
                let since = *self.over_since.get_or_insert(self.window_start);
                if now.saturating_duration_since(since)
                    >= Duration::from_secs(self.limits.over_budget_secs)
                {
                    self.over_since = None;
                    self.window_start = now;
                    self.busy_in_window = Duration::ZERO;
                    return Some(format!(
                        "expensive: {ms_per_sec:.0} ms CPU per second, over its budget of {} ms for {} s",
                        self.limits.cpu_ms_per_sec, self.limits.over_budget_secs
                    ));
                }
            } else {
                self.over_since = None;
            }
            self.window_start = now;
            self.busy_in_window = Duration::ZERO;
        }
        None
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn limits() -> PluginLimits {
        PluginLimits {
            max_failures: 4,
            failure_window_secs: 10,
            cpu_ms_per_sec: 100,
            over_budget_secs: 2,
            ..PluginLimits::default()
        }
    }

    #[test]
    fn restarts_back_off_and_too_many_failures_in_the_window_give_up() {
        let t0 = Instant::now();
        let mut h = Health::new(limits(), t0);
        assert_eq!(h.failed(t0), AfterFailure::Restart(Duration::ZERO));
        assert_eq!(h.failed(t0), AfterFailure::Restart(FIRST_RESTART_DELAY));
        assert_eq!(h.failed(t0), AfterFailure::Restart(FIRST_RESTART_DELAY * 2));
        assert_eq!(h.failed(t0), AfterFailure::GiveUp(4));
        let mut h = Health::new(limits(), t0);
        assert_eq!(h.failed(t0), AfterFailure::Restart(Duration::ZERO));
        h.succeeded();
        assert_eq!(
            h.failed(t0),
            AfterFailure::Restart(Duration::ZERO),
            "a success resets the delay"
        );
        let mut h = Health::new(limits(), t0);
        for i in 0..10 {
            // One failure every 5 s never fills a 10 s window of 4.
            let verdict = h.failed(t0 + Duration::from_secs(5 * i));
            assert!(matches!(verdict, AfterFailure::Restart(_)), "{i}: {verdict:?}");
        }
    }

    #[test]
    fn the_breaker_trips_only_after_a_sustained_overrun() {
        let t0 = Instant::now();
        let mut h = Health::new(limits(), t0);
        let sec = Duration::from_secs(1);
        // 300 ms per second: over the 100 ms budget.
        h.busy(Duration::from_millis(300));
        assert_eq!(h.over_budget(t0 + sec), None);
        // One cheap second resets the streak.
        h.busy(Duration::from_millis(10));
        assert_eq!(h.over_budget(t0 + sec * 2), None);
        // Over budget from second 2 on: the breaker trips when that has
        // lasted `over_budget_secs` (2 s), at second 4.
        h.busy(Duration::from_millis(300));
        assert_eq!(h.over_budget(t0 + sec * 3), None, "1 s over budget");
        h.busy(Duration::from_millis(300));
        let reason = h.over_budget(t0 + sec * 4).expect("tripped after 2 s over budget");
        assert!(reason.starts_with("expensive: 300 ms CPU per second"), "{reason}");
    }
}
