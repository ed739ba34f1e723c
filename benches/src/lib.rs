//! Shared pieces of sonde's benchmarks: the event every benchmark records,
//! runtimes on the example plugins, and a timer for one or more threads.

#![allow(clippy::unwrap_used, reason = "benchmarks: a failure is a broken setup")]

use std::path::Path;
use std::sync::Barrier;
use std::time::{Duration, Instant};

use sonde::{Event, EventKind, Manifest, Telemetry, Value};
use sonde_tests::{Entry, example_entries, write_manifest};

/// An HTTP request with three fields: the same shape as the three
/// attributes or labels the peers record.
pub static HTTP: EventKind = EventKind::new("http.request", &["method", "route", "status"]);

/// The event every `record` benchmark records.
#[inline]
pub fn event() -> Event<'static> {
    *HTTP.event().str("method", "GET").str("route", "/users/{id}").int("status", 200)
}

/// Records [`event`] the way a request path does: built in place, in the
/// `record()` call.
#[inline(always)]
pub fn record_one(t: &Telemetry) {
    t.record(HTTP.event().str("method", "GET").str("route", "/users/{id}").int("status", 200));
}

/// The same event as an owned value, laid out as a ring slot is (kind,
/// tags, values, 256 bytes of text: 344 bytes), for the floors: what a bare
/// queue must hold to keep the strings after `record()` returns.
#[derive(Clone, Copy, Debug)]
pub struct OwnedEvent {
    kind: &'static EventKind,
    tags: [u8; 8],
    values: [u64; 8],
    text: [u8; 256],
}

impl Default for OwnedEvent {
    fn default() -> OwnedEvent {
        OwnedEvent { kind: &HTTP, tags: [0; 8], values: [0; 8], text: [0; 256] }
    }
}

impl OwnedEvent {
    /// Writes [`event`]'s fields into `self` in place, the way `record()`
    /// fills a slot (without its checks: names resolved, strings fit).
    #[inline(always)]
    pub fn fill(&mut self) {
        self.kind = &HTTP;
        self.tags[..3].copy_from_slice(&[3, 3, 1]);
        self.text[..3].copy_from_slice(b"GET");
        self.text[3..14].copy_from_slice(b"/users/{id}");
        self.values[..3].copy_from_slice(&[3, (3 << 16) | 11, 200]);
    }

    /// A new owned copy of [`event`].
    #[inline(always)]
    pub fn new() -> OwnedEvent {
        let mut e = OwnedEvent::default();
        e.fill();
        e
    }

    /// The event's status field (so a reader has something to read).
    pub fn status(&self) -> u64 {
        self.values[2]
    }

    /// An owned copy of any event of kind [`HTTP`] (method, route, status),
    /// as a hand-written queue of events would keep it.
    #[inline(always)]
    pub fn of(event: &Event<'_>) -> OwnedEvent {
        let mut e = OwnedEvent::default();
        let mut used = 0;
        for i in 0..3 {
            match event.get(i) {
                Some(Value::Str(s)) => {
                    let len = s.len().min(e.text.len() - used);
                    e.text[used..used + len].copy_from_slice(&s.as_bytes()[..len]);
                    e.tags[i] = 3;
                    e.values[i] = ((used as u64) << 16) | len as u64;
                    used += len;
                }
                Some(Value::Int(n)) => (e.tags[i], e.values[i]) = (1, n as u64),
                Some(Value::Float(x)) => (e.tags[i], e.values[i]) = (2, x.to_bits()),
                None => e.tags[i] = 0,
            }
        }
        e
    }

    /// Field `i` if it is a string.
    pub fn str_at(&self, i: usize) -> Option<&str> {
        let v = self.values[i];
        let (start, len) = ((v >> 16) as usize, (v & 0xffff) as usize);
        (self.tags[i] == 3).then(|| std::str::from_utf8(&self.text[start..start + len]).ok())?
    }

    /// Field `i` if it is an integer.
    pub fn int_at(&self, i: usize) -> Option<i64> {
        (self.tags[i] == 1).then_some(self.values[i] as i64)
    }
}

/// Slots of a [`thingbuf::ThingBuf`] are overwritten in place, never reset.
#[derive(Debug)]
pub struct Overwrite;

impl thingbuf::recycling::Recycle<OwnedEvent> for Overwrite {
    fn new_element(&self) -> OwnedEvent {
        OwnedEvent::default()
    }
    fn recycle(&self, _: &mut OwnedEvent) {}
}

/// Events for the dispatch benchmark: methods and statuses vary the way a
/// server's do.
pub fn mixed_event(i: usize) -> Event<'static> {
    const METHODS: [&str; 4] = ["GET", "GET", "POST", "DELETE"];
    const STATUS: [i64; 5] = [200, 200, 204, 404, 503];
    *HTTP
        .event()
        .str("method", METHODS[i % 4])
        .str("route", "/users/{id}")
        .int("status", STATUS[i % 5])
}

/// The event `sonde-axum` records, which the three example plugins read.
pub static HTTP_FULL: EventKind =
    EventKind::new("http.request", &["method", "route", "status", "duration_us", "user_agent"]);

/// Requests as a server sees them: methods, routes, statuses, durations and
/// real browser and tool user agents vary.
pub fn server_event(i: usize) -> Event<'static> {
    const METHODS: [&str; 4] = ["GET", "GET", "POST", "DELETE"];
    const ROUTES: [&str; 3] = ["/users/{id}", "/orders", "/health"];
    const STATUS: [i64; 5] = [200, 200, 204, 404, 503];
    const AGENTS: [&str; 4] = [
        "Mozilla/5.0 (X11; Linux x86_64; rv:120.0) Gecko/20100101 Firefox/120.0",
        "Mozilla/5.0 (Windows NT 10.0; Win64; x64) AppleWebKit/537.36 (KHTML, like Gecko) Chrome/120.0.0.0 Safari/537.36",
        "curl/8.5.0",
        "Mozilla/5.0 (Macintosh; Intel Mac OS X 10_15_7) AppleWebKit/605.1.15 (KHTML, like Gecko) Version/17.1 Safari/605.1.15",
    ];
    *HTTP_FULL
        .event()
        .str("method", METHODS[i % 4])
        .str("route", ROUTES[i % 3])
        .int("status", STATUS[i % 5])
        .int("duration_us", 100 + (i % 900) as i64)
        .str("user_agent", AGENTS[i % 4])
}

/// A `local` runtime in `dir` with `buffer_capacity` and the given plugins.
/// `dispatch = false` starts it without a dispatcher: the ring fills and
/// stays full.
pub fn runtime(dir: &Path, capacity: usize, entries: &[Entry], dispatch: bool) -> Telemetry {
    let telemetry = format!(
        "mode = \"local\"\nstate_dir = \"state\"\nbuffer_capacity = {capacity}\napp_metrics = true"
    );
    let path = write_manifest(dir, &telemetry, entries);
    let builder = Telemetry::builder(Manifest::load(&path).unwrap());
    if !dispatch {
        return builder.without_dispatcher_for_benchmarks().start().unwrap();
    }
    let t = builder.start().unwrap();
    // Plugins load off the dispatcher: without this wait the first events
    // of a run would be skipped, not dispatched (under valgrind, loading
    // outlasts a whole `dispatch_count` run).
    assert!(t.wait_until_loaded(Duration::from_secs(300)).unwrap(), "plugins did not load");
    t
}

/// The `http-status` plugin alone.
pub fn http_status() -> Vec<Entry> {
    example_entries().into_iter().filter(|e| e.name == "http-status").collect()
}

/// Runs `op` `per_thread` times on each of `threads` threads, in chunks of
/// `chunk` per thread with `between` called (untimed) after each chunk;
/// returns the summed wall time of the chunks, each the slowest thread's
/// time. With one thread, the time per op; with more, the time per op per
/// thread.
pub fn timed<F: Fn() + Sync>(
    threads: usize,
    per_thread: u64,
    chunk: u64,
    op: &F,
    mut between: impl FnMut(),
) -> Duration {
    let mut total = Duration::ZERO;
    let mut left = per_thread;
    while left > 0 {
        let n = left.min(chunk);
        left -= n;
        let run = || {
            let start = Instant::now();
            for _ in 0..n {
                op();
            }
            start.elapsed()
        };
        total += if threads == 1 {
            run()
        } else {
            let barrier = Barrier::new(threads);
            std::thread::scope(|s| {
                let handles: Vec<_> = (0..threads)
                    .map(|_| {
                        s.spawn(|| {
                            barrier.wait();
                            run()
                        })
                    })
                    .collect();
                handles.into_iter().map(|h| h.join().unwrap()).max().unwrap_or_default()
            })
        };
        between();
    }
    total
}
