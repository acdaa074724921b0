//! The derived `budget.threshold` events: a key's spend passing 80% and 100% of its
//! budget's cap in a period is logged once per key, period and threshold (100% also when
//! a charge is refused for the budget), across restarts, again in the next period; test
//! keys and keys below 80% log nothing.

#![expect(
    clippy::expect_used,
    clippy::indexing_slicing,
    reason = "a test fails by panicking: unwrap, expect and indexing are its assertions"
)]

mod common;

use std::time::{Duration, Instant};

use common::{Fixture, T0};
use credstore::{Budget, Code, Env, EventFilter, Format, NewKey, Period, Store, VerifyRequest};

/// The `budget.threshold` events so far: (key id, period, percent, spent, cap).
fn thresholds(store: &Store) -> Vec<(String, u64, u64, u64, u64)> {
    let filter = EventFilter {
        kind: Some("budget.threshold".to_string()),
        ..EventFilter::default()
    };
    store
        .events(&filter)
        .expect("events")
        .iter()
        .map(|(seq, e)| {
            let d = &e.to_json(*seq)["details"];
            let n = |f: &str| d[f].as_u64().expect("a number");
            (
                d["key_id"].as_str().expect("key_id").to_string(),
                n("period"),
                n("percent"),
                n("spent"),
                n("cap"),
            )
        })
        .collect()
}

/// Verify logs thresholds without waiting for their commit: wait until `count` are in the
/// log (a deadline only so that a failure ends the test).
fn wait_for(store: &Store, count: usize) -> Vec<(String, u64, u64, u64, u64)> {
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let found = thresholds(store);
        if found.len() >= count {
            return found;
        }
        assert!(
            Instant::now() < deadline,
            "expected {count} threshold events, have {found:?}"
        );
        store.wait_for_record(store.last_seq(), Duration::from_millis(50));
    }
}

/// A commit after the verifies: whatever they handed the commit thread is logged by the
/// time it returns (one thread, in order).
fn settle(store: &Store) {
    store.create(NewKey::new("settle")).expect("a commit");
}

fn spend(store: &Store, key: &str, cost: u64) -> Code {
    store
        .verify_with(&VerifyRequest::new(key).cost(cost))
        .expect("verify")
        .code
}

#[test]
fn eighty_and_a_hundred_percent_are_logged_once_per_key_period_and_threshold() {
    let fx = Fixture::new();
    let store = fx.init();
    let metered = store
        .create(NewKey::new("metered").budget(Budget::new(10, Period::Daily).expect("budget")))
        .expect("create");
    let (id, key) = (metered.record.id.to_string(), metered.key.expose().to_string());

    // 70%: nothing.
    assert_eq!(spend(&store, &key, 7), Code::Valid);
    settle(&store);
    assert!(thresholds(&store).is_empty(), "nothing below 80%");

    // 80% exactly: the 80% threshold, once, however often it is passed again.
    assert_eq!(spend(&store, &key, 1), Code::Valid);
    let found = wait_for(&store, 1);
    assert_eq!(found, [(id.clone(), found[0].1, 80, 8, 10)]);
    let today = found[0].1;
    assert_eq!(spend(&store, &key, 1), Code::Valid);
    settle(&store);
    assert_eq!(thresholds(&store).len(), 1, "80% once");

    // The cap: 100%, once; refusals past it log nothing more.
    assert_eq!(spend(&store, &key, 1), Code::Valid);
    let found = wait_for(&store, 2);
    assert_eq!(found[1], (id.clone(), today, 100, 10, 10));
    for _ in 0..5 {
        assert_eq!(spend(&store, &key, 1), Code::BudgetExhausted);
    }
    settle(&store);
    assert_eq!(thresholds(&store).len(), 2, "100% once");

    // After a restart the store still knows they were logged.
    store.close().expect("close");
    let store = fx.open();
    assert_eq!(spend(&store, &key, 1), Code::BudgetExhausted);
    settle(&store);
    assert_eq!(thresholds(&store).len(), 2, "not again after a restart");

    // The next day is a new period: 80% and 100% again, for it.
    fx.clock.set(T0 + 86_400_000);
    assert_eq!(spend(&store, &key, 9), Code::Valid);
    let found = wait_for(&store, 3);
    assert_eq!(found[2], (id.clone(), today + 1, 80, 9, 10));
    store.close().expect("close");
}

#[test]
fn a_refusal_for_the_budget_is_the_hundred_percent_and_test_keys_log_nothing() {
    let fx = Fixture::new();
    let store = fx.init();
    let budget = Budget::new(100, Period::Total).expect("budget");
    let jumpy = store.create(NewKey::new("jumpy").budget(budget)).expect("create");
    let test = store
        .create(
            NewKey::new("test")
                .format(Format::default_for(Env::Test))
                .budget(budget),
        )
        .expect("create");
    let key = jumpy.key.expose().to_string();

    // 50, then a charge of 60 the budget refuses: spend stays at 50, and both thresholds
    // are logged (the budget can take no more such requests), in order.
    assert_eq!(spend(&store, &key, 50), Code::Valid);
    assert_eq!(spend(&store, &key, 60), Code::BudgetExhausted);
    let found = wait_for(&store, 2);
    let percents: Vec<u64> = found.iter().map(|t| t.2).collect();
    assert_eq!(percents, [80, 100]);
    assert!(
        found
            .iter()
            .all(|t| t.0 == jumpy.record.id.to_string() && t.3 == 50 && t.4 == 100)
    );

    // A test key is never charged: nothing, however much it asks.
    for _ in 0..3 {
        assert_eq!(spend(&store, test.key.expose(), 100), Code::Valid);
    }
    settle(&store);
    assert_eq!(thresholds(&store).len(), 2);
    store.close().expect("close");
}
