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
