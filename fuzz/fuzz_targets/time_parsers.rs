//! Fuzzes the parsers of durations and times: `clock::parse_duration`, `clock::parse_time`
//! (and `fmt_time` back), `parse_expiry` with `Expiry::resolve`, and `RateLimit::parse`. A
//! selector byte picks the parser; each must agree with a reference written from its docs,
//! and what it accepts must format as text that parses back to the same value. The checks
//! live in `fuzz/time_checks.rs`, shared with `tests/fuzz_corpus.rs`, which runs the seed
//! corpus as a test.
#![no_main]

use libfuzzer_sys::fuzz_target;

#[path = "../secret_echo.rs"]
mod secret_echo;

#[path = "../time_checks.rs"]
mod time_checks;

fuzz_target!(|data: &[u8]| {
    time_checks::check_time_input(data);
});
