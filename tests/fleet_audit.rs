//! The audit log of a fleet is fleet-wide, against a real PostgreSQL: the uses each host
//! records reach the fleet log in the batches the host writes anyway, every host's replica
//! holds all of them and verifies to the fleet's chain head, and `credstore --fleet URL
//! audit` answers for every host.

#![expect(
    clippy::expect_used,
    reason = "a test fails by panicking: unwrap, expect and indexing are its assertions"
)]

#[path = "common/pg.rs"]
mod pg;

use std::path::Path;
use std::time::{Duration, Instant};

use credstore::fleet::Fleet;
use credstore::{Code, Config, EventFilter, NewKey, Pepper, Store};

fn host(dir: &Path, url: &str, name: &str) -> Store {
    let config = Config::new()
        .pepper(Pepper::from_bytes([3; 32]))
        .flush_interval(Duration::from_millis(100))
        .fleet(url, name);
    Store::init(dir.join(name), config).expect("init host")
}

fn uses_of(store: &Store, id: &credstore::KeyId) -> usize {
    let filter = EventFilter {
        key: Some(id.clone()),
        kind: Some("key.used".to_string()),
        ..EventFilter::default()
    };
    store.events(&filter).expect("events").len()
}

#[test]
fn every_hosts_uses_reach_every_replica_and_the_fleets_audit() {
    let Some(server) = pg::PgServer::start() else { return };
    let dir = tempfile::tempdir().expect("temp dir");
    let url = server.url();
    let a = host(dir.path(), &url, "a");
    let b = host(dir.path(), &url, "b");
    let created = a.create(NewKey::new("audited")).expect("create");
    let (id, key) = (created.record.id.clone(), created.key.expose().to_string());
    let deadline = Instant::now() + Duration::from_secs(10);
    while b.verify(&key).expect("verify").code != Code::Valid {
        assert!(Instant::now() < deadline, "the key never reached b");
        std::thread::sleep(Duration::from_millis(5));
    }
    for _ in 0..5 {
        assert_eq!(a.verify(&key).expect("verify").code, Code::Valid);
    }
    for _ in 0..6 {
        assert_eq!(b.verify(&key).expect("verify").code, Code::Valid);
    }
    // b's first verify above counts too: 12 uses in all, on both replicas.
    let deadline = Instant::now() + Duration::from_secs(10);
    while uses_of(&a, &id) != 12 || uses_of(&b, &id) != 12 {
        assert!(
            Instant::now() < deadline,
            "uses on a: {}, on b: {}",
            uses_of(&a, &id),
            uses_of(&b, &id)
        );
        std::thread::sleep(Duration::from_millis(20));
    }

    // Each replica verifies, to the fleet's head (once the last batch is applied).
    let fleet = Fleet::connect(&url).expect("connect");
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let (head, _) = fleet.head().expect("head");
        let checks = [a.verify_log().expect("a's log"), b.verify_log().expect("b's log")];
        assert!(checks.iter().all(|c| c.index_differs.is_empty()), "{checks:?}");
        if checks.iter().all(|c| c.records == head) {
            break;
        }
        assert!(Instant::now() < deadline, "replicas at {checks:?}, fleet at {head}");
        std::thread::sleep(Duration::from_millis(20));
    }

    // The fleet's audit, through the CLI, without a host of its own.
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_credstore"))
        .args([
            "--fleet",
            &url,
            "audit",
            "--key",
            id.as_str(),
            "--kind",
            "key.used",
            "--json",
        ])
        .env("CREDSTORE_PEPPER", "03".repeat(32))
        .env_remove("CREDSTORE_DATA")
        .current_dir(dir.path())
        .output()
        .expect("run credstore");
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let events: serde_json::Value = serde_json::from_slice(&out.stdout).expect("json");
    let events = events.as_array().expect("array");
    assert_eq!(events.len(), 12, "{events:?}");
    assert!(events.iter().all(|e| e["details"]["code"] == "VALID"), "{events:?}");
}
