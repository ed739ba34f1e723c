//! Checks what a plugin says about itself before anything trusts it.
//!
//! `info` is guest output: every string and list in it has a limit here, and
//! a plugin whose info breaks one is refused with the reason. A reason that
//! quotes the plugin's text quotes it escaped
//! ([`sonde_core::text::escape_control`]): it is shown on terminals and in
//! logs. Descriptions, units and the version may hold any text; every text
//! output escapes them when it shows them.

use std::collections::HashSet;

use crate::bindings::{MetricKind, PluginInfo};

/// Longest plugin name, version or unit a plugin may declare.
pub(crate) const MAX_SHORT_TEXT: usize = 64;
/// Longest description (plugin or metric).
pub(crate) const MAX_DESCRIPTION: usize = 1024;
/// Most event kinds a plugin may declare.
pub(crate) const MAX_EVENT_DECLS: usize = 16;
/// Most metrics a plugin may declare.
pub(crate) const MAX_METRICS: usize = 64;
/// Longest metric name (the manifest's `deny_metrics` takes the same).
pub(crate) const MAX_METRIC_NAME: usize = sonde_core::limits::MAX_METRIC_NAME_LEN;
/// Most label keys per metric; each multiplies the possible series.
pub(crate) const MAX_LABEL_KEYS: usize = 8;
/// Most histogram buckets per metric.
pub(crate) const MAX_BUCKETS: usize = 64;

fn short(what: &str, s: &str, max: usize) -> Result<(), String> {
    if s.len() > max {
        return Err(format!("{what} is {} bytes, at most {max} are allowed", s.len()));
    }
    Ok(())
}

fn ident(what: &str, s: &str, max: usize) -> Result<(), String> {
    let ok = !s.is_empty()
        && s.len() <= max
        && s.chars().all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || "._-".contains(c));
    if !ok {
        return Err(format!(
            "{what} `{}` must be 1 to {max} of a-z, 0-9, `.`, `_`, `-`",
            sonde_core::text::escape_control(clip(s))
        ));
    }
    Ok(())
}

/// `s` cut to a length fit for an error message.
pub(crate) fn clip(s: &str) -> &str {
    clip_to(s, 64)
}

/// `s` cut to at most `max` bytes, at a character boundary.
pub(crate) fn clip_to(s: &str, max: usize) -> &str {
    let mut end = s.len().min(max);
    while !s.is_char_boundary(end) {
        end -= 1;
    }
    &s[..end]
}

/// Checks `info` against the limits above; the error says what is wrong.
pub(crate) fn validate(info: &PluginInfo) -> Result<(), String> {
    short("plugin name", &info.name, MAX_SHORT_TEXT)?;
    short("version", &info.version, MAX_SHORT_TEXT)?;
    short("description", &info.description, MAX_DESCRIPTION)?;
    if info.events.len() > MAX_EVENT_DECLS {
        return Err(format!(
            "declares {} event kinds, at most {MAX_EVENT_DECLS}",
            info.events.len()
        ));
    }
    let mut kinds = HashSet::new();
    for e in &info.events {
        ident("event kind", &e.kind, sonde_core::limits::MAX_EVENT_KIND_LEN)?;
        if !kinds.insert(e.kind.as_str()) {
            return Err(format!("event kind `{}` is declared twice", e.kind));
        }
        if e.fields.len() > crate::event::MAX_FIELDS {
            return Err(format!(
                "event kind `{}` reads {} fields, at most {}",
                e.kind,
                e.fields.len(),
                crate::event::MAX_FIELDS
            ));
        }
        for f in &e.fields {
            ident("field", &f.name, sonde_core::limits::MAX_FIELD_NAME_LEN)?;
        }
    }
    if info.metrics.len() > MAX_METRICS {
        return Err(format!("declares {} metrics, at most {MAX_METRICS}", info.metrics.len()));
    }
    let mut names = HashSet::new();
    for m in &info.metrics {
        ident("metric name", &m.name, MAX_METRIC_NAME)?;
        if !names.insert(m.name.as_str()) {
            return Err(format!("metric `{}` is declared twice", m.name));
        }
        short("unit", &m.unit, MAX_SHORT_TEXT)?;
        short("metric description", &m.description, MAX_DESCRIPTION)?;
        if m.label_keys.len() > MAX_LABEL_KEYS {
            return Err(format!("metric `{}` has more than {MAX_LABEL_KEYS} label keys", m.name));
        }
        let mut keys = HashSet::new();
        for k in &m.label_keys {
            ident("label key", k, MAX_SHORT_TEXT)?;
            if !keys.insert(k.as_str()) {
                return Err(format!("metric `{}` repeats label key `{k}`", m.name));
            }
        }
        match m.kind {
            MetricKind::Histogram => {
                if m.buckets.is_empty() || m.buckets.len() > MAX_BUCKETS {
                    return Err(format!(
                        "histogram `{}` needs 1 to {MAX_BUCKETS} bucket bounds",
                        m.name
                    ));
                }
                let ascending = m.buckets.windows(2).all(|w| w[0] < w[1]);
                if !ascending || m.buckets.iter().any(|b| !b.is_finite()) {
                    return Err(format!(
                        "histogram `{}` bucket bounds must be finite and strictly ascending",
                        m.name
                    ));
                }
            }
            MetricKind::Counter | MetricKind::Gauge if !m.buckets.is_empty() => {
                return Err(format!("metric `{}` is not a histogram but declares buckets", m.name));
            }
            _ => {}
        }
    }
    Ok(())
}
