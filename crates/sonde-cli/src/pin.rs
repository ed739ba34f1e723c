//! `sonde pin`: write each plugin file's SHA-256 into the manifest, keeping
//! the file's comments and layout, once the operator has seen what the
//! plugin would collect.
//!
//! In order: the manifest must pass every check `sonde check` makes (a
//! missing or placeholder `sha256` aside), or nothing is written and the
//! error names file, line and key; each allowed plugin is loaded from its
//! current file (local, ephemeral, as `sonde check` does) and its declared
//! event kinds, fields and metrics (with label keys) are compared with the
//! ones accepted before (`consent.rs`). Declarations that grew are printed
//! and pinned only with `--accept`; a plugin that cannot be loaded is not
//! pinned. A plugin's first pin records its declarations as accepted.

use std::path::Path;
use std::process::ExitCode;

use anyhow::{Context, Result, bail};
use sha2::{Digest, Sha256};
use sonde::{Manifest, PluginState};

use crate::consent::{Accepted, AcceptedPlugin, Change, Declarations, diff, everything};
use crate::output::e;

/// What pinning one plugin came to.
enum Outcome {
    /// Pin (and record) written, or nothing to change.
    Done,
    /// Left as it was: why.
    Held,
}

pub(crate) fn pin(manifest: &Path, only: &[String], accept: bool) -> Result<ExitCode> {
    let text = sonde_core::limits::read_capped(
        manifest,
        sonde_core::limits::MAX_MANIFEST_BYTES,
        "manifest",
    )
    .map_err(|m| anyhow::anyhow!("{}: {m}", manifest.display()))?;
    // The same checks as `sonde check`; only the pins may still be missing.
    let parsed = Manifest::parse_unpinned(&text, manifest)?;
    for name in only {
        if parsed.plugin(name).is_none() {
            bail!("{}: no plugin named `{}`", manifest.display(), e(name));
        }
    }
    let mut doc: toml_edit::DocumentMut =
        text.parse().with_context(|| format!("{} is not valid TOML", manifest.display()))?;
    let Some(tables) = doc.get_mut("plugin").and_then(|p| p.as_array_of_tables_mut()) else {
        bail!("{}: no [[plugin]] entries to pin", manifest.display());
    };
    // The plugins to pin, with their files' hashes now.
    let mut inspected = parsed.clone();
    inspected.plugins.clear();
    let mut hashes = Vec::new();
    for spec in &parsed.plugins {
        if !only.is_empty() && !only.contains(&spec.name) {
            continue;
        }
        let bytes = sonde_core::limits::read_file_capped(&spec.path, sonde::MAX_PLUGIN_BYTES)
            .with_context(|| format!("{}: cannot read {}", spec.path_at, spec.path.display()))?;
        let sha = hex::encode(Sha256::digest(&bytes));
        let mut s = spec.clone();
        s.sha256 = sha.clone();
        inspected.plugins.push(s);
        hashes.push((spec.name.clone(), spec.sha256.clone(), sha));
    }
    let overviews = crate::inspect(inspected)?;
    let mut accepted = Accepted::load(manifest)?;
    let now = humantime_now();
    let (mut pins, mut records, mut held) = (0, 0, 0);
    for ((name, old, sha), overview) in hashes.iter().zip(&overviews) {
        let outcome = if overview.state == PluginState::Denied {
            println!(
                "{}: denied by the manifest: its declarations are not read (it never runs)",
                e(name)
            );
            Outcome::Done
        } else if overview.state != PluginState::Running {
            let why = overview.reason.as_deref().unwrap_or("it did not load");
            println!("{}: NOT PINNED: {}", e(name), e(why));
            Outcome::Held
        } else {
            let declared = Declarations::of(overview);
            let before = accepted.plugins.get(name.as_str());
            let changes =
                before.map_or_else(|| everything(&declared), |b| diff(&b.declarations, &declared));
            let grows = changes.iter().any(|c| c.grows);
            match before {
                None => println!("{}: first pin: accepting what it declares:", e(name)),
                Some(_) if changes.is_empty() => {}
                Some(b) if grows && !accept => println!(
                    "{}: NOT PINNED: its declarations grew since {} (version {}):",
                    e(name),
                    e(&b.accepted),
                    e(&b.version)
                ),
                Some(b) => println!("{}: declarations changed since {}:", e(name), e(&b.accepted)),
            }
            print_changes(&changes);
            if grows && before.is_some() && !accept {
                println!(
                    "  review them, then `sonde pin -m {} --accept --plugin {}`",
                    e(&manifest.display().to_string()),
                    e(name)
                );
                Outcome::Held
            } else {
                if before.is_none_or(|b| b.declarations != declared || b.sha256 != *sha) {
                    accepted.plugins.insert(
                        name.clone(),
                        AcceptedPlugin {
                            sha256: sha.clone(),
                            version: overview.version.clone(),
                            accepted: now.clone(),
                            declarations: declared,
                        },
                    );
                    records += 1;
                }
                Outcome::Done
            }
        };
        match outcome {
            Outcome::Held => held += 1,
            Outcome::Done if old == sha => println!("{}: already pinned", e(name)),
            Outcome::Done => {
                let Some(table) = tables
                    .iter_mut()
                    .find(|t| t.get("name").and_then(|v| v.as_str()) == Some(name.as_str()))
                else {
                    continue;
                };
                table["sha256"] = toml_edit::value(sha.clone());
                pins += 1;
                let old = if old.is_empty() { "(none)" } else { old.as_str() };
                println!("{}: {old} -> {sha}", e(name));
            }
        }
    }
    if pins > 0 {
        std::fs::write(manifest, doc.to_string())
            .with_context(|| format!("cannot write {}", manifest.display()))?;
    }
    if records > 0 {
        accepted.save(manifest)?;
    }
    println!(
        "{}: {pins} pin(s) written, {records} declaration record(s) updated in {}{}",
        e(&manifest.display().to_string()),
        e(&crate::consent::path_for(manifest).display().to_string()),
        if held > 0 { format!(", {held} plugin(s) not pinned") } else { String::new() }
    );
    Ok(if held > 0 { ExitCode::from(1) } else { ExitCode::SUCCESS })
}

fn print_changes(changes: &[Change]) {
    for c in changes {
        println!("  {}", e(&c.what));
    }
}

fn humantime_now() -> String {
    humantime::format_rfc3339_seconds(std::time::SystemTime::now()).to_string()
}
