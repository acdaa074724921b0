//! Hosts of one fleet (stores opened with `Config::fleet`) against a real PostgreSQL:
//! every change commits to the fleet first; the other hosts apply it within a poll
//! interval; every replica converges to the same log; a host whose log forked refuses.

#![expect(
    clippy::expect_used,
    reason = "a test fails by panicking: unwrap, expect and indexing are its assertions"
)]

#[path = "common/pg.rs"]
mod pg;

use std::path::Path;
use std::time::{Duration, Instant};

use credstore::fleet::FleetError;
use credstore::{Code, Config, Error, NewKey, Pepper, Store};

fn config(url: &str, host: &str) -> Config {
    Config::new()
        .pepper(Pepper::from_bytes([7; 32]))
        .flush_interval(Duration::from_millis(100))
        .fleet(url, host)
}

/// Waits (at most 10 s, a liveness bound, not a timing claim) until `key` verifies as
/// `code` on `store`.
fn eventually(store: &Store, key: &str, code: Code) {
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let got = store.verify(key).expect("verify").code;
        if got == code {
            return;
        }
        assert!(Instant::now() < deadline, "still {got:?}, not {code:?}, after 10 s");
        std::thread::sleep(Duration::from_millis(5));
    }
}

fn host(dir: &Path, url: &str, name: &str) -> Store {
    let path = dir.join(name);
    if path.exists() {
        Store::open(&path, config(url, name)).expect("open host")
    } else {
        Store::init(&path, config(url, name)).expect("init host")
    }
}

#[test]
fn a_change_on_one_host_reaches_every_host() {
    let Some(server) = pg::PgServer::start() else { return };
    let dir = tempfile::tempdir().expect("temp dir");
    let url = server.url();
    let a = host(dir.path(), &url, "a");
    let b = host(dir.path(), &url, "b");
    let c = host(dir.path(), &url, "c");

    let key = a.create(NewKey::new("shared")).expect("create on a");
    let secret = key.key.expose().to_string();
    eventually(&b, &secret, Code::Valid);
    eventually(&c, &secret, Code::Valid);

    b.revoke(&key.record.id, Some("leaked")).expect("revoke on b");
    // The revoking host refuses it at once; the others within their poll.
    assert_eq!(b.verify(&secret).expect("verify").code, Code::Revoked);
    eventually(&a, &secret, Code::Revoked);
    eventually(&c, &secret, Code::Revoked);

    // A revoke planned on a stale replica is planned again on the fleet's state: the
    // key is already revoked everywhere.
    let again = c.revoke(&key.record.id, None);
    assert!(matches!(again, Err(Error::State(_))), "{again:?}");
    for store in [a, b, c] {
        store.close().expect("close");
    }
}

#[test]
fn hosts_writing_at_once_converge_on_one_log() {
    let Some(server) = pg::PgServer::start() else { return };
    let dir = tempfile::tempdir().expect("temp dir");
    let url = server.url();
    let hosts: Vec<Store> = ["a", "b", "c"].iter().map(|n| host(dir.path(), &url, n)).collect();
    std::thread::scope(|scope| {
        for (h, store) in hosts.iter().enumerate() {
            scope.spawn(move || {
                for i in 0..15 {
                    store.create(NewKey::new(format!("host {h} key {i}"))).expect("create");
                }
            });
        }
    });
    let mut names: Vec<Vec<String>> = Vec::new();
    for store in &hosts {
        let deadline = Instant::now() + Duration::from_secs(10);
        loop {
            let listed = store.list(&Default::default()).expect("list");
            if listed.len() == 45 {
                names.push(
                    listed
                        .into_iter()
                        .map(|k| format!("{} {}", k.record.id, k.record.name))
                        .collect(),
                );
                break;
            }
            assert!(Instant::now() < deadline, "{} of 45 keys after 10 s", listed.len());
            std::thread::sleep(Duration::from_millis(10));
        }
    }
    assert!(
        names.windows(2).all(|w| w[0] == w[1]),
        "every replica holds the same keys, same ids"
    );
    // Every replica's log verifies, and they end at one chain head.
    let heads: Vec<u64> = hosts.iter().map(|s| s.verify_log().expect("audit").records).collect();
    for store in hosts {
        store.close().expect("close");
    }
    let fleet = credstore::fleet::Fleet::connect(&url).expect("connect");
    let (fleet_seq, _) = fleet.head().expect("head");
    assert!(heads.iter().all(|&h| h <= fleet_seq), "{heads:?} vs {fleet_seq}");
}

#[test]
fn a_host_that_was_down_catches_up_when_it_opens() {
    let Some(server) = pg::PgServer::start() else { return };
    let dir = tempfile::tempdir().expect("temp dir");
    let url = server.url();
    let a = host(dir.path(), &url, "a");
    let b = host(dir.path(), &url, "b");
    b.close().expect("close b");
    let key = a.create(NewKey::new("while b was down")).expect("create");
    a.revoke(&key.record.id, None).expect("revoke");
    let fresh = a.create(NewKey::new("fresh")).expect("create");

    let b = host(dir.path(), &url, "b");
    assert_eq!(b.verify(key.key.expose()).expect("verify").code, Code::Revoked);
    assert_eq!(b.verify(fresh.key.expose()).expect("verify").code, Code::Valid);
    a.close().expect("close");
    b.close().expect("close");
}

#[test]
fn a_host_whose_log_forked_refuses_to_serve() {
    let Some(server) = pg::PgServer::start() else { return };
    let dir = tempfile::tempdir().expect("temp dir");
    let url = server.url();
    let a = host(dir.path(), &url, "a");
    a.create(NewKey::new("k")).expect("create");
    a.close().expect("close");
    // Opened as a local store, the host writes a record the fleet never sees.
    let mut local = config(&url, "a");
    local.fleet = None;
    let apart = Store::open(dir.path().join("a"), local).expect("open apart");
    apart.create(NewKey::new("written apart")).expect("create");
    apart.close().expect("close");

    let reopened = Store::open(dir.path().join("a"), config(&url, "a"));
    assert!(
        matches!(reopened, Err(Error::Fleet(FleetError::Fork { .. }))),
        "{reopened:?}"
    );
    let message = reopened.err().map(|e| e.to_string()).unwrap_or_default();
    assert!(message.contains("fork"), "{message}");
}

#[test]
fn the_cli_writes_to_the_fleet_without_a_local_store() {
    let Some(server) = pg::PgServer::start() else { return };
    let dir = tempfile::tempdir().expect("temp dir");
    let url = server.url();
    let pepper = "07".repeat(32);
    let cli = |args: &[&str]| {
        let out = std::process::Command::new(env!("CARGO_BIN_EXE_credstore"))
            .arg("--fleet")
            .arg(&url)
            .args(args)
            .env("CREDSTORE_PEPPER", &pepper)
            .env_remove("CREDSTORE_DATA")
            .current_dir(dir.path())
            .output()
            .expect("run credstore");
        let text = |b: Vec<u8>| String::from_utf8_lossy(&b).into_owned();
        (out.status.code(), text(out.stdout), text(out.stderr))
    };
    let (code, out, err) = cli(&["init"]);
    assert_eq!(code, Some(0), "{out}{err}");
    // A library host of the same fleet.
    let host_a = host(dir.path(), &url, "a");

    let (code, out, err) = cli(&["create", "--name", "from the cli", "--json"]);
    assert_eq!(code, Some(0), "{out}{err}");
    let created: serde_json::Value = serde_json::from_str(&out).expect("json");
    let key = created["key"].as_str().expect("key").to_string();
    let id = created["id"].as_str().expect("id").to_string();
    eventually(&host_a, &key, Code::Valid);
    let (code, out, err) = cli(&["verify", &key]);
    assert_eq!(code, Some(0), "{out}{err}");

    let (code, out, err) = cli(&["revoke", &id, "--yes"]);
    assert_eq!(code, Some(0), "{out}{err}");
    eventually(&host_a, &key, Code::Revoked);
    let (code, _, _) = cli(&["verify", &key]);
    assert_eq!(code, Some(1), "refused through the CLI too");
    // Nothing was left in the working directory: the CLI's replica was throwaway.
    let left: Vec<_> = std::fs::read_dir(dir.path())
        .expect("read dir")
        .map(|e| e.expect("entry").file_name().to_string_lossy().into_owned())
        .collect();
    assert_eq!(left, ["a"], "{left:?}");
    host_a.close().expect("close");
}

#[test]
fn a_host_cut_off_from_the_fleet_fails_closed_after_its_bound_then_catches_up() {
    let Some(server) = pg::PgServer::start() else { return };
    let dir = tempfile::tempdir().expect("temp dir");
    let url = server.url();
    let bound = Duration::from_millis(500);
    let closed = Store::init(
        dir.path().join("closed"),
        config(&url, "closed").fleet_staleness(bound, false),
    )
    .expect("init closed");
    let open = Store::init(
        dir.path().join("open"),
        config(&url, "open").fleet_staleness(bound, true),
    )
    .expect("init open");
    let key = closed.create(NewKey::new("k")).expect("create");
    let secret = key.key.expose().to_string();
    eventually(&open, &secret, Code::Valid);

    server.kill();
    // Writes fail with a clear error; nothing is committed anywhere.
    let refused = closed.create(NewKey::new("while cut off"));
    assert!(matches!(refused, Err(Error::NotCommitted(_))), "{refused:?}");
    // The fail-closed host refuses once the bound has passed; the fail-open one serves on.
    let deadline = Instant::now() + Duration::from_secs(10);
    while !matches!(closed.verify(&secret), Err(Error::Stale)) {
        assert!(Instant::now() < deadline, "never refused");
        std::thread::sleep(Duration::from_millis(20));
    }
    // Its lag, as `/metrics` shows it, is past the bound too.
    let lagging = |store: &Store| store.stats().fleet_lag.expect("a fleet host has a lag");
    let deadline = Instant::now() + Duration::from_secs(5);
    while lagging(&closed) < bound {
        assert!(Instant::now() < deadline, "the lag stayed at {:?}", lagging(&closed));
        std::thread::sleep(Duration::from_millis(20));
    }
    std::thread::sleep(bound);
    assert_eq!(open.verify(&secret).expect("fail open").code, Code::Valid);

    server.restart();
    let deadline = Instant::now() + Duration::from_secs(15);
    while closed.verify(&secret).map(|d| d.code).ok() != Some(Code::Valid) {
        assert!(Instant::now() < deadline, "never came back");
        std::thread::sleep(Duration::from_millis(20));
    }
    assert!(lagging(&closed) < bound, "{:?}", lagging(&closed));
    // And it writes again, and the other host sees it.
    let after = closed.create(NewKey::new("after")).expect("create after");
    eventually(&open, after.key.expose(), Code::Valid);
    closed.close().expect("close");
    open.close().expect("close");
}
