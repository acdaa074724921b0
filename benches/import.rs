//! Import throughput (issue 18 item 5: at least 50,000 keys/s), against a baseline
//! measured in the same run.
//!
//! - `import/store`: `Store::import` of `KEYS` keys (parsed beforehand) into a fresh store:
//!   the checks, `key.imported` records in the log (one fsync per `IMPORT_BATCH` keys) and
//!   the sealed sled batch (`keys`, `by_prefix`, `by_project`, `by_sha256`).
//! - `import/parse`: `parse_import_line` over the same lines (the CLI's other cost).
//! - `import/sled_baseline`: the same number of plain inserts into one sled tree (32-byte
//!   key, a 160-byte value), in batches of `IMPORT_BATCH`, one flush per batch: what sled
//!   alone costs for one entry per key.
//!
//! Every benchmark checks the outcome it measures. Figures are in `docs/PERFORMANCE.md`.

#![expect(
    clippy::unwrap_used,
    reason = "a benchmark's setup has no caller to return an error to: it panics on failure"
)]
#![expect(missing_docs, reason = "criterion_group! defines an undocumented public function")]

use std::time::{Duration, Instant};

use credstore::import::{ImportKey, parse_import_line};
use credstore::{Config, Pepper, Store, UseLog};
use criterion::{Criterion, Throughput, criterion_group, criterion_main};
use sha2::Digest;

/// Keys per measured import.
const KEYS: usize = 50_000;

/// Import line `i`, as a migration would write it.
fn line(i: usize) -> String {
    let hash = hex::encode(sha2::Sha256::digest(format!("legacy_{i:08}-secret-part").as_bytes()));
    format!(
        r#"{{"sha256":"{hash}","prefix":"legacy_","name":"customer {i}","project":"migrated","metadata":{{"account":"acct_{i}"}}}}"#
    )
}

fn lines() -> Vec<String> {
    (0..KEYS).map(line).collect()
}

fn parsed(lines: &[String]) -> Vec<ImportKey> {
    lines
        .iter()
        .enumerate()
        .map(|(i, l)| parse_import_line(l, i + 1).unwrap())
        .collect()
}

fn config() -> Config {
    Config::new().pepper(Pepper::from_bytes([9; 32])).use_log(UseLog::Off)
}

fn import(c: &mut Criterion) {
    let lines = lines();
    let mut group = c.benchmark_group("import");
    group.sample_size(10);
    group.measurement_time(Duration::from_secs(20));
    group.throughput(Throughput::Elements(KEYS as u64));

    group.bench_function("store", |b| {
        b.iter_custom(|iters| {
            let mut total = Duration::ZERO;
            for _ in 0..iters {
                let dir = tempfile::tempdir().unwrap();
                let store = Store::init(dir.path().join("data"), config()).unwrap();
                let keys = parsed(&lines);
                let start = Instant::now();
                let records = store.import(keys, |_| {}).unwrap();
                total += start.elapsed();
                assert_eq!(records.len(), KEYS);
                assert_eq!(store.imports_pending(), KEYS as u64);
                store.close().unwrap();
            }
            total
        });
    });

    group.bench_function("parse", |b| {
        b.iter(|| {
            let keys = parsed(&lines);
            assert_eq!(keys.len(), KEYS);
            keys
        });
    });

    group.bench_function("sled_baseline", |b| {
        b.iter_custom(|iters| {
            let mut total = Duration::ZERO;
            for _ in 0..iters {
                let dir = tempfile::tempdir().unwrap();
                let db = sled::Config::new()
                    .path(dir.path())
                    .mode(sled::Mode::HighThroughput)
                    .open()
                    .unwrap();
                let tree = db.open_tree("keys").unwrap();
                let value = [0xA5u8; 160];
                let start = Instant::now();
                for chunk in (0..KEYS).collect::<Vec<_>>().chunks(credstore::IMPORT_BATCH) {
                    let mut batch = sled::Batch::default();
                    for i in chunk {
                        let key: [u8; 32] = sha2::Sha256::digest(i.to_be_bytes()).into();
                        batch.insert(&key[..], &value[..]);
                    }
                    tree.apply_batch(batch).unwrap();
                    db.flush().unwrap();
                }
                total += start.elapsed();
                assert_eq!(tree.len(), KEYS);
            }
            total
        });
    });
    group.finish();
}

criterion_group!(benches, import);
criterion_main!(benches);
