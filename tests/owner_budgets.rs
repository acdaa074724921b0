//! An owner's budget and its keys' own budgets against a plain model: random sequences of
//! spends on three keys of one owner (one of them without a budget of its own), credits on
//! the owner, owner cap changes, reopenings, rebuilds and new days, run on a store and on
//! the model; every decision and every spend shown must match.
//!
//! The model, from the contract: a request of cost `c` on key `k` passes only if `k`'s own
//! budget (when it has one) and the owner's both have `c` left; then both are charged, and
//! otherwise neither (never a partial charge). A new day starts every budget from zero;
//! owner credits move the owner's cap for the day, as a key's do; spend restored from disk
//! (a reopen, a rebuild) is clamped to the cap when the day had no credit, as a key's is.
//!
//! `PROPTEST_CASES` raises the number of cases (default 32, up to 40 operations each).

#![expect(
    clippy::expect_used,
    clippy::indexing_slicing,
    reason = "a test fails by panicking: unwrap, expect and indexing are its assertions"
)]

use std::sync::Arc;

use credstore::{Budget, Code, Config, ManualClock, NewKey, OwnerUpdate, Pepper, Period, Store, VerifyRequest};
use proptest::prelude::*;

const DAY_MS: i64 = 86_400_000;
/// 2026-12-03T12:00:00Z.
const T0: i64 = 1_796_299_200_000;
/// The keys' own caps: `None` for a key with no budget of its own.
const KEY_CAPS: [Option<u64>; 3] = [Some(40), Some(25), None];

#[derive(Debug, Clone)]
enum Op {
    Spend { key: usize, cost: u64 },
    OwnerCap(u64),
    Credit(i64),
    Reopen,
    Rebuild,
    NextDay,
}

fn op() -> impl Strategy<Value = Op> {
    prop_oneof![
        8 => (0..KEY_CAPS.len(), 1u64..=15).prop_map(|(key, cost)| Op::Spend { key, cost }),
        1 => (0u64..=120).prop_map(Op::OwnerCap),
        1 => (-40i64..=60).prop_map(Op::Credit),
        1 => Just(Op::Reopen),
        1 => Just(Op::Rebuild),
        1 => Just(Op::NextDay),
    ]
}

/// The model: what each key and the owner spent today, the owner's cap and credit; what
/// the owner's spend on disk is, and whether it was charged since it was last read.
#[derive(Debug)]
struct Model {
    spent: [u64; 3],
    owner_spent: u64,
    owner_cap: u64,
    credit: i64,
    on_disk: u64,
    charged: bool,
}

impl Model {
    /// Spend restored from disk is never above the cap (as a key's: `cache::active_budget`),
    /// unless the day had credit: a cap lowered below the spend forgets the excess.
    /// Counters are written when they changed: the spend on disk is the live one if the
    /// owner was charged since it was read, else what was read then.
    fn restored(&mut self) {
        if self.charged {
            self.on_disk = self.owner_spent;
        }
        self.charged = false;
        self.owner_spent = if self.credit == 0 {
            self.on_disk.min(self.owner_cap)
        } else {
            self.on_disk
        };
    }

    fn owner_cap_now(&self) -> u64 {
        u64::try_from((i64::try_from(self.owner_cap).expect("cap") + self.credit).max(0)).expect("cap")
    }
}

fn config(clock: &Arc<ManualClock>) -> Config {
    Config::new()
        .pepper(Pepper::from_bytes([5; 32]))
        .clock(Arc::clone(clock) as Arc<dyn credstore::Clock>)
}

fn daily(cap: u64) -> Budget {
    Budget::new(cap, Period::Daily).expect("budget")
}

fn set_cap(store: &Store, cap: u64) {
    let update = OwnerUpdate {
        budget: Some(Some(daily(cap))),
        ..OwnerUpdate::default()
    };
    store.set_owner("acme", update).expect("owner set");
}

fn run(ops: &[Op]) {
    let dir = tempfile::tempdir().expect("temp dir");
    let path = dir.path().join("store");
    let clock = Arc::new(ManualClock::new(T0));
    let mut store = Store::init(&path, config(&clock)).expect("init");
    set_cap(&store, 60);
    let keys: Vec<String> = KEY_CAPS
        .iter()
        .enumerate()
        .map(|(i, cap)| {
            let mut new = NewKey::new(format!("k{i}")).owner("acme");
            new.budget = cap.map(daily);
            store.create(new).expect("create").key.expose().to_string()
        })
        .collect();
    let mut model = Model {
        spent: [0; 3],
        owner_spent: 0,
        owner_cap: 60,
        credit: 0,
        on_disk: 0,
        charged: false,
    };
    for (i, op) in ops.iter().enumerate() {
        match op {
            Op::Spend { key, cost } => {
                let d = store
                    .verify_with(&VerifyRequest::new(&keys[*key]).cost(*cost))
                    .expect("verify");
                let own_fits = KEY_CAPS[*key].is_none_or(|cap| model.spent[*key] + cost <= cap);
                let owner_fits = model.owner_spent + cost <= model.owner_cap_now();
                if own_fits && owner_fits {
                    model.spent[*key] += cost;
                    model.owner_spent += cost;
                    model.charged = true;
                }
                let expected = if own_fits && owner_fits {
                    Code::Valid
                } else {
                    Code::BudgetExhausted
                };
                assert_eq!(d.code, expected, "op {i} {op:?}, model {model:?}");
                // The key's own budget, as the decision shows it after the request.
                if KEY_CAPS[*key].is_some() {
                    assert_eq!(d.budget.expect("key budget").spent, model.spent[*key], "op {i} {op:?}");
                }
                // The owner's is reached only when the key's own passed.
                if own_fits {
                    let owner = d.owner_budget.expect("owner budget");
                    assert_eq!(
                        (owner.cap, owner.spent),
                        (model.owner_cap_now(), model.owner_spent),
                        "op {i} {op:?}"
                    );
                }
            }
            Op::OwnerCap(cap) => {
                set_cap(&store, *cap);
                model.owner_cap = *cap;
            }
            Op::Credit(n) => {
                let credit = store.owner_credits_add("acme", *n, None).expect("credit");
                let cap = i64::try_from(model.owner_cap).expect("cap");
                model.credit = (model.credit + n).max(-cap);
                assert_eq!(credit.cap, model.owner_cap_now(), "op {i} {op:?}");
            }
            Op::Reopen => {
                store.close().expect("close");
                store = Store::open(&path, config(&clock)).expect("open");
                model.restored();
            }
            Op::Rebuild => {
                store.close().expect("close");
                Store::rebuild(&path, config(&clock)).expect("rebuild");
                store = Store::open(&path, config(&clock)).expect("open");
                model.restored();
            }
            Op::NextDay => {
                clock.advance(DAY_MS);
                model.spent = [0; 3];
                model.owner_spent = 0;
                model.credit = 0;
                model.on_disk = 0;
            }
        }
        let shown = store.owner_budget("acme").expect("owner").expect("budget");
        assert_eq!(shown.spent, model.owner_spent, "after op {i} {op:?}");
    }
    store.close().expect("close");
}

proptest! {
    #![proptest_config(ProptestConfig {
        cases: std::env::var("PROPTEST_CASES").ok().and_then(|v| v.parse().ok()).unwrap_or(32),
        ..ProptestConfig::default()
    })]

    #[test]
    fn owner_and_key_budgets_follow_a_plain_model(ops in proptest::collection::vec(op(), 1..40)) {
        run(&ops);
    }
}
