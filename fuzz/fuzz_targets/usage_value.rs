//! Fuzzes the decoder of the usage tree's values (unsealed bytes in the index): it never
//! panics, and what it accepts round-trips. The checks live in `fuzz/usage_checks.rs`,
//! shared with `tests/fuzz_corpus.rs`, which runs the seed corpus as a test.
#![no_main]

use libfuzzer_sys::fuzz_target;

#[path = "../usage_checks.rs"]
mod usage_checks;

fuzz_target!(|data: &[u8]| {
    usage_checks::check_usage_value(data);
});
