//! What the operator accepted each plugin to collect: its declared event
//! kinds (with the fields it reads) and metrics (with their label keys), as
//! they were when `sonde pin` last wrote its pin. Kept beside the manifest
//! (`sonde.toml` → `sonde.accepted.json`), so it can be reviewed and kept
//! in version control with it.
//!
//! `sonde pin` compares a plugin's declarations with the accepted ones and
//! writes a new pin over grown declarations only with `--accept`; `sonde
//! check` reports a plugin whose declarations differ from the accepted ones.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use anyhow::{Context, Result};
use serde::{Deserialize, Serialize};
use sonde::{Manifest, PluginOverview};

/// Largest accepted-declarations file read: 64 plugins' declarations are
/// well under this.
const MAX_FILE: u64 = 4 * 1024 * 1024;

/// The file: plugin name → what was accepted.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub(crate) struct Accepted {
    pub(crate) plugins: BTreeMap<String, AcceptedPlugin>,
}

/// One plugin's accepted declarations.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub(crate) struct AcceptedPlugin {
    /// The pin they were accepted with.
    pub(crate) sha256: String,
    /// The version it declared.
    pub(crate) version: String,
    /// When, RFC 3339.
    pub(crate) accepted: String,
    #[serde(flatten)]
    pub(crate) declarations: Declarations,
}

/// What a plugin declares it reads and reports.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub(crate) struct Declarations {
    /// Event kind → field → type (`int`, `float`, `str`).
    pub(crate) events: BTreeMap<String, BTreeMap<String, String>>,
    /// Metric name → kind and label keys.
    pub(crate) metrics: BTreeMap<String, DeclaredMetric>,
}

/// A metric as accepted.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub(crate) struct DeclaredMetric {
    pub(crate) kind: String,
    pub(crate) label_keys: Vec<String>,
}

impl Declarations {
    /// What `p` declares (empty unless it loaded).
    pub(crate) fn of(p: &PluginOverview) -> Declarations {
        Declarations {
            events: p
                .events
                .iter()
                .map(|e| {
                    let fields = e.fields.iter().map(|f| (f.name.clone(), f.ty.to_string()));
                    (e.kind.clone(), fields.collect())
                })
                .collect(),
            metrics: p
                .metrics
                .iter()
                .map(|m| {
                    let kind = m.kind.as_str().to_string();
                    (m.name.clone(), DeclaredMetric { kind, label_keys: m.label_keys.clone() })
                })
                .collect(),
        }
    }
}

/// One difference between accepted and current declarations.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub(crate) struct Change {
    /// More than was accepted: needs `--accept`.
    pub(crate) grows: bool,
    /// In words, e.g. `+ metric http.user_agents (counter) by family`.
    pub(crate) what: String,
}

/// How `now` differs from `before`, growth first.
pub(crate) fn diff(before: &Declarations, now: &Declarations) -> Vec<Change> {
    let mut out = Vec::new();
    let mut push = |grows: bool, what: String| out.push(Change { grows, what });
    for (kind, fields) in &now.events {
        match before.events.get(kind) {
            None => {
                let list: Vec<String> = fields.iter().map(|(f, t)| format!("{f} ({t})")).collect();
                push(true, format!("+ event kind {kind}, reading {}", or_none(&list)));
            }
            Some(old) => {
                for (f, t) in fields {
                    match old.get(f) {
                        None => push(true, format!("+ field {f} ({t}) of {kind}")),
                        Some(o) if o != t => {
                            push(true, format!("~ field {f} of {kind}: {o} -> {t}"))
                        }
                        Some(_) => {}
                    }
                }
                for f in old.keys().filter(|f| !fields.contains_key(*f)) {
                    push(false, format!("- field {f} of {kind}"));
                }
            }
        }
    }
    for kind in before.events.keys().filter(|k| !now.events.contains_key(*k)) {
        push(false, format!("- event kind {kind}"));
    }
    for (name, m) in &now.metrics {
        match before.metrics.get(name) {
            None => push(true, format!("+ metric {name} ({}){}", m.kind, by(&m.label_keys))),
            Some(o) => {
                if o.kind != m.kind {
                    push(true, format!("~ metric {name}: {} -> {}", o.kind, m.kind));
                }
                for k in m.label_keys.iter().filter(|k| !o.label_keys.contains(k)) {
                    push(true, format!("+ label key {k} of metric {name}"));
                }
                for k in o.label_keys.iter().filter(|k| !m.label_keys.contains(k)) {
                    push(false, format!("- label key {k} of metric {name}"));
                }
            }
        }
    }
    for name in before.metrics.keys().filter(|n| !now.metrics.contains_key(*n)) {
        push(false, format!("- metric {name}"));
    }
    out.sort_by_key(|c| !c.grows);
    out
}

fn or_none(list: &[String]) -> String {
    if list.is_empty() { "no field".into() } else { list.join(", ") }
}

fn by(keys: &[String]) -> String {
    if keys.is_empty() { String::new() } else { format!(" by {}", keys.join(", ")) }
}

/// Every declaration of `d`, as growth from nothing.
pub(crate) fn everything(d: &Declarations) -> Vec<Change> {
    diff(&Declarations::default(), d)
}

/// The accepted-declarations file of the manifest at `manifest`.
pub(crate) fn path_for(manifest: &Path) -> PathBuf {
    let stem = manifest.file_stem().map_or_else(|| "sonde".into(), |s| s.to_string_lossy());
    Manifest::base_dir(manifest).join(format!("{stem}.accepted.json"))
}

impl Accepted {
    /// Reads the file beside `manifest`; none yet is empty.
    pub(crate) fn load(manifest: &Path) -> Result<Accepted> {
        let path = path_for(manifest);
        let bytes = match sonde_core::limits::read_file_capped(&path, MAX_FILE) {
            Ok(b) => b,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(Accepted::default()),
            Err(e) => return Err(e).with_context(|| format!("cannot read {}", path.display())),
        };
        serde_json::from_slice(&bytes)
            .with_context(|| format!("{} is not an accepted-declarations file", path.display()))
    }

    /// Writes the file beside `manifest`: temp file, then rename.
    pub(crate) fn save(&self, manifest: &Path) -> Result<()> {
        let path = path_for(manifest);
        let mut bytes = serde_json::to_vec_pretty(self)?;
        bytes.push(b'\n');
        let tmp = path.with_extension(format!("json.tmp{}", std::process::id()));
        std::fs::write(&tmp, &bytes).with_context(|| format!("cannot write {}", tmp.display()))?;
        std::fs::rename(&tmp, &path).with_context(|| format!("cannot write {}", path.display()))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn decl(events: &[(&str, &[(&str, &str)])], metrics: &[(&str, &str, &[&str])]) -> Declarations {
        Declarations {
            events: events
                .iter()
                .map(|(k, f)| {
                    (k.to_string(), f.iter().map(|(n, t)| (n.to_string(), t.to_string())).collect())
                })
                .collect(),
            metrics: metrics
                .iter()
                .map(|(n, k, l)| {
                    let label_keys = l.iter().map(|s| s.to_string()).collect();
                    (n.to_string(), DeclaredMetric { kind: k.to_string(), label_keys })
                })
                .collect(),
        }
    }

    #[test]
    fn growth_is_told_apart_from_shrinking() {
        let before = decl(
            &[("http.request", &[("method", "str"), ("status", "int")])],
            &[("http.requests", "counter", &["method"]), ("old", "gauge", &[])],
        );
        assert!(diff(&before, &before).is_empty());
        let now = decl(
            &[("http.request", &[("status", "int"), ("user_agent", "str")]), ("job.done", &[])],
            &[
                ("http.requests", "counter", &["method", "family"]),
                ("new", "histogram", &["route"]),
            ],
        );
        let changes: Vec<(bool, String)> =
            diff(&before, &now).into_iter().map(|c| (c.grows, c.what)).collect();
        assert_eq!(
            changes,
            [
                (true, "+ field user_agent (str) of http.request".into()),
                (true, "+ event kind job.done, reading no field".into()),
                (true, "+ label key family of metric http.requests".into()),
                (true, "+ metric new (histogram) by route".into()),
                (false, "- field method of http.request".into()),
                (false, "- metric old".into()),
            ]
        );
        assert!(diff(&now, &before).iter().any(|c| c.grows), "the other way grows too");
        assert_eq!(everything(&before).len(), 3);
    }

    #[test]
    fn the_file_sits_beside_the_manifest() {
        assert_eq!(
            path_for(Path::new("/etc/app/sonde.toml")),
            Path::new("/etc/app/sonde.accepted.json")
        );
        assert_eq!(path_for(Path::new("prod.toml")), Path::new("./prod.accepted.json"));
    }
}
