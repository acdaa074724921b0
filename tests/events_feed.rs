//! The change feed of the log: `Store::events_after` and `Store::wait_for_record` in
//! process, `credstore events [--after SEQ] [--follow] [--json]`, and the sidecar's
//! `GET /v1/events?after=SEQ&wait=...` long poll; each gives every event once, in order,
//! and a waiting reader wakes when a record commits.

#![expect(
    clippy::expect_used,
    reason = "a test fails by panicking: unwrap, expect and indexing are its assertions"
)]

mod common;

use std::io::{BufRead, BufReader};
use std::process::Stdio;
use std::time::{Duration, Instant};

use common::{Cli, Sidecar, http};
use credstore::{Config, NewKey, Pepper, Store};
use serde_json::Value;

fn store(dir: &std::path::Path) -> Store {
    Store::init(dir.join("s"), Config::new().pepper(Pepper::from_bytes([8; 32]))).expect("init")
}

#[test]
fn the_feed_gives_every_event_once_in_order_and_wakes_a_waiting_reader() {
    let dir = tempfile::tempdir().expect("temp dir");
    let store = store(dir.path());
    let a = store.create(NewKey::new("a")).expect("create");
    store.verify(a.key.expose()).expect("verify");
    store.revoke(&a.record.id, None).expect("revoke");
    // Everything so far, one record at a time, then nothing.
    let mut after = 0;
    let mut kinds = Vec::new();
    loop {
        let events = store.events_after(after, 1).expect("events");
        let Some((seq, _)) = events.last() else { break };
        assert!(*seq > after, "in order");
        after = *seq;
        kinds.extend(events.iter().map(|(_, e)| e.kind_name()));
    }
    assert_eq!(after, store.last_seq());
    assert_eq!(
        kinds,
        ["format.registered", "key.created", "key.used", "key.revoked"],
        "every event once"
    );
    assert!(store.events_after(after, 100).expect("events").is_empty());

    // A reader waiting at the end wakes when a record commits.
    std::thread::scope(|scope| {
        let waiter = scope.spawn(|| {
            let started = Instant::now();
            let last = store.wait_for_record(after, Duration::from_secs(20));
            (last, started.elapsed())
        });
        std::thread::sleep(Duration::from_millis(100));
        store.create(NewKey::new("b")).expect("create");
        let (last, waited) = waiter.join().expect("waiter");
        assert!(last > after, "woken by the new record");
        assert!(waited < Duration::from_secs(20), "not by the timeout");
    });
    let new = store.events_after(after, 100).expect("events");
    assert_eq!(new.len(), 1);
    assert_eq!(new[0].1.kind_name(), "key.created");
    // With nothing new, a wait ends at its timeout and says so.
    let last = store.last_seq();
    assert_eq!(store.wait_for_record(last, Duration::from_millis(50)), last);
}

#[test]
fn credstore_events_prints_the_feed_and_follows_it() {
    let cli = Cli::init();
    let all = cli.ok(&["events", "--json"]);
    let lines: Vec<Value> = all
        .stdout
        .lines()
        .map(|l| serde_json::from_str(l).expect("a JSON line"))
        .collect();
    assert_eq!(lines.len(), 2, "init's admin key: {}", all.stdout);
    assert_eq!(lines[1]["kind"], "key.created");
    let after = lines[1]["seq"].as_u64().expect("seq").to_string();
    assert_eq!(
        cli.ok(&["events", "--after", &after]).stdout,
        "",
        "nothing after the last"
    );

    // --follow prints what commits after it started.
    let mut follower = cli
        .command(&["events", "--follow", "--json", "--after", &after])
        .stdout(Stdio::piped())
        .spawn()
        .expect("spawn events --follow");
    let stdout = follower.stdout.take().expect("stdout");
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        for line in BufReader::new(stdout).lines() {
            if tx.send(line.expect("a line")).is_err() {
                break;
            }
        }
    });
    // The follower has opened the store by now: it must not hold it (the create would wait
    // for its lock for ever).
    std::thread::sleep(Duration::from_millis(500));
    cli.ok(&["create", "--name", "followed"]);
    let mut seen = Vec::new();
    while seen.len() < 2 {
        let line = rx.recv_timeout(Duration::from_secs(20)).expect("the followed events");
        seen.push(serde_json::from_str::<Value>(&line).expect("JSON"));
    }
    let _ = follower.kill();
    let _ = follower.wait();
    assert_eq!(seen[0]["kind"], "format.registered", "{seen:?}");
    assert_eq!(seen[1]["kind"], "key.created");
    assert_eq!(seen[1]["details"]["name"], "followed");
}

#[test]
fn the_sidecar_long_polls_the_feed() {
    let (cli, admin) = Cli::init_with_admin();
    let sidecar = Sidecar::start(&cli);
    let auth = format!("Bearer {admin}");
    let get = |path: &str| http(sidecar.addr, "GET", path, Some(&auth), None).expect("an answer");
    let first = get("/v1/events");
    assert_eq!(first.status, 200, "{:?}", first.body);
    assert_eq!(first.body["data"].as_array().expect("events").len(), 2);
    let cursor = first.body["next_cursor"].as_str().expect("a cursor").to_string();
    let empty = get(&format!("/v1/events?after={cursor}"));
    assert_eq!(empty.body["data"].as_array().expect("events").len(), 0);
    assert_eq!(
        empty.body["next_cursor"],
        cursor.as_str(),
        "nothing read: the same cursor"
    );

    // A long poll answers when a record commits, before its wait is over.
    std::thread::scope(|scope| {
        let poll = scope.spawn(|| {
            let started = Instant::now();
            (get(&format!("/v1/events?after={cursor}&wait=20s")), started.elapsed())
        });
        std::thread::sleep(Duration::from_millis(200));
        cli.ok(&["create", "--name", "polled"]);
        let (reply, took) = poll.join().expect("poll");
        assert_eq!(reply.status, 200, "{:?}", reply.body);
        let kinds: Vec<&str> = reply.body["data"]
            .as_array()
            .expect("events")
            .iter()
            .map(|e| e["kind"].as_str().expect("kind"))
            .collect();
        assert!(kinds.contains(&"key.created"), "{kinds:?}");
        assert!(took < Duration::from_secs(20), "woken, not timed out");
    });

    for bad in ["/v1/events?after=x", "/v1/events?wait=2h", "/v1/events?limit=0"] {
        let reply = get(bad);
        assert_eq!(reply.status, 400, "{bad}: {:?}", reply.body);
    }
    let none = http(sidecar.addr, "GET", "/v1/events", None, None).expect("an answer");
    assert_eq!(none.status, 401);
}

#[test]
fn a_subscription_gives_every_event_once_in_order_and_waits_for_new_ones() {
    let dir = tempfile::tempdir().expect("temp dir");
    let store = store(dir.path());
    let a = store.create(NewKey::new("a")).expect("create");
    store.verify(a.key.expose()).expect("verify");
    store.verify(a.key.expose()).expect("verify");
    // The uses are written with the next commit, ahead of it.
    store.create(NewKey::new("b")).expect("create");

    // From the start: each event once, in order (both uses from one `key.uses` record).
    let mut sub = store.subscribe(0);
    let mut seen = Vec::new();
    while let Some((seq, event)) = sub.next_timeout(Duration::from_millis(50)).expect("next") {
        seen.push((seq, event.kind_name()));
    }
    let kinds: Vec<&str> = seen.iter().map(|(_, k)| *k).collect();
    assert_eq!(
        kinds,
        [
            "format.registered",
            "key.created",
            "key.used",
            "key.used",
            "key.created"
        ]
    );
    assert_eq!(seen[2].0, seen[3].0, "both uses are of one record");
    assert!(seen.windows(2).all(|w| w[0].0 <= w[1].0), "in order: {seen:?}");
    assert_eq!(sub.position().seq, store.last_seq(), "at the end");

    // Waiting: an event committed by another thread arrives, through the iterator too.
    std::thread::scope(|scope| {
        scope.spawn(|| {
            std::thread::sleep(Duration::from_millis(100));
            store.revoke(&a.record.id, Some("done")).expect("revoke");
        });
        let (seq, event) = sub.next().expect("an event").expect("read");
        assert_eq!(event.kind_name(), "key.revoked");
        assert_eq!(seq, store.last_seq());
    });
    assert!(sub.next_timeout(Duration::from_millis(50)).expect("next").is_none());

    // A subscription after a record starts after it.
    let mut later = store.subscribe(seen[1].0);
    let first = later
        .next_timeout(Duration::from_millis(50))
        .expect("next")
        .expect("an event");
    assert_eq!(first.1.kind_name(), "key.used");
    // By event: after the first use of the record, the second, then the next record.
    let after_first_use = credstore::webhook::Position {
        seq: seen[2].0,
        part: 0,
    };
    let rest = store.events_from(after_first_use, 10).expect("events");
    let places: Vec<(u64, u32, &str)> = rest.iter().map(|(at, e)| (at.seq, at.part, e.kind_name())).collect();
    assert_eq!(places[..2], [(seen[2].0, 1, "key.used"), (seen[4].0, 0, "key.created")]);
}
