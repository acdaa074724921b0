//! One rate-limit check: credstore's GCRA cell against `governor`'s direct limiter on the
//! same quota, in the same run (target: within 1.5x). Both admit every request (a quota
//! far above the rate the loop reaches), so both take their admitting path; both read a
//! clock (ours the system clock credstore verifies with, governor its default clock).

#![expect(missing_docs, reason = "criterion_group! defines an undocumented public function")]

use std::hint::black_box;
use std::num::NonZeroU32;

use credstore::Clock;
use credstore::clock::SystemClock;
use credstore::limits::gcra::{Gcra, Quota};
use criterion::{Criterion, criterion_group, criterion_main};

fn rate_limit_check(c: &mut Criterion) {
    let per_second = 1_000_000_000u32;
    let mut group = c.benchmark_group("rate_limit");

    let quota = Quota::new(per_second, 1_000);
    let cell = Gcra::default();
    let clock = SystemClock;
    group.bench_function("credstore_gcra", |b| {
        b.iter(|| {
            let outcome = cell.check(black_box(quota), clock.now_ns(), 1);
            assert!(outcome.admitted);
            outcome
        })
    });

    // The same check with time from a counter instead of the system clock: what the GCRA
    // update itself costs (credstore reads the clock once per verify, not per limit).
    let cell = Gcra::default();
    let mut now = clock.now_ns();
    group.bench_function("credstore_gcra_clock_given", |b| {
        b.iter(|| {
            now += 2;
            let outcome = cell.check(black_box(quota), now, 1);
            assert!(outcome.admitted);
            outcome
        })
    });

    let Some(n) = NonZeroU32::new(per_second) else {
        return;
    };
    let limiter = governor::RateLimiter::direct(governor::Quota::per_second(n));
    group.bench_function("governor_direct", |b| {
        b.iter(|| {
            let outcome = limiter.check();
            assert!(outcome.is_ok());
            outcome
        })
    });
    group.finish();
}

criterion_group! {
    name = benches;
    config = Criterion::default().measurement_time(std::time::Duration::from_secs(4)).warm_up_time(std::time::Duration::from_secs(1));
    targets = rate_limit_check
}
criterion_main!(benches);
