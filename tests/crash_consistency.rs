//! Crash consistency: a child process creates and revokes keys and prints each one as it is
//! acknowledged; the parent kills it with SIGKILL at random moments, many times, against
//! the same data directory, then reopens the store and checks that everything acknowledged
//! survived, that the log verifies, and that a rebuild from the log gives the live index.
//!
//! The child is this test binary itself, re-executed to run the `#[ignore]`d
//! `child_workload` test with the data directory in an environment variable. Its lines:
//!
//! ```text
//! READY
//! ACK create <id> <key> <thread>
//! ACK revoke <id> <thread>
//! ```
//!
//! A line is printed only after the call returned `Ok`; a line cut short by the kill (no
//! trailing newline) is ignored. Set `CRASH_SEED` to replay a run's random choices.

#![expect(
    clippy::expect_used,
    reason = "a test fails by panicking: unwrap, expect and indexing are its assertions"
)]

use std::collections::{BTreeMap, BTreeSet};
use std::io::{BufRead, BufReader, Read};
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::sync::mpsc;
use std::sync::{Arc, Mutex};
use std::thread;
use std::time::{Duration, Instant};

use credstore::{Code, Config, Env, Format, KeyId, ListFilter, NewKey, Pepper, Status, Store, UseLog};

/// The data directory the child works on; unset, `child_workload` does nothing.
const DIR_VAR: &str = "CREDSTORE_CRASH_DIR";
/// How many threads the child runs (several: group commits are in flight when it dies).
const THREADS_VAR: &str = "CREDSTORE_CRASH_THREADS";
const ROUNDS: usize = 24;
/// Every third round runs several threads, so the kill lands amid group commits.
const GROUP_THREADS: usize = 4;
const PEPPER: [u8; 32] = [0x5a; 32];

fn config() -> Config {
    Config::new()
        .pepper(Pepper::from_bytes(PEPPER))
        // Flush last-used times often, so sled is written to when the kill lands.
        .flush_interval(Duration::from_millis(20))
        // This test counts state-change records; use events under SIGKILL have their own.
        .use_log(UseLog::Off)
}

/// The key shapes the child issues in turn.
fn formats() -> Vec<Format> {
    vec![
        Format::default_for(Env::Live),
        Format::default_for(Env::Test),
        Format::new("comp_", Env::Live, 27, false).expect("comp_ format"),
        Format::new("cmp_", Env::Live, 32, true).expect("cmp_ format"),
    ]
}

/// splitmix64: enough randomness for sleeps and choices, reproducible from a seed.
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9e37_79b9_7f4a_7c15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
        z ^ (z >> 31)
    }

    fn below(&mut self, n: u64) -> u64 {
        self.next() % n
    }

    fn range(&mut self, lo: u64, hi: u64) -> u64 {
        lo + self.below(hi - lo + 1)
    }
}

fn seed() -> u64 {
    if let Ok(s) = std::env::var("CRASH_SEED") {
        return s.parse().expect("CRASH_SEED must be a u64");
    }
    let mut bytes = [0u8; 8];
    getrandom::fill(&mut bytes).expect("OS randomness");
    u64::from_le_bytes(bytes)
}

/// The child: runs creates and revokes until killed (or, as a safety net, for 30 s).
#[test]
#[ignore = "run as a child process by crash_consistency_under_sigkill"]
fn child_workload() {
    let Ok(dir) = std::env::var(DIR_VAR) else {
        return;
    };
    let threads: usize = std::env::var(THREADS_VAR)
        .ok()
        .and_then(|t| t.parse().ok())
        .unwrap_or(1);
    let store = Arc::new(Store::open(&dir, config()).expect("child: open the store"));
    // Keys left active by earlier rounds: thread 0 revokes some of them.
    let earlier: Vec<KeyId> = store
        .list(&ListFilter {
            status: Some(Status::Active),
            ..ListFilter::default()
        })
        .expect("child: list")
        .into_iter()
        .map(|k| k.record.id)
        .collect();
    // A newline first: the harness has printed "test child_workload ... " without one.
    println!();
    println!("READY");
    let deadline = Instant::now() + Duration::from_secs(30);
    let handles: Vec<_> = (0..threads)
        .map(|t| {
            let store = Arc::clone(&store);
            let mut earlier = if t == 0 { earlier.clone() } else { vec![] };
            thread::spawn(move || {
                let formats = formats();
                let mut mine: Vec<KeyId> = Vec::new();
                let mut rng = Rng(seed() ^ t as u64);
                let mut i = 0usize;
                while Instant::now() < deadline {
                    let format = formats[i % formats.len()].clone();
                    let created = store
                        .create(NewKey::new(format!("crash t{t} #{i}")).format(format))
                        .expect("child: create");
                    let id = created.record.id.clone();
                    println!("ACK create {id} {} {t}", created.key.expose());
                    assert_eq!(
                        store.verify(created.key.expose()).expect("child: verify").code,
                        Code::Valid
                    );
                    mine.push(id);
                    if i % 3 == 2 && !mine.is_empty() {
                        let victim = mine.swap_remove(rng.below(mine.len() as u64) as usize);
                        store.revoke(&victim, Some("crash test")).expect("child: revoke");
                        println!("ACK revoke {victim} {t}");
                    }
                    if i % 5 == 4
                        && let Some(old) = earlier.pop()
                    {
                        store.revoke(&old, None).expect("child: revoke an earlier key");
                        println!("ACK revoke {old} {t}");
                    }
                    i += 1;
                }
            })
        })
        .collect();
    for h in handles {
        h.join().expect("child thread");
    }
}

/// What one round of the child acknowledged.
#[derive(Default)]
struct Acks {
    ready: bool,
    created: Vec<(String, String, usize)>,
    revoked: Vec<(String, usize)>,
}

impl Acks {
    fn parse(line: &str, into: &mut Acks) {
        let words: Vec<&str> = line.split_whitespace().collect();
        match words.as_slice() {
            ["READY"] => into.ready = true,
            ["ACK", "create", id, key, t] => {
                into.created
                    .push((id.to_string(), key.to_string(), t.parse().expect("thread")));
            }
            ["ACK", "revoke", id, t] => into.revoked.push((id.to_string(), t.parse().expect("thread"))),
            // Harness output ("running 1 test") and anything else is not ours.
            _ => {}
        }
    }
}

struct Running {
    child: Child,
    acks: Arc<Mutex<Acks>>,
    ready: mpsc::Receiver<()>,
    stdout: thread::JoinHandle<()>,
    stderr: thread::JoinHandle<String>,
}

fn spawn_child(dir: &Path, threads: usize) -> Running {
    let mut child = Command::new(std::env::current_exe().expect("current exe"))
        .args([
            "--exact",
            "child_workload",
            "--nocapture",
            "--ignored",
            "--test-threads=1",
        ])
        .env(DIR_VAR, dir)
        .env(THREADS_VAR, threads.to_string())
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("spawn the child");
    let acks = Arc::new(Mutex::new(Acks::default()));
    let (ready_tx, ready) = mpsc::channel();
    let stdout = {
        let acks = Arc::clone(&acks);
        let mut out = BufReader::new(child.stdout.take().expect("stdout"));
        thread::spawn(move || {
            let mut line = String::new();
            loop {
                line.clear();
                match out.read_line(&mut line) {
                    Ok(0) | Err(_) => return,
                    // Only whole lines count: a line cut by the kill was not acknowledged.
                    Ok(_) if line.ends_with('\n') => {
                        let mut acks = acks.lock().expect("acks");
                        let was_ready = acks.ready;
                        Acks::parse(&line, &mut acks);
                        if acks.ready && !was_ready {
                            let _ = ready_tx.send(());
                        }
                    }
                    Ok(_) => return,
                }
            }
        })
    };
    let stderr = {
        let mut err = child.stderr.take().expect("stderr");
        thread::spawn(move || {
            let mut text = String::new();
            let _ = err.read_to_string(&mut text);
            text
        })
    };
    Running {
        child,
        acks,
        ready,
        stdout,
        stderr,
    }
}

/// Kills the child and returns what it acknowledged; fails the test if it died by itself.
fn kill(mut running: Running, round: usize) -> Acks {
    let exited = running.child.try_wait().expect("try_wait");
    let _ = running.child.kill();
    let status = running.child.wait().expect("wait for the child");
    running.stdout.join().expect("stdout reader");
    let stderr = running.stderr.join().expect("stderr reader");
    if let Some(status) = exited {
        panic!("round {round}: the child exited by itself ({status}) before the kill:\n{stderr}");
    }
    assert!(!status.success(), "round {round}: the child was killed, yet succeeded");
    // A thread of the child that failed (an open, create or revoke refused) does not end
    // the process; its panic message does reach stderr.
    assert!(
        !stderr.contains("panicked"),
        "round {round}: the child failed before the kill:\n{stderr}"
    );
    Arc::try_unwrap(running.acks)
        .ok()
        .expect("the reader thread is done")
        .into_inner()
        .expect("acks")
}

#[test]
fn crash_consistency_under_sigkill() {
    let seed = seed();
    eprintln!("crash_consistency seed: {seed} (set CRASH_SEED={seed} to replay)");
    let mut rng = Rng(seed);
    let tmp = tempfile::tempdir().expect("temp dir");
    let dir = tmp.path().join("data");
    Store::init(&dir, config()).expect("init").close().expect("close");

    // id -> key, for every acknowledged create; ids of every acknowledged revoke.
    let mut created: BTreeMap<String, String> = BTreeMap::new();
    let mut revoked: BTreeSet<String> = BTreeSet::new();
    let mut group_rounds_with_several_threads = 0;
    let started = Instant::now();
    for round in 0..ROUNDS {
        let threads = if round % 3 == 1 { GROUP_THREADS } else { 1 };
        let running = spawn_child(&dir, threads);
        // One round in five dies early, maybe while still opening (recovery, replay).
        let early = round % 5 == 3;
        if early {
            thread::sleep(Duration::from_millis(rng.range(0, 40)));
        } else {
            if running.ready.recv_timeout(Duration::from_secs(30)).is_err() {
                let acks = kill(running, round);
                panic!("round {round}: the child never became ready (ready={})", acks.ready);
            }
            thread::sleep(Duration::from_millis(rng.range(5, 150)));
        }
        let acks = kill(running, round);
        let threads_seen: BTreeSet<usize> = acks.created.iter().map(|(_, _, t)| *t).collect();
        if threads > 1 && threads_seen.len() > 1 {
            group_rounds_with_several_threads += 1;
        }
        for (id, key, _) in acks.created {
            assert!(
                created.insert(id.clone(), key).is_none(),
                "round {round}: id {id} acknowledged twice"
            );
        }
        for (id, _) in acks.revoked {
            assert!(revoked.insert(id.clone()), "round {round}: {id} revoked twice");
        }
    }
    eprintln!(
        "{ROUNDS} rounds in {:?}: {} creates and {} revokes acknowledged; \
         {group_rounds_with_several_threads} kills amid several committing threads",
        started.elapsed(),
        created.len(),
        revoked.len()
    );
    assert!(
        group_rounds_with_several_threads >= 1,
        "no round was killed while several threads were committing"
    );
    assert!(
        created.len() >= ROUNDS,
        "too little work acknowledged: {}",
        created.len()
    );
    assert!(!revoked.is_empty(), "no revoke was acknowledged");

    let store = Store::open(&dir, config()).expect("reopen after the last kill");
    // Every acknowledged create exists, with a key that verifies to it.
    for (id, key) in &created {
        let key_id = KeyId::parse(id).expect("an id the child printed");
        let info = store
            .get(&key_id)
            .unwrap_or_else(|e| panic!("acknowledged create {id} is gone: {e}"));
        assert!(
            key.starts_with(&info.record.start),
            "{id}: start does not match its key"
        );
        let decision = store.verify(key).expect("verify");
        let found = decision.key.as_ref().map(|k| k.id.to_string());
        assert_eq!(found.as_deref(), Some(id.as_str()), "{id}: its key does not find it");
        if revoked.contains(id) {
            assert_eq!(decision.code, Code::Revoked, "{id}: acknowledged revoke lost");
        } else {
            // A revoke may have been durable yet unacknowledged when the child died.
            assert!(
                matches!(decision.code, Code::Valid | Code::Revoked),
                "{id}: {:?}",
                decision.code
            );
        }
    }
    // Every acknowledged revoke holds (some revoked keys were created by unacknowledged
    // calls of earlier rounds: their status still shows it).
    for id in &revoked {
        let info = store
            .get(&KeyId::parse(id).expect("id"))
            .unwrap_or_else(|e| panic!("revoked key {id} is gone: {e}"));
        assert_eq!(info.status, Status::Revoked, "{id}: acknowledged revoke lost");
    }
    let check = store.verify_log().expect("the log verifies after the crashes");
    let events = store.events(&Default::default()).expect("events");
    assert_eq!(check.records, events.len() as u64);
    let kinds = |k: &str| events.iter().filter(|(_, e)| e.kind_name() == k).count();
    assert!(kinds("key.created") >= created.len());
    assert!(kinds("key.revoked") >= revoked.len());
    let live = store.list(&ListFilter::default()).expect("list");
    assert!(live.len() >= created.len());
    store.close().expect("close");

    let last = Store::rebuild(&dir, config()).expect("rebuild from the log");
    assert_eq!(last, check.records);
    let store = Store::open(&dir, config()).expect("open after rebuild");
    let rebuilt = store.list(&ListFilter::default()).expect("list after rebuild");
    assert_eq!(rebuilt.len(), live.len());
    for (a, b) in live.iter().zip(&rebuilt) {
        assert_eq!(a, b, "rebuild differs from the live index");
    }
    store.close().expect("close");
}
