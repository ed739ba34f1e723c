//! The collector's upload decoder (`sonde_collector::upload::decode`) on
//! arbitrary bodies, read as plain JSON and as gzip.
#![no_main]
#[path = "../checks.rs"]
mod checks;
libfuzzer_sys::fuzz_target!(|data: &[u8]| checks::collector_decode(data));
