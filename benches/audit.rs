//! The event log's throughput against DESIGN.md's target (log verification: at least
//! 300 MB/s) and issue 5 (append throughput with batching).
//!
//! - `audit/full`: `log::Audit` with the head key over a 64 MiB log in 8 MiB segments (seven
//!   sealed, memory-mapped; the active one read): headers, framing, CRC32C, sequence
//!   numbers, BLAKE3 chain links, time index sidecars and the MAC'd head checkpoint.
//! - `audit/read_all`: `LogReader` over the same log, oldest first (what `Store::verify_log`
//!   and `rebuild` do before decoding events).
//! - `audit/range`: `LogReader::open_range` for one hour in the middle of the log's time
//!   span: the time index lets it open one segment (and the active one) of eight.
//! - `append/batch/{1,64,1024}`: events appended and committed (one `write` and one
//!   `fdatasync` per batch) per second, with the head checkpointed at the default interval.
//! - `append/head_checkpoint`: one head checkpoint (96-byte write, fsync, rename), the
//!   extra cost a commit pays when a checkpoint is due.
//!
//! Every benchmark checks the outcome it measures before measuring it. Figures are in
//! `docs/PERFORMANCE.md`.

#![expect(
    clippy::unwrap_used,
    reason = "a benchmark's setup has no caller to return an error to: it panics on failure"
)]
#![expect(missing_docs, reason = "criterion_group! defines an undocumented public function")]

use std::hint::black_box;
use std::path::Path;
use std::time::Duration;

use credstore::log::{Audit, HeadCheck, LogReader, LogWriter, head_key};
use credstore::{Event, EventKind, KeyId, Pepper};
use criterion::{BatchSize, Criterion, Throughput, criterion_group, criterion_main};

const STORE_ID: [u8; 16] = *b"credstore-bench!";
const LOG_BYTES: u64 = 64 << 20;
const SEGMENT_SIZE: u64 = 8 << 20;
const T0: i64 = 1_767_225_600_000;

fn key() -> [u8; 32] {
    head_key(&Pepper::from_bytes([7; 32]))
}

/// Event `i`: a mix of small and mid-sized events, one every 100 ms.
fn event(i: u64) -> Vec<u8> {
    let id = KeyId::parse("key_03523GHZ8w0kmKsFUEB8TJ").unwrap();
    let at = T0 + i as i64 * 100;
    let kind = match i % 4 {
        0 => EventKind::KeyRevoked {
            id,
            effective_at: at,
            reason: Some("rotated by the deploy pipeline after a scheduled credential review".into()),
        },
        1 => EventKind::BudgetMark { id, mark: i << 20 },
        2 => EventKind::KeyDisabled { id },
        _ => EventKind::PlanDeleted {
            name: format!("plan-{i}"),
        },
    };
    Event { at, kind }.encode()
}

/// Writes a log of about `LOG_BYTES` into `dir`; returns the number of records.
fn fill(dir: &Path) -> u64 {
    let mut w = LogWriter::create(dir, STORE_ID, SEGMENT_SIZE)
        .unwrap()
        .with_head_key(key());
    let mut records = 0;
    let mut bytes = 0;
    while bytes < LOG_BYTES {
        for _ in 0..4096 {
            records += 1;
            let payload = event(records);
            bytes += 48 + payload.len() as u64;
            w.append(&payload);
        }
        w.commit().unwrap();
    }
    records
}

fn audit(c: &mut Criterion) {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path().join("log");
    std::fs::create_dir(&dir).unwrap();
    let records = fill(&dir);
    let report = Audit::new(&dir, STORE_ID).head_key(key()).run().unwrap();
    assert_eq!(report.records, records);
    assert_eq!(
        report.head,
        HeadCheck::Verified {
            seq: records,
            uncovered: 0
        }
    );
    assert_eq!(report.segments, 8);
    let bytes = report.bytes;

    let mut group = c.benchmark_group("audit");
    group.sample_size(10).measurement_time(Duration::from_secs(10));
    group.throughput(Throughput::Bytes(bytes));
    group.bench_function("full", |b| {
        b.iter(|| {
            let r = Audit::new(&dir, STORE_ID).head_key(key()).run().unwrap();
            black_box(r.records)
        });
    });
    let mut reader = LogReader::open(&dir, STORE_ID, 1).unwrap();
    assert_eq!(reader.by_ref().count() as u64, records);
    assert_eq!(reader.segments_mapped(), 7);
    group.bench_function("read_all", |b| {
        b.iter(|| {
            let n = LogReader::open(&dir, STORE_ID, 1)
                .unwrap()
                .fold(0u64, |n, r| n + u64::from(r.unwrap().seq > 0));
            black_box(n)
        });
    });
    // One hour in the middle of the log's span.
    let span_ms = records as i64 * 100;
    let (since, until) = (T0 + span_ms / 2, T0 + span_ms / 2 + 3_600_000);
    let mut reader = LogReader::open_range(&dir, STORE_ID, Some(since), Some(until)).unwrap();
    assert_eq!(reader.by_ref().count(), 36_000);
    assert!(reader.segments_read() <= 3, "{} segments", reader.segments_read());
    group.throughput(Throughput::Elements(36_000));
    group.bench_function("range", |b| {
        b.iter(|| {
            let reader = LogReader::open_range(&dir, STORE_ID, Some(since), Some(until)).unwrap();
            black_box(reader.fold(0u64, |n, r| n + u64::from(r.unwrap().seq > 0)))
        });
    });
    group.finish();
}

fn append(c: &mut Criterion) {
    let mut group = c.benchmark_group("append");
    group.sample_size(20).measurement_time(Duration::from_secs(8));
    for batch in [1u64, 64, 1024] {
        let tmp = tempfile::tempdir().unwrap();
        let mut w = LogWriter::create(tmp.path(), STORE_ID, 64 << 20)
            .unwrap()
            .with_head_key(key());
        let payloads: Vec<Vec<u8>> = (0..batch).map(event).collect();
        let before = w.durable_seq();
        for p in &payloads {
            w.append(p);
        }
        w.commit().unwrap();
        assert_eq!(w.durable_seq(), before + batch);
        group.throughput(Throughput::Elements(batch));
        group.bench_function(format!("batch/{batch}"), |b| {
            b.iter(|| {
                for p in &payloads {
                    w.append(p);
                }
                w.commit().unwrap();
            });
        });
        drop(w);
        let report = Audit::new(tmp.path(), STORE_ID).head_key(key()).run().unwrap();
        assert!(matches!(report.head, HeadCheck::Verified { uncovered: 0, .. }));
    }
    let tmp = tempfile::tempdir().unwrap();
    let head = credstore::log::Head {
        store_id: STORE_ID,
        seq: 1,
        hash: [3; 32],
    };
    head.write(tmp.path(), &key(), false).unwrap();
    group.throughput(Throughput::Elements(1));
    group.bench_function("head_checkpoint", |b| {
        b.iter_batched(
            || head,
            |h| h.write(tmp.path(), &key(), false).unwrap(),
            BatchSize::SmallInput,
        );
    });
    group.finish();
}

criterion_group!(benches, audit, append);
criterion_main!(benches);
