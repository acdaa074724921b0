//! The fan-out's two paths against a real PostgreSQL: the listener (`LISTEN
//! credstore_log`) hears every append and a host catches up on an announcement alone; and
//! the poll of the fleet's head by sequence number alone carries a change to a host that
//! does not listen. Neither test measures time: each waits, at most a liveness bound, for
//! what must happen, with the other path shut off.

#![expect(
    clippy::expect_used,
    reason = "a test fails by panicking: unwrap, expect and indexing are its assertions"
)]

#[path = "common/pg.rs"]
mod pg;

use std::path::Path;
use std::time::{Duration, Instant};

use credstore::fleet::{Appended, Fleet, ListenState, Listener};
use credstore::{Code, Config, NewKey, Pepper, Store, UseLog};

/// So long that no test ever reaches it: the poll is shut off.
const NEVER: Duration = Duration::from_secs(24 * 3600);

/// A host named `name` whose replica is `dir/name`. It records no uses, so its commit
/// thread never writes (and so never catches up before a write): only the fan-out under
/// test can bring it another host's change.
fn host(dir: &Path, url: &str, name: &str, poll: Duration, listen: bool) -> Store {
    let config = Config::new()
        .pepper(Pepper::from_bytes([7; 32]))
        .use_log(UseLog::Off)
        .fleet(url, name)
        .fleet_fan_out(poll, listen);
    Store::init(dir.join(name), config).expect("init host")
}

/// Waits (at most 10 s, a liveness bound, not a timing claim) until `done`.
fn eventually(what: &str, mut done: impl FnMut() -> bool) {
    let deadline = Instant::now() + Duration::from_secs(10);
    while !done() {
        assert!(Instant::now() < deadline, "not {what} after 10 s");
        std::thread::sleep(Duration::from_millis(5));
    }
}

fn listening(listener: &Listener) -> bool {
    listener.state() == ListenState::Listening
}

#[test]
fn the_listener_hears_every_append_and_listens_again_after_a_restart() {
    let Some(server) = pg::PgServer::start() else { return };
    let url = server.url();
    let fleet = Fleet::connect(&url).expect("connect");
    let info = fleet.init_new().expect("init");
    let listener = fleet.listen().expect("listen");
    eventually("listening", || listening(&listener));

    let (mut seq, mut hash) = (info.head_seq, info.head_hash);
    for n in 1..=5usize {
        let payloads = vec![vec![1u8; 8]; n];
        match fleet.append(seq, hash, &payloads, "writer").expect("append") {
            Appended::Committed { seq: s, hash: h } => (seq, hash) = (s, h),
            Appended::Conflict => panic!("no other writer"),
        }
        eventually("announced", || listener.notified() == seq);
    }

    // The connection drops with the server; the listener connects again by itself, and
    // what was appended while it was away is covered by the head it reads on listening.
    server.kill();
    eventually("connecting again", || !listening(&listener));
    server.restart();
    let Appended::Committed { seq: after, .. } = append_when_up(&fleet, seq, hash) else {
        panic!("no other writer");
    };
    eventually("listening again", || listening(&listener));
    eventually("the append made while away, announced", || listener.notified() == after);
}

/// Appends one record once the server answers again.
fn append_when_up(fleet: &Fleet, seq: u64, hash: [u8; 32]) -> Appended {
    let deadline = Instant::now() + Duration::from_secs(15);
    loop {
        match fleet.append(seq, hash, &[vec![2u8; 8]], "writer") {
            Ok(appended) => return appended,
            Err(e) => assert!(Instant::now() < deadline, "the server never came back: {e}"),
        }
        std::thread::sleep(Duration::from_millis(20));
    }
}

#[test]
fn a_listener_that_cannot_connect_keeps_trying_and_stops_when_dropped() {
    let dir = tempfile::tempdir().expect("temp dir");
    // A socket directory with no server in it.
    let url = format!(
        "postgresql://credstore@localhost/postgres?host={}",
        dir.path().display()
    );
    let fleet = Fleet::connect(&url).expect("connect (nothing is reached yet)");
    let listener = fleet.listen().expect("listen");
    std::thread::sleep(Duration::from_millis(300));
    assert_eq!(listener.state(), ListenState::Connecting);
    assert_eq!(listener.notified(), 0);
    let debug = format!("{listener:?}");
    assert!(!debug.contains(&*dir.path().to_string_lossy()), "{debug}");
    drop(listener);
}

#[test]
fn a_host_catches_up_on_an_announcement_alone() {
    let Some(server) = pg::PgServer::start() else { return };
    let dir = tempfile::tempdir().expect("temp dir");
    let url = server.url();
    let a = host(dir.path(), &url, "a", NEVER, false);
    // B reads the fleet's head only at open: after that, only announcements reach it.
    let b = host(dir.path(), &url, "b", NEVER, true);

    let key = a.create(NewKey::new("announced")).expect("create on a");
    let secret = key.key.expose().to_string();
    eventually("valid on b", || b.verify(&secret).expect("verify").code == Code::Valid);
    a.revoke(&key.record.id, None).expect("revoke on a");
    eventually("revoked on b", || {
        b.verify(&secret).expect("verify").code == Code::Revoked
    });
    a.close().expect("close");
    b.close().expect("close");
}

#[test]
fn without_a_listener_the_poll_alone_carries_a_revocation() {
    let Some(server) = pg::PgServer::start() else { return };
    let dir = tempfile::tempdir().expect("temp dir");
    let url = server.url();
    let a = host(dir.path(), &url, "a", NEVER, false);
    let b = host(dir.path(), &url, "b", Duration::from_millis(20), false);

    let key = a.create(NewKey::new("polled")).expect("create on a");
    let secret = key.key.expose().to_string();
    eventually("valid on b", || b.verify(&secret).expect("verify").code == Code::Valid);
    a.revoke(&key.record.id, None).expect("revoke on a");
    eventually("revoked on b", || {
        b.verify(&secret).expect("verify").code == Code::Revoked
    });
    a.close().expect("close");
    b.close().expect("close");
}
