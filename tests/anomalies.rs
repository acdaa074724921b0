//! Anomalies, with a moved clock (DESIGN.md "Usage and anomalies"): fourteen simulated
//! days of steady, daily-cycling traffic on 1,000 keys raise no `key.anomaly`; then each
//! injected case (a spike, a denial burst, a dead key presented, a new network, guessing,
//! a dormant key used again) raises exactly one event, within the bucket it happened in,
//! with its figures; `events` and `audit` list them, and the real `credstore serve`
//! delivers each to a webhook receiver on loopback.
//!
//! The simulation drives the library directly: the clock moves an hour at a time and
//! the detector is asked explicitly ([`Store::check_anomalies`]).

#![expect(
    clippy::expect_used,
    clippy::indexing_slicing,
    reason = "a test fails by panicking: unwrap, expect and indexing are its assertions"
)]
#![cfg(feature = "http")]

mod common;

use std::net::IpAddr;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use axum::Router;
use axum::body::Bytes;
use axum::extract::State;
use axum::http::StatusCode;
use axum::routing::post;
use common::{Cli, Sidecar, T0};
use credstore::anomaly::{Reason, Thresholds};
use credstore::usage::{Granularity, UsageQuery, UsageSubject};
use credstore::{Code, Config, EventFilter, EventKind, KeyId, ManualClock, NewKey, Store, UseLog, VerifyRequest};
use serde_json::Value;

const MINUTE: i64 = 60_000;
const HOUR: i64 = 3_600_000;
const DAY: i64 = 86_400_000;
const KEYS: usize = 1_000;

/// Test thresholds: the defaults' shape, at volumes a fast simulation reaches.
fn thresholds() -> Thresholds {
    let mut t = Thresholds::default();
    t.spike_min = 40;
    t.denials_min = 20;
    t.guessing_min = 20;
    t
}

/// Key `k`'s client address: each key has a /24 of its own.
fn ip_of(k: usize) -> IpAddr {
    IpAddr::V4(std::net::Ipv4Addr::new(10, (k / 250) as u8, (k % 250) as u8, 7))
}

/// Requests of a key in hour `hour` of the day: a daily cycle, busier in the day, varying
/// by key.
fn steady(k: usize, hour: i64) -> usize {
    let h = hour.rem_euclid(24);
    let busy = (8..20).contains(&h);
    1 + usize::from(busy) + usize::from(busy && k.is_multiple_of(3))
}

/// The `key.anomaly` events in the log, as JSON.
fn anomalies(store: &Store) -> Vec<Value> {
    let filter = EventFilter {
        kind: Some("key.anomaly".into()),
        ..EventFilter::default()
    };
    store
        .events(&filter)
        .expect("events")
        .iter()
        .map(|(seq, e)| e.to_json(*seq))
        .collect()
}

/// Checks now, and asserts that exactly one anomaly was raised, of `reason`, for `key`,
/// within the hour bucket of `at`.
#[track_caller]
fn expect_one(store: &Store, seen: &mut usize, reason: Reason, key: Option<&str>, at: i64) -> Value {
    let logged = store.check_anomalies().expect("check");
    let all = anomalies(store);
    assert_eq!(logged, 1, "one event for {reason}: {:#?}", &all[*seen..]);
    assert_eq!(all.len(), *seen + 1, "{:#?}", &all[*seen..]);
    let event = all[*seen].clone();
    *seen += 1;
    let details = &event["details"];
    assert_eq!(details["reason"], reason.as_str(), "{event}");
    assert_eq!(details["key_id"].as_str(), key, "{event}");
    let bucket = |t: &str| {
        let ms = t.parse::<jiff::Timestamp>().expect("an RFC 3339 time").as_millisecond();
        ms - ms.rem_euclid(HOUR)
    };
    assert_eq!(
        bucket(event["at"].as_str().expect("at")),
        at - at.rem_euclid(HOUR),
        "raised in the bucket it happened in: {event}"
    );
    assert!(details["observed"].as_u64().is_some() && details["baseline"].as_u64().is_some());
    // A second check finds nothing more: one event per episode.
    assert_eq!(store.check_anomalies().expect("check"), 0);
    event
}

#[test]
fn two_weeks_of_steady_traffic_are_quiet_and_each_injected_case_is_one_delivered_event() {
    let receiver = Receiver::start();
    let cli = Cli::init();
    let clock = Arc::new(ManualClock::new(T0));
    let config = Config::new()
        .clock(clock.clone())
        // Only check_anomalies asks the detector: nothing runs on a timer of its own.
        .flush_interval(Duration::from_secs(3600))
        .lifecycle_sweep(None)
        // Every request logged, packed (summary mode would write a record per key per
        // check: 336,000 records for the sidecar to read past).
        .use_log(UseLog::Every)
        .anomalies(thresholds());
    let store = Arc::new(Store::open(&cli.data, config).expect("open"));
    store
        .webhook_add(&format!("{}/hook", receiver.url), &["key.anomaly"])
        .expect("webhook");

    // 1,000 keys, created from a few threads (one commit carries many creates).
    let keys: Vec<String> = {
        let threads: Vec<_> = (0..4)
            .map(|t| {
                let store = Arc::clone(&store);
                std::thread::spawn(move || {
                    (0..KEYS / 4)
                        .map(|i| {
                            let created = store.create(NewKey::new(format!("k{t}-{i}"))).expect("create");
                            created.key.expose().to_string()
                        })
                        .collect::<Vec<_>>()
                })
            })
            .collect();
        threads.into_iter().flat_map(|t| t.join().expect("creator")).collect()
    };
    let ids: Vec<String> = keys
        .iter()
        .map(|k| {
            store
                .find_by_key(k)
                .expect("find")
                .expect("the key")
                .record
                .id
                .to_string()
        })
        .collect();

    // 14 days of steady, daily-cycling traffic: no anomaly.
    let started = Instant::now();
    let mut verifies = 0u64;
    for hour in 0..14 * 24 {
        clock.set(T0 + hour * HOUR + 5 * MINUTE);
        for (k, key) in keys.iter().enumerate() {
            for _ in 0..steady(k, hour) {
                let d = store
                    .verify_with(&VerifyRequest::new(key).ip(ip_of(k)))
                    .expect("verify");
                assert_eq!(d.code, Code::Valid);
                verifies += 1;
            }
        }
        assert_eq!(
            store.check_anomalies().expect("check"),
            0,
            "hour {hour}: {:#?}",
            anomalies(&store)
        );
    }
    eprintln!("{verifies} verifies over 14 simulated days in {:?}", started.elapsed());
    assert!(anomalies(&store).is_empty());

    // Day 15, 10:05: each case in turn, each within its own hour bucket.
    let mut seen = 0;
    let day15 = T0 + 14 * DAY + 10 * HOUR + 5 * MINUTE;

    // A spike: key 0, twentyfold its usual hour.
    clock.set(day15);
    for _ in 0..60 {
        store
            .verify_with(&VerifyRequest::new(&keys[0]).ip(ip_of(0)))
            .expect("verify");
    }
    let spike = expect_one(&store, &mut seen, Reason::Spike, Some(&ids[0]), day15);
    assert_eq!(spike["details"]["observed"], 40, "raised as it crossed the threshold");
    assert!(spike["details"]["baseline"].as_u64().expect("baseline") <= 3);

    // A denial burst: key 1, refused for another project 30 times in a minute.
    let at = day15 + HOUR;
    clock.set(at);
    for _ in 0..30 {
        let d = store
            .verify_with(&VerifyRequest::new(&keys[1]).ip(ip_of(1)).project("elsewhere"))
            .expect("verify");
        assert_eq!(d.code, Code::Forbidden);
    }
    expect_one(&store, &mut seen, Reason::Denials, Some(&ids[1]), at);

    // A dead key still presented: key 2, revoked, then presented again and again.
    let at = day15 + 2 * HOUR;
    clock.set(at);
    store
        .revoke(&KeyId::parse(&ids[2]).expect("id"), Some("test"))
        .expect("revoke");
    for _ in 0..5 {
        let d = store
            .verify_with(&VerifyRequest::new(&keys[2]).ip(ip_of(2)))
            .expect("verify");
        assert_eq!(d.code, Code::Revoked);
    }
    expect_one(&store, &mut seen, Reason::DeadKeyPresented, Some(&ids[2]), at);

    // A new network: key 3, settled on its own /24 for two weeks, now from another.
    let at = day15 + 3 * HOUR;
    clock.set(at);
    for _ in 0..3 {
        store
            .verify_with(&VerifyRequest::new(&keys[3]).ip("203.0.113.50".parse().expect("ip")))
            .expect("verify");
    }
    let new_network = expect_one(&store, &mut seen, Reason::NewNetwork, Some(&ids[3]), at);
    assert_eq!(new_network["details"]["network"], "203.0.113.0/24");

    // Guessing: one network presenting 100 distinct well-formed keys that match none.
    let at = day15 + 4 * HOUR;
    clock.set(at);
    let guesser: IpAddr = "198.51.100.66".parse().expect("ip");
    for i in 0..100 {
        // Another key's shape, its random part changed: well-formed, unknown.
        let mut made_up = keys[4].clone();
        made_up.replace_range(12..16, &format!("{i:04}"));
        let d = store
            .verify_with(&VerifyRequest::new(&made_up).ip(guesser))
            .expect("verify");
        assert!(matches!(d.code, Code::NotFound | Code::Malformed), "{:?}", d.code);
    }
    let guessing = expect_one(&store, &mut seen, Reason::Guessing, None, at);
    assert_eq!(guessing["details"]["network"], "198.51.100.0/24");
    assert!(store.unknown_key_networks()[0].presented >= 100);

    // A dormant key used again: nothing for 46 days, then key 5 alone.
    let at = day15 + 46 * DAY;
    clock.set(at);
    store
        .verify_with(&VerifyRequest::new(&keys[5]).ip(ip_of(5)))
        .expect("verify");
    let dormant = expect_one(&store, &mut seen, Reason::DormantReuse, Some(&ids[5]), at);
    assert_eq!(dormant["details"]["baseline"], 45);

    // `audit` of a key lists its anomaly like any of its events.
    let of_key0 = store
        .events(&EventFilter {
            key: Some(KeyId::parse(&ids[0]).expect("id")),
            kind: Some("key.anomaly".into()),
            ..EventFilter::default()
        })
        .expect("events");
    assert_eq!(of_key0.len(), 1);
    assert!(matches!(of_key0[0].1.kind, EventKind::KeyAnomaly { .. }));

    // Every one is delivered by the real sidecar, signed, to the webhook.
    let expected: Vec<Value> = anomalies(&store);
    assert_eq!(expected.len(), 6);
    Arc::into_inner(store).expect("one store").close().expect("close");
    let audit = cli.json(&["audit", "--kind", "key.anomaly", "--json"]);
    assert_eq!(audit.as_array().expect("events").len(), 6, "{audit}");
    let sidecar = Sidecar::start_with(&cli, &["--webhook-backoff", "50ms"]);
    let delivered = receiver.wait_for(6);
    let (_, stderr) = sidecar.stop();
    assert!(
        delivered,
        "{} of 6 deliveries: {:#?}\n{stderr}\nwebhooks: {}\nattempts: {}",
        receiver.bodies().len(),
        receiver.bodies(),
        cli.json(&["webhook", "list", "--json"]),
        cli.json(&["audit", "--kind", "webhook.attempt", "--json"])
    );
    let mut got: Vec<(u64, String)> = receiver
        .bodies()
        .iter()
        .map(|b| {
            assert_eq!(b["type"], "key.anomaly", "{b}");
            let seq = b["data"]["seq"].as_u64().expect("seq");
            (
                seq,
                b["data"]["details"]["reason"].as_str().expect("reason").to_string(),
            )
        })
        .collect();
    got.sort();
    got.dedup();
    let want: Vec<(u64, String)> = expected
        .iter()
        .map(|e| {
            (
                e["seq"].as_u64().expect("seq"),
                e["details"]["reason"].as_str().expect("reason").to_string(),
            )
        })
        .collect();
    assert_eq!(got, want);

    // `usage` shows them: a key's own, and every one for the whole store; kept in the
    // index, and made again from the log by a rebuild.
    let reopened = || {
        let config = Config::new()
            .clock(clock.clone())
            .flush_interval(Duration::from_secs(3600))
            .lifecycle_sweep(None)
            .anomalies(thresholds());
        Store::open(&cli.data, config).expect("open")
    };
    let query = |subject| UsageQuery {
        subject,
        since: T0 + 14 * DAY,
        until: day15 + 47 * DAY,
        by: Granularity::Day,
    };
    let shown = |store: &Store| {
        let of_key = store
            .usage(&query(UsageSubject::Key(KeyId::parse(&ids[0]).expect("id"))))
            .expect("usage");
        assert_eq!(of_key.anomalies.len(), 1, "{:?}", of_key.anomalies);
        assert_eq!(of_key.anomalies[0].anomaly.reason, Reason::Spike);
        let json = of_key.to_json();
        assert_eq!(json["anomalies"][0]["reason"], "spike", "{json}");
        assert_eq!(json["anomalies"][0]["key_id"], ids[0].as_str());
        let all = store.usage(&query(UsageSubject::All)).expect("usage");
        let mut reasons: Vec<&str> = all.anomalies.iter().map(|a| a.anomaly.reason.as_str()).collect();
        reasons.sort_unstable();
        assert_eq!(
            reasons,
            [
                "dead_key_presented",
                "denials",
                "dormant_reuse",
                "guessing",
                "new_network",
                "spike"
            ]
        );
        let project = store
            .usage(&query(UsageSubject::Project("default".into())))
            .expect("usage");
        assert_eq!(project.anomalies.len(), 5, "all but guessing, which is no key's");
    };
    let store = reopened();
    shown(&store);
    store.close().expect("close");
    Store::rebuild(&cli.data, Config::new()).expect("rebuild");
    let store = reopened();
    shown(&store);
    store.close().expect("close");
}

#[test]
fn thresholds_off_raise_nothing() {
    let cli = Cli::init();
    let clock = Arc::new(ManualClock::new(T0));
    let config = Config::new()
        .clock(clock.clone())
        .flush_interval(Duration::from_secs(3600))
        .anomalies(Thresholds::off());
    let store = Store::open(&cli.data, config).expect("open");
    let key = store.create(NewKey::new("k")).expect("create");
    let key = key.key.expose().to_string();
    store.verify(&key).expect("verify");
    store
        .revoke(&store.find_by_key(&key).expect("find").expect("key").record.id, None)
        .expect("revoke");
    for _ in 0..10 {
        store.verify(&key).expect("verify");
    }
    clock.advance(100 * DAY);
    for i in 0..200 {
        let ip = "198.51.100.1".parse().expect("ip");
        store
            .verify_with(&VerifyRequest::new(&format!("sk_live_{i}")).ip(ip))
            .expect("verify");
    }
    assert_eq!(store.check_anomalies().expect("check"), 0);
    assert!(anomalies(&store).is_empty());
    assert!(store.unknown_key_networks().is_empty());
}

/// A webhook receiver on loopback: accepts everything, keeps the bodies.
struct Receiver {
    url: String,
    bodies: Arc<Mutex<Vec<Value>>>,
    _runtime: tokio::runtime::Runtime,
}

impl Receiver {
    fn start() -> Receiver {
        let runtime = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(1)
            .enable_all()
            .build()
            .expect("runtime");
        let bodies = Arc::new(Mutex::new(Vec::new()));
        let listener = runtime
            .block_on(tokio::net::TcpListener::bind("127.0.0.1:0"))
            .expect("bind");
        let addr = listener.local_addr().expect("addr");
        let app = Router::new().route("/hook", post(hook)).with_state(Arc::clone(&bodies));
        runtime.spawn(async move {
            let _ = axum::serve(listener, app).await;
        });
        Receiver {
            url: format!("http://{addr}"),
            bodies,
            _runtime: runtime,
        }
    }

    fn bodies(&self) -> Vec<Value> {
        self.bodies.lock().expect("lock").clone()
    }

    /// Waits for `n` distinct deliveries (a deadline only so that a failure ends the
    /// test): whether they came.
    fn wait_for(&self, n: usize) -> bool {
        let deadline = Instant::now() + Duration::from_secs(30);
        loop {
            let mut seqs: Vec<u64> = self.bodies().iter().filter_map(|b| b["data"]["seq"].as_u64()).collect();
            seqs.sort_unstable();
            seqs.dedup();
            if seqs.len() >= n {
                return true;
            }
            if Instant::now() > deadline {
                return false;
            }
            std::thread::sleep(Duration::from_millis(20));
        }
    }
}

async fn hook(State(bodies): State<Arc<Mutex<Vec<Value>>>>, body: Bytes) -> StatusCode {
    match serde_json::from_slice(&body) {
        Ok(v) => {
            bodies.lock().expect("lock").push(v);
            StatusCode::NO_CONTENT
        }
        Err(_) => StatusCode::BAD_REQUEST,
    }
}

#[test]
fn what_the_detector_learnt_survives_a_close_and_open() {
    let cli = Cli::init();
    let clock = Arc::new(ManualClock::new(T0));
    let config = Config::new()
        .clock(clock.clone())
        .flush_interval(Duration::from_secs(3600))
        .lifecycle_sweep(None)
        .anomalies(thresholds());
    let store = Store::open(&cli.data, config.clone()).expect("open");
    let key = store.create(NewKey::new("k")).expect("create").key.expose().to_string();
    let home: IpAddr = "192.0.2.1".parse().expect("ip");
    for day in 0..8 {
        clock.set(T0 + day * DAY);
        store.verify_with(&VerifyRequest::new(&key).ip(home)).expect("verify");
        assert_eq!(store.check_anomalies().expect("check"), 0);
    }
    store.close().expect("close");
    // The key's networks were settled before the close: after it, a new one is noticed
    // at once, not a week later.
    let store = Store::open(&cli.data, config).expect("open");
    clock.set(T0 + 8 * DAY + HOUR);
    let away: IpAddr = "203.0.113.1".parse().expect("ip");
    store.verify_with(&VerifyRequest::new(&key).ip(away)).expect("verify");
    assert_eq!(store.check_anomalies().expect("check"), 1);
    assert_eq!(anomalies(&store)[0]["details"]["reason"], "new_network");
    store.close().expect("close");
}
