//! What the routes share: the store, the policy, the rate limiter, the
//! admin access and the collector's own counters, behind one `Arc`.

use std::sync::Arc;
use std::sync::atomic::{AtomicU32, Ordering::Relaxed};

use tokio::sync::{Semaphore, SemaphorePermit};

use crate::admin::AdminAccess;
use crate::config::Policy;
use crate::fleet::{DEFAULT_K, MIN_K};
use crate::limit::RateLimiter;
use crate::stats::Stats;
use crate::store::Store;

/// Uploads decoded at once. Each may hold [`MAX_DECODED_BYTES`] of JSON
/// and the reports parsed from it, so this bounds the memory uploads can
/// take to a few hundred megabytes whatever the number of connections;
/// the others wait their turn.
///
/// [`MAX_DECODED_BYTES`]: crate::upload::MAX_DECODED_BYTES
pub const MAX_CONCURRENT_DECODES: usize = 4;

/// The collector's shared state; cheap to clone.
#[derive(Debug, Clone)]
pub struct CollectorState {
    inner: Arc<Inner>,
}

#[derive(Debug)]
pub(crate) struct Inner {
    pub(crate) store: Store,
    pub(crate) policy: Arc<Policy>,
    pub(crate) limiter: Arc<dyn RateLimiter>,
    pub(crate) admin: AdminAccess,
    pub(crate) stats: Arc<Stats>,
    decoders: Semaphore,
    k: AtomicU32,
}

impl CollectorState {
    /// State for a collector with `store`, `policy` (its rate limit sizes
    /// the store's rate limiter) and `admin` access.
    pub fn new(store: Store, policy: Policy, admin: AdminAccess) -> CollectorState {
        CollectorState {
            inner: Arc::new(Inner {
                limiter: store.rate_limiter(policy.rate_limit),
                store,
                policy: Arc::new(policy),
                admin,
                stats: Arc::new(Stats::default()),
                decoders: Semaphore::new(MAX_CONCURRENT_DECODES),
                k: AtomicU32::new(DEFAULT_K),
            }),
        }
    }

    /// The store, to read it from embedding code or tests.
    pub fn store(&self) -> &Store {
        &self.inner.store
    }

    /// Sets the k of the k-anonymous figures served without the admin
    /// token (`/v1/fleet/public`, public `/ui` pages); at least
    /// [`MIN_K`], [`DEFAULT_K`] unless set.
    pub fn set_k_anonymity(&self, k: u32) {
        self.inner.k.store(k.max(MIN_K), Relaxed);
    }

    /// The k of the k-anonymous figures.
    pub fn k_anonymity(&self) -> u32 {
        self.inner.k.load(Relaxed)
    }

    /// The policy in force.
    pub fn policy(&self) -> &Policy {
        &self.inner.policy
    }

    /// The collector's own counters (also served at `GET /metrics`).
    pub fn stats(&self) -> &Arc<Stats> {
        &self.inner.stats
    }

    pub(crate) fn inner(&self) -> &Inner {
        &self.inner
    }

    /// Waits for one of the [`MAX_CONCURRENT_DECODES`] decode slots. The
    /// semaphore is never closed, so this is only `None` in theory.
    pub(crate) async fn decode_slot(&self) -> Option<SemaphorePermit<'_>> {
        self.inner.decoders.acquire().await.ok()
    }
}
