//! Reading an upload: the body of `POST /v1/reports`, gzip or plain, a
//! [`ReportBatch`](sonde_core::ReportBatch) or a bare [`Report`], within
//! bounds.
//!
//! Every size here is controlled by whoever can reach the collector, so each
//! has a limit and a typed error ([`UploadError`]) that the routes turn into
//! `400`, `413` or `415`.

use std::io::Read;

use flate2::read::GzDecoder;
use serde::Deserialize;
use serde::de::IgnoredAny;
use serde_json::value::RawValue;
use sonde_core::{REPORT_SCHEMA_VERSION, Report, ReportError};

/// Largest request body read, compressed: the wire contract's
/// [`sonde_core::MAX_UPLOAD_BYTES`], which the host's batching respects.
pub const MAX_BODY_BYTES: usize = sonde_core::MAX_UPLOAD_BYTES;
/// Largest body after decompression ([`sonde_core::MAX_UPLOAD_DECODED_BYTES`]):
/// the decoder is read through a `take` of this many bytes plus one, which
/// stops a gzip bomb.
pub const MAX_DECODED_BYTES: u64 = sonde_core::MAX_UPLOAD_DECODED_BYTES;
/// Most reports in one batch ([`sonde_core::MAX_BATCH_REPORTS`]).
pub const MAX_REPORTS_PER_BATCH: usize = sonde_core::MAX_BATCH_REPORTS;

/// An upload that cannot be taken.
#[derive(Debug, thiserror::Error)]
pub enum UploadError {
    /// `Content-Encoding` other than `gzip` or `identity`.
    #[error("content encoding `{0}` is not supported: send gzip or plain JSON")]
    Encoding(String),
    /// The body says gzip but is not.
    #[error("body is not valid gzip: {0}")]
    Gzip(std::io::Error),
    /// Over [`MAX_DECODED_BYTES`] once decompressed.
    #[error("body is over {MAX_DECODED_BYTES} bytes once decompressed")]
    TooLarge,
    /// Not a batch or a report.
    #[error("body is not a report or a report batch: {0}")]
    Json(serde_json::Error),
    /// JSON must be UTF-8 (RFC 8259); a bare report that is not is refused
    /// before it is read.
    #[error("body is not UTF-8")]
    NotUtf8,
    /// A report holds a series no report may carry (a histogram whose
    /// buckets do not fit its bounds, ...): the check of
    /// [`Report::validate`], which the host also holds to when it writes.
    #[error("invalid report: {0}")]
    Invalid(sonde_core::ReportError),
    /// Over [`MAX_REPORTS_PER_BATCH`].
    #[error("batch of {0} reports is over the limit of {MAX_REPORTS_PER_BATCH}")]
    TooManyReports(usize),
    /// `{"reports": []}`.
    #[error("batch holds no report")]
    Empty,
    /// Reports of several instances in one batch: the response answers one.
    #[error("batch mixes reports of several instances; send one batch per instance")]
    MixedInstances,
    /// A report schema this collector does not read.
    #[error(
        "report schema {0} is not supported (this collector reads schema {REPORT_SCHEMA_VERSION})"
    )]
    Schema(u32),
}

/// How the body is encoded, from its `Content-Encoding` header.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Encoding {
    /// No header, or `identity`.
    Plain,
    /// `gzip` (or `x-gzip`).
    Gzip,
}

impl Encoding {
    /// Reads a `Content-Encoding` value.
    pub fn from_header(value: Option<&str>) -> Result<Encoding, UploadError> {
        match value.map(|v| v.trim().to_ascii_lowercase()) {
            None => Ok(Encoding::Plain),
            Some(v) if v.is_empty() || v == "identity" => Ok(Encoding::Plain),
            Some(v) if v == "gzip" || v == "x-gzip" => Ok(Encoding::Gzip),
            Some(v) => Err(UploadError::Encoding(v)),
        }
    }
}

/// One report of an upload: what it says, and its JSON as the host sent it
/// (what the collector stores, so that fields and values a newer host
/// added are kept even where this collector reads them as `unknown`).
#[derive(Debug, Clone, PartialEq)]
pub struct Received {
    /// The report, decoded and valid ([`Report::validate`]).
    pub report: Report,
    /// Its JSON text, byte for byte as it was in the upload.
    pub json: String,
}

/// Decodes an upload body into its reports, oldest first. The reports all
/// have the same instance, and there is at least one.
pub fn decode(body: &[u8], encoding: Encoding) -> Result<Vec<Received>, UploadError> {
    let json = match encoding {
        Encoding::Plain if body.len() as u64 > MAX_DECODED_BYTES => {
            return Err(UploadError::TooLarge);
        }
        Encoding::Plain => std::borrow::Cow::Borrowed(body),
        Encoding::Gzip => std::borrow::Cow::Owned(gunzip(body)?),
    };
    let reports = parse(&json)?;
    let Some(first) = reports.first() else {
        return Err(UploadError::Empty);
    };
    if reports.iter().any(|r| r.report.instance_id != first.report.instance_id) {
        return Err(UploadError::MixedInstances);
    }
    if let Some(r) = reports.iter().find(|r| r.report.schema != REPORT_SCHEMA_VERSION) {
        return Err(UploadError::Schema(r.report.schema));
    }
    Ok(reports)
}

fn gunzip(body: &[u8]) -> Result<Vec<u8>, UploadError> {
    let mut out = Vec::with_capacity(body.len().saturating_mul(4).min(MAX_BODY_BYTES * 4));
    GzDecoder::new(body)
        .take(MAX_DECODED_BYTES + 1)
        .read_to_end(&mut out)
        .map_err(UploadError::Gzip)?;
    if out.len() as u64 > MAX_DECODED_BYTES {
        return Err(UploadError::TooLarge);
    }
    Ok(out)
}

/// A batch is an object with a `reports` key; anything else is read as a
/// bare report. Telling them apart first (a pass that allocates nothing)
/// keeps serde's error, with its line and column, for the shape meant.
/// A batch's reports are split out as raw JSON first (their count checked
/// before any is decoded), then each is decoded from its own text.
fn parse(json: &[u8]) -> Result<Vec<Received>, UploadError> {
    #[derive(Deserialize)]
    struct Shape {
        reports: Option<IgnoredAny>,
    }
    #[derive(Deserialize)]
    struct RawBatch<'a> {
        #[serde(borrow)]
        reports: Vec<&'a RawValue>,
    }
    let shape: Shape = serde_json::from_slice(json).map_err(UploadError::Json)?;
    let one = |text: &str| {
        Report::from_json(text.as_bytes())
            .map(|report| Received { report, json: text.to_string() })
            .map_err(|e| match e {
                ReportError::Json(e) => UploadError::Json(e),
                invalid => UploadError::Invalid(invalid),
            })
    };
    if shape.reports.is_none() {
        let text = std::str::from_utf8(json).map_err(|_| UploadError::NotUtf8)?;
        return Ok(vec![one(text)?]);
    }
    let batch: RawBatch<'_> = serde_json::from_slice(json).map_err(UploadError::Json)?;
    if batch.reports.len() > MAX_REPORTS_PER_BATCH {
        return Err(UploadError::TooManyReports(batch.reports.len()));
    }
    batch.reports.iter().map(|raw| one(raw.get())).collect()
}

#[cfg(test)]
mod tests {
    use std::io::Write;

    use flate2::Compression;
    use flate2::write::GzEncoder;

    use super::*;

    fn gzip(bytes: &[u8]) -> Vec<u8> {
        let mut enc = GzEncoder::new(Vec::new(), Compression::default());
        enc.write_all(bytes).expect("write");
        enc.finish().expect("finish")
    }

    #[test]
    fn encodings_are_read_from_the_header() {
        assert_eq!(Encoding::from_header(None).ok(), Some(Encoding::Plain));
        assert_eq!(Encoding::from_header(Some("GZIP")).ok(), Some(Encoding::Gzip));
        assert!(matches!(Encoding::from_header(Some("br")), Err(UploadError::Encoding(_))));
    }

    #[test]
    fn a_gzip_bomb_is_stopped_at_the_decoded_limit() {
        let bomb = gzip(&vec![b' '; MAX_DECODED_BYTES as usize + 10]);
        assert!(bomb.len() < MAX_BODY_BYTES);
        assert!(matches!(decode(&bomb, Encoding::Gzip), Err(UploadError::TooLarge)));
    }

    #[test]
    fn garbage_is_a_json_error_and_not_gzip_is_a_gzip_error() {
        assert!(matches!(decode(b"<html>", Encoding::Plain), Err(UploadError::Json(_))));
        assert!(matches!(decode(b"{\"x\":1}", Encoding::Gzip), Err(UploadError::Gzip(_))));
        assert!(matches!(decode(br#"{"reports": []}"#, Encoding::Plain), Err(UploadError::Empty)));
        let err = decode(br#"{"reports": [{"schema": 1}]}"#, Encoding::Plain).expect_err("bad");
        assert!(err.to_string().contains("missing field"), "{err}");
    }

    #[test]
    fn a_report_the_host_would_not_write_is_refused() {
        let mut report = Report::new(uuid::Uuid::nil(), sonde_core::BufferStats::default(), vec![]);
        report.sources.push(sonde_core::SourceReport {
            name: "m".into(),
            overflow_series: 0,
            dropped_values: 0,
            invalid_series: 0,
            metrics: vec![sonde_core::Metric {
                name: "h".into(),
                kind: sonde_core::MetricKind::Histogram,
                unit: String::new(),
                labels: Default::default(),
                value: sonde_core::MetricValue::Histogram {
                    count: 1,
                    sum: 1.0,
                    bounds: vec![1.0, 2.0],
                    buckets: vec![1],
                },
            }],
        });
        let json = serde_json::to_vec(&report).expect("serializes");
        assert!(matches!(decode(&json, Encoding::Plain), Err(UploadError::Invalid(_))));
        // What the host writes of the same report is taken, and kept as
        // it was written.
        let taken = decode(&report.to_json(), Encoding::Plain).expect("taken");
        assert_eq!(taken[0].json.as_bytes(), report.to_json().as_slice());
    }

    #[test]
    fn each_report_of_a_batch_keeps_its_own_text() {
        let a = Report::new(uuid::Uuid::nil(), sonde_core::BufferStats::default(), vec![]);
        let b = Report::new(uuid::Uuid::nil(), sonde_core::BufferStats::default(), vec![]);
        let (ja, jb) = (String::from_utf8(a.to_json()).expect("utf8"), {
            // Spacing and an unknown field, as another writer might send.
            let t = String::from_utf8(b.to_json()).expect("utf8");
            format!("{{ \"extra\": [1, 2],{}", &t[1..])
        });
        let body = format!("{{\"reports\": [{ja} , {jb}]}}");
        let got = decode(body.as_bytes(), Encoding::Plain).expect("taken");
        assert_eq!((got[0].json.as_str(), got[1].json.as_str()), (ja.as_str(), jb.as_str()));
        assert_eq!((&got[0].report, &got[1].report), (&a, &b));
        let many = format!("{{\"reports\": [{}]}}", vec![ja; MAX_REPORTS_PER_BATCH + 1].join(","));
        assert!(matches!(
            decode(many.as_bytes(), Encoding::Plain),
            Err(UploadError::TooManyReports(n)) if n == MAX_REPORTS_PER_BATCH + 1
        ));
    }
}
