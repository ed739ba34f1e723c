//! `sonde plugin new NAME [--lang rust|python|js|c]`: a collector that
//! builds and previews out of the box. In Rust, a crate added to the plugins
//! workspace; in Python, JavaScript or C, a folder holding `plugin.py`,
//! `plugin.js` or `plugin.c`, which `cargo xtask plugins` finds and builds
//! with the language's pinned toolchain. Every template counts
//! `http.request` events per status class, with the same names.

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

const PLUGIN_PY: &str = r#""""`{name}`: counts `http.request` events per status class.

Edit `info` to declare what you read and report, `on_events` to count, then
`cargo xtask plugins`, `sonde pin` and `sonde preview` to try it. The SDK is
`sdk/python/sonde_sdk` (guide: docs/python.md).
"""

from sonde_sdk import Batch, Counters, FieldType, PluginInfo, counter, event, export

CLASSES = ("1xx", "2xx", "3xx", "4xx", "5xx")


class Plugin:
    """The collector's state: increments since the last `collect`."""

    def __init__(self) -> None:
        self.counters = Counters()

    @staticmethod
    def info() -> PluginInfo:
        return PluginInfo(
            name="{name}",
            version="0.1.0",
            description="Requests per status class.",
            # Column 0 of every batch is `status`.
            events=[event("http.request", [("status", FieldType.INT)])],
            # Metric 0, labelled by `class`.
            metrics=[counter("{metric}", "1", "Requests per status class.", ["class"])],
        )

    def on_events(self, batch: Batch) -> None:
        # Each row stands for `weight` identical events (the host merges them).
        for status, weight in zip(batch.int(0), batch.weights()):
            ok = status is not None and 100 <= status <= 599
            self.counters.add(0, [CLASSES[status // 100 - 1] if ok else "other"], weight)

    def collect(self, out: list) -> None:
        self.counters.drain(out)


# componentize-py exports the class named `Collector`; `export` keeps one
# `Plugin` between calls.
Collector = export(Plugin)
"#;

const PLUGIN_JS: &str = r#"/**
 * `{name}`: counts `http.request` events per status class.
 *
 * Edit `info` to declare what you read and report, `onEvents` to count, then
 * `cargo xtask plugins`, `sonde pin` and `sonde preview` to try it. The build
 * puts the SDK (`sdk/js/sonde.js`, guide: docs/javascript.md) beside this file.
 */

import { Counters, counter, event, exportCollector } from './sonde.js';

const CLASSES = ['1xx', '2xx', '3xx', '4xx', '5xx'];

class Plugin {
  /** Increments since the last `collect`. */
  counters = new Counters();

  static info() {
    return {
      name: '{name}',
      version: '0.1.0',
      description: 'Requests per status class.',
      // Column 0 of every batch is `status`.
      events: [event('http.request', [['status', 'int']])],
      // Metric 0, labelled by `class`.
      metrics: [counter('{metric}', '1', 'Requests per status class.', ['class'])],
    };
  }

  onEvents(batch) {
    // Each row stands for `weight` identical events (the host merges them).
    const weights = batch.weights();
    batch.int(0).forEach((status, i) => {
      const ok = status !== null && status >= 100 && status <= 599;
      this.counters.add(0, [ok ? CLASSES[Math.floor(status / 100) - 1] : 'other'], weights[i]);
    });
  }

  collect(out) {
    this.counters.drain(out);
  }
}

export const collector = exportCollector(Plugin);
"#;

const PLUGIN_C: &str = r#"/* `{name}`: counts `http.request` events per status class.
 *
 * Edit `sonde_info` to declare what you read and report, `sonde_on_events` to
 * count, then `cargo xtask plugins`, `sonde pin` and `sonde preview` to try
 * it. The SDK is `sdk/c/sonde.h` (guide: docs/c.md). */

#include "sonde.h"

static const char *const CLASSES[] = {"1xx", "2xx", "3xx", "4xx", "5xx", "other"};

/* Increments since the last `collect`. */
static sonde_counters counters;

void sonde_info(sonde_info_builder *info) {
    sonde_info_set(info, "{name}", "0.1.0", "Requests per status class.");
    /* Column 0 of every batch is `status`. */
    sonde_info_event(info, "http.request", 1, (sonde_field[]){{"status", SONDE_INT}});
    /* Metric 0, labelled by `class`. */
    sonde_info_counter(info, "{metric}", "1", "Requests per status class.", 1,
                       (const char *[]){"class"});
}

void sonde_on_events(const sonde_batch *batch) {
    /* Each row stands for `weight` identical events (the host merges them). */
    for (size_t i = 0; i < sonde_batch_len(batch); i++) {
        int64_t status;
        size_t class = 5;
        if (sonde_batch_int(batch, 0, i, &status) && status >= 100 && status <= 599) {
            class = (size_t)(status / 100 - 1);
        }
        sonde_counters_add(&counters, 0, 1, (const char *[]){CLASSES[class]},
                           (double)sonde_batch_weight(batch, i));
    }
}

void sonde_collect(sonde_points *out) {
    sonde_counters_drain(&counters, out);
}
"#;

/// The language of a scaffolded collector.
#[derive(Copy, Clone, Debug, PartialEq, Eq, clap::ValueEnum)]
pub(crate) enum Lang {
    /// A crate using `sonde-sdk`, in the plugins cargo workspace.
    Rust,
    /// `plugin.py`, built with componentize-py `--stub-wasi`.
    Python,
    /// `plugin.js`, built with componentize-js, every WASI feature disabled.
    Js,
    /// `plugin.c`, built with `wit-bindgen c` and clang for wasm32, no libc.
    C,
}

/// Creates `dir/NAME`: a crate added to `dir/Cargo.toml`'s workspace
/// members (Rust), or a folder with the plugin's one source file.
pub(crate) fn new_plugin(name: &str, dir: &Path, lang: Lang) -> Result<ExitCode> {
    let valid = !name.is_empty()
        && name.len() <= sonde_core::limits::MAX_PLUGIN_NAME_LEN
        && name.starts_with(|c: char| c.is_ascii_lowercase())
        && name.chars().all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '-');
    if !valid {
        bail!("`{name}` is not a plugin name: a-z first, then a-z, 0-9 and `-`");
    }
    let (file, template) = match lang {
        Lang::Rust => return new_crate(name, dir),
        Lang::Python => ("plugin.py", PLUGIN_PY),
        Lang::Js => ("plugin.js", PLUGIN_JS),
        Lang::C => ("plugin.c", PLUGIN_C),
    };
    let plugin_dir = dir.join(name);
    if plugin_dir.exists() {
        bail!("{} already exists", plugin_dir.display());
    }
    std::fs::create_dir_all(&plugin_dir)
        .with_context(|| format!("creating {}", plugin_dir.display()))?;
    let metric = format!("{}.requests", name.replace('-', "_"));
    std::fs::write(
        plugin_dir.join(file),
        template.replace("{name}", name).replace("{metric}", &metric),
    )?;
    println!("created {}", plugin_dir.join(file).display());
    next_steps(name);
    Ok(ExitCode::SUCCESS)
}

/// What to do after scaffolding `name`.
fn next_steps(name: &str) {
    let file = name.replace('-', "_");
    println!("next:");
    println!("  cargo xtask plugins                      # builds target/plugins/{file}.wasm");
    println!("  add to your manifest:");
    println!(
        "    [[plugin]]\n    name = \"{name}\"\n    path = \"target/plugins/{file}.wasm\"\n    sha256 = \"\"\n    allow = true\n    events = [\"http.request\"]"
    );
    println!(
        "  sonde pin -m sonde.toml && sonde preview -m sonde.toml --events examples/events.jsonl"
    );
}

/// A Rust crate in the plugins workspace.
fn new_crate(name: &str, dir: &Path) -> Result<ExitCode> {
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
    println!("created {} and added it to {}", crate_dir.display(), workspace.display());
    next_steps(name);
    Ok(ExitCode::SUCCESS)
}
