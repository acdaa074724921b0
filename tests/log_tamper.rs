//! Tamper evidence of the event log (issue 5): `Audit` detects each kind of tampering and
//! names it at the right record (file, byte offset, sequence number), across many sealed
//! (memory-mapped) segments, with the MAC'd head checkpoint closing what the unkeyed chain
//! alone cannot: a tail cut off at a record boundary and a history rewritten end to end.

#![expect(
    clippy::unwrap_used,
    clippy::indexing_slicing,
    reason = "a test fails by panicking: unwrap, expect and indexing are its assertions"
)]

use std::fs;
use std::path::{Path, PathBuf};

use credstore::log::{
    Audit, AuditError, AuditFinding, AuditProblem, AuditReport, FrameError, Head, HeadCheck, HeadError, LogReader,
    LogWriter, SEGMENT_HEADER_LEN, SegmentTimes, frame, head_key, segments,
};
use credstore::{Event, EventKind, Pepper};

const ID: [u8; 16] = *b"tamper-store-one";
const OTHER: [u8; 16] = *b"tamper-store-two";
const RECORDS: u64 = 60;
const SEGMENT_SIZE: u64 = 640;

fn key() -> [u8; 32] {
    head_key(&Pepper::from_bytes([5; 32]))
}

/// Event `i`: a minute apart, all payloads the same length.
fn payload(i: u64, name: &str) -> Vec<u8> {
    Event {
        at: 1_767_225_600_000 + i as i64 * 60_000,
        kind: EventKind::PlanDeleted {
            name: format!("{name}-{i:04}"),
        },
    }
    .encode()
}

/// A log of `RECORDS` events of `store_id` in `dir`, committed three at a time, with its
/// head checkpointed (on drop).
fn write_log(dir: &Path, store_id: [u8; 16], name: &str) {
    fs::create_dir_all(dir).unwrap();
    let mut w = LogWriter::create(dir, store_id, SEGMENT_SIZE)
        .unwrap()
        .with_head_key(key());
    for i in 1..=RECORDS {
        w.append(&payload(i, name));
        if i % 3 == 0 {
            w.commit().unwrap();
        }
    }
    w.commit().unwrap();
}

struct Log {
    _tmp: tempfile::TempDir,
    dir: PathBuf,
}

fn fresh() -> Log {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path().join("log");
    write_log(&dir, ID, "plan");
    Log { _tmp: tmp, dir }
}

/// Where record `seq` is: its segment, byte offset and encoded length.
fn locate(dir: &Path, seq: u64) -> (PathBuf, usize, usize) {
    for s in segments(dir).unwrap() {
        let bytes = fs::read(&s.path).unwrap();
        let mut pos = SEGMENT_HEADER_LEN;
        while let Ok(f) = frame::decode(&bytes[pos..]) {
            if f.seq == seq {
                return (s.path, pos, f.encoded_len());
            }
            pos += f.encoded_len();
        }
    }
    panic!("record {seq} not found");
}

fn audit(dir: &Path) -> Result<AuditReport, AuditError> {
    Audit::new(dir, ID).head_key(key()).run()
}

#[track_caller]
fn finding(dir: &Path) -> AuditFinding {
    match audit(dir) {
        Err(AuditError::Failed(f)) => *f,
        other => panic!("expected a finding, got {other:?}"),
    }
}

#[track_caller]
fn assert_finding(dir: &Path, file: &Path, offset: usize, seq: u64, problem: AuditProblem) {
    let f = finding(dir);
    let expected = AuditFinding {
        file: file.to_path_buf(),
        offset: offset as u64,
        seq,
        problem,
    };
    assert_eq!(f, expected, "{f}");
}

fn edit(path: &Path, change: impl FnOnce(&mut Vec<u8>)) {
    let mut bytes = fs::read(path).unwrap();
    change(&mut bytes);
    fs::write(path, bytes).unwrap();
}

#[test]
fn an_intact_log_passes_across_many_sealed_segments() {
    let log = fresh();
    let listed = segments(&log.dir).unwrap();
    assert!(listed.len() >= 5, "{} segments", listed.len());
    let mut seen = Vec::new();
    let report = Audit::new(&log.dir, ID)
        .head_key(key())
        .progress(|done, total| seen.push((done, total)))
        .run()
        .unwrap();
    let total: u64 = listed.iter().map(|s| fs::metadata(&s.path).unwrap().len()).sum();
    assert_eq!(report.records, RECORDS);
    assert_eq!(report.last_seq, RECORDS);
    assert_eq!(report.bytes, total);
    assert_eq!(report.segments, listed.len());
    assert_eq!(report.torn_tail_bytes, 0);
    assert_eq!(
        report.head,
        HeadCheck::Verified {
            seq: RECORDS,
            uncovered: 0
        }
    );
    assert!(seen.windows(2).all(|w| w[0].0 <= w[1].0), "progress goes forward");
    assert_eq!(seen.last(), Some(&(total, total)));
    let unkeyed = Audit::new(&log.dir, ID).run().unwrap();
    assert_eq!(unkeyed.head, HeadCheck::NotChecked);
    assert_eq!(unkeyed.last_hash, report.last_hash);
    // The sealed segments are read through memory maps.
    let mut reader = LogReader::open(&log.dir, ID, 1).unwrap();
    assert_eq!(reader.by_ref().count() as u64, RECORDS);
    assert_eq!(reader.segments_mapped(), listed.len() - 1);
}

#[test]
fn a_flipped_byte_is_named_at_its_record() {
    // The first record, one in a sealed segment, and the very last one (which, without the
    // checkpoint, would pass for a torn write).
    for seq in [1, 25, RECORDS] {
        let log = fresh();
        let (segment, offset, len) = locate(&log.dir, seq);
        edit(&segment, |b| b[offset + len - 3] ^= 0x20);
        let problem = AuditProblem::Damaged(FrameError::BadCrc);
        assert_eq!(problem.name(), "damaged record (flipped byte)");
        assert_finding(&log.dir, &segment, offset, seq, problem);
    }
}

#[test]
fn a_deleted_record_is_named_at_its_place() {
    let log = fresh();
    let (segment, offset, len) = locate(&log.dir, 25);
    edit(&segment, |b| drop(b.drain(offset..offset + len)));
    assert_finding(
        &log.dir,
        &segment,
        offset,
        25,
        AuditProblem::Deleted { found: 26, missing: 1 },
    );

    // The last record of a sealed segment: the next segment's header shows the gap.
    let log = fresh();
    let second = &segments(&log.dir).unwrap()[1];
    let last_of_first = second.first_seq - 1;
    let (segment, offset, len) = locate(&log.dir, last_of_first);
    edit(&segment, |b| drop(b.drain(offset..offset + len)));
    assert_finding(
        &log.dir,
        &second.path,
        0,
        last_of_first,
        AuditProblem::Deleted {
            found: second.first_seq,
            missing: 1,
        },
    );
}

#[test]
fn a_reordered_pair_is_named_at_the_first_of_the_two() {
    let log = fresh();
    // Two neighbours in one segment.
    let k = (20..RECORDS)
        .find(|&k| locate(&log.dir, k).0 == locate(&log.dir, k + 1).0)
        .unwrap();
    let (segment, offset, len) = locate(&log.dir, k);
    let (_, next_offset, next_len) = locate(&log.dir, k + 1);
    assert_eq!(next_offset, offset + len);
    edit(&segment, |b| {
        let first = b[offset..offset + len].to_vec();
        let second = b[next_offset..next_offset + next_len].to_vec();
        b.splice(offset..next_offset + next_len, second.into_iter().chain(first));
    });
    let f = finding(&log.dir);
    assert_eq!(f.problem.name(), "reordered records");
    assert_finding(&log.dir, &segment, offset, k, AuditProblem::Reordered { found: k + 1 });
}

#[test]
fn a_record_spliced_from_another_store_is_named() {
    let other_tmp = tempfile::tempdir().unwrap();
    let other = other_tmp.path().join("log");
    write_log(&other, OTHER, "plan");

    // One record: the other store's record 30, well-formed, right sequence number.
    let log = fresh();
    let (segment, offset, len) = locate(&log.dir, 30);
    let (other_segment, other_offset, other_len) = locate(&other, 30);
    assert_eq!(len, other_len);
    let foreign = fs::read(&other_segment).unwrap()[other_offset..other_offset + len].to_vec();
    edit(&segment, |b| {
        b[offset..offset + len].copy_from_slice(&foreign);
    });
    assert_finding(&log.dir, &segment, offset, 30, AuditProblem::Spliced);

    // A whole segment of the other store.
    let log = fresh();
    let listed = segments(&log.dir).unwrap();
    let theirs = segments(&other).unwrap();
    assert_eq!(listed[2].first_seq, theirs[2].first_seq);
    fs::copy(&theirs[2].path, &listed[2].path).unwrap();
    assert_finding(
        &log.dir,
        &listed[2].path,
        0,
        listed[2].first_seq,
        AuditProblem::ForeignSegment,
    );

    // The other store's history under this store's id: it starts from another genesis.
    let log = fresh();
    let first = &segments(&log.dir).unwrap()[0].path;
    fs::copy(&theirs[0].path, first).unwrap();
    edit(first, |b| b[8..24].copy_from_slice(&ID));
    assert_finding(&log.dir, first, 0, 1, AuditProblem::ForeignGenesis);
}

#[test]
fn a_truncated_tail_is_named() {
    let checkpoint = AuditProblem::TruncatedTail { checkpoint: RECORDS };

    // Whole records cut off the end: the chain that is left is valid, the head is not met.
    let log = fresh();
    let (segment, offset, _) = locate(&log.dir, RECORDS - 1);
    edit(&segment, |b| b.truncate(offset));
    assert!(Audit::new(&log.dir, ID).run().is_ok(), "the chain alone cannot tell");
    assert_finding(&log.dir, &segment, offset, RECORDS - 1, checkpoint.clone());

    // Cut inside the last record.
    let log = fresh();
    let (segment, offset, len) = locate(&log.dir, RECORDS);
    edit(&segment, |b| b.truncate(offset + len / 2));
    assert_finding(&log.dir, &segment, offset, RECORDS, checkpoint.clone());

    // The whole last segment deleted.
    let log = fresh();
    let listed = segments(&log.dir).unwrap();
    let (last, before) = (listed.last().unwrap(), &listed[listed.len() - 2]);
    fs::remove_file(&last.path).unwrap();
    let end = fs::metadata(&before.path).unwrap().len() as usize;
    assert_finding(&log.dir, &before.path, end, last.first_seq, checkpoint);
}

#[test]
fn a_forged_missing_or_foreign_head_is_named() {
    let log = fresh();
    let head_file = log.dir.join("HEAD");
    let genuine = fs::read(&head_file).unwrap();
    let (head, _) = Head::decode_unverified(&genuine).unwrap();

    // Forged: a checkpoint MAC'd without the pepper.
    Head {
        seq: RECORDS - 5,
        ..head
    }
    .write(&log.dir, &head_key(&Pepper::from_bytes([6; 32])), false)
    .unwrap();
    let f = finding(&log.dir);
    assert_eq!(f.problem.name(), "forged head checkpoint");
    assert_finding(&log.dir, &head_file, 0, 0, AuditProblem::BadHead(HeadError::BadMac));

    // Another store's checkpoint.
    Head {
        store_id: OTHER,
        ..head
    }
    .write(&log.dir, &key(), false)
    .unwrap();
    assert_finding(&log.dir, &head_file, 0, 0, AuditProblem::BadHead(HeadError::Foreign));

    // Garbage.
    fs::write(&head_file, b"credhed1 but too short").unwrap();
    assert!(matches!(
        finding(&log.dir).problem,
        AuditProblem::BadHead(HeadError::Malformed(_))
    ));

    // Deleted, though the log has records.
    fs::remove_file(&head_file).unwrap();
    assert_finding(&log.dir, &head_file, 0, 0, AuditProblem::HeadMissing);

    // Put back: intact again.
    fs::write(&head_file, &genuine).unwrap();
    assert!(audit(&log.dir).is_ok());
}

#[test]
fn a_history_rewritten_end_to_end_is_caught_by_the_head() {
    // Someone with write access but without the pepper rebuilds the log with one event
    // changed, re-chaining every record after it (the chain hash is unkeyed) and writing
    // matching time indexes; only the checkpoint's MAC holds them back.
    let log = fresh();
    let forged_tmp = tempfile::tempdir().unwrap();
    let forged = forged_tmp.path().join("log");
    fs::create_dir_all(&forged).unwrap();
    let mut w = LogWriter::create(&forged, ID, SEGMENT_SIZE).unwrap();
    for i in 1..=RECORDS {
        w.append(&payload(i, if i == 10 { "ALTR" } else { "plan" }));
        if i % 3 == 0 {
            w.commit().unwrap();
        }
    }
    w.commit().unwrap();
    drop(w);
    for entry in fs::read_dir(&forged).unwrap() {
        let path = entry.unwrap().path();
        fs::copy(&path, log.dir.join(path.file_name().unwrap())).unwrap();
    }
    assert!(Audit::new(&log.dir, ID).run().is_ok(), "the chain alone cannot tell");
    let (segment, offset, _) = locate(&log.dir, RECORDS);
    let f = finding(&log.dir);
    assert_eq!(f.problem.name(), "rewritten history");
    assert_finding(&log.dir, &segment, offset, RECORDS, AuditProblem::Rewritten);
}

#[test]
fn a_tampered_time_index_is_named() {
    let log = fresh();
    let listed = segments(&log.dir).unwrap();
    let times = listed[1].times.unwrap();
    // A valid sidecar claiming later times would hide the segment's events from queries.
    let lie = SegmentTimes {
        min_at: times.max_at + 1,
        max_at: times.max_at + 1,
        ..times
    };
    let sidecar = log.dir.join(format!("{:020}.idx", times.first_seq));
    fs::write(&sidecar, lie.encode()).unwrap();
    let f = finding(&log.dir);
    assert_eq!(
        (f.file.as_path(), f.offset, f.seq),
        (sidecar.as_path(), 0, times.first_seq)
    );
    assert!(matches!(f.problem, AuditProblem::TimeIndex(_)), "{f}");
    // A torn one (as a crash may leave it: sidecars are not fsync'd) is no finding.
    fs::write(&sidecar, &lie.encode()[..30]).unwrap();
    assert!(audit(&log.dir).is_ok());
}

#[test]
fn the_hook_sees_every_record_in_order_and_its_refusal_is_named() {
    let log = fresh();
    let mut seen = Vec::new();
    let result = Audit::new(&log.dir, ID)
        .head_key(key())
        .inspect(|seq, payload| {
            seen.push(seq);
            let event = Event::decode(payload)?;
            match &event.kind {
                EventKind::PlanDeleted { name } if name.ends_with("-0033") => Err(format!("{name} was never created")),
                _ => Ok(()),
            }
        })
        .run();
    assert_eq!(seen, (1..=33).collect::<Vec<_>>());
    let Err(AuditError::Failed(f)) = result else {
        panic!("the hook's refusal fails the audit");
    };
    let (segment, offset, _) = locate(&log.dir, 33);
    assert_eq!(
        *f,
        AuditFinding {
            file: segment,
            offset: offset as u64,
            seq: 33,
            problem: AuditProblem::Rejected("plan-0033 was never created".into()),
        }
    );
}

#[test]
fn an_unfinished_write_after_the_checkpoint_is_crash_debris_not_damage() {
    let log = fresh();
    let last = segments(&log.dir).unwrap().pop().unwrap().path;
    // Half a record after the last one: a batch cut short by a crash.
    let mut extra = Vec::new();
    frame::encode(&mut extra, RECORDS + 1, &[0; 32], &payload(RECORDS + 1, "plan"));
    edit(&last, |b| b.extend_from_slice(&extra[..extra.len() / 2]));
    let report = audit(&log.dir).unwrap();
    assert_eq!(report.torn_tail_bytes, (extra.len() / 2) as u64);
    assert_eq!(report.records, RECORDS);
}
