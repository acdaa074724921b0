//! Budgets across SIGKILL: a child process spends on a key and prints each admitted charge;
//! the parent kills it at random moments, many times, and after each reopen checks that
//! the persisted spend is never below the acknowledged spend, never above it plus one
//! chunk, and never above the cap.
//!
//! `an_owners_spend_survives_sigkill` does the same for an owner's budget, spent through two
//! of its keys.
//!
//! `crashes_over_count_at_most_a_second_of_spend` runs its child on a manual clock, so the
//! key spends at a known pace: each kill may over-count at most one second of that spend
//! (or `cap/1000`, whichever is larger), and 64 kills leave the key far from exhausted
//! (issue 14: with chunks of `cap/64`, 64 kills exhausted a key that had spent 22% of its
//! cap).

#![expect(
    clippy::unwrap_used,
    reason = "a test fails by panicking: unwrap, expect and indexing are its assertions"
)]

use std::io::{BufRead, BufReader, Write};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use std::sync::Arc;

use credstore::{Budget, Code, Config, EventFilter, ManualClock, NewKey, Pepper, Period, Store, VerifyRequest};

const CAP: u64 = 100_000;
const ROUNDS: usize = 12;

fn config() -> Config {
    Config::new()
        .pepper(Pepper::from_bytes([9; 32]))
        .flush_interval(Duration::from_millis(50))
}

/// The spend a decision shows: its owner's when `owned`, else the key's own.
fn shown_spend(d: &credstore::Decision, owned: bool) -> u64 {
    if owned {
        d.owner_budget.as_ref().unwrap().spent
    } else {
        d.budget.as_ref().unwrap().spent
    }
}

/// Runs only as the child of `spend_survives_sigkill` and `an_owners_spend_survives_sigkill`:
/// spends 1 a request, in turn on each key of `CREDSTORE_CRASH_KEY` (comma-separated).
#[test]
#[ignore = "the child process of spend_survives_sigkill"]
fn budget_child() {
    let (Ok(dir), Ok(keys)) = (
        std::env::var("CREDSTORE_CRASH_DIR"),
        std::env::var("CREDSTORE_CRASH_KEY"),
    ) else {
        return;
    };
    let owned = std::env::var("CREDSTORE_CRASH_OWNED").is_ok();
    let keys: Vec<&str> = keys.split(',').collect();
    let store = Store::open(&dir, config()).unwrap();
    let out = std::io::stdout();
    for key in keys.iter().cycle() {
        let d = store.verify_with(&VerifyRequest::new(key).cost(1)).unwrap();
        let spent = shown_spend(&d, owned);
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

fn persisted_spend(dir: &std::path::Path, keys: &str, owned: bool) -> u64 {
    let store = Store::open(dir, config()).unwrap();
    let key = keys.split(',').next().unwrap();
    let d = store.verify_with(&VerifyRequest::new(key).cost(0)).unwrap();
    let spent = shown_spend(&d, owned);
    store.close().unwrap();
    spent
}

#[test]
fn spend_survives_sigkill() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path().join("data");
    let budget = Budget::new(CAP, Period::Total).unwrap();
    let key = {
        let store = Store::init(&dir, config()).unwrap();
        let k = store.create(NewKey::new("metered").budget(budget)).unwrap();
        store.close().unwrap();
        k.key.expose().to_string()
    };
    kill_and_check(&dir, &key, false, budget);
}

#[test]
fn an_owners_spend_survives_sigkill() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path().join("data");
    let budget = Budget::new(CAP, Period::Total).unwrap();
    let keys = {
        let store = Store::init(&dir, config()).unwrap();
        let update = credstore::OwnerUpdate {
            budget: Some(Some(budget)),
            ..credstore::OwnerUpdate::default()
        };
        store.set_owner("acme", update).unwrap();
        let a = store.create(NewKey::new("a").owner("acme")).unwrap();
        let b = store.create(NewKey::new("b").owner("acme")).unwrap();
        store.close().unwrap();
        format!("{},{}", a.key.expose(), b.key.expose())
    };
    kill_and_check(&dir, &keys, true, budget);
    let store = Store::open(&dir, config()).unwrap();
    let marks = store
        .events(&EventFilter {
            kind: Some("owner.budget_mark".into()),
            ..EventFilter::default()
        })
        .unwrap();
    assert!(!marks.is_empty(), "the owner's spend was marked through the log");
}

/// Kills a child spending on `key` (comma-separated keys: in turn) at random moments,
/// [`ROUNDS`] times; after each, the spend a reopen restores (the owner's when `owned`) is
/// never below what the child saw acknowledged, never above it plus a chunk.
fn kill_and_check(dir: &std::path::Path, key: &str, owned: bool, budget: Budget) {
    // The clock is the system's: the pace is unknown, so the bound is the largest chunk.
    let chunk = budget.max_chunk();
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
            .env("CREDSTORE_CRASH_DIR", dir)
            .env("CREDSTORE_CRASH_KEY", key)
            .envs(owned.then_some(("CREDSTORE_CRASH_OWNED", "1")))
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
        let persisted = persisted_spend(dir, key, owned);
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
    let store = Store::open(dir, config()).unwrap();
    store.verify_log().unwrap();
}

/// The paced child's key: a cap large enough that `cap/64` (31,250) is six seconds of its
/// spend, and `cap/1000` (2,000) less than one.
const PACED_CAP: u64 = 2_000_000;
/// What each of the paced child's requests costs.
const PACED_COST: u64 = 5;
/// How far the paced child's clock moves after each request, ms.
const PACED_STEP_MS: i64 = 1;
/// The paced child's spend per (simulated) second: 5 every millisecond.
const PACE: u64 = PACED_COST * 1000 / PACED_STEP_MS.unsigned_abs();
/// The paced child's clock starts here (2026-01-01T00:00:00Z), as the parent's does.
const PACED_T0: i64 = 1_767_225_600_000;
const KILLS: usize = 64;

fn paced_config(clock: Arc<ManualClock>) -> Config {
    config().clock(clock)
}

/// Runs only as the child of `crashes_over_count_at_most_a_second_of_spend`: spends
/// `PACED_COST` per request, moving its clock `PACED_STEP_MS` after each.
#[test]
#[ignore = "the child process of crashes_over_count_at_most_a_second_of_spend"]
fn paced_child() {
    let (Ok(dir), Ok(key)) = (
        std::env::var("CREDSTORE_CRASH_DIR"),
        std::env::var("CREDSTORE_CRASH_KEY"),
    ) else {
        return;
    };
    let clock = Arc::new(ManualClock::new(PACED_T0));
    let store = Store::open(&dir, paced_config(clock.clone())).unwrap();
    let out = std::io::stdout();
    loop {
        let d = store.verify_with(&VerifyRequest::new(&key).cost(PACED_COST)).unwrap();
        let spent = d.budget.as_ref().unwrap().spent;
        let mut lock = out.lock();
        if d.is_valid() {
            writeln!(lock, "ACK {spent}").unwrap();
        } else {
            writeln!(lock, "DONE {spent}").unwrap();
            return;
        }
        lock.flush().unwrap();
        drop(lock);
        clock.advance(PACED_STEP_MS);
    }
}

/// Spend as a clean reopen restores it, and how many `budget.mark` events the log holds.
fn persisted_spend_and_marks(dir: &std::path::Path, key: &str) -> (u64, usize) {
    let store = Store::open(dir, paced_config(Arc::new(ManualClock::new(PACED_T0)))).unwrap();
    let d = store.verify_with(&VerifyRequest::new(key).cost(0)).unwrap();
    let spent = d.budget.unwrap().spent;
    let marks = store
        .events(&EventFilter {
            kind: Some("budget.mark".into()),
            ..EventFilter::default()
        })
        .unwrap()
        .len();
    store.close().unwrap();
    (spent, marks)
}

#[test]
fn crashes_over_count_at_most_a_second_of_spend() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path().join("data");
    let budget = Budget::new(PACED_CAP, Period::Total).unwrap();
    // One second of spend at the child's pace, or cap/1000 if larger.
    let bound = PACE.max(PACED_CAP / 1000);
    let key = {
        let store = Store::init(&dir, paced_config(Arc::new(ManualClock::new(PACED_T0)))).unwrap();
        let k = store.create(NewKey::new("metered").budget(budget)).unwrap();
        store.close().unwrap();
        k.key.expose().to_string()
    };
    let mut seed = 0x2545_F491_4F6C_DD1Du64 ^ u64::from(std::process::id());
    let (mut persisted, mut marks) = persisted_spend_and_marks(&dir, &key);
    let (mut really_spent, mut over_counted, mut worst) = (0u64, 0u64, 0u64);
    for round in 0..KILLS {
        seed ^= seed << 13;
        seed ^= seed >> 7;
        seed ^= seed << 17;
        // Killed after 1 to 1,500 acknowledged requests (up to 1.5 simulated seconds).
        let kill_after = 1 + seed % 1500;
        let mut child = Command::new(std::env::current_exe().unwrap())
            .args(["--exact", "paced_child", "--ignored", "--nocapture", "--test-threads=1"])
            .env("CREDSTORE_CRASH_DIR", &dir)
            .env("CREDSTORE_CRASH_KEY", &key)
            .stdout(Stdio::piped())
            .stderr(Stdio::null())
            .spawn()
            .unwrap();
        let stdout = child.stdout.take().unwrap();
        let (mut acks, mut acknowledged, mut done) = (0u64, persisted, false);
        for line in BufReader::new(stdout).lines().map_while(Result::ok) {
            if let Some(n) = line.strip_prefix("ACK ") {
                acknowledged = n.trim().parse().unwrap();
                acks += 1;
                if acks == kill_after {
                    child.kill().unwrap();
                }
            } else if line.starts_with("DONE ") {
                done = true;
            }
        }
        let _ = child.kill();
        child.wait().unwrap();
        assert!(!done, "round {round}: the key was exhausted");
        let started = persisted;
        let (now, marks_now) = persisted_spend_and_marks(&dir, &key);
        assert!(
            now >= acknowledged,
            "round {round}: persisted {now} < acknowledged {acknowledged}"
        );
        let over = now - acknowledged;
        assert!(
            over <= bound,
            "round {round}: persisted {now} is {over} over acknowledged {acknowledged}, more than {bound}"
        );
        // A raise on start (cap/1000), one when that is spent (sized from the pace), then
        // one per simulated second of spend: every mark raised lies at or below `now`.
        let raised = marks_now - marks;
        let allowed = usize::try_from((now - started) / PACE).unwrap() + 2;
        assert!(
            raised <= allowed,
            "round {round}: {raised} marks raised for {} spent, more than {allowed}",
            now - started
        );
        really_spent += acknowledged - started;
        over_counted += over;
        worst = worst.max(over);
        (persisted, marks) = (now, marks_now);
    }
    eprintln!(
        "{KILLS} kills: {really_spent} acknowledged, {over_counted} over-counted in all \
         (worst {worst}, bound {bound}), spend restored at {persisted} of {PACED_CAP}, \
         {marks} marks raised"
    );
    assert_eq!(persisted, really_spent + over_counted);
    assert!(over_counted <= bound * u64::try_from(KILLS).unwrap());
    // The crashes alone did not exhaust the key: it still admits requests.
    let store = Store::open(&dir, paced_config(Arc::new(ManualClock::new(PACED_T0)))).unwrap();
    let d = store.verify_with(&VerifyRequest::new(&key).cost(PACED_COST)).unwrap();
    assert_eq!(d.code, Code::Valid);
    assert!(d.budget.unwrap().remaining >= PACED_CAP / 2);
    store.verify_log().unwrap();
}
