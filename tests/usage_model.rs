//! The usage model test: any mix of verifies (every outcome, costs, several keys and
//! owners), moves of the clock, flushes, changes of status, closes and reopens, run on a
//! store and on a plain count of the decisions it returned. The store's usage must equal
//! the count: per key, owner, project and store, bucket by bucket (a flush places what was
//! counted since the last one in the bucket holding the clock's time), and in total after
//! a rebuild of the index from the log, which places each logged use at its own time.
//!
//! `PROPTEST_CASES` raises the number of cases (default 24, up to 40 operations each).

#![expect(
    clippy::expect_used,
    clippy::indexing_slicing,
    reason = "a test fails by panicking: unwrap, expect and indexing are its assertions"
)]

mod common;

use std::collections::BTreeMap;

use common::{Fixture, T0};
use credstore::{
    Budget, Code, Env, Format, Granularity, KeyId, NewKey, OwnerUpdate, Period, RateLimit, Store, UsageCounts,
    UsageQuery, UsageSubject, VerifyRequest,
};
use proptest::prelude::*;
use proptest::test_runner::TestCaseError;

const MINUTE: i64 = 60_000;
const HOUR: i64 = 60 * MINUTE;
const DAY: i64 = 24 * HOUR;

#[derive(Debug, Clone)]
enum Op {
    /// Verify key `n` (of [`KEYS`]; past them: a malformed key, or a well-formed unknown
    /// one) at `cost`.
    Verify(usize, u64),
    Advance(i64),
    Flush,
    Revoke(usize),
    Disable(usize),
    Enable(usize),
    Reopen,
}

/// A key: (owner, project, rate limit per minute, total budget, test environment).
type KeySpec = (Option<&'static str>, &'static str, Option<u32>, Option<u64>, bool);

/// The keys.
const KEYS: [KeySpec; 5] = [
    (Some("acme"), "shop", Some(3), None, false),
    (Some("acme"), "shop", None, Some(6), false),
    (Some("beta"), "lab", None, None, false),
    (None, "shop", Some(2), None, true),
    (None, "default", None, None, false),
];

fn op() -> impl Strategy<Value = Op> {
    prop_oneof![
        8 => (0..KEYS.len() + 2, 0u64..4).prop_map(|(k, c)| Op::Verify(k, c)),
        2 => prop_oneof![Just(10_000i64), Just(MINUTE), Just(HOUR), Just(DAY)].prop_map(Op::Advance),
        2 => Just(Op::Flush),
        1 => (0..KEYS.len()).prop_map(Op::Revoke),
        1 => (0..KEYS.len()).prop_map(Op::Disable),
        1 => (0..KEYS.len()).prop_map(Op::Enable),
        1 => Just(Op::Reopen),
    ]
}

/// What the model counted: per subject, per hour bucket.
#[derive(Default)]
struct Model {
    /// Counted since the last flush, per subject.
    pending: BTreeMap<UsageSubject, UsageCounts>,
    /// Flushed, per subject and hour.
    hours: BTreeMap<(UsageSubject, i64), UsageCounts>,
    /// Everything, per subject.
    totals: BTreeMap<UsageSubject, UsageCounts>,
}

impl Model {
    fn count(&mut self, subjects: &[UsageSubject], code: Code, spent: u64) {
        for s in subjects {
            for map in [&mut self.pending, &mut self.totals] {
                map.entry(s.clone()).or_default().count(code, 1, spent);
            }
        }
    }

    fn flush(&mut self, now: i64) {
        let hour = Granularity::Hour.start_of(now);
        for (s, c) in std::mem::take(&mut self.pending) {
            self.hours.entry((s, hour)).or_default().add(&c);
        }
    }
}

struct Keys {
    ids: Vec<KeyId>,
    secrets: Vec<String>,
    subjects: Vec<Vec<UsageSubject>>,
}

fn setup(store: &Store) -> Keys {
    for owner in ["acme", "beta"] {
        store.set_owner(owner, OwnerUpdate::default()).expect("owner");
    }
    let mut keys = Keys {
        ids: Vec::new(),
        secrets: Vec::new(),
        subjects: Vec::new(),
    };
    for (i, (owner, project, limit, budget, test)) in KEYS.iter().enumerate() {
        let mut new = NewKey::new(format!("k{i}")).project(*project);
        if let Some(owner) = owner {
            new = new.owner(*owner);
        }
        if let Some(limit) = limit {
            new = new.rate_limit(RateLimit::new("rpm", *limit, 60_000).expect("limit"));
        }
        if let Some(cap) = budget {
            new = new.budget(Budget::new(*cap, Period::Total).expect("budget"));
        }
        if *test {
            new = new.format(Format::default_for(Env::Test));
        }
        let created = store.create(new).expect("create");
        let mut subjects = vec![
            UsageSubject::Key(created.record.id.clone()),
            UsageSubject::Project((*project).to_string()),
            UsageSubject::All,
        ];
        if let Some(owner) = owner {
            subjects.push(UsageSubject::Owner((*owner).to_string()));
        }
        keys.ids.push(created.record.id.clone());
        keys.secrets.push(created.key.expose().to_string());
        keys.subjects.push(subjects);
    }
    keys
}

fn every_subject(keys: &Keys) -> Vec<UsageSubject> {
    let mut all: Vec<UsageSubject> = keys.subjects.iter().flatten().cloned().collect();
    all.sort();
    all.dedup();
    all
}

fn run(ops: &[Op]) -> Result<(), TestCaseError> {
    let fx = Fixture::new();
    let mut store = Some(fx.init());
    let keys = setup(store.as_ref().expect("store"));
    let mut model = Model::default();
    // Well-formed and of a registered format, but never issued here: NOT_FOUND.
    let elsewhere = Fixture::new();
    let unknown = {
        let other = elsewhere.init();
        let created = other.create(NewKey::new("elsewhere")).expect("create");
        other.close().expect("close");
        created.key.expose().to_string()
    };
    for op in ops {
        let s = store.as_ref().expect("store");
        match op {
            Op::Verify(k, cost) => {
                let presented = match keys.secrets.get(*k) {
                    Some(secret) => secret.as_str(),
                    None if *k == KEYS.len() => "sk_live_garbage",
                    None => unknown.as_str(),
                };
                let d = s
                    .verify_with(&VerifyRequest::new(presented).cost(*cost))
                    .expect("verify");
                match keys.subjects.get(*k) {
                    Some(subjects) => {
                        let live = !KEYS[*k].4;
                        let spent = if d.code == Code::Valid && live { *cost } else { 0 };
                        model.count(subjects, d.code, spent);
                    }
                    None => model.count(&[UsageSubject::All], d.code, 0),
                }
            }
            Op::Advance(ms) => fx.clock.advance(*ms),
            Op::Flush => {
                s.flush().expect("flush");
                model.flush(fx.clock.now_ms_value());
            }
            Op::Revoke(k) => {
                let _ = s.revoke(&keys.ids[*k], None);
            }
            Op::Disable(k) => {
                let _ = s.disable(&keys.ids[*k]);
            }
            Op::Enable(k) => {
                let _ = s.enable(&keys.ids[*k]);
            }
            Op::Reopen => {
                store.take().expect("store").close().expect("close");
                model.flush(fx.clock.now_ms_value());
                store = Some(fx.open());
            }
        }
    }
    let s = store.take().expect("store");
    s.close().expect("close");
    model.flush(fx.clock.now_ms_value());
    let s = fx.open();
    let now = fx.clock.now_ms_value();
    let since = T0 - HOUR;
    for subject in every_subject(&keys) {
        let hours = s
            .usage(&UsageQuery::new(subject.clone(), since, now + 1, Granularity::Hour))
            .expect("usage");
        for b in &hours.buckets {
            let want = model
                .hours
                .get(&(subject.clone(), b.start))
                .cloned()
                .unwrap_or_default();
            prop_assert_eq!(&b.counts, &want, "{:?} hour {}", subject, b.start);
        }
        let want = model.totals.get(&subject).cloned().unwrap_or_default();
        prop_assert_eq!(&hours.total, &want, "{:?}", subject);
        let days = s
            .usage(&UsageQuery::new(subject.clone(), since, now + 1, Granularity::Day))
            .expect("usage");
        prop_assert_eq!(&days.total, &want, "{:?} by day", subject);
    }
    s.close().expect("close");

    // Each use is logged (the default): a rebuild from the log gives the same totals.
    Store::rebuild(&fx.path, fx.config.clone()).expect("rebuild");
    let s = fx.open();
    for subject in every_subject(&keys) {
        let days = s
            .usage(&UsageQuery::new(subject.clone(), since, now + 1, Granularity::Day))
            .expect("usage");
        let want = model.totals.get(&subject).cloned().unwrap_or_default();
        prop_assert_eq!(&days.total, &want, "{:?} after a rebuild", subject);
    }
    s.close().expect("close");
    Ok(())
}

/// Reads a manual clock's time (the `Clock` trait's `now_ms`).
trait NowMs {
    fn now_ms_value(&self) -> i64;
}

impl NowMs for std::sync::Arc<credstore::ManualClock> {
    fn now_ms_value(&self) -> i64 {
        credstore::Clock::now_ms(self.as_ref())
    }
}

proptest! {
    #![proptest_config(ProptestConfig {
        cases: std::env::var("PROPTEST_CASES").ok().and_then(|c| c.parse().ok()).unwrap_or(24),
        ..ProptestConfig::default()
    })]

    #[test]
    fn usage_equals_a_plain_count_of_the_decisions(ops in proptest::collection::vec(op(), 1..40)) {
        run(&ops)?;
    }
}
