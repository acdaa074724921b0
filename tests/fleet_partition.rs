//! Fleet hosts cut off from PostgreSQL, against a real PostgreSQL.
//!
//! - One host partitioned alone, by a TCP proxy the test controls (`tests/common/proxy.rs`)
//!   between it and the database, first as a black hole (bytes held: every call waits for
//!   its time limit), then as a reset (connections refused: calls fail fast). Within its
//!   staleness bound the host serves from its replica (a revoke made elsewhere meanwhile is
//!   not seen: that is the bound's price); after it, a fail-closed host refuses every
//!   verify (`Error::Stale`) while a fail-open one serves on; writes on it fail with
//!   `Error::NotCommitted` naming PostgreSQL and commit nothing (at once on a reset; in a
//!   black hole after the 2 s round-trip limit, or two when a poll was waiting already);
//!   when the proxy lets traffic through again the host catches up (it sees the revoke)
//!   and writes again.
//! - PostgreSQL itself stopped as a crash stops it (`pg_ctl stop -m immediate`) under
//!   hosts running as processes (`credstore --fleet URL serve`), then started again: the
//!   hosts keep verifying, the fail-closed one refuses after its bound (the sidecar's
//!   error envelope names the bound), writes through the CLI and the management API fail
//!   with a clear error, and after the restart writes made through the CLI reach both.
//! - A busy fail-closed host behind a black hole still refuses after its bound (its commit
//!   thread, busy retrying use batches, sets the stale flag after each); uses verified
//!   during a partition reach the fleet after it heals.
//!
//! Times are printed, not asserted: the only bounds are liveness bounds (and that a host
//! does not refuse long before its bound).

#![expect(
    clippy::expect_used,
    reason = "a test fails by panicking: unwrap, expect and indexing are its assertions"
)]

#[path = "common/pg.rs"]
mod pg;

mod common;
#[path = "common/fleet.rs"]
mod fleet;
#[path = "common/proxy.rs"]
mod proxy;

use std::net::SocketAddr;
use std::time::{Duration, Instant};

use credstore::{Code, Config, CreatedKey, Error, NewKey, Pepper, Store};
use fleet::{Host, cli, cli_json, init_with_admin, ms, until, until_code};
use proxy::Proxy;

/// The partitioned hosts' staleness bound.
const BOUND: Duration = Duration::from_secs(1);
/// How long anything may take to happen before the test fails: a liveness bound.
const LIMIT: Duration = Duration::from_secs(15);

fn config(url: &str, host: &str) -> Config {
    Config::new()
        .pepper(Pepper::from_bytes([7; 32]))
        .flush_interval(Duration::from_millis(100))
        .fleet(url, host)
}

/// Waits until `check` holds for `store`'s answer to `key`, at most [`LIMIT`]; returns how
/// long that took.
#[track_caller]
fn eventually(store: &Store, key: &str, check: impl Fn(&Result<Code, Error>) -> bool) -> Duration {
    let start = Instant::now();
    loop {
        let answer = store.verify(key).map(|d| d.code);
        if check(&answer) {
            return start.elapsed();
        }
        assert!(start.elapsed() < LIMIT, "still {answer:?} after {LIMIT:?}");
        std::thread::sleep(Duration::from_millis(2));
    }
}

fn code(store: &Store, key: &str) -> Code {
    store.verify(key).expect("verify").code
}

/// How the proxy partitions the host.
#[derive(Debug, Clone, Copy)]
enum Partition {
    /// Bytes held: every call to PostgreSQL waits for its time limit.
    BlackHole,
    /// Connections shut down and refused: calls fail fast.
    Reset,
}

/// The partitioned hosts, fail closed and fail open, behind the proxy; `outside` talks to
/// PostgreSQL directly.
struct Fleet<'a> {
    proxy: &'a Proxy,
    outside: &'a Store,
    closed: &'a Store,
    open: &'a Store,
}

#[test]
fn a_partitioned_host_serves_within_its_bound_then_fails_closed_and_catches_up() {
    let Some(server) = pg::PgServer::start_tcp() else {
        return;
    };
    let dir = tempfile::tempdir().expect("temp dir");
    let proxy = Proxy::start(SocketAddr::from(([127, 0, 0, 1], server.port())));
    let direct = server.tcp_url(server.port());
    let behind = server.tcp_url(proxy.port());
    let init = |name: &str, config: Config| Store::init(dir.path().join(name), config).expect("init host");
    let outside = init("outside", config(&direct, "outside"));
    let closed = init("closed", config(&behind, "closed").fleet_staleness(BOUND, false));
    let open = init("open", config(&behind, "open").fleet_staleness(BOUND, true));
    let fleet = Fleet {
        proxy: &proxy,
        outside: &outside,
        closed: &closed,
        open: &open,
    };
    partitioned(&fleet, Partition::BlackHole);
    partitioned(&fleet, Partition::Reset);

    // Every replica ends up with the same keys and states.
    let listed = |store: &Store| -> Vec<String> {
        let mut keys: Vec<String> = store
            .list(&Default::default())
            .expect("list")
            .iter()
            .map(|k| format!("{} {} {:?}", k.record.id, k.record.name, k.status))
            .collect();
        keys.sort();
        keys
    };
    let want = listed(&outside);
    assert!(!want.iter().any(|k| k.contains("while cut off")), "{want:?}");
    let deadline = Instant::now() + LIMIT;
    while listed(&closed) != want || listed(&open) != want {
        assert!(Instant::now() < deadline, "the replicas did not converge");
        std::thread::sleep(Duration::from_millis(10));
    }
    for store in [outside, closed, open] {
        store.close().expect("close");
    }
}

/// One partition of the hosts behind the proxy, and its healing.
fn partitioned(fleet: &Fleet<'_>, how: Partition) {
    let Fleet {
        proxy,
        outside,
        closed,
        open,
    } = *fleet;
    let revoked = outside
        .create(NewKey::new(format!("revoked during a {how:?}")))
        .expect("create");
    let kept = outside
        .create(NewKey::new(format!("kept during a {how:?}")))
        .expect("create");
    let (revoked_key, kept_key) = (revoked.key.expose(), kept.key.expose());
    for store in [closed, open] {
        for key in [revoked_key, kept_key] {
            eventually(store, key, |a| matches!(a, Ok(Code::Valid)));
        }
    }

    match how {
        Partition::BlackHole => proxy.stall(),
        Partition::Reset => proxy.cut(),
    }
    let cut_at = Instant::now();
    // The rest of the fleet goes on: the key is revoked there at once.
    outside
        .revoke(&revoked.record.id, Some("leaked"))
        .expect("revoke outside");
    assert_eq!(code(outside, revoked_key), Code::Revoked);
    // Within their bound the partitioned hosts serve from their replicas, which cannot
    // know of that revoke yet.
    let stale_answer = closed.verify(revoked_key).map(|d| d.code);
    if cut_at.elapsed() < BOUND / 2 {
        assert!(matches!(stale_answer, Ok(Code::Valid)), "{stale_answer:?}");
    } else {
        println!("{how:?}: the machine was too slow to check the host within its bound");
    }
    assert_eq!(code(open, revoked_key), Code::Valid);

    // After the bound the fail-closed host refuses every verify; the fail-open one serves
    // on from its replica (the revoked key still valid there: fail open's price).
    eventually(closed, kept_key, |a| matches!(a, Err(Error::Stale)));
    let refused_after = cut_at.elapsed();
    assert!(
        refused_after >= BOUND / 2,
        "{how:?}: refused {refused_after:?} after the cut, before its bound of {BOUND:?}"
    );
    assert!(matches!(closed.verify(revoked_key), Err(Error::Stale)));
    assert_eq!(code(open, revoked_key), Code::Valid);
    assert_eq!(code(open, kept_key), Code::Valid);

    // Writes on a partitioned host fail with an error that says why, and commit nothing.
    let started = Instant::now();
    let write = closed.create(NewKey::new("written while cut off"));
    let write_failed_after = started.elapsed();
    not_committed(&write.map(|_| ()), how);
    not_committed(&open.revoke(&kept.record.id, None).map(|_| ()), how);

    proxy.restore();
    let restored_at = Instant::now();
    let closed_caught_up = eventually(closed, revoked_key, |a| matches!(a, Ok(Code::Revoked)));
    let open_caught_up = eventually(open, revoked_key, |a| matches!(a, Ok(Code::Revoked)));
    assert_eq!(
        code(closed, kept_key),
        Code::Valid,
        "the refused revoke committed nothing"
    );
    assert_eq!(
        code(outside, kept_key),
        Code::Valid,
        "the refused revoke committed nothing"
    );
    // And it writes again; the rest of the fleet sees it.
    let after: CreatedKey = closed.create(NewKey::new(format!("after a {how:?}"))).expect("create");
    eventually(outside, after.key.expose(), |a| matches!(a, Ok(Code::Valid)));
    println!(
        "{how:?}: fail-closed host refused {:.0} ms after the cut (bound {:.0} ms); a write on it failed after {:.0} ms; \
         caught up {:.0} ms (fail closed) and {:.0} ms (fail open) after the proxy let traffic through again, total {:.0} ms",
        ms(refused_after),
        ms(BOUND),
        ms(write_failed_after),
        ms(closed_caught_up),
        ms(open_caught_up),
        ms(restored_at.elapsed()),
    );
}

#[track_caller]
fn not_committed(result: &Result<(), Error>, how: Partition) {
    match result {
        Err(e @ Error::NotCommitted(why)) => {
            assert!(why.contains("PostgreSQL"), "{how:?}: {e}");
            assert!(e.to_string().contains("not committed"), "{how:?}: {e}");
        }
        other => panic!("{how:?}: a write on a partitioned host gave {other:?}"),
    }
}

#[test]
fn hosts_serve_through_a_postgres_crash_and_catch_up_after_its_restart() {
    let Some(server) = pg::PgServer::start() else { return };
    let dir = tempfile::tempdir().expect("temp dir");
    let url = server.url();
    let admin = init_with_admin(&url);
    let bound = ("CREDSTORE_FLEET_MAX_STALENESS", "1s");
    let start = |name: &str, env: &[(&str, &str)]| Host::start(&url, name, &dir.path().join(name), env);
    let closed = start("closed", &[bound]);
    let open = start("open", &[bound, ("CREDSTORE_FLEET_FAIL_OPEN", "true")]);
    let hosts = [&closed, &open];
    for host in hosts {
        host.wait_for_admin(&admin, LIMIT);
    }
    let created = |name: &str| {
        let doc = cli_json(&url, &["create", "--name", name]);
        let field = |f: &str| doc[f].as_str().expect("field").to_string();
        (field("key"), field("id"))
    };
    let (revoked_key, revoked_id) = created("revoked after the restart");
    let (kept_key, kept_id) = created("kept");
    for host in hosts {
        for key in [&revoked_key, &kept_key] {
            until_code(host, key, Code::Valid, LIMIT);
        }
    }

    server.kill();
    let killed_at = Instant::now();
    // Both keep verifying from their replicas.
    let first = closed.verify(&kept_key);
    if killed_at.elapsed() < Duration::from_millis(500) {
        assert_eq!(first, Ok(Code::Valid));
    }
    assert_eq!(open.verify(&kept_key), Ok(Code::Valid));

    // Writes fail with a clear error: through the CLI, and through a host's API.
    let run = cli(&url, &["revoke", &kept_id, "--yes"]);
    assert_eq!(run.code, Some(3), "{run:?}");
    assert!(run.stderr.contains("PostgreSQL"), "{run:?}");
    let reply = open.api("DELETE", &format!("/v1/api-keys/{kept_id}"), &admin, None);
    assert_eq!(reply.body["success"], false, "{reply:?}");
    let message = reply.body["error"]["message"].as_str().unwrap_or_default();
    assert!(
        message.contains("not committed") && message.contains("PostgreSQL"),
        "{reply:?}"
    );
    assert_eq!(
        (reply.status, &reply.body["error"]["code"]),
        (503, &serde_json::json!("NOT_COMMITTED"))
    );

    // The fail-closed host refuses after its bound, with an error that names it; the
    // fail-open host serves on.
    until(&closed, &kept_key, LIMIT, |a| {
        a.as_ref().is_err_and(|r| r.message.contains("staleness bound"))
    });
    let refused_after = killed_at.elapsed();
    let refused = closed.verify(&kept_key);
    println!("while PostgreSQL is down the fail-closed host answers {refused:?}");
    let refused = refused.expect_err("refused");
    assert_eq!((refused.status, refused.code.as_str()), (503, "STALE"), "{refused:?}");
    assert_eq!(open.verify(&kept_key), Ok(Code::Valid));
    assert_eq!(open.verify(&revoked_key), Ok(Code::Valid));

    server.restart();
    let restarted_at = Instant::now();
    // Writes made after the restart reach both hosts.
    cli_json(&url, &["revoke", &revoked_id, "--yes"]);
    let (fresh_key, _) = created("after the restart");
    let written = restarted_at.elapsed();
    let mut caught_up = Vec::new();
    for host in hosts {
        caught_up.push(until_code(host, &revoked_key, Code::Revoked, LIMIT));
        until_code(host, &fresh_key, Code::Valid, LIMIT);
        assert_eq!(
            host.verify(&kept_key),
            Ok(Code::Valid),
            "the refused revokes committed nothing"
        );
    }
    println!(
        "PostgreSQL crash: the fail-closed host refused {:.0} ms after (bound 1 s); after the restart the CLI's writes took {:.0} ms, \
         then the hosts refused the revoked key within {:.0} / {:.0} ms",
        ms(refused_after),
        ms(written),
        ms(caught_up[0]),
        ms(caught_up[1])
    );
    for host in [closed, open] {
        host.stop();
    }
}

#[test]
fn a_busy_host_behind_a_black_hole_still_fails_closed_after_its_bound() {
    let Some(server) = pg::PgServer::start_tcp() else {
        return;
    };
    let dir = tempfile::tempdir().expect("temp dir");
    let proxy = Proxy::start(SocketAddr::from(([127, 0, 0, 1], server.port())));
    let outside = Store::init(
        dir.path().join("outside"),
        config(&server.tcp_url(server.port()), "outside"),
    )
    .expect("init outside");
    let busy = Store::init(
        dir.path().join("busy"),
        config(&server.tcp_url(proxy.port()), "busy").fleet_staleness(BOUND, false),
    )
    .expect("init busy");
    let key = outside.create(NewKey::new("in use")).expect("create");
    let key = key.key.expose();
    eventually(&busy, key, |a| matches!(a, Ok(Code::Valid)));

    // The host keeps verifying (every use logged, as by default), so its commit thread
    // has uses to write whenever it looks; and a write comes in as the partition starts,
    // before the host's next poll of the fleet's head. (Twice: when the poll comes first
    // the host does refuse, so one round alone may pass by luck.)
    for round in 0..2 {
        let go = std::sync::Barrier::new(2);
        let limit = Duration::from_secs(10);
        let (refused_after, written) = std::thread::scope(|scope| {
            let writer = scope.spawn(|| {
                go.wait();
                busy.create(NewKey::new("written as the partition starts")).map(|_| ())
            });
            proxy.stall();
            go.wait();
            let cut_at = Instant::now();
            let refused_after = loop {
                if matches!(busy.verify(key), Err(Error::Stale)) {
                    break cut_at.elapsed();
                }
                assert!(
                    cut_at.elapsed() < limit,
                    "round {round}: a busy fail-closed host still serves {limit:?} after the partition began, \
                     past its bound of {BOUND:?}"
                );
                std::thread::sleep(Duration::from_millis(1));
            };
            (refused_after, writer.join().expect("writer"))
        });
        not_committed(&written, Partition::BlackHole);
        println!(
            "round {round}: busy host behind a black hole refused {:.0} ms after the cut",
            ms(refused_after)
        );
        proxy.restore();
        eventually(&busy, key, |a| matches!(a, Ok(Code::Valid)));
    }
    for store in [outside, busy] {
        store.close().expect("close");
    }
}

#[test]
fn uses_on_a_partitioned_host_reach_the_fleet_after_it_heals() {
    let Some(server) = pg::PgServer::start_tcp() else {
        return;
    };
    let dir = tempfile::tempdir().expect("temp dir");
    let proxy = Proxy::start(SocketAddr::from(([127, 0, 0, 1], server.port())));
    let outside = Store::init(
        dir.path().join("outside"),
        config(&server.tcp_url(server.port()), "outside"),
    )
    .expect("init outside");
    let host = Store::init(
        dir.path().join("host"),
        config(&server.tcp_url(proxy.port()), "host").fleet_staleness(BOUND, true),
    )
    .expect("init host");
    let key = outside.create(NewKey::new("in use")).expect("create");
    eventually(&host, key.key.expose(), |a| matches!(a, Ok(Code::Valid)));
    let uses = |store: &Store| {
        let filter = credstore::EventFilter {
            key: Some(key.record.id.clone()),
            kind: Some("key.used".into()),
            ..Default::default()
        };
        store.events(&filter).expect("events").len()
    };
    // The uses so far reach the fleet (every flush interval, 100 ms here).
    let deadline = Instant::now() + LIMIT;
    let before = loop {
        let (here, there) = (uses(&host), uses(&outside));
        if here > 0 && here == there {
            break here;
        }
        assert!(
            Instant::now() < deadline,
            "uses never reached the fleet: {here} here, {there} there"
        );
        std::thread::sleep(Duration::from_millis(50));
    };

    proxy.cut();
    const DURING: usize = 20;
    for _ in 0..DURING {
        assert_eq!(code(&host, key.key.expose()), Code::Valid, "fail open");
    }
    // Several flush intervals pass while the host cannot write them.
    std::thread::sleep(Duration::from_millis(500));
    proxy.restore();
    let deadline = Instant::now() + LIMIT;
    loop {
        let (here, there) = (uses(&host), uses(&outside));
        if here == before + DURING && there == here {
            break;
        }
        let dropped = |store: &Store| {
            let filter = credstore::EventFilter {
                kind: Some("use.dropped".into()),
                ..Default::default()
            };
            store.events(&filter).expect("events").len()
        };
        assert!(
            Instant::now() < deadline,
            "of {DURING} uses made during the partition, {} reached the host's log and {} the fleet's after it healed \
             ({} use.dropped records)",
            here.saturating_sub(before),
            there.saturating_sub(before),
            dropped(&outside)
        );
        std::thread::sleep(Duration::from_millis(50));
    }
    for store in [outside, host] {
        store.close().expect("close");
    }
}
