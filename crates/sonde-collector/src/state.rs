//! What the routes share: the store, the policy, the rate limiter, the
//! admin access and the collector's own counters, behind one `Arc`.

use std::sync::atomic::{AtomicU32, Ordering::Relaxed};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant, SystemTime};

use tokio::sync::{Semaphore, SemaphorePermit};

use crate::admin::AdminAccess;
use crate::config::Policy;
use crate::fleet::{DEFAULT_K, Fleet, MIN_K};
use crate::limit::RateLimiter;
use crate::stats::Stats;
use crate::store::{Store, StoreError};

/// Uploads decoded at once. Each may hold [`MAX_DECODED_BYTES`] of JSON
/// and the reports parsed from it, so this bounds the memory uploads can
/// take to a few hundred megabytes whatever the number of connections;
/// the others wait their turn.
///
/// [`MAX_DECODED_BYTES`]: crate::upload::MAX_DECODED_BYTES
pub const MAX_CONCURRENT_DECODES: usize = 4;

/// Fleet figures computed at once. Each reads up to
/// [`MAX_FLEET_ROWS`](crate::fleet::MAX_FLEET_ROWS) rows of each kind, and
/// anyone may ask for the public ones: more requests wait their turn.
pub const MAX_CONCURRENT_FLEET_READS: usize = 2;

/// How long the public (k-anonymous) figures of one window are served
/// from memory before they are read again: a visitor reloading a public
/// page costs the database nothing in between.
pub const PUBLIC_FLEET_TTL: Duration = Duration::from_secs(30);

/// Windows whose public figures are kept (the oldest entry makes room).
pub const MAX_CACHED_WINDOWS: usize = 8;

/// Public figures of one window, as last computed.
#[derive(Debug)]
struct Cached {
    window: Duration,
    k: u32,
    at: Instant,
    fleet: Arc<Fleet>,
}

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
    fleet_reads: Semaphore,
    public_fleet: Mutex<Vec<Cached>>,
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
                fleet_reads: Semaphore::new(MAX_CONCURRENT_FLEET_READS),
                public_fleet: Mutex::new(Vec::new()),
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

    /// The fleet figures over the last `window` (at most
    /// [`MAX_WINDOW`](crate::fleet::MAX_WINDOW)): all of them for the
    /// admin, the k-anonymous ones for the public. At most
    /// [`MAX_CONCURRENT_FLEET_READS`] are computed at once; public figures
    /// are kept for [`PUBLIC_FLEET_TTL`] per window.
    pub async fn fleet(&self, window: Duration, public: bool) -> Result<Arc<Fleet>, StoreError> {
        let k = public.then(|| self.k_anonymity());
        let cached = |k: u32| {
            let cache = self.inner.public_fleet.lock().unwrap_or_else(|e| e.into_inner());
            cache
                .iter()
                .find(|c| c.window == window && c.k == k && c.at.elapsed() < PUBLIC_FLEET_TTL)
                .map(|c| Arc::clone(&c.fleet))
        };
        if let Some(hit) = k.and_then(cached) {
            return Ok(hit);
        }
        let _slot = self.inner.fleet_reads.acquire().await.ok();
        // Another request may have read the same window while this one waited.
        if let Some(hit) = k.and_then(cached) {
            return Ok(hit);
        }
        let fleet = Arc::new(self.inner.store.fleet(window, SystemTime::now(), k).await?);
        if let Some(k) = k {
            let mut cache = self.inner.public_fleet.lock().unwrap_or_else(|e| e.into_inner());
            cache.retain(|c| c.at.elapsed() < PUBLIC_FLEET_TTL && (c.window, c.k) != (window, k));
            if cache.len() >= MAX_CACHED_WINDOWS {
                cache.remove(0);
            }
            cache.push(Cached { window, k, at: Instant::now(), fleet: Arc::clone(&fleet) });
        }
        Ok(fleet)
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
