//! The operator's manifest: which plugins may run, with what, and how.
//!
//! ```toml
//! [telemetry]
//! mode = "local"            # "off" (default) | "local" | "on"
//! buffer_capacity = 65536   # events in the ring buffer
//! state_dir = ".sonde"      # relative to the manifest unless absolute
//!
//! [[plugin]]
//! name = "http-status"
//! path = "plugins/http_status.wasm"  # relative to the manifest unless absolute
//! sha256 = "<64 hex digits>"         # required; a mismatch refuses the plugin
//! allow = true                       # default false: denied, never instantiated
//! events = ["http.request"]          # event kinds the plugin may receive
//! deny_metrics = ["http.requests"]   # optional: never reported, whatever an endpoint says
//! [plugin.config]                    # optional strings handed to the plugin
//! top_n = "5"
//! ```
//!
//! Everything is checked when the file is read: unknown keys, wrong types,
//! values past their [limits](crate::limits), duplicate plugin names. Every
//! error names the file, the line and the key. Whether a plugin's file exists
//! and matches its hash is the host's business (a bad plugin must not stop the
//! others), but [`PluginSpec`] keeps the lines to point at.

use std::collections::{BTreeMap, HashSet};
use std::fmt;
use std::ops::RangeInclusive;
use std::path::{Path, PathBuf};
use std::time::Duration;

use serde::Deserialize;
use toml::Spanned;

use crate::delivery::{
    DeliverySettings, MAX_BATCH_BYTES_LIMIT, MAX_DURATION, MAX_HEADER_BYTES, MAX_HEADERS,
    MAX_REQUESTS_PER_HOUR_LIMIT, MAX_SENT_LOG_BYTES, MAX_SENT_LOG_FILES_LIMIT, MAX_SERVICE_NAME,
    MAX_SPOOL_FILES_LIMIT, MIN_DURATION, MIN_SENT_LOG_BYTES, Protocol, is_loopback,
};
use crate::limits::*;
use crate::location::Location;
use crate::plugin_limits::{PluginLimits, RawLimits};
use crate::report::Ident;

/// Whether telemetry runs, and whether it sends.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Deserialize, serde::Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Mode {
    /// Nothing is collected, no file is written, no thread is started.
    #[default]
    Off,
    /// Events are collected and reports can be previewed; nothing is sent.
    Local,
    /// Reports are sent to the configured endpoint.
    On,
}

impl Mode {
    /// `off`, `local` or `on`.
    pub fn as_str(self) -> &'static str {
        match self {
            Mode::Off => "off",
            Mode::Local => "local",
            Mode::On => "on",
        }
    }
}

impl fmt::Display for Mode {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// A parsed, validated manifest.
#[derive(Debug, Clone, PartialEq)]
pub struct Manifest {
    /// The file it was read from (as given).
    pub path: PathBuf,
    /// The `[telemetry]` table.
    pub telemetry: TelemetrySettings,
    /// The `[[plugin]]` entries, in file order.
    pub plugins: Vec<PluginSpec>,
}

/// The `[telemetry]` table, with defaults filled in and paths resolved.
#[derive(Debug, Clone, PartialEq)]
pub struct TelemetrySettings {
    /// `mode`, default [`Mode::Off`].
    pub mode: Mode,
    /// `buffer_capacity`, default [`DEFAULT_BUFFER_CAPACITY`].
    pub buffer_capacity: usize,
    /// `state_dir`, default `.sonde`, resolved against the manifest's folder.
    pub state_dir: PathBuf,
    /// Endpoint, cadence and limits.
    pub delivery: DeliverySettings,
    /// `[telemetry.ident]`: who runs this installation, sent in reports
    /// only when set. Default none.
    pub ident: Option<Ident>,
}

/// One `[[plugin]]` entry.
#[derive(Debug, Clone, PartialEq)]
pub struct PluginSpec {
    /// Unique name chosen by the operator; reports use it.
    pub name: String,
    /// The component file, resolved against the manifest's folder.
    pub path: PathBuf,
    /// Expected SHA-256 of the file, lower-case hex.
    pub sha256: String,
    /// `allow`, default false.
    pub allow: bool,
    /// Event kinds the plugin may receive.
    pub events: Vec<String>,
    /// `[plugin.config]` values.
    pub config: BTreeMap<String, String>,
    /// Where the entry's `name` is, for messages about the plugin.
    pub at: Location,
    /// Where its `path` is, for messages about the file.
    pub path_at: Location,
    /// Where its `sha256` is, for messages about the hash.
    pub sha256_at: Location,
    /// `[plugin.limits]`, defaults filled in.
    pub limits: PluginLimits,
    /// `deny_metrics`: metrics of this plugin that never enter a report,
    /// whatever an endpoint says. Each must be one the plugin declares, or
    /// the plugin is refused.
    pub deny_metrics: Vec<String>,
    /// Where its `deny_metrics` is (its `name` when absent).
    pub deny_metrics_at: Location,
}

impl PluginSpec {
    /// Whether `other` describes the same plugin run the same way (file,
    /// pin, grant, config, limits), whatever lines it sits on.
    pub fn same_plugin(&self, other: &PluginSpec) -> bool {
        self.name == other.name
            && self.path == other.path
            && self.sha256 == other.sha256
            && self.allow == other.allow
            && self.events == other.events
            && self.config == other.config
            && self.limits == other.limits
            && self.deny_metrics == other.deny_metrics
    }
}

/// A manifest that could not be read or is not valid.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ManifestError {
    /// Where: file, line and key.
    pub at: Location,
    /// What is wrong.
    pub message: String,
}

impl fmt::Display for ManifestError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}: {}", self.at, self.message)
    }
}

impl std::error::Error for ManifestError {}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawManifest {
    #[serde(default)]
    telemetry: Option<RawTelemetry>,
    #[serde(default, rename = "plugin")]
    plugins: Vec<RawPlugin>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawTelemetry {
    mode: Option<Spanned<Mode>>,
    buffer_capacity: Option<Spanned<u64>>,
    state_dir: Option<Spanned<String>>,
    endpoint: Option<Spanned<String>>,
    interval: Option<Spanned<String>>,
    min_interval: Option<Spanned<String>>,
    max_interval: Option<Spanned<String>>,
    max_requests_per_hour: Option<Spanned<u64>>,
    max_bytes_per_day: Option<Spanned<u64>>,
    max_batch_bytes: Option<Spanned<u64>>,
    spool_max_files: Option<Spanned<u64>>,
    spool_max_bytes: Option<Spanned<u64>>,
    sent_log_max_files: Option<Spanned<u64>>,
    sent_log_max_bytes: Option<Spanned<u64>>,
    connect_timeout: Option<Spanned<String>>,
    request_timeout: Option<Spanned<String>>,
    retry_initial: Option<Spanned<String>>,
    proxy: Option<Spanned<String>>,
    #[serde(default)]
    installation_id: bool,
    #[serde(default)]
    app_metrics: bool,
    protocol: Option<Spanned<Protocol>>,
    service_name: Option<Spanned<String>>,
    headers: Option<Spanned<BTreeMap<String, String>>>,
    ident: Option<Spanned<RawIdent>>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawIdent {
    contact: Option<Spanned<String>>,
    description: Option<Spanned<String>>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawPlugin {
    name: Spanned<String>,
    path: Spanned<String>,
    sha256: Option<Spanned<String>>,
    #[serde(default)]
    allow: bool,
    events: Option<Spanned<Vec<String>>>,
    deny_metrics: Option<Spanned<Vec<String>>>,
    config: Option<Spanned<BTreeMap<String, String>>>,
    #[serde(default)]
    limits: RawLimits,
}

impl Manifest {
    /// Reads and validates the manifest at `path`.
    pub fn load(path: &Path) -> Result<Manifest, ManifestError> {
        let text = read_capped(path, MAX_MANIFEST_BYTES, "manifest")
            .map_err(|message| ManifestError { at: Location::new(path, 0, None), message })?;
        Manifest::parse(&text, path)
    }

    /// Validates manifest `text`; `path` names it in errors and anchors
    /// relative paths.
    pub fn parse(text: &str, path: &Path) -> Result<Manifest, ManifestError> {
        Manifest::parse_with(text, path, true)
    }

    /// Validates manifest `text` as [`Manifest::parse`] does, with the same
    /// errors, except that a plugin's `sha256` may be missing or not yet a
    /// hash (it is then empty in the [`PluginSpec`]): what `sonde pin`
    /// checks before it writes the pins, so that it never writes into a
    /// manifest `sonde check` would refuse for any other reason.
    pub fn parse_unpinned(text: &str, path: &Path) -> Result<Manifest, ManifestError> {
        Manifest::parse_with(text, path, false)
    }

    fn parse_with(text: &str, path: &Path, pinned: bool) -> Result<Manifest, ManifestError> {
        let raw: RawManifest = toml::from_str(text).map_err(|e| {
            let offset = e.span().map(|s| s.start).unwrap_or(0);
            let line = if e.span().is_some() { Location::line_of(text, offset) } else { 0 };
            let key = crate::location::toml_key_at(text, offset, e.message());
            ManifestError {
                at: Location::new(path, line, key),
                message: e.message().trim().to_string(),
            }
        })?;
        Validator { text, path, pinned }.manifest(raw)
    }

    /// The folder relative paths in the manifest are resolved against.
    pub fn base_dir(path: &Path) -> PathBuf {
        match path.parent() {
            Some(p) if !p.as_os_str().is_empty() => p.to_path_buf(),
            _ => PathBuf::from("."),
        }
    }

    /// The plugin called `name`, if listed.
    pub fn plugin(&self, name: &str) -> Option<&PluginSpec> {
        self.plugins.iter().find(|p| p.name == name)
    }
}

struct Validator<'a> {
    text: &'a str,
    path: &'a Path,
    /// Whether every plugin's `sha256` must be a hash (false for `sonde pin`).
    pinned: bool,
}

impl Validator<'_> {
    fn at<T>(&self, spanned: &Spanned<T>, key: String) -> Location {
        Location::new(self.path, Location::line_of(self.text, spanned.span().start), Some(key))
    }

    fn err<T>(&self, spanned: &Spanned<T>, key: String, message: String) -> ManifestError {
        ManifestError { at: self.at(spanned, key), message }
    }

    fn manifest(&self, raw: RawManifest) -> Result<Manifest, ManifestError> {
        let base = Manifest::base_dir(self.path);
        let telemetry = match raw.telemetry {
            None => TelemetrySettings {
                mode: Mode::Off,
                buffer_capacity: DEFAULT_BUFFER_CAPACITY,
                state_dir: base.join(".sonde"),
                delivery: DeliverySettings::default(),
                ident: None,
            },
            Some(t) => self.telemetry(t, &base)?,
        };
        if raw.plugins.len() > MAX_PLUGINS {
            let extra = &raw.plugins[MAX_PLUGINS].name;
            return Err(self.err(
                extra,
                format!("plugin[{MAX_PLUGINS}]"),
                format!("at most {MAX_PLUGINS} plugins may be listed"),
            ));
        }
        let mut seen = HashSet::new();
        let mut plugins = Vec::with_capacity(raw.plugins.len());
        for (i, p) in raw.plugins.into_iter().enumerate() {
            let spec = self.plugin(i, p, &base)?;
            if !seen.insert(spec.name.clone()) {
                return Err(ManifestError {
                    at: spec.at,
                    message: format!("duplicate plugin name `{}`", spec.name),
                });
            }
            plugins.push(spec);
        }
        Ok(Manifest { path: self.path.to_path_buf(), telemetry, plugins })
    }

    fn telemetry(&self, t: RawTelemetry, base: &Path) -> Result<TelemetrySettings, ManifestError> {
        let buffer_capacity = match &t.buffer_capacity {
            None => DEFAULT_BUFFER_CAPACITY,
            Some(c) => {
                let v = *c.get_ref();
                let range = MIN_BUFFER_CAPACITY as u64..=MAX_BUFFER_CAPACITY as u64;
                if !range.contains(&v) {
                    return Err(self.err(
                        c,
                        "telemetry.buffer_capacity".into(),
                        format!(
                            "{v} is outside {MIN_BUFFER_CAPACITY}..={MAX_BUFFER_CAPACITY} events"
                        ),
                    ));
                }
                v as usize
            }
        };
        let state_dir = match &t.state_dir {
            None => base.join(".sonde"),
            Some(d) if d.get_ref().is_empty() => {
                return Err(self.err(d, "telemetry.state_dir".into(), "must not be empty".into()));
            }
            Some(d) => base.join(d.get_ref()),
        };
        let delivery = self.delivery(&t)?;
        let mode = t.mode.as_ref().map_or(Mode::Off, |m| *m.get_ref());
        if let Some(m) = &t.mode
            && mode == Mode::On
            && delivery.endpoint.is_none()
        {
            return Err(self.err(
                m,
                "telemetry.mode".into(),
                "mode = \"on\" needs an `endpoint` in [telemetry]".into(),
            ));
        }
        let ident = match &t.ident {
            None => None,
            Some(i) => Some(self.ident(i)?),
        };
        Ok(TelemetrySettings { mode, buffer_capacity, state_dir, delivery, ident })
    }

    /// `[telemetry.ident]`: printable text within its limits, at least one
    /// of the two keys.
    fn ident(&self, raw: &Spanned<RawIdent>) -> Result<Ident, ManifestError> {
        let field = |v: &Option<Spanned<String>>, key: &str, max: usize| match v {
            None => Ok(None),
            Some(v) => {
                let text = v.get_ref();
                if text.is_empty() || text.len() > max || text.chars().any(char::is_control) {
                    let msg = format!("must be 1 to {max} bytes of printable text on one line");
                    return Err(self.err(v, format!("telemetry.ident.{key}"), msg));
                }
                Ok(Some(text.clone()))
            }
        };
        let r = raw.get_ref();
        let ident = Ident {
            contact: field(&r.contact, "contact", MAX_IDENT_CONTACT)?,
            description: field(&r.description, "description", MAX_IDENT_DESCRIPTION)?,
        };
        if ident.contact.is_none() && ident.description.is_none() {
            let msg = "needs `contact` or `description` (or remove the table)".to_string();
            return Err(self.err(raw, "telemetry.ident".into(), msg));
        }
        Ok(ident)
    }

    fn duration(
        &self,
        v: &Option<Spanned<String>>,
        key: &str,
        default: Duration,
    ) -> Result<Duration, ManifestError> {
        let Some(v) = v else { return Ok(default) };
        let key = format!("telemetry.{key}");
        let d = humantime::parse_duration(v.get_ref()).map_err(|e| {
            let text = v.get_ref();
            self.err(
                v,
                key.clone(),
                format!("`{text}` is not a duration like \"30s\" or \"1h\": {e}"),
            )
        })?;
        if !(MIN_DURATION..=MAX_DURATION).contains(&d) {
            return Err(self.err(v, key, format!("must be between {MIN_DURATION:?} and 7 days")));
        }
        Ok(d)
    }

    fn count(
        &self,
        v: &Option<Spanned<u64>>,
        key: &str,
        range: RangeInclusive<u64>,
        default: u64,
    ) -> Result<u64, ManifestError> {
        let Some(v) = v else { return Ok(default) };
        if !range.contains(v.get_ref()) {
            return Err(self.err(
                v,
                format!("telemetry.{key}"),
                format!("{} is outside {}..={}", v.get_ref(), range.start(), range.end()),
            ));
        }
        Ok(*v.get_ref())
    }

    fn headers(
        &self,
        v: &Option<Spanned<BTreeMap<String, String>>>,
    ) -> Result<BTreeMap<String, String>, ManifestError> {
        let Some(v) = v else { return Ok(BTreeMap::new()) };
        let key = "telemetry.headers".to_string();
        if v.get_ref().len() > MAX_HEADERS {
            let msg = format!("at most {MAX_HEADERS} headers");
            return Err(self.err(v, key, msg));
        }
        for (name, value) in v.get_ref() {
            let token = !name.is_empty()
                && name
                    .bytes()
                    .all(|b| b.is_ascii_alphanumeric() || b"!#$%&'*+-.^_`|~".contains(&b));
            // Visible ASCII and spaces only: no line breaks to smuggle headers.
            let visible = value.bytes().all(|b| b == b' ' || b == b'\t' || b.is_ascii_graphic());
            let reserved = ["content-type", "content-encoding", "content-length", "host"]
                .iter()
                .any(|r| name.eq_ignore_ascii_case(r));
            let msg = if !token {
                format!("{name:?} is not a valid header name")
            } else if reserved {
                format!("{name} is set by sonde and cannot be overridden")
            } else if !visible {
                format!("the value of {name} must be printable ASCII")
            } else if name.len() + value.len() > MAX_HEADER_BYTES {
                format!("{name} is longer than {MAX_HEADER_BYTES} bytes")
            } else {
                continue;
            };
            return Err(self.err(v, format!("{key}.{name}"), msg));
        }
        Ok(v.get_ref().clone())
    }

    fn url(&self, v: &Spanned<String>, key: &str) -> Result<url::Url, ManifestError> {
        let key = format!("telemetry.{key}");
        url::Url::parse(v.get_ref()).map_err(|e| self.err(v, key, format!("not a URL: {e}")))
    }

    fn delivery(&self, t: &RawTelemetry) -> Result<DeliverySettings, ManifestError> {
        let d = DeliverySettings::default();
        let endpoint = match &t.endpoint {
            None => None,
            Some(e) => {
                let url = self.url(e, "endpoint")?;
                let ok = url.scheme() == "https" || (url.scheme() == "http" && is_loopback(&url));
                if !ok || url.host().is_none() {
                    return Err(self.err(
                        e,
                        "telemetry.endpoint".into(),
                        "must be an https:// URL (http:// only for loopback addresses)".into(),
                    ));
                }
                if !url.username().is_empty() || url.password().is_some() {
                    let msg = "must not carry credentials".to_string();
                    return Err(self.err(e, "telemetry.endpoint".into(), msg));
                }
                Some(url)
            }
        };
        let proxy = match &t.proxy {
            None => None,
            Some(p) => {
                let url = self.url(p, "proxy")?;
                if !matches!(url.scheme(), "http" | "https") {
                    let msg = "must be an http:// or https:// URL".to_string();
                    return Err(self.err(p, "telemetry.proxy".into(), msg));
                }
                Some(url)
            }
        };
        let interval = self.duration(&t.interval, "interval", d.interval)?;
        let min_interval =
            self.duration(&t.min_interval, "min_interval", d.min_interval.min(interval))?;
        let max_interval =
            self.duration(&t.max_interval, "max_interval", d.max_interval.max(interval))?;
        if !(min_interval <= interval && interval <= max_interval) {
            let at = t.interval.as_ref().or(t.min_interval.as_ref()).or(t.max_interval.as_ref());
            let message = "needs min_interval <= interval <= max_interval".to_string();
            return Err(match at {
                Some(s) => self.err(s, "telemetry.interval".into(), message),
                None => ManifestError { at: Location::new(self.path, 0, None), message },
            });
        }
        let per_hour = 1..=u64::from(MAX_REQUESTS_PER_HOUR_LIMIT);
        let max_requests_per_hour = self.count(
            &t.max_requests_per_hour,
            "max_requests_per_hour",
            per_hour,
            u64::from(d.max_requests_per_hour),
        )?;
        let spool_files = 1..=u64::from(MAX_SPOOL_FILES_LIMIT);
        let spool_max_files = self.count(
            &t.spool_max_files,
            "spool_max_files",
            spool_files,
            u64::from(d.spool_max_files),
        )?;
        Ok(DeliverySettings {
            endpoint,
            interval,
            min_interval,
            max_interval,
            // Both checked against ranges that fit a u32.
            max_requests_per_hour: max_requests_per_hour as u32,
            max_bytes_per_day: self.count(
                &t.max_bytes_per_day,
                "max_bytes_per_day",
                1024..=u64::from(u32::MAX),
                d.max_bytes_per_day,
            )?,
            max_batch_bytes: self.count(
                &t.max_batch_bytes,
                "max_batch_bytes",
                1024..=MAX_BATCH_BYTES_LIMIT,
                d.max_batch_bytes,
            )?,
            spool_max_files: spool_max_files as u32,
            spool_max_bytes: self.count(
                &t.spool_max_bytes,
                "spool_max_bytes",
                1024..=u64::MAX / 2,
                d.spool_max_bytes,
            )?,
            // Checked against a range that fits a u32.
            sent_log_max_files: self.count(
                &t.sent_log_max_files,
                "sent_log_max_files",
                1..=u64::from(MAX_SENT_LOG_FILES_LIMIT),
                u64::from(d.sent_log_max_files),
            )? as u32,
            sent_log_max_bytes: self.count(
                &t.sent_log_max_bytes,
                "sent_log_max_bytes",
                MIN_SENT_LOG_BYTES..=MAX_SENT_LOG_BYTES,
                d.sent_log_max_bytes,
            )?,
            connect_timeout: self.duration(
                &t.connect_timeout,
                "connect_timeout",
                d.connect_timeout,
            )?,
            request_timeout: self.duration(
                &t.request_timeout,
                "request_timeout",
                d.request_timeout,
            )?,
            retry_initial: self.duration(&t.retry_initial, "retry_initial", d.retry_initial)?,
            proxy,
            installation_id: t.installation_id,
            app_metrics: t.app_metrics,
            protocol: t.protocol.as_ref().map_or(d.protocol, |p| *p.get_ref()),
            service_name: match &t.service_name {
                None => d.service_name,
                Some(v) => {
                    let name = v.get_ref();
                    let ok = !name.is_empty()
                        && name.len() <= MAX_SERVICE_NAME
                        && !name.chars().any(char::is_control);
                    if !ok {
                        let msg = format!("must be 1 to {MAX_SERVICE_NAME} printable bytes");
                        return Err(self.err(v, "telemetry.service_name".into(), msg));
                    }
                    name.clone()
                }
            },
            headers: self.headers(&t.headers)?,
        })
    }

    fn plugin(&self, i: usize, p: RawPlugin, base: &Path) -> Result<PluginSpec, ManifestError> {
        let key = |k: &str| format!("plugin[{i}].{k}");
        let name = p.name.get_ref();
        let name_ok = !name.is_empty()
            && name.len() <= MAX_PLUGIN_NAME_LEN
            && name.starts_with(|c: char| c.is_ascii_lowercase() || c.is_ascii_digit())
            && name
                .chars()
                .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '-' || c == '_');
        if !name_ok {
            return Err(self.err(
                &p.name,
                key("name"),
                format!(
                    "`{name}` is not a plugin name: 1 to {MAX_PLUGIN_NAME_LEN} of a-z, 0-9, `-`, `_`"
                ),
            ));
        }
        if p.path.get_ref().is_empty() {
            return Err(self.err(&p.path, key("path"), "must not be empty".into()));
        }
        let sha = p.sha256.as_ref().map_or("", |s| s.get_ref().as_str());
        let is_hash = sha.len() == 64 && sha.chars().all(|c| c.is_ascii_hexdigit());
        // Without a pin, errors point at the entry's name.
        let sha_span =
            p.sha256.clone().unwrap_or_else(|| Spanned::new(p.name.span(), String::new()));
        match &p.sha256 {
            None if self.pinned => {
                return Err(self.err(&p.name, key("sha256"), "missing field `sha256`".into()));
            }
            Some(s) if self.pinned && !is_hash => {
                return Err(self.err(
                    s,
                    key("sha256"),
                    "must be the 64 hex digits of the file's SHA-256 (`sonde pin` writes it)"
                        .into(),
                ));
            }
            _ => {}
        }
        let sha = if is_hash { sha } else { "" };
        // Absent lists are empty; their errors point at the entry's name.
        let events_span = p.events.unwrap_or_else(|| Spanned::new(p.name.span(), Vec::new()));
        let config_span = p.config.unwrap_or_else(|| Spanned::new(p.name.span(), BTreeMap::new()));
        let events = events_span.get_ref();
        if events.len() > MAX_GRANTED_EVENTS {
            return Err(self.err(
                &events_span,
                key("events"),
                format!("at most {MAX_GRANTED_EVENTS} event kinds may be granted"),
            ));
        }
        let mut kinds = HashSet::new();
        for kind in events {
            if kind.is_empty() || kind.len() > MAX_EVENT_KIND_LEN {
                return Err(self.err(
                    &events_span,
                    key("events"),
                    format!("event kinds must be 1 to {MAX_EVENT_KIND_LEN} bytes"),
                ));
            }
            if !kinds.insert(kind.as_str()) {
                return Err(self.err(
                    &events_span,
                    key("events"),
                    format!("`{kind}` is listed twice"),
                ));
            }
        }
        let config = config_span.get_ref();
        if config.len() > MAX_CONFIG_ENTRIES {
            return Err(self.err(
                &config_span,
                key("config"),
                format!("at most {MAX_CONFIG_ENTRIES} config entries are allowed"),
            ));
        }
        for (k, v) in config {
            if k.is_empty() || k.len() > MAX_CONFIG_KEY_LEN {
                return Err(self.err(
                    &config_span,
                    key(&format!("config.{k}")),
                    format!("config keys must be 1 to {MAX_CONFIG_KEY_LEN} bytes"),
                ));
            }
            if v.len() > MAX_CONFIG_VALUE_LEN {
                return Err(self.err(
                    &config_span,
                    key(&format!("config.{k}")),
                    format!("config values must be at most {MAX_CONFIG_VALUE_LEN} bytes"),
                ));
            }
        }
        let deny_span = p.deny_metrics.unwrap_or_else(|| Spanned::new(p.name.span(), Vec::new()));
        let deny = deny_span.get_ref();
        if deny.len() > MAX_DENIED_METRICS {
            return Err(self.err(
                &deny_span,
                key("deny_metrics"),
                format!("at most {MAX_DENIED_METRICS} metrics may be denied"),
            ));
        }
        let mut denied = HashSet::new();
        for m in deny {
            if !is_metric_name(m) {
                return Err(self.err(
                    &deny_span,
                    key("deny_metrics"),
                    format!(
                        "`{}` is not a metric name: 1 to {MAX_METRIC_NAME_LEN} of a-z, 0-9, `.`, `_`, `-`",
                        crate::text::escape_control(m)
                    ),
                ));
            }
            if !denied.insert(m.as_str()) {
                return Err(self.err(
                    &deny_span,
                    key("deny_metrics"),
                    format!("`{m}` is listed twice"),
                ));
            }
        }
        let limits = p.limits.resolve().map_err(|e| ManifestError {
            at: Location::new(
                self.path,
                Location::line_of(self.text, e.offset),
                Some(key(&format!("limits.{}", e.key))),
            ),
            message: e.message,
        })?;
        Ok(PluginSpec {
            limits,
            name: name.clone(),
            path: base.join(p.path.get_ref()),
            sha256: sha.to_ascii_lowercase(),
            allow: p.allow,
            events: events.clone(),
            config: config.clone(),
            at: self.at(&p.name, key("name")),
            path_at: self.at(&p.path, key("path")),
            sha256_at: self.at(&sha_span, key("sha256")),
            deny_metrics: deny.clone(),
            deny_metrics_at: self.at(&deny_span, key("deny_metrics")),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const SHA: &str = "aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa";

    fn parse(text: &str) -> Result<Manifest, ManifestError> {
        Manifest::parse(text, Path::new("/etc/app/sonde.toml"))
    }

    fn plugin(name: &str) -> String {
        format!("[[plugin]]\nname = \"{name}\"\npath = \"p.wasm\"\nsha256 = \"{SHA}\"\n")
    }

    #[test]
    fn an_empty_manifest_means_off_with_defaults() {
        let m = parse("").expect("valid");
        assert_eq!(m.telemetry.mode, Mode::Off);
        assert_eq!(m.telemetry.buffer_capacity, DEFAULT_BUFFER_CAPACITY);
        assert_eq!(m.telemetry.state_dir, Path::new("/etc/app/.sonde"));
        assert!(m.plugins.is_empty());
    }

    #[test]
    fn plugins_are_denied_unless_allowed_and_paths_are_relative_to_the_manifest() {
        let m = parse(&plugin("a")).expect("valid");
        assert!(!m.plugins[0].allow);
        assert_eq!(m.plugins[0].path, Path::new("/etc/app/p.wasm"));
        assert_eq!(m.plugins[0].at.line, 2);
    }

    #[test]
    fn an_unknown_key_names_file_line_and_key() {
        let text = format!("[telemetry]\nmode = \"local\"\n\n{}colour = \"red\"\n", plugin("a"));
        let err = parse(&text).expect_err("unknown key");
        assert_eq!(err.at.line, 8, "{err}");
        assert_eq!(err.at.key.as_deref(), Some("plugin[0].colour"), "{err}");
        let msg = err.to_string();
        assert!(msg.starts_with("/etc/app/sonde.toml:8: key `plugin[0].colour`:"), "{msg}");
    }

    #[test]
    fn a_wrong_type_names_the_key() {
        let err = parse("[telemetry]\nbuffer_capacity = \"big\"\n").expect_err("wrong type");
        assert_eq!(err.at.line, 2);
        assert_eq!(err.at.key.as_deref(), Some("telemetry.buffer_capacity"));
    }

    #[test]
    fn an_unknown_mode_is_refused() {
        let err = parse("[telemetry]\nmode = \"loud\"\n").expect_err("bad mode");
        assert_eq!(err.at.key.as_deref(), Some("telemetry.mode"));
        assert!(err.message.contains("loud"), "{err}");
    }

    #[test]
    fn a_missing_field_names_the_plugin_entry() {
        let text = format!("{}\n[[plugin]]\nname = \"b\"\npath = \"b.wasm\"\n", plugin("a"));
        let err = parse(&text).expect_err("missing sha");
        assert_eq!(err.at.key.as_deref(), Some("plugin[1].sha256"), "{err}");
    }

    #[test]
    fn duplicate_plugin_names_point_at_the_second() {
        let text = format!("{}\n{}", plugin("a"), plugin("a"));
        let err = parse(&text).expect_err("duplicate");
        assert_eq!(err.at.line, 7, "{err}");
        assert!(err.message.contains("duplicate plugin name `a`"));
    }

    #[test]
    fn values_past_their_limits_are_refused() {
        let err = parse("[telemetry]\nbuffer_capacity = 1\n").expect_err("too small");
        assert_eq!(err.at.key.as_deref(), Some("telemetry.buffer_capacity"));
        let bad_sha = plugin("a").replace(SHA, "xyz");
        let err = parse(&bad_sha).expect_err("bad sha");
        assert_eq!(err.at.key.as_deref(), Some("plugin[0].sha256"));
        assert_eq!(err.at.line, 4);
        let bad_name = plugin("Bad Name");
        assert!(parse(&bad_name).is_err());
        let long = "x".repeat(MAX_CONFIG_VALUE_LEN + 1);
        let text = format!("{}[plugin.config]\nk = \"{long}\"\n", plugin("a"));
        let err = parse(&text).expect_err("long value");
        assert_eq!(err.at.key.as_deref(), Some("plugin[0].config.k"));
    }

    #[test]
    fn protocol_and_headers_are_read_and_checked() {
        let m = parse("[telemetry]\n").expect("defaults");
        assert_eq!(m.telemetry.delivery.protocol, Protocol::Sonde);
        assert_eq!(m.telemetry.delivery.service_name, "sonde");
        let m = parse("[telemetry]\nservice_name = \"checkout\"\n").expect("named");
        assert_eq!(m.telemetry.delivery.service_name, "checkout");
        let err = parse("[telemetry]\nservice_name = \"\"\n").expect_err("empty");
        assert_eq!((err.at.line, err.at.key.as_deref()), (2, Some("telemetry.service_name")));
        assert!(m.telemetry.delivery.headers.is_empty());
        let text =
            "[telemetry]\nprotocol = \"otlp\"\n[telemetry.headers]\nAuthorization = \"Bearer t\"\n";
        let m = parse(text).expect("otlp");
        assert_eq!(m.telemetry.delivery.protocol, Protocol::Otlp);
        assert_eq!(m.telemetry.delivery.headers["Authorization"], "Bearer t");
        let err = parse("[telemetry]\nprotocol = \"grpc\"\n").expect_err("unknown protocol");
        assert_eq!((err.at.line, err.at.key.as_deref()), (2, Some("telemetry.protocol")));
        for (header, why) in [
            ("\"Bad Name\" = \"v\"", "not a valid header name"),
            ("Content-Type = \"text/plain\"", "set by sonde"),
            ("X-A = \"line\\nbreak\"", "printable ASCII"),
        ] {
            let err =
                parse(&format!("[telemetry]\n[telemetry.headers]\n{header}\n")).expect_err(header);
            assert!(err.message.contains(why), "{header}: {err}");
            assert!(err.at.key.as_deref().is_some_and(|k| k.starts_with("telemetry.headers.")));
        }
        let many: String = (0..=MAX_HEADERS).map(|i| format!("X-{i} = \"v\"\n")).collect();
        let err = parse(&format!("[telemetry]\n[telemetry.headers]\n{many}")).expect_err("many");
        assert!(err.message.contains("at most"), "{err}");
    }

    #[test]
    fn on_mode_needs_an_https_or_loopback_endpoint() {
        let err = parse("[telemetry]\nmode = \"on\"\n").expect_err("no endpoint");
        assert_eq!(err.at.key.as_deref(), Some("telemetry.mode"));
        let err = parse("[telemetry]\nmode = \"on\"\nendpoint = \"http://example.com/r\"\n")
            .expect_err("plain http");
        assert_eq!((err.at.line, err.at.key.as_deref()), (3, Some("telemetry.endpoint")));
        let err =
            parse("[telemetry]\nendpoint = \"https://u:p@example.com/\"\n").expect_err("creds");
        assert!(err.message.contains("credentials"));
        for ok in [
            "https://example.com/v1/reports",
            "http://127.0.0.1:8080/v1/reports",
            "http://localhost/x",
            "http://[::1]:9/x",
        ] {
            let m = parse(&format!("[telemetry]\nmode = \"on\"\nendpoint = \"{ok}\"\n")).expect(ok);
            assert_eq!(m.telemetry.delivery.endpoint.expect("set").as_str(), ok);
        }
    }

    #[test]
    fn delivery_durations_and_limits_are_checked() {
        let m = parse("[telemetry]\ninterval = \"2s\"\nmin_interval = \"1s\"\nmax_interval = \"10s\"\nmax_requests_per_hour = 30\n").expect("valid");
        let d = &m.telemetry.delivery;
        assert_eq!(
            (d.interval, d.min_interval, d.max_interval),
            (Duration::from_secs(2), Duration::from_secs(1), Duration::from_secs(10))
        );
        assert_eq!(d.max_requests_per_hour, 30);
        let err = parse("[telemetry]\ninterval = \"soon\"\n").expect_err("bad duration");
        assert_eq!(err.at.key.as_deref(), Some("telemetry.interval"));
        let err = parse("[telemetry]\ninterval = \"1m\"\nmin_interval = \"5m\"\n")
            .expect_err("min > interval");
        assert!(err.message.contains("min_interval <= interval"), "{err}");
        let err = parse("[telemetry]\nmax_requests_per_hour = 0\n").expect_err("zero");
        assert_eq!(err.at.key.as_deref(), Some("telemetry.max_requests_per_hour"));
        let small =
            parse("[telemetry]\ninterval = \"1s\"\n").expect("defaults follow a short interval");
        assert_eq!(small.telemetry.delivery.min_interval, Duration::from_secs(1));
    }

    #[test]
    fn plugin_limits_have_defaults_and_ranges() {
        let m = parse(&plugin("a")).expect("valid");
        assert_eq!(m.plugins[0].limits, PluginLimits::default());
        let text = format!("{}[plugin.limits]\nmemory_mb = 8\ncall_timeout_ms = 50\n", plugin("a"));
        let m = parse(&text).expect("valid");
        assert_eq!(
            (m.plugins[0].limits.memory_bytes, m.plugins[0].limits.call_timeout_ms),
            (8 << 20, 50)
        );
        let text = format!("{}[plugin.limits]\nmemory_mb = 99999\n", plugin("a"));
        let err = parse(&text).expect_err("too much memory");
        assert_eq!((err.at.line, err.at.key.as_deref()), (6, Some("plugin[0].limits.memory_mb")));
        let text = format!("{}[plugin.limits]\ncpu = 1\n", plugin("a"));
        let err = parse(&text).expect_err("unknown key");
        assert_eq!(err.at.key.as_deref(), Some("plugin[0].limits.cpu"), "{err}");
    }

    #[test]
    fn denied_metrics_are_checked_names_and_absent_means_none() {
        let m = parse(&plugin("a")).expect("valid");
        assert!(m.plugins[0].deny_metrics.is_empty());
        let text = format!("{}deny_metrics = [\"http.user_agents\", \"b\"]\n", plugin("a"));
        let m = parse(&text).expect("valid");
        assert_eq!(m.plugins[0].deny_metrics, ["http.user_agents", "b"]);
        assert_eq!(m.plugins[0].deny_metrics_at.line, 5);
        assert_eq!(m.plugins[0].deny_metrics_at.key.as_deref(), Some("plugin[0].deny_metrics"));
        for (bad, why) in [
            ("[\"Bad Name\"]", "is not a metric name"),
            ("[\"a\", \"a\"]", "listed twice"),
            ("[\"\"]", "is not a metric name"),
            ("\"a\"", "invalid type"),
        ] {
            let text = format!("{}deny_metrics = {bad}\n", plugin("a"));
            let err = parse(&text).expect_err(bad);
            assert!(err.message.contains(why), "{bad}: {err}");
            assert_eq!(err.at.line, 5, "{err}");
            assert_eq!(err.at.key.as_deref(), Some("plugin[0].deny_metrics"), "{err}");
        }
        let many: Vec<String> = (0..=MAX_DENIED_METRICS).map(|i| format!("\"m{i}\"")).collect();
        let text = format!("{}deny_metrics = [{}]\n", plugin("a"), many.join(","));
        assert!(parse(&text).expect_err("too many").message.contains("at most"));
    }

    #[test]
    fn the_ident_channel_is_off_unless_set_and_bounded() {
        assert_eq!(parse("[telemetry]\n").expect("valid").telemetry.ident, None);
        let m = parse("[telemetry]\n[telemetry.ident]\ncontact = \"ops@example.com\"\n")
            .expect("valid");
        assert_eq!(
            m.telemetry.ident,
            Some(Ident { contact: Some("ops@example.com".into()), description: None })
        );
        let long = "x".repeat(MAX_IDENT_DESCRIPTION + 1);
        for (body, key) in [
            (format!("description = \"{long}\""), "telemetry.ident.description"),
            ("contact = \"a\\nb\"".to_string(), "telemetry.ident.contact"),
            ("contact = \"\"".to_string(), "telemetry.ident.contact"),
            ("phone = \"1\"".to_string(), "telemetry.ident.phone"),
        ] {
            let err = parse(&format!("[telemetry]\n[telemetry.ident]\n{body}\n")).expect_err(&body);
            assert_eq!((err.at.line, err.at.key.as_deref()), (3, Some(key)), "{err}");
        }
        let err = parse("[telemetry]\n[telemetry.ident]\n").expect_err("empty");
        assert_eq!(err.at.key.as_deref(), Some("telemetry.ident"), "{err}");
    }

    #[test]
    fn the_sent_log_has_safe_defaults_and_ranges() {
        let d = parse("").expect("valid").telemetry.delivery;
        assert_eq!((d.sent_log_max_files, d.sent_log_max_bytes), (100, 16 << 20));
        let m = parse("[telemetry]\nsent_log_max_files = 3\nsent_log_max_bytes = 4194304\n")
            .expect("valid");
        assert_eq!(m.telemetry.delivery.sent_log_max_files, 3);
        let err = parse("[telemetry]\nsent_log_max_bytes = 1024\n").expect_err("too small");
        assert_eq!(err.at.key.as_deref(), Some("telemetry.sent_log_max_bytes"));
        let err = parse("[telemetry]\nsent_log_max_files = 0\n").expect_err("zero");
        assert_eq!(err.at.key.as_deref(), Some("telemetry.sent_log_max_files"));
    }

    #[test]
    fn an_unpinned_parse_takes_missing_hashes_and_refuses_everything_else_alike() {
        let unpinned = "[[plugin]]\nname = \"a\"\npath = \"p.wasm\"\n";
        let err = parse(unpinned).expect_err("no hash");
        assert_eq!(err.at.key.as_deref(), Some("plugin[0].sha256"));
        let m = Manifest::parse_unpinned(unpinned, Path::new("/etc/app/sonde.toml"))
            .expect("pin may fill it in");
        assert_eq!(m.plugins[0].sha256, "");
        let placeholder = plugin("a").replace(SHA, "<hex>");
        assert!(Manifest::parse_unpinned(&placeholder, Path::new("x.toml")).is_ok());
        let bad = format!("[telemetry]\ncolour = 1\n{unpinned}");
        let pinned = parse(&bad).expect_err("unknown key");
        let unpinned = Manifest::parse_unpinned(&bad, Path::new("/etc/app/sonde.toml"))
            .expect_err("the same error");
        assert_eq!(pinned, unpinned);
        assert_eq!(unpinned.at.key.as_deref(), Some("telemetry.colour"));
    }

    #[test]
    fn config_tables_belong_to_their_plugin() {
        let text = format!(
            "{}[plugin.config]\ntop_n = \"3\"\n\n{}events = [\"http.request\"]\nallow = true\n",
            plugin("a"),
            plugin("b")
        );
        let m = parse(&text).expect("valid");
        assert_eq!(m.plugins[0].config["top_n"], "3");
        assert!(m.plugins[1].config.is_empty());
        assert!(m.plugins[1].allow);
        assert_eq!(m.plugins[1].events, vec!["http.request".to_string()]);
    }
}
