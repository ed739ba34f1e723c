//! The upload rate limiter and backoff state machine
//! (`crates/sonde/src/upload/policy.rs`, compiled here as it is: the module
//! is crate-private and depends on `std` only), driven the way the uploader
//! drives it by an arbitrary sequence of (gap, weight, answer, jitter): no
//! hour ever holds more than `max_requests_per_hour` requests, no day more
//! than `max_bytes_per_day` bytes, and every wait stays within its bounds.
#![no_main]
#![allow(dead_code, reason = "the uploader uses more of policy.rs than this target")]

#[path = "../../crates/sonde/src/upload/policy.rs"]
mod policy;

use std::time::{Duration, Instant};

use policy::{Backoff, SlidingWindow, Verdict, next_interval, retry_after, verdict};

const HOUR: Duration = Duration::from_secs(3600);
const DAY: Duration = Duration::from_secs(24 * 3600);
const MIN_WAIT: Duration = Duration::from_millis(100);

/// (requests per hour, bytes per day in KiB, retry_initial s, max_interval s,
/// steps of (gap s, request KiB, status, jitter, Retry-After s)).
type Input = (u8, u16, u16, u16, Vec<(u16, u16, u16, u8, Option<u32>)>);

libfuzzer_sys::fuzz_target!(|input: Input| {
    let (per_hour, kib_per_day, initial, max, steps) = input;
    let per_hour = u64::from(per_hour.max(1));
    let per_day = u64::from(kib_per_day.max(1)) * 1024;
    let initial = Duration::from_secs(u64::from(initial.max(1)));
    let max = Duration::from_secs(u64::from(max.max(1)));
    let mut requests = SlidingWindow::new(HOUR, per_hour);
    let mut bytes = SlidingWindow::new(DAY, per_day);
    let mut backoff = Backoff::new(initial, max);
    let t0 = Instant::now();
    let mut now = t0;
    let mut not_before = t0;
    let mut sent: Vec<(Instant, u64)> = Vec::new();
    for (gap, kib, status, jitter, retry) in steps {
        now += Duration::from_secs(u64::from(gap));
        if now < not_before {
            continue;
        }
        let weight = u64::from(kib) * 1024 + 1;
        let (Some(a), Some(b)) = (requests.earliest(now, 1), bytes.earliest(now, weight)) else {
            assert!(weight > per_day, "only a request heavier than a day's budget never fits");
            continue;
        };
        assert!(a >= now && b >= now);
        let at = a.max(b);
        if at > now {
            not_before = at;
            continue;
        }
        requests.record(now, 1);
        bytes.record(now, weight);
        sent.push((now, weight));
        let unit = f64::from(jitter) / 256.0;
        let status = (status != 0).then_some(status % 600);
        let wait = match verdict(status) {
            Verdict::Delivered | Verdict::Rejected => {
                backoff.reset();
                Duration::ZERO
            }
            Verdict::Throttled => match retry {
                Some(s) => retry_after(Duration::from_secs(u64::from(s)), max),
                None => backoff.next(unit),
            },
            Verdict::Retry | Verdict::Redirected => backoff.next(unit),
            Verdict::Gone => break,
        };
        if wait > Duration::ZERO {
            assert!(wait >= MIN_WAIT && wait <= max.max(initial).max(MIN_WAIT), "{wait:?}");
        }
        not_before = now + wait;
        let next = next_interval(retry.map(u64::from), HOUR, MIN_WAIT, max.max(MIN_WAIT));
        assert!(next >= MIN_WAIT && next <= max.max(MIN_WAIT).max(HOUR));
    }
    for (i, &(start, _)) in sent.iter().enumerate() {
        let hour = sent[i..].iter().take_while(|(t, _)| *t - start < HOUR).count() as u64;
        assert!(hour <= per_hour, "{hour} requests in one hour, limit {per_hour}");
        let day: u64 = sent[i..].iter().take_while(|(t, _)| *t - start < DAY).map(|(_, w)| w).sum();
        assert!(day <= per_day, "{day} bytes in one day, limit {per_day}");
    }
});
