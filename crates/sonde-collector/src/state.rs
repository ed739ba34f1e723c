//! What the routes share: the store, the policy, the rate limiter and the
//! admin access, behind one `Arc`.

use std::sync::Arc;

use tokio::sync::{Semaphore, SemaphorePermit};

use crate::admin::AdminAccess;
use crate::config::Policy;
use crate::limit::Limiter;
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
    pub(crate) policy: Policy,
    pub(crate) limiter: Limiter,
    pub(crate) admin: AdminAccess,
    decoders: Semaphore,
}

/// The blocking task running store work panicked or was cancelled.
#[derive(Debug, thiserror::Error)]
#[error("blocking task failed: {0}")]
pub(crate) struct TaskFailed(#[from] tokio::task::JoinError);

impl CollectorState {
    /// State for a collector with `store`, `policy` (its rate limit sizes
    /// the limiter) and `admin` access.
    pub fn new(store: Store, policy: Policy, admin: AdminAccess) -> CollectorState {
        CollectorState {
            inner: Arc::new(Inner {
                store,
                limiter: Limiter::new(policy.rate_limit),
                policy,
                admin,
                decoders: Semaphore::new(MAX_CONCURRENT_DECODES),
            }),
        }
    }

    /// The store, to read it from embedding code or tests. Its methods
    /// block: call them off the async workers.
    pub fn store(&self) -> &Store {
        &self.inner.store
    }

    /// The policy in force.
    pub fn policy(&self) -> &Policy {
        &self.inner.policy
    }

    pub(crate) fn inner(&self) -> &Inner {
        &self.inner
    }

    /// Waits for one of the [`MAX_CONCURRENT_DECODES`] decode slots. The
    /// semaphore is never closed, so this is only `None` in theory.
    pub(crate) async fn decode_slot(&self) -> Option<SemaphorePermit<'_>> {
        self.inner.decoders.acquire().await.ok()
    }

    /// Runs `f` on the blocking pool with the shared state.
    pub(crate) async fn blocking<T, F>(&self, f: F) -> Result<T, TaskFailed>
    where
        F: FnOnce(&Inner) -> T + Send + 'static,
        T: Send + 'static,
    {
        let inner = Arc::clone(&self.inner);
        Ok(tokio::task::spawn_blocking(move || f(&inner)).await?)
    }
}
