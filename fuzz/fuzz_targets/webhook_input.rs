//! Fuzzes the parsers of what a webhook is registered with: its URL, its event kinds, its
//! id and a signing secret. A selector byte picks the parser; what each accepts must be
//! what its docs say, and no refusal may repeat secret-shaped input. The checks live in
//! `fuzz/webhook_checks.rs`, shared with `tests/fuzz_corpus.rs`, which runs the seed
//! corpus as a test.
#![no_main]

use libfuzzer_sys::fuzz_target;

#[path = "../secret_echo.rs"]
mod secret_echo;

#[path = "../webhook_checks.rs"]
mod webhook_checks;

fuzz_target!(|data: &[u8]| {
    webhook_checks::check_webhook_input(data);
});
