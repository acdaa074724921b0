//! Usage counting and queries against issue 21's targets (figures in docs/PERFORMANCE.md).
//!
//! - `usage/verify/counting` and `usage/verify/not_counting`: `Store::verify` of a cached
//!   key with one rate limit and a budget (use logging on, as by default), on a store
//!   counting usage and on one with [`Config::usage_counting`] off. Target: at most 1.05x.
//! - `usage/query_30d/{key,owner}/{10k,10M}`: a 30-day query by hour (720 buckets) of one
//!   key and of its owner (ten keys), after 10 thousand and after 10 million recorded uses
//!   spread over those 30 days (verifies on a manual clock, one flush per simulated hour,
//!   through the public API; use logging off so the log does not grow). Target: the
//!   10M/10k ratio within 1.5x.
//!
//! With `USAGE_PROBE=ROUNDS` set, `usage/verify` runs an interleaved probe instead:
//! ROUNDS rounds of 200,000 verifies on each store in turn, keeping each side's fastest
//! round, so the two sides of the ratio are measured seconds apart at most (criterion
//! measures one for its whole time, then the other, and a loaded host's interference
//! comes and goes over seconds). It prints both and their ratio.
//!
//! Every benchmark checks the outcome it measures before measuring it.

#![expect(
    clippy::unwrap_used,
    clippy::indexing_slicing,
    reason = "a benchmark's setup has no caller to return an error to: it panics on failure"
)]
#![expect(missing_docs, reason = "criterion_group! defines an undocumented public function")]

use std::hint::black_box;
use std::sync::Arc;
use std::time::Duration;

use credstore::limits::MAX_BUDGET;
use credstore::{
    Budget, Code, Config, Granularity, ManualClock, NewKey, OwnerUpdate, Pepper, Period, RateLimit, Store, UsageQuery,
    UsageSubject, UseLog,
};
use criterion::{Criterion, criterion_group, criterion_main};

const HOUR: i64 = 3_600_000;
/// 2026-01-01T00:00Z.
const T0: i64 = 1_767_225_600_000;

/// A store in a temporary directory (removed on drop), closed once after init as a store
/// normally is.
struct Fixture {
    store: Store,
    _dir: tempfile::TempDir,
}

impl Fixture {
    fn new(config: Config) -> Fixture {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("data");
        let config = config.pepper(Pepper::from_bytes([7; 32]));
        Store::init(&path, config.clone()).unwrap().close().unwrap();
        let store = Store::open(&path, config).unwrap();
        Fixture { store, _dir: dir }
    }
}

fn limited_key(owner: Option<&str>) -> NewKey {
    let key = NewKey::new("bench")
        .rate_limit(RateLimit::new("per_second", 1_000_000_000, 1_000).unwrap())
        .budget(Budget::new(MAX_BUDGET, Period::Monthly { anchor_day: 1 }).unwrap());
    match owner {
        Some(o) => key.owner(o),
        None => key,
    }
}

fn verify(c: &mut Criterion) {
    let counting = Fixture::new(Config::new());
    let not_counting = Fixture::new(Config::new().usage_counting(false));
    let mut sides = Vec::new();
    for (name, fixture) in [("counting", &counting), ("not_counting", &not_counting)] {
        let key = fixture
            .store
            .create(limited_key(None))
            .unwrap()
            .key
            .expose()
            .to_string();
        let d = fixture.store.verify(&key).unwrap();
        assert_eq!(d.code, Code::Valid);
        assert!(d.budget.as_ref().is_some_and(|b| b.charged));
        sides.push((name, &fixture.store, key));
    }
    if let Some(rounds) = std::env::var("USAGE_PROBE").ok().and_then(|r| r.parse::<usize>().ok()) {
        probe(rounds, &sides);
    } else {
        let mut group = c.benchmark_group("usage/verify");
        for (name, store, key) in &sides {
            group.bench_function(*name, |b| b.iter(|| black_box(store.verify(black_box(key)).unwrap())));
        }
        group.finish();
    }
    // The counting store counted (the flusher may have folded some already: flush and ask).
    counting.store.flush().unwrap();
    let now = credstore::Clock::now_ms(&credstore::SystemClock);
    let q = UsageQuery::new(UsageSubject::All, now - HOUR, now + 1, Granularity::Hour);
    assert!(counting.store.usage(&q).unwrap().total.valid > 0);
    assert!(not_counting.store.usage(&q).unwrap().total.is_empty());
}

/// The interleaved probe (see the module's docs): prints each side's fastest round, ns a
/// verify, and the ratio of the first side to the second.
fn probe(rounds: usize, sides: &[(&str, &Store, String)]) {
    const CALLS: u32 = 200_000;
    let mut best = vec![f64::INFINITY; sides.len()];
    for _ in 0..rounds {
        for (i, (_, store, key)) in sides.iter().enumerate() {
            let started = std::time::Instant::now();
            for _ in 0..CALLS {
                black_box(store.verify(black_box(key)).unwrap());
            }
            let ns = started.elapsed().as_secs_f64() * 1e9 / f64::from(CALLS);
            best[i] = best[i].min(ns);
        }
    }
    for ((name, _, _), ns) in sides.iter().zip(&best) {
        println!("usage/verify/{name}: {ns:.1} ns (fastest of {rounds} rounds of {CALLS})");
    }
    println!("ratio {} / {}: {:.3}", sides[0].0, sides[1].0, best[0] / best[1]);
}

/// A store on a manual clock at the end of 30 days in which `uses` verifies of ten keys of
/// one owner were recorded, evenly over every hour; returns it, one key's id, and now.
fn recorded(uses: u64) -> (Fixture, credstore::KeyId, i64) {
    let clock = Arc::new(ManualClock::new(T0));
    let config = Config::new()
        .clock(clock.clone())
        .use_log(UseLog::Off)
        .flush_interval(Duration::from_secs(86_400))
        .lifecycle_sweep(None);
    let fixture = Fixture::new(config);
    let store = &fixture.store;
    store.set_owner("acme", OwnerUpdate::default()).unwrap();
    let keys: Vec<(String, credstore::KeyId)> = (0..10)
        .map(|_| {
            let k = store.create(limited_key(Some("acme"))).unwrap();
            (k.key.expose().to_string(), k.record.id)
        })
        .collect();
    let hours = 30 * 24;
    let mut next = 0u64;
    for h in 0..hours {
        let n = uses / hours + u64::from(h < uses % hours);
        for _ in 0..n {
            let (key, _) = &keys[usize::try_from(next % 10).unwrap()];
            next += 1;
            assert_eq!(store.verify(key).unwrap().code, Code::Valid);
        }
        store.flush().unwrap();
        clock.advance(HOUR);
    }
    let id = keys[0].1.clone();
    (fixture, id, T0 + i64::try_from(hours).unwrap() * HOUR)
}

fn query(c: &mut Criterion) {
    let mut group = c.benchmark_group("usage/query_30d");
    for (label, uses) in [("10k", 10_000u64), ("10M", 10_000_000)] {
        let (fixture, id, now) = recorded(uses);
        for (who, subject) in [
            ("key", UsageSubject::Key(id.clone())),
            ("owner", UsageSubject::Owner("acme".into())),
        ] {
            let q = UsageQuery::new(subject, now - 30 * 24 * HOUR, now, Granularity::Hour);
            let report = fixture.store.usage(&q).unwrap();
            assert_eq!(report.buckets.len(), 720);
            let want = if who == "key" { uses / 10 } else { uses };
            assert_eq!(report.total.valid, want, "{who} {label}");
            group.bench_function(format!("{who}/{label}"), |b| {
                b.iter(|| black_box(fixture.store.usage(black_box(&q)).unwrap()));
            });
        }
    }
    group.finish();
}

fn config() -> Criterion {
    Criterion::default()
        .warm_up_time(Duration::from_secs(1))
        .measurement_time(Duration::from_secs(3))
}

criterion_group! {
    name = usage_benches;
    config = config();
    targets = verify, query
}

criterion_main!(usage_benches);
