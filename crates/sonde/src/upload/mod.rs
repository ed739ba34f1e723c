//! Delivery: build a report every interval, spool it, send the spool in
//! batches within the rate limits, and apply what the endpoint answers.
//!
//! Runs on its own thread (`sonde-upload`) with a small single-threaded tokio
//! runtime, so it never takes time from the host's own runtime. One request
//! is in flight at most. Failure is quiet: one warning when delivery starts
//! failing, debug lines after that, one info line when it recovers.

pub(crate) mod otlp;
mod policy;
mod quota;
pub(crate) mod sent;
mod spool;
pub(crate) mod transport;

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering::Relaxed};
use std::time::{Duration, Instant, SystemTime};

use serde::Serialize;
use sonde_core::text::escape_control;
use sonde_core::{
    DeliverySettings, DeliveryStats, EndpointResponse, MAX_BATCH_REPORTS, MAX_UPLOAD_BYTES,
    Protocol, redact,
};
use tokio::sync::{mpsc, oneshot, watch};

use self::policy::{
    Backoff, SlidingWindow, Verdict, next_interval, otlp_verdict, retry_after, verdict,
};
use self::sent::{SENT_DIR, SentLog, SentRequest};
use self::spool::Spool;
pub(crate) use self::transport::{Http, Transport};
use crate::status::{STOPPED_FILE, UploadStatus};
use crate::telemetry::WeakTelemetry;

/// Folder of the spool inside the state directory.
pub(crate) const SPOOL_DIR: &str = "spool";
const HOUR: Duration = Duration::from_secs(3600);
const DAY: Duration = Duration::from_secs(24 * 3600);

/// Delivery counters shared with the report builder.
#[derive(Debug, Default)]
pub(crate) struct Counters {
    sent: AtomicU64,
    spooled: AtomicU64,
    spool_dropped: AtomicU64,
    rejected: AtomicU64,
    failed_attempts: AtomicU64,
    directives_ignored: AtomicU64,
    rejected_points: AtomicU64,
}

impl Counters {
    pub(crate) fn snapshot(&self) -> DeliveryStats {
        DeliveryStats {
            sent: self.sent.load(Relaxed),
            spooled: self.spooled.load(Relaxed),
            spool_dropped: self.spool_dropped.load(Relaxed),
            rejected: self.rejected.load(Relaxed),
            failed_attempts: self.failed_attempts.load(Relaxed),
            directives_ignored: self.directives_ignored.load(Relaxed),
            rejected_points: self.rejected_points.load(Relaxed),
        }
    }
}

/// What one upload attempt did, for `sonde send`.
#[derive(Debug, Clone, Default, Serialize)]
pub struct SendOutcome {
    /// Reports in the request (0 when nothing was sent).
    pub reports: usize,
    /// The HTTP status, if the endpoint answered.
    pub status: Option<u16>,
    /// Network error or why nothing was sent.
    pub error: Option<String>,
    /// The endpoint's body, as text (capped).
    pub body: String,
    /// Directives applied, in words.
    pub applied: Vec<String>,
    /// Reports still in the spool afterwards.
    pub spooled: usize,
}

pub(crate) enum Request {
    SendNow(oneshot::Sender<SendOutcome>),
}

/// The host's handle on the upload thread.
#[derive(Debug)]
pub(crate) struct Handle {
    shutdown: watch::Sender<Option<Instant>>,
    requests: mpsc::Sender<Request>,
    done: std::sync::Mutex<Option<std::sync::mpsc::Receiver<()>>>,
}

impl Handle {
    /// Asks for one report to be built and sent now.
    pub(crate) fn send_now(&self) -> Option<SendOutcome> {
        let (tx, rx) = oneshot::channel();
        self.requests.try_send(Request::SendNow(tx)).ok()?;
        rx.blocking_recv().ok()
    }

    /// Tells the uploader to stop at once (the host dropped its handle).
    pub(crate) fn request_stop(&self) {
        let _ = self.shutdown.send(Some(Instant::now()));
    }

    /// Tells the uploader to build a last report, try to send what it can
    /// until `deadline`, and stop; waits for it until then.
    pub(crate) fn shutdown(&self, deadline: Duration) {
        let until = Instant::now() + deadline;
        let _ = self.shutdown.send(Some(until));
        let done = self.done.lock().ok().and_then(|mut d| d.take());
        if let Some(done) = done {
            let _ = done.recv_timeout(deadline + Duration::from_millis(200));
        }
    }
}

/// Starts the upload thread.
pub(crate) fn start<T: Transport>(
    settings: DeliverySettings,
    state_dir: std::path::PathBuf,
    transport: T,
    telemetry: WeakTelemetry,
    counters: Arc<Counters>,
) -> Result<Handle, crate::Error> {
    let spool = Spool::open(
        &state_dir.join(SPOOL_DIR),
        settings.spool_max_files,
        settings.spool_max_bytes,
    )?;
    counters.spooled.store(spool.len() as u64, Relaxed);
    let sent = SentLog::open(
        &state_dir.join(SENT_DIR),
        settings.sent_log_max_files,
        settings.sent_log_max_bytes,
    )?;
    let (shutdown, shutdown_rx) = watch::channel(None);
    let (requests, requests_rx) = mpsc::channel(4);
    let (done_tx, done_rx) = std::sync::mpsc::channel();
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .map_err(|e| crate::Error::Engine(format!("cannot start the upload runtime: {e}")))?;
    let uploader =
        Uploader::new(settings, state_dir, (spool, sent), transport, telemetry, counters);
    std::thread::Builder::new()
        .name("sonde-upload".into())
        .spawn(move || {
            runtime.block_on(uploader.run(shutdown_rx, requests_rx));
            let _ = done_tx.send(());
        })
        .map_err(|e| crate::Error::Engine(format!("cannot start the upload thread: {e}")))?;
    Ok(Handle { shutdown, requests, done: std::sync::Mutex::new(Some(done_rx)) })
}

struct Uploader<T> {
    settings: DeliverySettings,
    endpoint: String,
    state_dir: std::path::PathBuf,
    spool: Spool,
    /// The record of what left (`sonde sent`).
    sent: SentLog,
    requests: SlidingWindow,
    bytes: SlidingWindow,
    backoff: Backoff,
    transport: T,
    telemetry: WeakTelemetry,
    counters: Arc<Counters>,
    status: UploadStatus,
    next_report: Instant,
    not_before: Instant,
    failing: bool,
    stopped: bool,
    /// An OTLP partial success was already reported once.
    partial_warned: bool,
    /// Most reports per request now; halved on 413, grows back on success.
    batch_count: usize,
}

impl<T: Transport> Uploader<T> {
    fn new(
        settings: DeliverySettings,
        state_dir: std::path::PathBuf,
        (spool, sent): (Spool, SentLog),
        transport: T,
        telemetry: WeakTelemetry,
        counters: Arc<Counters>,
    ) -> Uploader<T> {
        let now = Instant::now();
        // The first report comes after half an interval plus up to another
        // half, so a fleet restarted together does not report together.
        let first = settings.interval / 2 + settings.interval.mul_f64(fastrand::f64() / 2.0);
        Uploader {
            endpoint: settings.endpoint.as_ref().map(redact).unwrap_or_default(),
            requests: SlidingWindow::new(HOUR, u64::from(settings.max_requests_per_hour)),
            bytes: SlidingWindow::new(DAY, settings.max_bytes_per_day),
            backoff: Backoff::new(settings.retry_initial, settings.max_interval),
            status: UploadStatus::load(&state_dir),
            settings,
            state_dir,
            spool,
            sent,
            transport,
            telemetry,
            counters,
            next_report: now + first,
            not_before: now,
            failing: false,
            stopped: false,
            partial_warned: false,
            batch_count: MAX_BATCH_REPORTS,
        }
    }

    async fn run(
        mut self,
        mut shutdown: watch::Receiver<Option<Instant>>,
        mut requests: mpsc::Receiver<Request>,
    ) {
        self.status.next_report = Some(wall(self.next_report));
        self.save_status();
        while !self.stopped {
            let now = Instant::now();
            if now >= self.next_report {
                if !self.spool_report() {
                    return; // the host is gone
                }
                self.next_report = now + self.settings.interval;
                self.status.next_report = Some(wall(self.next_report));
            }
            if self.spool.len() > 0 && now >= self.not_before {
                self.attempt(false).await;
                continue;
            }
            let mut wake = self.next_report;
            if self.spool.len() > 0 {
                wake = wake.min(self.not_before);
            }
            tokio::select! {
                () = tokio::time::sleep_until(wake.into()) => {}
                changed = shutdown.changed() => {
                    let deadline = if changed.is_ok() { *shutdown.borrow() } else { None };
                    self.last_flush(deadline).await;
                    return;
                }
                Some(Request::SendNow(reply)) = requests.recv() => {
                    let outcome = if self.spool_report() { self.attempt(true).await } else { SendOutcome::default() };
                    let _ = reply.send(outcome);
                }
            }
        }
    }

    /// Builds a report and spools it; false when the host is gone.
    fn spool_report(&mut self) -> bool {
        let Some(telemetry) = self.telemetry.upgrade() else { return false };
        let Ok(report) = telemetry.report() else { return false };
        let dropped = self.spool.push(&report);
        self.counters.spool_dropped.fetch_add(dropped, Relaxed);
        self.counters.spooled.store(self.spool.len() as u64, Relaxed);
        self.status.last_report = Some(now_rfc3339());
        self.save_status();
        true
    }

    /// On shutdown: one last report, then send until the spool is empty or
    /// the deadline passes; what is left stays spooled for the next start.
    async fn last_flush(&mut self, deadline: Option<Instant>) {
        let deadline = deadline.unwrap_or_else(Instant::now);
        self.spool_report();
        while self.spool.len() > 0 && !self.stopped && Instant::now() < deadline {
            let left = deadline.saturating_duration_since(Instant::now());
            if tokio::time::timeout(left, self.attempt(true)).await.is_err() {
                break;
            }
            if self.not_before > Instant::now() {
                break; // throttled or failing: keep the rest spooled
            }
        }
        self.save_status();
    }

    /// Sends the oldest batch if the limits allow. `now_please` skips the
    /// retry wait (for `sonde send`), never the rate limits.
    async fn attempt(&mut self, now_please: bool) -> SendOutcome {
        let mut outcome = SendOutcome::default();
        let now = Instant::now();
        if !now_please && now < self.not_before {
            return outcome;
        }
        let Some((batch, body)) = self.next_batch() else {
            outcome.error = Some("nothing to send".into());
            return outcome;
        };
        let weight = body.len() as u64;
        let fits = self.requests.earliest(now, 1).zip(self.bytes.earliest(now, weight));
        let too_big = body.len() > MAX_UPLOAD_BYTES;
        let Some((a, b)) = fits.filter(|_| !too_big) else {
            // One report heavier than an upload or a day's byte budget: it
            // can never be sent.
            tracing::warn!(bytes = weight, "a report is too large to upload; dropped");
            self.spool.remove(&batch.names);
            self.counters.spool_dropped.fetch_add(batch.count as u64, Relaxed);
            outcome.error = Some("report too large to upload: dropped".into());
            return outcome;
        };
        let at = a.max(b);
        if at > now {
            self.not_before = at;
            outcome.error = Some(format!("rate limit: next request allowed in {:.0?}", at - now));
            outcome.spooled = self.spool.len();
            return outcome;
        }
        self.requests.record(now, 1);
        self.bytes.record(now, weight);
        outcome.reports = batch.count;
        self.status.last_attempt = Some(now_rfc3339());
        let sent_at = SystemTime::now();
        let answer = self.transport.post(body.clone()).await;
        self.keep_record(sent_at, batch.count, &body, &answer, now.elapsed());
        let (status, retry, body) = match &answer {
            Ok(a) => (Some(a.status), a.retry_after, Some(a)),
            Err(e) => {
                outcome.error = Some(e.clone());
                (None, None, None)
            }
        };
        outcome.status = status;
        if let Some(a) = body {
            outcome.body = String::from_utf8_lossy(&a.body).chars().take(4096).collect();
        }
        let otlp = self.settings.protocol == Protocol::Otlp;
        match if otlp { otlp_verdict(status) } else { verdict(status) } {
            Verdict::Delivered => {
                self.spool.remove(&batch.names);
                self.batch_count = (self.batch_count * 2).min(MAX_BATCH_REPORTS);
                self.counters.sent.fetch_add(batch.count as u64, Relaxed);
                self.backoff.reset();
                self.not_before = now;
                if self.failing {
                    tracing::info!(endpoint = %self.endpoint, "telemetry delivery recovered");
                    self.failing = false;
                }
                self.status.last_success = Some(now_rfc3339());
                self.status.failing_since = None;
                self.status.last_error = None;
                match body {
                    Some(a) if otlp => self.handle_otlp_response(a),
                    Some(a) => outcome.applied = self.handle_response(a),
                    None => {}
                }
            }
            Verdict::Throttled => {
                let wait = retry.map_or_else(
                    || self.backoff.next(fastrand::f64()),
                    |d| retry_after(d, self.settings.max_interval),
                );
                self.not_before = now + wait;
                self.fail(format!(
                    "endpoint answered {} (retry in {wait:.0?})",
                    status.unwrap_or(0)
                ));
            }
            Verdict::Retry => {
                self.not_before = now + self.backoff.next(fastrand::f64());
                let why = outcome
                    .error
                    .clone()
                    .unwrap_or_else(|| format!("endpoint answered {}", status.unwrap_or(0)));
                self.fail(why);
            }
            Verdict::Redirected => {
                self.not_before = now + self.backoff.next(fastrand::f64());
                let to = body.and_then(|a| a.location.as_deref()).unwrap_or("nowhere");
                self.fail(format!(
                    "endpoint answered {} redirecting to {to}; sonde does not follow redirects \
                     (if that address is right, set `endpoint` in the manifest to it)",
                    status.unwrap_or(0)
                ));
            }
            Verdict::Rejected if status == Some(413) && batch.count > 1 && !otlp => {
                // Too large for this endpoint: send smaller batches; keep all.
                self.batch_count = (batch.count / 2).max(1);
                self.not_before = now;
            }
            Verdict::Rejected => {
                self.spool.remove(&batch.names);
                self.counters.rejected.fetch_add(batch.count as u64, Relaxed);
                self.fail(format!(
                    "endpoint refused {} report(s) with {}; dropped",
                    batch.count,
                    status.unwrap_or(0)
                ));
            }
            Verdict::Gone => {
                let reason = format!(
                    "endpoint answered {}: telemetry stopped for good",
                    status.unwrap_or(0)
                );
                self.stop(reason);
            }
        }
        self.counters.spooled.store(self.spool.len() as u64, Relaxed);
        outcome.spooled = self.spool.len();
        self.save_status();
        outcome
    }

    /// Keeps what just left in the record of what left: the exact body, when,
    /// where, and the answer.
    fn keep_record(
        &mut self,
        at: SystemTime,
        reports: usize,
        body: &[u8],
        answer: &Result<transport::Answer, String>,
        took: Duration,
    ) {
        let (status, error, answer_body, cut) = match answer {
            Ok(a) => (Some(a.status), None, a.body.as_slice(), a.body_cut),
            Err(e) => (None, Some(e.clone()), &[][..], false),
        };
        let protocol = self.settings.protocol;
        let content_type = match protocol {
            Protocol::Sonde => transport::JSON_CONTENT_TYPE,
            Protocol::Otlp => otlp::CONTENT_TYPE,
        };
        let request = SentRequest {
            id: String::new(),
            time: humantime::format_rfc3339_millis(at).to_string(),
            endpoint: self.endpoint.clone(),
            protocol,
            content_type: content_type.into(),
            reports,
            body_bytes: 0,
            status,
            error,
            answer_bytes: 0,
            answer_cut: cut,
            duration_ms: u64::try_from(took.as_millis()).unwrap_or(u64::MAX),
        };
        self.sent.record(request, body, answer_body);
    }

    /// The oldest spooled reports as one gzip body (JSON, or OTLP protobuf)
    /// that fits an upload and a day's byte budget, halving the batch until
    /// it does (one report at least).
    fn next_batch(&mut self) -> Option<(spool::Batch, Vec<u8>)> {
        loop {
            let batch = self.spool.batch(self.settings.max_batch_bytes, self.batch_count)?;
            let body = match self.settings.protocol {
                Protocol::Sonde => transport::gzip(&batch.body, Protocol::Sonde),
                Protocol::Otlp => match otlp::encode(&batch.body, &self.settings.service_name) {
                    Ok(pb) => transport::gzip(&pb, Protocol::Otlp),
                    Err(e) => {
                        // The spool checks each report; this is a bug, not
                        // bad input. Drop and count rather than loop.
                        tracing::warn!("cannot encode spooled reports as OTLP ({e}); dropped");
                        self.spool.remove(&batch.names);
                        self.counters.spool_dropped.fetch_add(batch.count as u64, Relaxed);
                        continue;
                    }
                },
            };
            let fits = body.len() <= MAX_UPLOAD_BYTES
                && (body.len() as u64) <= self.settings.max_bytes_per_day;
            if fits || batch.count == 1 {
                return Some((batch, body));
            }
            self.batch_count = (batch.count / 2).max(1);
        }
    }

    /// An OTLP endpoint's 2xx may still reject some data points
    /// (`partial_success`): count them, warn once, never retry.
    fn handle_otlp_response(&mut self, answer: &transport::Answer) {
        let Some((rejected, message)) = otlp::partial_success(&answer.body) else { return };
        // The endpoint's words: shown escaped (sonde_core::text).
        let message = escape_control(&message);
        self.counters.rejected_points.fetch_add(rejected, Relaxed);
        if self.partial_warned {
            tracing::debug!(rejected, "OTLP endpoint rejected data points: {message}");
        } else {
            tracing::warn!(endpoint = %self.endpoint, rejected, "OTLP endpoint rejected data points: {message}; not retried, counted in the reports");
            self.partial_warned = true;
        }
    }

    fn handle_response(&mut self, answer: &transport::Answer) -> Vec<String> {
        if answer.body_cut {
            self.counters.directives_ignored.fetch_add(1, Relaxed);
            tracing::debug!("endpoint response over the size cap; directives ignored");
            return Vec::new();
        }
        let parsed = match EndpointResponse::parse(&answer.body) {
            Ok(p) => p,
            Err(e) => {
                self.counters.directives_ignored.fetch_add(1, Relaxed);
                tracing::debug!("endpoint response ignored: {e}");
                return Vec::new();
            }
        };
        self.counters.directives_ignored.fetch_add(parsed.ignored as u64, Relaxed);
        let response = parsed.response;
        if let Some(secs) = response.next_update_secs {
            let s = &self.settings;
            self.next_report = Instant::now()
                + next_interval(Some(secs), s.interval, s.min_interval, s.max_interval);
            self.status.next_report = Some(wall(self.next_report));
        }
        let stop = response.directives.iter().find_map(|d| match d {
            sonde_core::Directive::Stop { reason } => Some(reason.clone()),
            _ => None,
        });
        let mut applied =
            self.telemetry.upgrade().map(|t| t.apply(response.directives)).unwrap_or_default();
        if let Some(reason) = stop {
            let reason = if reason.is_empty() {
                "stopped by the endpoint".to_string()
            } else {
                format!("stopped by the endpoint: {reason}")
            };
            applied.push(reason.clone());
            self.stop(reason);
        }
        applied
    }

    fn fail(&mut self, why: String) {
        self.counters.failed_attempts.fetch_add(1, Relaxed);
        let why = escape_control(&why).into_owned();
        if self.failing {
            tracing::debug!(endpoint = %self.endpoint, "telemetry delivery still failing: {why}");
        } else {
            tracing::warn!(endpoint = %self.endpoint, "telemetry delivery failing: {why}; reports are spooled and retried quietly");
            self.failing = true;
            self.status.failing_since = Some(now_rfc3339());
        }
        self.status.last_error = Some(why);
    }

    fn stop(&mut self, reason: String) {
        tracing::warn!(endpoint = %self.endpoint, "{}", escape_control(&reason));
        if let Err(e) =
            crate::state::write_private(&self.state_dir.join(STOPPED_FILE), reason.as_bytes())
        {
            tracing::debug!("cannot persist the stop: {e}");
        }
        if let Some(t) = self.telemetry.upgrade() {
            t.stop_all(reason.clone());
        }
        self.status.stopped = Some(reason);
        self.stopped = true;
    }

    fn save_status(&mut self) {
        self.status.spooled = self.spool.len() as u64;
        self.status.spool_bytes = self.spool.bytes();
        self.status.save(&self.state_dir);
    }
}

fn now_rfc3339() -> String {
    humantime::format_rfc3339_seconds(SystemTime::now()).to_string()
}

fn wall(at: Instant) -> String {
    let wall = SystemTime::now() + at.saturating_duration_since(Instant::now());
    humantime::format_rfc3339_seconds(wall).to_string()
}
