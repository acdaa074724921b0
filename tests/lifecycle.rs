//! Lifecycle policy (DESIGN.md, "Lifecycle policy"), on a store with a manual clock: a
//! key created without an expiry gets one, an expiry beyond the max lifetime is refused, a
//! key older than the max lifetime or unused for the unused expiry is refused as
//! `EXPIRED` (a use in between resets the unused clock), a rotation's grace is raised to
//! the least grace, the most specific scope wins, a reopened store keeps its policies, and
//! the sweep logs `key.expiring`, `key.unused` and `key.expired` once per episode.

#![expect(
    clippy::unwrap_used,
    reason = "a test fails by panicking: unwrap, expect and indexing are its assertions"
)]

mod common;

use std::time::Duration;

use common::{Fixture, T0};
use credstore::lifecycle::{Lifecycle, Scope};
use credstore::{
    Code, Env, Error, EventFilter, Expiry, Format, InputError, KeyId, KeyUpdate, NewKey, StateError, Status, Store,
};
use proptest::prelude::*;

const DAY: i64 = 86_400_000;
const HOUR: i64 = 3_600_000;

fn max_lifetime(days: i64) -> Lifecycle {
    Lifecycle {
        max_lifetime_ms: Some(days * DAY),
        ..Lifecycle::default()
    }
}

fn count(store: &Store, kind: &str, key: &KeyId) -> usize {
    store
        .events(&EventFilter {
            kind: Some(kind.into()),
            key: Some(key.clone()),
            ..EventFilter::default()
        })
        .unwrap()
        .len()
}

fn code(store: &Store, key: &str) -> Code {
    store.verify(key).unwrap().code
}

#[test]
fn a_key_created_without_an_expiry_gets_the_max_lifetime_and_a_longer_one_is_refused() {
    let fx = Fixture::new();
    let store = fx.init();
    store.set_lifecycle(Scope::Store, max_lifetime(366)).unwrap();
    let created = store.create(NewKey::new("svc")).unwrap();
    assert_eq!(created.record.expires_at, Some(T0 + 366 * DAY));
    let shorter = store
        .create(NewKey::new("short").expires(Expiry::In(30 * DAY)))
        .unwrap();
    assert_eq!(shorter.record.expires_at, Some(T0 + 30 * DAY));
    let before = store.list(&Default::default()).unwrap().len();
    let refused = store.create(NewKey::new("long").expires(Expiry::In(400 * DAY)));
    match refused {
        Err(Error::State(e @ StateError::BeyondMaxLifetime { .. })) => {
            let text = e.to_string();
            assert!(text.contains("366d") && text.contains("the store"), "{text}");
        }
        other => panic!("expected BeyondMaxLifetime, got {other:?}"),
    }
    assert_eq!(
        store.list(&Default::default()).unwrap().len(),
        before,
        "nothing written"
    );
    // An update is held to the same bound, counted from the key's creation.
    let id = created.record.id.clone();
    let update = KeyUpdate {
        expires: Some(Some(Expiry::At(T0 + 367 * DAY))),
        ..KeyUpdate::default()
    };
    assert!(matches!(
        store.update(&id, update),
        Err(Error::State(StateError::BeyondMaxLifetime { .. }))
    ));
    assert_eq!(store.get(&id).unwrap().record.expires_at, Some(T0 + 366 * DAY));
}

#[test]
fn lifetime_policy_with_a_moved_clock_expires_a_key_created_before_it() {
    let fx = Fixture::new();
    let store = fx.init();
    let old = store.create(NewKey::new("old")).unwrap();
    let key = old.key.expose().to_string();
    fx.clock.advance(10 * DAY);
    assert_eq!(code(&store, &key), Code::Valid);
    store.set_lifecycle(Scope::Store, max_lifetime(30)).unwrap();
    // 10 days old: within 30 days.
    assert_eq!(code(&store, &key), Code::Valid);
    assert_eq!(store.get(&old.record.id).unwrap().status, Status::Active);
    fx.clock.advance(20 * DAY - 1);
    assert_eq!(code(&store, &key), Code::Valid);
    fx.clock.advance(1);
    assert_eq!(code(&store, &key), Code::Expired);
    assert_eq!(store.get(&old.record.id).unwrap().status, Status::Expired);
    // Also on a verify that reads sled afresh.
    store.clear_cache().unwrap();
    assert_eq!(code(&store, &key), Code::Expired);
    // The sweep logs it, once.
    assert_eq!(store.sweep_lifecycle().unwrap(), 1);
    assert_eq!(store.sweep_lifecycle().unwrap(), 0);
    let expired = store
        .events(&EventFilter {
            kind: Some("key.expired".into()),
            ..EventFilter::default()
        })
        .unwrap();
    assert_eq!(expired.len(), 1);
    let json = expired[0].1.to_json(expired[0].0);
    assert_eq!(json["details"]["reason"], "max_lifetime", "{json}");
    // Clearing the policy lifts what it imposed on a key created before it.
    store.clear_lifecycle(&Scope::Store).unwrap();
    assert_eq!(code(&store, &key), Code::Valid);
    assert!(matches!(
        store.clear_lifecycle(&Scope::Store),
        Err(Error::State(StateError::NoLifecyclePolicy(_)))
    ));
}

#[test]
fn an_unused_key_expires_and_a_use_in_between_resets_the_clock() {
    let fx = Fixture::new();
    let store = fx.init();
    let policy = Lifecycle {
        unused_expiry_ms: Some(90 * DAY),
        ..Lifecycle::default()
    };
    store.set_lifecycle(Scope::Store, policy).unwrap();
    let used = store.create(NewKey::new("used")).unwrap();
    let idle = store.create(NewKey::new("idle")).unwrap();
    let (used_key, idle_key) = (used.key.expose().to_string(), idle.key.expose().to_string());
    fx.clock.advance(60 * DAY);
    assert_eq!(code(&store, &used_key), Code::Valid);
    fx.clock.advance(30 * DAY);
    // 90 days since the idle key was created, 30 since the other was used.
    assert_eq!(code(&store, &idle_key), Code::Expired);
    assert_eq!(code(&store, &used_key), Code::Valid);
    // Last used survives a reopen (flushed at close): the clock does not restart.
    store.close().unwrap();
    let store = fx.open();
    fx.clock.advance(90 * DAY - 1);
    assert_eq!(code(&store, &used_key), Code::Valid);
    fx.clock.advance(90 * DAY);
    assert_eq!(code(&store, &used_key), Code::Expired);
    assert_eq!(store.get(&used.record.id).unwrap().status, Status::Expired);
    assert_eq!(
        store.sweep_lifecycle().unwrap(),
        2,
        "both keys expired, each logged once"
    );
    assert_eq!(store.sweep_lifecycle().unwrap(), 0);
    assert_eq!(count(&store, "key.expired", &idle.record.id), 1);
}

#[test]
fn a_rotation_grace_below_the_least_grace_is_raised_to_it() {
    let fx = Fixture::new();
    let store = fx.init();
    let policy = Lifecycle {
        min_grace_ms: Some(HOUR),
        ..Lifecycle::default()
    };
    store.set_lifecycle(Scope::Store, policy).unwrap();
    let first = store.create(NewKey::new("svc")).unwrap();
    let rotated = store.rotate(&first.record.id, None).unwrap();
    assert_eq!(rotated.grace_raised_to, Some(Duration::from_millis(HOUR as u64)));
    let old_key = first.key.expose();
    fx.clock.advance(HOUR - 1);
    assert_eq!(code(&store, old_key), Code::Valid, "still in its raised grace");
    fx.clock.advance(1);
    assert_eq!(code(&store, old_key), Code::Revoked);
    let again = store
        .rotate(&rotated.new.record.id, Some(Duration::from_millis(2 * HOUR as u64)))
        .unwrap();
    assert_eq!(again.grace_raised_to, None, "a longer grace stays as asked");
    assert_eq!(
        again.old.revoked.as_ref().map(|r| r.at),
        Some(fx.clock_now() + 2 * HOUR)
    );
}

#[test]
fn each_setting_comes_from_the_most_specific_scope() {
    let fx = Fixture::new();
    let store = fx.init();
    let prefix = Format::default_for(Env::Live).prefix().to_string();
    store.set_lifecycle(Scope::Store, max_lifetime(366)).unwrap();
    store
        .set_lifecycle(Scope::Project("web".into()), max_lifetime(30))
        .unwrap();
    store
        .set_lifecycle(Scope::Format(prefix.clone()), max_lifetime(7))
        .unwrap();
    let expiry = |store: &Store, project: &str| {
        let created = store.create(NewKey::new("k").project(project)).unwrap();
        (created.record.expires_at.unwrap() - T0) / DAY
    };
    assert_eq!(expiry(&store, "web"), 7, "format over project");
    store.clear_lifecycle(&Scope::Format(prefix)).unwrap();
    assert_eq!(expiry(&store, "web"), 30, "project over store");
    assert_eq!(expiry(&store, "default"), 366);
    // A setting the narrower policy leaves unset comes from the wider one.
    let unused = Lifecycle {
        unused_expiry_ms: Some(5 * DAY),
        ..Lifecycle::default()
    };
    store.set_lifecycle(Scope::Store, unused).unwrap();
    let web = store.create(NewKey::new("w").project("web")).unwrap();
    assert_eq!(web.record.expires_at, Some(T0 + 30 * DAY));
    fx.clock.advance(5 * DAY);
    assert_eq!(
        code(&store, web.key.expose()),
        Code::Expired,
        "the store's unused expiry"
    );
}

#[test]
fn a_reopened_store_keeps_its_policies_and_bad_ones_change_nothing() {
    let fx = Fixture::new();
    let store = fx.init();
    let policy = Lifecycle {
        max_lifetime_ms: Some(30 * DAY),
        unused_expiry_ms: Some(10 * DAY),
        min_grace_ms: Some(HOUR),
    };
    store.set_lifecycle(Scope::Project("web".into()), policy).unwrap();
    let key = store.create(NewKey::new("k").project("web")).unwrap();
    for bad in [
        Lifecycle::default(),
        Lifecycle {
            max_lifetime_ms: Some(0),
            ..Lifecycle::default()
        },
        Lifecycle {
            min_grace_ms: Some(-5),
            ..Lifecycle::default()
        },
    ] {
        assert!(matches!(
            store.set_lifecycle(Scope::Store, bad),
            Err(Error::Input(InputError::InvalidPolicy(_)))
        ));
    }
    let before = store.lifecycle_policies();
    store.close().unwrap();
    let store = fx.open();
    assert_eq!(store.lifecycle_policies(), before);
    assert_eq!(
        store.lifecycle_policies().get(&Scope::Project("web".into())),
        Some(&policy)
    );
    assert!(store.lifecycle_policies().get(&Scope::Store).is_none());
    fx.clock.advance(10 * DAY);
    assert_eq!(code(&store, key.key.expose()), Code::Expired);
    // The log alone rebuilds them.
    store.close().unwrap();
    Store::rebuild(&fx.path, fx.config.clone()).unwrap();
    let store = fx.open();
    assert_eq!(store.lifecycle_policies(), before);
}

#[test]
fn the_sweep_logs_expiring_and_unused_once_per_episode() {
    let fx = Fixture::new();
    let store = fx.init();
    let expiring = store.create(NewKey::new("soon").expires(Expiry::In(10 * DAY))).unwrap();
    let idle = store.create(NewKey::new("idle")).unwrap();
    assert_eq!(store.sweep_lifecycle().unwrap(), 0);
    // Default notice periods: 7 days before expiry, 30 days unused.
    fx.clock.advance(3 * DAY);
    assert_eq!(store.sweep_lifecycle().unwrap(), 1);
    assert_eq!(store.sweep_lifecycle().unwrap(), 0);
    assert_eq!(count(&store, "key.expiring", &expiring.record.id), 1);
    // A new expiry is a new episode.
    let later = KeyUpdate {
        expires: Some(Some(Expiry::At(T0 + 9 * DAY))),
        ..KeyUpdate::default()
    };
    store.update(&expiring.record.id, later).unwrap();
    assert_eq!(store.sweep_lifecycle().unwrap(), 1);
    assert_eq!(count(&store, "key.expiring", &expiring.record.id), 2);
    // Unused for 30 days: once; a use starts a new episode.
    store.revoke(&expiring.record.id, None).unwrap();
    fx.clock.advance(27 * DAY);
    assert_eq!(store.sweep_lifecycle().unwrap(), 1);
    assert_eq!(store.sweep_lifecycle().unwrap(), 0);
    assert_eq!(count(&store, "key.unused", &idle.record.id), 1);
    assert_eq!(code(&store, idle.key.expose()), Code::Valid);
    fx.clock.advance(29 * DAY);
    assert_eq!(store.sweep_lifecycle().unwrap(), 0);
    fx.clock.advance(DAY);
    assert_eq!(store.sweep_lifecycle().unwrap(), 1);
    assert_eq!(count(&store, "key.unused", &idle.record.id), 2);
    // The episodes logged survive a reopen: nothing is logged twice.
    store.close().unwrap();
    let store = fx.open();
    assert_eq!(store.sweep_lifecycle().unwrap(), 0);
    assert_eq!(
        count(&store, "key.expiring", &expiring.record.id),
        2,
        "revoked keys get none"
    );
}

trait Now {
    fn clock_now(&self) -> i64;
}

impl Now for Fixture {
    fn clock_now(&self) -> i64 {
        use credstore::Clock;
        self.clock.now_ms()
    }
}

/// One step of the property test: move the clock, then verify the key (a use) or only
/// look at it (no use), then sweep.
#[derive(Debug, Clone)]
struct Step {
    advance_days: i64,
    used: bool,
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(48))]

    /// Against a model: the deadline is the earlier of the key's own expiry and its
    /// creation plus the max lifetime; it is expired from then, or once unused (since its
    /// last valid use, or creation) for the unused expiry; only a valid verify is a use; a
    /// key created under a max lifetime gets it as its expiry and a longer one is refused;
    /// the sweep logs `key.expired` once when the key expired.
    #[test]
    fn verify_and_the_sweep_agree_with_a_model_of_the_lifecycle(
        own_days in proptest::option::of(1i64..60),
        max_days in proptest::option::of(1i64..60),
        unused_days in proptest::option::of(1i64..20),
        policy_first in proptest::bool::ANY,
        steps in proptest::collection::vec(
            (0i64..15, proptest::bool::ANY).prop_map(|(advance_days, used)| Step { advance_days, used }),
            1..10,
        ),
    ) {
        let fx = Fixture::new();
        let store = fx.init();
        let policy = Lifecycle {
            max_lifetime_ms: max_days.map(|d| d * DAY),
            unused_expiry_ms: unused_days.map(|d| d * DAY),
            min_grace_ms: None,
        };
        let has_policy = policy != Lifecycle::default();
        if policy_first && has_policy {
            store.set_lifecycle(Scope::Store, policy).unwrap();
        }
        let mut new = NewKey::new("k");
        if let Some(d) = own_days {
            new = new.expires(Expiry::In(d * DAY));
        }
        let created = store.create(new);
        let mut expires_at = own_days.map(|d| T0 + d * DAY);
        if policy_first && let Some(max) = max_days {
            if own_days.is_some_and(|d| d > max) {
                let refused = matches!(created, Err(Error::State(StateError::BeyondMaxLifetime { .. })));
                prop_assert!(refused, "{created:?}");
                return Ok(());
            }
            expires_at = Some(expires_at.unwrap_or(T0 + max * DAY));
        }
        let created = created.unwrap();
        prop_assert_eq!(created.record.expires_at, expires_at);
        if !policy_first && has_policy {
            store.set_lifecycle(Scope::Store, policy).unwrap();
        }
        let deadline = expires_at
            .unwrap_or(i64::MAX)
            .min(max_days.map_or(i64::MAX, |d| T0 + d * DAY));
        let mut last_used = T0;
        let mut now = T0;
        let mut expired_seen = false;
        for step in &steps {
            fx.clock.advance(step.advance_days * DAY);
            now += step.advance_days * DAY;
            let expired = now >= deadline || unused_days.is_some_and(|d| now - last_used >= d * DAY);
            if step.used {
                let expected = if expired { Code::Expired } else { Code::Valid };
                prop_assert_eq!(store.verify(created.key.expose()).unwrap().code, expected);
                if !expired {
                    last_used = now;
                }
            } else {
                let expected = if expired { Status::Expired } else { Status::Active };
                prop_assert_eq!(store.get(&created.record.id).unwrap().status, expected);
            }
            store.sweep_lifecycle().unwrap();
            expired_seen |= expired;
        }
        prop_assert_eq!(count(&store, "key.expired", &created.record.id), usize::from(expired_seen));
    }
}
