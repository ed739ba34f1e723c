//! `sonde plugin new NAME`: a collector crate that builds and previews out of
//! the box, added to the plugins workspace.

use std::path::Path;
use std::process::ExitCode;

use anyhow::{Context, Result, bail};

const CARGO_TOML: &str = r#"[package]
name = "{name}"
description = "{name}: a sonde metric collector."
version.workspace = true
edition.workspace = true
rust-version.workspace = true
license.workspace = true
publish.workspace = true

[lib]
crate-type = ["cdylib"]

[dependencies]
sonde-sdk.workspace = true

[lints]
workspace = true
"#;

const LIB_RS: &str = r#"//! `{name}`: counts `http.request` events per status class.
//!
//! Edit `info` to declare what you read and report, `on_events` to count,
//! then `cargo xtask plugins`, `sonde pin` and `sonde preview` to try it.

use sonde_sdk::{Batch, Collector, Counters, EventDecl, FieldType, MetricDecl, MetricPoint, PluginInfo};

/// The collector's state: increments since the last `collect`.
#[derive(Debug, Default)]
pub struct Plugin {
    counters: Counters,
}

impl Collector for Plugin {
    fn info() -> PluginInfo {
        PluginInfo {
            name: "{name}".into(),
            version: env!("CARGO_PKG_VERSION").into(),
            description: "Requests per status class.".into(),
            // Column 0 of every batch is `status`.
            events: vec![EventDecl::new("http.request", &[("status", FieldType::Int)])],
            // Metric 0, labelled by `class`.
            metrics: vec![MetricDecl::counter("{metric}", "1", "Requests per status class.", &["class"])],
        }
    }

    fn new() -> Self {
        Self::default()
    }

    fn on_events(&mut self, batch: &Batch<'_>) {
        // Each row stands for `weight` identical events (the host merges them).
        for (status, weight) in batch.int(0).iter().zip(batch.weights()) {
            let class = match status {
                Some(s @ 100..=599) => ["1xx", "2xx", "3xx", "4xx", "5xx"][(s / 100 - 1) as usize],
                _ => "other",
            };
            self.counters.add(0, &[class], weight as f64);
        }
    }

    fn collect(&mut self, out: &mut Vec<MetricPoint>) {
        self.counters.drain(out);
    }
}

sonde_sdk::export_plugin!(Plugin);
"#;

/// Creates `dir/NAME` and adds it to `dir/Cargo.toml`'s workspace members.
pub(crate) fn new_plugin(name: &str, dir: &Path) -> Result<ExitCode> {
    let valid = !name.is_empty()
        && name.len() <= sonde_core::limits::MAX_PLUGIN_NAME_LEN
        && name.starts_with(|c: char| c.is_ascii_lowercase())
        && name.chars().all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '-');
    if !valid {
        bail!("`{name}` is not a plugin name: a-z first, then a-z, 0-9 and `-`");
    }
    let workspace = dir.join("Cargo.toml");
    let text = std::fs::read_to_string(&workspace)
        .with_context(|| format!("{}: the plugins workspace (use --dir)", workspace.display()))?;
    let mut doc: toml_edit::DocumentMut =
        text.parse().with_context(|| format!("{} is not valid TOML", workspace.display()))?;
    let Some(members) =
        doc.get_mut("workspace").and_then(|w| w.get_mut("members")).and_then(|m| m.as_array_mut())
    else {
        bail!("{}: no `[workspace] members` list", workspace.display());
    };
    let crate_dir = dir.join(name);
    if crate_dir.exists() || members.iter().any(|m| m.as_str() == Some(name)) {
        bail!("{} already exists", crate_dir.display());
    }
    members.push(name);
    std::fs::create_dir_all(crate_dir.join("src"))?;
    std::fs::write(crate_dir.join("Cargo.toml"), CARGO_TOML.replace("{name}", name))?;
    let metric = format!("{}.requests", name.replace('-', "_"));
    std::fs::write(
        crate_dir.join("src/lib.rs"),
        LIB_RS.replace("{name}", name).replace("{metric}", &metric),
    )?;
    std::fs::write(&workspace, doc.to_string())?;
    let file = name.replace('-', "_");
    println!("created {} and added it to {}", crate_dir.display(), workspace.display());
    println!("next:");
    println!("  cargo xtask plugins                      # builds target/plugins/{file}.wasm");
    println!("  add to your manifest:");
    println!(
        "    [[plugin]]\n    name = \"{name}\"\n    path = \"target/plugins/{file}.wasm\"\n    sha256 = \"\"\n    allow = true\n    events = [\"http.request\"]"
    );
    println!(
        "  sonde pin -m sonde.toml && sonde preview -m sonde.toml --events examples/events.jsonl"
    );
    Ok(ExitCode::SUCCESS)
}
