//! `sonde`: the operator's command line.
//!
//! Exit codes: 0 success; 1 the command ran and found problems (a refused
//! plugin in `check`); 2 bad usage or an unreadable manifest or events file.

mod output;
mod pin;

use std::io::IsTerminal;
use std::path::{Path, PathBuf};
use std::process::ExitCode;

use anyhow::{Context, Result};
use clap::{Parser, Subcommand, ValueEnum};
use sonde::{Manifest, Mode, PluginState, Telemetry, effective_mode};

/// In-process telemetry with sandboxed WebAssembly collectors.
#[derive(Parser, Debug)]
#[command(name = "sonde", version, about, propagate_version = true)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand, Debug)]
enum Command {
    /// Validate the manifest and every plugin (hash, imports, declared schema).
    Check(Common),
    /// Write the current SHA-256 of each plugin file into the manifest.
    Pin {
        /// The manifest.
        #[arg(short, long, value_name = "FILE")]
        manifest: PathBuf,
        /// Only pin this plugin (repeatable).
        #[arg(long = "plugin", value_name = "NAME")]
        plugins: Vec<String>,
    },
    /// List every plugin: allowed, denied or refused and why, with its metrics.
    List(Common),
    /// Run the allowed plugins over events and print the report they produce.
    Preview {
        #[command(flatten)]
        common: Common,
        /// Events, one JSON object a line.
        #[arg(short, long, value_name = "FILE.jsonl")]
        events: PathBuf,
    },
}

#[derive(clap::Args, Debug)]
struct Common {
    /// The manifest.
    #[arg(short, long, value_name = "FILE")]
    manifest: PathBuf,
    /// Output format; `json` is machine-readable (for `preview`, exactly the
    /// bytes a report carries).
    #[arg(long, value_enum, default_value_t = Format::Text)]
    format: Format,
}

#[derive(Copy, Clone, Debug, PartialEq, Eq, ValueEnum)]
enum Format {
    Text,
    Json,
}

fn main() -> ExitCode {
    tracing_subscriber::fmt()
        .with_writer(std::io::stderr)
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_env("SONDE_LOG")
                .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("error")),
        )
        .init();
    let cli = Cli::parse();
    match run(cli) {
        Ok(code) => code,
        Err(e) => {
            eprintln!("error: {e:#}");
            ExitCode::from(2)
        }
    }
}

fn run(cli: Cli) -> Result<ExitCode> {
    match cli.command {
        Command::Check(c) => check(&c),
        Command::Pin { manifest, plugins } => pin::pin(&manifest, &plugins),
        Command::List(c) => list(&c),
        Command::Preview { common, events } => preview(&common, &events),
    }
}

fn load(path: &Path) -> Result<Manifest> {
    Ok(Manifest::load(path)?)
}

/// A runtime for inspecting plugins: local mode, writing nothing.
fn inspect(manifest: Manifest) -> Result<Vec<sonde::PluginOverview>> {
    let telemetry = Telemetry::builder(manifest)
        .mode(Mode::Local)
        .ephemeral(true)
        .start()?;
    Ok(telemetry.plugins()?)
}

fn check(c: &Common) -> Result<ExitCode> {
    let manifest = load(&c.manifest)?;
    let plugins = inspect(manifest)?;
    let bad = plugins
        .iter()
        .filter(|p| matches!(p.state, PluginState::Refused | PluginState::Failed))
        .count();
    match c.format {
        Format::Json => output::print_json(&serde_json::json!({
            "manifest": c.manifest,
            "ok": bad == 0,
            "plugins": plugins,
        })),
        Format::Text => {
            for p in &plugins {
                let mark = match p.state {
                    PluginState::Running => "ok     ",
                    PluginState::Denied => "denied ",
                    _ => "REFUSED",
                };
                println!(
                    "{mark} {}{}",
                    p.name,
                    p.reason
                        .as_deref()
                        .map(|r| format!(": {r}"))
                        .unwrap_or_default()
                );
            }
            println!(
                "{}: {} plugin(s), {} running, {} problem(s)",
                c.manifest.display(),
                plugins.len(),
                plugins
                    .iter()
                    .filter(|p| p.state == PluginState::Running)
                    .count(),
                bad
            );
        }
    }
    Ok(if bad == 0 {
        ExitCode::SUCCESS
    } else {
        ExitCode::from(1)
    })
}

fn list(c: &Common) -> Result<ExitCode> {
    let plugins = inspect(load(&c.manifest)?)?;
    match c.format {
        Format::Json => output::print_json(&plugins),
        Format::Text => output::print_plugins(&plugins),
    }
    Ok(ExitCode::SUCCESS)
}

fn preview(c: &Common, events: &Path) -> Result<ExitCode> {
    let manifest = load(&c.manifest)?;
    let records = sonde_core::read_events_file(events)?;
    let events =
        sonde::events_from_records(&records).with_context(|| events.display().to_string())?;
    let capacity = manifest.telemetry.buffer_capacity;
    let mut builder = Telemetry::builder(manifest.clone());
    let (mode, why) = effective_mode(&manifest);
    if mode == Mode::Off {
        eprintln!(
            "note: telemetry is off ({}); showing what local mode would report, writing nothing",
            why.unwrap_or("mode = \"off\" in the manifest")
        );
        builder = builder.mode(Mode::Local).ephemeral(true);
    }
    let telemetry = builder.start()?;
    // Record in chunks that fit the ring, so a preview never drops events.
    for chunk in events.chunks((capacity / 2).max(1)) {
        for e in chunk {
            telemetry.record(*e);
        }
        telemetry.flush()?;
    }
    let report = telemetry.report()?;
    match c.format {
        Format::Json => {
            let bytes = report.to_json();
            let mut out = std::io::stdout().lock();
            std::io::Write::write_all(&mut out, &bytes)?;
            if out.is_terminal() {
                std::io::Write::write_all(&mut out, b"\n")?;
            }
        }
        Format::Text => output::print_report(&report),
    }
    Ok(ExitCode::SUCCESS)
}
