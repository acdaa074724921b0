//! Budgets across SIGKILL: a child process spends on a key and prints each admitted charge;
//! the parent kills it at random moments, many times, and after each reopen checks that
//! the persisted spend is never below the acknowledged spend, never above it plus one
//! chunk, and never above the cap.

#![expect(
    clippy::unwrap_used,
    reason = "a test fails by panicking: unwrap, expect and indexing are its assertions"
)]

use std::io::{BufRead, BufReader, Write};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use credstore::{Budget, Config, NewKey, Pepper, Period, Store, VerifyRequest};

const CAP: u64 = 100_000;
const ROUNDS: usize = 12;

fn config() -> Config {
    Config::new()
        .pepper(Pepper::from_bytes([9; 32]))
        .flush_interval(Duration::from_millis(50))
}

/// Runs only as the child of `spend_survives_sigkill`.
#[test]
#[ignore = "the child process of spend_survives_sigkill"]
fn budget_child() {
    let (Ok(dir), Ok(key)) = (
        std::env::var("CREDSTORE_CRASH_DIR"),
        std::env::var("CREDSTORE_CRASH_KEY"),
    ) else {
        return;
    };
    let store = Store::open(&dir, config()).unwrap();
    let out = std::io::stdout();
    loop {
        let d = store.verify_with(&VerifyRequest::new(&key).cost(1)).unwrap();
        let spent = d.budget.as_ref().unwrap().spent;
        let mut lock = out.lock();
        if d.is_valid() {
            writeln!(lock, "ACK {spent}").unwrap();
        } else {
            writeln!(lock, "DONE {spent}").unwrap();
            return;
        }
        lock.flush().unwrap();
    }
}

fn persisted_spend(dir: &std::path::Path, key: &str) -> u64 {
    let store = Store::open(dir, config()).unwrap();
    let d = store.verify_with(&VerifyRequest::new(key).cost(0)).unwrap();
    let spent = d.budget.unwrap().spent;
    store.close().unwrap();
    spent
}

#[test]
fn spend_survives_sigkill() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path().join("data");
    let budget = Budget::new(CAP, Period::Total).unwrap();
    let chunk = budget.chunk();
    let key = {
        let store = Store::init(&dir, config()).unwrap();
        let k = store.create(NewKey::new("metered").budget(budget)).unwrap();
        store.close().unwrap();
        k.key.expose().to_string()
    };
    let mut seed = 0x9E37_79B9_7F4A_7C15u64 ^ u64::from(std::process::id());
    let mut acknowledged = 0u64;
    for round in 0..ROUNDS {
        seed ^= seed << 13;
        seed ^= seed >> 7;
        seed ^= seed << 17;
        let run_for = Duration::from_millis(30 + seed % 250);
        let mut child = Command::new(std::env::current_exe().unwrap())
            .args([
                "--exact",
                "budget_child",
                "--ignored",
                "--nocapture",
                "--test-threads=1",
            ])
            .env("CREDSTORE_CRASH_DIR", &dir)
            .env("CREDSTORE_CRASH_KEY", &key)
            .stdout(Stdio::piped())
            .stderr(Stdio::null())
            .spawn()
            .unwrap();
        let stdout = child.stdout.take().unwrap();
        let (first_tx, first_rx) = std::sync::mpsc::channel();
        let reader = std::thread::spawn(move || {
            let mut last = None;
            for line in BufReader::new(stdout).lines().map_while(Result::ok) {
                if let Some(n) = line.strip_prefix("ACK ") {
                    if last.is_none() {
                        let _ = first_tx.send(());
                    }
                    last = n.trim().parse::<u64>().ok();
                }
            }
            last
        });
        // The random moment counts from the child's first charge: a loaded machine can
        // take seconds to start it.
        let _ = first_rx.recv_timeout(Duration::from_secs(30));
        let started = Instant::now();
        while started.elapsed() < run_for {
            std::thread::sleep(Duration::from_millis(5));
        }
        child.kill().unwrap();
        child.wait().unwrap();
        if let Some(last) = reader.join().unwrap() {
            acknowledged = acknowledged.max(last);
        }
        let persisted = persisted_spend(&dir, &key);
        assert!(
            persisted >= acknowledged,
            "round {round}: persisted {persisted} < acknowledged {acknowledged}"
        );
        assert!(
            persisted <= acknowledged + chunk,
            "round {round}: persisted {persisted} > acknowledged {acknowledged} + chunk {chunk}"
        );
        assert!(persisted <= CAP);
        // What the next child starts from is what the parent just saw.
        acknowledged = persisted;
    }
    assert!(acknowledged > 0, "the child never got to spend");
    let store = Store::open(&dir, config()).unwrap();
    store.verify_log().unwrap();
}
