//! The `log_file` fuzz target's seed corpus (`fuzz/corpus/log_file/`), run as an ordinary
//! test through the very checks the target runs (`fuzz/log_file_check.rs`): audit, recovery
//! and the reader never panic, never accept a corrupt middle, and agree with an independent
//! walk of each whole segment file. Each seed's name says what the walk must find in it.
//!
//! The seeds were written by the ignored test `write_seed_corpus` below (run it with
//! `cargo test --test fuzz_log_file -- --ignored write_seed_corpus` to write them again;
//! they are deterministic).

#![expect(
    clippy::unwrap_used,
    clippy::indexing_slicing,
    reason = "a test fails by panicking: unwrap, expect and indexing are its assertions"
)]

#[path = "../fuzz/log_file_check.rs"]
mod log_file_check;

use std::fs;
use std::path::{Path, PathBuf};

use credstore::log::{LogWriter, SEGMENT_HEADER_LEN, frame};
use credstore::{Event, EventKind};
use log_file_check::{STORE_ID, Verdict};

fn corpus_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("fuzz/corpus/log_file")
}

#[test]
fn log_file_seeds_pass_the_fuzz_checks_and_are_what_they_are_named() {
    let scratch = log_file_check::Scratch::new();
    let mut files: Vec<PathBuf> = fs::read_dir(corpus_dir()).unwrap().map(|e| e.unwrap().path()).collect();
    files.sort();
    assert!(files.len() >= 12, "only {} seeds", files.len());
    for path in files {
        let name = path.file_name().unwrap().to_string_lossy().into_owned();
        let data = fs::read(&path).unwrap();
        let verdict = log_file_check::check_log_file(&scratch, &data);
        let ok = match name.split('-').next().unwrap() {
            "valid" => matches!(verdict, Verdict::Clean { records } if records > 0 || name == "valid-header-only"),
            "torn" => matches!(verdict, Verdict::Torn { .. }),
            "header" => verdict == Verdict::BadHeader,
            "corrupt" => matches!(verdict, Verdict::Bad { .. }),
            other => panic!("seed {name}: unknown kind {other}"),
        };
        assert!(ok, "seed {name}: the walk says {verdict:?}");
    }
}

/// A real segment: the log's first, with `n` events written by `LogWriter`.
fn segment(n: u64, store_id: [u8; 16]) -> Vec<u8> {
    let dir = tempfile::tempdir().unwrap();
    let mut w = LogWriter::create(dir.path(), store_id, 1 << 20).unwrap();
    for i in 1..=n {
        let event = Event {
            at: 1_767_225_600_000 + i as i64 * 1000,
            kind: EventKind::PlanDeleted {
                name: format!("plan-{i}"),
            },
        };
        w.append(&event.encode());
    }
    w.commit().unwrap();
    drop(w);
    fs::read(dir.path().join(format!("{:020}.log", 1))).unwrap()
}

/// (offset, length) of each record of a segment.
fn records(segment: &[u8]) -> Vec<(usize, usize)> {
    let mut out = Vec::new();
    let mut pos = SEGMENT_HEADER_LEN;
    while let Ok(f) = frame::decode(&segment[pos..]) {
        out.push((pos, f.encoded_len()));
        pos += f.encoded_len();
    }
    out
}

#[test]
#[ignore = "writes the seed corpus; run by hand"]
fn write_seed_corpus() {
    let good = segment(6, STORE_ID);
    let rec = records(&good);
    let (r2, r3) = (rec[2], rec[3]);
    let mut seeds: Vec<(&str, Vec<u8>)> = vec![
        ("valid-six-events", good.clone()),
        ("valid-header-only", good[..SEGMENT_HEADER_LEN].to_vec()),
    ];
    let mut flipped = good.clone();
    flipped[r2.0 + r2.1 - 2] ^= 0x04;
    seeds.push(("corrupt-flipped-byte", flipped));
    let mut deleted = good.clone();
    deleted.drain(r2.0..r2.0 + r2.1);
    seeds.push(("corrupt-deleted-record", deleted));
    let mut swapped = good[..r2.0].to_vec();
    swapped.extend_from_slice(&good[r3.0..r3.0 + r3.1]);
    swapped.extend_from_slice(&good[r2.0..r2.0 + r2.1]);
    swapped.extend_from_slice(&good[r3.0 + r3.1..]);
    seeds.push(("corrupt-reordered-pair", swapped));
    let theirs = segment(6, *b"another-store-id");
    let mut spliced = good.clone();
    spliced[r2.0..r2.0 + r2.1].copy_from_slice(&theirs[r2.0..r2.0 + r2.1]);
    seeds.push(("corrupt-spliced-record", spliced));
    let mut long = good.clone();
    long[r2.0 + 1] = 0x7f;
    seeds.push(("corrupt-length-overruns-later-records", long));
    let mut garbage = good.clone();
    garbage.extend_from_slice(b"not a record, with more after it");
    let longer = segment(8, STORE_ID);
    let (at, len) = records(&longer)[7];
    garbage.extend_from_slice(&longer[at..at + len]);
    seeds.push(("corrupt-garbage-then-a-record", garbage));
    seeds.push(("torn-last-record-cut", good[..good.len() - 7].to_vec()));
    seeds.push(("torn-in-frame-header", good[..rec[5].0 + 5].to_vec()));
    let mut zeros = good.clone();
    zeros.extend_from_slice(&[0; 100]);
    seeds.push(("torn-zero-tail", zeros));
    let mut foreign = theirs.clone();
    foreign.truncate(rec[3].0);
    seeds.push(("header-foreign-store", foreign));
    let mut genesis = theirs.clone();
    genesis[8..24].copy_from_slice(&STORE_ID);
    seeds.push(("header-foreign-genesis", genesis));
    let mut magic = good.clone();
    magic[0] = b'C';
    seeds.push(("header-bad-magic", magic));
    let mut renamed = good.clone();
    renamed[24] = 2;
    seeds.push(("header-first-seq-not-the-name", renamed));
    seeds.push(("header-short-file", good[..40].to_vec()));
    seeds.push(("header-empty-file", Vec::new()));
    let dir = corpus_dir();
    fs::create_dir_all(&dir).unwrap();
    for (name, bytes) in seeds {
        fs::write(dir.join(name), bytes).unwrap();
    }
}
