//! Rate limits, budgets and plans (DESIGN.md steps 7 and 8): the limiter against a
//! reference model, budget periods against a day-by-day reference, contention, plans,
//! persistence across a clean restart, and bad input.

#![expect(
    clippy::unwrap_used,
    reason = "a test fails by panicking: unwrap, expect and indexing are its assertions"
)]

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Barrier};

use credstore::Clock as _;
use credstore::limits::gcra::{Gcra, Quota};
use credstore::{
    Budget, Code, Config, Env, Error, Format, InputError, KeyUpdate, ManualClock, NewKey, Pepper, Period, Plan,
    RateLimit, StateError, Store, VerifyRequest,
};
use proptest::prelude::*;

const T0: i64 = 1_800_000_000_000; // 2027-01-15, unix ms

fn store_with(clock: Arc<ManualClock>) -> (tempfile::TempDir, Store, Config) {
    let dir = tempfile::tempdir().unwrap();
    let config = Config::new().pepper(Pepper::from_bytes([7; 32])).clock(clock);
    let store = Store::init(dir.path().join("data"), config.clone()).unwrap();
    (dir, store, config)
}

/// A token bucket written from the definition: capacity `limit` tokens, one token back
/// every `T` ns, continuously; a request of weight w needs w tokens. Tokens are counted in
/// nanoseconds of "refill time" so the arithmetic is exact.
struct Bucket {
    capacity_ns: i128,
    level_ns: i128,
    last_ns: i128,
    interval_ns: i128,
}

impl Bucket {
    fn new(q: Quota, start: i64) -> Self {
        let interval = i128::from(q.interval_ns);
        Bucket {
            capacity_ns: interval * i128::from(q.limit),
            level_ns: interval * i128::from(q.limit),
            last_ns: i128::from(start),
            interval_ns: interval,
        }
    }

    fn take(&mut self, now: i64, weight: u32) -> bool {
        let now = i128::from(now);
        if now > self.last_ns {
            self.level_ns = (self.level_ns + (now - self.last_ns)).min(self.capacity_ns);
            self.last_ns = now;
        }
        let need = self.interval_ns * i128::from(weight);
        if need <= self.level_ns {
            self.level_ns -= need;
            true
        } else {
            false
        }
    }
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 256, ..ProptestConfig::default() })]

    /// The GCRA limiter admits exactly what a token bucket of the same quota admits, over
    /// random arrival times and weights.
    #[test]
    fn limiter_matches_a_token_bucket(
        limit in 1u32..50,
        window_ms in 1u64..120_000,
        steps in prop::collection::vec((0i64..5_000_000_000, 0u32..6), 1..200),
    ) {
        let q = Quota::new(limit, window_ms);
        let g = Gcra::default();
        let mut now = 1_000_000_000_000_000_000i64;
        let mut model = Bucket::new(q, now);
        for (gap, weight) in steps {
            now += gap;
            let admitted = g.check(q, now, weight).admitted;
            prop_assert_eq!(admitted, model.take(now, weight), "at {} weight {}", now, weight);
        }
    }

    /// Monthly periods match a day-by-day reference: two instants share a period iff the
    /// last anchor day at or before each is the same day; the period ends at the next one.
    #[test]
    fn monthly_periods_match_a_day_walk(
        anchor in 1u8..=31,
        day_a in 0i64..3_000,
        day_b in 0i64..3_000,
        ms_in_day in 0i64..86_400_000,
    ) {
        let base = 1_704_067_200_000i64; // 2024-01-01 (a leap year)
        let a = base + day_a * 86_400_000 + ms_in_day;
        let b = base + day_b * 86_400_000;
        let p = Period::Monthly { anchor_day: anchor };
        let (id_a, end_a) = p.at(a);
        let (id_b, _) = p.at(b);
        let start_a = reference_start(a, anchor);
        let start_b = reference_start(b, anchor);
        prop_assert_eq!(id_a == id_b, start_a == start_b);
        prop_assert_eq!(end_a, Some(reference_next(a, anchor)));
    }
}

fn date_of(ms: i64) -> jiff::civil::Date {
    jiff::Timestamp::from_millisecond(ms)
        .unwrap()
        .to_zoned(jiff::tz::TimeZone::UTC)
        .date()
}

fn is_anchor(d: jiff::civil::Date, anchor: u8) -> bool {
    i64::from(d.day()) == i64::from(anchor).min(i64::from(d.days_in_month()))
}

fn reference_start(ms: i64, anchor: u8) -> jiff::civil::Date {
    let mut d = date_of(ms);
    while !is_anchor(d, anchor) {
        d = d.yesterday().unwrap();
    }
    d
}

fn reference_next(ms: i64, anchor: u8) -> i64 {
    let mut d = date_of(ms).tomorrow().unwrap();
    while !is_anchor(d, anchor) {
        d = d.tomorrow().unwrap();
    }
    d.to_zoned(jiff::tz::TimeZone::UTC)
        .unwrap()
        .timestamp()
        .as_millisecond()
}

#[test]
fn leap_years_and_month_ends() {
    let ms = |t: &str| credstore::clock::parse_time(t).unwrap();
    let end_of = |anchor, t| Period::Monthly { anchor_day: anchor }.at(ms(t)).1.unwrap();
    assert_eq!(end_of(31, "2024-01-31T10:00:00Z"), ms("2024-02-29T00:00:00Z"));
    assert_eq!(end_of(31, "2025-01-31T10:00:00Z"), ms("2025-02-28T00:00:00Z"));
    assert_eq!(end_of(30, "2025-02-28T10:00:00Z"), ms("2025-03-30T00:00:00Z"));
    assert_eq!(
        end_of(29, "2100-02-28T10:00:00Z"),
        ms("2100-03-29T00:00:00Z"),
        "2100 is no leap year"
    );
    assert_eq!(end_of(1, "2026-12-31T23:59:59Z"), ms("2027-01-01T00:00:00Z"));
}

#[test]
fn exactly_the_cap_is_admitted_under_contention() {
    let clock = Arc::new(ManualClock::new(T0));
    let (_dir, store, _) = store_with(clock);
    let cap = 500u64;
    let key = store
        .create(NewKey::new("metered").budget(Budget::new(cap, Period::Total).unwrap()))
        .unwrap();
    let store = Arc::new(store);
    let admitted = Arc::new(AtomicU64::new(0));
    let threads = 8;
    let barrier = Arc::new(Barrier::new(threads));
    let handles: Vec<_> = (0..threads)
        .map(|_| {
            let (store, admitted, barrier) = (store.clone(), admitted.clone(), barrier.clone());
            let secret = key.key.expose().to_string();
            std::thread::spawn(move || {
                barrier.wait();
                for _ in 0..150 {
                    let d = store.verify(&secret).unwrap();
                    match d.code {
                        Code::Valid => {
                            admitted.fetch_add(1, Ordering::Relaxed);
                        }
                        Code::BudgetExhausted => {}
                        other => panic!("unexpected {other}"),
                    }
                    let b = d.budget.unwrap();
                    assert!(b.spent <= cap);
                }
            })
        })
        .collect();
    for h in handles {
        h.join().unwrap();
    }
    assert_eq!(admitted.load(Ordering::Relaxed), cap);
    let check = store
        .verify_with(&VerifyRequest::new(key.key.expose()).cost(0))
        .unwrap();
    assert_eq!(check.budget.unwrap().spent, cap);
}

#[test]
fn a_denial_consumes_nothing_from_any_limit() {
    let clock = Arc::new(ManualClock::new(T0));
    let (_dir, store, _) = store_with(clock);
    let key = store
        .create(
            NewKey::new("two limits")
                .rate_limit(RateLimit::parse("1000/1h:wide").unwrap())
                .rate_limit(RateLimit::parse("40/1h:narrow").unwrap())
                .budget(Budget::new(30, Period::Total).unwrap()),
        )
        .unwrap();
    let store = Arc::new(store);
    let threads = 6;
    let barrier = Arc::new(Barrier::new(threads));
    let admitted = Arc::new(AtomicU64::new(0));
    let handles: Vec<_> = (0..threads)
        .map(|_| {
            let (store, barrier, admitted) = (store.clone(), barrier.clone(), admitted.clone());
            let secret = key.key.expose().to_string();
            std::thread::spawn(move || {
                barrier.wait();
                for _ in 0..40 {
                    if store.verify(&secret).unwrap().is_valid() {
                        admitted.fetch_add(1, Ordering::Relaxed);
                    }
                }
            })
        })
        .collect();
    for h in handles {
        h.join().unwrap();
    }
    // The budget (30) binds before the narrow limit (40): exactly 30 pass, and every
    // limit has consumed exactly those 30, no more.
    assert_eq!(admitted.load(Ordering::Relaxed), 30);
    let d = store
        .verify_with(&VerifyRequest::new(key.key.expose()).cost(0).weight(0))
        .unwrap();
    let remaining = |name: &str| d.ratelimits.iter().find(|l| &*l.name == name).unwrap().remaining;
    assert_eq!(remaining("wide"), 970);
    assert_eq!(remaining("narrow"), 10);
}

#[test]
fn rate_limits_report_and_deny_with_retry_after() {
    let clock = Arc::new(ManualClock::new(T0));
    let (_dir, store, _) = store_with(clock.clone());
    let key = store
        .create(NewKey::new("limited").rate_limit(RateLimit::parse("2/10s").unwrap()))
        .unwrap();
    let k = key.key.expose();
    let first = store.verify(k).unwrap();
    assert_eq!(first.code, Code::Valid);
    assert_eq!((first.ratelimits[0].limit, first.ratelimits[0].remaining), (2, 1));
    assert_eq!(store.verify(k).unwrap().code, Code::Valid);
    let denied = store.verify(k).unwrap();
    assert_eq!(denied.code, Code::RateLimited);
    assert_eq!(denied.http_status(), 429);
    assert_eq!(denied.retry_after, Some(5));
    assert_eq!(denied.ratelimits[0].retry_after, Some(5));
    let reset = denied.ratelimits[0].reset;
    assert_eq!(reset, u64::try_from(T0 / 1000).unwrap() + 10);
    clock.advance(5_000);
    assert_eq!(store.verify(k).unwrap().code, Code::Valid);
    // A weight above the limit never passes.
    clock.advance(60_000);
    let heavy = store.verify_with(&VerifyRequest::new(k).weight(3)).unwrap();
    assert_eq!(heavy.code, Code::RateLimited);
    // Changing the limit on the live key takes effect at once.
    store
        .update(
            &key.record.id,
            KeyUpdate {
                rate_limits: Some(vec![RateLimit::parse("5/10s").unwrap()]),
                ..KeyUpdate::default()
            },
        )
        .unwrap();
    assert_eq!(
        store.verify_with(&VerifyRequest::new(k).weight(3)).unwrap().code,
        Code::Valid
    );
}

#[test]
fn budgets_charge_whole_costs_reset_lazily_and_follow_cap_changes() {
    let clock = Arc::new(ManualClock::new(
        credstore::clock::parse_time("2027-01-31T23:00:00Z").unwrap(),
    ));
    let (_dir, store, _) = store_with(clock.clone());
    let key = store
        .create(NewKey::new("metered").budget(Budget::new(10, Period::Monthly { anchor_day: 1 }).unwrap()))
        .unwrap();
    let k = key.key.expose();
    let spend = |cost| store.verify_with(&VerifyRequest::new(k).cost(cost)).unwrap();
    assert_eq!(spend(6).code, Code::Valid);
    let refused = spend(5);
    assert_eq!(refused.code, Code::BudgetExhausted);
    assert_eq!(refused.http_status(), 402);
    assert_eq!(refused.budget.as_ref().unwrap().spent, 6, "never a partial charge");
    assert_eq!(spend(4).budget.unwrap().spent, 10);
    assert_eq!(spend(0).code, Code::Valid, "cost 0 only checks");
    assert_eq!(spend(1).code, Code::BudgetExhausted);
    // Raising the cap admits at once.
    store
        .update(
            &key.record.id,
            KeyUpdate {
                budget: Some(Some(Budget::new(12, Period::Monthly { anchor_day: 1 }).unwrap())),
                ..KeyUpdate::default()
            },
        )
        .unwrap();
    assert_eq!(spend(2).code, Code::Valid);
    // A new month starts on the first request after it begins.
    clock.advance(3_600_000);
    let feb = spend(3);
    assert_eq!(feb.code, Code::Valid);
    assert_eq!(feb.budget.as_ref().unwrap().spent, 3);
    assert_eq!(
        feb.budget.unwrap().period_end,
        Some(credstore::clock::parse_time("2027-03-01T00:00:00Z").unwrap())
    );
}

/// Monthly period ids are larger than daily ones. A key whose budget changes from monthly to
/// daily, then is read back from disk, must not follow its old (larger) period id: before
/// the fix its verify asked for a budget mark in a loop that never ended.
#[test]
fn a_budget_changed_from_monthly_to_daily_survives_a_restart() {
    let clock = Arc::new(ManualClock::new(T0));
    let (dir, store, config) = store_with(clock.clone());
    let key = store
        .create(NewKey::new("metered").budget(Budget::new(100, Period::Monthly { anchor_day: 1 }).unwrap()))
        .unwrap();
    let k = key.key.expose().to_string();
    let spend = |store: &Store, cost| store.verify_with(&VerifyRequest::new(&k).cost(cost)).unwrap();
    assert_eq!(spend(&store, 30).budget.unwrap().spent, 30);
    store
        .update(
            &key.record.id,
            KeyUpdate {
                budget: Some(Some(Budget::new(100, Period::Daily).unwrap())),
                ..KeyUpdate::default()
            },
        )
        .unwrap();
    store.close().unwrap();
    let store = Arc::new(Store::open(dir.path().join("data"), config).unwrap());
    // On a thread of its own, so that a verify that never returns fails the test instead
    // of hanging it.
    let (tx, rx) = std::sync::mpsc::channel();
    let (on_thread, key_text) = (Arc::clone(&store), k.clone());
    std::thread::spawn(move || {
        let _ = tx.send(on_thread.verify_with(&VerifyRequest::new(&key_text).cost(5)));
    });
    let d = rx
        .recv_timeout(std::time::Duration::from_secs(20))
        .expect("verify returned")
        .unwrap();
    assert_eq!(d.code, Code::Valid);
    assert_eq!(
        d.budget.unwrap().spent,
        5,
        "a new daily period, not the old month's spend"
    );
    assert_eq!(spend(&store, 94).budget.unwrap().spent, 99);
    assert_eq!(spend(&store, 2).code, Code::BudgetExhausted);
    // The daily budget's marks went through the log, though the month's mark is larger
    // than any daily one: after a crash, spend restarts at the day's mark, not at zero.
    let (today, _) = Period::Daily.at(clock.now_ms());
    let marks: Vec<(u32, u64)> = store
        .events(&credstore::EventFilter {
            kind: Some("budget.mark".into()),
            ..Default::default()
        })
        .unwrap()
        .into_iter()
        .filter_map(|(_, e)| match e.kind {
            credstore::EventKind::BudgetMark { mark, .. } => Some(credstore::limits::budget::unpack(mark)),
            _ => None,
        })
        .collect();
    assert!(
        marks.iter().any(|&(period, amount)| period == today && amount >= 99),
        "no mark of today's period covering the spend: {marks:?}"
    );
    // The next day starts from zero.
    clock.advance(86_400_000);
    assert_eq!(spend(&store, 2).budget.unwrap().spent, 2);
}

#[test]
fn test_keys_are_rate_limited_but_never_charged() {
    let clock = Arc::new(ManualClock::new(T0));
    let (_dir, store, _) = store_with(clock);
    let key = store
        .create(
            NewKey::new("sandbox")
                .format(Format::default_for(Env::Test))
                .rate_limit(RateLimit::parse("3/1m").unwrap())
                .budget(Budget::new(1, Period::Daily).unwrap()),
        )
        .unwrap();
    for _ in 0..3 {
        let d = store
            .verify_with(&VerifyRequest::new(key.key.expose()).cost(100))
            .unwrap();
        assert_eq!(d.code, Code::Valid);
        let b = d.budget.unwrap();
        assert_eq!((b.spent, b.charged), (0, false));
    }
    assert_eq!(store.verify(key.key.expose()).unwrap().code, Code::RateLimited);
}

#[test]
fn plans_apply_to_every_key_at_once_and_keys_override_them() {
    let clock = Arc::new(ManualClock::new(T0));
    let (_dir, store, _) = store_with(clock);
    store
        .set_plan(Plan::new("free", vec![RateLimit::parse("2/1h:hourly").unwrap()], None).unwrap())
        .unwrap();
    let on_plan = store.create(NewKey::new("a").plan("free")).unwrap();
    let overriding = store
        .create(
            NewKey::new("b")
                .plan("free")
                .rate_limit(RateLimit::parse("4/1h:hourly").unwrap()),
        )
        .unwrap();
    // A plan's limit reports its window like a key's own (for RateLimit-Policy's w).
    let first = store.verify(on_plan.key.expose()).unwrap();
    assert_eq!(
        (&*first.ratelimits[0].name, first.ratelimits[0].window_ms),
        ("hourly", 3_600_000)
    );
    let count = |k: &str| (0..10).filter(|_| store.verify(k).unwrap().is_valid()).count();
    assert_eq!(count(on_plan.key.expose()), 1, "one of the two already used above");
    assert_eq!(count(overriding.key.expose()), 4);
    // Raise the plan: the key on it (already in the live map) follows at once; the
    // consumed requests still count.
    store
        .set_plan(Plan::new("free", vec![RateLimit::parse("5/1h:hourly").unwrap()], None).unwrap())
        .unwrap();
    assert_eq!(count(on_plan.key.expose()), 3, "5 in all, 2 used");
    assert_eq!(count(overriding.key.expose()), 0, "its own limit still rules");
    let err = store.delete_plan("free").unwrap_err();
    assert!(matches!(err, Error::State(StateError::PlanInUse(_, 2))), "{err}");
    let err = store.create(NewKey::new("c").plan("nope")).unwrap_err();
    assert!(matches!(err, Error::State(StateError::UnknownPlan(_))), "{err}");
}

#[test]
fn counters_survive_a_clean_restart_exactly() {
    let clock = Arc::new(ManualClock::new(T0));
    let (dir, store, config) = store_with(clock);
    let key = store
        .create(
            NewKey::new("persisted")
                .rate_limit(RateLimit::parse("10/1h").unwrap())
                .budget(Budget::new(1_000, Period::Total).unwrap()),
        )
        .unwrap();
    for _ in 0..4 {
        assert!(
            store
                .verify_with(&VerifyRequest::new(key.key.expose()).cost(7))
                .unwrap()
                .is_valid()
        );
    }
    store.close().unwrap();
    let store = Store::open(dir.path().join("data"), config).unwrap();
    let d = store
        .verify_with(&VerifyRequest::new(key.key.expose()).cost(0).weight(0))
        .unwrap();
    assert_eq!(d.budget.unwrap().spent, 28, "exact after a clean close, not the mark");
    assert_eq!(d.ratelimits[0].remaining, 6);
}

/// Issue 17, item 3: `verify --cost 7`, `rotate`, and the new key showed spent 0 for the
/// same period: rotating was a way around a cap. The new key takes over the old key's
/// budget (spend and mark) and rate-limit state: in memory, after a clean restart, after a
/// rebuild, when the old key was not in the live map, and, from the marks the log carried,
/// after a rebuild from the log alone. In a grace period the old key is charged to the
/// same budget as its successor, also after a restart.
#[test]
fn a_rotation_keeps_the_budget_and_the_rate_limits() {
    let clock = Arc::new(ManualClock::new(T0));
    let (dir, store, config) = store_with(clock.clone());
    let path = dir.path().join("data");
    let reopen = |store: Store| {
        store.close().unwrap();
        Store::open(&path, config.clone()).unwrap()
    };
    let limits = NewKey::new("metered")
        .rate_limit(RateLimit::parse("10/1h").unwrap())
        .budget(Budget::new(100, Period::Monthly { anchor_day: 1 }).unwrap());
    let old = store.create(limits).unwrap();
    // (spent, requests left), by a request that costs and takes nothing.
    let state = |store: &Store, key: &credstore::CreatedKey| {
        let d = store
            .verify_with(&VerifyRequest::new(key.key.expose()).cost(0).weight(0))
            .unwrap();
        assert!(d.is_valid(), "{d:?}");
        (d.budget.unwrap().spent, d.ratelimits[0].remaining)
    };
    let charge = |store: &Store, key: &credstore::CreatedKey, cost: u64| {
        let d = store
            .verify_with(&VerifyRequest::new(key.key.expose()).cost(cost))
            .unwrap();
        assert!(d.is_valid(), "{d:?}");
    };
    charge(&store, &old, 7);
    assert_eq!(state(&store, &old), (7, 9));
    let new = store.rotate(&old.record.id, None).unwrap().new;
    assert_eq!(state(&store, &new), (7, 9), "in memory");
    assert_eq!(store.verify(old.key.expose()).unwrap().code, Code::Revoked);
    let store = reopen(store);
    assert_eq!(state(&store, &new), (7, 9), "after a clean restart");
    store.close().unwrap();
    Store::rebuild(&path, config.clone()).unwrap();
    let store = Store::open(&path, config.clone()).unwrap();
    assert_eq!(state(&store, &new), (7, 9), "after a rebuild");
    // Rotated while not in the live map: carried from sled.
    store.clear_cache().unwrap();
    let newer = store
        .rotate(&new.record.id, Some(std::time::Duration::from_secs(3600)))
        .unwrap()
        .new;
    assert_eq!(state(&store, &newer), (7, 9), "rotated from sled");
    // In the grace period, the old key spends the successor's budget and requests.
    charge(&store, &new, 5);
    assert_eq!(state(&store, &newer), (12, 8));
    assert_eq!(state(&store, &new), (12, 8), "the old key reports the budget it spends");
    let store = reopen(store);
    charge(&store, &new, 1);
    assert_eq!(
        state(&store, &newer),
        (13, 7),
        "shared after a restart in the grace period"
    );
    // The cap holds across the two keys.
    let d = store
        .verify_with(&VerifyRequest::new(new.key.expose()).cost(88))
        .unwrap();
    assert_eq!(d.code, Code::BudgetExhausted, "{d:?}");
    charge(&store, &newer, 87);
    let d = store
        .verify_with(&VerifyRequest::new(new.key.expose()).cost(1))
        .unwrap();
    assert_eq!(d.code, Code::BudgetExhausted, "{d:?}");
    // After the grace period the old key is revoked; the spend stays with the new one.
    clock.advance(3_600_001);
    assert_eq!(store.verify(new.key.expose()).unwrap().code, Code::Revoked);
    assert_eq!(state(&store, &newer).0, 100);
    // From the log alone (the index and its counters gone), spend restarts at the mark,
    // which the rotations carried: never below what was spent.
    store.close().unwrap();
    std::fs::remove_dir_all(path.join("index")).unwrap();
    Store::rebuild(&path, config.clone()).unwrap();
    let store = Store::open(&path, config.clone()).unwrap();
    assert_eq!(state(&store, &newer).0, 100, "from the log alone");
    store.close().unwrap();
}

#[test]
fn bad_limits_budgets_and_plans_are_refused_and_write_nothing() {
    let clock = Arc::new(ManualClock::new(T0));
    let (_dir, store, _) = store_with(clock);
    let before = store.events(&Default::default()).unwrap().len();
    for bad in ["0/1m", "-5/1m", "5/0s", "5/soon", "5/1m:has space"] {
        assert!(
            matches!(RateLimit::parse(bad), Err(InputError::InvalidRateLimit(_))),
            "{bad}"
        );
    }
    assert!(matches!(
        Budget::new(u64::MAX, Period::Total),
        Err(InputError::InvalidBudget(_))
    ));
    let dup = NewKey::new("dup")
        .rate_limit(RateLimit::parse("1/1m").unwrap())
        .rate_limit(RateLimit::parse("2/1m").unwrap());
    assert!(matches!(
        store.create(dup),
        Err(Error::Input(InputError::InvalidRateLimit(_)))
    ));
    assert!(matches!(
        store.create(NewKey::new("x").plan("missing")),
        Err(Error::State(StateError::UnknownPlan(_)))
    ));
    assert!(matches!(
        store.delete_plan("missing"),
        Err(Error::State(StateError::UnknownPlan(_)))
    ));
    assert!(store.list(&Default::default()).unwrap().is_empty());
    assert_eq!(store.events(&Default::default()).unwrap().len(), before);
}

#[test]
fn refilling_the_live_map_never_inflates_spend() {
    // A fresh store (never closed cleanly) and clear_cache between every request: spend
    // is restored from the counters, not from the high-water mark, so it stays exact.
    let clock = Arc::new(ManualClock::new(T0));
    let (_dir, store, _) = store_with(clock);
    let key = store
        .create(NewKey::new("metered").budget(Budget::new(6_400, Period::Total).unwrap()))
        .unwrap();
    for _ in 0..100 {
        assert!(store.verify(key.key.expose()).unwrap().is_valid());
        store.clear_cache().unwrap();
    }
    let d = store
        .verify_with(&VerifyRequest::new(key.key.expose()).cost(0))
        .unwrap();
    assert_eq!(d.budget.unwrap().spent, 100);
}

/// A decision carries the time the verify read, which its limits' `reset` counts from, so
/// a server can give `t = reset - now` without reading a clock of its own.
#[test]
fn a_decision_says_when_it_was_made() {
    let clock = Arc::new(ManualClock::new(T0 + 250));
    let (_dir, store, _) = store_with(clock.clone());
    let key = store
        .create(NewKey::new("k").rate_limit(RateLimit::new("per_minute", 2, 60_000).unwrap()))
        .unwrap();
    let d = store.verify(key.key.expose()).unwrap();
    assert_eq!(d.at, T0 + 250);
    // One of two used: full again after half the window, counted from `at`.
    assert_eq!(
        d.ratelimits[0].reset,
        u64::try_from(T0 + 250 + 30_000).unwrap().div_ceil(1000)
    );
    clock.advance(1_000);
    assert_eq!(store.verify(key.key.expose()).unwrap().at, T0 + 1_250);
    assert_eq!(store.verify("sk_live_nonsense").unwrap().at, 0, "no key, no time read");
}

/// A flush writes the counters of the keys used since the last one (each key queued once
/// when its counters change), over several flushes: after a reopen, keys used in different
/// intervals all have the spend and the rate-limit state they had.
#[test]
fn every_key_used_between_flushes_keeps_its_counters_across_a_reopen() {
    let clock = Arc::new(ManualClock::new(T0));
    let dir = tempfile::tempdir().unwrap();
    let config = Config::new()
        .pepper(Pepper::from_bytes([7; 32]))
        .clock(clock)
        .flush_interval(std::time::Duration::from_millis(20));
    let store = Store::init(dir.path().join("data"), config.clone()).unwrap();
    let keys: Vec<String> = (0..40)
        .map(|i| {
            let new = NewKey::new(format!("k{i}"))
                .rate_limit(RateLimit::new("hourly", 10, 3_600_000).unwrap())
                .budget(Budget::new(100, Period::Total).unwrap());
            store.create(new).unwrap().key.expose().to_string()
        })
        .collect();
    let uses = |key: &str, n: usize| {
        for _ in 0..n {
            assert_eq!(store.verify(key).unwrap().code, Code::Valid);
        }
    };
    for key in &keys {
        uses(key, 1);
    }
    // Flushed (several intervals pass); then a third of the keys again, in another interval.
    std::thread::sleep(std::time::Duration::from_millis(200));
    for key in keys.iter().step_by(3) {
        uses(key, 2);
    }
    std::thread::sleep(std::time::Duration::from_millis(200));
    for key in keys.iter().skip(1).step_by(3) {
        uses(key, 4);
    }
    store.close().unwrap();

    let store = Store::open(dir.path().join("data"), config).unwrap();
    for (i, key) in keys.iter().enumerate() {
        let used = 1 + if i % 3 == 0 { 2 } else { 0 } + if i % 3 == 1 { 4 } else { 0 };
        let d = store.verify(key).unwrap();
        assert_eq!(d.code, Code::Valid, "key {i}");
        // This verify is one more use.
        assert_eq!(d.ratelimits[0].remaining, 10 - used as u32 - 1, "key {i}: rate limit");
        assert_eq!(d.budget.unwrap().spent, used as u64 + 1, "key {i}: budget");
    }
    store.close().unwrap();
}
