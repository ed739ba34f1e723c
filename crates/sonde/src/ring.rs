//! The bounded ring buffer between `record()` and the dispatcher.
//!
//! One lock-free [`ThingBuf`] per shard, its slots allocated once and written
//! in place: `record()` claims a slot and copies the event's fields into it,
//! the dispatcher reads them where they are. Each recording thread has a
//! home shard, so threads on different cores do not fight over one tail
//! index (measured: two threads on one queue cost 5-15× one thread). A
//! thread whose home shard is full tries the others; when all are full the
//! event is dropped and counted. `push` never blocks and never allocates.
//!
//! Order: events of one thread reach the plugins in the order recorded as
//! long as its home shard has room; across threads, and once a thread spills
//! into another shard, there is no order (plugins get counts and
//! distributions, not sequences).

use std::cell::Cell;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering::Relaxed};

use crossbeam_utils::CachePadded;
use thingbuf::ThingBuf;
use thingbuf::recycling::Recycle;

use crate::event::{Event, Slot};

/// Most shards; fewer on machines with fewer cores. Shard counts are powers
/// of two, so a thread finds its home shard with a mask, not a division.
const MAX_SHARDS: usize = 8;

/// Stripes of the drop counter. When the ring is full every `record()`
/// counts a drop; one shared counter would then bounce its cache line
/// between all recording threads (measured: 1.9x the floor with 2 threads).
const DROP_STRIPES: usize = 8;

thread_local! {
    /// This thread's home shard and drop-counter stripe, assigned round-robin
    /// on first use (`usize::MAX` until then). A `const` thread-local needs
    /// no lazy-initialization check on every access.
    static STRIPE: Cell<usize> = const { Cell::new(usize::MAX) };
}

/// This thread's stripe.
#[inline(always)]
fn stripe() -> usize {
    STRIPE.with(|s| {
        let mut v = s.get();
        if v == usize::MAX {
            static NEXT: AtomicUsize = AtomicUsize::new(0);
            v = NEXT.fetch_add(1, Relaxed) % (MAX_SHARDS * DROP_STRIPES);
            s.set(v);
        }
        v
    })
}

/// Slots are overwritten field by field, so a reused slot needs no reset.
struct Overwrite;

impl Recycle<Slot> for Overwrite {
    fn new_element(&self) -> Slot {
        Slot::default()
    }

    fn recycle(&self, _: &mut Slot) {}
}

pub(crate) struct Ring {
    shards: Box<[ThingBuf<Slot, Overwrite>]>,
    /// `shards.len() - 1`.
    mask: usize,
    /// Bytes from one slot to the next in a shard (0: do not prefetch).
    stride: usize,
    /// The shard the dispatcher drains first next time (only it pops).
    next_drain: AtomicUsize,
    dropped: [CachePadded<AtomicU64>; DROP_STRIPES],
    truncated: AtomicU64,
    invalid: AtomicU64,
}

impl Ring {
    /// A ring of exactly `capacity` slots (at least 1), in one shard per
    /// core (rounded down to a power of two) up to [`MAX_SHARDS`].
    pub(crate) fn new(capacity: usize) -> Ring {
        let cores = std::thread::available_parallelism().map_or(1, |n| n.get());
        Ring::with_shards(capacity, cores)
    }

    pub(crate) fn with_shards(capacity: usize, shards: usize) -> Ring {
        let capacity = capacity.max(1);
        let n = shards.clamp(1, MAX_SHARDS).min(capacity);
        // Round down to a power of two.
        let n = 1 << n.ilog2();
        let shards: Box<[ThingBuf<Slot, Overwrite>]> = (0..n)
            .map(|i| {
                ThingBuf::with_recycle(capacity / n + usize::from(i < capacity % n), Overwrite)
            })
            .collect();
        let stride = warm_up(&shards);
        Ring {
            shards,
            mask: n - 1,
            stride,
            next_drain: AtomicUsize::new(0),
            dropped: Default::default(),
            truncated: AtomicU64::new(0),
            invalid: AtomicU64::new(0),
        }
    }

    #[inline(always)]
    pub(crate) fn push(&self, event: &Event<'_>) {
        if event.has_invalid_field() {
            self.invalid.fetch_add(1, Relaxed);
        }
        let stripe = stripe();
        for k in 0..self.shards.len() {
            let shard = &self.shards[(stripe + k) & self.mask];
            if let Ok(mut slot) = shard.push_ref() {
                let written = slot.write(event);
                if written.truncated {
                    self.truncated.fetch_add(1, Relaxed);
                }
                prefetch_next(&slot, self.stride, written.end);
                return;
            }
        }
        self.dropped[stripe % DROP_STRIPES].fetch_add(1, Relaxed);
    }

    /// Takes up to `max` events off the ring, shard by shard (starting with
    /// a different shard each time), handing each to `each`; returns how many.
    pub(crate) fn drain(&self, max: usize, mut each: impl FnMut(&Slot)) -> usize {
        let first = self.next_drain.load(Relaxed);
        self.next_drain.store(first.wrapping_add(1), Relaxed);
        let mut taken = 0;
        for k in 0..self.shards.len() {
            let shard = &self.shards[(first + k) & self.mask];
            while taken < max {
                let Some(slot) = shard.pop_ref() else { break };
                each(&slot);
                taken += 1;
            }
        }
        taken
    }

    pub(crate) fn capacity(&self) -> usize {
        self.shards.iter().map(ThingBuf::capacity).sum()
    }

    pub(crate) fn len(&self) -> usize {
        self.shards.iter().map(ThingBuf::len).sum()
    }

    pub(crate) fn dropped(&self) -> u64 {
        self.dropped.iter().map(|d| d.load(Relaxed)).sum()
    }

    pub(crate) fn truncated(&self) -> u64 {
        self.truncated.load(Relaxed)
    }

    pub(crate) fn invalid(&self) -> u64 {
        self.invalid.load(Relaxed)
    }
}

/// Runs every shard through one full lap, so that every slot is written
/// (and its pages faulted in) here, at start, instead of on the first lap of
/// `record()` calls on the request path; returns the distance between
/// consecutive slots (thingbuf does not expose its layout), 0 if it cannot
/// tell.
fn warm_up(shards: &[ThingBuf<Slot, Overwrite>]) -> usize {
    let mut first = Vec::with_capacity(2);
    for shard in shards {
        while let Ok(slot) = shard.push_ref() {
            if first.len() < 2 {
                first.push(&*slot as *const Slot as usize);
            }
        }
        while shard.pop_ref().is_some() {}
    }
    match first[..] {
        [a, b] if b > a && b - a < 4 * size_of::<Slot>() => b - a,
        _ => 0,
    }
}

/// Starts loading the slot after `slot` into the cache, for the next push.
///
/// A server records one event per request with much else in between, so
/// the ring's next slot (one of 65,536, last touched a lap ago) is always
/// a cache miss, and `push` stalls on it reading the slot's state: ~150 ns
/// per request in a profile of the example server. A prefetch hides that
/// behind the rest of the request.
#[inline(always)]
fn prefetch_next(slot: &Slot, stride: usize, end: usize) {
    #[cfg(target_arch = "x86_64")]
    if stride != 0 {
        let next = (slot as *const Slot).cast::<i8>().wrapping_add(stride);
        // The lines the next event will write if it is like this one (its
        // fields and as many text bytes), each once, and the slot's state
        // word, which thingbuf keeps just after the value. Only the header
        // and the state word left the text's lines to miss on the write
        // (perf: half of the layer's samples); every line of the slot would
        // pull in lines an event of this size never uses.
        let skew = next as usize % 64;
        let mut offset = 0;
        while offset < skew + end {
            prefetch(next.wrapping_add(offset).wrapping_sub(skew));
            offset += 64;
        }
        prefetch(next.wrapping_add(size_of::<Slot>()));
    }
    #[cfg(not(target_arch = "x86_64"))]
    let _ = (slot, stride, end);
}

/// Starts loading the line holding `at` into the cache.
#[cfg(target_arch = "x86_64")]
#[inline(always)]
fn prefetch(at: *const i8) {
    use std::arch::x86_64::{_MM_HINT_T0, _mm_prefetch};
    #[allow(unsafe_code, reason = "a prefetch only hints the cache")]
    // SAFETY: a prefetch never faults and has no architectural effect,
    // whatever the address (even past the end of the shard); the pointer is
    // never dereferenced.
    unsafe {
        _mm_prefetch::<_MM_HINT_T0>(at);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::event::{EventKind, Value};

    static K: EventKind = EventKind::new("k", &["n", "s"]);

    fn drain_all(ring: &Ring) -> Vec<i64> {
        let mut seen = Vec::new();
        ring.drain(usize::MAX, |slot| {
            if let Some(Value::Int(n)) = slot.get(0) {
                seen.push(n);
            }
        });
        seen.sort_unstable();
        seen
    }

    #[test]
    fn capacity_is_exact_across_shards_and_overflow_is_counted() {
        let ring = Ring::with_shards(10, 3);
        assert_eq!((ring.shards.len(), ring.capacity()), (2, 10));
        assert_eq!(Ring::with_shards(3, 8).shards.len(), 2);
        assert_eq!(Ring::with_shards(100, 64).shards.len(), MAX_SHARDS);
        // One thread fills its home shard, then the others.
        for n in 0..13 {
            ring.push(K.event().int("n", n));
        }
        assert_eq!((ring.len(), ring.dropped()), (10, 3));
        assert_eq!(drain_all(&ring), (0..10).collect::<Vec<_>>());
        assert_eq!(ring.len(), 0);
    }

    #[test]
    fn a_new_ring_is_warmed_up_empty_and_knows_its_stride() {
        let ring = Ring::with_shards(16, 2);
        assert!(ring.stride >= size_of::<Slot>(), "{}", ring.stride);
        assert_eq!((ring.len(), ring.capacity(), ring.dropped()), (0, 16, 0));
        for n in 0..16 {
            ring.push(K.event().int("n", n));
        }
        assert_eq!((ring.len(), ring.dropped()), (16, 0));
        assert_eq!(drain_all(&ring), (0..16).collect::<Vec<_>>());
        assert_eq!(Ring::with_shards(1, 1).stride, 0);
    }

    #[test]
    fn threads_share_the_whole_capacity() {
        let ring = Ring::with_shards(4_000, 4);
        std::thread::scope(|s| {
            for t in 0..4 {
                let ring = &ring;
                s.spawn(move || {
                    for n in 0..1_000 {
                        ring.push(K.event().int("n", t * 1_000 + n).str("s", "x"));
                    }
                });
            }
        });
        assert_eq!(ring.dropped(), 0);
        assert_eq!(drain_all(&ring), (0..4_000).collect::<Vec<_>>());
    }

    #[test]
    fn drain_stops_at_max_and_counts_cut_and_invalid_events() {
        let ring = Ring::with_shards(8, 2);
        ring.push(K.event().str("s", &"x".repeat(300)));
        ring.push(K.event().int("nope", 1));
        ring.push(K.event().int("n", 1));
        assert_eq!((ring.truncated(), ring.invalid()), (1, 1));
        assert_eq!(ring.drain(2, |_| {}), 2);
        assert_eq!(ring.drain(5, |_| {}), 1);
        assert_eq!(ring.drain(5, |_| {}), 0);
    }
}
