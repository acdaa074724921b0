//! A full disk: a store on a small tmpfs the test mounts, filled to the brim by a filler
//! file, then freed. While it is full, commands fail cleanly (no panic, no key printed for a
//! create that failed, nothing acknowledged undone, nothing unacknowledged done); once it is
//! freed, the store reopens and holds exactly what was acknowledged.
//!
//! Mounting needs root. Without it the tests print why and return, except in CI
//! (`CI=true`), where they fail: CI runs as root, and a test that silently skips there
//! defends nothing.

#![cfg(target_os = "linux")]
#![expect(
    clippy::expect_used,
    clippy::indexing_slicing,
    reason = "a test fails by panicking: unwrap, expect and indexing are its assertions"
)]

mod common;

use std::collections::{BTreeMap, BTreeSet};
use std::fs::{self, File};
use std::io::{ErrorKind, Write};
use std::path::{Path, PathBuf};
use std::process::Command;

use common::{Cli, Run, Sidecar, http};
use credstore::{Budget, Code, Config, Error, KeyId, NewKey, Pepper, Period, RateLimit, Status, Store, VerifyRequest};
use serde_json::{Value, json};

/// The budget every key gets: verifies charge it, so spend is something to lose.
const CAP: u64 = 1_000_000;
/// Keys issued before the disk fills (sled has written snapshots and grown its file).
const KEYS: usize = 400;
/// Of those, revoked before the disk fills.
const REVOKED: usize = 20;

// ---------------------------------------------------------------------------------------
// The CLI and the sidecar

#[test]
fn commands_fail_cleanly_on_a_full_disk_and_all_work_again_once_it_is_freed() {
    let Some(disk) = Tmpfs::mount(16) else { return };
    let cli = Cli {
        tmp: tempfile::tempdir().expect("temp dir"),
        data: disk.path.join("data"),
    };
    let init = cli.ok(&["init"]);
    let admin = init
        .stdout
        .lines()
        .map(str::trim)
        .find(|l| l.starts_with("csa_"))
        .expect("init prints the admin key")
        .to_string();
    let bearer = format!("Bearer {admin}");
    let mut model = Model::default();

    // Issue, revoke and charge through the sidecar (the CLI would take a process a key).
    let sidecar = Sidecar::start(&cli);
    for i in 0..KEYS {
        let body = json!({ "name": format!("k{i}"), "budget": CAP, "budget_period": "total" });
        let reply = http(sidecar.addr, "POST", "/v1/api-keys", Some(&bearer), Some(&body)).expect("create");
        assert_eq!(reply.status, 201, "{reply:?}");
        model.created(&reply.body["data"]);
    }
    let ids: Vec<String> = model.keys.keys().cloned().collect();
    for id in ids.iter().take(REVOKED) {
        let reply = http(
            sidecar.addr,
            "DELETE",
            &format!("/v1/api-keys/{id}"),
            Some(&bearer),
            None,
        )
        .expect("revoke");
        assert_eq!(reply.status, 200, "{reply:?}");
        model.revoked(id);
    }
    for id in ids.iter().skip(REVOKED).take(50) {
        let body = json!({ "key": model.keys[id].secret, "cost": 7 });
        let reply = http(sidecar.addr, "POST", "/v1/keys.verify", None, Some(&body)).expect("verify");
        model.charged(id, &reply.body["data"]);
    }
    let snapshots = fs::read_dir(cli.data.join("index"))
        .expect("index dir")
        .filter(|e| {
            e.as_ref()
                .is_ok_and(|e| e.file_name().to_string_lossy().starts_with("snap."))
        })
        .count();
    assert!(snapshots > 0, "sled has written no snapshot yet");

    // Full, with the sidecar running: what it acknowledges must survive, what it refuses
    // must leave no trace.
    let filler = fill(&disk.path);
    let mut refused_creates = Vec::new();
    for i in 0..20 {
        let name = format!("while-full-{i}");
        let body = json!({ "name": name, "budget": CAP, "budget_period": "total" });
        let Ok(reply) = http(sidecar.addr, "POST", "/v1/api-keys", Some(&bearer), Some(&body)) else {
            panic!("the sidecar died on a full disk");
        };
        if reply.status == 201 {
            model.created(&reply.body["data"]);
        } else {
            assert_refused(&reply.status, &reply.body);
            refused_creates.push(name);
        }
    }
    assert!(!refused_creates.is_empty(), "the disk is full, yet every create fitted");
    let active = model.active();
    for id in active.iter().take(3) {
        let reply = http(
            sidecar.addr,
            "DELETE",
            &format!("/v1/api-keys/{id}"),
            Some(&bearer),
            None,
        )
        .expect("the sidecar answers a revoke on a full disk");
        if reply.status == 200 {
            model.revoked(id);
        } else {
            assert_refused(&reply.status, &reply.body);
        }
    }
    for id in active.iter().skip(3).take(5) {
        let body = json!({ "key": model.keys[id].secret, "cost": 11 });
        let reply = http(sidecar.addr, "POST", "/v1/keys.verify", None, Some(&body))
            .expect("the sidecar answers a verify on a full disk");
        if reply.status == 200 {
            model.charged(id, &reply.body["data"]);
        } else {
            assert_refused(&reply.status, &reply.body);
        }
    }
    // A clean stop flushes counters and writes the head checkpoint: it may fail, but it
    // must stop, without a panic.
    let (status, stderr) = sidecar.stop();
    assert!(!stderr.contains("panicked"), "{status}: {stderr}");
    eprintln!(
        "full disk: the sidecar refused {} of 20 creates; stopped with {status}",
        refused_creates.len()
    );

    // Full, through the CLI.
    let run = cli.run(&["create", "--name", "cli-while-full", "--json"]);
    assert_clean_failure(&run);
    assert!(!run.stdout.contains("sk_"), "a failed create printed a key: {run:?}");
    refused_creates.push("cli-while-full".into());
    let victim = model.active()[0].clone();
    let run = cli.run(&["revoke", &victim, "--yes"]);
    if run.code == Some(0) {
        model.revoked(&victim);
    } else {
        assert_clean_failure(&run);
    }
    let charged = model.active()[1].clone();
    let run = cli.run(&["verify", "--json", "--cost", "13", &model.keys[&charged].secret]);
    if run.code == Some(0) {
        model.charged(&charged, &run.json());
    } else {
        assert_clean_failure(&run);
    }
    let run = cli.run(&["list", "--json"]);
    if run.code != Some(0) {
        assert_clean_failure(&run);
    }

    // Freed: everything works, and the store holds what was acknowledged, nothing else.
    fs::remove_file(&filler).expect("remove the filler");
    let run = cli.run(&["list", "--json"]);
    assert_eq!(run.code, Some(0), "the store did not reopen once freed: {run:?}");
    let rebuilt = run.stderr.contains("rebuilt from the log");
    eprintln!(
        "full disk: the first open once freed rebuilt the index: {rebuilt}\n{}",
        run.stderr
    );
    let listed: BTreeMap<String, Value> = run
        .json()
        .as_array()
        .expect("array")
        .iter()
        .map(|k| (k["id"].as_str().expect("id").to_string(), k.clone()))
        .collect();
    let names: BTreeSet<&str> = listed.values().filter_map(|k| k["name"].as_str()).collect();
    for name in &refused_creates {
        assert!(
            !names.contains(name.as_str()),
            "a refused create is in the store: {name}"
        );
    }
    // The acknowledged keys and the admin key, nothing more.
    assert_eq!(listed.len(), model.keys.len() + 1, "{names:?}");
    for (id, key) in &model.keys {
        let doc = listed.get(id).unwrap_or_else(|| panic!("acknowledged {id} is gone"));
        let expected = if key.revoked { "revoked" } else { "active" };
        assert_eq!(doc["status"], expected, "{id}: {doc}");
    }
    let sidecar = Sidecar::start(&cli);
    for (id, key) in &model.keys {
        let body = json!({ "key": key.secret, "cost": 0 });
        let reply = http(sidecar.addr, "POST", "/v1/keys.verify", None, Some(&body)).expect("verify");
        let decision = &reply.body["data"];
        let expected = if key.revoked { "REVOKED" } else { "VALID" };
        assert_eq!(decision["code"], expected, "{id}: {decision}");
        if !key.revoked {
            let spent = decision["budget"]["spent"].as_u64().expect("spent");
            assert!(
                spent >= key.spent,
                "{id}: acknowledged spend lost: {spent} < {}",
                key.spent
            );
        }
    }
    let body = json!({ "name": "after", "budget": CAP, "budget_period": "total" });
    let reply = http(sidecar.addr, "POST", "/v1/api-keys", Some(&bearer), Some(&body)).expect("create");
    assert_eq!(reply.status, 201, "{reply:?}");
    let (status, stderr) = sidecar.stop();
    assert!(status.success(), "{status}: {stderr}");
    let created = cli.json(&["create", "--name", "after-cli", "--json"]);
    assert!(created["key"].as_str().is_some_and(|k| k.starts_with("sk_")));
    let audit = cli.ok(&["audit", "verify"]);
    assert!(audit.stdout.contains("log intact"), "{audit:?}");
}

/// What the CLI test knows: every acknowledged key, its status and least spend.
#[derive(Default)]
struct Model {
    keys: BTreeMap<String, Known>,
}

struct Known {
    secret: String,
    revoked: bool,
    /// The most an acknowledged charge reported.
    spent: u64,
}

impl Model {
    fn created(&mut self, doc: &Value) {
        let id = doc["id"].as_str().expect("id").to_string();
        let secret = doc["key"].as_str().expect("key").to_string();
        let known = Known {
            secret,
            revoked: false,
            spent: 0,
        };
        assert!(self.keys.insert(id, known).is_none());
    }

    fn revoked(&mut self, id: &str) {
        self.keys.get_mut(id).expect("known").revoked = true;
    }

    fn charged(&mut self, id: &str, decision: &Value) {
        assert_eq!(decision["code"], "VALID", "{decision}");
        let spent = decision["budget"]["spent"].as_u64().expect("spent");
        let known = self.keys.get_mut(id).expect("known");
        known.spent = known.spent.max(spent);
    }

    fn active(&self) -> Vec<String> {
        self.keys
            .iter()
            .filter(|(_, k)| !k.revoked)
            .map(|(id, _)| id.clone())
            .collect()
    }
}

/// A sidecar's refusal: a store error, said so, with no key in it.
fn assert_refused(status: &u16, body: &Value) {
    assert!(*status >= 500, "{status}: {body}");
    assert_eq!(body["success"], false, "{body}");
    assert!(!body.to_string().contains("sk_"), "a refusal carries a key: {body}");
}

/// A CLI command that failed as a store error does: exit 3, a message, no panic.
#[track_caller]
fn assert_clean_failure(run: &Run) {
    assert_eq!(run.code, Some(3), "{run:?}");
    assert!(run.stderr.starts_with("error: "), "{run:?}");
    assert!(!run.stderr.contains("panicked"), "{run:?}");
}

// ---------------------------------------------------------------------------------------
// The library

#[test]
fn the_library_refuses_changes_on_a_full_disk_and_reopens_once_freed() {
    let Some(disk) = Tmpfs::mount(8) else { return };
    let path = disk.path.join("data");
    let config = Config::new().pepper(Pepper::from_bytes([7; 32]));
    let budget = Budget::new(CAP, Period::Total).expect("budget");
    let store = Store::init(&path, config.clone()).expect("init");
    let mut acked: Vec<(KeyId, String)> = Vec::new();
    for i in 0..50 {
        let k = store
            .create(NewKey::new(format!("k{i}")).budget(budget))
            .expect("create");
        acked.push((k.record.id.clone(), k.key.expose().to_string()));
    }
    let (gone, _) = acked[0].clone();
    store.revoke(&gone, Some("before")).expect("revoke");

    let filler = fill(&disk.path);
    // Creates until the disk says no: a few may still fit in pages already allocated.
    let mut refused = None;
    for i in 0..10_000 {
        match store.create(NewKey::new(format!("full{i}")).budget(budget)) {
            Ok(k) => acked.push((k.record.id.clone(), k.key.expose().to_string())),
            Err(e) => {
                refused = Some(e);
                break;
            }
        }
    }
    let refused = refused.expect("10,000 creates fitted on a full disk");
    eprintln!("full disk (library): refused with {refused:?}");
    assert!(
        matches!(
            refused,
            Error::NotCommitted(_) | Error::Closed | Error::Index(_) | Error::Log(_) | Error::Io { .. }
        ),
        "{refused:?}"
    );
    // Whatever answers now, no panic; a change refused is not made.
    let (kept, kept_key) = acked[1].clone();
    let revoke = store.revoke(&kept, None);
    let verify = store.verify_with(&VerifyRequest::new(&kept_key).cost(5));
    eprintln!(
        "full disk (library): revoke -> {revoke:?}; verify -> {:?}",
        verify.as_ref().map(|d| d.code)
    );
    let closed = store.close();
    eprintln!("full disk (library): close -> {closed:?}");
    let reopened = Store::open(&path, config.clone());
    assert!(reopened.is_err(), "opened on a full disk");

    fs::remove_file(&filler).expect("remove the filler");
    let store = Store::open(&path, config).expect("reopen once freed");
    eprintln!("full disk (library): reopened, {:?}", store.recovery_report());
    for (id, key) in &acked {
        let info = store
            .get(id)
            .unwrap_or_else(|e| panic!("acknowledged {id} is gone: {e}"));
        let code = store
            .verify_with(&VerifyRequest::new(key).cost(0))
            .expect("verify")
            .code;
        if *id == gone || (*id == kept && revoke.is_ok()) {
            assert_eq!((info.status, code), (Status::Revoked, Code::Revoked), "{id}");
        } else {
            assert_eq!((info.status, code), (Status::Active, Code::Valid), "{id}");
        }
    }
    let listed = store.list(&Default::default()).expect("list");
    assert_eq!(listed.len(), acked.len(), "a refused create is in the store");
    store.verify_log().expect("the log verifies");
    store.create(NewKey::new("after")).expect("a create once freed");
    store.close().expect("close");
}

/// Known bug, reported and not fixed here. Every open makes sled write a snapshot to
/// `index/snap.N.generating` and rename it; a full disk (or a kill) cuts that write short
/// and leaves the file. sled 0.34.7 lists it among its snapshots (it skips only
/// `.in___motion` files), takes it for the newest and fails: "Read corrupted data". So the
/// first open once the disk is freed finds the index unreadable and rebuilds it from the
/// log, unable to carry the counters over: rate limits start full again and spend
/// restarts at the budget marks. Removing a leftover `snap.*.generating` before sled
/// opens (under sled's lock) keeps the index and its counters.
#[test]
fn an_open_refused_by_a_full_disk_costs_no_counters() {
    let Some(disk) = Tmpfs::mount(8) else { return };
    let path = disk.path.join("data");
    let config = Config::new().pepper(Pepper::from_bytes([7; 32]));
    let store = Store::init(&path, config.clone()).expect("init");
    let new = NewKey::new("metered")
        .budget(Budget::new(6400, Period::Total).expect("budget"))
        .rate_limit(RateLimit::parse("3/1h:hourly").expect("limit"));
    let key = store.create(new).expect("create").key.expose().to_string();
    for _ in 0..2 {
        assert!(store.verify(&key).expect("verify").is_valid());
    }
    store.close().expect("close");

    let filler = fill(&disk.path);
    assert!(Store::open(&path, config.clone()).is_err(), "opened on a full disk");
    fs::remove_file(&filler).expect("remove the filler");

    let store = Store::open(&path, config).expect("reopen once freed");
    assert_eq!(store.recovery_report().index_rebuilt, None, "a sound index was rebuilt");
    let d = store
        .verify_with(&VerifyRequest::new(&key).cost(0).weight(0))
        .expect("verify");
    assert_eq!(d.ratelimits[0].remaining, 1, "the rate limit started over: {d:?}");
    assert_eq!(
        d.budget.as_ref().map(|b| b.spent),
        Some(2),
        "spend restarted at the mark: {d:?}"
    );
    store.close().expect("close");
}

// ---------------------------------------------------------------------------------------
// A small filesystem

/// A tmpfs mounted on a temp dir, unmounted when dropped (also when the test failed).
struct Tmpfs {
    _parent: tempfile::TempDir,
    path: PathBuf,
}

impl Tmpfs {
    /// A tmpfs of `mib` MiB, or `None` when the test cannot mount one and may skip.
    fn mount(mib: u32) -> Option<Tmpfs> {
        let why_not = if is_root() {
            let parent = tempfile::tempdir().expect("temp dir");
            let path = parent.path().join("mnt");
            fs::create_dir(&path).expect("mount point");
            let out = Command::new("mount")
                .args(["-t", "tmpfs", "-o", &format!("size={mib}m,mode=0700"), "tmpfs"])
                .arg(&path)
                .output()
                .expect("run mount");
            if out.status.success() {
                return Some(Tmpfs { _parent: parent, path });
            }
            format!("mount -t tmpfs failed: {}", String::from_utf8_lossy(&out.stderr).trim())
        } else {
            "mounting a tmpfs needs root".to_string()
        };
        assert_ne!(
            std::env::var("CI").as_deref(),
            Ok("true"),
            "{why_not}, and in CI this test must run"
        );
        eprintln!("SKIPPED: {why_not} (as root, or in CI, this test fills a small filesystem)");
        None
    }
}

impl Drop for Tmpfs {
    fn drop(&mut self) {
        let unmounted = Command::new("umount").arg(&self.path).status();
        if !unmounted.is_ok_and(|s| s.success()) {
            // Something still holds a file open (a test failed mid-way): detach it now,
            // the kernel frees it when the last file closes.
            let _ = Command::new("umount").arg("-l").arg(&self.path).status();
        }
    }
}

/// The effective uid is 0 (from /proc: the tests need no libc).
fn is_root() -> bool {
    fs::read_to_string("/proc/self/status")
        .ok()
        .and_then(|s| {
            let uids = s.lines().find(|l| l.starts_with("Uid:"))?.to_string();
            Some(uids.split_whitespace().nth(2) == Some("0"))
        })
        .unwrap_or(false)
}

/// Fills the filesystem of `dir` to the last byte with a filler file; returns its path.
fn fill(dir: &Path) -> PathBuf {
    let path = dir.join("filler");
    let mut file = File::create(&path).expect("create the filler");
    let buf = vec![0xA5u8; 1 << 20];
    let mut chunk = buf.len();
    loop {
        match file.write(&buf[..chunk]) {
            Ok(_) => {}
            Err(e) if e.kind() == ErrorKind::StorageFull && chunk > 1 => chunk /= 2,
            Err(e) if e.kind() == ErrorKind::StorageFull => break,
            Err(e) => panic!("fill {dir:?}: {e}"),
        }
    }
    // Full: not one more byte in a new file.
    let probe = fs::write(dir.join("probe"), b"x");
    assert!(
        probe.as_ref().is_err_and(|e| e.kind() == ErrorKind::StorageFull),
        "the filesystem is not full: {probe:?}"
    );
    let _ = fs::remove_file(dir.join("probe"));
    path
}
