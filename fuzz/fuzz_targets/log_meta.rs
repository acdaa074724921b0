//! Fuzzes the files beside the log's records that every open reads: the MAC'd head
//! checkpoint (`HEAD`), a sealed segment's time index (`.idx`) and the store marker
//! (`STORE`). A selector byte says which file the rest is; it is decoded against an
//! independent reading of the format, then put into a scratch copy of a real log (or data
//! directory), where the audit, the writer, the time-range reader and `Store::open` must
//! come to the verdict the format implies. The checks live in `fuzz/log_meta_checks.rs`,
//! shared with `tests/fuzz_corpus.rs`, which runs the seed corpus as a test.
#![no_main]

use std::sync::OnceLock;

use libfuzzer_sys::fuzz_target;

#[path = "../log_meta_checks.rs"]
mod log_meta_checks;

static SCRATCH: OnceLock<log_meta_checks::Scratch> = OnceLock::new();

fuzz_target!(|data: &[u8]| {
    log_meta_checks::check_meta_input(SCRATCH.get_or_init(log_meta_checks::Scratch::new), data);
});
