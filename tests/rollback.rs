//! Rollbacks of the whole data directory, which nothing inside it can see, are found
//! against the witness outside it (`Config::witness`, `CREDSTORE_WITNESS`); after a
//! deliberate restore, `reset-head` accepts the log as it is and says so in the log.

#![expect(
    clippy::expect_used,
    reason = "a test fails by panicking: unwrap, expect and indexing are its assertions"
)]

mod common;

use std::path::Path;

use common::{Cli, Fixture, copy_dir};
use credstore::{Code, Error, EventFilter, LogError, NewKey, OpenError, Store};

fn with_witness(fx: &mut Fixture) -> std::path::PathBuf {
    let witness = fx.path.with_file_name("witness.head");
    fx.config = fx.config.clone().witness(&witness);
    witness
}

fn replace_dir(dir: &Path, with: &Path) {
    std::fs::remove_dir_all(dir).expect("remove");
    copy_dir(with, dir);
}

fn kinds(store: &Store) -> Vec<&'static str> {
    store
        .events(&EventFilter::default())
        .expect("events")
        .iter()
        .map(|(_, e)| e.kind_name())
        .collect()
}

#[test]
fn a_whole_data_directory_put_back_is_found_against_the_witness() {
    let mut fx = Fixture::new();
    let witness = with_witness(&mut fx);
    let store = fx.init();
    let key = store.create(NewKey::new("leaky")).expect("create");
    store.close().expect("close");
    let backup = fx.path.with_file_name("backup");
    copy_dir(&fx.path, &backup);

    let store = fx.open();
    store.revoke(&key.record.id, Some("leaked")).expect("revoke");
    store.close().expect("close");
    assert!(witness.exists(), "the witness is written");
    replace_dir(&fx.path, &backup);

    // Everything inside the directory agrees with itself: only the witness can tell.
    let opened = Store::open(&fx.path, fx.config.clone());
    assert!(
        matches!(opened, Err(Error::Open(OpenError::RolledBack(_)))),
        "{opened:?}"
    );
    let message = opened.err().map(|e| e.to_string()).unwrap_or_default();
    assert!(
        message.contains("rolled back") && message.contains("reset-head"),
        "{message}"
    );

    // Without the witness the rollback goes unseen, and the revoked key is back: why the
    // witness must live where the data directory's attacker cannot write.
    let mut blind = fx.config.clone();
    blind.witness = None;
    let store = Store::open(&fx.path, blind).expect("open without the witness");
    assert_eq!(store.verify(key.key.expose()).expect("verify").code, Code::Valid);
    store.close().expect("close");
}

#[test]
fn a_log_cut_back_with_its_older_head_and_no_index_is_found() {
    let mut fx = Fixture::new();
    let _witness = with_witness(&mut fx);
    let store = fx.init();
    let key = store.create(NewKey::new("k")).expect("create");
    store.close().expect("close");
    let old_log = fx.path.with_file_name("old-log");
    copy_dir(&fx.path.join("log"), &old_log);

    let store = fx.open();
    store.revoke(&key.record.id, None).expect("revoke");
    store.close().expect("close");
    // The log cut back to the older copy, its HEAD with it, the index deleted.
    replace_dir(&fx.path.join("log"), &old_log);
    std::fs::remove_dir_all(fx.path.join("index")).expect("remove index");

    let opened = Store::open(&fx.path, fx.config.clone());
    assert!(
        matches!(opened, Err(Error::Open(OpenError::RolledBack(_)))),
        "{opened:?}"
    );
}

#[test]
fn another_history_at_the_witness_record_is_found() {
    let mut fx = Fixture::new();
    let witness = with_witness(&mut fx);
    let store = fx.init();
    let first = store.create(NewKey::new("first")).expect("create");
    store.close().expect("close");
    let fork = fx.path.with_file_name("fork");
    copy_dir(&fx.path, &fork);
    let store = fx.open();
    store.revoke(&first.record.id, None).expect("revoke");
    store.close().expect("close");
    let seen = std::fs::read(&witness).expect("witness");

    // The fork makes as many records, so it reaches the record the witness saw.
    let mut config = fx.config.clone();
    config.witness = None;
    let forked = Store::open(&fork, config).expect("open the fork");
    forked.create(NewKey::new("other")).expect("create");
    forked.close().expect("close");
    replace_dir(&fx.path, &fork);
    std::fs::write(&witness, seen).expect("witness kept");

    let opened = Store::open(&fx.path, fx.config.clone());
    let message = opened.err().map(|e| e.to_string()).unwrap_or_default();
    assert!(message.contains("another history"), "{message}");
}

#[test]
fn reset_head_accepts_a_restored_directory_and_records_it() {
    let mut fx = Fixture::new();
    let witness = with_witness(&mut fx);
    let store = fx.init();
    let key = store.create(NewKey::new("k")).expect("create");
    store.close().expect("close");
    let backup = fx.path.with_file_name("backup");
    copy_dir(&fx.path, &backup);
    let store = fx.open();
    store.revoke(&key.record.id, None).expect("revoke");
    store.close().expect("close");
    replace_dir(&fx.path, &backup);
    assert!(Store::open(&fx.path, fx.config.clone()).is_err());

    let seq =
        Store::reset_head(&fx.path, fx.config.clone(), Some("restored from last night's backup")).expect("reset head");
    let store = fx.open();
    assert_eq!(store.verify(key.key.expose()).expect("verify").code, Code::Valid);
    let events = kinds(&store);
    assert_eq!(events.last(), Some(&"head.reset"), "{events:?}");
    assert!(store.verify_log().expect("audit").index_differs.is_empty());
    store.close().expect("close");
    assert!(seq >= 2, "{seq}");
    assert!(witness.exists());
}

#[test]
fn after_the_last_segment_is_deleted_reset_head_makes_the_store_open() {
    let mut fx = Fixture::new();
    fx.config = fx.config.clone().segment_size(4096);
    let store = fx.init();
    let mut keys = Vec::new();
    for i in 0..100 {
        keys.push(store.create(NewKey::new(format!("key {i}"))).expect("create"));
    }
    store.close().expect("close");
    let mut segments: Vec<_> = std::fs::read_dir(fx.path.join("log"))
        .expect("read log dir")
        .map(|e| e.expect("entry").path())
        .filter(|p| p.extension().is_some_and(|e| e == "log"))
        .collect();
    segments.sort();
    assert!(segments.len() >= 3, "{segments:?}");
    let last = segments.pop().expect("a last segment");
    std::fs::remove_file(&last).expect("delete the last segment");

    let opened = Store::open(&fx.path, fx.config.clone());
    assert!(
        matches!(
            opened,
            Err(Error::Log(LogError::HeadConflict(_))) | Err(Error::Open(OpenError::IndexAhead(_)))
        ),
        "{opened:?}"
    );
    Store::reset_head(&fx.path, fx.config.clone(), None).expect("reset head");
    let store = fx.open();
    assert_eq!(
        store.verify(keys[0].key.expose()).expect("verify").code,
        Code::Valid,
        "a key in the kept segments"
    );
    assert!(store.verify_log().expect("audit").index_differs.is_empty());
    store.close().expect("close");
}

#[test]
fn the_cli_asks_before_it_resets_the_head() {
    let cli = Cli::init();
    cli.ok(&["create", "--name", "k"]);
    let refused = cli.run(&["reset-head"]);
    assert_eq!(refused.code, Some(2), "{refused:?}");
    assert!(refused.stderr.contains("--yes"), "{refused:?}");
    let done = cli.ok(&["reset-head", "--yes", "--reason", "restored"]);
    assert!(done.stdout.contains("now vouches for record"), "{done:?}");
    let audit = cli.json(&["audit", "--json"]);
    let text = audit.to_string();
    assert!(text.contains("head.reset") && text.contains("restored"), "{text}");
}
