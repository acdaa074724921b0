//! Usage in fleet mode: each host folds its counts into the fleet's rollup rows in
//! PostgreSQL once per flush interval, and a query on any host answers the fleet's sum.
//! Three hosts verify the same keys; the fleet's usage equals the sum of every host's
//! decisions.

#![expect(
    clippy::expect_used,
    reason = "a test fails by panicking: unwrap, expect and indexing are its assertions"
)]

#[path = "common/pg.rs"]
mod pg;

use std::collections::BTreeMap;
use std::path::Path;
use std::time::{Duration, Instant};

use credstore::{
    Code, Config, Granularity, NewKey, OwnerUpdate, Pepper, RateLimit, Store, UsageCounts, UsageQuery, UsageSubject,
};

fn host(dir: &Path, url: &str, name: &str) -> Store {
    let config = Config::new()
        .pepper(Pepper::from_bytes([9; 32]))
        .flush_interval(Duration::from_millis(100))
        .fleet(url, name);
    Store::init(dir.join(name), config).expect("init host")
}

fn day_total(store: &Store, subject: UsageSubject) -> UsageCounts {
    let now = credstore::Clock::now_ms(&credstore::SystemClock);
    store
        .usage(&UsageQuery::new(subject, now - 86_400_000, now + 1, Granularity::Day))
        .expect("usage")
        .total
}

#[test]
fn the_fleets_usage_is_the_sum_of_every_hosts_decisions() {
    let Some(server) = pg::PgServer::start() else { return };
    let dir = tempfile::tempdir().expect("temp dir");
    let url = server.url();
    let hosts: Vec<Store> = ["a", "b", "c"].iter().map(|n| host(dir.path(), &url, n)).collect();
    hosts[0].set_owner("acme", OwnerUpdate::default()).expect("owner");
    let limited = hosts[0]
        .create(
            NewKey::new("limited")
                .owner("acme")
                .rate_limit(RateLimit::new("rpm", 30, 60_000).expect("limit")),
        )
        .expect("create");
    let plain = hosts[0].create(NewKey::new("plain").owner("acme")).expect("create");
    // Every host knows both keys before verifying: each one's last warm-up verify is
    // valid; those before it (the key or its format not there yet) matched no key.
    let mut decided: BTreeMap<(String, Code), u64> = BTreeMap::new();
    let mut keyless: BTreeMap<Code, u64> = BTreeMap::from([(Code::Malformed, 3)]);
    for store in &hosts {
        let deadline = Instant::now() + Duration::from_secs(10);
        loop {
            let code = store.verify(plain.key.expose()).expect("verify").code;
            if code == Code::Valid {
                break;
            }
            *keyless.entry(code).or_default() += 1;
            assert!(Instant::now() < deadline, "the key did not reach every host");
            std::thread::sleep(Duration::from_millis(10));
        }
        *decided.entry((plain.record.id.to_string(), Code::Valid)).or_default() += 1;
    }
    std::thread::scope(|scope| {
        let handles: Vec<_> = hosts
            .iter()
            .enumerate()
            .map(|(h, store)| {
                let (limited, plain) = (limited.key.expose(), plain.key.expose());
                scope.spawn(move || {
                    let mut mine: BTreeMap<(usize, Code), u64> = BTreeMap::new();
                    for i in 0..40 + 10 * h {
                        let (k, key) = if i % 3 == 0 { (1, plain) } else { (0, limited) };
                        let code = store.verify(key).expect("verify").code;
                        *mine.entry((k, code)).or_default() += 1;
                    }
                    store.verify("sk_live_garbage").expect("verify");
                    mine
                })
            })
            .collect();
        for handle in handles {
            for ((k, code), n) in handle.join().expect("host thread") {
                let id = if k == 0 { &limited.record.id } else { &plain.record.id };
                *decided.entry((id.to_string(), code)).or_default() += n;
            }
        }
    });
    let rate_limited: u64 = decided
        .iter()
        .filter(|((_, code), _)| *code == Code::RateLimited)
        .map(|(_, n)| n)
        .sum();
    assert!(rate_limited > 0, "the shared limit refused some: {decided:?}");
    for store in &hosts {
        store.flush().expect("flush");
    }

    let expected = |id: Option<&str>| {
        let mut c = UsageCounts::default();
        for ((key, code), n) in &decided {
            if id.is_none_or(|id| id == key) {
                c.count(*code, *n, if *code == Code::Valid { *n } else { 0 });
            }
        }
        c
    };
    for store in &hosts {
        for key in [&limited, &plain] {
            let got = day_total(store, UsageSubject::Key(key.record.id.clone()));
            assert_eq!(got, expected(Some(key.record.id.as_str())), "{}", key.record.name);
        }
        assert_eq!(day_total(store, UsageSubject::Owner("acme".into())), expected(None));
        // The store as a whole: the keys', and the presented keys that matched none.
        let mut all = expected(None);
        for (code, n) in &keyless {
            all.count(*code, *n, 0);
        }
        assert_eq!(day_total(store, UsageSubject::All), all);
    }
    for store in hosts {
        store.close().expect("close");
    }
}
