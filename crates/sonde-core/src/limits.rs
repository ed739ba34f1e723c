//! Named limits on everything a file, a peer or a plugin controls.
//!
//! Each constant says why it has the value it has. A value past a limit is an
//! error (for operator input) or is dropped and counted (for plugin output).

/// Largest manifest file read. A manifest is a few kilobytes; anything near
/// this is not a manifest.
pub const MAX_MANIFEST_BYTES: u64 = 1024 * 1024;

/// Most plugins one manifest may list. Each one costs a compiled module and
/// a Store; sixty-four is far beyond any sane deployment.
pub const MAX_PLUGINS: usize = 64;

/// Longest plugin name. Names appear in every report and log line.
pub const MAX_PLUGIN_NAME_LEN: usize = 64;

/// Most event kinds one plugin may be granted.
pub const MAX_GRANTED_EVENTS: usize = 32;

/// Longest event kind name (`http.request`).
pub const MAX_EVENT_KIND_LEN: usize = 64;

/// Most `[plugin.config]` entries per plugin.
pub const MAX_CONFIG_ENTRIES: usize = 64;

/// Longest `[plugin.config]` key.
pub const MAX_CONFIG_KEY_LEN: usize = 64;

/// Longest `[plugin.config]` value: room for a list of routes, not a payload.
pub const MAX_CONFIG_VALUE_LEN: usize = 4096;

/// Smallest ring buffer. Below this the dispatcher would wake for every event.
pub const MIN_BUFFER_CAPACITY: usize = 16;

/// Largest ring buffer: 4 Mi events, about 1 GiB of slots. More memory than
/// that for telemetry would hurt the host.
pub const MAX_BUFFER_CAPACITY: usize = 4 * 1024 * 1024;

/// Default ring buffer: 64 Ki events.
pub const DEFAULT_BUFFER_CAPACITY: usize = 64 * 1024;

/// Largest events file read by `--events` (preview, send, bench).
pub const MAX_EVENTS_FILE_BYTES: u64 = 256 * 1024 * 1024;

/// Longest line of an events file.
pub const MAX_EVENT_LINE_BYTES: usize = 64 * 1024;

/// Most fields one event may carry (host slots are fixed-size).
pub const MAX_EVENT_FIELDS: usize = 8;

/// Longest field name.
pub const MAX_FIELD_NAME_LEN: usize = 64;

/// Longest metric name a plugin may declare, and so the longest name
/// `deny_metrics` may list.
pub const MAX_METRIC_NAME_LEN: usize = 128;

/// Most names in one plugin's `deny_metrics`: as many as a plugin may
/// declare metrics.
pub const MAX_DENIED_METRICS: usize = 64;

/// Longest `[telemetry.ident] contact`, in bytes: an e-mail address or a
/// URL, not a letter.
pub const MAX_IDENT_CONTACT: usize = 256;

/// Longest `[telemetry.ident] description`, in bytes: a line or two about
/// the installation.
pub const MAX_IDENT_DESCRIPTION: usize = 1024;

/// Whether `name` is a metric name a plugin may declare: 1 to
/// [`MAX_METRIC_NAME_LEN`] of `a-z`, `0-9`, `.`, `_`, `-`.
pub fn is_metric_name(name: &str) -> bool {
    !name.is_empty()
        && name.len() <= MAX_METRIC_NAME_LEN
        && name.chars().all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || "._-".contains(c))
}

/// Reads the text file at `path`, refusing one over `max` bytes (see
/// [`read_file_capped`]). `what` names the file in errors (`"manifest"`).
pub fn read_capped(path: &std::path::Path, max: u64, what: &str) -> Result<String, String> {
    let bytes = read_file_capped(path, max).map_err(|e| match e.kind() {
        std::io::ErrorKind::FileTooLarge => format!("over the limit of {max} bytes for a {what}"),
        _ => format!("cannot read {what}: {e}"),
    })?;
    String::from_utf8(bytes).map_err(|_| format!("cannot read {what}: it is not UTF-8 text"))
}

/// Reads the file at `path`, which must be a regular file of at most `max`
/// bytes: opened once (without blocking, so a FIFO cannot hold the caller),
/// checked on the open descriptor (a symlink to `/dev/zero` or a FIFO is
/// refused, whatever its name says), and read at most `max + 1` bytes
/// whatever the file claims, so a file that grows while it is read is
/// still refused. The bytes returned are the bytes read: hash and use them,
/// never the path again. Errors: the open or read error, `InvalidInput` for
/// a file that is not a regular file, `FileTooLarge` past `max`.
pub fn read_file_capped(path: &std::path::Path, max: u64) -> std::io::Result<Vec<u8>> {
    use std::io::{Error, ErrorKind, Read};
    let mut options = std::fs::OpenOptions::new();
    options.read(true);
    #[cfg(unix)]
    {
        use std::os::unix::fs::OpenOptionsExt;
        // O_NONBLOCK: opening a FIFO for reading would otherwise wait for
        // a writer. It changes nothing for a regular file.
        options.custom_flags(libc::O_NONBLOCK);
    }
    let file = options.open(path)?;
    let meta = file.metadata()?;
    if !meta.is_file() {
        return Err(Error::new(ErrorKind::InvalidInput, "not a regular file"));
    }
    if meta.len() > max {
        return Err(Error::new(
            ErrorKind::FileTooLarge,
            format!("{} bytes, over the limit of {max}", meta.len()),
        ));
    }
    let mut bytes = Vec::with_capacity(meta.len() as usize);
    file.take(max + 1).read_to_end(&mut bytes)?;
    if bytes.len() as u64 > max {
        return Err(Error::new(ErrorKind::FileTooLarge, format!("over the limit of {max} bytes")));
    }
    Ok(bytes)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn read_capped_takes_up_to_the_limit_and_refuses_more() {
        let dir = std::env::temp_dir().join(format!("sonde-read-capped-{}", std::process::id()));
        std::fs::create_dir_all(&dir).expect("tmp");
        let path = dir.join("f.toml");
        std::fs::write(&path, "x".repeat(10)).expect("write");
        assert_eq!(read_capped(&path, 10, "manifest").expect("at the cap").len(), 10);
        let err = read_capped(&path, 9, "manifest").expect_err("over the cap");
        assert_eq!(err, "over the limit of 9 bytes for a manifest");
        let missing = read_capped(&dir.join("nope"), 9, "policy").expect_err("missing");
        assert!(missing.starts_with("cannot read policy:"), "{missing}");
        let _ = std::fs::remove_dir_all(&dir);
    }

    #[cfg(unix)]
    #[test]
    fn only_regular_files_are_read_and_a_fifo_does_not_block() {
        use std::io::ErrorKind;
        let dir = std::env::temp_dir().join(format!("sonde-read-file-{}", std::process::id()));
        std::fs::create_dir_all(&dir).expect("tmp");
        let zero = dir.join("zero.wasm");
        let _ = std::fs::remove_file(&zero);
        std::os::unix::fs::symlink("/dev/zero", &zero).expect("symlink");
        let err = read_file_capped(&zero, 1 << 20).expect_err("a device");
        assert_eq!(err.kind(), ErrorKind::InvalidInput, "{err}");
        let fifo = dir.join("fifo.wasm");
        let _ = std::fs::remove_file(&fifo);
        let status = std::process::Command::new("mkfifo").arg(&fifo).status().expect("mkfifo");
        assert!(status.success());
        // Opening a FIFO without O_NONBLOCK would wait here for a writer.
        let err = read_file_capped(&fifo, 1 << 20).expect_err("a FIFO");
        assert_eq!(err.kind(), ErrorKind::InvalidInput, "{err}");
        let err = read_file_capped(&dir, 1 << 20).expect_err("a directory");
        assert_eq!(err.kind(), ErrorKind::InvalidInput, "{err}");
        let file = dir.join("ok");
        std::fs::write(&file, b"abc").expect("write");
        assert_eq!(read_file_capped(&file, 3).expect("at the cap"), b"abc");
        let err = read_file_capped(&file, 2).expect_err("over");
        assert_eq!(err.kind(), ErrorKind::FileTooLarge);
        let _ = std::fs::remove_dir_all(&dir);
    }
}
