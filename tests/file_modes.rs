//! Every file and directory a store creates is 0600 / 0700 (docs/SECURITY.md, "Files"),
//! sled's index included: made through the CLI and through the library, after keys were
//! created, verified, rotated and revoked, secrets put in the vault (large enough for sled
//! to write blobs), the index rebuilt, and the store closed; and an index left 0755 / 0644
//! by an older build is brought back on open.
#![cfg(unix)]
#![expect(
    clippy::expect_used,
    reason = "a test fails by panicking: unwrap, expect and indexing are its assertions"
)]

mod common;

use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};

use common::Cli;
use credstore::{Config, KeyId, NewKey, Store};

/// Every directory and file under `root`, itself included, with its permission bits.
fn modes(root: &Path) -> Vec<(PathBuf, bool, u32)> {
    let mut found = Vec::new();
    let mut pending = vec![root.to_path_buf()];
    while let Some(path) = pending.pop() {
        let meta = std::fs::symlink_metadata(&path).expect("metadata");
        found.push((path.clone(), meta.is_dir(), meta.permissions().mode() & 0o7777));
        if meta.is_dir() {
            for entry in std::fs::read_dir(&path).expect("read_dir") {
                pending.push(entry.expect("entry").path());
            }
        }
    }
    found
}

/// Asserts that every directory under `root` is 0700 and every file 0600, sled's included
/// (with a blob of it when `blob`).
#[track_caller]
fn assert_private(root: &Path, blob: bool) {
    let found = modes(root);
    let wrong: Vec<String> = found
        .iter()
        .filter(|(_, is_dir, mode)| *mode != if *is_dir { 0o700 } else { 0o600 })
        .map(|(path, _, mode)| format!("{mode:o} {}", path.display()))
        .collect();
    assert!(wrong.is_empty(), "not 0700 / 0600:\n{}", wrong.join("\n"));
    // The walk saw the index's own files, not only credstore's.
    let index = root.join("index");
    for name in ["conf", "db", "blobs"] {
        assert!(
            found.iter().any(|(path, _, _)| path == &index.join(name)),
            "no index/{name} under {}",
            root.display()
        );
    }
    assert!(
        !blob
            || found
                .iter()
                .any(|(path, _, _)| path.parent() == Some(&index.join("blobs"))),
        "sled wrote no blob under {}: the test does not check blobs",
        index.display()
    );
    assert!(
        found
            .iter()
            .any(|(path, _, _)| path.starts_with(&index) && path.to_string_lossy().contains("snap.")),
        "no sled snapshot under {}",
        index.display()
    );
}

/// Provider secrets of the largest size, enough of them that sled writes the index page
/// holding them as a blob file (`index/blobs/*`) while the store is open (it does from
/// about nine on).
fn big_secrets() -> Vec<(String, String)> {
    (0..12)
        .map(|i| {
            (
                format!("provider-{i}"),
                format!("{i:x}").repeat(credstore::vault::MAX_SECRET_LEN),
            )
        })
        .collect()
}

#[test]
fn a_store_made_and_used_by_the_cli_is_0600_and_0700() {
    let cli = Cli::init();
    let created = cli.json(&["create", "--name", "ci", "--json"]);
    let key = created["key"].as_str().expect("key").to_string();
    let id = created["id"].as_str().expect("id").to_string();
    cli.ok(&["verify", &key]);
    let rotated = cli.json(&["rotate", &id, "--grace", "1h", "--json"]);
    let new_id = rotated["id"].as_str().expect("id").to_string();
    cli.ok(&["revoke", &new_id, "--yes", "--reason", "done"]);
    for (name, secret) in big_secrets() {
        let put = cli.run_with_stdin(&["vault", "put", &name], &secret);
        assert_eq!(put.code, Some(0), "{put:?}");
    }
    cli.ok(&["audit"]);
    cli.ok(&["rebuild"]);
    cli.ok(&["list"]);
    assert_private(&cli.data, true);
}

#[test]
fn a_store_made_and_used_by_the_library_is_0600_and_0700() {
    let tmp = tempfile::tempdir().expect("temp dir");
    let data = tmp.path().join("data");
    // A development store: its pepper and master key are files of the data directory too.
    let store = Store::init(&data, Config::new()).expect("init");
    let mut ids: Vec<KeyId> = Vec::new();
    for i in 0..20 {
        let created = store.create(NewKey::new(format!("key {i}"))).expect("create");
        assert!(store.verify(created.key.expose()).expect("verify").is_valid());
        ids.push(created.record.id);
    }
    for id in ids.iter().step_by(3) {
        store.revoke(id, Some("test")).expect("revoke");
    }
    for (name, secret) in big_secrets() {
        store.vault_put(None, &name, secret.as_bytes()).expect("vault put");
    }
    store.close().expect("close");
    assert_private(&data, true);
    // Opening again (sled writes a new snapshot) keeps them so.
    let store = Store::open(&data, Config::new()).expect("open");
    store.create(NewKey::new("after reopen")).expect("create");
    store.close().expect("close");
    assert_private(&data, true);
}

#[test]
fn an_index_left_readable_by_others_is_made_private_on_open() {
    let tmp = tempfile::tempdir().expect("temp dir");
    let data = tmp.path().join("data");
    Store::init(&data, Config::new()).expect("init").close().expect("close");
    // As an older build left it: sled's umask modes.
    for (path, is_dir, _) in modes(&data.join("index")) {
        let mode = if is_dir { 0o755 } else { 0o644 };
        std::fs::set_permissions(&path, std::fs::Permissions::from_mode(mode)).expect("chmod");
    }
    Store::open(&data, Config::new()).expect("open").close().expect("close");
    assert_private(&data, false);
}
