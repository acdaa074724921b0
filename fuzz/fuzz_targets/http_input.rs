//! Fuzzes what reaches credstore over HTTP: the key headers the layer and the sidecar
//! read (`KeySource::find`), `X-Forwarded-For` behind trusted proxies
//! (`TrustedProxies::client_ip`), the sidecar's query strings, and its JSON bodies (verify,
//! create, revoke, rotate) through every parser its handlers call and, for verify,
//! `Store::verify_with` on a fixture store. A selector byte says which; each must agree
//! with a reference reading of its docs. The checks live in `fuzz/http_checks.rs` (with
//! `policy_checks.rs` and `time_checks.rs` for the values inside), shared with
//! `tests/fuzz_corpus.rs`, which runs the seed corpus as a test.
#![no_main]

use std::sync::OnceLock;

use libfuzzer_sys::fuzz_target;

#[path = "../secret_echo.rs"]
mod secret_echo;

#[path = "../policy_checks.rs"]
mod policy_checks;

#[path = "../time_checks.rs"]
mod time_checks;

#[path = "../http_checks.rs"]
mod http_checks;

static SCRATCH: OnceLock<http_checks::Scratch> = OnceLock::new();

fuzz_target!(|data: &[u8]| {
    http_checks::check_http_input(SCRATCH.get_or_init(http_checks::Scratch::new), data);
});
