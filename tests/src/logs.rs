//! Capturing what sonde logs, for tests that count warnings.
//!
//! The subscriber is process-wide (the upload thread logs, not the test's
//! thread), installed once per test binary at `INFO`; tests running at the
//! same time log into the same buffer, so a test picks its own lines by
//! something unique to it: its endpoint's port, its temporary folder.

use std::io::Write;
use std::sync::{Arc, Mutex, OnceLock};

#[derive(Clone, Default)]
struct Sink(Arc<Mutex<Vec<u8>>>);

impl Write for Sink {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        self.0.lock().unwrap().extend_from_slice(buf);
        Ok(buf.len())
    }
    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

static SINK: OnceLock<Sink> = OnceLock::new();

/// Installs the capturing subscriber (once; later calls do nothing). Call it
/// before starting the runtime whose lines you will read.
pub fn capture_logs() {
    SINK.get_or_init(|| {
        let sink = Sink::default();
        let writer = sink.clone();
        // Fails only if another subscriber is already installed, in which
        // case `log_lines` finds nothing and the test says so.
        let _ = tracing_subscriber::fmt()
            .with_writer(move || writer.clone())
            .with_ansi(false)
            .with_max_level(tracing::Level::INFO)
            .try_init();
        sink
    });
}

/// Every captured line containing `needle`.
pub fn log_lines(needle: &str) -> Vec<String> {
    let Some(sink) = SINK.get() else { return vec![] };
    let bytes = sink.0.lock().unwrap().clone();
    String::from_utf8_lossy(&bytes)
        .lines()
        .filter(|l| l.contains(needle))
        .map(String::from)
        .collect()
}

/// Captured `WARN` lines containing `needle`.
pub fn warnings(needle: &str) -> Vec<String> {
    log_lines(needle).into_iter().filter(|l| l.contains(" WARN ")).collect()
}
