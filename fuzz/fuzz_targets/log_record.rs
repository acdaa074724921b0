//! Fuzzes the log record decoders and log recovery: `frame::decode` and `Event::decode` on
//! arbitrary bytes, then the bytes as the tail of a real segment through `recover` and
//! `LogReader`. Nothing may panic, and no record with a bad CRC, length, sequence number or
//! chain link may be accepted. The checks live in `fuzz/checks.rs`, shared with
//! `tests/fuzz_corpus.rs`, which runs the seed corpus as a test.
#![no_main]

use std::sync::OnceLock;

use libfuzzer_sys::fuzz_target;

#[path = "../checks.rs"]
mod checks;

static SCRATCH: OnceLock<checks::Scratch> = OnceLock::new();

fuzz_target!(|data: &[u8]| {
    checks::check_log_input(SCRATCH.get_or_init(checks::Scratch::new), data);
});
