//! `sonde pin`: write each plugin file's SHA-256 into the manifest, keeping
//! the file's comments and layout.

use std::path::Path;
use std::process::ExitCode;

use anyhow::{Context, Result, bail};
use sha2::{Digest, Sha256};
use sonde::Manifest;

pub(crate) fn pin(manifest: &Path, only: &[String]) -> Result<ExitCode> {
    let text = std::fs::read_to_string(manifest)
        .with_context(|| format!("cannot read {}", manifest.display()))?;
    let mut doc: toml_edit::DocumentMut =
        text.parse().with_context(|| format!("{} is not valid TOML", manifest.display()))?;
    let base = Manifest::base_dir(manifest);
    let Some(plugins) = doc.get_mut("plugin").and_then(|p| p.as_array_of_tables_mut()) else {
        bail!("{}: no [[plugin]] entries to pin", manifest.display());
    };
    let mut changed = 0;
    for (i, table) in plugins.iter_mut().enumerate() {
        let name = table.get("name").and_then(|v| v.as_str()).unwrap_or("?").to_string();
        if !only.is_empty() && !only.contains(&name) {
            continue;
        }
        let Some(path) = table.get("path").and_then(|v| v.as_str()) else {
            bail!("{}: key `plugin[{i}].path`: missing", manifest.display());
        };
        let file = base.join(path);
        let bytes = sonde_core::limits::read_file_capped(&file, sonde::MAX_PLUGIN_BYTES)
            .with_context(|| {
                format!(
                    "{}: key `plugin[{i}].path`: cannot read {}",
                    manifest.display(),
                    file.display()
                )
            })?;
        let sha = hex::encode(Sha256::digest(&bytes));
        let old = table.get("sha256").and_then(|v| v.as_str()).map(str::to_string);
        if old.as_deref() == Some(sha.as_str()) {
            println!("{name}: already pinned");
            continue;
        }
        table["sha256"] = toml_edit::value(sha.clone());
        changed += 1;
        println!("{name}: {} -> {sha}", old.as_deref().unwrap_or("(none)"));
    }
    if changed > 0 {
        std::fs::write(manifest, doc.to_string())
            .with_context(|| format!("cannot write {}", manifest.display()))?;
    }
    println!("{}: {changed} pin(s) written", manifest.display());
    Ok(ExitCode::SUCCESS)
}
