//! The properties the `log_meta` target defends, shared word for word by the target
//! (`fuzz/fuzz_targets/log_meta.rs`, via `#[path]`) and by `tests/fuzz_corpus.rs`, which
//! runs every seed in `fuzz/corpus/log_meta/` through them.
//!
//! The files beside the log and its records, each read on every open: an input is a
//! selector byte and a whole file.
//!
//! | byte | file | read by |
//! | --- | --- | --- |
//! | `H` | `DATA/log/HEAD`, the MAC'd head checkpoint | `Head::decode`, `Audit`, `LogWriter::with_head_key` |
//! | `I` | `DATA/log/{first_seq:020}.idx`, a sealed segment's time index | `SegmentTimes::decode`, `segments`, `Audit`, `LogReader::open_range`, `LogWriter::open` |
//! | `S` | `DATA/STORE`, the store marker | `Store::open` |
//!
//! (Any other byte picks one by its value modulo 3, which is what `H`, `I` and `S` are.)
//!
//! Each file is decoded exactly as an independent reading of its format
//! (`docs/FORMAT.md`, the module docs) says, with the MAC and CRC recomputed here with
//! `blake3` and `crc32c`; a decoded file encodes back to its bytes when it is canonical.
//! Then it is put in a scratch copy of a real log (two segments, five records, written by
//! `LogWriter`), and the audit, the writer and the reader must come to the verdict the
//! format implies: a head checkpoint is verified only if its MAC, store and chain hash are
//! right and it is not ahead of the log, and the writer names the same conflict as the
//! audit; a time index that lies is reported by the audit, is trusted by a time-range read
//! exactly when it is valid and its length matches the segment, and is kept or rewritten
//! by `LogWriter::open` by the same rule. A random file almost never carries a right MAC or
//! CRC, so each input is also tried repaired (re-MAC'd, its CRC recomputed, its fields
//! pointed at the fixture). A store marker opens exactly when its version, store id and
//! pepper check read right, and no error shows the pepper.

#![expect(
    clippy::indexing_slicing,
    reason = "a fuzz check reports a finding by panicking, as libFuzzer expects"
)]
#![allow(dead_code)]

use std::fs;
use std::path::{Path, PathBuf};

use credstore::log::head::{HEAD_LEN, head_key_from_bytes, head_path};
use credstore::log::timeindex::TIME_INDEX_LEN;
use credstore::log::{
    Audit, AuditError, AuditProblem, AuditReport, Head, HeadCheck, HeadError, LogReader, LogWriter, SEGMENT_HEADER_LEN,
    SegmentTimes, genesis_hash, segments,
};
use credstore::{Config, Error, Event, EventKind, OpenError, Pepper, Store};

/// The fixture log's store id.
pub const STORE_ID: [u8; 16] = *b"credstore-meta-f";
/// The fixture store's pepper.
pub const PEPPER: [u8; 32] = [0x5a; 32];
/// The event times of the fixture's records 1 to 5: segment 1 holds 1 to 3, segment 2
/// holds 4 and 5. Not in order: a time index keeps the minimum and maximum.
pub const TIMES: [i64; 5] = [1_000, 3_000, 2_000, 5_000, 4_000];
/// The segment size the fixture is written with: records 1 to 3 fit the first segment,
/// the next batch rolls to the second.
const SEGMENT_SIZE: u64 = SEGMENT_HEADER_LEN as u64 + 1;

/// Which file an input is.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum MetaInput {
    Head,
    TimeIndex,
    StoreMarker,
}

impl MetaInput {
    /// The file a selector byte picks: its value modulo 3 (`H`, `I`, `S`: 0, 1, 2).
    pub fn from_selector(byte: u8) -> MetaInput {
        match byte % 3 {
            0 => MetaInput::Head,
            1 => MetaInput::TimeIndex,
            _ => MetaInput::StoreMarker,
        }
    }
}

/// A record of the fixture log.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FixtureRecord {
    pub seq: u64,
    pub hash: [u8; 32],
    pub at: i64,
}

/// A scratch directory and the fixture it is reset to for every input.
pub struct Scratch {
    dir: tempfile::TempDir,
    /// The fixture log's files, by name.
    log_files: Vec<(String, Vec<u8>)>,
    /// The fixture's records, oldest first.
    pub records: Vec<FixtureRecord>,
    /// The first segment's true time index.
    pub truth: SegmentTimes,
    /// The first segment's length.
    pub sealed_len: u64,
}

impl Scratch {
    /// Writes the fixture log (in `/dev/shm` when there is one) and reads it back.
    pub fn new() -> Self {
        let shm = Path::new("/dev/shm");
        let dir = match tempfile::Builder::new().prefix("credstore-meta-").tempdir_in(shm) {
            Ok(dir) if shm.is_dir() => dir,
            _ => tempfile::tempdir().unwrap_or_else(|e| panic!("temp dir: {e}")),
        };
        let log = dir.path().join("fixture");
        fs::create_dir_all(&log).unwrap_or_else(|e| panic!("{e}"));
        let key = head_key_from_bytes(&PEPPER);
        let mut writer = LogWriter::create(&log, STORE_ID, SEGMENT_SIZE)
            .unwrap_or_else(|e| panic!("create the fixture log: {e}"))
            .with_head_key(key);
        for batch in [&TIMES[..3], &TIMES[3..]] {
            for (i, &at) in batch.iter().enumerate() {
                let kind = EventKind::PlanDeleted {
                    name: format!("plan-{i}"),
                };
                writer.append(&Event { at, kind }.encode());
            }
            writer.commit().unwrap_or_else(|e| panic!("commit the fixture: {e}"));
        }
        writer.checkpoint_head().unwrap_or_else(|e| panic!("checkpoint: {e}"));
        drop(writer);
        let mut log_files: Vec<(String, Vec<u8>)> = fs::read_dir(&log)
            .unwrap_or_else(|e| panic!("{e}"))
            .map(|entry| {
                let path = entry.unwrap_or_else(|e| panic!("{e}")).path();
                let name = path.file_name().unwrap_or_default().to_string_lossy().into_owned();
                (name, fs::read(&path).unwrap_or_else(|e| panic!("{e}")))
            })
            .collect();
        log_files.sort();
        let records: Vec<FixtureRecord> = LogReader::open(&log, STORE_ID, 1)
            .unwrap_or_else(|e| panic!("{e}"))
            .zip(TIMES)
            .map(|(record, at)| {
                let record = record.unwrap_or_else(|e| panic!("read the fixture: {e}"));
                FixtureRecord {
                    seq: record.seq,
                    hash: record.hash,
                    at,
                }
            })
            .collect();
        assert_eq!(records.len(), TIMES.len(), "the fixture lost records");
        let file = |name: &str| {
            log_files
                .iter()
                .find(|(n, _)| n == name)
                .map(|(_, b)| b.clone())
                .unwrap_or_else(|| panic!("the fixture has no {name}: {log_files:?}"))
        };
        let truth = SegmentTimes::decode(&file(&idx_name(1))).unwrap_or_else(|| panic!("the fixture's index"));
        let sealed_len = file(&segment_name(1)).len() as u64;
        assert!(file(&segment_name(4)).len() > SEGMENT_HEADER_LEN, "no second segment");
        // The reference reads the marker `init` writes.
        let store = dir.path().join("store");
        Store::init(&store, Config::new().pepper(Pepper::from_bytes(PEPPER)))
            .and_then(Store::close)
            .unwrap_or_else(|e| panic!("init a store: {e}"));
        let store_marker = fs::read_to_string(store.join("STORE")).unwrap_or_else(|e| panic!("{e}"));
        match reference_marker(store_marker.as_bytes()) {
            Marker::Read { store_id, pepper_check } => {
                assert_eq!(pepper_check, reference_pepper_check(&store_id), "init's pepper check");
            }
            other => panic!("init wrote {store_marker:?}, the reference reads {other:?}"),
        }
        fs::remove_dir_all(&log).unwrap_or_else(|e| panic!("{e}"));
        fs::remove_dir_all(&store).unwrap_or_else(|e| panic!("{e}"));
        Scratch {
            dir,
            log_files,
            records,
            truth,
            sealed_len,
        }
    }

    /// The fixture's file `name`.
    pub fn fixture_file(&self, name: &str) -> Vec<u8> {
        self.log_files
            .iter()
            .find(|(n, _)| n == name)
            .map(|(_, b)| b.clone())
            .unwrap_or_default()
    }

    /// The scratch log directory, reset to the fixture with `name` replaced by `bytes`.
    fn log_with(&self, name: &str, bytes: &[u8]) -> PathBuf {
        let log = self.dir.path().join("log");
        let _ = fs::remove_dir_all(&log);
        fs::create_dir_all(&log).unwrap_or_else(|e| panic!("{e}"));
        for (n, b) in &self.log_files {
            if n != name {
                fs::write(log.join(n), b).unwrap_or_else(|e| panic!("{e}"));
            }
        }
        fs::write(log.join(name), bytes).unwrap_or_else(|e| panic!("{e}"));
        log
    }

    fn last_seq(&self) -> u64 {
        self.records.len() as u64
    }
}

impl Default for Scratch {
    fn default() -> Self {
        Scratch::new()
    }
}

/// A segment's file name.
pub fn segment_name(first_seq: u64) -> String {
    format!("{first_seq:020}.log")
}

/// A time index's file name.
pub fn idx_name(first_seq: u64) -> String {
    format!("{first_seq:020}.idx")
}

/// Every check on one input (see the module docs). Returns whether the file, as given,
/// was accepted: a head the audit verifies, a time index the log uses, a marker that
/// opens.
pub fn check_meta_input(scratch: &Scratch, data: &[u8]) -> bool {
    let Some((&selector, file)) = data.split_first() else {
        return false;
    };
    match MetaInput::from_selector(selector) {
        MetaInput::Head => check_head_file(scratch, file),
        MetaInput::TimeIndex => check_time_index_file(scratch, file),
        MetaInput::StoreMarker => check_store_marker(scratch, file),
    }
}

// ---------------------------------------------------------------------------------------
// HEAD

/// What `HEAD` holds by the format: `credhed1`, store id, seq (LE), hash, MAC.
struct RefHead {
    store_id: [u8; 16],
    seq: u64,
    hash: [u8; 32],
    mac: [u8; 32],
}

fn reference_head(bytes: &[u8]) -> Option<RefHead> {
    if bytes.len() != HEAD_LEN || &bytes[..8] != b"credhed1" {
        return None;
    }
    let mut head = RefHead {
        store_id: [0; 16],
        seq: 0,
        hash: [0; 32],
        mac: [0; 32],
    };
    head.store_id.copy_from_slice(&bytes[8..24]);
    head.seq = u64::from_le_bytes(bytes[24..32].try_into().unwrap_or_default());
    head.hash.copy_from_slice(&bytes[32..64]);
    head.mac.copy_from_slice(&bytes[64..96]);
    Some(head)
}

/// The MAC of a checkpoint: keyed BLAKE3 of store id, seq (LE) and hash.
fn reference_mac(key: &[u8; 32], store_id: &[u8; 16], seq: u64, hash: &[u8; 32]) -> [u8; 32] {
    let mut h = blake3::Hasher::new_keyed(key);
    h.update(store_id);
    h.update(&seq.to_le_bytes());
    h.update(hash);
    *h.finalize().as_bytes()
}

/// What the audit and the writer must say of a `HEAD` file in the fixture log.
#[derive(Debug, Clone, PartialEq, Eq)]
enum HeadVerdict {
    Verified { seq: u64 },
    Bad(AuditProblem),
}

fn check_head_file(scratch: &Scratch, bytes: &[u8]) -> bool {
    let verdict = check_head_bytes(scratch, bytes);
    // Repaired: MAC'd with the right key, then also given the fixture's hash for its seq.
    let mut fields = [0u8; HEAD_LEN];
    fields.iter_mut().zip(bytes).for_each(|(slot, b)| *slot = *b);
    let store_id: [u8; 16] = if bytes.len() >= 24 {
        fields[8..24].try_into().unwrap_or_default()
    } else {
        STORE_ID
    };
    let seq = u64::from_le_bytes(fields[24..32].try_into().unwrap_or_default());
    let hash: [u8; 32] = fields[32..64].try_into().unwrap_or_default();
    let key = head_key_from_bytes(&PEPPER);
    check_head_bytes(scratch, &Head { store_id, seq, hash }.encode(&key));
    let true_hash = match seq {
        0 => Some(genesis_hash(&STORE_ID)),
        _ => scratch.records.iter().find(|r| r.seq == seq).map(|r| r.hash),
    };
    if let Some(hash) = true_hash {
        let head = Head { store_id, seq, hash }.encode(&key);
        let repaired = check_head_bytes(scratch, &head);
        if store_id == STORE_ID {
            assert_eq!(
                repaired,
                HeadVerdict::Verified { seq },
                "a true checkpoint of record {seq}"
            );
        }
    }
    matches!(verdict, HeadVerdict::Verified { .. })
}

fn check_head_bytes(scratch: &Scratch, bytes: &[u8]) -> HeadVerdict {
    let key = head_key_from_bytes(&PEPPER);
    let reference = reference_head(bytes);
    // The decoders, against the format.
    let decoded = Head::decode_unverified(bytes);
    let expected = match (&reference, decoded) {
        (None, Err(HeadError::Malformed(_))) => Err(HeadError::Malformed("")),
        (Some(r), Ok((head, mac))) => {
            assert_eq!(
                (head.store_id, head.seq, head.hash, mac),
                (r.store_id, r.seq, r.hash, r.mac)
            );
            let right_mac = reference_mac(&key, &r.store_id, r.seq, &r.hash);
            assert_eq!(head.mac(&key), right_mac, "Head::mac is not keyed BLAKE3 of the fields");
            assert_eq!(head.encode(&key)[..64], bytes[..64], "encode moved a field");
            assert_eq!(
                head.encode(&key) == bytes,
                right_mac == r.mac,
                "encode vs the MAC carried"
            );
            if r.store_id != STORE_ID {
                Err(HeadError::Foreign)
            } else if right_mac != r.mac {
                Err(HeadError::BadMac)
            } else {
                Ok(head)
            }
        }
        (r, got) => panic!("decode_unverified gave {got:?}; the format says {}", r.is_some()),
    };
    match (Head::decode(bytes, &STORE_ID, &key), &expected) {
        (Err(HeadError::Malformed(_)), Err(HeadError::Malformed(_))) => {}
        (got, want) => assert_eq!(&got, want, "Head::decode"),
    }
    // The verdict the fixture log implies.
    let last = scratch.last_seq();
    let verdict = match expected {
        Err(e) => HeadVerdict::Bad(AuditProblem::BadHead(e)),
        Ok(h) if h.seq > last => HeadVerdict::Bad(AuditProblem::TruncatedTail { checkpoint: h.seq }),
        Ok(h) => {
            let hash = match h.seq {
                0 => genesis_hash(&STORE_ID),
                seq => scratch.records[seq as usize - 1].hash,
            };
            if hash == h.hash {
                HeadVerdict::Verified { seq: h.seq }
            } else {
                HeadVerdict::Bad(AuditProblem::Rewritten)
            }
        }
    };
    let log = scratch.log_with("HEAD", bytes);
    // The audit.
    match (Audit::new(&log, STORE_ID).head_key(key).run(), &verdict) {
        (Ok(report), HeadVerdict::Verified { seq }) => {
            let want = HeadCheck::Verified {
                seq: *seq,
                uncovered: last - seq,
            };
            assert_eq!(report.head, want, "audit of {bytes:02x?}");
            check_report(scratch, &report);
        }
        (Err(AuditError::Failed(finding)), HeadVerdict::Bad(problem)) => {
            match (&finding.problem, problem) {
                (AuditProblem::BadHead(HeadError::Malformed(_)), AuditProblem::BadHead(HeadError::Malformed(_))) => {}
                (got, want) => assert_eq!(got, want, "audit of {bytes:02x?}"),
            }
            let file_name = finding
                .file
                .file_name()
                .unwrap_or_default()
                .to_string_lossy()
                .into_owned();
            match problem {
                AuditProblem::BadHead(_) => assert_eq!(finding.file, head_path(&log)),
                AuditProblem::TruncatedTail { .. } => assert_eq!(file_name, segment_name(4)),
                _ => {}
            }
        }
        (got, want) => panic!("audit gave {got:?}, the checkpoint is {want:?}"),
    }
    // The writer names the same conflict, or none.
    let (writer, _) = LogWriter::open(&log, STORE_ID, SEGMENT_SIZE, 0).unwrap_or_else(|e| panic!("open: {e}"));
    assert_eq!(writer.durable_seq(), last, "the writer lost records");
    let writer = writer.with_head_key(key);
    match (writer.head_conflict(), &verdict) {
        (None, HeadVerdict::Verified { .. }) => {}
        (
            Some(AuditProblem::BadHead(HeadError::Malformed(_))),
            HeadVerdict::Bad(AuditProblem::BadHead(HeadError::Malformed(_))),
        ) => {}
        (Some(got), HeadVerdict::Bad(want)) => assert_eq!(got, want, "the writer's conflict"),
        (got, want) => panic!("the writer's conflict is {got:?}, the checkpoint {want:?}"),
    }
    let conflict = writer.head_conflict().is_some();
    drop(writer);
    // A conflicting checkpoint is evidence: the writer never overwrites it.
    if conflict {
        assert_eq!(
            fs::read(head_path(&log)).ok().as_deref(),
            Some(bytes),
            "the writer replaced a bad HEAD"
        );
    }
    verdict
}

/// What every passing audit of the fixture must report.
fn check_report(scratch: &Scratch, report: &AuditReport) {
    assert_eq!(report.records, scratch.last_seq());
    assert_eq!(report.last_seq, scratch.last_seq());
    assert_eq!(Some(&report.last_hash), scratch.records.last().map(|r| &r.hash));
    assert_eq!(report.segments, 2);
    assert_eq!(report.torn_tail_bytes, 0);
}

// ---------------------------------------------------------------------------------------
// Time index

/// A sidecar by the format: `credidx1`, first seq, last seq, min and max time, length,
/// flags (bit 0: all timed), 8 bytes reserved, CRC32C of the 60 before it.
fn reference_index(bytes: &[u8]) -> Option<SegmentTimes> {
    if bytes.len() != TIME_INDEX_LEN || &bytes[..8] != b"credidx1" {
        return None;
    }
    let word = |at: usize| u64::from_le_bytes(bytes[at..at + 8].try_into().unwrap_or_default());
    let crc = u32::from_le_bytes(bytes[60..64].try_into().unwrap_or_default());
    if crc32c::crc32c(&bytes[..60]) != crc {
        return None;
    }
    Some(SegmentTimes {
        first_seq: word(8),
        last_seq: word(16),
        min_at: word(24) as i64,
        max_at: word(32) as i64,
        len: word(40),
        all_timed: bytes[48] & 1 == 1,
    })
}

/// Whether a segment with these times may hold an event in `since..until`, by the docs.
fn reference_overlap(t: &SegmentTimes, since: Option<i64>, until: Option<i64>) -> bool {
    if !t.all_timed {
        return true;
    }
    t.last_seq >= t.first_seq && since.is_none_or(|s| t.max_at >= s) && until.is_none_or(|u| t.min_at < u)
}

fn check_time_index_file(scratch: &Scratch, bytes: &[u8]) -> bool {
    let used = check_time_index_bytes(scratch, bytes);
    // Repaired: the magic and CRC made right; then also pointed at the first segment with
    // its length, so that the log trusts it.
    let mut fixed = [0u8; TIME_INDEX_LEN];
    fixed.iter_mut().zip(bytes).for_each(|(slot, b)| *slot = *b);
    fixed[..8].copy_from_slice(b"credidx1");
    let with_crc = |mut b: [u8; TIME_INDEX_LEN]| {
        let crc = crc32c::crc32c(&b[..60]);
        b[60..].copy_from_slice(&crc.to_le_bytes());
        b
    };
    check_time_index_bytes(scratch, &with_crc(fixed));
    fixed[8..16].copy_from_slice(&1u64.to_le_bytes());
    fixed[40..48].copy_from_slice(&scratch.sealed_len.to_le_bytes());
    assert!(
        check_time_index_bytes(scratch, &with_crc(fixed)),
        "a valid index of the right length unused"
    );
    used
}

/// Checks one sidecar; returns whether the log uses it (valid, of the first segment).
fn check_time_index_bytes(scratch: &Scratch, bytes: &[u8]) -> bool {
    let reference = reference_index(bytes);
    let decoded = SegmentTimes::decode(bytes);
    assert_eq!(decoded, reference, "SegmentTimes::decode of {bytes:02x?}");
    if let Some(t) = decoded {
        assert_eq!(
            SegmentTimes::decode(&t.encode()),
            Some(t),
            "encode does not decode back"
        );
        let canonical = bytes[48..52] == u32::from(t.all_timed).to_le_bytes() && bytes[52..60] == [0; 8];
        assert_eq!(t.encode() == bytes, canonical, "encode vs the bytes");
        let bounds = [None, Some(i64::MIN), Some(i64::MAX), Some(t.min_at), Some(t.max_at)]
            .into_iter()
            .chain([t.min_at.checked_sub(1), t.max_at.checked_add(1)].map(|b| b.or(Some(0))));
        let bounds: Vec<Option<i64>> = bounds.collect();
        for &since in &bounds {
            for &until in &bounds {
                assert_eq!(
                    t.may_overlap(since, until),
                    reference_overlap(&t, since, until),
                    "{t:?} in {since:?}..{until:?}"
                );
            }
        }
    }
    let stored = decoded.filter(|t| t.first_seq == 1);
    let trusted = stored.filter(|t| t.len == scratch.sealed_len);
    let name = idx_name(1);
    let log = scratch.log_with(&name, bytes);
    // The segment listing.
    let listed = segments(&log).unwrap_or_else(|e| panic!("segments: {e}"));
    assert_eq!(listed.len(), 2);
    assert_eq!(
        (listed[0].first_seq, listed[0].sealed, listed[1].sealed),
        (1, true, false)
    );
    assert_eq!(listed[0].times, stored, "the listing's time index");
    assert_eq!(listed[1].times, None);
    // The audit: a valid index of the segment that is not the truth is reported.
    let audit = Audit::new(&log, STORE_ID).head_key(head_key_from_bytes(&PEPPER)).run();
    match audit {
        Ok(report) => {
            assert!(
                stored.is_none_or(|t| t == scratch.truth),
                "the audit passed a lying index {stored:?}"
            );
            check_report(scratch, &report);
        }
        Err(AuditError::Failed(finding)) => {
            assert!(
                matches!(finding.problem, AuditProblem::TimeIndex(_)),
                "audit: {finding}"
            );
            assert!(
                stored.is_some_and(|t| t != scratch.truth),
                "the audit refused {stored:?}: {finding}"
            );
            assert_eq!(finding.file, log.join(&name));
        }
        Err(e) => panic!("audit: {e}"),
    }
    // Time-range reads skip the first segment exactly when a trusted index says so.
    let ranges = [
        (None, None),
        (Some(2_000), None),
        (None, Some(2_500)),
        (Some(3_500), Some(4_500)),
        (Some(0), Some(10_000)),
        (trusted.map_or(Some(0), |t| Some(t.min_at)), trusted.map(|t| t.max_at)),
    ];
    for (since, until) in ranges {
        let ranged = since.is_some() || until.is_some();
        let skip = ranged && trusted.is_some_and(|t| !reference_overlap(&t, since, until));
        let reader = LogReader::open_range(&log, STORE_ID, since, until).unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(
            reader.segments_planned(),
            if skip { 1 } else { 2 },
            "{since:?}..{until:?}"
        );
        let read: Vec<u64> = reader
            .map(|r| r.unwrap_or_else(|e| panic!("range {since:?}..{until:?}: {e}")).seq)
            .collect();
        let want: Vec<u64> = scratch
            .records
            .iter()
            .filter(|r| !(skip && r.seq <= 3))
            .filter(|r| since.is_none_or(|s| r.at >= s) && until.is_none_or(|u| r.at < u))
            .map(|r| r.seq)
            .collect();
        assert_eq!(read, want, "records in {since:?}..{until:?}");
    }
    // Opening the log keeps a trusted index and writes a true one over any other.
    let (writer, _) = LogWriter::open(&log, STORE_ID, SEGMENT_SIZE, 0).unwrap_or_else(|e| panic!("open: {e}"));
    drop(writer);
    assert_eq!(
        SegmentTimes::read(&log, 1),
        Some(trusted.unwrap_or(scratch.truth)),
        "the index after opening the log"
    );
    trusted.is_some()
}

// ---------------------------------------------------------------------------------------
// STORE

/// What `Store::open` must say of a marker, the pepper check aside.
#[derive(Debug, Clone, PartialEq, Eq)]
enum Marker {
    NotText,
    Damaged,
    Version(u32),
    Read { store_id: [u8; 16], pepper_check: [u8; 32] },
}

/// The marker by its format: `credstore-store 1`, `store_id <32 hex>`,
/// `pepper_check <64 hex>`, one a line (spaces around a value allowed; what follows the
/// three lines is not read).
fn reference_marker(bytes: &[u8]) -> Marker {
    let Ok(text) = std::str::from_utf8(bytes) else {
        return Marker::NotText;
    };
    let mut lines = text.lines();
    let version = lines
        .next()
        .and_then(|l| l.strip_prefix("credstore-store "))
        .and_then(|v| v.trim().parse::<u32>().ok());
    let Some(version) = version else {
        return Marker::Damaged;
    };
    if version != 1 {
        return Marker::Version(version);
    }
    let digit = |c: u8| match c {
        b'0'..=b'9' => Some(c - b'0'),
        b'a'..=b'f' => Some(c - b'a' + 10),
        b'A'..=b'F' => Some(c - b'A' + 10),
        _ => None,
    };
    let mut field = |name: &str, out: &mut [u8]| -> Option<()> {
        let value = lines.next()?.strip_prefix(name)?.trim().as_bytes();
        (value.len() == out.len() * 2).then_some(())?;
        for (slot, pair) in out.iter_mut().zip(value.chunks(2)) {
            *slot = (digit(pair[0])? << 4) | digit(pair[1])?;
        }
        Some(())
    };
    let mut store_id = [0u8; 16];
    let mut pepper_check = [0u8; 32];
    if field("store_id ", &mut store_id).is_none() || field("pepper_check ", &mut pepper_check).is_none() {
        return Marker::Damaged;
    }
    Marker::Read { store_id, pepper_check }
}

/// A marker as `init` writes it, for `store_id` and the fixture's pepper.
pub fn marker_text(store_id: &[u8; 16]) -> String {
    let hex = |bytes: &[u8]| bytes.iter().map(|b| format!("{b:02x}")).collect::<String>();
    format!(
        "credstore-store 1\nstore_id {}\npepper_check {}\n",
        hex(store_id),
        hex(&reference_pepper_check(store_id))
    )
}

/// The pepper check of a store: keyed BLAKE3 (the pepper) of the context and store id.
fn reference_pepper_check(store_id: &[u8; 16]) -> [u8; 32] {
    let mut h = blake3::Hasher::new_keyed(&PEPPER);
    h.update(b"credstore pepper check v1");
    h.update(store_id);
    *h.finalize().as_bytes()
}

fn check_store_marker(scratch: &Scratch, bytes: &[u8]) -> bool {
    let opened = check_marker_bytes(scratch, bytes);
    // Repaired: the pepper check made right for the store id the marker names.
    if let (Ok(text), Marker::Read { store_id, .. }) = (std::str::from_utf8(bytes), reference_marker(bytes)) {
        let mut lines: Vec<String> = text.lines().map(str::to_string).collect();
        let check: String = reference_pepper_check(&store_id)
            .iter()
            .map(|b| format!("{b:02x}"))
            .collect();
        lines[2] = format!("pepper_check {check}");
        assert!(
            check_marker_bytes(scratch, lines.join("\n").as_bytes()),
            "a right pepper check refused"
        );
    }
    opened
}

/// Opens a store whose `STORE` is `bytes` (and whose `index` is a plain file, so that an
/// open that gets past the marker and the pepper stops right there); returns whether it
/// got past them.
fn check_marker_bytes(scratch: &Scratch, bytes: &[u8]) -> bool {
    let data = scratch.dir.path().join("data");
    let _ = fs::remove_dir_all(&data);
    fs::create_dir_all(&data).unwrap_or_else(|e| panic!("{e}"));
    fs::write(data.join("STORE"), bytes).unwrap_or_else(|e| panic!("{e}"));
    fs::write(data.join("index"), b"not a directory").unwrap_or_else(|e| panic!("{e}"));
    let config = Config::new().pepper(Pepper::from_bytes(PEPPER));
    let error = match Store::open(&data, config) {
        Ok(_) => panic!("a store opened with a file for an index"),
        Err(e) => e,
    };
    let shown = format!("{error} {error:?}");
    let pepper_hex: String = PEPPER.iter().map(|b| format!("{b:02x}")).collect();
    assert!(!shown.contains(&pepper_hex), "an open error shows the pepper: {shown}");
    let marker = reference_marker(bytes);
    match (&marker, &error) {
        (Marker::NotText, Error::Io { .. }) => false,
        (Marker::Damaged, Error::Open(OpenError::Damaged(path))) => {
            assert_eq!(path, &data.join("STORE"));
            false
        }
        (Marker::Version(v), Error::Open(OpenError::UnsupportedVersion { found, supported })) => {
            assert_eq!((found, supported), (v, &1));
            false
        }
        (Marker::Read { store_id, pepper_check }, error) => {
            let right = reference_pepper_check(store_id) == *pepper_check;
            match error {
                Error::Open(OpenError::WrongPepper) => assert!(!right, "a right pepper check refused"),
                Error::Index(_) | Error::Io { .. } => assert!(right, "a wrong pepper check passed: {error}"),
                other => panic!("marker {marker:?}: {other}"),
            }
            right
        }
        (marker, error) => panic!("marker {marker:?}, yet {error}"),
    }
}
