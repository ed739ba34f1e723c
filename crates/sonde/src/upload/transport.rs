//! Getting bytes to the endpoint. The decisions (when, how often, what an
//! answer means) are in `policy.rs`; this is only the HTTP request.

use std::collections::BTreeMap;
use std::future::Future;
use std::io::Write;
use std::time::{Duration, SystemTime};

use flate2::Compression;
use flate2::write::GzEncoder;
use reqwest::header::{
    CONTENT_ENCODING, CONTENT_TYPE, HeaderMap, HeaderName, HeaderValue, LOCATION, RETRY_AFTER,
};
use sonde_core::{DeliverySettings, MAX_RESPONSE_BYTES, Protocol, redact};

/// An endpoint's answer, its body capped at [`MAX_RESPONSE_BYTES`].
#[derive(Debug, Clone, PartialEq)]
pub(crate) struct Answer {
    pub(crate) status: u16,
    pub(crate) retry_after: Option<Duration>,
    /// A redirect's `Location`, cut to [`MAX_LOCATION`] bytes (shown to the
    /// operator, never followed).
    pub(crate) location: Option<String>,
    pub(crate) body: Vec<u8>,
    /// The body was longer than the cap (and was not read further).
    pub(crate) body_cut: bool,
}

/// The most of a redirect's `Location` kept for the warning.
pub(crate) const MAX_LOCATION: usize = 512;

/// Sends one gzip-compressed body; an `Err` is a network-level failure.
pub(crate) trait Transport: Send + Sync + 'static {
    fn post(&self, gzip_body: Vec<u8>) -> impl Future<Output = Result<Answer, String>> + Send;
}

/// gzip level for JSON bodies. Measured on the 10,000-series benchmark
/// report (1.1 MB of JSON; `cargo run --release -p sonde-benches --example
/// gzip_levels`): level 4 gives 44,969 bytes in 2.3 ms, level 6 (zlib's
/// default) 44,284 bytes in 5.1 ms. Report JSON repeats its names and labels,
/// so the cheaper match search loses 1.5 % of size for half the CPU.
const JSON_LEVEL: u32 = 4;

/// gzip level for OTLP protobuf bodies: on the same report level 4 is 29 %
/// larger than level 6 (55,740 vs 43,311 bytes) for 10 % less time, so
/// protobuf keeps zlib's default.
const OTLP_LEVEL: u32 = 6;

/// Compresses a request body of `protocol`.
pub fn gzip(body: &[u8], protocol: Protocol) -> Vec<u8> {
    let level = match protocol {
        Protocol::Sonde => JSON_LEVEL,
        Protocol::Otlp => OTLP_LEVEL,
    };
    let mut enc = GzEncoder::new(Vec::with_capacity(body.len() / 4 + 64), Compression::new(level));
    // Writing to a Vec cannot fail.
    let _ = enc.write_all(body);
    enc.finish().unwrap_or_default()
}

/// The request's `Content-Type` for sonde's own protocol.
pub(crate) const JSON_CONTENT_TYPE: &str = "application/json";

/// The real transport: reqwest over rustls, no redirects, no system proxy,
/// bounded in time and in what it reads.
pub(crate) struct Http {
    client: reqwest::Client,
    endpoint: url::Url,
    content_type: &'static str,
}

impl Http {
    pub(crate) fn new(settings: &DeliverySettings, endpoint: url::Url) -> Result<Http, String> {
        let mut builder = reqwest::Client::builder()
            .user_agent(concat!("sonde/", env!("CARGO_PKG_VERSION")))
            .redirect(reqwest::redirect::Policy::none())
            .connect_timeout(settings.connect_timeout)
            .timeout(settings.request_timeout)
            .no_proxy()
            .default_headers(headers(&settings.headers)?);
        if let Some(proxy) = &settings.proxy {
            let proxy = reqwest::Proxy::all(proxy.as_str())
                .map_err(|_| format!("invalid proxy {}", redact(proxy)))?;
            builder = builder.proxy(proxy);
        }
        let client = builder.build().map_err(|e| format!("cannot build the HTTP client: {e}"))?;
        let content_type = match settings.protocol {
            Protocol::Sonde => JSON_CONTENT_TYPE,
            Protocol::Otlp => super::otlp::CONTENT_TYPE,
        };
        Ok(Http { client, endpoint, content_type })
    }
}

impl Transport for Http {
    async fn post(&self, gzip_body: Vec<u8>) -> Result<Answer, String> {
        let mut response = self
            .client
            .post(self.endpoint.clone())
            .header(CONTENT_TYPE, self.content_type)
            .header(CONTENT_ENCODING, "gzip")
            .body(gzip_body)
            .send()
            .await
            // reqwest's errors name the URL; ours never carries credentials.
            .map_err(|e| e.without_url().to_string())?;
        let status = response.status().as_u16();
        let retry_after = response
            .headers()
            .get(RETRY_AFTER)
            .and_then(|v| v.to_str().ok())
            .and_then(parse_retry_after);
        let location = response
            .headers()
            .get(LOCATION)
            .and_then(|v| v.to_str().ok())
            .map(|l| l.chars().take(MAX_LOCATION).collect());
        let mut body = Vec::new();
        let mut body_cut = false;
        loop {
            match response.chunk().await {
                Ok(Some(chunk)) => {
                    if body.len() + chunk.len() > MAX_RESPONSE_BYTES {
                        body_cut = true;
                        break;
                    }
                    body.extend_from_slice(&chunk);
                }
                Ok(None) => break,
                Err(e) => return Err(format!("reading the response: {}", e.without_url())),
            }
        }
        Ok(Answer { status, retry_after, location, body, body_cut })
    }
}

/// The operator's `[telemetry.headers]`, marked sensitive so they are never
/// shown in debug output.
fn headers(configured: &BTreeMap<String, String>) -> Result<HeaderMap, String> {
    let mut map = HeaderMap::new();
    for (name, value) in configured {
        let name = HeaderName::from_bytes(name.as_bytes())
            .map_err(|_| format!("invalid header name {name:?}"))?;
        let mut value =
            HeaderValue::from_str(value).map_err(|_| format!("invalid value for header {name}"))?;
        value.set_sensitive(true);
        map.insert(name, value);
    }
    Ok(map)
}

/// `Retry-After` as delta-seconds or an HTTP date.
pub(crate) fn parse_retry_after(value: &str) -> Option<Duration> {
    let value = value.trim();
    if let Ok(secs) = value.parse::<u64>() {
        return Some(Duration::from_secs(secs));
    }
    let when = httpdate::parse_http_date(value).ok()?;
    Some(when.duration_since(SystemTime::now()).unwrap_or(Duration::ZERO))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn retry_after_takes_seconds_or_a_date() {
        assert_eq!(parse_retry_after(" 120 "), Some(Duration::from_secs(120)));
        let later = SystemTime::now() + Duration::from_secs(3600);
        let d = parse_retry_after(&httpdate::fmt_http_date(later)).expect("a date");
        assert!(d > Duration::from_secs(3500) && d <= Duration::from_secs(3600), "{d:?}");
        assert_eq!(parse_retry_after("Wed, 21 Oct 2015 07:28:00 GMT"), Some(Duration::ZERO));
        assert_eq!(parse_retry_after("soon"), None);
    }

    #[test]
    fn gzip_round_trips() {
        let body = b"{\"reports\":[]}".repeat(100);
        for protocol in [Protocol::Sonde, Protocol::Otlp] {
            let z = gzip(&body, protocol);
            assert!(z.len() < body.len());
            let mut back = Vec::new();
            std::io::Read::read_to_end(&mut flate2::read::GzDecoder::new(z.as_slice()), &mut back)
                .expect("gunzip");
            assert_eq!(back, body);
        }
    }
}
