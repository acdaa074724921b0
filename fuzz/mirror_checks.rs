//! The properties the `index_mirror` target defends, shared word for word by the target
//! (`fuzz/fuzz_targets/index_mirror.rs`, via `#[path]`) and by `tests/fuzz_corpus.rs`,
//! which runs every seed in `fuzz/corpus/index_mirror/` through them.
//!
//! The index's memory-mapped mirrors (`DATA/index/{by_tag,counters,marks}.{slots,records}`,
//! docs/FORMAT.md) are read at every open and on every cold verify. An input damages one
//! of them in a scratch copy of a real store:
//!
//! | byte | meaning |
//! | --- | --- |
//! | 0 | the file: its value modulo 6 picks `by_tag.slots`, `by_tag.records`, `counters.slots`, `counters.records`, `marks.slots`, `marks.records`; with bit 0x80 set the file is cut at the offset instead of patched |
//! | 1..5 | the offset (u32 LE), modulo the file's length plus one |
//! | 5.. | bytes XORed into the file from the offset on (what passes its end is dropped) |
//!
//! Whatever the damage, the store opens, and every key of the fixture is answered as the
//! log says (the code, and the spend of the budgeted key) or its read is refused as
//! tampered (a record changed in place keeps the mirror's MAC sum, so open keeps the
//! mirror, and the record then fails its own MAC). Never a wrong answer: a revoked key is
//! never valid, a spend never lower than the one flushed.

#![expect(
    clippy::indexing_slicing,
    reason = "a fuzz check reports a finding by panicking, as libFuzzer expects"
)]
#![allow(dead_code)]

use std::fs;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use credstore::{Budget, Code, Config, ManualClock, NewKey, Pepper, Period, Store, VerifyRequest};

/// The mirror files, in selector order.
pub const FILES: [&str; 6] = [
    "by_tag.slots",
    "by_tag.records",
    "counters.slots",
    "counters.records",
    "marks.slots",
    "marks.records",
];

/// What the budgeted key has spent when the fixture is closed.
pub const SPENT: u64 = 30;

/// A store made once, copied for each input.
pub struct Scratch {
    _dir: tempfile::TempDir,
    /// The fixture's data directory, never opened again.
    pristine: PathBuf,
    /// Where each input's copy goes.
    work: PathBuf,
    /// The keys and the code each must get.
    pub keys: Vec<(String, Code)>,
    /// The budgeted key.
    pub metered: String,
    /// The revoked key's id, for seeds that aim at its record.
    pub revoked_id: String,
}

fn config() -> Config {
    Config::new()
        .pepper(Pepper::from_bytes([0x5a; 32]))
        .clock(Arc::new(ManualClock::new(1_767_225_600_000)))
}

impl Scratch {
    /// A store with an active key, a revoked key and a key with a budget part spent, closed.
    ///
    /// # Panics
    /// When the fixture cannot be made.
    pub fn new() -> Scratch {
        let dir = tempfile::tempdir().unwrap_or_else(|e| panic!("temp dir: {e}"));
        let pristine = dir.path().join("pristine");
        let work = dir.path().join("work");
        let store = Store::init(&pristine, config()).unwrap_or_else(|e| panic!("init: {e}"));
        let make = |name: &str, budget: Option<Budget>| {
            let mut new = NewKey::new(name);
            if let Some(b) = budget {
                new = new.budget(b);
            }
            store.create(new).unwrap_or_else(|e| panic!("create: {e}"))
        };
        let active = make("active", None);
        let revoked = make("revoked", None);
        let budget = Budget::new(100, Period::Total).unwrap_or_else(|e| panic!("budget: {e}"));
        let metered = make("metered", Some(budget));
        let metered_key = metered.key.expose().to_string();
        let spent = store
            .verify_with(&VerifyRequest::new(&metered_key).cost(SPENT))
            .unwrap_or_else(|e| panic!("verify: {e}"));
        assert_eq!(spent.code, Code::Valid);
        store
            .revoke(&revoked.record.id, None)
            .unwrap_or_else(|e| panic!("revoke: {e}"));
        store.close().unwrap_or_else(|e| panic!("close: {e}"));
        Scratch {
            _dir: dir,
            pristine,
            work,
            keys: vec![
                (active.key.expose().to_string(), Code::Valid),
                (revoked.key.expose().to_string(), Code::Revoked),
                (metered_key.clone(), Code::Valid),
            ],
            metered: metered_key,
            revoked_id: revoked.record.id.to_string(),
        }
    }

    /// The pristine bytes of mirror file `i` (for seeds).
    pub fn file(&self, i: usize) -> Vec<u8> {
        fs::read(self.pristine.join("index").join(FILES[i % FILES.len()])).unwrap_or_default()
    }
}

impl Default for Scratch {
    fn default() -> Self {
        Scratch::new()
    }
}

/// Damages one mirror file of a copy of the fixture as `data` says, opens it and checks
/// every key. Returns whether every key was answered (`false`: some read was refused as
/// tampered).
///
/// # Panics
/// On a finding: the store does not open, a key is answered wrongly, or a read fails for
/// another reason than a refused mirror record.
pub fn check_mirror_input(scratch: &Scratch, data: &[u8]) -> bool {
    let Some((&selector, rest)) = data.split_first() else {
        return true;
    };
    let offset = rest
        .get(..4)
        .map_or(0, |b| u32::from_le_bytes([b[0], b[1], b[2], b[3]]) as usize);
    let patch = rest.get(4..).unwrap_or_default();
    let _ = fs::remove_dir_all(&scratch.work);
    copy_dir(&scratch.pristine, &scratch.work);
    let path = scratch
        .work
        .join("index")
        .join(FILES[usize::from(selector & 0x7f) % FILES.len()]);
    let mut bytes = fs::read(&path).unwrap_or_default();
    let at = offset % (bytes.len() + 1);
    if selector & 0x80 != 0 {
        bytes.truncate(at);
    } else {
        for (b, p) in bytes.iter_mut().skip(at).zip(patch) {
            *b ^= p;
        }
    }
    fs::write(&path, &bytes).unwrap_or_else(|e| panic!("write {}: {e}", path.display()));

    let store =
        Store::open(&scratch.work, config()).unwrap_or_else(|e| panic!("a damaged mirror must not stop open: {e}"));
    let mut answered = true;
    for (key, expected) in &scratch.keys {
        match store.verify_with(&VerifyRequest::new(key).cost(0)) {
            Ok(d) => {
                assert_eq!(d.code, *expected, "a key answered against the log");
                if key == &scratch.metered {
                    let spent = d.budget.as_ref().map_or(0, |b| b.spent);
                    assert_eq!(spent, SPENT, "the spend flushed at close");
                }
            }
            Err(e) => {
                let why = e.to_string();
                assert!(
                    why.contains("fails its MAC") || why.contains("by_tag"),
                    "a read failed for another reason than a refused record: {why}"
                );
                answered = false;
            }
        }
    }
    drop(store);
    answered
}

/// Copies a directory tree (files and directories only).
fn copy_dir(from: &Path, to: &Path) {
    fs::create_dir_all(to).unwrap_or_else(|e| panic!("mkdir {}: {e}", to.display()));
    let entries = fs::read_dir(from).unwrap_or_else(|e| panic!("read {}: {e}", from.display()));
    for entry in entries.flatten() {
        let target = to.join(entry.file_name());
        match entry.file_type() {
            Ok(t) if t.is_dir() => copy_dir(&entry.path(), &target),
            Ok(t) if t.is_file() => {
                fs::copy(entry.path(), &target).unwrap_or_else(|e| panic!("copy: {e}"));
            }
            _ => {}
        }
    }
}

/// Where the value of the last record in a `by_tag.records` file whose aux bytes are `id`
/// starts and ends.
pub fn last_record_value(bytes: &[u8], id: &str) -> Option<(usize, usize)> {
    let (mut at, mut last) = (16, None);
    while at + 8 <= bytes.len() {
        let key = usize::from(u16::from_le_bytes([bytes[at], bytes[at + 1]]));
        let aux = usize::from(u16::from_le_bytes([bytes[at + 2], bytes[at + 3]]));
        let value = u32::from_le_bytes([bytes[at + 4], bytes[at + 5], bytes[at + 6], bytes[at + 7]]) as usize;
        if key == 0 {
            break;
        }
        let end = at + 8 + key + aux + value;
        if bytes.get(at + 8 + key..at + 8 + key + aux) == Some(id.as_bytes()) {
            last = Some((end - value, end));
        }
        at = end;
    }
    last
}

/// The seeds: named `accept-` (every key answered) or `refuse-` (a read refused).
pub fn mirror_seeds(scratch: &Scratch) -> Vec<(String, Vec<u8>)> {
    let input = |selector: u8, offset: usize, patch: &[u8]| {
        let mut v = vec![selector];
        v.extend_from_slice(&(offset as u32).to_le_bytes());
        v.extend_from_slice(patch);
        v
    };
    let records = scratch.file(1);
    let (value, end) = last_record_value(&records, &scratch.revoked_id).unwrap_or((16, 17));
    vec![
        ("accept-unchanged".into(), input(0, 0, &[])),
        ("accept-by-tag-slots-magic".into(), input(0, 0, &[0xff])),
        ("accept-by-tag-slots-count".into(), input(0, 24, &[1])),
        ("accept-by-tag-slots-all-offsets".into(), input(0, 64, &[0x55; 64])),
        ("accept-by-tag-records-cut-in-a-record".into(), input(0x81, 40, &[])),
        ("accept-by-tag-records-cut-to-nothing".into(), input(0x81, 0, &[])),
        // A MAC byte: the mirror's sum no longer matches sled's, so open rebuilds it.
        (
            "accept-by-tag-records-a-mac-flipped".into(),
            input(1, value + 5, &[0x01]),
        ),
        // A payload byte: the sum still matches, the record fails its own MAC when read.
        (
            "refuse-by-tag-records-revoked-payload-flipped".into(),
            input(1, end - 1, &[0x01]),
        ),
        ("accept-counters-slots-cut".into(), input(0x82, 70, &[])),
        ("accept-counters-records-zeroed-head".into(), input(3, 16, &[0xff; 8])),
        ("accept-marks-slots-capacity".into(), input(4, 16, &[0x03])),
        ("accept-marks-records-cut".into(), input(0x85, 17, &[])),
    ]
}
