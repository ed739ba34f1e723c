//! A host process for the crash tests: starts sonde from the manifest given
//! as its only argument, prints `started <instance_id>`, records events
//! until its stdin closes, then shuts down gracefully (last report, up to
//! 5 s to send) and prints `stopped`. The tests SIGKILL it at chosen moments.

use std::io::{BufRead, Write};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering::Relaxed};
use std::time::Duration;

use anyhow::Context;
use sonde::{Manifest, Telemetry};

static HTTP: sonde::EventKind = sonde::EventKind::new("http.request", &["method", "status"]);

fn main() -> anyhow::Result<()> {
    let path = std::env::args().nth(1).context("usage: sonde-crash-child <manifest>")?;
    let telemetry = Telemetry::builder(Manifest::load(path.as_ref())?).start()?;
    telemetry.plugins()?; // loaded (compiled, or from the compile cache)
    println!("started {}", telemetry.instance_id());
    std::io::stdout().flush()?;
    let stop = Arc::new(AtomicBool::new(false));
    let recorder = {
        let (t, stop) = (telemetry.clone(), stop.clone());
        std::thread::spawn(move || {
            let mut i = 0i64;
            while !stop.load(Relaxed) {
                t.record(HTTP.event().str("method", "GET").int("status", 200 + i % 300));
                i += 1;
                if i % 100 == 0 {
                    std::thread::sleep(Duration::from_millis(1));
                }
            }
        })
    };
    for line in std::io::stdin().lock().lines() {
        if line.is_err() {
            break;
        }
    }
    stop.store(true, Relaxed);
    let _ = recorder.join();
    telemetry.shutdown(Duration::from_secs(5));
    // The parent may have stopped reading: not an error.
    let _ = writeln!(std::io::stdout(), "stopped");
    Ok(())
}
