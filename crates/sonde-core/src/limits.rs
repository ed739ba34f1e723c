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

/// Reads the text file at `path`, refusing one over `max` bytes. Reads at
/// most `max + 1` bytes whatever the file claims, so a file that grows while
/// it is read is still refused. `what` names the file in errors
/// (`"manifest"`).
pub fn read_capped(path: &std::path::Path, max: u64, what: &str) -> Result<String, String> {
    use std::io::Read;
    let file = std::fs::File::open(path).map_err(|e| format!("cannot read {what}: {e}"))?;
    let mut text = String::new();
    file.take(max + 1).read_to_string(&mut text).map_err(|e| format!("cannot read {what}: {e}"))?;
    if text.len() as u64 > max {
        return Err(format!("over the limit of {max} bytes for a {what}"));
    }
    Ok(text)
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
}
