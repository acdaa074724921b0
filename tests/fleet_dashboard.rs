//! The customers' dashboard's sessions on a fleet (hosts of one PostgreSQL): a link minted
//! on one host is redeemed on any, once (two hosts racing for it: exactly one wins), the
//! session it starts works on every host, a change made through it on any host is the
//! owner's and logged once, and a session revoked on one host acts on none.

#![expect(
    clippy::expect_used,
    reason = "a test fails by panicking: unwrap, expect and indexing are its assertions"
)]

#[path = "common/pg.rs"]
mod pg;

use std::path::Path;
use std::time::{Duration, Instant};

use credstore::dashboard::LinkRequest;
use credstore::{Config, Error, NewKey, OwnerUpdate, Pepper, StateError, Store};

fn host(dir: &Path, url: &str, name: &str) -> Store {
    let config = Config::new()
        .pepper(Pepper::from_bytes([7; 32]))
        .flush_interval(Duration::from_millis(100))
        .fleet(url, name);
    Store::init(dir.join(name), config).expect("init host")
}

/// Waits (at most 10 s, a liveness bound, not a timing claim) until `done` holds.
fn eventually(what: &str, done: impl Fn() -> bool) {
    let deadline = Instant::now() + Duration::from_secs(10);
    while !done() {
        assert!(Instant::now() < deadline, "{what}: not after 10 s");
        std::thread::sleep(Duration::from_millis(5));
    }
}

#[test]
fn a_link_works_once_on_any_host_and_its_session_on_every_host() {
    let Some(server) = pg::PgServer::start() else { return };
    let dir = tempfile::tempdir().expect("temp dir");
    let url = server.url();
    let a = host(dir.path(), &url, "a");
    let b = host(dir.path(), &url, "b");
    let c = host(dir.path(), &url, "c");
    a.set_owner("acme", OwnerUpdate::default()).expect("owner");

    // Minted on a, redeemed on b at once: b plans on the fleet's latest state.
    let link = a.mint_dashboard_link(&LinkRequest::new("acme")).expect("mint");
    let started = b.redeem_dashboard_link(link.token.expose()).expect("redeem on b");
    for other in [&a, &c] {
        let again = other.redeem_dashboard_link(link.token.expose());
        assert!(
            matches!(again, Err(Error::State(StateError::DashboardLinkUsed))),
            "{again:?}"
        );
    }

    // The session works on every host once its start reaches it, and acts on any.
    let token = started.token.expose().to_string();
    eventually("the session reaches c", || c.dashboard_session(&token).is_ok());
    eventually("the session reaches a", || a.dashboard_session(&token).is_ok());
    let made = c
        .session_create(&token, NewKey::new("made on c"), Some(10))
        .expect("create on c");
    eventually("the key reaches a", || a.get(&made.record.id).is_ok());
    assert_eq!(a.get(&made.record.id).expect("key").owner.as_deref(), Some("acme"));

    // Revoked on a: refused on c at once (c's change is planned on the fleet's state).
    a.revoke_dashboard_session(&started.session.id).expect("revoke on a");
    let refused = c.session_create(&token, NewKey::new("too late"), None);
    assert!(
        matches!(refused, Err(Error::State(StateError::UnknownDashboardSession))),
        "{refused:?}"
    );
    eventually("the revocation reaches b", || b.dashboard_session(&token).is_err());

    // Two hosts redeem one link at the same moment: exactly one session starts.
    for round in 0..5 {
        let link = c.mint_dashboard_link(&LinkRequest::new("acme")).expect("mint");
        let token = link.token.expose().to_string();
        let results = std::thread::scope(|s| {
            let on_a = s.spawn(|| a.redeem_dashboard_link(&token).is_ok());
            let on_b = s.spawn(|| b.redeem_dashboard_link(&token).is_ok());
            [on_a.join().expect("a"), on_b.join().expect("b")]
        });
        assert_eq!(
            results.iter().filter(|ok| **ok).count(),
            1,
            "round {round}: {results:?}"
        );
    }

    // Every host's log holds each change through the session once, with its actor.
    let changes = |s: &Store| {
        s.events(&credstore::EventFilter::default())
            .expect("events")
            .into_iter()
            .filter(|(_, e)| e.kind_name() == "dashboard.change")
            .count()
    };
    eventually("every host has the one change", || {
        changes(&a) == 1 && changes(&b) == 1 && changes(&c) == 1
    });
    for store in [a, b, c] {
        store.close().expect("close");
    }
}
