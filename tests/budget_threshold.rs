//! The derived `budget.threshold` events: a key's spend passing 80% and 100% of its
//! budget's cap in a period is logged once per key, period and threshold (100% also when
//! a charge is refused for the budget), across restarts, again in the next period; test
//! keys and keys below 80% log nothing; and a property test against a ledger of what
//! each random sequence of charges and days should log.

#![expect(
    clippy::expect_used,
    clippy::indexing_slicing,
    reason = "a test fails by panicking: unwrap, expect and indexing are its assertions"
)]

mod common;

use std::time::{Duration, Instant};

use common::{Fixture, T0};
use credstore::{Budget, Code, Env, EventFilter, Format, NewKey, Period, Store, VerifyRequest};
use proptest::prelude::*;

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

/// One step of the property test.
#[derive(Debug, Clone)]
enum Step {
    /// A verify of this cost.
    Spend(u64),
    /// The clock moves to the next day: a new period of a daily budget.
    NextDay,
}

fn step(cap: u64) -> impl Strategy<Value = Step> {
    prop_oneof![
        8 => (1..=cap.div_ceil(2) + 1).prop_map(Step::Spend),
        1 => Just(Step::NextDay),
    ]
}

/// What the log should hold, by a ledger: each (period, percent) once, at the first
/// charge that reaches it (80: spent at 80% of the cap; 100: spent at the cap, or a charge
/// refused), 80 before 100, with the spend and cap then.
fn model(cap: u64, steps: &[Step]) -> Vec<(u64, u64, u64, u64)> {
    let mut out = Vec::new();
    let (mut day, mut spent, mut logged) = (0u64, 0u64, 0u64);
    for s in steps {
        match s {
            Step::NextDay => (day, spent, logged) = (day + 1, 0, 0),
            Step::Spend(cost) => {
                let refused = spent + cost > cap;
                if !refused {
                    spent += cost;
                }
                let reached = if refused || spent >= cap {
                    100
                } else if spent * 100 >= cap * 80 {
                    80
                } else {
                    0
                };
                for percent in [80, 100] {
                    if percent <= reached && percent > logged {
                        out.push((day, percent, spent, cap));
                    }
                }
                logged = logged.max(reached);
            }
        }
    }
    out
}

proptest! {
    #![proptest_config(ProptestConfig {
        cases: std::env::var("PROPTEST_CASES").ok().and_then(|v| v.parse().ok()).unwrap_or(24),
        ..ProptestConfig::default()
    })]

    #[test]
    fn thresholds_follow_a_ledger(
        (cap, steps) in (1u64..40).prop_flat_map(|cap| (Just(cap), proptest::collection::vec(step(cap), 1..40)))
    ) {
        let fx = Fixture::new();
        let store = fx.init();
        let key = store
            .create(NewKey::new("k").budget(Budget::new(cap, Period::Daily).expect("budget")))
            .expect("create");
        let mut day = 0;
        for s in &steps {
            match s {
                Step::NextDay => {
                    day += 1;
                    fx.clock.set(T0 + day * 86_400_000);
                }
                Step::Spend(cost) => {
                    spend(&store, key.key.expose(), *cost);
                }
            }
        }
        settle(&store);
        let found = thresholds(&store);
        let first = found.first().map_or(0, |t| t.1);
        let found: Vec<(u64, u64, u64, u64)> = found
            .iter()
            .map(|(id, period, percent, spent, cap)| {
                assert_eq!(id, &key.record.id.to_string());
                (period - first, *percent, *spent, *cap)
            })
            .collect();
        let expected = model(cap, &steps);
        // Periods are compared relative to the first logged one.
        let base = expected.first().map_or(0, |t| t.0);
        let expected: Vec<(u64, u64, u64, u64)> =
            expected.iter().map(|(d, p, s, c)| (d - base, *p, *s, *c)).collect();
        prop_assert_eq!(found, expected);
        store.close().expect("close");
    }
}
