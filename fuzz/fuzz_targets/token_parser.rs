//! Fuzzes `FormatSet::parse` with the seed key shapes: it must never panic, and it must
//! accept exactly what an independent re-check accepts. The checks live in `fuzz/checks.rs`,
//! shared with `tests/fuzz_corpus.rs`, which runs the seed corpus as a test.
#![no_main]

use std::sync::OnceLock;

use credstore::FormatSet;
use libfuzzer_sys::fuzz_target;

#[path = "../checks.rs"]
mod checks;

static FORMATS: OnceLock<FormatSet> = OnceLock::new();

fuzz_target!(|data: &[u8]| {
    checks::check_token_input(FORMATS.get_or_init(checks::seed_formats), data);
});
