//! Integration tests through the public API: persistence, visibility of changes across
//! threads, the live map under racing misses, concurrent creates, listing, rotation,
//! rebuild, the audit log, decisions, redaction, the pepper check and torn-tail recovery.
//!
//! No test asserts on timing: concurrency tests order events with atomics and barriers.

#![expect(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::indexing_slicing,
    reason = "a test fails by panicking: unwrap, expect and indexing are its assertions"
)]

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Barrier};
use std::time::Duration;

use credstore::{
    Code, Config, Env, Error, EventFilter, Expiry, Format, KeyId, KeyInfo, KeyUpdate, ListFilter, Malformed, NewKey,
    OpenError, Pepper, StateError, Status, Store,
};

mod common;
use common::{Fixture, T0};

const SECOND: i64 = 1_000;
const HOUR: i64 = 3_600 * SECOND;
const DAY: i64 = 24 * HOUR;

fn comp() -> Format {
    Format::new("comp_", Env::Live, 27, false).expect("comp_ format")
}

fn cmp() -> Format {
    Format::new("cmp_", Env::Live, 24, true).expect("cmp_ format")
}

fn ids(list: &[KeyInfo]) -> Vec<KeyId> {
    list.iter().map(|i| i.record.id.clone()).collect()
}

fn all(store: &Store) -> Vec<KeyInfo> {
    store.list(&ListFilter::default()).expect("list")
}

// ---------------------------------------------------------------------------------------
// Persistence
// ---------------------------------------------------------------------------------------

#[test]
fn records_formats_and_last_used_survive_reopen() {
    let fx = Fixture::without_use_log();
    let store = fx.init();
    let live = store
        .create(
            NewKey::new("CI pipeline")
                .project("acme")
                .expires(Expiry::In(30 * DAY))
                .meta("team", "infra"),
        )
        .expect("create live");
    let test = store
        .create(NewKey::new("sandbox").format(Format::default_for(Env::Test)))
        .expect("create test");
    let comp_key = store
        .create(NewKey::new("client").format(comp()))
        .expect("create comp_");
    let cmp_key = store
        .create(NewKey::new("cmp client").format(cmp()))
        .expect("create cmp_");
    let disabled = store.create(NewKey::new("paused")).expect("create");
    store.disable(&disabled.record.id).expect("disable");
    let revoked = store.create(NewKey::new("leaked")).expect("create");
    store
        .revoke(&revoked.record.id, Some("leaked in a screenshot"))
        .expect("revoke");

    assert_eq!(comp_key.key.expose().len(), 32, "comp_ keys are 32 characters in all");
    fx.clock.advance(5 * SECOND);
    let used_at = T0 + 5 * SECOND;
    assert_eq!(store.verify(live.key.expose()).unwrap().code, Code::Valid);
    assert_eq!(store.verify(comp_key.key.expose()).unwrap().code, Code::Valid);
    let before = all(&store);
    let formats_before: Vec<Format> = store.formats().iter().cloned().collect();
    store.close().expect("close");

    let store = fx.open();
    assert_eq!(all(&store), before, "every record, status and last-used time survives");
    let formats_after: Vec<Format> = store.formats().iter().cloned().collect();
    assert_eq!(formats_after, formats_before);
    for f in [
        Format::default_for(Env::Live),
        Format::default_for(Env::Test),
        comp(),
        cmp(),
    ] {
        assert!(store.formats().contains(&f), "{f:?} stays registered");
    }

    // Last-used times were flushed on close (the flush interval is an hour).
    let get = |k: &credstore::CreatedKey| store.get(&k.record.id).expect("get");
    assert_eq!(get(&live).last_used_at, Some(used_at));
    assert_eq!(get(&comp_key).last_used_at, Some(used_at));
    assert_eq!(get(&test).last_used_at, None, "never used stays Never");

    // The comp_ format was registered, so its keys still parse and verify after reopen.
    let d = store.verify(comp_key.key.expose()).unwrap();
    assert_eq!(d.code, Code::Valid);
    assert_eq!(d.key.as_ref().unwrap().id, comp_key.record.id);
    let short = &comp_key.key.expose()[..31];
    let d = store.verify(short).unwrap();
    assert_eq!((d.code, d.malformed), (Code::Malformed, Some(Malformed::WrongLength)));
    assert_eq!(store.verify(cmp_key.key.expose()).unwrap().code, Code::Valid);
    let d = store.verify(test.key.expose()).unwrap();
    assert_eq!(d.code, Code::Valid);
    assert_eq!(d.key.as_ref().unwrap().env(), Env::Test);

    // States survive too.
    assert_eq!(store.verify(disabled.key.expose()).unwrap().code, Code::Disabled);
    let r = store.verify(revoked.key.expose()).unwrap();
    assert_eq!(r.code, Code::Revoked);
    assert_eq!(
        r.key.as_ref().unwrap().revoked.as_ref().unwrap().reason.as_deref(),
        Some("leaked in a screenshot")
    );
    let l = get(&live);
    assert_eq!(l.record.project, "acme");
    assert_eq!(l.record.expires_at, Some(T0 + 30 * DAY));
    assert_eq!(l.record.metadata.get("team").map(String::as_str), Some("infra"));
    // The verifies above used the key again at the same time.
    assert_eq!(get(&live).last_used_at, Some(used_at));
    store.close().expect("close");
}

#[test]
fn a_store_opened_with_the_wrong_pepper_says_so() {
    let fx = Fixture::without_use_log();
    let store = fx.init();
    let key = store.create(NewKey::new("k")).expect("create");
    store.close().expect("close");

    let wrong = fx.config.clone().pepper(Pepper::from_bytes([0x43; 32]));
    let err = Store::open(&fx.path, wrong.clone()).expect_err("wrong pepper must not open");
    assert!(matches!(err, Error::Open(OpenError::WrongPepper)), "got {err:?}");
    let err = Store::rebuild(&fx.path, wrong).expect_err("nor rebuild");
    assert!(matches!(err, Error::Open(OpenError::WrongPepper)), "got {err:?}");

    let store = fx.open();
    assert_eq!(store.verify(key.key.expose()).unwrap().code, Code::Valid);
    store.close().expect("close");

    // A development store (pepper.key beside the data) refuses a different explicit pepper.
    let dir = tempfile::tempdir().expect("temp dir");
    let dev = dir.path().join("dev");
    Store::init(&dev, Config::new()).expect("init").close().expect("close");
    let err = Store::open(&dev, Config::new().pepper(Pepper::from_bytes([9; 32]))).expect_err("wrong pepper");
    assert!(matches!(err, Error::Open(OpenError::WrongPepper)), "got {err:?}");
    Store::open(&dev, Config::new())
        .expect("its own pepper opens it")
        .close()
        .expect("close");
}

// ---------------------------------------------------------------------------------------
// Visibility of changes across threads
// ---------------------------------------------------------------------------------------

/// Runs `threads` verifiers of `key` in a loop. Once each has verified a few times (the
/// live map is warm), `change` runs; a verify that *starts* after `change` returned must
/// satisfy `after`. Returns the violations found.
fn verify_across_threads(
    store: &Arc<Store>,
    key: &str,
    threads: usize,
    change: impl FnOnce(&Store),
    after: impl Fn(&credstore::Decision) -> Result<(), String> + Sync,
) -> Vec<String> {
    const WARM: usize = 50;
    const AFTER: usize = 300;
    let changed = AtomicBool::new(false);
    let warm = AtomicUsize::new(0);
    let start = Barrier::new(threads + 1);
    let violations = std::sync::Mutex::new(Vec::new());
    std::thread::scope(|s| {
        for t in 0..threads {
            let (store, changed, warm, start, violations, after) =
                (store, &changed, &warm, &start, &violations, &after);
            s.spawn(move || {
                start.wait();
                let (mut n, mut seen_after) = (0, 0);
                while seen_after < AFTER {
                    // Read the flag before the verify starts: if it is set, the change
                    // returned before this verify began.
                    let is_after = changed.load(Ordering::SeqCst);
                    let d = store.verify(key).expect("verify");
                    n += 1;
                    if n == WARM {
                        warm.fetch_add(1, Ordering::SeqCst);
                    }
                    if is_after {
                        seen_after += 1;
                        if let Err(e) = after(&d) {
                            violations.lock().unwrap().push(format!("thread {t}: {e}"));
                        }
                    }
                }
            });
        }
        start.wait();
        while warm.load(Ordering::SeqCst) < threads {
            std::thread::yield_now();
        }
        change(store);
        changed.store(true, Ordering::SeqCst);
    });
    violations.into_inner().unwrap()
}

#[test]
fn revocation_is_visible_to_the_next_verify_in_every_thread() {
    let fx = Fixture::without_use_log();
    let store = Arc::new(fx.init());
    for round in 0..5 {
        let k = store.create(NewKey::new(format!("k{round}"))).expect("create");
        let bad = verify_across_threads(
            &store,
            k.key.expose(),
            4,
            |s| {
                s.revoke(&k.record.id, Some("test")).expect("revoke");
            },
            |d| match d.code {
                Code::Revoked => Ok(()),
                other => Err(format!("verify after revoke returned said {other}")),
            },
        );
        assert!(bad.is_empty(), "round {round}: {bad:?}");
    }
}

#[test]
fn disable_enable_and_update_are_visible_to_the_next_verify_in_every_thread() {
    let fx = Fixture::without_use_log();
    let store = Arc::new(fx.init());
    let k = store.create(NewKey::new("before").meta("v", "1")).expect("create");
    let id = k.record.id.clone();

    let bad = verify_across_threads(
        &store,
        k.key.expose(),
        4,
        |s| {
            s.disable(&id).expect("disable");
        },
        |d| {
            (d.code == Code::Disabled)
                .then_some(())
                .ok_or(format!("after disable: {}", d.code))
        },
    );
    assert!(bad.is_empty(), "disable: {bad:?}");

    let bad = verify_across_threads(
        &store,
        k.key.expose(),
        4,
        |s| {
            s.enable(&id).expect("enable");
        },
        |d| {
            (d.code == Code::Valid)
                .then_some(())
                .ok_or(format!("after enable: {}", d.code))
        },
    );
    assert!(bad.is_empty(), "enable: {bad:?}");

    let bad = verify_across_threads(
        &store,
        k.key.expose(),
        4,
        |s| {
            let update = KeyUpdate {
                name: Some("after".into()),
                metadata: Some(BTreeMap::from([("v".to_string(), "2".to_string())])),
                ..KeyUpdate::default()
            };
            s.update(&id, update).expect("update");
        },
        |d| {
            let r = d.key.as_ref().ok_or("no record")?;
            if d.code == Code::Valid && r.name == "after" && r.metadata.get("v").map(String::as_str) == Some("2") {
                Ok(())
            } else {
                Err(format!(
                    "after update: {} name {:?} metadata {:?}",
                    d.code, r.name, r.metadata
                ))
            }
        },
    );
    assert!(bad.is_empty(), "update: {bad:?}");

    // An expiry set by update is seen at once as well.
    let bad = verify_across_threads(
        &store,
        k.key.expose(),
        4,
        |s| {
            let update = KeyUpdate {
                expires: Some(Some(Expiry::In(HOUR))),
                ..KeyUpdate::default()
            };
            s.update(&id, update).expect("update expiry");
            fx.clock.advance(2 * HOUR);
        },
        |d| {
            (d.code == Code::Expired)
                .then_some(())
                .ok_or(format!("after expiry: {}", d.code))
        },
    );
    assert!(bad.is_empty(), "expiry: {bad:?}");
}

#[test]
fn a_racing_cache_miss_never_leaves_a_stale_entry() {
    let fx = Fixture::without_use_log();
    let store = fx.init();
    const ROUNDS: usize = 150;
    let keys: Vec<_> = (0..ROUNDS)
        .map(|i| store.create(NewKey::new(format!("k{i}"))).expect("create"))
        .collect();
    for (round, k) in keys.iter().enumerate() {
        let revoked = AtomicBool::new(false);
        let stop = AtomicBool::new(false);
        let start = Barrier::new(4);
        let violations = std::sync::Mutex::new(Vec::new());
        std::thread::scope(|s| {
            for t in 0..3 {
                let (store, revoked, stop, start, violations) = (&store, &revoked, &stop, &start, &violations);
                s.spawn(move || {
                    start.wait();
                    let mut after = 0;
                    while !stop.load(Ordering::SeqCst) || after < 20 {
                        let is_after = revoked.load(Ordering::SeqCst);
                        // Thread 0 keeps emptying the map so the others keep missing and
                        // refilling it from sled while the revocation commits.
                        if t == 0 {
                            store.clear_cache().expect("clear_cache");
                        }
                        let code = store.verify(k.key.expose()).expect("verify").code;
                        if is_after {
                            after += 1;
                            if code != Code::Revoked {
                                violations
                                    .lock()
                                    .unwrap()
                                    .push(format!("thread {t}: {code} after revoke"));
                            }
                        }
                    }
                });
            }
            start.wait();
            store.revoke(&k.record.id, None).expect("revoke");
            revoked.store(true, Ordering::SeqCst);
            stop.store(true, Ordering::SeqCst);
        });
        let bad = violations.into_inner().unwrap();
        assert!(bad.is_empty(), "round {round}: {bad:?}");
        // Whatever the race left in the map must be the revoked record (a hit, no clear).
        assert_eq!(
            store.verify(k.key.expose()).unwrap().code,
            Code::Revoked,
            "round {round}"
        );
        assert_eq!(
            store.verify(k.key.expose()).unwrap().code,
            Code::Revoked,
            "round {round}"
        );
        assert_eq!(store.get(&k.record.id).unwrap().status, Status::Revoked);
    }
    store.close().expect("close");
}

// ---------------------------------------------------------------------------------------
// Concurrent creates and listing
// ---------------------------------------------------------------------------------------

#[test]
fn concurrent_creates_all_succeed_with_distinct_ids_in_creation_order() {
    let fx = Fixture::without_use_log();
    let store = fx.init();
    const THREADS: usize = 8;
    const PER_THREAD: usize = 25;
    let start = Barrier::new(THREADS);
    let per_thread: Vec<Vec<credstore::CreatedKey>> = std::thread::scope(|s| {
        let handles: Vec<_> = (0..THREADS)
            .map(|t| {
                let (store, start, fx) = (&store, &start, &fx);
                s.spawn(move || {
                    start.wait();
                    (0..PER_THREAD)
                        .map(|i| {
                            if t == 0 && i % 5 == 0 {
                                // Time moves while the others create: ids still sort by creation.
                                fx.clock.advance(1);
                            }
                            store
                                .create(NewKey::new(format!("t{t}-{i}")).project(format!("p{t}")))
                                .expect("every concurrent create succeeds")
                        })
                        .collect()
                })
            })
            .collect();
        handles.into_iter().map(|h| h.join().expect("thread")).collect()
    });
    let listed = all(&store);
    assert_eq!(listed.len(), THREADS * PER_THREAD);
    let distinct: BTreeSet<&KeyId> = listed.iter().map(|i| &i.record.id).collect();
    assert_eq!(distinct.len(), THREADS * PER_THREAD, "ids are distinct");
    let keys: BTreeSet<&str> = per_thread.iter().flatten().map(|c| c.key.expose()).collect();
    assert_eq!(keys.len(), THREADS * PER_THREAD, "keys are distinct");
    // list() is in creation order: created_at never goes back, and each thread's keys
    // appear in the order that thread created them.
    assert!(
        listed
            .windows(2)
            .all(|w| w[0].record.created_at <= w[1].record.created_at)
    );
    let position: BTreeMap<&KeyId, usize> = listed.iter().enumerate().map(|(i, k)| (&k.record.id, i)).collect();
    for (t, created) in per_thread.iter().enumerate() {
        let pos: Vec<usize> = created.iter().map(|c| position[&c.record.id]).collect();
        assert!(
            pos.windows(2).all(|w| w[0] < w[1]),
            "thread {t}'s keys out of order: {pos:?}"
        );
        let mine = store
            .list(&ListFilter {
                project: Some(format!("p{t}")),
                ..ListFilter::default()
            })
            .expect("list");
        let want: Vec<KeyId> = created.iter().map(|c| c.record.id.clone()).collect();
        assert_eq!(ids(&mine), want);
    }
    for c in per_thread.iter().flatten().step_by(7) {
        assert_eq!(store.verify(c.key.expose()).unwrap().code, Code::Valid);
    }
    store.close().expect("close");
}

#[test]
fn list_filters_by_project_prefix_and_status_in_creation_order() {
    let fx = Fixture::without_use_log();
    let store = fx.init();
    let mk = |name: &str, project: &str, format: Option<Format>| {
        let mut n = NewKey::new(name).project(project);
        if let Some(f) = format {
            n = n.format(f);
        }
        let c = store.create(n).expect("create");
        fx.clock.advance(1);
        c.record.id
    };
    let a1 = mk("a1", "alpha", None);
    let b1 = mk("b1", "beta", Some(Format::default_for(Env::Test)));
    let a2 = mk("a2", "alpha", Some(comp()));
    let a3 = mk("a3", "alpha", Some(Format::default_for(Env::Test)));
    let b2 = mk("b2", "beta", None);
    let expiring = store
        .create(NewKey::new("a4").project("alpha").expires(Expiry::In(HOUR)))
        .expect("create")
        .record
        .id;
    store.disable(&a2).expect("disable");
    store.revoke(&b1, None).expect("revoke");
    fx.clock.advance(2 * HOUR);

    let list = |project: Option<&str>, prefix: Option<&str>, status: Option<Status>| {
        ids(&store
            .list(&ListFilter {
                project: project.map(str::to_string),
                prefix: prefix.map(str::to_string),
                status,
                ..ListFilter::default()
            })
            .expect("list"))
    };
    let want = |w: &[&KeyId]| -> Vec<KeyId> { w.iter().map(|&k| k.clone()).collect() };
    assert_eq!(list(None, None, None), want(&[&a1, &b1, &a2, &a3, &b2, &expiring]));
    assert_eq!(list(Some("alpha"), None, None), want(&[&a1, &a2, &a3, &expiring]));
    assert_eq!(list(Some("beta"), None, None), want(&[&b1, &b2]));
    assert_eq!(list(Some("gamma"), None, None), want(&[]));
    assert_eq!(list(None, Some("sk_test_"), None), want(&[&b1, &a3]));
    assert_eq!(list(None, Some("sk_live_"), None), want(&[&a1, &b2, &expiring]));
    assert_eq!(list(None, Some("comp_"), None), want(&[&a2]));
    assert_eq!(list(None, Some("sk_"), None), want(&[]), "a prefix filter is exact");
    assert_eq!(list(Some("alpha"), Some("sk_test_"), None), want(&[&a3]));
    assert_eq!(list(None, None, Some(Status::Active)), want(&[&a1, &a3, &b2]));
    assert_eq!(list(None, None, Some(Status::Disabled)), want(&[&a2]));
    assert_eq!(list(None, None, Some(Status::Revoked)), want(&[&b1]));
    assert_eq!(list(None, None, Some(Status::Expired)), want(&[&expiring]));
    assert_eq!(list(Some("beta"), None, Some(Status::Active)), want(&[&b2]));
    assert_eq!(
        list(Some("alpha"), Some("sk_live_"), Some(Status::Expired)),
        want(&[&expiring])
    );
    // Statuses in the listing are the statuses now.
    let statuses: Vec<Status> = all(&store).iter().map(|i| i.status).collect();
    assert_eq!(
        statuses,
        [
            Status::Active,
            Status::Revoked,
            Status::Disabled,
            Status::Active,
            Status::Active,
            Status::Expired
        ]
    );
    store.close().expect("close");
}

// ---------------------------------------------------------------------------------------
// Rotation
// ---------------------------------------------------------------------------------------

#[test]
fn rotation_without_grace_revokes_the_old_key_at_once() {
    let fx = Fixture::without_use_log();
    let store = fx.init();
    let old = store
        .create(
            NewKey::new("worker")
                .project("acme")
                .format(comp())
                .meta("team", "infra")
                .expires(Expiry::In(10 * DAY)),
        )
        .expect("create");
    fx.clock.advance(DAY);
    let now = T0 + DAY;
    let r = store.rotate(&old.record.id, None).expect("rotate");
    let new = &r.new.record;
    assert_eq!(store.verify(old.key.expose()).unwrap().code, Code::Revoked);
    let d = store.verify(r.new.key.expose()).unwrap();
    assert_eq!(d.code, Code::Valid);
    assert_eq!(d.key.as_ref().unwrap().id, new.id);
    // The same settings.
    assert_eq!(new.name, "worker");
    assert_eq!(new.project, "acme");
    assert_eq!(new.format, comp());
    assert_eq!(new.metadata, old.record.metadata);
    assert_eq!(r.new.key.expose().len(), 32);
    assert_ne!(r.new.key.expose(), old.key.expose());
    // The same lifetime (10 days), counted from now.
    assert_eq!(new.created_at, now);
    assert_eq!(new.expires_at, Some(now + 10 * DAY));
    // Linked both ways; the old one revoked now.
    assert_eq!(new.rotated_from.as_ref(), Some(&old.record.id));
    assert_eq!(r.old.rotated_to.as_ref(), Some(&new.id));
    assert_eq!(r.old.revoked.as_ref().map(|x| x.at), Some(now));
    assert_eq!(store.get(&old.record.id).unwrap().status, Status::Revoked);
    // A rotated (and here revoked) key cannot be rotated again; its successor can.
    let err = store.rotate(&old.record.id, None).expect_err("rotate twice");
    assert!(
        matches!(
            err,
            Error::State(StateError::Revoked(_) | StateError::AlreadyRotated(..))
        ),
        "got {err:?}"
    );
    let again = store.rotate(&new.id, None).expect("rotate the successor");
    assert_eq!(again.new.record.rotated_from.as_ref(), Some(&new.id));
    assert_eq!(
        ids(&all(&store)),
        [&old.record.id, &new.id, &again.new.record.id].map(Clone::clone)
    );
    store.close().expect("close");
}

#[test]
fn rotation_with_grace_keeps_the_old_key_valid_until_the_grace_ends() {
    let fx = Fixture::without_use_log();
    let store = fx.init();
    let old = store.create(NewKey::new("api")).expect("create");
    let r = store
        .rotate(&old.record.id, Some(Duration::from_secs(600)))
        .expect("rotate");
    let end = T0 + 600 * SECOND;
    assert_eq!(r.old.revoked.as_ref().map(|x| x.at), Some(end));
    assert_eq!(r.new.record.expires_at, None, "no expiry stays no expiry");
    // During the grace period both keys work.
    assert_eq!(store.verify(old.key.expose()).unwrap().code, Code::Valid);
    assert_eq!(store.verify(r.new.key.expose()).unwrap().code, Code::Valid);
    assert_eq!(store.get(&old.record.id).unwrap().status, Status::Active);
    // It cannot be rotated a second time, even while it still works.
    let err = store.rotate(&old.record.id, None).expect_err("rotate twice");
    assert!(
        matches!(err, Error::State(StateError::AlreadyRotated(ref a, ref b)) if *a == old.record.id.to_string() && *b == r.new.record.id.to_string()),
        "got {err:?}"
    );
    fx.clock.advance(600 * SECOND - 1);
    assert_eq!(store.verify(old.key.expose()).unwrap().code, Code::Valid);
    fx.clock.advance(1);
    assert_eq!(store.verify(old.key.expose()).unwrap().code, Code::Revoked);
    assert_eq!(store.get(&old.record.id).unwrap().status, Status::Revoked);
    assert_eq!(store.verify(r.new.key.expose()).unwrap().code, Code::Valid);
    // Revoked for good: survives a reopen, and every change is refused.
    store.close().expect("close");
    let store = fx.open();
    assert_eq!(store.verify(old.key.expose()).unwrap().code, Code::Revoked);
    for err in [
        store.disable(&old.record.id).map(drop),
        store.enable(&old.record.id).map(drop),
        store.revoke(&old.record.id, None).map(drop),
        store
            .update(
                &old.record.id,
                KeyUpdate {
                    name: Some("x".into()),
                    ..KeyUpdate::default()
                },
            )
            .map(drop),
    ] {
        assert!(matches!(err, Err(Error::State(StateError::Revoked(_)))), "got {err:?}");
    }
    store.close().expect("close");
}

#[test]
fn a_grace_period_never_outlives_the_old_keys_expiry() {
    let fx = Fixture::without_use_log();
    let store = fx.init();
    let old = store
        .create(NewKey::new("short").expires(Expiry::In(HOUR)))
        .expect("create");
    fx.clock.advance(HOUR / 2);
    let r = store
        .rotate(&old.record.id, Some(Duration::from_secs(86_400)))
        .expect("rotate");
    assert_eq!(
        r.old.revoked.as_ref().map(|x| x.at),
        Some(T0 + HOUR),
        "capped at the old expiry"
    );
    assert_eq!(r.new.record.expires_at, Some(T0 + HOUR / 2 + HOUR));
    assert_eq!(store.verify(old.key.expose()).unwrap().code, Code::Valid);
    fx.clock.advance(HOUR / 2);
    assert_eq!(store.verify(old.key.expose()).unwrap().code, Code::Revoked);
    assert_eq!(store.verify(r.new.key.expose()).unwrap().code, Code::Valid);
    store.close().expect("close");
}

// ---------------------------------------------------------------------------------------
// Rebuild and the audit log
// ---------------------------------------------------------------------------------------

#[test]
fn rebuild_gives_the_same_list_as_before() {
    let fx = Fixture::without_use_log();
    let store = fx.init();
    let a = store
        .create(NewKey::new("a").project("acme").meta("k", "v"))
        .expect("create");
    let b = store.create(NewKey::new("b").format(comp())).expect("create");
    let c = store
        .create(
            NewKey::new("c")
                .format(Format::default_for(Env::Test))
                .expires(Expiry::In(DAY)),
        )
        .expect("create");
    fx.clock.advance(SECOND);
    store.verify(a.key.expose()).unwrap();
    store.verify(b.key.expose()).unwrap();
    store.disable(&c.record.id).expect("disable");
    store
        .update(
            &a.record.id,
            KeyUpdate {
                name: Some("a renamed".into()),
                expires: Some(Some(Expiry::In(7 * DAY))),
                ..KeyUpdate::default()
            },
        )
        .expect("update");
    store
        .rotate(&b.record.id, Some(Duration::from_secs(60)))
        .expect("rotate");
    store.revoke(&c.record.id, Some("done")).expect("revoke");
    let before = all(&store);
    let formats_before: Vec<Format> = store.formats().iter().cloned().collect();
    let events_before = store.events(&EventFilter::default()).expect("events");
    store.close().expect("close");

    let last = Store::rebuild(&fx.path, fx.config.clone()).expect("rebuild");
    assert_eq!(last, events_before.last().map(|(seq, _)| *seq).unwrap());
    let store = fx.open();
    assert_eq!(all(&store), before, "rebuild from the log alone gives the same list");
    let formats_after: Vec<Format> = store.formats().iter().cloned().collect();
    assert_eq!(formats_after, formats_before);
    assert_eq!(store.events(&EventFilter::default()).expect("events"), events_before);
    assert_eq!(
        store.verify(b.key.expose()).unwrap().code,
        Code::Valid,
        "within the grace period"
    );
    assert_eq!(store.verify(c.key.expose()).unwrap().code, Code::Revoked);
    assert_eq!(store.verify_log().expect("log verifies").records, last);
    store.close().expect("close");
}

#[test]
fn events_filter_by_key_kind_and_time() {
    let fx = Fixture::without_use_log();
    let store = fx.init();
    let a = store.create(NewKey::new("a")).expect("create"); // T0: format.registered, key.created
    fx.clock.advance(SECOND);
    let b = store.create(NewKey::new("b")).expect("create"); // T0+1s
    fx.clock.advance(SECOND);
    store.disable(&a.record.id).expect("disable"); // T0+2s
    fx.clock.advance(SECOND);
    store.enable(&a.record.id).expect("enable"); // T0+3s
    fx.clock.advance(SECOND);
    store
        .update(
            &b.record.id,
            KeyUpdate {
                name: Some("b2".into()),
                ..KeyUpdate::default()
            },
        )
        .expect("update"); // T0+4s
    fx.clock.advance(SECOND);
    let c = store.rotate(&a.record.id, None).expect("rotate").new.record.id; // T0+5s
    fx.clock.advance(SECOND);
    store.revoke(&b.record.id, Some("bye")).expect("revoke"); // T0+6s
    // A refused change writes nothing.
    assert!(matches!(
        store.enable(&c),
        Err(Error::State(StateError::NotDisabled(_)))
    ));

    let kinds = |filter: EventFilter| -> Vec<&'static str> {
        store
            .events(&filter)
            .expect("events")
            .iter()
            .map(|(_, e)| e.kind_name())
            .collect()
    };
    let everything = store.events(&EventFilter::default()).expect("events");
    let seqs: Vec<u64> = everything.iter().map(|(s, _)| *s).collect();
    assert_eq!(
        seqs,
        (1..=8).collect::<Vec<u64>>(),
        "contiguous sequence numbers from 1"
    );
    assert_eq!(
        kinds(EventFilter::default()),
        [
            "format.registered",
            "key.created",
            "key.created",
            "key.disabled",
            "key.enabled",
            "key.updated",
            "key.rotated",
            "key.revoked"
        ]
    );
    let by_key = |id: &KeyId| EventFilter {
        key: Some(id.clone()),
        ..EventFilter::default()
    };
    assert_eq!(
        kinds(by_key(&a.record.id)),
        ["key.created", "key.disabled", "key.enabled", "key.rotated"]
    );
    assert_eq!(
        kinds(by_key(&b.record.id)),
        ["key.created", "key.updated", "key.revoked"]
    );
    assert_eq!(kinds(by_key(&c)), ["key.rotated"]);
    let by_kind = |k: &str| EventFilter {
        kind: Some(k.to_string()),
        ..EventFilter::default()
    };
    let created = store.events(&by_kind("key.created")).expect("events");
    assert_eq!(created.len(), 2);
    assert!(created.iter().all(|(_, e)| e.key_ids().len() == 1));
    assert_eq!(kinds(by_kind("key.revoked")), ["key.revoked"]);
    assert_eq!(kinds(by_kind("no.such.kind")), Vec::<&str>::new());
    // since is inclusive, until exclusive.
    let window = EventFilter {
        since: Some(T0 + 2 * SECOND),
        until: Some(T0 + 5 * SECOND),
        ..EventFilter::default()
    };
    assert_eq!(kinds(window), ["key.disabled", "key.enabled", "key.updated"]);
    let since = EventFilter {
        since: Some(T0 + 5 * SECOND),
        ..EventFilter::default()
    };
    assert_eq!(kinds(since), ["key.rotated", "key.revoked"]);
    let until = EventFilter {
        until: Some(T0 + SECOND),
        ..EventFilter::default()
    };
    assert_eq!(kinds(until), ["format.registered", "key.created"]);
    let combined = EventFilter {
        key: Some(a.record.id.clone()),
        kind: Some("key.enabled".into()),
        since: Some(T0),
        until: Some(T0 + 10 * SECOND),
        newest_first: false,
    };
    let got = store.events(&combined).expect("events");
    assert_eq!(got.len(), 1);
    assert_eq!((got[0].0, got[0].1.at), (5, T0 + 3 * SECOND));
    // Newest first reverses the order.
    let newest = store
        .events(&EventFilter {
            newest_first: true,
            ..EventFilter::default()
        })
        .expect("events");
    let oldest = store.events(&EventFilter::default()).expect("events");
    assert_eq!(
        newest.iter().map(|(s, _)| *s).rev().collect::<Vec<_>>(),
        oldest.iter().map(|(s, _)| *s).collect::<Vec<_>>()
    );
    // The JSON view names the kind and never carries a key or a tag.
    for (seq, e) in &everything {
        let json = e.to_json(*seq).to_string();
        assert!(json.contains(e.kind_name()));
        for secret in [a.key.expose(), b.key.expose()] {
            assert!(!json.contains(secret));
        }
        assert!(!json.contains("tag"), "{json}");
    }
    store.close().expect("close");
}

// ---------------------------------------------------------------------------------------
// Decisions and secrets
// ---------------------------------------------------------------------------------------

#[test]
fn a_decision_carries_the_key_fields_and_the_http_status_per_code() {
    let fx = Fixture::without_use_log();
    let store = fx.init();
    let k = store
        .create(
            NewKey::new("staging bot")
                .project("acme")
                .format(Format::default_for(Env::Test))
                .meta("team", "qa")
                .meta("tier", "free")
                .expires(Expiry::In(DAY)),
        )
        .expect("create");
    let d = store.verify(k.key.expose()).unwrap();
    assert_eq!((d.code, d.http_status(), d.is_valid()), (Code::Valid, 200, true));
    assert_eq!(d.malformed, None);
    let r = d.key.as_ref().expect("record");
    assert_eq!(r.id, k.record.id);
    assert_eq!(r.name, "staging bot");
    assert_eq!(r.project, "acme");
    assert_eq!(r.env(), Env::Test);
    assert_eq!(r.start, &k.key.expose()[..12]);
    assert_eq!(
        r.metadata,
        BTreeMap::from([("team".into(), "qa".into()), ("tier".into(), "free".into())])
    );

    let denied = |key: &str| {
        let d = store.verify(key).unwrap();
        assert_eq!(d.http_status(), 401, "{}", d.code);
        assert!(!d.is_valid());
        d
    };
    let d = denied("");
    assert_eq!((d.code, d.malformed), (Code::Malformed, Some(Malformed::Empty)));
    assert!(d.key.is_none());
    let d = denied("pk_live_abc");
    assert_eq!((d.code, d.malformed), (Code::Malformed, Some(Malformed::UnknownPrefix)));
    let mut typo = k.key.expose().to_string();
    let c = typo.remove(15);
    typo.insert(15, if c == 'x' { 'y' } else { 'x' });
    let d = denied(&typo);
    assert_eq!((d.code, d.malformed), (Code::Malformed, Some(Malformed::BadChecksum)));
    // A well-formed key (right checksum) that was never issued.
    let forged = forge("sk_test_", 32);
    let d = denied(&forged);
    assert_eq!((d.code, d.malformed), (Code::NotFound, None));
    assert!(d.key.is_none());
    // sk_live_ was never registered in this store: even a well-formed one is malformed.
    assert_eq!(denied(&forge("sk_live_", 32)).code, Code::Malformed);

    store.disable(&k.record.id).expect("disable");
    let d = denied(k.key.expose());
    assert_eq!(d.code, Code::Disabled);
    assert_eq!(d.key.as_ref().unwrap().id, k.record.id);
    store.enable(&k.record.id).expect("enable");
    fx.clock.advance(DAY);
    let d = denied(k.key.expose());
    assert_eq!(d.code, Code::Expired);
    assert_eq!(d.key.as_ref().unwrap().name, "staging bot");
    store.disable(&k.record.id).expect("disable");
    assert_eq!(denied(k.key.expose()).code, Code::Disabled, "disabled beats expired");
    store.revoke(&k.record.id, None).expect("revoke");
    let d = denied(k.key.expose());
    assert_eq!(d.code, Code::Revoked, "revoked beats disabled and expired");
    assert_eq!(d.key.as_ref().unwrap().project, "acme");
    for (code, text) in [
        (Code::Valid, "VALID"),
        (Code::Malformed, "MALFORMED"),
        (Code::NotFound, "NOT_FOUND"),
        (Code::Revoked, "REVOKED"),
        (Code::Disabled, "DISABLED"),
        (Code::Expired, "EXPIRED"),
    ] {
        assert_eq!(code.to_string(), text);
    }
    store.close().expect("close");
}

/// A well-formed key built per DESIGN.md (CRC32 of prefix and random part, base62, six
/// characters, most significant first), independent of the crate's generator.
fn forge(prefix: &str, random_len: usize) -> String {
    const BASE62: &[u8] = b"0123456789ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz";
    let mut key = prefix.to_string();
    key.extend((0..random_len).map(|i| char::from(BASE62[(i * 7 + 3) % 62])));
    let mut n = crc32fast::hash(key.as_bytes());
    let mut sum = [b'0'; 6];
    for slot in sum.iter_mut().rev() {
        *slot = BASE62[(n % 62) as usize];
        n /= 62;
    }
    key.push_str(std::str::from_utf8(&sum).expect("ascii"));
    key
}

#[test]
fn secrets_and_peppers_never_show_in_debug() {
    let fx = Fixture::without_use_log();
    let store = fx.init();
    let created = store.create(NewKey::new("k")).expect("create");
    let secret = created.key.expose().to_string();
    let random = &secret["sk_live_".len()..];
    let rotated = store
        .rotate(&created.record.id, Some(Duration::from_secs(60)))
        .expect("rotate");
    let new_secret = rotated.new.key.expose().to_string();
    let decision = store.verify(&secret).unwrap();
    let texts = [
        format!("{:?}", created.key),
        format!("{}", created.key),
        format!("{created:?}"),
        format!("{created:#?}"),
        format!("{rotated:?}"),
        format!("{decision:?}"),
        format!("{:?}", store.get(&created.record.id).unwrap()),
        format!("{store:?}"),
    ];
    for text in &texts {
        assert!(!text.contains(random), "secret in {text}");
        assert!(!text.contains(&new_secret["sk_live_".len()..]), "new secret in {text}");
    }
    assert!(format!("{:?}", created.key).contains("redacted"));

    let pepper = Pepper::from_bytes([0xAB; 32]);
    let hex = pepper.to_hex().to_string();
    for text in [
        format!("{pepper:?}"),
        format!("{:?}", fx.config.clone().pepper(pepper.clone())),
        format!("{:#?}", fx.config.clone().pepper(pepper.clone())),
    ] {
        assert!(!text.to_lowercase().contains("abab"), "pepper in {text}");
        assert!(!text.contains(&hex));
        assert!(!text.contains("171, 171"), "pepper bytes in {text}");
    }
    store.close().expect("close");
}

// ---------------------------------------------------------------------------------------
// Torn tail recovery
// ---------------------------------------------------------------------------------------

/// The last segment of a store's log.
fn last_segment(data: &Path) -> PathBuf {
    let mut segments: Vec<PathBuf> = std::fs::read_dir(data.join("log"))
        .expect("log dir")
        .map(|e| e.expect("entry").path())
        .filter(|p| p.extension().is_some_and(|x| x == "log"))
        .collect();
    segments.sort();
    segments.pop().expect("a segment")
}

/// Creates keys in several states, closes the store, appends `tail` to the last segment,
/// reopens: the tail is truncated and reported, and every key is intact.
fn torn_tail_case(tail: &[u8]) {
    let fx = Fixture::without_use_log();
    let store = fx.init();
    let keys: Vec<_> = (0..5)
        .map(|i| {
            let f = if i % 2 == 0 { None } else { Some(comp()) };
            let mut n = NewKey::new(format!("k{i}"));
            if let Some(f) = f {
                n = n.format(f);
            }
            store.create(n).expect("create")
        })
        .collect();
    store.disable(&keys[1].record.id).expect("disable");
    store.revoke(&keys[2].record.id, None).expect("revoke");
    let before = all(&store);
    let records = store.verify_log().expect("log").records;
    assert_eq!(store.recovery_report().truncated_bytes, 0);
    store.close().expect("close");

    let seg = last_segment(&fx.path);
    let clean_len = std::fs::metadata(&seg).expect("segment").len();
    let mut f = std::fs::OpenOptions::new()
        .append(true)
        .open(&seg)
        .expect("open segment");
    std::io::Write::write_all(&mut f, tail).expect("append");
    f.sync_all().expect("sync");
    drop(f);

    let store = Store::open(&fx.path, fx.config.clone()).expect("a torn tail must not stop the store opening");
    let report = store.recovery_report().clone();
    assert_eq!(report.truncated_bytes, tail.len() as u64, "{report:?}");
    assert_eq!(std::fs::metadata(&seg).expect("segment").len(), clean_len);
    assert_eq!(all(&store), before, "every key intact");
    let codes: Vec<Code> = keys
        .iter()
        .map(|k| store.verify(k.key.expose()).unwrap().code)
        .collect();
    assert_eq!(
        codes,
        [Code::Valid, Code::Disabled, Code::Revoked, Code::Valid, Code::Valid]
    );
    assert_eq!(store.verify_log().expect("log verifies").records, records);
    // The log goes on from where it was cut.
    let more = store.create(NewKey::new("after recovery")).expect("create");
    store.close().expect("close");
    let store = fx.open();
    assert_eq!(
        store.recovery_report().truncated_bytes,
        0,
        "a clean log the second time"
    );
    assert_eq!(store.verify(more.key.expose()).unwrap().code, Code::Valid);
    assert_eq!(store.verify_log().expect("log verifies").records, records + 1);
    store.close().expect("close");
}

#[test]
fn a_partial_record_at_the_tail_is_truncated_and_reported() {
    // The start of a frame whose body never made it: length 120, some CRC, 30 body bytes.
    let mut tail = 120u32.to_le_bytes().to_vec();
    tail.extend_from_slice(&[0x12, 0x34, 0x56, 0x78]);
    tail.extend((0..30u8).map(|i| i.wrapping_mul(37)));
    torn_tail_case(&tail);
}

#[test]
fn zeros_at_the_tail_are_truncated_and_reported() {
    torn_tail_case(&[0u8; 100]);
}

#[test]
fn garbage_at_the_tail_is_truncated_and_reported() {
    // Arbitrary bytes: read as a frame, their declared length reaches past the end of the
    // file (DURABILITY.md, crash recovery step 3: a torn tail).
    torn_tail_case(b"this is not a log record \xff\xfe\x00\x01 garbage");
}

// ---------------------------------------------------------------------------------------
// Reopening and rebuilding right away
// ---------------------------------------------------------------------------------------

#[test]
fn ids_keep_creation_order_across_reopen() {
    // The clock stands still, as it may across a fast restart (or step back, with NTP):
    // a key created after a reopen must still list after every key created before it.
    let fx = Fixture::without_use_log();
    let mut store = fx.init();
    let mut created = Vec::new();
    for round in 0..20 {
        created.push(
            store
                .create(NewKey::new(format!("k{round}")))
                .expect("create")
                .record
                .id,
        );
        store.close().expect("close");
        store = fx.open();
        assert_eq!(
            ids(&all(&store)),
            created,
            "round {round}: list() must be in creation order"
        );
    }
    store.close().expect("close");
}

#[test]
fn close_then_rebuild_or_open_at_once_loses_nothing() {
    // No sleeps: `close` returning means the store is closed, and the next `rebuild` or
    // `open` of the same directory must find it so (and keep every last-used time).
    let fx = Fixture::without_use_log();
    let mut store = fx.init();
    let k = store.create(NewKey::new("k")).expect("create");
    for round in 0..200 {
        fx.clock.advance(SECOND);
        assert_eq!(store.verify(k.key.expose()).unwrap().code, Code::Valid);
        let before = all(&store);
        assert_eq!(before[0].last_used_at, Some(T0 + (round + 1) * SECOND));
        store.close().expect("close");
        if round % 2 == 0 {
            Store::rebuild(&fx.path, fx.config.clone()).unwrap_or_else(|e| panic!("round {round}: rebuild: {e}"));
        }
        store = Store::open(&fx.path, fx.config.clone()).unwrap_or_else(|e| panic!("round {round}: open: {e}"));
        assert_eq!(all(&store), before, "round {round} (rebuilt: {})", round % 2 == 0);
    }
    store.close().expect("close");
}

/// Well-formed keys of another store are `NOT_FOUND` (the index's filter of tags answers
/// them without a read of sled), while every key of this one is found: made before the
/// open, after it, by a rotation, and after a reopen.
#[test]
fn unknown_well_formed_keys_are_not_found_and_every_key_of_the_store_is() {
    let dir = tempfile::tempdir().unwrap();
    let config = Config::new().pepper(credstore::Pepper::from_bytes([7; 32]));
    let other_config = Config::new().pepper(credstore::Pepper::from_bytes([8; 32]));
    let other = Store::init(dir.path().join("other"), other_config).unwrap();
    let strangers: Vec<String> = (0..200)
        .map(|i| {
            other
                .create(NewKey::new(format!("s{i}")))
                .unwrap()
                .key
                .expose()
                .to_string()
        })
        .collect();
    other.close().unwrap();

    let store = Store::init(dir.path().join("data"), config.clone()).unwrap();
    let before: Vec<String> = (0..50)
        .map(|i| {
            store
                .create(NewKey::new(format!("b{i}")))
                .unwrap()
                .key
                .expose()
                .to_string()
        })
        .collect();
    store.close().unwrap();
    let store = Store::open(dir.path().join("data"), config.clone()).unwrap();
    let after = store.create(NewKey::new("after")).unwrap();
    let rotated = store.rotate(&after.record.id, None).unwrap();
    let code = |store: &Store, key: &str| store.verify(key).unwrap().code;
    for key in &before {
        assert_eq!(code(&store, key), Code::Valid);
    }
    assert_eq!(code(&store, rotated.new.key.expose()), Code::Valid);
    for key in &strangers {
        assert_eq!(code(&store, key), Code::NotFound);
    }
    store.close().unwrap();
    let store = Store::open(dir.path().join("data"), config).unwrap();
    assert_eq!(code(&store, rotated.new.key.expose()), Code::Valid);
    assert_eq!(code(&store, after.key.expose()), Code::Revoked, "rotated without grace");
    for key in before.iter().chain(&strangers[..10]) {
        let expected = if before.contains(key) {
            Code::Valid
        } else {
            Code::NotFound
        };
        assert_eq!(code(&store, key), expected);
    }
    store.close().unwrap();
}
