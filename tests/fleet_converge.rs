//! Fleet hosts converge, against a real PostgreSQL: random interleavings of writes
//! (create, revoke, disable, enable, rename, rotate with or without grace) issued on three
//! hosts (stores opened with `Config::fleet`, each with its own replica) and through the
//! CLI (`credstore --fleet URL ...`, a throwaway replica per command), then:
//!
//! - every write's outcome is the model's: a change is planned against the fleet's latest
//!   state, whichever host takes it and however stale its replica was (a revoke planned on
//!   a host that has not yet applied another host's revoke is refused, `StateError::Revoked`);
//! - every host's replica holds the model's keys with the model's statuses, and verifies
//!   each key as the model says; so does the CLI's (`list --json`, `audit verify`);
//! - every host's local log passes a full audit (its head checkpoint verified) and ends at
//!   the fleet's head: the same last record, the same chain hash.
//!
//! A round is one to three writes; when they are on distinct hosts and distinct keys they
//! run at once (the hosts race for the fleet's head), otherwise one after the other.
//! `PROPTEST_CASES` sets the number of cases (default 16, a fresh database each).

#![expect(
    clippy::expect_used,
    clippy::indexing_slicing,
    reason = "a test fails by panicking: unwrap, expect and indexing are its assertions"
)]

#[path = "common/pg.rs"]
mod pg;

mod common;
#[path = "common/fleet.rs"]
mod fleet;

use std::collections::BTreeMap;
use std::path::Path;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use credstore::log::{Audit, HeadCheck, head_key};
use credstore::{Code, Config, Error, KeyId, KeyUpdate, NewKey, Pepper, StateError, Status, Store, UseLog};
use proptest::prelude::*;
use proptest::sample::Index;
use proptest::test_runner::{Config as ProptestConfig, TestCaseError, TestRunner};

const HOSTS: usize = 3;

/// What the cases did, for the summary line: writes, of them through the CLI, refused,
/// and rounds run at once.
static WRITES: AtomicUsize = AtomicUsize::new(0);
static CLI_WRITES: AtomicUsize = AtomicUsize::new(0);
static REFUSED: AtomicUsize = AtomicUsize::new(0);
static AT_ONCE: AtomicUsize = AtomicUsize::new(0);
const NAMES: [&str; 3] = ["billing", "mobile app", "CI"];
/// A rotation's grace, when it has one: longer than any case runs.
const GRACE: Duration = Duration::from_secs(3600);

fn pepper() -> Pepper {
    Pepper::from_bytes([7; 32])
}

/// Where a write is issued.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Via {
    Host(usize),
    Cli,
}

/// A write; a key is picked among every key the model holds, revoked ones included.
#[derive(Debug, Clone)]
enum Op {
    Create,
    Revoke(Index),
    Disable(Index),
    Enable(Index),
    Rename(Index, usize),
    Rotate(Index, bool),
}

#[derive(Debug, Clone)]
struct Step {
    via: Via,
    op: Op,
}

fn step() -> impl Strategy<Value = Step> {
    let via = prop_oneof![5 => (0..HOSTS).prop_map(Via::Host), 1 => Just(Via::Cli)];
    let op = prop_oneof![
        3 => Just(Op::Create),
        2 => any::<Index>().prop_map(Op::Revoke),
        2 => any::<Index>().prop_map(Op::Disable),
        2 => any::<Index>().prop_map(Op::Enable),
        1 => (any::<Index>(), 0..NAMES.len()).prop_map(|(k, n)| Op::Rename(k, n)),
        2 => (any::<Index>(), any::<bool>()).prop_map(|(k, g)| Op::Rotate(k, g)),
    ];
    (via, op).prop_map(|(via, op)| Step { via, op })
}

/// A key as the model knows it.
#[derive(Debug, Clone)]
struct Key {
    id: String,
    secret: String,
    name: String,
    disabled: bool,
    revoked: bool,
    rotated: bool,
}

impl Key {
    fn status(&self) -> Status {
        match (self.revoked, self.disabled) {
            (true, _) => Status::Revoked,
            (false, true) => Status::Disabled,
            (false, false) => Status::Active,
        }
    }

    fn code(&self) -> Code {
        match self.status() {
            Status::Revoked => Code::Revoked,
            Status::Disabled => Code::Disabled,
            _ => Code::Valid,
        }
    }
}

/// Why the model says a write is refused.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Refusal {
    Revoked,
    AlreadyDisabled,
    NotDisabled,
    AlreadyRotated,
}

/// What a write gave.
#[derive(Debug)]
enum Outcome {
    /// A new key: created, or a rotation's successor.
    New {
        id: String,
        secret: String,
    },
    Changed,
    Refused(Refusal),
}

/// A step with its key resolved against the model.
#[derive(Debug, Clone)]
struct Resolved {
    via: Via,
    op: Op,
    key: Option<usize>,
}

/// What the model expects of `op` on `key`: `None` for success.
fn expected(keys: &[Key], r: &Resolved) -> Option<Refusal> {
    let key = &keys[r.key?];
    if key.revoked {
        return Some(Refusal::Revoked);
    }
    match r.op {
        Op::Disable(_) if key.disabled => Some(Refusal::AlreadyDisabled),
        Op::Enable(_) if !key.disabled => Some(Refusal::NotDisabled),
        Op::Rotate(..) if key.rotated => Some(Refusal::AlreadyRotated),
        _ => None,
    }
}

/// Applies a successful write to the model.
fn apply(keys: &mut Vec<Key>, r: &Resolved, outcome: Outcome) {
    match (&r.op, outcome) {
        (Op::Create, Outcome::New { id, secret }) => keys.push(Key {
            id,
            secret,
            name: "created".into(),
            disabled: false,
            revoked: false,
            rotated: false,
        }),
        (Op::Rotate(_, grace), Outcome::New { id, secret }) => {
            let old = &mut keys[r.key.expect("a target")];
            old.rotated = true;
            old.revoked = !grace;
            let new = Key {
                id,
                secret,
                rotated: false,
                revoked: false,
                ..old.clone()
            };
            keys.push(new);
        }
        (op, Outcome::Changed) => {
            let key = &mut keys[r.key.expect("a target")];
            match op {
                Op::Revoke(_) => key.revoked = true,
                Op::Disable(_) => key.disabled = true,
                Op::Enable(_) => key.disabled = false,
                Op::Rename(_, n) => key.name = NAMES[*n].into(),
                _ => unreachable!("{op:?} changes no key in place"),
            }
        }
        (op, outcome) => panic!("{op:?} cannot give {outcome:?}"),
    }
}

/// One case: a fleet in a fresh database, three hosts, the CLI.
struct Case<'a> {
    url: String,
    dir: &'a Path,
    hosts: Vec<Store>,
}

impl Case<'_> {
    fn run(&self, r: &Resolved, keys: &[Key]) -> Result<Outcome, TestCaseError> {
        let id = r.key.map(|k| keys[k].id.clone());
        match r.via {
            Via::Host(h) => self.on_host(&self.hosts[h], &r.op, id.as_deref()),
            Via::Cli => self.on_cli(&r.op, id.as_deref()),
        }
    }

    fn on_host(&self, store: &Store, op: &Op, id: Option<&str>) -> Result<Outcome, TestCaseError> {
        let id = id.map(|id| KeyId::parse(id).expect("an id"));
        let id = || id.clone().expect("a target");
        let result = match op {
            Op::Create => store.create(NewKey::new("created")).map(|c| Outcome::New {
                id: c.record.id.to_string(),
                secret: c.key.expose().to_string(),
            }),
            Op::Rotate(_, grace) => store.rotate(&id(), grace.then_some(GRACE)).map(|r| Outcome::New {
                id: r.new.record.id.to_string(),
                secret: r.new.key.expose().to_string(),
            }),
            Op::Revoke(_) => store.revoke(&id(), Some("model")).map(|_| Outcome::Changed),
            Op::Disable(_) => store.disable(&id()).map(|_| Outcome::Changed),
            Op::Enable(_) => store.enable(&id()).map(|_| Outcome::Changed),
            Op::Rename(_, n) => {
                let update = KeyUpdate {
                    name: Some(NAMES[*n].into()),
                    ..KeyUpdate::default()
                };
                store.update(&id(), update).map(|_| Outcome::Changed)
            }
        };
        match result {
            Ok(outcome) => Ok(outcome),
            Err(Error::State(StateError::Revoked(_))) => Ok(Outcome::Refused(Refusal::Revoked)),
            Err(Error::State(StateError::AlreadyDisabled(_))) => Ok(Outcome::Refused(Refusal::AlreadyDisabled)),
            Err(Error::State(StateError::NotDisabled(_))) => Ok(Outcome::Refused(Refusal::NotDisabled)),
            Err(Error::State(StateError::AlreadyRotated(..))) => Ok(Outcome::Refused(Refusal::AlreadyRotated)),
            Err(e) => Err(TestCaseError::fail(format!("{op:?}: {e}"))),
        }
    }

    fn on_cli(&self, op: &Op, id: Option<&str>) -> Result<Outcome, TestCaseError> {
        let id = || id.expect("a target");
        let grace = format!("{}s", GRACE.as_secs());
        let args: Vec<&str> = match op {
            Op::Create => vec!["create", "--name", "created"],
            Op::Rotate(_, false) => vec!["rotate", id()],
            Op::Rotate(_, true) => vec!["rotate", id(), "--grace", &grace],
            Op::Revoke(_) => vec!["revoke", id(), "--yes", "--reason", "model"],
            Op::Disable(_) => vec!["disable", id()],
            Op::Enable(_) => vec!["enable", id()],
            Op::Rename(_, n) => vec!["update", id(), "--name", NAMES[*n]],
        };
        let mut with_json = args.clone();
        with_json.push("--json");
        let run = fleet::cli(&self.url, &with_json);
        match run.code {
            Some(0) => {
                let doc = run.json();
                Ok(match op {
                    Op::Create | Op::Rotate(..) => Outcome::New {
                        id: doc["id"].as_str().expect("id").to_string(),
                        secret: doc["key"].as_str().expect("key").to_string(),
                    },
                    _ => Outcome::Changed,
                })
            }
            Some(2) => {
                let refusal = [
                    ("is revoked", Refusal::Revoked),
                    ("is already disabled", Refusal::AlreadyDisabled),
                    ("is not disabled", Refusal::NotDisabled),
                    ("was already rotated", Refusal::AlreadyRotated),
                ]
                .into_iter()
                .find(|(text, _)| run.stderr.contains(text));
                match refusal {
                    Some((_, refusal)) => Ok(Outcome::Refused(refusal)),
                    None => Err(TestCaseError::fail(format!("credstore {args:?}: {run:?}"))),
                }
            }
            _ => Err(TestCaseError::fail(format!("credstore {args:?}: {run:?}"))),
        }
    }

    /// Runs one round: at once when its writes are on distinct hosts and distinct keys,
    /// else one after the other; checks every outcome against the model and applies it.
    fn round(&self, steps: &[Step], keys: &mut Vec<Key>) -> Result<(), TestCaseError> {
        let resolve = |s: &Step, keys: &[Key]| Resolved {
            via: s.via,
            op: s.op.clone(),
            key: match &s.op {
                Op::Create => None,
                Op::Revoke(k) | Op::Disable(k) | Op::Enable(k) | Op::Rename(k, _) | Op::Rotate(k, _) => {
                    Some(k.index(keys.len()))
                }
            },
        };
        let resolved: Vec<Resolved> = steps.iter().map(|s| resolve(s, keys)).collect();
        let distinct = |f: &dyn Fn(&Resolved) -> Option<String>| {
            let all: Vec<String> = resolved.iter().filter_map(f).collect();
            let mut unique = all.clone();
            unique.sort();
            unique.dedup();
            unique.len() == all.len()
        };
        let at_once = resolved.len() > 1
            && distinct(&|r: &Resolved| Some(format!("{:?}", r.via)))
            && distinct(&|r: &Resolved| r.key.map(|k| k.to_string()));
        if at_once {
            AT_ONCE.fetch_add(1, Ordering::Relaxed);
            let snapshot = keys.clone();
            let outcomes: Vec<Result<Outcome, TestCaseError>> = std::thread::scope(|scope| {
                let runs: Vec<_> = resolved
                    .iter()
                    .map(|r| {
                        let snapshot = &snapshot;
                        scope.spawn(move || self.run(r, snapshot))
                    })
                    .collect();
                runs.into_iter().map(|h| h.join().expect("writer")).collect()
            });
            for (r, outcome) in resolved.iter().zip(outcomes) {
                settle(keys, &snapshot, r, outcome?)?;
            }
        } else {
            for s in steps {
                let r = resolve(s, keys);
                let snapshot = keys.clone();
                let outcome = self.run(&r, &snapshot)?;
                settle(keys, &snapshot, &r, outcome)?;
            }
        }
        Ok(())
    }
}

/// Checks an outcome against what the model expected of it (on `before`), then applies it.
fn settle(keys: &mut Vec<Key>, before: &[Key], r: &Resolved, outcome: Outcome) -> Result<(), TestCaseError> {
    let want = expected(before, r);
    WRITES.fetch_add(1, Ordering::Relaxed);
    if r.via == Via::Cli {
        CLI_WRITES.fetch_add(1, Ordering::Relaxed);
    }
    if want.is_some() {
        REFUSED.fetch_add(1, Ordering::Relaxed);
    }
    let got = match &outcome {
        Outcome::Refused(refusal) => Some(*refusal),
        _ => None,
    };
    prop_assert_eq!(
        got,
        want,
        "{:?} on {:?}: {:?}",
        r.op,
        r.key.map(|k| &before[k]),
        outcome
    );
    if got.is_none() {
        apply(keys, r, outcome);
    }
    Ok(())
}

fn config(url: &str, host: &str) -> Config {
    Config::new()
        .pepper(pepper())
        .flush_interval(Duration::from_millis(100))
        // Only the writes go to the log: every replica must end at one head.
        .use_log(UseLog::Off)
        .fleet(url, host)
}

/// The keys a replica lists: id → (name, status, rotated).
fn listed(store: &Store) -> BTreeMap<String, (String, Status, bool)> {
    store
        .list(&Default::default())
        .expect("list")
        .into_iter()
        .map(|k| {
            let rotated = k.record.rotated_to.is_some();
            (k.record.id.to_string(), (k.record.name, k.status, rotated))
        })
        .collect()
}

fn model_listed(keys: &[Key]) -> BTreeMap<String, (String, Status, bool)> {
    keys.iter()
        .map(|k| (k.id.clone(), (k.name.clone(), k.status(), k.rotated)))
        .collect()
}

/// Runs a case, then checks that every replica converged on the model.
fn converge(server: &pg::PgServer, case: usize, rounds: &[Vec<Step>]) -> Result<(), TestCaseError> {
    let url = server.create_database(&format!("converge_{case}"));
    let dir = tempfile::tempdir().expect("temp dir");
    let hosts: Vec<Store> = (0..HOSTS)
        .map(|h| Store::init(dir.path().join(format!("h{h}")), config(&url, &format!("h{h}"))).expect("init host"))
        .collect();
    let case = Case {
        url: url.clone(),
        dir: dir.path(),
        hosts,
    };
    let mut keys: Vec<Key> = Vec::new();
    // A first key, so that the first round's writes have one to work on.
    let first = Resolved {
        via: Via::Host(0),
        op: Op::Create,
        key: None,
    };
    let outcome = case.run(&first, &keys)?;
    apply(&mut keys, &first, outcome);
    for steps in rounds {
        case.round(steps, &mut keys)?;
    }

    // Every host applies the fleet's whole log.
    let fleet = credstore::fleet::Fleet::connect(&url).expect("connect");
    let info = fleet.info().expect("fleet info");
    for (h, store) in case.hosts.iter().enumerate() {
        let deadline = Instant::now() + Duration::from_secs(10);
        loop {
            let check = store.verify_log().expect("verify log");
            prop_assert!(check.index_differs.is_empty(), "host {}: {:?}", h, check.index_differs);
            if check.records == info.head_seq {
                break;
            }
            prop_assert!(
                Instant::now() < deadline,
                "host {} has {} of {} records after 10 s",
                h,
                check.records,
                info.head_seq
            );
            std::thread::sleep(Duration::from_millis(10));
        }
    }
    // Each replica holds the model's keys, with its statuses, and verifies them so.
    let want = model_listed(&keys);
    for (h, store) in case.hosts.iter().enumerate() {
        prop_assert_eq!(&listed(store), &want, "host {}", h);
        for key in &keys {
            let code = store.verify(&key.secret).expect("verify").code;
            prop_assert_eq!(code, key.code(), "host {}, key {:?}", h, key);
        }
    }
    // So does the CLI's throwaway replica; its log is intact.
    let cli_list = fleet::cli_json(&url, &["list"]);
    let cli_keys: BTreeMap<String, (String, String)> = cli_list
        .as_array()
        .expect("a list")
        .iter()
        .map(|k| {
            let text = |f: &str| k[f].as_str().unwrap_or_default().to_string();
            (text("id"), (text("name"), text("status")))
        })
        .collect();
    let want_cli: BTreeMap<String, (String, String)> = keys
        .iter()
        .map(|k| (k.id.clone(), (k.name.clone(), k.status().label().to_lowercase())))
        .collect();
    prop_assert_eq!(cli_keys, want_cli);
    let audit = fleet::cli(&url, &["audit", "verify"]);
    prop_assert_eq!(audit.code, Some(0), "{:?}", audit);

    // Closed, every host's log passes a full audit and ends at the fleet's head.
    for store in case.hosts {
        store.close().expect("close");
    }
    let (head_seq, head_hash) = fleet.head().expect("head");
    prop_assert_eq!(head_seq, info.head_seq, "nothing was written after the writes");
    for h in 0..HOSTS {
        let log = case.dir.join(format!("h{h}")).join("log");
        let report = Audit::new(&log, info.store_id)
            .head_key(head_key(&pepper()))
            .run()
            .map_err(|e| TestCaseError::fail(format!("host {h}: audit: {e}")))?;
        prop_assert_eq!(report.last_seq, head_seq, "host {}", h);
        prop_assert!(report.last_hash == head_hash, "host {}: another chain head", h);
        prop_assert!(
            matches!(report.head, HeadCheck::Verified { .. }),
            "host {}: {:?}",
            h,
            report.head
        );
    }
    Ok(())
}

fn cases() -> u32 {
    std::env::var("PROPTEST_CASES")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(16)
}

#[test]
fn hosts_and_the_cli_writing_in_any_interleaving_converge_on_the_model() {
    let Some(server) = pg::PgServer::start() else { return };
    let mut runner = TestRunner::new(ProptestConfig {
        cases: cases(),
        max_shrink_iters: 32,
        failure_persistence: None,
        ..ProptestConfig::default()
    });
    let next_case = AtomicUsize::new(0);
    let rounds = prop::collection::vec(prop::collection::vec(step(), 1..=3), 3..10);
    let started = Instant::now();
    let result = runner.run(&rounds, |rounds| {
        converge(&server, next_case.fetch_add(1, Ordering::Relaxed), &rounds)
    });
    println!(
        "{} cases (a database each) in {:.1} s: {} writes ({} through the CLI, {} refused as the model said), {} rounds at once",
        next_case.load(Ordering::Relaxed),
        started.elapsed().as_secs_f64(),
        WRITES.load(Ordering::Relaxed),
        CLI_WRITES.load(Ordering::Relaxed),
        REFUSED.load(Ordering::Relaxed),
        AT_ONCE.load(Ordering::Relaxed),
    );
    if let Err(e) = result {
        panic!("{e}");
    }
}
