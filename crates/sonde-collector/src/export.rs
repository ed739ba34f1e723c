//! `sonde-collector export --public DIR`: the fleet's k-anonymous
//! aggregates ([`crate::fleet`] with `k`) as files anyone may be given.
//!
//! | file | one row per |
//! |---|---|
//! | `fleet.json` | the whole [`Fleet`], as `GET /v1/fleet/public` answers |
//! | `versions.csv`, `os.csv`, `arch.csv` | group: `key,other,instances` |
//! | `reports_per_hour.csv` | hour: `start,reports,instances` (empty: fewer than k) |
//! | `plugins.csv` | plugin: instances, states, who switched it off, cost p50/p90 |
//! | `metrics.csv` | metric label set: `origin,owner,name,kind,unit,labels,other,instances,total` |
//!
//! Every group covers at least k instances; counts under k are empty
//! cells. Text cells are quoted when needed, and text a spreadsheet would
//! run as a formula (starting with `=`, `+`, `-`, `@`, a tab or a carriage
//! return) is prefixed with `'`.

use std::fmt::Write as _;
use std::path::{Path, PathBuf};

use crate::fleet::{Fleet, Group, Percentiles};

/// The files written, in order.
pub const FILES: [&str; 7] = [
    "fleet.json",
    "versions.csv",
    "os.csv",
    "arch.csv",
    "reports_per_hour.csv",
    "plugins.csv",
    "metrics.csv",
];

/// Writes `fleet` (which should be k-anonymous) into `dir`, created if
/// missing; returns the files written.
pub fn write_public(fleet: &Fleet, dir: &Path) -> std::io::Result<Vec<PathBuf>> {
    std::fs::create_dir_all(dir)?;
    let json = serde_json::to_string_pretty(fleet).map_err(std::io::Error::other)?;
    let contents = [
        json + "\n",
        groups(&fleet.by_version),
        groups(&fleet.by_os),
        groups(&fleet.by_arch),
        hours(fleet),
        plugins(fleet),
        metrics(fleet),
    ];
    let mut written = Vec::with_capacity(FILES.len());
    for (name, text) in FILES.iter().zip(contents) {
        let path = dir.join(name);
        let tmp = dir.join(format!(".{name}.tmp"));
        std::fs::write(&tmp, text)?;
        std::fs::rename(&tmp, &path)?;
        written.push(path);
    }
    Ok(written)
}

/// A text cell: quoted when it holds a separator, a quote or a line break;
/// a leading formula character neutralised.
fn text(s: &str) -> String {
    let s = match s.chars().next() {
        Some('=' | '+' | '-' | '@' | '\t' | '\r') => format!("'{s}"),
        _ => s.to_string(),
    };
    if s.contains([',', '"', '\n', '\r']) { format!("\"{}\"", s.replace('"', "\"\"")) } else { s }
}

fn opt(n: Option<u64>) -> String {
    n.map(|n| n.to_string()).unwrap_or_default()
}

fn groups(groups: &[Group]) -> String {
    let mut out = String::from("key,other,instances\n");
    for g in groups {
        let _ = writeln!(out, "{},{},{}", text(&g.key), g.other, g.instances);
    }
    out
}

fn hours(fleet: &Fleet) -> String {
    let mut out = String::from("start,reports,instances\n");
    for h in &fleet.reports_per_hour {
        let _ = writeln!(out, "{},{},{}", h.start, opt(h.reports), opt(h.instances));
    }
    out
}

fn p(p: Option<&Percentiles>) -> String {
    p.map(|p| format!("{},{}", p.p50, p.p90)).unwrap_or_else(|| ",".into())
}

fn plugins(fleet: &Fleet) -> String {
    let mut out = String::from(
        "plugin,other,instances,running,disabled,denied,failed,refused,off_by_admin,\
         off_by_rule,off_by_operator,off_by_host,busy_us_per_event_p50,\
         busy_us_per_event_p90,peak_memory_bytes_p50,peak_memory_bytes_p90,failures_p50,\
         failures_p90\n",
    );
    for f in &fleet.plugins {
        let state = |s: &str| opt(f.states.get(s).copied().unwrap_or(Some(0)));
        let by = &f.disabled_by;
        let _ = writeln!(
            out,
            "{},{},{},{},{},{},{},{},{},{},{},{},{},{},{}",
            text(&f.plugin),
            f.other,
            f.instances,
            state("running"),
            state("disabled"),
            state("denied"),
            state("failed"),
            state("refused"),
            opt(by.admin),
            opt(by.rule),
            opt(by.operator),
            opt(by.host),
            p(f.busy_us_per_event.as_ref()),
            p(f.peak_memory_bytes.as_ref()),
            p(f.failures.as_ref()),
        );
    }
    out
}

fn metrics(fleet: &Fleet) -> String {
    let mut out = String::from("origin,owner,name,kind,unit,labels,other,instances,total\n");
    for m in &fleet.metrics {
        let labels = serde_json::to_string(&m.labels).unwrap_or_default();
        let _ = writeln!(
            out,
            "{},{},{},{},{},{},{},{},{}",
            text(&m.origin),
            text(&m.owner),
            text(&m.name),
            text(&m.kind),
            text(&m.unit),
            text(&labels),
            m.other,
            m.instances,
            m.total
        );
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn text_cells_are_quoted_and_formulas_neutralised() {
        assert_eq!(text("plain"), "plain");
        assert_eq!(text("a,b"), "\"a,b\"");
        assert_eq!(text("say \"hi\""), "\"say \"\"hi\"\"\"");
        assert_eq!(text("=cmd()"), "'=cmd()");
        assert_eq!(text("-1+2"), "'-1+2");
    }
}
