//! Use events: every verification outcome recorded without slowing verify down, in the
//! three modes; and SIGKILL during heavy use logging never costs a state change.

#![expect(
    clippy::unwrap_used,
    reason = "a test fails by panicking: unwrap, expect and indexing are its assertions"
)]

use std::io::{BufRead, BufReader, Write};
use std::process::{Command, Stdio};
use std::sync::Arc;
use std::time::{Duration, Instant};

use credstore::{Code, Config, EventKind, ManualClock, NewKey, Pepper, Status, Store, UseLog, VerifyRequest};

const T0: i64 = 1_800_000_000_000;

fn config(mode: UseLog) -> Config {
    Config::new()
        .pepper(Pepper::from_bytes([5; 32]))
        .clock(Arc::new(ManualClock::new(T0)))
        .use_log(mode)
        .flush_interval(Duration::from_millis(20))
}

fn uses(store: &Store) -> Vec<EventKind> {
    store
        .events(&Default::default())
        .unwrap()
        .into_iter()
        .map(|(_, e)| e.kind)
        .filter(|k| matches!(k, EventKind::KeyUsed { .. } | EventKind::KeyUseSummary { .. }))
        .collect()
}

fn wait_for(store: &Store, n: usize) -> Vec<EventKind> {
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let got = uses(store);
        if got.len() >= n || Instant::now() > deadline {
            return got;
        }
        std::thread::sleep(Duration::from_millis(10));
    }
}

/// `Store::find_by_key` (behind `credstore revoke --key -`) finds a key by its secret,
/// whatever its status, and is no use of it: no use event, no last-used time.
#[test]
fn finding_a_key_by_its_secret_is_not_a_use() {
    let tmp = tempfile::tempdir().unwrap();
    let store = Store::init(tmp.path().join("d"), config(UseLog::Every)).unwrap();
    let k = store.create(NewKey::new("leaked")).unwrap();
    let found = store.find_by_key(k.key.expose()).unwrap().unwrap();
    assert_eq!(found.record.id, k.record.id);
    assert_eq!(found.last_used_at, None);
    store.revoke(&k.record.id, None).unwrap();
    let found = store.find_by_key(k.key.expose()).unwrap().unwrap();
    assert_eq!(found.status, Status::Revoked);
    assert!(store.find_by_key("sk_live_nonsense").unwrap().is_none());
    let elsewhere = Store::init(tmp.path().join("e"), config(UseLog::Every)).unwrap();
    let stranger = elsewhere.create(NewKey::new("stranger")).unwrap();
    assert!(store.find_by_key(stranger.key.expose()).unwrap().is_none());
    // One use after the lookups, as a marker: it is the only use recorded.
    assert_eq!(store.verify("sk_live_nonsense").unwrap().code, Code::Malformed);
    wait_for(&store, 1);
    std::thread::sleep(Duration::from_millis(100));
    assert_eq!(uses(&store).len(), 1, "{:?}", uses(&store));
    assert_eq!(store.get(&k.record.id).unwrap().last_used_at, None);
}

#[test]
fn every_request_is_recorded_with_its_outcome_ip_and_endpoint() {
    let tmp = tempfile::tempdir().unwrap();
    let store = Store::init(tmp.path().join("d"), config(UseLog::Every)).unwrap();
    let k = store.create(NewKey::new("k")).unwrap();
    let ip = "203.0.113.9".parse().unwrap();
    let req = VerifyRequest::new(k.key.expose()).ip(ip).endpoint("GET", "/v1/things");
    assert!(store.verify_with(&req).unwrap().is_valid());
    assert_eq!(store.verify("sk_live_nonsense").unwrap().code, Code::Malformed);
    store.revoke(&k.record.id, None).unwrap();
    assert_eq!(store.verify(k.key.expose()).unwrap().code, Code::Revoked);
    let got = wait_for(&store, 3);
    assert_eq!(got.len(), 3, "{got:?}");
    let keyed: Vec<&EventKind> = got.iter().filter(|k| matches!(k, EventKind::KeyUsed { .. })).collect();
    let EventKind::KeyUsed {
        id,
        code,
        ip: got_ip,
        endpoint,
    } = keyed[0]
    else {
        panic!("{got:?}")
    };
    assert_eq!(
        (id.as_ref(), *code, *got_ip),
        (Some(&k.record.id), Code::Valid, Some(ip))
    );
    assert_eq!(endpoint.as_deref(), Some("GET /v1/things"));
    assert!(matches!(
        keyed[1],
        EventKind::KeyUsed {
            code: Code::Revoked,
            ..
        }
    ));
    // A presented key that matched none is counted in a summary, not logged per request.
    let keyless = got
        .iter()
        .find_map(|k| match k {
            EventKind::KeyUseSummary { id: None, summary } => Some(summary),
            _ => None,
        })
        .expect("a keyless summary");
    assert_eq!(keyless.counts.get(&Code::Malformed), Some(&1));
    // The events carry no key and no tag.
    for (seq, e) in store.events(&Default::default()).unwrap() {
        let text = format!("{} {:?}", e.to_json(seq), e);
        assert!(!text.contains(k.key.expose()));
    }
    // Uses are found by key.
    let by_key = store
        .events(&credstore::EventFilter {
            key: Some(k.record.id.clone()),
            kind: Some("key.used".into()),
            ..Default::default()
        })
        .unwrap();
    assert_eq!(by_key.len(), 2);
}

/// Every-request mode writes a drain's uses as few `key.uses` records, and reading the log
/// gives them back as one `key.used` event per request, in order, each at its own time,
/// found by key, kind and time range.
#[test]
fn uses_are_written_in_batches_and_read_back_one_by_one() {
    let tmp = tempfile::tempdir().unwrap();
    let clock = Arc::new(ManualClock::new(T0));
    let cfg = config(UseLog::Every)
        .clock(clock.clone())
        .flush_interval(Duration::from_secs(60));
    let store = Store::init(tmp.path().join("d"), cfg).unwrap();
    let a = store.create(NewKey::new("a")).unwrap();
    let b = store.create(NewKey::new("b")).unwrap();
    for i in 0..300 {
        let key = if i % 3 == 0 { &b } else { &a };
        let path = format!("/v1/things/{i}");
        assert!(
            store
                .verify_with(&VerifyRequest::new(key.key.expose()).endpoint("GET", &path))
                .unwrap()
                .is_valid()
        );
        clock.advance(10);
    }
    // Close writes what is pending (the interval is a minute).
    store.close().unwrap();
    let store = Store::open(tmp.path().join("d"), config(UseLog::Every).clock(clock.clone())).unwrap();
    let used = |filter: &credstore::EventFilter| -> Vec<(u64, credstore::Event)> {
        store
            .events(filter)
            .unwrap()
            .into_iter()
            .filter(|(_, e)| matches!(e.kind, EventKind::KeyUsed { .. }))
            .collect()
    };
    let all = used(&Default::default());
    assert_eq!(all.len(), 300);
    let records: std::collections::BTreeSet<u64> = all.iter().map(|(seq, _)| *seq).collect();
    assert!(records.len() <= 2, "300 uses in {} records", records.len());
    for (i, (_, e)) in all.iter().enumerate() {
        assert_eq!(e.at, T0 + 10 * i as i64, "use {i} keeps its own time");
        let EventKind::KeyUsed { id, endpoint, .. } = &e.kind else {
            unreachable!()
        };
        let key = if i % 3 == 0 { &b } else { &a };
        assert_eq!(id.as_ref(), Some(&key.record.id));
        assert_eq!(endpoint.as_deref(), Some(format!("GET /v1/things/{i}").as_str()));
    }
    let by_key = used(&credstore::EventFilter {
        key: Some(b.record.id.clone()),
        ..Default::default()
    });
    assert_eq!(by_key.len(), 100);
    let by_kind = store
        .events(&credstore::EventFilter {
            kind: Some("key.used".into()),
            ..Default::default()
        })
        .unwrap();
    assert_eq!(by_kind.len(), 300);
    // A range that starts inside the batch: the batch's record is timed by its first use.
    let ranged = used(&credstore::EventFilter {
        since: Some(T0 + 1_000),
        until: Some(T0 + 2_000),
        ..Default::default()
    });
    assert_eq!(ranged.len(), 100);
    assert!(ranged.iter().all(|(_, e)| (T0 + 1_000..T0 + 2_000).contains(&e.at)));
    let newest = used(&credstore::EventFilter {
        newest_first: true,
        ..Default::default()
    });
    assert_eq!(newest.first().map(|(_, e)| e.at), Some(T0 + 2_990));
    assert!(
        newest.windows(2).all(|w| w[0].1.at >= w[1].1.at),
        "newest first, inside a record too"
    );
    assert!(store.verify_log().is_ok(), "cross-references of batched uses check out");
}

/// The queue is emptied every few milliseconds, so a burst far larger than it, within one
/// flush interval, is recorded in full.
#[test]
fn a_burst_larger_than_the_queue_is_recorded_in_full() {
    let tmp = tempfile::tempdir().unwrap();
    let cfg = config(UseLog::Every).flush_interval(Duration::from_secs(5));
    let store = Store::init(tmp.path().join("d"), cfg.clone()).unwrap();
    let k = store.create(NewKey::new("k")).unwrap();
    let n = 100_000;
    let started = Instant::now();
    for _ in 0..n {
        assert!(store.verify(k.key.expose()).unwrap().is_valid());
    }
    let took = started.elapsed();
    store.close().unwrap();
    let store = Store::open(tmp.path().join("d"), cfg).unwrap();
    let events = store.events(&Default::default()).unwrap();
    let used = events
        .iter()
        .filter(|(_, e)| matches!(e.kind, EventKind::KeyUsed { .. }))
        .count();
    let dropped: u64 = events
        .iter()
        .filter_map(|(_, e)| match e.kind {
            EventKind::UsesDropped { count } => Some(count),
            _ => None,
        })
        .sum();
    assert_eq!((used, dropped), (n, 0), "{n} verifies in {took:?}");
}

/// Each verifying thread hands off on a channel of its own: uses from many threads, some
/// of which exit before the drain, are all recorded, once each.
#[test]
fn uses_from_many_threads_including_exited_ones_are_all_recorded() {
    let tmp = tempfile::tempdir().unwrap();
    let cfg = config(UseLog::Every).flush_interval(Duration::from_secs(5));
    let store = Store::init(tmp.path().join("d"), cfg.clone()).unwrap();
    let keys: Vec<_> = (0..8)
        .map(|i| store.create(NewKey::new(format!("k{i}"))).unwrap())
        .collect();
    std::thread::scope(|s| {
        for k in &keys {
            let store = &store;
            s.spawn(move || {
                for _ in 0..2_000 {
                    assert!(store.verify(k.key.expose()).unwrap().is_valid());
                }
            });
        }
    });
    // Every thread above has exited; one more use from this thread.
    assert!(store.verify(keys[0].key.expose()).unwrap().is_valid());
    store.close().unwrap();
    let store = Store::open(tmp.path().join("d"), cfg).unwrap();
    for (i, k) in keys.iter().enumerate() {
        let filter = credstore::EventFilter {
            key: Some(k.record.id.clone()),
            kind: Some("key.used".into()),
            ..Default::default()
        };
        let expected = if i == 0 { 2_001 } else { 2_000 };
        assert_eq!(store.events(&filter).unwrap().len(), expected, "key {i}");
    }
    let dropped = store
        .events(&credstore::EventFilter {
            kind: Some("use.dropped".into()),
            ..Default::default()
        })
        .unwrap();
    assert!(dropped.is_empty(), "{dropped:?}");
}

#[test]
fn summary_mode_counts_per_key_and_off_records_nothing() {
    let tmp = tempfile::tempdir().unwrap();
    let store = Store::init(tmp.path().join("d"), config(UseLog::Summary)).unwrap();
    let k = store.create(NewKey::new("k")).unwrap();
    for _ in 0..5 {
        assert!(store.verify(k.key.expose()).unwrap().is_valid());
    }
    store.disable(&k.record.id).unwrap();
    assert_eq!(store.verify(k.key.expose()).unwrap().code, Code::Disabled);
    store.close().unwrap();
    let store = Store::open(tmp.path().join("d"), config(UseLog::Summary)).unwrap();
    let mut valid = 0;
    let mut disabled = 0;
    for kind in uses(&store) {
        let EventKind::KeyUseSummary { id, summary } = kind else {
            panic!("summary mode wrote {kind:?}")
        };
        assert_eq!(id.as_ref(), Some(&k.record.id));
        valid += summary.counts.get(&Code::Valid).copied().unwrap_or(0);
        disabled += summary.counts.get(&Code::Disabled).copied().unwrap_or(0);
    }
    assert_eq!((valid, disabled), (5, 1));
    store.close().unwrap();

    let tmp = tempfile::tempdir().unwrap();
    let store = Store::init(tmp.path().join("d"), config(UseLog::Off)).unwrap();
    let k = store.create(NewKey::new("k")).unwrap();
    for _ in 0..5 {
        store.verify(k.key.expose()).unwrap();
    }
    store.close().unwrap();
    let store = Store::open(tmp.path().join("d"), config(UseLog::Off)).unwrap();
    assert!(uses(&store).is_empty());
}

/// Runs only as the child of `sigkill_during_heavy_use_logging_loses_no_state_change`.
#[test]
#[ignore = "the child process of sigkill_during_heavy_use_logging_loses_no_state_change"]
fn use_log_child() {
    let Ok(dir) = std::env::var("CREDSTORE_USE_CRASH_DIR") else {
        return;
    };
    let store = Arc::new(Store::open(&dir, config(UseLog::Every)).unwrap());
    let hot = store.create(NewKey::new("hot")).unwrap();
    // Two threads verify as fast as they can; the main thread creates and revokes.
    for _ in 0..2 {
        let (store, key) = (store.clone(), hot.key.expose().to_string());
        std::thread::spawn(move || {
            loop {
                let _ = store.verify(&key);
            }
        });
    }
    let out = std::io::stdout();
    loop {
        let k = store.create(NewKey::new("k")).unwrap();
        writeln!(out.lock(), "ACK create {}", k.record.id).unwrap();
        store.revoke(&k.record.id, None).unwrap();
        writeln!(out.lock(), "ACK revoke {}", k.record.id).unwrap();
        out.lock().flush().unwrap();
    }
}

#[test]
fn sigkill_during_heavy_use_logging_loses_no_state_change() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path().join("d");
    Store::init(&dir, config(UseLog::Every)).unwrap().close().unwrap();
    let mut created = Vec::new();
    let mut revoked = Vec::new();
    let mut seed = 0x2545_F491_4F6C_DD1Du64 ^ u64::from(std::process::id());
    let mut truncations = 0;
    for _ in 0..10 {
        seed ^= seed << 13;
        seed ^= seed >> 7;
        seed ^= seed << 17;
        let mut child = Command::new(std::env::current_exe().unwrap())
            .args([
                "--exact",
                "use_log_child",
                "--ignored",
                "--nocapture",
                "--test-threads=1",
            ])
            .env("CREDSTORE_USE_CRASH_DIR", &dir)
            .stdout(Stdio::piped())
            .stderr(Stdio::null())
            .spawn()
            .unwrap();
        let stdout = child.stdout.take().unwrap();
        let (first_tx, first_rx) = std::sync::mpsc::channel();
        let reader = std::thread::spawn(move || {
            let mut acks = Vec::new();
            for line in BufReader::new(stdout).lines().map_while(Result::ok) {
                if let Some(rest) = line.strip_prefix("ACK ") {
                    if acks.is_empty() {
                        let _ = first_tx.send(());
                    }
                    acks.push(rest.to_string());
                }
            }
            acks
        });
        // Kill at a random moment once the child is working (a loaded machine can take
        // seconds to start it), not before.
        let _ = first_rx.recv_timeout(Duration::from_secs(30));
        std::thread::sleep(Duration::from_millis(20 + seed % 200));
        child.kill().unwrap();
        child.wait().unwrap();
        for ack in reader.join().unwrap() {
            match ack.split_once(' ') {
                Some(("create", id)) => created.push(id.to_string()),
                Some(("revoke", id)) => revoked.push(id.to_string()),
                _ => {}
            }
        }
        let store = Store::open(&dir, config(UseLog::Every)).unwrap();
        if store.recovery_report().truncated_bytes > 0 {
            truncations += 1;
        }
        store.verify_log().unwrap();
        for id in &created {
            store.get(&credstore::KeyId::parse(id).unwrap()).unwrap();
        }
        for id in &revoked {
            let info = store.get(&credstore::KeyId::parse(id).unwrap()).unwrap();
            assert_eq!(info.status, credstore::Status::Revoked);
        }
        store.close().unwrap();
    }
    assert!(!created.is_empty(), "the child never acknowledged a create");
    let store = Store::open(&dir, config(UseLog::Every)).unwrap();
    assert!(!uses(&store).is_empty(), "no use was ever logged");
    eprintln!("torn tails truncated in {truncations} of 10 rounds");
}

#[test]
fn a_flood_of_garbage_keys_does_not_grow_the_log_per_request() {
    let tmp = tempfile::tempdir().unwrap();
    let store = Store::init(tmp.path().join("d"), config(UseLog::Every)).unwrap();
    let real = store.create(NewKey::new("k")).unwrap();
    let forged = credstore::Format::default_for(credstore::Env::Live).generate();
    for _ in 0..1_000 {
        assert_eq!(store.verify("sk_live_garbage").unwrap().code, Code::Malformed);
        assert_eq!(store.verify(forged.expose()).unwrap().code, Code::NotFound);
    }
    store.disable(&real.record.id).unwrap();
    let events = store.events(&Default::default()).unwrap();
    let summaries: Vec<_> = events
        .iter()
        .filter_map(|(_, e)| match &e.kind {
            EventKind::KeyUseSummary { id: None, summary } => Some(summary.clone()),
            _ => None,
        })
        .collect();
    let total = |code| {
        summaries
            .iter()
            .map(|s| s.counts.get(&code).copied().unwrap_or(0))
            .sum::<u64>()
    };
    assert_eq!((total(Code::Malformed), total(Code::NotFound)), (1_000, 1_000));
    assert!(events.len() < 20, "{} records for 2000 garbage requests", events.len());
}
