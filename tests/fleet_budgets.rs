//! Budgets across the hosts of a fleet, against a real PostgreSQL: hosts spend from leases
//! the fleet grants, so the fleet never spends more than the cap, whatever the number of
//! hosts and however their requests interleave; leases go back when a host idles or
//! stops, so the last unit can be spent; a killed host's lease is settled, as spent, after
//! it expires.

#![expect(
    clippy::expect_used,
    reason = "a test fails by panicking: unwrap, expect and indexing are its assertions"
)]

#[path = "common/pg.rs"]
mod pg;

mod common;

#[path = "common/fleet.rs"]
mod fleet;

use std::path::Path;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use credstore::fleet::{BudgetAccount, Fleet};
use credstore::{Budget, Code, Config, Env, Format, KeyRecord, NewKey, Pepper, Period, Store, VerifyRequest};

/// The fleet's pepper: `common/fleet.rs`'s, which its serve hosts use.
const PEPPER: [u8; 32] = [7; 32];

fn host(dir: &Path, url: &str, name: &str) -> Store {
    let mut config = Config::new()
        .pepper(Pepper::from_bytes(PEPPER))
        .flush_interval(Duration::from_millis(100))
        .fleet(url, name);
    config.fleet_lease_ttl = Duration::from_secs(3);
    Store::init(dir.join(name), config).expect("init host")
}

fn budget_key(store: &Store, cap: u64, env: Env) -> (KeyRecord, String) {
    let new = NewKey::new("metered")
        .format(Format::default_for(env))
        .budget(Budget::new(cap, Period::Total).expect("budget"));
    let created = store.create(new).expect("create");
    let secret = created.key.expose().to_string();
    (created.record, secret)
}

/// The cost charged by a verify: its cost when it was valid and charged, else 0.
fn spend(store: &Store, key: &str, cost: u64) -> Option<u64> {
    let decision = store.verify_with(&VerifyRequest::new(key).cost(cost)).expect("verify");
    match decision.code {
        Code::Valid => {
            assert!(decision.budget.as_ref().is_some_and(|b| b.charged), "{decision:?}");
            Some(cost)
        }
        Code::BudgetExhausted => None,
        other => panic!("unexpected {other:?}"),
    }
}

/// Waits until the key is known on `store` (it was created on another host).
fn known(store: &Store, key: &str) {
    let deadline = Instant::now() + Duration::from_secs(10);
    while store
        .verify_with(&VerifyRequest::new(key).cost(0))
        .expect("verify")
        .code
        != Code::Valid
    {
        assert!(Instant::now() < deadline, "the key never reached this host");
        std::thread::sleep(Duration::from_millis(5));
    }
}

fn account(url: &str, id: &str) -> BudgetAccount {
    Fleet::connect(url)
        .expect("connect")
        .budget_account(id, 0)
        .expect("budget account")
}

/// Waits until no host holds a lease of the budget (they went back, idle).
fn settled(url: &str, id: &str) -> BudgetAccount {
    let deadline = Instant::now() + Duration::from_secs(15);
    loop {
        let now = account(url, id);
        if now.holders == 0 {
            return now;
        }
        assert!(Instant::now() < deadline, "leases never went back: {now:?}");
        std::thread::sleep(Duration::from_millis(50));
    }
}

#[test]
fn hosts_hammering_one_budget_never_pass_its_cap_and_spend_it_to_the_last_unit() {
    let Some(server) = pg::PgServer::start() else { return };
    let dir = tempfile::tempdir().expect("temp dir");
    let url = server.url();
    let hosts: Vec<Arc<Store>> = ["a", "b", "c"]
        .iter()
        .map(|name| Arc::new(host(dir.path(), &url, name)))
        .collect();
    const CAP: u64 = 2_000;
    let (info, key) = budget_key(&hosts[0], CAP, Env::Live);
    hosts.iter().for_each(|h| known(h, &key));

    // Two threads per host, costs 1 to 7, until each thread has been refused 20 times in
    // a row.
    let admitted = Arc::new(AtomicU64::new(0));
    std::thread::scope(|scope| {
        for (i, store) in hosts.iter().enumerate() {
            for t in 0..2u64 {
                let (store, key, admitted) = (Arc::clone(store), key.clone(), Arc::clone(&admitted));
                scope.spawn(move || {
                    let mut refused = 0;
                    let mut n = i as u64 * 7 + t;
                    while refused < 20 {
                        n = n.wrapping_mul(6364136223846793005).wrapping_add(1442695040888963407);
                        match spend(&store, &key, 1 + (n >> 33) % 7) {
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
    let hammered = admitted.load(Ordering::Relaxed);
    assert!(hammered <= CAP, "the fleet admitted {hammered} of a cap of {CAP}");

    // The leases go back once the hosts idle; then the rest can be spent, one unit at a
    // time, from any host, to the last unit.
    let account = settled(&url, info.id.as_str());
    assert_eq!(account.settled, hammered, "what was settled is what was admitted");
    let mut total = hammered;
    for store in hosts.iter().cycle().take(3 * CAP as usize) {
        match spend(store, &key, 1) {
            Some(cost) => total += cost,
            None if total == CAP => break,
            None => {}
        }
    }
    assert_eq!(
        total, CAP,
        "after the leases settled the budget is spent to its last unit"
    );
    for store in &hosts {
        assert_eq!(spend(store, &key, 1), None, "nothing past the cap");
        // Each host shows the fleet's spend, not its own.
        let shown = store
            .verify_with(&VerifyRequest::new(&key).cost(1))
            .expect("verify")
            .budget
            .expect("a budget");
        assert_eq!((shown.spent, shown.remaining), (CAP, 0), "{shown:?}");
    }
    drop(hosts);
    let closed = account_after_close(&url, info.id.as_str());
    assert_eq!(closed.settled, CAP, "{closed:?}");
}

fn account_after_close(url: &str, id: &str) -> BudgetAccount {
    let account = account(url, id);
    assert_eq!(account.holders, 0, "closing a host gives its leases back: {account:?}");
    account
}

#[test]
fn test_keys_are_never_charged_and_lease_nothing() {
    let Some(server) = pg::PgServer::start() else { return };
    let dir = tempfile::tempdir().expect("temp dir");
    let url = server.url();
    let a = host(dir.path(), &url, "a");
    let (info, key) = budget_key(&a, 10, Env::Test);
    for _ in 0..50 {
        let decision = a.verify_with(&VerifyRequest::new(&key).cost(5)).expect("verify");
        assert_eq!(decision.code, Code::Valid);
        assert!(decision.budget.is_some_and(|b| !b.charged));
    }
    assert_eq!(account(&url, info.id.as_str()), BudgetAccount::default());
}

#[test]
fn a_rotated_key_spends_the_same_fleet_budget() {
    let Some(server) = pg::PgServer::start() else { return };
    let dir = tempfile::tempdir().expect("temp dir");
    let url = server.url();
    let a = host(dir.path(), &url, "a");
    let b = host(dir.path(), &url, "b");
    let (info, old) = budget_key(&a, 100, Env::Live);
    let mut total = 0;
    for _ in 0..30 {
        total += spend(&a, &old, 2).expect("within the cap");
    }
    let rotated = a.rotate(&info.id, None).expect("rotate");
    let new = rotated.new.key.expose().to_string();
    known(&b, &new);
    // The new key goes on from what the old one spent, on any host: not a fresh cap.
    while let Some(cost) = spend(&b, &new, 1).or_else(|| spend(&a, &new, 1)) {
        total += cost;
        assert!(total <= 100, "spent {total} of 100 across a rotation");
    }
    let settled = settled(&url, info.id.as_str());
    assert!(settled.settled <= 100);
}

#[test]
fn a_killed_host_holding_leases_keeps_the_fleet_within_the_cap_and_its_lease_is_settled_after_expiry() {
    let Some(server) = pg::PgServer::start() else { return };
    let dir = tempfile::tempdir().expect("temp dir");
    let url = server.url();
    let a = host(dir.path(), &url, "a");
    const CAP: u64 = 1_000;
    let (info, key) = budget_key(&a, CAP, Env::Live);

    let data = dir.path().join("doomed");
    let doomed = fleet::Host::start(&url, "doomed", &data, &[("CREDSTORE_FLEET_LEASE_TTL", "2s")]);
    let addr = doomed.addr;
    let body = serde_json::json!({ "key": key, "cost": 3 });
    let mut spent_there = 0;
    for _ in 0..20 {
        let reply = common::http(addr, "POST", "/v1/keys.verify", None, Some(&body)).expect("verify");
        assert_eq!(reply.body["data"]["code"], "VALID", "{:?}", reply.body);
        spent_there += 3;
    }
    let held = account(&url, info.id.as_str());
    assert_eq!(held.holders, 1, "the sidecar holds a lease: {held:?}");
    assert!(held.leased >= spent_there);
    // Dropping the host kills it (SIGKILL): no clean stop gives its lease back.
    drop(doomed);

    // Meanwhile the other host spends: never past the cap, counting the dead host's lease.
    let mut total = spent_there;
    while let Some(cost) = spend(&a, &key, 1) {
        total += cost;
    }
    assert!(total <= CAP, "admitted {total} of {CAP} with a dead host's lease out");

    // After the dead host's lease expires, the next lease of the budget settles it, as
    // spent (what it spent is not known): it holds nothing any more, and what it had not
    // spent is all the budget lost.
    std::thread::sleep(Duration::from_millis(2_500));
    assert_eq!(spend(&a, &key, 1), None, "the dead host's units are not leased again");
    let end = account(&url, info.id.as_str());
    assert_eq!(end.holders, 0, "the dead host's lease was settled: {end:?}");
    assert_eq!(end.settled, CAP, "{end:?}");
    assert!(total <= CAP, "admitted {total} of {CAP}");
    assert!(
        CAP - total <= held.leased - spent_there,
        "what was lost ({}) is at most the dead host's unspent lease ({})",
        CAP - total,
        held.leased - spent_there
    );
}

/// An owner's budget in a fleet is leased like a key's, under the id `owner/OWNER`: hosts
/// spending it through several of its keys never pass its cap, and what they settle is
/// what they admitted.
#[test]
fn hosts_spending_an_owners_budget_through_its_keys_never_pass_its_cap() {
    let Some(server) = pg::PgServer::start() else { return };
    let dir = tempfile::tempdir().expect("temp dir");
    let url = server.url();
    let hosts: Vec<Arc<Store>> = ["a", "b", "c"]
        .iter()
        .map(|name| Arc::new(host(dir.path(), &url, name)))
        .collect();
    const CAP: u64 = 600;
    let update = credstore::OwnerUpdate {
        budget: Some(Some(Budget::new(CAP, Period::Total).expect("budget"))),
        ..credstore::OwnerUpdate::default()
    };
    hosts[0].set_owner("acme", update).expect("owner set");
    let keys: Vec<String> = (0..3)
        .map(|i| {
            let created = hosts[0]
                .create(NewKey::new(format!("k{i}")).owner("acme"))
                .expect("create");
            created.key.expose().to_string()
        })
        .collect();
    for h in &hosts {
        keys.iter().for_each(|k| known(h, k));
    }
    let admitted = Arc::new(AtomicU64::new(0));
    std::thread::scope(|scope| {
        for (i, store) in hosts.iter().enumerate() {
            let (store, keys, admitted) = (Arc::clone(store), keys.clone(), Arc::clone(&admitted));
            scope.spawn(move || {
                let mut refused = 0;
                let mut n = i;
                while refused < 20 {
                    n += 1;
                    let d = store
                        .verify_with(&VerifyRequest::new(&keys[n % keys.len()]).cost(3))
                        .expect("verify");
                    match d.code {
                        Code::Valid => {
                            assert_eq!(d.owner.as_ref().map(|o| o.id.as_str()), Some("acme"));
                            admitted.fetch_add(3, Ordering::Relaxed);
                            refused = 0;
                        }
                        Code::BudgetExhausted => refused += 1,
                        other => panic!("unexpected {other:?}"),
                    }
                }
            });
        }
    });
    let hammered = admitted.load(Ordering::Relaxed);
    assert!(
        hammered <= CAP,
        "the fleet admitted {hammered} of the owner's cap of {CAP}"
    );
    assert!(hammered > 0, "nothing was admitted");
    let account = settled(&url, "owner/acme");
    assert_eq!(account.settled, hammered, "what was settled is what was admitted");
}
