//! Fuzzes the access policy parsers with untrusted text: permissions, permission queries,
//! IP allowlist entries (CIDR), referrer patterns and `Referer` values, endpoint entries
//! and requests, path globs, role names and user ids. A selector byte picks the parser;
//! each must accept exactly what a reference written from its docs accepts, serialise what
//! it accepts as the text it parsed and parse that back equal, and then answer as the
//! reference matcher does. The checks live in `fuzz/policy_checks.rs`, shared with
//! `tests/fuzz_corpus.rs`, which runs the seed corpus as a test.
#![no_main]

use libfuzzer_sys::fuzz_target;

#[path = "../secret_echo.rs"]
mod secret_echo;

#[path = "../policy_checks.rs"]
mod policy_checks;

fuzz_target!(|data: &[u8]| {
    policy_checks::check_policy_input(data);
});
