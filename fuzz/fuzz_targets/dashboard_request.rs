//! Fuzzes the customers' dashboard (`credstore::dashboard::router`) with whole requests
//! (untrusted bytes from any browser): never a 5xx, no change without the session's cookie
//! and CSRF token, the other owner's key never touched, the session token never in an
//! answer. The checks live in `fuzz/dashboard_checks.rs`, shared with
//! `tests/fuzz_corpus.rs`, which runs the seed corpus as a test.
#![no_main]

use libfuzzer_sys::fuzz_target;

#[path = "../dashboard_checks.rs"]
mod dashboard_checks;

fuzz_target!(|data: &[u8]| {
    dashboard_checks::check_dashboard_request(data);
});
