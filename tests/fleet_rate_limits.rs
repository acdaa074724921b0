//! Rate limits across the hosts of a fleet, against a real PostgreSQL: each live host
//! enforces its share of every limit, so the fleet never admits more than the limit, also
//! while hosts join and leave; when a host stops, the others grow into its share.
//!
//! The hosts share a manual clock, so no limit refills unless a test moves time on: every
//! count below is exact. (The fleet's own timing, heartbeats and polls, runs on real time.)

#![expect(
    clippy::expect_used,
    clippy::indexing_slicing,
    reason = "a test fails by panicking: unwrap, expect and indexing are its assertions"
)]

#[path = "common/pg.rs"]
mod pg;

use std::path::Path;
use std::sync::Arc;
use std::sync::atomic::{AtomicU32, Ordering};
use std::time::{Duration, Instant};

use credstore::fleet::Fleet;
use credstore::{Code, Config, ManualClock, NewKey, Pepper, RateLimit, Store};

const MINUTE_MS: i64 = 60_000;

fn host(dir: &Path, url: &str, name: &str, clock: &Arc<ManualClock>) -> Store {
    let config = Config::new()
        .pepper(Pepper::from_bytes([5; 32]))
        .flush_interval(Duration::from_millis(100))
        .clock(Arc::clone(clock) as Arc<dyn credstore::Clock>)
        .fleet(url, name);
    Store::init(dir.join(name), config).expect("init host")
}

/// A key limited to 30 requests a minute, known to every host.
fn limited(hosts: &[Store]) -> String {
    let new = NewKey::new("limited").rate_limit(RateLimit::new("per_minute", 30, 60_000).expect("limit"));
    let created = hosts[0].create(new).expect("create");
    let key = created.key.expose().to_string();
    // Known everywhere, found without a verify (which would spend the limit).
    for h in hosts {
        let deadline = Instant::now() + Duration::from_secs(10);
        while h.get(&created.record.id).is_err() {
            assert!(Instant::now() < deadline, "the key never reached a host");
            std::thread::sleep(Duration::from_millis(5));
        }
    }
    key
}

/// Requests on `store` until one is refused; how many were admitted.
fn drain(store: &Store, key: &str) -> u32 {
    let mut admitted = 0;
    loop {
        match store.verify(key).expect("verify").code {
            Code::Valid => admitted += 1,
            Code::RateLimited => return admitted,
            other => panic!("unexpected {other:?}"),
        }
    }
}

/// Waits until the `count` live hosts all say they divide by `count`, then for each to
/// take its grown share (its next heartbeat round, about a second).
fn agreed(url: &str, count: u32) {
    let fleet = Fleet::connect(url).expect("connect");
    let deadline = Instant::now() + Duration::from_secs(15);
    loop {
        let hosts = fleet.hosts().expect("hosts");
        let live: Vec<_> = hosts.iter().filter(|h| h.silent_for_secs < 3.0).collect();
        if live.len() == count as usize && live.iter().all(|h| h.sees == count) {
            break;
        }
        assert!(Instant::now() < deadline, "the hosts never agreed: {hosts:?}");
        std::thread::sleep(Duration::from_millis(50));
    }
    std::thread::sleep(Duration::from_millis(1_500));
}

#[test]
fn hosts_together_never_admit_more_than_the_limit() {
    let Some(server) = pg::PgServer::start() else { return };
    let dir = tempfile::tempdir().expect("temp dir");
    let url = server.url();
    let clock = Arc::new(ManualClock::new(1_800_000_000_000));
    let hosts: Vec<Store> = ["a", "b", "c"]
        .iter()
        .map(|n| host(dir.path(), &url, n, &clock))
        .collect();
    agreed(&url, 3);
    // Each host's part grew from nothing when it joined: taken as spent then, refilled
    // a window later.
    clock.advance(2 * MINUTE_MS);

    // Everyone at once: two threads per host, each until refused 50 times.
    let key = limited(&hosts);
    let admitted = Arc::new(AtomicU32::new(0));
    std::thread::scope(|scope| {
        for h in &hosts {
            for _ in 0..2 {
                let (key, admitted) = (key.clone(), Arc::clone(&admitted));
                scope.spawn(move || {
                    let mut refused = 0;
                    while refused < 50 {
                        match h.verify(&key).expect("verify").code {
                            Code::Valid => {
                                admitted.fetch_add(1, Ordering::Relaxed);
                            }
                            _ => refused += 1,
                        }
                    }
                });
            }
        }
    });
    assert_eq!(
        admitted.load(Ordering::Relaxed),
        30,
        "the fleet admits the limit, no more"
    );

    // All traffic on one host: the fleet admits that host's share only (the price of
    // parts fixed ahead of traffic; docs/LIMITS.md).
    let uneven = limited(&hosts);
    let one = drain(&hosts[0], &uneven);
    assert_eq!(one, 10, "one host of three holds a third");
    println!("uneven traffic: {one} of 30 admitted with all requests on one host of three");
}

#[test]
fn when_a_host_stops_the_others_grow_into_its_share() {
    let Some(server) = pg::PgServer::start() else { return };
    let dir = tempfile::tempdir().expect("temp dir");
    let url = server.url();
    let clock = Arc::new(ManualClock::new(1_800_000_000_000));
    let mut hosts: Vec<Store> = ["a", "b", "c"]
        .iter()
        .map(|n| host(dir.path(), &url, n, &clock))
        .collect();
    agreed(&url, 3);
    clock.advance(2 * MINUTE_MS);
    let key = limited(&hosts);
    assert_eq!(drain(&hosts[0], &key), 10);

    hosts.pop().expect("c").close().expect("close c");
    agreed(&url, 2);
    // The 5 that a gained came from c, which may have spent them: they refill first.
    let fresh = limited(&hosts);
    assert_eq!(drain(&hosts[0], &fresh), 10, "a's gain is taken as spent at first");
    assert_eq!(drain(&hosts[0], &key), 0, "a spent its 10 of this key already");
    clock.advance(2 * MINUTE_MS);
    let later = limited(&hosts);
    assert_eq!(drain(&hosts[0], &later), 15, "a window later a holds half");
}

#[test]
fn a_joining_host_keeps_the_fleet_within_the_limit() {
    let Some(server) = pg::PgServer::start() else { return };
    let dir = tempfile::tempdir().expect("temp dir");
    let url = server.url();
    let clock = Arc::new(ManualClock::new(1_800_000_000_000));
    let mut hosts: Vec<Store> = ["a", "b"].iter().map(|n| host(dir.path(), &url, n, &clock)).collect();
    agreed(&url, 2);
    clock.advance(2 * MINUTE_MS);
    let key = limited(&hosts);
    assert_eq!(drain(&hosts[0], &key) + drain(&hosts[1], &key), 30);

    // c joins while a and b have spent their 15 each: they shrink to 10, their spent 15
    // kept; c's 10 came from them and is taken as spent: no one admits more.
    hosts.push(host(dir.path(), &url, "c", &clock));
    agreed(&url, 3);
    let after: u32 = hosts.iter().map(|h| drain(h, &key)).sum();
    assert_eq!(after, 0, "30 of 30 were spent before c joined");
    // A minute on: the fleet refills 30, of which a and b still owe 5 each.
    clock.advance(MINUTE_MS);
    let next: Vec<u32> = hosts.iter().map(|h| drain(h, &key)).collect();
    println!("a minute after c joined: {next:?} admitted");
    assert!(next.iter().sum::<u32>() <= 30, "{next:?}");
    assert_eq!(next[2], 10, "c's part refilled in a window");
}

#[test]
fn a_host_alone_in_its_fleet_holds_every_limit_at_once() {
    let Some(server) = pg::PgServer::start() else { return };
    let dir = tempfile::tempdir().expect("temp dir");
    let url = server.url();
    let clock = Arc::new(ManualClock::new(1_800_000_000_000));
    let hosts = [host(dir.path(), &url, "solo", &clock)];
    // Right after open, no waiting: no other host ever held a part, nothing is taken as
    // spent, no time has to pass.
    let key = limited(&hosts);
    assert_eq!(drain(&hosts[0], &key), 30);
}

#[test]
fn the_cli_takes_no_part_of_the_serving_hosts_limits() {
    let Some(server) = pg::PgServer::start() else { return };
    let dir = tempfile::tempdir().expect("temp dir");
    let url = server.url();
    let clock = Arc::new(ManualClock::new(1_800_000_000_000));
    let hosts = [host(dir.path(), &url, "a", &clock), host(dir.path(), &url, "b", &clock)];
    agreed(&url, 2);
    // A CLI command opens a throwaway replica of the fleet: a passive host, never counted.
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_credstore"))
        .args(["--fleet", &url, "list", "--json"])
        .env("CREDSTORE_PEPPER", "05".repeat(32))
        .env_remove("CREDSTORE_DATA")
        .current_dir(dir.path())
        .output()
        .expect("run credstore");
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let listed = Fleet::connect(&url).expect("connect").hosts().expect("hosts");
    let names: Vec<&str> = listed.iter().map(|h| h.host.as_str()).collect();
    assert_eq!(names, ["a", "b"], "{listed:?}");
    assert!(listed.iter().all(|h| h.sees == 2), "{listed:?}");
    clock.advance(2 * MINUTE_MS);
    let key = limited(&hosts);
    assert_eq!(drain(&hosts[0], &key) + drain(&hosts[1], &key), 30);
}
