//! The fuzz targets' seed corpora, run as ordinary tests through the very checks the
//! targets run (`fuzz/checks.rs` and the input checks beside it):
//!
//! - `token_parser`: the token parser never panics and accepts exactly the well-formed keys;
//! - `log_record`: the log record decoders, recovery and the reader never panic, never
//!   accept a damaged record and never drop a good one;
//! - `policy_parsers` (`policy_checks.rs`), `time_parsers` (`time_checks.rs`): the parsers
//!   of untrusted text accept what references written from their docs accept, and what
//!   they accept round-trips and answers as the reference matchers do;
//! - `log_meta` (`log_meta_checks.rs`): `HEAD`, time index sidecars and `STORE` decode as
//!   their formats say, and the audit, writer, reader and `Store::open` agree with that;
//! - `http_input` (`http_checks.rs`): key headers, `X-Forwarded-For`, the sidecar's query
//!   strings and JSON bodies, down to the decision a verify comes to;
//! - `webhook_input` (`webhook_checks.rs`): a webhook's URL, event kinds, id and signing
//!   secret, as `webhook add` and `POST /v1/webhooks` are given them.
//! - `import_line` (`import_checks.rs`): the JSON Lines of `import`, `create --from` and
//!   `revoke --from`.
//! - `leaks_body` (`leaks_checks.rs`): the body of `POST /v1/leaks` parses as its reference
//!   says, and no refusal repeats the body.
//! - `dashboard_request` (`dashboard_checks.rs`): whole requests to the customers'
//!   dashboard: never a 5xx, no change without the session's cookie and CSRF token, another
//!   owner's key never touched, the session token never in an answer.
//! - `usage_value` (`usage_checks.rs`): the usage tree's values decode without a panic,
//!   and what decodes round-trips.
//! - `index_mirror` (`mirror_checks.rs`): the index's memory-mapped mirrors, patched or cut,
//!   never stop an open nor make a key answer against the log.
//!
//! The input seeds are named `accept-…` or `refuse-…` and their tests check that too;
//! `secret_echo.rs` records which parsers repeat a pasted key in their errors today.
//!
//! The seeds were written by the ignored test `write_seed_corpus` below (run it with
//! `cargo test --test fuzz_corpus -- --ignored write_seed_corpus` to write them again; the
//! keys in the token seeds are random, so they change every time: `SEED_TARGETS` names the
//! targets to write). The seeds of the input targets are deterministic, and a test checks
//! that they are what `write_seed_corpus` writes.

#![expect(
    clippy::unwrap_used,
    clippy::indexing_slicing,
    reason = "a test fails by panicking: unwrap, expect and indexing are its assertions"
)]

#[path = "../fuzz/checks.rs"]
mod checks;
#[cfg(feature = "http")]
#[path = "../fuzz/dashboard_checks.rs"]
mod dashboard_checks;
#[cfg(feature = "http")]
#[path = "../fuzz/http_checks.rs"]
mod http_checks;
#[path = "../fuzz/import_checks.rs"]
mod import_checks;
#[path = "../fuzz/leaks_checks.rs"]
mod leaks_checks;
#[path = "../fuzz/log_meta_checks.rs"]
mod log_meta_checks;
#[path = "../fuzz/mirror_checks.rs"]
mod mirror_checks;
// The policy checks use `TrustedProxies`, of the `http` feature.
#[cfg(feature = "http")]
#[path = "../fuzz/policy_checks.rs"]
mod policy_checks;
#[path = "../fuzz/secret_echo.rs"]
mod secret_echo;
#[path = "../fuzz/time_checks.rs"]
mod time_checks;
#[path = "../fuzz/usage_checks.rs"]
mod usage_checks;
#[path = "../fuzz/webhook_checks.rs"]
mod webhook_checks;

use std::fs;
use std::path::{Path, PathBuf};

use checks::TailOutcome;
use credstore::log::frame;
use credstore::{Env, Event, Format};

fn corpus(target: &str) -> Vec<(String, Vec<u8>)> {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("fuzz/corpus").join(target);
    let mut files: Vec<PathBuf> = fs::read_dir(&dir)
        .unwrap_or_else(|e| panic!("{}: {e}", dir.display()))
        .map(|entry| entry.unwrap().path())
        .collect();
    files.sort();
    files
        .into_iter()
        .map(|path| {
            let name = path.file_name().unwrap().to_string_lossy().into_owned();
            (name, fs::read(&path).unwrap())
        })
        .collect()
}

#[test]
fn token_parser_seeds_pass_the_fuzz_checks_and_parse_as_named() {
    let set = checks::seed_formats();
    let seeds = corpus("token_parser");
    assert!(seeds.len() >= 12, "only {} token seeds", seeds.len());
    let mut valid = 0;
    for (name, data) in &seeds {
        checks::check_token_input(&set, data);
        let parsed = std::str::from_utf8(data).ok().map(|text| set.parse(text).is_ok());
        if name.starts_with("valid-") {
            assert_eq!(parsed, Some(true), "{name} should parse");
            valid += 1;
        } else {
            assert_ne!(parsed, Some(true), "{name} should not parse");
        }
    }
    assert_eq!(valid, 4, "one valid seed per shape: sk_live_, sk_test_, cmp_, comp_");
}

#[test]
fn log_record_seeds_pass_the_fuzz_checks() {
    let scratch = checks::Scratch::new();
    let seeds = corpus("log_record");
    assert!(seeds.len() >= 12, "only {} log seeds", seeds.len());
    for (_, data) in &seeds {
        checks::check_log_input(&scratch, data);
    }
}

#[test]
fn the_log_checks_catch_what_they_claim_to() {
    // A check that never fails defends nothing: feed it cases with known answers.
    let scratch = checks::Scratch::new();
    let (prefix, hash) = checks::segment_prefix();
    let events = checks::sample_events();
    let payloads: Vec<Vec<u8>> = events.iter().map(Event::encode).collect();
    let (next, _) = checks::encode_records(checks::PREFIX_RECORDS as u64 + 1, hash, &payloads);
    let first_len = frame::decode(&next).unwrap().encoded_len();
    // A clean tail, a torn one, a corrupt middle and a misplaced record: each is checked
    // against the independent walk, and recovery goes the way the design says.
    let all = checks::PREFIX_RECORDS + payloads.len();
    let acked = checks::PREFIX_RECORDS as u64;
    let prefix_records = checks::PREFIX_RECORDS;
    assert_eq!(
        checks::check_segment_tail(&scratch, &next, acked),
        TailOutcome::Clean { records: all }
    );
    assert_eq!(
        checks::check_segment_tail(&scratch, &next[..next.len() - 3], acked),
        TailOutcome::Truncated {
            records: all - 1,
            bytes: frame_len_of_last(&next) - 3,
        }
    );
    let mut flipped = next.clone();
    flipped[first_len / 2] ^= 0x10;
    assert_eq!(
        checks::check_segment_tail(&scratch, &flipped, acked),
        TailOutcome::Refused {
            records: prefix_records
        }
    );
    assert_eq!(
        checks::check_segment_tail(&scratch, &next[first_len..], acked),
        TailOutcome::Refused {
            records: prefix_records
        }
    );
    assert_eq!(
        checks::check_segment_tail(&scratch, &[0; 100], acked),
        TailOutcome::Truncated {
            records: prefix_records,
            bytes: 100
        }
    );
    // A flipped length pointing past the end, with good records after it: corruption,
    // not a torn tail.
    let mut overrun = next.clone();
    overrun[..4].copy_from_slice(&(1u32 << 20).to_le_bytes());
    assert_eq!(
        checks::check_segment_tail(&scratch, &overrun, acked),
        TailOutcome::Refused {
            records: prefix_records
        }
    );
    // A torn record that was acknowledged: corruption, never truncated.
    assert_eq!(
        checks::check_segment_tail(&scratch, &next[..next.len() - 3], all as u64),
        TailOutcome::Refused { records: all - 1 }
    );
    // The fixture has its records, the sample has every kind of change, and each decodes.
    assert!(prefix.len() > credstore::log::SEGMENT_HEADER_LEN);
    let kinds: std::collections::BTreeSet<&str> = events.iter().map(Event::kind_name).collect();
    for kind in [
        "format.registered",
        "plan.set",
        "plan.deleted",
        "key.created",
        "key.updated",
        "key.disabled",
        "key.enabled",
        "key.rotated",
        "key.revoked",
        "budget.mark",
    ] {
        assert!(kinds.contains(kind), "no {kind} among the sample events: {kinds:?}");
    }
    for event in &events {
        assert_eq!(Event::decode(&event.encode()).as_ref(), Ok(event));
    }
    // A damaged frame is refused by frame::decode (the oracle agrees, or check_frame panics).
    for cut in [0, 7, 8, first_len - 1] {
        checks::check_frame(&next[..cut]);
        assert!(frame::decode(&next[..cut]).is_err());
    }
    checks::check_frame(&flipped);
    assert!(frame::decode(&flipped).is_err());
}

/// The encoded length of the last of the records in `bytes`.
fn frame_len_of_last(bytes: &[u8]) -> usize {
    let mut pos = 0;
    loop {
        let len = frame::decode(&bytes[pos..]).unwrap().encoded_len();
        if pos + len == bytes.len() {
            return len;
        }
        pos += len;
    }
}

/// Writes the seed corpora. Ignored: run by hand when the formats change. With
/// `SEED_TARGETS` set (`SEED_TARGETS=policy_parsers,log_meta`), only those targets' seeds
/// are written: the token and log seeds hold random keys and ids, and change every time.
#[test]
#[ignore = "writes fuzz/corpus/*; run by hand"]
fn write_seed_corpus() {
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("fuzz/corpus");
    let only = std::env::var("SEED_TARGETS").ok();
    let wanted = |target: &str| only.as_deref().is_none_or(|list| list.split(',').any(|t| t == target));
    if wanted("token_parser") {
        write_token_seeds(&root.join("token_parser"));
    }
    if wanted("log_record") {
        write_log_seeds(&root.join("log_record"));
    }
    #[cfg(feature = "http")]
    if wanted("policy_parsers") {
        write_seeds(&root.join("policy_parsers"), &policy_seeds());
    }
    if wanted("time_parsers") {
        write_seeds(&root.join("time_parsers"), &time_seeds());
    }
    if wanted("webhook_input") {
        write_seeds(&root.join("webhook_input"), &webhook_seeds());
    }
    if wanted("log_meta") {
        write_seeds(&root.join("log_meta"), &meta_seeds(&log_meta_checks::Scratch::new()));
    }
    #[cfg(feature = "http")]
    if wanted("http_input") {
        write_seeds(&root.join("http_input"), &http_seeds());
    }
    if wanted("import_line") {
        write_seeds(&root.join("import_line"), &import_seeds());
    }
    if wanted("leaks_body") {
        write_seeds(&root.join("leaks_body"), &leaks_seeds());
    }
    #[cfg(feature = "http")]
    if wanted("dashboard_request") {
        write_seeds(&root.join("dashboard_request"), &dashboard_seeds());
    }
    if wanted("usage_value") {
        write_seeds(&root.join("usage_value"), &usage_seeds());
    }
    if wanted("index_mirror") {
        write_seeds(
            &root.join("index_mirror"),
            &mirror_checks::mirror_seeds(&mirror_checks::Scratch::new()),
        );
    }
}

/// Writes `seeds` into `dir`, named.
fn write_seeds(dir: &Path, seeds: &[(String, Vec<u8>)]) {
    fs::create_dir_all(dir).unwrap();
    for (name, bytes) in seeds {
        fs::write(dir.join(name), bytes).unwrap();
    }
}

/// Whether a seed named `accept-*` was accepted and one named `refuse-*` refused.
fn assert_named_outcome(target: &str, name: &str, accepted: bool) {
    match name.split('-').next().unwrap() {
        "accept" => assert!(accepted, "{target} seed {name} should be accepted"),
        "refuse" => assert!(!accepted, "{target} seed {name} should be refused"),
        other => panic!("{target} seed {name}: unknown outcome {other}"),
    }
}

/// Checks that the seeds in `fuzz/corpus/{target}` are exactly `expected`.
fn assert_seeds_current(target: &str, seeds: &[(String, Vec<u8>)], expected: &[(String, Vec<u8>)]) {
    assert_eq!(seeds.len(), expected.len(), "{target}: run write_seed_corpus again");
    for (name, bytes) in expected {
        let found = seeds.iter().find(|(n, _)| n == name).map(|(_, b)| b);
        assert_eq!(
            found,
            Some(bytes),
            "{target} seed {name} differs from what write_seed_corpus writes"
        );
    }
}

// ---------------------------------------------------------------------------------------
// Policy parsers

#[cfg(feature = "http")]
#[test]
fn policy_parsers_seeds_pass_the_fuzz_checks_and_do_as_named() {
    let seeds = corpus("policy_parsers");
    assert!(seeds.len() >= 12, "only {} policy seeds", seeds.len());
    let mut selectors = std::collections::BTreeSet::new();
    for (name, data) in &seeds {
        let accepted = policy_checks::check_policy_input(data);
        assert_named_outcome("policy_parsers", name, accepted);
        selectors.insert(data[0]);
    }
    for letter in *b"pqcrhemgou" {
        assert!(selectors.contains(&letter), "no seed for selector {}", letter as char);
    }
    assert_seeds_current("policy_parsers", &seeds, &policy_seeds());
}

#[cfg(feature = "http")]
#[test]
fn the_policy_checks_catch_what_they_claim_to() {
    use policy_checks::PolicyInput;
    // Known answers: a reference that disagreed with the parser would panic.
    assert!(policy_checks::check_policy_text(
        PolicyInput::Query,
        "a:b OR (c:d AND e:f)"
    ));
    assert!(!policy_checks::check_policy_text(PolicyInput::Query, "a:b OR"));
    assert!(policy_checks::check_policy_text(
        PolicyInput::Cidr,
        "::ffff:10.0.0.0/104"
    ));
    assert!(policy_checks::check_policy_text(
        PolicyInput::RefererHeader,
        "https://a.example.org:8443/x"
    ));
    assert!(!policy_checks::check_policy_text(
        PolicyInput::RefererHeader,
        "https://example.org/"
    ));
    assert!(policy_checks::check_policy_text(
        PolicyInput::EndpointRequest,
        "DELETE /v1/users/7/keys/9"
    ));
    assert!(!policy_checks::check_policy_text(
        PolicyInput::EndpointRequest,
        "DELETEX /v1/users/7/keys/9"
    ));
    // Selectors other than the seeds' letters still reach every parser.
    let reached: std::collections::BTreeSet<String> = (0..=255u8)
        .map(|b| format!("{:?}", PolicyInput::from_selector(b)))
        .collect();
    assert_eq!(reached.len(), 10);
}

#[cfg(feature = "http")]
#[test]
fn the_policy_echo_table_is_current() {
    let repeating = secret_echo::check_echo_table(&policy_checks::text_parsers());
    assert!(repeating.is_empty(), "{repeating:?}");
}

#[test]
fn the_webhook_echo_table_is_current() {
    let repeating = secret_echo::check_echo_table(&webhook_checks::text_parsers());
    assert!(repeating.is_empty(), "{repeating:?}");
}

#[test]
fn the_time_echo_table_is_current() {
    let repeating = secret_echo::check_echo_table(&time_checks::text_parsers());
    assert!(repeating.is_empty(), "{repeating:?}");
}

#[cfg(feature = "http")]
/// The policy seeds: the selector letter, then the text. Named `accept-` or `refuse-` (for
/// `h` and `m`: allowed or not by the fixed allowlist), then the selector letter.
fn policy_seeds() -> Vec<(String, Vec<u8>)> {
    let key = secret_echo::PROBE_KEY;
    let nested = |depth: usize| format!("{}a:b{}", "(".repeat(depth), ")".repeat(depth));
    let atoms = |n: usize| (0..n).map(|i| format!("p{i}:read")).collect::<Vec<_>>().join(" OR ");
    let long_permission = format!("{}:{}", "r".repeat(31), "a".repeat(32));
    let seeds: Vec<(&str, String)> = vec![
        ("accept-p-docs-read", "pdocs:read".into()),
        ("accept-p-everything", "p*".into()),
        ("accept-p-any-action", "pdocs:*".into()),
        ("accept-p-any-resource", "p*:read".into()),
        ("accept-p-17-byte-resource", "pabcdefghijklmnopq:read".into()),
        ("accept-p-64-bytes", format!("p{long_permission}")),
        ("refuse-p-65-bytes", format!("p{long_permission}x")),
        ("refuse-p-upper-case", "pDocs:read".into()),
        ("refuse-p-two-colons", "pa:b:c".into()),
        ("refuse-p-partial-star", "pdoc*:read".into()),
        ("refuse-p-empty", "p".into()),
        ("refuse-p-empty-action", "pdocs:".into()),
        ("refuse-p-pasted-key", format!("p{key}")),
        ("accept-q-nested", "q(docs:read OR docs:write) AND users:view".into()),
        ("accept-q-keyword-case", "qa:b and (c:d Or e:f)".into()),
        ("accept-q-tight-parens", "q(a:b)AND(c:d)".into()),
        ("accept-q-depth-16", format!("q{}", nested(16))),
        ("refuse-q-depth-17", format!("q{}", nested(17))),
        ("accept-q-64-atoms", format!("q{}", atoms(64))),
        ("refuse-q-65-atoms", format!("q{}", atoms(65))),
        ("refuse-q-not", "qNOT a:b".into()),
        ("refuse-q-ampersands", "qa:b && c:d".into()),
        ("refuse-q-empty-parens", "qa:b AND ()".into()),
        ("refuse-q-unclosed", "q(a:b OR c:d".into()),
        ("refuse-q-unmatched", "qa:b)".into()),
        ("refuse-q-dangling-operator", "qa:b AND".into()),
        ("refuse-q-no-operator", "qa:b c:d".into()),
        ("refuse-q-pasted-key", format!("q{key} OR docs:read")),
        ("accept-c-v4-range", "c10.0.0.0/8".into()),
        ("accept-c-host-bits-set", "c10.1.2.3/8".into()),
        ("accept-c-bare-v4", "c203.0.113.7".into()),
        ("accept-c-v6-range", "c2001:db8::/32".into()),
        ("accept-c-mapped-v4-range", "c::ffff:10.0.0.0/104".into()),
        ("accept-c-v4-everything", "c0.0.0.0/0".into()),
        ("accept-c-v6-everything", "c::/0".into()),
        ("accept-c-v6-host", "c2001:db8::1/128".into()),
        ("refuse-c-prefix-too-long", "c10.0.0.0/33".into()),
        ("refuse-c-zone-id", "cfe80::1%eth0".into()),
        ("refuse-c-space", "c 10.0.0.1".into()),
        ("refuse-c-empty", "c".into()),
        ("refuse-c-no-prefix", "c10.0.0.0/".into()),
        // Found by the fuzzer: ipnet read leading zeros (as decimal) where std refuses them.
        ("refuse-c-leading-zero-octet-with-prefix", "c09.1.2.3/4".into()),
        ("refuse-c-leading-zero-prefix", "c10.0.0.0/08".into()),
        ("refuse-c-leading-zero-octet-bare", "c010.0.0.1".into()),
        ("accept-r-host", "rexample.com".into()),
        ("accept-r-subdomains", "r*.example.com".into()),
        ("accept-r-ipv4", "r127.0.0.1".into()),
        ("accept-r-upper-case", "rExample.COM".into()),
        ("refuse-r-scheme", "rhttps://example.com".into()),
        ("refuse-r-port", "rexample.com:443".into()),
        ("refuse-r-inner-star", "ra.*.com".into()),
        ("refuse-r-trailing-dot", "rexample.com.".into()),
        ("refuse-r-64-byte-label", format!("r{}.com", "a".repeat(64))),
        ("refuse-r-unicode", "rb\u{fc}cher.de".into()),
        ("refuse-r-empty", "r".into()),
        ("accept-h-subdomain-url", "hhttps://www.example.org/path?q=1".into()),
        ("accept-h-bare-host", "hexample.com".into()),
        ("accept-h-port-and-case", "hhttp://EXAMPLE.com:8080/".into()),
        ("accept-h-userinfo", "hhttps://u:p@example.com/".into()),
        (
            "accept-h-backslash-ends-authority",
            "hhttps://example.com\\@evil.test/".into(),
        ),
        ("accept-h-ipv4", "hhttp://127.0.0.1:3000".into()),
        ("refuse-h-wildcard-apex", "hhttps://example.org/".into()),
        ("refuse-h-userinfo-without-scheme", "hu@example.com".into()),
        ("refuse-h-evil-suffix", "hhttps://example.com.evil.test/".into()),
        ("refuse-h-ipv6", "hhttp://[::1]:80/".into()),
        ("refuse-h-null", "hnull".into()),
        ("refuse-h-long-port", "hhttps://example.com:123456/".into()),
        ("accept-e-get-segment", "eGET /v1/users/*".into()),
        ("accept-e-any-subtree", "eANY /v1/jobs/**".into()),
        ("accept-e-star-method", "e* /health".into()),
        ("accept-e-long-method", "ePROPFIND /dav/**/*.ics".into()),
        ("accept-e-tabs", "e\tget\t/a/*\t".into()),
        ("refuse-e-no-method", "e/v1/users".into()),
        ("refuse-e-three-words", "eGET /a /b".into()),
        ("refuse-e-method-with-digit", "eGET2 /a".into()),
        ("refuse-e-method-33-letters", format!("e{} /a", "A".repeat(33))),
        ("refuse-e-double-star-in-segment", "eGET /a**".into()),
        ("refuse-e-query-in-glob", "eGET /a?b".into()),
        ("refuse-e-pasted-key", format!("e{key}")),
        ("accept-m-user", "mGET /v1/users/42".into()),
        ("accept-m-lower-case-and-query", "mget /v1/users/42?x=1".into()),
        ("accept-m-subtree-root", "mPOST /v1/jobs".into()),
        ("accept-m-long-method", "mpropfind /dav/a/b/c.ics".into()),
        ("accept-m-any-method", "mBREW /health".into()),
        ("accept-m-mkcalendar", "mMKCALENDAR /cal/x".into()),
        ("accept-m-general-glob", "mPUT /a/1/b/c".into()),
        ("accept-m-empty-segment", "mGET /v1/users/".into()),
        ("refuse-m-nested-path", "mGET /v1/users/42/keys".into()),
        ("refuse-m-long-method-miss", "mPROPFINDX /dav/a.ics".into()),
        ("refuse-m-nul-in-method", "mGET\0 /v1/users/1".into()),
        ("refuse-m-no-slash", "mGET v1/users/1".into()),
        ("refuse-m-wrong-method", "mPOST /v1/users/1".into()),
        ("accept-g-root", "g/".into()),
        ("accept-g-subtree", "g/v1/**".into()),
        ("accept-g-any-depth-inside", "g/a/**/z".into()),
        ("accept-g-stars-in-segment", "g/f/*.*".into()),
        ("accept-g-1024-bytes", format!("g/{}", "a".repeat(1023))),
        ("refuse-g-1025-bytes", format!("g/{}", "a".repeat(1024))),
        ("refuse-g-no-slash", "gv1/*".into()),
        ("refuse-g-triple-star", "g/a/***".into()),
        ("refuse-g-space", "g/a b".into()),
        ("refuse-g-control", "g/a\u{7}".into()),
        ("refuse-g-fragment", "g/a#b".into()),
        ("accept-o-member", "omember".into()),
        ("accept-o-32-bytes", format!("o{}", "r".repeat(32))),
        ("refuse-o-33-bytes", format!("o{}", "r".repeat(33))),
        ("refuse-o-upper-case", "oAdmin".into()),
        ("accept-u-email", "ualice+ci@example.com".into()),
        ("accept-u-key-shaped", format!("u{key}")),
        ("refuse-u-space", "ualice smith".into()),
        ("refuse-u-129-bytes", format!("u{}", "a".repeat(129))),
        ("accept-byte-0-is-a-permission", "\0docs:read".into()),
    ];
    seeds
        .into_iter()
        .map(|(name, text)| (name.to_string(), text.into_bytes()))
        .collect()
}

fn write_token_seeds(dir: &Path) {
    fs::create_dir_all(dir).unwrap();
    let live = Format::new("sk_live_", Env::Live, 32, true).unwrap();
    let test = Format::new("sk_test_", Env::Test, 32, true).unwrap();
    let cmp = Format::new("cmp_", Env::Live, 32, true).unwrap();
    let comp = Format::new("comp_", Env::Live, 27, false).unwrap();
    let [l, t, c, p] = [&live, &test, &cmp, &comp].map(|f| f.generate().expose().to_string());
    let typo = |key: &str, at: usize| {
        let mut bytes = key.as_bytes().to_vec();
        bytes[at] = if bytes[at] == b'a' { b'b' } else { b'a' };
        bytes
    };
    let mut non_utf8 = l.as_bytes()[..20].to_vec();
    non_utf8.extend_from_slice(&[0xff, 0xfe, 0xc3]);
    non_utf8.extend_from_slice(&l.as_bytes()[23..]);
    let seeds: Vec<(&str, Vec<u8>)> = vec![
        ("valid-sk_live", l.clone().into()),
        ("valid-sk_test", t.clone().into()),
        ("valid-cmp", c.clone().into()),
        ("valid-comp", p.clone().into()),
        ("bad-checksum-sk_live", typo(&l, l.len() - 1)),
        ("bad-random-typo-cmp", typo(&c, 10)),
        ("bad-short-sk_test", t.as_bytes()[..t.len() - 1].to_vec()),
        ("bad-long-cmp", format!("{c}x").into()),
        ("bad-alphabet-sk_test", t.replacen(&t[15..16], "-", 1).into()),
        ("bad-prefix-pk_live", l.replacen("sk_", "pk_", 1).into()),
        ("bad-prefix-case", l.replacen("sk_live_", "SK_LIVE_", 1).into()),
        ("bad-comp-31-chars", p.as_bytes()[..31].to_vec()),
        (
            "bad-comp-with-checksum",
            format!("{p}{}", credstore::token::checksum(p.as_bytes())).into(),
        ),
        ("bad-trailing-newline", format!("{l}\n").into()),
        ("bad-multibyte", format!("{}é{}", &l[..20], &l[22..]).into()),
        ("bad-non-utf8", non_utf8),
        ("bad-prefix-only", b"sk_live_".to_vec()),
        ("bad-empty", Vec::new()),
    ];
    for (name, bytes) in seeds {
        fs::write(dir.join(name), bytes).unwrap();
    }
}

/// A `key.uses` record's payload: two uses of one key (the store writes these only when
/// uses are drained, so the sample store's events do not include one), packed as this
/// build writes them, or unpacked as the first builds with `key.uses` did.
fn key_uses_payload(packed: bool) -> Vec<u8> {
    let id = credstore::KeyId::parse("key_0NUqv2Kv3XaL3mB0cWj8vQ").unwrap();
    let uses = vec![
        credstore::KeyUse {
            id: id.clone(),
            at: 1_767_225_600_000,
            code: credstore::Code::Valid,
            ip: Some("203.0.113.7".parse().unwrap()),
            endpoint: Some("GET /v1/things".into()),
        },
        credstore::KeyUse {
            id,
            at: 1_767_225_600_250,
            code: credstore::Code::RateLimited,
            ip: None,
            endpoint: None,
        },
    ];
    let kind = if packed {
        credstore::EventKind::KeysUsed { uses }
    } else {
        credstore::EventKind::KeysUsedUnpacked { uses }
    };
    Event {
        at: 1_767_225_600_000,
        kind,
    }
    .encode()
}

#[test]
fn the_key_uses_seeds_are_current_and_read_as_the_same_uses() {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("fuzz/corpus/log_record");
    let packed = fs::read(dir.join("payload-key-uses")).unwrap();
    let unpacked = fs::read(dir.join("payload-key-uses-unpacked")).unwrap();
    assert_eq!(packed, key_uses_payload(true));
    assert_eq!(unpacked, key_uses_payload(false));
    // The packed form is the smaller, and both stand for the same two requests.
    assert!(packed.len() < unpacked.len(), "{} vs {}", packed.len(), unpacked.len());
    let uses = |bytes: &[u8]| Event::decode(bytes).unwrap().into_uses();
    assert_eq!(uses(&packed), uses(&unpacked));
    assert_eq!(uses(&packed).len(), 2);
}

fn write_log_seeds(dir: &Path) {
    fs::create_dir_all(dir).unwrap();
    let (_, hash) = checks::segment_prefix();
    let events = checks::sample_events();
    let next_seq = checks::PREFIX_RECORDS as u64 + 1;
    let payloads: Vec<Vec<u8>> = events.iter().map(Event::encode).collect();
    let (next, _) = checks::encode_records(next_seq, hash, &payloads);
    let (one, _) = checks::encode_records(next_seq, hash, &payloads[..1]);
    let len_of = |bytes: &[u8]| frame::decode(bytes).unwrap().encoded_len();
    let first = len_of(&next);
    let second = first + len_of(&next[first..]);
    let with = |mut bytes: Vec<u8>, at: usize, value: &[u8]| {
        bytes[at..at + value.len()].copy_from_slice(value);
        bytes
    };
    let (misplaced, _) = checks::encode_records(next_seq + 3, hash, &payloads[..1]);
    let (unchained, _) = checks::encode_records(next_seq, [0; 32], &payloads[..1]);
    let mut zero_tail = one.clone();
    zero_tail.resize(one.len() + 4096, 0);
    let mut garbage_after_zeros = zero_tail.clone();
    garbage_after_zeros.extend_from_slice(b"\x01credlog1");
    let payload_of = |kind: &str| events.iter().find(|e| e.kind_name() == kind).unwrap().encode();
    let mut bad_version = payload_of("key.created");
    bad_version[0] = 9;
    let seeds: Vec<(&str, Vec<u8>)> = vec![
        ("frame-next", one.clone()),
        ("frames-next-all", next.clone()),
        ("torn-last-frame", next[..next.len() - 5].to_vec()),
        ("torn-in-header", next[..second + 5].to_vec()),
        ("torn-crc-at-end", with(next[..second].to_vec(), second - 1, &[0x42])),
        ("zero-tail", zero_tail),
        ("garbage-after-zeros", garbage_after_zeros),
        ("corrupt-middle-body", with(next.clone(), first + 30, &[0xEE])),
        ("corrupt-middle-crc", with(next.clone(), first + 4, &[0, 0, 0, 0])),
        (
            "corrupt-middle-bad-length",
            with(next.clone(), first, &3u32.to_le_bytes()),
        ),
        (
            "length-overruns-eof",
            with(next.clone(), first, &(1u32 << 20).to_le_bytes()),
        ),
        ("misplaced-seq", misplaced),
        ("broken-chain", unchained),
        ("payload-key-created", payload_of("key.created")),
        ("payload-key-rotated", payload_of("key.rotated")),
        ("payload-key-updated", payload_of("key.updated")),
        ("payload-plan-set", payload_of("plan.set")),
        ("payload-budget-mark", payload_of("budget.mark")),
        ("payload-key-uses", key_uses_payload(true)),
        ("payload-key-uses-unpacked", key_uses_payload(false)),
        ("payload-bad-version", bad_version),
        ("payload-truncated", {
            let created = payload_of("key.created");
            created[..created.len() / 2].to_vec()
        }),
    ];
    for (name, bytes) in seeds {
        fs::write(dir.join(name), bytes).unwrap();
    }
}

// ---------------------------------------------------------------------------------------
// Durations and times

#[test]
fn time_parsers_seeds_pass_the_fuzz_checks_and_do_as_named() {
    let seeds = corpus("time_parsers");
    assert!(seeds.len() >= 12, "only {} time seeds", seeds.len());
    let mut selectors = std::collections::BTreeSet::new();
    for (name, data) in &seeds {
        let accepted = time_checks::check_time_input(data);
        assert_named_outcome("time_parsers", name, accepted);
        selectors.insert(data[0]);
    }
    for letter in *b"dtxlf" {
        assert!(selectors.contains(&letter), "no seed for selector {}", letter as char);
    }
    assert_seeds_current("time_parsers", &seeds, &time_seeds());
}

#[test]
fn the_time_checks_catch_what_they_claim_to() {
    use time_checks::TimeInput;
    assert!(time_checks::check_time_text(TimeInput::Duration, "12h"));
    assert!(!time_checks::check_time_text(TimeInput::Duration, "12H"));
    assert!(time_checks::check_time_text(
        TimeInput::Time,
        "2026-11-22T13:45:00.123+01:30"
    ));
    assert!(time_checks::check_time_text(TimeInput::RateLimit, "100/1d:daily"));
    let reached: std::collections::BTreeSet<String> = (0..=255u8)
        .map(|b| format!("{:?}", TimeInput::from_selector(b)))
        .collect();
    assert_eq!(reached.len(), 5);
}

/// The time seeds: the selector letter, then the text (for `f`, 8 bytes of unix ms).
fn time_seeds() -> Vec<(String, Vec<u8>)> {
    let key = secret_echo::PROBE_KEY;
    let ms = |v: i64| [b"f".as_slice(), &v.to_le_bytes()].concat();
    let text: Vec<(&str, String)> = vec![
        ("accept-d-days", "d90d".into()),
        ("accept-d-milliseconds", "d1500ms".into()),
        ("accept-d-weeks", "d1w".into()),
        ("accept-d-leading-zeros", "d007s".into()),
        ("accept-d-largest", format!("d{}ms", i64::MAX)),
        ("refuse-d-overflow", format!("d{}s", i64::MAX)),
        ("refuse-d-too-many-digits", "d99999999999999999999d".into()),
        ("refuse-d-zero", "d0s".into()),
        ("refuse-d-negative", "d-5s".into()),
        ("refuse-d-plus-sign", "d+5s".into()),
        ("refuse-d-no-unit", "d5".into()),
        ("refuse-d-unknown-unit", "d5y".into()),
        ("refuse-d-fraction", "d1.5h".into()),
        ("refuse-d-space", "d5 s".into()),
        ("refuse-d-upper-case-unit", "d5S".into()),
        ("refuse-d-empty", "d".into()),
        ("refuse-d-pasted-key", format!("d{key}")),
        ("accept-t-utc-millis", "t2026-11-22T13:45:00.123Z".into()),
        ("accept-t-offset", "t2026-11-22T15:45:00+02:00".into()),
        ("accept-t-negative-offset", "t2026-11-22T08:15:00-05:30".into()),
        ("accept-t-nanoseconds", "t2026-01-01T00:00:00.999999999Z".into()),
        ("accept-t-before-epoch-fraction", "t1969-12-31T23:59:59.9995Z".into()),
        ("accept-t-leap-day", "t2024-02-29T12:00:00Z".into()),
        ("accept-t-year-1", "t0001-01-01T00:00:00Z".into()),
        ("refuse-t-february-30", "t2026-02-30T00:00:00Z".into()),
        ("refuse-t-no-offset", "t2026-01-01T00:00:00".into()),
        ("refuse-t-hour-24", "t2026-01-01T24:00:00Z".into()),
        ("refuse-t-word", "tyesterday".into()),
        ("refuse-t-unix-ms", "t1767225600000".into()),
        ("refuse-t-pasted-key", format!("t{key}")),
        ("accept-x-duration", "x30d".into()),
        ("accept-x-future-time", "x2027-01-01T00:00:00Z".into()),
        ("accept-x-past-time", "x2020-01-01T00:00:00Z".into()),
        ("accept-x-duration-overflowing-now", format!("x{}ms", i64::MAX)),
        ("refuse-x-neither", "xsoon".into()),
        ("refuse-x-pasted-key", format!("x{key}")),
        ("accept-l-per-minute", "l60/1m".into()),
        ("accept-l-named", "l1000/1h:hourly".into()),
        ("accept-l-spaces", "l 60 / 1m ".into()),
        ("accept-l-366-days", "l1/366d".into()),
        ("accept-l-plus-sign", "l+5/1s".into()),
        ("refuse-l-zero", "l0/1m".into()),
        ("refuse-l-367-days", "l1/367d".into()),
        ("refuse-l-no-window", "l60".into()),
        ("refuse-l-space-in-name", "l60/1m:per minute".into()),
        ("refuse-l-33-byte-name", format!("l60/1m:{}", "n".repeat(33))),
        ("refuse-l-empty-name", "l60/1m:".into()),
        ("refuse-l-count-overflow", "l4294967296/1m".into()),
        ("refuse-l-pasted-key", format!("l60/1m:{key}")),
    ];
    let mut seeds: Vec<(String, Vec<u8>)> = text.into_iter().map(|(n, t)| (n.to_string(), t.into_bytes())).collect();
    seeds.extend([
        ("accept-f-epoch".to_string(), ms(0)),
        ("accept-f-now".to_string(), ms(time_checks::NOW_MS)),
        ("accept-f-before-epoch".to_string(), ms(-1)),
        ("accept-f-short-input".to_string(), b"f\x01".to_vec()),
        ("refuse-f-largest".to_string(), ms(i64::MAX)),
        ("refuse-f-smallest".to_string(), ms(i64::MIN)),
    ]);
    seeds
}

// ---------------------------------------------------------------------------------------
// Webhooks

#[test]
fn webhook_input_seeds_pass_the_fuzz_checks_and_do_as_named() {
    let seeds = corpus("webhook_input");
    assert!(seeds.len() >= 12, "only {} webhook seeds", seeds.len());
    let mut selectors = std::collections::BTreeSet::new();
    for (name, data) in &seeds {
        let accepted = webhook_checks::check_webhook_input(data);
        assert_named_outcome("webhook_input", name, accepted);
        selectors.insert(data[0]);
    }
    for letter in *b"ukis" {
        assert!(selectors.contains(&letter), "no seed for selector {}", letter as char);
    }
    assert_seeds_current("webhook_input", &seeds, &webhook_seeds());
}

#[test]
fn the_webhook_checks_catch_what_they_claim_to() {
    use webhook_checks::WebhookInput;
    assert!(webhook_checks::check_webhook_text(
        WebhookInput::Url,
        "http://[::1]:8080/x?y"
    ));
    assert!(!webhook_checks::check_webhook_text(
        WebhookInput::Kinds,
        "key.created,webhook.added"
    ));
    assert!(webhook_checks::check_webhook_text(
        WebhookInput::Id,
        "wh_0123456789abcdef"
    ));
    assert!(!webhook_checks::check_webhook_text(
        WebhookInput::Secret,
        "whsec_not base64"
    ));
    let reached: std::collections::BTreeSet<String> = (0..=255u8)
        .map(|b| format!("{:?}", WebhookInput::from_selector(b)))
        .collect();
    assert_eq!(reached.len(), 4);
}

/// The webhook seeds: the selector letter, then the text.
fn webhook_seeds() -> Vec<(String, Vec<u8>)> {
    let key = secret_echo::PROBE_KEY;
    let text: Vec<(&str, String)> = vec![
        ("accept-u-loopback-port-path", "uhttp://127.0.0.1:9000/hooks".into()),
        ("accept-u-no-path", "uhttp://example.com".into()),
        ("accept-u-query-only", "uhttp://example.com?x=1".into()),
        ("accept-u-ipv6", "uhttp://[::1]:8080/x".into()),
        ("accept-u-upper-case-scheme", "uHTTP://example.com/".into()),
        ("accept-u-key-in-path", format!("uhttp://example.com/{key}")),
        ("accept-u-https", "uhttps://example.com/".into()),
        ("accept-u-https-ip-port", "uhttps://127.0.0.1:8443/hooks?x=1".into()),
        ("accept-u-https-ipv6", "uHTTPS://[::1]/x".into()),
        ("refuse-u-https-bad-name", "uhttps://-bad-/".into()),
        ("refuse-u-https-bad-ipv6", "uhttps://[zz]/".into()),
        ("refuse-u-https-no-host", "uhttps:///x".into()),
        ("refuse-u-ftp", "uftp://example.com/".into()),
        ("refuse-u-user-info", "uhttp://u:p@example.com/".into()),
        ("refuse-u-port-zero", "uhttp://example.com:0/".into()),
        ("refuse-u-port-too-big", "uhttp://example.com:65536/".into()),
        ("refuse-u-no-host", "uhttp://:80/".into()),
        ("refuse-u-unclosed-bracket", "uhttp://[::1/".into()),
        ("refuse-u-space", "uhttp://example.com/a b".into()),
        ("refuse-u-fragment", "uhttp://example.com/#top".into()),
        ("refuse-u-pasted-key", format!("u{key}")),
        ("refuse-u-key-and-fragment", format!("uhttp://example.com/{key}#f")),
        ("refuse-u-too-long", format!("uhttp://example.com/{}", "a".repeat(2048))),
        ("accept-k-all", "k*".into()),
        ("accept-k-two", "kkey.created,key.revoked".into()),
        ("accept-k-duplicates", "kbudget.threshold,budget.threshold".into()),
        ("refuse-k-none", "k".into()),
        ("refuse-k-webhook-event", "kwebhook.attempt".into()),
        ("refuse-k-upper-case", "kKey.created".into()),
        ("refuse-k-one-word", "kkey".into()),
        ("refuse-k-empty-word", "kkey..created".into()),
        ("refuse-k-pasted-key", format!("kkey.created,{key}")),
        ("refuse-k-33-kinds", format!("k{}", vec!["key.created"; 33].join(","))),
        ("accept-i-made", "iwh_0123456789abcdef".into()),
        ("refuse-i-short", "iwh_0123".into()),
        ("refuse-i-upper-case", "iwh_0123456789ABCDEF".into()),
        ("refuse-i-pasted-key", format!("i{key}")),
        (
            "accept-s-spec-example",
            "swhsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw".into(),
        ),
        ("accept-s-without-prefix", "sMfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw".into()),
        ("refuse-s-not-base64", "swhsec_not base64!".into()),
        ("refuse-s-pasted-key", format!("s{key}")),
    ];
    text.into_iter().map(|(n, t)| (n.to_string(), t.into_bytes())).collect()
}

// ---------------------------------------------------------------------------------------
// HEAD, time index and STORE

#[test]
fn log_meta_seeds_pass_the_fuzz_checks_and_do_as_named() {
    let scratch = log_meta_checks::Scratch::new();
    let seeds = corpus("log_meta");
    assert!(seeds.len() >= 12, "only {} log meta seeds", seeds.len());
    let mut selectors = std::collections::BTreeSet::new();
    for (name, data) in &seeds {
        let accepted = log_meta_checks::check_meta_input(&scratch, data);
        assert_named_outcome("log_meta", name, accepted);
        selectors.insert(data[0]);
    }
    assert_eq!(selectors, std::collections::BTreeSet::from(*b"HIS"));
    assert_seeds_current("log_meta", &seeds, &meta_seeds(&scratch));
}

/// The log meta seeds: `H`, `I` or `S`, then the file. Named `accept-` when the file is
/// used as it is: a head checkpoint the audit verifies, a time index the log trusts, a
/// marker that gets past the marker and pepper checks.
fn meta_seeds(scratch: &log_meta_checks::Scratch) -> Vec<(String, Vec<u8>)> {
    use credstore::log::Head;
    use credstore::log::head::head_key_from_bytes;
    use log_meta_checks::{PEPPER, STORE_ID};
    let key = head_key_from_bytes(&PEPPER);
    let hash = |seq: u64| scratch.records[seq as usize - 1].hash;
    let head = |store_id: [u8; 16], seq: u64, hash: [u8; 32], key: &[u8; 32]| {
        [b"H".as_slice(), &Head { store_id, seq, hash }.encode(key)].concat()
    };
    let genesis = credstore::log::genesis_hash(&STORE_ID);
    let true_head = head(STORE_ID, 5, hash(5), &key);
    let mut bad_magic = true_head.clone();
    bad_magic[1] = b'X';
    let index = |t: credstore::log::SegmentTimes| [b"I".as_slice(), &t.encode()].concat();
    let truth = scratch.truth;
    let mut bad_crc = index(truth);
    bad_crc[61] ^= 1;
    let mut bad_index_magic = index(truth);
    bad_index_magic[1] = b'X';
    let mut flagged = index(truth);
    flagged[49..61].copy_from_slice(&[0xff; 12]);
    let crc = crc32c::crc32c(&flagged[1..61]);
    flagged[61..].copy_from_slice(&crc.to_le_bytes());
    let marker = log_meta_checks::marker_text(&STORE_ID);
    let store = |text: &str| [b"S".as_slice(), text.as_bytes()].concat();
    let lines: Vec<&str> = marker.lines().collect();
    let mut wrong_check = marker.clone();
    let last = wrong_check.len() - 2;
    wrong_check.replace_range(last..last + 1, if &marker[last..last + 1] == "0" { "1" } else { "0" });
    let seeds: Vec<(&str, Vec<u8>)> = vec![
        ("accept-H-checkpoint-of-the-last-record", true_head.clone()),
        ("accept-H-checkpoint-of-record-3", head(STORE_ID, 3, hash(3), &key)),
        ("accept-H-checkpoint-of-no-record", head(STORE_ID, 0, genesis, &key)),
        ("refuse-H-forged-mac", head(STORE_ID, 5, hash(5), &[0; 32])),
        ("refuse-H-another-store", head(*b"another-store-id", 5, hash(5), &key)),
        ("refuse-H-ahead-of-the-log", head(STORE_ID, 9, hash(5), &key)),
        ("refuse-H-rewritten-history", head(STORE_ID, 4, hash(5), &key)),
        ("refuse-H-no-record-not-genesis", head(STORE_ID, 0, [0; 32], &key)),
        ("refuse-H-bad-magic", bad_magic),
        ("refuse-H-95-bytes", true_head[..96].to_vec()),
        ("refuse-H-97-bytes", [true_head.as_slice(), b"\0"].concat()),
        ("refuse-H-empty", b"H".to_vec()),
        ("accept-I-true-index", index(truth)),
        (
            "accept-I-lying-times-right-length",
            index(credstore::log::SegmentTimes {
                min_at: 9_000,
                max_at: 9_500,
                ..truth
            }),
        ),
        (
            "accept-I-untimed",
            index(credstore::log::SegmentTimes {
                all_timed: false,
                ..truth
            }),
        ),
        (
            "accept-I-claims-no-records",
            index(credstore::log::SegmentTimes { last_seq: 0, ..truth }),
        ),
        ("accept-I-flags-and-reserved-set", flagged),
        (
            "refuse-I-wrong-length",
            index(credstore::log::SegmentTimes {
                len: truth.len + 1,
                ..truth
            }),
        ),
        (
            "refuse-I-another-segment",
            index(credstore::log::SegmentTimes { first_seq: 4, ..truth }),
        ),
        ("refuse-I-bad-crc", bad_crc),
        ("refuse-I-bad-magic", bad_index_magic),
        ("refuse-I-63-bytes", index(truth)[..64].to_vec()),
        ("refuse-I-empty", b"I".to_vec()),
        ("accept-S-as-init-writes-it", store(&marker)),
        ("accept-S-crlf", store(&marker.replace('\n', "\r\n"))),
        (
            "accept-S-upper-case-hex",
            store(
                &marker
                    .to_uppercase()
                    .replace("CREDSTORE-STORE", "credstore-store")
                    .replace("STORE_ID", "store_id")
                    .replace("PEPPER_CHECK", "pepper_check"),
            ),
        ),
        (
            "accept-S-spaces-around-values",
            store(&format!(
                "credstore-store  1 \nstore_id   {}\t\npepper_check  {}  \n",
                &lines[1]["store_id ".len()..],
                &lines[2]["pepper_check ".len()..]
            )),
        ),
        ("accept-S-more-lines", store(&format!("{marker}extra line\n"))),
        ("accept-S-no-final-newline", store(marker.trim_end())),
        ("refuse-S-wrong-pepper-check", store(&wrong_check)),
        ("refuse-S-version-2", store(&marker.replacen("store 1", "store 2", 1))),
        (
            "refuse-S-version-not-a-number",
            store(&marker.replacen("store 1", "store one", 1)),
        ),
        (
            "refuse-S-missing-pepper-check",
            store(&format!("{}\n{}\n", lines[0], lines[1])),
        ),
        (
            "refuse-S-swapped-lines",
            store(&format!("{}\n{}\n{}\n", lines[0], lines[2], lines[1])),
        ),
        (
            "refuse-S-short-store-id",
            store(&marker.replacen("store_id ", "store_id 0", 1).replacen("0\n", "\n", 1)),
        ),
        (
            "refuse-S-not-utf8",
            [
                b"S".as_slice(),
                &marker.as_bytes()[..20],
                b"\xff\xfe",
                &marker.as_bytes()[20..],
            ]
            .concat(),
        ),
        ("refuse-S-empty", b"S".to_vec()),
    ];
    seeds
        .into_iter()
        .map(|(name, bytes)| (name.to_string(), bytes))
        .collect()
}

// ---------------------------------------------------------------------------------------
// HTTP input: headers, query strings, JSON bodies

#[cfg(feature = "http")]
#[test]
fn http_input_seeds_pass_the_fuzz_checks_and_do_as_named() {
    let scratch = http_checks::Scratch::new();
    let seeds = corpus("http_input");
    assert!(seeds.len() >= 12, "only {} http seeds", seeds.len());
    let mut selectors = std::collections::BTreeSet::new();
    for (name, data) in &seeds {
        let accepted = http_checks::check_http_input(&scratch, data);
        assert_named_outcome("http_input", name, accepted);
        selectors.insert(data[0]);
    }
    assert_eq!(selectors, std::collections::BTreeSet::from(*b"ckoqrvx"));
    assert_seeds_current("http_input", &seeds, &http_seeds());
}

#[cfg(feature = "http")]
#[test]
fn the_http_echo_table_is_current() {
    let repeating = secret_echo::check_echo_table(&http_checks::text_parsers());
    // Only the mirror's raw serde and axum messages, which the sidecar scrubs at its edge.
    assert_eq!(
        repeating,
        [
            "sidecar JSON body (a value of the wrong type)",
            "sidecar query string (an unknown parameter)"
        ],
        "{repeating:?}"
    );
}

/// The HTTP seeds: the selector letter, then the input. A verify body names a fixture key
/// by its placeholder (`$plain`, `$restricted`, `$test`, `$revoked`).
#[cfg(feature = "http")]
fn http_seeds() -> Vec<(String, Vec<u8>)> {
    use serde_json::json;
    let key = secret_echo::PROBE_KEY;
    let well_formed = {
        let head = format!("sk_live_{}", "A".repeat(32));
        format!("{head}{}", credstore::token::checksum(head.as_bytes()))
    };
    let restricted = |extra: serde_json::Value| {
        let mut body = json!({
            "key": "$restricted",
            "ip": "10.1.2.3",
            "referrer": "https://app.example.com/x",
            "endpoint": "GET /v1/users/1",
            "project": "acme",
            "require": "docs:read OR jobs:run",
            "env": "live",
        });
        if let (Some(body), Some(extra)) = (body.as_object_mut(), extra.as_object()) {
            for (k, v) in extra {
                if v.is_null() {
                    body.remove(k);
                } else {
                    body.insert(k.clone(), v.clone());
                }
            }
        }
        format!("v{body}").into_bytes()
    };
    let text = |s: &str| s.as_bytes().to_vec();
    let body = |letter: char, v: serde_json::Value| format!("{letter}{v}").into_bytes();
    let seeds: Vec<(&str, Vec<u8>)> = vec![
        ("accept-k-bearer", text(&format!("kBearer {key}"))),
        (
            "accept-k-bearer-any-case-and-spaces",
            text(&format!("kbEaReR   {key} \t")),
        ),
        ("accept-k-x-api-key", text(&format!("k\n{key}"))),
        (
            "accept-k-x-api-key-when-bearer-holds-none",
            [b"kBearer sk_live_\xc3\xa9\n".as_slice(), key.as_bytes()].concat(),
        ),
        ("accept-k-tab-inside-the-key", text("kBearer sk_live\tab")),
        ("refuse-k-basic-scheme", text(&format!("kBasic {key}"))),
        ("refuse-k-bearer-alone", text("kBearer")),
        ("refuse-k-bearer-and-spaces", text("kBearer   ")),
        ("refuse-k-no-space", text(&format!("kBearer{key}"))),
        ("refuse-k-not-ascii", b"kBearer sk_\xff".to_vec()),
        ("refuse-k-nbsp-in-x-api-key", b"k\nsk_\xc2\xa0b".to_vec()),
        ("refuse-k-control-byte", b"kBearer a\x01b".to_vec()),
        ("refuse-k-empty", text("k")),
        (
            "accept-x-proxy-appended-the-client",
            text("x10.0.0.0/8\n10.0.0.2\n6.6.6.6, 198.51.100.7"),
        ),
        (
            "accept-x-two-fields",
            text("x10.0.0.0/8,::1\n10.0.0.2\n198.51.100.7\n10.1.1.1"),
        ),
        (
            "accept-x-only-trusted-hops",
            text("x10.0.0.0/8\n10.0.0.2\n10.9.9.9, 10.1.1.1"),
        ),
        (
            "accept-x-v6-with-port",
            text("x10.0.0.0/8\n10.0.0.2\n[2001:db8::1]:443"),
        ),
        ("accept-x-v4-with-port", text("x10.0.0.0/8\n10.0.0.2\n192.0.2.5:80")),
        ("accept-x-mapped-peer", text("x10.0.0.0/8\n::ffff:10.0.0.2\n192.0.2.5")),
        (
            "accept-x-bad-proxy-list-falls-back",
            text("xnot-an-ip\n10.0.0.2\n1.2.3.4"),
        ),
        ("refuse-x-untrusted-peer", text("x10.0.0.0/8\n192.0.2.1\n203.0.113.9")),
        ("refuse-x-no-header", text("x10.0.0.0/8\n10.0.0.2")),
        (
            "refuse-x-garbage-stops-the-walk",
            text("x10.0.0.0/8\n10.0.0.2\n6.6.6.6, nonsense"),
        ),
        ("refuse-x-no-trusted-proxy", text("x\n10.0.0.1\n1.2.3.4")),
        (
            "accept-o-every-field",
            format!(
                "oacme\n{}",
                json!({ "name": "Acme", "metadata": { "tier": "gold" }, "rate_limits": ["10/1m", "1000/1h:hourly"],
                        "budget": 500, "budget_period": "monthly:15" })
            )
            .into_bytes(),
        ),
        ("accept-o-empty-body", text("ocus_123:eu@x.y-z\n{}")),
        ("accept-o-no-budget", text("oacme\n{\"no_budget\": true}")),
        ("refuse-o-key-shaped-id", text("okey_0000000000000000000001\n{}")),
        ("refuse-o-slash-in-id", text("oa/b\n{}")),
        ("refuse-o-unknown-field", text("oacme\n{\"plan\": \"gold\"}")),
        (
            "refuse-o-budget-and-no-budget",
            text("oacme\n{\"budget\": 5, \"no_budget\": true}"),
        ),
        (
            "refuse-o-period-without-budget",
            text("oacme\n{\"budget_period\": \"daily\"}"),
        ),
        ("refuse-o-empty-name", text("oacme\n{\"name\": \"\"}")),
        (
            "refuse-o-duplicate-limits",
            text("oacme\n{\"rate_limits\": [\"1/1m\", \"2/1m\"]}"),
        ),
        ("accept-q-empty", text("q")),
        (
            "accept-q-list-filters",
            text("qproject=acme&prefix=sk_live_&status=active"),
        ),
        ("accept-q-status-any-case", text("qstatus=ReVoKeD")),
        ("accept-q-unknown-status", text("qstatus=gone")),
        ("accept-q-reason-encoded", text("qreason=leaked+in+a%20screenshot")),
        ("accept-q-percent-encoded-name", text("qre%61son=x")),
        ("accept-q-lone-percent", text("qreason=100%")),
        ("accept-q-not-utf8", text("qreason=%FF%FE")),
        ("accept-q-empty-pairs", text("q&&reason=x&")),
        ("accept-q-name-without-value", text("qreason")),
        (
            "accept-q-audit",
            text(
                "qkey=key_0NUqv2Kv3XaL3mB0cWj8vQ&kind=key.created&since=2026-01-01T00:00:00Z&until=2026-02-01T00:00:00%2B01:00",
            ),
        ),
        ("accept-q-bad-key-id", text("qkey=key_short")),
        ("refuse-q-unknown-parameter", text("qfoo=1")),
        ("refuse-q-repeated-parameter", text("qreason=a&reason=b")),
        ("refuse-q-pasted-key", text(&format!("q{key}"))),
        ("accept-v-plain", body('v', json!({ "key": "$plain" }))),
        ("accept-v-padded-key", body('v', json!({ "key": " $plain \n" }))),
        (
            "accept-v-cost-and-weight-zero",
            body('v', json!({ "key": "$plain", "cost": 0, "weight": 0 })),
        ),
        ("accept-v-restricted-all-allowed", restricted(json!({}))),
        ("accept-v-restricted-v6", restricted(json!({ "ip": "2001:db8::5" }))),
        (
            "accept-v-restricted-origin-with-port",
            restricted(json!({ "referrer": "https://a.b.example.com:8443" })),
        ),
        (
            "accept-v-test-key-in-test",
            body('v', json!({ "key": "$test", "env": "test" })),
        ),
        ("refuse-v-restricted-other-ip", restricted(json!({ "ip": "192.0.2.1" }))),
        ("refuse-v-restricted-no-ip", restricted(json!({ "ip": null }))),
        (
            "refuse-v-restricted-apex-referrer",
            restricted(json!({ "referrer": "https://example.com/" })),
        ),
        (
            "refuse-v-restricted-other-endpoint",
            restricted(json!({ "endpoint": "DELETE /v1/users/1" })),
        ),
        (
            "refuse-v-restricted-insufficient",
            restricted(json!({ "require": "jobs:delete" })),
        ),
        (
            "refuse-v-restricted-other-project",
            restricted(json!({ "project": "other" })),
        ),
        (
            "refuse-v-live-key-in-test",
            body('v', json!({ "key": "$plain", "env": "test" })),
        ),
        ("refuse-v-revoked", body('v', json!({ "key": "$revoked" }))),
        ("refuse-v-malformed", body('v', json!({ "key": "sk_live_nope" }))),
        ("refuse-v-not-found", body('v', json!({ "key": well_formed }))),
        (
            "refuse-v-unknown-field",
            body('v', json!({ "key": "$plain", "api_key": "x" })),
        ),
        (
            "refuse-v-repeated-field",
            text("v{\"key\":\"$plain\",\"key\":\"$plain\"}"),
        ),
        (
            "refuse-v-negative-cost",
            body('v', json!({ "key": "$plain", "cost": -1 })),
        ),
        (
            "refuse-v-pasted-key-in-cost",
            body('v', json!({ "key": "$plain", "cost": key })),
        ),
        ("refuse-v-no-key", body('v', json!({}))),
        ("refuse-v-not-an-object", text("v[]")),
        (
            "refuse-v-endpoint-without-path",
            body('v', json!({ "key": "$plain", "endpoint": "GET" })),
        ),
        (
            "refuse-v-unknown-env",
            body('v', json!({ "key": "$plain", "env": "prod" })),
        ),
        (
            "refuse-v-bad-require",
            body('v', json!({ "key": "$plain", "require": "docs:read AND" })),
        ),
        (
            "refuse-v-pasted-key-not-json",
            text(&format!("v{{\"key\": \"{key}\",}}")),
        ),
        // Found by the fuzzer: serde's derive takes a struct as an array of its fields; the
        // sidecar now takes only an object (the mirror test sends these to it).
        (
            "refuse-v-positional-array",
            text("v[\"$plain\",null,null,null,null,null,null,null,null]"),
        ),
        ("refuse-v-array-too-short", text("v[\"$plain\"]")),
        ("accept-c-minimal", body('c', json!({ "name": "ci" }))),
        (
            "accept-c-every-field",
            body(
                'c',
                json!({
                    "name": "CI pipeline", "prefix": "cmp_", "env": "live", "length": 40, "checksum": true,
                    "project": "acme", "expires_in": "90d", "metadata": { "team": "infra" },
                    "rate_limits": ["60/1m", "1000/1h:hourly"], "budget": 1000, "budget_period": "monthly:15",
                    "plan": "pro", "type": "service", "role": "member", "permissions": ["docs:read"],
                    "allow_ips": ["10.0.0.0/8"], "allow_referrers": ["*.example.com"],
                    "allow_endpoints": ["GET /v1/**"],
                }),
            ),
        ),
        (
            "accept-c-expires-at",
            body('c', json!({ "name": "x", "expires_at": "2027-01-01T00:00:00Z" })),
        ),
        (
            "accept-c-personal",
            body(
                'c',
                json!({ "name": "p", "type": "personal", "user": "alice@example.com" }),
            ),
        ),
        ("accept-c-test-prefix", body('c', json!({ "name": "t", "env": "test" }))),
        (
            "refuse-c-both-expiries",
            body(
                'c',
                json!({ "name": "x", "expires_in": "1d", "expires_at": "2027-01-01T00:00:00Z" }),
            ),
        ),
        (
            "refuse-c-bad-cidr-in-list",
            body('c', json!({ "name": "x", "allow_ips": ["10.0.0.0/8", "10.0.0.0/33"] })),
        ),
        (
            "refuse-c-bad-permission",
            body('c', json!({ "name": "x", "permissions": ["Docs:read"] })),
        ),
        (
            "refuse-c-bad-period",
            body('c', json!({ "name": "x", "budget": 5, "budget_period": "weekly" })),
        ),
        (
            "refuse-c-budget-too-big",
            body('c', json!({ "name": "x", "budget": u64::MAX })),
        ),
        (
            "refuse-c-prefix-env-conflict",
            body('c', json!({ "name": "x", "prefix": "sk_live_", "env": "test" })),
        ),
        (
            "refuse-c-random-part-too-short",
            body('c', json!({ "name": "x", "length": 3 })),
        ),
        ("refuse-c-blank-name", body('c', json!({ "name": "  " }))),
        ("refuse-c-control-in-name", body('c', json!({ "name": "a\u{7}b" }))),
        (
            "refuse-c-bad-project",
            body('c', json!({ "name": "x", "project": "a b" })),
        ),
        (
            "refuse-c-bad-rate-limit",
            body('c', json!({ "name": "x", "rate_limits": ["0/1m"] })),
        ),
        (
            "refuse-c-unknown-field",
            body('c', json!({ "name": "x", "scopes": [] })),
        ),
        ("refuse-c-no-name", body('c', json!({ "project": "acme" }))),
        (
            "refuse-c-pasted-key-as-prefix",
            body('c', json!({ "name": "x", "prefix": key })),
        ),
        ("accept-r-empty", text("r")),
        ("accept-r-whitespace", text("r \n\t")),
        ("accept-r-form-feed-is-blank", text("r\x0c")),
        ("accept-r-reason", body('r', json!({ "reason": "leaked" }))),
        ("accept-r-grace", body('r', json!({ "grace": "24h" }))),
        ("accept-r-null-grace", body('r', json!({ "grace": null }))),
        ("accept-r-empty-object", text("r{}")),
        ("refuse-r-array-body", text("r[\"\"]")),
        ("accept-r-bad-grace-decodes", body('r', json!({ "grace": "soon" }))),
        (
            "accept-r-long-reason-decodes",
            body('r', json!({ "reason": "x".repeat(600) })),
        ),
        (
            "refuse-r-both-fields",
            body('r', json!({ "reason": "x", "grace": "1h" })),
        ),
        ("refuse-r-unknown-field", body('r', json!({ "why": "x" }))),
        ("refuse-r-form-encoded", text("rreason=x")),
        ("refuse-r-vertical-tab", text("r\x0b")),
    ];
    seeds
        .into_iter()
        .map(|(name, bytes)| (name.to_string(), bytes))
        .collect()
}

#[cfg(feature = "http")]
#[test]
fn the_verify_seeds_come_to_the_decisions_their_names_say() {
    use credstore::Code;
    use credstore::policy::Forbidden;
    let scratch = http_checks::Scratch::new();
    let forbidden = |why| Some((Code::Forbidden, Some(why)));
    let expected = [
        ("refuse-v-restricted-other-ip", forbidden(Forbidden::Ip)),
        ("refuse-v-restricted-no-ip", forbidden(Forbidden::Ip)),
        ("refuse-v-restricted-apex-referrer", forbidden(Forbidden::Referrer)),
        ("refuse-v-restricted-other-endpoint", forbidden(Forbidden::Endpoint)),
        ("refuse-v-restricted-other-project", forbidden(Forbidden::Project)),
        ("refuse-v-live-key-in-test", forbidden(Forbidden::Environment)),
        (
            "refuse-v-restricted-insufficient",
            Some((Code::InsufficientPermissions, None)),
        ),
        ("refuse-v-revoked", Some((Code::Revoked, None))),
        ("refuse-v-malformed", Some((Code::Malformed, None))),
        ("refuse-v-not-found", Some((Code::NotFound, None))),
        ("refuse-v-unknown-field", None),
        ("refuse-v-endpoint-without-path", None),
        ("accept-v-restricted-all-allowed", Some((Code::Valid, None))),
    ];
    let seeds = corpus("http_input");
    for (name, want) in expected {
        let data = &seeds
            .iter()
            .find(|(n, _)| n == name)
            .unwrap_or_else(|| panic!("no seed {name}"))
            .1;
        assert_eq!(http_checks::verify_outcome(&scratch, &data[1..]), want, "{name}");
    }
}

/// The sidecar's request types are private to the binary, so `fuzz/http_checks.rs` mirrors
/// them. This keeps the mirror true: the real sidecar is sent every body and query string
/// seed, and answers 400 with the very message the mirror gives exactly when the mirror
/// refuses it.
#[cfg(feature = "http")]
#[test]
fn the_mirrored_request_types_decode_as_the_sidecar_does() {
    use http_checks::Endpoint;
    use std::io::{BufRead, BufReader};
    use std::process::{Command, Stdio};

    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    let bin = env!("CARGO_BIN_EXE_credstore");
    let init = Command::new(bin)
        .arg("--data")
        .arg(&data)
        .arg("init")
        .env_remove("CREDSTORE_PEPPER")
        .env_remove("CREDSTORE_DATA")
        .output()
        .unwrap();
    assert!(init.status.success(), "{init:?}");
    let init = String::from_utf8(init.stdout).unwrap();
    let admin = init
        .lines()
        .map(str::trim)
        .find(|l| l.starts_with("csa_"))
        .unwrap_or_else(|| panic!("init printed no admin key: {init}"))
        .to_string();
    let mut child = Command::new(bin)
        .arg("--data")
        .arg(&data)
        .args(["serve", "--listen", "127.0.0.1:0"])
        .env_remove("CREDSTORE_PEPPER")
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    struct Kill(std::process::Child);
    impl Drop for Kill {
        fn drop(&mut self) {
            let _ = self.0.kill();
            let _ = self.0.wait();
        }
    }
    let mut line = String::new();
    BufReader::new(child.stdout.take().unwrap())
        .read_line(&mut line)
        .unwrap();
    let _server = Kill(child);
    let addr: std::net::SocketAddr = line
        .trim()
        .strip_prefix("Listening on http://")
        .unwrap()
        .parse()
        .unwrap();

    // One HTTP/1.1 request on its own connection: the status and the error message.
    let send = |method: &str, target: &str, body: &[u8]| -> (u16, String) {
        use std::io::{Read, Write};
        let mut conn = std::net::TcpStream::connect(addr).unwrap();
        let head = format!(
            "{method} {target} HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer {admin}\r\n\
             Content-Type: application/json\r\nContent-Length: {}\r\nConnection: close\r\n\r\n",
            body.len()
        );
        conn.write_all(head.as_bytes()).unwrap();
        conn.write_all(body).unwrap();
        let mut reply = Vec::new();
        conn.read_to_end(&mut reply).unwrap();
        let reply = String::from_utf8_lossy(&reply);
        let (head, body) = reply.split_once("\r\n\r\n").unwrap_or((&reply, ""));
        let status = head.split(' ').nth(1).and_then(|s| s.parse().ok()).unwrap_or(0);
        let body = if head.to_ascii_lowercase().contains("transfer-encoding: chunked") {
            body.split("\r\n").skip(1).step_by(2).collect::<String>()
        } else {
            body.to_string()
        };
        let doc: serde_json::Value = serde_json::from_str(&body).unwrap_or_default();
        (status, doc["error"]["message"].as_str().unwrap_or("").to_string())
    };
    let agree = |what: &str, (status, message): (u16, String), refusal: Option<String>| match refusal {
        // The sidecar shows a refused input the way every error does: a secret-shaped
        // value only by its public start.
        Some(refusal) => assert_eq!(
            (status, message),
            (400, credstore::redact::scrub(&refusal).into_owned()),
            "{what}"
        ),
        None => assert!(
            !message.starts_with("invalid JSON body") && !message.starts_with("Failed to deserialize"),
            "{what}: the sidecar refused what the mirror decodes: {status} {message}"
        ),
    };
    let id = "key_0NUqv2Kv3XaL3mB0cWj8vQ";
    let mut sent = 0;
    for (name, data) in corpus("http_input") {
        let (selector, input) = (data[0], &data[1..]);
        match selector {
            b'v' => agree(
                &name,
                send("POST", "/v1/keys.verify", input),
                http_checks::body_refusal(Endpoint::Verify, input),
            ),
            b'c' => agree(
                &name,
                send("POST", "/v1/api-keys", input),
                http_checks::body_refusal(Endpoint::Create, input),
            ),
            b'r' => {
                let revoke = format!("/v1/api-keys/{id}");
                let rotate = format!("/v1/api-keys/{id}/rotate");
                agree(
                    &name,
                    send("DELETE", &revoke, input),
                    http_checks::body_refusal(Endpoint::Revoke, input),
                );
                agree(
                    &name,
                    send("POST", &rotate, input),
                    http_checks::body_refusal(Endpoint::Rotate, input),
                );
            }
            b'q' => {
                let query = String::from_utf8_lossy(input);
                for (path, endpoint) in [
                    ("/v1/api-keys".to_string(), Endpoint::List),
                    ("/v1/audit".to_string(), Endpoint::Audit),
                    (format!("/v1/api-keys/{id}"), Endpoint::Revoke),
                ] {
                    let target = format!("{path}?{query}");
                    let Ok(uri) = target.parse::<axum::http::Uri>() else {
                        continue;
                    };
                    let method = if endpoint == Endpoint::Revoke { "DELETE" } else { "GET" };
                    agree(
                        &name,
                        send(method, &target, b""),
                        http_checks::query_refusal(endpoint, &uri),
                    );
                }
            }
            _ => continue,
        }
        sent += 1;
    }
    assert!(sent >= 40, "only {sent} seeds sent");
}

// ---------------------------------------------------------------------------------------
// Import, create and revoke lines

#[test]
fn import_line_seeds_pass_the_fuzz_checks_and_do_as_named() {
    let seeds = corpus("import_line");
    assert!(seeds.len() >= 12, "only {} import seeds", seeds.len());
    for (name, data) in &seeds {
        let accepted = import_checks::check_import_input(data);
        assert_named_outcome("import_line", name, accepted);
    }
    assert_seeds_current("import_line", &seeds, &import_seeds());
}

/// The import seeds: the selector letter (`i`, `c`, `r`), then the line.
fn import_seeds() -> Vec<(String, Vec<u8>)> {
    // SHA-256 of "test", in hex and in base64.
    let hex = "9f86d081884c7d659a2feaa0c55ad015a3bf4f1b2b0b822cd15d6c15b0f00a08";
    let b64 = "n4bQgYhMfWWaL+qgxVrQFaO/TxsrC4Is0V1sFbDwCgg=";
    let key = secret_echo::PROBE_KEY;
    let lines: Vec<(&str, String)> = vec![
        (
            "accept-i-hex",
            format!(r#"i{{"sha256":"{hex}","prefix":"legacy_","name":"a"}}"#),
        ),
        (
            "accept-i-hex-upper-case",
            format!(
                r#"i{{"sha256":"{}","prefix":"legacy_","name":"a"}}"#,
                hex.to_uppercase()
            ),
        ),
        (
            "accept-i-base64",
            format!(r#"i{{"sha256_base64":"{b64}","prefix":"legacy_","name":"a"}}"#),
        ),
        (
            "accept-i-base64-url-unpadded",
            format!(
                r#"i{{"sha256_base64":"{}","prefix":"legacy_","name":"a"}}"#,
                b64.replace('+', "-").replace('/', "_").replace('=', "")
            ),
        ),
        (
            "accept-i-settings",
            format!(
                r#"i{{"sha256":"{hex}","prefix":"old_","name":"a","env":"test","project":"p","rate_limits":["10/1m"],"budget":5,"budget_period":"daily","metadata":{{"k":"v"}},"allow_ips":["10.0.0.0/8"],"expires_in":"30d"}}"#
            ),
        ),
        (
            "refuse-i-both-hashes",
            format!(r#"i{{"sha256":"{hex}","sha256_base64":"{b64}","prefix":"legacy_","name":"a"}}"#),
        ),
        ("refuse-i-no-hash", r#"i{"prefix":"legacy_","name":"a"}"#.into()),
        (
            "refuse-i-short-hex",
            format!(r#"i{{"sha256":"{}","prefix":"legacy_","name":"a"}}"#, &hex[..62]),
        ),
        (
            "refuse-i-base64-of-31-bytes",
            r#"i{"sha256_base64":"n4bQgYhMfWWaL+qgxVrQFaO/TxsrC4Is0V1sFbDwCg==","prefix":"legacy_","name":"a"}"#.into(),
        ),
        (
            "refuse-i-admin-prefix",
            format!(r#"i{{"sha256":"{hex}","prefix":"csa_","name":"a"}}"#),
        ),
        (
            "refuse-i-prefix-without-underscore",
            format!(r#"i{{"sha256":"{hex}","prefix":"sk-","name":"a"}}"#),
        ),
        (
            "refuse-i-no-name",
            format!(r#"i{{"sha256":"{hex}","prefix":"legacy_"}}"#),
        ),
        (
            "refuse-i-shape-field",
            format!(r#"i{{"sha256":"{hex}","prefix":"legacy_","name":"a","length":40}}"#),
        ),
        (
            "refuse-i-unknown-field",
            format!(r#"i{{"sha256":"{hex}","prefix":"legacy_","name":"a","owner":"x"}}"#),
        ),
        (
            "refuse-i-key-pasted-as-hash",
            format!(r#"i{{"sha256":"{key}","prefix":"legacy_","name":"a"}}"#),
        ),
        ("refuse-i-array", "i[1,2]".into()),
        ("refuse-i-not-utf8", "i\u{0}".into()),
        ("accept-c-minimal", r#"c{"name":"a"}"#.into()),
        (
            "accept-c-prefix-and-env",
            r#"c{"name":"a","prefix":"cmp_","env":"test","checksum":false}"#.into(),
        ),
        ("refuse-c-hash", format!(r#"c{{"name":"a","sha256":"{hex}"}}"#)),
        (
            "refuse-c-period-without-budget",
            r#"c{"name":"a","budget_period":"daily"}"#.into(),
        ),
        (
            "refuse-c-both-lengths",
            r#"c{"name":"a","length":30,"total_length":40}"#.into(),
        ),
        (
            "accept-r-id",
            r#"r{"id":"key_0000000000000000000001","reason":"leak"}"#.into(),
        ),
        ("accept-r-key", format!(r#"r{{"key":"{key}"}}"#)),
        (
            "refuse-r-both",
            format!(r#"r{{"id":"key_0000000000000000000001","key":"{key}"}}"#),
        ),
        ("refuse-r-neither", r#"r{"reason":"x"}"#.into()),
        ("refuse-r-bad-id", format!(r#"r{{"id":"{key}"}}"#)),
    ];
    let mut seeds: Vec<(String, Vec<u8>)> = lines
        .into_iter()
        .map(|(name, text)| (name.to_string(), text.into_bytes()))
        .collect();
    // Bytes that are not UTF-8 after the selector.
    if let Some(seed) = seeds.iter_mut().find(|(n, _)| n == "refuse-i-not-utf8") {
        seed.1 = b"i{\"name\":\"\xff\"}".to_vec();
    }
    seeds
}

// Leak report bodies

#[test]
fn leaks_body_seeds_pass_the_fuzz_checks_and_do_as_named() {
    let seeds = corpus("leaks_body");
    assert!(seeds.len() >= 12, "only {} leak body seeds", seeds.len());
    for (name, data) in &seeds {
        let accepted = leaks_checks::check_leaks_body(data);
        assert_named_outcome("leaks_body", name, accepted);
    }
    assert_seeds_current("leaks_body", &seeds, &leaks_seeds());
}

/// The leak body seeds: what scanners send, and what they must not.
fn leaks_seeds() -> Vec<(String, Vec<u8>)> {
    let key = secret_echo::PROBE_KEY;
    let item = |token: &str| {
        format!(
            r#"{{"token":"{token}","type":"credstore_api_key","url":"https://github.com/o/r/blob/main/.env","source":"content"}}"#
        )
    };
    let many = |n: usize| format!("[{}]", vec![item("sk_live_x"); n].join(","));
    let text: Vec<(&str, String)> = vec![
        ("accept-one-token", format!("[{}]", item(key))),
        ("accept-two-tokens", format!("[{},{}]", item(key), item("not-a-key"))),
        (
            "accept-extra-fields-ignored",
            format!(r#"[{{"token":"{key}","type":"t","url":"u","source":"s","found_at":"2026-01-01"}}]"#),
        ),
        (
            "accept-empty-strings",
            r#"[{"token":"","type":"","url":"","source":""}]"#.into(),
        ),
        (
            "accept-unicode-url",
            r#"[{"token":"t","type":"t","url":"https://x/\u00e9t\u00e9","source":"s"}]"#.into(),
        ),
        ("accept-most-tokens", many(credstore::leaks::MAX_LEAK_TOKENS)),
        ("accept-whitespace", format!(" \n[ {} ]\n", item(key))),
        ("refuse-too-many-tokens", many(credstore::leaks::MAX_LEAK_TOKENS + 1)),
        ("refuse-empty-list", "[]".into()),
        ("refuse-empty-body", String::new()),
        ("refuse-object", item(key)),
        ("refuse-positional-item", format!(r#"[["{key}","t","u","s"]]"#)),
        (
            "refuse-missing-url",
            format!(r#"[{{"token":"{key}","type":"t","source":"s"}}]"#),
        ),
        (
            "refuse-number-type",
            format!(r#"[{{"token":"{key}","type":7,"url":"u","source":"s"}}]"#),
        ),
        (
            "refuse-token-not-a-string",
            format!(r#"[{{"token":["{key}"],"type":"t","url":"u","source":"s"}}]"#),
        ),
        ("refuse-not-json", format!("token={key}")),
        ("refuse-truncated", format!("[{}", item(key))),
        ("refuse-trailing-garbage", format!("[{}] {key}", item(key))),
        (
            "refuse-long-url",
            format!(
                r#"[{{"token":"{key}","type":"t","url":"{}","source":"s"}}]"#,
                "u".repeat(credstore::leaks::MAX_URL_BYTES + 1)
            ),
        ),
        ("refuse-long-token", format!("[{}]", item(&key.repeat(30)))),
        (
            "refuse-second-item-bad",
            format!(r#"[{},{{"token":"{key}"}}]"#, item(key)),
        ),
    ];
    let mut seeds: Vec<(String, Vec<u8>)> = text.into_iter().map(|(n, t)| (n.to_string(), t.into_bytes())).collect();
    seeds.push((
        "refuse-not-utf8".into(),
        b"[{\"token\":\"\xff\xfe\",\"type\":\"t\",\"url\":\"u\",\"source\":\"s\"}]".to_vec(),
    ));
    seeds
}

#[cfg(feature = "http")]
#[test]
fn dashboard_request_seeds_pass_the_fuzz_checks_and_do_as_named() {
    let seeds = corpus("dashboard_request");
    assert!(seeds.len() >= 10);
    for (name, data) in &seeds {
        let accepted = dashboard_checks::check_dashboard_request(data);
        assert_named_outcome("dashboard_request", name, accepted);
    }
    assert_seeds_current("dashboard_request", &seeds, &dashboard_seeds());
}

/// Requests to the dashboard, as `dashboard_checks.rs` reads them.
#[cfg(feature = "http")]
fn dashboard_seeds() -> Vec<(String, Vec<u8>)> {
    let cookie = "Cookie: credstore_dashboard={SESSION}";
    let form = "Content-Type: application/x-www-form-urlencoded";
    let seeds: Vec<(&str, String)> = vec![
        ("accept-keys-page", format!("GET /dashboard\n{cookie}\n\n")),
        ("accept-key-page", format!("GET /dashboard/keys/{{KEY}}\n{cookie}\n\n")),
        (
            "accept-revoke-confirmation",
            format!("GET /dashboard/keys/{{KEY}}/revoke\n{cookie}\n\n"),
        ),
        (
            "accept-style-sheet",
            "GET /dashboard/assets/dashboard.css\n\n".to_string(),
        ),
        (
            "accept-link-page",
            format!("GET /dashboard/enter/cdl_{}\n\n", "0".repeat(64)),
        ),
        (
            "accept-create",
            format!("POST /dashboard/keys\n{cookie}\n{form}\n\ncsrf={{CSRF}}&nonce={{NONCE}}&name=fuzzed&budget=10"),
        ),
        (
            "accept-revoke",
            format!("POST /dashboard/keys/{{KEY}}/revoke\n{cookie}\n{form}\n\ncsrf={{CSRF}}"),
        ),
        (
            "accept-roll",
            format!("POST /dashboard/keys/{{KEY}}/roll\n{cookie}\n{form}\n\ncsrf={{CSRF}}&grace=1h"),
        ),
        ("refuse-no-session", "GET /dashboard\n\n".to_string()),
        (
            "refuse-forged-cookie",
            format!("GET /dashboard\nCookie: credstore_dashboard=cds_{}\n\n", "f".repeat(64)),
        ),
        (
            "refuse-create-without-csrf",
            format!("POST /dashboard/keys\n{cookie}\n{form}\n\ncsrf=00&nonce={{NONCE}}&name=forged"),
        ),
        (
            "refuse-create-cross-site",
            format!(
                "POST /dashboard/keys\n{cookie}\n{form}\nOrigin: https://evil.example\n\ncsrf={{CSRF}}&nonce={{NONCE}}&name=forged"
            ),
        ),
        (
            "refuse-other-owners-key",
            format!("GET /dashboard/keys/{{OTHER}}\n{cookie}\n\n"),
        ),
        (
            "refuse-revoke-other-owners-key",
            format!("POST /dashboard/keys/{{OTHER}}/revoke\n{cookie}\n{form}\n\ncsrf={{CSRF}}"),
        ),
        (
            "refuse-budget-over-the-top",
            format!(
                "POST /dashboard/keys/{{OTHER}}/budget\n{cookie}\n{form}\n\ncsrf={{CSRF}}&cap=99999999999999999999999"
            ),
        ),
        (
            "refuse-used-link",
            "POST /dashboard/enter\nContent-Type: application/x-www-form-urlencoded\n\ntoken=cdl_zz".to_string(),
        ),
        (
            "refuse-bad-form",
            format!("POST /dashboard/keys\n{cookie}\n{form}\n\n%%%&&="),
        ),
        ("refuse-not-a-request", "\u{0}\u{1}garbage".to_string()),
    ];
    seeds
        .into_iter()
        .map(|(n, t)| (n.to_string(), t.into_bytes()))
        .collect()
}

// Usage tree values

#[test]
fn usage_value_seeds_pass_the_fuzz_checks_and_do_as_named() {
    let seeds = corpus("usage_value");
    assert!(seeds.len() >= 10, "only {} usage value seeds", seeds.len());
    for (name, data) in &seeds {
        let accepted = usage_checks::check_usage_value(data);
        assert_named_outcome("usage_value", name, accepted);
    }
    assert_seeds_current("usage_value", &seeds, &usage_seeds());
}

/// The usage value seeds: a tier byte (0 minute, 1 hour, 2 day, 3 month), then a value.
fn usage_seeds() -> Vec<(String, Vec<u8>)> {
    let seed = |name: &str, bytes: &[u8]| (name.to_string(), bytes.to_vec());
    vec![
        seed("accept-empty-value", &[1, 1]),
        seed("accept-one-hour", &[1, 1, 23, 3, 3, 0]),
        seed("accept-denials", &[1, 1, 0, 5, 5, 2, 8, 7, 3, 1]),
        seed(
            "accept-minutes-ascending",
            &[0, 1, 0, 1, 0, 0, 59, 0x80, 0x01, 0, 1, 2, 9],
        ),
        seed("accept-zero-count-denial", &[2, 1, 30, 0, 0, 1, 4, 0]),
        seed(
            "accept-largest-varint",
            &[
                3, 1, 11, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0x01, 0, 0,
            ],
        ),
        seed("refuse-nothing", &[]),
        seed("refuse-no-format", &[1]),
        seed("refuse-unknown-format", &[1, 2, 0, 1, 1, 0]),
        seed("refuse-truncated", &[1, 1, 5, 0x80]),
        seed("refuse-slot-past-the-hour", &[0, 1, 60, 1, 0, 0]),
        seed("refuse-slots-descending", &[1, 1, 5, 1, 0, 0, 4, 1, 0, 0]),
        seed("refuse-repeated-slot", &[1, 1, 5, 1, 0, 0, 5, 1, 0, 0]),
        seed("refuse-valid-as-a-denial", &[1, 1, 5, 1, 0, 1, 0, 1]),
        seed("refuse-unknown-code", &[1, 1, 5, 1, 0, 1, 10, 1]),
        seed(
            "refuse-overlong-varint",
            &[
                1, 1, 5, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0x01, 0, 0,
            ],
        ),
    ]
}

// ---------------------------------------------------------------------------------------
// Index mirrors

#[test]
fn index_mirror_seeds_pass_the_fuzz_checks_and_do_as_named() {
    let scratch = mirror_checks::Scratch::new();
    let seeds = corpus("index_mirror");
    assert!(seeds.len() >= 10, "only {} mirror seeds", seeds.len());
    let mut files = std::collections::BTreeSet::new();
    for (name, data) in &seeds {
        let answered = mirror_checks::check_mirror_input(&scratch, data);
        assert_named_outcome("index_mirror", name, answered);
        files.insert(data[0] & 0x7f);
    }
    assert_eq!(files.len(), mirror_checks::FILES.len(), "a seed for every mirror file");
    // The seeds aim at offsets in the fixture's files, which the fixture makes the same
    // way every time: they are what write_seed_corpus writes.
    assert_seeds_current("index_mirror", &seeds, &mirror_checks::mirror_seeds(&scratch));
}
