//! `sonde sent`: the record of every request that left this host, read
//! from the state directory (nothing is started, nothing written).

use std::io::{IsTerminal, Write};
use std::process::ExitCode;

use anyhow::{Context, Result, bail};
use sonde::{Protocol, SentRequest};

use crate::output::{self, e};
use crate::{Common, Format, load};

/// What `--show` prints.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Part {
    /// The body, decompressed: what the endpoint decoded.
    Body,
    /// The body as it went on the wire (gzip).
    Gzip,
    /// The endpoint's answer.
    Answer,
}

pub(crate) fn sent(
    c: &Common,
    last: Option<usize>,
    show: Option<&str>,
    part: Part,
) -> Result<ExitCode> {
    let manifest = load(&c.manifest)?;
    if let Some(id) = show {
        let record = sonde::sent_record(&manifest, id)?;
        let bytes = match part {
            Part::Body => record.body().with_context(|| format!("request {id}: its body"))?,
            Part::Gzip => record.gzip_body,
            Part::Answer => record.answer,
        };
        let mut out = std::io::stdout().lock();
        if !out.is_terminal() {
            // Redirected: the bytes exactly.
            out.write_all(&bytes)?;
            return Ok(ExitCode::SUCCESS);
        }
        let binary =
            part == Part::Gzip || (part == Part::Body && record.request.protocol == Protocol::Otlp);
        if binary {
            bail!("that is binary (gzip or protobuf): redirect it to a file or a pipe");
        }
        // On a terminal, what the endpoint or a plugin chose is shown escaped.
        writeln!(out, "{}", e(&String::from_utf8_lossy(&bytes)))?;
        return Ok(ExitCode::SUCCESS);
    }
    let mut requests = sonde::sent_requests(&manifest)?;
    if let Some(n) = last {
        requests.drain(..requests.len().saturating_sub(n));
    }
    match c.format {
        Format::Json => output::print_json(&requests),
        Format::Text => print_list(&requests, &manifest),
    }
    Ok(ExitCode::SUCCESS)
}

fn print_list(requests: &[SentRequest], manifest: &sonde::Manifest) {
    let d = &manifest.telemetry.delivery;
    let dir = manifest.telemetry.state_dir.join("sent");
    if requests.is_empty() {
        println!("nothing has been sent (no request in {})", e(&dir.display().to_string()));
        return;
    }
    println!(
        "{:<25} {:<24} {:>7} {:>9}  {:<7} ENDPOINT",
        "ID", "SENT (UTC)", "REPORTS", "BYTES", "ANSWER"
    );
    for r in requests {
        let answer = match (r.status, &r.error) {
            (Some(s), _) => s.to_string(),
            (None, _) => "none".to_string(),
        };
        println!(
            "{:<25} {:<24} {:>7} {:>9}  {:<7} {} ({})",
            e(&r.id),
            e(&r.time),
            r.reports,
            r.body_bytes,
            answer,
            e(&r.endpoint),
            r.protocol.as_str()
        );
        if let Some(err) = &r.error {
            println!("{:<25} error: {}", "", e(err));
        }
    }
    println!(
        "{} request(s) kept in {} (at most {} files, {} bytes; oldest out first)",
        requests.len(),
        e(&dir.display().to_string()),
        d.sent_log_max_files,
        d.sent_log_max_bytes
    );
    println!(
        "`sonde sent -m FILE --show ID` prints one exactly as sent (`--gzip`: the wire bytes, `--answer`: the answer)"
    );
}
