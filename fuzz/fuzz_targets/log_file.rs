//! Fuzzes whole log segment files: the input is a segment (header included), put in a
//! scratch log directory as the active segment and as a sealed, memory-mapped one. Audit,
//! recovery and the reader must never panic, never accept a corrupt middle, and agree with
//! an independent walk of the bytes. The checks live in `fuzz/log_file_check.rs`, shared
//! with `tests/fuzz_log_file.rs`, which runs the seed corpus as a test.
#![no_main]

use std::sync::OnceLock;

use libfuzzer_sys::fuzz_target;

#[path = "../log_file_check.rs"]
mod log_file_check;

static SCRATCH: OnceLock<log_file_check::Scratch> = OnceLock::new();

fuzz_target!(|data: &[u8]| {
    log_file_check::check_log_file(SCRATCH.get_or_init(log_file_check::Scratch::new), data);
});
