//! `sonde`: the operator's command line.
//!
//! Exit codes: 0 success; 1 the command ran and found problems (a refused
//! plugin in `check`); 2 bad usage or an unreadable manifest or events file.

mod bench;
mod consent;
mod output;
mod pin;
mod scaffold;
mod sent;

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
    /// Write the current SHA-256 of each plugin file into the manifest, once
    /// its declared events, fields and metrics are accepted: a plugin whose
    /// declarations grew since its last pin is shown and pinned only with
    /// `--accept`. Writes nothing into a manifest `check` would refuse.
    Pin {
        /// The manifest.
        #[arg(short, long, value_name = "FILE")]
        manifest: PathBuf,
        /// Only pin this plugin (repeatable).
        #[arg(long = "plugin", value_name = "NAME")]
        plugins: Vec<String>,
        /// Accept declarations that grew (new event kinds, fields, metrics
        /// or label keys) and pin anyway.
        #[arg(long)]
        accept: bool,
    },
    /// List every plugin: allowed, denied or refused and why, with its metrics.
    List(Common),
    /// Show mode, endpoint, last and next send, spool, switched-off plugins
    /// and whether telemetry was stopped. Reads the state directory only.
    Status(Common),
    /// Build one report now (from `--events` if given) and send it with
    /// whatever is spooled; print the endpoint's answer and the directives
    /// applied. Needs `mode = "on"`; rate limits still apply.
    Send {
        #[command(flatten)]
        common: Common,
        /// Events to record first, one JSON object a line.
        #[arg(short, long, value_name = "FILE.jsonl")]
        events: Option<PathBuf>,
    },
    /// List every request that left this host (the record kept in the state
    /// directory: time, endpoint, size, answer), or print one exactly as sent.
    Sent {
        #[command(flatten)]
        common: Common,
        /// Only the newest N requests.
        #[arg(long, value_name = "N")]
        last: Option<usize>,
        /// Print request ID (`last`: the newest) decompressed, exactly as the
        /// endpoint decoded it; redirect it to keep the exact bytes.
        #[arg(long, value_name = "ID")]
        show: Option<String>,
        /// With --show: the gzip bytes exactly as they went on the wire.
        #[arg(long, requires = "show", conflicts_with = "answer")]
        gzip: bool,
        /// With --show: the endpoint's answer (its body, at most 64 KiB).
        #[arg(long, requires = "show")]
        answer: bool,
    },
    /// Run one plugin in the production host configuration over events and
    /// print its cost: time per event, batch latency percentiles, peak memory.
    Bench {
        #[command(flatten)]
        common: Common,
        /// The plugin to measure (its manifest name).
        #[arg(long, value_name = "NAME")]
        plugin: String,
        /// Events, one JSON object a line; replayed until `--min-events`.
        #[arg(short, long, value_name = "FILE.jsonl")]
        events: PathBuf,
        /// Events to run at least.
        #[arg(long, default_value_t = 100_000)]
        min_events: usize,
    },
    /// Plugin authoring: `sonde plugin new NAME` scaffolds a collector.
    #[command(subcommand)]
    Plugin(PluginCommand),
    /// Run the allowed plugins over events and print the report they produce.
    Preview {
        #[command(flatten)]
        common: Common,
        /// Events, one JSON object a line.
        #[arg(short, long, value_name = "FILE.jsonl")]
        events: PathBuf,
        /// Print the OTLP body instead: the protobuf (before gzip) that a
        /// `protocol = "otlp"` endpoint receives. Binary: redirect it.
        #[arg(long)]
        otlp: bool,
    },
}

#[derive(Subcommand, Debug)]
enum PluginCommand {
    /// Create a collector that builds and previews out of the box: a crate
    /// added to the plugins workspace (Rust), or a folder holding
    /// `plugin.py`, `plugin.js` or `plugin.c`, which `cargo xtask plugins`
    /// builds with the language's pinned toolchain into
    /// `target/plugins/NAME.wasm` (dashes as underscores).
    New {
        /// Crate and plugin name, e.g. `status-classes`.
        name: String,
        /// The plugins workspace (the folder the plugin is created in).
        #[arg(long, default_value = "plugins")]
        dir: PathBuf,
        /// The language: `rust` (sonde-sdk), `python` (componentize-py),
        /// `js` (componentize-js) or `c` (wit-bindgen c, clang). Every one
        /// gives the same kind of component: the sonde:collector world, no
        /// WASI import.
        #[arg(long, value_enum, default_value_t = scaffold::Lang::Rust)]
        lang: scaffold::Lang,
    },
}

#[derive(clap::Args, Debug)]
pub(crate) struct Common {
    /// The manifest.
    #[arg(short, long, value_name = "FILE")]
    pub(crate) manifest: PathBuf,
    /// Output format; `json` is machine-readable (for `preview`, exactly the
    /// bytes a report carries).
    #[arg(long, value_enum, default_value_t = Format::Text)]
    pub(crate) format: Format,
}

#[derive(Copy, Clone, Debug, PartialEq, Eq, ValueEnum)]
pub(crate) enum Format {
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
            // An error may quote a file's or a plugin's text: escaped.
            eprintln!("error: {}", output::e(&format!("{e:#}")));
            ExitCode::from(2)
        }
    }
}

fn run(cli: Cli) -> Result<ExitCode> {
    match cli.command {
        Command::Check(c) => check(&c),
        Command::Pin { manifest, plugins, accept } => pin::pin(&manifest, &plugins, accept),
        Command::List(c) => list(&c),
        Command::Preview { common, events, otlp } => preview(&common, &events, otlp),
        Command::Status(c) => status(&c),
        Command::Plugin(PluginCommand::New { name, dir, lang }) => {
            scaffold::new_plugin(&name, &dir, lang)
        }
        Command::Bench { common, plugin, events, min_events } => {
            bench::bench(&common, &plugin, &events, min_events)
        }
        Command::Send { common, events } => send(&common, events.as_deref()),
        Command::Sent { common, last, show, gzip, answer } => {
            let part = match (gzip, answer) {
                (true, _) => sent::Part::Gzip,
                (_, true) => sent::Part::Answer,
                _ => sent::Part::Body,
            };
            sent::sent(&common, last, show.as_deref(), part)
        }
    }
}

pub(crate) fn load(path: &Path) -> Result<Manifest> {
    Ok(Manifest::load(path)?)
}

/// How long to wait for every plugin of `manifest` to load: each one's
/// compile budget, as if they compiled one after another, and a margin.
fn load_wait(manifest: &Manifest) -> std::time::Duration {
    let budgets: u64 = manifest.plugins.iter().map(|p| p.limits.compile_timeout_secs).sum();
    std::time::Duration::from_secs(budgets + 30)
}

/// Waits for every plugin to load (a plugin still compiling would show as
/// `loading` and miss the events recorded before it runs).
fn wait_loaded(telemetry: &Telemetry, manifest: &Manifest) -> Result<()> {
    if !telemetry.wait_until_loaded(load_wait(manifest))? {
        eprintln!("warning: some plugins were still loading after {:?}", load_wait(manifest));
    }
    Ok(())
}

/// A runtime for inspecting plugins: local mode, writing nothing but the
/// compile cache it shares with the server (so what the server compiled is
/// not compiled again, and the other way round).
fn inspect(manifest: Manifest) -> Result<Vec<sonde::PluginOverview>> {
    let telemetry = Telemetry::builder(manifest.clone())
        .mode(Mode::Local)
        .ephemeral(true)
        .shared_compile_cache(true)
        .start()?;
    wait_loaded(&telemetry, &manifest)?;
    Ok(telemetry.plugins()?)
}

fn check(c: &Common) -> Result<ExitCode> {
    let manifest = load(&c.manifest)?;
    let plugins = inspect(manifest)?;
    let accepted = consent::Accepted::load(&c.manifest)?;
    // Each running plugin's declarations against those accepted at its pin.
    let declarations: Vec<serde_json::Value> = plugins
        .iter()
        .filter(|p| p.state == PluginState::Running)
        .map(|p| {
            let now = consent::Declarations::of(p);
            let (status, changes) = match accepted.plugins.get(&p.name) {
                None => ("unrecorded", Vec::new()),
                Some(a) => {
                    let changes = consent::diff(&a.declarations, &now);
                    (if changes.is_empty() { "accepted" } else { "differs" }, changes)
                }
            };
            serde_json::json!({ "plugin": p.name, "status": status, "changes": changes })
        })
        .collect();
    let differ = declarations.iter().filter(|d| d["status"] == "differs").count();
    let bad = plugins
        .iter()
        .filter(|p| {
            matches!(p.state, PluginState::Refused | PluginState::Failed | PluginState::Loading)
        })
        .count()
        + differ;
    match c.format {
        Format::Json => output::print_json(&serde_json::json!({
            "manifest": c.manifest,
            "ok": bad == 0,
            "plugins": plugins,
            "declarations": declarations,
        })),
        Format::Text => {
            for p in &plugins {
                let mark = match p.state {
                    PluginState::Running => "ok     ",
                    PluginState::Denied => "denied ",
                    _ => "REFUSED",
                };
                // One line per plugin whatever its reason holds: a refused
                // plugin stays `REFUSED` on its own line.
                println!(
                    "{mark} {}{}",
                    output::e(&p.name),
                    p.reason.as_deref().map(|r| format!(": {}", output::e(r))).unwrap_or_default()
                );
            }
            output::print_declarations(&declarations, &c.manifest);
            println!(
                "{}: {} plugin(s), {} running, {} problem(s)",
                output::e(&c.manifest.display().to_string()),
                plugins.len(),
                plugins.iter().filter(|p| p.state == PluginState::Running).count(),
                bad
            );
        }
    }
    Ok(if bad == 0 { ExitCode::SUCCESS } else { ExitCode::from(1) })
}

fn list(c: &Common) -> Result<ExitCode> {
    let plugins = inspect(load(&c.manifest)?)?;
    match c.format {
        Format::Json => output::print_json(&plugins),
        Format::Text => output::print_plugins(&plugins),
    }
    Ok(ExitCode::SUCCESS)
}

fn status(c: &Common) -> Result<ExitCode> {
    let manifest = load(&c.manifest)?;
    let status = sonde::status(&manifest);
    match c.format {
        Format::Json => output::print_json(&status),
        Format::Text => output::print_status(&status, &manifest),
    }
    Ok(ExitCode::SUCCESS)
}

/// Records the events of `path` into `telemetry` without dropping any.
fn record_file(telemetry: &Telemetry, path: &Path, capacity: usize) -> Result<()> {
    let records = sonde_core::read_events_file(path)?;
    let events =
        sonde::events_from_records(&records).with_context(|| path.display().to_string())?;
    // Record in chunks that fit the ring, so no event is dropped.
    for chunk in events.chunks((capacity / 2).max(1)) {
        for e in chunk {
            telemetry.record(e);
        }
        telemetry.flush()?;
    }
    Ok(())
}

fn send(c: &Common, events: Option<&Path>) -> Result<ExitCode> {
    let manifest = load(&c.manifest)?;
    let (mode, why) = effective_mode(&manifest);
    if mode != Mode::On {
        let why = why.map_or_else(|| format!("mode = \"{mode}\" in the manifest"), str::to_string);
        anyhow::bail!("{}: nothing is sent: {why}", c.manifest.display());
    }
    let capacity = manifest.telemetry.buffer_capacity;
    let inspected = manifest.clone();
    let telemetry = Telemetry::builder(manifest).start()?;
    if telemetry.mode() != Mode::On {
        anyhow::bail!("telemetry is stopped for good; see `sonde status`");
    }
    if let Some(path) = events {
        wait_loaded(&telemetry, &inspected)?;
        record_file(&telemetry, path, capacity)?;
    }
    let outcome = telemetry.send_now()?;
    let ok = outcome.status.is_some_and(|s| (200..300).contains(&s));
    match c.format {
        Format::Json => output::print_json(&outcome),
        Format::Text => output::print_send(&outcome),
    }
    Ok(if ok { ExitCode::SUCCESS } else { ExitCode::from(1) })
}

fn preview(c: &Common, events: &Path, otlp: bool) -> Result<ExitCode> {
    let manifest = load(&c.manifest)?;
    let capacity = manifest.telemetry.buffer_capacity;
    // Local, whatever the manifest says: a preview never sends.
    let mut builder = Telemetry::builder(manifest.clone()).mode(Mode::Local);
    let (mode, why) = effective_mode(&manifest);
    if mode == Mode::Off {
        eprintln!(
            "note: telemetry is off ({}); showing what local mode would report, writing nothing",
            why.unwrap_or("mode = \"off\" in the manifest")
        );
        builder = builder.ephemeral(true);
    }
    let telemetry = builder.start()?;
    wait_loaded(&telemetry, &manifest)?;
    record_file(&telemetry, events, capacity)?;
    let report = telemetry.report()?;
    if otlp {
        let mut out = std::io::stdout().lock();
        if out.is_terminal() {
            anyhow::bail!("--otlp writes binary protobuf: redirect it to a file or a pipe");
        }
        std::io::Write::write_all(
            &mut out,
            &sonde::otlp_body(
                std::slice::from_ref(&report),
                &manifest.telemetry.delivery.service_name,
            ),
        )?;
        return Ok(ExitCode::SUCCESS);
    }
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
