//! The policy file (`--policy FILE`): when hosts should report next, how
//! often each may upload, and which plugins are too expensive to keep.
//!
//! ```toml
//! next_update = "1h"            # optional, sent as next_update_secs
//! [rate_limit]
//! reports_per_minute = 60       # uploads per instance per minute
//! burst = 10                    # uploads allowed back to back
//! [[rule]]
//! plugin = "*"                  # or a plugin name; a named rule wins over "*"
//! max_busy_us_per_event = 50.0  # cost.busy_us / cost.events
//! min_events = 1000             # judge only after this many events
//! disable_for = "1h"
//! reason = "expensive: {busy_us_per_event} µs per event"
//! ```
//!
//! Every key is checked when the file is read: unknown keys, wrong types and
//! values past their limits are errors that name the file, line and key, as
//! the host's manifest errors do.

use std::path::Path;
use std::time::Duration;

use serde::Deserialize;
use sonde_core::limits::MAX_PLUGIN_NAME_LEN;
use sonde_core::{Location, MAX_DIRECTIVE_TEXT, MAX_DISABLE_SECS, MIN_DISABLE_SECS};
use toml::Spanned;

use crate::policy::{PluginMatch, Rule, check_reason};

/// Largest policy file read. A policy is a few rules; anything near this is
/// not a policy.
pub const MAX_POLICY_BYTES: u64 = 256 * 1024;
/// Most `[[rule]]` entries. One per plugin a manifest may list
/// ([`sonde_core::limits::MAX_PLUGINS`]) plus a few wildcards is plenty, and
/// rules are scanned for every plugin of every report.
pub const MAX_RULES: usize = 128;
/// Uploads per instance per minute when the file does not say: one a second
/// on average, far above the host's default interval.
pub const DEFAULT_REPORTS_PER_MINUTE: u32 = 60;
/// Uploads an instance may make back to back when the file does not say:
/// enough for a host flushing its spool after an outage.
pub const DEFAULT_BURST: u32 = 10;
/// Highest `reports_per_minute`: a thousand uploads a second from one host is
/// a runaway loop, not telemetry.
pub const MAX_REPORTS_PER_MINUTE: u32 = 60_000;
/// Highest `burst`.
pub const MAX_BURST: u32 = 10_000;
/// Longest `next_update`: a week. The host clamps it to its own bounds anyway.
pub const MAX_NEXT_UPDATE: Duration = Duration::from_secs(7 * 24 * 3600);
/// `min_events` when a rule does not say: below a thousand events an average
/// is noise (one cold start dominates it).
pub const DEFAULT_MIN_EVENTS: u64 = 1000;

/// A parsed, validated policy. [`Policy::default`] is what the collector
/// runs with when no file is given: no `next_update`, the default rate limit,
/// no rules.
#[derive(Debug, Clone, PartialEq, Default)]
pub struct Policy {
    /// `next_update`, sent to every host as `next_update_secs`.
    pub next_update: Option<Duration>,
    /// `[rate_limit]`.
    pub rate_limit: RateLimit,
    /// `[[rule]]` entries, in file order.
    pub rules: Vec<Rule>,
}

/// The `[rate_limit]` table: a token bucket per instance. One upload (a
/// batch or a bare report) takes one token.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RateLimit {
    /// Tokens added per minute, at least 1.
    pub reports_per_minute: u32,
    /// Bucket size, at least 1.
    pub burst: u32,
}

impl Default for RateLimit {
    fn default() -> Self {
        RateLimit { reports_per_minute: DEFAULT_REPORTS_PER_MINUTE, burst: DEFAULT_BURST }
    }
}

/// A policy file that could not be read or is not valid.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{at}: {message}")]
pub struct PolicyError {
    /// Where: file, line and key.
    pub at: Location,
    /// What is wrong.
    pub message: String,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawPolicy {
    next_update: Option<Spanned<String>>,
    rate_limit: Option<RawRateLimit>,
    #[serde(default, rename = "rule")]
    rules: Vec<RawRule>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawRateLimit {
    reports_per_minute: Option<Spanned<i64>>,
    burst: Option<Spanned<i64>>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawRule {
    plugin: Spanned<String>,
    max_busy_us_per_event: Spanned<f64>,
    min_events: Option<Spanned<i64>>,
    disable_for: Spanned<String>,
    reason: Option<Spanned<String>>,
}

impl Policy {
    /// Reads and validates the policy at `path`.
    pub fn load(path: &Path) -> Result<Policy, PolicyError> {
        let text = sonde_core::limits::read_capped(path, MAX_POLICY_BYTES, "policy")
            .map_err(|message| PolicyError { at: Location::new(path, 0, None), message })?;
        Policy::parse(&text, path)
    }

    /// Validates policy `text`; `path` names it in errors.
    pub fn parse(text: &str, path: &Path) -> Result<Policy, PolicyError> {
        let raw: RawPolicy = toml::from_str(text).map_err(|e| {
            let (line, key) = match e.span() {
                Some(span) => (
                    Location::line_of(text, span.start),
                    sonde_core::toml_key_at(text, span.start, e.message()),
                ),
                None => (0, None),
            };
            PolicyError {
                at: Location::new(path, line, key),
                message: e.message().trim().to_string(),
            }
        })?;
        Checker { text, path }.policy(raw)
    }
}

struct Checker<'a> {
    text: &'a str,
    path: &'a Path,
}

impl Checker<'_> {
    fn err<T>(&self, spanned: &Spanned<T>, key: &str, message: String) -> PolicyError {
        PolicyError {
            at: Location::new(
                self.path,
                Location::line_of(self.text, spanned.span().start),
                Some(key.to_string()),
            ),
            message,
        }
    }

    fn policy(&self, raw: RawPolicy) -> Result<Policy, PolicyError> {
        let next_update = match raw.next_update {
            None => None,
            Some(s) => {
                Some(self.duration(&s, "next_update", Duration::from_secs(1), MAX_NEXT_UPDATE)?)
            }
        };
        let mut rate_limit = RateLimit::default();
        if let Some(r) = raw.rate_limit {
            if let Some(v) = &r.reports_per_minute {
                rate_limit.reports_per_minute =
                    self.count(v, "rate_limit.reports_per_minute", MAX_REPORTS_PER_MINUTE)?;
            }
            if let Some(v) = &r.burst {
                rate_limit.burst = self.count(v, "rate_limit.burst", MAX_BURST)?;
            }
        }
        if raw.rules.len() > MAX_RULES {
            let extra = &raw.rules[MAX_RULES].plugin;
            return Err(self.err(
                extra,
                &format!("rule[{MAX_RULES}]"),
                format!("at most {MAX_RULES} rules may be listed"),
            ));
        }
        let rules = raw
            .rules
            .into_iter()
            .enumerate()
            .map(|(i, r)| self.rule(i, r))
            .collect::<Result<_, _>>()?;
        Ok(Policy { next_update, rate_limit, rules })
    }

    fn rule(&self, i: usize, r: RawRule) -> Result<Rule, PolicyError> {
        let key = |k: &str| format!("rule[{i}].{k}");
        let name = r.plugin.get_ref();
        let plugin = if name == "*" {
            PluginMatch::Any
        } else if !name.is_empty() && name.len() <= MAX_PLUGIN_NAME_LEN {
            PluginMatch::Named(name.clone())
        } else {
            return Err(self.err(
                &r.plugin,
                &key("plugin"),
                format!("must be \"*\" or a plugin name of 1 to {MAX_PLUGIN_NAME_LEN} bytes"),
            ));
        };
        let max = *r.max_busy_us_per_event.get_ref();
        if !(max.is_finite() && max > 0.0) {
            return Err(self.err(
                &r.max_busy_us_per_event,
                &key("max_busy_us_per_event"),
                format!("{max} is not a positive number of microseconds"),
            ));
        }
        let min_events = match &r.min_events {
            None => DEFAULT_MIN_EVENTS,
            Some(v) => u64::try_from(*v.get_ref())
                .map_err(|_| self.err(v, &key("min_events"), "must not be negative".to_string()))?,
        };
        let disable_for = self.duration(
            &r.disable_for,
            &key("disable_for"),
            Duration::from_secs(MIN_DISABLE_SECS),
            Duration::from_secs(MAX_DISABLE_SECS),
        )?;
        let reason = match &r.reason {
            None => "over the collector's cost limit: {busy_us_per_event} µs per event".to_string(),
            Some(s) => {
                check_reason(s.get_ref()).map_err(|m| self.err(s, &key("reason"), m))?;
                if s.get_ref().len() > MAX_DIRECTIVE_TEXT {
                    return Err(self.err(
                        s,
                        &key("reason"),
                        format!("must be at most {MAX_DIRECTIVE_TEXT} bytes"),
                    ));
                }
                s.get_ref().clone()
            }
        };
        Ok(Rule { plugin, max_busy_us_per_event: max, min_events, disable_for, reason })
    }

    fn duration(
        &self,
        s: &Spanned<String>,
        key: &str,
        min: Duration,
        max: Duration,
    ) -> Result<Duration, PolicyError> {
        let d = humantime::parse_duration(s.get_ref())
            .map_err(|e| self.err(s, key, format!("`{}` is not a duration: {e}", s.get_ref())))?;
        if d < min || d > max {
            return Err(self.err(
                s,
                key,
                format!(
                    "{} is outside {}..={}",
                    s.get_ref(),
                    humantime::format_duration(min),
                    humantime::format_duration(max)
                ),
            ));
        }
        Ok(d)
    }

    fn count(&self, v: &Spanned<i64>, key: &str, max: u32) -> Result<u32, PolicyError> {
        let n = *v.get_ref();
        match u32::try_from(n) {
            Ok(n) if (1..=max).contains(&n) => Ok(n),
            _ => Err(self.err(v, key, format!("{n} is outside 1..={max}"))),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(text: &str) -> Result<Policy, PolicyError> {
        Policy::parse(text, Path::new("/etc/collector/policy.toml"))
    }

    const RULE: &str =
        "[[rule]]\nplugin = \"*\"\nmax_busy_us_per_event = 50\ndisable_for = \"1h\"\n";

    #[test]
    fn an_empty_policy_is_the_default() {
        assert_eq!(parse("").expect("valid"), Policy::default());
    }

    #[test]
    fn a_full_policy_is_read_with_defaults_filled_in() {
        let text = format!(
            "next_update = \"1h\"\n[rate_limit]\nreports_per_minute = 6\nburst = 2\n{RULE}\
             [[rule]]\nplugin = \"user-agent\"\nmax_busy_us_per_event = 2.5\nmin_events = 10\n\
             disable_for = \"1day\"\nreason = \"slow: {{busy_us_per_event}}\"\n"
        );
        let p = parse(&text).expect("valid");
        assert_eq!(p.next_update, Some(Duration::from_secs(3600)));
        assert_eq!(p.rate_limit, RateLimit { reports_per_minute: 6, burst: 2 });
        assert_eq!(p.rules.len(), 2);
        assert_eq!(p.rules[0].plugin, PluginMatch::Any);
        assert_eq!(p.rules[0].max_busy_us_per_event, 50.0);
        assert_eq!(p.rules[0].min_events, DEFAULT_MIN_EVENTS);
        assert_eq!(p.rules[1].plugin, PluginMatch::Named("user-agent".into()));
        assert_eq!(p.rules[1].disable_for, Duration::from_secs(86400));
    }

    #[test]
    fn an_unknown_key_names_file_line_and_key() {
        let text = format!("{RULE}\n{RULE}colour = \"red\"\n");
        let err = parse(&text).expect_err("unknown key");
        assert_eq!(err.at.line, 10, "{err}");
        assert_eq!(err.at.key.as_deref(), Some("rule[1].colour"), "{err}");
        assert!(
            err.to_string().starts_with("/etc/collector/policy.toml:10: key `rule[1].colour`:"),
            "{err}"
        );
    }

    #[test]
    fn a_missing_field_and_a_wrong_type_name_their_key() {
        let err = parse("[[rule]]\nplugin = \"*\"\ndisable_for = \"1h\"\n").expect_err("missing");
        assert_eq!(err.at.key.as_deref(), Some("rule[0].max_busy_us_per_event"), "{err}");
        let err = parse("[rate_limit]\nburst = \"lots\"\n").expect_err("wrong type");
        assert_eq!((err.at.line, err.at.key.as_deref()), (2, Some("rate_limit.burst")));
    }

    #[test]
    fn values_past_their_limits_point_at_their_line() {
        let err = parse("[rate_limit]\nreports_per_minute = 0\n").expect_err("zero");
        assert_eq!(
            (err.at.line, err.at.key.as_deref()),
            (2, Some("rate_limit.reports_per_minute"))
        );
        let err = parse(&RULE.replace("1h", "1s")).expect_err("too short");
        assert_eq!((err.at.line, err.at.key.as_deref()), (4, Some("rule[0].disable_for")));
        let err = parse(&RULE.replace("= 50", "= -1")).expect_err("negative");
        assert_eq!(err.at.key.as_deref(), Some("rule[0].max_busy_us_per_event"));
        let err = parse("next_update = \"soon\"\n").expect_err("not a duration");
        assert_eq!((err.at.line, err.at.key.as_deref()), (1, Some("next_update")));
        let err = parse(&format!("{RULE}reason = \"{{cost}}\"\n")).expect_err("placeholder");
        assert!(err.message.contains("{cost}"), "{err}");
    }
}
