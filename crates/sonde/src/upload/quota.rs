//! A folder of files kept under a quota of files and bytes, oldest out
//! first: the spool's and the record of what left's bookkeeping.
//!
//! Names sort by creation (each starts with the time in milliseconds, zero
//! padded), so the oldest is the first name. Files are written temp first,
//! then renamed (`state::write_private`, mode 0600); leftovers of an
//! interrupted write (`.tmp` in the name) are removed on open.

use std::collections::BTreeMap;
use std::fs;
use std::path::{Path, PathBuf};
use std::time::{SystemTime, UNIX_EPOCH};

use crate::error::Error;

pub(crate) struct QuotaDir {
    pub(crate) dir: PathBuf,
    max_files: usize,
    max_bytes: u64,
    /// File name → size, oldest first.
    pub(crate) files: BTreeMap<String, u64>,
    bytes: u64,
    seq: u64,
}

impl QuotaDir {
    /// Opens (creating it, mode 0700) the folder `dir` holding the files
    /// whose names end in `extension`, removing leftovers of interrupted
    /// writes.
    pub(crate) fn open(
        dir: &Path,
        extension: &str,
        max_files: u32,
        max_bytes: u64,
    ) -> Result<QuotaDir, Error> {
        let err = |source| Error::State { path: dir.to_path_buf(), source };
        let mut builder = fs::DirBuilder::new();
        builder.recursive(true);
        #[cfg(unix)]
        std::os::unix::fs::DirBuilderExt::mode(&mut builder, 0o700);
        builder.create(dir).map_err(err)?;
        let mut files = BTreeMap::new();
        let mut bytes = 0;
        for entry in fs::read_dir(dir).map_err(err)? {
            let Ok(entry) = entry else { continue };
            let name = entry.file_name().to_string_lossy().into_owned();
            let Ok(meta) = entry.metadata() else { continue };
            if !meta.is_file() {
                continue;
            }
            if name.ends_with(extension) {
                bytes += meta.len();
                files.insert(name, meta.len());
            } else if name.contains(".tmp") {
                let _ = fs::remove_file(entry.path());
            }
        }
        Ok(QuotaDir {
            dir: dir.to_path_buf(),
            max_files: max_files as usize,
            max_bytes,
            files,
            bytes,
            seq: 0,
        })
    }

    pub(crate) fn len(&self) -> usize {
        self.files.len()
    }

    pub(crate) fn bytes(&self) -> u64 {
        self.bytes
    }

    /// A new name: `<millis>-<seq>` then `rest`, later than every earlier
    /// one of this folder's writer.
    pub(crate) fn new_name(&mut self, rest: &str) -> String {
        let millis = SystemTime::now().duration_since(UNIX_EPOCH).map_or(0, |d| d.as_millis());
        self.seq += 1;
        format!("{millis:016}-{:08}{rest}", self.seq % 100_000_000)
    }

    /// Writes `bytes` as `name`, after dropping the oldest files until it
    /// fits (so the folder never holds more than its quota, not even for a
    /// moment; a file over the byte quota by itself is kept). Returns how
    /// many old files were dropped, and whether this one was written.
    pub(crate) fn write(&mut self, name: String, bytes: &[u8]) -> (u64, Result<(), Error>) {
        let dropped = self.make_room(bytes.len() as u64);
        let written = crate::state::write_private(&self.dir.join(&name), bytes);
        if written.is_ok() {
            self.bytes += bytes.len() as u64;
            self.files.insert(name, bytes.len() as u64);
        }
        (dropped, written)
    }

    /// Drops the oldest files until one more of `incoming` bytes fits.
    fn make_room(&mut self, incoming: u64) -> u64 {
        let mut dropped = 0;
        while self.files.len() >= self.max_files || self.bytes + incoming > self.max_bytes {
            let Some((name, size)) = self.files.pop_first() else { break };
            let _ = fs::remove_file(self.dir.join(&name));
            self.bytes -= size;
            dropped += 1;
        }
        dropped
    }

    /// Forgets `name` (already removed or moved away); returns whether it
    /// was there.
    pub(crate) fn forget(&mut self, name: &str) -> bool {
        match self.files.remove(name) {
            Some(size) => {
                self.bytes -= size;
                true
            }
            None => false,
        }
    }

    /// Removes `name`.
    pub(crate) fn remove(&mut self, name: &str) {
        if self.forget(name) {
            let _ = fs::remove_file(self.dir.join(name));
        }
    }
}
