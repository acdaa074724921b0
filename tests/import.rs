//! Importing keys of another system by their unsalted SHA-256 (issue 18, item 5), through
//! the public API: hex and base64 hashes; the original plaintext verifies; the first use
//! re-tags the key under the pepper (logged), after which its SHA-256 is gone from the
//! index and the key still verifies; reopening and rebuilding keep both indexes; a revoked
//! imported key never verifies, before or after its re-tag; bad lines are refused with
//! their line and field, and nothing is written.

#![expect(
    clippy::unwrap_used,
    reason = "a test fails by panicking: unwrap, expect and indexing are its assertions"
)]

mod common;

use base64::Engine;
use common::Fixture;
use credstore::event::Sha256Hash;
use credstore::import::{ImportKey, parse_import_line};
use credstore::{Code, Error, EventFilter, InputError, KeyId, Store, VerifyRequest};
use sha2::Digest;

/// A key of the other system: its own prefix, then characters credstore's formats never
/// have (`-`), so it parses against no registered format.
fn legacy_key(n: usize) -> String {
    format!("legacy_{n:04}-Zq8vR2-kT9xW4mP7nB3cL6hJ1gF5dS0aE")
}

fn hex_sha(key: &str) -> String {
    hex::encode(sha2::Sha256::digest(key.as_bytes()))
}

fn base64_sha(key: &str) -> String {
    base64::engine::general_purpose::STANDARD.encode(sha2::Sha256::digest(key.as_bytes()))
}

fn line(key: &str, n: usize, base64: bool) -> String {
    let hash = if base64 {
        format!(r#""sha256_base64":"{}""#, base64_sha(key))
    } else {
        format!(r#""sha256":"{}""#, hex_sha(key))
    };
    format!(r#"{{{hash},"prefix":"legacy_","name":"legacy {n}","project":"billing","metadata":{{"from":"old"}}}}"#)
}

fn import(store: &Store, lines: &[String]) -> credstore::Result<Vec<credstore::KeyRecord>> {
    let keys: Vec<ImportKey> = lines
        .iter()
        .enumerate()
        .map(|(i, l)| parse_import_line(l, i + 1))
        .collect::<Result<_, _>>()?;
    store.import(keys, |_| {})
}

fn sha(key: &str) -> Sha256Hash {
    Sha256Hash(sha2::Sha256::digest(key.as_bytes()).into())
}

fn retag_events(store: &Store, id: &KeyId) -> usize {
    store
        .events(&EventFilter {
            key: Some(id.clone()),
            kind: Some("key.retagged".into()),
            ..EventFilter::default()
        })
        .unwrap()
        .len()
}

#[test]
fn hex_and_base64_hashes_import_and_the_plaintext_verifies_then_is_retagged_on_first_use() {
    let fx = Fixture::new();
    let store = fx.init();
    let keys = [legacy_key(1), legacy_key(2)];
    let records = import(&store, &[line(&keys[0], 1, false), line(&keys[1], 2, true)]).unwrap();
    assert_eq!(records.len(), 2);
    assert_eq!(records[0].project, "billing");
    assert_eq!(
        records[0].start, "legacy_",
        "no more than the prefix is known before first use"
    );
    assert_eq!(store.imports_pending(), 2);
    for (key, record) in keys.iter().zip(&records) {
        assert_eq!(store.indexed_sha256(&sha(key)).unwrap().as_ref(), Some(&record.id));
        assert_eq!(retag_events(&store, &record.id), 0);

        let d = store.verify(key).unwrap();
        assert_eq!(d.code, Code::Valid, "{key}");
        assert_eq!(d.key.as_ref().unwrap().id, record.id);
        // Re-tagged: the SHA-256 left the index, an event says so, the key still verifies.
        assert_eq!(store.indexed_sha256(&sha(key)).unwrap(), None);
        assert_eq!(retag_events(&store, &record.id), 1);
        assert_eq!(store.verify(key).unwrap().code, Code::Valid);
        store.clear_cache().unwrap();
        assert_eq!(
            store.verify(key).unwrap().code,
            Code::Valid,
            "found by its tag from sled"
        );
        assert_eq!(retag_events(&store, &record.id), 1, "re-tagged once");
        let shown = store.get(&record.id).unwrap();
        assert_eq!(
            shown.record.start,
            &key[..11],
            "the start is known once the key was seen"
        );
    }
    assert_eq!(store.imports_pending(), 0);
    // A near miss is not a key: one character off.
    let wrong = keys[0].replace("Zq8", "Zq9");
    assert_ne!(store.verify(&wrong).unwrap().code, Code::Valid);
    // The log shows neither hash nor tag.
    for (seq, event) in store.events(&EventFilter::default()).unwrap() {
        let json = event.to_json(seq).to_string();
        for key in &keys {
            assert!(!json.contains(&hex_sha(key)) && !json.contains(key.as_str()), "{json}");
        }
    }
}

#[test]
fn reopen_and_rebuild_keep_both_indexes() {
    let fx = Fixture::new();
    let store = fx.init();
    let (used, unused) = (legacy_key(1), legacy_key(2));
    let records = import(&store, &[line(&used, 1, false), line(&unused, 2, false)]).unwrap();
    assert_eq!(store.verify(&used).unwrap().code, Code::Valid);
    store.close().unwrap();

    let check = |store: &Store| {
        assert_eq!(store.imports_pending(), 1);
        assert_eq!(store.indexed_sha256(&sha(&used)).unwrap(), None);
        assert_eq!(
            store.indexed_sha256(&sha(&unused)).unwrap(),
            Some(records[1].id.clone())
        );
        assert_eq!(store.verify(&used).unwrap().code, Code::Valid);
    };
    check(&fx.open());
    Store::rebuild(&fx.path, fx.config.clone()).unwrap();
    let store = fx.open();
    check(&store);
    assert!(store.verify_log().unwrap().index_differs.is_empty());
    // The one never used re-tags after the rebuild as before.
    assert_eq!(store.verify(&unused).unwrap().code, Code::Valid);
    assert_eq!(store.indexed_sha256(&sha(&unused)).unwrap(), None);
    assert_eq!(store.imports_pending(), 0);
}

#[test]
fn a_revoked_imported_key_never_verifies_before_or_after_its_retag() {
    let fx = Fixture::new();
    let store = fx.init();
    let (before, after) = (legacy_key(1), legacy_key(2));
    let records = import(&store, &[line(&before, 1, false), line(&after, 2, true)]).unwrap();

    // Revoked before any use: refused, and not re-tagged.
    store.revoke(&records[0].id, Some("migrated badly")).unwrap();
    assert_eq!(store.verify(&before).unwrap().code, Code::Revoked);
    assert_eq!(retag_events(&store, &records[0].id), 0);
    // Revoked after its re-tag.
    assert_eq!(store.verify(&after).unwrap().code, Code::Valid);
    store.revoke(&records[1].id, None).unwrap();
    assert_eq!(store.verify(&after).unwrap().code, Code::Revoked);

    // Also after a reopen, from sled, and after a rebuild.
    store.close().unwrap();
    for reopen in [false, true] {
        if reopen {
            Store::rebuild(&fx.path, fx.config.clone()).unwrap();
        }
        let store = fx.open();
        assert_eq!(store.verify(&before).unwrap().code, Code::Revoked);
        assert_eq!(store.verify(&after).unwrap().code, Code::Revoked);
        // The leaked key itself finds its record (revoke --key -), re-tagged or not.
        assert_eq!(store.find_by_key(&before).unwrap().unwrap().record.id, records[0].id);
        assert_eq!(store.find_by_key(&after).unwrap().unwrap().record.id, records[1].id);
        store.close().unwrap();
    }
}

#[test]
fn racing_first_uses_retag_once_and_all_verify() {
    let fx = Fixture::new();
    let store = std::sync::Arc::new(fx.init());
    let key = legacy_key(7);
    let records = import(&store, &[line(&key, 1, false)]).unwrap();
    let threads: Vec<_> = (0..8)
        .map(|_| {
            let (store, key) = (store.clone(), key.clone());
            std::thread::spawn(move || store.verify_with(&VerifyRequest::new(&key).cost(0)).unwrap().code)
        })
        .collect();
    for t in threads {
        assert_eq!(t.join().unwrap(), Code::Valid);
    }
    assert_eq!(retag_events(&store, &records[0].id), 1);
    assert_eq!(store.imports_pending(), 0);
}

#[test]
fn bad_lines_are_refused_by_line_and_field_and_nothing_is_written() {
    let fx = Fixture::new();
    let store = fx.init();
    let before = store.events(&EventFilter::default()).unwrap().len();
    let good = line(&legacy_key(1), 1, false);
    let cases: Vec<(Vec<String>, usize, &str)> = vec![
        (
            vec![good.clone(), r#"{"prefix":"legacy_","name":"x"}"#.into()],
            2,
            "sha256",
        ),
        (vec![good.clone(), good.replace("legacy_\"", "leg acy\"")], 2, "prefix"),
        (
            vec![good.clone(), good.replace("\"billing\"", "\"bad project!\"")],
            2,
            "project",
        ),
        (vec![good.clone(), good.replace(r#""name""#, r#""nmae""#)], 2, "nmae"),
        // The same key twice.
        (vec![good.clone(), good.clone()], 2, "sha256"),
        // An unknown plan: a state check, still before anything is written.
        (
            vec![
                good.clone(),
                line(&legacy_key(2), 2, false).replace(r#""project""#, r#""plan":"gold","project""#),
            ],
            2,
            "plan",
        ),
    ];
    for (lines, bad_line, bad_field) in cases {
        let parsed: Result<Vec<ImportKey>, InputError> = lines
            .iter()
            .enumerate()
            .map(|(i, l)| parse_import_line(l, i + 1))
            .collect();
        let err = match parsed {
            Err(e) => Error::Input(e),
            Ok(keys) => store.import(keys, |_| {}).expect_err("refused"),
        };
        match &err {
            Error::Input(InputError::BadLine { line, field, .. }) => {
                assert_eq!((*line, field.as_str()), (bad_line, bad_field), "{err}");
            }
            other => panic!("{other:?}"),
        }
        assert!(!err.to_string().contains(&hex_sha(&legacy_key(1))), "{err}");
        assert_eq!(store.events(&EventFilter::default()).unwrap().len(), before, "{err}");
        assert_eq!(store.imports_pending(), 0);
    }
    // Importing a hash already imported is refused too, naming the line.
    import(&store, std::slice::from_ref(&good)).unwrap();
    let err = import(&store, &[line(&legacy_key(3), 1, true), good]).expect_err("refused");
    assert!(
        matches!(&err, Error::Input(InputError::BadLine { line: 2, field, .. }) if field == "sha256"),
        "{err}"
    );
    assert_eq!(store.imports_pending(), 1);
}

#[test]
fn imported_keys_list_show_rotate_and_keep_their_settings() {
    let fx = Fixture::new();
    let store = fx.init();
    let key = legacy_key(1);
    let l = line(&key, 1, false).replace(r#""project""#, r#""rate_limits":["2/1m"],"project""#);
    let records = import(&store, &[l]).unwrap();
    let id = &records[0].id;
    let listed = store.list(&credstore::ListFilter::default()).unwrap();
    assert!(listed.iter().any(|k| &k.record.id == id));
    // Its settings apply from the first use: two a minute.
    assert_eq!(store.verify(&key).unwrap().code, Code::Valid);
    assert_eq!(store.verify(&key).unwrap().code, Code::Valid);
    assert_eq!(store.verify(&key).unwrap().code, Code::RateLimited);
    // A rotation issues a credstore key with the same prefix; the old one dies.
    let rotated = store.rotate(id, None).unwrap();
    assert!(rotated.new.key.expose().starts_with("legacy_"));
    assert_eq!(store.verify(&key).unwrap().code, Code::Revoked);
    fx.clock.advance(60_000);
    assert_eq!(store.verify(rotated.new.key.expose()).unwrap().code, Code::Valid);
}
