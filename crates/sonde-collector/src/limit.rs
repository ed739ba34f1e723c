//! Per-instance rate limiting: a token bucket per `instance_id`.
//!
//! This is a small keyed bucket rather than `governor`'s keyed limiter
//! because the collector must bound the number of keys it tracks, and for
//! that it needs to know whether a key is already tracked and which keys can
//! be dropped; governor's keyed store exposes neither. Time is passed in, so
//! the decisions are tested without sleeping.
//!
//! One upload (a batch or a bare report) takes one token, so a host flushing
//! its spool in one batch is not punished for the size of the batch (that is
//! bounded by [`MAX_REPORTS_PER_BATCH`](crate::upload::MAX_REPORTS_PER_BATCH)).
//!
//! [`Limiter`] keeps its buckets in the process: what a SQLite collector
//! (one process) uses. Replicas on PostgreSQL share buckets in the database
//! instead (the same bucket, computed by the database's clock in one
//! statement); both are a [`RateLimiter`], which the store hands out.

use std::collections::HashMap;
use std::time::{Duration, Instant};

use parking_lot::Mutex;
use uuid::Uuid;

use crate::config::RateLimit;
use crate::store::StoreError;

/// Takes one token for an upload of `instance`, wherever the buckets live.
#[async_trait::async_trait]
pub trait RateLimiter: Send + Sync + std::fmt::Debug {
    /// `Ok(Ok(()))` when the upload may go on, `Ok(Err(_))` when it is over
    /// the limit, `Err` when the buckets cannot be reached.
    async fn admit(&self, instance: Uuid) -> Result<Result<(), Throttled>, StoreError>;
}

#[async_trait::async_trait]
impl RateLimiter for Limiter {
    async fn admit(&self, instance: Uuid) -> Result<Result<(), Throttled>, StoreError> {
        Ok(self.check(instance, Instant::now()))
    }
}

/// Most instances tracked at once. Instance ids come from the network, so
/// the table must be bounded: ten thousand buckets is well under a megabyte.
/// When it is full, buckets that have refilled (indistinguishable from a new
/// one) are dropped; if none has, new instances are refused until one has.
pub const MAX_TRACKED_INSTANCES: usize = 10_000;

/// Why an upload was refused, and when to try again.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum Throttled {
    /// This instance used its tokens.
    #[error("instance is over its rate limit")]
    OverRate {
        /// When a token will be there.
        retry_after: Duration,
    },
    /// [`MAX_TRACKED_INSTANCES`] instances are active and this one is new.
    #[error("too many instances are active")]
    TooManyInstances {
        /// When the busiest bucket will have refilled.
        retry_after: Duration,
    },
}

impl Throttled {
    /// When to try again.
    pub fn retry_after(&self) -> Duration {
        match *self {
            Throttled::OverRate { retry_after } | Throttled::TooManyInstances { retry_after } => {
                retry_after
            }
        }
    }
}

#[derive(Debug, Clone, Copy)]
struct Bucket {
    tokens: f64,
    at: Instant,
}

/// Token buckets keyed by instance id, bounded by [`MAX_TRACKED_INSTANCES`].
#[derive(Debug)]
pub struct Limiter {
    capacity: f64,
    per_sec: f64,
    max_keys: usize,
    buckets: Mutex<HashMap<Uuid, Bucket>>,
}

impl Limiter {
    /// A limiter for `rate`, tracking at most [`MAX_TRACKED_INSTANCES`].
    pub fn new(rate: RateLimit) -> Limiter {
        Limiter::with_max_keys(rate, MAX_TRACKED_INSTANCES)
    }

    fn with_max_keys(rate: RateLimit, max_keys: usize) -> Limiter {
        Limiter {
            capacity: f64::from(rate.burst.max(1)),
            per_sec: f64::from(rate.reports_per_minute.max(1)) / 60.0,
            max_keys,
            buckets: Mutex::new(HashMap::new()),
        }
    }

    /// Takes one token from `key`'s bucket at time `now`.
    pub fn check(&self, key: Uuid, now: Instant) -> Result<(), Throttled> {
        let mut buckets = self.buckets.lock();
        if !buckets.contains_key(&key) && buckets.len() >= self.max_keys {
            buckets.retain(|_, b| self.refilled(b, now) < self.capacity);
            if buckets.len() >= self.max_keys {
                return Err(Throttled::TooManyInstances {
                    retry_after: self.wait_for(self.capacity),
                });
            }
        }
        let bucket = buckets.entry(key).or_insert(Bucket { tokens: self.capacity, at: now });
        bucket.tokens = self.refilled(bucket, now);
        bucket.at = now.max(bucket.at);
        if bucket.tokens >= 1.0 {
            bucket.tokens -= 1.0;
            Ok(())
        } else {
            Err(Throttled::OverRate { retry_after: self.wait_for(1.0 - bucket.tokens) })
        }
    }

    /// Instances tracked now.
    pub fn tracked(&self) -> usize {
        self.buckets.lock().len()
    }

    fn refilled(&self, b: &Bucket, now: Instant) -> f64 {
        let elapsed = now.saturating_duration_since(b.at).as_secs_f64();
        (b.tokens + elapsed * self.per_sec).min(self.capacity)
    }

    /// How long until `tokens` more are there, rounded up to a whole second
    /// (what `Retry-After` can say).
    fn wait_for(&self, tokens: f64) -> Duration {
        wait_for(tokens, self.per_sec)
    }
}

/// How long until `tokens` more are there at `per_sec`, rounded up to a
/// whole second (what `Retry-After` can say).
pub(crate) fn wait_for(tokens: f64, per_sec: f64) -> Duration {
    Duration::from_secs((tokens / per_sec).ceil().max(1.0) as u64)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn limiter(per_minute: u32, burst: u32) -> Limiter {
        Limiter::new(RateLimit { reports_per_minute: per_minute, burst })
    }

    #[test]
    fn an_instance_gets_its_burst_then_waits_for_a_token() {
        let l = limiter(6, 2);
        let (a, t0) = (Uuid::new_v4(), Instant::now());
        assert!(l.check(a, t0).is_ok());
        assert!(l.check(a, t0).is_ok());
        let err = l.check(a, t0).expect_err("over");
        assert_eq!(err, Throttled::OverRate { retry_after: Duration::from_secs(10) });
        assert!(l.check(a, t0 + Duration::from_secs(9)).is_err());
        assert!(l.check(a, t0 + Duration::from_secs(10)).is_ok());
    }

    #[test]
    fn instances_have_separate_buckets() {
        let l = limiter(1, 1);
        let t0 = Instant::now();
        assert!(l.check(Uuid::new_v4(), t0).is_ok());
        assert!(l.check(Uuid::new_v4(), t0).is_ok());
    }

    #[test]
    fn the_table_is_bounded_and_refilled_buckets_make_room() {
        let l = Limiter::with_max_keys(RateLimit { reports_per_minute: 60, burst: 1 }, 2);
        let t0 = Instant::now();
        let (a, b, c) = (Uuid::new_v4(), Uuid::new_v4(), Uuid::new_v4());
        assert!(l.check(a, t0).is_ok());
        assert!(l.check(b, t0).is_ok());
        let err = l.check(c, t0).expect_err("full");
        assert!(matches!(err, Throttled::TooManyInstances { .. }), "{err:?}");
        // Known instances still get their own answer.
        assert!(matches!(l.check(a, t0), Err(Throttled::OverRate { .. })));
        // One second later both buckets are full again, so they can go.
        assert!(l.check(c, t0 + Duration::from_secs(1)).is_ok());
        assert_eq!(l.tracked(), 1);
    }
}
