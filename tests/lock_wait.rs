//! CLI commands on one closed store take turns: a command waits for the store's lock for
//! `CREDSTORE_LOCK_WAIT` (5 s by default) before it fails with "locked" (DESIGN.md's CLI
//! contract).

#![expect(
    clippy::expect_used,
    clippy::indexing_slicing,
    reason = "a test fails by panicking: unwrap, expect and indexing are its assertions"
)]

use std::process::Stdio;
use std::thread;
use std::time::{Duration, Instant};

use credstore::{Config, DEFAULT_LOCK_WAIT, Store};

mod common;
use common::{Cli, Run};

/// A key of a fresh development store.
fn store_with_key() -> (Cli, String) {
    let cli = Cli::init();
    let created = cli.json(&["create", "--name", "k", "--json"]);
    let key = created["key"].as_str().expect("key").to_string();
    (cli, key)
}

/// Holds the store open (and so its lock) in this process for `hold`, while `credstore
/// verify KEY` runs with `lock_wait` as CREDSTORE_LOCK_WAIT (unset: the default); its run.
fn verify_while_held(cli: &Cli, key: &str, lock_wait: Option<&str>, hold: Duration) -> (Run, Duration) {
    let store = Store::open(&cli.data, Config::new()).expect("open");
    let mut command = cli.command(&["verify", key]);
    if let Some(wait) = lock_wait {
        command.env("CREDSTORE_LOCK_WAIT", wait);
    }
    let started = Instant::now();
    let child = command
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("spawn credstore");
    thread::sleep(hold);
    store.close().expect("close");
    let run = Run::from(child.wait_with_output().expect("wait"));
    (run, started.elapsed())
}

/// Issue 17, item 16: the second of two commands failed at once with "locked".
#[test]
fn a_command_waits_for_the_lock_another_holds_for_a_moment() {
    let (cli, key) = store_with_key();
    let (run, took) = verify_while_held(&cli, &key, Some("30s"), Duration::from_millis(1500));
    assert_eq!(run.code, Some(0), "{run:?}");
    assert!(
        took >= Duration::from_millis(1500),
        "it ran only once the lock was free: {took:?}"
    );
    // The default wait is a few seconds: a second and a half is well within it.
    assert!(DEFAULT_LOCK_WAIT >= Duration::from_secs(3), "{DEFAULT_LOCK_WAIT:?}");
    let (run, _) = verify_while_held(&cli, &key, None, Duration::from_millis(1500));
    assert_eq!(run.code, Some(0), "{run:?}");
}

#[test]
fn a_lock_held_past_the_wait_is_reported_as_locked() {
    let (cli, key) = store_with_key();
    let store = Store::open(&cli.data, Config::new()).expect("open");
    for (wait, at_least, at_most) in [("0", 0, 2_000), ("700ms", 700, 5_000)] {
        let started = Instant::now();
        let mut command = cli.command(&["verify", &key]);
        let run = Run::from(command.env("CREDSTORE_LOCK_WAIT", wait).output().expect("run"));
        let took = started.elapsed();
        assert_eq!(run.code, Some(3), "{run:?}");
        assert!(
            run.stderr.contains("locked") && run.stderr.contains("CREDSTORE_LOCK_WAIT"),
            "{run:?}"
        );
        assert!(
            took >= Duration::from_millis(at_least) && took <= Duration::from_millis(at_most),
            "CREDSTORE_LOCK_WAIT={wait}: {took:?}"
        );
    }
    // A wait that is not a duration is bad input.
    let mut command = cli.command(&["list"]);
    let run = Run::from(command.env("CREDSTORE_LOCK_WAIT", "soon").output().expect("run"));
    assert_eq!(run.code, Some(2), "{run:?}");
    assert!(run.stderr.contains("invalid CREDSTORE_LOCK_WAIT"), "{run:?}");
    store.close().expect("close");
}

/// Issue 17, item 16: five of twenty parallel `verify` calls failed. (A generous wait:
/// twenty debug-build processes on a busy machine take turns for a while.)
#[test]
fn twenty_parallel_verifies_all_take_their_turn() {
    let (cli, key) = store_with_key();
    let children: Vec<_> = (0..20)
        .map(|_| {
            cli.command(&["verify", &key, "--json"])
                .env("CREDSTORE_LOCK_WAIT", "120s")
                .stdout(Stdio::piped())
                .stderr(Stdio::piped())
                .spawn()
                .expect("spawn credstore")
        })
        .collect();
    for child in children {
        let run = Run::from(child.wait_with_output().expect("wait"));
        assert_eq!(run.code, Some(0), "{run:?}");
        assert_eq!(run.json()["code"], "VALID");
    }
    let audit = cli.json(&["audit", "--kind", "key.used", "--json"]);
    assert_eq!(audit.as_array().map(Vec::len), Some(20), "{audit}");
}
