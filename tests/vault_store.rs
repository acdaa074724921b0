//! The provider-key vault through the store: round trips, versions as rotation, the log
//! records every write and read without values, master keys checked at open, rotation of
//! the master key without decrypting a secret, and no secret on disk or in output.

#![expect(
    clippy::unwrap_used,
    reason = "a test fails by panicking: unwrap, expect and indexing are its assertions"
)]

use std::path::Path;

use credstore::vault::{MasterKey, MasterKeyring, VaultError, data_decryptions_on_this_thread};
use credstore::{Config, Error, InputError, OpenError, Pepper, StateError, Store};

const SECRETS: [&str; 3] = [
    "sk-provider-ALPHA-3b1f0c9e8d7a6b5c",
    "sk-ant-BRAVO-1234567890abcdef1234",
    "AKIA-CHARLIE-9f8e7d6c5b4a39281706",
];

fn ring(version: u32, byte: u8) -> MasterKeyring {
    MasterKeyring::new(MasterKey::from_bytes(version, [byte; 32]).unwrap())
}

fn config(master: MasterKeyring) -> Config {
    Config::new().pepper(Pepper::from_bytes([3; 32])).master_keys(master)
}

fn init(dir: &Path) -> Store {
    Store::init(dir.join("data"), config(ring(1, 0x11))).unwrap()
}

#[test]
fn put_get_versions_list_delete() {
    let tmp = tempfile::tempdir().unwrap();
    let store = init(tmp.path());
    let v1 = store.vault_put(Some("acme"), "openai", SECRETS[0].as_bytes()).unwrap();
    assert_eq!(
        (v1.project.as_str(), v1.name.as_str(), v1.version, v1.master_version),
        ("acme", "openai", 1, 1)
    );
    assert_eq!(
        store.vault_get(Some("acme"), "openai", None).unwrap().expose(),
        SECRETS[0]
    );
    // Rotating a provider key is a put: the next get returns it, no restart.
    let v2 = store.vault_put(Some("acme"), "openai", SECRETS[1].as_bytes()).unwrap();
    assert_eq!(v2.version, 2);
    assert_eq!(
        store.vault_get(Some("acme"), "openai", None).unwrap().expose(),
        SECRETS[1]
    );
    assert_eq!(
        store.vault_get(Some("acme"), "openai", Some(1)).unwrap().expose(),
        SECRETS[0]
    );
    store.vault_put(None, "anthropic", SECRETS[2].as_bytes()).unwrap();
    let listed = store.vault_list(None).unwrap();
    assert_eq!(listed.len(), 3);
    assert_eq!(store.vault_list(Some("acme")).unwrap().len(), 2);
    let rendered = format!("{listed:?}");
    for s in SECRETS {
        assert!(!rendered.contains(s));
    }
    // Unknown versions and names are clear errors.
    assert!(matches!(
        store.vault_get(Some("acme"), "openai", Some(9)),
        Err(Error::State(StateError::UnknownSecret(_)))
    ));
    store.vault_delete(Some("acme"), "openai").unwrap();
    assert!(matches!(
        store.vault_get(Some("acme"), "openai", None),
        Err(Error::State(StateError::UnknownSecret(_)))
    ));
    assert!(matches!(
        store.vault_delete(Some("acme"), "openai"),
        Err(Error::State(StateError::UnknownSecret(_)))
    ));
    // Every write and read is in the log, without the value.
    let kinds: Vec<&str> = store
        .events(&Default::default())
        .unwrap()
        .iter()
        .map(|(_, e)| e.kind_name())
        .filter(|k| k.starts_with("vault."))
        .collect();
    assert_eq!(
        kinds,
        [
            "vault.master_added",
            "vault.put",
            "vault.read",
            "vault.put",
            "vault.read",
            "vault.read",
            "vault.put",
            "vault.deleted"
        ]
    );
    // A deleted secret starts again at version 1; the old blobs are gone.
    assert_eq!(store.vault_put(Some("acme"), "openai", b"again").unwrap().version, 1);
    assert_eq!(store.vault_get(Some("acme"), "openai", None).unwrap().expose(), "again");
}

#[test]
fn bad_input_is_refused_and_writes_nothing() {
    let tmp = tempfile::tempdir().unwrap();
    let store = init(tmp.path());
    let before = store.events(&Default::default()).unwrap().len();
    assert!(matches!(
        store.vault_put(None, "x", b""),
        Err(
            Error::Vault(credstore::vault::VaultError::Input(InputError::EmptySecret))
                | Error::Input(InputError::EmptySecret)
        )
    ));
    let big = vec![b'a'; credstore::vault::MAX_SECRET_LEN + 1];
    assert!(store.vault_put(None, "x", &big).unwrap_err().is_caller_error());
    for bad in ["", "has space", "slash/name", &"n".repeat(129)] {
        assert!(
            store.vault_put(None, bad, b"v").unwrap_err().is_caller_error(),
            "{bad:?}"
        );
    }
    assert!(
        store
            .vault_put(Some("bad project!"), "x", b"v")
            .unwrap_err()
            .is_caller_error()
    );
    assert_eq!(store.events(&Default::default()).unwrap().len(), before);
}

#[test]
fn master_keys_are_checked_at_open() {
    let tmp = tempfile::tempdir().unwrap();
    let path = tmp.path().join("data");
    let store = init(tmp.path());
    store.vault_put(None, "openai", SECRETS[0].as_bytes()).unwrap();
    store.close().unwrap();
    let wrong = Store::open(&path, config(ring(1, 0x22))).unwrap_err();
    assert!(matches!(wrong, Error::Open(OpenError::WrongMasterKey(1))), "{wrong}");
    // Without a master key the store opens (only the vault's operations need one: issue
    // 17, item 2); they refuse, and nothing is written.
    let store = Store::open(&path, Config::new().pepper(Pepper::from_bytes([3; 32]))).unwrap();
    let before = store.events(&Default::default()).unwrap().len();
    for refused in [
        store.vault_get(None, "openai", None).map(drop),
        store.vault_put(None, "openai", b"v2").map(drop),
        store
            .vault_rotate_master(MasterKey::from_bytes(2, [0x33; 32]).unwrap(), |_, _| {})
            .map(drop),
    ] {
        let err = refused.unwrap_err();
        assert!(matches!(err, Error::Vault(VaultError::NoMasterKey)), "{err}");
    }
    assert_eq!(store.vault_list(None).unwrap().len(), 1, "listing needs no key");
    assert_eq!(store.events(&Default::default()).unwrap().len(), before);
    store.close().unwrap();
    let store = Store::open(&path, config(ring(1, 0x11))).unwrap();
    assert_eq!(store.vault_get(None, "openai", None).unwrap().expose(), SECRETS[0]);
}

#[test]
fn rotate_master_rewraps_without_decrypting_and_retires_the_old_key() {
    let tmp = tempfile::tempdir().unwrap();
    let path = tmp.path().join("data");
    let store = init(tmp.path());
    for (i, s) in SECRETS.iter().enumerate() {
        store.vault_put(Some("acme"), &format!("k{i}"), s.as_bytes()).unwrap();
    }
    assert!(store.vault_retire_below(2).is_err(), "nothing to retire into yet");
    let before = data_decryptions_on_this_thread();
    let mut seen = Vec::new();
    let n = store
        .vault_rotate_master(MasterKey::from_bytes(2, [0x33; 32]).unwrap(), |done, total| {
            seen.push((done, total))
        })
        .unwrap();
    assert_eq!(n, 3);
    assert_eq!(data_decryptions_on_this_thread(), before, "rotation decrypted a secret");
    assert_eq!(seen.last(), Some(&(3, 3)));
    assert!(store.vault_list(None).unwrap().iter().all(|s| s.master_version == 2));
    store.vault_retire_below(2).unwrap();
    for (i, s) in SECRETS.iter().enumerate() {
        assert_eq!(
            store.vault_get(Some("acme"), &format!("k{i}"), None).unwrap().expose(),
            *s
        );
    }
    store.close().unwrap();
    // Reopened with only the new key, everything reads.
    let store = Store::open(&path, config(ring(2, 0x33))).unwrap();
    assert_eq!(store.vault_get(Some("acme"), "k1", None).unwrap().expose(), SECRETS[1]);
    store.close().unwrap();
    // A keyring still holding the retired key does not let it decrypt: the minimum
    // decryption version persisted.
    let mut both = ring(1, 0x11);
    both.insert(MasterKey::from_bytes(2, [0x33; 32]).unwrap()).unwrap();
    let store = Store::open(&path, config(both)).unwrap();
    assert_eq!(store.vault_get(Some("acme"), "k2", None).unwrap().expose(), SECRETS[2]);
}

#[test]
fn no_secret_on_disk_or_in_output() {
    let tmp = tempfile::tempdir().unwrap();
    let path = tmp.path().join("data");
    let store = init(tmp.path());
    for (i, s) in SECRETS.iter().enumerate() {
        store.vault_put(None, &format!("k{i}"), s.as_bytes()).unwrap();
        let got = store.vault_get(None, &format!("k{i}"), None).unwrap();
        assert!(!format!("{got:?}").contains(s));
    }
    store
        .vault_rotate_master(MasterKey::from_bytes(2, [0x44; 32]).unwrap(), |_, _| {})
        .unwrap();
    let exported: Vec<String> = store
        .events(&Default::default())
        .unwrap()
        .iter()
        .map(|(seq, e)| format!("{} {e:?}", e.to_json(*seq)))
        .collect();
    store.close().unwrap();
    for line in &exported {
        for s in SECRETS {
            assert!(!line.contains(s), "a secret in the audit output");
        }
    }
    for file in walk(&path) {
        let bytes = std::fs::read(&file).unwrap();
        for s in SECRETS {
            assert!(
                !bytes.windows(s.len()).any(|w| w == s.as_bytes()),
                "{s} found in {}",
                file.display()
            );
        }
    }
}

fn walk(dir: &Path) -> Vec<std::path::PathBuf> {
    let mut out = Vec::new();
    for entry in std::fs::read_dir(dir).unwrap() {
        let path = entry.unwrap().path();
        if path.is_dir() {
            out.extend(walk(&path));
        } else {
            out.push(path);
        }
    }
    out
}
