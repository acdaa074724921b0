//! No file under a data directory ever holds an issued key, nor its random part, nor the
//! pepper (except a development store's own `pepper.key`).
//!
//! Keys of every seed shape are created, verified, updated, disabled, rotated (with and
//! without grace) and revoked, through the API and through the binary; the store is closed
//! and rebuilt; then every byte of every file under the data directory is scanned.

#![expect(
    clippy::expect_used,
    clippy::indexing_slicing,
    reason = "a test fails by panicking: unwrap, expect and indexing are its assertions"
)]

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;

use credstore::{Code, Config, Env, Format, KeyUpdate, NewKey, Pepper, Store};

const CONFIG_PEPPER: [u8; 32] = [
    0x11, 0x22, 0x33, 0x44, 0x55, 0x66, 0x77, 0x88, 0x99, 0xaa, 0xbb, 0xcc, 0xdd, 0xee, 0xf0, 0x0f, 0x1e, 0x2d, 0x3c,
    0x4b, 0x5a, 0x69, 0x78, 0x87, 0x96, 0xa5, 0xb4, 0xc3, 0xd2, 0xe1, 0x01, 0x10,
];

/// The seed shapes: `sk_live_`, `sk_test_`, `comp_` (27 random, no checksum), `cmp_`.
fn formats() -> Vec<Format> {
    vec![
        Format::default_for(Env::Live),
        Format::default_for(Env::Test),
        Format::new("comp_", Env::Live, 27, false).expect("comp_"),
        Format::new("cmp_", Env::Live, 32, true).expect("cmp_"),
    ]
}

/// A named byte string to look for.
type Needle = (String, Vec<u8>);

/// An issued key and the parts of it that must never be on disk.
struct Issued {
    key: String,
    format: Format,
}

impl Issued {
    /// The key, its random part, and the random part past the four characters that
    /// `start` (prefix plus four) shows by design.
    fn needles(&self) -> Vec<Needle> {
        let p = self.format.prefix().len();
        let random = &self.key[p..p + self.format.random_len()];
        assert_eq!(random.len(), self.format.random_len());
        vec![
            (format!("key {}...", &self.key[..p + 4]), self.key.as_bytes().to_vec()),
            (
                format!("random part of {}...", &self.key[..p + 4]),
                random.as_bytes().to_vec(),
            ),
            (
                format!("hidden random part of {}...", &self.key[..p + 4]),
                random.as_bytes()[4..].to_vec(),
            ),
        ]
    }
}

fn issued(key: &str, format: &Format) -> Issued {
    assert!(key.starts_with(format.prefix()));
    assert_eq!(key.len(), format.total_len(), "{key:?}");
    Issued {
        key: key.to_string(),
        format: format.clone(),
    }
}

/// Runs every kind of operation on `store`, returning every key it issued.
fn exercise(store: &Store) -> Vec<Issued> {
    let formats = formats();
    let mut out = Vec::new();
    let mut ids = Vec::new();
    for i in 0..48 {
        let format = formats[i % formats.len()].clone();
        let created = store
            .create(
                NewKey::new(format!("key {i}"))
                    .format(format.clone())
                    .project(if i % 2 == 0 { "acme" } else { "globex" })
                    .meta("team", "infra")
                    .meta("index", i.to_string()),
            )
            .expect("create");
        assert_eq!(store.verify(created.key.expose()).expect("verify").code, Code::Valid);
        out.push(issued(created.key.expose(), &format));
        ids.push((created.record.id, format));
    }
    for (i, (id, format)) in ids.iter().enumerate() {
        match i % 6 {
            0 => {
                store.revoke(id, Some("scan test")).expect("revoke");
            }
            1 => {
                let rotated = store.rotate(id, None).expect("rotate");
                out.push(issued(rotated.new.key.expose(), format));
            }
            2 => {
                let rotated = store
                    .rotate(id, Some(Duration::from_secs(3600)))
                    .expect("rotate with grace");
                assert_eq!(
                    store.verify(rotated.new.key.expose()).expect("verify").code,
                    Code::Valid
                );
                out.push(issued(rotated.new.key.expose(), format));
            }
            3 => {
                store.disable(id).expect("disable");
                store.enable(id).expect("enable");
            }
            4 => {
                store
                    .update(
                        id,
                        KeyUpdate {
                            name: Some(format!("renamed {i}")),
                            ..KeyUpdate::default()
                        },
                    )
                    .expect("update");
            }
            _ => {
                store.disable(id).expect("disable");
            }
        }
    }
    // Every key verifies once more, so last-used times are written too.
    for k in &out {
        store.verify(&k.key).expect("verify");
    }
    store.flush().expect("flush");
    out
}

/// Every regular file under `dir`, recursively.
fn files_under(dir: &Path) -> Vec<PathBuf> {
    let mut out = Vec::new();
    let mut todo = vec![dir.to_path_buf()];
    while let Some(d) = todo.pop() {
        for entry in std::fs::read_dir(&d).expect("read_dir") {
            let path = entry.expect("dir entry").path();
            let meta = std::fs::symlink_metadata(&path).expect("metadata");
            if meta.is_dir() {
                todo.push(path);
            } else if meta.is_file() {
                out.push(path);
            }
        }
    }
    out.sort();
    out
}

/// Finds each needle in `haystack`: an index on each needle's first 8 bytes makes one
/// pass over the file enough, however many needles there are.
fn find_any<'a>(haystack: &[u8], needles: &'a [Needle]) -> Vec<&'a str> {
    let mut by_head: HashMap<&[u8], Vec<&Needle>> = HashMap::new();
    for n in needles {
        assert!(n.1.len() >= 8, "needle {} too short to scan for", n.0);
        by_head.entry(&n.1[..8]).or_default().push(n);
    }
    let mut found = Vec::new();
    for (i, window) in haystack.windows(8).enumerate() {
        if let Some(candidates) = by_head.get(window) {
            for (what, bytes) in candidates {
                if haystack[i..].starts_with(bytes) {
                    found.push(what.as_str());
                }
            }
        }
    }
    found
}

/// Scans every file under `dir` for `needles`, and every file but `exempt`'s for its
/// needles; returns "file: what" for every hit.
fn scan(dir: &Path, needles: &[Needle], exempt: Option<(&Path, &[Needle])>) -> Vec<String> {
    let files = files_under(dir);
    assert!(files.len() >= 4, "too few files to be a store: {files:?}");
    let mut hits = Vec::new();
    let mut scanned = 0usize;
    for file in files {
        let bytes = std::fs::read(&file).expect("read a data file");
        scanned += bytes.len();
        for what in find_any(&bytes, needles) {
            hits.push(format!("{}: {what}", file.display()));
        }
        if let Some((exempt_file, pepper)) = exempt
            && file != exempt_file
        {
            for what in find_any(&bytes, pepper) {
                hits.push(format!("{}: {what}", file.display()));
            }
        }
    }
    assert!(scanned > 0, "nothing scanned");
    hits
}

fn pepper_needles(bytes: &[u8; 32]) -> Vec<Needle> {
    vec![
        ("pepper (raw)".into(), bytes.to_vec()),
        ("pepper (hex)".into(), hex::encode(bytes).into_bytes()),
        ("pepper (HEX)".into(), hex::encode_upper(bytes).into_bytes()),
        // Half of it is already far too much.
        ("pepper (first half, raw)".into(), bytes[..16].to_vec()),
        ("pepper (second half, raw)".into(), bytes[16..].to_vec()),
    ]
}

fn all_needles(keys: &[Issued]) -> Vec<Needle> {
    keys.iter().flat_map(Issued::needles).collect()
}

#[test]
fn no_key_and_no_pepper_on_disk_with_a_configured_pepper() {
    let tmp = tempfile::tempdir().expect("temp dir");
    let dir = tmp.path().join("data");
    let config = || Config::new().pepper(Pepper::from_bytes(CONFIG_PEPPER));
    let store = Store::init(&dir, config()).expect("init");
    let mut keys = exercise(&store);
    store.close().expect("close");
    // Reopen (replay, counters) and issue a little more, then rebuild the index.
    let store = Store::open(&dir, config()).expect("reopen");
    keys.extend(exercise(&store));
    store.close().expect("close");
    Store::rebuild(&dir, config()).expect("rebuild");
    let store = Store::open(&dir, config()).expect("open after rebuild");
    for k in &keys {
        assert!(
            store.verify(&k.key).expect("verify").key.is_some(),
            "a key is unknown after the rebuild"
        );
    }
    store.close().expect("close");

    assert!(
        !dir.join("pepper.key").exists(),
        "a configured pepper must not be kept on disk"
    );
    assert!(keys.len() >= 100, "{} keys", keys.len());
    let mut needles = all_needles(&keys);
    needles.extend(pepper_needles(&CONFIG_PEPPER));
    let hits = scan(&dir, &needles, None);
    assert!(hits.is_empty(), "secrets found on disk:\n{}", hits.join("\n"));
}

#[test]
fn no_key_on_disk_and_the_dev_pepper_only_in_pepper_key() {
    let tmp = tempfile::tempdir().expect("temp dir");
    let dir = tmp.path().join("data");
    let store = Store::init(&dir, Config::new()).expect("init a development store");
    let mut keys = exercise(&store);
    store.close().expect("close");

    // The binary issues and verifies keys on the same store too.
    let bin = env!("CARGO_BIN_EXE_credstore");
    let cli = |args: &[&str]| {
        Command::new(bin)
            .arg("--data")
            .arg(&dir)
            .args(args)
            .env_remove("CREDSTORE_PEPPER")
            .env_remove("CREDSTORE_DATA")
            .output()
            .expect("run credstore")
    };
    for f in formats() {
        let length = f.random_len().to_string();
        let mut args = vec!["create", "--name", "from the CLI", "--prefix", f.prefix(), "--json"];
        args.extend(["--env", f.env().as_str(), "--length", &length]);
        if !f.has_checksum() {
            args.push("--no-checksum");
        }
        let out = cli(&args);
        assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
        let doc: serde_json::Value = serde_json::from_slice(&out.stdout).expect("create --json");
        let key = doc["key"].as_str().expect("key").to_string();
        let id = doc["id"].as_str().expect("id").to_string();
        assert_eq!(cli(&["verify", &key]).status.code(), Some(0));
        let rotated = cli(&["rotate", &id, "--json"]);
        assert!(rotated.status.success(), "{}", String::from_utf8_lossy(&rotated.stderr));
        let doc: serde_json::Value = serde_json::from_slice(&rotated.stdout).expect("rotate --json");
        keys.push(issued(&key, &f));
        keys.push(issued(doc["key"].as_str().expect("new key"), &f));
    }
    assert_eq!(cli(&["rebuild"]).status.code(), Some(0));

    let pepper_file = dir.join("pepper.key");
    let text = std::fs::read_to_string(&pepper_file).expect("a development store keeps pepper.key");
    let mut pepper = [0u8; 32];
    hex::decode_to_slice(text.trim(), &mut pepper).expect("pepper.key is 64 hex characters");
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt;
        let mode = std::fs::metadata(&pepper_file).expect("metadata").permissions().mode();
        assert_eq!(mode & 0o777, 0o600, "pepper.key must be 0600");
    }

    let needles = all_needles(&keys);
    let pepper = pepper_needles(&pepper);
    let hits = scan(&dir, &needles, Some((&pepper_file, &pepper)));
    assert!(hits.is_empty(), "secrets found on disk:\n{}", hits.join("\n"));
}

/// The scanner itself finds what it looks for: a store that leaked would be caught.
#[test]
fn the_scanner_finds_a_planted_key() {
    let tmp = tempfile::tempdir().expect("temp dir");
    let dir = tmp.path().join("data");
    let store = Store::init(&dir, Config::new().pepper(Pepper::from_bytes(CONFIG_PEPPER))).expect("init");
    let format = Format::new("comp_", Env::Live, 27, false).expect("comp_");
    let created = store
        .create(NewKey::new("planted").format(format.clone()))
        .expect("create");
    store.close().expect("close");
    let key = issued(created.key.expose(), &format);
    let needles = key.needles();
    assert!(scan(&dir, &needles, None).is_empty());
    // Plant the hidden part of the random part deep inside a file of the store.
    let mut planted = vec![0u8; 10_000];
    planted.extend_from_slice(&needles[2].1);
    planted.extend_from_slice(&[7u8; 100]);
    std::fs::create_dir_all(dir.join("index/deep")).expect("mkdir");
    std::fs::write(dir.join("index/deep/leak"), &planted).expect("plant");
    let hits = scan(&dir, &needles, None);
    assert_eq!(hits.len(), 1, "{hits:?}");
    assert!(hits[0].contains("hidden random part"), "{hits:?}");
}
