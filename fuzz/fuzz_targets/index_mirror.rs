//! Fuzzes the index's memory-mapped mirrors (`DATA/index/*.slots`, `*.records`), read at
//! every open and on every cold verify: one file of a real store's mirrors is patched or
//! cut, the store is opened, and every key must be answered as the log says or its read
//! refused as tampered. The checks live in `fuzz/mirror_checks.rs`, shared with
//! `tests/fuzz_corpus.rs`, which runs the seed corpus as a test.
#![no_main]

use std::sync::OnceLock;

use libfuzzer_sys::fuzz_target;

#[path = "../mirror_checks.rs"]
mod mirror_checks;

static SCRATCH: OnceLock<mirror_checks::Scratch> = OnceLock::new();

fuzz_target!(|data: &[u8]| {
    mirror_checks::check_mirror_input(SCRATCH.get_or_init(mirror_checks::Scratch::new), data);
});
