//! The bounded ring buffer between `record()` and the dispatcher.
//!
//! A lock-free [`ArrayQueue`] whose slots are allocated once. `push` never
//! blocks: when the ring is full the event is dropped and counted. Counters
//! are only touched on the rare paths (drop, truncated, invalid), so the
//! common path is the queue's own compare-and-swap.

use std::sync::atomic::{AtomicU64, Ordering::Relaxed};

use crossbeam_queue::ArrayQueue;

use crate::event::Event;

pub(crate) struct Ring {
    queue: ArrayQueue<Event>,
    dropped: AtomicU64,
    truncated: AtomicU64,
    invalid: AtomicU64,
}

impl Ring {
    pub(crate) fn new(capacity: usize) -> Ring {
        Ring {
            queue: ArrayQueue::new(capacity.max(1)),
            dropped: AtomicU64::new(0),
            truncated: AtomicU64::new(0),
            invalid: AtomicU64::new(0),
        }
    }

    #[inline]
    pub(crate) fn push(&self, event: Event) {
        if event.is_truncated() {
            self.truncated.fetch_add(1, Relaxed);
        }
        if event.has_invalid_field() {
            self.invalid.fetch_add(1, Relaxed);
        }
        if self.queue.push(event).is_err() {
            self.dropped.fetch_add(1, Relaxed);
        }
    }

    #[inline]
    pub(crate) fn pop(&self) -> Option<Event> {
        self.queue.pop()
    }

    pub(crate) fn capacity(&self) -> usize {
        self.queue.capacity()
    }

    pub(crate) fn len(&self) -> usize {
        self.queue.len()
    }

    pub(crate) fn dropped(&self) -> u64 {
        self.dropped.load(Relaxed)
    }

    pub(crate) fn truncated(&self) -> u64 {
        self.truncated.load(Relaxed)
    }

    pub(crate) fn invalid(&self) -> u64 {
        self.invalid.load(Relaxed)
    }
}
