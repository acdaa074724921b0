//! The fuzz targets' seed corpora, run as ordinary tests through the very checks the
//! targets run (`fuzz/checks.rs`): the token parser never panics and accepts exactly the
//! well-formed keys; the log record decoders, recovery and the reader never panic, never
//! accept a damaged record and never drop a good one.
//!
//! The seeds were written by the ignored test `write_seed_corpus` below (run it with
//! `cargo test --test fuzz_corpus -- --ignored write_seed_corpus` to write them again; the
//! keys in the token seeds are random, so they change every time).

#![expect(
    clippy::unwrap_used,
    clippy::indexing_slicing,
    reason = "a test fails by panicking: unwrap, expect and indexing are its assertions"
)]

#[expect(
    clippy::unwrap_used,
    clippy::indexing_slicing,
    reason = "the fuzz checks panic to report a finding, as libFuzzer expects"
)]
#[path = "../fuzz/checks.rs"]
mod checks;

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

/// Writes the seed corpora. Ignored: run by hand when the formats change.
#[test]
#[ignore = "writes fuzz/corpus/*; run by hand"]
fn write_seed_corpus() {
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("fuzz/corpus");
    write_token_seeds(&root.join("token_parser"));
    write_log_seeds(&root.join("log_record"));
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
