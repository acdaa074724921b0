//! The index's memory-mapped mirrors (`by_tag`, `counters`, `marks`: `src/mirror.rs`) are
//! never trusted blindly: a mirror left behind by a crash, put back from an older copy,
//! missing, or edited without the pepper is rebuilt at open or refused at read, so a
//! revoked key never verifies again and no budget spend is lost.

#![expect(
    clippy::expect_used,
    clippy::indexing_slicing,
    reason = "a test fails by panicking: unwrap, expect and indexing are its assertions"
)]

mod common;

use std::path::{Path, PathBuf};

use common::Fixture;
use credstore::{Budget, Code, NewKey, Period, VerifyRequest};

/// The mirror files of the index in `data`.
fn mirror_files(data: &Path) -> Vec<PathBuf> {
    ["by_tag", "counters", "marks"]
        .iter()
        .flat_map(|m| ["slots", "records"].map(|ext| data.join("index").join(format!("{m}.{ext}"))))
        .collect()
}

/// Copies of the mirror files, to put back later.
fn save_mirrors(data: &Path) -> Vec<(PathBuf, Vec<u8>)> {
    mirror_files(data)
        .into_iter()
        .map(|p| {
            let bytes = std::fs::read(&p).expect("the mirror files exist after a close");
            (p, bytes)
        })
        .collect()
}

fn restore_mirrors(saved: &[(PathBuf, Vec<u8>)]) {
    for (path, bytes) in saved {
        std::fs::write(path, bytes).expect("put the older mirror back");
    }
}

/// The offset of the last record in a `by_tag.records` file whose aux bytes are `id`, and
/// its head's lengths (key, aux, value). Records start at offset 16: key length u16, aux
/// length u16, value length u32, key, aux (the key id), value (docs/FORMAT.md).
fn last_record(bytes: &[u8], id: &str) -> Option<(usize, (usize, usize, usize))> {
    let (mut at, mut last) = (16, None);
    while at + 8 <= bytes.len() {
        let lens = lengths(bytes, at);
        if lens.0 == 0 {
            break;
        }
        let aux = at + 8 + lens.0;
        if &bytes[aux..aux + lens.1] == id.as_bytes() {
            last = Some((at, lens));
        }
        at = record_end(bytes, at);
    }
    last
}

fn lengths(bytes: &[u8], at: usize) -> (usize, usize, usize) {
    let key = u16::from_le_bytes([bytes[at], bytes[at + 1]]) as usize;
    let aux = u16::from_le_bytes([bytes[at + 2], bytes[at + 3]]) as usize;
    let value = u32::from_le_bytes(bytes[at + 4..at + 8].try_into().expect("4 bytes")) as usize;
    (key, aux, value)
}

fn record_end(bytes: &[u8], at: usize) -> usize {
    let (key, aux, value) = lengths(bytes, at);
    at + 8 + key + aux + value
}

#[test]
fn an_older_mirror_put_back_is_rebuilt_so_a_revoked_key_stays_revoked() {
    let fx = Fixture::new();
    let store = fx.init();
    let created = store.create(NewKey::new("soon revoked")).expect("create");
    let key = created.key.expose().to_string();
    assert_eq!(store.verify(&key).expect("verify").code, Code::Valid);
    store.close().expect("close");
    // The mirror as it was while the key was active (a copy, or a crash's leftover).
    let active = save_mirrors(&fx.path);

    let store = fx.open();
    store.revoke(&created.record.id, None).expect("revoke");
    store.close().expect("close");
    restore_mirrors(&active);

    let store = fx.open();
    assert_eq!(store.verify(&key).expect("verify").code, Code::Revoked);
    store.close().expect("close");
    // And the rebuilt mirror was kept: it no longer holds the active record.
    assert_ne!(
        std::fs::read(&active[1].0).expect("records"),
        active[1].1,
        "the by_tag records were rebuilt"
    );
}

#[test]
fn an_older_counters_mirror_put_back_loses_no_spend() {
    let fx = Fixture::new();
    let store = fx.init();
    let budget = Budget::new(100, Period::Total).expect("budget");
    let created = store.create(NewKey::new("metered").budget(budget)).expect("create");
    let key = created.key.expose().to_string();
    store.close().expect("close");
    let unspent = save_mirrors(&fx.path);

    let store = fx.open();
    for _ in 0..3 {
        let d = store.verify_with(&VerifyRequest::new(&key).cost(20)).expect("verify");
        assert_eq!(d.code, Code::Valid);
    }
    store.close().expect("close");
    restore_mirrors(&unspent);

    let store = fx.open();
    let d = store.verify_with(&VerifyRequest::new(&key).cost(0)).expect("verify");
    assert_eq!(d.budget.expect("a budget").spent, 60, "the spend flushed at close");
    // 60 + 50 is over the cap: refused, as it would have been without the restore.
    let d = store.verify_with(&VerifyRequest::new(&key).cost(50)).expect("verify");
    assert_eq!(d.code, Code::BudgetExhausted);
    store.close().expect("close");
}

#[test]
fn missing_or_truncated_mirrors_are_rebuilt_and_every_key_verifies() {
    let fx = Fixture::new();
    let store = fx.init();
    let keys: Vec<String> = (0..300)
        .map(|i| {
            let budget = Budget::new(1_000, Period::Total).expect("budget");
            let created = store
                .create(NewKey::new(format!("k{i}")).budget(budget))
                .expect("create");
            created.key.expose().to_string()
        })
        .collect();
    for key in &keys {
        let d = store.verify_with(&VerifyRequest::new(key).cost(7)).expect("verify");
        assert_eq!(d.code, Code::Valid);
    }
    store.close().expect("close");
    let files = mirror_files(&fx.path);
    std::fs::remove_file(&files[0]).expect("remove by_tag.slots");
    std::fs::write(&files[3], b"torn").expect("truncate counters.records");

    let store = fx.open();
    for key in &keys {
        let d = store.verify_with(&VerifyRequest::new(key).cost(0)).expect("verify");
        assert_eq!(d.code, Code::Valid);
        assert_eq!(d.budget.expect("a budget").spent, 7);
    }
    store.close().expect("close");
}

#[test]
fn a_mirror_record_changed_without_the_pepper_is_refused_at_read() {
    let fx = Fixture::new();
    let store = fx.init();
    let created = store.create(NewKey::new("revoked")).expect("create");
    let key = created.key.expose().to_string();
    store.revoke(&created.record.id, None).expect("revoke");
    store.close().expect("close");

    // Change the last payload byte of the key's record, keeping its MAC: the mirror still
    // adds up to the index's MACs at open, but the record fails its own MAC when read.
    let records = fx.path.join("index").join("by_tag.records");
    let mut bytes = std::fs::read(&records).expect("records");
    let (at, _) = last_record(&bytes, created.record.id.as_str()).expect("the key's record");
    let last = record_end(&bytes, at) - 1;
    bytes[last] ^= 0x01;
    std::fs::write(&records, &bytes).expect("write records");

    let store = fx.open();
    let refused = store.verify(&key);
    assert!(
        refused.as_ref().is_err_and(|e| e.to_string().contains("fails its MAC")),
        "a changed record is refused, not served: {:?}",
        refused.map(|d| d.code)
    );
}

#[test]
fn a_revoked_keys_tag_filed_at_another_keys_record_is_refused_while_the_store_runs() {
    let fx = Fixture::new();
    let store = fx.init();
    let revoked = store.create(NewKey::new("a")).expect("create");
    let active = store.create(NewKey::new("b")).expect("create");
    store.revoke(&revoked.record.id, None).expect("revoke");
    store.close().expect("close");

    // The store is open (its mirror checked and mapped) when the file changes: the
    // revoked key's record is rewritten to hold the active key's id and sealed value
    // (valid MACs of their own), under the revoked key's tag.
    let store = fx.open();
    let records = fx.path.join("index").join("by_tag.records");
    let mut bytes = std::fs::read(&records).expect("records");
    let (a_at, (a_key, _, _)) = last_record(&bytes, revoked.record.id.as_str()).expect("a's record");
    let (b_at, (b_key, b_aux, b_value)) = last_record(&bytes, active.record.id.as_str()).expect("b's record");
    assert!(
        b_aux + b_value <= record_end(&bytes, a_at) - a_at - 8 - a_key,
        "b's record fits in a's place"
    );
    let b_rest = bytes[b_at + 8 + b_key..b_at + 8 + b_key + b_aux + b_value].to_vec();
    bytes[a_at + 2..a_at + 4].copy_from_slice(&(b_aux as u16).to_le_bytes());
    bytes[a_at + 4..a_at + 8].copy_from_slice(&(b_value as u32).to_le_bytes());
    let rest_at = a_at + 8 + a_key;
    bytes[rest_at..rest_at + b_rest.len()].copy_from_slice(&b_rest);
    // In place (no truncation under the store's mapping), as an editor would.
    let mut file = std::fs::OpenOptions::new()
        .write(true)
        .open(&records)
        .expect("open records");
    std::io::Seek::seek(&mut file, std::io::SeekFrom::Start(a_at as u64)).expect("seek");
    std::io::Write::write_all(&mut file, &bytes[a_at..rest_at + b_rest.len()]).expect("write records");
    drop(file);

    let refused = store.verify(revoked.key.expose());
    assert!(
        refused.as_ref().is_err_and(|e| e.to_string().contains("by_tag")),
        "the revoked key is refused, not served as the other key: {:?}",
        refused.map(|d| d.code)
    );
    assert_eq!(store.verify(active.key.expose()).expect("verify").code, Code::Valid);
}
