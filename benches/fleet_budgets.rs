//! Budgets in a fleet: how fast the fleet leases, and what leases cost in spend, each
//! figure beside its baseline from the same run. Printed measurements, not criterion
//! benchmarks: they are counts and rates of a whole run. One private PostgreSQL cluster
//! (`tests/common/pg.rs`, fsync on) serves every fleet below.
//!
//! - Lease rate: `FLEET_LEASE_THREADS` (default 4) threads calling `Fleet::lease` of one
//!   unit on one budget (one hot row) for `FLEET_LEASE_SECS` (default 3) seconds: grants
//!   per second, and the account checked against the grants afterwards.
//! - Hammer: 3 hosts of one fleet in this process, 2 threads each, verifying one key with
//!   costs 1 to 7 until each thread is refused 20 times in a row, against the same on one
//!   embedded store. Admitted units against the cap when the hosts are first refused
//!   (overspend: must be 0; under-spend: units still held in other hosts' leases), and
//!   after the leases settle and the rest is spent one unit at a time (must be the cap);
//!   leases granted; verifies per second on the fleet against the embedded store.
//!
//! Without PostgreSQL it prints why and exits 0. Figures are in `docs/PERFORMANCE.md`.

#![expect(
    clippy::unwrap_used,
    clippy::indexing_slicing,
    reason = "a benchmark's setup has no caller to return an error to: it panics on failure"
)]

#[path = "../tests/common/pg.rs"]
mod pg;

use std::path::Path;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use credstore::fleet::{Fleet, LeaseAsk};
use credstore::{Budget, Code, Config, NewKey, Pepper, Period, Store, VerifyRequest};

const CAP: u64 = 200_000;

fn main() {
    if std::env::args().any(|a| a == "--list") {
        return;
    }
    if !pg::PgServer::available() {
        println!(
            "fleet budget benchmarks skipped: PostgreSQL is not installed (scripts/install-test-deps.sh installs it)"
        );
        return;
    }
    let Some(server) = pg::PgServer::start_with(true) else {
        return;
    };
    let url = server.url();
    let dir = tempfile::tempdir().unwrap();
    lease_rate(&url);
    hammer(dir.path(), &url);
}

fn env_u64(name: &str, default: u64) -> u64 {
    std::env::var(name).ok().and_then(|v| v.parse().ok()).unwrap_or(default)
}

fn lease_rate(url: &str) {
    let fleet = Fleet::connect(url).unwrap();
    fleet.init_new().unwrap();
    let threads = env_u64("FLEET_LEASE_THREADS", 4);
    let secs = env_u64("FLEET_LEASE_SECS", 3);
    let granted = AtomicU64::new(0);
    let started = Instant::now();
    std::thread::scope(|scope| {
        for t in 0..threads {
            let granted = &granted;
            scope.spawn(move || {
                let fleet = Fleet::connect(url).unwrap();
                let host = format!("bench-{t}");
                let ask = LeaseAsk {
                    budget_id: "hot",
                    period: 0,
                    cap: u64::MAX >> 2,
                    need: 1,
                    want: 1,
                };
                while started.elapsed() < Duration::from_secs(secs) {
                    let lease = fleet.lease(&host, &ask, Duration::from_secs(60)).unwrap();
                    granted.fetch_add(lease.granted, Ordering::Relaxed);
                }
            });
        }
    });
    let elapsed = started.elapsed().as_secs_f64();
    let account = fleet.budget_account("hot", 0).unwrap();
    assert_eq!(account.leased, granted.load(Ordering::Relaxed), "{account:?}");
    println!(
        "lease rate: {:.0} grants/s on one budget from {threads} threads ({} grants in {elapsed:.1} s; account {} leased, matches)",
        account.grants as f64 / elapsed,
        account.grants,
        account.leased
    );
}

fn spend(store: &Store, key: &str, cost: u64) -> Option<u64> {
    let decision = store.verify_with(&VerifyRequest::new(key).cost(cost)).unwrap();
    match decision.code {
        Code::Valid => Some(cost),
        Code::BudgetExhausted => None,
        other => panic!("unexpected {other:?}"),
    }
}

/// Hammers `key` from two threads per store until each is refused 20 times in a row;
/// returns the units admitted, the verifies made and the seconds it took.
fn run_hammer(stores: &[Arc<Store>], key: &str) -> (u64, u64, f64) {
    let admitted = AtomicU64::new(0);
    let verifies = AtomicU64::new(0);
    let started = Instant::now();
    std::thread::scope(|scope| {
        for (i, store) in stores.iter().enumerate() {
            for t in 0..2u64 {
                let (admitted, verifies) = (&admitted, &verifies);
                scope.spawn(move || {
                    let mut refused = 0;
                    let mut n = i as u64 * 7 + t;
                    while refused < 20 {
                        n = n.wrapping_mul(6364136223846793005).wrapping_add(1442695040888963407);
                        verifies.fetch_add(1, Ordering::Relaxed);
                        match spend(store, key, 1 + (n >> 33) % 7) {
                            Some(cost) => {
                                admitted.fetch_add(cost, Ordering::Relaxed);
                                refused = 0;
                            }
                            None => refused += 1,
                        }
                    }
                });
            }
        }
    });
    (
        admitted.load(Ordering::Relaxed),
        verifies.load(Ordering::Relaxed),
        started.elapsed().as_secs_f64(),
    )
}

fn budget_key(store: &Store) -> (String, String) {
    let new = NewKey::new("metered").budget(Budget::new(CAP, Period::Total).unwrap());
    let created = store.create(new).unwrap();
    (created.record.id.to_string(), created.key.expose().to_string())
}

fn hammer(dir: &Path, url: &str) {
    let embedded =
        Arc::new(Store::init(dir.join("embedded"), Config::new().pepper(Pepper::from_bytes([1; 32]))).unwrap());
    let (_, key) = budget_key(&embedded);
    let (base_units, base_verifies, base_secs) = run_hammer(std::slice::from_ref(&embedded), &key);
    assert_eq!(base_units, CAP);

    let hosts: Vec<Arc<Store>> = ["a", "b", "c"]
        .iter()
        .map(|name| {
            let config = Config::new().pepper(Pepper::from_bytes([2; 32])).fleet(url, *name);
            Arc::new(Store::init(dir.join(name), config).unwrap())
        })
        .collect();
    let (id, key) = budget_key(&hosts[0]);
    let deadline = Instant::now() + Duration::from_secs(10);
    for h in &hosts {
        while h.verify_with(&VerifyRequest::new(&key).cost(0)).unwrap().code != Code::Valid {
            assert!(Instant::now() < deadline);
            std::thread::sleep(Duration::from_millis(5));
        }
    }
    let (units, verifies, secs) = run_hammer(&hosts, &key);
    let fleet = Fleet::connect(url).unwrap();
    let at_refusal = fleet.budget_account(&id, 0).unwrap();
    assert!(units <= CAP, "overspent: {units} of {CAP}");
    // Settle: idle hosts give their leases back; then spend the rest a unit at a time.
    let deadline = Instant::now() + Duration::from_secs(15);
    while fleet.budget_account(&id, 0).unwrap().holders > 0 {
        assert!(Instant::now() < deadline, "leases never settled");
        std::thread::sleep(Duration::from_millis(50));
    }
    let mut total = units;
    let mut refusals = 0;
    for store in hosts.iter().cycle() {
        match spend(store, &key, 1) {
            Some(cost) => {
                total += cost;
                refusals = 0;
            }
            None if refusals > 6 => break,
            None => refusals += 1,
        }
    }
    let end = fleet.budget_account(&id, 0).unwrap();
    println!(
        "hammer, embedded: {base_units} of {CAP} units admitted, {:.0} verifies/s",
        base_verifies as f64 / base_secs
    );
    println!(
        "hammer, 3 hosts x 2 threads: {units} of {CAP} admitted when first refused (overspend {}, under-spend {} = {:.2}% held in leases then), {:.0} verifies/s = {:.2}x embedded, {} leases granted ({:.0}/s)",
        units.saturating_sub(CAP),
        CAP - units,
        (CAP - units) as f64 * 100.0 / CAP as f64,
        verifies as f64 / secs,
        (verifies as f64 / secs) / (base_verifies as f64 / base_secs),
        at_refusal.grants,
        at_refusal.grants as f64 / secs
    );
    println!(
        "after the leases settled: {total} of {CAP} spent (overspend {}), {} leases in all",
        total.saturating_sub(CAP),
        end.grants
    );
    assert!(total <= CAP);
}
