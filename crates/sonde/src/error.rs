//! The host library's error type.

use std::path::PathBuf;

/// What can go wrong when starting or asking the runtime.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    /// The wasmtime engine could not be configured.
    #[error("cannot set up the plugin engine: {0}")]
    Engine(String),
    /// The state directory could not be used.
    #[error("state directory {path}: {source}")]
    State {
        /// The file or folder.
        path: PathBuf,
        /// What the OS said.
        source: std::io::Error,
    },
    /// Telemetry is off (by the manifest or an environment kill switch).
    #[error("telemetry is off")]
    Off,
    /// The dispatcher thread is gone (shut down, or it panicked).
    #[error("the telemetry runtime has stopped")]
    Stopped,
    /// Sending was asked of a runtime that does not send (`mode` is not
    /// `on`, or telemetry was stopped).
    #[error("this runtime does not send reports (mode is not \"on\")")]
    NotSending,
    /// An event could not be built.
    #[error("{0}")]
    Event(String),
}
