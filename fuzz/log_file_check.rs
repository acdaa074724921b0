//! The properties the `log_file` fuzz target defends, shared word for word by the target
//! (`fuzz/fuzz_targets/log_file.rs`, via `#[path]`) and by `tests/fuzz_log_file.rs`, which
//! runs every seed of `fuzz/corpus/log_file/` through them as an ordinary test.
//!
//! The input is a whole segment file, header included. It goes into a scratch log
//! directory two ways:
//!
//! - **A**, as the log's only (active) segment, `00000000000000000001.log`;
//! - **B**, as a sealed first segment (read through a memory map), followed by a valid
//!   active segment that continues the chain where an independent walk of the input stops.
//!
//! An independent walk of the bytes (this file re-derives the format from
//! `docs/FORMAT.md`: header, length bounds, CRC32C, sequence numbers, BLAKE3 chain from the
//! genesis hash, and the torn-tail rule) says what the input is. Then:
//!
//! - `Audit`, `LogReader` (oldest and newest first) and `recover` never panic;
//! - `Audit` never accepts a corrupt middle: it passes only if the walk accepts every
//!   record, up to the end or (in A only) a torn tail, and otherwise names the offset and
//!   sequence number where the walk stopped; in B, where the input is sealed, a torn end is
//!   damage too;
//! - with a head checkpoint (MAC'd with a fixed key) vouching for the last record the walk
//!   accepted, the audit's verdict is the same; vouching for one more record, it fails at
//!   the walk's stop (or at the end: a truncated tail);
//! - the reader yields exactly the records the walk accepts, then an error if anything but
//!   a clean end follows; newest first, it yields them reversed, or only the error;
//! - `recover` truncates exactly a torn tail and refuses anything else unchanged, and what
//!   it leaves passes the audit.

#![expect(
    clippy::indexing_slicing,
    reason = "a fuzz check reports a finding by panicking, as libFuzzer expects"
)]
#![allow(dead_code)]

use std::fs;
use std::path::{Path, PathBuf};

use credstore::Pepper;
use credstore::log::recovery::recover;
use credstore::log::{
    Audit, AuditError, AuditReport, Head, HeadCheck, LogError, LogReader, SegmentHeader, frame, head_key,
};

/// The store id of the scratch log.
pub const STORE_ID: [u8; 16] = *b"credstore-logfil";

/// The head checkpoint key of the scratch log.
pub fn key() -> [u8; 32] {
    head_key(&Pepper::from_bytes([0x5a; 32]))
}

/// The genesis hash, derived here from `docs/FORMAT.md`, not taken from the library.
pub fn genesis() -> [u8; 32] {
    blake3::derive_key("credstore 2026 event log genesis v1", &STORE_ID)
}

/// Scratch directories, reused between inputs.
pub struct Scratch {
    root: tempfile::TempDir,
}

impl Scratch {
    /// Fresh scratch directories (in `/dev/shm` when there is one).
    pub fn new() -> Self {
        let shm = Path::new("/dev/shm");
        let root = match tempfile::Builder::new().prefix("credstore-logfile-").tempdir_in(shm) {
            Ok(dir) if shm.is_dir() => dir,
            _ => tempfile::tempdir().unwrap_or_else(|e| panic!("temp dir: {e}")),
        };
        Scratch { root }
    }

    fn dir(&self, name: &str) -> PathBuf {
        let dir = self.root.path().join(name);
        if dir.exists() {
            for entry in fs::read_dir(&dir)
                .unwrap_or_else(|e| panic!("list {}: {e}", dir.display()))
                .flatten()
            {
                let _ = fs::remove_file(entry.path());
            }
        } else {
            fs::create_dir_all(&dir).unwrap_or_else(|e| panic!("mkdir {}: {e}", dir.display()));
        }
        dir
    }
}

impl Default for Scratch {
    fn default() -> Self {
        Scratch::new()
    }
}

/// What the independent walk says of an input, as the log's only segment.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Verdict {
    /// The header is bad: refused at offset 0.
    BadHeader,
    /// Every byte is a good record.
    Clean { records: u64 },
    /// Good records, then a torn tail (only acceptable at the end of the active segment).
    Torn { records: u64, offset: usize },
    /// Good records, then damage or a misplaced record at `offset`.
    Bad { records: u64, offset: usize },
}

/// A record the walk accepted.
#[derive(Debug, Clone, PartialEq, Eq)]
struct Walked {
    seq: u64,
    hash: [u8; 32],
    payload: Vec<u8>,
}

/// The walk's result: its verdict, the records it accepted, and the chain hash after them.
struct Walk {
    verdict: Verdict,
    records: Vec<Walked>,
    last_hash: [u8; 32],
}

/// Runs every check on one input. Returns the walk's verdict (for the corpus test).
pub fn check_log_file(scratch: &Scratch, data: &[u8]) -> Verdict {
    let walk = walk(data);
    check_as_active(scratch, data, &walk);
    check_as_sealed(scratch, data, &walk);
    walk.verdict
}

/// A: the input as the only, active segment.
fn check_as_active(scratch: &Scratch, data: &[u8], walk: &Walk) {
    let dir = scratch.dir("active");
    let segment = dir.join(format!("{:020}.log", 1));
    write(&segment, data);
    let n = walk.records.len() as u64;
    let len = data.len();

    // Without a checkpoint.
    let unkeyed = Audit::new(&dir, STORE_ID).run();
    match (walk.verdict, &unkeyed) {
        (Verdict::Clean { .. }, Ok(r)) => assert_report(r, n, walk, 0),
        (Verdict::Torn { offset, .. }, Ok(r)) => assert_report(r, n, walk, (len - offset) as u64),
        (Verdict::BadHeader, Err(AuditError::Failed(f))) => assert_eq!((f.offset, f.seq), (0, 1), "{f}"),
        (Verdict::Bad { offset, .. }, Err(AuditError::Failed(f))) => {
            assert_eq!((f.offset, f.seq), (offset as u64, n + 1), "{f}");
            assert_eq!(f.file, segment);
        }
        (verdict, got) => panic!("audit gave {got:?}, the walk says {verdict:?}"),
    }

    // With a checkpoint vouching for the last record the walk accepted: the same verdict.
    Head {
        store_id: STORE_ID,
        seq: n,
        hash: walk.last_hash,
    }
    .write(&dir, &key(), false)
    .unwrap_or_else(|e| panic!("write HEAD: {e}"));
    let keyed = Audit::new(&dir, STORE_ID).head_key(key()).run();
    match (&unkeyed, &keyed) {
        (Ok(_), Ok(r)) => assert_eq!(r.head, HeadCheck::Verified { seq: n, uncovered: 0 }),
        (Err(AuditError::Failed(a)), Err(AuditError::Failed(b))) => assert_eq!(a, b),
        (a, b) => panic!("the checkpoint changed the verdict: {a:?} without, {b:?} with"),
    }

    // Vouching for one record more than there is: never accepted, and named where the walk
    // stopped (or at the end: the tail was cut off).
    Head {
        store_id: STORE_ID,
        seq: n + 1,
        hash: [0x11; 32],
    }
    .write(&dir, &key(), false)
    .unwrap_or_else(|e| panic!("write HEAD: {e}"));
    match (walk.verdict, Audit::new(&dir, STORE_ID).head_key(key()).run()) {
        (Verdict::BadHeader, Err(AuditError::Failed(f))) => assert_eq!(f.offset, 0, "{f}"),
        (Verdict::Clean { .. }, Err(AuditError::Failed(f))) => {
            assert_eq!((f.offset, f.seq), (len as u64, n + 1), "{f}");
        }
        (Verdict::Torn { offset, .. } | Verdict::Bad { offset, .. }, Err(AuditError::Failed(f))) => {
            assert_eq!((f.offset, f.seq), (offset as u64, n + 1), "{f}");
        }
        (verdict, got) => panic!("a checkpoint past the log gave {got:?}; the walk says {verdict:?}"),
    }
    let _ = fs::remove_file(dir.join("HEAD"));

    // The reader, oldest first: the walk's records, then an error unless the end is clean.
    let (read, failure) = read_all(LogReader::open(&dir, STORE_ID, 1));
    let clean = matches!(walk.verdict, Verdict::Clean { .. });
    if walk.verdict != Verdict::BadHeader {
        assert_eq!(read, walk.records, "the reader and the walk disagree");
    }
    assert_eq!(
        failure.is_none(),
        clean,
        "reader ended with {failure:?}; the walk says {:?}",
        walk.verdict
    );
    if let (
        Some(LogError::Corrupt { offset, seq, .. }),
        Verdict::Torn { offset: at, .. } | Verdict::Bad { offset: at, .. },
    ) = (&failure, walk.verdict)
    {
        assert_eq!((*offset, *seq), (at as u64, n + 1));
    }
    // Newest first: the same records reversed, or nothing but the error.
    let (mut back, back_failure) = read_all(LogReader::open(&dir, STORE_ID, 1).map(LogReader::newest_first));
    if clean {
        back.reverse();
        assert_eq!(back, walk.records);
        assert!(back_failure.is_none());
    } else {
        assert!(
            back.is_empty() && back_failure.is_some(),
            "newest first read past damage"
        );
    }

    // Recovery: truncates exactly a torn tail, refuses the rest unchanged; what it leaves
    // passes the audit.
    let recovered = recover(&dir, &STORE_ID, 0);
    let after = fs::read(&segment).unwrap_or_else(|e| panic!("read back: {e}"));
    match (walk.verdict, &recovered) {
        (Verdict::Clean { .. }, Ok(r)) => {
            assert_eq!((r.len as usize, r.report.truncated_bytes, r.next_seq), (len, 0, n + 1));
            assert_eq!(after, data);
        }
        (Verdict::Torn { offset, .. }, Ok(r)) => {
            assert_eq!(
                (r.len as usize, r.report.truncated_bytes),
                (offset, (len - offset) as u64)
            );
            assert_eq!(after, data[..offset]);
        }
        (Verdict::BadHeader | Verdict::Bad { .. }, Err(_)) => {
            assert_eq!(after, data, "recovery changed a log it refused")
        }
        // Recovery takes the first segment's chain from its header; the walk also insists on
        // the genesis hash, which only the audit checks.
        (Verdict::BadHeader, Ok(_)) => {
            assert!(
                Audit::new(&dir, STORE_ID).run().is_err(),
                "the audit missed a bad header"
            );
            return;
        }
        (verdict, got) => panic!("recover gave {got:?}; the walk says {verdict:?}"),
    }
    if recovered.is_ok() {
        let report = Audit::new(&dir, STORE_ID)
            .run()
            .unwrap_or_else(|e| panic!("after recovery: {e}"));
        assert_eq!((report.records, report.torn_tail_bytes), (n, 0));
    }
}

/// B: the input as a sealed (mapped) first segment, followed by a valid active segment
/// that continues the chain where the walk stopped. Any problem in the input is damage.
fn check_as_sealed(scratch: &Scratch, data: &[u8], walk: &Walk) {
    let dir = scratch.dir("sealed");
    let first = dir.join(format!("{:020}.log", 1));
    write(&first, data);
    let n = walk.records.len() as u64;
    let next = SegmentHeader {
        store_id: STORE_ID,
        first_seq: n + 1,
        prev_hash: walk.last_hash,
    };
    let mut active = next.encode().to_vec();
    frame::encode(
        &mut active,
        n + 1,
        &walk.last_hash,
        b"the record after the fuzzed segment",
    );
    let second = dir.join(format!("{:020}.log", n + 1));
    if second == first {
        // The walk accepted nothing and the header says seq 1: both would be one file.
        return;
    }
    write(&second, &active);
    let audit = Audit::new(&dir, STORE_ID).run();
    match (walk.verdict, &audit) {
        (Verdict::Clean { .. }, Ok(r)) => assert_eq!((r.records, r.segments, r.torn_tail_bytes), (n + 1, 2, 0)),
        (Verdict::BadHeader, Err(AuditError::Failed(f))) => {
            assert_eq!((f.file.as_path(), f.offset), (first.as_path(), 0))
        }
        (Verdict::Torn { offset, .. } | Verdict::Bad { offset, .. }, Err(AuditError::Failed(f))) => {
            assert_eq!(
                (f.file.as_path(), f.offset, f.seq),
                (first.as_path(), offset as u64, n + 1),
                "{f}"
            );
        }
        (verdict, got) => panic!("audit of the sealed input gave {got:?}; the walk says {verdict:?}"),
    }
    let (read, failure) = read_all(LogReader::open(&dir, STORE_ID, 1));
    if walk.verdict != Verdict::BadHeader {
        assert_eq!(read.get(..walk.records.len()), Some(&walk.records[..]));
    }
    assert_eq!(
        failure.is_none(),
        audit.is_ok(),
        "reader: {failure:?}, audit: {audit:?}"
    );
}

fn assert_report(r: &AuditReport, n: u64, walk: &Walk, torn: u64) {
    assert_eq!((r.records, r.last_seq, r.torn_tail_bytes, r.segments), (n, n, torn, 1));
    assert_eq!(r.last_hash, walk.last_hash);
    assert_eq!(r.head, HeadCheck::NotChecked);
}

fn read_all(reader: Result<LogReader, LogError>) -> (Vec<Walked>, Option<LogError>) {
    let reader = reader.unwrap_or_else(|e| panic!("open reader: {e}"));
    let mut read = Vec::new();
    let mut failure = None;
    for item in reader {
        match item {
            Ok(r) => {
                assert!(failure.is_none(), "the reader yielded after an error");
                read.push(Walked {
                    seq: r.seq,
                    hash: r.hash,
                    payload: r.payload,
                });
            }
            Err(e) => {
                assert!(failure.is_none(), "two errors");
                failure = Some(e);
            }
        }
    }
    (read, failure)
}

fn write(path: &Path, data: &[u8]) {
    fs::write(path, data).unwrap_or_else(|e| panic!("write {}: {e}", path.display()));
}

/// The independent walk of a whole segment file that is the log's first segment.
fn walk(data: &[u8]) -> Walk {
    let genesis = genesis();
    let bad_header = Walk {
        verdict: Verdict::BadHeader,
        records: Vec::new(),
        last_hash: genesis,
    };
    if data.len() < 64
        || &data[..8] != b"credlog1"
        || data[8..24] != STORE_ID
        || data[24..32] != 1u64.to_le_bytes()
        || data[32..64] != genesis
    {
        return bad_header;
    }
    let mut records = Vec::new();
    let mut prev = genesis;
    let mut pos = 64;
    let verdict = loop {
        let rest = &data[pos..];
        let n = records.len() as u64;
        if rest.is_empty() {
            break Verdict::Clean { records: n };
        }
        let next_seq = n + 1;
        match frame_len(rest) {
            Ok(len) => {
                let body = &rest[8..8 + len];
                if body[..8] != next_seq.to_le_bytes() || body[8..40] != prev {
                    break Verdict::Bad {
                        records: n,
                        offset: pos,
                    };
                }
                prev = *blake3::hash(body).as_bytes();
                records.push(Walked {
                    seq: next_seq,
                    hash: prev,
                    payload: body[40..].to_vec(),
                });
                pos += 8 + len;
            }
            Err(incomplete) => {
                // The torn-tail rule of docs/DURABILITY.md: the failing frame reaches the end
                // of the file (or only zeros follow), and no valid frame with a sequence
                // number as high starts anywhere after it.
                let declared = u32::from_le_bytes([
                    rest[0],
                    *rest.get(1).unwrap_or(&0),
                    *rest.get(2).unwrap_or(&0),
                    *rest.get(3).unwrap_or(&0),
                ]) as usize;
                let reaches_end = incomplete || 8 + declared >= rest.len();
                let zeros = rest.iter().all(|&b| b == 0);
                let later = (1..rest.len()).any(|i| {
                    frame_len(&rest[i..]).is_ok_and(|_| {
                        u64::from_le_bytes(rest[i + 8..i + 16].try_into().unwrap_or_default()) >= next_seq
                    })
                });
                if (reaches_end || zeros) && !later {
                    break Verdict::Torn {
                        records: n,
                        offset: pos,
                    };
                }
                break Verdict::Bad {
                    records: n,
                    offset: pos,
                };
            }
        }
    };
    Walk {
        verdict,
        records,
        last_hash: prev,
    }
}

/// The body length of a valid frame at the start of `rest`, or whether the failure is
/// that the buffer ends inside the frame (`true`) rather than a bad length or CRC.
fn frame_len(rest: &[u8]) -> Result<usize, bool> {
    if rest.len() < 8 {
        return Err(true);
    }
    let len = u32::from_le_bytes([rest[0], rest[1], rest[2], rest[3]]) as usize;
    if !(40..=1 << 20).contains(&len) {
        return Err(false);
    }
    if rest.len() < 8 + len {
        return Err(true);
    }
    let crc = u32::from_le_bytes([rest[4], rest[5], rest[6], rest[7]]);
    if crc32c::crc32c(&rest[8..8 + len]) != crc {
        return Err(false);
    }
    Ok(len)
}
