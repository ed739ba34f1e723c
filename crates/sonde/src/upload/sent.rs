//! The record of what left: every request the uploader made, kept in the
//! state directory's `sent/` folder, one file each, with the exact bytes
//! sent (the gzip body), when, where, and the endpoint's answer (its status
//! and its body, within the 64 KiB the uploader reads). `sonde sent` lists
//! them and prints one exactly as sent.
//!
//! Bounded by the manifest's `sent_log_max_files` and `sent_log_max_bytes`
//! (oldest out first; the newest request always fits, see
//! [`MIN_SENT_LOG_BYTES`](sonde_core::MIN_SENT_LOG_BYTES)); written temp
//! first, then renamed, mode 0600. Only the uploader writes here, so `off`
//! and `local` modes write nothing. A request still in flight when the
//! process dies is not recorded; its reports stay spooled and the request
//! that sends them later is.
//!
//! A file is `sonde-sent 1\n`, a line of JSON ([`SentRequest`]), then the
//! body's bytes and the answer's bytes, their lengths in the JSON.

use std::io::Read;
use std::path::Path;

use serde::{Deserialize, Serialize};
use sonde_core::{
    MAX_RESPONSE_BYTES, MAX_UPLOAD_BYTES, MAX_UPLOAD_DECODED_BYTES, Manifest, Protocol,
};

use super::quota::QuotaDir;
use crate::error::Error;

/// Folder of the record inside the state directory.
pub(crate) const SENT_DIR: &str = "sent";
/// Ending of a record file.
const EXTENSION: &str = ".sent";
/// First line of a record file.
const MAGIC: &[u8] = b"sonde-sent 1\n";
/// Longest JSON line read back: the fields are short.
const MAX_HEADER: usize = 16 * 1024;
/// Longest error text kept.
const MAX_ERROR: usize = 1024;
/// Largest record file read back: a request, an answer and the header.
const MAX_RECORD_FILE: u64 = (MAX_UPLOAD_BYTES + MAX_RESPONSE_BYTES + MAX_HEADER + 64) as u64;

/// One request that left the host, as the record keeps it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct SentRequest {
    /// Its id in the record: later requests have greater ids
    /// (`sonde sent --show ID`).
    #[serde(default)]
    pub id: String,
    /// When it was sent, RFC 3339 in UTC, to the millisecond.
    pub time: String,
    /// Where to (scheme, host, port and path; never credentials or query).
    pub endpoint: String,
    /// What it spoke.
    pub protocol: Protocol,
    /// Its `Content-Type` (`Content-Encoding` is always gzip).
    pub content_type: String,
    /// Reports in it.
    pub reports: usize,
    /// Bytes of its body on the wire (gzip).
    pub body_bytes: u64,
    /// The endpoint's HTTP status, if it answered.
    pub status: Option<u16>,
    /// Why there is no answer (a network error), if there is none.
    pub error: Option<String>,
    /// Bytes of the answer's body kept.
    pub answer_bytes: u64,
    /// The answer was longer than the uploader reads (64 KiB) and was cut.
    pub answer_cut: bool,
    /// From sending to the whole answer, milliseconds.
    pub duration_ms: u64,
}

/// A request read back from the record, bytes included.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SentRecord {
    /// What, when, where and the answer.
    pub request: SentRequest,
    /// The body exactly as it went on the wire: gzip.
    pub gzip_body: Vec<u8>,
    /// The answer's body as read (at most 64 KiB).
    pub answer: Vec<u8>,
}

impl SentRecord {
    /// The body decompressed: what the endpoint decoded, byte for byte
    /// (sonde JSON, `{"reports":[...]}`, or an OTLP protobuf). At most
    /// [`MAX_UPLOAD_DECODED_BYTES`], as a collector reads.
    pub fn body(&self) -> Result<Vec<u8>, std::io::Error> {
        let mut out = Vec::new();
        let mut decoder = flate2::read::GzDecoder::new(self.gzip_body.as_slice())
            .take(MAX_UPLOAD_DECODED_BYTES + 1);
        decoder.read_to_end(&mut out)?;
        if out.len() as u64 > MAX_UPLOAD_DECODED_BYTES {
            return Err(std::io::Error::new(
                std::io::ErrorKind::FileTooLarge,
                format!("decompresses past {MAX_UPLOAD_DECODED_BYTES} bytes"),
            ));
        }
        Ok(out)
    }
}

/// The writer, owned by the uploader.
pub(crate) struct SentLog {
    files: QuotaDir,
}

impl SentLog {
    pub(crate) fn open(dir: &Path, max_files: u32, max_bytes: u64) -> Result<SentLog, Error> {
        Ok(SentLog { files: QuotaDir::open(dir, EXTENSION, max_files, max_bytes)? })
    }

    /// Keeps one request: `request`'s fields (its id and lengths are set
    /// here), the `gzip_body` sent and the `answer` read. A failure to
    /// write is logged at debug level: the record never stops delivery.
    pub(crate) fn record(&mut self, mut request: SentRequest, gzip_body: &[u8], answer: &[u8]) {
        let name = self.files.new_name(EXTENSION);
        request.id = name.trim_end_matches(EXTENSION).to_string();
        request.body_bytes = gzip_body.len() as u64;
        request.answer_bytes = answer.len() as u64;
        if let Some(e) = &mut request.error {
            *e = e.chars().take(MAX_ERROR).collect();
        }
        // Serializing strings and numbers cannot fail.
        let header = serde_json::to_vec(&request).unwrap_or_default();
        let mut bytes =
            Vec::with_capacity(MAGIC.len() + header.len() + 1 + gzip_body.len() + answer.len());
        bytes.extend_from_slice(MAGIC);
        bytes.extend_from_slice(&header);
        bytes.push(b'\n');
        bytes.extend_from_slice(gzip_body);
        bytes.extend_from_slice(answer);
        if let (_, Err(e)) = self.files.write(name, &bytes) {
            tracing::debug!("cannot keep the record of a request sent: {e}");
        }
    }
}

/// Reads one record file: its header, and with `bytes` its body and answer.
fn read_record(path: &Path, bytes: bool) -> std::io::Result<SentRecord> {
    use std::io::{Error, ErrorKind};
    let invalid =
        |what: &str| Error::new(ErrorKind::InvalidData, format!("not a sent record: {what}"));
    let data = sonde_core::limits::read_file_capped(path, MAX_RECORD_FILE)?;
    let rest = data.strip_prefix(MAGIC).ok_or_else(|| invalid("no header"))?;
    let end = rest
        .iter()
        .take(MAX_HEADER)
        .position(|&b| b == b'\n')
        .ok_or_else(|| invalid("no header line"))?;
    let mut request: SentRequest =
        serde_json::from_slice(&rest[..end]).map_err(|e| invalid(&e.to_string()))?;
    let payload = &rest[end + 1..];
    let body_len = usize::try_from(request.body_bytes).map_err(|_| invalid("body length"))?;
    let answer_len = usize::try_from(request.answer_bytes).map_err(|_| invalid("answer length"))?;
    if body_len.checked_add(answer_len) != Some(payload.len()) {
        return Err(invalid("lengths do not match the file"));
    }
    if let Some(stem) =
        path.file_name().and_then(|n| n.to_str()).and_then(|n| n.strip_suffix(EXTENSION))
    {
        request.id = stem.to_string();
    }
    let (gzip_body, answer) = if bytes {
        (payload[..body_len].to_vec(), payload[body_len..].to_vec())
    } else {
        (Vec::new(), Vec::new())
    };
    Ok(SentRecord { request, gzip_body, answer })
}

/// The record's files, oldest first.
fn record_files(dir: &Path) -> Result<Vec<String>, Error> {
    let mut names: Vec<String> = match std::fs::read_dir(dir) {
        Ok(entries) => entries
            .filter_map(|e| e.ok())
            .map(|e| e.file_name().to_string_lossy().into_owned())
            .filter(|n| n.ends_with(EXTENSION))
            .collect(),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Vec::new(),
        Err(source) => return Err(Error::State { path: dir.to_path_buf(), source }),
    };
    names.sort();
    Ok(names)
}

/// Every request in the record of what left the host that `manifest`
/// describes, oldest first, without their bytes. Reads the state directory
/// only; writes nothing. A file that is not a record is skipped (and named
/// in a debug log line).
pub fn sent_requests(manifest: &Manifest) -> Result<Vec<SentRequest>, Error> {
    let dir = manifest.telemetry.state_dir.join(SENT_DIR);
    let mut out = Vec::new();
    for name in record_files(&dir)? {
        match read_record(&dir.join(&name), false) {
            Ok(r) => out.push(r.request),
            Err(e) => tracing::debug!(file = %name, "skipping a file of the sent record: {e}"),
        }
    }
    Ok(out)
}

/// The request `id` of the record (`last`: the newest), bytes included.
pub fn sent_record(manifest: &Manifest, id: &str) -> Result<SentRecord, Error> {
    let dir = manifest.telemetry.state_dir.join(SENT_DIR);
    let names = record_files(&dir)?;
    let name = if id == "last" {
        names.last().cloned()
    } else {
        names.into_iter().find(|n| n.strip_suffix(EXTENSION) == Some(id))
    };
    let Some(name) = name else {
        let source = std::io::Error::new(
            std::io::ErrorKind::NotFound,
            format!(
                "no request `{}` in the record (`sonde sent` lists them)",
                sonde_core::text::escape_control(id)
            ),
        );
        return Err(Error::State { path: dir, source });
    };
    let path = dir.join(name);
    read_record(&path, true).map_err(|source| Error::State { path, source })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn request(status: Option<u16>) -> SentRequest {
        SentRequest {
            id: String::new(),
            time: "2026-12-09T10:00:00.000Z".into(),
            endpoint: "http://127.0.0.1:9/v1/reports".into(),
            protocol: Protocol::Sonde,
            content_type: "application/json".into(),
            reports: 1,
            body_bytes: 0,
            status,
            error: None,
            answer_bytes: 0,
            answer_cut: false,
            duration_ms: 3,
        }
    }

    fn manifest(state: &Path) -> Manifest {
        let text = format!("[telemetry]\nstate_dir = {:?}\n", state.display().to_string());
        Manifest::parse(&text, Path::new("sonde.toml")).expect("valid")
    }

    #[test]
    fn requests_are_kept_exactly_and_the_oldest_go_first() {
        let dir = tempfile::tempdir().expect("tmp");
        let m = manifest(dir.path());
        assert!(sent_requests(&m).expect("no record yet").is_empty());
        let mut log = SentLog::open(&dir.path().join(SENT_DIR), 3, 1 << 20).expect("open");
        let body = crate::upload::transport::gzip(b"{\"reports\":[]}", Protocol::Sonde);
        for i in 0..5u16 {
            log.record(request(Some(200 + i)), &body, format!("answer {i}").as_bytes());
        }
        let listed = sent_requests(&m).expect("listed");
        let statuses: Vec<Option<u16>> = listed.iter().map(|r| r.status).collect();
        assert_eq!(statuses, [Some(202), Some(203), Some(204)], "three kept, oldest out first");
        assert!(listed.windows(2).all(|w| w[0].id < w[1].id));
        let last = sent_record(&m, "last").expect("the newest");
        assert_eq!(last.request, listed[2]);
        assert_eq!(last.gzip_body, body);
        assert_eq!(last.body().expect("gunzip"), b"{\"reports\":[]}");
        assert_eq!(last.answer, b"answer 4");
        assert_eq!(sent_record(&m, &listed[0].id).expect("by id").request.status, Some(202));
        assert!(sent_record(&m, "nope").is_err());
        #[cfg(unix)]
        {
            use std::os::unix::fs::PermissionsExt;
            let file = dir.path().join(SENT_DIR).join(format!("{}{EXTENSION}", listed[0].id));
            let mode = std::fs::metadata(file).expect("file").permissions().mode();
            assert_eq!(mode & 0o777, 0o600);
        }
    }

    #[test]
    fn the_byte_quota_keeps_the_newest_and_a_foreign_file_is_skipped() {
        let dir = tempfile::tempdir().expect("tmp");
        let m = manifest(dir.path());
        let sent = dir.path().join(SENT_DIR);
        let mut log = SentLog::open(&sent, 100, 1000).expect("open");
        log.record(request(Some(200)), &[7u8; 600], b"");
        log.record(request(None), &[8u8; 600], b"");
        std::fs::write(sent.join("0000000000000000-00000000.sent"), b"garbage").expect("write");
        let listed = sent_requests(&m).expect("listed");
        assert_eq!(listed.len(), 1, "{listed:?}");
        assert_eq!(listed[0].status, None);
        let record = sent_record(&m, "last").expect("kept");
        assert_eq!(record.gzip_body, vec![8u8; 600]);
        assert!(record.body().is_err(), "not gzip");
    }
}
