//! What anomaly detection costs the verify path (issue 21: keep its share near zero of
//! the usage counting's 1.05x).
//!
//! - `anomalies/cached_off`, `anomalies/cached_on`: `Store::verify_with` of a key in the
//!   live map, with a client address, one rate limit and a budget, on a store with anomaly
//!   detection off ([`Thresholds::off`]) and on (the defaults). Everything else is the
//!   same; on the verify path detection adds one comparison of the last use it already
//!   loaded (dormant reuse). The detector's own work is on the commit thread, which takes
//!   the uses off the hand-off rings either way.
//! - `anomalies/unknown_off`, `anomalies/unknown_on`: the same for a well-formed key that
//!   matches none, from a client address: with detection on it is counted in the top-K
//!   sketch of networks (a keyed hash of the key, a lock, a map lookup).
//!
//! Each checks the outcome it measures first. On a shared machine criterion's runs of one
//! benchmark after the other drift with the load; with `ANOMALY_PROBE=ROUNDS` set the
//! group runs an interleaved probe instead: ROUNDS rounds, each timing 20,000 cached
//! verifies on each store in turn (the order alternating), and prints the medians and
//! their ratio. Figures in `docs/PERFORMANCE.md`.

#![expect(
    clippy::unwrap_used,
    clippy::indexing_slicing,
    reason = "a benchmark's setup has no caller to return an error to: it panics on failure"
)]
#![expect(missing_docs, reason = "criterion_group! defines an undocumented public function")]

use std::hint::black_box;
use std::net::IpAddr;
use std::time::Duration;

use credstore::anomaly::Thresholds;
use credstore::limits::MAX_BUDGET;
use credstore::{Budget, Code, Config, NewKey, Pepper, Period, RateLimit, Store, VerifyRequest};
use criterion::{Criterion, criterion_group, criterion_main};

/// A store under a temporary directory (removed on drop) with these thresholds.
struct Fixture {
    store: Store,
    key: String,
    unknown: String,
    _dir: tempfile::TempDir,
}

impl Fixture {
    fn new(thresholds: Thresholds) -> Fixture {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("data");
        let config = Config::new().pepper(Pepper::from_bytes([7; 32])).anomalies(thresholds);
        Store::init(&path, config.clone()).unwrap().close().unwrap();
        let store = Store::open(&path, config).unwrap();
        let key = store
            .create(
                NewKey::new("bench")
                    .rate_limit(RateLimit::new("per_second", 1_000_000_000, 1_000).unwrap())
                    .budget(Budget::new(MAX_BUDGET, Period::Monthly { anchor_day: 1 }).unwrap()),
            )
            .unwrap()
            .key
            .expose()
            .to_string();
        // Well-formed (a key of another store's pepper), unknown here.
        let other = tempfile::tempdir().unwrap();
        let other_store = Store::init(
            other.path().join("data"),
            Config::new().pepper(Pepper::from_bytes([8; 32])),
        )
        .unwrap();
        let unknown = other_store.create(NewKey::new("x")).unwrap().key.expose().to_string();
        Fixture {
            store,
            key,
            unknown,
            _dir: dir,
        }
    }
}

fn anomalies(c: &mut Criterion) {
    let ip: IpAddr = "192.0.2.10".parse().unwrap();
    let off = Fixture::new(Thresholds::off());
    let on = Fixture::new(Thresholds::default());
    for f in [&off, &on] {
        let d = f.store.verify_with(&VerifyRequest::new(&f.key).ip(ip)).unwrap();
        assert_eq!(d.code, Code::Valid);
        assert!(d.budget.as_ref().is_some_and(|b| b.charged), "budget charged");
        let d = f.store.verify_with(&VerifyRequest::new(&f.unknown).ip(ip)).unwrap();
        assert_eq!(d.code, Code::NotFound);
    }
    if let Some(rounds) = std::env::var("ANOMALY_PROBE").ok().and_then(|r| r.parse().ok()) {
        probe(rounds, &off, &on, ip);
        return;
    }
    let mut group = c.benchmark_group("anomalies");
    for (name, f) in [("off", &off), ("on", &on)] {
        group.bench_function(format!("cached_{name}"), |b| {
            let req = VerifyRequest::new(&f.key).ip(ip);
            b.iter(|| black_box(f.store.verify_with(black_box(&req)).unwrap()));
        });
    }
    for (name, f) in [("off", &off), ("on", &on)] {
        group.bench_function(format!("unknown_{name}"), |b| {
            let req = VerifyRequest::new(&f.unknown).ip(ip);
            b.iter(|| black_box(f.store.verify_with(black_box(&req)).unwrap()));
        });
    }
    group.finish();
    // The sketch counted the unknown key's network on the store with detection on only.
    assert!(off.store.unknown_key_networks().is_empty());
    assert_eq!(on.store.unknown_key_networks()[0].network.to_string(), "192.0.2.0/24");
}

/// Interleaved rounds of cached verifies on the store with detection off and on; prints
/// each one's median ns per verify and the ratio on/off.
fn probe(rounds: usize, off: &Fixture, on: &Fixture, ip: IpAddr) {
    const PER_ROUND: u32 = 20_000;
    let mut times: [Vec<f64>; 2] = [Vec::new(), Vec::new()];
    for round in 0..rounds {
        let order = if round % 2 == 0 { [0, 1] } else { [1, 0] };
        for i in order {
            let f = if i == 0 { off } else { on };
            let req = VerifyRequest::new(&f.key).ip(ip);
            let started = std::time::Instant::now();
            for _ in 0..PER_ROUND {
                black_box(f.store.verify_with(black_box(&req)).unwrap());
            }
            times[i].push(started.elapsed().as_nanos() as f64 / f64::from(PER_ROUND));
        }
    }
    let median = |v: &mut Vec<f64>| {
        v.sort_by(f64::total_cmp);
        v[v.len() / 2]
    };
    let (a, b) = (median(&mut times[0]), median(&mut times[1]));
    println!(
        "anomaly probe, {rounds} rounds: off {a:.1} ns, on {b:.1} ns, ratio on/off {:.3}",
        b / a
    );
}

criterion_group! {
    name = benches;
    config = Criterion::default()
        .warm_up_time(Duration::from_secs(1))
        .measurement_time(Duration::from_secs(3));
    targets = anomalies
}

criterion_main!(benches);
