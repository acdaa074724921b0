//! The index is a cache of the log: one that cannot be opened or read (a kill in the middle
//! of a sled snapshot, a full disk, damaged bytes) is set aside and rebuilt from the log when
//! the store opens, with the reason reported; `rebuild` never needs the old index; a log
//! that cannot be read is still an error.

#![expect(
    clippy::expect_used,
    reason = "a test fails by panicking: unwrap, expect and indexing are its assertions"
)]

mod common;

use std::fs;
use std::path::Path;

use common::{Cli, Fixture};
use credstore::{Code, Error, LogError, NewKey, Store};

/// A way to damage a sled index, named, as a function of the index directory.
type Damage = (&'static str, fn(&Path));

/// Ways to damage a sled index found after kills and full disks.
fn damages() -> Vec<Damage> {
    vec![
        ("garbage in the snapshot", |dir| {
            for snap in snapshots(dir) {
                let len = fs::metadata(&snap).expect("stat").len() as usize;
                fs::write(&snap, vec![0xA5; len]).expect("write");
            }
        }),
        ("the data file cut short", |dir| {
            let db = fs::OpenOptions::new()
                .write(true)
                .open(dir.join("db"))
                .expect("open db");
            db.set_len(1000).expect("truncate");
        }),
        ("garbage over the data file", |dir| {
            let len = fs::metadata(dir.join("db")).expect("stat").len() as usize;
            fs::write(dir.join("db"), vec![0xFF; len]).expect("write");
        }),
    ]
}

fn snapshots(dir: &Path) -> Vec<std::path::PathBuf> {
    let snaps: Vec<_> = fs::read_dir(dir)
        .expect("read index dir")
        .map(|e| e.expect("entry").path())
        .filter(|p| p.file_name().is_some_and(|n| n.to_string_lossy().starts_with("snap.")))
        .collect();
    assert!(!snaps.is_empty(), "sled wrote no snapshot in {dir:?}");
    snaps
}

#[test]
fn an_unreadable_index_is_set_aside_and_rebuilt_from_the_log() {
    for (what, damage) in damages() {
        let fx = Fixture::new();
        let store = fx.init();
        let kept = store.create(NewKey::new("kept")).expect("create");
        let gone = store.create(NewKey::new("gone")).expect("create");
        store.revoke(&gone.record.id, Some("leaked")).expect("revoke");
        store.close().expect("close");

        damage(&fx.path.join("index"));

        let store = fx.open();
        let why = store.recovery_report().index_rebuilt.clone();
        assert!(why.is_some(), "{what}: the rebuild was not reported");
        assert!(
            fx.path.join("index.broken").is_dir(),
            "{what}: the old index was not set aside"
        );
        assert_eq!(
            store.verify(kept.key.expose()).expect("verify").code,
            Code::Valid,
            "{what}"
        );
        assert_eq!(
            store.verify(gone.key.expose()).expect("verify").code,
            Code::Revoked,
            "{what}"
        );
        assert_eq!(store.list(&Default::default()).expect("list").len(), 2, "{what}");
        store.close().expect("close");

        // The next open finds a sound index: nothing to rebuild.
        let store = fx.open();
        assert_eq!(store.recovery_report().index_rebuilt, None, "{what}");
        store.close().expect("close");
    }
}

#[test]
fn a_partial_snapshot_left_by_a_kill_is_cleared_without_a_rebuild() {
    let fx = Fixture::new();
    let store = fx.init();
    let kept = store.create(NewKey::new("kept")).expect("create");
    let gone = store.create(NewKey::new("gone")).expect("create");
    store.revoke(&gone.record.id, None).expect("revoke");
    store.close().expect("close");
    // What sled leaves when a kill or a full disk cuts its snapshot at open short: a
    // partial `snap.N.generating`, newer than the last whole snapshot.
    for snap in snapshots(&fx.path.join("index")) {
        let bytes = fs::read(&snap).expect("read");
        fs::write(snap.with_extension("ffff.generating"), &bytes[..bytes.len() / 4]).expect("write");
    }

    let store = fx.open();
    assert_eq!(store.recovery_report().index_rebuilt, None, "sled's own data is sound");
    assert!(!fx.path.join("index.broken").exists());
    assert_eq!(store.verify(kept.key.expose()).expect("verify").code, Code::Valid);
    assert_eq!(store.verify(gone.key.expose()).expect("verify").code, Code::Revoked);
    store.close().expect("close");
}

#[test]
fn rebuild_never_needs_the_old_index() {
    let fx = Fixture::new();
    let store = fx.init();
    let kept = store.create(NewKey::new("kept")).expect("create");
    store.close().expect("close");
    let (_, damage) = damages().remove(2);
    damage(&fx.path.join("index"));

    let last = Store::rebuild(&fx.path, fx.config.clone()).expect("rebuild over a damaged index");
    assert!(last >= 2, "the log's last record: {last}");
    let store = fx.open();
    assert_eq!(store.recovery_report().index_rebuilt, None);
    assert_eq!(store.verify(kept.key.expose()).expect("verify").code, Code::Valid);
    store.close().expect("close");
}

#[test]
fn a_damaged_log_is_still_an_error_with_or_without_an_index() {
    let fx = Fixture::new();
    let store = fx.init();
    for i in 0..5 {
        store.create(NewKey::new(format!("k{i}"))).expect("create");
    }
    store.close().expect("close");
    // Damage a record in the middle of the only segment, then the index too.
    let segment = fs::read_dir(fx.path.join("log"))
        .expect("read log dir")
        .map(|e| e.expect("entry").path())
        .find(|p| p.extension().is_some_and(|e| e == "log"))
        .expect("a segment");
    let mut bytes = fs::read(&segment).expect("read");
    let middle = bytes.len() / 2;
    bytes[middle] ^= 0xFF;
    fs::write(&segment, &bytes).expect("write");
    let (_, damage) = damages().remove(2);
    damage(&fx.path.join("index"));

    let opened = Store::open(&fx.path, fx.config.clone());
    assert!(
        matches!(opened, Err(Error::Log(LogError::Corrupt { .. }))),
        "a damaged log must not open: {opened:?}"
    );
    let rebuilt = Store::rebuild(&fx.path, fx.config.clone());
    assert!(
        matches!(rebuilt, Err(Error::Log(LogError::Corrupt { .. }))),
        "a damaged log must not be rebuilt from: {rebuilt:?}"
    );
}

#[test]
fn the_cli_says_so_in_one_line_and_carries_on() {
    let cli = Cli::init();
    let created = cli.json(&["create", "--name", "ci", "--json"]);
    let key = created["key"].as_str().expect("key").to_string();
    let (_, damage) = damages().remove(0);
    damage(&cli.data.join("index"));

    let run = cli.run(&["verify", &key]);
    assert_eq!(run.code, Some(0), "{run:?}");
    let notes: Vec<_> = run
        .stderr
        .lines()
        .filter(|l| l.contains("rebuilt from the log"))
        .collect();
    assert_eq!(notes.len(), 1, "one line on stderr: {run:?}");
    assert!(notes[0].contains("index.broken"), "{run:?}");
    let audit = cli.ok(&["audit", "verify"]);
    assert!(audit.stdout.contains("intact"), "{audit:?}");
}
