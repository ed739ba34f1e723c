//! The spool: reports waiting for the endpoint, one file each, in the state
//! directory.
//!
//! Every report is spooled before it is sent, so nothing is lost if the
//! process dies mid-request. Files are written to a temporary name and
//! renamed, so a crash never leaves half a report under a real name. Names
//! sort by creation (`<millis>-<seq>-<report_id>.json`), the oldest are
//! dropped first when a quota is exceeded, and every drop is counted. A file
//! that does not decode as a report ([`Report::from_json`]) is moved to `bad/`
//! with a warning, never trusted and never fatal; the host itself never
//! writes one ([`Report::to_json`] holds to the same check).

use std::fs;

use sonde_core::Report;

use super::quota::QuotaDir;
use crate::error::Error;

/// Most files kept in `bad/`; older ones are deleted.
const MAX_BAD_FILES: usize = 32;

pub(crate) struct Spool {
    files: QuotaDir,
}

/// Reports read back for one request, with the files they came from.
pub(crate) struct Batch {
    pub(crate) names: Vec<String>,
    /// `{"reports":[...]}` built from the spooled bytes as they are.
    pub(crate) body: Vec<u8>,
    pub(crate) count: usize,
}

impl Spool {
    /// Opens the spool in `dir`, removing leftovers of interrupted writes.
    pub(crate) fn open(
        dir: &std::path::Path,
        max_files: u32,
        max_bytes: u64,
    ) -> Result<Spool, Error> {
        Ok(Spool { files: QuotaDir::open(dir, ".json", max_files, max_bytes)? })
    }

    pub(crate) fn len(&self) -> usize {
        self.files.len()
    }

    pub(crate) fn bytes(&self) -> u64 {
        self.files.bytes()
    }

    /// Spools `report`; returns how many reports were lost doing it: old
    /// ones the quota dropped, plus this one if it could not be written.
    pub(crate) fn push(&mut self, report: &Report) -> u64 {
        let name = self.files.new_name(&format!("-{}.json", report.report_id));
        let (dropped, written) = self.files.write(name, &report.to_json());
        if let Err(e) = written {
            // A report that cannot be spooled is lost: count it with the rest.
            tracing::debug!("cannot spool a report: {e}");
            return dropped + 1;
        }
        dropped
    }

    /// The oldest reports, at most `max_count`, whose JSON adds up to at most
    /// `max_bytes` (at least one), wrapped as a batch. Corrupt files are set
    /// aside on the way.
    pub(crate) fn batch(&mut self, max_bytes: u64, max_count: usize) -> Option<Batch> {
        let mut body = b"{\"reports\":[".to_vec();
        let mut names = Vec::new();
        let candidates: Vec<(String, u64)> =
            self.files.files.iter().map(|(n, s)| (n.clone(), *s)).collect();
        let mut used = 0;
        for (name, size) in candidates {
            if !names.is_empty() && (used + size > max_bytes || names.len() >= max_count) {
                break;
            }
            let path = self.files.dir.join(&name);
            // The same check every reader makes, so what is sent is what a
            // collector takes; the writer (`Report::to_json`) never fails it.
            let valid = fs::read(&path).ok().filter(|b| Report::from_json(b).is_ok());
            let Some(bytes) = valid else {
                self.set_aside(&name);
                continue;
            };
            if !names.is_empty() {
                body.push(b',');
            }
            body.extend_from_slice(&bytes);
            used += size;
            names.push(name);
        }
        body.extend_from_slice(b"]}");
        let count = names.len();
        (count > 0).then_some(Batch { names, body, count })
    }

    /// Removes delivered (or rejected) reports.
    pub(crate) fn remove(&mut self, names: &[String]) {
        for name in names {
            self.files.remove(name);
        }
    }

    fn set_aside(&mut self, name: &str) {
        let path = self.files.dir.join(name);
        tracing::warn!(file = %path.display(), "spooled report is corrupt; moved to bad/");
        crate::state::set_aside(&path, MAX_BAD_FILES);
        self.files.forget(name);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use sonde_core::BufferStats;
    use uuid::Uuid;

    fn report() -> Report {
        Report::new(Uuid::nil(), BufferStats::default(), vec![])
    }

    #[test]
    fn the_oldest_reports_go_first_when_over_quota_and_are_counted() {
        let dir = tempfile::tempdir().expect("tmp");
        let mut spool = Spool::open(dir.path(), 3, 1 << 20).expect("open");
        let reports: Vec<Report> = (0..5).map(|_| report()).collect();
        let dropped: u64 = reports.iter().map(|r| spool.push(r)).sum();
        assert_eq!((dropped, spool.len()), (2, 3));
        let batch = spool.batch(1 << 20, 100).expect("batch");
        let back: sonde_core::ReportBatch = serde_json::from_slice(&batch.body).expect("decodes");
        let ids: Vec<Uuid> = back.reports.iter().map(|r| r.report_id).collect();
        assert_eq!(ids, reports[2..].iter().map(|r| r.report_id).collect::<Vec<_>>());
        spool.remove(&batch.names);
        assert_eq!((spool.len(), spool.bytes()), (0, 0));
    }

    #[test]
    fn batches_respect_the_byte_limit_but_always_carry_one_report() {
        let dir = tempfile::tempdir().expect("tmp");
        let mut spool = Spool::open(dir.path(), 100, 1 << 20).expect("open");
        for _ in 0..4 {
            spool.push(&report());
        }
        let one = report().to_json().len() as u64;
        assert_eq!(spool.batch(one * 2 + 1, 100).expect("batch").count, 2);
        assert_eq!(spool.batch(1, 100).expect("batch").count, 1);
        assert_eq!(spool.batch(1 << 20, 3).expect("batch").count, 3);
    }

    #[test]
    fn a_corrupt_file_is_set_aside_and_the_rest_survive_a_reopen() {
        let dir = tempfile::tempdir().expect("tmp");
        let mut spool = Spool::open(dir.path(), 100, 1 << 20).expect("open");
        spool.push(&report());
        std::fs::write(dir.path().join("0000000000000000-00000000-x.json"), b"{not json")
            .expect("write");
        std::fs::write(dir.path().join("leftover.json.tmp123"), b"half").expect("write");
        spool.push(&report());
        let mut reopened = Spool::open(dir.path(), 100, 1 << 20).expect("reopen");
        assert_eq!(reopened.len(), 3);
        assert!(!dir.path().join("leftover.json.tmp123").exists());
        let batch = reopened.batch(1 << 20, 100).expect("batch");
        assert_eq!(batch.count, 2);
        assert_eq!(reopened.len(), 2);
        assert!(dir.path().join("bad/0000000000000000-00000000-x.json").exists());
    }
}
