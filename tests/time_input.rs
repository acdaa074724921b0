//! Times as the CLI and the sidecar take them (DESIGN.md's CLI contract): an expiry is
//! held to one latest time whether it is given as a time or as a lifetime, and `audit
//! --since` / `--until` take a time, a date or a duration before now.

#![expect(
    clippy::expect_used,
    reason = "a test fails by panicking: unwrap, expect and indexing are its assertions"
)]

use credstore::record::{LATEST_EXPIRY, LATEST_EXPIRY_MS};
use credstore::{Error, Expiry, InputError, KeyUpdate, NewKey};
use serde_json::json;

mod common;
use common::{Cli, Fixture, Sidecar, http};

const TOO_LATE: &str = "expiry later than the latest supported, 9999-01-01T00:00:00Z";

fn event_count(cli: &Cli) -> usize {
    cli.json(&["audit", "--json"]).as_array().expect("array").len()
}

fn ms(text: &str) -> i64 {
    text.parse::<jiff::Timestamp>()
        .unwrap_or_else(|e| panic!("{text:?} is not RFC 3339: {e}"))
        .as_millisecond()
}

/// Issue 17, item 9: `--expires-in 15000000w` was accepted (and shown as raw
/// milliseconds), `--expires-at 9999-12-31T23:59:59Z` refused as unreadable.
#[test]
fn an_expiry_as_a_lifetime_or_a_time_is_held_to_one_bound_with_one_message() {
    let cli = Cli::init();
    let created = cli.json(&["create", "--name", "k", "--json"]);
    let id = created["id"].as_str().expect("id");
    let events = event_count(&cli);
    let too_late: [&[&str]; 4] = [
        &["--expires-in", "15000000w"],
        &["--expires-at", "9999-12-31T23:59:59Z"],
        &["--expires-at", "9999-01-01T00:00:00.001Z"],
        &["--expires-in", "400000000d"],
    ];
    for expiry in too_late {
        for command in [&["create", "--name", "x"][..], &["update", id][..]] {
            let mut args = command.to_vec();
            args.extend_from_slice(expiry);
            let run = cli.run(&args);
            assert_eq!(run.code, Some(2), "{args:?}: {run:?}");
            assert!(run.stderr.contains(TOO_LATE), "{args:?}: {run:?}");
            assert!(run.stderr.contains("leave the expiry out"), "{run:?}");
        }
    }
    assert_eq!(event_count(&cli), events, "nothing was written");
    // The bound itself is accepted, as a time and as a lifetime, and shown as a time.
    let at = cli.json(&["create", "--name", "at", "--expires-at", LATEST_EXPIRY, "--json"]);
    assert_eq!(
        ms(at["expires_at"].as_str().expect("expires_at")),
        LATEST_EXPIRY_MS,
        "{at}"
    );
    let lifetime = cli.json(&["create", "--name", "in", "--expires-in", "52000w", "--json"]);
    let expires = ms(lifetime["expires_at"].as_str().expect("an RFC 3339 expiry"));
    assert!(expires < LATEST_EXPIRY_MS, "{lifetime}");
    let updated = cli.json(&["update", id, "--expires-at", LATEST_EXPIRY, "--json"]);
    assert_eq!(
        ms(updated["expires_at"].as_str().expect("expires_at")),
        LATEST_EXPIRY_MS
    );
    // What is unreadable is still said to be.
    let run = cli.run(&["create", "--name", "x", "--expires-at", "9999-12-32T00:00:00Z"]);
    assert_eq!(run.code, Some(2));
    assert!(run.stderr.contains("invalid time"), "{run:?}");
}

#[test]
fn the_library_and_the_sidecar_hold_an_expiry_to_the_same_bound() {
    let fx = Fixture::new();
    let store = fx.init();
    for expiry in [
        Expiry::In(15_000_000 * 7 * 86_400_000),
        Expiry::At(LATEST_EXPIRY_MS + 1),
    ] {
        match store.create(NewKey::new("x").expires(expiry)) {
            Err(Error::Input(InputError::ExpiryTooLate)) => {}
            other => panic!("{expiry:?}: expected ExpiryTooLate, got {other:?}"),
        }
    }
    let id = store.create(NewKey::new("k")).expect("create").record.id;
    let update = KeyUpdate {
        expires: Some(Some(Expiry::In(i64::MAX))),
        ..KeyUpdate::default()
    };
    assert!(matches!(
        store.update(&id, update),
        Err(Error::Input(InputError::ExpiryTooLate))
    ));
    store.close().expect("close");

    let cli = Cli::init();
    let admin = cli.json(&["create", "--name", "admin", "--role", "admin", "--json"]);
    let auth = format!("Bearer {}", admin["key"].as_str().expect("key"));
    let sidecar = Sidecar::start(&cli);
    for body in [
        json!({"name": "x", "expires_in": "15000000w"}),
        json!({"name": "x", "expires_at": "9999-12-31T23:59:59Z"}),
    ] {
        let reply = http(sidecar.addr, "POST", "/v1/api-keys", Some(&auth), Some(&body)).expect("answer");
        assert_eq!(reply.status, 400, "{reply:?}");
        let message = reply.body["error"]["message"].as_str().expect("message");
        assert!(message.contains(TOO_LATE), "{reply:?}");
    }
    let (status, stderr) = sidecar.stop();
    assert!(status.success(), "{stderr}");
}

/// `audit --json` with these filters: the events' sequence numbers.
fn audit(cli: &Cli, filters: &[&str]) -> Vec<u64> {
    let mut args = vec!["audit", "--json"];
    args.extend_from_slice(filters);
    let doc = cli.json(&args);
    doc.as_array()
        .expect("array")
        .iter()
        .map(|e| e["seq"].as_u64().unwrap_or_else(|| panic!("no seq in {e}")))
        .collect()
}

/// Issue 17, item 10: `audit --since 1h` and `--since 2026-12-02` failed with "invalid
/// time or duration".
#[test]
fn audit_takes_a_time_a_date_or_a_duration_before_now() {
    let cli = Cli::init();
    cli.json(&["create", "--name", "k", "--json"]);
    let all = audit(&cli, &[]);
    assert!(all.len() >= 2, "{all:?}");
    let today = jiff::Timestamp::now().strftime("%Y-%m-%d").to_string();
    let tomorrow = (jiff::Timestamp::now() + jiff::SignedDuration::from_hours(24))
        .strftime("%Y-%m-%d")
        .to_string();
    let in_an_hour = (jiff::Timestamp::now() + jiff::SignedDuration::from_hours(1)).to_string();
    // Everything happened within the hour, today (unless the test straddles midnight).
    assert_eq!(audit(&cli, &["--since", "1h"]), all);
    assert_eq!(audit(&cli, &["--until", "1h"]), Vec::<u64>::new());
    assert_eq!(audit(&cli, &["--since", "2h", "--until", "1h"]), Vec::<u64>::new());
    assert_eq!(audit(&cli, &["--since", "2020-01-01"]), all);
    assert_eq!(audit(&cli, &["--until", &tomorrow]), all);
    assert_eq!(audit(&cli, &["--since", &tomorrow]), Vec::<u64>::new());
    assert_eq!(
        audit(&cli, &["--since", "2020-01-01T00:00:00Z", "--until", &in_an_hour]),
        all
    );
    assert!(audit(&cli, &["--since", &today]).len() <= all.len());
    assert_eq!(
        audit(&cli, &["--since", "2026-12-02"]).len(),
        audit(&cli, &["--since", "2026-12-02T00:00:00Z"]).len()
    );

    for bad in ["yesterday", "2026-13-01", "1.5h", "2026-12-02T10:00"] {
        let run = cli.run(&["audit", "--since", bad]);
        assert_eq!(run.code, Some(2), "{bad}: {run:?}");
        assert!(
            run.stderr.contains("RFC 3339") && run.stderr.contains("a date") && run.stderr.contains("a duration"),
            "{run:?}"
        );
    }

    // The sidecar's audit takes the same forms.
    let admin = cli.json(&["create", "--name", "admin", "--role", "admin", "--json"]);
    let auth = format!("Bearer {}", admin["key"].as_str().expect("key"));
    let sidecar = Sidecar::start(&cli);
    let count = |query: &str| -> usize {
        let reply = http(sidecar.addr, "GET", &format!("/v1/audit{query}"), Some(&auth), None).expect("answer");
        assert_eq!(reply.status, 200, "{query}: {reply:?}");
        reply.body["data"].as_array().map(Vec::len).expect("array")
    };
    let everything = count("");
    assert!(everything > all.len());
    assert_eq!(count("?since=1h"), everything);
    assert_eq!(count("?since=2020-01-01"), everything);
    assert_eq!(count(&format!("?since={tomorrow}")), 0);
    let reply = http(sidecar.addr, "GET", "/v1/audit?since=yesterday", Some(&auth), None).expect("answer");
    assert_eq!(reply.status, 400, "{reply:?}");
    let (status, stderr) = sidecar.stop();
    assert!(status.success(), "{stderr}");
}
