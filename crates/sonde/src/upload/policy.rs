//! Delivery decisions, free of clocks and sockets so they can be tested
//! exactly: sliding-window rate limits, backoff with full jitter, and what
//! each answer from the endpoint means.
//!
//! Rate limits are sliding windows, not token buckets: a token bucket with
//! burst N and rate N/hour lets 2N requests through in some 60-minute window;
//! the manifest promises "at most N per hour", so every window is checked.
//! Each window keeps one entry per request, bounded by its own limit.

use std::collections::VecDeque;
use std::time::{Duration, Instant};

/// A limit on the total weight (requests, bytes) inside any window of `span`.
#[derive(Debug)]
pub(crate) struct SlidingWindow {
    span: Duration,
    limit: u64,
    entries: VecDeque<(Instant, u64)>,
    total: u64,
}

impl SlidingWindow {
    pub(crate) fn new(span: Duration, limit: u64) -> SlidingWindow {
        SlidingWindow { span, limit, entries: VecDeque::new(), total: 0 }
    }

    fn prune(&mut self, now: Instant) {
        while let Some(&(t, w)) = self.entries.front() {
            if now.saturating_duration_since(t) < self.span {
                break;
            }
            self.entries.pop_front();
            self.total -= w;
        }
    }

    /// The earliest instant (>= `now`) at which `weight` fits, or `None` if
    /// it never can (heavier than the whole limit).
    pub(crate) fn earliest(&mut self, now: Instant, weight: u64) -> Option<Instant> {
        if weight > self.limit {
            return None;
        }
        self.prune(now);
        let mut total = self.total;
        if total + weight <= self.limit {
            return Some(now);
        }
        for &(t, w) in &self.entries {
            total -= w;
            if total + weight <= self.limit {
                return Some(t + self.span);
            }
        }
        Some(now)
    }

    /// Books `weight` at `now`.
    pub(crate) fn record(&mut self, now: Instant, weight: u64) {
        self.prune(now);
        self.entries.push_back((now, weight));
        self.total += weight;
    }

    /// Weight inside the window ending at `now`.
    #[cfg(test)]
    pub(crate) fn used(&mut self, now: Instant) -> u64 {
        self.prune(now);
        self.total
    }
}

/// Exponential backoff with full jitter: the n-th wait is uniform in
/// `[floor, min(max, initial * 2^n)]`.
#[derive(Debug)]
pub(crate) struct Backoff {
    initial: Duration,
    max: Duration,
    attempt: u32,
}

/// The shortest wait ever taken, so full jitter cannot spin.
const MIN_WAIT: Duration = Duration::from_millis(100);

impl Backoff {
    pub(crate) fn new(initial: Duration, max: Duration) -> Backoff {
        Backoff { initial, max: max.max(initial), attempt: 0 }
    }

    /// The wait before the next try; `unit` is a uniform sample in [0, 1).
    pub(crate) fn next(&mut self, unit: f64) -> Duration {
        let cap = self.initial.saturating_mul(1u32 << self.attempt.min(20)).min(self.max);
        self.attempt = self.attempt.saturating_add(1);
        cap.mul_f64(unit.clamp(0.0, 1.0)).max(MIN_WAIT)
    }

    pub(crate) fn reset(&mut self) {
        self.attempt = 0;
    }

    #[cfg(test)]
    pub(crate) fn attempts(&self) -> u32 {
        self.attempt
    }
}

/// What an endpoint's answer means for the reports in the request.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Verdict {
    /// 2xx: delivered; remove from the spool, apply directives.
    Delivered,
    /// 429 or 503: keep, wait `Retry-After` (clamped), else back off.
    Throttled,
    /// Other 5xx, network error, timeout: keep, back off.
    Retry,
    /// 3xx: redirects are never followed (reports go only where the
    /// manifest says). Keep, back off, and tell the operator where the
    /// endpoint points, so that they can move `endpoint` if they trust it.
    Redirected,
    /// Other 4xx: the endpoint will never take these reports; drop and
    /// count them.
    Rejected,
    /// 410 Gone or 451 Unavailable For Legal Reasons: stop for good.
    Gone,
}

/// Classifies an HTTP status; `None` is a transport failure.
pub(crate) fn verdict(status: Option<u16>) -> Verdict {
    match status {
        None => Verdict::Retry,
        Some(200..=299) => Verdict::Delivered,
        Some(300..=399) => Verdict::Redirected,
        Some(410 | 451) => Verdict::Gone,
        Some(429 | 503) => Verdict::Throttled,
        Some(500..=599) => Verdict::Retry,
        Some(_) => Verdict::Rejected,
    }
}

/// Classifies an answer from an OTLP/HTTP endpoint, as its spec says: only
/// 429, 502, 503 and 504 are retried (with `Retry-After`); every other
/// non-2xx, 400, 413 and 500 included, is final. Redirects are kept, as for
/// sonde's own protocol.
pub(crate) fn otlp_verdict(status: Option<u16>) -> Verdict {
    match status {
        None => Verdict::Retry,
        Some(200..=299) => Verdict::Delivered,
        Some(300..=399) => Verdict::Redirected,
        Some(429 | 502 | 503 | 504) => Verdict::Throttled,
        Some(_) => Verdict::Rejected,
    }
}

/// The endpoint's requested next-report delay, clamped to the operator's
/// bounds; the manifest's interval when it asked for nothing.
pub(crate) fn next_interval(
    requested: Option<u64>,
    interval: Duration,
    min: Duration,
    max: Duration,
) -> Duration {
    requested.map_or(interval, |s| Duration::from_secs(s).clamp(min, max))
}

/// A `Retry-After` wait clamped to `[MIN_WAIT, max]`.
pub(crate) fn retry_after(wait: Duration, max: Duration) -> Duration {
    wait.clamp(MIN_WAIT, max.max(MIN_WAIT))
}

#[cfg(test)]
mod tests {
    use super::*;

    const H: Duration = Duration::from_secs(3600);

    #[test]
    fn a_sliding_window_never_admits_more_than_its_limit_in_any_span() {
        let t0 = Instant::now();
        let mut w = SlidingWindow::new(H, 3);
        let mut sent = Vec::new();
        let mut now = t0;
        // Try to send every minute for five hours; send whenever allowed.
        for _ in 0..300 {
            if w.earliest(now, 1) == Some(now) {
                w.record(now, 1);
                sent.push(now);
            }
            now += Duration::from_secs(60);
        }
        for (i, &start) in sent.iter().enumerate() {
            let in_window = sent[i..].iter().take_while(|&&t| t - start < H).count();
            assert!(in_window <= 3, "{in_window} sends within an hour of send {i}");
        }
        assert_eq!(sent.len(), 15, "3 per hour for 5 hours");
    }

    #[test]
    fn the_earliest_fit_is_when_enough_old_weight_expires() {
        let t0 = Instant::now();
        let mut w = SlidingWindow::new(H, 100);
        w.record(t0, 60);
        w.record(t0 + Duration::from_secs(10), 30);
        assert_eq!(
            w.earliest(t0 + Duration::from_secs(20), 10),
            Some(t0 + Duration::from_secs(20))
        );
        assert_eq!(w.earliest(t0 + Duration::from_secs(20), 50), Some(t0 + H));
        assert_eq!(
            w.earliest(t0 + Duration::from_secs(20), 90),
            Some(t0 + Duration::from_secs(10) + H)
        );
        assert_eq!(w.earliest(t0, 101), None, "heavier than the limit never fits");
        assert_eq!(w.used(t0 + H), 30);
    }

    proptest::proptest! {
        #[test]
        fn no_window_ever_holds_more_than_the_limit(
            limit in 1u64..20,
            gaps in proptest::collection::vec(0u64..900, 1..200),
            weights in proptest::collection::vec(1u64..5, 200),
        ) {
            let span = Duration::from_secs(3600);
            let t0 = Instant::now();
            let mut w = SlidingWindow::new(span, limit * 3);
            let mut now = t0;
            let mut admitted: Vec<(Instant, u64)> = Vec::new();
            for (gap, weight) in gaps.iter().zip(&weights) {
                now += Duration::from_secs(*gap);
                // Send whenever the window says so, as the uploader does.
                if let Some(at) = w.earliest(now, *weight) {
                    proptest::prop_assert!(at >= now);
                    if at == now {
                        w.record(now, *weight);
                        admitted.push((now, *weight));
                    }
                }
            }
            for (i, (start, _)) in admitted.iter().enumerate() {
                let inside: u64 = admitted[i..].iter().take_while(|(t, _)| *t - *start < span).map(|(_, w)| w).sum();
                proptest::prop_assert!(inside <= limit * 3, "{} in one window", inside);
            }
        }

        #[test]
        fn backoff_waits_stay_between_the_floor_and_the_cap(
            initial_ms in 1u64..60_000,
            max_ms in 1u64..3_600_000,
            units in proptest::collection::vec(0.0f64..1.0, 1..40),
        ) {
            let (initial, max) = (Duration::from_millis(initial_ms), Duration::from_millis(max_ms));
            let mut b = Backoff::new(initial, max);
            for u in units {
                let wait = b.next(u);
                proptest::prop_assert!(wait >= MIN_WAIT);
                proptest::prop_assert!(wait <= max.max(initial).max(MIN_WAIT));
            }
        }
    }

    #[test]
    fn backoff_grows_to_its_cap_with_jitter_and_resets() {
        let mut b = Backoff::new(Duration::from_secs(30), Duration::from_secs(600));
        let caps: Vec<Duration> = (0..7).map(|_| b.next(1.0)).collect();
        let secs: Vec<u64> = caps.iter().map(Duration::as_secs).collect();
        assert_eq!(secs, [30, 60, 120, 240, 480, 600, 600]);
        assert_eq!(b.next(0.5), Duration::from_secs(300));
        assert_eq!(b.next(0.0), MIN_WAIT);
        b.reset();
        assert_eq!(b.next(1.0), Duration::from_secs(30));
        assert_eq!(b.attempts(), 1);
    }

    #[test]
    fn answers_are_classified_as_the_spec_says() {
        assert_eq!(verdict(Some(200)), Verdict::Delivered);
        assert_eq!(verdict(Some(204)), Verdict::Delivered);
        assert_eq!(verdict(Some(429)), Verdict::Throttled);
        assert_eq!(verdict(Some(503)), Verdict::Throttled);
        assert_eq!(verdict(Some(500)), Verdict::Retry);
        assert_eq!(verdict(Some(502)), Verdict::Retry);
        assert_eq!(verdict(None), Verdict::Retry);
        assert_eq!(verdict(Some(400)), Verdict::Rejected);
        assert_eq!(verdict(Some(413)), Verdict::Rejected);
        assert_eq!(verdict(Some(301)), Verdict::Redirected);
        assert_eq!(verdict(Some(307)), Verdict::Redirected);
        assert_eq!(otlp_verdict(Some(308)), Verdict::Redirected);
        assert_eq!(verdict(Some(410)), Verdict::Gone);
        assert_eq!(verdict(Some(451)), Verdict::Gone);
    }

    #[test]
    fn otlp_answers_are_retried_only_where_the_otlp_spec_says() {
        for ok in [200, 202, 204] {
            assert_eq!(otlp_verdict(Some(ok)), Verdict::Delivered);
        }
        for again in [429, 502, 503, 504] {
            assert_eq!(otlp_verdict(Some(again)), Verdict::Throttled, "{again}");
        }
        assert_eq!(otlp_verdict(None), Verdict::Retry, "network failures are transient");
        for never in [400, 401, 404, 410, 413, 451, 500, 501] {
            assert_eq!(otlp_verdict(Some(never)), Verdict::Rejected, "{never}");
        }
    }

    #[test]
    fn requested_intervals_and_retry_after_are_clamped() {
        let (i, min, max) = (H, Duration::from_secs(300), Duration::from_secs(86400));
        assert_eq!(next_interval(None, i, min, max), H);
        assert_eq!(next_interval(Some(1), i, min, max), min);
        assert_eq!(next_interval(Some(10_000_000), i, min, max), max);
        assert_eq!(next_interval(Some(600), i, min, max), Duration::from_secs(600));
        assert_eq!(retry_after(Duration::from_secs(999_999), max), max);
        assert_eq!(retry_after(Duration::ZERO, max), MIN_WAIT);
    }
}
