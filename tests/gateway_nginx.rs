//! `credstore serve` behind a real nginx running `examples/nginx/` (auth_request): every
//! outcome of a verify as a client sees it through nginx, status, fields and problem
//! document, and what the upstream is told. nginx passes only an auth answer's 401 and 403
//! on and turns 402 and 429 into 500; the example's `error_page` puts credstore's status
//! back, and these tests are what says it does.
//!
//! Needs nginx (`scripts/install-test-deps.sh`); without it they print `SKIPPED`, except
//! under `CI=true`, where they fail.

#![expect(
    clippy::expect_used,
    clippy::indexing_slicing,
    reason = "a test fails by panicking: unwrap, expect and indexing are its assertions"
)]

use std::net::IpAddr;

use serde_json::Value;

mod common;
#[path = "common/gateway.rs"]
mod gateway;

use common::{Cli, Sidecar};
use gateway::{Answer, Nginx, Upstream, send};

/// The sidecar, believing only 127.0.0.1 (nginx) about client addresses, and nginx in
/// front of an echoing upstream.
struct Stack {
    nginx: Nginx,
    upstream: Upstream,
    _sidecar: Sidecar,
}

impl Stack {
    fn start(cli: &Cli) -> Option<Stack> {
        let sidecar = Sidecar::start_with(cli, &["--trusted-proxy", "127.0.0.1/32"]);
        let upstream = Upstream::start();
        let nginx = Nginx::start(sidecar.addr, upstream.addr)?;
        Some(Stack {
            nginx,
            upstream,
            _sidecar: sidecar,
        })
    }

    fn get(&self, path: &str, headers: &[(&str, &str)]) -> Answer {
        self.from(None, "GET", path, headers)
    }

    fn from(&self, from: Option<IpAddr>, method: &str, path: &str, headers: &[(&str, &str)]) -> Answer {
        send(self.nginx.addr, from, method, path, headers)
    }
}

/// Creates a key with these `create` options; its key and id.
fn key(cli: &Cli, args: &[&str]) -> (String, String) {
    let doc: Value = cli.json(&[&["create", "--name", "gw", "--json"], args].concat());
    (
        doc["key"].as_str().expect("key").to_string(),
        doc["id"].as_str().expect("id").to_string(),
    )
}

fn bearer(key: &str) -> String {
    format!("Bearer {key}")
}

/// The upstream's echo of the request head it got, lower-cased.
fn upstream_saw(answer: &Answer) -> String {
    assert_eq!(answer.status, 200, "{answer:#?}");
    answer.body.to_ascii_lowercase()
}

#[test]
fn every_decision_reaches_the_client_through_nginx_with_its_status_fields_and_problem() {
    let cli = Cli::init();
    let (valid, valid_id) = key(&cli, &["--rate-limit", "100/1h", "--project", "shop"]);
    let (revoked, revoked_id) = key(&cli, &[]);
    cli.ok(&["revoke", &revoked_id, "--yes"]);
    let (limited, _) = key(&cli, &["--rate-limit", "1/1h:hourly"]);
    let (budget, _) = key(&cli, &["--budget", "6"]);
    let (ip_bound, _) = key(&cli, &["--allow-ip", "10.9.9.9"]);
    let (endpoint_bound, _) = key(&cli, &["--allow-endpoint", "GET /v1/open/*"]);
    let Some(stack) = Stack::start(&cli) else { return };

    // Valid: the upstream runs and is told which key called; the client gets the fields.
    let ok = stack.get("/v1/things?page=2", &[("Authorization", &bearer(&valid))]);
    let seen = upstream_saw(&ok);
    assert!(seen.starts_with("get /v1/things?page=2 "), "{seen}");
    assert!(
        seen.contains(&format!("x-credstore-key-id: {}", valid_id.to_ascii_lowercase())),
        "{seen}"
    );
    assert!(seen.contains("x-credstore-project: shop"), "{seen}");
    assert!(seen.contains("x-credstore-env: live"), "{seen}");
    assert_eq!(ok.header("x-ratelimit-limit"), Some("100"), "{ok:#?}");
    assert_eq!(ok.header("x-ratelimit-remaining"), Some("99"), "{ok:#?}");
    assert!(ok.header("x-ratelimit-reset").is_some(), "{ok:#?}");
    assert_eq!(ok.header("ratelimit-policy"), Some(r#""1h";q=100;w=3600"#), "{ok:#?}");
    assert!(
        ok.header("ratelimit").is_some_and(|v| v.starts_with(r#""1h";r=99;t="#)),
        "{ok:#?}"
    );
    // X-API-Key works as well.
    assert_eq!(stack.get("/v1/things", &[("X-API-Key", &valid)]).status, 200);
    let reached = stack.upstream.hits();

    // No key, a revoked key, garbage: the one 401, with the scheme.
    let missing = stack.get("/v1/things", &[]);
    let doc = missing.problem(401, "UNAUTHORIZED");
    assert_eq!(missing.all("www-authenticate"), ["Bearer"], "{missing:#?}");
    assert_eq!(
        stack.get("/v1/things", &[("Authorization", &bearer(&revoked))]).json(),
        doc
    );
    assert_eq!(
        stack.get("/v1/things", &[("X-API-Key", "sk_live_nonsense")]).json(),
        doc
    );

    // Rate limited: 429 (not nginx's 500) with Retry-After and the fields.
    assert_eq!(stack.get("/v1/x", &[("X-API-Key", &limited)]).status, 200);
    let reached = reached + 1;
    let limited_answer = stack.get("/v1/x", &[("X-API-Key", &limited)]);
    let doc = limited_answer.problem(429, "RATE_LIMITED");
    assert_eq!(doc["limit"], "hourly", "{doc}");
    let retry: u64 = limited_answer
        .header("retry-after")
        .and_then(|v| v.parse().ok())
        .unwrap_or_else(|| panic!("no Retry-After: {limited_answer:#?}"));
    assert!((1..=3600).contains(&retry), "{retry}");
    assert_eq!(doc["retry_after"], retry);
    assert_eq!(limited_answer.header("x-ratelimit-remaining"), Some("0"));
    assert_eq!(
        limited_answer.header("ratelimit-policy"),
        Some(r#""hourly";q=1;w=3600"#)
    );
    assert_eq!(limited_answer.header("cache-control"), Some("no-store"));

    // Budget: /v1/reports/ costs 5 (set per location), the rest 1; a client's own
    // X-Credstore-Cost is not passed to credstore.
    assert_eq!(stack.get("/v1/reports/a", &[("X-API-Key", &budget)]).status, 200);
    let exhausted = stack.get("/v1/reports/b", &[("X-API-Key", &budget), ("X-Credstore-Cost", "0")]);
    let doc = exhausted.problem(402, "BUDGET_EXHAUSTED");
    assert_eq!(doc["budget"]["spent"], 5, "{doc}");
    assert_eq!(doc["budget"]["cap"], 6, "{doc}");
    assert_eq!(stack.get("/v1/cheap", &[("X-API-Key", &budget)]).status, 200);
    stack
        .get("/v1/cheap", &[("X-API-Key", &budget)])
        .problem(402, "BUDGET_EXHAUSTED");
    let reached = reached + 2;

    // Forbidden by the key's policy: 403 naming the restriction.
    let doc = stack
        .get("/v1/things", &[("X-API-Key", &ip_bound)])
        .problem(403, "FORBIDDEN");
    assert_eq!(doc["restriction"], "ip", "{doc}");
    // The endpoint is the client's request, as nginx forwards it (X-Original-*).
    assert_eq!(
        stack.get("/v1/open/door?x=1", &[("X-API-Key", &endpoint_bound)]).status,
        200
    );
    let reached = reached + 1;
    let doc = stack
        .get("/v1/closed", &[("X-API-Key", &endpoint_bound)])
        .problem(403, "FORBIDDEN");
    assert_eq!(doc["restriction"], "endpoint", "{doc}");
    let doc = stack
        .from(None, "POST", "/v1/open/door", &[("X-API-Key", &endpoint_bound)])
        .problem(403, "FORBIDDEN");
    assert_eq!(doc["restriction"], "endpoint", "{doc}");

    assert_eq!(
        stack.upstream.hits(),
        reached,
        "no denied request reaches the upstream\n{}",
        stack.nginx.error_log()
    );
}

#[test]
fn the_upstream_learns_the_key_from_credstore_never_from_the_client() {
    let cli = Cli::init();
    let (valid, valid_id) = key(&cli, &[]);
    let Some(stack) = Stack::start(&cli) else { return };
    let forged = [
        ("X-API-Key", valid.as_str()),
        ("X-Credstore-Key-Id", "key_forged"),
        ("X-Credstore-Project", "forged"),
        ("X-Credstore-Env", "test"),
    ];
    let seen = upstream_saw(&stack.get("/v1/things", &forged));
    assert!(
        seen.contains(&format!("x-credstore-key-id: {}", valid_id.to_ascii_lowercase())),
        "{seen}"
    );
    assert_eq!(seen.matches("x-credstore-key-id:").count(), 1, "{seen}");
    assert!(!seen.contains("forged"), "{seen}");
    assert!(seen.contains("x-credstore-env: live"), "{seen}");
}

#[test]
fn x_forwarded_for_counts_only_as_far_as_trusted_proxies_vouch_for_it() {
    let cli = Cli::init();
    let (claims_spoofed, _) = key(&cli, &["--allow-ip", "6.6.6.6"]);
    let (real_client, _) = key(&cli, &["--allow-ip", "127.0.0.2"]);
    let Some(stack) = Stack::start(&cli) else { return };
    let untrusted: IpAddr = "127.0.0.2".parse().expect("address");
    let spoof = |key: &str| {
        vec![
            ("X-API-Key", key.to_string()),
            ("X-Forwarded-For", "6.6.6.6".to_string()),
        ]
    };
    let ask = |from: Option<IpAddr>, key: &str| {
        let headers = spoof(key);
        let headers: Vec<(&str, &str)> = headers.iter().map(|(n, v)| (*n, v.as_str())).collect();
        stack.from(from, "GET", "/v1/things", &headers)
    };
    // A client at 127.0.0.2 (not trusted) claims 6.6.6.6: nginx appends the real address,
    // and credstore stops at it.
    let doc = ask(Some(untrusted), &claims_spoofed).problem(403, "FORBIDDEN");
    assert_eq!(doc["restriction"], "ip", "{doc}");
    assert_eq!(ask(Some(untrusted), &real_client).status, 200);
    // From 127.0.0.1, a trusted proxy itself, the claim is believed.
    assert_eq!(ask(None, &claims_spoofed).status, 200);
}
