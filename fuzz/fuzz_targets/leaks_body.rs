//! Fuzzes the parser of leak report bodies (`POST /v1/leaks`, untrusted bytes from any
//! caller): `credstore::leaks::parse_reports` must accept exactly what a reference written
//! from its docs accepts, give back the body's values, and never repeat the body in a
//! refusal. The checks live in `fuzz/leaks_checks.rs`, shared with `tests/fuzz_corpus.rs`,
//! which runs the seed corpus as a test.
#![no_main]

use libfuzzer_sys::fuzz_target;

#[path = "../secret_echo.rs"]
mod secret_echo;

#[path = "../leaks_checks.rs"]
mod leaks_checks;

fuzz_target!(|data: &[u8]| {
    leaks_checks::check_leaks_body(data);
});
