//! The index cannot lie: an entry changed without the pepper, put back to an older value of
//! its own, pointed at another key, or taken from another history of the store is found
//! when the store opens, before any key is served from it; the index is then set aside
//! and rebuilt from the log, and the keys whose indexed state the log does not produce
//! are named. These write `DATA/index` with sled directly, as an attacker with write
//! access to the data directory but without the pepper would.

#![expect(
    clippy::expect_used,
    clippy::indexing_slicing,
    reason = "a test fails by panicking: unwrap, expect and indexing are its assertions"
)]

mod common;

use std::path::Path;
use std::time::{Duration, Instant};

use common::{Cli, Fixture, copy_dir};
use credstore::policy::RoleName;
use credstore::{Code, KeyUpdate, NewKey, Store, VerifyRequest};

/// The format byte and MAC before a sealed value's payload.
const SEAL_LEN: usize = 17;

/// Opens the index with sled, waiting out the lock a just-closed store's threads hold
/// for a few milliseconds.
fn sled_index(data: &Path) -> sled::Db {
    let deadline = Instant::now() + Duration::from_secs(5);
    loop {
        match sled::open(data.join("index")) {
            Ok(db) => return db,
            Err(e) if Instant::now() < deadline => {
                let _ = e;
                std::thread::sleep(Duration::from_millis(10));
            }
            Err(e) => panic!("cannot open the index with sled: {e}"),
        }
    }
}

fn raw(data: &Path, tree: &str, key: &[u8]) -> Vec<u8> {
    let db = sled_index(data);
    let value = db
        .open_tree(tree)
        .expect("tree")
        .get(key)
        .expect("get")
        .expect("an entry");
    value.to_vec()
}

fn put_raw(data: &Path, tree: &str, key: &[u8], value: &[u8]) {
    let db = sled_index(data);
    db.open_tree(tree).expect("tree").insert(key, value).expect("insert");
    db.flush().expect("flush");
}

/// The `by_hash` key (the tag) of the key with this id.
fn tag_of(data: &Path, id: &str) -> Vec<u8> {
    let db = sled_index(data);
    let tree = db.open_tree("by_hash").expect("tree");
    for item in tree.iter() {
        let (tag, value) = item.expect("entry");
        if &value[SEAL_LEN..] == id.as_bytes() {
            return tag.to_vec();
        }
    }
    panic!("no tag for {id}");
}

/// Opens the store and checks that it found the tampering: the index was rebuilt, for
/// the reason given, naming `id`.
fn open_expecting_rebuild(fx: &Fixture, reason: &str, id: &str) -> Store {
    let store = fx.open();
    let why = store
        .recovery_report()
        .index_rebuilt
        .clone()
        .unwrap_or_else(|| panic!("the tampering was not found (expected: {reason})"));
    assert!(why.contains(reason), "{why}");
    assert!(why.contains(id), "the report names the key: {why}");
    store
}

#[test]
fn a_revoked_key_put_back_to_its_older_sealed_value_stays_revoked() {
    let fx = Fixture::new();
    let store = fx.init();
    let key = store.create(NewKey::new("leaky")).expect("create");
    let id = key.record.id.to_string();
    store.close().expect("close");
    let before = raw(&fx.path, "keys", id.as_bytes());

    let store = fx.open();
    store.revoke(&key.record.id, Some("leaked")).expect("revoke");
    store.close().expect("close");
    put_raw(&fx.path, "keys", id.as_bytes(), &before);

    let store = open_expecting_rebuild(&fx, "do not add up", &id);
    assert_eq!(store.verify(key.key.expose()).expect("verify").code, Code::Revoked);
    store.close().expect("close");
}

#[test]
fn an_admin_key_demoted_and_put_back_stays_demoted() {
    let fx = Fixture::new();
    let store = fx.init();
    let key = store
        .create(NewKey::new("ops").role(RoleName::parse("admin").expect("role")))
        .expect("create");
    let id = key.record.id.to_string();
    store.close().expect("close");
    let admin = raw(&fx.path, "keys", id.as_bytes());

    let store = fx.open();
    let demote = KeyUpdate {
        role: Some(RoleName::parse("viewer").expect("role")),
        ..KeyUpdate::default()
    };
    store.update(&key.record.id, demote).expect("update");
    store.close().expect("close");
    put_raw(&fx.path, "keys", id.as_bytes(), &admin);

    let store = open_expecting_rebuild(&fx, "do not add up", &id);
    // An admin key is checked by the management API's verification (issue 17, item 14:
    // customer verification never accepts one).
    let decision = store
        .verify_admin(&VerifyRequest::new(key.key.expose()))
        .expect("verify");
    let role = decision
        .key
        .as_ref()
        .and_then(|k| k.role.as_ref())
        .map(|r| r.as_str().to_string());
    assert_eq!(role.as_deref(), Some("viewer"));
    assert!(
        !decision.is_valid(),
        "a demoted admin key manages nothing: {decision:?}"
    );
    assert!(store.authorize_admin(key.key.expose(), "test").is_err());
    store.close().expect("close");
}

#[test]
fn a_changed_byte_fails_its_mac() {
    let fx = Fixture::new();
    let store = fx.init();
    let key = store.create(NewKey::new("k")).expect("create");
    let id = key.record.id.to_string();
    store.revoke(&key.record.id, None).expect("revoke");
    store.close().expect("close");
    let mut value = raw(&fx.path, "keys", id.as_bytes());
    let last = value.len() - 1;
    value[last] ^= 1;
    put_raw(&fx.path, "keys", id.as_bytes(), &value);

    let store = open_expecting_rebuild(&fx, "fails its MAC", &id);
    assert_eq!(store.verify(key.key.expose()).expect("verify").code, Code::Revoked);
    store.close().expect("close");
}

#[test]
fn a_value_written_in_the_old_unsealed_format_is_refused() {
    let fx = Fixture::new();
    let store = fx.init();
    let key = store.create(NewKey::new("k")).expect("create");
    let id = key.record.id.to_string();
    store.revoke(&key.record.id, None).expect("revoke");
    store.close().expect("close");
    // Format 1 was the format byte, then bincode: what sled and bincode alone can write.
    let sealed = raw(&fx.path, "keys", id.as_bytes());
    let mut unsealed = vec![1];
    unsealed.extend_from_slice(&sealed[SEAL_LEN..]);
    put_raw(&fx.path, "keys", id.as_bytes(), &unsealed);

    let store = open_expecting_rebuild(&fx, "unknown value format 1", &id);
    assert_eq!(store.verify(key.key.expose()).expect("verify").code, Code::Revoked);
    store.close().expect("close");
}

#[test]
fn a_tag_pointed_at_another_key_fails_its_mac() {
    let fx = Fixture::new();
    let store = fx.init();
    let revoked = store.create(NewKey::new("revoked")).expect("create");
    let valid = store.create(NewKey::new("valid")).expect("create");
    store.revoke(&revoked.record.id, None).expect("revoke");
    store.close().expect("close");
    // The revoked key's tag now names the valid key.
    let revoked_tag = tag_of(&fx.path, revoked.record.id.as_str());
    let valid_tag = tag_of(&fx.path, valid.record.id.as_str());
    let valid_entry = raw(&fx.path, "by_hash", &valid_tag);
    put_raw(&fx.path, "by_hash", &revoked_tag, &valid_entry);

    let store = fx.open();
    let why = store.recovery_report().index_rebuilt.clone().expect("found");
    assert!(why.contains("by_hash") && why.contains("fails its MAC"), "{why}");
    assert_eq!(store.verify(revoked.key.expose()).expect("verify").code, Code::Revoked);
    assert_eq!(store.verify(valid.key.expose()).expect("verify").code, Code::Valid);
    store.close().expect("close");
}

#[test]
fn a_whole_index_rolled_back_is_caught_up_by_the_log() {
    let fx = Fixture::new();
    let store = fx.init();
    let key = store.create(NewKey::new("k")).expect("create");
    store.close().expect("close");
    let old = fx.path.with_file_name("index.old");
    copy_dir(&fx.path.join("index"), &old);

    let store = fx.open();
    store.revoke(&key.record.id, None).expect("revoke");
    store.close().expect("close");
    std::fs::remove_dir_all(fx.path.join("index")).expect("remove");
    copy_dir(&old, &fx.path.join("index"));

    // Consistent with itself, but older: open replays the log past it.
    let store = fx.open();
    assert_eq!(store.recovery_report().index_rebuilt, None);
    assert_eq!(store.verify(key.key.expose()).expect("verify").code, Code::Revoked);
    store.close().expect("close");
}

#[test]
fn an_index_from_a_fork_of_the_store_is_refused() {
    let fx = Fixture::new();
    let store = fx.init();
    let first = store.create(NewKey::new("first")).expect("create");
    let second = store.create(NewKey::new("second")).expect("create");
    store.close().expect("close");
    // A fork: the same store (id, pepper) copied, each copy revoking another key.
    let fork = fx.path.with_file_name("fork");
    copy_dir(&fx.path, &fork);
    let store = fx.open();
    store.revoke(&first.record.id, None).expect("revoke");
    store.close().expect("close");
    let forked = Store::open(&fork, fx.config.clone()).expect("open the fork");
    forked.revoke(&second.record.id, None).expect("revoke");
    forked.close().expect("close");
    // The fork's index, sealed with the same keys and at the same record, put in.
    std::fs::remove_dir_all(fx.path.join("index")).expect("remove");
    copy_dir(&fork.join("index"), &fx.path.join("index"));

    let store = fx.open();
    let why = store.recovery_report().index_rebuilt.clone().expect("found");
    assert!(why.contains("another history"), "{why}");
    assert!(
        why.contains(first.record.id.as_str()) && why.contains(second.record.id.as_str()),
        "{why}"
    );
    assert_eq!(store.verify(first.key.expose()).expect("verify").code, Code::Revoked);
    assert_eq!(store.verify(second.key.expose()).expect("verify").code, Code::Valid);
    let check = store.verify_log().expect("audit");
    assert!(check.index_differs.is_empty(), "{:?}", check.index_differs);
    store.close().expect("close");
}

#[test]
fn audit_verify_names_the_key_and_then_agrees() {
    let cli = Cli::init();
    let created = cli.json(&["create", "--name", "ci", "--json"]);
    let id = created["id"].as_str().expect("id").to_string();
    let before = raw(&cli.data, "keys", id.as_bytes());
    cli.ok(&["revoke", &id, "--yes"]);
    put_raw(&cli.data, "keys", id.as_bytes(), &before);

    let run = cli.ok(&["audit", "verify"]);
    let note: Vec<_> = run
        .stderr
        .lines()
        .filter(|l| l.contains("rebuilt from the log"))
        .collect();
    assert_eq!(note.len(), 1, "{run:?}");
    assert!(note[0].contains(&id), "{run:?}");
    assert!(run.stdout.contains("index agrees with the log"), "{run:?}");
}
