//! Owners through the public API (DESIGN.md, "Owners, credits, events, import, leaks"):
//! an owner's rate limits and budget are shared by all its keys, on top of each key's own,
//! all or nothing; a decision names the owner; an owner's keys are revoked or disabled in
//! one logged operation; owner state survives a reopen and a rebuild.

#![expect(
    clippy::expect_used,
    clippy::indexing_slicing,
    reason = "a test fails by panicking: unwrap, expect and indexing are its assertions"
)]

mod common;

use std::collections::BTreeMap;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};

use common::Fixture;
use credstore::{
    Budget, Code, Error, EventFilter, InputError, ListFilter, NewKey, OwnerUpdate, Period, RateLimit, StateError,
    Status, Store, VerifyRequest,
};

const THREADS: usize = 8;
const KEYS: usize = 4;

fn limit(text: &str) -> RateLimit {
    RateLimit::parse(text).expect("limit")
}

fn total(cap: u64) -> Budget {
    Budget::new(cap, Period::Total).expect("budget")
}

/// Owner `id` with these limits and budget, and metadata `tier=gold`.
fn owner(store: &Store, id: &str, limits: Vec<RateLimit>, budget: Option<Budget>) {
    let update = OwnerUpdate {
        name: Some(format!("{id} Inc.")),
        metadata: Some(BTreeMap::from([("tier".to_string(), "gold".to_string())])),
        rate_limits: Some(limits),
        budget: Some(budget),
    };
    store.set_owner(id, update).expect("owner set");
}

/// `n` keys of `owner`, each made by `make`; their secrets.
fn keys_of(store: &Store, owner: &str, n: usize, make: impl Fn(usize) -> NewKey) -> Vec<String> {
    (0..n)
        .map(|i| {
            let created = store.create(make(i).owner(owner)).expect("create");
            created.key.expose().to_string()
        })
        .collect()
}

/// Runs `per_thread` verifies (cost 1) on each of [`THREADS`] threads, round robin over
/// `keys`; returns how many were VALID for each key, and every code seen.
fn hammer(store: &Arc<Store>, keys: &[String], per_thread: usize) -> (Vec<u64>, Vec<Code>) {
    let admitted: Arc<Vec<AtomicU64>> = Arc::new(keys.iter().map(|_| AtomicU64::new(0)).collect());
    let threads: Vec<_> = (0..THREADS)
        .map(|t| {
            let (store, keys, admitted) = (Arc::clone(store), keys.to_vec(), Arc::clone(&admitted));
            std::thread::spawn(move || {
                let mut codes = Vec::new();
                for i in 0..per_thread {
                    let k = (t + i) % keys.len();
                    let d = store
                        .verify_with(&VerifyRequest::new(&keys[k]).cost(1))
                        .expect("verify");
                    if d.is_valid() {
                        admitted[k].fetch_add(1, Ordering::Relaxed);
                    }
                    codes.push(d.code);
                }
                codes
            })
        })
        .collect();
    let codes = threads.into_iter().flat_map(|t| t.join().expect("thread")).collect();
    (admitted.iter().map(|a| a.load(Ordering::Relaxed)).collect(), codes)
}

#[test]
fn an_owners_rate_limit_holds_under_concurrency_over_several_keys() {
    let fx = Fixture::without_use_log();
    let store = Arc::new(fx.init());
    // The manual clock never moves: the owner's 100 per hour never refill.
    owner(&store, "acme", vec![limit("100/1h")], None);
    // Each key's own limit is more than its share of the attempts: only the owner's binds.
    let keys = keys_of(&store, "acme", KEYS, |i| {
        NewKey::new(format!("k{i}")).rate_limit(limit("1000/1h"))
    });
    let (admitted, codes) = hammer(&store, &keys, 50);
    let sum: u64 = admitted.iter().sum();
    assert_eq!(
        sum, 100,
        "admitted over all keys: exactly the owner's limit, never more"
    );
    assert!(
        codes.iter().all(|c| matches!(c, Code::Valid | Code::RateLimited)),
        "{codes:?}"
    );
    // All or nothing: every refused request gave its weight back to the key's own limit.
    for (key, n) in keys.iter().zip(&admitted) {
        let d = store
            .verify_with(&VerifyRequest::new(key).cost(0).weight(0))
            .expect("peek");
        let own = d
            .ratelimits
            .iter()
            .find(|l| l.name.as_str() == "1h")
            .expect("own limit");
        assert_eq!(
            u64::from(own.remaining),
            1000 - n,
            "the key's own limit counts only admitted requests"
        );
    }
}

#[test]
fn an_owners_budget_cap_holds_under_concurrency_over_several_keys() {
    let fx = Fixture::without_use_log();
    let store = Arc::new(fx.init());
    owner(&store, "acme", vec![], Some(total(100)));
    // Each key's own cap is over its quarter of the owner's: the owner's binds, and a key
    // charged before the owner refused must be given its charge back.
    let keys = keys_of(&store, "acme", KEYS, |i| NewKey::new(format!("k{i}")).budget(total(60)));
    let (admitted, codes) = hammer(&store, &keys, 40);
    let sum: u64 = admitted.iter().sum();
    // No key can take the owner's budget alone (60 < 100), and a key's charge is given
    // back only when the owner's budget is spent: the owner's cap is reached exactly.
    assert_eq!(sum, 100, "admitted over all keys: exactly the owner's cap, never more");
    assert!(
        codes.iter().all(|c| matches!(c, Code::Valid | Code::BudgetExhausted)),
        "{codes:?}"
    );
    for (key, n) in keys.iter().zip(&admitted) {
        assert!(*n <= 60, "a key's own cap holds: {n}");
        let d = store.verify_with(&VerifyRequest::new(key).cost(0)).expect("peek");
        assert_eq!(
            d.budget.expect("key budget").spent,
            *n,
            "the key was charged only for admitted requests"
        );
        assert_eq!(d.owner_budget.expect("owner budget").spent, 100);
    }
    assert_eq!(store.owner_budget("acme").expect("owner").expect("budget").spent, 100);
}

#[test]
fn a_refused_owner_check_leaves_the_keys_own_counters_as_they_were() {
    let fx = Fixture::without_use_log();
    let store = fx.init();
    // The owner's budget refuses the sixth request.
    owner(&store, "acme", vec![], Some(total(5)));
    let key = keys_of(&store, "acme", 1, |_| {
        NewKey::new("k").rate_limit(limit("50/1h")).budget(total(100))
    })
    .remove(0);
    for _ in 0..5 {
        assert!(store.verify(&key).expect("verify").is_valid());
    }
    let refused = store.verify(&key).expect("verify");
    assert_eq!(refused.code, Code::BudgetExhausted);
    let own = refused.budget.as_ref().expect("key budget");
    assert_eq!((own.spent, own.charged), (5, false), "the key's budget is as it was");
    assert_eq!(refused.owner_budget.as_ref().expect("owner budget").spent, 5);
    assert_eq!(refused.ratelimits[0].remaining, 45, "the key's own limit is as it was");
    let after = store
        .verify_with(&VerifyRequest::new(&key).cost(0).weight(0))
        .expect("peek");
    assert_eq!(after.budget.expect("key budget").spent, 5);
    assert_eq!(after.ratelimits[0].remaining, 45);

    // The owner's rate limit refuses the third request: the key's limit and budget keep
    // only the two admitted.
    owner(&store, "beta", vec![limit("2/1h")], None);
    let key = keys_of(&store, "beta", 1, |_| {
        NewKey::new("k").rate_limit(limit("10/1h")).budget(total(100))
    })
    .remove(0);
    for _ in 0..2 {
        assert!(store.verify(&key).expect("verify").is_valid());
    }
    let refused = store.verify(&key).expect("verify");
    assert_eq!(refused.code, Code::RateLimited);
    let names: Vec<&str> = refused.ratelimits.iter().map(|l| l.name.as_str()).collect();
    assert_eq!(names, ["1h", "owner:1h"]);
    assert_eq!(refused.ratelimits[0].remaining, 8, "the key's own limit is as it was");
    assert!(refused.ratelimits[1].retry_after.is_some(), "the owner's limit refused");
    let after = store
        .verify_with(&VerifyRequest::new(&key).cost(0).weight(0))
        .expect("peek");
    assert_eq!(
        after.budget.expect("key budget").spent,
        2,
        "nothing charged for the refused request"
    );

    // And the other way round: the key's own budget refuses, the owner's is not charged.
    owner(&store, "gamma", vec![], Some(total(100)));
    let key = keys_of(&store, "gamma", 1, |_| NewKey::new("k").budget(total(1))).remove(0);
    assert!(store.verify(&key).expect("verify").is_valid());
    assert_eq!(store.verify(&key).expect("verify").code, Code::BudgetExhausted);
    assert_eq!(store.owner_budget("gamma").expect("owner").expect("budget").spent, 1);
}

#[test]
fn a_decision_names_the_owner_and_its_metadata() {
    let fx = Fixture::new();
    let store = fx.init();
    owner(&store, "acme", vec![limit("10/1m")], Some(total(50)));
    let key = keys_of(&store, "acme", 1, |_| NewKey::new("k")).remove(0);
    let d = store.verify(&key).expect("verify");
    assert!(d.is_valid());
    let o = d.owner.as_ref().expect("owner");
    assert_eq!((o.id.as_str(), o.name.as_str()), ("acme", "acme Inc."));
    assert_eq!(o.metadata.get("tier").map(String::as_str), Some("gold"));
    assert_eq!(d.ratelimits[0].name.as_str(), "owner:1m");
    assert_eq!(d.ratelimits[0].remaining, 9);
    assert_eq!(d.owner_budget.as_ref().expect("owner budget").remaining, 49);
    assert!(d.budget.is_none(), "the key has no budget of its own");
    // A key without an owner names none.
    let plain = store.create(NewKey::new("plain")).expect("create");
    assert!(store.verify(plain.key.expose()).expect("verify").owner.is_none());
    // A change of the owner reaches its keys at once, counters carried over.
    store
        .set_owner(
            "acme",
            OwnerUpdate {
                name: Some("Acme Corp".into()),
                ..OwnerUpdate::default()
            },
        )
        .expect("rename");
    let d = store.verify(&key).expect("verify");
    assert_eq!(d.owner.as_ref().expect("owner").name, "Acme Corp");
    assert_eq!(d.ratelimits[0].remaining, 8);
    assert_eq!(d.owner_budget.as_ref().expect("owner budget").spent, 2);
}

#[test]
fn an_owners_keys_are_revoked_in_one_logged_event_and_stay_revoked() {
    let fx = Fixture::without_use_log();
    let store = fx.init();
    owner(&store, "acme", vec![], None);
    let keys = keys_of(&store, "acme", 3, |i| NewKey::new(format!("k{i}")));
    let other = store.create(NewKey::new("other")).expect("create");
    for k in &keys {
        assert!(store.verify(k).expect("verify").is_valid(), "warm the live map");
    }
    let events_before = store.events(&EventFilter::default()).expect("events").len();
    let revoked = store.revoke_owner_keys("acme", Some("contract ended")).expect("revoke");
    assert_eq!(revoked.len(), 3);
    let events = store.events(&EventFilter::default()).expect("events");
    let new: Vec<&str> = events[events_before..].iter().map(|(_, e)| e.kind_name()).collect();
    assert_eq!(new, ["owner.keys_revoked"], "one event for the whole operation");
    for k in &keys {
        assert_eq!(store.verify(k).expect("verify").code, Code::Revoked);
    }
    assert!(
        store.verify(other.key.expose()).expect("verify").is_valid(),
        "other keys untouched"
    );
    // Nothing left to revoke: nothing logged.
    assert!(store.revoke_owner_keys("acme", None).expect("again").is_empty());
    assert_eq!(
        store.events(&EventFilter::default()).expect("events").len(),
        events.len()
    );
    store.close().expect("close");
    let store = fx.open();
    for k in &keys {
        assert_eq!(store.verify(k).expect("verify").code, Code::Revoked, "after reopen");
    }
    let listed = store
        .list(&ListFilter {
            owner: Some("acme".into()),
            ..ListFilter::default()
        })
        .expect("list");
    assert_eq!(listed.len(), 3);
    assert!(
        listed
            .iter()
            .all(|k| k.status == Status::Revoked && k.owner.as_deref() == Some("acme"))
    );
    let reason = listed[0].record.revoked.as_ref().and_then(|r| r.reason.as_deref());
    assert_eq!(reason, Some("contract ended"));
    store.close().expect("close");
    Store::rebuild(&fx.path, fx.config.clone()).expect("rebuild");
    let store = fx.open();
    for k in &keys {
        assert_eq!(store.verify(k).expect("verify").code, Code::Revoked, "after rebuild");
    }
}

#[test]
fn an_owners_keys_are_disabled_in_one_logged_event() {
    let fx = Fixture::without_use_log();
    let store = fx.init();
    owner(&store, "acme", vec![], None);
    let keys = keys_of(&store, "acme", 2, |i| NewKey::new(format!("k{i}")));
    let before = store.events(&EventFilter::default()).expect("events").len();
    let disabled = store.disable_owner_keys("acme").expect("disable");
    assert_eq!(disabled.len(), 2);
    let events = store.events(&EventFilter::default()).expect("events");
    assert_eq!(events.len(), before + 1);
    assert_eq!(events[before].1.kind_name(), "owner.keys_disabled");
    for k in &keys {
        assert_eq!(store.verify(k).expect("verify").code, Code::Disabled);
    }
    // Each key can be enabled on its own again.
    store.enable(&disabled[0]).expect("enable");
    assert!(store.verify(&keys[0]).expect("verify").is_valid());
    assert_eq!(store.verify(&keys[1]).expect("verify").code, Code::Disabled);
}

#[test]
fn owner_state_survives_reopen_and_rebuild() {
    let fx = Fixture::new();
    let store = fx.init();
    owner(&store, "acme", vec![limit("10/1h")], Some(total(10)));
    let keys = keys_of(&store, "acme", 2, |i| NewKey::new(format!("k{i}")));
    for k in keys.iter().chain(&keys).chain(std::iter::once(&keys[0])) {
        assert!(store.verify(k).expect("verify").is_valid());
    }
    let check = |store: &Store, when: &str| {
        assert_eq!(store.owner("acme").expect("owner").name, "acme Inc.", "{when}");
        let d = store
            .verify_with(&VerifyRequest::new(&keys[1]).cost(0).weight(0))
            .expect("peek");
        assert_eq!(
            d.owner_budget.expect("owner budget").spent,
            5,
            "{when}: the owner's spend"
        );
        assert_eq!(d.ratelimits[0].remaining, 5, "{when}: the owner's limit");
        let listed = store
            .list(&ListFilter {
                owner: Some("acme".into()),
                ..ListFilter::default()
            })
            .expect("list");
        assert_eq!(listed.len(), 2, "{when}");
    };
    check(&store, "open");
    store.close().expect("close");
    let store = fx.open();
    check(&store, "after reopen");
    store.close().expect("close");
    Store::rebuild(&fx.path, fx.config.clone()).expect("rebuild");
    let store = fx.open();
    check(&store, "after rebuild");
    // A rotated key keeps its owner.
    let id = store.find_by_key(&keys[0]).expect("find").expect("key").record.id;
    let rotated = store.rotate(&id, None).expect("rotate");
    let d = store.verify(rotated.new.key.expose()).expect("verify");
    assert_eq!(d.owner.as_ref().map(|o| o.id.as_str()), Some("acme"));
    assert_eq!(d.owner_budget.expect("owner budget").spent, 6);
}

#[test]
fn owner_credits_move_the_owners_cap() {
    let fx = Fixture::new();
    let store = fx.init();
    owner(&store, "acme", vec![], Some(total(2)));
    let key = keys_of(&store, "acme", 1, |_| NewKey::new("k")).remove(0);
    assert!(store.verify(&key).expect("verify").is_valid());
    assert!(store.verify(&key).expect("verify").is_valid());
    assert_eq!(store.verify(&key).expect("verify").code, Code::BudgetExhausted);
    let credit = store
        .owner_credits_add("acme", 3, Some("goodwill".into()))
        .expect("credit");
    assert_eq!((credit.cap, credit.remaining), (5, 3));
    assert!(store.verify(&key).expect("verify").is_valid());
    let credit = store.owner_credits_set("acme", 0, None).expect("set");
    assert_eq!(credit.remaining, 0);
    assert_eq!(store.verify(&key).expect("verify").code, Code::BudgetExhausted);
    store.close().expect("close");
    let store = fx.open();
    assert_eq!(
        store.verify(&key).expect("verify").code,
        Code::BudgetExhausted,
        "credit is durable"
    );
    assert!(matches!(
        store.owner_credits_add("nobody", 1, None),
        Err(Error::State(StateError::UnknownOwner(_)))
    ));
    owner(&store, "plain", vec![], None);
    assert!(matches!(
        store.owner_credits_add("plain", 1, None),
        Err(Error::State(StateError::OwnerNoBudget(_)))
    ));
}

#[test]
fn bad_owner_requests_are_refused_and_write_nothing() {
    let fx = Fixture::without_use_log();
    let store = fx.init();
    // A key to paste where an owner id goes.
    let pasted = store.create(NewKey::new("pasted")).expect("create").key;
    let before = store.events(&EventFilter::default()).expect("events").len();
    assert!(matches!(
        store.create(NewKey::new("k").owner("nobody")),
        Err(Error::State(StateError::UnknownOwner(_)))
    ));
    assert!(matches!(
        store.create(NewKey::new("k").owner("not/an id")),
        Err(Error::Input(InputError::InvalidOwner(_)))
    ));
    assert!(matches!(
        store.set_owner("a b", OwnerUpdate::default()),
        Err(Error::Input(InputError::InvalidOwner(_)))
    ));
    // A key pasted as an owner id is refused, and the error does not show it.
    let refused = store
        .set_owner(pasted.expose(), OwnerUpdate::default())
        .expect_err("a key as an owner id");
    assert!(matches!(refused, Error::Input(InputError::InvalidOwner(_))));
    assert!(!refused.to_string().contains(pasted.expose()), "{refused}");
    let empty_name = OwnerUpdate {
        name: Some(String::new()),
        ..OwnerUpdate::default()
    };
    assert!(matches!(store.set_owner("acme", empty_name), Err(Error::Input(_))));
    assert!(matches!(
        store.revoke_owner_keys("nobody", None),
        Err(Error::State(StateError::UnknownOwner(_)))
    ));
    assert!(matches!(
        store.list(&ListFilter {
            owner: Some("nobody".into()),
            ..ListFilter::default()
        }),
        Err(Error::State(StateError::UnknownOwner(_)))
    ));
    assert_eq!(store.events(&EventFilter::default()).expect("events").len(), before);
    assert!(store.owners().is_empty());
    assert_eq!(
        store.list(&ListFilter::default()).expect("list").len(),
        1,
        "the pasted key only"
    );
}
