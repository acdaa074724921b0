//! `POST /v1/leaks` against the real `credstore serve` (issue 18 item 6, DESIGN.md's
//! contract): a secret scanner's list of `{token, type, url, source}` is answered per
//! token with `{token_raw, token_type, label}`; a live key is revoked at once and never
//! verifies again; revoked, unknown and malformed tokens are `false_positive` in an answer
//! of the same shape; each report of a key is a `key.leaked` event without the token; the
//! endpoint is rate limited per address (429), and an oversize or malformed body is
//! refused and changes nothing.

#![expect(
    clippy::expect_used,
    clippy::indexing_slicing,
    reason = "a test fails by panicking: unwrap, expect and indexing are its assertions"
)]

mod common;

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::time::Duration;

use common::{Cli, Sidecar};
use serde_json::{Value, json};

/// A key created with the CLI: (id, key).
fn create(cli: &Cli, name: &str) -> (String, String) {
    let v = cli.json(&["create", "--name", name, "--json"]);
    (
        v["id"].as_str().expect("id").to_string(),
        v["key"].as_str().expect("key").to_string(),
    )
}

/// One POST with a raw body; the status, the head (lower-cased) and the body as JSON.
fn post(addr: SocketAddr, path: &str, body: &[u8]) -> (u16, String, Value) {
    let mut stream = TcpStream::connect_timeout(&addr, Duration::from_secs(5)).expect("connect");
    stream.set_read_timeout(Some(Duration::from_secs(20))).expect("timeout");
    let head = format!(
        "POST {path} HTTP/1.1\r\nHost: localhost\r\nConnection: close\r\nContent-Type: application/json\r\nContent-Length: {}\r\n\r\n",
        body.len()
    );
    stream.write_all(head.as_bytes()).expect("write head");
    // The server may answer (413) and close before it has read all of a large body.
    let _ = stream.write_all(body);
    let mut raw = Vec::new();
    let _ = stream.read_to_end(&mut raw);
    let text = String::from_utf8(raw).expect("utf-8 answer");
    let (head, payload) = text.split_once("\r\n\r\n").expect("a whole answer");
    let status = head
        .split_whitespace()
        .nth(1)
        .and_then(|s| s.parse().ok())
        .expect("status");
    let body = serde_json::from_str(payload).unwrap_or_else(|e| panic!("{e}: {payload:?}"));
    (status, head.to_lowercase(), body)
}

fn report(tokens: &[&str]) -> Vec<u8> {
    let items: Vec<Value> = tokens
        .iter()
        .map(|t| json!({"token": t, "type": "credstore_api_key", "url": "https://github.com/acme/app/blob/main/.env", "source": "content"}))
        .collect();
    serde_json::to_vec(&items).expect("json")
}

fn code(addr: SocketAddr, key: &str) -> String {
    let (status, _, body) = post(
        addr,
        "/v1/keys.verify",
        json!({"key": key, "cost": 0}).to_string().as_bytes(),
    );
    assert_eq!(status, 200, "{body}");
    body["data"]["code"].as_str().expect("code").to_string()
}

/// The `key.leaked` events of the store, read with the CLI (through the running server).
fn leaked_events(cli: &Cli) -> Vec<Value> {
    let out = cli.ok(&["events", "--json"]).stdout;
    out.lines()
        .map(|l| serde_json::from_str::<Value>(l).expect("a JSON line"))
        .filter(|e| e["kind"] == "key.leaked")
        .collect()
}

#[test]
fn leaks_endpoint_with_live_revoked_unknown_and_malformed_tokens() {
    let cli = Cli::init();
    let (live_id, live) = create(&cli, "live");
    let (revoked_id, revoked) = create(&cli, "revoked");
    cli.ok(&["revoke", &revoked_id, "--yes"]);
    // Well-formed in this store's format, but issued by another store.
    let elsewhere = Cli::init();
    let (_, unknown) = create(&elsewhere, "unknown");
    let malformed = "sk_live_not-a-key";
    let (_, bystander) = create(&cli, "bystander");
    let server = Sidecar::start(&cli);

    assert_eq!(code(server.addr, &live), "VALID");
    let (status, head, body) = post(
        server.addr,
        "/v1/leaks",
        &report(&[&live, &revoked, &unknown, malformed]),
    );
    assert_eq!(status, 200, "{body}");
    assert!(head.contains("cache-control: no-store"), "{head}");
    let answers = body.as_array().expect("the bare array");
    assert_eq!(answers.len(), 4);
    let labels: Vec<&str> = answers.iter().map(|a| a["label"].as_str().expect("label")).collect();
    assert_eq!(
        labels,
        ["true_positive", "false_positive", "false_positive", "false_positive"]
    );
    for (answer, token) in answers.iter().zip([&live, &revoked, &unknown, &malformed.to_string()]) {
        assert_eq!(answer["token_raw"], **token);
        assert_eq!(answer["token_type"], "credstore_api_key");
        let fields: Vec<&String> = answer.as_object().expect("object").keys().collect();
        assert_eq!(
            fields,
            ["label", "token_raw", "token_type"],
            "the same shape for every token"
        );
    }

    // Revoked at once, for good, with the report's source and url as the reason; the key
    // not reported is untouched.
    assert_eq!(code(server.addr, &live), "REVOKED");
    assert_eq!(code(server.addr, &bystander), "VALID");
    let shown = cli.ok(&["show", &live_id, "--json"]).stdout;
    assert!(
        shown.contains("content") && shown.contains("https://github.com/acme/app/blob/main/.env"),
        "{shown}"
    );
    // Reported again: no longer live.
    let (_, _, again) = post(server.addr, "/v1/leaks", &report(&[&live]));
    assert_eq!(again[0]["label"], "false_positive");
    assert_eq!(code(server.addr, &live), "REVOKED");

    // Each report of a key of this store is logged, never with the token.
    let events = leaked_events(&cli);
    let of = |id: &str| events.iter().filter(|e| e["details"]["key_id"] == id).count();
    assert_eq!((of(&live_id), of(&revoked_id)), (2, 1), "{events:?}");
    assert_eq!(events.len(), 3, "unknown and malformed tokens name no key: {events:?}");
    let text = serde_json::to_string(&events).expect("json");
    for token in [&live, &revoked] {
        assert!(!text.contains(token.as_str()), "a token reached the log: {text}");
    }
    let live_event = events
        .iter()
        .find(|e| e["details"]["key_id"] == live_id.as_str())
        .expect("event");
    assert_eq!(live_event["details"]["source"], "content");
    assert_eq!(live_event["details"]["type"], "credstore_api_key");
    assert_eq!(live_event["details"]["was_live"], true);

    let (status, stderr) = server.stop();
    assert!(status.success(), "{stderr}");
    assert!(!stderr.contains(&live), "the request log repeated a token");
    // After a restart, still revoked.
    let server = Sidecar::start(&cli);
    assert_eq!(code(server.addr, &live), "REVOKED");
}

#[test]
fn the_leaks_endpoint_is_rate_limited_per_address() {
    let cli = Cli::init();
    let server = Sidecar::start_with(&cli, &["--leaks-rate-limit", "3/1m"]);
    for _ in 0..3 {
        let (status, _, body) = post(server.addr, "/v1/leaks", &report(&["sk_live_nothing"]));
        assert_eq!(status, 200, "{body}");
    }
    let (status, head, body) = post(server.addr, "/v1/leaks", &report(&["sk_live_nothing"]));
    assert_eq!(status, 429, "{body}");
    assert_eq!(body["success"], false);
    assert_eq!(body["error"]["code"], "RATE_LIMITED");
    let retry: u64 = head
        .lines()
        .find_map(|l| l.strip_prefix("retry-after:"))
        .and_then(|v| v.trim().parse().ok())
        .expect("Retry-After");
    assert!((1..=60).contains(&retry), "{retry}");
    // Verification is not the endpoint's limit.
    let (status, _, _) = post(
        server.addr,
        "/v1/keys.verify",
        json!({"key": "sk_live_x"}).to_string().as_bytes(),
    );
    assert_eq!(status, 200);
}

#[test]
fn oversize_and_malformed_bodies_are_refused_and_change_nothing() {
    let cli = Cli::init();
    let (_, live) = create(&cli, "live");
    let server = Sidecar::start(&cli);
    let huge = report(&vec!["x".repeat(200).as_str(); 2000]);
    assert!(huge.len() > credstore::leaks::MAX_LEAK_BODY_BYTES);
    let (status, _, body) = post(server.addr, "/v1/leaks", &huge);
    assert_eq!(
        (status, body["error"]["code"].as_str()),
        (413, Some("PAYLOAD_TOO_LARGE")),
        "{body}"
    );

    let too_many = report(&vec!["sk_live_x"; credstore::leaks::MAX_LEAK_TOKENS + 1]);
    let missing_url = json!([{"token": live, "type": "t", "source": "s"}]).to_string();
    let live_then_bad = json!([
        {"token": live, "type": "t", "url": "u", "source": "s"},
        {"token": live, "type": 5, "url": "u", "source": "s"},
    ])
    .to_string();
    let positional = json!([[live, "t", "u", "s"]]).to_string();
    for bad in [
        &b"not json"[..],
        br#"{"token": "x"}"#,
        b"[]",
        &too_many,
        missing_url.as_bytes(),
        live_then_bad.as_bytes(),
        positional.as_bytes(),
    ] {
        let (status, _, body) = post(server.addr, "/v1/leaks", bad);
        assert_eq!(
            (status, body["error"]["code"].as_str()),
            (400, Some("INVALID_INPUT")),
            "{body}"
        );
        assert!(!body.to_string().contains(&live), "the error repeated a token: {body}");
    }
    assert_eq!(code(server.addr, &live), "VALID", "a refused report revoked nothing");
    assert!(leaked_events(&cli).is_empty());
}
