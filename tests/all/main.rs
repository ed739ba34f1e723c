//! sonde's integration tests, one binary (see `tests/src/lib.rs` for the
//! helpers). The example plugins must be built first: `cargo xtask plugins`
//! (the README's test command does it).

#![allow(clippy::unwrap_used, reason = "tests")]

mod collectors;
mod crashes;
mod delivery;
mod e2e;
mod faults;
mod fuzz_regressions;
mod hostile;
mod hostile_langs;
mod languages;
mod loading;
mod modes;
mod operator;
mod otlp;
mod overload;
mod reload;
mod ring;
