//! The state directory: the instance id, the host secret, the compile cache.
//!
//! Nothing here is touched in `off` mode or by an ephemeral runtime.

use std::fs;
use std::io::Write;
use std::path::{Path, PathBuf};

use uuid::Uuid;

use crate::error::Error;

/// File holding the instance id (UUID v4, mode 0600).
const INSTANCE_ID_FILE: &str = "instance_id";
/// File holding the 32-byte random secret that authenticates cache files.
const SECRET_FILE: &str = "secret";
/// File holding the 32-byte random salt of the installation id.
const INSTALLATION_SALT_FILE: &str = "installation_salt";
/// Folder of compiled plugin artifacts.
const CACHE_DIR: &str = "cache";

pub(crate) struct StateDir {
    path: PathBuf,
}

impl StateDir {
    /// Opens (creating if needed) the state directory at `path`.
    pub(crate) fn open(path: &Path) -> Result<StateDir, Error> {
        create_private_dir(path)?;
        Ok(StateDir { path: path.to_path_buf() })
    }

    pub(crate) fn cache_dir(&self) -> Result<PathBuf, Error> {
        let dir = self.path.join(CACHE_DIR);
        create_private_dir(&dir)?;
        Ok(dir)
    }

    /// The instance id, created on first use.
    pub(crate) fn instance_id(&self) -> Result<Uuid, Error> {
        let path = self.path.join(INSTANCE_ID_FILE);
        if let Ok(text) = fs::read_to_string(&path)
            && let Ok(id) = Uuid::parse_str(text.trim())
        {
            return Ok(id);
        }
        let id = Uuid::new_v4();
        write_private(&path, id.to_string().as_bytes())?;
        Ok(id)
    }

    /// The installation id: HMAC-SHA256(salt, label), 32 hex digits; the
    /// salt is random, created on first use, and may be shared by copying.
    pub(crate) fn installation_id(&self) -> Result<String, Error> {
        use hmac::{Hmac, Mac};
        let salt = self.random_file(INSTALLATION_SALT_FILE)?;
        let mut mac = Hmac::<sha2::Sha256>::new_from_slice(&salt).expect("any key length is valid");
        mac.update(b"sonde installation id v1");
        Ok(hex::encode(&mac.finalize().into_bytes()[..16]))
    }

    /// The host secret, created on first use.
    pub(crate) fn secret(&self) -> Result<[u8; 32], Error> {
        self.random_file(SECRET_FILE)
    }

    /// 32 random bytes kept in `name`, created on first use.
    fn random_file(&self, name: &str) -> Result<[u8; 32], Error> {
        let path = self.path.join(name);
        if let Ok(bytes) = fs::read(&path)
            && let Ok(secret) = <[u8; 32]>::try_from(bytes.as_slice())
        {
            return Ok(secret);
        }
        let mut secret = [0u8; 32];
        getrandom::fill(&mut secret).map_err(|e| Error::State {
            path: path.clone(),
            source: std::io::Error::other(e.to_string()),
        })?;
        write_private(&path, &secret)?;
        Ok(secret)
    }
}

fn create_private_dir(path: &Path) -> Result<(), Error> {
    let err = |source| Error::State { path: path.to_path_buf(), source };
    let mut builder = fs::DirBuilder::new();
    builder.recursive(true);
    #[cfg(unix)]
    std::os::unix::fs::DirBuilderExt::mode(&mut builder, 0o700);
    builder.create(path).map_err(err)
}

/// Writes `bytes` to `path` atomically (temp file, then rename), mode 0600.
pub(crate) fn write_private(path: &Path, bytes: &[u8]) -> Result<(), Error> {
    let err = |source| Error::State { path: path.to_path_buf(), source };
    let tmp = path.with_extension(format!("tmp{}", std::process::id()));
    let mut options = fs::OpenOptions::new();
    options.write(true).create(true).truncate(true);
    #[cfg(unix)]
    std::os::unix::fs::OpenOptionsExt::mode(&mut options, 0o600);
    let mut file = options.open(&tmp).map_err(err)?;
    file.write_all(bytes).and_then(|()| file.sync_all()).map_err(err)?;
    fs::rename(&tmp, path).map_err(err)
}

/// Folder, beside a corrupt file, that such files are moved to.
pub(crate) const BAD_DIR: &str = "bad";

/// Moves a corrupt file into `bad/` beside it, where an operator can look at
/// it and nothing reads it again; keeps the `keep` newest there (by name).
pub(crate) fn set_aside(path: &Path, keep: usize) {
    let (Some(dir), Some(name)) = (path.parent(), path.file_name()) else { return };
    let bad = dir.join(BAD_DIR);
    let _ = fs::create_dir_all(&bad);
    if fs::rename(path, bad.join(name)).is_err() {
        // Never leave it where it would be read again.
        let _ = fs::remove_file(path);
    }
    if let Ok(entries) = fs::read_dir(&bad) {
        let mut names: Vec<PathBuf> = entries.filter_map(|e| e.ok().map(|e| e.path())).collect();
        names.sort();
        let excess = names.len().saturating_sub(keep);
        for old in &names[..excess] {
            let _ = fs::remove_file(old);
        }
    }
}
