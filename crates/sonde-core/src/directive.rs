//! What an endpoint may answer a report with: directives that switch things
//! *off* (or back on, if the endpoint itself switched them off), and when to
//! send next.
//!
//! ```json
//! {
//!   "accepted": 1,
//!   "next_update_secs": 3600,
//!   "directives": [
//!     {"action": "disable_plugin", "plugin": "user-agent", "for_secs": 86400, "reason": "expensive"},
//!     {"action": "enable_plugin", "plugin": "route-latency"},
//!     {"action": "disable_metrics", "plugin": "http-status", "metrics": ["http.requests"], "for_secs": 3600, "reason": "not needed"},
//!     {"action": "enable_metrics", "plugin": "http-status", "metrics": ["http.requests"]},
//!     {"action": "stop", "reason": "this endpoint is retired"}
//!   ]
//! }
//! ```
//!
//! The host validates and clamps everything ([`EndpointResponse::parse`]):
//! the body is capped, lists are cut, durations bounded, strings clipped;
//! directives it does not know are ignored and counted, not fatal. The
//! endpoint can never enable what the operator's manifest denies: `enable_*`
//! only lifts what an earlier `disable_*` from the endpoint set.

use serde::{Deserialize, Serialize};

/// Largest response body read from an endpoint; the rest is not read.
pub const MAX_RESPONSE_BYTES: usize = 64 * 1024;
/// Most directives applied from one response; the rest are ignored.
pub const MAX_DIRECTIVES: usize = 64;
/// Most metric names in one `disable_metrics`/`enable_metrics`.
pub const MAX_DIRECTIVE_METRICS: usize = 64;
/// Longest reason or name kept from a directive.
pub const MAX_DIRECTIVE_TEXT: usize = 256;
/// Shortest disable an endpoint may ask for (shorter ones are raised).
pub const MIN_DISABLE_SECS: u64 = 60;
/// Longest disable an endpoint may ask for (longer ones are cut): 30 days.
pub const MAX_DISABLE_SECS: u64 = 30 * 24 * 3600;

/// An endpoint's answer to a report upload.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct EndpointResponse {
    /// Reports the endpoint stored (duplicates excluded).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub accepted: Option<u32>,
    /// When the endpoint would like the next report, in seconds. The host
    /// clamps it to its manifest's `[min_interval, max_interval]`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub next_update_secs: Option<u64>,
    /// What to switch off (or back on).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub directives: Vec<Directive>,
}

/// One instruction from an endpoint.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "action", rename_all = "snake_case", deny_unknown_fields)]
pub enum Directive {
    /// Stop sending events to `plugin` for `for_secs` seconds.
    DisablePlugin {
        /// Manifest name of the plugin.
        plugin: String,
        /// How long, clamped to [`MIN_DISABLE_SECS`]..=[`MAX_DISABLE_SECS`].
        for_secs: u64,
        /// Why, shown to the operator.
        #[serde(default)]
        reason: String,
    },
    /// Lift an endpoint's earlier `disable_plugin`.
    EnablePlugin {
        /// Manifest name of the plugin.
        plugin: String,
    },
    /// Leave `metrics` of `plugin` out of reports for `for_secs` seconds.
    DisableMetrics {
        /// Manifest name of the plugin.
        plugin: String,
        /// Metric names.
        metrics: Vec<String>,
        /// How long, clamped like `disable_plugin`.
        for_secs: u64,
        /// Why.
        #[serde(default)]
        reason: String,
    },
    /// Lift an endpoint's earlier `disable_metrics`.
    EnableMetrics {
        /// Manifest name of the plugin.
        plugin: String,
        /// Metric names.
        metrics: Vec<String>,
    },
    /// Stop all telemetry on this host for good (persisted until the
    /// operator clears the state directory).
    Stop {
        /// Why.
        #[serde(default)]
        reason: String,
    },
}

/// A response after validation: the directives the host will apply, and how
/// many entries it ignored.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct ParsedResponse {
    /// The response, lists cut and values clamped.
    pub response: EndpointResponse,
    /// Directives dropped: unknown, malformed, or past [`MAX_DIRECTIVES`].
    pub ignored: usize,
}

fn clip(s: &mut String) {
    if s.len() > MAX_DIRECTIVE_TEXT {
        let mut end = MAX_DIRECTIVE_TEXT;
        while !s.is_char_boundary(end) {
            end -= 1;
        }
        s.truncate(end);
    }
}

impl Directive {
    fn clamp(mut self) -> Directive {
        match &mut self {
            Directive::DisablePlugin { plugin, for_secs, reason } => {
                clip(plugin);
                clip(reason);
                *for_secs = (*for_secs).clamp(MIN_DISABLE_SECS, MAX_DISABLE_SECS);
            }
            Directive::EnablePlugin { plugin } => clip(plugin),
            Directive::DisableMetrics { plugin, metrics, for_secs, reason } => {
                clip(plugin);
                clip(reason);
                metrics.truncate(MAX_DIRECTIVE_METRICS);
                metrics.iter_mut().for_each(clip);
                *for_secs = (*for_secs).clamp(MIN_DISABLE_SECS, MAX_DISABLE_SECS);
            }
            Directive::EnableMetrics { plugin, metrics } => {
                clip(plugin);
                metrics.truncate(MAX_DIRECTIVE_METRICS);
                metrics.iter_mut().for_each(clip);
            }
            Directive::Stop { reason } => clip(reason),
        }
        self
    }
}

impl EndpointResponse {
    /// Reads an endpoint's response body. An empty body is an empty response;
    /// a body that is not a JSON object is an error; inside a valid object,
    /// bad directives are skipped and counted.
    pub fn parse(body: &[u8]) -> Result<ParsedResponse, String> {
        if body.iter().all(u8::is_ascii_whitespace) {
            return Ok(ParsedResponse::default());
        }
        if body.len() > MAX_RESPONSE_BYTES {
            return Err(format!("response body over {MAX_RESPONSE_BYTES} bytes"));
        }
        #[derive(Deserialize)]
        struct Loose {
            #[serde(default)]
            accepted: Option<u32>,
            #[serde(default)]
            next_update_secs: Option<u64>,
            #[serde(default)]
            directives: Vec<serde_json::Value>,
        }
        let loose: Loose =
            serde_json::from_slice(body).map_err(|e| format!("response is not valid JSON: {e}"))?;
        let total = loose.directives.len();
        let directives: Vec<Directive> = loose
            .directives
            .into_iter()
            .take(MAX_DIRECTIVES)
            .filter_map(|v| serde_json::from_value::<Directive>(v).ok())
            .map(Directive::clamp)
            .collect();
        Ok(ParsedResponse {
            ignored: total - directives.len(),
            response: EndpointResponse {
                accepted: loose.accepted,
                next_update_secs: loose.next_update_secs,
                directives,
            },
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn directives_are_clamped_and_unknown_ones_ignored() {
        let long = "x".repeat(1000);
        let body = format!(
            r#"{{"next_update_secs": 5, "directives": [
                {{"action":"disable_plugin","plugin":"a","for_secs":1,"reason":"{long}"}},
                {{"action":"disable_plugin","plugin":"b","for_secs":999999999}},
                {{"action":"launch_missiles"}},
                {{"action":"enable_plugin"}},
                {{"action":"stop","reason":"bye"}}
            ]}}"#
        );
        let parsed = EndpointResponse::parse(body.as_bytes()).expect("valid");
        assert_eq!(parsed.ignored, 2);
        let d = &parsed.response.directives;
        assert_eq!(d.len(), 3);
        let Directive::DisablePlugin { for_secs, reason, .. } = &d[0] else { panic!("{d:?}") };
        assert_eq!((*for_secs, reason.len()), (MIN_DISABLE_SECS, MAX_DIRECTIVE_TEXT));
        let Directive::DisablePlugin { for_secs, .. } = &d[1] else { panic!("{d:?}") };
        assert_eq!(*for_secs, MAX_DISABLE_SECS);
        assert_eq!(d[2], Directive::Stop { reason: "bye".into() });
        assert_eq!(parsed.response.next_update_secs, Some(5));
    }

    #[test]
    fn an_empty_body_is_an_empty_response_and_garbage_is_an_error() {
        assert_eq!(EndpointResponse::parse(b"").expect("empty"), ParsedResponse::default());
        assert!(EndpointResponse::parse(b"<html>").is_err());
        assert!(EndpointResponse::parse(&vec![b' '; MAX_RESPONSE_BYTES + 10]).is_ok());
        let big = format!("{{\"x\":\"{}\"}}", "a".repeat(MAX_RESPONSE_BYTES));
        assert!(EndpointResponse::parse(big.as_bytes()).is_err());
    }

    #[test]
    fn only_the_first_directives_are_read() {
        let one = r#"{"action":"enable_plugin","plugin":"a"}"#;
        let body = format!("{{\"directives\":[{}]}}", vec![one; MAX_DIRECTIVES + 5].join(","));
        let parsed = EndpointResponse::parse(body.as_bytes()).expect("valid");
        assert_eq!(parsed.response.directives.len(), MAX_DIRECTIVES);
        assert_eq!(parsed.ignored, 5);
    }
}
