//! Bad input: every refusal is a clear, typed error, and nothing is written.
//!
//! "Nothing written" is checked by taking the event count ([`Store::events`]) and the key
//! list ([`Store::list`]) before and after each refused call.

#![expect(
    clippy::expect_used,
    clippy::indexing_slicing,
    reason = "a test fails by panicking: unwrap, expect and indexing are its assertions"
)]

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;

use credstore::log::{AuditError, AuditProblem};
use credstore::{
    Code, Config, Env, Error, Expiry, Format, InputError, KeyId, KeyInfo, KeyUpdate, ListFilter, LogError, Malformed,
    NewKey, OpenError, Pepper, StateError, Store,
};

const PEPPER: [u8; 32] = [0x42; 32];
const OTHER_PEPPER: [u8; 32] = [0x24; 32];

fn config() -> Config {
    Config::new().pepper(Pepper::from_bytes(PEPPER))
}

fn new_store() -> (tempfile::TempDir, PathBuf, Store) {
    let tmp = tempfile::tempdir().expect("temp dir");
    let dir = tmp.path().join("data");
    let store = Store::init(&dir, config()).expect("init");
    (tmp, dir, store)
}

/// What a refused call must leave as it was.
#[derive(Debug, PartialEq, Eq)]
struct Snapshot {
    events: usize,
    keys: Vec<KeyInfo>,
    formats: Vec<Format>,
}

fn snapshot(store: &Store) -> Snapshot {
    Snapshot {
        events: store.events(&Default::default()).expect("events").len(),
        keys: store.list(&ListFilter::default()).expect("list"),
        formats: store.formats().iter().cloned().collect(),
    }
}

/// Runs `call`, which must fail, and checks that nothing was written; returns the error.
#[track_caller]
fn refused<T: std::fmt::Debug>(store: &Store, call: impl FnOnce() -> Result<T, Error>) -> Error {
    let before = snapshot(store);
    let err = call().expect_err("the call must be refused");
    assert!(err.is_caller_error(), "{err:?} should be a caller error");
    assert!(!err.to_string().is_empty());
    assert_eq!(snapshot(store), before, "a refused call wrote something ({err})");
    err
}

#[track_caller]
fn input_error<T: std::fmt::Debug>(store: &Store, call: impl FnOnce() -> Result<T, Error>) -> InputError {
    match refused(store, call) {
        Error::Input(e) => e,
        other => panic!("expected an input error, got {other:?}"),
    }
}

#[track_caller]
fn state_error<T: std::fmt::Debug>(store: &Store, call: impl FnOnce() -> Result<T, Error>) -> StateError {
    match refused(store, call) {
        Error::State(e) => e,
        other => panic!("expected a state error, got {other:?}"),
    }
}

fn now_ms() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .expect("after 1970")
        .as_millis() as i64
}

// ---------------------------------------------------------------------------------------
// verify: malformed keys are named, before any lookup, and change nothing.

#[test]
fn malformed_keys_are_named_and_change_nothing() {
    let (_tmp, _dir, store) = new_store();
    let live = store.create(NewKey::new("live")).expect("create");
    let comp_format = Format::new("comp_", Env::Live, 27, false).expect("comp_");
    let comp = store
        .create(NewKey::new("comp").format(comp_format.clone()))
        .expect("create comp_");
    let live_key = live.key.expose().to_string();
    let comp_key = comp.key.expose().to_string();
    assert_eq!(comp_key.len(), 32);

    let swap = |key: &str, at: usize, with: &str| {
        let mut k = key.to_string();
        let c = if &k[at..at + 1] == with { "Q" } else { with };
        k.replace_range(at..at + 1, c);
        k
    };
    let cases: Vec<(&str, String, Malformed)> = vec![
        ("empty", String::new(), Malformed::Empty),
        (
            "unknown prefix",
            live_key.replacen("sk_live_", "pk_live_", 1),
            Malformed::UnknownPrefix,
        ),
        // A well-formed key of a shape the store never registered.
        (
            "unregistered prefix",
            Format::new("zz_", Env::Live, 32, true)
                .expect("zz_")
                .generate()
                .expose()
                .to_string(),
            Malformed::UnknownPrefix,
        ),
        (
            "one short",
            live_key[..live_key.len() - 1].to_string(),
            Malformed::WrongLength,
        ),
        ("one long", format!("{live_key}a"), Malformed::WrongLength),
        ("comp_ one short", comp_key[..31].to_string(), Malformed::WrongLength),
        ("comp_ one long", format!("{comp_key}a"), Malformed::WrongLength),
        ("bad alphabet", swap(&live_key, 12, "-"), Malformed::BadAlphabet),
        ("bad alphabet (space)", swap(&live_key, 20, " "), Malformed::BadAlphabet),
        (
            "bad alphabet (non-ASCII)",
            format!("{}é{}", &live_key[..10], &live_key[12..]),
            Malformed::BadAlphabet,
        ),
        ("comp_ bad alphabet", swap(&comp_key, 10, "_"), Malformed::BadAlphabet),
        ("bad checksum (typo)", swap(&live_key, 12, "a"), Malformed::BadChecksum),
        (
            "bad checksum (last char)",
            swap(&live_key, live_key.len() - 1, "b"),
            Malformed::BadChecksum,
        ),
    ];
    let before = snapshot(&store);
    for (what, key, why) in &cases {
        let d = store.verify(key).expect("verify never errors on a bad key");
        assert_eq!(d.code, Code::Malformed, "{what}");
        assert_eq!(d.malformed, Some(*why), "{what}");
        assert_eq!(d.http_status(), 401, "{what}");
        assert!(d.key.is_none(), "{what}: a malformed key found a record");
        assert!(!d.is_valid());
    }
    // A well-formed key that was never issued: not found, after the lookup.
    let stranger = Format::default_for(Env::Live).generate();
    let d = store.verify(stranger.expose()).expect("verify");
    assert_eq!((d.code, d.malformed, d.key.is_none()), (Code::NotFound, None, true));
    let stranger = comp_format.generate();
    assert_eq!(store.verify(stranger.expose()).expect("verify").code, Code::NotFound);
    assert_eq!(snapshot(&store), before, "verifying bad keys wrote something");
    // None of them counted as a use.
    assert!(
        store
            .list(&ListFilter::default())
            .expect("list")
            .iter()
            .all(|k| k.last_used_at.is_none())
    );
    // The real keys still verify.
    assert_eq!(store.verify(&live_key).expect("verify").code, Code::Valid);
    assert_eq!(store.verify(&comp_key).expect("verify").code, Code::Valid);
}

// ---------------------------------------------------------------------------------------
// create and update: refused input names the field and writes nothing.

#[test]
fn bad_names_are_refused() {
    let (_tmp, _dir, store) = new_store();
    store.create(NewKey::new("existing")).expect("create");
    assert_eq!(
        input_error(&store, || store.create(NewKey::new(""))),
        InputError::EmptyName
    );
    assert_eq!(
        input_error(&store, || store.create(NewKey::new("   "))),
        InputError::EmptyName
    );
    assert_eq!(
        input_error(&store, || store.create(NewKey::new("x".repeat(129)))),
        InputError::NameTooLong { len: 129, max: 128 }
    );
    // 43 three-byte characters: 129 bytes.
    assert_eq!(
        input_error(&store, || store.create(NewKey::new("€".repeat(43)))),
        InputError::NameTooLong { len: 129, max: 128 }
    );
    for bad in ["a\nb", "tab\there", "bell\u{7}", "nul\0", "del\u{7f}", "c1\u{85}"] {
        assert_eq!(
            input_error(&store, || store.create(NewKey::new(bad))),
            InputError::NameControlChar,
            "{bad:?}"
        );
    }
    // The limit itself is fine.
    store.create(NewKey::new("x".repeat(128))).expect("a 128-byte name");
}

#[test]
fn overlong_metadata_is_refused() {
    let (_tmp, _dir, store) = new_store();
    let too_long_value = NewKey::new("k").meta("note", "v".repeat(513));
    assert!(matches!(
        input_error(&store, || store.create(too_long_value)),
        InputError::MetadataTooLarge(_)
    ));
    let too_long_key = NewKey::new("k").meta("k".repeat(65), "v");
    assert!(matches!(
        input_error(&store, || store.create(too_long_key)),
        InputError::MetadataTooLarge(_)
    ));
    let empty_key = NewKey::new("k").meta("", "v");
    assert!(matches!(
        input_error(&store, || store.create(empty_key)),
        InputError::MetadataTooLarge(_)
    ));
    let mut too_many = NewKey::new("k");
    for i in 0..33 {
        too_many = too_many.meta(format!("k{i}"), "v");
    }
    assert!(matches!(
        input_error(&store, || store.create(too_many)),
        InputError::MetadataTooLarge(_)
    ));
    let mut too_big = NewKey::new("k");
    for i in 0..10 {
        too_big = too_big.meta(format!("k{i}"), "v".repeat(500));
    }
    assert!(matches!(
        input_error(&store, || store.create(too_big)),
        InputError::MetadataTooLarge(_)
    ));
}

#[test]
fn expiry_in_the_past_and_bad_projects_are_refused() {
    let (_tmp, _dir, store) = new_store();
    let past = NewKey::new("k").expires(Expiry::At(now_ms() - 60_000));
    assert!(matches!(
        input_error(&store, || store.create(past)),
        InputError::ExpiryInPast(_)
    ));
    let negative = NewKey::new("k").expires(Expiry::In(-1));
    assert!(matches!(
        input_error(&store, || store.create(negative)),
        InputError::ExpiryInPast(_)
    ));
    // A lifetime past the latest expiry, even one that overflows, is refused as such.
    let overflow = NewKey::new("k").expires(Expiry::In(i64::MAX));
    assert!(matches!(
        input_error(&store, || store.create(overflow)),
        InputError::ExpiryTooLate
    ));
    for bad in ["", "a/b", "with space", "ümlaut", &"p".repeat(65)] {
        assert_eq!(
            input_error(&store, || store.create(NewKey::new("k").project(bad))),
            InputError::InvalidProject(bad.to_string()),
            "{bad:?}"
        );
    }
}

#[test]
fn weak_or_badly_prefixed_formats_are_refused() {
    let (_tmp, _dir, store) = new_store();
    // Under 128 bits: refused when the format is made, so no key can ever have it.
    assert_eq!(
        Format::new("cmp_", Env::Live, 21, true),
        Err(InputError::InvalidRandomLength {
            len: 21,
            min: 22,
            max: 64
        })
    );
    assert_eq!(
        Format::new("comp_", Env::Live, 21, false),
        Err(InputError::InvalidRandomLength {
            len: 21,
            min: 22,
            max: 64
        })
    );
    assert!(Format::new("cmp_", Env::Live, 65, true).is_err());
    for bad in ["", "cmp", "c-p_", "sk live_", "ключ_", "abcdefghijklmnopqrstuvwxy_"] {
        assert_eq!(
            Format::new(bad, Env::Live, 32, true),
            Err(InputError::InvalidPrefix(bad.to_string())),
            "{bad:?}"
        );
    }
    // A prefix belongs to one environment.
    store
        .create(NewKey::new("live").format(Format::new("cmp_", Env::Live, 32, true).expect("cmp_")))
        .expect("create cmp_");
    let test_cmp = Format::new("cmp_", Env::Test, 32, true).expect("a test cmp_ format");
    assert_eq!(
        input_error(&store, || store.create(NewKey::new("test").format(test_cmp))),
        InputError::PrefixEnvironmentConflict {
            prefix: "cmp_".into(),
            registered: Env::Live
        }
    );
    // Also for the default prefixes: sk_live_ is live.
    store.create(NewKey::new("default")).expect("create");
    let test_live = Format::new("sk_live_", Env::Test, 32, true).expect("format");
    assert!(matches!(
        input_error(&store, || store.create(NewKey::new("t").format(test_live))),
        InputError::PrefixEnvironmentConflict {
            registered: Env::Live,
            ..
        }
    ));
}

#[test]
fn bad_updates_are_refused() {
    let (_tmp, _dir, store) = new_store();
    let id = store.create(NewKey::new("k").meta("a", "b")).expect("create").record.id;
    let update = |u: KeyUpdate| store.update(&id, u);
    assert_eq!(
        input_error(&store, || update(KeyUpdate {
            name: Some(String::new()),
            ..KeyUpdate::default()
        })),
        InputError::EmptyName
    );
    assert!(matches!(
        input_error(&store, || update(KeyUpdate {
            name: Some("y".repeat(200)),
            ..KeyUpdate::default()
        })),
        InputError::NameTooLong { len: 200, .. }
    ));
    assert_eq!(
        input_error(&store, || update(KeyUpdate {
            name: Some("new\nline".into()),
            ..KeyUpdate::default()
        })),
        InputError::NameControlChar
    );
    let big: BTreeMap<String, String> = [("k".to_string(), "v".repeat(600))].into();
    assert!(matches!(
        input_error(&store, || update(KeyUpdate {
            metadata: Some(big),
            ..KeyUpdate::default()
        })),
        InputError::MetadataTooLarge(_)
    ));
    assert!(matches!(
        input_error(&store, || update(KeyUpdate {
            expires: Some(Some(Expiry::At(now_ms() - 1000))),
            ..KeyUpdate::default()
        })),
        InputError::ExpiryInPast(_)
    ));
    // A refused update changes no field, not even the valid ones given with it.
    assert!(matches!(
        input_error(&store, || update(KeyUpdate {
            name: Some("fine".into()),
            metadata: Some([("k".to_string(), "v".repeat(600))].into()),
            ..KeyUpdate::default()
        })),
        InputError::MetadataTooLarge(_)
    ));
    assert_eq!(store.get(&id).expect("get").record.name, "k");
    // An overlong revocation reason.
    assert!(matches!(
        input_error(&store, || store.revoke(&id, Some(&"r".repeat(513)))),
        InputError::MetadataTooLarge(_)
    ));
}

// ---------------------------------------------------------------------------------------
// State: unknown ids, and changes that do not fit the key's state.

#[test]
fn unknown_ids_are_refused() {
    let (_tmp, _dir, store) = new_store();
    store.create(NewKey::new("someone else")).expect("create");
    let ghost = KeyId::parse("key_0000000000000000000000").expect("a well-formed id");
    let unknown = || StateError::UnknownKey(ghost.to_string());
    assert_eq!(state_error(&store, || store.get(&ghost)), unknown());
    assert_eq!(state_error(&store, || store.revoke(&ghost, None)), unknown());
    assert_eq!(state_error(&store, || store.disable(&ghost)), unknown());
    assert_eq!(state_error(&store, || store.enable(&ghost)), unknown());
    assert_eq!(state_error(&store, || store.rotate(&ghost, None)), unknown());
    assert_eq!(
        state_error(&store, || store.update(
            &ghost,
            KeyUpdate {
                name: Some("x".into()),
                ..KeyUpdate::default()
            }
        )),
        unknown()
    );
    // Ids that are not ids at all.
    for bad in [
        "",
        "key_",
        "key_short",
        "abc_0000000000000000000000",
        "key_000000000000000000000-",
    ] {
        assert_eq!(KeyId::parse(bad), Err(InputError::InvalidKeyId(bad.to_string())));
    }
}

#[test]
fn changes_that_do_not_fit_the_state_are_refused() {
    let (_tmp, _dir, store) = new_store();
    let id = store.create(NewKey::new("k")).expect("create").record.id;
    assert_eq!(
        state_error(&store, || store.enable(&id)),
        StateError::NotDisabled(id.to_string())
    );
    store.disable(&id).expect("disable");
    assert_eq!(
        state_error(&store, || store.disable(&id)),
        StateError::AlreadyDisabled(id.to_string())
    );
    store.revoke(&id, Some("done")).expect("revoke");
    let revoked = || StateError::Revoked(id.to_string());
    assert_eq!(state_error(&store, || store.revoke(&id, None)), revoked());
    assert_eq!(state_error(&store, || store.revoke(&id, Some("again"))), revoked());
    assert_eq!(state_error(&store, || store.enable(&id)), revoked());
    assert_eq!(state_error(&store, || store.disable(&id)), revoked());
    assert_eq!(state_error(&store, || store.rotate(&id, None)), revoked());
    assert_eq!(
        state_error(&store, || store.update(
            &id,
            KeyUpdate {
                name: Some("renamed".into()),
                ..KeyUpdate::default()
            }
        )),
        revoked()
    );
    assert_eq!(
        state_error(&store, || store.update(
            &id,
            KeyUpdate {
                expires: Some(None),
                ..KeyUpdate::default()
            }
        )),
        revoked()
    );
    // A key rotated with a grace period is still alive, but cannot be rotated twice.
    let other = store.create(NewKey::new("other")).expect("create").record.id;
    let rotated = store.rotate(&other, Some(Duration::from_secs(3600))).expect("rotate");
    assert_eq!(
        state_error(&store, || store.rotate(&other, None)),
        StateError::AlreadyRotated(other.to_string(), rotated.new.record.id.to_string())
    );
}

// ---------------------------------------------------------------------------------------
// The data directory: corruption, not a store, locked, wrong pepper, init on a non-empty one.

/// (offset, length) of every record in a log segment.
fn records_of(segment: &[u8]) -> Vec<(usize, usize)> {
    let mut out = Vec::new();
    let mut pos = 64; // the segment header
    while pos + 8 <= segment.len() {
        let body = u32::from_le_bytes(segment[pos..pos + 4].try_into().expect("4 bytes")) as usize;
        out.push((pos, 8 + body));
        pos += 8 + body;
    }
    assert_eq!(pos, segment.len(), "the segment does not end on a record boundary");
    out
}

fn log_segments(dir: &Path) -> Vec<PathBuf> {
    let mut out: Vec<PathBuf> = std::fs::read_dir(dir.join("log"))
        .expect("log dir")
        .map(|e| e.expect("entry").path())
        .filter(|p| p.extension().is_some_and(|e| e == "log"))
        .collect();
    out.sort();
    out
}

/// A closed store with 12 records in its single log segment; returns the segment.
fn closed_store_with_records(dir: &Path) -> PathBuf {
    let store = Store::init(dir, config()).expect("init");
    for i in 0..6 {
        let id = store.create(NewKey::new(format!("k{i}"))).expect("create").record.id;
        store.disable(&id).expect("disable");
    }
    store.close().expect("close");
    let segments = log_segments(dir);
    assert_eq!(segments.len(), 1, "{segments:?}");
    segments.into_iter().next().expect("a segment")
}

#[track_caller]
fn assert_open_fails_corrupt(dir: &Path, segment: &Path, damaged: &[u8], seq: u64) {
    let err = Store::open(dir, config()).expect_err("a corrupt log must not open");
    match &err {
        Error::Log(LogError::Corrupt {
            seq: found, segment: s, ..
        }) => {
            assert_eq!(*found, seq, "{err}");
            assert_eq!(s, segment, "{err}");
        }
        other => panic!("expected LogError::Corrupt for record {seq}, got {other:?} ({other})"),
    }
    assert!(err.to_string().contains("corrupt record"), "{err}");
    // Nothing skipped, nothing truncated: the damaged file is left as it was.
    assert_eq!(
        std::fs::read(segment).expect("segment"),
        damaged,
        "open changed the damaged log"
    );
}

#[test]
fn a_corrupt_record_in_the_middle_is_an_error_never_skipped() {
    let tmp = tempfile::tempdir().expect("temp dir");
    let dir = tmp.path().join("data");
    let segment = closed_store_with_records(&dir);
    let good = std::fs::read(&segment).expect("segment");
    let records = records_of(&good);
    assert_eq!(records.len(), 13, "1 format + 6 creates + 6 disables");
    // Flip one byte in the payload, the seq, the chain link and the CRC of record 5.
    let (offset, len) = records[4];
    for at in [offset + len - 3, offset + 8, offset + 8 + 8 + 5, offset + 5] {
        let mut bad = good.clone();
        bad[at] ^= 0x20;
        std::fs::write(&segment, &bad).expect("damage the log");
        assert_open_fails_corrupt(&dir, &segment, &bad, 5);
        // A rebuild refuses it too.
        assert!(matches!(
            Store::rebuild(&dir, config()),
            Err(Error::Log(LogError::Corrupt { seq: 5, .. }))
        ));
    }
    // Restored, it opens and everything is there.
    std::fs::write(&segment, &good).expect("restore");
    let store = Store::open(&dir, config()).expect("open the restored store");
    assert_eq!(store.list(&ListFilter::default()).expect("list").len(), 6);
    assert_eq!(store.verify_log().expect("verify_log").records, 13);
}

/// A damaged length field in the middle of the log is corruption, not a torn tail: the
/// records after it were acknowledged and must not be truncated away.
#[test]
fn a_corrupt_length_in_the_middle_is_an_error_not_a_torn_tail() {
    let tmp = tempfile::tempdir().expect("temp dir");
    let dir = tmp.path().join("data");
    let segment = closed_store_with_records(&dir);
    let good = std::fs::read(&segment).expect("segment");
    let records = records_of(&good);
    let (offset, _) = records[4];
    // Each byte of record 5's length, flipped: too long for the rest of the file, or
    // impossible.
    for byte in 0..4 {
        for bit in [0x01u8, 0x10, 0x80] {
            let mut bad = good.clone();
            bad[offset + byte] ^= bit;
            std::fs::write(&segment, &bad).expect("damage the log");
            let err = Store::open(&dir, config()).expect_err("a corrupt log must not open");
            let after = std::fs::read(&segment).expect("segment");
            assert_eq!(
                after.len(),
                bad.len(),
                "length byte {byte} ^ {bit:#04x}: open truncated acknowledged records 5..=13 ({err:?})"
            );
            assert!(
                matches!(&err, Error::Log(LogError::Corrupt { seq: 5, .. })),
                "length byte {byte} ^ {bit:#04x}: expected Corrupt at record 5, got {err:?}"
            );
            std::fs::write(&segment, &good).expect("restore");
        }
    }
}

/// Sealed segments are header-checked only on open (docs/DURABILITY.md); the full checks,
/// `verify_log` and `rebuild`, find a damaged record in one.
#[test]
fn a_corrupt_record_in_a_sealed_segment_is_found_by_the_full_checks() {
    let tmp = tempfile::tempdir().expect("temp dir");
    let dir = tmp.path().join("data");
    let small = || config().segment_size(1024);
    let store = Store::init(&dir, small()).expect("init");
    for i in 0..20 {
        store.create(NewKey::new(format!("k{i}"))).expect("create");
    }
    store.close().expect("close");
    let segments = log_segments(&dir);
    assert!(segments.len() >= 3, "{segments:?}");
    let sealed = &segments[1];
    let mut bytes = std::fs::read(sealed).expect("segment");
    let records = records_of(&bytes);
    assert!(records.len() >= 2);
    let first_seq = u64::from_le_bytes(bytes[24..32].try_into().expect("8 bytes"));
    let (offset, len) = records[1];
    bytes[offset + len - 2] ^= 0x01;
    std::fs::write(sealed, &bytes).expect("damage");
    let store = Store::open(&dir, small()).expect("sealed segments are header-checked only");
    let err = store.verify_log().expect_err("verify_log reads every record");
    assert!(
        matches!(&err, Error::Audit(AuditError::Failed(finding))
            if finding.seq == first_seq + 1 && &finding.file == sealed
                && matches!(finding.problem, AuditProblem::Damaged(_))),
        "{err:?}"
    );
    assert!(store.events(&Default::default()).is_err());
    store.close().expect("close");
    assert!(matches!(
        Store::rebuild(&dir, small()),
        Err(Error::Log(LogError::Corrupt { seq, .. })) if seq == first_seq + 1
    ));
}

fn listing(dir: &Path) -> Vec<String> {
    let mut names: Vec<String> = std::fs::read_dir(dir)
        .expect("read_dir")
        .map(|e| e.expect("entry").file_name().to_string_lossy().into_owned())
        .collect();
    names.sort();
    names
}

#[test]
fn a_directory_that_is_not_a_store_is_refused() {
    let tmp = tempfile::tempdir().expect("temp dir");
    // Empty.
    let empty = tmp.path().join("empty");
    std::fs::create_dir(&empty).expect("mkdir");
    match Store::open(&empty, config()) {
        Err(Error::Open(OpenError::NotAStore(p))) => assert_eq!(p, empty),
        other => panic!("expected NotAStore, got {other:?}"),
    }
    assert!(
        listing(&empty).is_empty(),
        "open wrote into a directory that is not a store"
    );
    // Someone else's files.
    let other = tmp.path().join("other");
    std::fs::create_dir(&other).expect("mkdir");
    std::fs::write(other.join("notes.txt"), "hello").expect("write");
    std::fs::create_dir(other.join("log")).expect("mkdir");
    let before = listing(&other);
    assert!(matches!(
        Store::open(&other, config()),
        Err(Error::Open(OpenError::NotAStore(_)))
    ));
    assert!(matches!(
        Store::rebuild(&other, config()),
        Err(Error::Open(OpenError::NotAStore(_)))
    ));
    assert_eq!(listing(&other), before);
    // Missing: not created by open.
    let missing = tmp.path().join("missing");
    assert!(matches!(
        Store::open(&missing, config()),
        Err(Error::Open(OpenError::NotAStore(_)))
    ));
    assert!(!missing.exists());
    // The message says what to do.
    let msg = Store::open(&empty, config()).expect_err("not a store").to_string();
    assert!(msg.contains("not a credstore store"), "{msg}");
}

#[test]
fn init_refuses_a_non_empty_directory() {
    let tmp = tempfile::tempdir().expect("temp dir");
    let dir = tmp.path().join("data");
    std::fs::create_dir(&dir).expect("mkdir");
    std::fs::write(dir.join("precious.txt"), "do not touch").expect("write");
    match Store::init(&dir, config()) {
        Err(Error::Open(OpenError::AlreadyExists(p))) => assert_eq!(p, dir),
        other => panic!("expected AlreadyExists, got {other:?}"),
    }
    assert_eq!(listing(&dir), ["precious.txt"]);
    // Nor over an existing store, open or closed.
    let store_dir = tmp.path().join("store");
    let store = Store::init(&store_dir, config()).expect("init");
    let id = store.create(NewKey::new("keep me")).expect("create").record.id;
    assert!(matches!(
        Store::init(&store_dir, config()),
        Err(Error::Open(OpenError::AlreadyExists(_)))
    ));
    store.close().expect("close");
    assert!(matches!(
        Store::init(&store_dir, Config::new()),
        Err(Error::Open(OpenError::AlreadyExists(_)))
    ));
    assert!(!store_dir.join("pepper.key").exists());
    let store = Store::open(&store_dir, config()).expect("open");
    assert_eq!(store.get(&id).expect("the key survived").record.name, "keep me");
}

#[test]
fn a_store_is_locked_by_another_store_in_the_same_process() {
    let (_tmp, dir, store) = new_store();
    let id = store.create(NewKey::new("k")).expect("create").record.id;
    // Not the default wait of seconds: the holder does not let go here.
    let impatient = || config().lock_wait(std::time::Duration::from_millis(100));
    match Store::open(&dir, impatient()) {
        Err(Error::Open(OpenError::Locked(p))) => assert_eq!(p, dir),
        other => panic!("expected Locked, got {other:?}"),
    }
    assert!(matches!(
        Store::rebuild(&dir, impatient()),
        Err(Error::Open(OpenError::Locked(_)))
    ));
    // The holder is unaffected.
    assert_eq!(store.get(&id).expect("get").record.name, "k");
    store.revoke(&id, None).expect("revoke");
    store.close().expect("close");
    // Released on close.
    let again = Store::open(&dir, config()).expect("open after close");
    assert_eq!(again.get(&id).expect("get").status, credstore::Status::Revoked);
}

#[test]
fn a_store_is_locked_against_another_process() {
    let (_tmp, dir, store) = new_store();
    let created = store.create(NewKey::new("k")).expect("create");
    let before = snapshot(&store);
    let out = Command::new(env!("CARGO_BIN_EXE_credstore"))
        .arg("--data")
        .arg(&dir)
        .args(["verify", created.key.expose()])
        .env("CREDSTORE_PEPPER", hex::encode(PEPPER))
        .env("CREDSTORE_LOCK_WAIT", "100ms")
        .env_remove("CREDSTORE_DATA")
        .output()
        .expect("run credstore");
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(3), "stderr: {stderr}");
    assert!(stderr.contains("locked"), "stderr: {stderr}");
    let create = Command::new(env!("CARGO_BIN_EXE_credstore"))
        .arg("--data")
        .arg(&dir)
        .args(["create", "--name", "sneaky"])
        .env("CREDSTORE_PEPPER", hex::encode(PEPPER))
        .env("CREDSTORE_LOCK_WAIT", "0")
        .env_remove("CREDSTORE_DATA")
        .output()
        .expect("run credstore");
    assert_eq!(create.status.code(), Some(3));
    assert!(String::from_utf8_lossy(&create.stderr).contains("locked"));
    assert_eq!(snapshot(&store), before, "the other process wrote something");
    store.close().expect("close");
    // Unlocked, the same command works.
    let out = Command::new(env!("CARGO_BIN_EXE_credstore"))
        .arg("--data")
        .arg(&dir)
        .args(["verify", created.key.expose()])
        .env("CREDSTORE_PEPPER", hex::encode(PEPPER))
        .env_remove("CREDSTORE_DATA")
        .output()
        .expect("run credstore");
    assert_eq!(out.status.code(), Some(0), "{}", String::from_utf8_lossy(&out.stderr));
}

#[test]
fn the_wrong_pepper_is_named() {
    let (_tmp, dir, store) = new_store();
    let created = store.create(NewKey::new("k")).expect("create");
    store.close().expect("close");
    let wrong = Config::new().pepper(Pepper::from_bytes(OTHER_PEPPER));
    let err = Store::open(&dir, wrong.clone()).expect_err("the wrong pepper must be refused");
    assert!(matches!(err, Error::Open(OpenError::WrongPepper)), "{err:?}");
    assert!(err.to_string().contains("wrong pepper"), "{err}");
    // Without any pepper (a production store keeps none on disk).
    assert!(matches!(
        Store::open(&dir, Config::new()),
        Err(Error::Open(OpenError::MissingPepper))
    ));
    assert!(matches!(
        Store::rebuild(&dir, wrong),
        Err(Error::Open(OpenError::WrongPepper))
    ));
    assert!(!dir.join("pepper.key").exists());
    // A malformed pepper in the environment is refused before anything is opened.
    assert_eq!(Pepper::from_hex("abcd").err(), Some(InputError::InvalidPepper));
    // The right pepper still finds the key.
    let store = Store::open(&dir, config()).expect("open");
    assert_eq!(store.verify(created.key.expose()).expect("verify").code, Code::Valid);
}

#[test]
fn the_message_of_a_refusal_never_holds_the_key() {
    let (_tmp, _dir, store) = new_store();
    let created = store.create(NewKey::new("k")).expect("create");
    let key = created.key.expose();
    let secret_part = &key[12..];
    let typo = {
        let mut k = key.to_string();
        let c = if &k[15..16] == "a" { "b" } else { "a" };
        k.replace_range(15..16, c);
        k
    };
    for presented in [key.to_string(), typo, format!("{key}x"), key.replace('a', "-")] {
        let d = store.verify(&presented).expect("verify");
        let shown = format!("{d:?} {:?}", d.malformed.map(|m| m.to_string()));
        assert!(!shown.contains(secret_part), "a decision shows the key: {shown}");
    }
    assert!(!format!("{created:?}").contains(secret_part));
}
