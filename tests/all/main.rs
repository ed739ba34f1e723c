//! sonde's integration tests, one binary (see `tests/src/lib.rs` for the
//! helpers). The example plugins must be built first: `cargo xtask plugins`
//! (the README's test command does it).

#![allow(clippy::unwrap_used, reason = "tests")]

mod collectors;
mod delivery;
mod e2e;
mod hostile;
mod loading;
mod modes;
mod otlp;
mod reload;
mod ring;
