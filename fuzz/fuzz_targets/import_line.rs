//! Fuzzes the JSON Lines parsers of `credstore import`, `create --from` and `revoke --from`
//! (`credstore::import`): never a panic, acceptance as a reference reading of the documented
//! fields has it, refusals that name the line and repeat no hash or key. The checks live in
//! `fuzz/import_checks.rs`, shared with `tests/fuzz_corpus.rs`, which runs the seed corpus
//! as a test.
#![no_main]

use libfuzzer_sys::fuzz_target;

#[path = "../import_checks.rs"]
mod import_checks;

fuzz_target!(|data: &[u8]| {
    import_checks::check_import_input(data);
});
